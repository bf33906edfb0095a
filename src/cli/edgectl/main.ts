#!/usr/bin/env node
import { Command } from "commander";
import { usageErrorsExit2 } from "../shared/exit-codes.js";
import { enrollCommand } from "./enroll.js";
import { addEdgeGlobalOptions } from "./options.js";
import { runAgentCommand } from "./run.js";

const program = addEdgeGlobalOptions(new Command("edgectl").description("The edge agent of the autonomy orchestrator, run on every node."))
  .addCommand(enrollCommand())
  .addCommand(runAgentCommand());

await usageErrorsExit2(program).parseAsync(process.argv);
