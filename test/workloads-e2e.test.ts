/**
 * Workloads end to end with real processes: the built orchestrator and five `edgectl run`
 * agents in two zones. Every replica is a real child process that writes a heartbeat file
 * (its pid, its working directory, which is under its agent's state dir, and the time) every
 * 200 ms, so the test sees what runs where without asking the control plane.
 *
 * `npm run soak:workloads` runs the node-loss round several times (WORKLOADS_E2E_ROUNDS).
 */
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { EDGECTL_BIN, startChildServer, type ChildServer } from "./helpers/child.js";
import { h1 } from "./helpers/http.js";
import { eventually } from "./helpers/wait.js";

const NODES = [
  { id: "wl-a1", zone: "a" },
  { id: "wl-a2", zone: "a" },
  { id: "wl-a3", zone: "a" },
  { id: "wl-b1", zone: "b" },
  { id: "wl-b2", zone: "b" },
];
const LOST_AFTER = "4s";
const ROUNDS = Number(process.env.WORKLOADS_E2E_ROUNDS ?? 1);
/** A heartbeat older than this means the replica's process is gone. */
const STALE_MS = 1500;

const HEARTBEAT = 'while :; do echo "$$ $(pwd) $(date +%s%3N)" > "$HB_DIR/$AUTONOMY_REPLICA_ID.$AUTONOMY_REPLICA_INSTANCE.tmp" && mv "$HB_DIR/$AUTONOMY_REPLICA_ID.$AUTONOMY_REPLICA_INSTANCE.tmp" "$HB_DIR/$AUTONOMY_REPLICA_ID.$AUTONOMY_REPLICA_INSTANCE"; sleep 0.2; done';

interface Live {
  replicaId: string;
  instance: string;
  pid: number;
  nodeId: string;
}

describe("workloads over five real agents", () => {
  let work: string;
  let hbDir: string;
  let server: ChildServer;
  let port: number;
  const agents = new Map<string, ChildProcess>();
  const output = new Map<string, string>();

  const serverArgs = () => ["--data-dir", path.join(work, "server"), "--push-keepalive", "2s", "--workload-resync", "1s", "--replica-lost-after", LOST_AFTER, "--node-stale-after", "3s"];

  const startAgent = (id: string, zone: string) => {
    const proc = spawn(
      process.execPath,
      [EDGECTL_BIN, "--state-dir", path.join(work, id), "run", "--node-id", id, "--channel", "wl", "--label", `zone=${zone}`, "--heartbeat-interval", "1s",
        "--poll-interval", "30s", "--capacity-cpu", "2000m", "--capacity-memory", "1Gi", "--apply-command", "true"],
      { env: { ...process.env, AUTONOMY_ORCHESTRATOR_URL: `http://127.0.0.1:${port}`, HB_DIR: hbDir }, stdio: ["ignore", "pipe", "pipe"] },
    );
    output.set(id, "");
    const take = (c: Buffer) => output.set(id, output.get(id)! + c.toString());
    proc.stdout!.on("data", take);
    proc.stderr!.on("data", take);
    agents.set(id, proc);
    return proc;
  };

  const stopAgent = async (id: string, signal: NodeJS.Signals) => {
    const proc = agents.get(id)!;
    if (proc.exitCode === null && proc.signalCode === null) {
      const exited = new Promise((r) => proc.once("exit", r));
      proc.kill(signal);
      await exited;
    }
  };

  /** What runs now, from the heartbeat files: a fresh heartbeat of a living pid. */
  const live = (): Live[] => {
    const now = Date.now();
    const found: Live[] = [];
    for (const name of readdirSync(hbDir)) {
      if (name.endsWith(".tmp")) continue;
      let text: string;
      try {
        text = readFileSync(path.join(hbDir, name), "utf8").trim();
      } catch {
        continue;
      }
      const [pid, cwd, at] = text.split(" ");
      if (!pid || !cwd || now - Number(at) > STALE_MS) continue;
      try {
        process.kill(Number(pid), 0);
      } catch {
        continue;
      }
      const dot = name.indexOf(".");
      const nodeId = NODES.find((n) => cwd.startsWith(path.join(work, n.id) + path.sep))?.id ?? `? ${cwd}`;
      found.push({ replicaId: name.slice(0, dot), instance: name.slice(dot + 1), pid: Number(pid), nodeId });
    }
    return found;
  };

  /** Fails when any replica runs twice at this moment. */
  const assertNoneTwice = () => {
    const seen = new Map<string, Live>();
    for (const l of live()) {
      const other = seen.get(l.replicaId);
      if (other) throw new Error(`replica ${l.replicaId} runs twice: on ${other.nodeId} (pid ${other.pid}) and on ${l.nodeId} (pid ${l.pid})`);
      seen.set(l.replicaId, l);
    }
  };

  const api = async (method: string, route: string, body?: unknown) => {
    const res = await h1(`http://127.0.0.1:${port}${route}`, {
      method,
      body: body === undefined ? undefined : JSON.stringify(body),
      headers: body === undefined ? {} : { "content-type": "application/json" },
    });
    return { status: res.status, body: res.text ? res.json() : {} };
  };

  const apply = async (services: unknown[], extra: Record<string, unknown> = {}) => api("POST", "/api/apply", { services, ...extra });

  const services = async (): Promise<any[]> => {
    const res = await api("GET", "/api/services");
    expect(res.status).toBe(200);
    return res.body.items ?? [];
  };

  /** Waits until exactly the wanted replicas run, each once, on the node the control plane placed it on. */
  const converged = async (want: Record<string, number>, timeoutMs = 60_000) => {
    await eventually(async () => {
      assertNoneTwice();
      const items = await services();
      const placed = new Map<string, string>();
      for (const s of items) {
        for (const r of s.replicas ?? []) if (r.desired_state === "running") placed.set(r.replica_id, r.node_id);
        expect({ name: s.spec.name, running: s.running ?? 0 }).toEqual({ name: s.spec.name, running: want[s.spec.name] ?? 0 });
      }
      const running = live();
      const expected = Object.entries(want).flatMap(([name, n]) => Array.from({ length: n }, (_, i) => `${name}-${i}`)).sort();
      expect(running.map((l) => l.replicaId).sort()).toEqual(expected);
      for (const l of running) expect(`${l.replicaId} on ${l.nodeId}`).toBe(`${l.replicaId} on ${placed.get(l.replicaId)}`);
    }, timeoutMs);
  };

  const spec = (name: string, replicas: number, extra: Record<string, unknown> = {}) => ({
    name,
    command: "/bin/sh",
    args: ["-c", HEARTBEAT],
    env: { HB_DIR: hbDir },
    replicas,
    resources: { cpuMillis: 100, memoryBytes: 32 * 1024 * 1024 },
    restartPolicy: "always",
    ...extra,
  });

  beforeAll(async () => {
    work = mkdtempSync(path.join(os.tmpdir(), "ao-wl-e2e-"));
    hbDir = path.join(work, "heartbeats");
    mkdirSync(hbDir);
    server = await startChildServer(serverArgs());
    port = Number(new URL(server.url).port);
    for (const n of NODES) startAgent(n.id, n.zone);
    await eventually(async () => {
      const res = await api("GET", "/api/nodes");
      expect(res.status).toBe(200);
      const ready = (res.body.items ?? []).filter((n: any) => n.schedulable && Number(n.capacity?.cpu_millis) === 2000);
      expect(ready.map((n: any) => n.node_id).sort()).toEqual(NODES.map((n) => n.id).sort());
    }, 60_000);
  }, 90_000);

  afterAll(async () => {
    await Promise.all([...agents.keys()].map((id) => stopAgent(id, "SIGTERM")));
    await server?.kill();
    // Replicas end with their agents; give the last ones their stop.
    await sleep(300);
    rmSync(work, { recursive: true, force: true });
  });

  it("places every replica once, spread over zones and nodes, and refuses a stale apply", async () => {
    const res = await apply([
      spec("solo", 1, { selector: { zone: "a" } }),
      spec("web", 3, { spreadKey: "zone", resources: { cpuMillis: 200, memoryBytes: 64 * 1024 * 1024 } }),
      spec("worker", 5, { spreadKey: "zone" }),
    ]);
    expect(res.status).toBe(200);
    expect(res.body.changes.map((c: any) => c.change)).toEqual(["created", "created", "created"]);
    const version = Number(res.body.version);
    await converged({ solo: 1, web: 3, worker: 5 });

    const zoneOf = (nodeId: string) => NODES.find((n) => n.id === nodeId)!.zone;
    const running = live();
    expect(zoneOf(running.find((l) => l.replicaId === "solo-0")!.nodeId)).toBe("a");
    for (const name of ["web", "worker"]) {
      const mine = running.filter((l) => l.replicaId.startsWith(`${name}-`));
      const perZone = ["a", "b"].map((z) => mine.filter((l) => zoneOf(l.nodeId) === z).length);
      expect(Math.abs(perZone[0] - perZone[1]), `${name} per zone ${perZone}`).toBeLessThanOrEqual(1);
      const perNode = new Map<string, number>();
      for (const l of mine) perNode.set(l.nodeId, (perNode.get(l.nodeId) ?? 0) + 1);
      expect(Math.max(...perNode.values()), `${name} per node`).toBe(1);
    }

    const stale = await apply([spec("worker", 6, { spreadKey: "zone" })], { expectedVersion: version - 1 });
    expect(stale.status).toBe(409);
    expect(stale.body.code).toBe("aborted");
    expect((await services()).find((s) => s.spec.name === "worker").spec.replicas).toBe(5);
  }, 120_000);

  it("reports a service that fits nowhere as unschedulable, with the reason", async () => {
    const res = await apply([spec("huge", 1, { resources: { cpuMillis: 64_000, memoryBytes: 1024 } })]);
    expect(res.status).toBe(200);
    await eventually(async () => {
      const huge = (await services()).find((s) => s.spec.name === "huge");
      expect(huge.unschedulable).toBe(1);
      expect(huge.replicas[0].state).toBe("unschedulable");
      expect(huge.replicas[0].reason).toMatch(/fit|cpu|capacity/i);
    });
    expect(live().some((l) => l.replicaId.startsWith("huge-"))).toBe(false);
    expect((await api("DELETE", "/v1/services/huge")).status).toBe(200);
  }, 60_000);

  for (let round = 1; round <= ROUNDS; round++) {
    it(`round ${round}: kill -9 of an agent moves its replicas after the grace, none runs twice, and its restart stops its orphans`, async () => {
      const before = live();
      const counts = new Map<string, number>();
      for (const l of before) counts.set(l.nodeId, (counts.get(l.nodeId) ?? 0) + 1);
      const victim = [...counts.entries()].sort((x, y) => y[1] - x[1] || x[0].localeCompare(y[0]))[0][0];
      const moved = before.filter((l) => l.nodeId === victim).map((l) => l.replicaId);
      expect(moved.length).toBeGreaterThan(0);
      const zone = NODES.find((n) => n.id === victim)!.zone;

      await stopAgent(victim, "SIGKILL");
      // Until the grace runs out, the replicas stay placed on the lost node.
      const watch = setInterval(() => {
        try {
          assertNoneTwice();
        } catch (err) {
          watchErr ??= err as Error;
        }
      }, 100);
      let watchErr: Error | undefined;
      try {
        await eventually(async () => {
          const running = live();
          for (const id of moved) {
            const l = running.find((x) => x.replicaId === id);
            expect(l, `${id} runs again`).toBeDefined();
            expect(l!.nodeId).not.toBe(victim);
          }
        }, 60_000);
        const lost = (await services()).flatMap((s) => s.replicas ?? []).filter((r: any) => r.node_id === victim && r.desired_state === "running");
        expect(lost).toEqual([]);

        startAgent(victim, zone);
        await eventually(async () => {
          const res = await api("GET", "/api/nodes");
          expect(res.body.items.find((n: any) => n.node_id === victim)?.schedulable).toBe(true);
        }, 60_000);
        await converged({ solo: 1, web: 3, worker: 5 });
        // Nothing of the old placement came back on the restarted node.
        expect(live().filter((l) => l.nodeId === victim && moved.includes(l.replicaId))).toEqual([]);
      } finally {
        clearInterval(watch);
      }
      if (watchErr) throw watchErr;
    }, 180_000);
  }

  it("a control plane killed right after an apply restarts and changes nothing that was already right", async () => {
    const instances = new Map(live().map((l) => [l.replicaId, l.instance]));
    const res = await apply([spec("worker", 6, { spreadKey: "zone" })]);
    expect(res.status).toBe(200);
    await server.kill("SIGKILL");
    server = await startChildServer([...serverArgs(), "--listen", `127.0.0.1:${port}`]);
    await converged({ solo: 1, web: 3, worker: 6 });
    for (const l of live()) if (instances.has(l.replicaId)) expect(`${l.replicaId} ${l.instance}`).toBe(`${l.replicaId} ${instances.get(l.replicaId)}`);
  }, 120_000);

  it("scale down and delete stop the processes", async () => {
    const pids = new Map(live().map((l) => [l.replicaId, l.pid]));
    expect((await apply([spec("worker", 2, { spreadKey: "zone" })])).status).toBe(200);
    const del = await api("DELETE", "/v1/services/web");
    expect(del.status).toBe(200);
    await converged({ solo: 1, worker: 2 });
    const gone = [...pids.entries()].filter(([id]) => id.startsWith("web-") || ["worker-2", "worker-3", "worker-4", "worker-5"].includes(id));
    await eventually(async () => {
      for (const [id, pid] of gone) {
        let alive = true;
        try {
          process.kill(pid, 0);
        } catch {
          alive = false;
        }
        expect(`${id} (pid ${pid}) alive: ${alive}`).toBe(`${id} (pid ${pid}) alive: false`);
      }
    });
    expect((await api("GET", "/v1/services/web")).status).toBe(404);
  }, 120_000);

  it("an agent restarted within the grace runs its replicas again, on the same node", async () => {
    const node = NODES.find((n) => live().some((l) => l.nodeId === n.id))!;
    const before = live().filter((l) => l.nodeId === node.id).map((l) => l.replicaId).sort();
    await stopAgent(node.id, "SIGTERM");
    startAgent(node.id, node.zone);
    await converged({ solo: 1, worker: 2 });
    expect(live().filter((l) => l.nodeId === node.id).map((l) => l.replicaId).sort()).toEqual(before);
  }, 120_000);

  it("stopping an agent stops its replicas", async () => {
    const mine = live().filter((l) => l.nodeId === "wl-b2" || l.nodeId === "wl-a1");
    await stopAgent("wl-b2", "SIGTERM");
    await stopAgent("wl-a1", "SIGTERM");
    expect(existsSync(hbDir)).toBe(true);
    await eventually(async () => {
      for (const l of mine) {
        let alive = true;
        try {
          process.kill(l.pid, 0);
        } catch {
          alive = false;
        }
        expect(`${l.replicaId} alive: ${alive}`).toBe(`${l.replicaId} alive: false`);
      }
    }, 20_000);
  }, 60_000);
});
