#!/usr/bin/env node
import { Command, Option } from "commander";
import { completionCommand } from "../shared/completion.js";
import { OUTPUT_FORMATS } from "../shared/output.js";
import { parsePositiveDuration } from "../shared/parse.js";
import { finishProgram } from "../shared/program.js";
import { addClientTlsOptions } from "../shared/tls-options.js";
import { clientVersionCommand, serverVersion } from "../shared/version.js";
import { auditCommand } from "./audit.js";
import { certCommand } from "./cert.js";
import { configCommand } from "./config.js";
import { emergencyCommand } from "./emergency.js";
import { commandContext, outputOf } from "./context.js";
import { fleetCommand } from "./fleet.js";
import { haCommand } from "./ha.js";
import { logsCommand } from "./logs.js";
import { nodeCommand } from "./node.js";
import { rbacCommand } from "./rbac.js";
import { releaseCommand } from "./release.js";
import { rollbackCommand, rolloutCommand } from "./rollout.js";
import { supportBundleCommand } from "./support-bundle.js";
import { applyCommand, serviceCommand } from "./workload.js";

const outputOption = () => new Option("-o, --output <format>", "output format").choices(OUTPUT_FORMATS);

const program = addClientTlsOptions(new Command("autonomy"))
  .description("Operator CLI of the autonomy orchestrator.")
  .option(
    "--orchestrator-url <url>",
    "orchestrator base URL (default: AUTONOMY_ORCHESTRATOR_URL, then the config context, then orchestrator.url in the config file)",
  )
  .addOption(new Option("--context <name>", "the config context to use (autonomy config use-context)").env("AUTONOMY_CONTEXT"))
  .addOption(outputOption().default("text"))
  .addOption(
    new Option("--request-timeout <duration>", "how long to wait for each answer").argParser(parsePositiveDuration).default(30_000, "30s"),
  )
  .addCommand(fleetCommand())
  .addCommand(logsCommand())
  .addCommand(releaseCommand())
  .addCommand(rolloutCommand())
  .addCommand(rollbackCommand())
  .addCommand(nodeCommand())
  .addCommand(applyCommand())
  .addCommand(serviceCommand())
  .addCommand(emergencyCommand())
  .addCommand(certCommand())
  .addCommand(auditCommand())
  .addCommand(rbacCommand())
  .addCommand(haCommand())
  .addCommand(supportBundleCommand())
  .addCommand(configCommand())
  .addCommand(
    clientVersionCommand(
      "autonomy",
      async (cmd) => {
        const ctx = commandContext(cmd);
        let target;
        try {
          target = ctx.target();
        } catch {
          return undefined;
        }
        const api = ctx.clients();
        try {
          return await serverVersion(api, target.url).catch(async (err: unknown) => {
            const explained = await ctx.explain(err);
            return { url: target.url, error: (explained as Error).message };
          });
        } finally {
          api.close();
        }
      },
      outputOf,
    ),
  )
  .addCommand(completionCommand(() => program));

finishProgram(program);

// Global options go before the command (so `audit export --output FILE` can mean a file);
// `-o, --output text|json|yaml` is also taken after any command that has no --output of its own.
program.enablePositionalOptions();
const leaves = (cmd: Command): Command[] => (cmd.commands.length === 0 ? [cmd] : cmd.commands.flatMap(leaves));
for (const leaf of leaves(program)) {
  if (!leaf.options.some((o) => o.long === "--output")) leaf.addOption(outputOption().hideHelp());
}

await program.parseAsync(process.argv);
