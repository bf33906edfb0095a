import { readFileSync } from "node:fs";
import { Command, InvalidArgumentError, Option } from "commander";
import { readState } from "../../agent/state.js";
import { readFlagFile } from "../../files.js";
import { parseEventLines } from "../../agent/spool/events.js";
import { pokeShipper } from "../../agent/spool/shipper.js";
import { DEFAULT_SPOOL_MAX_BYTES, Spool, SPOOL_FULL_POLICIES, SpoolFullError, spoolDir, type SpoolFullPolicy, type SpoolLog } from "../../agent/spool/spool.js";
import { parseByteSize } from "../../agent/throttle.js";
import { runCommand } from "../shared/output.js";
import type { EdgeOptions } from "./options.js";

/** Spool warnings of a short-lived command: one line each on stderr. */
export const stderrSpoolLog: SpoolLog = (level, fields, msg) => {
  if (level !== "info") process.stderr.write(`edgectl: ${level === "warn" ? "warning" : "error"}: ${msg} ${JSON.stringify(fields)}\n`);
};

const size = (flag: string) => (value: string) => {
  try {
    const n = parseByteSize(value, flag);
    if (n <= 0) throw new Error(`${flag}: must be more than 0 bytes`);
    return n;
  } catch (err) {
    throw new InvalidArgumentError((err as Error).message);
  }
};

/** --spool-max-bytes and --spool-full, for the commands that append to the spool. */
export function addSpoolCapOptions(cmd: Command): Command {
  return cmd
    .addOption(
      new Option("--spool-max-bytes <size>", "most bytes of unsent events the spool holds")
        .env("AUTONOMY_SPOOL_MAX_BYTES")
        .argParser(size("--spool-max-bytes"))
        .default(DEFAULT_SPOOL_MAX_BYTES, "256MiB"),
    )
    .addOption(
      new Option("--spool-full <policy>", "when full: reject the new events (exit status 4) or drop the oldest unsent")
        .env("AUTONOMY_SPOOL_FULL")
        .choices(SPOOL_FULL_POLICIES)
        .default("reject"),
    );
}

export interface SpoolCapOptions {
  spoolMaxBytes: number;
  spoolFull: SpoolFullPolicy;
}

/** runCommand, with exit status 4 when the spool refused the events for want of room. */
export function runSpoolCommand(body: () => Promise<void>): Promise<void> {
  return runCommand("edgectl", async () => {
    try {
      await body();
    } catch (err) {
      if (!(err instanceof SpoolFullError)) throw err;
      process.stderr.write(`edgectl: error: ${err.message}\n`);
      process.exitCode = err.exitCode;
    }
  });
}

interface SendOptions extends SpoolCapOptions {
  file?: string;
  nodeId?: string;
}

function sendCommand(): Command {
  return addSpoolCapOptions(
    new Command("send")
      .description(
        "Append events to the node's spool; `edgectl run` ships them. Input is JSON lines, one event " +
          "each, from --file or stdin: event_type is required; event_id is made when absent (a UUID), " +
          "node_id defaults to the enrolled node, timestamp to now. All lines are checked first: a bad " +
          "line spools nothing. Prints `spooled N` once the events are on disk (fsynced). " +
          "Exit status 4: the spool is full (--spool-max-bytes with --spool-full=reject, or a full disk).",
      )
      .option("--file <path>", "JSON lines to read (default: stdin)")
      .option("--node-id <id>", "node_id of events that name none (default: the enrolled node)"),
  ).action((opts: SendOptions, cmd: Command) =>
    runSpoolCommand(async () => {
      const global = cmd.optsWithGlobals() as EdgeOptions;
      const text = opts.file === undefined ? readFileSync(0, "utf8") : readFlagFile("--file", opts.file).toString("utf8");
      const payloads = parseEventLines(text, { nodeId: opts.nodeId ?? readState(global.stateDir).nodeId });
      if (payloads.length > 0) {
        const spool = new Spool({ dir: spoolDir(global.stateDir), maxBytes: opts.spoolMaxBytes, full: opts.spoolFull, log: stderrSpoolLog });
        await spool.append(payloads);
        await pokeShipper(global.stateDir);
      }
      process.stdout.write(`spooled ${payloads.length}\n`);
    }),
  );
}

export function eventsCommand(): Command {
  return new Command("events").description("Report events from this node (through its offline spool).").addCommand(sendCommand());
}
