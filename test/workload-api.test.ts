/**
 * WorkloadService and ReportWorkloads through a real server on both stores: REST (Orion's paths
 * too) and Connect, validation naming the field, the version's 409, dry runs, a node's report
 * answered with its commands, and the leader's loop placing replicas.
 */
import { readFileSync } from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createOrchestratorClients, type OrchestratorClients } from "../clients/index.js";
import { BOOTSTRAP_TOKEN_FILE } from "../src/server.js";
import { h1 } from "./helpers/http.js";
import { STORE_KINDS, startTestServer, type TestServer } from "./helpers/server.js";

const spec = (name: string, replicas: number, over: Record<string, unknown> = {}) => ({
  name,
  command: "/bin/sleep",
  args: ["600"],
  replicas,
  resources: { cpu_millis: 100, memory_bytes: 1048576 },
  ...over,
});
const post = (url: string, body: unknown, headers: Record<string, string> = {}) =>
  h1(url, { method: "POST", body: JSON.stringify(body), headers: { "content-type": "application/json", ...headers } });

describe.each(STORE_KINDS)("workloads API on %s", (kind) => {
  let server: TestServer;
  let api: OrchestratorClients;
  beforeAll(async () => {
    server = await startTestServer(kind, { workloadResyncMs: 60_000 });
    api = createOrchestratorClients({ baseUrl: server.url });
    for (const id of ["n1", "n2"]) {
      await api.nodes.enrollNode({ nodeId: id, channel: "stable", labels: { zone: id === "n1" ? "a" : "b" } });
      await api.agent.reportWorkloads({ nodeId: id, capacity: { cpuMillis: 1000n, memoryBytes: 1n << 30n } });
    }
  });
  afterAll(async () => {
    api.close();
    await server.stop();
  });

  it("refuses a bad apply naming the field, and writes nothing", async () => {
    const cases: [unknown, string][] = [
      [{ services: [spec("ok", 1), spec("bad", 1, { resources: { cpu_millis: -1 } })] }, "services[1].resources.cpu_millis"],
      [{ services: [spec("web", 1), spec("web", 2)] }, "services[1].name"],
      [{ services: [spec("web", 10001)] }, "services[0].replicas"],
      [{ services: [spec("web", 1, { restart_policy: "sometimes" })] }, "services[0].restart_policy"],
      [{ services: [spec("-web", 1)] }, "services[0].name"],
      [{ services: [spec("web", 1, { env: { AUTONOMY_SERVICE: "x" } })] }, "services[0].env.AUTONOMY_SERVICE"],
      [{ services: [spec("web", 1, { selector: { "a/b": "x" } })] }, "services[0].selector"],
      [{ services: [spec("web", 1, { command: "" })] }, "services[0].command"],
    ];
    for (const [body, field] of cases) {
      const res = await post(`${server.url}/api/apply`, body);
      expect(res.status, JSON.stringify(body)).toBe(400);
      expect(res.json().message).toMatch(new RegExp(`^${field.replace(/[[\].]/g, "\\$&")}: `));
    }
    expect((await h1(`${server.url}/api/services`)).json()).toEqual({ items: [], version: "0" });
  });

  it("answers a dry run with the placement and writes nothing; applies at a version; a stale one is 409", async () => {
    const dry = await post(`${server.url}/v1/apply`, { services: [spec("web", 3, { spread_key: "zone" })], dry_run: true });
    expect(dry.status).toBe(200);
    expect(dry.json()).toMatchObject({ version: "0", dry_run: true, changes: [{ name: "web", change: "created", generation: "1" }] });
    expect(dry.json().placement.launches.map((l: { index: number; node_id: string }) => `${l.index}@${l.node_id}`)).toEqual(["0@n1", "1@n2", "2@n1"]);
    expect((await h1(`${server.url}/api/services`)).json()).toEqual({ items: [], version: "0" });

    const applied = await post(`${server.url}/api/apply`, { services: [spec("web", 3, { spread_key: "zone" })], expected_version: 0 });
    expect(applied.status).toBe(200);
    expect(applied.json()).toMatchObject({ version: "1", changes: [{ name: "web", change: "created" }] });
    const stale = await post(`${server.url}/api/apply`, { services: [spec("web", 4)], expected_version: 0 });
    expect(stale.status).toBe(409);
    expect(stale.json()).toMatchObject({ code: "aborted" });
    expect((await api.workloads.getService({ name: "web" })).service?.spec?.replicas).toBe(3);
  });

  it("places the replicas on the leader and answers a node's report with its launch commands", async () => {
    await server.workloads.reconcile();
    const svc = (await api.workloads.getService({ name: "web" })).service!;
    expect(svc.replicas.map((r) => `${r.replicaId}@${r.nodeId}:${r.state}`)).toEqual(["web-0@n1:pending", "web-1@n2:pending", "web-2@n1:pending"]);
    const answer = await api.agent.reportWorkloads({ nodeId: "n1", capacity: { cpuMillis: 1000n, memoryBytes: 1n << 30n } });
    expect(answer.commands.map((c) => `${c.action.case}:${c.action.value && "replicaId" in c.action.value ? c.action.value.replicaId : ""}`)).toEqual(["launch:web-0", "launch:web-2"]);
    // Answered and reported running: no command left, the replicas run.
    const reports = ["web-0", "web-2"].map((id) => ({ replicaId: id, service: "web", index: Number(id.slice(4)), generation: 1n, state: "running" }));
    const after = await api.agent.reportWorkloads({
      nodeId: "n1",
      capacity: { cpuMillis: 1000n, memoryBytes: 1n << 30n },
      usage: { cpuMillis: 20n, memoryBytes: 4096n },
      replicas: reports,
      acks: answer.commands.map((c) => ({ commandId: c.commandId, ok: true })),
    });
    expect(after.commands).toEqual([]);
    const list = (await h1(`${server.url}/api/services`)).json();
    expect(list.items).toHaveLength(1);
    expect(list.items[0]).toMatchObject({ generation: "1", running: 2, spec: { name: "web", replicas: 3, restart_policy: "always" } });
    const nodes = (await h1(`${server.url}/api/nodes`)).json().items;
    expect(nodes.map((n: { node_id: string; replica_ids: string[]; schedulable: boolean }) => [n.node_id, n.replica_ids, n.schedulable])).toEqual([
      ["n1", ["web-0", "web-2"], true],
      ["n2", ["web-1"], true],
    ]);
    const summary = await api.nodes.getNodeSummary({ nodeId: "n1" });
    expect(summary.replicas.map((r) => `${r.replicaId}:${r.state}`)).toEqual(["web-0:running", "web-2:running"]);
    expect(nodes[0]).toMatchObject({ capacity: { cpu_millis: "1000" }, usage: { cpu_millis: "20", memory_bytes: "4096" }, reserved: { cpu_millis: "200", memory_bytes: "2097152" }, lifecycle: "HEALTHY" });
  });

  it("deletes a service: its replicas are to stop; an unknown one is 404", async () => {
    const del = await api.workloads.deleteService({ name: "web" });
    expect(del.stops.map((s) => `${s.service}-${s.index}@${s.nodeId}:${s.reason}`)).toEqual(["web-0@n1:service deleted", "web-1@n2:service deleted", "web-2@n1:service deleted"]);
    expect((await h1(`${server.url}/v1/services/web`, { method: "DELETE" })).status).toBe(404);
    await server.workloads.reconcile();
    const answer = await api.agent.reportWorkloads({ nodeId: "n2", capacity: { cpuMillis: 1000n, memoryBytes: 1n << 30n } });
    expect(answer.commands.map((c) => c.action.case)).toEqual(["launch", "stop"]);
    const audits = await api.audit.queryAuditRecords({ eventName: "workload.service_deleted", limit: 10 });
    expect(audits.records.map((r) => r.resource)).toEqual(["web"]);
  });
});

describe("workloads under RBAC", () => {
  let server: TestServer;
  beforeAll(async () => (server = await startTestServer("sqlite", { rbacEnforcement: true })));
  afterAll(async () => server.stop());

  it("needs workload:apply to apply and lets a node report only for itself", async () => {
    const admin = createOrchestratorClients({ baseUrl: server.url, token: readFileSync(path.join(server.dataDir, BOOTSTRAP_TOKEN_FILE), "utf8").trim() });
    try {
      await admin.rbac.assignRole({ principal: "operator:ann", role: "analyst" });
      const analyst = (await admin.rbac.createToken({ principal: "operator:ann", ttlHours: 1 })).token;
      const edge = (await admin.rbac.createToken({ principal: "node:n1", ttlHours: 1 })).token;
      for (const id of ["n1", "n2"]) await admin.nodes.enrollNode({ nodeId: id, channel: "stable" });
      const denied = await post(`${server.url}/api/apply`, { services: [spec("web", 1)] }, { authorization: `Bearer ${analyst}` });
      expect(denied.status).toBe(403);
      expect(denied.json().message).toMatch(/lacks workload:apply/);
      expect((await h1(`${server.url}/api/services`, { headers: { authorization: `Bearer ${analyst}` } })).status).toBe(200);
      const own = await post(`${server.url}/v1/nodes/n1/workloads`, { capacity: { cpu_millis: 10 } }, { authorization: `Bearer ${edge}` });
      expect(own.status).toBe(200);
      const other = await post(`${server.url}/v1/nodes/n2/workloads`, { capacity: { cpu_millis: 10 } }, { authorization: `Bearer ${edge}` });
      expect(other.status).toBe(403);
      expect(other.json().message).toMatch(/node_id is "n2"/);
      const applied = await admin.workloads.apply({ services: [{ name: "web", command: "/bin/true", replicas: 1 }] });
      expect(applied.version).toBe(1n);
      const [record] = (await admin.audit.queryAuditRecords({ eventName: "workload.applied", limit: 1 })).records;
      expect(record).toMatchObject({ category: "system", action: "apply", resource: "web" });
      expect(record.actor).toMatch(/^operator:bootstrap-/);
    } finally {
      admin.close();
    }
  });
});
