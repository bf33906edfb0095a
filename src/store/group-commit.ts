/** One item's outcome in a group: its result, or the error that refused it alone. */
export type Outcome<O> = { ok: true; value: O } | { ok: false; error: unknown };

/**
 * Group commit for a store without a writer thread of its own (PostgreSQL): items submitted
 * while a group is being committed wait and go together in the next one, so an ack storm costs
 * one transaction per group instead of one per ack. `commit` writes a group in one transaction
 * and settles each item only after that transaction committed; an item refused on its own
 * (an unknown release) fails alone. When the group's transaction fails as a whole, each item
 * is retried by `single` in its own transaction, so no item fails for another's sake.
 */
export class GroupCommit<I, O> {
  private queue: { item: I; resolve: (o: O) => void; reject: (e: unknown) => void }[] = [];
  private running = false;

  constructor(
    private readonly commit: (items: readonly I[]) => Promise<Outcome<O>[]>,
    private readonly single: (item: I) => Promise<O>,
    private readonly maxGroup = 500,
  ) {}

  submit(item: I): Promise<O> {
    return new Promise((resolve, reject) => {
      this.queue.push({ item, resolve, reject });
      // Items of the same tick join the first group.
      if (!this.running && this.queue.length === 1) setImmediate(() => void this.drain());
    });
  }

  private async drain(): Promise<void> {
    if (this.running) return;
    this.running = true;
    try {
      while (this.queue.length > 0) {
        const group = this.queue.splice(0, this.maxGroup);
        let outcomes: Outcome<O>[] | undefined;
        try {
          outcomes = await this.commit(group.map((g) => g.item));
        } catch {
          outcomes = undefined;
        }
        if (outcomes) {
          group.forEach((g, i) => {
            const o = outcomes![i];
            if (o.ok) g.resolve(o.value);
            else g.reject(o.error);
          });
        } else {
          await Promise.all(group.map((g) => this.single(g.item).then(g.resolve, g.reject)));
        }
      }
    } finally {
      this.running = false;
    }
  }
}
