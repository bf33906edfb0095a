import { Command, Option } from "commander";
import { DrainNodeResponseSchema, GetNodeSummaryResponseSchema, ListNodesResponseSchema, ListWorkloadNodesResponseSchema, type Node } from "../../../clients/index.js";
import { escapeControl, formatAge, formatFields, formatTable, formatTime, printMessage, subjectOf, UsageError } from "../shared/output.js";
import { withClients } from "./context.js";
import { enrollmentTokenCommand } from "./enrollment-token.js";
import { cpu, mem } from "./workload.js";

const labelsOf = (n: Node) =>
  Object.entries(n.labels)
    .map(([k, v]) => `${k}=${v}`)
    .join(",") || "-";

export function nodeCommand(): Command {
  const node = new Command("node").description("Inspect and drain nodes, and make the one-time tokens they enrol with.");
  node
    .command("list")
    .description("List enrolled nodes with their lifecycle state (HEALTHY, STALE, DRAINING, UNAVAILABLE).")
    .option("--channel <name>", "only nodes of this channel")
    .option("--workloads", "also each node's workload capacity, what the scheduler reserved on it, and its replicas (-o json: the nodes as `autonomy service nodes` gives them)")
    .action((opts: { channel?: string; workloads?: boolean }, cmd: Command) =>
      withClients(cmd, async (api, options) => {
        const nodes: Node[] = [];
        let pageToken = "";
        do {
          const page = await api.nodes.listNodes({ channel: opts.channel, pageToken });
          nodes.push(...page.nodes);
          pageToken = page.nextPageToken;
        } while (pageToken !== "");
        const reporting = opts.workloads ? await api.workloads.listWorkloadNodes({}) : undefined;
        if (options.output !== "text") {
          if (reporting) {
            const ids = new Set(nodes.map((n) => n.nodeId));
            return printMessage(options.output, ListWorkloadNodesResponseSchema, { ...reporting, items: reporting.items.filter((w) => ids.has(w.nodeId)) });
          }
          return printMessage(options.output, ListNodesResponseSchema, { $typeName: "autonomy.v1.ListNodesResponse", nodes, nextPageToken: "" });
        }
        if (nodes.length === 0) return void process.stdout.write("no nodes enrolled\n");
        const header = ["NODE", "CHANNEL", "LIFECYCLE", "LAST SEEN", "RELEASE", "LABELS"];
        const rows = nodes.map((n) => [n.nodeId, n.channel, n.lifecycle, formatAge(n.lastSeen), n.reportedReleaseId || "-", labelsOf(n)]);
        if (reporting) {
          const byId = new Map(reporting.items.map((w) => [w.nodeId, w]));
          header.push("CPU RESERVED/CAPACITY", "MEMORY RESERVED/CAPACITY", "REPLICAS");
          nodes.forEach((n, i) => {
            const w = byId.get(n.nodeId);
            rows[i].push(...(w ? [`${cpu(w.reserved)}/${cpu(w.capacity)}`, `${mem(w.reserved)}/${mem(w.capacity)}`, w.replicaIds.join(",") || "-"] : ["-", "-", "-"]));
          });
        }
        process.stdout.write(formatTable(header, rows));
      }),
    );
  node
    .command("describe")
    .description("Everything the control plane knows about a node: lifecycle, releases, drift, last ack, last events.")
    .argument("[node-id]", "the node")
    .addOption(new Option("--node-id <id>", "the node (older spelling of the argument)").hideHelp())
    .action((positional: string | undefined, opts: { nodeId?: string }, cmd: Command) =>
      withClients(cmd, async (api, options) => {
        const nodeId = subjectOf(positional, opts.nodeId, "node id", "autonomy node describe NODE_ID");
        const s = await api.nodes.getNodeSummary({ nodeId });
        if (options.output !== "text") return printMessage(options.output, GetNodeSummaryResponseSchema, s);
        const n = s.node!;
        process.stdout.write(
          formatFields([
            ["node", n.nodeId],
            ["channel", n.channel],
            ["labels", labelsOf(n)],
            ["lifecycle", `${n.lifecycle}${n.drained ? ` (drained: ${n.drainReason})` : ""}`],
            ["last seen", `${formatTime(n.lastSeen)} (${formatAge(n.lastSeen)})`],
            ["agent", n.agentVersion || "-"],
            ["runs", s.reportedReleaseId || "-"],
            ["desired", s.desiredRelease ? `${s.desiredRelease.releaseId} (${s.desiredRelease.version})` : "-"],
            ["drift", s.drift ? "yes" : "no"],
            ["pinned", n.pinnedReleaseId ? `${n.pinnedReleaseId} since ${formatTime(n.pinnedAt)}: ${n.pinReason}` : "-"],
            ["lock", s.lockFingerprint || "-"],
            [
              "last ack",
              s.lastAck
                ? `${s.lastAck.state} of ${s.lastAck.releaseId} at ${formatTime(s.lastAck.observedAt)}${s.lastAck.message ? `: ${s.lastAck.message}` : ""}`
                : "-",
            ],
          ]),
        );
        if (s.lastEvents.length > 0) {
          process.stdout.write("\nlast event of each type\n");
          const rows = s.lastEvents.map((e) => [e.eventType, formatTime(e.timestamp), e.eventId, String(e.seq)]);
          process.stdout.write(formatTable(["TYPE", "TIMESTAMP", "EVENT ID", "SEQ"], rows));
        }
        if (s.replicas.length > 0) {
          process.stdout.write("\nservice replicas\n");
          const rows = s.replicas.map((r) => [r.replicaId, r.desiredState, r.state, `${r.observedGeneration}/${r.generation}`, String(r.restarts), r.reason || "-"]);
          process.stdout.write(formatTable(["REPLICA", "DESIRED", "STATE", "GEN", "RESTARTS", "REASON"], rows));
        }
      }),
    );
  node
    .command("drain")
    .description("Take a node out of new rollouts (it keeps running what it runs), or put it back with --undo.")
    .argument("[node-id]", "the node")
    .addOption(new Option("--node-id <id>", "the node (older spelling of the argument)").hideHelp())
    .option("--reason <text>", "why (required when draining; recorded in the audit trail)")
    .option("--undo", "undrain the node")
    .action((positional: string | undefined, opts: { nodeId?: string; reason?: string; undo?: boolean }, cmd: Command) =>
      withClients(cmd, async (api, options) => {
        const nodeId = subjectOf(positional, opts.nodeId, "node id", "autonomy node drain NODE_ID --reason TEXT");
        if (!opts.undo && !opts.reason) throw new UsageError("--reason is required when draining (it goes into the audit trail)");
        const res = await api.nodes.drainNode({ nodeId, reason: opts.reason, undrain: opts.undo === true });
        if (options.output !== "text") return printMessage(options.output, DrainNodeResponseSchema, res);
        process.stdout.write(`node ${escapeControl(nodeId)} is ${escapeControl(res.node!.lifecycle)}\n`);
      }),
    );
  node.addCommand(enrollmentTokenCommand());
  return node;
}
