import { createClient } from "@connectrpc/connect";
import { Command } from "commander";
import { createOrchestratorClients } from "../../../clients/index.js";
import { HaQuorumResponseSchema, HaResignResponseSchema, HaService, HaStatusResponseSchema, type HaStatusResponse } from "../../../gen/autonomy/v1/ha_pb.js";
import { escapeControl, formatTable, messageJson, printMessage, printValue, runCommand, UsageError } from "../shared/output.js";
import { clientTls, clientToken } from "../shared/tls-options.js";
import { commandContext, outputOf, withClients } from "./context.js";

interface ReplicaView {
  url: string;
  status?: HaStatusResponse;
  error?: string;
}

const lag = (seconds: number, status: string) => `${seconds.toFixed(seconds < 10 ? 2 : 0)}s ${status}`;

/** `autonomy ha`: the replicas, the leader, the database's standbys, and a leader's resignation. */
export function haCommand(): Command {
  const ha = new Command("ha").description("High availability: replicas sharing one PostgreSQL database, their leader, replication.");
  ha.command("status")
    .description(
      "Each replica's view: whether it leads, the epoch and holder it sees, read/write readiness, replication lag. " +
        "Two replicas claiming leadership (split brain) is reported and exits 1, as does a replica that cannot be reached.",
    )
    .option("--replica <url...>", "replica base URLs to ask (repeatable; default: the configured orchestrator URL)")
    .action((opts: { replica?: string[] }, cmd: Command) =>
      runCommand("autonomy", async () => {
        const ctx = commandContext(cmd);
        const options = ctx.options;
        const urls = opts.replica?.length ? opts.replica : [ctx.target().url];
        for (const u of urls) {
          try {
            new URL(u);
          } catch {
            throw new UsageError(`--replica ${u}: not a URL (e.g. http://10.0.0.2:8888)`);
          }
        }
        const views: ReplicaView[] = await Promise.all(
          urls.map(async (url): Promise<ReplicaView> => {
            const clients = opts.replica?.length
              ? createOrchestratorClients({
                  baseUrl: url,
                  timeoutMs: options.requestTimeout,
                  operator: process.env.AUTONOMY_OPERATOR || undefined,
                  tls: clientTls(options),
                  token: clientToken(options),
                })
              : ctx.clients();
            try {
              return { url, status: await createClient(HaService, clients.transport).haStatus({}) };
            } catch (err) {
              return { url, error: ((await ctx.explain(err)) as Error).message };
            } finally {
              clients.close();
            }
          }),
        );
        const leaders = views.filter((v) => v.status?.thisReplicaIsLeader);
        const epochs = new Set(views.flatMap((v) => (v.status && v.status.currentEpoch > 0 ? [v.status.currentEpoch] : [])));
        const splitBrain = leaders.length > 1;
        const unreachable = views.filter((v) => v.error !== undefined);
        if (options.output !== "text") {
          printValue(options.output, {
            replicas: views.map((v) => ({ url: v.url, ...(v.status ? (messageJson(HaStatusResponseSchema, v.status) as object) : {}), ...(v.error ? { error: v.error } : {}) })),
            leaders: leaders.length,
            split_brain: splitBrain,
          });
        } else {
          const rows = views.map((v) =>
            v.status
              ? [
                  v.url,
                  v.status.mode,
                  v.status.thisReplicaIsLeader ? "yes" : "no",
                  String(v.status.currentEpoch),
                  v.status.holderId || "-",
                  v.status.readReady ? "ready" : "NOT READY",
                  v.status.writeReady ? "ready" : "NOT READY",
                  v.status.mode === "postgres" ? lag(v.status.replicationLagSeconds, v.status.lagStatus) : "-",
                  v.status.reason || "",
                ]
              : [v.url, "-", "-", "-", "-", "unreachable", "unreachable", "-", v.error ?? ""],
          );
          process.stdout.write(formatTable(["REPLICA", "MODE", "LEADER", "EPOCH", "HOLDER", "READ", "WRITE", "LAG", "REASON"], rows.map((r) => r.map((c) => escapeControl(c)))));
          if (leaders.length === 0 && unreachable.length < views.length) process.stdout.write("no replica leads now (an election is under way, or none can reach the database)\n");
          if (epochs.size > 1) process.stdout.write(`replicas see different epochs (${[...epochs].join(", ")}): a leader change is under way\n`);
        }
        if (splitBrain) {
          process.stderr.write(`autonomy: error: split brain: ${leaders.length} replicas claim leadership (${leaders.map((l) => `${l.url} epoch ${l.status!.currentEpoch}`).join(", ")})\n`);
          process.exitCode = 1;
        } else if (unreachable.length > 0) {
          process.stderr.write(`autonomy: error: ${unreachable.length} of ${views.length} replica(s) could not be asked: ${unreachable.map((v) => v.url).join(", ")}\n`);
          process.exitCode = 1;
        }
      }, { format: () => outputOf(cmd) }),
    );
  ha.command("quorum")
    .description("The database's streaming standbys (pg_stat_replication): synchronous count, replay lag and whether it is critical.")
    .action((_opts: unknown, cmd: Command) =>
      withClients(cmd, async (api, options) => {
        const q = await createClient(HaService, api.transport).haQuorum({});
        if (options.output !== "text") return printMessage(options.output, HaQuorumResponseSchema, q);
        const lines = [
          `mode: ${q.mode}`,
          `write ready: ${q.writeReady ? "yes" : "no"}`,
          `synchronous standbys: ${q.syncStandbyCount} of ${q.standbyCount} connected`,
          `replay lag: ${lag(q.replayLagSeconds, q.lagStatus)} (critical above ${q.lagCriticalSeconds}s)`,
        ];
        if (q.message) lines.push(q.message);
        process.stdout.write(escapeControl(lines.join("\n")) + "\n");
        if (q.standbys.length > 0) {
          const rows = q.standbys.map((s) => [s.applicationName, s.state, s.syncState, `${s.replayLagSeconds.toFixed(2)}s`, String(s.replayLagBytes)]);
          process.stdout.write("\n" + formatTable(["STANDBY", "STATE", "SYNC", "REPLAY LAG", "LAG BYTES"], rows.map((r) => r.map((c) => escapeControl(c)))));
        }
      }),
    );
  ha.command("failover")
    .description("Resigns the current leader (from any replica): a follower leads within a second. Refused while replication lag is critical. Audited (category ha).")
    .requiredOption("--reason <text>", "why (kept in the audit record)")
    .action((opts: { reason: string }, cmd: Command) =>
      withClients(cmd, async (api, options) => {
        const r = await createClient(HaService, api.transport).haResign({ reason: opts.reason });
        if (options.output !== "text") return printMessage(options.output, HaResignResponseSchema, r);
        process.stdout.write(escapeControl(`${r.message} (resigned at ${r.resignedAt})`) + "\n");
      }),
    );
  return ha;
}
