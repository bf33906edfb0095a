/**
 * Signals from a follower to the leader's rollout controller: acks, events of gated types, node
 * sightings and plans changed by operators (and to its workload loop: the workload state
 * changed), stored on this replica and relayed over PostgreSQL
 * NOTIFY (after they committed), so a rollout moves as fast on three replicas as on one. They
 * are coalesced for a few milliseconds and split under NOTIFY's 8,000-byte payload limit. A lost
 * notification (the leader was changing) delays a decision until the controller's resync; it
 * never corrupts one: the store is the truth, the signals only say when to look.
 */
import type { ControllerRelay, RolloutController } from "../rollouts/controller.js";
import type { TrackedAck } from "../rollouts/stage-tracker.js";
import type { HaMessage } from "./election.js";

/** What one notification carries. */
export interface SignalBody {
  /** [releaseId, nodeId, state, reportedReleaseId, updatedAtMs] */
  a?: [string, string, string, string, number][];
  /** [nodeId, eventType, allNew] */
  e?: [string, string, 0 | 1][];
  /** [nodeId, atMs] */
  s?: [string, number][];
  /** plan ids */
  p?: string[];
  /** Present (one item) when services were applied or deleted, or nodes reported workloads, here. */
  w?: 1[];
}

const FLUSH_MS = 5;
const MAX_PAYLOAD = 7_000;

export class SignalRelay implements ControllerRelay {
  private acks: NonNullable<SignalBody["a"]> = [];
  private pendingEvents: NonNullable<SignalBody["e"]> = [];
  private readonly seenAt = new Map<string, number>();
  private readonly plans = new Set<string>();
  private workloadsChanged = false;
  private timer?: NodeJS.Timeout;

  constructor(
    private readonly from: string,
    private readonly send: (msg: HaMessage) => Promise<void>,
    private readonly onError: (err: Error) => void,
  ) {}

  ack(releaseId: string, ack: TrackedAck): void {
    this.acks.push([releaseId, ack.nodeId, ack.state, ack.reportedReleaseId, ack.updatedAtMs]);
    this.soon();
  }
  events(events: readonly { nodeId: string; eventType: string }[], allNew: boolean): void {
    for (const e of events) this.pendingEvents.push([e.nodeId, e.eventType, allNew ? 1 : 0]);
    this.soon();
  }
  seen(nodeId: string, atMs: number): void {
    this.seenAt.set(nodeId, Math.max(atMs, this.seenAt.get(nodeId) ?? 0));
    this.soon();
  }
  plan(planId: string): void {
    this.plans.add(planId);
    this.soon();
  }
  /** The workload state changed here (an apply, a delete, a report): the leader's loop passes over it. */
  workloads(): void {
    this.workloadsChanged = true;
    this.soon();
  }

  private soon(): void {
    if (this.timer) return;
    this.timer = setTimeout(() => void this.flush(), FLUSH_MS);
    this.timer.unref();
  }

  /** Sends what is pending now, in as many notifications as it takes. */
  async flush(): Promise<void> {
    this.timer = undefined;
    const items: { key: keyof SignalBody; value: unknown }[] = [
      ...(this.workloadsChanged ? [{ key: "w" as const, value: 1 }] : []),
      ...[...this.plans].map((p) => ({ key: "p" as const, value: p })),
      ...this.acks.map((a) => ({ key: "a" as const, value: a })),
      ...this.pendingEvents.map((e) => ({ key: "e" as const, value: e })),
      ...[...this.seenAt].map((s) => ({ key: "s" as const, value: s })),
    ];
    this.plans.clear();
    this.workloadsChanged = false;
    this.acks = [];
    this.pendingEvents = [];
    this.seenAt.clear();
    let body: Record<string, unknown[]> = {};
    let size = 0;
    const sends: Promise<void>[] = [];
    const ship = () => {
      if (size === 0) return;
      sends.push(this.send({ t: "signals", from: this.from, body }));
      body = {};
      size = 0;
    };
    for (const { key, value } of items) {
      const bytes = Buffer.byteLength(JSON.stringify(value)) + 1;
      if (size + bytes > MAX_PAYLOAD) ship();
      (body[key] ??= []).push(value);
      size += bytes;
    }
    ship();
    const results = await Promise.allSettled(sends);
    for (const r of results) if (r.status === "rejected") this.onError(r.reason as Error);
  }

  close(): void {
    clearTimeout(this.timer);
  }
}

/** Applies a relayed body to the leader's controllers (the rollout controller, and the workload loop when given). */
export function applySignals(controller: RolloutController, raw: unknown, workloads?: { relayed(): void }): void {
  const body = raw as SignalBody;
  if ((body.w ?? []).length > 0) workloads?.relayed();
  for (const p of body.p ?? []) void controller.refreshPlan(String(p)).catch(() => undefined);
  for (const [releaseId, nodeId, state, reportedReleaseId, updatedAtMs] of body.a ?? []) {
    controller.applyAck(releaseId, { nodeId, state, reportedReleaseId, updatedAtMs });
  }
  const fresh: { nodeId: string; eventType: string }[] = [];
  const mixed: { nodeId: string; eventType: string }[] = [];
  for (const [nodeId, eventType, allNew] of body.e ?? []) (allNew ? fresh : mixed).push({ nodeId, eventType });
  if (fresh.length > 0) controller.onEvents(fresh, true);
  if (mixed.length > 0) controller.onEvents(mixed, false);
  for (const [nodeId, atMs] of body.s ?? []) controller.onSeen(nodeId, atMs);
}
