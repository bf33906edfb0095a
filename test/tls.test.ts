import { execFile } from "node:child_process";
import { mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import http2 from "node:http2";
import https from "node:https";
import os from "node:os";
import type { TLSSocket } from "node:tls";
import path from "node:path";
import { promisify } from "node:util";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createOrchestratorClients, IngestEventsRequestSchema, IngestEventsResponseSchema } from "../clients/index.js";
import { writeFileAtomic } from "../src/files.js";
import { CA_CERT, CRL_FILE, initCa, issueCert, revokeCerts, type IssuedCert } from "../src/security/ca.js";
import { AUTONOMY_BIN, EDGECTL_BIN, outputOf, runProgram, startChildServer } from "./helpers/child.js";
import { startTestServer, type TestServer } from "./helpers/server.js";
import { until } from "./helpers/wait.js";

interface Creds {
  ca: Buffer;
  cert?: Buffer;
  key?: Buffer;
}

const credsOf = (ca: string, c?: IssuedCert): Creds => ({
  ca: readFileSync(path.join(ca, CA_CERT)),
  cert: c && readFileSync(c.certFile),
  key: c && readFileSync(c.keyFile),
});

/** One GET over a fresh HTTP/2 TLS session: "200 <body>", or "refused <code>" when the server cuts the connection. */
function get(url: string, creds: Creds, p = "/v1/health"): Promise<string> {
  return new Promise((resolve) => {
    const session = http2.connect(url, { ca: creds.ca, cert: creds.cert, key: creds.key });
    const done = (v: string) => {
      session.destroy();
      resolve(v);
    };
    session.on("error", (err: NodeJS.ErrnoException) => done(`refused ${err.code ?? err.message}`));
    session.on("close", () => done("refused closed"));
    const req = session.request({ ":path": p });
    let status = 0;
    let body = "";
    req.on("response", (h) => (status = Number(h[":status"])));
    req.on("data", (c: Buffer) => (body += c.toString()));
    // A stream that ends without an answer: the server cut the connection.
    // The status code and the probe's status field (test servers add an RBAC warning to the body).
    req.on("end", () => done(status === 0 ? "refused without an answer" : `${status} ${body.startsWith("{") ? JSON.stringify({ status: JSON.parse(body).status }) : body}`));
    req.on("error", (err: NodeJS.ErrnoException) => done(`refused ${err.code ?? err.message}`));
    req.end();
  });
}

const metricValue = async (server: TestServer, name: string) => {
  const text = await server.metrics.registry.metrics();
  return text.split("\n").filter((l) => l.startsWith(name)).map((l) => l.trim());
};

describe("TLS and mutual TLS", () => {
  let work: string;
  let ca: string;
  let otherCa: string;
  let server: TestServer;
  const certs: Record<string, IssuedCert> = {};

  beforeAll(async () => {
    work = mkdtempSync(path.join(os.tmpdir(), "ao-tls-"));
    ca = path.join(work, "ca");
    otherCa = path.join(work, "other-ca");
    await initCa(ca);
    await initCa(otherCa, { commonName: "someone else" });
    certs.server = await issueCert(ca, { profile: "server", name: "api" });
    for (const name of ["robot-1", "robot-2", "robot-3", "robot-4", "robot-5"]) certs[name] = await issueCert(ca, { profile: "node", name });
    certs.alice = await issueCert(ca, { profile: "operator", name: "alice" });
    certs.stranger = await issueCert(otherCa, { profile: "node", name: "robot-1" });
    certs.expired = await issueCert(ca, { profile: "node", name: "old", days: 1, now: new Date(Date.now() - 3 * 86_400_000) });
    certs.revokedEarly = await issueCert(ca, { profile: "node", name: "gone" });
    await revokeCerts(ca, { name: "gone" });
    server = await startTestServer("sqlite", {
      tls: { certFile: certs.server.certFile, keyFile: certs.server.keyFile, caFile: path.join(ca, CA_CERT), crlFile: path.join(ca, CRL_FILE) },
    });
  });
  afterAll(async () => {
    await server.stop();
    rmSync(work, { recursive: true, force: true });
  });

  it("serves over TLS with a client certificate of the CA: REST on HTTP/2 and HTTP/1.1, Connect", async () => {
    expect(server.url).toMatch(/^https:\/\/127\.0\.0\.1:\d+$/);
    expect(await get(server.url, credsOf(ca, certs["robot-1"]))).toBe('200 {"status":"ok"}');
    const h1 = await new Promise<string>((resolve, reject) => {
      https
        .get(`${server.url}/v1/health`, { ...credsOf(ca, certs.alice), ALPNProtocols: ["http/1.1"] } as https.RequestOptions, (res) => {
          let body = "";
          res.on("data", (c) => (body += c));
          const alpn = (res.socket as TLSSocket).alpnProtocol;
          res.on("end", () => resolve(`${alpn} ${res.statusCode} ${JSON.stringify({ status: JSON.parse(body).status })}`));
        })
        .on("error", reject);
    });
    expect(h1).toBe('http/1.1 200 {"status":"ok"}');
    const { ca: caPem, cert, key } = credsOf(ca, certs.alice);
    for (const httpVersion of ["2", "1.1"] as const) {
      const api = createOrchestratorClients({ baseUrl: server.url, httpVersion, tls: { ca: caPem, cert, key } });
      try {
        expect(await api.health.check({})).toMatchObject({ status: "ok" });
      } finally {
        api.close();
      }
    }
  });

  it.each([
    ["no certificate", () => credsOf(ca), "NO_CERTIFICATE"],
    ["a certificate of another CA", () => credsOf(ca, certs.stranger), "UNABLE_TO_VERIFY_LEAF_SIGNATURE"],
    ["an expired certificate", () => credsOf(ca, certs.expired), "CERT_HAS_EXPIRED"],
    ["a certificate revoked before the start", () => credsOf(ca, certs.revokedEarly), "CERT_REVOKED"],
  ])("refuses %s at the handshake, counting why", async (_name, creds, reason) => {
    const before = await metricValue(server, `cp_tls_handshake_failures_total{reason="${reason}"}`);
    expect(await get(server.url, creds())).toMatch(/^refused /);
    const after = await metricValue(server, `cp_tls_handshake_failures_total{reason="${reason}"}`);
    expect(Number(after[0]?.split(" ").pop())).toBe(Number(before[0]?.split(" ").pop() ?? 0) + 1);
  });

  it("serves the CRL in force at GET /v1/crl", async () => {
    const res = await new Promise<{ type: string; body: Buffer }>((resolve, reject) => {
      https
        .get(`${server.url}/v1/crl`, { ...credsOf(ca, certs.alice) }, (res) => {
          const chunks: Buffer[] = [];
          res.on("data", (c: Buffer) => chunks.push(c));
          res.on("end", () => resolve({ type: String(res.headers["content-type"]), body: Buffer.concat(chunks) }));
        })
        .on("error", reject);
    });
    expect(res.type).toBe("application/pkix-crl");
    expect(res.body.equals(readFileSync(path.join(ca, CRL_FILE)))).toBe(true);
  });

  it("cuts the open connection of a certificate revoked while connected, and refuses its next handshake", async () => {
    const creds = credsOf(ca, certs["robot-2"]);
    const session = http2.connect(server.url, creds);
    session.on("error", () => {});
    const closed = new Promise<number>((resolve) => session.once("close", () => resolve(Date.now())));
    const first = await new Promise<number>((resolve) => {
      const req = session.request({ ":path": "/v1/health" });
      req.on("response", (h) => resolve(Number(h[":status"])));
      req.resume();
      req.end();
    });
    expect(first).toBe(200);
    const other = http2.connect(server.url, credsOf(ca, certs["robot-3"]));
    other.on("error", () => {});
    const revokedAt = Date.now();
    await revokeCerts(ca, { name: "robot-2" });
    const closedAt = await closed;
    expect(closedAt).toBeGreaterThanOrEqual(revokedAt);
    expect(await get(server.url, creds)).toMatch(/^refused/);
    // Another node's open session stays up.
    expect(other.closed || other.destroyed).toBe(false);
    other.close();
    expect(await metricValue(server, "cp_tls_revoked_connections_closed_total")).toEqual(["cp_tls_revoked_connections_closed_total 1"]);
  });

  it("keeps the last good CRL when the file turns bad, raises the alert metric, and takes the next good one", async () => {
    const crlFile = path.join(ca, CRL_FILE);
    const good = readFileSync(crlFile);
    writeFileAtomic(crlFile, "-----BEGIN X509 CRL-----\nnot a crl\n-----END X509 CRL-----\n");
    await until("the alert", async () => (await metricValue(server, "cp_tls_crl_reload_failing"))[0]?.endsWith(" 1") ?? false);
    expect(await get(server.url, credsOf(ca, certs["robot-2"]))).toMatch(/^refused/);
    expect(await get(server.url, credsOf(ca, certs["robot-4"]))).toBe('200 {"status":"ok"}');
    // A CRL signed by another CA is refused the same way.
    writeFileAtomic(crlFile, readFileSync(path.join(otherCa, CRL_FILE)));
    await until("a second refusal", async () => (await metricValue(server, "cp_tls_crl_reload_failures_total"))[0]?.endsWith(" 2") ?? false);
    // Back to a good CRL, with one more revocation (swapped by rename, as tools write it).
    writeFileSync(`${crlFile}.next`, good);
    renameSync(`${crlFile}.next`, crlFile);
    await revokeCerts(ca, { name: "robot-4" });
    await until("recovery", async () => (await metricValue(server, "cp_tls_crl_reload_failing"))[0]?.endsWith(" 0") ?? false);
    await until("robot-4 refused", async () => (await get(server.url, credsOf(ca, certs["robot-4"]))).startsWith("refused"));
    expect(await get(server.url, credsOf(ca, certs["robot-5"]))).toBe('200 {"status":"ok"}');
    const number = await metricValue(server, "cp_tls_crl_number");
    expect(number[0]).toMatch(/^cp_tls_crl_number [4-9]$/);
  });

  it("answers a third-party client: @grpc/grpc-js with its own certificates over mutual TLS", async () => {
    const { ca: caPem, cert, key } = credsOf(ca, certs["robot-5"]);
    const client = new grpc.Client(server.url.replace("https://", ""), grpc.credentials.createSsl(caPem, key!, cert!));
    try {
      const request = create(IngestEventsRequestSchema, {
        events: [{ eventId: "grpc-js-1", eventType: "boot", nodeId: "robot-5", timestamp: { seconds: 1_700_000_000n } }],
      });
      const response = await new Promise<unknown>((resolve, reject) =>
        client.makeUnaryRequest(
          "/autonomy.v1.EventService/IngestEvents",
          (m: typeof request) => Buffer.from(toBinary(IngestEventsRequestSchema, m)),
          (b: Buffer) => fromBinary(IngestEventsResponseSchema, b),
          request,
          (err, value) => (err ? reject(err) : resolve(value)),
        ),
      );
      expect(response).toMatchObject({ received: 1, inserted: 1, deduped: 0 });
    } finally {
      client.close();
    }
    // Without a client certificate the same client is refused.
    const anonymous = new grpc.Client(server.url.replace("https://", ""), grpc.credentials.createSsl(caPem));
    try {
      const err = await new Promise<grpc.ServiceError>((resolve) =>
        anonymous.makeUnaryRequest("/autonomy.v1.HealthService/Check", () => Buffer.alloc(0), (b: Buffer) => b, {}, { deadline: Date.now() + 5000 }, (e) => resolve(e!)),
      );
      expect(err.code).toBe(grpc.status.UNAVAILABLE);
    } finally {
      anonymous.close();
    }
  });
});

describe("TLS configuration that must stop the start", () => {
  let work: string;
  let ca: string;
  let server: IssuedCert;

  beforeAll(async () => {
    work = mkdtempSync(path.join(os.tmpdir(), "ao-tls-start-"));
    ca = path.join(work, "ca");
    await initCa(ca);
    await initCa(path.join(work, "other"));
    server = await issueCert(ca, { profile: "server", name: "api" });
  });
  afterAll(() => rmSync(work, { recursive: true, force: true }));

  const start = (crlFile: string) =>
    startTestServer("sqlite", { tls: { certFile: server.certFile, keyFile: server.keyFile, caFile: path.join(ca, CA_CERT), crlFile } });

  it.each([
    ["a missing CRL", () => path.join(work, "nope.pem"), "no such file"],
    ["a CRL of another CA", () => path.join(work, "other", CRL_FILE), "not signed by the CA of --tls-ca-file"],
    ["a file that is no CRL", () => (writeFileSync(path.join(work, "junk.pem"), "junk"), path.join(work, "junk.pem")), "not a CRL"],
  ])("%s", async (_name, file, message) => {
    await expect(start(file())).rejects.toThrow(message);
  });

  it("an expired CRL, with one clear line from the program", async () => {
    const expired = path.join(work, "expired.pem");
    const crl = await revokeCerts(ca, { crlDays: 1, now: new Date(Date.now() - 2 * 86_400_000) });
    writeFileSync(expired, readFileSync(crl.crlFile));
    const args = ["--tls-cert-file", server.certFile, "--tls-key-file", server.keyFile, "--tls-ca-file", path.join(ca, CA_CERT), "--tls-crl-file", expired];
    await expect(startChildServer(["--data-dir", path.join(work, "data"), ...args])).rejects.toThrow(
      /cannot start: --tls-crl-file .*expired\.pem: expired: its nextUpdate was/,
    );
  });

  it("warns when it serves cleartext beyond loopback", async () => {
    const open = await startTestServer("sqlite", { listen: "0.0.0.0:0" });
    try {
      expect(open.log.lines.find((l) => l.level === 40 && String(l.msg).startsWith("serving cleartext HTTP beyond loopback"))).toBeDefined();
    } finally {
      await open.stop();
    }
    const local = await startTestServer("sqlite");
    try {
      expect(local.log.lines.find((l) => String(l.msg).startsWith("serving cleartext"))).toBeUndefined();
    } finally {
      await local.stop();
    }
  });
});

describe("autonomy cert and the CLI over mutual TLS", () => {
  it("creates a CA, issues, lists, rotates, revokes and checks certificates; the CLI calls a mutual-TLS server", async () => {
    const exec = promisify(execFile);
    const work = mkdtempSync(path.join(os.tmpdir(), "ao-cert-cli-"));
    const env = { ...process.env, AUTONOMY_CA_DIR: path.join(work, "ca") };
    const cli = async (...args: string[]) => outputOf(await runProgram(AUTONOMY_BIN, args, env));
    try {
      expect((await cli("cert", "init-ca")).out).toMatch(/^created the CA in /);
      expect((await cli("cert", "init-ca")).out).toMatch(/exists already; a CA is created once/);
      expect((await cli("cert", "issue", "--profile", "server", "--name", "api")).out).toMatch(/issued server certificate for api: serial [0-9A-F]+/);
      expect((await cli("cert", "issue", "--profile", "operator", "--name", "ops", "--days", "10")).code).toBe(0);
      expect((await cli("cert", "issue", "--profile", "node", "--name", "bad name")).out).toMatch(/--name "bad name": use 1 to 128 letters/);
      const expiring = await cli("cert", "list", "--expiring-within-days", "30");
      expect(expiring.out).toMatch(/operator\s+ops\s+\S+\s+expiring/);
      expect(expiring.out).not.toMatch(/\bapi\b/);

      const ca = env.AUTONOMY_CA_DIR;
      const server = await startTestServer("sqlite", {
        tls: { certFile: path.join(ca, "server-api.pem"), keyFile: path.join(ca, "server-api-key.pem"), caFile: path.join(ca, CA_CERT), crlFile: path.join(ca, CRL_FILE) },
      });
      try {
        const tlsArgs = ["--orchestrator-url", server.url, "--tls-ca-file", path.join(ca, CA_CERT)];
        const asOps = [...tlsArgs, "--tls-cert-file", path.join(ca, "operator-ops.pem"), "--tls-key-file", path.join(ca, "operator-ops-key.pem")];
        expect(await cli(...asOps, "rollout", "plan", "list")).toEqual({ code: 0, out: "no rollout plans\n" });
        expect((await cli(...tlsArgs, "rollout", "plan", "list")).code).toBe(1);
        // edgectl takes the same flags.
        expect((await cli("cert", "issue", "--profile", "node", "--name", "robot-9")).code).toBe(0);
        const edge = await exec(process.execPath, [EDGECTL_BIN, ...tlsArgs, "--tls-cert-file", path.join(ca, "node-robot-9.pem"), "--tls-key-file", path.join(ca, "node-robot-9-key.pem"),
          "--state-dir", path.join(work, "robot-9"), "enroll", "--node-id", "robot-9", "--channel", "stable"], { env });
        expect(edge.stdout).toMatch(/robot-9/);
        expect((await cli(...tlsArgs, "--tls-cert-file", path.join(ca, "operator-ops.pem"), "rollout", "plan", "list")).out).toMatch(
          /--tls-cert-file and --tls-key-file go together/,
        );

        const rotated = await cli("cert", "rotate", "--profile", "operator", "--name", "ops", "--revoke-old");
        expect(rotated.out).toMatch(/rotated: operator certificate for ops[\s\S]*revoked [0-9A-F]+; CRL number 2/);
        // The rotated key replaced the files; the old serial is revoked and the server took the CRL.
        const check = await cli("cert", "check-revocation", "--cert", path.join(ca, "operator-ops.pem"));
        expect(check).toMatchObject({ code: 0, out: expect.stringContaining("not revoked by CRL number 2") });
        await until("the new CRL", async () => (await metricValue(server, "cp_tls_crl_number"))[0] === "cp_tls_crl_number 2");
        expect(await cli(...asOps, "rollout", "plan", "list")).toEqual({ code: 0, out: "no rollout plans\n" });

        expect((await cli("cert", "revoke", "--name", "ops")).out).toMatch(/revoked operator ops/);
        expect((await cli("cert", "check-revocation", "--cert", path.join(ca, "operator-ops.pem"))).code).toBe(3);
        await until("the refusal", async () => (await cli(...asOps, "rollout", "plan", "list")).code === 1);
        expect((await cli("cert", "revoke", "--name", "ops")).out).toMatch(/no valid certificate named "ops"/);
        expect((await cli("cert", "list")).out).toMatch(/operator\s+ops\s+\S+\s+revoked/);
      } finally {
        await server.stop();
      }
    } finally {
      rmSync(work, { recursive: true, force: true });
    }
  });
});

describe("CRL sync from other control planes", () => {
  let work: string;
  let ca: string;
  let api: IssuedCert;
  const publishers: TestServer[] = [];
  const crlOf = (n: number) => path.join(work, `crl-${n}.pem`);
  const pubFile = (i: number) => path.join(work, `pub-${i}.pem`);
  const serve = (i: number, n: number) => writeFileAtomic(pubFile(i), readFileSync(crlOf(n)));

  beforeAll(async () => {
    work = mkdtempSync(path.join(os.tmpdir(), "ao-crl-sync-"));
    ca = path.join(work, "ca");
    await initCa(ca);
    api = await issueCert(ca, { profile: "server", name: "api" });
    writeFileSync(crlOf(1), readFileSync(path.join(ca, CRL_FILE)));
    for (const n of [2, 3]) {
      await revokeCerts(ca, {});
      writeFileSync(crlOf(n), readFileSync(path.join(ca, CRL_FILE)));
    }
    for (const i of [0, 1]) {
      serve(i, 1);
      publishers.push(
        await startTestServer("sqlite", { tls: { certFile: api.certFile, keyFile: api.keyFile, caFile: path.join(ca, CA_CERT), crlFile: pubFile(i) } }),
      );
    }
  });
  afterAll(async () => {
    for (const p of publishers) await p.stop();
    rmSync(work, { recursive: true, force: true });
  });

  const settings = (file: string, minSources: number, urls = publishers.map((p) => `${p.url}/v1/crl`)) => ({
    urls,
    minSources,
    intervalMs: 0,
    crlFile: file,
    caPem: readFileSync(path.join(ca, CA_CERT)),
    cert: readFileSync(api.certFile),
    key: readFileSync(api.keyFile),
  });
  const published = async (i: number, n: number) => {
    serve(i, n);
    await until(`publisher ${i} serving CRL ${n}`, async () => (await metricValue(publishers[i], "cp_tls_crl_number"))[0] === `cp_tls_crl_number ${n}`);
  };

  it("takes a CRL only when min-sources publishers agree, never an older one, and counts failing publishers", async () => {
    const { syncCrlOnce } = await import("../src/security/crl-sync.js");
    const file = path.join(work, "synced.pem");
    writeFileSync(file, readFileSync(crlOf(1)));
    const failures: string[] = [];
    const onFailure = (url: string, reason: string) => failures.push(`${url} ${reason}`);

    // 1 of 2 serves number 2: not enough with min-sources 2.
    await published(0, 2);
    expect(await syncCrlOnce(settings(file, 2), onFailure)).toMatchObject({ outcome: "no_quorum", detail: expect.stringContaining("at most 1 agree") });
    expect(readFileSync(file).equals(readFileSync(crlOf(1)))).toBe(true);
    // With min-sources 1 the newest wins.
    expect(await syncCrlOnce(settings(file, 1), onFailure)).toMatchObject({ outcome: "accepted", detail: "CRL number 2 from 1 publisher(s)" });
    expect(readFileSync(file).equals(readFileSync(crlOf(2)))).toBe(true);

    // 2 of 2 serve number 3.
    await published(0, 3);
    await published(1, 3);
    expect(await syncCrlOnce(settings(file, 2), onFailure)).toMatchObject({ outcome: "accepted", detail: "CRL number 3 from 2 publisher(s)" });
    expect(await syncCrlOnce(settings(file, 2), onFailure)).toMatchObject({ outcome: "unchanged" });

    // Both fall back to number 2: an older CRL is refused.
    await published(0, 2);
    await published(1, 2);
    expect(await syncCrlOnce(settings(file, 2), onFailure)).toMatchObject({
      outcome: "rollback_refused",
      detail: "the publishers agree on CRL number 2, not newer than number 3 in force",
    });
    expect(readFileSync(file).equals(readFileSync(crlOf(3)))).toBe(true);
    expect(failures).toEqual([]);

    // A publisher that cannot be reached is a failure of its own.
    const down = "https://127.0.0.1:1/v1/crl";
    expect(await syncCrlOnce(settings(file, 1, [down, `${publishers[0].url}/v1/crl`]), onFailure)).toMatchObject({ outcome: "rollback_refused" });
    expect(failures).toEqual([expect.stringMatching(/^https:\/\/127\.0\.0\.1:1\/v1\/crl connect ECONNREFUSED/)]);
  });

  it("fetches the CRL before the start and keeps pulling it on the interval", async () => {
    await published(0, 2);
    await published(1, 2);
    const file = path.join(work, "fresh.pem");
    const server = await startTestServer("sqlite", {
      tls: {
        certFile: api.certFile,
        keyFile: api.keyFile,
        caFile: path.join(ca, CA_CERT),
        crlFile: file,
        crlSync: { urls: publishers.map((p) => `${p.url}/v1/crl`), minSources: 2, intervalMs: 100 },
      },
    });
    try {
      expect(readFileSync(file).equals(readFileSync(crlOf(2)))).toBe(true);
      expect(await metricValue(server, "cp_tls_crl_number")).toEqual(["cp_tls_crl_number 2"]);
      await published(0, 3);
      await published(1, 3);
      await until("the synced CRL in force", async () => (await metricValue(server, "cp_tls_crl_number"))[0] === "cp_tls_crl_number 3");
      const rounds = await metricValue(server, 'cp_tls_crl_sync_rounds_total{outcome="accepted"}');
      expect(Number(rounds[0].split(" ").pop())).toBeGreaterThanOrEqual(2);
    } finally {
      await server.stop();
    }
    // Without a quorum and without a CRL file, the start fails closed.
    await published(1, 1);
    await expect(
      startTestServer("sqlite", {
        tls: {
          certFile: api.certFile,
          keyFile: api.keyFile,
          caFile: path.join(ca, CA_CERT),
          crlFile: path.join(work, "never.pem"),
          crlSync: { urls: publishers.map((p) => `${p.url}/v1/crl`), minSources: 2, intervalMs: 0 },
        },
      }),
    ).rejects.toThrow(/--tls-crl-file .*never\.pem: no such file/);
  });
});
