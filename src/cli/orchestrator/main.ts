#!/usr/bin/env node
// No V8 heap flags here: a --max-semi-space-size would apply to every thread of the process and
// override the young generation each worker thread is given (the SQLite event page thread's is
// 8 MiB), so the threads would take it three times over in memory (README: Performance).
import { finishProgram } from "../shared/program.js";
import { Command } from "commander";
import { migrateCommand } from "./migrate.js";
import { serveCommand } from "./serve.js";
import { versionCommand } from "./version.js";

const program = new Command("autonomy-orchestrator")
  .description(
    "Self-hosted control plane for fleets of edge nodes. Run `autonomy-orchestrator serve` to start the API on its embedded SQLite store.",
  )
  .addCommand(serveCommand())
  .addCommand(migrateCommand())
  .addCommand(versionCommand())

await finishProgram(program).parseAsync(process.argv);
