/**
 * The plans a leading controller runs: one PlanRuntime each, by plan id, made with the
 * controller's dependencies and forgotten when its plan finishes (or is gone). The leader's
 * signals (acks, sightings, events of a gated type) go from here to the runtimes whose plans
 * they concern, and the drift a resync finds in a runtime's counts is logged and collected here.
 */
import type { Event } from "../../gen/autonomy/v1/events_pb.js";
import type { RolloutRecord } from "../store/rollout-rows.js";
import { PlanRuntime, type RuntimeDeps } from "./plan-runtime.js";
import type { TrackedAck } from "./stage-tracker.js";

export type RunningPlansDeps = Omit<RuntimeDeps, "onFinished" | "onDrift">;

export class RunningPlans {
  private readonly runtimes = new Map<string, PlanRuntime>();
  /** The plans whose counts in memory differed from the store's, since the resync pass began. */
  drifted: string[] = [];

  constructor(private readonly deps: RunningPlansDeps) {}

  get(planId: string): PlanRuntime | undefined {
    return this.runtimes.get(planId);
  }

  has(planId: string): boolean {
    return this.runtimes.has(planId);
  }

  values(): IterableIterator<PlanRuntime> {
    return this.runtimes.values();
  }

  /** Forgets every plan; returns their runtimes (to be stopped). */
  clear(): PlanRuntime[] {
    const runtimes = [...this.runtimes.values()];
    this.runtimes.clear();
    return runtimes;
  }

  /** Runs a plan from now on: its runtime, with a read-back and an evaluation queued. */
  load(record: RolloutRecord): PlanRuntime {
    const rt = this.runtime(record);
    this.runtimes.set(rt.planId, rt);
    void rt.resync(record);
    return rt;
  }

  /** A runtime for the plan that is not run from here (a follower's action uses one). */
  runtime(record: RolloutRecord): PlanRuntime {
    return new PlanRuntime(
      {
        ...this.deps,
        onFinished: (done) => {
          if (this.runtimes.get(done.planId) === done) this.runtimes.delete(done.planId);
        },
        onDrift: (drift, memory, stored) => {
          this.drifted.push(drift.planId);
          this.deps.logger.warn({ plan_id: drift.planId, memory, stored }, "rollout stage counts differed from the store; counted again");
        },
      },
      record,
    );
  }

  // -- signals --------------------------------------------------------------------------

  ack(releaseId: string, ack: TrackedAck): void {
    for (const rt of this.runtimes.values()) {
      // A rollback counts acks of the releases it restores: the runtime counts again.
      if (rt.state.phase === "rolling_back") rt.schedule();
      if (rt.plan.releaseId === releaseId) rt.live.onAck(ack);
    }
  }

  seen(nodeId: string, atMs: number): void {
    for (const rt of this.runtimes.values()) rt.live.onSeen(nodeId, atMs);
  }

  events(events: readonly Pick<Event, "nodeId" | "eventType">[], allNew: boolean): void {
    for (const rt of this.runtimes.values()) {
      const type = rt.gatedType();
      if (type === undefined) continue;
      for (const e of events) if (e.eventType === type) rt.live.onEvent(e.nodeId, allNew);
    }
  }
}
