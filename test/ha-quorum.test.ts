/**
 * A real streaming standby (pg_basebackup -R from a private primary, synchronous), two replicas
 * as real processes, and the autonomy CLI: ha status, ha quorum, ha failover, and a resign
 * refused while the standby's replay lag is critical. Two standalone servers named as replicas
 * of one deployment are a split brain, reported with exit 1.
 */
import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { PgCluster } from "../bench/ha-pg.js";
import { AUTONOMY_BIN, runProgram, startChildServer, type ChildServer } from "./helpers/child.js";

describe("HA with a streaming standby", () => {
  let primary: PgCluster;
  let standby: PgCluster;
  const servers: ChildServer[] = [];
  let work: string;
  const cli = (...args: string[]) => runProgram(AUTONOMY_BIN, args, { AUTONOMY_OPERATOR: "olga" });

  beforeAll(async () => {
    work = mkdtempSync(path.join(os.tmpdir(), "ha-quorum-"));
    primary = await PgCluster.create({ synchronousStandby: "standby1" });
    standby = await primary.standby("standby1");
    await primary.query("CREATE DATABASE ha_quorum");
    const url = `postgres://postgres@127.0.0.1:${primary.port}/ha_quorum`;
    for (const i of [0, 1]) {
      servers.push(
        await startChildServer([
          "--data-dir", path.join(work, `r${i}`), "--postgres-url", url,
          "--leader-lease", "3s", "--leader-renew", "500ms", "--replication-lag-critical", "2s",
        ]),
      );
    }
  }, 120_000);

  afterAll(async () => {
    for (const s of servers) await s.kill();
    await standby?.destroy();
    await primary?.destroy();
    rmSync(work, { recursive: true, force: true });
  });

  it("ha status names one leader among the replicas; ha quorum counts the synchronous standby", async () => {
    const status = await cli("ha", "status", "--replica", servers[0].url, "--replica", servers[1].url, "-o", "json");
    expect(status.code).toBe(0);
    const doc = JSON.parse(status.stdout);
    expect(doc).toMatchObject({ leaders: 1, split_brain: false });
    expect(doc.replicas.map((r: { write_ready: boolean }) => r.write_ready)).toEqual([true, true]);
    const text = await cli("ha", "status", "--replica", servers[0].url, "--replica", servers[1].url);
    expect(text.stdout).toMatch(/REPLICA\s+MODE\s+LEADER\s+EPOCH/);
    expect(text.stdout).toMatch(/postgres\s+yes\s+1\s/);

    const quorum = await cli("--orchestrator-url", servers[1].url, "ha", "quorum");
    expect(quorum.code).toBe(0);
    expect(quorum.stdout).toMatch(/synchronous standbys: 1 of 1 connected/);
    expect(quorum.stdout).toMatch(/standby1\s+streaming\s+sync/);
    expect(quorum.stdout).toMatch(/critical above 2s/);
  });

  it("ha failover resigns the leader from a follower; another leads; the resignation is audited", { timeout: 60_000 }, async () => {
    const before = JSON.parse((await cli("ha", "status", "--replica", servers[0].url, "--replica", servers[1].url, "-o", "json")).stdout);
    const leaderIndex = before.replicas.findIndex((r: { this_replica_is_leader: boolean }) => r.this_replica_is_leader);
    const follower = servers[1 - leaderIndex];
    const missing = await cli("--orchestrator-url", follower.url, "ha", "failover");
    expect(missing.code).toBe(2);
    const r = await cli("--orchestrator-url", follower.url, "ha", "failover", "--reason", "kernel upgrade");
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^epoch 1 of .* resigned; a follower takes over/);
    const leads = async (s: ChildServer) => ((await (await fetch(`${s.url}/v1/ha/status`)).json()) as { this_replica_is_leader: boolean; current_epoch: number });
    for (let end = Date.now() + 10_000; Date.now() < end && !((await leads(follower)).this_replica_is_leader); ) await sleep(50);
    expect(await leads(follower)).toMatchObject({ this_replica_is_leader: true, current_epoch: 2 });
    expect(await leads(servers[leaderIndex])).toMatchObject({ this_replica_is_leader: false, current_epoch: 2 });
    const audit = await cli("--orchestrator-url", follower.url, "audit", "query", "--category", "ha", "-o", "json");
    expect(audit.stdout).toMatch(/ha\.leader_resigned/);
    expect(audit.stdout).toMatch(/kernel upgrade/);
  });

  it("a resign is refused while the standby's replay lag is critical", { timeout: 60_000 }, async () => {
    await standby.query("SELECT pg_wal_replay_pause()");
    try {
      // Writes go on (the standby still flushes WAL); it replays none of them.
      let lagged = "";
      for (const end = Date.now() + 30_000; Date.now() < end && !/replay lag: \S+ critical/.test(lagged); ) {
        await primary.query("CREATE TABLE IF NOT EXISTS lag_probe (n int); INSERT INTO lag_probe VALUES (1)", [], "ha_quorum");
        lagged = (await cli("--orchestrator-url", servers[0].url, "ha", "quorum")).stdout;
        await sleep(100);
      }
      expect(lagged).toMatch(/replay lag: \d+\.\d+s critical/);
      const refused = await cli("--orchestrator-url", servers[0].url, "ha", "failover", "--reason", "now");
      expect(refused.code).toBe(1);
      expect(refused.stderr).toMatch(/replication lag is critical \(.*s > 2s\)/);
    } finally {
      await standby.query("SELECT pg_wal_replay_resume()");
    }
  });

  it("two standalone servers behind one name are a split brain: reported, exit 1", { timeout: 60_000 }, async () => {
    const a = await startChildServer(["--data-dir", path.join(work, "sa")]);
    const b = await startChildServer(["--data-dir", path.join(work, "sb")]);
    try {
      const r = await cli("ha", "status", "--replica", a.url, "--replica", b.url);
      expect(r.code).toBe(1);
      expect(r.stdout).toMatch(/standalone\s+yes/);
      expect(r.stderr).toMatch(/split brain: 2 replicas claim leadership/);
    } finally {
      await a.kill();
      await b.kill();
    }
  });
});
