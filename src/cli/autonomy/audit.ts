import { closeSync, openSync, readFileSync, writeSync } from "node:fs";
import { toJsonString, type MessageInitShape } from "@bufbuild/protobuf";
import { timestampFromMs, type Timestamp } from "@bufbuild/protobuf/wkt";
import { Command, Option } from "commander";
import {
  AuditRecordSchema,
  PruneAuditRecordsResponseSchema,
  QueryAuditRecordsResponseSchema,
  VerifyAuditChainResponseSchema,
  type QueryAuditRecordsRequestSchema,
} from "../../../clients/index.js";
import { formatTable, formatTime, printMessage } from "../shared/output.js";
import { parseDays, parsePositiveInt, parseTimeMs, TIME_HINT } from "../shared/parse.js";
import { AUDIT_CATEGORIES, AUDIT_SOURCES } from "../../domain/audit.js";
import { fileErrorReason } from "../../files.js";
import { withClients } from "./context.js";
import { AUDIT_CSV_COLUMNS, auditCsvRow } from "../../domain/audit-csv.js";

/** An RFC 3339 time, or a duration meaning that long ago ("24h", "7d" is 7 × 24h). */
const parseTime = (value: string): Timestamp => timestampFromMs(parseTimeMs(value));

const FILTERS = [
  ["event-name", "eventName", "event name, e.g. rollout.plan.created"],
  ["category", "category", AUDIT_CATEGORIES.join(", ")],
  ["action", "action", "action, e.g. pause"],
  ["outcome", "outcome", "success, failure or denied"],
  ["actor", "actor", "who: an operator, a node, system:rollout-controller"],
  ["resource-type", "resourceType", "e.g. rollout_plan, release, node"],
  ["resource", "resource", "the resource's id"],
  [
    "source",
    "source",
    Object.entries(AUDIT_SOURCES)
      .map(([source, what]) => `${source} (${what})`)
      .join(", ")
      .replace(/, (?=[^,]*$)/, " or "),
  ],
] as const;

type FilterOptions = Partial<Record<(typeof FILTERS)[number][1], string>> & { since?: Timestamp; until?: Timestamp };

function withFilters(cmd: Command): Command {
  for (const [flag, , help] of FILTERS) cmd.option(`--${flag} <value>`, help);
  return cmd
    .option("--since <time>", `records at or after this time (${TIME_HINT})`, parseTime)
    .option("--until <time>", `records before this time (${TIME_HINT})`, parseTime);
}

function queryOf(opts: FilterOptions): MessageInitShape<typeof QueryAuditRecordsRequestSchema> {
  const q: MessageInitShape<typeof QueryAuditRecordsRequestSchema> = { since: opts.since, until: opts.until };
  for (const [, key] of FILTERS) if (opts[key] !== undefined) q[key] = opts[key];
  return q;
}


/** `autonomy audit`: the hash-chained audit trail. */
export function auditCommand(): Command {
  const audit = new Command("audit").description("Query, export, verify and prune the audit trail.");
  withFilters(audit.command("query"))
    .description("Show audit records, newest first; every filter given must match.")
    .option("--limit <n>", "at most this many (1-1000)", parsePositiveInt, 50)
    .addOption(new Option("--order <order>", "newest first (desc) or oldest first (asc)").choices(["desc", "asc"]).default("desc"))
    .action((opts: FilterOptions & { limit: number; order: string }, cmd: Command) =>
      withClients(cmd, async (api, options) => {
        const res = await api.audit.queryAuditRecords({ ...queryOf(opts), limit: opts.limit, order: opts.order });
        if (options.output !== "text") return printMessage(options.output, QueryAuditRecordsResponseSchema, res);
        if (res.records.length === 0) {
          process.stdout.write("no audit records match\n");
          return;
        }
        const rows = res.records.map((r) => [String(r.seq), formatTime(r.timestamp), r.eventName, r.outcome, r.actor, `${r.resourceType}/${r.resource}`, r.reason]);
        process.stdout.write(formatTable(["SEQ", "TIME", "EVENT", "OUTCOME", "ACTOR", "RESOURCE", "REASON"], rows));
        if (res.nextCursor !== 0n) process.stdout.write(`(more: narrow the filters or raise --limit)\n`);
      }),
    );
  withFilters(audit.command("export"))
    .description("Write every matching record, oldest first, to a file: JSON lines (one record a line) or CSV with a header.")
    .addOption(new Option("--format <format>", "file format").choices(["json", "csv"]).makeOptionMandatory())
    .requiredOption("--output <file>", "the file to write (replaced)")
    .action((opts: FilterOptions & { format: "json" | "csv"; output: string }, cmd: Command) =>
      withClients(cmd, async (api) => {
        const fd = openSync(opts.output, "w", 0o600);
        let written = 0;
        try {
          if (opts.format === "csv") writeSync(fd, AUDIT_CSV_COLUMNS.join(",") + "\n");
          for (let cursor = 0n; ; ) {
            const page = await api.audit.queryAuditRecords({ ...queryOf(opts), order: "asc", limit: 1000, cursor });
            for (const r of page.records) {
              writeSync(fd, (opts.format === "csv" ? auditCsvRow(r) : toJsonString(AuditRecordSchema, r, { useProtoFieldName: true })) + "\n");
            }
            written += page.records.length;
            if (written > 0 && written % 10_000 === 0) process.stderr.write(`exported ${written} records...\n`);
            if (page.nextCursor === 0n) break;
            cursor = page.nextCursor;
          }
        } finally {
          closeSync(fd);
        }
        process.stdout.write(`exported ${written} records to ${opts.output}\n`);
      }),
    );
  audit
    .command("verify")
    .description(
      "Check the hash chain of the whole trail, its seq numbers, and the signed checkpoints (in the chain, in the server's " +
        "audit-checkpoints.jsonl, and in --checkpoints files kept elsewhere). Exit status 0: intact; 3: a record was altered, removed or inserted.",
    )
    .option("--checkpoints <file>", "checkpoint lines (JSON, as the server writes them to its file and log) to check against (repeatable)", (v: string, all: string[] = []) => [...all, v])
    .action((opts: { checkpoints?: string[] }, cmd: Command) =>
      withClients(cmd, async (api, options) => {
        const checkpoints = (opts.checkpoints ?? []).flatMap((file) => {
          let text: string;
          try {
            text = readFileSync(file, "utf8");
          } catch (err) {
            throw new Error(`--checkpoints ${file}: ${fileErrorReason(err)}`);
          }
          // Log lines carry the checkpoint as their audit_checkpoint field; checkpoint files hold it alone.
          return text
            .split("\n")
            .filter((l) => l.trim() !== "")
            .map((l) => {
              try {
                const parsed = JSON.parse(l) as { audit_checkpoint?: unknown };
                return parsed.audit_checkpoint === undefined ? l : JSON.stringify(parsed.audit_checkpoint);
              } catch {
                return l;
              }
            });
        });
        const res = await api.audit.verifyAuditChain({ checkpoints });
        if (options.output !== "text") printMessage(options.output, VerifyAuditChainResponseSchema, res);
        else if (res.ok) {
          process.stdout.write(
            `audit trail intact: ${res.recordsChecked} records, seq ${res.firstSeq} to ${res.lastSeq}` +
              `${res.startsAfterPrune ? " (older records were pruned; see the audit.pruned record)" : ""}` +
              `; ${res.checkpointsChecked} signed checkpoint(s)${res.lastCheckpointSeq > 0n ? ` up to seq ${res.lastCheckpointSeq}` : ""}` +
              `${res.checkpointsUnverified > 0 ? `, ${res.checkpointsUnverified} signed by another key (not checked)` : ""}\n`,
          );
        } else {
          process.stdout.write(`audit trail BROKEN: ${res.problems.length} problem(s) in ${res.recordsChecked} records\n`);
          for (const p of res.problems) process.stdout.write(`  seq ${p.seq}: ${p.problem}\n`);
        }
        if (!res.ok) process.exitCode = 3;
      }),
    );
  audit
    .command("prune")
    .description("Remove records older than a number of days (the only way records leave the trail); the prune is recorded itself.")
    .requiredOption("--older-than <duration>", "age of the records removed, whole days: 90d, 365d", parseDays)
    .requiredOption("--reason <text>", "why (recorded in the trail)")
    .action((opts: { olderThan: number; reason: string }, cmd: Command) =>
      withClients(cmd, async (api, options) => {
        const res = await api.audit.pruneAuditRecords({ olderThanDays: opts.olderThan, reason: opts.reason });
        if (options.output !== "text") return printMessage(options.output, PruneAuditRecordsResponseSchema, res);
        process.stdout.write(`removed ${res.removed} records older than ${opts.olderThan} days${res.firstKeptSeq ? `; the trail now starts at seq ${res.firstKeptSeq}` : ""}\n`);
      }),
    );
  return audit;
}
