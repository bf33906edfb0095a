import type { Event } from "../../gen/autonomy/v1/events_pb.js";

/** Filter and page of a stored-event query. */
export interface EventQuery {
  nodeId?: string;
  eventType?: string;
  /** Already bounded by the domain (1..1000). */
  limit: number;
  /** Only events with a sequence number below this one; undefined or 0n for the newest. */
  before?: bigint;
}

/**
 * The store contract: async and dialect-neutral, spoken in proto messages. SQLite and
 * PostgreSQL implement it alike and pass one contract suite (test/store-contract.test.ts).
 * Failures surface as the typed errors of src/domain/errors.ts, never as driver errors.
 */
export interface Store {
  readonly dialect: "sqlite" | "postgres";
  /**
   * Stores events that are valid and unique within the batch, in one transaction, in the
   * order given, skipping ids already stored. Resolves with how many were new, only after
   * the commit is durable.
   */
  ingestEvents(events: readonly Event[]): Promise<number>;
  /** Stored events newest first (by insertion sequence). */
  queryEvents(query: EventQuery): Promise<Event[]>;
  /** Releases connections and workers. */
  close(): Promise<void>;
}
