/**
 * Who runs the leader-only work (rollout progression, retention, anything periodic). One
 * interface, two implementations: StandaloneLeadership (SQLite: one process, always its own
 * leader, nothing to fence) and PgLeadership (./election.ts: an epoch lease in PostgreSQL).
 *
 * A leader-only job subscribes with onChange: it starts when the replica gains leadership and
 * stops when it loses it; each of its writes carries fence() and commits only while that epoch
 * is current (checked by the store in the write's own transaction).
 */
import { FencedError } from "../domain/errors.js";

export interface Leadership {
  readonly mode: "standalone" | "postgres";
  /** Whether this replica leads now (it may act as leader). */
  isLeader(): boolean;
  /** The epoch this replica holds; undefined when it does not lead (and always in standalone mode). */
  epoch(): number | undefined;
  /**
   * The fencing token of a leader-only write: the epoch held, undefined when there is nothing to
   * fence (standalone). FencedError when this replica does not lead.
   */
  fence(): number | undefined;
  /**
   * Calls fn on every change (true: gained, with the epoch; false: lost), and once now with the
   * current state. A step-down waits for the listeners' promises. Returns the unsubscribe.
   */
  onChange(fn: (leading: boolean, epoch: number | undefined) => void | Promise<void>): () => void;
}

/** SQLite: a single process, always the leader, from start to stop. */
export class StandaloneLeadership implements Leadership {
  readonly mode = "standalone" as const;
  isLeader(): boolean {
    return true;
  }
  epoch(): number | undefined {
    return undefined;
  }
  fence(): number | undefined {
    return undefined;
  }
  onChange(fn: (leading: boolean, epoch: number | undefined) => void | Promise<void>): () => void {
    void fn(true, undefined);
    return () => {};
  }
}

/** The FencedError of a replica that does not lead. */
export function notLeader(): FencedError {
  return new FencedError("this replica is not the leader: leader-only work runs on the leader");
}
