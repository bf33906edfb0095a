/**
 * The dashboard on a mutual-TLS server: the browser's client certificate signs the person
 * in (no token, nothing in sessionStorage), and the page shows what that principal may do.
 */
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { chromium, type BrowserContext } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createOrchestratorClients } from "../clients/index.js";
import { CA_CERT, initCa, issueCert, type IssuedCert } from "../src/security/ca.js";
import { startTestServer, type TestServer } from "./helpers/server.js";

declare const sessionStorage: { length: number };

describe("the dashboard with a client certificate", { timeout: 60_000 }, () => {
  let work: string;
  let server: TestServer;
  let context: BrowserContext;
  let olivia: IssuedCert;

  beforeAll(async () => {
    work = mkdtempSync(path.join(os.tmpdir(), "ao-ui-mtls-"));
    const ca = path.join(work, "ca");
    await initCa(ca);
    const serverCert = await issueCert(ca, { profile: "server", name: "api" });
    // operator:admin is the bootstrap admin's principal: this certificate can hand out roles.
    const adminCert = await issueCert(ca, { profile: "operator", name: "admin" });
    olivia = await issueCert(ca, { profile: "operator", name: "olivia" });
    server = await startTestServer("sqlite", {
      rbacEnforcement: true,
      tls: { certFile: serverCert.certFile, keyFile: serverCert.keyFile, caFile: path.join(ca, CA_CERT) },
    });
    const admin = createOrchestratorClients({
      baseUrl: server.url,
      tls: { ca: readFileSync(path.join(ca, CA_CERT)), cert: readFileSync(adminCert.certFile), key: readFileSync(adminCert.keyFile) },
    });
    try {
      await admin.rbac.assignRole({ principal: "operator:olivia", role: "operator" });
      await admin.nodes.enrollNode({ nodeId: "m-1", channel: "stable" });
    } finally {
      admin.close();
    }
    context = await chromium.launchPersistentContext(path.join(work, "profile"), {
      executablePath: "/usr/bin/chromium",
      headless: true,
      args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
      // The test CA is not one the browser trusts; the client certificate is what is under test.
      ignoreHTTPSErrors: true,
      clientCertificates: [{ origin: server.url, certPath: olivia.certFile, keyPath: olivia.keyFile }],
    });
    context.setDefaultTimeout(15_000);
  }, 60_000);

  afterAll(async () => {
    await context?.close();
    await server?.stop();
    rmSync(work, { recursive: true, force: true });
  });

  it("signs in with the certificate alone and shows the principal's actions", async () => {
    const page = await context.newPage();
    await page.goto(`${server.url}/ui/#/nodes/m-1`);
    await page.getByRole("heading", { name: "Node m-1" }).waitFor();
    await page.getByText("operator:olivia (client certificate) · operator").waitFor();
    expect(await page.getByRole("button", { name: "Sign out" }).count()).toBe(0);
    expect(await page.getByRole("button", { name: "Drain" }).count()).toBe(1);
    expect(await page.getByRole("link", { name: "Audit" }).count()).toBe(0);
    expect(await page.evaluate(() => sessionStorage.length)).toBe(0);
  });
});
