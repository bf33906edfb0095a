import type { EventQuery } from "./store.js";

/** Which optional filters a query uses; each combination is one prepared statement. */
export interface EventQueryShape {
  nodeId: boolean;
  eventType: boolean;
  before: boolean;
}

/**
 * Prepared event queries, one per filter shape, built on first use. Building and preparing
 * a statement per request costs more than running it.
 */
export class PreparedEventQueries<Q> {
  private readonly cache = new Map<number, Q>();

  constructor(private readonly build: (shape: EventQueryShape) => Q) {}

  get(q: EventQuery): Q {
    const shape = { nodeId: !!q.nodeId, eventType: !!q.eventType, before: !!q.before };
    const key = (shape.nodeId ? 1 : 0) | (shape.eventType ? 2 : 0) | (shape.before ? 4 : 0);
    let query = this.cache.get(key);
    if (!query) {
      query = this.build(shape);
      this.cache.set(key, query);
    }
    return query;
  }
}
