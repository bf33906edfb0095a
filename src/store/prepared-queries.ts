import { and, eq, lt, sql, type Column, type SQL } from "drizzle-orm";
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

/** The WHERE clause of a filter shape, with placeholders named as in eventQueryParams. */
export function eventQueryWhere(columns: { nodeId: Column; eventType: Column; seq: Column }, shape: EventQueryShape): SQL | undefined {
  const where: SQL[] = [];
  if (shape.nodeId) where.push(eq(columns.nodeId, sql.placeholder("nodeId")));
  if (shape.eventType) where.push(eq(columns.eventType, sql.placeholder("eventType")));
  if (shape.before) where.push(lt(columns.seq, sql.placeholder("before")));
  return and(...where);
}

/** The placeholder values of a query. */
export function eventQueryParams(q: EventQuery): Record<string, unknown> {
  return { nodeId: q.nodeId, eventType: q.eventType, before: Number(q.before ?? 0), limit: q.limit };
}

/**
 * The placeholder names of a drizzle query's parameters, in binding order. A placeholder comes
 * either bare (LIMIT) or wrapped in a Param (column comparisons, inserted values).
 */
export function placeholderNames(params: readonly unknown[]): string[] {
  return params.map((p) => {
    const name = (p as { name?: string }).name ?? (p as { value?: { name?: string } }).value?.name;
    if (!name) throw new Error("query parameter without a placeholder name");
    return name;
  });
}
