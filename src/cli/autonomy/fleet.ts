import { create } from "@bufbuild/protobuf";
import { Command, Option } from "commander";
import { GetFleetStatusResponseSchema, type FleetNode, type GetFleetStatusResponse } from "../../../clients/index.js";
import { escapeControl, formatAge, formatTable, printMessage } from "../shared/output.js";
import { DURATION_HINT, parsePositiveDuration } from "../shared/parse.js";
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
  return fleet;
}
