/**
 * `autonomy-orchestrator migrate`: copies a SQLite data dir into PostgreSQL. Schema (the PG
 * migrations, idempotent) → releases + node_acks → events → rollout plans + stage status → every
 * other table → row-count validation (and the projections and the audit chain checked) → the
 * HACutoverAt record.
 *
 * Each batch is one INSERT ... SELECT FROM unnest(...) ON CONFLICT ..., a transaction of its own,
 * in rowid order. An interrupted copy (kill -9) is finished by running it again: tables keyed by
 * a sequence (whose rows never change once written) resume after the largest id already in
 * PostgreSQL (batches commit in order); the others (nodes, acks, status, RBAC: rows that change)
 * are sent again as upserts on their primary key. Nothing is doubled.
 */
import os from "node:os";
import { getTableColumns } from "drizzle-orm";
import { AuditVerifier, type ChainedAuditRow } from "../../domain/audit.js";
import { auditRecords } from "../pg/schema.js";
import { COPY_ORDER, isSqliteInternal, SEEDED_ROWS, TABLE_RULES, type TableRule } from "./plan.js";
import { SqliteSource, type SourceValue } from "./source.js";
import { PgTarget, type CutoverRow, type TargetColumn, targetTables } from "./target.js";

export interface MigrateOptions {
  sqliteDir: string;
  postgresUrl: string;
  batchSize: number;
  /** Replace what PostgreSQL holds (a cutover, or data migrate did not write). */
  force?: boolean;
  /** The program version, recorded with the cutover. */
  version: string;
  /** host:dir naming the source in the cutover record; defaults to this host and the absolute dir. */
  sourceName?: string;
}

/** What the copy tells its caller as it goes. */
export interface MigrateProgress {
  step?(name: string, detail?: string): void;
  tableStart?(table: string, total: number, alreadyThere: number): void;
  tableProgress?(table: string, done: number, total: number): void;
  tableDone?(table: string, r: { rows: number; inserted: number; ms: number }): void;
}

/** One table's rows on both sides. */
export interface TableCount {
  table: string;
  rule: TableRule["kind"];
  source: number;
  /** undefined when the table is not in PostgreSQL (schema not applied). */
  target: number | undefined;
}

/** Refused before anything was written; the message says what was found and what to do. */
export class MigrateRefusedError extends Error {}

/** The copy ran, but the two sides differ; nothing marks the cutover. */
export class ValidationFailedError extends Error {
  constructor(
    message: string,
    readonly mismatched: readonly string[],
  ) {
    super(message);
  }
}

export interface MigrateResult {
  counts: TableCount[];
  rowsCopied: number;
  rowsInserted: number;
  ms: number;
  resumed: boolean;
  cutover: { seq: number; atMs: number; source: string };
  sourceAccess: SqliteSource["access"];
}

export interface DryRunResult {
  counts: TableCount[];
  /** What PostgreSQL holds now, in words. */
  target: string;
  /** The run without --dry-run would refuse with this. */
  refusal?: string;
}

const iso = (ms: number) => new Date(ms).toISOString();

/** The tables of the source, each with its rule; an unknown table is refused. */
function classify(source: SqliteSource): { table: string; rule: TableRule }[] {
  const out: { table: string; rule: TableRule }[] = [];
  const unknown: string[] = [];
  for (const table of source.tables()) {
    if (isSqliteInternal(table)) continue;
    const rule = TABLE_RULES[table];
    if (rule) out.push({ table, rule });
    else unknown.push(table);
  }
  if (unknown.length > 0) {
    throw new MigrateRefusedError(
      `the SQLite database has table(s) this version does not know how to migrate: ${unknown.join(", ")} (a newer version wrote it; migrate with that version)`,
    );
  }
  return out;
}

/** The columns to copy of each copied table, checked against both schemas. */
function copyColumns(source: SqliteSource, present: ReadonlySet<string>): Map<string, TargetColumn[]> {
  const target = targetTables();
  const out = new Map<string, TargetColumn[]>();
  for (const [table] of COPY_ORDER) {
    if (!present.has(table)) {
      throw new MigrateRefusedError(`the SQLite database has no table ${table}: it was written by an older version; start \`autonomy-orchestrator serve\` of this version on it once (it upgrades the schema), stop it, and migrate again`);
    }
    const columns = target.get(table);
    if (!columns) throw new Error(`the PostgreSQL schema has no table ${table}`);
    const have = new Set(source.columns(table));
    const missing = columns.filter((c) => !have.has(c.name)).map((c) => c.name);
    if (missing.length > 0) {
      throw new MigrateRefusedError(
        `the SQLite table ${table} has no column ${missing.join(", ")}: it was written by an older version; start \`autonomy-orchestrator serve\` of this version on it once (it upgrades the schema), stop it, and migrate again`,
      );
    }
    const extra = [...have].filter((c) => !columns.some((t) => t.name === c));
    if (extra.length > 0) {
      throw new MigrateRefusedError(`the SQLite table ${table} has column(s) ${extra.join(", ")} that PostgreSQL's schema lacks: a newer version wrote it; migrate with that version`);
    }
    out.set(table, columns);
  }
  return out;
}

/** What PostgreSQL holds that would stop a copy, or undefined when it may start (or resume). */
async function refusal(target: PgTarget, sourceName: string, cutovers: readonly CutoverRow[]): Promise<string | undefined> {
  // The newest record is an unfinished copy of this data dir (a --force run among them): finish it.
  const latest = cutovers.at(-1);
  if (latest && latest.cutoverAtMs === null && latest.source === sourceName) return undefined;
  const done = cutovers.filter((c) => c.cutoverAtMs !== null);
  if (done.length > 0) {
    const last = done[done.length - 1];
    const rows = Object.entries(last.rowCounts).reduce((a, [table, k]) => a + (TABLE_RULES[table]?.kind === "copy" ? k : 0), 0);
    return (
      `PostgreSQL already holds a cutover: HACutoverAt ${iso(last.cutoverAtMs!)} from ${last.source} (${rows} rows, by version ${last.version})` +
      `${done.length > 1 ? `, the latest of ${done.length}` : ""}. Nothing was written. --force replaces the PostgreSQL data with this SQLite data dir's (writes made on PostgreSQL since are lost)`
    );
  }
  const pending = cutovers.filter((c) => c.cutoverAtMs === null);
  const last = pending[pending.length - 1];
  if (last && last.source !== sourceName) {
    return `PostgreSQL holds an unfinished copy from ${last.source} (started ${iso(last.startedAtMs)}), not from ${sourceName}. Nothing was written. Run migrate with that --sqlite-dir to finish it, or --force to replace it with this one`;
  }
  if (last) return undefined;
  const held: string[] = [];
  for (const [table] of COPY_ORDER) {
    if (!(await target.tableExists(table))) continue;
    const n = await target.count(table);
    if (n > (SEEDED_ROWS[table] ?? 0)) held.push(`${table} ${n}`);
  }
  if (held.length > 0) {
    return `PostgreSQL already holds data that migrate did not copy (${held.join(", ")}): a server ran on it. Nothing was written. --force replaces it with this SQLite data dir's`;
  }
  return undefined;
}

async function countBoth(source: SqliteSource, target: PgTarget, tables: readonly { table: string; rule: TableRule }[]): Promise<TableCount[]> {
  const out: TableCount[] = [];
  const rank = (t: { table: string; rule: TableRule }) => {
    const i = COPY_ORDER.findIndex(([name]) => name === t.table);
    return i >= 0 ? i : COPY_ORDER.length + ["derived", "schema"].indexOf(t.rule.kind);
  };
  for (const { table, rule } of [...tables].sort((a, b) => rank(a) - rank(b) || a.table.localeCompare(b.table))) {
    if (rule.kind === "skip") continue;
    const [sw, tw] = rule.kind === "derived" && rule.countsOnly ? ["n <> 0", "n <> 0"] : ["1", "TRUE"];
    out.push({ table, rule: rule.kind, source: source.count(table, sw), target: (await target.tableExists(table)) ? await target.count(table, tw) : undefined });
  }
  return out;
}

function sourceNameOf(opts: MigrateOptions, source: SqliteSource): string {
  return opts.sourceName ?? `${os.hostname()}:${source.dir}`;
}

/** Reads both sides and writes nothing: the counts and what a copy would find. */
export async function dryRun(opts: Pick<MigrateOptions, "sqliteDir" | "postgresUrl" | "sourceName">): Promise<DryRunResult> {
  const source = SqliteSource.open(opts.sqliteDir);
  try {
    source.beginSnapshot();
    const tables = classify(source);
    copyColumns(source, new Set(tables.map((t) => t.table)));
    const target = await PgTarget.connect(opts.postgresUrl);
    try {
      const counts = await countBoth(source, target, tables);
      const cutovers = await target.cutovers();
      const why = await refusal(target, sourceNameOf(opts as MigrateOptions, source), cutovers);
      const schema = await target.tableExists("events");
      const pending = cutovers.filter((c) => c.cutoverAtMs === null).at(-1);
      const state = !schema
        ? "no schema yet (the copy applies it)"
        : why
          ? "holds data (see below)"
          : pending
            ? `an unfinished copy from ${pending.source} (started ${iso(pending.startedAtMs)}): a run resumes it`
            : "the schema, no data";
      return { counts, target: state, refusal: why };
    } finally {
      await target.close();
    }
  } finally {
    source.close();
  }
}

/** Compares row counts only; writes nothing. A table whose counts differ is named in `mismatched`. */
export async function validateOnly(opts: Pick<MigrateOptions, "sqliteDir" | "postgresUrl">): Promise<{ counts: TableCount[]; mismatched: string[]; cutover?: CutoverRow }> {
  const source = SqliteSource.open(opts.sqliteDir);
  try {
    source.beginSnapshot();
    const tables = classify(source);
    const target = await PgTarget.connect(opts.postgresUrl);
    try {
      const counts = await countBoth(source, target, tables);
      const cutover = (await target.cutovers()).filter((c) => c.cutoverAtMs !== null).at(-1);
      return { counts, mismatched: counts.filter((c) => c.source !== c.target).map((c) => c.table), cutover };
    } finally {
      await target.close();
    }
  } finally {
    source.close();
  }
}

/** The full copy. Throws MigrateRefusedError (nothing written) or ValidationFailedError (no cutover recorded). */
export async function migrate(opts: MigrateOptions, progress: MigrateProgress = {}): Promise<MigrateResult> {
  const started = Date.now();
  const source = SqliteSource.open(opts.sqliteDir);
  try {
    source.beginSnapshot();
    const tables = classify(source);
    const columns = copyColumns(source, new Set(tables.map((t) => t.table)));
    const sourceName = sourceNameOf(opts, source);
    const target = await PgTarget.connect(opts.postgresUrl);
    try {
      // Every refusal is decided before the first write (the schema step included).
      const cutovers = await target.cutovers();
      const why = opts.force ? undefined : await refusal(target, sourceName, cutovers);
      if (why) throw new MigrateRefusedError(why);

      progress.step?.("schema", "applying the PostgreSQL migrations");
      await target.applySchema();
      let marker = cutovers.filter((c) => c.cutoverAtMs === null && c.source === sourceName).at(-1)?.seq;
      const resumed = marker !== undefined && !opts.force;
      if (opts.force) {
        const emptied = tables.filter((t) => t.rule.kind === "copy" || t.rule.kind === "derived").map((t) => t.table);
        progress.step?.("force", `emptying ${emptied.length} tables`);
        await target.truncate(emptied);
        marker = undefined;
      }
      if (marker === undefined) marker = await target.startCutover(sourceName, started, opts.version);
      await target.relaxDurability();

      let rowsCopied = 0;
      let rowsInserted = 0;
      for (const [table] of COPY_ORDER) {
        const r = await copyTable(source, target, table, columns.get(table)!, opts.batchSize, progress);
        rowsCopied += r.rows;
        rowsInserted += r.inserted;
      }

      progress.step?.("sequences", "moving the id sequences past the copied ids");
      for (const [table] of COPY_ORDER) {
        for (const c of columns.get(table)!) if (c.serial) await target.advanceSequence(table, c.name, source.sequence(table));
      }

      progress.step?.("validation", "comparing row counts, the fleet projections and the audit chain");
      const counts = await countBoth(source, target, tables);
      const problems = counts.filter((c) => c.source !== c.target).map((c) => `${c.table} (SQLite ${c.source}, PostgreSQL ${c.target ?? "no table"})`);
      const mismatched = counts.filter((c) => c.source !== c.target).map((c) => c.table);
      for (const table of ["fleet_totals", "fleet_seen"]) {
        if (mismatched.includes(table)) continue;
        if (!(await sameRows(source, target, table))) {
          problems.push(`${table} (the same number of rows, different counts)`);
          mismatched.push(table);
        }
      }
      if (!mismatched.includes("fleet_totals") && !(await fleetTotalsMatchNodes(target))) {
        problems.push("fleet_totals (does not match the nodes table)");
        mismatched.push("fleet_totals");
      }
      const chain = await auditChainsAgree(source, target);
      if (chain) {
        problems.push(`audit_records (${chain})`);
        mismatched.push("audit_records");
      }
      if (problems.length > 0) {
        throw new ValidationFailedError(`validation failed, no cutover recorded: ${problems.join("; ")}`, mismatched);
      }

      const atMs = Date.now();
      await target.finishCutover(marker, atMs, Object.fromEntries(counts.map((c) => [c.table, c.source])));
      progress.step?.("cutover", `HACutoverAt ${iso(atMs)} recorded`);
      return { counts, rowsCopied, rowsInserted, ms: Date.now() - started, resumed, cutover: { seq: marker, atMs, source: sourceName }, sourceAccess: source.access };
    } finally {
      await target.close();
    }
  } finally {
    source.close();
  }
}

async function copyTable(
  source: SqliteSource,
  target: PgTarget,
  table: string,
  columns: TargetColumn[],
  batchSize: number,
  progress: MigrateProgress,
): Promise<{ rows: number; inserted: number; ms: number }> {
  const started = performance.now();
  const total = source.count(table);
  // A table keyed by its sequence (rowid = seq) resumes after the largest id already copied.
  const key = columns.find((c) => c.serial);
  let after = key ? await target.max(table, key.name) : 0n;
  const alreadyThere = key ? await target.count(table) : 0;
  progress.tableStart?.(table, total, alreadyThere);
  const names = columns.map((c) => c.name);
  let done = alreadyThere;
  let inserted = 0;
  let rows: SourceValue[][] = source.batch(table, names, after, batchSize);
  while (rows.length > 0) {
    const sending = target.insert(table, columns, rows, 1, key ? "keep" : "update");
    // Read the next batch while PostgreSQL writes this one.
    after = rows[rows.length - 1][0] as bigint;
    const next = source.batch(table, names, after, batchSize);
    inserted += await sending;
    done += rows.length;
    progress.tableProgress?.(table, Math.min(done, total), total);
    rows = next;
  }
  const r = { rows: done - alreadyThere, inserted, ms: performance.now() - started };
  progress.tableDone?.(table, r);
  return r;
}

const asText = (v: SourceValue | string | null): string | null =>
  v === null ? null : typeof v === "bigint" ? v.toString() : typeof v === "string" ? v : v.toString("hex");

/** Booleans are 0/1 in SQLite and true/false in PostgreSQL's text form. */
function normalise(table: string, row: readonly (SourceValue | string | null)[]): string {
  const cols = targetTables().get(table)!;
  return JSON.stringify(
    row.map((v, i) => {
      const t = asText(v);
      if (cols[i].arrayType === "boolean[]") return t === "1" || t === "true";
      return t;
    }),
  );
}

async function sameRows(source: SqliteSource, target: PgTarget, table: string): Promise<boolean> {
  const names = targetTables().get(table)!.map((c) => c.name);
  const a = source.rows(table, names, "n <> 0").map((r) => normalise(table, r)).sort();
  const b = (await target.rows(table, names, "n <> 0")).map((r) => normalise(table, r)).sort();
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

async function fleetTotalsMatchNodes(target: PgTarget): Promise<boolean> {
  const names = targetTables().get("fleet_totals")!.map((c) => c.name);
  const stored = (await target.rows("fleet_totals", names, "n <> 0")).map((r) => normalise("fleet_totals", r)).sort();
  const recomputed = (await target.recomputedFleetTotals()).map((r) => normalise("fleet_totals", r)).sort();
  return stored.length === recomputed.length && stored.every((x, i) => x === recomputed[i]);
}

const VERIFY_PAGE = 5000;

/**
 * Walks the audit chain on both sides with the same verifier (src/domain/audit.ts): PostgreSQL's
 * must verify exactly as SQLite's does (same records checked, same problems). Undefined when it does.
 */
async function auditChainsAgree(source: SqliteSource, target: PgTarget): Promise<string | undefined> {
  const cols = Object.entries(getTableColumns(auditRecords)).map(([key, c]) => ({ key, name: c.name, bigint: c.getSQLType().startsWith("big") }));
  const names = cols.map((c) => c.name);
  const fromSource = new AuditVerifier(new Map());
  for (let after = 0n; ; ) {
    const page = source.batch("audit_records", names, after, VERIFY_PAGE);
    fromSource.add(page.map((row) => Object.fromEntries(cols.map((c, i) => [c.key, c.bigint ? Number(row[i + 1]) : row[i + 1]])) as unknown as ChainedAuditRow));
    if (page.length < VERIFY_PAGE) break;
    after = page[page.length - 1][0] as bigint;
  }
  const fromTarget = new AuditVerifier(new Map());
  for (let after = 0; ; ) {
    const page = (await target.auditPage(cols, after, VERIFY_PAGE)) as unknown as ChainedAuditRow[];
    fromTarget.add(page);
    if (page.length < VERIFY_PAGE) break;
    after = page[page.length - 1].seq;
  }
  const a = fromSource.result();
  const b = fromTarget.result();
  if (a.recordsChecked !== b.recordsChecked || a.lastSeq !== b.lastSeq) return `${b.recordsChecked} records up to seq ${b.lastSeq} in PostgreSQL, ${a.recordsChecked} up to seq ${a.lastSeq} in SQLite`;
  const pa = JSON.stringify(a.problems);
  const pb = JSON.stringify(b.problems);
  if (pa !== pb) return `the chain verifies differently in PostgreSQL: ${b.problems.slice(0, 3).map((p) => `seq ${p.seq}: ${p.problem}`).join("; ")}`;
  return undefined;
}
