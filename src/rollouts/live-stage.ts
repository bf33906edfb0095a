/**
 * The open stage's live counts as a plan's runtime keeps them: its StageTracker, the signals
 * applied to it (acks, sightings, events of the gated type), the signals held while the stage
 * is being counted from the store, the liveness sweep, and the gated events counted again from
 * the store after a batch with duplicates. Whatever may change a gate calls `changed` (the
 * runtime queues an evaluation).
 */
import type { RolloutPlan } from "../../gen/autonomy/v1/rollouts_pb.js";
import type { PlanState } from "../domain/rollouts.js";
import type { SightingBuffer } from "../store/sightings.js";
import type { Store } from "../store/store.js";
import { loadStageTracker, type StageTracker, type TrackedAck, type TrackerSignal } from "./stage-tracker.js";

export interface LiveStageDeps {
  store: Store;
  sightings: SightingBuffer;
  staleAfterMs: number;
  now: () => number;
}

export class LiveStage {
  /** The open stage's counts; undefined while they are unknown (being read, or after an error). */
  tracker?: StageTracker;
  private held?: TrackerSignal[];
  private recountEvents = false;
  private sweep?: NodeJS.Timeout;

  constructor(
    private readonly deps: LiveStageDeps,
    private readonly changed: () => void,
  ) {}

  onAck(ack: TrackedAck): void {
    if (this.held) this.held.push({ ack });
    else if (this.tracker?.ack(ack)) this.changed();
  }

  onSeen(nodeId: string, atMs: number): void {
    if (this.held) this.held.push({ seen: nodeId, atMs });
    else if (this.tracker?.seen(nodeId, atMs)) this.changed();
  }

  /** An event of the gated type; allNew false: some of its batch were duplicates, so count again. */
  onEvent(nodeId: string, allNew: boolean): void {
    if (this.held) {
      this.held.push({ event: nodeId });
      return;
    }
    if (!this.tracker?.has(nodeId)) return;
    if (allNew) this.tracker.event(nodeId);
    else this.recountEvents = true;
    this.changed();
  }

  /** The counts are unknown now (memory may be behind the store): signals are dropped until they are counted again. */
  forget(): void {
    this.tracker = undefined;
  }

  /** Stops the liveness sweep. */
  stopSweep(): void {
    clearInterval(this.sweep);
  }

  /**
   * Counts the plan's current stage (which is open) from the store; signals that arrive meanwhile
   * are applied after (to the counts being replaced too, so that comparing them shows only what
   * memory missed). Then the liveness sweep runs on a quarter of --node-stale-after.
   */
  async count(plan: RolloutPlan, state: PlanState, previous?: StageTracker): Promise<void> {
    const { store, sightings, staleAfterMs, now } = this.deps;
    this.held = [];
    let tracker: StageTracker;
    try {
      tracker = await loadStageTracker({ store, sightings, staleAfterMs }, plan, state, now());
      if (tracker.replay(this.held)) this.recountEvents = true;
      previous?.replay(this.held);
    } finally {
      this.held = undefined;
    }
    this.tracker = tracker;
    this.sweep = setInterval(() => {
      if (this.tracker?.sweep(this.deps.now() - this.deps.staleAfterMs)) this.changed();
    }, Math.max(1000, Math.floor(staleAfterMs / 4)));
    this.sweep.unref();
  }

  /** Whether a batch with duplicates came: the stage's gated events are to be counted again from the store. */
  get recountPending(): boolean {
    return this.recountEvents;
  }

  /** Counts the stage's events of the gated type again from the store. */
  async countEvents(type: string | undefined, openedEventSeq: string | undefined): Promise<void> {
    this.recountEvents = false;
    if (type === undefined || openedEventSeq === undefined || !this.tracker) return;
    this.tracker.countEvents(await this.deps.store.eventCountsSince(type, BigInt(openedEventSeq)));
  }
}
