import { ControllerStoppedError } from "./errors.js";

/**
 * A plan's queue: every step and action of one plan runs alone, in the order queued, so two
 * decisions about a plan never interleave. Once closed it refuses new work; what is queued
 * still runs (each step checks whether the runtime stopped) and can be waited for.
 */
export class PlanQueue {
  private tail: Promise<unknown> = Promise.resolve();
  private queued = 0;
  private closed = false;

  /** Runs fn after everything queued before it; ControllerStoppedError once closed. */
  run<T>(fn: () => Promise<T>): Promise<T> {
    if (this.closed) return Promise.reject(new ControllerStoppedError());
    this.queued++;
    const result = this.tail.then(fn);
    this.tail = result.then(
      () => void this.queued--,
      () => void this.queued--,
    );
    return result;
  }

  /** Whether a step or action is queued or running. */
  busy(): boolean {
    return this.queued > 0;
  }

  /** Resolves when nothing is queued. */
  async settled(): Promise<void> {
    while (this.queued > 0) await this.tail;
  }

  /** Refuses new work and waits for what is queued. */
  async close(): Promise<void> {
    this.closed = true;
    await this.settled();
  }
}
