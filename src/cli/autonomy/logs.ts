import { Code, ConnectError } from "@connectrpc/connect";
import { Command, Option } from "commander";
import { EventSchema, QueryEventsResponseSchema, type Event, type OrchestratorClients } from "../../../clients/index.js";
import { escapeControl, formatTable, formatTime, messageJson, printMessage, UsageError, type OutputFormat } from "../shared/output.js";
import { parsePositiveInt } from "../shared/parse.js";
import { withClients, type GlobalOptions } from "./context.js";

interface LogsOptions {
  nodeId?: string;
  eventType?: string;
  limit: number;
  before?: string;
  follow?: boolean;
  after?: string;
}

/** Seconds one follow call waits on the server for new events. */
const FOLLOW_WAIT_SECONDS = 20;
/** Failures worth retrying while following: the server restarting, busy or unreachable. */
const RETRYABLE = new Set([Code.Unavailable, Code.DeadlineExceeded, Code.Unknown, Code.Internal, Code.Aborted, Code.ResourceExhausted, Code.Canceled]);

const HEADERS = ["SEQ", "TIMESTAMP", "NODE", "TYPE", "EVENT ID", "RELEASE", "PAYLOAD"];
const cells = (e: Event) => [
  String(e.seq),
  formatTime(e.timestamp),
  e.nodeId,
  e.eventType,
  e.eventId,
  e.releaseId ?? "",
  e.payload ? JSON.stringify(e.payload) : "",
];

const seqOption = (flag: string, value: string | undefined): bigint | undefined => {
  if (value === undefined) return undefined;
  if (!/^\d+$/.test(value)) throw new UsageError(`${flag}: "${value}" is not a sequence number`);
  return BigInt(value);
};

/**
 * Prints events as they are stored, oldest first, until Ctrl-C: one long poll after another,
 * each resuming after the last seq printed, so a server restart (or a lost connection) costs
 * a retry and never a duplicate or a gap.
 */
async function follow(api: OrchestratorClients, options: GlobalOptions, opts: LogsOptions): Promise<void> {
  const abort = new AbortController();
  const onSignal = () => abort.abort();
  process.once("SIGINT", onSignal);
  process.once("SIGTERM", onSignal);
  const format: OutputFormat = options.output;
  let after = seqOption("--after", opts.after);
  let headerShown = false;
  let failingSince: number | undefined;
  let delayMs = 250;
  try {
    while (!abort.signal.aborted) {
      try {
        const res = await api.follow.followEvents(
          { nodeId: opts.nodeId, eventType: opts.eventType, after: after ?? 0n, fromNewest: after === undefined, waitSeconds: FOLLOW_WAIT_SECONDS },
          { signal: abort.signal, timeoutMs: FOLLOW_WAIT_SECONDS * 1000 + options.requestTimeout },
        );
        if (failingSince !== undefined) process.stderr.write(`autonomy: reconnected; resuming after seq ${after ?? 0n}\n`);
        failingSince = undefined;
        delayMs = 250;
        after = res.nextAfter;
        if (res.events.length === 0) continue;
        if (format === "text") {
          const table = formatTable(HEADERS, res.events.map(cells)).split("\n");
          // Columns are sized per answer; the header is printed once.
          process.stdout.write((headerShown ? table.slice(1) : table).filter(Boolean).join("\n") + "\n");
          headerShown = true;
        } else {
          for (const e of res.events) process.stdout.write(JSON.stringify(messageJson(EventSchema, e)) + "\n");
        }
      } catch (err) {
        if (abort.signal.aborted) break;
        const code = ConnectError.from(err).code;
        if (!RETRYABLE.has(code)) throw err;
        if (failingSince === undefined) {
          failingSince = Date.now();
          process.stderr.write(`autonomy: ${escapeControl(ConnectError.from(err).rawMessage)}; retrying, resuming after seq ${after ?? "the newest"}\n`);
        }
        await new Promise((r) => setTimeout(r, delayMs));
        delayMs = Math.min(delayMs * 2, 5000);
      }
    }
  } finally {
    process.removeListener("SIGINT", onSignal);
    process.removeListener("SIGTERM", onSignal);
  }
}

export function logsCommand(): Command {
  return new Command("logs")
    .description(
      "Query stored events, newest first. To page back, pass the SEQ of the last line shown as --before. " +
        "With --follow, print events as they are stored (oldest first) until Ctrl-C, resuming after the last SEQ printed when the server restarts.",
    )
    .option("--node-id <id>", "only events of this node")
    .option("--event-type <type>", "only events of this type")
    .addOption(new Option("--limit <n>", "how many events at most (1-1000)").argParser(parsePositiveInt).default(100))
    .option("--before <seq>", "only events older than this sequence number")
    .option("-f, --follow", "print new events as they are stored, until Ctrl-C")
    .option("--after <seq>", "with --follow: start after this sequence number (default: after the newest stored event)")
    .action(async (opts: LogsOptions, cmd: Command) =>
      withClients(cmd, async (api, options) => {
        if (opts.follow) {
          if (opts.before !== undefined) throw new UsageError("--before goes without --follow (--after starts a follow at a sequence number)");
          return follow(api, options, opts);
        }
        if (opts.after !== undefined) throw new UsageError("--after goes with --follow");
        const before = seqOption("--before", opts.before);
        const res = await api.events.queryEvents({
          nodeId: opts.nodeId,
          eventType: opts.eventType,
          limit: opts.limit,
          before: before ?? 0n,
        });
        if (options.output !== "text") return printMessage(options.output, QueryEventsResponseSchema, res);
        if (res.events.length === 0) {
          process.stdout.write("no events\n");
          return;
        }
        process.stdout.write(formatTable(HEADERS, res.events.map(cells)));
      }),
    );
}
