/**
 * The event page thread: reads pages of the event log on a connection of its own and writes
 * them as JSON text, off the event loop. Reading and writing a page of 100 events is most of
 * a REST event query; here it runs beside the server's event loop instead of on it. Started by
 * EventPageReader (./event-pages.ts) on the first page it is asked for.
 */
import { parentPort, workerData } from "node:worker_threads";
import { drizzle } from "drizzle-orm/better-sqlite3";
import { eventQueryParams, PreparedEventQueries } from "../prepared-queries.js";
import type { EventQuery } from "../store.js";
import { openConnection, type SqliteConnectionOptions } from "./connection.js";
import { classifySqliteError, type SqliteFailure } from "./errors.js";
import { prepareEventQuery } from "./event-query.js";

export interface PageRequest {
  id: number;
  query: EventQuery;
}

export type PageReply =
  | { ready: true }
  | { startFailure: SqliteFailure; detail: string }
  | { id: number; count: number; text: string }
  | { id: number; failure: SqliteFailure; detail: string };

/**
 * The thread's page cache, in KiB (the store's reader keeps 32 MiB). Pages of the event log are
 * scattered through the table and come from the operating system's file cache either way; a
 * larger cache measured no faster here and only held more memory.
 */
const PAGE_CACHE_KIB = 8192;

const port = parentPort!;
const post = (reply: PageReply) => port.postMessage(reply);
const detailOf = (err: unknown) => String((err as Error)?.message ?? err);

function start(): void {
  let queries: PreparedEventQueries<ReturnType<typeof prepareEventQuery>>;
  try {
    const reader = openConnection(workerData as SqliteConnectionOptions, "reader");
    reader.pragma(`cache_size = -${PAGE_CACHE_KIB}`);
    const db = drizzle({ client: reader });
    queries = new PreparedEventQueries((shape) => prepareEventQuery(db, reader, shape));
  } catch (err) {
    post({ startFailure: classifySqliteError(err), detail: detailOf(err) });
    return;
  }
  port.on("message", ({ id, query }: PageRequest) => {
    try {
      const page = queries.get(query).page(eventQueryParams(query));
      post({ id, count: page.count, text: page.text });
    } catch (err) {
      post({ id, failure: classifySqliteError(err), detail: detailOf(err) });
    }
  });
  post({ ready: true });
}

start();
