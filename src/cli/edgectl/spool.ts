import { Command, Option } from "commander";
import { flushSpool } from "../../agent/spool/shipper.js";
import { Spool, spoolDir, type SpoolStatus } from "../../agent/spool/spool.js";
import { formatBytes, throttleState, type ThrottleState } from "../../agent/throttle.js";
import { createLogger } from "../../observability/logger.js";
import { OUTPUT_FORMATS, printValue, runCommand, type OutputFormat } from "../shared/output.js";
import { parsePositiveDuration } from "../shared/parse.js";
import { stderrSpoolLog } from "./events.js";
import { edgeClients, edgeTarget, type EdgeOptions } from "./options.js";
import { describeThrottle } from "./throttle.js";

function printStatus(s: SpoolStatus, t: ThrottleState, output: OutputFormat): void {
  if (output !== "text") {
    printValue(output, { ...s, throttle: t });
    return;
  }
  const c = s.counters;
  const rows: [string, string][] = [
    ["spool", s.dir],
    ["unsent", `${s.unsent_frames} events, ${formatBytes(s.unsent_bytes)}${s.oldest_unsent_age_seconds === null ? "" : ` (oldest spooled ${s.oldest_unsent_age_seconds}s ago)`}`],
    ["segments", `${s.segments} (${formatBytes(s.disk_bytes)} on disk)`],
    ["cursor", `segment ${s.cursor.segment} offset ${s.cursor.offset}, next seq to send ${s.cursor.seq}, next seq to spool ${s.next_seq}`],
    ["deadletter", `${s.deadletter_entries} entries`],
    ["throttle", describeThrottle(t)],
    [
      "damage",
      `${c.torn_tails_total} tails cut (${c.torn_tail_bytes_total} bytes), ${c.corrupt_regions_total} damaged regions set aside (${c.corrupt_bytes_total} bytes), ` +
        `${c.dropped_events_total} events dropped when full, ${c.deadlettered_events_total} deadlettered in all`,
    ],
  ];
  process.stdout.write(rows.map(([k, v]) => `${k.padEnd(11)} ${v}`).join("\n") + "\n");
}

export function spoolCommand(): Command {
  const status = new Command("status")
    .description("Show the spool: unsent events and bytes, the oldest one's age, the cursor, the deadletter, the throttle, and damage counters.")
    .addOption(new Option("-o, --output <format>", "output format").choices(OUTPUT_FORMATS).default("text"))
    .action((opts: { output: OutputFormat }, cmd: Command) =>
      runCommand("edgectl", async () => {
        const dir = (cmd.optsWithGlobals() as EdgeOptions).stateDir;
        const s = await new Spool({ dir: spoolDir(dir), log: stderrSpoolLog }).status();
        printStatus(s, throttleState(dir), opts.output);
      }),
    );
  const flush = new Command("flush")
    .description(
      "Ship every spooled event now and wait: through `edgectl run` when it runs (it is woken), else from " +
        "this process. Exit status 0 when the spool is empty, 1 when anything is left at --timeout.",
    )
    .addOption(new Option("--timeout <duration>", "how long to wait").argParser(parsePositiveDuration).default(300_000, "5m"))
    .action((opts: { timeout: number }, cmd: Command) =>
      runCommand("edgectl", async () => {
        const target = edgeTarget(cmd);
        const global = target.options;
        const api = edgeClients(target);
        try {
          const logger = createLogger({ format: "text", level: "warn" });
          const s = await flushSpool({ api, stateDir: global.stateDir, logger, timeoutMs: opts.timeout });
          if (s.unsent_frames > 0) throw new Error(`${s.unsent_frames} events (${formatBytes(s.unsent_bytes)}) left in the spool`);
          process.stdout.write(`flushed; the spool is empty (${s.deadletter_entries} in the deadletter)\n`);
        } finally {
          api.close();
        }
      }),
    );
  return new Command("spool").description("The node's offline event spool.").addCommand(status).addCommand(flush);
}
