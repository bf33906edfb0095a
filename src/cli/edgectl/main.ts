#!/usr/bin/env -S node --max-semi-space-size=1 --max-old-space-size=64
import { Command, Option } from "commander";
import { completionCommand } from "../shared/completion.js";
import { finishProgram } from "../shared/program.js";
import { clientVersionCommand, serverVersion } from "../shared/version.js";
import { OUTPUT_FORMATS, type OutputFormat } from "../shared/output.js";
import { enrollCommand } from "./enroll.js";
import { addEdgeGlobalOptions, edgeClients, edgeTarget, explainEdgeError, requestTimeoutOf } from "./options.js";
import { runAgentCommand } from "./run.js";
import { statusCommand } from "./status.js";

const version = clientVersionCommand(
  "edgectl",
  async (cmd) => {
    let target;
    try {
      target = edgeTarget(cmd);
    } catch {
      return undefined;
    }
    const api = edgeClients(target);
    // The version is a quick look: at most 5s, less when --request-timeout says so.
    const timeoutMs = Math.min(5000, requestTimeoutOf(target));
    try {
      return await serverVersion(api, target.url, timeoutMs).catch(async (err: unknown) => ({
        url: target.url,
        error: ((await explainEdgeError(err, target, timeoutMs)) as Error).message,
      }));
    } finally {
      api.close();
    }
  },
  (cmd) => (cmd.opts().output as OutputFormat | undefined) ?? "text",
).addOption(new Option("-o, --output <format>", "output format").choices(OUTPUT_FORMATS).default("text"));
import { deadletterCommand } from "./deadletter.js";
import { eventsCommand } from "./events.js";
import { spoolCommand } from "./spool.js";
import { throttleCommand } from "./throttle.js";

const program = addEdgeGlobalOptions(new Command("edgectl").description("The edge agent of the autonomy orchestrator, run on every node."))
  .addCommand(enrollCommand())
  .addCommand(runAgentCommand())
  .addCommand(statusCommand())
  .addCommand(eventsCommand())
  .addCommand(spoolCommand())
  .addCommand(deadletterCommand())
  .addCommand(throttleCommand())
  .addCommand(version)
  .addCommand(completionCommand(() => program));

await finishProgram(program).parseAsync(process.argv);
