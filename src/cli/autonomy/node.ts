import { Command } from "commander";
import { DrainNodeResponseSchema, GetNodeSummaryResponseSchema, ListNodesResponseSchema, type Node } from "../../../clients/index.js";
import { formatAge, formatTable, formatTime, printJson } from "../shared/output.js";
import { withClients } from "./context.js";

const labelsOf = (n: Node) =>
  Object.entries(n.labels)
    .map(([k, v]) => `${k}=${v}`)
    .join(",") || "-";

export function nodeCommand(): Command {
  const node = new Command("node").description("Inspect and drain nodes.");
  node
    .command("list")
    .description("List enrolled nodes with their lifecycle state (HEALTHY, STALE, DRAINING, UNAVAILABLE).")
    .option("--channel <name>", "only nodes of this channel")
    .action((opts: { channel?: string }, cmd: Command) =>
      withClients(cmd, async (api, options) => {
        const nodes: Node[] = [];
        let pageToken = "";
        do {
          const page = await api.nodes.listNodes({ channel: opts.channel, pageToken });
          nodes.push(...page.nodes);
          pageToken = page.nextPageToken;
        } while (pageToken !== "");
        if (options.output === "json") return printJson(ListNodesResponseSchema, { $typeName: "autonomy.v1.ListNodesResponse", nodes, nextPageToken: "" });
        if (nodes.length === 0) return void process.stdout.write("no nodes enrolled\n");
        const rows = nodes.map((n) => [n.nodeId, n.channel, n.lifecycle, formatAge(n.lastSeen), n.reportedReleaseId || "-", labelsOf(n)]);
        process.stdout.write(formatTable(["NODE", "CHANNEL", "LIFECYCLE", "LAST SEEN", "RELEASE", "LABELS"], rows));
      }),
    );
  node
    .command("describe")
    .description("Everything the control plane knows about a node: lifecycle, releases, drift, last ack, last events.")
    .requiredOption("--node-id <id>", "node id")
    .action((opts: { nodeId: string }, cmd: Command) =>
      withClients(cmd, async (api, options) => {
        const s = await api.nodes.getNodeSummary({ nodeId: opts.nodeId });
        if (options.output === "json") return printJson(GetNodeSummaryResponseSchema, s);
        const n = s.node!;
        const lines = [
          `node         ${n.nodeId}`,
          `channel      ${n.channel}`,
          `labels       ${labelsOf(n)}`,
          `lifecycle    ${n.lifecycle}${n.drained ? ` (drained: ${n.drainReason})` : ""}`,
          `last seen    ${formatTime(n.lastSeen)} (${formatAge(n.lastSeen)})`,
          `agent        ${n.agentVersion || "-"}`,
          `runs         ${s.reportedReleaseId || "-"}`,
          `desired      ${s.desiredRelease ? `${s.desiredRelease.releaseId} (${s.desiredRelease.version})` : "-"}`,
          `drift        ${s.drift ? "yes" : "no"}`,
          `lock         ${s.lockFingerprint || "-"}`,
          `last ack     ${s.lastAck ? `${s.lastAck.state} of ${s.lastAck.releaseId} at ${formatTime(s.lastAck.observedAt)}${s.lastAck.message ? `: ${s.lastAck.message}` : ""}` : "-"}`,
        ];
        process.stdout.write(lines.join("\n") + "\n");
        if (s.lastEvents.length > 0) {
          process.stdout.write("\nlast event of each type\n");
          const rows = s.lastEvents.map((e) => [e.eventType, formatTime(e.timestamp), e.eventId, String(e.seq)]);
          process.stdout.write(formatTable(["TYPE", "TIMESTAMP", "EVENT ID", "SEQ"], rows));
        }
      }),
    );
  node
    .command("drain")
    .description("Take a node out of new rollouts (it keeps running what it runs), or put it back with --undo.")
    .requiredOption("--node-id <id>", "node id")
    .option("--reason <text>", "why (required when draining)")
    .option("--undo", "undrain the node")
    .action((opts: { nodeId: string; reason?: string; undo?: boolean }, cmd: Command) =>
      withClients(cmd, async (api, options) => {
        const res = await api.nodes.drainNode({ nodeId: opts.nodeId, reason: opts.reason, undrain: opts.undo === true });
        if (options.output === "json") return printJson(DrainNodeResponseSchema, res);
        process.stdout.write(`node ${opts.nodeId} is ${res.node!.lifecycle}\n`);
      }),
    );
  return node;
}
