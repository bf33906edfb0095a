/**
 * Chaos on three real replicas over a private PostgreSQL, under a steady load of ingest,
 * heartbeats, acks and rollouts: kill -9 of the leader, SIGSTOP past its lease then SIGCONT,
 * pg_terminate_backend of its lock connection, a replica cut off from the database, and a
 * restart of PostgreSQL. Afterwards the checker reads the history: epochs strictly increase
 * and never overlap, every controller decision was written inside its epoch's lease, plan
 * transitions form valid chains, no node moved twice by a plan, every event and ack answered
 * 200 is stored, the audit chain verifies. HA_CHAOS_KILLS (default 1) sets the kill -9 rounds;
 * `npm run chaos` runs 20.
 */
import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { checkHistory, get, HaCluster, Load } from "../bench/ha-cluster.js";
import { PgCluster } from "../bench/ha-pg.js";

const KILLS = Number(process.env.HA_CHAOS_KILLS ?? 1);
const LEASE_MS = 2_000;
const RENEW_MS = 400;

describe("three replicas under faults", () => {
  let pgc: PgCluster;
  let cluster: HaCluster;
  let load: Load;
  let work: string;

  beforeAll(async () => {
    work = mkdtempSync(path.join(os.tmpdir(), "ha-chaos-"));
    pgc = await PgCluster.create();
    await pgc.query("CREATE DATABASE ha_chaos");
    cluster = await HaCluster.start({
      pg: pgc,
      dbUrl: `postgres://postgres@127.0.0.1:${pgc.port}/ha_chaos`,
      dataRoot: work,
      leaseMs: LEASE_MS,
      renewMs: RENEW_MS,
      args: ["--rollout-resync", "2s", "--node-stale-after", "30s", "--heartbeat-flush-interval", "500ms"],
    });
    load = new Load(cluster, { nodes: 12 });
    await load.start();
  }, 120_000);

  afterAll(async () => {
    await load?.stop();
    await cluster?.close();
    await pgc?.destroy();
    rmSync(work, { recursive: true, force: true });
  });

  it("loses no acknowledged write, never has two leaders, and a deposed leader commits nothing", { timeout: 120_000 + KILLS * 20_000 }, async () => {
    let { epoch } = await cluster.waitLeader();

    // kill -9 of the leader: a follower leads within the lease (and the killed one comes back as a follower).
    for (let k = 0; k < KILLS; k++) {
      const { replica } = (await cluster.leader())!;
      await cluster.kill9(replica);
      const next = await cluster.waitLeader({ after: epoch, not: replica, timeoutMs: LEASE_MS * 6 });
      epoch = next.epoch;
      await load.movedSince(Date.now() - 1, 30_000);
      await cluster.restart(replica);
    }

    // SIGSTOP past its lease, then SIGCONT: fenced (the checker finds no write of its epoch after
    // its lease), and it steps down.
    {
      const { replica } = (await cluster.leader())!;
      const old = epoch;
      cluster.stop(replica);
      const next = await cluster.waitLeader({ after: old, not: replica, timeoutMs: LEASE_MS * 8 });
      epoch = next.epoch;
      await sleep(LEASE_MS);
      cluster.cont(replica);
      await until(async () => (await get(replica.url, "/v1/health/leader")).body as { this_replica_is_leader: boolean }, (b) => b.this_replica_is_leader === false).catch((err: Error) => {
        throw new Error(`${err.message}\n${replica.lines.slice(-15).join("\n")}`);
      });
      expect(replica.lines.some((l) => l.includes("this replica stopped leading"))).toBe(true);
    }

    // pg_terminate_backend of the leader's lock connection: a new epoch begins.
    {
      const { replica } = (await cluster.leader())!;
      expect(await cluster.terminateLockConnection(replica)).toBe(1);
      epoch = (await cluster.waitLeader({ after: epoch, timeoutMs: LEASE_MS * 8 })).epoch;
    }

    // One replica cut off from PostgreSQL (a partition: silence, no reset): it answers 503 on
    // its readiness, stops leading if it led, and recovers when the partition heals.
    {
      const { replica } = (await cluster.leader())!;
      replica.proxy.set("blackhole");
      await until(async () => (await get(replica.url, "/v1/health/write-ready", 5_000)).status, (s) => s === 503);
      const next = await cluster.waitLeader({ after: epoch, not: replica, timeoutMs: LEASE_MS * 8 });
      epoch = next.epoch;
      replica.proxy.set("pass");
      await until(async () => (await get(replica.url, "/v1/health/write-ready")).status, (s) => s === 200).catch(async (err: Error) => {
        const r = await get(replica.url, "/v1/health/write-ready").catch((e: Error) => e.message);
        throw new Error(`${err.message}: ${JSON.stringify(r)}\n${replica.lines.slice(-20).join("\n")}`);
      });
    }

    // PostgreSQL restarts: every replica recovers and one leads.
    {
      await pgc.restart();
      epoch = (await cluster.waitLeader({ after: epoch, timeoutMs: 30_000 })).epoch;
      for (const r of cluster.live()) await until(async () => (await get(r.url, "/v1/health/write-ready")).status, (s) => s === 200);
      await load.movedSince(Date.now() - 1, 30_000);
    }

    await load.stop();
    // At most one replica says it leads.
    const says = await Promise.all(cluster.live().map(async (r) => ((await get(r.url, "/v1/health/leader")).body as { this_replica_is_leader: boolean }).this_replica_is_leader));
    expect(says.filter(Boolean).length).toBe(1);

    const report = await checkHistory(cluster, load.answered);
    expect(report.problems).toEqual([]);
    expect(report.epochs).toBeGreaterThanOrEqual(KILLS + 4);
    expect(report.decisions).toBeGreaterThan(0);
    expect(report.plans).toBeGreaterThan(0);
    expect(report.events).toBeGreaterThan(0);
    expect(report.acks).toBeGreaterThan(0);
  });
});

async function until<T>(read: () => Promise<T>, ok: (v: T) => boolean, timeoutMs = 20_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await read();
      if (ok(v)) return v;
      last = v;
    } catch (err) {
      last = (err as Error).message;
    }
    if (Date.now() > deadline) throw new Error(`timed out; last: ${JSON.stringify(last)}`);
    await sleep(50);
  }
}
