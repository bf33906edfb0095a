/**
 * The SQLite reader thread of the event queries, the store's hottest read: it runs the query
 * on a connection of its own and builds the messages, so the server's event loop spends a
 * query's time on HTTP/2 and encoding only, and the two run on two cores. WAL lets it read
 * while the writer thread commits.
 */
import { parentPort, workerData } from "node:worker_threads";
import { desc, getTableColumns, sql } from "drizzle-orm";
import { drizzle } from "drizzle-orm/better-sqlite3";
import type Database from "better-sqlite3";
import type { Event } from "../../../gen/autonomy/v1/events_pb.js";
import { rowToEvent } from "../event-rows.js";
import { eventQueryParams, eventQueryWhere, placeholderNames, PreparedEventQueries, type EventQueryShape } from "../prepared-queries.js";
import type { EventQuery } from "../store.js";
import { openConnection, type SqliteConnectionOptions } from "./connection.js";
import { classifySqliteError, type SqliteFailure } from "./errors.js";
import { events } from "./schema.js";

export type ReaderRequest = { id: number; query: EventQuery } | { close: true };
export type ReaderReply =
  | { id: number; events: Event[] }
  | { id: number; failure: SqliteFailure; detail: string }
  | { ready: true }
  | { startFailure: SqliteFailure; detail: string };

/**
 * The query of one filter shape, prepared once. Drizzle builds the SQL; the statement returns
 * rows as arrays, mapped without drizzle's per-row decoding.
 */
export function prepareEventQuery(reader: Database.Database, shape: EventQueryShape) {
  const db = drizzle({ client: reader });
  const { receivedAtMs: _, ...columns } = getTableColumns(events);
  const query = db
    .select(columns)
    .from(events)
    .where(eventQueryWhere(events, shape))
    .orderBy(desc(events.seq))
    .limit(sql.placeholder("limit"))
    .toSQL();
  const paramNames = placeholderNames(query.params);
  const keys = Object.keys(columns) as (keyof typeof columns)[];
  const statement = reader.prepare(query.sql).raw(true);
  return (params: Record<string, unknown>): Event[] =>
    (statement.all(paramNames.map((name) => params[name])) as unknown[][]).map((values) => {
      const row: Record<string, unknown> = {};
      for (let i = 0; i < keys.length; i++) row[keys[i]] = values[i];
      return rowToEvent(row as unknown as Parameters<typeof rowToEvent>[0]);
    });
}

function start(): void {
  const port = parentPort!;
  const post = (reply: ReaderReply) => port.postMessage(reply);
  let reader: Database.Database;
  try {
    reader = openConnection(workerData as SqliteConnectionOptions, "reader");
  } catch (err) {
    post({ startFailure: classifySqliteError(err), detail: String((err as Error)?.message ?? err) });
    return;
  }
  const queries = new PreparedEventQueries((shape) => prepareEventQuery(reader, shape));
  port.on("message", (req: ReaderRequest) => {
    if ("close" in req) {
      reader.close();
      port.close();
      return;
    }
    try {
      post({ id: req.id, events: queries.get(req.query)(eventQueryParams(req.query)) });
    } catch (err) {
      post({ id: req.id, failure: classifySqliteError(err), detail: String((err as Error)?.message ?? err) });
    }
  });
  post({ ready: true });
}

start();
