import { Command, InvalidArgumentError } from "commander";
import { readState, writeState } from "../../agent/state.js";
import { buildInfo } from "../../build-info.js";
import { runCommand } from "../shared/output.js";
import { collectLabel, edgeClients, type EdgeOptions } from "./options.js";

interface EnrollOptions {
  nodeId: string;
  channel: string;
  label?: Record<string, string>;
}

const label = (value: string, previous?: Record<string, string>) => {
  try {
    return collectLabel(value, previous);
  } catch (err) {
    throw new InvalidArgumentError((err as Error).message);
  }
};

export function enrollCommand(): Command {
  return new Command("enroll")
    .description(
      "Register this node with the orchestrator (or update its channel and labels), and remember\n" +
        "its id, channel and labels in the state dir for `edgectl run`.",
    )
    .requiredOption("--node-id <id>", "this node's id")
    .requiredOption("--channel <name>", "the release channel the node follows")
    .option("--label <key=value>", "a label rollouts can select the node by (repeatable)", label)
    .action((opts: EnrollOptions, cmd: Command) =>
      runCommand("edgectl", async () => {
        const global = cmd.optsWithGlobals() as EdgeOptions;
        const api = edgeClients(global);
        try {
          const labels = opts.label ?? {};
          const { node } = await api.nodes.enrollNode({ nodeId: opts.nodeId, channel: opts.channel, labels, agentVersion: buildInfo().version });
          const state = readState(global.stateDir);
          writeState(global.stateDir, { ...state, nodeId: opts.nodeId, channel: opts.channel, labels });
          process.stdout.write(`enrolled node ${node!.nodeId} on channel ${node!.channel} (${node!.lifecycle})\n`);
        } finally {
          api.close();
        }
      }),
    );
}

export { label as parseLabelOption };
