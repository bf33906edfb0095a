import { Command, InvalidArgumentError, Option } from "commander";
import { buildInfo } from "../../build-info.js";
import { dryRun, migrate, MigrateRefusedError, validateOnly, ValidationFailedError, type MigrateProgress, type TableCount } from "../../store/migrate/copy.js";
import { SourceNotFoundError } from "../../store/migrate/source.js";
import { redactUrl, TargetUnreachableError } from "../../store/migrate/target.js";
import { defaultDataDir } from "./serve.js";

interface MigrateOptions {
  sqliteDir: string;
  postgresUrl?: string;
  batchSize: number;
  dryRun?: boolean;
  validateOnly?: boolean;
  force?: boolean;
}

export const MAX_BATCH_SIZE = 50_000;

function parseBatchSize(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1 || n > MAX_BATCH_SIZE) throw new InvalidArgumentError(`"${value}" is not a whole number from 1 to ${MAX_BATCH_SIZE}`);
  return n;
}

function parsePostgresUrl(value: string): string {
  let u: URL;
  try {
    u = new URL(value);
  } catch {
    throw new InvalidArgumentError(`not a URL (expected postgres://user:password@host:5432/database)`);
  }
  if (u.protocol !== "postgres:" && u.protocol !== "postgresql:") {
    throw new InvalidArgumentError(`"${u.protocol}//..." is not a PostgreSQL URL (expected postgres://user:password@host:5432/database)`);
  }
  return value;
}

const n = (x: number) => x.toLocaleString("en-US");
const rate = (rows: number, ms: number) => (ms > 0 ? n(Math.round((rows * 1000) / ms)) : "-");

/** A bar redrawn in place on a terminal; one line per table otherwise. */
export function progressPrinter(out: Pick<NodeJS.WriteStream, "write" | "isTTY">): MigrateProgress {
  const tty = out.isTTY === true;
  let started = 0;
  let from = 0;
  let lastDraw = 0;
  return {
    step(name, detail) {
      out.write(`${name}: ${detail ?? ""}\n`);
    },
    tableStart(table, total, alreadyThere) {
      started = performance.now();
      from = alreadyThere;
      if (alreadyThere > 0) out.write(`${table}: ${n(alreadyThere)} of ${n(total)} rows already copied, resuming\n`);
    },
    tableProgress(table, done, total) {
      if (!tty) return;
      const now = performance.now();
      if (now - lastDraw < 100 && done < total) return;
      lastDraw = now;
      const width = 30;
      const filled = total > 0 ? Math.round((done / total) * width) : width;
      const pct = total > 0 ? Math.floor((done / total) * 100) : 100;
      out.write(`\r\x1b[K${table.padEnd(14)} [${"#".repeat(filled)}${".".repeat(width - filled)}] ${String(pct).padStart(3)}% ${n(done)}/${n(total)} ${rate(done - from, now - started)} rows/s`);
    },
    tableDone(table, r) {
      if (tty) out.write("\r\x1b[K");
      out.write(`${table}: ${n(r.rows)} rows in ${(r.ms / 1000).toFixed(2)}s (${rate(r.rows, r.ms)} rows/s)${r.inserted !== r.rows ? `, ${n(r.rows - r.inserted)} already there` : ""}\n`);
    },
  };
}

function countTable(counts: readonly TableCount[], mismatched?: ReadonlySet<string>): string {
  const width = Math.max(5, ...counts.map((c) => c.table.length));
  const lines = [`${"TABLE".padEnd(width)}  ${"SQLITE".padStart(10)}  ${"POSTGRESQL".padStart(10)}  RULE`];
  for (const c of counts) {
    const flag = mismatched?.has(c.table) ? "  MISMATCH" : "";
    lines.push(`${c.table.padEnd(width)}  ${n(c.source).padStart(10)}  ${(c.target === undefined ? "no table" : n(c.target)).padStart(10)}  ${c.rule}${flag}`);
  }
  return lines.join("\n") + "\n";
}

export function migrateCommand(): Command {
  return new Command("migrate")
    .summary("Copy a SQLite data dir into PostgreSQL for high availability")
    .description(
      "Copy all control-plane data from a SQLite data dir into PostgreSQL: schema (idempotent) -> releases + node_acks -> events -> " +
        "rollout plans + stage status -> every other table -> row-count validation -> an HACutoverAt record. " +
        "The SQLite database is opened read-only and never changed; stop the server first. An interrupted run is finished by running it again. " +
        "Every flag can also be set with an AUTONOMY_ environment variable (shown in brackets).",
    )
    .addOption(
      new Option("--sqlite-dir <dir>", "the SQLite data dir to copy (the --data-dir of serve)")
        .env("AUTONOMY_SQLITE_DIR")
        .default(defaultDataDir(), "$XDG_CACHE_HOME/autonomyops/orchestrator"),
    )
    .addOption(
      new Option("--postgres-url <url>", "PostgreSQL connection URL of the target database")
        .env("AUTONOMY_POSTGRES_URL")
        .argParser(parsePostgresUrl)
        .makeOptionMandatory(),
    )
    .addOption(new Option("--batch-size <rows>", "rows per INSERT batch").env("AUTONOMY_BATCH_SIZE").argParser(parseBatchSize).default(500))
    .addOption(new Option("--dry-run", "print the row counts and what PostgreSQL holds; write nothing").env("AUTONOMY_DRY_RUN").conflicts("validateOnly"))
    .addOption(new Option("--validate-only", "compare row counts only; exit 1 naming each table that differs").env("AUTONOMY_VALIDATE_ONLY"))
    .addOption(
      new Option("--force", "copy even into a database that holds a cutover or other data, replacing it (its writes since are lost)")
        .env("AUTONOMY_FORCE")
        .conflicts(["dryRun", "validateOnly"]),
    )
    .action(async (opts: MigrateOptions, cmd: Command) => {
      // commander sets a boolean flag from any value of its variable; AUTONOMY_FORCE=0 must not force.
      for (const [key, variable] of [["dryRun", "AUTONOMY_DRY_RUN"], ["validateOnly", "AUTONOMY_VALIDATE_ONLY"], ["force", "AUTONOMY_FORCE"]] as const) {
        if (cmd.getOptionValueSource(key) !== "env") continue;
        const value = (process.env[variable] ?? "").trim().toLowerCase();
        if (["1", "true", "on", "yes"].includes(value)) opts[key] = true;
        else if (["", "0", "false", "off", "no"].includes(value)) opts[key] = false;
        else cmd.error(`error: ${variable}="${process.env[variable]}": expected 1 or 0`, { exitCode: 2 });
      }
      const url = opts.postgresUrl!;
      const out = process.stdout;
      try {
        if (opts.dryRun) {
          const r = await dryRun({ sqliteDir: opts.sqliteDir, postgresUrl: url });
          out.write(`dry run: nothing is written\nsource: ${opts.sqliteDir}\ntarget: ${redactUrl(url)}: ${r.target}\n`);
          out.write(countTable(r.counts));
          const total = r.counts.filter((c) => c.rule === "copy").reduce((a, c) => a + c.source, 0);
          out.write(`${n(total)} rows to copy in ${r.counts.filter((c) => c.rule === "copy").length} tables\n`);
          if (r.refusal) out.write(`a run would refuse: ${r.refusal}\n`);
          return;
        }
        if (opts.validateOnly) {
          const r = await validateOnly({ sqliteDir: opts.sqliteDir, postgresUrl: url });
          out.write(countTable(r.counts, new Set(r.mismatched)));
          out.write(r.cutover ? `HACutoverAt ${new Date(r.cutover.cutoverAtMs!).toISOString()} from ${r.cutover.source}\n` : "no HACutoverAt record\n");
          if (r.mismatched.length > 0) {
            const detail = r.counts.filter((c) => r.mismatched.includes(c.table)).map((c) => `${c.table} (SQLite ${c.source}, PostgreSQL ${c.target ?? "no table"})`);
            process.stderr.write(`autonomy-orchestrator: row counts differ: ${detail.join(", ")}\n`);
            process.exitCode = 1;
          } else {
            out.write("row counts match\n");
          }
          return;
        }
        const r = await migrate(
          { sqliteDir: opts.sqliteDir, postgresUrl: url, batchSize: opts.batchSize, force: opts.force, version: buildInfo().version },
          progressPrinter(out),
        );
        out.write(countTable(r.counts));
        out.write(
          `copied ${n(r.rowsCopied)} rows (${n(r.rowsInserted)} new) in ${(r.ms / 1000).toFixed(2)}s${r.resumed ? ", resuming an interrupted copy" : ""}; ` +
            `HACutoverAt ${new Date(r.cutover.atMs).toISOString()} from ${r.cutover.source}\n`,
        );
      } catch (err) {
        if (err instanceof MigrateRefusedError || err instanceof SourceNotFoundError || err instanceof TargetUnreachableError || err instanceof ValidationFailedError) {
          process.stderr.write(`autonomy-orchestrator: ${err.message}\n`);
        } else {
          // A failure part way (PostgreSQL gone, a permission missing): what is copied stays, a re-run resumes.
          const e = err as { code?: unknown; message?: unknown };
          const code = typeof e.code === "string" ? ` (${e.code})` : "";
          process.stderr.write(`autonomy-orchestrator: migrate stopped: ${String(e.message ?? err)}${code}; run it again to resume\n`);
        }
        process.exitCode = 1;
      }
    });
}
