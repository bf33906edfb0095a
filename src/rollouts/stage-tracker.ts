/**
 * The counts of one open stage, kept node by node so that each signal (an ack, a sighting,
 * an event, the liveness sweep) updates them in constant time, and rebuilt from the store
 * (loadStageTracker) whenever the controller resyncs: memory is a cache of the store.
 */
import type { RolloutPlan } from "../../gen/autonomy/v1/rollouts_pb.js";
import { gatedEventType, type PlanState, type StageTally } from "../domain/rollouts.js";
import type { StageNodeRow } from "../store/rollout-rows.js";
import type { SightingBuffer } from "../store/sightings.js";
import type { Store } from "../store/store.js";

type AckClass = "healthy" | "failed" | "other";

/** Only a healthy ack reporting the plan's release is a success; failed and rolled_back are failures. */
function classify(state: string | undefined, reportedReleaseId: string | undefined, releaseId: string): AckClass {
  if (state === "healthy" && reportedReleaseId === releaseId) return "healthy";
  if (state === "failed" || state === "rolled_back") return "failed";
  return "other";
}

interface NodeTrack {
  ack: AckClass;
  ackUpdatedMs: number;
  lastSeenMs: number;
  unreachable: boolean;
}

/** An ack as the tracker needs it. */
export interface TrackedAck {
  nodeId: string;
  state: string;
  reportedReleaseId: string;
  updatedAtMs: number;
}

/** A signal that arrived while the tracker was read from the store, applied once it is. */
export type TrackerSignal = { ack: TrackedAck } | { seen: string; atMs: number } | { event: string };

export const sameTally = (a: StageTally, b: StageTally): boolean =>
  a.nodeCount === b.nodeCount &&
  a.healthy === b.healthy &&
  a.failed === b.failed &&
  a.unreachable === b.unreachable &&
  a.gatedEvents === b.gatedEvents &&
  a.settledAtMs === b.settledAtMs;

export class StageTracker {
  private readonly nodes = new Map<string, NodeTrack>();
  private readonly t: StageTally = { nodeCount: 0, healthy: 0, failed: 0, unreachable: 0, gatedEvents: 0 };
  /** The newest ack time of any stage node: when every node is final, the stage settled then. */
  private newestAckMs = 0;

  constructor(
    readonly releaseId: string,
    readonly stageId: string,
  ) {}

  has(nodeId: string): boolean {
    return this.nodes.has(nodeId);
  }

  /** The counts now (a copy). */
  tally(): StageTally {
    return { ...this.t };
  }

  /** Adds a stage node as the store holds it; lastSeenMs is its newest sighting (store or buffer). */
  add(row: StageNodeRow, lastSeenMs: number): void {
    if (this.nodes.has(row.nodeId)) return;
    this.nodes.set(row.nodeId, { ack: "other", ackUpdatedMs: 0, lastSeenMs, unreachable: false });
    this.t.nodeCount++;
    if (row.ackUpdatedAtMs !== undefined) {
      this.ack({ nodeId: row.nodeId, state: row.ackState ?? "", reportedReleaseId: row.ackReportedReleaseId ?? "", updatedAtMs: row.ackUpdatedAtMs });
    }
    this.settle();
  }

  /** Applies an ack of the plan's release; true when the counts changed. An ack older than the one counted is ignored. */
  ack(a: TrackedAck): boolean {
    const track = this.nodes.get(a.nodeId);
    if (!track || a.updatedAtMs < track.ackUpdatedMs) return false;
    const next = classify(a.state, a.reportedReleaseId, this.releaseId);
    track.ackUpdatedMs = a.updatedAtMs;
    track.lastSeenMs = Math.max(track.lastSeenMs, a.updatedAtMs);
    let changed = false;
    if (track.unreachable) {
      track.unreachable = false;
      this.t.unreachable--;
      changed = true;
    }
    if (next !== track.ack) {
      if (track.ack !== "other") this.t[track.ack]--;
      if (next !== "other") this.t[next]++;
      track.ack = next;
      // The stage settles when its last node reached its final state: a node that sends the same
      // ack again does not start a time_soak over.
      this.newestAckMs = Math.max(this.newestAckMs, a.updatedAtMs);
      changed = true;
    }
    this.settle();
    return changed;
  }

  /** A sighting of a node (heartbeat or ack); true when it was counted unreachable and counts again. */
  seen(nodeId: string, atMs: number): boolean {
    const track = this.nodes.get(nodeId);
    if (!track) return false;
    track.lastSeenMs = Math.max(track.lastSeenMs, atMs);
    if (!track.unreachable) return false;
    track.unreachable = false;
    this.t.unreachable--;
    return true;
  }

  /** Counts stage nodes without a final ack that were not seen since cutoffMs as unreachable; true on a change. */
  sweep(cutoffMs: number): boolean {
    let changed = false;
    for (const track of this.nodes.values()) {
      const unreachable = track.ack === "other" && track.lastSeenMs < cutoffMs;
      if (unreachable !== track.unreachable) {
        track.unreachable = unreachable;
        this.t.unreachable += unreachable ? 1 : -1;
        changed = true;
      }
    }
    return changed;
  }

  /** Applies signals held while loading; true when an event among them means counting events again. */
  replay(signals: readonly TrackerSignal[]): boolean {
    let events = false;
    for (const s of signals) {
      if ("ack" in s) this.ack(s.ack);
      else if ("seen" in s) this.seen(s.seen, s.atMs);
      else events = true;
    }
    return events;
  }

  /** One more event of the gated type from a stage node. */
  event(nodeId: string): boolean {
    if (!this.nodes.has(nodeId)) return false;
    this.t.gatedEvents++;
    return true;
  }

  /** Sets the gated event count from per-node counts read from the store. */
  countEvents(counts: ReadonlyMap<string, number>): void {
    let total = 0;
    for (const [nodeId, n] of counts) if (this.nodes.has(nodeId)) total += n;
    this.t.gatedEvents = total;
  }

  private settle(): void {
    this.t.settledAtMs = this.t.nodeCount > 0 && this.t.healthy + this.t.failed === this.t.nodeCount ? this.newestAckMs : undefined;
  }
}

/** Stage nodes read per page: each page is one indexed query (a few ms), then the event loop may run. */
export const STAGE_PAGE = 500;

const yieldToLoop = () => new Promise<void>((resolve) => setImmediate(resolve));

/**
 * Builds the tracker of a plan's current stage from the store: its nodes page by page with
 * their acks and last-seen times (the sighting buffer's newer ones win), the gated events
 * since it opened, then the liveness sweep at nowMs.
 */
export async function loadStageTracker(
  deps: { store: Store; sightings: SightingBuffer; staleAfterMs: number },
  plan: RolloutPlan,
  state: PlanState,
  nowMs: number,
  pageSize = STAGE_PAGE,
): Promise<StageTracker> {
  const index = state.currentStage;
  const stage = plan.stages[index];
  const stageState = state.stages[index];
  const tracker = new StageTracker(plan.releaseId, stage.stageId);
  for (let after: string | undefined; ; ) {
    const rows = await deps.store.stageNodes({ planId: plan.planId, stageId: stage.stageId, releaseId: plan.releaseId, afterNodeId: after, limit: pageSize });
    for (const row of rows) {
      const buffered = deps.sightings.latest(row.nodeId)?.lastSeenMs;
      tracker.add(row, Math.max(row.lastSeenMs ?? row.movedAtMs, buffered ?? 0));
    }
    if (rows.length < pageSize) break;
    after = rows[rows.length - 1].nodeId;
    await yieldToLoop();
  }
  const gated = gatedEventType(stage);
  if (gated !== undefined && stageState.openedEventSeq !== undefined) {
    tracker.countEvents(await deps.store.eventCountsSince(gated, BigInt(stageState.openedEventSeq)));
  }
  tracker.sweep(nowMs - deps.staleAfterMs);
  return tracker;
}
