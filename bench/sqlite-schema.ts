import { readdirSync, readFileSync } from "node:fs";
import path from "node:path";
import type Database from "better-sqlite3";
import { migrationsFolder } from "../src/paths.js";

/** Applies the server's own SQLite migration SQL, so every bench database has the same schema. */
export function applySchema(db: Database.Database): void {
  const folder = migrationsFolder("sqlite");
  for (const file of readdirSync(folder).filter((f) => f.endsWith(".sql")).sort()) {
    const sql = readFileSync(path.join(folder, file), "utf8");
    for (const statement of sql.split("--> statement-breakpoint")) db.exec(statement);
  }
}

/** The server's durability settings: WAL and synchronous=FULL. */
export function durablePragmas(db: Database.Database): void {
  db.pragma("journal_mode = WAL");
  db.pragma("synchronous = FULL");
  db.pragma("busy_timeout = 5000");
}

export const INSERT_SQL =
  "INSERT OR IGNORE INTO events (event_id, event_type, node_id, ts_seconds, ts_nanos, lock_fingerprint, release_id, payload, received_at_ms) " +
  "VALUES (@eventId, @eventType, @nodeId, @tsSeconds, @tsNanos, @lockFingerprint, @releaseId, @payload, @receivedAtMs)";
