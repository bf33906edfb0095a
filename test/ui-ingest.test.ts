/**
 * The fleet page's ingest-rate plot in Chromium, from the stored events: events ingested
 * before the page opened show on it, it redraws as more arrive, it is accessible, and a
 * caller without telemetry:read sees no plot (and no error).
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

const CHROMIUM = "/usr/bin/chromium";
const event = (i: number) => ({ eventId: `ui-e-${i}`, eventType: "heartbeat", nodeId: `n-${i % 5}`, timestamp: { seconds: 1_800_000_000n, nanos: 0 } });

describe("the ingest-rate plot in Chromium", { timeout: 60_000 }, () => {
  let server: TestServer;
  let admin: OrchestratorClients;
  let context: BrowserContext;
  let bootstrap: string;
  let auditorToken: string;
  let profile: string;

  const open = async (token: string): Promise<Page> => {
    const page = await context.newPage();
    await page.goto(`${server.url}/ui/`);
    await page.getByLabel("Token").fill(token);
    await page.getByRole("button", { name: "Sign in" }).click();
    await page.getByRole("heading", { name: "Fleet", level: 1 }).waitFor();
    return page;
  };

  beforeAll(async () => {
    server = await startTestServer("sqlite", { rbacEnforcement: true });
    bootstrap = readFileSync(path.join(server.dataDir, BOOTSTRAP_TOKEN_FILE), "utf8").trim();
    admin = createOrchestratorClients({ baseUrl: server.url, token: bootstrap });
    await admin.rbac.assignRole({ principal: "operator:audrey", role: "auditor" });
    auditorToken = (await admin.rbac.createToken({ principal: "operator:audrey", description: "ingest plot test" })).token;
    await admin.events.ingestEvents({ events: Array.from({ length: 250 }, (_, i) => event(i)) });
    if (!existsSync(CHROMIUM)) throw new Error(`the dashboard tests drive Debian's Chromium at ${CHROMIUM}: apt-get install chromium`);
    profile = mkdtempSync(path.join(os.tmpdir(), "ao-chromium-"));
    context = await chromium.launchPersistentContext(profile, {
      executablePath: CHROMIUM,
      headless: true,
      args: ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"],
      viewport: { width: 1280, height: 900 },
    });
    context.setDefaultTimeout(15_000);
  }, 60_000);

  afterAll(async () => {
    await context?.close();
    admin?.close();
    await server?.stop();
    if (profile) rmSync(profile, { recursive: true, force: true });
  });

  it("plots the events stored before the page opened, and more as they arrive", async () => {
    const page = await open(bootstrap);
    const summary = page.getByTestId("ingest-summary");
    await expect.poll(() => summary.textContent(), { timeout: 15_000 }).toMatch(/250 events in 10 minutes/);
    const label = await page.getByRole("img", { name: /events stored per second over the last 10 minutes/ }).getAttribute("aria-label");
    expect(label).toMatch(/peak \d+(\.\d)?\/s/);
    expect(await page.locator(".chart path.curve").count()).toBe(2);
    await admin.events.ingestEvents({ events: Array.from({ length: 100 }, (_, i) => event(1000 + i)) });
    await expect.poll(() => summary.textContent(), { timeout: 20_000 }).toMatch(/350 events in 10 minutes/);
    const serious = (await new AxeBuilder({ page }).analyze()).violations.filter((v) => v.impact === "serious" || v.impact === "critical");
    expect(serious.map((v) => v.id)).toEqual([]);
    await page.close();
  });

  it("shows no plot to a caller without telemetry:read", async () => {
    const page = await open(auditorToken);
    await page.getByRole("heading", { name: "All nodes" }).waitFor();
    expect(await page.getByRole("heading", { name: "Ingest rate" }).count()).toBe(0);
    expect(await page.getByTestId("ingest-summary").count()).toBe(0);
    await page.close();
  });
});
