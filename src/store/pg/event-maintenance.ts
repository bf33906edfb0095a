import { and, asc, eq, getTableColumns, gt, lte, sql } from "drizzle-orm";
import type { NodePgDatabase } from "drizzle-orm/node-postgres";
import type { Event } from "../../../gen/autonomy/v1/events_pb.js";
import { rowToEvent } from "../event-rows.js";
import type { EventDeletion, EventDeletionResult, EventFollowQuery, StoreStatistics } from "../store.js";
import { events } from "./schema.js";

/**
 * Replicas commit ingest transactions concurrently, so a sequence number can become visible
 * after a higher one. A follower is answered only events at least this old (by the answering
 * replica's clock): a transaction that drew a lower seq has committed by then, and the cursor
 * never passes over it.
 */
export const PG_FOLLOW_SETTLE_MS = 2_000;

/** PostgreSQL settings worth reading when diagnosing a control plane. */
const SETTINGS = [
  "server_version",
  "max_connections",
  "shared_buffers",
  "work_mem",
  "synchronous_commit",
  "synchronous_standby_names",
  "fsync",
  "full_page_writes",
  "wal_level",
  "max_wal_size",
  "checkpoint_timeout",
  "statement_timeout",
  "lock_timeout",
  "idle_in_transaction_session_timeout",
  "default_transaction_isolation",
  "autovacuum",
  "track_commit_timestamp",
];

export const pgEventMaintenance = {
  async eventsAfter(db: NodePgDatabase, q: EventFollowQuery, nowMs: number): Promise<Event[]> {
    const { receivedAtMs: _, ...columns } = getTableColumns(events);
    const where = [gt(events.seq, Number(q.afterSeq)), lte(events.receivedAtMs, nowMs - PG_FOLLOW_SETTLE_MS)];
    if (q.nodeId) where.push(eq(events.nodeId, q.nodeId));
    if (q.eventType) where.push(eq(events.eventType, q.eventType));
    const rows = await db.select(columns).from(events).where(and(...where)).orderBy(asc(events.seq)).limit(q.limit);
    return rows.map(rowToEvent);
  },

  async eventAtOrAfter(db: NodePgDatabase, seq: bigint): Promise<{ seq: bigint; receivedAtMs: number } | undefined> {
    const result = await db.execute<{ seq: string; received_at_ms: string }>(
      sql`SELECT seq, received_at_ms FROM events WHERE seq >= ${Number(seq)} ORDER BY seq LIMIT 1`,
    );
    const row = result.rows[0];
    return row && { seq: BigInt(row.seq), receivedAtMs: Number(row.received_at_ms) };
  },

  /** One batch in its own transaction: a primary-key range scan, so its cost is its own rows. */
  async deleteEvents(db: NodePgDatabase, d: EventDeletion): Promise<EventDeletionResult> {
    const started = performance.now();
    const result = await db.execute<{ seq: string; received_at_ms: string }>(sql`
      DELETE FROM events WHERE seq IN (
        SELECT seq FROM events
        WHERE seq > ${Number(d.afterSeq)} AND seq <= ${Number(d.throughSeq)} AND received_at_ms < ${d.receivedBeforeMs}
        ORDER BY seq LIMIT ${d.limit}
      ) RETURNING seq, received_at_ms`);
    const elapsedMs = performance.now() - started;
    const done = result.rows.length < d.limit;
    if (result.rows.length === 0) return { deleted: 0, elapsedMs, done };
    let firstSeq = Infinity;
    let lastSeq = -Infinity;
    let oldest = Infinity;
    let newest = -Infinity;
    for (const r of result.rows) {
      const seq = Number(r.seq);
      const at = Number(r.received_at_ms);
      firstSeq = Math.min(firstSeq, seq);
      lastSeq = Math.max(lastSeq, seq);
      oldest = Math.min(oldest, at);
      newest = Math.max(newest, at);
    }
    return { deleted: result.rows.length, firstSeq: BigInt(firstSeq), lastSeq: BigInt(lastSeq), oldestReceivedMs: oldest, newestReceivedMs: newest, elapsedMs, done };
  },

  async statistics(db: NodePgDatabase): Promise<StoreStatistics> {
    const tables = await db.execute<{ name: string; bytes: string }>(sql`
      SELECT c.relname AS name, pg_total_relation_size(c.oid) AS bytes
      FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE c.relkind = 'r' AND n.nspname = current_schema() ORDER BY c.relname`);
    const rowCounts: Record<string, number> = {};
    const sizes: Record<string, number> = {};
    for (const t of tables.rows) {
      const counted = await db.execute<{ n: string }>(sql`SELECT count(*) AS n FROM ${sql.identifier(t.name)}`);
      rowCounts[t.name] = Number(counted.rows[0].n);
      sizes[t.name] = Number(t.bytes);
    }
    const database = await db.execute<{ bytes: string }>(sql`SELECT pg_database_size(current_database()) AS bytes`);
    sizes.database = Number(database.rows[0].bytes);
    // pg_ls_waldir needs pg_monitor (or superuser); without it the WAL size is left out.
    try {
      const wal = await db.execute<{ bytes: string | null }>(sql`SELECT sum(size) AS bytes FROM pg_ls_waldir()`);
      sizes.wal = Number(wal.rows[0].bytes ?? 0);
    } catch {
      // not permitted
    }
    const found = await db.execute<{ name: string; setting: string; unit: string | null }>(
      sql`SELECT name, setting, unit FROM pg_settings WHERE name IN (${sql.join(SETTINGS.map((s) => sql`${s}`), sql`, `)}) ORDER BY name`,
    );
    const settings: Record<string, string> = {};
    for (const s of found.rows) settings[s.name] = s.unit ? `${s.setting} (${s.unit})` : s.setting;
    return { dialect: "postgres", rowCounts, sizes, settings };
  },
};
