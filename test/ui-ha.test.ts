/**
 * The on-call views of the dashboard in a real browser (Debian's Chromium driven by
 * playwright-core) against real servers on port 0 with RBAC enforced: the Cluster view on
 * SQLite (standalone) and on PostgreSQL (this replica leads, with its epoch; a resign from the
 * page), the emergency stop and resume from the page with the banner on every page, the
 * divergence report with a reapply from the page that is audited, an analyst who sees no action,
 * and an accessibility check of each view. Screenshots go to docs/screenshots with UPDATE_SCREENSHOTS=1.
 */
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { AxeBuilder } from "@axe-core/playwright";
import { chromium, type Locator, type Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createOrchestratorClients, type OrchestratorClients } from "../clients/index.js";
import { BOOTSTRAP_TOKEN_FILE } from "../src/server.js";
import { startTestServer, type StoreKind } from "./helpers/server.js";
import { until } from "./helpers/wait.js";

const CHROMIUM = "/usr/bin/chromium";
const SHOTS = process.env.UPDATE_SCREENSHOTS === "1" ? path.resolve("docs/screenshots") : mkdtempSync(path.join(os.tmpdir(), "ao-ui-shots-"));
const DIGEST = `sha256:${"ab".repeat(32)}`;
const PLAN = "stable-r2-canary";

/** A server with RBAC on, its admin client, and Chromium with one tab. */
async function setUp(kind: StoreKind) {
  const server = await startTestServer(kind, { rbacEnforcement: true, ...(kind === "postgres" ? { ha: { leaseMs: 3000, renewMs: 500 } } : {}) });
  const adminToken = readFileSync(path.join(server.dataDir, BOOTSTRAP_TOKEN_FILE), "utf8").trim();
  const admin = createOrchestratorClients({ baseUrl: server.url, token: adminToken });
  if (!existsSync(CHROMIUM)) throw new Error(`the dashboard tests drive Debian's Chromium at ${CHROMIUM}: apt-get install chromium`);
  const profile = mkdtempSync(path.join(os.tmpdir(), "ao-chromium-"));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
    viewport: { width: 1280, height: 900 },
  });
  context.setDefaultTimeout(15_000);
  const page = await context.newPage();
  return {
    server,
    admin,
    adminToken,
    context,
    page,
    async tearDown() {
      await context.close();
      admin.close();
      await server.stop();
      rmSync(profile, { recursive: true, force: true });
    },
  };
}

const shot = (p: Page, name: string) => p.screenshot({ path: path.join(SHOTS, `${name}.png`), fullPage: true });
/** Serious and critical accessibility violations of the page as it is now. */
const a11y = async (p: Page) => {
  const result = await new AxeBuilder({ page: p }).analyze();
  return result.violations.filter((v) => v.impact === "serious" || v.impact === "critical").map((v) => `${v.id}: ${v.help} (${v.nodes.length})`);
};
const signIn = async (p: Page, url: string, token: string) => {
  await p.goto(`${url}/ui/`);
  await p.getByLabel("Token").fill(token);
  await p.getByRole("button", { name: "Sign in" }).click();
  await p.getByRole("heading", { name: "Fleet", level: 1 }).waitFor();
};
/** The text of the <dd> after the <dt> named term, in a section of the Cluster view. */
const fact = (section: Locator, term: string) => section.locator(`dt:text-is("${term}") + dd`);
/** Opens an action's dialog, gives the reason and confirms. */
const act = async (p: Page, scope: Locator, button: string, reason: string) => {
  await scope.getByRole("button", { name: button, exact: true }).click();
  const dialog = p.getByRole("dialog");
  await dialog.getByLabel(/^Reason/).fill(reason);
  await dialog.getByRole("button", { name: `Confirm ${button.toLowerCase()}` }).click();
};

describe("the on-call views in Chromium, on SQLite", { timeout: 60_000 }, () => {
  let env: Awaited<ReturnType<typeof setUp>>;
  let admin: OrchestratorClients;
  let page: Page;
  let operatorToken: string;
  let analystToken: string;
  const ui = (hash = "") => `${env.server.url}/ui/${hash}`;
  const planStatus = async () => (await admin.rollouts.getRolloutStatus({ planId: PLAN })).status!;

  beforeAll(async () => {
    env = await setUp("sqlite");
    ({ admin, page } = env);
    await admin.rbac.assignRole({ principal: "operator:olivia", role: "operator" });
    await admin.rbac.assignRole({ principal: "operator:andy", role: "analyst" });
    operatorToken = (await admin.rbac.createToken({ principal: "operator:olivia", description: "ui-ha test" })).token;
    analystToken = (await admin.rbac.createToken({ principal: "operator:andy", description: "ui-ha test" })).token;

    const release = (releaseId: string, channel: string, staged: boolean) => ({ releaseId, channel, version: releaseId, staged, artifacts: [{ name: "app", digest: DIGEST }] });
    for (const nodeId of ["s-1", "s-2", "s-3"]) {
      await admin.nodes.enrollNode({ nodeId, channel: "stable", labels: {} });
      await admin.nodes.heartbeat({ nodeId });
    }
    await admin.releases.publishRelease({ release: release("stable-r1", "stable", false) });
    for (const nodeId of ["s-1", "s-2", "s-3"]) await admin.releases.upsertAck({ nodeId, releaseId: "stable-r1", state: "healthy", reportedReleaseId: "stable-r1" });
    await admin.releases.publishRelease({ release: release("stable-r2", "stable", true) });
    await admin.rollouts.createRolloutPlan({
      plan: { planId: PLAN, releaseId: "stable-r2", stages: [{ stageId: "canary", nodeIds: ["s-1"], gates: [{ kind: "manual" }] }, { stageId: "rest", percent: 100 }] },
    });
    await until("the plan active", async () => (await planStatus()).phase === "active", 10_000);

    // dv-1's install of its desired release failed: diverged, class failed.
    await admin.nodes.enrollNode({ nodeId: "dv-1", channel: "dv", labels: {} });
    await admin.nodes.heartbeat({ nodeId: "dv-1" });
    await admin.releases.publishRelease({ release: release("dv-r1", "dv", false) });
    await admin.releases.upsertAck({ nodeId: "dv-1", releaseId: "dv-r1", state: "failed", message: "disk full" });
  }, 60_000);
  afterAll(() => env?.tearDown());

  it("the Cluster view says plainly that the deployment is standalone", async () => {
    await signIn(page, env.server.url, operatorToken);
    await page.getByRole("link", { name: "Cluster" }).click();
    await page.getByRole("heading", { name: "Cluster", level: 1 }).waitFor();
    await page.getByTestId("standalone").getByText("Standalone deployment").waitFor();
    const replica = page.getByRole("region", { name: "this replica" });
    expect(await fact(replica, "Replica").textContent()).toBe(env.server.ha.replicaId);
    expect(await fact(replica, "Role").textContent()).toBe("standalone (always leads)");
    expect(await fact(replica, "Read").textContent()).toBe("ready");
    expect(await fact(replica, "Write").textContent()).toBe("ready");
    expect(await page.getByRole("region", { name: "leader" }).count()).toBe(0);
    await page.getByRole("region", { name: "quorum" }).getByText("standalone deployment (embedded SQLite): no replication").waitFor();
    const audit = page.getByRole("region", { name: "audit chain" });
    expect(await fact(audit, "Chain").textContent()).toBe("intact");
    expect(await fact(audit, "Verified through").textContent()).toMatch(/^record (\d+) of \1$/);
    expect(await page.getByRole("button", { name: "Resign leadership" }).count()).toBe(0);
    expect(await a11y(page)).toEqual([]);
    await shot(page, "cluster-standalone");
  });

  it("an emergency stop from the page: the banner on every page, the plan halted; resume lifts it and the plan stays halted", async () => {
    await page.goto(ui("#/rollouts"));
    await page.getByRole("article", { name: `plan ${PLAN}` }).locator(".badge.p-active").waitFor();
    expect(await page.getByTestId("emergency-banner").count()).toBe(0);
    await act(page, page.locator("header"), "Emergency stop", "r2 corrupts disks");
    const banner = page.getByTestId("emergency-banner");
    await banner.getByRole("heading", { name: "Emergency stop in force" }).waitFor();
    expect(await banner.textContent()).toContain("by operator:olivia: “r2 corrupts disks”");
    await page.locator("header").getByText(`Emergency stop in force: halted 1 plan(s): ${PLAN}`).waitFor();
    expect(await page.locator("header").getByRole("button", { name: "Emergency stop" }).isDisabled()).toBe(true);
    await page.getByRole("article", { name: `plan ${PLAN}` }).locator(".badge.p-halted").waitFor();
    expect(await planStatus()).toMatchObject({ phase: "halted", reason: "r2 corrupts disks" });
    const state = (await admin.operations.getEmergencyStatus({})).state!;
    expect(state).toMatchObject({ active: true, stoppedBy: "operator:olivia", reason: "r2 corrupts disks" });
    expect(await a11y(page)).toEqual([]);
    await shot(page, "emergency-stop");

    // The banner is on every page.
    for (const hash of ["#/fleet", "#/diverged", "#/cluster", "#/nodes/s-2"]) {
      await page.goto(ui(hash));
      await page.getByTestId("emergency-banner").getByText("r2 corrupts disks").waitFor();
    }

    await act(page, page.getByTestId("emergency-banner"), "Resume", "r2 pulled from the channel");
    await until("the banner gone", async () => (await page.getByTestId("emergency-banner").count()) === 0, 10_000);
    expect((await admin.operations.getEmergencyStatus({})).state).toMatchObject({ active: false, resumedBy: "operator:olivia", resumeReason: "r2 pulled from the channel" });
    expect((await planStatus()).phase).toBe("halted");
    expect(await page.locator("header").getByRole("button", { name: "Emergency stop" }).isEnabled()).toBe(true);
    const audit = await admin.audit.queryAuditRecords({ category: "system", actor: "operator:olivia" });
    expect(audit.records.map((r) => [r.eventName, r.reason])).toEqual(
      expect.arrayContaining([
        ["emergency.stopped", "r2 corrupts disks"],
        ["emergency.resumed", "r2 pulled from the channel"],
      ]),
    );
  });

  it("lists diverged nodes with class, evidence and plan; a reapply from the page is audited, and so are accept and drain of every node listed", async () => {
    await page.goto(ui("#/diverged"));
    await page.getByRole("heading", { name: "Diverged nodes", level: 1 }).waitFor();
    // Under the server's default threshold (10 minutes) nothing has diverged yet.
    await page.getByText("No node has diverged for longer than that.").waitFor();
    await page.getByRole("combobox", { name: /^Diverged for longer than/ }).selectOption({ label: "any time" });
    await page.getByRole("button", { name: "Apply", exact: true }).click();
    // s-1 was moved to stable-r2 by the plan's canary stage and never acked it: stuck, with its plan.
    const moved = page.locator('tr[data-node="s-1"]');
    await moved.waitFor();
    expect(await moved.locator(".badge.c-stuck").textContent()).toBe("stuck");
    expect(await moved.locator("td").nth(6).textContent()).toMatch(new RegExp(`^${PLAN} / canarymoved \\S+ ago$`));
    await page.getByRole("combobox", { name: /^Channel/ }).selectOption("dv");
    await page.getByRole("button", { name: "Apply", exact: true }).click();
    await page.getByText("1 node(s) diverged", { exact: true }).waitFor();
    const row = page.locator('tr[data-node="dv-1"]');
    await row.waitFor();
    expect(await row.locator(".badge.c-failed").textContent()).toBe("failed");
    expect(await row.locator("td").nth(2).textContent()).toBe("dv-r1");
    expect(await row.locator("td").nth(6).textContent()).toBe("channel or pin");
    expect((await row.locator("td").nth(5).textContent())?.length).toBeGreaterThan(0);
    expect(await page.locator("tbody tr").count()).toBe(1);
    expect(await a11y(page)).toEqual([]);
    await shot(page, "diverged");

    await act(page, row, "Reapply", "disk cleaned");
    await row.getByRole("status").getByText("dv-1: asked to install dv-r1 again").waitFor();
    await row.getByText(/^reapply asked /).waitFor();
    const audit = await admin.audit.queryAuditRecords({ eventName: "node.reconcile.reapply" });
    expect(audit.records.map((r) => [r.actor, r.resource, r.reason, r.outcome])).toEqual([["operator:olivia", "dv-1", "disk cleaned", "success"]]);
    // Every node of the report as filtered (channel dv, any time): accept skips dv-1, which reports nothing; drain takes it.
    const bulk = page.getByRole("region", { name: "reconcile every node listed" });
    await act(page, bulk, "Accept all", "take what they run");
    await bulk.getByRole("status").getByText(/^Accept: 0 done, 1 skipped: dv-1 \(.+\)$/).waitFor();
    await act(page, bulk, "Drain all", "pull the dv nodes");
    await bulk.getByRole("status").getByText("Drain: 1 done, 0 skipped").waitFor();
    await row.locator(".badge", { hasText: "drained" }).waitFor();
    const drained = await admin.audit.queryAuditRecords({ eventName: "node.drained", actor: "operator:olivia" });
    expect(drained.records.map((r) => [r.resource, r.reason])).toEqual([["dv-1", "pull the dv nodes"]]);
    // The threshold and channel chosen survive the polls.
    await page.waitForResponse((r) => r.url().endsWith("/autonomy.v1.OperationsService/ListDivergedNodes"));
    expect(await page.getByRole("combobox", { name: /^Diverged for longer than/ }).inputValue()).toBe("0");
    expect(await page.locator("tbody tr").count()).toBe(1);
  });

  it("gives an analyst the banner, the report and the cluster, without an action button", async () => {
    const analyst = await env.context.newPage();
    try {
      await admin.operations.emergencyStop({ reason: "drill" });
      await signIn(analyst, env.server.url, analystToken);
      await analyst.getByText(/operator:andy \(token\) · analyst · read-only/).waitFor();
      await analyst.getByTestId("emergency-banner").getByText("drill").waitFor();
      await analyst.goto(ui("#/diverged"));
      await analyst.getByRole("combobox", { name: /^Diverged for longer than/ }).selectOption({ label: "any time" });
      await analyst.getByRole("button", { name: "Apply", exact: true }).click();
      await analyst.locator('tr[data-node="dv-1"]').waitFor();
      await analyst.goto(ui("#/cluster"));
      await analyst.getByTestId("standalone").waitFor();
      for (const hash of ["#/diverged", "#/cluster", "#/rollouts"]) {
        await analyst.goto(ui(hash));
        await analyst.getByTestId("emergency-banner").waitFor();
        const buttons = await analyst.getByRole("button").allTextContents();
        for (const name of ["Emergency stop", "Resume", "Reapply", "Accept", "Drain", "Reapply all", "Accept all", "Drain all", "Resign leadership"]) expect(buttons).not.toContain(name);
      }
      expect(await analyst.getByRole("columnheader", { name: "Reconcile" }).count()).toBe(0);
      expect(await a11y(analyst)).toEqual([]);
    } finally {
      await admin.operations.emergencyResume({ reason: "drill over" });
      await analyst.close();
    }
  });
});

describe("the Cluster view in Chromium, on PostgreSQL", { timeout: 60_000 }, () => {
  let env: Awaited<ReturnType<typeof setUp>>;
  beforeAll(async () => {
    env = await setUp("postgres");
  }, 60_000);
  afterAll(() => env?.tearDown());

  it("shows this replica as the leader with its epoch, readiness, quorum and audit chain", async () => {
    const { page, server } = env;
    await signIn(page, server.url, env.adminToken);
    await page.goto(`${server.url}/ui/#/cluster`);
    const replica = page.getByRole("region", { name: "this replica" });
    await fact(replica, "Role").getByText("leader").waitFor();
    expect(await fact(replica, "Replica").textContent()).toBe(server.ha.replicaId);
    expect(await fact(replica, "Write").textContent()).toBe("ready");
    const leader = page.getByRole("region", { name: "leader" });
    expect(await fact(leader, "Holder").textContent()).toBe(`${server.ha.replicaId} (this replica)`);
    expect(await fact(leader, "Epoch").textContent()).toBe("1");
    expect(await fact(leader, "Session lock").textContent()).toBe("held");
    expect(await fact(leader, "Lease").textContent()).toBe("3.0 s");
    expect(await fact(leader, "Acquired").textContent()).toMatch(/^\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ$/);
    const quorum = page.getByRole("region", { name: "quorum" });
    expect(await fact(quorum, "Synchronous standbys").textContent()).toBe("0 of 0 connected");
    expect(await fact(quorum, "Lag status").textContent()).toBe("ok (critical above 10 s)");
    expect(await fact(quorum, "Note").textContent()).toBe("no streaming standby is connected");
    expect(await fact(page.getByRole("region", { name: "audit chain" }), "Chain").textContent()).toBe("intact");
    expect(await page.getByTestId("standalone").count()).toBe(0);
    expect(await a11y(page)).toEqual([]);
    await shot(page, "cluster");
  });

  it("explains a refused resign in words, with the replication lag read again", async () => {
    const { page } = env;
    // A lagging synchronous standby is not something a test database has: the server's answer
    // to a resign under critical lag (src/ha/runtime.ts) is given in its place, once.
    const refusal = "replication lag is critical (12.5s > 10s): a handover now could lose acknowledged writes on a failover; wait until the standbys catch up (autonomy ha quorum)";
    await page.route("**/autonomy.v1.HaService/HaResign", (route) =>
      route.fulfill({ status: 400, contentType: "application/json", body: JSON.stringify({ code: "failed_precondition", message: refusal }) }),
    );
    try {
      await page.locator("main").getByRole("button", { name: "Resign leadership", exact: true }).click();
      const dialog = page.getByRole("dialog");
      await dialog.getByLabel(/^Reason/).fill("kernel update");
      await dialog.getByRole("button", { name: "Confirm resign leadership" }).click();
      const alert = dialog.getByRole("alert");
      await alert.getByText("The leader was not asked to resign; nothing changed.").waitFor();
      expect(await alert.textContent()).toContain(refusal);
      expect(await alert.textContent()).toContain("Replication lag now: 0.0 s, ok (critical above 10 s).");
      expect(await a11y(page)).toEqual([]);
      await dialog.getByRole("button", { name: "Close" }).click();
    } finally {
      await page.unroute("**/autonomy.v1.HaService/HaResign");
    }
    expect(await fact(page.getByRole("region", { name: "leader" }), "Epoch").textContent()).toBe("1");
  });

  it("resigns from the page with a reason (audited) and shows the next epoch", async () => {
    const { page, server, admin } = env;
    const scope = page.locator("main");
    await act(page, scope, "Resign leadership", "kernel update");
    await scope.getByRole("status").getByText(`Epoch 1 of ${server.ha.replicaId} resigned at`).waitFor();
    const who = await admin.rbac.whoAmI({});
    const audit = await admin.audit.queryAuditRecords({ category: "ha" });
    expect(audit.records.map((r) => [r.eventName, r.actor, r.reason, r.resource])).toEqual([["ha.leader_resigned", who.principal, "kernel update", "1"]]);
    // The lone replica leads again after its hold-off: the page follows without a reload.
    const leader = page.getByRole("region", { name: "leader" });
    await fact(leader, "Epoch").getByText("2", { exact: true }).waitFor();
    await fact(page.getByRole("region", { name: "this replica" }), "Role").getByText("leader").waitFor();
  });
});
