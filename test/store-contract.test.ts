import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { EventSchema, type Event } from "../gen/autonomy/v1/events_pb.js";

type EventInit = Omit<MessageInitShape<typeof EventSchema>, "$typeName">;
import type { Store } from "../src/store/store.js";
import { STORE_KINDS } from "./helpers/server.js";
import { openStore } from "./helpers/store.js";
import type { SqliteStore } from "../src/store/sqlite/store.js";
import { jsonListText, referenceJsonText } from "../src/domain/json-text.js";

function ev(id: string, node = "n1", type = "boot", extra: EventInit = {}): Event {
  return create(EventSchema, { eventId: id, nodeId: node, eventType: type, timestamp: { seconds: 1_790_000_000n, nanos: 5 }, ...extra });
}

describe.each(STORE_KINDS)("store contract: %s", (kind) => {
  let store: Store;
  let cleanup: () => Promise<void>;
  beforeAll(async () => ({ store, cleanup } = await openStore(kind)));
  afterAll(async () => cleanup());

  it("reports its dialect", () => {
    expect(store.dialect).toBe(kind);
  });

  it("stores new events and skips ids already stored", async () => {
    expect(await store.ingestEvents([ev("c1"), ev("c2")])).toBe(2);
    expect(await store.ingestEvents([ev("c2"), ev("c3")])).toBe(1);
    const ids = (await store.queryEvents({ limit: 1000 })).map((e) => e.eventId);
    expect(ids.filter((id) => id.startsWith("c"))).toEqual(["c3", "c2", "c1"]);
  });

  it("dedupes by node and event_id: the same id from another node is another event", async () => {
    expect(await store.ingestEvents([ev("shared-id", "dn1", "probe")])).toBe(1);
    expect(await store.ingestEvents([ev("shared-id", "dn2", "crash"), ev("shared-id", "dn1", "again")])).toBe(1);
    const byNode = async (nodeId: string) => (await store.queryEvents({ nodeId, limit: 10 })).map((e) => [e.eventId, e.eventType]);
    expect(await byNode("dn1")).toEqual([["shared-id", "probe"]]);
    expect(await byNode("dn2")).toEqual([["shared-id", "crash"]]);
  });

  it("keeps a duplicate's first content", async () => {
    await store.ingestEvents([ev("dup", "n1", "first")]);
    await store.ingestEvents([ev("dup", "n1", "second")]);
    const [stored] = (await store.queryEvents({ limit: 1000 })).filter((e) => e.eventId === "dup");
    expect(stored.eventType).toBe("first");
  });

  it("orders by insertion, not by timestamp", async () => {
    await store.ingestEvents([
      ev("late", "order", "t", { timestamp: { seconds: 2_000_000_000n, nanos: 0 } }),
      ev("early", "order", "t", { timestamp: { seconds: 1n, nanos: 0 } }),
    ]);
    const ids = (await store.queryEvents({ nodeId: "order", limit: 10 })).map((e) => e.eventId);
    expect(ids).toEqual(["early", "late"]);
  });

  it("round-trips every field: nanosecond timestamps, optional ids and a nested JSON payload", async () => {
    const payload = { a: 1.5, b: [true, null, "x"], c: { d: "é€😀" } };
    await store.ingestEvents([
      ev("full", "rt", "t", { timestamp: { seconds: 1_790_000_000n, nanos: 123_456_789 }, releaseId: "r1", lockFingerprint: "fp", payload }),
      ev("bare", "rt", "t"),
    ]);
    const [bare, full] = await store.queryEvents({ nodeId: "rt", limit: 10 });
    expect(full.timestamp).toMatchObject({ seconds: 1_790_000_000n, nanos: 123_456_789 });
    expect(full.releaseId).toBe("r1");
    expect(full.lockFingerprint).toBe("fp");
    expect(full.payload).toEqual(payload);
    expect(full.seq).toBeGreaterThan(0n);
    expect(bare.releaseId).toBeUndefined();
    expect(bare.lockFingerprint).toBeUndefined();
    expect(bare.payload).toBeUndefined();
  });

  it("filters by node, by type, and by both", async () => {
    await store.ingestEvents([ev("f1", "fa", "x"), ev("f2", "fa", "y"), ev("f3", "fb", "x")]);
    expect((await store.queryEvents({ nodeId: "fa", limit: 10 })).map((e) => e.eventId)).toEqual(["f2", "f1"]);
    expect((await store.queryEvents({ eventType: "x", limit: 1000 })).map((e) => e.eventId)).toEqual(["f3", "f1"]);
    expect((await store.queryEvents({ nodeId: "fa", eventType: "x", limit: 10 })).map((e) => e.eventId)).toEqual(["f1"]);
  });

  it("pages back with the before cursor, without gaps or repeats", async () => {
    await store.ingestEvents(Array.from({ length: 25 }, (_, i) => ev(`p${i}`, "pager")));
    const seen: string[] = [];
    let before: bigint | undefined;
    for (;;) {
      const page = await store.queryEvents({ nodeId: "pager", limit: 10, before });
      if (page.length === 0) break;
      seen.push(...page.map((e) => e.eventId));
      before = page[page.length - 1].seq;
    }
    expect(seen).toEqual(Array.from({ length: 25 }, (_, i) => `p${24 - i}`));
  });

  it("answers an event page as the JSON text of the events the same query returns, payloads written as stored", async () => {
    // Integer-like keys (which JSON.parse puts first), numbers JSON writes in exponent form,
    // escapes and characters outside the BMP: the stored text must be what writing the parsed object gives.
    const payload = {
      b: [true, null, "x", 1e21, 5e-7, -0, 0.1, 2 ** 53 + 1, Number.MAX_VALUE],
      "10": 1,
      "2": { "1": [] },
      c: { d: "é€😀\u2028\u0000\"\\", lone: "\ud800 \udfff" },
      // Own keys that name Object.prototype's members, as a parsed request holds them.
      ...(JSON.parse('{"__proto__": {"x": 1}, "constructor": "c", "toJSON": 2}') as object),
    };
    for (let i = 0; i < 20; i++) {
      await store.ingestEvents([ev(`pg${i}`, "paged", i % 2 ? "boot" : "t", i % 3 ? { payload: { ...payload, i }, releaseId: "r", ...(i % 4 ? { lockFingerprint: "lf" } : {}) } : {})]);
      const page = await store.queryEventPage({ nodeId: "paged", limit: 1 });
      expect(JSON.parse(page.text)[0].event_id).toBe(`pg${i}`);
    }
    const queries = [{ nodeId: "paged", limit: 100 }, { nodeId: "paged", eventType: "boot", limit: 4 }, { eventType: "t", limit: 1000 }, { nodeId: "nobody", limit: 10 }];
    const [, second] = await store.queryEvents({ nodeId: "paged", limit: 2 });
    queries.push({ nodeId: "paged", limit: 5, before: second.seq } as (typeof queries)[number]);
    for (const q of queries) {
      const events = await store.queryEvents(q);
      // What protobuf-es writes for each event, not the page writer's own path.
      const reference = "[" + events.map((e) => referenceJsonText(EventSchema, e)).join(",") + "]";
      for (const busy of [false, true]) {
        const page = await store.queryEventPage(q, { busy });
        expect(page.count).toBe(events.length);
        expect(page.text).toBe(reference);
        expect(page.text).toBe(jsonListText(EventSchema, events));
      }
    }
  });

  it("takes a batch of 10,000 events in one call", async () => {
    const batch = Array.from({ length: 10_000 }, (_, i) => ev(`big${i}`, "big"));
    expect(await store.ingestEvents(batch)).toBe(10_000);
    expect(await store.queryEvents({ nodeId: "big", limit: 1 })).toHaveLength(1);
  });
});

describe("the SQLite event page thread", () => {
  let store: SqliteStore;
  let cleanup: () => Promise<void>;
  beforeAll(async () => {
    const opened = await openStore("sqlite");
    store = opened.store as SqliteStore;
    cleanup = opened.cleanup;
    await store.ingestEvents(Array.from({ length: 50 }, (_, i) => ev(`t${i}`, "thread", "t", { payload: { i } })));
  });
  afterAll(async () => cleanup());

  it("sees every write answered before a page is asked for", async () => {
    for (let i = 0; i < 30; i++) {
      await store.ingestEvents([ev(`seen${i}`, "seen", "t")]);
      // Committed by the writer thread, read at once on the page thread's own connection.
      const page = await store.queryEventPage({ nodeId: "seen", limit: 1 }, { busy: true });
      expect(JSON.parse(page.text)[0].event_id).toBe(`seen${i}`);
    }
  });

  it("answers pages on the thread, and the same pages on the event loop once the thread is gone, the waiting ones too", async () => {
    const q = { nodeId: "thread", limit: 10 };
    const expected = jsonListText(EventSchema, await store.queryEvents(q));
    expect((await store.queryEventPage(q, { busy: true })).text).toBe(expected);
    expect(store.eventPages.onThread).toBe(true);
    // Pages asked for as the thread stops: none is lost.
    const waiting = Array.from({ length: 20 }, () => store.queryEventPage(q, { busy: true }));
    await store.eventPages.stopThreadForTest();
    for (const page of await Promise.all(waiting)) expect(page.text).toBe(expected);
    expect(store.eventPages.onThread).toBe(false);
    await store.ingestEvents([ev("after", "thread", "t")]);
    const after = await store.queryEventPage({ nodeId: "thread", limit: 1 }, { busy: true });
    expect(JSON.parse(after.text)[0].event_id).toBe("after");
  });
});

describe("a closed SQLite store's event pages", () => {
  it("are refused as the store's other reads are, the waiting ones too", async () => {
    const { store, cleanup } = await openStore("sqlite");
    await store.ingestEvents([ev("x", "closing", "t")]);
    expect((await store.queryEventPage({ nodeId: "closing", limit: 1 }, { busy: true })).count).toBe(1);
    const waiting = store.queryEventPage({ nodeId: "closing", limit: 1 }, { busy: true });
    const cleaned = cleanup();
    const outcome = await waiting.then(
      (page) => page.count,
      (err: Error) => err.message,
    );
    // Answered before the close took the thread, or refused as closed: never left waiting.
    expect([1, "the store is closed"]).toContain(outcome);
    await cleaned;
    await expect(store.queryEventPage({ nodeId: "closing", limit: 1 }, { busy: true })).rejects.toThrow(/closed/);
    await expect(store.queryEventPage({ nodeId: "closing", limit: 1 })).rejects.toThrow(/closed/);
  });
});
