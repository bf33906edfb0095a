import { create } from "@bufbuild/protobuf";
import { Command, Option } from "commander";
import {
  GetFleetStatusResponseSchema,
  ListDivergedNodesResponseSchema,
  ReconcileNodesResponseSchema,
  type DivergedNode,
  type FleetNode,
  type GetFleetStatusResponse,
} from "../../../clients/index.js";
import { escapeControl, formatAge, formatTable, printMessage, UsageError } from "../shared/output.js";
import { DURATION_HINT, formatDuration, parseDuration, parsePositiveDuration } from "../shared/parse.js";
import { withClients } from "./context.js";

interface StatusOptions {
  channel?: string;
  staleThreshold?: number;
}

export function fleetCommand(): Command {
  const fleet = new Command("fleet").description("The fleet as the control plane sees it.");
  fleet
    .command("status")
    .description(
      "Totals (up, stale, unknown, draining, drifted), the channel's latest release and one row per node. " +
        "Up: seen within the stale threshold. Unknown: never seen since enrolment. " +
        "Drift: the node does not report running its desired release.",
    )
    .option("--channel <name>", "only nodes of this channel (default: every node)")
    .addOption(
      new Option("--stale-threshold <duration>", `a node seen longer ago counts as stale (${DURATION_HINT}; default: the server's --node-stale-after)`).argParser(
        parsePositiveDuration,
      ),
    )
    .action((opts: StatusOptions, cmd: Command) =>
      withClients(cmd, async (api, options) => {
        const staleThresholdSeconds = opts.staleThreshold === undefined ? undefined : Math.ceil(opts.staleThreshold / 1000);
        // Every page: the totals are the same on each, the rows are concatenated.
        let first: GetFleetStatusResponse | undefined;
        const nodes: FleetNode[] = [];
        let pageToken = "";
        do {
          const page = await api.nodes.getFleetStatus({ channel: opts.channel, staleThresholdSeconds, pageToken });
          first ??= page;
          nodes.push(...page.nodes);
          pageToken = page.nextPageToken;
        } while (pageToken !== "");
        const status = create(GetFleetStatusResponseSchema, { ...first, nodes, nextPageToken: "" });
        if (options.output !== "text") return printMessage(options.output, GetFleetStatusResponseSchema, status);
        const t = status.totals!;
        const latest = status.latestRelease;
        const lines = [
          opts.channel ? escapeControl(`channel ${opts.channel}: latest release ${latest ? `${latest.releaseId} (${latest.version})` : "none"}`) : "all channels",
          `nodes: ${t.total} total, ${t.up} up, ${t.stale} stale, ${t.unknown} unknown, ${t.draining} draining, ${t.drifted} drifted`,
        ];
        process.stdout.write(lines.join("\n") + "\n");
        if (nodes.length === 0) return;
        process.stdout.write("\n");
        const rows = nodes.map((n) => [
          n.nodeId,
          n.channel,
          n.lifecycle,
          formatAge(n.lastSeen),
          n.reportedReleaseId || "-",
          n.desiredReleaseId || "-",
          n.drift ? "yes" : "no",
        ]);
        process.stdout.write(formatTable(["NODE", "CHANNEL", "LIFECYCLE", "LAST SEEN", "RELEASE", "DESIRED", "DRIFT"], rows));
      }),
    );
  fleet
    .command("divergence")
    .description(
      "Nodes whose reported release has differed from their desired release for longer than --older-than, longest first, " +
        "classified: installing (acks moving), failed (last ack failed), stuck (no ack or heartbeat progress), " +
        "unexpected (reports a release nobody desired for it, e.g. changed by hand), with the evidence (runbook 04).",
    )
    .option("--channel <name>", "only nodes of this channel (default: every node)")
    .addOption(new Option("--older-than <duration>", `diverged for longer than this (${DURATION_HINT}, or 0)`).argParser(parseDuration).default(600_000, "10m"))
    .action((opts: { channel?: string; olderThan: number }, cmd: Command) =>
      withClients(cmd, async (api, options) => {
        const nodes: DivergedNode[] = [];
        let pageToken = "";
        let olderThanSeconds = BigInt(Math.floor(opts.olderThan / 1000));
        do {
          const page = await api.operations.listDivergedNodes({ channel: opts.channel, olderThanSeconds, pageSize: 1000, pageToken });
          nodes.push(...page.nodes);
          pageToken = page.nextPageToken;
          olderThanSeconds = page.olderThanSeconds;
        } while (pageToken !== "");
        const report = { $typeName: "autonomy.v1.ListDivergedNodesResponse" as const, nodes, nextPageToken: "", olderThanSeconds };
        if (options.output !== "text") return printMessage(options.output, ListDivergedNodesResponseSchema, report);
        if (nodes.length === 0) return void process.stdout.write(`no node diverged for longer than ${olderThanSeconds === 0n ? "0s" : formatDuration(Number(olderThanSeconds) * 1000)}\n`);
        const rows = nodes.map((n) => [
          n.nodeId,
          n.channel,
          n.class,
          n.reportedReleaseId || "-",
          n.desiredReleaseId,
          formatAge(n.divergedSince),
          n.planId || "-",
          n.evidence,
        ]);
        process.stdout.write(formatTable(["NODE", "CHANNEL", "CLASS", "RELEASE", "DESIRED", "DIVERGED", "PLAN", "EVIDENCE"], rows));
      }),
    );
  fleet
    .command("reconcile")
    .description(
      "Bring diverged nodes back: reapply (the agent installs its desired release again, also one it failed before), " +
        "accept (what the node reports becomes its desired release: a pin, removed by the next plan that moves it or --unpin), " +
        "or drain. Each node's outcome is audited. Needs fleet:reconcile.",
    )
    .option("--node-id <id>", "the node to reconcile")
    .option("--all-diverged", "every node `autonomy fleet divergence` lists with the same --channel and --older-than")
    .option("--channel <name>", "with --all-diverged: only nodes of this channel")
    .addOption(new Option("--older-than <duration>", `with --all-diverged: diverged for longer than this (${DURATION_HINT}, or 0; default 10m)`).argParser(parseDuration))
    .addOption(new Option("--strategy <strategy>", "what to do").choices(["reapply", "accept", "drain"]))
    .option("--unpin", "remove the pin an accept made (with --node-id; no --strategy)")
    .requiredOption("--reason <text>", "why (recorded in the audit trail)")
    .action(
      (
        opts: { nodeId?: string; allDiverged?: boolean; channel?: string; olderThan?: number; strategy?: string; unpin?: boolean; reason: string },
        cmd: Command,
      ) =>
        withClients(cmd, async (api, options) => {
          if (!opts.nodeId === !opts.allDiverged) throw new UsageError("name one node (--node-id N) or pass --all-diverged");
          if (!opts.unpin && !opts.strategy) throw new UsageError("--strategy reapply|accept|drain is required (or --unpin)");
          if (opts.unpin && opts.strategy) throw new UsageError("--unpin takes no --strategy");
          const r = await api.operations.reconcileNodes({
            nodeId: opts.nodeId,
            allDiverged: opts.allDiverged,
            channel: opts.channel,
            olderThanSeconds: opts.olderThan === undefined ? undefined : BigInt(Math.floor(opts.olderThan / 1000)),
            strategy: opts.strategy ?? "",
            unpin: opts.unpin,
            reason: opts.reason,
          });
          if (options.output !== "text") return printMessage(options.output, ReconcileNodesResponseSchema, r);
          if (r.outcomes.length > 0) process.stdout.write(formatTable(["NODE", "OUTCOME", "MESSAGE"], r.outcomes.map((o) => [o.nodeId, o.outcome, o.message])));
          process.stdout.write(`${r.done} done, ${r.skipped} skipped\n`);
        }),
    );
  return fleet;
}
