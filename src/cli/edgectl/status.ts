import { X509Certificate } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import path from "node:path";
import { Command, Option } from "commander";
import { readState } from "../../agent/state.js";
import { readIdentity } from "../../agent/identity.js";
import { readAgentStatus, readLastAck, statusFile } from "../../agent/status.js";
import { Spool, spoolDir } from "../../agent/spool/spool.js";
import { formatBytes } from "../../agent/throttle.js";
import type { WorkloadStatus } from "../../agent/workloads/runner.js";
import { formatFields, OUTPUT_FORMATS, printValue, runCommand, type OutputFormat } from "../shared/output.js";
import { stderrSpoolLog } from "./events.js";
import { readEdgeConfig, type EdgeOptions } from "./options.js";

/** Whether a process with this pid is alive (signal 0 checks without sending anything). */
function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}

function certificateOf(file: string | undefined): { file: string; subject?: string; expires?: string; days_left?: number; error?: string } | undefined {
  if (!file) return undefined;
  try {
    const cert = new X509Certificate(readFileSync(file));
    const expires = new Date(cert.validTo);
    return {
      file,
      subject: cert.subject.replace(/\n/g, ", "),
      expires: expires.toISOString(),
      days_left: Math.floor((expires.getTime() - Date.now()) / 86_400_000),
    };
  } catch (err) {
    return { file, error: (err as Error).message };
  }
}

/** Bytes to one decimal in the largest binary unit that fits: "7.6GiB", "3.1MiB", "512B". */
function approxBytes(bytes: number): string {
  for (const [unit, size] of [["TiB", 1024 ** 4], ["GiB", 1024 ** 3], ["MiB", 1024 ** 2], ["KiB", 1024]] as const) {
    if (bytes >= size) return `${Math.round((bytes / size) * 10) / 10}${unit}`;
  }
  return `${bytes}B`;
}

/** The replicas lines of the text output: capacity and use, how reports go, then one line per replica. */
function workloadFields(w: WorkloadStatus): [string, string][] {
  const fields: [string, string][] = [
    ["capacity", `${w.capacity.cpu_millis}m cpu, ${approxBytes(w.capacity.memory_bytes)} memory (replicas use ${w.usage.cpu_millis}m, ${approxBytes(w.usage.memory_bytes)})`],
    ["workload reports", `${w.reports.state} since ${w.reports.since}${w.reports.last_ok_at ? `; last reported ${w.reports.last_ok_at}` : ""}`],
    ["replicas", w.replicas.length === 0 ? "none" : `${w.replicas.filter((r) => r.state === "running").length} running of ${w.replicas.length}`],
  ];
  for (const r of w.replicas) {
    const restarts = `${r.restarts} restart${r.restarts === 1 ? "" : "s"}`;
    fields.push([`  ${r.replica_id}`, `${r.state}, generation ${r.generation}, ${restarts}${r.reason && r.reason !== r.state ? `: ${r.reason}` : ""}`]);
  }
  return fields;
}

/** `edgectl status`: what the node runs and what its agent last knew, read from the state dir (no call to the orchestrator). */
export function statusCommand(): Command {
  return new Command("status")
    .description(
      "Show this node's id, channel, the release it runs, the last acknowledgement, how the agent reaches the orchestrator " +
        "(and whether its certificate was refused), its replicas (id, state, generation, restarts) with the node's capacity, " +
        "and when the certificate expires. Reads the state dir; calls nothing.",
    )
    .addOption(new Option("-o, --output <format>", "output format").choices(OUTPUT_FORMATS).default("text"))
    .action((opts: { output: OutputFormat }, cmd: Command) =>
      runCommand(
        "edgectl",
        async () => {
          const global = cmd.optsWithGlobals() as EdgeOptions;
          const state = readState(global.stateDir);
          const status = readAgentStatus(global.stateDir);
          // The agent keeps its last ack in last-ack.json too, for when status.json has none (or is gone);
          // either is shown only when it was sent as the node the state dir is enrolled as now.
          const sameNode = state.nodeId === undefined || status?.node_id === state.nodeId;
          const lastAck = (sameNode ? status?.last_ack : undefined) ?? readLastAck(global.stateDir, state.nodeId, (message) => process.stderr.write(`edgectl: ${message}\n`));
          const config = readEdgeConfig(global.stateDir);
          const running = status !== undefined && status.stopped_at === undefined && alive(status.pid);
          const explicit = global.tlsCertFile ?? config["tls-cert-file"];
          const identity = explicit ? undefined : readIdentity(global.stateDir);
          // Without a flag or config.yaml naming one, the certificate the agent last ran with (say from its --tls-cert-file).
          const certFile = explicit ?? status?.tls_cert_file ?? identity?.certPath;
          const byIdentity = identity !== undefined && certFile !== undefined && path.resolve(certFile) === path.resolve(identity.certPath);
          const cert = certificateOf(certFile);
          // The spool as `spool status` reads it; a state dir that never spooled has none (and gets none made here).
          const spool = existsSync(spoolDir(global.stateDir)) ? await new Spool({ dir: spoolDir(global.stateDir), log: stderrSpoolLog }).status() : undefined;
          const enrolled = byIdentity && cert && !cert.error ? { enrolled: true, serial: identity.serial, renew_after: identity.renewAfter } : {};
          const doc = {
            state_dir: global.stateDir,
            node_id: state.nodeId ?? null,
            channel: state.channel ?? null,
            labels: state.labels ?? {},
            release: state.currentReleaseId ?? null,
            failed_release: state.failedReleaseId ?? null,
            agent: status ? { running, pid: status.pid, started_at: status.started_at, stopped_at: status.stopped_at ?? null, updated_at: status.updated_at } : null,
            orchestrator_url: status?.orchestrator_url ?? global.orchestratorUrl ?? config["orchestrator-url"] ?? null,
            connection: status?.connection ?? null,
            updates: status?.updates ?? null,
            spool: spool
              ? { unsent_frames: spool.unsent_frames, unsent_bytes: spool.unsent_bytes, oldest_unsent_at: spool.oldest_unsent_at, deadletter_entries: spool.deadletter_entries }
              : null,
            installing: status?.installing ?? null,
            last_ack: lastAck ?? null,
            workloads: status?.workloads ?? null,
            certificate: cert ? { ...cert, ...enrolled } : null,
          };
          if (opts.output !== "text") return printValue(opts.output, doc);
          if (!state.nodeId) {
            process.stdout.write(`no node enrolled in ${global.stateDir} (edgectl enroll --token TOKEN, or --node-id ID --channel NAME)\n`);
            return;
          }
          const c = status?.connection;
          const fields: [string, string][] = [
            ["node", state.nodeId],
            ["channel", state.channel ?? "-"],
            ["labels", Object.entries(state.labels ?? {}).map(([k, v]) => `${k}=${v}`).join(",") || "-"],
            ["release", state.currentReleaseId ?? "none yet"],
          ];
          if (state.failedReleaseId) fields.push(["failed", `${state.failedReleaseId} (not tried again until another release is desired)`]);
          if (status?.installing) fields.push(["installing", status.installing]);
          fields.push(["last ack", lastAck ? `${lastAck.state} of ${lastAck.release_id} at ${lastAck.at}${lastAck.message ? `: ${lastAck.message}` : ""}` : "-"]);
          fields.push([
            "agent",
            status
              ? running
                ? `running (pid ${status.pid}, since ${status.started_at})`
                : `not running (last ran ${status.started_at} to ${status.stopped_at ?? status.updated_at})`
              : `never ran with this state dir (no ${statusFile(global.stateDir)})`,
          ]);
          if (c) {
            fields.push(["orchestrator", doc.orchestrator_url ?? "-"]);
            const stateText =
              c.state === "ok"
                ? `ok since ${c.since}`
                : c.state === "tls-cert-refused" || c.state === "tls-cert-required"
                  ? `CERTIFICATE REFUSED since ${c.since}: ${c.message ?? ""}`
                  : `${c.state} since ${c.since}${c.message ? `: ${c.message}` : ""}`;
            // A stopped agent's connection is that of its last run, and says so.
            const lastRun = running ? "" : " (when it last ran)";
            fields.push(["connection", stateText + lastRun]);
            fields.push(["last contact", c.last_contact_at ?? "never"]);
            if (running && c.retry_in_ms !== undefined && c.state !== "ok") fields.push(["next try", `in ${Math.round(c.retry_in_ms / 1000)}s after ${status!.updated_at}`]);
            fields.push(["updates", status!.updates + lastRun]);
          }
          if (status?.workloads) fields.push(...workloadFields(status.workloads));
          fields.push([
            "spool",
            !spool
              ? "empty (nothing spooled yet)"
              : (spool.unsent_frames === 0
                  ? "empty"
                  : `${spool.unsent_frames} events unsent (${formatBytes(spool.unsent_bytes)}), the oldest spooled ${spool.oldest_unsent_age_seconds}s ago`) +
                `; ${spool.deadletter_entries} in the deadletter`,
          ]);
          if (cert) {
            fields.push([
              "certificate",
              cert.error
                ? `${cert.file}: unreadable (${cert.error})`
                : `${cert.file}: expires ${cert.expires} (${cert.days_left! < 0 ? "EXPIRED" : `in ${cert.days_left} days`})` +
                    (byIdentity ? `; enrolled, serial ${identity.serial}, renewed by edgectl run from ${identity.renewAfter}` : ""),
            ]);
          } else fields.push(["certificate", "none (token or cleartext)"]);
          process.stdout.write(formatFields(fields));
        },
        { format: () => opts.output },
      ),
    );
}
