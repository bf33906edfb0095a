import { statSync } from "node:fs";
import { and, asc, eq, getTableColumns, gt } from "drizzle-orm";
import type { BetterSQLite3Database } from "drizzle-orm/better-sqlite3";
import type Database from "better-sqlite3";
import type { Event } from "../../../gen/autonomy/v1/events_pb.js";
import { rowToEvent } from "../event-rows.js";
import type { EventDeletion, EventDeletionResult, EventFollowQuery, StoreStatistics } from "../store.js";
import { events } from "./schema.js";

/** A retention batch, as the writer thread receives it (bigints as numbers: they cross a thread). */
export interface DeleteEventsWrite {
  op: "deleteEvents";
  afterSeq: number;
  throughSeq: number;
  receivedBeforeMs: number;
  limit: number;
  budgetMs?: number;
}

/** What the writer answers for a retention batch (sequence numbers as numbers). */
export interface DeleteEventsResult {
  deleted: number;
  firstSeq?: number;
  lastSeq?: number;
  oldestReceivedMs?: number;
  newestReceivedMs?: number;
  elapsedMs: number;
  done: boolean;
}

export const toDeleteEventsWrite = (d: EventDeletion): DeleteEventsWrite => ({
  op: "deleteEvents",
  afterSeq: Number(d.afterSeq),
  throughSeq: Number(d.throughSeq),
  receivedBeforeMs: d.receivedBeforeMs,
  limit: d.limit,
  budgetMs: d.budgetMs,
});

export const fromDeleteEventsResult = (r: DeleteEventsResult): EventDeletionResult => ({
  ...r,
  firstSeq: r.firstSeq === undefined ? undefined : BigInt(r.firstSeq),
  lastSeq: r.lastSeq === undefined ? undefined : BigInt(r.lastSeq),
});

/**
 * Retention on the writer connection: statements delete the oldest events of a sequence range
 * (a range scan of the primary key, so a batch costs its own rows, however many events stay),
 * a step of the batch at a time, until the batch is deleted or its time budget is spent. The
 * time is measured here, where the writer is held.
 */
export function prepareEventDeletes(sqlite: Database.Database) {
  const del = sqlite.prepare(
    `DELETE FROM events WHERE seq IN (
       SELECT seq FROM events WHERE seq > ? AND seq <= ? AND received_at_ms < ? ORDER BY seq LIMIT ?
     ) RETURNING seq, received_at_ms`,
  );
  return {
    deleteEvents(w: DeleteEventsWrite): DeleteEventsResult {
      const started = performance.now();
      const step = Math.max(10, Math.ceil(w.limit / 8));
      const r: DeleteEventsResult = { deleted: 0, elapsedMs: 0, done: false };
      let after = w.afterSeq;
      while (r.deleted < w.limit) {
        const asked = Math.min(step, w.limit - r.deleted);
        const rows = del.raw(true).all(after, w.throughSeq, w.receivedBeforeMs, asked) as [number, number][];
        for (const [seq, at] of rows) {
          r.firstSeq = Math.min(r.firstSeq ?? Infinity, seq);
          r.lastSeq = Math.max(r.lastSeq ?? -Infinity, seq);
          r.oldestReceivedMs = Math.min(r.oldestReceivedMs ?? Infinity, at);
          r.newestReceivedMs = Math.max(r.newestReceivedMs ?? -Infinity, at);
        }
        r.deleted += rows.length;
        if (rows.length < asked) {
          r.done = true;
          break;
        }
        after = r.lastSeq!;
        if (w.budgetMs !== undefined && performance.now() - started >= w.budgetMs) break;
      }
      r.elapsedMs = performance.now() - started;
      return r;
    },
  };
}

/** Follow and retention reads, and the statistics of a support bundle, on the reader connection. */
export function prepareEventMaintenanceReads(db: BetterSQLite3Database, reader: Database.Database, file: string) {
  const { receivedAtMs: _, ...columns } = getTableColumns(events);
  const atOrAfter = reader.prepare("SELECT seq, received_at_ms FROM events WHERE seq >= ? ORDER BY seq LIMIT 1").raw(true);
  const tables = reader.prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name").pluck();
  return {
    // One writer commits in sequence order: what the reader sees after a seq is final.
    eventsAfter(q: EventFollowQuery): Event[] {
      const where = [gt(events.seq, Number(q.afterSeq))];
      if (q.nodeId) where.push(eq(events.nodeId, q.nodeId));
      if (q.eventType) where.push(eq(events.eventType, q.eventType));
      return db.select(columns).from(events).where(and(...where)).orderBy(asc(events.seq)).limit(q.limit).all().map(rowToEvent);
    },
    eventAtOrAfter(seq: bigint): { seq: bigint; receivedAtMs: number } | undefined {
      const row = atOrAfter.get(Number(seq)) as [number, number] | undefined;
      return row && { seq: BigInt(row[0]), receivedAtMs: row[1] };
    },
    statistics(): StoreStatistics {
      const rowCounts: Record<string, number> = {};
      for (const name of tables.all() as string[]) {
        rowCounts[name] = (reader.prepare(`SELECT count(*) FROM "${name.replaceAll('"', '""')}"`).pluck().get() as number) ?? 0;
      }
      const sizes: Record<string, number> = {};
      for (const [key, f] of [["database", file], ["wal", `${file}-wal`], ["shm", `${file}-shm`]]) {
        try {
          sizes[key] = statSync(f).size;
        } catch {
          sizes[key] = 0;
        }
      }
      const settings: Record<string, string> = { sqlite_version: String(reader.prepare("SELECT sqlite_version()").pluck().get()) };
      for (const pragma of ["journal_mode", "page_size", "page_count", "freelist_count", "auto_vacuum", "wal_autocheckpoint"]) {
        settings[pragma] = String(reader.pragma(pragma, { simple: true }));
      }
      return { dialect: "sqlite", rowCounts, sizes, settings };
    },
  };
}
