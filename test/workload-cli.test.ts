import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { createOrchestratorClients, type OrchestratorClients } from "../clients/index.js";
import { AUTONOMY_BIN, runProgram } from "./helpers/child.js";
import { startTestServer, type TestServer } from "./helpers/server.js";

// Every case runs the built program, a second or more each on a busy machine.
vi.setConfig({ testTimeout: 120_000 });

const SERVICES = `services:
  - name: web
    command: /usr/bin/web-server
    args: ["--port", "8080"]
    env: {MODE: production}
    replicas: 3
    resources: {cpu_millis: 250, memory_bytes: 134217728}
    spread_key: zone
`;

describe("autonomy apply and autonomy service", () => {
  let server: TestServer;
  let api: OrchestratorClients;
  let work: string;
  const file = (name: string, text: string) => {
    const f = path.join(work, name);
    writeFileSync(f, text);
    return f;
  };
  const cli = (...args: string[]) => runProgram(AUTONOMY_BIN, ["--orchestrator-url", server.url, ...args]);

  beforeAll(async () => {
    work = mkdtempSync(path.join(os.tmpdir(), "ao-wl-cli-"));
    server = await startTestServer("sqlite", { workloadResyncMs: 60_000 });
    api = createOrchestratorClients({ baseUrl: server.url });
    for (const id of ["n1", "n2"]) {
      await api.nodes.enrollNode({ nodeId: id, channel: "stable", labels: { zone: id === "n1" ? "a" : "b" } });
      await api.agent.reportWorkloads({ nodeId: id, capacity: { cpuMillis: 2000n, memoryBytes: 4n << 30n } });
    }
  });
  afterAll(async () => {
    api.close();
    await server.stop();
    rmSync(work, { recursive: true, force: true });
  });

  it("refuses a bad file naming the file, the line and the field, with exit status 2", async () => {
    const typo = await cli("apply", "-f", file("typo.yaml", "services:\n  - name: web\n    comand: /bin/x\n"));
    expect(typo.code).toBe(2);
    expect(typo.stderr).toMatch(/typo\.yaml:3:5: services\[0\]: unknown key "comand" \(did you mean "command"\?\)/);
    const bad = await cli("apply", "-f", file("bad.yaml", "services:\n  - {name: a, command: /bin/x, replicas: 1}\n  - {name: b, command: /bin/x, resources: {cpu_millis: -5}}\n"));
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/bad\.yaml: services\[1\]\.resources\.cpu_millis: must be 0 to/);
    const missing = await cli("apply", "-f", path.join(work, "nope.yaml"));
    expect(missing.code).toBe(2);
    expect(missing.stderr).toMatch(/nope\.yaml/);
    expect((await api.workloads.listServices({})).items).toEqual([]);
  });

  it("shows a dry run's placement, applies, and refuses a stale --expected-version", async () => {
    const f = file("services.yaml", SERVICES);
    const dry = await cli("apply", "-f", f, "--dry-run");
    expect(dry.code).toBe(0);
    expect(dry.stdout).toBe(
      "service web created (generation 1)\nplacement:\n  launch web-0 on n1\n  launch web-1 on n2\n  launch web-2 on n1\ndry run: nothing written (workload version 0)\n",
    );
    const applied = await cli("apply", "-f", f, "--expected-version", "0");
    expect(applied.code).toBe(0);
    expect(applied.stdout).toMatch(/^service web created \(generation 1\)\n[\s\S]*workload version 1\n$/);
    const stale = await cli("apply", "-f", f, "--expected-version", "0");
    expect(stale.code).toBe(1);
    expect(stale.stderr).toMatch(/^autonomy: error: aborted: the workload state is at version 1, not 0/);
    const again = await cli("-o", "json", "apply", "-f", f);
    expect(JSON.parse(again.stdout)).toMatchObject({ version: "1", changes: [{ name: "web", change: "unchanged" }] });
  });

  it("lists and describes services and the nodes that run them", async () => {
    await server.workloads.reconcile();
    const list = await cli("service", "list");
    expect(list.stdout).toMatch(/^SERVICE\s+RUNNING\s+UNSCHEDULABLE\s+GENERATION\s+COMMAND\s+UPDATED\nweb\s+0\/3\s+0\s+1\s+\/usr\/bin\/web-server --port 8080 /);
    const describe = await cli("service", "describe", "web");
    expect(describe.stdout).toMatch(/service\s+web\n/);
    expect(describe.stdout).toMatch(/web-1\s+n2\s+running\s+pending\s+0\/1/);
    const json = JSON.parse((await cli("-o", "json", "service", "describe", "web")).stdout);
    expect(json.service.replicas.map((r: { replica_id: string }) => r.replica_id)).toEqual(["web-0", "web-1", "web-2"]);
    const nodes = await cli("service", "nodes");
    expect(nodes.stdout).toMatch(/n1\s+HEALTHY\s+yes\s+0m\/500m\/2000m\s+0B\/256Mi\/4\.0Gi\s+\d+s ago\s+web-0,web-2\n/);
    const list2 = await cli("node", "list", "--workloads");
    expect(list2.stdout).toMatch(/CPU RESERVED\/CAPACITY\s+MEMORY RESERVED\/CAPACITY\s+REPLICAS\n/);
    expect(list2.stdout).toMatch(/n1\s+stable\s+HEALTHY\s+.*zone=a\s+500m\/2000m\s+256Mi\/4\.0Gi\s+web-0,web-2\n/);
    expect(list2.stdout).toMatch(/n2\s+stable\s+HEALTHY\s+.*zone=b\s+250m\/2000m\s+128Mi\/4\.0Gi\s+web-1\n/);
    const listJson = JSON.parse((await cli("-o", "json", "node", "list", "--workloads")).stdout);
    expect(listJson.items.map((n: { node_id: string; replica_ids: string[] }) => [n.node_id, n.replica_ids])).toEqual([["n1", ["web-0", "web-2"]], ["n2", ["web-1"]]]);
    const unknown = await cli("service", "describe", "nope");
    expect(unknown.code).toBe(1);
    expect(unknown.stderr).toBe('autonomy: error: not_found: service "nope" not found\n');
  });

  it("deletes a service", async () => {
    const del = await cli("service", "delete", "web");
    expect(del.stdout).toBe("deleted service web: 3 replicas to stop (workload version 2)\n");
    expect((await cli("service", "list")).stdout).toBe("no services (workload version 2)\n");
  });
});
