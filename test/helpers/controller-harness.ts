/**
 * A rollout controller on the in-memory store with an injected clock, for unit tests. Nothing
 * waits on real time: tests move the clock and call resync(), the level-triggered pass.
 */
import { Writable } from "node:stream";
import { expect } from "vitest";
import { createLogger } from "../../src/observability/logger.js";
import { createMetrics } from "../../src/observability/metrics.js";
import { RolloutController, type MovesCommitted } from "../../src/rollouts/controller.js";
import { SightingBuffer } from "../../src/store/sightings.js";
import { FakeRolloutStore } from "./controller-store.js";

export const STALE_AFTER_MS = 60_000;
export const T0 = 10_000_000;

export class Harness {
  clock = T0;
  controller!: RolloutController;
  sightings!: SightingBuffer;
  readonly moves: MovesCommitted[] = [];

  constructor(
    readonly fake = new FakeRolloutStore(),
    nodes = 0,
  ) {
    for (let i = 1; i <= nodes; i++) fake.addNode(`n${i}`, { lastSeenMs: T0 });
    this.boot();
  }

  /** A new controller on the same store, as after a restart of the server. */
  boot(): void {
    this.sightings = new SightingBuffer({ store: this.fake.asStore(), flushIntervalMs: 3_600_000, onFlushError: () => {} });
    this.controller = new RolloutController({
      store: this.fake.asStore(),
      sightings: this.sightings,
      metrics: createMetrics(),
      logger: createLogger({ format: "json", level: "error", destination: new Writable({ write: (_chunk, _enc, done) => done() }) }),
      staleAfterMs: STALE_AFTER_MS,
      now: () => this.clock,
      resyncMs: 0,
      retryMs: 0,
    });
    this.controller.subscribeMoves((m) => this.moves.push(m));
  }

  async restart(): Promise<void> {
    await this.controller.stop();
    await this.sightings.close();
    this.boot();
    await this.controller.start();
  }

  /** An ack stored and signalled, as the ack path does; `lost` stores it without telling the controller. */
  ack(nodeId: string, state: string, opts: { releaseId?: string; lost?: boolean } = {}): void {
    const ack = this.fake.putAck(opts.releaseId ?? "r", nodeId, state, this.clock);
    if (!opts.lost) this.controller.onAck(ack);
  }

  /** Every node of a stage acks. */
  ackStage(stageId: string, state = "healthy", planId = "p"): void {
    for (const nodeId of this.fake.movesOf(planId, stageId)) this.ack(nodeId, state);
  }

  /** Waits until the plan is idle, then runs a resync pass and checks the counts against a recount. */
  async settle(planId = "p"): Promise<{ drifted: string[] }> {
    await this.controller.settled(planId);
    const pass = await this.controller.resync();
    await this.controller.settled(planId);
    // A pass that met a failure leaves the plan to be read again (uncounted): the next pass heals it.
    for (let i = 0; i < 3 && !this.counted(planId); i++) {
      await this.controller.resync();
      await this.controller.settled(planId);
    }
    await this.expectCountsMatchStore(planId);
    return pass;
  }

  /** Whether the controller holds counts for the plan's open stage (or has none to hold). */
  private counted(planId: string): boolean {
    const state = this.controller.trackedState(planId);
    if (!state || state.currentStage < 0 || state.stages[state.currentStage].phase !== "open") return true;
    return this.controller.liveTally(planId, state.currentStage) !== undefined;
  }

  /** The in-memory counts of the open stage equal a recount from the store. */
  async expectCountsMatchStore(planId = "p"): Promise<void> {
    const state = this.controller.trackedState(planId);
    if (!state || state.currentStage < 0 || state.stages[state.currentStage].phase !== "open") return;
    expect(this.controller.liveTally(planId, state.currentStage)).toEqual(await this.fake.unobserved(() => this.controller.recount(planId)));
  }

  /** The stored status: plan phase and each stage's phase. */
  stored(planId = "p"): { phase: string; stages: string[]; details: string[] } {
    const row = this.fake.statuses.get(planId)!;
    const stages = JSON.parse(row.stages) as { phase: string; detail: string }[];
    return { phase: row.phase, stages: stages.map((s) => s.phase), details: stages.map((s) => s.detail) };
  }

  async close(): Promise<void> {
    await this.controller.stop();
    await this.sightings.close();
  }
}
