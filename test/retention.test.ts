import { create } from "@bufbuild/protobuf";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { EventSchema, type Event } from "../gen/autonomy/v1/events_pb.js";
import { createLogger } from "../src/observability/logger.js";
import { EventRetention, MAX_BATCH_MS, nextBatchSize } from "../src/ops/retention.js";
import type { Store } from "../src/store/store.js";
import { openStore } from "./helpers/store.js";
import { STORE_KINDS, startTestServer } from "./helpers/server.js";
import { until } from "./helpers/wait.js";

const quiet = createLogger({ format: "json", level: "error" });

function events(prefix: string, n: number, node = "n1"): Event[] {
  return Array.from({ length: n }, (_, i) =>
    create(EventSchema, { eventId: `${prefix}-${i}`, eventType: i % 2 ? "a" : "b", nodeId: node, timestamp: { seconds: 1_700_000_000n, nanos: 0 } }),
  );
}

async function ingest(store: Store, all: Event[], perBatch = 2000): Promise<void> {
  for (let i = 0; i < all.length; i += perBatch) await store.ingestEvents(all.slice(i, i + perBatch));
}

async function allSeqs(store: Store): Promise<{ ids: string[] }> {
  const ids: string[] = [];
  for (let before = 0n; ; ) {
    const page = await store.queryEvents({ limit: 1000, before });
    ids.push(...page.map((e) => e.eventId));
    if (page.length < 1000) break;
    before = page[page.length - 1].seq;
  }
  return { ids };
}

describe("nextBatchSize", () => {
  it.each([
    ["fast batches grow, at most twice", 1000, 1, 2000],
    ["on-target batches stay", 1000, MAX_BATCH_MS / 4, 1000],
    ["slow batches shrink, at most to a quarter", 1000, 1000, 250],
    ["never below the floor", 20, 1000, 10],
    ["never above the ceiling", 40_000, 0, 50_000],
  ])("%s", (_name, size, elapsed, expected) => {
    expect(nextBatchSize(size, elapsed)).toBe(expected);
  });
});

describe.each(STORE_KINDS)("event retention: %s", (kind) => {
  let store: Store;
  let cleanup: () => Promise<void>;
  beforeEach(async () => ({ store, cleanup } = await openStore(kind)));
  afterEach(async () => cleanup());

  it("deletes every old event in batches while ingest goes on, keeps the new ones, and records the run", async () => {
    const old = events("old", kind === "sqlite" ? 30_000 : 8000);
    await ingest(store, old);
    const oldSeqs = await store.queryEvents({ limit: 1, before: 0n });
    await new Promise((r) => setTimeout(r, 5));
    const cutoffMs = Date.now();
    await new Promise((r) => setTimeout(r, 5));
    const retention = new EventRetention({ store, retentionMs: 60_000, logger: quiet, now: () => cutoffMs + 60_000 });
    // Ingest continues during the run: 40 batches of new events, each stored while batches delete.
    const fresh: Event[] = [];
    const ingesting = (async () => {
      for (let i = 0; i < 40; i++) {
        const batch = events(`new-${i}`, 100, "n2");
        await store.ingestEvents(batch);
        fresh.push(...batch);
      }
    })();
    const run = await retention.runOnce();
    await ingesting;
    expect(run?.deleted).toBe(old.length);
    expect(run!.batches).toBeGreaterThan(1);
    expect(run!.lastSeq).toBe(oldSeqs[0].seq);
    const left = (await allSeqs(store)).ids;
    expect(left.filter((id) => id.startsWith("old-"))).toEqual([]);
    expect(left.length).toBe(fresh.length);

    const [record] = await store.auditRecords({ eventName: "events.retention.deleted", limit: 10 });
    expect(record).toMatchObject({ category: "system", action: "delete", resourceType: "events", actor: "system:event-retention", outcome: "success" });
    const fields = JSON.parse(record.fieldsJson);
    expect(fields).toMatchObject({ deleted: old.length, first_seq: String(run!.firstSeq), last_seq: String(oldSeqs[0].seq), retention_seconds: 60 });
    expect(Date.parse(fields.newest_received_at)).toBeLessThan(cutoffMs);
    expect(Date.parse(fields.oldest_received_at)).toBeLessThanOrEqual(Date.parse(fields.newest_received_at));

    // Nothing is old any more: the next run deletes nothing and records nothing.
    expect((await retention.runOnce())?.deleted ?? 0).toBe(0);
    expect(await store.auditRecords({ eventName: "events.retention.deleted", limit: 10 })).toHaveLength(1);
  });

  it("deletes a batch oldest first, a step at a time when it has a time budget, and says when the range is done", async () => {
    await ingest(store, events("old", 400));
    const [newest] = await store.queryEvents({ limit: 1 });
    const range = { afterSeq: 0n, throughSeq: newest.seq, receivedBeforeMs: Date.now() + 1 };
    const cut = await store.deleteEvents({ ...range, limit: 160, budgetMs: 0 });
    // SQLite stops after its first step (a budget of 0 is spent at once); PostgreSQL deletes the batch in one statement.
    expect(cut.deleted).toBe(kind === "sqlite" ? 20 : 160);
    expect(cut.done).toBe(false);
    expect(cut.firstSeq).toBe(newest.seq - 399n);
    expect(cut.lastSeq).toBe(cut.firstSeq! + BigInt(cut.deleted - 1));
    const rest = await store.deleteEvents({ ...range, afterSeq: cut.lastSeq!, limit: 1000 });
    expect(rest).toMatchObject({ deleted: 400 - cut.deleted, done: true, lastSeq: newest.seq });
    expect(await store.queryEvents({ limit: 10 })).toEqual([]);
  });

  it("does nothing while it is not the leader", async () => {
    await ingest(store, events("old", 500));
    const cutoffMs = Date.now() + 1;
    let leader = false;
    const retention = new EventRetention({ store, retentionMs: 60_000, logger: quiet, now: () => cutoffMs + 60_000, isLeader: () => leader });
    expect(await retention.runOnce()).toBeUndefined();
    expect((await allSeqs(store)).ids).toHaveLength(500);
    leader = true;
    expect((await retention.runOnce())?.deleted).toBe(500);
  });

  it("leaves events received after the cutoff that sit between old ones in sequence order", async () => {
    await ingest(store, events("a", 300));
    await new Promise((r) => setTimeout(r, 5));
    const cutoffMs = Date.now();
    await new Promise((r) => setTimeout(r, 5));
    await ingest(store, events("b", 300));
    const retention = new EventRetention({ store, retentionMs: 1000, logger: quiet, now: () => cutoffMs + 1000 });
    expect((await retention.runOnce())?.deleted).toBe(300);
    const left = (await allSeqs(store)).ids;
    expect(left).toHaveLength(300);
    expect(left.every((id) => id.startsWith("b-"))).toBe(true);
  });
});

describe("--event-retention on a running server", () => {
  it("deletes events past the retention on its own and audits it", async () => {
    const server = await startTestServer("sqlite", { eventRetentionMs: 1000, eventRetentionIntervalMs: 200 });
    try {
      await server.store.ingestEvents(events("e", 50));
      await until("the events are deleted", async () => (await server.store.queryEvents({ limit: 10 })).length === 0, 10_000);
      // A run records what it deleted once its last batch is done, a moment after the deletion shows.
      const record = await until("the run's audit record", async () => (await server.store.auditRecords({ eventName: "events.retention.deleted", limit: 1 }))[0], 10_000);
      expect(JSON.parse(record.fieldsJson)).toMatchObject({ deleted: 50, retention_seconds: 1 });
    } finally {
      await server.stop();
    }
  });

  it("refuses a retention under a second", () => {
    expect(() => new EventRetention({ store: {} as Store, retentionMs: 500, logger: quiet })).toThrow(/at least 1s/);
  });
});
