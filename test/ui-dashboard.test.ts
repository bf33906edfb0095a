/**
 * The dashboard in a real browser (Debian's Chromium driven by playwright-core) against a
 * real server on port 0 with RBAC enforced and real data: sign-in, the fleet, a node, a
 * manual gate approved from the page, pause and resume, a 409 explained, a read-only
 * analyst whose forged request the server refuses, the audit trail, and an accessibility
 * check of every page. Screenshots of each page go to docs/screenshots with UPDATE_SCREENSHOTS=1.
 */
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { AxeBuilder } from "@axe-core/playwright";
import { chromium, type BrowserContext, type Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createOrchestratorClients, type OrchestratorClients } from "../clients/index.js";
import { BOOTSTRAP_TOKEN_FILE } from "../src/server.js";
import { startTestServer, type TestServer } from "./helpers/server.js";
import { until } from "./helpers/wait.js";

// Browser globals used in page.evaluate callbacks (which run in the page, not in Node).
declare const sessionStorage: { getItem(key: string): string | null };
declare const document: { cookie: string };
declare const window: { scrollTo(x: number, y: number): void; scrollY: number };

const CHROMIUM = "/usr/bin/chromium";
// Screenshots of each page: into docs/screenshots with UPDATE_SCREENSHOTS=1 (the README's pictures), else a temporary folder.
const SHOTS = process.env.UPDATE_SCREENSHOTS === "1" ? path.resolve("docs/screenshots") : mkdtempSync(path.join(os.tmpdir(), "ao-ui-shots-"));
const DIGEST = `sha256:${"cd".repeat(32)}`;
const PLAN = "stable-r2-canary";
const STABLE = Array.from({ length: 30 }, (_, i) => `s-${String(i + 1).padStart(2, "0")}`);

// Browser steps wait on the page's own polling: give a loaded machine room.
describe("the dashboard in Chromium", { timeout: 60_000 }, () => {
  let server: TestServer;
  let admin: OrchestratorClients;
  let operatorToken: string;
  let analystToken: string;
  let context: BrowserContext;
  let page: Page;
  let profile: string;

  const ui = (hash = "") => `${server.url}/ui/${hash}`;
  const shot = (p: Page, name: string) => p.screenshot({ path: path.join(SHOTS, `${name}.png`), fullPage: true });
  const planCard = (p: Page) => p.getByRole("article", { name: `plan ${PLAN}` });
  /** Serious and critical accessibility violations of the page as it is now. */
  const a11y = async (p: Page) => {
    const result = await new AxeBuilder({ page: p }).analyze();
    return result.violations.filter((v) => v.impact === "serious" || v.impact === "critical").map((v) => `${v.id}: ${v.help} (${v.nodes.length})`);
  };
  const signIn = async (p: Page, token: string) => {
    await p.goto(ui());
    await p.getByLabel("Token").fill(token);
    await p.getByRole("button", { name: "Sign in" }).click();
    await p.getByRole("heading", { name: "Fleet", level: 1 }).waitFor();
  };
  const act = async (p: Page, button: string, reason: string) => {
    await planCard(p).getByRole("button", { name: button, exact: true }).click();
    const dialog = p.getByRole("dialog");
    await dialog.getByLabel(/^Reason/).fill(reason);
    await dialog.getByRole("button", { name: `Confirm ${button.toLowerCase()}` }).click();
  };
  const status = async () => (await admin.rollouts.getRolloutStatus({ planId: PLAN })).status!;

  beforeAll(async () => {
    server = await startTestServer("sqlite", { rbacEnforcement: true });
    const bootstrap = readFileSync(path.join(server.dataDir, BOOTSTRAP_TOKEN_FILE), "utf8").trim();
    admin = createOrchestratorClients({ baseUrl: server.url, token: bootstrap });
    for (const role of ["operator", "auditor"]) await admin.rbac.assignRole({ principal: "operator:olivia", role });
    await admin.rbac.assignRole({ principal: "operator:andy", role: "analyst" });
    operatorToken = (await admin.rbac.createToken({ principal: "operator:olivia", description: "dashboard test" })).token;
    analystToken = (await admin.rbac.createToken({ principal: "operator:andy", description: "dashboard test" })).token;

    for (const [i, nodeId] of STABLE.entries()) {
      await admin.nodes.enrollNode({ nodeId, channel: "stable", labels: { site: i % 2 === 0 ? "berlin" : "munich" }, agentVersion: "1.4.0" });
      // The last two were never seen: UNAVAILABLE.
      if (i < 28) await admin.nodes.heartbeat({ nodeId });
    }
    for (const nodeId of ["e-1", "e-2", "e-3"]) {
      await admin.nodes.enrollNode({ nodeId, channel: "edge", labels: { site: "lab" } });
      await admin.nodes.heartbeat({ nodeId });
    }
    const release = (releaseId: string, staged: boolean) => ({ releaseId, channel: "stable", version: releaseId.replace("stable-", "1."), staged, artifacts: [{ name: "app", digest: DIGEST }] });
    await admin.releases.publishRelease({ release: release("stable-r1", false) });
    for (const [i, nodeId] of STABLE.slice(0, 24).entries()) {
      const state = i < 20 ? "healthy" : i < 23 ? "failed" : "downloading";
      await admin.releases.upsertAck({ nodeId, releaseId: "stable-r1", state, reportedReleaseId: state === "healthy" ? "stable-r1" : "" });
    }
    await admin.events.ingestEvents({
      events: ["boot", "temperature", "temperature"].map((eventType, i) => ({
        eventId: `ev-${i}`,
        eventType,
        nodeId: "s-01",
        timestamp: { seconds: BigInt(Math.floor(Date.now() / 1000) - 60 + i), nanos: 0 },
      })),
    });
    await admin.releases.publishRelease({ release: release("stable-r2", true) });
    await admin.rollouts.createRolloutPlan({
      plan: {
        planId: PLAN,
        releaseId: "stable-r2",
        description: "canary, then the rest",
        stages: [
          { stageId: "canary", nodeIds: ["s-01"], gates: [{ kind: "manual" }] },
          { stageId: "wave", percent: 100, gates: [{ kind: "manual" }] },
        ],
      },
    });
    await until("the canary move", async () => (await admin.nodes.getDesiredRelease({ nodeId: "s-01" })).release?.releaseId === "stable-r2", 10_000);
    await admin.releases.upsertAck({ nodeId: "s-01", releaseId: "stable-r2", state: "healthy", reportedReleaseId: "stable-r2" });

    if (!existsSync(CHROMIUM)) throw new Error(`the dashboard tests drive Debian's Chromium at ${CHROMIUM}: apt-get install chromium`);
    profile = mkdtempSync(path.join(os.tmpdir(), "ao-chromium-"));
    context = await chromium.launchPersistentContext(profile, {
      executablePath: CHROMIUM,
      headless: true,
      args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
      viewport: { width: 1280, height: 900 },
      acceptDownloads: true,
    });
    context.setDefaultTimeout(15_000);
    page = await context.newPage();
  }, 60_000);

  afterAll(async () => {
    await context?.close();
    admin?.close();
    await server?.stop();
    if (profile) rmSync(profile, { recursive: true, force: true });
  });

  it("asks for a token, refuses a wrong one, and keeps the right one in sessionStorage only", async () => {
    await page.goto(ui());
    await page.getByRole("form", { name: "Sign in" }).waitFor();
    expect(await a11y(page)).toEqual([]);
    await shot(page, "sign-in");
    await page.getByLabel("Token").fill("not-a-token");
    await page.getByRole("button", { name: "Sign in" }).click();
    await expect(page.getByRole("alert").textContent()).resolves.toContain("unknown, expired or revoked");
    await signIn(page, operatorToken);
    await page.getByText("operator:olivia (token)").waitFor();
    expect(await page.evaluate(() => sessionStorage.getItem("autonomy.token"))).toBe(operatorToken);
    expect(await page.evaluate(() => document.cookie)).toBe("");
    expect(page.url()).not.toContain(operatorToken);
  });

  it("shows the fleet's totals per channel and pages, filters and sorts the nodes on the server", async () => {
    await page.goto(ui("#/fleet"));
    const stable = page.getByRole("article", { name: "channel stable" });
    await stable.getByText("latest release: stable-r2").waitFor();
    expect(await stable.locator(".t-total dd").textContent()).toBe("30");
    expect(await stable.locator(".t-up dd").textContent()).toBe("28");
    expect(await stable.locator(".t-unknown dd").textContent()).toBe("2");
    expect(await stable.locator(".t-drifted dd").textContent()).toBe("10");
    await page.getByText("33 matching node(s); showing 1–25").waitFor();
    expect(await a11y(page)).toEqual([]);
    await shot(page, "fleet");

    // A poll answers while the person reads: the page keeps its place and its rows.
    await page.evaluate(() => window.scrollTo(0, 300));
    await page.waitForResponse((r) => r.url().endsWith("/autonomy.v1.NodeService/SearchFleetNodes"));
    await page.waitForTimeout(100); // the answer rendered
    expect(await page.evaluate(() => window.scrollY)).toBe(300);
    await page.getByText("33 matching node(s); showing 1–25").waitFor();

    await page.getByRole("button", { name: "Next page" }).click();
    await page.getByText("33 matching node(s); showing 26–33").waitFor();

    await page.getByLabel("Lifecycle").selectOption("UNAVAILABLE");
    await page.getByRole("button", { name: "Apply" }).click();
    await page.getByText("2 matching node(s); showing 1–2").waitFor();
    await page.getByRole("button", { name: /^Node/ }).click(); // ascending is the default: this turns it round
    await page.getByRole("button", { name: /^Node ▼/ }).waitFor();
    const ids = await page.locator("tbody tr td:first-child").allTextContents();
    expect(ids).toEqual(["s-30", "s-29"]);

    await page.getByLabel("Lifecycle").selectOption("");
    await page.getByLabel("Labels").fill("site=berlin");
    await page.getByLabel("Drift").selectOption("drifted");
    await page.getByRole("button", { name: "Apply" }).click();
    // Berlin is every other node from s-01; s-21 to s-30 report no release while they should run stable-r1.
    await page.getByText("5 matching node(s); showing 1–5").waitFor();
    expect(await page.locator("tbody tr td:first-child").allTextContents()).toEqual(["s-29", "s-27", "s-25", "s-23", "s-21"]);
    await page.waitForResponse((r) => r.url().endsWith("/autonomy.v1.NodeService/SearchFleetNodes"));
    expect(await page.getByLabel("Labels").inputValue()).toBe("site=berlin");
    expect(await page.locator("tbody tr td:first-child").allTextContents()).toEqual(["s-29", "s-27", "s-25", "s-23", "s-21"]);
  });

  it("shows a node's summary and one timeline of its acks, events and audit records, and drains and undrains it", async () => {
    await page.goto(ui("#/nodes/s-01"));
    await page.getByRole("heading", { name: "Node s-01" }).waitFor();
    const timeline = page.locator("ol.timeline");
    await timeline.getByText("ack healthy for stable-r2").waitFor();
    await timeline.getByText("boot", { exact: true }).waitFor();
    expect(await timeline.getByText("temperature").count()).toBe(2);
    expect(await a11y(page)).toEqual([]);
    await shot(page, "node");

    await page.goto(ui("#/nodes/s-02"));
    await page.getByRole("heading", { name: "Node s-02" }).waitFor();
    await page.getByRole("button", { name: "Drain" }).click();
    await page.getByRole("dialog").getByLabel(/^Reason/).fill("disk replacement");
    await page.getByRole("dialog").getByRole("button", { name: "Confirm drain" }).click();
    await page.locator(".facts .badge.l-draining").waitFor();
    await timeline.getByText("node.drained (success) by operator:olivia").waitFor();
    expect((await admin.nodes.getNodeSummary({ nodeId: "s-02" })).node?.drainReason).toBe("disk replacement");
    await page.getByRole("button", { name: "Undrain" }).click();
    await page.getByRole("dialog").getByRole("button", { name: "Confirm undrain" }).click();
    await page.locator(".facts .badge.l-healthy").waitFor();
  });

  it("shows each release of a channel with its acks per state", async () => {
    await page.goto(ui("#/releases/stable"));
    const r1 = page.getByRole("article", { name: "release stable-r1" });
    await r1.waitFor();
    const label = await r1.getByRole("img").first().getAttribute("aria-label");
    expect(label).toBe("acks of stable-r1: healthy 20, downloading 1, failed 3, no ack 6");
    await r1.getByText("Acks over time").click();
    const chart = await r1.getByRole("img", { name: /^acks of stable-r1 over time since / }).getAttribute("aria-label");
    expect(chart).toMatch(/: healthy 20, failed 3, downloading 1$/);
    expect(await r1.locator("path.curve").count()).toBe(3);
    await page.getByRole("article", { name: "release stable-r2" }).getByText(`plans: ${PLAN}`).waitFor();
    expect(await a11y(page)).toEqual([]);
    await shot(page, "releases");
  });

  it("approves the manual gate from the page and the plan moves to the next stage", async () => {
    await page.goto(ui("#/rollouts"));
    const card = planCard(page);
    await card.getByTestId("waiting").getByText("stage canary: manual approval").waitFor();
    expect(await a11y(page)).toEqual([]);
    await shot(page, "rollouts");
    await act(page, "Approve", "canary looks good");
    await card.getByTestId("waiting").getByText("stage wave: manual approval").waitFor();
    const s = await status();
    expect(s.currentStageId).toBe("wave");
    expect(s.stages.find((x) => x.stageId === "canary")?.phase).toBe("passed");
  });

  it("pauses, resumes, halts and recovers the plan, each with a reason and the version it showed", async () => {
    const card = planCard(page);
    await act(page, "Pause", "maintenance window");
    await card.locator(".badge.p-paused").waitFor();
    expect((await status()).reason).toBe("maintenance window");
    await act(page, "Resume", "window over");
    await card.locator(".badge.p-active").waitFor();
    expect((await status()).phase).toBe("active");
    await act(page, "Halt", "alarm on the wave");
    await card.locator(".badge.p-halted").waitFor();
    expect(await card.getByRole("button", { name: "Pause", exact: true }).count()).toBe(0);
    await act(page, "Recover: retry", "alarm was a false positive");
    await card.locator(".badge.p-active").waitFor();
    expect((await status()).phase).toBe("active");
  });

  it("explains a 409 aborted: someone changed the plan after the page showed it", async () => {
    const card = planCard(page);
    const shown = (await status()).version;
    await card.getByText(`version ${shown}`).first().waitFor();
    await card.getByRole("button", { name: "Pause", exact: true }).click();
    // Someone else pauses and resumes the plan meanwhile: same phase, newer version.
    await admin.rollouts.pauseRollout({ planId: PLAN, reason: "someone else" });
    await admin.rollouts.resumeRollout({ planId: PLAN, reason: "someone else again" });
    const dialog = page.getByRole("dialog");
    await dialog.getByLabel(/^Reason/).fill("too late");
    await dialog.getByRole("button", { name: "Confirm pause" }).click();
    const alert = dialog.getByRole("alert");
    await alert.getByText("Someone changed this plan while you were looking at it.").waitFor();
    const now = await status();
    expect(now.version).toBe(shown + 2);
    expect(await alert.textContent()).toContain(`You saw version ${shown}; it is now at version ${now.version}, phase active`);
    expect(now.phase).toBe("active");
    await shot(page, "rollouts-conflict");
    await dialog.getByRole("button", { name: "Close" }).click();
  });

  it("queries the audit trail, verifies the chain and exports it", async () => {
    await page.goto(ui("#/audit"));
    await page.getByLabel("event name").fill("rollout.plan.paused");
    await page.getByRole("button", { name: "Query" }).click();
    await page.locator("tbody tr").first().waitFor();
    const events = await page.locator("tbody tr td:nth-child(3)").allTextContents();
    expect(events.length).toBeGreaterThan(0);
    expect(new Set(events)).toEqual(new Set(["rollout.plan.paused"]));
    await page.getByRole("button", { name: "Verify the chain" }).click();
    await page.getByTestId("verify").getByText(/^Chain intact: \d+ record\(s\) checked/).waitFor();
    const [download] = await Promise.all([page.waitForEvent("download"), page.getByRole("button", { name: "Export JSON lines" }).click()]);
    const lines = readFileSync(await download.path(), "utf8").trim().split("\n").map((l) => JSON.parse(l) as { event_name: string });
    expect(lines.length).toBe(events.length);
    expect(lines.every((l) => l.event_name === "rollout.plan.paused")).toBe(true);
    const [csv] = await Promise.all([page.waitForEvent("download"), page.getByRole("button", { name: "Export CSV" }).click()]);
    const csvLines = readFileSync(await csv.path(), "utf8").trim().split("\n");
    // The same columns as `autonomy audit export --format csv`.
    expect(csvLines[0]).toBe("seq,timestamp,event_name,category,action,outcome,actor,resource_type,resource,source,fields_json,reason,prev_hash,hash");
    expect(csvLines.length).toBe(events.length + 1);
    expect(await a11y(page)).toEqual([]);
    await shot(page, "audit");
  });

  it("gives an analyst a read-only dashboard, and the server refuses a forged action from the page", async () => {
    const analyst = await context.newPage(); // a new tab: its own sessionStorage, so signed out
    try {
      await signIn(analyst, analystToken);
      await analyst.getByText(/operator:andy \(token\) · analyst · read-only/).waitFor();
      expect(await analyst.getByRole("link", { name: "Audit" }).count()).toBe(0);
      await analyst.goto(ui("#/rollouts"));
      await planCard(analyst).getByTestId("waiting").getByText("stage wave: manual approval").waitFor();
      expect(await analyst.locator("main").getByRole("button").allTextContents()).toEqual([]);
      await analyst.goto(ui("#/nodes/s-03"));
      await analyst.getByRole("heading", { name: "Node s-03" }).waitFor();
      expect(await analyst.getByRole("button", { name: /drain/i }).count()).toBe(0);
      await shot(analyst, "analyst-node");

      const before = await status();
      const forged = await analyst.evaluate(async (planId) => {
        const res = await fetch("/autonomy.v1.RolloutService/PauseRollout", {
          method: "POST",
          headers: { "content-type": "application/json", authorization: `Bearer ${sessionStorage.getItem("autonomy.token")}` },
          body: JSON.stringify({ planId, reason: "forged from the page" }),
        });
        return { status: res.status, body: (await res.json()) as { code: string } };
      }, PLAN);
      expect(forged.status).toBe(403);
      expect(forged.body.code).toBe("permission_denied");
      expect((await status()).version).toBe(before.version);
      const denied = await admin.audit.queryAuditRecords({ actor: "operator:andy", outcome: "denied" });
      expect(denied.records.map((r) => r.resource)).toContain("autonomy.v1.RolloutService/PauseRollout");
    } finally {
      await analyst.close();
    }
  });

  it("shows a stage that selects no node as waiting for nodes, with why", async () => {
    await admin.releases.publishRelease({ release: { releaseId: "edge-r1", channel: "edge", version: "2.0", staged: true, artifacts: [{ name: "app", digest: DIGEST }] } });
    await admin.rollouts.createRolloutPlan({
      plan: { planId: "edge-wait", releaseId: "edge-r1", stages: [{ stageId: "paris", matchLabels: { site: "paris" }, gates: [{ kind: "manual" }] }] },
    });
    const why = "no node selected: no node of the channel matches site=paris";
    await page.goto(ui("#/rollouts"));
    const card = page.getByRole("article", { name: "plan edge-wait" });
    await card.getByTestId("waiting").getByText(`stage paris waiting for nodes: ${why}; promote to go on without it`).waitFor();
    const stage = card.locator("ol.stages > li").filter({ hasText: "paris" });
    expect(await stage.locator(".badge").textContent()).toBe("waiting");
    expect(await stage.textContent()).toContain(why);
    expect(await a11y(page)).toEqual([]);
  });
});
