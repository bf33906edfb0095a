/**
 * Wakes followers when this process stores events. It is a signal, not the truth: a follower
 * also re-reads the store on a short period, so events another replica stored (PostgreSQL)
 * reach it too, and a missed signal only delays an answer.
 */
export class EventFeed {
  private waiters = new Set<() => void>();
  private ended = false;

  /** True once close() was called: waits end at once. */
  get closed(): boolean {
    return this.ended;
  }

  /** Ends every wait (the server is stopping: long polls answer now instead of holding the shutdown). */
  close(): void {
    this.ended = true;
    this.stored();
  }

  /** Called after a batch with new events committed. */
  stored(): void {
    const waiting = this.waiters;
    this.waiters = new Set();
    for (const wake of waiting) wake();
  }

  /** Resolves at the next stored(), after `ms`, or when the signal aborts, whichever is first. */
  next(ms: number, signal?: AbortSignal): Promise<void> {
    if (this.ended) return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.waiters.delete(done);
        signal?.removeEventListener("abort", done);
        resolve();
      };
      const timer = setTimeout(done, ms);
      this.waiters.add(done);
      signal?.addEventListener("abort", done, { once: true });
    });
  }
}
