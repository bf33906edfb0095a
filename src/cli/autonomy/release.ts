import { Command, Option } from "commander";
import {
  GetLatestReleaseResponseSchema,
  ListChannelReleasesResponseSchema,
  ListReleaseAcksResponseSchema,
  PublishReleaseResponseSchema,
  ReleaseSchema,
  type Release,
} from "../../../clients/index.js";
import { escapeControl, formatFields, formatTable, formatTime, messageJson, printMessage, printValue, subjectOf } from "../shared/output.js";
import { readSpecFile } from "../shared/spec-file.js";
import { withClients } from "./context.js";

const DIGEST = /^sha256:[0-9a-f]{64}$/;

/** Reads a release file (YAML or JSON), with errors that name the file, the line and the field. */
export function readReleaseFile(file: string): Release {
  return readSpecFile(file, ReleaseSchema, "a release (release_id, channel, version, artifacts)", {
    "Artifact.digest": (v) => (DIGEST.test(v) ? undefined : `"${v}" is not a digest: expected sha256: and 64 lower-case hex digits`),
  });
}

function describeRelease(r: Release): string {
  const fields: [string, string][] = [
    ["release", r.releaseId],
    ["channel", r.channel],
    ["version", r.version],
    ["published", formatTime(r.publishedAt)],
    ["staged", r.staged ? "yes: nodes move to it only through rollout plans" : "no: every node of the channel follows it"],
  ];
  if (r.notes) fields.push(["notes", r.notes]);
  let text = formatFields(fields) + "artifacts\n";
  for (const a of r.artifacts) text += `  ${escapeControl(a.name)}  ${escapeControl(a.digest)}${a.url ? `  ${escapeControl(a.url)}` : ""}\n`;
  return text;
}

export function releaseCommand(): Command {
  const release = new Command("release").description("Publish releases and follow the nodes' acknowledgements.");
  release
    .command("publish")
    .description(
      "Publish a release from a YAML or JSON file. Releases are immutable: the same id with the same content is a no-op, with other content an error.",
    )
    .addHelpText(
      "after",
      "\nRelease file:\n" +
        "  release_id: r-2026-11-23\n  channel: stable\n  version: 1.4.2\n  notes: optional\n" +
        "  staged: true     # optional (true/false, yes/no): nodes move only through rollout plans\n" +
        "  artifacts:\n    - name: app\n      digest: sha256:<64 hex digits>\n      url: https://...   # optional\n",
    )
    .requiredOption("--file <path>", "release file (.yaml, .yml or .json)")
    .action((opts: { file: string }, cmd: Command) =>
      withClients(cmd, async (api, options) => {
        const res = await api.releases.publishRelease({ release: readReleaseFile(opts.file) });
        if (options.output !== "text") return printMessage(options.output, PublishReleaseResponseSchema, res);
        const r = res.release!;
        process.stdout.write(
          escapeControl(
            res.created
              ? `published release ${r.releaseId} (channel ${r.channel}, version ${r.version})`
              : `release ${r.releaseId} was already published with this content; nothing changed`,
          ) + "\n",
        );
      }),
    );
  release
    .command("list")
    .description(
      "List the releases that matter to each channel now (its latest, those its rollout plans target, those its nodes should run or report running), newest first, with the nodes' acks.",
    )
    .argument("[channel]", "only this channel (default: every channel with enrolled nodes)")
    .addOption(new Option("--channel <name>", "only this channel (older spelling of the argument)").hideHelp())
    .action((positional: string | undefined, opts: { channel?: string }, cmd: Command) =>
      withClients(cmd, async (api, options) => {
        const one = positional ?? opts.channel;
        if (positional !== undefined && opts.channel !== undefined && positional !== opts.channel) {
          subjectOf(positional, opts.channel, "channel", "autonomy release list [CHANNEL]");
        }
        const channels = one !== undefined ? [one] : (await api.nodes.getFleetOverview({})).channels.map((c) => c.channel).sort();
        const lists = await Promise.all(channels.map((channel) => api.releases.listChannelReleases({ channel })));
        if (options.output !== "text") {
          return printValue(options.output, {
            channels: lists.map((l, i) => ({ channel: channels[i], ...(messageJson(ListChannelReleasesResponseSchema, l) as object) })),
          });
        }
        const rows = lists.flatMap((l, i) =>
          l.releases.map((cr) => {
            const r = cr.release!;
            const acks = cr.acks.map((a) => `${a.nodes} ${a.state}`).join(", ") || "-";
            return [
              channels[i],
              r.releaseId,
              r.version,
              formatTime(r.publishedAt),
              r.staged ? "yes" : "no",
              cr.latest ? "yes" : "",
              `${cr.desiredBy}/${l.channelNodes}`,
              `${cr.reportedBy}/${l.channelNodes}`,
              acks,
              cr.planIds.join(",") || "-",
            ];
          }),
        );
        if (rows.length === 0) {
          process.stdout.write(one !== undefined ? `no release on channel ${escapeControl(one)}\n` : "no releases\n");
          return;
        }
        process.stdout.write(formatTable(["CHANNEL", "RELEASE", "VERSION", "PUBLISHED", "STAGED", "LATEST", "DESIRED", "RUNNING", "ACKS", "PLANS"], rows));
      }),
    );
  release
    .command("latest")
    .description("Show the latest release of a channel.")
    .requiredOption("--channel <name>", "channel name")
    .action((opts: { channel: string }, cmd: Command) =>
      withClients(cmd, async (api, options) => {
        const res = await api.releases.getLatestRelease({ channel: opts.channel });
        if (options.output !== "text") return printMessage(options.output, GetLatestReleaseResponseSchema, res);
        process.stdout.write(describeRelease(res.release!));
      }),
    );
  release
    .command("acks")
    .description("Show every node's acknowledgement of a release (only `healthy` counts as success).")
    .argument("[release-id]", "the release")
    .addOption(new Option("--release-id <id>", "the release (older spelling of the argument)").hideHelp())
    .action((positional: string | undefined, opts: { releaseId?: string }, cmd: Command) =>
      withClients(cmd, async (api, options) => {
        const releaseId = subjectOf(positional, opts.releaseId, "release id", "autonomy release acks RELEASE_ID");
        const res = await api.releases.listReleaseAcks({ releaseId });
        if (options.output !== "text") return printMessage(options.output, ListReleaseAcksResponseSchema, res);
        if (res.acks.length === 0) {
          process.stdout.write(`no acks for release ${escapeControl(releaseId)} yet\n`);
          return;
        }
        const counts = new Map<string, number>();
        for (const a of res.acks) counts.set(a.state, (counts.get(a.state) ?? 0) + 1);
        const rows = res.acks.map((a) => [a.nodeId, a.state, a.reportedReleaseId || "-", formatTime(a.observedAt), a.message]);
        process.stdout.write(formatTable(["NODE", "STATE", "RUNS", "OBSERVED", "MESSAGE"], rows));
        process.stdout.write(`\n${res.count} acks: ${escapeControl([...counts].map(([s, n]) => `${n} ${s}`).join(", "))}\n`);
      }),
    );
  return release;
}
