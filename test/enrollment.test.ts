/**
 * Enrolment without long-lived secrets, end to end: real `autonomy` and `edgectl` processes
 * against a real server on 127.0.0.1 over mutual TLS (client certificates required), on both
 * stores. A one-time token, a key made on the node, a CSR, a certificate from the server's CA
 * (serve --ca-dir); reuse, expiry and a CSR for another node refused; `run` on the enrolled
 * certificate, renewing it, and cut off when it is revoked.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { createPrivateKey, X509Certificate } from "node:crypto";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import https from "node:https";
import os from "node:os";
import path from "node:path";
import { timestampMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createOrchestratorClients, type OrchestratorClients } from "../clients/index.js";
import { readIdentity } from "../src/agent/identity.js";
import { readAgentStatus } from "../src/agent/status.js";
import { hashToken } from "../src/domain/identity.js";
import { auditRecord } from "../src/domain/audit.js";
import { CA_CERT, CRL_FILE, initCa, issueCert, listCerts, revokeCerts, type IssuedCert } from "../src/security/ca.js";
import { CERTLESS_REFUSAL } from "../src/transport/gate.js";
import { AUTONOMY_BIN, EDGECTL_BIN, runProgram } from "./helpers/child.js";
import { STORE_KINDS, startTestServer, type TestServer } from "./helpers/server.js";
import { until } from "./helpers/wait.js";

/** A running `edgectl run`, its output collected. */
interface Agent {
  proc: ChildProcess;
  output(): string;
  stop(): Promise<number | null>;
}

function startAgent(args: string[]): Agent {
  const proc = spawn(process.execPath, [EDGECTL_BIN, ...args], { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, AUTONOMY_TOKEN: "" } });
  let out = "";
  proc.stdout!.on("data", (c: Buffer) => (out += c.toString()));
  proc.stderr!.on("data", (c: Buffer) => (out += c.toString()));
  const exited = new Promise<number | null>((resolve) => proc.once("exit", (code) => resolve(code)));
  return {
    proc,
    output: () => out,
    async stop() {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill("SIGTERM");
      return exited;
    },
  };
}

/** One HTTP/1.1 request over TLS presenting no client certificate: status and JSON body. */
function certless(url: string, ca: Buffer, method: string, p: string, body?: object): Promise<{ status: number; json: Record<string, unknown> }> {
  return new Promise((resolve, reject) => {
    const req = https.request(`${url}${p}`, { method, ca, headers: { "content-type": "application/json" } }, (res) => {
      let text = "";
      res.on("data", (c: Buffer) => (text += c.toString()));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, json: JSON.parse(text) as Record<string, unknown> }));
    });
    req.on("error", reject);
    req.end(body === undefined ? undefined : JSON.stringify(body));
  });
}

const metric = async (server: TestServer, line: string) => {
  const text = await server.metrics.registry.metrics();
  const found = text.split("\n").find((l) => l.startsWith(line));
  return found ? Number(found.split(" ").pop()) : 0;
};

const code = async (p: Promise<unknown>) => {
  try {
    await p;
    return "ok";
  } catch (err) {
    const e = ConnectError.from(err);
    return `${Code[e.code]}: ${e.rawMessage}`;
  }
};

/** A CA, a server certificate, operators olga (operator role) and ann (analyst role), and a server signing node certificates. */
async function setUp(kind: (typeof STORE_KINDS)[number], work: string, nodeCertLifetimeMs?: number) {
  const ca = path.join(work, "ca");
  await initCa(ca);
  const serverCert = await issueCert(ca, { profile: "server", name: "api" });
  const olga = await issueCert(ca, { profile: "operator", name: "olga" });
  const ann = await issueCert(ca, { profile: "operator", name: "ann" });
  const server = await startTestServer(kind, {
    rbacEnforcement: true,
    pushKeepaliveMs: 1000,
    tls: { certFile: serverCert.certFile, keyFile: serverCert.keyFile, caFile: path.join(ca, CA_CERT), crlFile: path.join(ca, CRL_FILE) },
    caDir: ca,
    nodeCertLifetimeMs,
  });
  for (const [principal, role] of [["operator:olga", "operator"], ["operator:ann", "analyst"]]) {
    await server.store.assignRole({ principal, role, createdAtMs: Date.now() }, auditRecord({ actor: "test", source: "test" }, { eventName: "rbac.role.assigned", category: "auth", action: "assign", resourceType: "principal", resource: principal }));
  }
  const caPem = readFileSync(path.join(ca, CA_CERT));
  const as = (c?: IssuedCert) => createOrchestratorClients({ baseUrl: server.url, tls: { ca: caPem, cert: c && readFileSync(c.certFile), key: c && readFileSync(c.keyFile) } });
  const edge = (stateDir: string, ...args: string[]) =>
    runProgram(EDGECTL_BIN, ["--orchestrator-url", server.url, "--tls-ca-file", path.join(ca, CA_CERT), "--state-dir", path.join(work, stateDir), ...args], { AUTONOMY_TOKEN: "" });
  const autonomyAs = (c: IssuedCert, ...args: string[]) =>
    runProgram(AUTONOMY_BIN, ["--orchestrator-url", server.url, "--tls-ca-file", path.join(ca, CA_CERT), "--tls-cert-file", c.certFile, "--tls-key-file", c.keyFile, ...args], {
      XDG_CONFIG_HOME: path.join(work, "config"),
      AUTONOMY_TOKEN: "",
    });
  return { ca, caPem, server, olga, ann, as, edge, autonomyAs };
}

describe.each(STORE_KINDS)("enrolment with a one-time token, over mutual TLS, on %s", (kind) => {
  let work: string;
  let env: Awaited<ReturnType<typeof setUp>>;
  let olga: OrchestratorClients;
  let token: string;
  let tokenId: string;
  const agents: Agent[] = [];

  beforeAll(async () => {
    work = mkdtempSync(path.join(os.tmpdir(), "ao-enrol-"));
    env = await setUp(kind, work);
    olga = env.as(env.olga);
  });
  afterAll(async () => {
    for (const a of agents) await a.stop();
    olga.close();
    await env.server.stop();
    rmSync(work, { recursive: true, force: true });
  });

  it("an operator makes a token with autonomy; the server keeps only its hash; an analyst may not make one", async () => {
    const made = await env.autonomyAs(env.olga, "node", "enrollment-token", "create", "--node-id", "robot-1", "--channel", "stable", "--ttl", "15m");
    expect(made.code).toBe(0);
    token = made.stdout.trim();
    expect(token).toMatch(/^aoe_robot-1_[A-Za-z0-9_-]{43}$/);
    tokenId = /enrolment token ([0-9a-f]{12}) for node robot-1 on channel stable, valid until \S+ \(15m\); it is not shown again/.exec(made.stderr)![1];
    const rows = await env.server.store.listEnrollmentTokens({ nodeId: "robot-1" });
    expect(rows).toEqual([expect.objectContaining({ tokenId, tokenHash: hashToken(token), nodeId: "robot-1", channel: "stable", createdBy: "operator:olga", usedAtMs: null })]);
    expect(JSON.stringify(rows)).not.toContain(token.slice(-43));
    const created = await env.server.store.auditRecords({ eventName: "node.enrollment_token.created", limit: 10 });
    expect(created).toEqual([expect.objectContaining({ actor: "operator:olga", category: "cert", resource: tokenId })]);

    const list = await env.autonomyAs(env.olga, "node", "enrollment-token", "list", "--node-id", "robot-1");
    expect(list.stdout).toMatch(new RegExp(`^TOKEN\\s+NODE\\s+CHANNEL\\s+STATE\\s+EXPIRES\\s+CREATED BY\\s+CERTIFICATE\\n${tokenId}\\s+robot-1\\s+stable\\s+unused\\s+\\S+\\s+operator:olga\\s+-\\n$`));
    const ann = env.as(env.ann);
    try {
      expect(await code(ann.enrollment.createEnrollmentToken({ nodeId: "robot-1", channel: "stable" }))).toBe(
        "PermissionDenied: operator:ann lacks enrollment:manage for autonomy.v1.EnrollmentService/CreateEnrollmentToken (roles: analyst)",
      );
    } finally {
      ann.close();
    }
    const bad = await env.autonomyAs(env.olga, "node", "enrollment-token", "create", "--node-id", "robot 1", "--channel", "stable");
    expect(bad).toMatchObject({ code: 1, stderr: expect.stringContaining('invalid_argument: node_id: "robot 1": a certificate names it') });
    expect((await env.autonomyAs(env.olga, "node", "enrollment-token", "create", "--node-id", "r", "--channel", "c", "--ttl", "8d")).stderr).toMatch(/"8d": a token lives whole seconds, 1s to 7d/);
  });

  it("edgectl enroll --token: a P-256 key made on the node (0600), a certificate for its id signed by the CA, the token spent with the enrolment, all audited", async () => {
    const r = await env.edge("robot-1", "enroll", "--token", token, "--label", "site=lab");
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^enrolled node robot-1: channel stable, labels site=lab\n {2}certificate .*: serial [0-9A-F]+, signed by the orchestrator's CA, valid until /);
    const identity = readIdentity(path.join(work, "robot-1"))!;
    expect(statSync(identity.keyPath).mode & 0o777).toBe(0o600);
    const key = createPrivateKey(readFileSync(identity.keyPath));
    expect(key.asymmetricKeyDetails?.namedCurve).toBe("prime256v1");
    const cert = new X509Certificate(readFileSync(identity.certPath));
    expect(cert.subject).toBe("CN=robot-1\nOU=node\nO=autonomy");
    expect(cert.checkPrivateKey(key)).toBe(true);
    expect(cert.verify(new X509Certificate(env.caPem).publicKey)).toBe(true);
    expect(cert.serialNumber.replace(/^0+/, "")).toBe(identity.serial);
    // The chain carries the CA after the node certificate.
    expect(readFileSync(identity.certPath, "utf8").match(/BEGIN CERTIFICATE/g)).toHaveLength(2);

    const [row] = await env.server.store.listEnrollmentTokens({ nodeId: "robot-1" });
    expect(row).toMatchObject({ tokenId, certificateSerial: identity.serial, usedAtMs: expect.any(Number) });
    expect(await env.server.store.nodeCertificates("robot-1")).toEqual([expect.objectContaining({ serial: identity.serial, tokenId, previousSerial: null })]);
    expect(await env.server.store.getNode("robot-1")).toMatchObject({ channel: "stable", labels: { site: "lab" } });
    const [audit] = await env.server.store.auditRecords({ eventName: "node.enrolled", limit: 10 });
    expect(audit).toMatchObject({ actor: "node:robot-1", category: "cert", action: "enroll", resource: "robot-1" });
    expect(JSON.parse(audit.fieldsJson)).toMatchObject({ via: "enrollment_token", token_id: tokenId, serial: identity.serial, channel: "stable" });
    // The CA's registry knows it, so `autonomy cert revoke --name robot-1` would revoke it.
    expect(listCerts(env.ca).find((c) => c.serial === identity.serial)).toMatchObject({ profile: "node", name: "robot-1", origin: "enrolment", state: "valid" });
  });

  it("a used token is refused, and so is an expired one: a clear error, unauthenticated, audited; nothing is left on the node", async () => {
    const again = await env.edge("robot-1-copy", "enroll", "--token", token);
    expect(again.code).toBe(1);
    expect(again.stderr).toMatch(new RegExp(`^edgectl: error: unauthenticated: enrolment token ${tokenId} was used already, at \\S+: a token enrols once; ask an operator for a new one\\n$`));
    expect(existsSync(path.join(work, "robot-1-copy", "identity.json"))).toBe(false);
    expect(readdirSync(path.join(work, "robot-1-copy", "identity"))).toEqual([]);

    const short = await olga.enrollment.createEnrollmentToken({ nodeId: "robot-2", channel: "stable", ttlSeconds: 1 });
    await until("the token to expire", async () => Date.now() > timestampMs(short.info!.expiresAt!) + 50, 5000);
    const late = await env.edge("robot-2", "enroll", "--token", short.token);
    expect(late.code).toBe(1);
    expect(late.stderr).toMatch(new RegExp(`^edgectl: error: unauthenticated: enrolment token ${short.info!.tokenId} expired at \\S+; ask an operator for a new one\\n$`));
    expect(await env.server.store.getNode("robot-2")).toBeUndefined();

    // Over REST too, the same answer.
    const rest = await certless(env.server.url, env.caPem, "POST", "/v1/enrollments", { token, csr_pem: "x" });
    expect(rest).toMatchObject({ status: 401, json: { code: "unauthenticated", message: expect.stringContaining(`enrolment token ${tokenId} was used already`) } });

    const failed = await env.server.store.auditRecords({ eventName: "auth.failed", limit: 100 });
    const reasons = failed.filter((a) => a.resource === "autonomy.v1.EnrollmentService/Enroll").map((a) => [a.reason, JSON.parse(a.fieldsJson).token_id]);
    expect(reasons).toEqual(expect.arrayContaining([["used enrolment token", tokenId], ["expired enrolment token", short.info!.tokenId]]));
  });

  it("a CSR for another node id is refused naming why, and the token stays unused; a bad CSR is invalid", async () => {
    const made = await olga.enrollment.createEnrollmentToken({ nodeId: "robot-3", channel: "canary" });
    const other = await env.edge("robot-4", "enroll", "--token", made.token, "--node-id", "robot-4");
    expect(other.code).toBe(1);
    expect(other.stderr).toBe('edgectl: error: permission_denied: the certificate signing request is for node "robot-4", but this credential enrols node "robot-3"\n');
    expect((await olga.enrollment.listEnrollmentTokens({ nodeId: "robot-3" })).tokens[0]).toMatchObject({ state: "unused" });
    const denied = await env.server.store.auditRecords({ eventName: "auth.denied", limit: 100 });
    expect(denied.find((a) => a.reason === "a certificate signing request for another node")).toMatchObject({ actor: "node:robot-3" });

    const anonymous = env.as();
    try {
      expect(await code(anonymous.enrollment.enroll({ token: made.token, csrPem: "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n" }))).toBe(
        "InvalidArgument: csr_pem: not a readable PKCS#10 certificate signing request",
      );
      expect(await code(anonymous.enrollment.enroll({ token: made.token, csrPem: "" }))).toBe("InvalidArgument: csr_pem: required: a PKCS#10 certificate signing request (PEM)");
      expect(await code(anonymous.enrollment.enroll({ token: "", csrPem: "x" }))).toMatch(/^InvalidArgument: token: required/);
    } finally {
      anonymous.close();
    }
    // The right node enrols with it afterwards.
    expect(await env.edge("robot-3", "enroll", "--token", made.token)).toMatchObject({ code: 0, stdout: expect.stringMatching(/^enrolled node robot-3: channel canary, no labels\n/) });
  });

  it("a client without a certificate reaches enrolment and nothing else", async () => {
    const before = await metric(env.server, 'cp_tls_handshake_failures_total{reason="NO_CERTIFICATE"}');
    const anonymous = env.as();
    try {
      expect(await code(anonymous.health.check({}))).toBe(`Unauthenticated: ${CERTLESS_REFUSAL}`);
      expect(await code(anonymous.nodes.listNodes({}))).toBe(`Unauthenticated: ${CERTLESS_REFUSAL}`);
    } finally {
      anonymous.close();
    }
    expect(await certless(env.server.url, env.caPem, "GET", "/v1/health")).toEqual({ status: 401, json: { code: "unauthenticated", message: CERTLESS_REFUSAL } });
    expect(await metric(env.server, 'cp_tls_handshake_failures_total{reason="NO_CERTIFICATE"}')).toBe(before + 3);
  });

  it("edgectl run uses the enrolled key and certificate for mutual TLS; revoking that certificate cuts its live push stream", async () => {
    const stateDir = path.join(work, "robot-1");
    const agent = startAgent(["--state-dir", stateDir, "run", "--heartbeat-interval", "1s", "--poll-interval", "30s", "--log-format", "json"]);
    agents.push(agent);
    // RBAC is enforced and the agent has no token: its calls are allowed as node:robot-1 by its certificate.
    await until("the agent's push stream", async () => env.server.push.streams === 1, 30_000);
    await until("the agent's heartbeats", async () => readAgentStatus(stateDir)?.connection.state === "ok" && (await olga.nodes.getNodeSummary({ nodeId: "robot-1" }).catch(() => undefined))?.node?.lifecycle === "HEALTHY", 30_000);
    expect(agent.output()).toMatch(/"msg":"using the enrolled node certificate"/);
    const status = await runProgram(EDGECTL_BIN, ["--state-dir", stateDir, "status"]);
    expect(status.stdout).toMatch(/certificate\s+.*identity\/node-[0-9A-F]+\.pem: expires \S+ \(in 29 days\); enrolled, serial [0-9A-F]+, renewed by edgectl run from /);

    const serial = readIdentity(stateDir)!.serial;
    const closedBefore = await metric(env.server, "cp_tls_revoked_connections_closed_total");
    await revokeCerts(env.ca, { serial });
    await until("the live stream to be cut", async () => env.server.push.streams === 0, 20_000);
    expect(await metric(env.server, "cp_tls_revoked_connections_closed_total")).toBeGreaterThan(closedBefore);
    // Its next handshakes are refused, and the agent says so.
    await until("the agent to see its certificate refused", async () => readAgentStatus(stateDir)?.connection.state === "tls-cert-refused", 20_000);
    expect(await metric(env.server, 'cp_tls_handshake_failures_total{reason="CERT_REVOKED"}')).toBeGreaterThan(0);
    expect(agent.output()).toMatch(/the orchestrator refused this node's certificate/);
    expect(await agent.stop()).toBe(0);
  });
});

describe.each(STORE_KINDS)("edgectl run renews its certificate without a restart, on %s", (kind) => {
  let work: string;
  let env: Awaited<ReturnType<typeof setUp>>;
  let agent: Agent | undefined;

  beforeAll(async () => {
    work = mkdtempSync(path.join(os.tmpdir(), "ao-renew-"));
    // Certificates of 6 s: renewed about every 4 s.
    env = await setUp(kind, work, 6_000);
  });
  afterAll(async () => {
    await agent?.stop();
    await env.server.stop();
    rmSync(work, { recursive: true, force: true });
  });

  it("at two thirds of its life, with a new key, authenticated by the current certificate; the renewed one is used for the next connection", async () => {
    const olga = env.as(env.olga);
    const made = await olga.enrollment.createEnrollmentToken({ nodeId: "robot-r", channel: "stable" });
    olga.close();
    expect((await env.edge("robot-r", "enroll", "--token", made.token)).code).toBe(0);
    const stateDir = path.join(work, "robot-r");
    const first = readIdentity(stateDir)!;
    expect(Date.parse(first.renewAfter) - Date.parse(first.notBefore)).toBe(Math.floor(((Date.parse(first.notAfter) - Date.parse(first.notBefore)) * 2) / 3));
    agent = startAgent(["--state-dir", stateDir, "run", "--heartbeat-interval", "1s", "--poll-interval", "30s", "--log-format", "json"]);

    // Two renewals: the second is made on a connection that presented the first renewed certificate.
    const certs = await until(
      "two renewals",
      async () => {
        const rows = await env.server.store.nodeCertificates("robot-r");
        return rows.length >= 3 ? [...rows].reverse() : undefined;
      },
      60_000,
    );
    expect(certs[0]).toMatchObject({ serial: first.serial, tokenId: made.info!.tokenId, previousSerial: null });
    expect(certs[1]).toMatchObject({ tokenId: null, previousSerial: certs[0].serial });
    expect(certs[2]).toMatchObject({ tokenId: null, previousSerial: certs[1].serial });
    const renewed = await env.server.store.auditRecords({ eventName: "node.certificate.renewed", limit: 10, order: "asc" });
    expect(renewed.slice(0, 2).map((a) => [a.actor, JSON.parse(a.fieldsJson).previous_serial, JSON.parse(a.fieldsJson).serial])).toEqual([
      ["node:robot-r", certs[0].serial, certs[1].serial],
      ["node:robot-r", certs[1].serial, certs[2].serial],
    ]);

    // The old certificates revoked, the agent goes on: what it sends now arrives.
    await revokeCerts(env.ca, { serial: certs[0].serial });
    await revokeCerts(env.ca, { serial: certs[1].serial });
    const events = path.join(work, "events.jsonl");
    writeFileSync(events, '{"event_type":"after-renewal","event_id":"r-1"}\n');
    const sent = await runProgram(EDGECTL_BIN, ["--state-dir", stateDir, "events", "send", "--file", events]);
    expect(sent.code).toBe(0);
    await until(
      "the event shipped on the renewed certificate",
      async () => (await env.server.store.queryEvents({ nodeId: "robot-r", limit: 10 })).some((e) => e.eventId === "r-1"),
      30_000,
    );
    const now = readIdentity(stateDir)!;
    expect(now.serial).not.toBe(first.serial);
    expect(statSync(now.keyPath).mode & 0o777).toBe(0o600);
    // One key and one certificate on disk (and the server CA kept from enrolment).
    expect(readdirSync(path.join(stateDir, "identity")).sort()).toEqual([path.basename(now.certPath), path.basename(now.keyPath), "server-ca.pem"].sort());
    expect(agent.output()).toMatch(/"msg":"renewed the node certificate; the next connection uses it"/);
    expect(agent.output()).not.toMatch(/refused this node's certificate/);
    expect(await agent.stop()).toBe(0);
    agent = undefined;
  });
});
