import { Command, InvalidArgumentError } from "commander";
import { readState, writeState } from "../../agent/state.js";
import { buildInfo } from "../../build-info.js";
import { escapeControl, UsageError } from "../shared/output.js";
import { collectLabel, withEdgeClients } from "./options.js";

interface EnrollOptions {
  nodeId: string;
  channel: string;
  label?: Record<string, string>;
  clearLabels?: boolean;
}

const label = (value: string, previous?: Record<string, string>) => {
  try {
    return collectLabel(value, previous);
  } catch (err) {
    throw new InvalidArgumentError((err as Error).message);
  }
};

const labelText = (labels: Record<string, string>) =>
  Object.keys(labels).length === 0 ? "no labels" : `labels ${Object.entries(labels).map(([k, v]) => `${k}=${v}`).join(",")}`;

export function enrollCommand(): Command {
  return new Command("enroll")
    .description(
      "Register this node with the orchestrator, or update its channel, and remember its id, channel and labels in the state dir for `edgectl run`. " +
        "Enrolling again without --label keeps the labels the node has; --clear-labels removes them.",
    )
    .requiredOption("--node-id <id>", "this node's id")
    .requiredOption("--channel <name>", "the release channel the node follows")
    .option("--label <key=value>", "a label rollouts can select the node by (repeatable; replaces the node's labels)", label)
    .option("--clear-labels", "remove every label of the node")
    .action((opts: EnrollOptions, cmd: Command) =>
      withEdgeClients(cmd, async (api, target) => {
        if (opts.clearLabels && opts.label) throw new UsageError("--label and --clear-labels exclude each other");
        const stateDir = target.options.stateDir;
        const before = readState(stateDir);
        const { node } = await api.nodes.enrollNode({
          nodeId: opts.nodeId,
          channel: opts.channel,
          labels: opts.label ?? {},
          replaceLabels: opts.clearLabels === true,
          agentVersion: buildInfo().version,
        });
        const n = node!;
        writeState(stateDir, { ...before, nodeId: n.nodeId, channel: n.channel, labels: n.labels });
        const seen = n.lastSeen !== undefined;
        const what = seen || before.nodeId === n.nodeId ? "updated the enrolment of" : "enrolled";
        process.stdout.write(
          escapeControl(`${what} node ${n.nodeId}: channel ${n.channel}, ${labelText(n.labels)}`) +
            "\n" +
            (seen
              ? escapeControl(`the orchestrator sees it ${n.lifecycle}`) + "\n"
              : "next: `edgectl run` on this node; it counts as HEALTHY once its heartbeats arrive\n"),
        );
      }),
    );
}

export { label as parseLabelOption };
