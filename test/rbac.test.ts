import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { getOption, type DescService } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createOrchestratorClients, type OrchestratorClients } from "../clients/index.js";
import { permission } from "../gen/autonomy/v1/options_pb.js";
import { BUILTIN_ROLES, grants } from "../src/domain/rbac.js";
import { CA_CERT, initCa, issueCert } from "../src/security/ca.js";
import { auditRecord } from "../src/domain/audit.js";
import { BOOTSTRAP_TOKEN_FILE } from "../src/server.js";
import { ENFORCEMENT_OFF_WARNING } from "../src/services/health-service.js";
import { AUTONOMY_BIN, outputOf, runProgram } from "./helpers/child.js";
import { h1 } from "./helpers/http.js";
import { STORE_KINDS, startTestServer, type TestServer } from "./helpers/server.js";

/** Every served service, from the server's own list. */
async function servedServices(): Promise<DescService[]> {
  const { AuditService, EnrollmentService, EventService, HealthService, NodeService, RbacService, ReleaseService, RolloutService } = await import("../clients/index.js");
  return [EventService, ReleaseService, NodeService, EnrollmentService, RolloutService, AuditService, RbacService, HealthService];
}

type Verdict = "allowed" | "unauthenticated" | "denied";

describe.each(STORE_KINDS)("RBAC on %s", (kind) => {
  let server: TestServer;
  let admin: OrchestratorClients;
  const tokens: Record<string, string> = {};
  const asToken = (token?: string, operator?: string) => createOrchestratorClients({ baseUrl: server.url, token, operator });

  beforeAll(async () => {
    server = await startTestServer(kind, { rbacEnforcement: true });
    admin = asToken(readFileSync(path.join(server.dataDir, BOOTSTRAP_TOKEN_FILE), "utf8").trim());
    for (const role of Object.keys(BUILTIN_ROLES)) {
      const principal = role === "edge" ? "node:edge-node" : `operator:${role}-user`;
      if (role !== "edge") await admin.rbac.assignRole({ principal, role });
      tokens[role] = (await admin.rbac.createToken({ principal, ttlHours: 1 })).token;
    }
  });
  afterAll(async () => {
    admin.close();
    await server.stop();
  });

  it("writes a one-time admin token, mode 0600, on the first start, and only then", async () => {
    const file = path.join(server.dataDir, BOOTSTRAP_TOKEN_FILE);
    expect(statSync(file).mode & 0o777).toBe(0o600);
    const line = server.log.lines.find((l) => l.file === file);
    expect(line).toMatchObject({ level: 40, principal: expect.stringMatching(/^operator:bootstrap-[0-9a-f]{12}$/), expires_in: "24h" });
    expect(await admin.rbac.whoAmI({})).toMatchObject({ principal: line!.principal, authenticatedBy: "token", roles: ["admin"], permissions: ["*"], enforced: true });
    expect(JSON.parse((await h1(`${server.url}/v1/health`)).text)).toEqual({ status: "ok" });
  });

  it("checks every built-in role against every RPC, as each RPC's .proto option says", async () => {
    const services = await servedServices();
    const rpcs = services.flatMap((s) => s.methods.map((m) => ({ service: s, method: m, needed: getOption(m, permission) })));
    expect(rpcs.length).toBeGreaterThan(40);
    expect(rpcs.filter((r) => !r.needed)).toEqual([]);
    const callers: [string, string | undefined][] = [["anonymous", undefined], ...Object.keys(BUILTIN_ROLES).map((r) => [r, tokens[r]] as [string, string])];
    const actual: Record<string, Record<string, Verdict>> = {};
    const expected: Record<string, Record<string, Verdict>> = {};
    for (const [role, token] of callers) {
      const api = asToken(token);
      try {
        for (const { service, method, needed } of rpcs) {
          const rpc = `${service.name}.${method.name}`;
          const client = createClient(service, api.transport) as unknown as Record<string, (req: object) => Promise<unknown>>;
          let verdict: Verdict = "allowed";
          try {
            // node_id names the edge caller's own node; the request is otherwise empty (and fails validation past authorization).
            await client[method.localName]({ nodeId: "edge-node" });
          } catch (err) {
            const code = ConnectError.from(err).code;
            verdict = code === Code.Unauthenticated ? "unauthenticated" : code === Code.PermissionDenied ? "denied" : "allowed";
          }
          (actual[role] ??= {})[rpc] = verdict;
          (expected[role] ??= {})[rpc] =
            needed === "public" ? "allowed" : role === "anonymous" ? "unauthenticated" : grants(BUILTIN_ROLES[role], needed) ? "allowed" : "denied";
          // A node reads only the specs of plans that moved it; this request names no plan.
          if (role === "edge" && rpc === "RolloutService.GetRolloutSpec") expected[role][rpc] = "denied";
          // A certificate is renewed with itself: no bearer token renews one, whatever its roles.
          if (role !== "anonymous" && rpc === "EnrollmentService.RenewCertificate") expected[role][rpc] = "denied";
        }
      } finally {
        api.close();
      }
    }
    expect(actual).toEqual(expected);
    // Spot checks of the table itself, so it cannot be vacuous.
    expect(expected.analyst["RolloutService.PauseRollout"]).toBe("denied");
    expect(expected.operator["RolloutService.PauseRollout"]).toBe("allowed");
    expect(expected.edge["EventService.IngestEvents"]).toBe("allowed");
    expect(expected.auditor["AuditService.QueryAuditRecords"]).toBe("allowed");
    expect(expected.operator["RbacService.AssignRole"]).toBe("denied");
    expect(expected.operator["EnrollmentService.CreateEnrollmentToken"]).toBe("allowed");
    expect(expected.analyst["EnrollmentService.CreateEnrollmentToken"]).toBe("denied");
    expect(expected.auditor["EnrollmentService.ListEnrollmentTokens"]).toBe("allowed");
    expect(expected.anonymous["EnrollmentService.Enroll"]).toBe("allowed");
    // Every denial was recorded.
    const denials = await admin.audit.queryAuditRecords({ eventName: "auth.denied", limit: 1000 });
    const deniedCalls = Object.values(actual).flatMap((v) => Object.values(v)).filter((v) => v !== "allowed").length;
    expect(denials.count).toBe(deniedCalls);
  });

  it("applies the same check to the REST paths", async () => {
    expect((await h1(`${server.url}/v1/fleet`)).status).toBe(401);
    const auth = (t: string) => ({ headers: { authorization: `Bearer ${t}` } });
    expect((await h1(`${server.url}/v1/fleet`, auth(tokens.analyst))).status).toBe(200);
    const denied = await h1(`${server.url}/v1/audit/records`, auth(tokens.analyst));
    expect(denied.status).toBe(403);
    expect(denied.json()).toEqual({ code: "permission_denied", message: "operator:analyst-user lacks audit:read for autonomy.v1.AuditService/QueryAuditRecords (roles: analyst)" });
    expect((await h1(`${server.url}/v1/fleet`, auth("ao_not-a-token"))).json()).toMatchObject({ code: "unauthenticated", message: "the bearer token is unknown, expired or revoked" });
    expect((await h1(`${server.url}/v1/health`)).status).toBe(200);
    expect((await h1(`${server.url}/metrics`)).status).toBe(200);
  });

  it("lets a node write only its own data: a batch naming another node is refused whole", async () => {
    await admin.nodes.enrollNode({ nodeId: "edge-node", channel: "rbac" });
    await admin.nodes.enrollNode({ nodeId: "other-node", channel: "rbac" });
    const node = asToken(tokens.edge);
    try {
      const event = (id: string, nodeId: string) => ({ eventId: id, eventType: "t", nodeId, timestamp: { seconds: 1_700_000_000n } });
      await expect(node.events.ingestEvents({ events: [event("own-1", "edge-node"), event("forged-1", "other-node")] })).rejects.toThrow(
        /node edge-node may write and read only its own data: events\[1\]\.node_id is "other-node"/,
      );
      expect((await admin.events.queryEvents({ nodeId: "edge-node" })).count).toBe(0);
      expect(await node.events.ingestEvents({ events: [event("own-1", "edge-node")] })).toMatchObject({ inserted: 1 });
      await expect(node.nodes.heartbeat({ nodeId: "other-node" })).rejects.toThrow(/node_id is "other-node"/);
      await expect(node.nodes.getDesiredRelease({ nodeId: "other-node" })).rejects.toThrow(/permission_denied/);
      expect(await node.nodes.heartbeat({ nodeId: "edge-node" })).toMatchObject({ lifecycle: "HEALTHY" });
    } finally {
      node.close();
    }
  });

  it("refuses an AUTONOMY_OPERATOR that is not the credential's, and audits under the credential", async () => {
    const liar = asToken(tokens.operator, "someone-else");
    try {
      await expect(liar.nodes.drainNode({ nodeId: "other-node", reason: "x" })).rejects.toThrow(/AUTONOMY_OPERATOR says "someone-else" but the credential is operator:operator-user/);
    } finally {
      liar.close();
    }
    const honest = asToken(tokens.operator, "operator-user");
    try {
      await honest.nodes.drainNode({ nodeId: "other-node", reason: "maintenance" });
    } finally {
      honest.close();
    }
    const records = await admin.audit.queryAuditRecords({ resource: "other-node", eventName: "node.drained" });
    expect(records.records.map((r) => r.actor)).toEqual(["operator:operator-user"]);
  });

  it("takes custom roles, assignments and revocations into account at once", async () => {
    const token = (await admin.rbac.createToken({ principal: "operator:dave" })).token;
    const dave = asToken(token);
    try {
      await expect(dave.nodes.listNodes({})).rejects.toThrow(/lacks fleet:read .*roles: none/);
      await expect(admin.rbac.createRole({ role: { name: "operator", permissions: ["fleet:read"] } })).rejects.toThrow(/built in and cannot be redefined/);
      await admin.rbac.createRole({ role: { name: "viewer", permissions: ["fleet:read"] } });
      await admin.rbac.assignRole({ principal: "operator:dave", role: "viewer" });
      expect((await dave.nodes.listNodes({})).nodes.length).toBeGreaterThan(0);
      expect(await admin.rbac.revokeRole({ principal: "operator:dave", role: "viewer" })).toMatchObject({ revoked: true });
      await expect(dave.nodes.listNodes({})).rejects.toThrow(/lacks fleet:read/);
      const info = (await admin.rbac.listTokens({})).tokens.find((t) => t.principal === "operator:dave")!;
      await admin.rbac.revokeToken({ tokenId: info.tokenId });
      await expect(dave.rbac.whoAmI({})).rejects.toThrow(/unknown, expired or revoked/);
      await expect(admin.rbac.assignRole({ principal: "dave", role: "viewer" })).rejects.toThrow(/principal: must be "operator:NAME" or "node:ID"/);
      await expect(admin.rbac.assignRole({ principal: "operator:dave", role: "nope" })).rejects.toThrow(/role "nope" is not defined/);
    } finally {
      dave.close();
    }
  });
});

describe("identity from client certificates", () => {
  it("takes the node id and operator name from the certificate and holds nodes to their own data", async () => {
    const work = mkdtempSync(path.join(os.tmpdir(), "ao-rbac-mtls-"));
    const ca = path.join(work, "ca");
    await initCa(ca);
    const serverCert = await issueCert(ca, { profile: "server", name: "api" });
    const robot = await issueCert(ca, { profile: "node", name: "robot-1" });
    const alice = await issueCert(ca, { profile: "operator", name: "alice" });
    const adminCert = await issueCert(ca, { profile: "operator", name: "root" });
    const server = await startTestServer("sqlite", {
      rbacEnforcement: true,
      tls: { certFile: serverCert.certFile, keyFile: serverCert.keyFile, caFile: path.join(ca, CA_CERT) },
    });
    const client = (c: typeof robot, token?: string) =>
      createOrchestratorClients({ baseUrl: server.url, token, tls: { ca: readFileSync(path.join(ca, CA_CERT)), cert: readFileSync(c.certFile), key: readFileSync(c.keyFile) } });
    // Over mutual TLS every call presents a certificate, which wins over a token: root gets its role in the store.
    await server.store.assignRole(
      { principal: "operator:root", role: "admin", createdAtMs: Date.now() },
      auditRecord({ actor: "test", source: "test" }, { eventName: "rbac.role.assigned", category: "auth", action: "assign", resourceType: "principal", resource: "operator:root" }),
    );
    const admin = client(adminCert);
    const asRobot = client(robot);
    const asAlice = client(alice);
    try {
      expect(await asRobot.rbac.whoAmI({})).toMatchObject({ principal: "node:robot-1", authenticatedBy: "certificate", roles: ["edge"] });
      await admin.nodes.enrollNode({ nodeId: "robot-2", channel: "c" });
      expect(await asRobot.nodes.enrollNode({ nodeId: "robot-1", channel: "c" })).toMatchObject({ node: { nodeId: "robot-1" } });
      await expect(asRobot.nodes.heartbeat({ nodeId: "robot-2" })).rejects.toThrow(/node robot-1 may write and read only its own data: node_id is "robot-2"/);
      await expect(asAlice.nodes.listNodes({})).rejects.toThrow(/operator:alice lacks fleet:read/);
      await admin.rbac.assignRole({ principal: "operator:alice", role: "operator" });
      await expect(asAlice.nodes.listNodes({})).resolves.toMatchObject({ nodes: [{ nodeId: "robot-1" }, { nodeId: "robot-2" }] });
      const records = await admin.audit.queryAuditRecords({ eventName: "node.enrolled", resource: "robot-1" });
      expect(records.records[0].actor).toBe("node:robot-1");
    } finally {
      for (const c of [asRobot, asAlice, admin]) c.close();
      await server.stop();
      rmSync(work, { recursive: true, force: true });
    }
  });
});

describe("RBAC enforcement turned off", () => {
  it("warns at start and on /v1/health, identifies callers, and refuses nothing", async () => {
    const server = await startTestServer("sqlite", { rbacEnforcement: false });
    try {
      expect(server.log.lines.find((l) => l.msg === ENFORCEMENT_OFF_WARNING)).toMatchObject({ level: 40 });
      expect(JSON.parse((await h1(`${server.url}/v1/health`)).text)).toEqual({ status: "ok", warning: ENFORCEMENT_OFF_WARNING });
      expect((await h1(`${server.url}/v1/fleet`)).status).toBe(200);
    } finally {
      await server.stop();
    }
  });
});

describe("autonomy rbac", () => {
  it("creates, lists, assigns and revokes roles, makes tokens, and exports and imports the role data", async () => {
    const server = await startTestServer("sqlite", { rbacEnforcement: true });
    const work = mkdtempSync(path.join(os.tmpdir(), "ao-rbac-cli-"));
    const tokenFile = path.join(server.dataDir, BOOTSTRAP_TOKEN_FILE);
    const cli = async (env: NodeJS.ProcessEnv, ...args: string[]) =>
      outputOf(await runProgram(AUTONOMY_BIN, ["--orchestrator-url", server.url, ...args], { AUTONOMY_RBAC_DIR: path.join(work, "rbac"), ...env }));
    const asAdmin = (...args: string[]) => cli({ AUTONOMY_TOKEN_FILE: tokenFile }, ...args);
    try {
      expect((await cli({}, "fleet", "status")).out).toMatch(/unauthenticated: .*needs fleet:read: present a client certificate or a bearer token/);
      const whoami = (await asAdmin("rbac", "whoami")).out;
      expect(whoami).toMatch(/^operator:bootstrap-[0-9a-f]{12} \(by token\); roles: admin; permissions: \*\n$/);
      const bootstrap = whoami.split(" ")[0];
      expect((await asAdmin("rbac", "role", "create", "--name", "viewer", "--permission", "fleet:read", "--permission", "rollout:read")).out).toBe("role viewer: fleet:read, rollout:read\n");
      expect((await asAdmin("rbac", "role", "assign", "--principal", "operator:erin", "--role", "viewer")).out).toBe("operator:erin holds viewer\n");
      const erinToken = path.join(work, "erin.token");
      expect((await asAdmin("rbac", "token", "create", "--principal", "operator:erin", "--output-file", erinToken)).out).toMatch(/^token [0-9a-f]{12} for operator:erin, valid until .*, written to /);
      expect(statSync(erinToken).mode & 0o777).toBe(0o600);
      expect((await cli({ AUTONOMY_TOKEN_FILE: erinToken }, "fleet", "status")).code).toBe(0);
      expect((await cli({ AUTONOMY_TOKEN: readFileSync(erinToken, "utf8").trim() }, "rbac", "whoami")).out).toMatch(/^operator:erin \(by token\); roles: viewer; permissions: fleet:read, rollout:read\n$/);
      const list = await asAdmin("rbac", "role", "list");
      expect(list.out).toMatch(/^viewer\s+custom\s+fleet:read,rollout:read\s+operator:erin$/m);
      expect(list.out).toMatch(/^operator\s+built-in\s+fleet:read,.*\s+-$/m);
      const json = JSON.parse((await asAdmin("--output", "json", "rbac", "role", "list")).out);
      expect(json.roles.find((r: { name: string }) => r.name === "viewer")).toEqual({ name: "viewer", permissions: ["fleet:read", "rollout:read"], builtin: false });
      expect(json.bindings.map((b: { principal: string }) => b.principal)).toEqual([bootstrap, "operator:erin"]);
      expect((await asAdmin("rbac", "export")).out).toBe(`exported 1 custom role(s) and 2 binding(s) to ${path.join(work, "rbac")}\n`);
      expect(JSON.parse(readFileSync(path.join(work, "rbac", "bindings.json"), "utf8"))).toEqual([
        { principal: bootstrap, role: "admin" },
        { principal: "operator:erin", role: "viewer" },
      ]);
      expect((await asAdmin("rbac", "role", "revoke", "--principal", "operator:erin", "--role", "viewer")).out).toBe("operator:erin no longer holds viewer\n");
      expect((await cli({ AUTONOMY_TOKEN_FILE: erinToken }, "fleet", "status")).out).toMatch(/permission_denied: operator:erin lacks fleet:read/);
      writeFileSync(path.join(work, "rbac", "roles.json"), JSON.stringify([{ name: "viewer", permissions: ["fleet:read"] }]));
      expect((await asAdmin("rbac", "import")).out).toBe(`imported 1 custom role(s) and 2 binding(s) from ${path.join(work, "rbac")}\n`);
      expect((await cli({ AUTONOMY_TOKEN_FILE: erinToken }, "fleet", "status")).code).toBe(0);
      const tokens = await asAdmin("rbac", "token", "list");
      const erinId = /^([0-9a-f]{12})\s+operator:erin/m.exec(tokens.out)![1];
      expect((await asAdmin("rbac", "token", "revoke", "--token-id", erinId)).out).toBe(`token ${erinId} revoked\n`);
      expect((await cli({ AUTONOMY_TOKEN_FILE: erinToken }, "fleet", "status")).out).toMatch(/unauthenticated: the bearer token is unknown, expired or revoked/);
    } finally {
      await server.stop();
      rmSync(work, { recursive: true, force: true });
    }
    // About twenty CLI processes, each a Node start: on a busy machine that takes a while.
  }, 120_000);
});
