#!/usr/bin/env node
import { usageErrorsExit2 } from "../shared/exit-codes.js";
import { Command, Option } from "commander";
import { OUTPUT_FORMATS } from "../shared/output.js";
import { addClientTlsOptions } from "../shared/tls-options.js";
import { auditCommand } from "./audit.js";
import { certCommand } from "./cert.js";
import { configCommand } from "./config.js";
import { fleetCommand } from "./fleet.js";
import { logsCommand } from "./logs.js";
import { nodeCommand } from "./node.js";
import { rbacCommand } from "./rbac.js";
import { releaseCommand } from "./release.js";
import { rollbackCommand, rolloutCommand } from "./rollout.js";

const program = addClientTlsOptions(new Command("autonomy"))
  .description("Operator CLI of the autonomy orchestrator.")
  .option(
    "--orchestrator-url <url>",
    "orchestrator base URL (default: AUTONOMY_ORCHESTRATOR_URL, then orchestrator.url in the config file)",
  )
  .addOption(new Option("--output <format>", "output format").choices(OUTPUT_FORMATS).default("text"))
  .addCommand(fleetCommand())
  .addCommand(logsCommand())
  .addCommand(releaseCommand())
  .addCommand(rolloutCommand())
  .addCommand(rollbackCommand())
  .addCommand(nodeCommand())
  .addCommand(certCommand())
  .addCommand(auditCommand())
  .addCommand(rbacCommand())
  .addCommand(configCommand());

// Global options go before the command (so `audit export --output FILE` can mean a file);
// `--output text|json` is also taken after any command that has no --output of its own.
program.enablePositionalOptions();
const leaves = (cmd: Command): Command[] => (cmd.commands.length === 0 ? [cmd] : cmd.commands.flatMap(leaves));
for (const leaf of leaves(program)) {
  if (!leaf.options.some((o) => o.long === "--output")) {
    leaf.addOption(new Option("--output <format>", "output format").choices(OUTPUT_FORMATS).hideHelp());
  }
}

await usageErrorsExit2(program).parseAsync(process.argv);
