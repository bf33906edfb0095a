import { Writable } from "node:stream";
import { drizzle } from "drizzle-orm/node-postgres";
import pg from "pg";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { FencedError, ValidationError } from "../src/domain/errors.js";
import { PgLeadership, validateLeaderTimings } from "../src/ha/election.js";
import { createLogger } from "../src/observability/logger.js";
import { requireEpoch } from "../src/store/pg/rollouts.js";
import { PostgresStore } from "../src/store/pg/store.js";
import { createHaDatabase } from "./helpers/ha-db.js";
import { TcpProxy } from "../bench/ha-pg.js";
import { until } from "./helpers/wait.js";

const quiet = () => createLogger({ format: "json", level: "error", destination: new Writable({ write: (_c, _e, done) => done() }) });

describe("leader election on PostgreSQL", () => {
  let db: Awaited<ReturnType<typeof createHaDatabase>>;
  let admin: pg.Pool;
  const open: PgLeadership[] = [];

  beforeAll(async () => {
    db = await createHaDatabase();
    await (await PostgresStore.open({ url: db.url })).close(); // the schema, with leader_epochs
    admin = new pg.Pool({ connectionString: db.url, max: 2 });
  });
  // Every test's replicas stop with it, so a failing test leaves no leader behind for the next.
  afterEach(async () => {
    await Promise.all(open.splice(0).map((l) => l.close()));
  });
  afterAll(async () => {
    await Promise.all(open.map((l) => l.close()));
    await admin.end();
    await db.drop();
  });

  function replica(id: string, url = db.url, leaseMs = 1500, renewMs = 300): PgLeadership {
    const l = new PgLeadership({ url, holderId: id, leaseMs, renewMs, logger: quiet() });
    open.push(l);
    return l;
  }
  const leaders = (ls: PgLeadership[]) => ls.filter((l) => l.isLeader());
  const epochs = async () => (await admin.query("SELECT epoch::int, holder_id, resigned_at, end_reason FROM leader_epochs ORDER BY epoch")).rows;

  it("refuses a lease that is not clearly longer than the renewal", () => {
    expect(() => validateLeaderTimings(10_000, 2_000)).not.toThrow();
    expect(() => validateLeaderTimings(5_000, 2_000)).toThrow(ValidationError);
    expect(() => validateLeaderTimings(5_000, 2_000)).toThrow(/--leader-lease: 5000ms must be at least 3 × --leader-renew/);
    expect(() => validateLeaderTimings(10_000, 50)).toThrow(/--leader-renew/);
  });

  it("elects exactly one of three; the others take over within milliseconds of its resignation, never two at once", async () => {
    const ls = [replica("a"), replica("b"), replica("c")];
    await Promise.all(ls.map((l) => l.start()));
    await until("a leader", async () => leaders(ls).length === 1);
    const first = leaders(ls)[0];
    const epoch = first.epoch()!;
    // The lease decides; the session lock is the fast path, taken by the leader at the latest at its next renewal
    // (a replica that lost the lock race may still have won the first epoch's row).
    await until("the leader holds the session lock", async () => first.holdsSessionLock(), 3000);
    // Never two leaders while the lease is renewed.
    for (let i = 0; i < 10; i++) {
      expect(leaders(ls).length).toBeLessThanOrEqual(1);
      await new Promise((r) => setTimeout(r, 50));
    }
    const gone = await first.resign("test handover");
    expect(gone).toMatchObject({ previousHolder: first.holderId, previousEpoch: epoch });
    expect(first.isLeader()).toBe(false);
    const next = await until("a new leader", async () => leaders(ls)[0], 1000);
    expect(next).not.toBe(first);
    expect(next.epoch()).toBe(epoch + 1);
    const rows = await epochs();
    expect(rows.at(-2)).toMatchObject({ epoch, end_reason: "resigned" });
    expect(rows.at(-1)).toMatchObject({ epoch: epoch + 1, holder_id: next.holderId, resigned_at: null });
    await Promise.all(ls.map((l) => l.close()));
  });

  it("a resignation hands over by its notification: with polls half a minute apart a follower leads at once, whichever replica resigns", async () => {
    // Renewal 60 s: a follower's next poll is 30 s away, the resigned leader holds off for 2 min.
    // Only the notification of the resignation can make a follower campaign before the waits below end.
    const ls = [replica("na", db.url, 180_000, 60_000), replica("nb", db.url, 180_000, 60_000), replica("nc", db.url, 180_000, 60_000)];
    await ls[0].start();
    await until("na leads", async () => ls[0].isLeader());
    await Promise.all([ls[1].start(), ls[2].start()]);
    expect(leaders(ls)).toEqual([ls[0]]);
    const first = ls[0].epoch()!;

    // Asked of a follower: the leader is told to stop, and another follower (or the one asked) leads.
    await ls[1].resign("handover asked of a follower");
    const second = await until("a follower leads", async () => leaders(ls).find((l) => l !== ls[0]), 10_000);
    expect(second.epoch()).toBe(first + 1);
    await until("the old leader stops", async () => !ls[0].isLeader(), 10_000);
    // It let go of the session lock with its leadership (the next leader's fast path), and holds off.
    await until("the old leader released the session lock", async () => !ls[0].holdsSessionLock(), 10_000);

    // Asked of the leader itself: the one replica not holding off leads.
    await second.resign("handover asked of the leader");
    const third = await until("the remaining replica leads", async () => leaders(ls)[0], 10_000);
    expect(third).not.toBe(second);
    expect(third).not.toBe(ls[0]);
    expect(third.epoch()).toBe(first + 2);
    const rows = (await epochs()).filter((r) => r.epoch >= first);
    expect(rows.map((r) => [r.epoch, r.end_reason])).toEqual([
      [first, "resigned"],
      [first + 1, "resigned"],
      [first + 2, null],
    ]);
  }, 30_000);

  it("a resigned leader does not take the leadership back when its hold-off ends, lock or no lock", async () => {
    const [a, b] = [replica("ra"), replica("rb")];
    await a.start();
    await until("a leads", async () => a.isLeader());
    await until("a holds the session lock", async () => a.holdsSessionLock(), 3000);
    await b.start();
    const resigned = a.epoch()!;
    await b.resign("handover asked of the follower");
    await until("b leads", async () => b.isLeader(), 3000);
    const epoch = b.epoch()!;
    expect(epoch).toBe(resigned + 1);
    // a's hold-off is 2 × 300 ms; it polls every 150 ms after. Several polls later b still leads the same epoch.
    await new Promise((r) => setTimeout(r, 2000));
    expect(b.isLeader()).toBe(true);
    expect(b.epoch()).toBe(epoch);
    expect(a.isLeader()).toBe(false);
    expect((await epochs()).filter((r) => r.epoch >= resigned).map((r) => r.end_reason)).toEqual(["resigned", null]);
  });

  it("fences: a write with an epoch that is not the newest, resigned, or past its lease commits nothing", async () => {
    const [a, b] = [replica("fa"), replica("fb")];
    await a.start();
    await b.start();
    const old = (await until("a leader", async () => leaders([a, b])[0])).epoch()!;
    const tx = drizzle({ client: admin });
    await expect(tx.transaction((t) => requireEpoch(t, old))).resolves.toBeUndefined();
    await leaders([a, b])[0].resign("fence test");
    const now = (await until("the next leader", async () => leaders([a, b])[0], 2000)).epoch()!;
    expect(now).toBeGreaterThan(old);
    await expect(tx.transaction((t) => requireEpoch(t, old))).rejects.toThrow(FencedError);
    await expect(tx.transaction((t) => requireEpoch(t, now))).resolves.toBeUndefined();
    await expect(tx.transaction((t) => requireEpoch(t, now + 1))).rejects.toThrow(FencedError);
    await Promise.all([a.close(), b.close()]);
  });

  it("pg_terminate_backend of the leader's lock connection: a follower takes the lock and leads; the old leader steps down", async () => {
    const [a, b] = [replica("ta"), replica("tb")];
    await a.start();
    await until("a leads", async () => a.isLeader());
    await b.start();
    const old = a.epoch()!;
    const { rows } = await admin.query("SELECT pg_terminate_backend(pid) AS done FROM pg_stat_activity WHERE application_name = 'autonomy-leader ta'");
    expect(rows).toEqual([{ done: true }]);
    await until("b leads", async () => b.isLeader(), 3000);
    expect(b.epoch()).toBe(old + 1);
    await until("a no longer leads", async () => !a.isLeader(), 3000);
    expect((await epochs()).find((r) => r.epoch === old)).toMatchObject({ end_reason: "lock_released" });
    await Promise.all([a.close(), b.close()]);
  });

  it("a leader cut off from the database stops acting before its lease runs out; a follower leads after it", async () => {
    const proxy = await new TcpProxy({ host: new URL(db.url).hostname, port: Number(new URL(db.url).port || 5432) }).start();
    const a = replica("pa", proxy.urlFor(db.url), 1500, 300);
    await a.start();
    await until("a leads", async () => a.isLeader());
    const b = replica("pb", db.url, 1500, 300);
    await b.start();
    let steppedDownAt = 0;
    a.onChange((leading) => {
      if (!leading && steppedDownAt === 0) steppedDownAt = Date.now();
    });
    const old = a.epoch()!;
    proxy.set("blackhole");
    await until("b leads", async () => b.isLeader(), 5000);
    expect(steppedDownAt).toBeGreaterThan(0);
    const { rows } = await admin.query("SELECT acquired_at FROM leader_epochs WHERE epoch = $1", [old + 1]);
    // Same machine, same clock: the old leader stopped before the new epoch began.
    expect(steppedDownAt).toBeLessThan(new Date(rows[0].acquired_at).getTime());
    expect((await epochs()).find((r) => r.epoch === old)).toMatchObject({ end_reason: "lease_expired" });
    proxy.set("pass");
    await new Promise((r) => setTimeout(r, 1000));
    expect(a.isLeader()).toBe(false);
    await Promise.all([a.close(), b.close()]);
    await proxy.close();
  });
});
