import { readFileSync } from "node:fs";
import { fromJson, type JsonValue } from "@bufbuild/protobuf";
import { Command } from "commander";
import YAML from "yaml";
import {
  GetLatestReleaseResponseSchema,
  ListReleaseAcksResponseSchema,
  PublishReleaseResponseSchema,
  ReleaseSchema,
  type Release,
} from "../../../clients/index.js";
import { formatTable, formatTime, printJson } from "../shared/output.js";
import { withClients } from "./context.js";

/** Reads a release file (YAML or JSON; JSON is YAML too) into a Release, naming the file in errors. */
export function readReleaseFile(file: string): Release {
  let parsed: unknown;
  try {
    // Every field of a release is a string: the failsafe schema keeps "1.10" from becoming the number 1.1.
    parsed = YAML.parse(readFileSync(file, "utf8"), { schema: "failsafe" });
    // failsafe reads every scalar as a string; staged is the one boolean.
    const staged = (parsed as { staged?: unknown } | null)?.staged;
    if (staged === "true" || staged === "false") (parsed as { staged: unknown }).staged = staged === "true";
  } catch (err) {
    throw new Error(`${file}: ${(err as NodeJS.ErrnoException).code === "ENOENT" ? "no such file" : (err as Error).message}`);
  }
  if (parsed === null || typeof parsed !== "object" || Array.isArray(parsed)) {
    throw new Error(`${file}: expected a release object (release_id, channel, version, artifacts)`);
  }
  try {
    return fromJson(ReleaseSchema, parsed as JsonValue);
  } catch (err) {
    throw new Error(`${file}: ${(err as Error).message}`);
  }
}

function describeRelease(r: Release): string {
  const lines = [
    `release    ${r.releaseId}`,
    `channel    ${r.channel}`,
    `version    ${r.version}`,
    `published  ${formatTime(r.publishedAt)}`,
    `staged     ${r.staged ? "yes: nodes move to it only through rollout plans" : "no: every node of the channel follows it"}`,
  ];
  if (r.notes) lines.push(`notes      ${r.notes}`);
  lines.push("artifacts");
  for (const a of r.artifacts) lines.push(`  ${a.name}  ${a.digest}${a.url ? `  ${a.url}` : ""}`);
  return lines.join("\n") + "\n";
}

export function releaseCommand(): Command {
  const release = new Command("release").description("Publish releases and follow the nodes' acknowledgements.");
  release
    .command("publish")
    .description(
      "Publish a release from a YAML or JSON file:\n" +
        "  release_id: r-2026-11-23\n  channel: stable\n  version: 1.4.2\n  notes: optional\n" +
        "  staged: true     # optional: nodes move only through rollout plans (autonomy rollout plan create)\n" +
        "  artifacts:\n    - name: app\n      digest: sha256:<64 hex digits>\n      url: https://...   # optional\n" +
        "Releases are immutable: the same id with the same content is a no-op, with other content an error.",
    )
    .requiredOption("--file <path>", "release file (.yaml, .yml or .json)")
    .action((opts: { file: string }, cmd: Command) =>
      withClients(cmd, async (api, options) => {
        const res = await api.releases.publishRelease({ release: readReleaseFile(opts.file) });
        if (options.output === "json") return printJson(PublishReleaseResponseSchema, res);
        const r = res.release!;
        process.stdout.write(
          res.created
            ? `published release ${r.releaseId} (channel ${r.channel}, version ${r.version})\n`
            : `release ${r.releaseId} was already published with this content; nothing changed\n`,
        );
      }),
    );
  release
    .command("latest")
    .description("Show the latest release of a channel.")
    .requiredOption("--channel <name>", "channel name")
    .action((opts: { channel: string }, cmd: Command) =>
      withClients(cmd, async (api, options) => {
        const res = await api.releases.getLatestRelease({ channel: opts.channel });
        if (options.output === "json") return printJson(GetLatestReleaseResponseSchema, res);
        process.stdout.write(describeRelease(res.release!));
      }),
    );
  release
    .command("acks")
    .description("Show every node's acknowledgement of a release (only `healthy` counts as success).")
    .requiredOption("--release-id <id>", "release id")
    .action((opts: { releaseId: string }, cmd: Command) =>
      withClients(cmd, async (api, options) => {
        const res = await api.releases.listReleaseAcks({ releaseId: opts.releaseId });
        if (options.output === "json") return printJson(ListReleaseAcksResponseSchema, res);
        if (res.acks.length === 0) {
          process.stdout.write(`no acks for release ${opts.releaseId} yet\n`);
          return;
        }
        const counts = new Map<string, number>();
        for (const a of res.acks) counts.set(a.state, (counts.get(a.state) ?? 0) + 1);
        const rows = res.acks.map((a) => [a.nodeId, a.state, a.reportedReleaseId || "-", formatTime(a.observedAt), a.message]);
        process.stdout.write(formatTable(["NODE", "STATE", "RUNS", "OBSERVED", "MESSAGE"], rows));
        process.stdout.write(`\n${res.count} acks: ${[...counts].map(([s, n]) => `${n} ${s}`).join(", ")}\n`);
      }),
    );
  return release;
}
