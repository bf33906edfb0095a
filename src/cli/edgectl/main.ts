#!/usr/bin/env node
import { Command } from "commander";
import { usageErrorsExit2 } from "../shared/exit-codes.js";
import { deadletterCommand } from "./deadletter.js";
import { enrollCommand } from "./enroll.js";
import { eventsCommand } from "./events.js";
import { addEdgeGlobalOptions } from "./options.js";
import { runAgentCommand } from "./run.js";
import { spoolCommand } from "./spool.js";
import { throttleCommand } from "./throttle.js";

const program = addEdgeGlobalOptions(new Command("edgectl").description("The edge agent of the autonomy orchestrator, run on every node."))
  .addCommand(enrollCommand())
  .addCommand(runAgentCommand())
  .addCommand(eventsCommand())
  .addCommand(spoolCommand())
  .addCommand(deadletterCommand())
  .addCommand(throttleCommand());

await usageErrorsExit2(program).parseAsync(process.argv);
