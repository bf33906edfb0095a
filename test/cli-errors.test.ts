import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import http from "node:http";
import http2 from "node:http2";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { CA_CERT, CRL_FILE, initCa, issueCert, revokeCerts, type IssuedCert } from "../src/security/ca.js";
import { AUTONOMY_BIN, EDGECTL_BIN, runProgram } from "./helpers/child.js";
import { startTestServer, type TestServer } from "./helpers/server.js";
import { eventually } from "./helpers/wait.js";

// Every case runs the built programs, a second or more each on a busy machine.
vi.setConfig({ testTimeout: 120_000 });

/** A server on 127.0.0.1, port 0; resolves with its URL's port and a close function. */
async function listen(server: net.Server): Promise<{ port: number; close: () => Promise<void> }> {
  const sockets = new Set<net.Socket>();
  server.on("connection", (s: net.Socket) => {
    sockets.add(s);
    s.once("close", () => sockets.delete(s));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    port: (server.address() as net.AddressInfo).port,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}

/** One line on stderr, no stack trace, exit status 1. */
function expectOneLine(r: { code: number; stderr: string }) {
  expect(r.code).toBe(1);
  expect(r.stderr.trim().split("\n")).toHaveLength(1);
  expect(r.stderr).not.toMatch(/ {4}at |node:internal|ERR_HTTP2|ECONNRESET|CANCEL \(0x8\)|internal:/);
}

describe("autonomy against something that is not a working orchestrator", () => {
  const closers: (() => Promise<void>)[] = [];
  afterAll(async () => {
    for (const c of closers) await c();
  });

  it("names the URL and where it came from when nothing listens (flag, environment)", async () => {
    const probe = await listen(net.createServer());
    await probe.close();
    const url = `http://127.0.0.1:${probe.port}`;
    const byFlag = await runProgram(AUTONOMY_BIN, ["--orchestrator-url", url, "fleet", "status"]);
    expectOneLine(byFlag);
    expect(byFlag.stderr).toBe(`autonomy: error: cannot reach the orchestrator at ${url} (from --orchestrator-url): connection refused: nothing listens on 127.0.0.1:${probe.port}\n`);
    const byEnv = await runProgram(AUTONOMY_BIN, ["node", "list"], { AUTONOMY_ORCHESTRATOR_URL: url });
    expect(byEnv.stderr).toContain(`at ${url} (from AUTONOMY_ORCHESTRATOR_URL)`);
  });

  it("says an HTTP/1-only server is not the orchestrator, without crashing on ERR_HTTP2_ERROR", async () => {
    const s = await listen(http.createServer((_req, res) => res.end("hello")));
    closers.push(s.close);
    const url = `http://127.0.0.1:${s.port}`;
    const r = await runProgram(AUTONOMY_BIN, ["--orchestrator-url", url, "fleet", "status"]);
    expectOneLine(r);
    expect(r.stderr).toContain(`cannot reach the orchestrator at ${url} (from --orchestrator-url): the server does not speak HTTP/2 without TLS`);
  });

  it("says an HTTP/2 server answering 404 pages is not the orchestrator, and answers in JSON with -o json", async () => {
    const s = await listen(
      http2.createServer((_req, res) => {
        res.writeHead(404, { "content-type": "text/html" });
        res.end("<h1>not found</h1>");
      }),
    );
    closers.push(s.close);
    const url = `http://127.0.0.1:${s.port}`;
    const r = await runProgram(AUTONOMY_BIN, ["--orchestrator-url", url, "node", "describe", "robot-7", "-o", "json"]);
    expect(r.code).toBe(1);
    expect(JSON.parse(r.stderr)).toEqual({
      error: {
        code: "unavailable",
        reason: "not-orchestrator",
        url,
        url_source: "from --orchestrator-url",
        message: `cannot reach the orchestrator at ${url} (from --orchestrator-url): the server answered HTTP 404, not the orchestrator's API: is this the orchestrator's URL?`,
      },
    });
  });

  it("shows it is waiting after a second, and names the URL when no answer comes", async () => {
    const s = await listen(net.createServer(() => {}));
    closers.push(s.close);
    const url = `http://127.0.0.1:${s.port}`;
    const r = await runProgram(AUTONOMY_BIN, ["--orchestrator-url", url, "--request-timeout", "2s", "fleet", "status"]);
    expect(r.code).toBe(1);
    expect(r.stderr).toBe(
      `autonomy: waiting for ${url} ...\n` + `autonomy: error: no answer from ${url} (from --orchestrator-url) within 2s (--request-timeout)\n`,
    );
  });

  it("edgectl names the URL and how long it waited when no answer comes, as autonomy does", async () => {
    const s = await listen(net.createServer(() => {}));
    closers.push(s.close);
    const url = `http://127.0.0.1:${s.port}`;
    const stateDir = mkdtempSync(path.join(os.tmpdir(), "edgectl-timeout-"));
    try {
      const enroll = await runProgram(EDGECTL_BIN, ["--state-dir", stateDir, "--orchestrator-url", url, "--request-timeout", "2s", "enroll", "--node-id", "n1", "--channel", "stable"]);
      expect(enroll.code).toBe(1);
      expect(enroll.stderr).toBe(`edgectl: waiting for ${url} ...\n` + `edgectl: error: no answer from ${url} (from --orchestrator-url) within 2s (--request-timeout)\n`);
      const fromEnv = await runProgram(EDGECTL_BIN, ["--state-dir", stateDir, "--orchestrator-url", url, "enroll", "--node-id", "n1", "--channel", "stable"], {
        AUTONOMY_EDGE_REQUEST_TIMEOUT: "1s",
      });
      expect(fromEnv.code).toBe(1);
      expect(fromEnv.stderr.trim().split("\n").at(-1)).toBe(`edgectl: error: no answer from ${url} (from --orchestrator-url) within 1s (--request-timeout)`);
      const version = await runProgram(EDGECTL_BIN, ["--state-dir", stateDir, "--orchestrator-url", url, "--request-timeout", "2s", "version"]);
      expect(version.code).toBe(0);
      expect(version.stdout).toContain(`server: not reachable (no answer from ${url} (from --orchestrator-url) within 2s (--request-timeout))`);
    } finally {
      rmSync(stateDir, { recursive: true, force: true });
    }
  });

  it("says https:// to a cleartext server needs http://", async () => {
    const server = await startTestServer("sqlite");
    try {
      const url = server.url.replace("http://", "https://");
      const r = await runProgram(AUTONOMY_BIN, ["--orchestrator-url", url, "fleet", "status"]);
      expectOneLine(r);
      expect(r.stderr).toContain("the server does not speak TLS");
      expect(r.stderr).toContain("use an http:// URL");
    } finally {
      await server.stop();
    }
  });

  it("keeps server answers as they are: not_found names the node", async () => {
    const server = await startTestServer("sqlite");
    try {
      const r = await runProgram(AUTONOMY_BIN, ["--orchestrator-url", server.url, "node", "describe", "nobody"]);
      expect(r).toMatchObject({ code: 1 });
      expect(r.stderr).toMatch(/^autonomy: error: not_found: node "nobody" is not enrolled/);
    } finally {
      await server.stop();
    }
  });
});

describe("client-side TLS failures are clear messages", () => {
  let work: string;
  let ca: string;
  let server: TestServer;
  let url: string;
  const certs: Record<string, IssuedCert> = {};
  const caFile = () => path.join(ca, CA_CERT);
  const creds = (c: IssuedCert) => ["--tls-cert-file", c.certFile, "--tls-key-file", c.keyFile];

  beforeAll(async () => {
    work = mkdtempSync(path.join(os.tmpdir(), "ao-cli-tls-"));
    ca = path.join(work, "ca");
    await initCa(ca);
    await initCa(path.join(work, "other"), { commonName: "other CA" });
    // The certificate of the walkthrough's first version: only cp.example.com.
    certs.server = await issueCert(ca, { profile: "server", name: "api", dns: ["cp.example.com"] });
    certs.alice = await issueCert(ca, { profile: "operator", name: "alice" });
    certs.bob = await issueCert(ca, { profile: "operator", name: "bob" });
    certs.node = await issueCert(ca, { profile: "node", name: "robot-7" });
    server = await startTestServer("sqlite", {
      tls: { certFile: certs.server.certFile, keyFile: certs.server.keyFile, caFile: caFile(), crlFile: path.join(ca, CRL_FILE) },
    });
    url = server.url.replace("127.0.0.1", "localhost");
  });
  afterAll(async () => {
    await server.stop();
    rmSync(work, { recursive: true, force: true });
  });

  it("a hostname mismatch names the names the certificate has", async () => {
    const r = await runProgram(AUTONOMY_BIN, ["--orchestrator-url", url, "--tls-ca-file", caFile(), ...creds(certs.alice), "fleet", "status"]);
    expectOneLine(r);
    expect(r.stderr).toContain(`cannot reach the orchestrator at ${url} (from --orchestrator-url): the server's certificate is for "cp.example.com", not "localhost"`);
    expect(r.stderr).toContain("--dns localhost");
  });

  it("an unknown CA names --tls-ca-file", async () => {
    const r = await runProgram(AUTONOMY_BIN, ["--orchestrator-url", url, ...creds(certs.alice), "fleet", "status"]);
    expectOneLine(r);
    expect(r.stderr).toContain("is not signed by a CA this client trusts: pass the CA certificate with --tls-ca-file");
    const other = await runProgram(AUTONOMY_BIN, ["--orchestrator-url", url, "--tls-ca-file", path.join(work, "other", CA_CERT), "fleet", "status"]);
    expect(other.stderr).toContain("is not signed by the CA in --tls-ca-file");
  });

  describe("with a server certificate for localhost", () => {
    let local: TestServer;
    let localUrl: string;
    beforeAll(async () => {
      const cert = await issueCert(ca, { profile: "server", name: "local" });
      local = await startTestServer("sqlite", {
        tls: { certFile: cert.certFile, keyFile: cert.keyFile, caFile: caFile(), crlFile: path.join(ca, CRL_FILE) },
      });
      localUrl = local.url.replace("127.0.0.1", "localhost");
    });
    afterAll(async () => {
      await local.stop();
    });

    it("a server that requires a client certificate says so", async () => {
      const r = await runProgram(AUTONOMY_BIN, ["--orchestrator-url", localUrl, "--tls-ca-file", caFile(), "fleet", "status"]);
      expectOneLine(r);
      expect(r.stderr).toContain("the server requires a client certificate (mutual TLS): pass --tls-cert-file and --tls-key-file");
    });

    it("a revoked client certificate is refused by name", async () => {
      const ok = await runProgram(AUTONOMY_BIN, ["--orchestrator-url", localUrl, "--tls-ca-file", caFile(), ...creds(certs.bob), "fleet", "status"]);
      expect(ok.code).toBe(0);
      await revokeCerts(ca, { name: "bob" });
      await eventually(async () => {
        const r = await runProgram(AUTONOMY_BIN, ["--orchestrator-url", localUrl, "--tls-ca-file", caFile(), ...creds(certs.bob), "fleet", "status"]);
        expectOneLine(r);
        expect(r.stderr).toContain("the server refused the client certificate of --tls-cert-file (bob, serial ");
        expect(r.stderr).toContain("it is revoked, or not signed by a CA the server trusts");
      });
    });

    it("a revoked node logs once that its certificate was refused, keeps retrying, and edgectl status shows it", async () => {
      const stateDir = path.join(work, "robot-7");
      const env = { ...process.env, AUTONOMY_ORCHESTRATOR_URL: localUrl, AUTONOMY_TLS_CA_FILE: caFile() };
      const agent = spawn(
        process.execPath,
        [EDGECTL_BIN, "--state-dir", stateDir, ...creds(certs.node), "run", "--node-id", "robot-7", "--channel", "tls", "--heartbeat-interval", "200ms", "--poll-interval", "200ms", "--log-format", "json"],
        { env, stdio: ["ignore", "ignore", "pipe"] },
      );
      let log = "";
      agent.stderr.on("data", (c: Buffer) => (log += c.toString()));
      const exited = new Promise<number | null>((resolve) => agent.once("exit", resolve));
      try {
        await eventually(async () => expect(log).toContain('"msg":"enrolled; running"'));
        await revokeCerts(ca, { name: "robot-7" });
        await eventually(async () => expect(log).toContain("the orchestrator refused this node's certificate (revoked or expired)"));
        const status = await runProgram(EDGECTL_BIN, ["--state-dir", stateDir, ...creds(certs.node), "status"], { AUTONOMY_TLS_CA_FILE: caFile() });
        expect(status.code).toBe(0);
        expect(status.stdout).toMatch(/connection\s+CERTIFICATE REFUSED since /);
        expect(status.stdout).toMatch(/certificate\s+.*node-robot-7\.pem: expires \S+ \(in 8\d days\)/);
        const json = JSON.parse((await runProgram(EDGECTL_BIN, ["--state-dir", stateDir, "status", "-o", "json"])).stdout);
        expect(json.connection).toMatchObject({ state: "tls-cert-refused" });
        expect(json.connection.retry_in_ms).toBeGreaterThanOrEqual(30_000);
        // Without the flags, status shows the certificate the agent runs with.
        expect(json.certificate).toMatchObject({ file: path.resolve(certs.node.certFile), days_left: expect.any(Number) });
        // Logged once, not at every attempt; no "cannot reach" line for it.
        expect(log.split("refused this node's certificate").length - 1).toBe(1);
        expect(log).not.toContain("cannot reach the orchestrator");
      } finally {
        agent.kill("SIGTERM");
        expect(await exited).toBe(0);
      }
    });
  });
});
