import { create } from "@bufbuild/protobuf";
import { timestampMs } from "@bufbuild/protobuf/wkt";
import { describe, expect, it } from "vitest";
import { NodeSchema } from "../gen/autonomy/v1/nodes_pb.js";
import type { NodeSighting } from "../src/store/fleet-rows.js";
import { SightingBuffer } from "../src/store/sightings.js";
import type { Store } from "../src/store/store.js";

/** A store that records what it is asked to write and fails on demand. */
function recordingStore() {
  const writes: NodeSighting[][] = [];
  let failNext = false;
  const store = {
    recordSightings: async (s: readonly NodeSighting[]) => {
      if (failNext) {
        failNext = false;
        throw new Error("disk full");
      }
      writes.push([...s]);
    },
  } as unknown as Store;
  return { store, writes, failOnce: () => (failNext = true) };
}

describe("SightingBuffer", () => {
  it("coalesces many heartbeats of a node into one row of one write", async () => {
    const { store, writes } = recordingStore();
    const buffer = new SightingBuffer({ store, flushIntervalMs: 3_600_000, onFlushError: () => {} });
    for (let i = 0; i < 1000; i++) buffer.record({ nodeId: `n${i % 100}`, lastSeenMs: 1_000 + i });
    expect(writes).toHaveLength(0);
    await buffer.close();
    expect(writes).toHaveLength(1);
    expect(writes[0]).toHaveLength(100);
    expect(writes[0].find((s) => s.nodeId === "n7")?.lastSeenMs).toBe(1_907);
  });

  it("keeps the newest fields of a node, whatever order they arrive in", async () => {
    const { store, writes } = recordingStore();
    const buffer = new SightingBuffer({ store, flushIntervalMs: 3_600_000, onFlushError: () => {} });
    buffer.record({ nodeId: "n", lastSeenMs: 200, reportedReleaseId: "r2" });
    buffer.record({ nodeId: "n", lastSeenMs: 100, reportedReleaseId: "r1", agentVersion: "v1" });
    buffer.record({ nodeId: "n", lastSeenMs: 300 });
    await buffer.flush();
    expect(writes[0]).toEqual([{ nodeId: "n", lastSeenMs: 300, reportedReleaseId: "r2", agentVersion: "v1" }]);
  });

  it("overlays the buffer on stored nodes until it is written, and keeps it when a write fails", async () => {
    const { store, writes, failOnce } = recordingStore();
    const errors: unknown[] = [];
    const buffer = new SightingBuffer({ store, flushIntervalMs: 3_600_000, onFlushError: (e) => errors.push(e) });
    buffer.record({ nodeId: "n", lastSeenMs: 5_000, reportedReleaseId: "r9" });
    const stored = () => create(NodeSchema, { nodeId: "n", lastSeen: { seconds: 4n }, reportedReleaseId: "r1" });
    const seen = buffer.overlay(stored());
    expect([timestampMs(seen.lastSeen!), seen.reportedReleaseId]).toEqual([5_000, "r9"]);
    const newerStored = buffer.overlay(create(NodeSchema, { nodeId: "n", lastSeen: { seconds: 6n }, reportedReleaseId: "r1" }));
    expect(newerStored.reportedReleaseId).toBe("r1");
    failOnce();
    await buffer.flush();
    expect(errors).toHaveLength(1);
    expect(buffer.latest("n")?.lastSeenMs).toBe(5_000);
    await buffer.flush();
    expect(writes).toEqual([[{ nodeId: "n", lastSeenMs: 5_000, reportedReleaseId: "r9", agentVersion: undefined }]]);
    expect(buffer.latest("n")).toBeUndefined();
    await buffer.close();
  });
});

describe("SightingBuffer slices", () => {
  it("writes a flush in slices, and keeps the slices a failure left unwritten", async () => {
    const writes: string[][] = [];
    let calls = 0;
    const store = {
      recordSightings: async (s: readonly NodeSighting[]) => {
        calls++;
        if (calls === 2) throw new Error("disk full");
        writes.push(s.map((x) => x.nodeId));
      },
    } as unknown as Store;
    const errors: [unknown, number][] = [];
    const flushed: number[] = [];
    const buffer = new SightingBuffer({ store, flushIntervalMs: 3_600_000, sliceSize: 10, onFlushError: (e, written) => errors.push([e, written]), onFlush: (n) => flushed.push(n) });
    for (let i = 0; i < 25; i++) buffer.record({ nodeId: `n${String(i).padStart(2, "0")}`, lastSeenMs: 1_000 + i });
    await buffer.flush();
    // The first slice is stored; the second failed, so it and the third are kept.
    expect(writes).toEqual([Array.from({ length: 10 }, (_, i) => `n${String(i).padStart(2, "0")}`)]);
    expect(errors.map(([, written]) => written)).toEqual([10]);
    expect(flushed).toEqual([]);
    expect(buffer.latest("n05")).toBeUndefined();
    expect(buffer.latest("n10")?.lastSeenMs).toBe(1_010);
    expect(buffer.latest("n24")?.lastSeenMs).toBe(1_024);
    buffer.record({ nodeId: "n12", lastSeenMs: 2_000 });
    await buffer.flush();
    expect(writes.slice(1).map((w) => w.length)).toEqual([10, 5]);
    expect(writes.slice(1).flat().sort()).toEqual(Array.from({ length: 15 }, (_, i) => `n${String(i + 10).padStart(2, "0")}`));
    expect(flushed).toEqual([15]);
    expect(buffer.pending()).toEqual([]);
    await buffer.close();
  });
});
