import { getTableConfig, PgTable, type PgColumn } from "drizzle-orm/pg-core";
import { is } from "drizzle-orm";
import pg from "pg";
import * as pgSchema from "../pg/schema.js";
import { PostgresStore } from "../pg/store.js";
import { quote, type SourceValue } from "./source.js";

/** A column of a PostgreSQL table as the copy writes it. */
export interface TargetColumn {
  name: string;
  /** The array type its values are sent as (unnest). */
  arrayType: "bigint[]" | "integer[]" | "text[]" | "boolean[]";
  /** A bigserial: its sequence is moved past the copied ids. */
  serial: boolean;
  notNull: boolean;
  /** Part of the table's primary key. */
  primary: boolean;
}

const ARRAY_TYPES: Record<string, TargetColumn["arrayType"]> = {
  bigserial: "bigint[]",
  bigint: "bigint[]",
  integer: "integer[]",
  text: "text[]",
  boolean: "boolean[]",
};

/** The PostgreSQL tables of the schema (src/store/pg/schema.ts), by table name, columns in order. */
export function targetTables(): Map<string, TargetColumn[]> {
  const tables = new Map<string, TargetColumn[]>();
  for (const value of Object.values(pgSchema)) {
    if (!is(value, PgTable)) continue;
    const config = getTableConfig(value);
    const composite = new Set(config.primaryKeys.flatMap((k) => k.columns.map((c) => c.name)));
    tables.set(
      config.name,
      config.columns.map((c: PgColumn) => {
        const type = c.getSQLType();
        const arrayType = ARRAY_TYPES[type];
        if (!arrayType) throw new Error(`${config.name}.${c.name}: the copy has no rule for the PostgreSQL type ${type}`);
        return { name: c.name, arrayType, serial: type === "bigserial", notNull: c.notNull, primary: c.primary || composite.has(c.name) };
      }),
    );
  }
  return tables;
}

/** A cutover record (or the record of a copy under way) found in the target. */
export interface CutoverRow {
  seq: number;
  source: string;
  startedAtMs: number;
  cutoverAtMs: number | null;
  rowCounts: Record<string, number>;
  version: string;
}

/** PostgreSQL could not be reached or refused the connection; the message says why. */
export class TargetUnreachableError extends Error {}

/** The URL without its password, for messages. */
export function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = "***";
    return u.toString();
  } catch {
    return "(not a URL)";
  }
}

/** The PostgreSQL side of a copy: one connection, statements in order. */
export class PgTarget {
  private constructor(
    readonly url: string,
    private readonly client: pg.Client,
  ) {}

  static async connect(url: string): Promise<PgTarget> {
    const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 10_000 });
    // A connection lost while idle must not crash the process; the next query reports it.
    client.on("error", () => {});
    try {
      await client.connect();
    } catch (err) {
      await client.end().catch(() => {});
      const e = err as { code?: string; message?: string };
      throw new TargetUnreachableError(`cannot connect to PostgreSQL at ${redactUrl(url)} (--postgres-url): ${e.code ?? ""}${e.code ? " " : ""}${e.message ?? String(err)}`.trim());
    }
    return new PgTarget(url, client);
  }

  /** Applies the schema migrations (idempotent: the ones already applied are skipped). */
  async applySchema(): Promise<void> {
    const store = await PostgresStore.open({ url: this.url, poolSize: 1 });
    await store.close();
  }

  async tableExists(table: string): Promise<boolean> {
    const r = await this.client.query<{ t: string | null }>("SELECT to_regclass($1) AS t", [`public.${quote(table)}`]);
    return r.rows[0].t !== null;
  }

  async count(table: string, where = "TRUE"): Promise<number> {
    const r = await this.client.query<{ n: string }>(`SELECT count(*) AS n FROM ${quote(table)} WHERE ${where}`);
    return Number(r.rows[0].n);
  }

  /** The largest value of an integer column (0 for an empty table). */
  async max(table: string, column: string): Promise<bigint> {
    const r = await this.client.query<{ m: string | null }>(`SELECT max(${quote(column)})::text AS m FROM ${quote(table)}`);
    return BigInt(r.rows[0].m ?? "0");
  }

  /** The cutover records, oldest first (none when the table is not there yet). */
  async cutovers(): Promise<CutoverRow[]> {
    if (!(await this.tableExists("ha_cutover"))) return [];
    const r = await this.client.query<{ seq: string; source: string; started_at_ms: string; cutover_at_ms: string | null; row_counts: string; version: string }>(
      "SELECT seq, source, started_at_ms, cutover_at_ms, row_counts, version FROM ha_cutover ORDER BY seq",
    );
    return r.rows.map((row) => ({
      seq: Number(row.seq),
      source: row.source,
      startedAtMs: Number(row.started_at_ms),
      cutoverAtMs: row.cutover_at_ms === null ? null : Number(row.cutover_at_ms),
      rowCounts: parseCounts(row.row_counts),
      version: row.version,
    }));
  }

  async startCutover(source: string, startedAtMs: number, version: string): Promise<number> {
    const r = await this.client.query<{ seq: string }>(
      "INSERT INTO ha_cutover (source, started_at_ms, row_counts, version) VALUES ($1, $2, '{}', $3) RETURNING seq",
      [source, startedAtMs, version],
    );
    return Number(r.rows[0].seq);
  }

  /**
   * Writes the HACutoverAt record, durably: synchronous_commit is on again for it, so every
   * earlier commit of the copy (made with it off) is flushed with it.
   */
  async finishCutover(seq: number, atMs: number, counts: Record<string, number>): Promise<void> {
    await this.client.query("SET synchronous_commit = on");
    await this.client.query("UPDATE ha_cutover SET cutover_at_ms = $2, row_counts = $3 WHERE seq = $1", [seq, atMs, JSON.stringify(counts)]);
  }

  /**
   * The copy's commits need not wait for the disk: one lost in a crash is copied again by the
   * next run (it resumes from what is there), and the final record is written durably.
   */
  async relaxDurability(): Promise<void> {
    await this.client.query("SET synchronous_commit = off");
  }

  /** Empties tables (--force), in one statement; the sequences restart. */
  async truncate(tables: readonly string[]): Promise<void> {
    if (tables.length > 0) await this.client.query(`TRUNCATE ${tables.map(quote).join(", ")} RESTART IDENTITY`);
  }

  /**
   * Writes rows (values in `columns` order, after `offset` leading values) in one statement.
   * `mode` "keep": a row already there (any unique key) is left as it is (rows that never change
   * once written: events, releases, plans, moves, audit records); "update": a row already there
   * under the same primary key takes the values sent (rows that change: nodes, acks, status, RBAC),
   * so a run resumed after the source changed copies the changes. Returns how many rows it wrote.
   */
  async insert(table: string, columns: readonly TargetColumn[], rows: readonly SourceValue[][], offset: number, mode: "keep" | "update"): Promise<number> {
    const arrays = columns.map((c, i) => rows.map((row) => toPg(table, c, row[i + offset], row[0])));
    const key = columns.filter((c) => c.primary).map((c) => quote(c.name));
    const rest = columns.filter((c) => !c.primary).map((c) => `${quote(c.name)} = excluded.${quote(c.name)}`);
    const conflict = mode === "update" && key.length > 0 && rest.length > 0 ? `ON CONFLICT (${key.join(", ")}) DO UPDATE SET ${rest.join(", ")}` : "ON CONFLICT DO NOTHING";
    const sql =
      `INSERT INTO ${quote(table)} (${columns.map((c) => quote(c.name)).join(", ")}) ` +
      `SELECT * FROM unnest(${columns.map((c, i) => `$${i + 1}::${c.arrayType}`).join(", ")}) ${conflict}`;
    const r = await this.client.query(sql, arrays);
    return r.rowCount ?? 0;
  }

  /** Moves a serial column's sequence so that the next id is above `atLeast` (and above every stored one). */
  async advanceSequence(table: string, column: string, atLeast: bigint): Promise<void> {
    const stored = await this.max(table, column);
    const value = stored > atLeast ? stored : atLeast;
    await this.client.query("SELECT setval(pg_get_serial_sequence($1, $2), $3, $4)", [
      quote(table),
      column,
      value > 0n ? value.toString() : "1",
      value > 0n,
    ]);
  }

  /** Rows of a table ordered by `orderBy`, values as text (for comparisons with the source). */
  async rows(table: string, columns: readonly string[], where = "TRUE"): Promise<(string | null)[][]> {
    const r = await this.client.query({
      text: `SELECT ${columns.map((c) => `${quote(c)}::text`).join(", ")} FROM ${quote(table)} WHERE ${where}`,
      rowMode: "array",
    });
    return r.rows as (string | null)[][];
  }

  /** Audit records of seq > after, ascending, at most `limit`. */
  async auditPage(columns: readonly { key: string; name: string; bigint: boolean }[], after: number, limit: number): Promise<Record<string, unknown>[]> {
    const r = await this.client.query({
      text: `SELECT ${columns.map((c) => quote(c.name)).join(", ")} FROM audit_records WHERE seq > $1 ORDER BY seq LIMIT $2`,
      values: [after, limit],
      rowMode: "array",
    });
    return (r.rows as unknown[][]).map((row) => Object.fromEntries(columns.map((c, i) => [c.key, c.bigint ? Number(row[i]) : row[i]])));
  }

  /** The fleet totals as the nodes table says they are (the rule of the 0007 migration). */
  async recomputedFleetTotals(): Promise<(string | null)[][]> {
    const r = await this.client.query({
      text:
        "SELECT channel, drained::text, (desired_release_id IS NOT NULL AND desired_release_id <> coalesce(reported_release_id, ''))::text, " +
        "(last_seen_ms IS NOT NULL)::text, count(*)::text FROM nodes GROUP BY 1, 2, 3, 4",
      rowMode: "array",
    });
    return r.rows as (string | null)[][];
  }

  async close(): Promise<void> {
    await this.client.end().catch(() => {});
  }
}

function parseCounts(text: string): Record<string, number> {
  try {
    const v = JSON.parse(text) as unknown;
    return v && typeof v === "object" ? (v as Record<string, number>) : {};
  } catch {
    return {};
  }
}

/** A SQLite value as PostgreSQL takes it for the column; anything else names the row. */
function toPg(table: string, column: TargetColumn, value: SourceValue | undefined, rowid: SourceValue | undefined): string | boolean | null {
  if (value === null || value === undefined) {
    if (column.notNull) throw new Error(`${table} row ${String(rowid)}: ${column.name} is null, which PostgreSQL does not accept`);
    return null;
  }
  switch (column.arrayType) {
    case "boolean[]":
      if (value === 0n || value === 1n) return value === 1n;
      break;
    case "bigint[]":
    case "integer[]":
      if (typeof value === "bigint") return value.toString();
      break;
    case "text[]":
      if (typeof value === "string") return value;
      break;
  }
  const shown = Buffer.isBuffer(value) ? `a ${value.length}-byte blob` : JSON.stringify(typeof value === "bigint" ? value.toString() : value);
  throw new Error(`${table} row ${String(rowid)}: ${column.name} holds ${shown}, not a value of ${column.arrayType.replace("[]", "")}`);
}
