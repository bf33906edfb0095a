import { describe, expect, it } from "vitest";
import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { NodeSchema, type Node } from "../gen/autonomy/v1/nodes_pb.js";
import { countLifecycles } from "../src/services/node-service.js";
import { SightingBuffer } from "../src/store/sightings.js";
import type { NodeQuery, Store } from "../src/store/store.js";

const STALE_AFTER_MS = 60_000;

describe("countLifecycles", () => {
  it("counts every node once across pages, with buffered sightings applied", async () => {
    const now = Date.now();
    const nodes: Node[] = Array.from({ length: 2_503 }, (_, i) =>
      create(NodeSchema, {
        nodeId: `n-${String(i).padStart(5, "0")}`,
        drained: i % 10 === 0,
        lastSeen: i % 7 === 0 ? undefined : timestampFromMs(i % 3 === 0 ? now - 2 * STALE_AFTER_MS : now),
      }),
    );
    const reads: NodeQuery[] = [];
    const store = {
      listNodes: async (q: NodeQuery) => {
        reads.push(q);
        const after = nodes.filter((n) => q.afterNodeId === undefined || n.nodeId > q.afterNodeId);
        return (q.limit === undefined ? after : after.slice(0, q.limit)).map((n) => create(NodeSchema, n));
      },
      recordSightings: async () => {},
    } as unknown as Store;
    const sightings = new SightingBuffer({ store, flushIntervalMs: 60_000, onFlushError: () => {} });
    // A node never seen in the store, seen just now by this server: HEALTHY, not UNAVAILABLE.
    sightings.record({ nodeId: "n-00007", lastSeenMs: now });
    try {
      const counts = await countLifecycles({ store, sightings, staleAfterMs: STALE_AFTER_MS });
      let healthy = 0, stale = 0, draining = 0, unavailable = 0;
      for (const n of nodes) {
        const i = Number(n.nodeId.slice(2));
        if (n.drained) draining++;
        else if (n.lastSeen === undefined && i !== 7) unavailable++;
        else if (i % 3 === 0 && i !== 7) stale++;
        else healthy++;
      }
      expect(counts).toEqual({ HEALTHY: healthy, STALE: stale, DRAINING: draining, UNAVAILABLE: unavailable });
      expect(reads.length).toBe(3);
      expect(reads.every((q) => q.limit !== undefined)).toBe(true);
    } finally {
      await sightings.close();
    }
  });
});
