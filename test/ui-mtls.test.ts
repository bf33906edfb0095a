/**
 * The dashboard on a mutual-TLS server: the browser's client certificate signs the person
 * in (no token, nothing in sessionStorage), and the page shows what that principal may do.
 */
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import http from "node:http";
import type { AddressInfo } from "node:net";
import os from "node:os";
import path from "node:path";
import { chromium, type BrowserContext } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createOrchestratorClients, type OrchestratorClients } from "../clients/index.js";
import { CA_CERT, initCa, issueCert, type IssuedCert } from "../src/security/ca.js";
import { BOOTSTRAP_TOKEN_FILE } from "../src/server.js";
import { startTestServer, type TestServer } from "./helpers/server.js";

declare const sessionStorage: { length: number };
declare const document: { title: string };

describe("the dashboard with a client certificate", { timeout: 60_000 }, () => {
  let work: string;
  let server: TestServer;
  let context: BrowserContext;
  let olivia: IssuedCert;
  let admin: OrchestratorClients;
  let evil: http.Server;
  let evilUrl: string;

  beforeAll(async () => {
    work = mkdtempSync(path.join(os.tmpdir(), "ao-ui-mtls-"));
    const ca = path.join(work, "ca");
    await initCa(ca);
    const serverCert = await issueCert(ca, { profile: "server", name: "api" });
    // The bootstrap token (on a first start without TLS) makes operator:admin an admin, whose certificate then hands out roles.
    const dataDir = path.join(work, "data");
    const plain = await startTestServer("sqlite", { rbacEnforcement: true, dataDir });
    const boot = createOrchestratorClients({ baseUrl: plain.url, token: readFileSync(path.join(dataDir, BOOTSTRAP_TOKEN_FILE), "utf8").trim() });
    await boot.rbac.assignRole({ principal: "operator:admin", role: "admin" });
    boot.close();
    await plain.stop();
    const adminCert = await issueCert(ca, { profile: "operator", name: "admin" });
    olivia = await issueCert(ca, { profile: "operator", name: "olivia" });
    server = await startTestServer("sqlite", {
      rbacEnforcement: true,
      dataDir,
      tls: { certFile: serverCert.certFile, keyFile: serverCert.keyFile, caFile: path.join(ca, CA_CERT) },
    });
    admin = createOrchestratorClients({
      baseUrl: server.url,
      tls: { ca: readFileSync(path.join(ca, CA_CERT)), cert: readFileSync(adminCert.certFile), key: readFileSync(adminCert.keyFile) },
    });
    await admin.rbac.assignRole({ principal: "operator:olivia", role: "operator" });
    await admin.nodes.enrollNode({ nodeId: "m-1", channel: "stable" });
    // Another site, whose page tries to drain a node with the operator's certificate.
    evil = http.createServer((_req, res) => {
      res.writeHead(200, { "content-type": "text/html" });
      res.end(`<!doctype html><title>evil</title><script>
        fetch(${JSON.stringify(`${server.url}/v1/nodes/m-1/drain`)}, { method: "POST", mode: "no-cors", headers: { "content-type": "text/plain" }, body: '{"reason":"from another site"}' })
          .then(() => { document.title = "sent"; }, (e) => { document.title = "failed " + e; });
      </script>`);
    });
    await new Promise<void>((resolve) => evil.listen(0, "127.0.0.1", resolve));
    evilUrl = `http://127.0.0.1:${(evil.address() as AddressInfo).port}/`;
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
    admin?.close();
    evil?.close();
    await server?.stop();
    rmSync(work, { recursive: true, force: true });
  });

  it("signs in with the certificate alone and shows the principal's actions", async () => {
    const page = await context.newPage();
    await page.goto(`${server.url}/ui/#/nodes/m-1`);
    await page.getByRole("heading", { name: "Node m-1" }).waitFor();
    await page.getByText("operator:olivia (client certificate) · operator").waitFor();
    expect(await page.getByRole("button", { name: "Sign out" }).count()).toBe(0);
    await page.getByRole("button", { name: "Drain" }).waitFor({ timeout: 15_000 });
    expect(await page.getByRole("link", { name: "Audit" }).count()).toBe(0);
    expect(await page.evaluate(() => sessionStorage.length)).toBe(0);
  });

  it("refuses a request another site's page makes with the certificate", async () => {
    const page = await context.newPage();
    await page.goto(evilUrl);
    await page.waitForFunction(() => document.title !== "evil");
    expect(await page.title()).toBe("sent");
    expect((await admin.nodes.getNodeSummary({ nodeId: "m-1" })).node?.drained).toBe(false);
    const refused = server.log.lines.find((l) => l.msg === "request" && l.route === "cross_site_refused");
    expect(refused).toMatchObject({ method: "POST", path: "/v1/nodes/m-1/drain", status: 403 });
  });
});
