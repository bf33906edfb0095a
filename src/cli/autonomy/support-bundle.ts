import { createHash } from "node:crypto";
import { existsSync, renameSync, rmSync, writeFileSync } from "node:fs";
import path from "node:path";
import { ConnectError } from "@connectrpc/connect";
import { Command, Option } from "commander";
import type { OrchestratorClients } from "../../../clients/index.js";
import { buildInfo } from "../../build-info.js";
import { redactText } from "../../domain/redact.js";
import { escapeControl, UsageError } from "../shared/output.js";
import { DURATION_HINT, parseDurationSeconds } from "../shared/parse.js";
import { tarGz, type TarEntry } from "../shared/tar.js";
import { commandContext, withClients } from "./context.js";

interface GenerateOptions {
  output?: string;
  since: number;
  force?: boolean;
}

/** One line of the manifest. */
interface ManifestFile {
  path: string;
  part: string;
  bytes: number;
  sha256: string;
}

const stamp = (d: Date) => d.toISOString().replace(/[-:]/g, "").replace(/\.\d+Z$/, "Z");
const sha256 = (b: Buffer) => createHash("sha256").update(b).digest("hex");
const kib = (n: number) => (n < 1024 ? `${n} B` : `${(n / 1024).toFixed(1)} KiB`);

/** Asks for every part, then writes the archive: files under one directory, manifest.json last. */
export async function generateBundle(
  api: OrchestratorClients,
  opts: { file: string; sinceSeconds: number; url: string; progress?: (line: string) => void },
): Promise<{ files: ManifestFile[]; failed: { part: string; error: string }[]; bytes: number }> {
  const created = new Date();
  const dir = `support-bundle-${stamp(created)}`;
  const { parts } = await api.support.listBundleParts({});
  const entries: TarEntry[] = [];
  const files: ManifestFile[] = [];
  const failed: { part: string; error: string }[] = [];
  const add = (part: string, name: string, text: string) => {
    // Redacted on the server already; again here, so an older server cannot leak through.
    const content = Buffer.from(redactText(text), "utf8");
    entries.push({ name: `${dir}/${name}`, content, mtimeMs: created.getTime() });
    files.push({ path: name, part, bytes: content.length, sha256: sha256(content) });
  };
  for (const [i, p] of parts.entries()) {
    const started = performance.now();
    try {
      const res = await api.support.collectBundlePart({ name: p.name, sinceSeconds: BigInt(opts.sinceSeconds) });
      add(p.name, res.fileName, res.content);
      opts.progress?.(`[${i + 1}/${parts.length}] ${p.name}: ${kib(Buffer.byteLength(res.content))} in ${Math.round(performance.now() - started)} ms`);
    } catch (err) {
      const error = ConnectError.from(err).rawMessage;
      failed.push({ part: p.name, error });
      opts.progress?.(`[${i + 1}/${parts.length}] ${p.name}: failed: ${escapeControl(error)}`);
    }
  }
  add("client", "client.json", JSON.stringify({ client: buildInfo(), node: process.version, orchestrator_url: opts.url }, null, 2) + "\n");
  const manifest = {
    created_at: created.toISOString(),
    orchestrator_url: redactText(opts.url),
    since_seconds: opts.sinceSeconds,
    files,
    failed,
  };
  entries.push({ name: `${dir}/manifest.json`, content: Buffer.from(JSON.stringify(manifest, null, 2) + "\n"), mtimeMs: created.getTime() });
  const archive = tarGz(entries);
  // Whole or not at all: a temporary file renamed over the target.
  const tmp = `${opts.file}.partial-${process.pid}`;
  try {
    writeFileSync(tmp, archive, { mode: 0o600 });
    renameSync(tmp, opts.file);
  } catch (err) {
    rmSync(tmp, { force: true });
    throw err;
  }
  return { files, failed, bytes: archive.length };
}

export function supportBundleCommand(): Command {
  const bundle = new Command("support-bundle").description("Diagnostics for incident triage.");
  bundle
    .command("generate")
    .description(
      "Write a .tar.gz of redacted diagnostics: version, flags in effect, health, a metrics snapshot, store statistics, " +
        "audit chain verification, unfinished plans, recent server log lines, and a manifest with a sha256 per file. " +
        "No token, key, private key, URL password or bearer credential is written. Needs the support:bundle permission.",
    )
    .addOption(new Option("--output <file>", "the archive to write (default: support-bundle-TIMESTAMP.tar.gz here)"))
    .addOption(
      new Option("--since <duration>", `how far back log lines reach (${DURATION_HINT}; at most 30d)`).argParser(parseDurationSeconds).default(86_400, "24h"),
    )
    .option("--force", "replace --output if it exists")
    .action((opts: GenerateOptions, cmd: Command) =>
      withClients(cmd, async (api) => {
        if (opts.since > 30 * 86_400) throw new UsageError(`--since: at most 30d`);
        const file = path.resolve(opts.output ?? `support-bundle-${stamp(new Date())}.tar.gz`);
        if (existsSync(file) && !opts.force) throw new UsageError(`--output: ${file} exists (--force replaces it)`);
        const tty = process.stderr.isTTY === true;
        const result = await generateBundle(api, {
          file,
          sinceSeconds: opts.since,
          url: commandContext(cmd).target().url,
          progress: tty ? (line) => process.stderr.write(`${line}\n`) : undefined,
        });
        process.stdout.write(`support bundle written: ${file} (${result.files.length + 1} files, ${kib(result.bytes)})\n`);
        if (result.failed.length > 0) {
          process.stderr.write(`autonomy: ${result.failed.length} part(s) could not be collected: ${result.failed.map((f) => f.part).join(", ")} (see manifest.json)\n`);
          process.exitCode = 1;
        }
      }),
    );
  return bundle;
}
