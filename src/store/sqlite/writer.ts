/**
 * The SQLite writer thread. It owns the only write connection of the store, applies the
 * schema migrations at start, and commits each ingest batch as one durable transaction.
 * Running writes here keeps the server's event loop free while a commit waits on fsync or
 * on another process's write lock, and lets request decoding overlap with inserts.
 */
import { parentPort, workerData } from "node:worker_threads";
import { sql } from "drizzle-orm";
import { drizzle } from "drizzle-orm/better-sqlite3";
import { migrate } from "drizzle-orm/better-sqlite3/migrator";
import { migrationsFolder } from "../../paths.js";
import type { NewEventRow } from "../event-rows.js";
import { openConnection, type SqliteConnectionOptions } from "./connection.js";
import { classifySqliteError, type SqliteFailure } from "./errors.js";
import { events } from "./schema.js";

/** A message from the store to this thread. */
export interface WriterRequest {
  id: number;
  rows: NewEventRow[];
}

/** This thread's answer: how many rows were new, or the kind of failure. */
export type WriterReply =
  | { id: number; inserted: number }
  | { id: number; failure: SqliteFailure; detail: string }
  | { ready: true }
  | { startFailure: SqliteFailure; detail: string };

const port = parentPort!;
const post = (reply: WriterReply) => port.postMessage(reply);

function start(): void {
  let ingest: (rows: NewEventRow[]) => number;
  try {
    const sqlite = openConnection(workerData as SqliteConnectionOptions, "writer");
    const db = drizzle({ client: sqlite });
    migrate(db, { migrationsFolder: migrationsFolder("sqlite") });
    const insert = db
      .insert(events)
      .values({
        eventId: sql.placeholder("eventId"),
        eventType: sql.placeholder("eventType"),
        nodeId: sql.placeholder("nodeId"),
        tsSeconds: sql.placeholder("tsSeconds"),
        tsNanos: sql.placeholder("tsNanos"),
        lockFingerprint: sql.placeholder("lockFingerprint"),
        releaseId: sql.placeholder("releaseId"),
        payload: sql.placeholder("payload"),
        receivedAtMs: sql.placeholder("receivedAtMs"),
      })
      .onConflictDoNothing()
      .prepare();
    ingest = (rows) =>
      db.transaction(
        () => {
          let inserted = 0;
          for (const row of rows) inserted += insert.run(row).changes;
          return inserted;
        },
        { behavior: "immediate" },
      );
  } catch (err) {
    // The detail goes to the server log only (it may name the file); callers see the kind.
    post({ startFailure: classifySqliteError(err), detail: String((err as Error)?.message ?? err) });
    return;
  }
  port.on("message", (req: WriterRequest) => {
    try {
      post({ id: req.id, inserted: ingest(req.rows) });
    } catch (err) {
      post({ id: req.id, failure: classifySqliteError(err), detail: String((err as Error)?.message ?? err) });
    }
  });
  post({ ready: true });
}

start();
