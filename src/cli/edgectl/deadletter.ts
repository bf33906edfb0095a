import { Command, Option } from "commander";
import { normalizeEvent } from "../../agent/spool/events.js";
import { pokeShipper } from "../../agent/spool/shipper.js";
import { Spool, spoolDir } from "../../agent/spool/spool.js";
import type { DeadletterEntry } from "../../agent/spool/deadletter.js";
import { formatTable, OUTPUT_FORMATS, printValue, runCommand, type OutputFormat } from "../shared/output.js";
import { DURATION_HINT, parsePositiveDuration } from "../shared/parse.js";
import { addSpoolCapOptions, runSpoolCommand, stderrSpoolLog, type SpoolCapOptions } from "./events.js";
import type { EdgeOptions } from "./options.js";


const spoolOf = (cmd: Command, cap?: SpoolCapOptions) =>
  new Spool({ dir: spoolDir((cmd.optsWithGlobals() as EdgeOptions).stateDir), log: stderrSpoolLog, maxBytes: cap?.spoolMaxBytes, full: cap?.spoolFull });

function summary(e: DeadletterEntry): string {
  return e.event ? String(e.event.event_id ?? "-") : `(${e.raw_bytes ?? 0} unreadable bytes)`;
}

export function deadletterCommand(): Command {
  const list = new Command("list")
    .description("List the events set aside: refused by the orchestrator past their retry budget, or damaged on disk.")
    .addOption(new Option("-o, --output <format>", "output format").choices(OUTPUT_FORMATS).default("text"))
    .action((opts: { output: OutputFormat }, cmd: Command) =>
      runCommand("edgectl", async () => {
        const entries = spoolOf(cmd).deadletter.list();
        if (opts.output !== "text") {
          printValue(opts.output, { entries, count: entries.length });
          return;
        }
        const rows = entries.map((e) => [e.id, e.deadlettered_at, e.code, String(e.attempts), summary(e), e.reason]);
        process.stdout.write(formatTable(["ID", "DEADLETTERED", "CODE", "ATTEMPTS", "EVENT", "REASON"], rows));
      }),
    );
  const inspect = new Command("inspect")
    .description("Print one entry as JSON: the event (or the damaged bytes, base64), why and when it was set aside.")
    .argument("<id>", "entry id, from deadletter list")
    .action((id: string, _opts: unknown, cmd: Command) =>
      runCommand("edgectl", async () => {
        const entry = spoolOf(cmd).deadletter.get(id);
        if (!entry) throw new Error(`no deadletter entry "${id}"`);
        process.stdout.write(JSON.stringify(entry, null, 2) + "\n");
      }),
    );
  const retry = addSpoolCapOptions(
    new Command("retry")
      .description(
        "Put entries back into the spool (at its end) and remove them from the deadletter. An entry's " +
          "event may be edited in its file first (deadletter inspect shows it). Damaged bytes with no " +
          "readable event cannot be retried: purge them.",
      )
      .argument("[id]", "entry id, from deadletter list")
      .option("--all", "every entry that holds an event"),
  ).action((id: string | undefined, opts: SpoolCapOptions & { all?: boolean }, cmd: Command) =>
    runSpoolCommand(async () => {
      if ((id === undefined) === !opts.all) throw new Error("deadletter retry: give an entry id or --all");
      const spool = spoolOf(cmd, opts);
      let entries: DeadletterEntry[];
      if (id !== undefined) {
        const entry = spool.deadletter.get(id);
        if (!entry) throw new Error(`no deadletter entry "${id}"`);
        if (!entry.event) throw new Error(`deadletter entry "${id}" holds unreadable bytes, not an event; inspect it, then purge it`);
        entries = [entry];
      } else entries = spool.deadletter.list().filter((e) => e.event);
      const payloads = entries.map((e) => normalizeEvent(e.event, {}, `deadletter entry ${e.id}`));
      if (payloads.length > 0) {
        await spool.append(payloads);
        for (const e of entries) spool.deadletter.remove(e.id);
        await pokeShipper((cmd.optsWithGlobals() as EdgeOptions).stateDir);
      }
      process.stdout.write(`retried ${payloads.length}\n`);
    }),
  );
  const purge = new Command("purge")
    .description("Remove deadletter entries: all of them, or those set aside longer ago than --older-than.")
    .addOption(new Option("--older-than <duration>", `age (${DURATION_HINT})`).argParser(parsePositiveDuration))
    .action((opts: { olderThan?: number }, cmd: Command) =>
      runCommand("edgectl", async () => {
        const before = opts.olderThan === undefined ? undefined : new Date(Date.now() - opts.olderThan);
        process.stdout.write(`purged ${spoolOf(cmd).deadletter.purge(before)}\n`);
      }),
    );
  return new Command("deadletter")
    .description("Events set aside instead of blocking the spool.")
    .addCommand(list)
    .addCommand(inspect)
    .addCommand(retry)
    .addCommand(purge);
}
