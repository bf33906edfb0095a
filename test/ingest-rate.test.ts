import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { timestampMs } from "@bufbuild/protobuf/wkt";
import { createOrchestratorClients, type OrchestratorClients } from "../clients/index.js";
import { ingestCounts, type IngestRateReads } from "../src/store/ingest-rate.js";
import { ingestRateWindow } from "../src/domain/events.js";
import { h1 } from "./helpers/http.js";
import { STORE_KINDS, startTestServer, type TestServer } from "./helpers/server.js";

const event = (i: number, nodeId = "ir-1") => ({ eventId: `e-${i}`, eventType: "heartbeat", nodeId, timestamp: { seconds: 1_800_000_000n, nanos: 0 } });

describe("ingest-rate buckets from the events' primary key", () => {
  /** Events stored at these receipt times, seq 10, 11, ... */
  const reads = (times: number[]): IngestRateReads => ({
    seqRange: async () => (times.length === 0 ? undefined : { min: 10, max: 9 + times.length }),
    receivedAtOrAfter: async (seq) => times[Math.max(0, seq - 10)],
    countFrom: async (seq, q) => {
      const by = new Map<number, number>();
      for (const t of times.slice(seq - 10)) by.set(Math.floor((t - q.sinceMs) / q.bucketMs), (by.get(Math.floor((t - q.sinceMs) / q.bucketMs)) ?? 0) + 1);
      return [...by].map(([bucket, n]) => ({ bucket, n }));
    },
  });

  it("finds the window's first event by binary search and counts per bucket", async () => {
    const times = [100, 900, 1000, 1500, 1999, 2000, 2500, 2999, 3000];
    expect(await ingestCounts(reads(times), { sinceMs: 1000, bucketMs: 1000, buckets: 3 })).toEqual([3, 3, 1]);
    expect(await ingestCounts(reads(times), { sinceMs: 5000, bucketMs: 1000, buckets: 2 })).toEqual([0, 0]);
    expect(await ingestCounts(reads([]), { sinceMs: 0, bucketMs: 1000, buckets: 2 })).toEqual([0, 0]);
  });

  it("aligns buckets on their width, the last one holding now, and checks the window", () => {
    expect(ingestRateWindow({}, 1_000_005_000)).toEqual({ sinceMs: 1_000_010_000 - 600_000, bucketMs: 10_000, buckets: 60 });
    expect(() => ingestRateWindow({ windowSeconds: 30 }, 0)).toThrow("window_seconds: must be 60 to 86400");
    expect(() => ingestRateWindow({ windowSeconds: 3600, bucketSeconds: 1 }, 0)).toThrow(/bucket_seconds: 1 makes 3600 buckets/);
    expect(() => ingestRateWindow({ bucketSeconds: 0 }, 0)).toThrow("bucket_seconds: must be at least 1");
  });
});

describe.each(STORE_KINDS)("GetIngestRate on %s", (kind) => {
  let server: TestServer;
  let api: OrchestratorClients;
  beforeAll(async () => {
    server = await startTestServer(kind);
    api = createOrchestratorClients({ baseUrl: server.url });
  });
  afterAll(async () => {
    api.close();
    await server.stop();
  });

  it("counts the events stored in the window, not the duplicates, by bucket", async () => {
    const before = await api.events.getIngestRate({ windowSeconds: 60, bucketSeconds: 1 });
    await api.events.ingestEvents({ events: Array.from({ length: 40 }, (_, i) => event(i)) });
    await api.events.ingestEvents({ events: Array.from({ length: 30 }, (_, i) => event(i + 30)) }); // 10 duplicates
    const after = await api.events.getIngestRate({ windowSeconds: 60, bucketSeconds: 1 });
    expect(after.bucketSeconds).toBe(1);
    expect(after.buckets).toHaveLength(60);
    expect(after.total - before.total).toBe(60n);
    const starts = after.buckets.map((b) => timestampMs(b.start!));
    expect(starts[1] - starts[0]).toBe(1000);
    expect(starts[59]).toBeLessThanOrEqual(Date.now());
    expect(after.buckets.slice(-3).reduce((n, b) => n + b.events, 0n)).toBeGreaterThanOrEqual(60n);
  });

  it("the fleet overview reads the totals projection: every channel with nodes, by name", async () => {
    await api.nodes.enrollNode({ nodeId: "ov-b", channel: "ov-2" });
    await api.nodes.enrollNode({ nodeId: "ov-a", channel: "ov-1" });
    await api.nodes.heartbeat({ nodeId: "ov-a" });
    const o = await api.nodes.getFleetOverview({});
    expect(o.channels.map((c) => [c.channel, c.totals?.total, c.totals?.up, c.totals?.unknown])).toEqual([
      ["ov-1", 1, 1, 0],
      ["ov-2", 1, 0, 1],
    ]);
    expect(o.totals).toMatchObject({ total: 2, up: 1, unknown: 1 });
  });

  it("answers REST with the proto field names, and 400 naming the field", async () => {
    const ok = await h1(`${server.url}/v1/events/rate?window_seconds=120&bucket_seconds=60`);
    expect(ok.status).toBe(200);
    expect(ok.json()).toMatchObject({ bucket_seconds: 60, buckets: [{ events: expect.any(String) }, {}] });
    const bad = await h1(`${server.url}/v1/events/rate?window_seconds=10`);
    expect(bad.status).toBe(400);
    expect(bad.json().message).toMatch(/^window_seconds: must be 60 to 86400/);
  });
});
