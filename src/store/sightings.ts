import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import type { Node } from "../../gen/autonomy/v1/nodes_pb.js";
import { livenessOf } from "../domain/nodes.js";
import type { NodeSighting } from "./fleet-rows.js";
import type { Store } from "./store.js";

export interface SightingBufferOptions {
  store: Store;
  /** How often buffered sightings are written, in milliseconds. */
  flushIntervalMs: number;
  /** Called when a flush fails, with how many nodes its slices wrote before; the rest stay buffered for the next one. */
  onFlushError: (err: unknown, written: number) => void;
  /** Called after each successful flush with how many nodes it wrote. */
  onFlush?: (nodes: number) => void;
  /** Sightings per write (FLUSH_SLICE by default). */
  sliceSize?: number;
}

/**
 * Sightings per write of a flush. A flush of a whole fleet in one transaction held the writer
 * for up to a second at 50,000 nodes (each row updates the node and its fleet counts), while
 * every ack and event batch waited behind it; slices written one after another let those in
 * between, at the cost of one commit per slice. A slice of 1,000 still held the writer for
 * about 65 ms (the ack storm's p99); one of 250 holds it for about 16 ms.
 */
export const FLUSH_SLICE = 250;

/**
 * Coalesces what heartbeats and acks say about a node's liveness (last seen, reported
 * release, agent version) in memory and writes it for all nodes once per interval, in
 * transactions of FLUSH_SLICE nodes, so 10,000 nodes heartbeating do not cost 10,000 fsyncs. Reads overlay the
 * buffer, so this server always answers with the newest sighting; what a crash can lose is
 * at most one interval of last-seen times, which the next heartbeat restores.
 */
export class SightingBuffer {
  private buffered = new Map<string, NodeSighting>();
  /** Sightings being written; still overlaid on reads until the write commits. */
  private inFlight = new Map<string, NodeSighting>();
  private flushing: Promise<void> | undefined;
  private readonly timer: NodeJS.Timeout;

  constructor(private readonly opts: SightingBufferOptions) {
    // A tick while a flush is still writing its slices is skipped: the next one takes what came meanwhile.
    this.timer = setInterval(() => {
      if (!this.flushing) void this.flush();
    }, opts.flushIntervalMs);
    this.timer.unref();
  }

  private readonly listeners: ((s: NodeSighting) => void)[] = [];

  record(s: NodeSighting): void {
    this.buffered.set(s.nodeId, merge(this.buffered.get(s.nodeId), s));
    for (const listener of this.listeners) listener(s);
  }

  /** Calls fn with every sighting recorded from now on (the rollout controller watches liveness). */
  subscribe(fn: (s: NodeSighting) => void): void {
    this.listeners.push(fn);
  }

  /** The newest sighting of a node not yet visible in the store, if any. */
  latest(nodeId: string): NodeSighting | undefined {
    const a = this.buffered.get(nodeId);
    const b = this.inFlight.get(nodeId);
    return a && b ? merge(b, a) : (a ?? b);
  }

  /** The newest sighting of every node with one not yet visible in the store (of those `wanted` keeps, when given). */
  pending(wanted?: (nodeId: string) => boolean): NodeSighting[] {
    const out: NodeSighting[] = [];
    for (const s of this.buffered.values()) if (!wanted || wanted(s.nodeId)) out.push(this.latest(s.nodeId)!);
    for (const s of this.inFlight.values()) if (!this.buffered.has(s.nodeId) && (!wanted || wanted(s.nodeId))) out.push(s);
    return out;
  }

  /** A stored node with its buffered sighting applied. */
  overlay(node: Node): Node {
    const s = this.latest(node.nodeId);
    if (!s) return node;
    if (s.lastSeenMs < (livenessOf(node).lastSeenMs ?? -1)) return node;
    node.lastSeen = timestampFromMs(s.lastSeenMs);
    if (s.reportedReleaseId !== undefined) node.reportedReleaseId = s.reportedReleaseId;
    if (s.agentVersion !== undefined) node.agentVersion = s.agentVersion;
    return node;
  }

  /** Writes everything buffered; resolves when it is stored (or the write failed and was kept). */
  flush(): Promise<void> {
    if (this.flushing) return this.flushing.then(() => this.flush());
    if (this.buffered.size === 0) return Promise.resolve();
    this.inFlight = this.buffered;
    this.buffered = new Map();
    this.flushing = this.writeSlices([...this.inFlight.values()]).finally(() => {
      this.inFlight = new Map();
      this.flushing = undefined;
    });
    return this.flushing;
  }

  /** Writes a batch slice by slice, each awaited before the next; what a failure left unwritten is kept. */
  private async writeSlices(batch: NodeSighting[]): Promise<void> {
    const size = Math.max(1, this.opts.sliceSize ?? FLUSH_SLICE);
    let written = 0;
    try {
      for (; written < batch.length; written += size) await this.opts.store.recordSightings(batch.slice(written, written + size));
    } catch (err) {
      // Keep them: a newer sighting recorded meanwhile wins field by field.
      for (const s of batch.slice(written)) this.buffered.set(s.nodeId, merge(s, this.buffered.get(s.nodeId)));
      this.opts.onFlushError(err, written);
      return;
    }
    this.opts.onFlush?.(batch.length);
  }

  /** Stops the timer and writes what is buffered. */
  async close(): Promise<void> {
    clearInterval(this.timer);
    await this.flush();
  }
}

/** The newer of two sightings of one node, keeping fields the newer one does not carry. */
function merge(older: NodeSighting | undefined, newer: NodeSighting | undefined): NodeSighting {
  if (!older) return newer!;
  if (!newer) return older;
  const [a, b] = newer.lastSeenMs >= older.lastSeenMs ? [older, newer] : [newer, older];
  return {
    nodeId: b.nodeId,
    lastSeenMs: b.lastSeenMs,
    reportedReleaseId: b.reportedReleaseId ?? a.reportedReleaseId,
    agentVersion: b.agentVersion ?? a.agentVersion,
  };
}
