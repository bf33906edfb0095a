import { Command, Option } from "commander";
import { QueryEventsResponseSchema } from "../../../clients/index.js";
import { formatTable, formatTime, printMessage, UsageError } from "../shared/output.js";
import { parsePositiveInt } from "../shared/parse.js";
import { withClients } from "./context.js";

interface LogsOptions {
  nodeId?: string;
  eventType?: string;
  limit: number;
  before?: string;
}

export function logsCommand(): Command {
  return new Command("logs")
    .description(
      "Query stored events, newest first. To page back, pass the SEQ of the last line shown as --before.",
    )
    .option("--node-id <id>", "only events of this node")
    .option("--event-type <type>", "only events of this type")
    .addOption(new Option("--limit <n>", "how many events at most (1-1000)").argParser(parsePositiveInt).default(100))
    .option("--before <seq>", "only events older than this sequence number")
    .action(async (opts: LogsOptions, cmd: Command) =>
      withClients(cmd, async (api, options) => {
        if (opts.before !== undefined && !/^\d+$/.test(opts.before)) {
          throw new UsageError(`--before: "${opts.before}" is not a sequence number`);
        }
        const res = await api.events.queryEvents({
          nodeId: opts.nodeId,
          eventType: opts.eventType,
          limit: opts.limit,
          before: opts.before === undefined ? 0n : BigInt(opts.before),
        });
        if (options.output !== "text") return printMessage(options.output, QueryEventsResponseSchema, res);
        if (res.events.length === 0) {
          process.stdout.write("no events\n");
          return;
        }
        const rows = res.events.map((e) => [
          String(e.seq),
          formatTime(e.timestamp),
          e.nodeId,
          e.eventType,
          e.eventId,
          e.releaseId ?? "",
          e.payload ? JSON.stringify(e.payload) : "",
        ]);
        process.stdout.write(formatTable(["SEQ", "TIMESTAMP", "NODE", "TYPE", "EVENT ID", "RELEASE", "PAYLOAD"], rows));
      }),
    );
}
