import { writeFileSync } from "node:fs";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { toJsonString } from "@bufbuild/protobuf";
import { timestampNow } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import { diagnoseTransportError, ReleaseSchema, type OrchestratorClients, type Release, type TransportFailure } from "../../clients/index.js";
import type { Logger } from "../observability/logger.js";
import { verifySpecSignature } from "../domain/signatures.js";
import { runHook } from "./hooks.js";
import { followPushStream, type PushState } from "./push.js";
import { takeReapply } from "./reapply.js";
import { writeState, type AgentState } from "./state.js";
import { readLastAck, writeAgentStatus, writeLastAck, type AgentStatus, type LastAck } from "./status.js";
import { WorkloadRunner, type Capacity } from "./workloads/runner.js";

export interface AgentOptions {
  api: OrchestratorClients;
  logger: Logger;
  stateDir: string;
  nodeId: string;
  channel: string;
  labels: Record<string, string>;
  agentVersion: string;
  /** Shell command that installs a release; its exit status decides applied or failed. */
  applyCommand?: string;
  /** Shell command run after a successful install; its exit status decides healthy or failed. */
  healthCommand?: string;
  heartbeatIntervalMs: number;
  pollIntervalMs: number;
  signal: AbortSignal;
  /** Public key (PEM) plan specs must be signed with; else the keys the orchestrator serves. */
  planPublicKeyPem?: string;
  /** The orchestrator's URL, where it came from, and the TLS material, for messages about failures. */
  /** Where the orchestrator is, how to reach it, and the file of the client certificate in use (for `edgectl status`). */
  target: { url: string; source: string; tls?: { ca?: Buffer; cert?: Buffer; key?: Buffer }; certFile?: string };
  /** How long a hook may take to stop after SIGTERM before it is killed (default 5 s). */
  hookGraceMs?: number;
  /** Longest wait between attempts while the orchestrator refuses this node's certificate (default 10 min). */
  refusedBackoffMaxMs?: number;
  /** Keep the push stream open (default); false: learn of releases by polling only. */
  push?: boolean;
  /** Run the replicas the control plane asks for (./workloads/runner.ts), in STATE_DIR/workloads. */
  workloads?: { capacity: Capacity; stopTimeoutMs?: number; debounceMs?: number };
}

/**
 * Checks the signed spec of the plan that moved this node: the signature must verify and the
 * spec must name this plan and release. Resolves with the reason it does not, or undefined.
 */
export async function checkPlanSpec(
  api: OrchestratorClients,
  planId: string,
  releaseId: string,
  pinnedPem: string | undefined,
  signal?: AbortSignal,
): Promise<string | undefined> {
  // Both at once: the spec names its key, and the key list is small.
  const [spec, served] = await Promise.all([
    api.rollouts.getRolloutSpec({ planId }, { signal }),
    pinnedPem === undefined ? api.rollouts.listSigningKeys({}, { signal }) : undefined,
  ]);
  let pem = pinnedPem;
  if (pem === undefined) {
    pem = served?.keys.find((k) => k.keyId === spec.keyId)?.publicKeyPem;
    if (pem === undefined) return `the orchestrator serves no key "${spec.keyId}"`;
  }
  if (!verifySpecSignature(spec.canonicalSpec, spec.signature, pem)) return "its signature does not verify";
  let signed: { plan_id?: unknown; release_id?: unknown };
  try {
    signed = JSON.parse(Buffer.from(spec.canonicalSpec).toString("utf8")) as typeof signed;
  } catch {
    return "the signed spec is not JSON";
  }
  if (signed.plan_id !== planId) return `the signed spec names plan "${String(signed.plan_id)}"`;
  if (signed.release_id !== releaseId) return `the signed spec targets release "${String(signed.release_id)}", not "${releaseId}"`;
  return undefined;
}

const RETRIABLE = [Code.Unavailable, Code.ResourceExhausted, Code.DeadlineExceeded, Code.Unknown, Code.Internal, Code.Aborted, Code.Canceled];

/**
 * Keeps what the agent knows of its connection: it tells a refused certificate (logged once, long
 * backoff) from an orchestrator that cannot be reached (logged when the reason changes), and writes
 * both to status.json for `edgectl status`.
 */
class Connection {
  private state = "connecting";
  private since = new Date().toISOString();
  private message: string | undefined;
  private lastContact: string | undefined;
  private failures = 0;
  private retryInMs: number | undefined;
  lastAck: AgentStatus["last_ack"];
  installing: string | undefined;
  push: PushState | undefined;
  workloads: WorkloadRunner | undefined;
  private readonly startedAt = new Date().toISOString();

  constructor(private readonly opts: AgentOptions) {
    // The last ack of an earlier run, until this run sends one.
    this.lastAck = readLastAck(opts.stateDir, opts.nodeId, (message) => opts.logger.warn(message));
  }

  /** Records an ack the orchestrator took: in status.json and in last-ack.json, which outlives this run. */
  acked(ack: LastAck): void {
    this.lastAck = ack;
    try {
      writeLastAck(this.opts.stateDir, this.opts.nodeId, ack);
    } catch (err) {
      this.opts.logger.warn({ err: (err as Error).message }, "cannot write last-ack.json");
    }
    this.save();
  }

  ok(): void {
    const wasDown = this.state !== "ok";
    if (wasDown && this.failures > 0) this.opts.logger.info({ url: this.opts.target.url, after_failures: this.failures }, "reached the orchestrator again");
    this.lastContact = new Date().toISOString();
    if (wasDown) {
      this.state = "ok";
      this.since = this.lastContact;
      this.message = undefined;
    }
    this.failures = 0;
    this.retryInMs = undefined;
    this.save();
  }

  /** Records a failed call; resolves with how long to wait before the next attempt. */
  async failed(err: unknown): Promise<number> {
    const { logger, target } = this.opts;
    const failure: TransportFailure | undefined = await diagnoseTransportError(err, {
      url: target.url,
      tls: target.tls,
    }).catch(() => undefined);
    this.failures++;
    const state = failure?.kind ?? "error";
    const message = failure?.message ?? ConnectError.from(err).message;
    const refused = state === "tls-cert-refused" || state === "tls-cert-required";
    const maxMs = refused ? (this.opts.refusedBackoffMaxMs ?? 600_000) : 30_000;
    const baseMs = refused ? 30_000 : 250;
    const delay = Math.min(maxMs, baseMs * 2 ** Math.min(this.failures - 1, 12));
    const changed = state !== this.state || message !== this.message;
    if (changed) {
      this.state = state;
      this.since = new Date().toISOString();
      this.message = message;
      if (refused) {
        logger.error(
          { url: target.url, url_source: target.source, reason: state, retry_in_ms: delay },
          `the orchestrator refused this node's certificate (revoked or expired): ${message}; retrying with a long backoff`,
        );
      } else if (failure) {
        logger.warn({ url: target.url, url_source: target.source, reason: state, retry_in_ms: delay }, `cannot reach the orchestrator at ${target.url} (${target.source}): ${message}; will retry`);
      } else {
        logger.warn({ err: message, retry_in_ms: delay }, "the orchestrator answered with an error; will retry");
      }
    } else logger.debug({ reason: state, attempt: this.failures, retry_in_ms: delay }, "still failing");
    this.retryInMs = delay;
    this.save();
    return delay;
  }

  private updates(): string {
    const polling = `polling every ${Math.round(this.opts.pollIntervalMs / 100) / 10}s`;
    if (!this.push) return polling;
    return this.push.state === "open" ? `pushed (stream open since ${this.push.since}); ${polling} as a fallback` : `push stream ${this.push.state}; ${polling}`;
  }

  save(stoppedAt?: string): void {
    const status: AgentStatus = {
      pid: process.pid,
      started_at: this.startedAt,
      updated_at: new Date().toISOString(),
      node_id: this.opts.nodeId,
      channel: this.opts.channel,
      orchestrator_url: this.opts.target.url,
      connection: { state: this.state, since: this.since, message: this.message, last_contact_at: this.lastContact, retry_in_ms: this.retryInMs },
      updates: this.updates(),
      last_ack: this.lastAck,
      installing: this.installing,
      tls_cert_file: this.opts.target.certFile,
      workloads: this.workloads?.snapshot(),
      stopped_at: stoppedAt,
    };
    try {
      writeAgentStatus(this.opts.stateDir, status);
    } catch (err) {
      this.opts.logger.warn({ err: (err as Error).message }, "cannot write status.json");
    }
  }
}

/** Retries an RPC that failed for a reason a retry can cure (server down, busy, refused), with backoff. */
async function retrying<T>(fn: () => Promise<T>, conn: Connection, signal: AbortSignal): Promise<T> {
  for (;;) {
    try {
      const result = await fn();
      conn.ok();
      return result;
    } catch (err) {
      const code = ConnectError.from(err).code;
      if (!RETRIABLE.includes(code) || signal.aborted) throw err;
      const delay = await conn.failed(err);
      await sleep(delay, undefined, { signal });
    }
  }
}

/**
 * The edge agent: enrols, heartbeats, polls the node's desired release, installs it with the
 * apply hook and acknowledges each step (downloading → applied → healthy, or failed), and runs
 * the replicas the control plane asks for. It keeps what the node runs in its state dir, so a
 * restart reports the truth. Resolves when the signal aborts (SIGTERM), after stopping a
 * running hook and the replicas.
 */
export async function runAgent(opts: AgentOptions, state: AgentState): Promise<void> {
  const conn = new Connection(opts);
  conn.save();
  const workloads =
    opts.workloads &&
    (await WorkloadRunner.open({
      ...opts.workloads,
      api: opts.api,
      logger: opts.logger,
      nodeId: opts.nodeId,
      stateDir: path.join(opts.stateDir, "workloads"),
      heartbeatIntervalMs: opts.heartbeatIntervalMs,
      onChange: () => conn.save(),
    }));
  conn.workloads = workloads;
  try {
    await follow(opts, state, conn, workloads);
  } finally {
    // The agent stops: so do its replicas (the control plane places them elsewhere or again).
    await workloads?.close();
    conn.save(new Date().toISOString());
  }
  opts.logger.info("stopped");
}

/** The agent's loop, until the signal aborts: enrol, then heartbeat, poll and install, the push stream and the workload reports beside it. */
async function follow(opts: AgentOptions, state: AgentState, conn: Connection, workloads: WorkloadRunner | undefined): Promise<void> {
  const { api, logger, signal, nodeId } = opts;
  const save = () => writeState(opts.stateDir, state);
  const enrolment = { nodeId, channel: opts.channel, labels: opts.labels, agentVersion: opts.agentVersion };
  await retrying(() => api.nodes.enrollNode(enrolment, { signal }), conn, signal);
  Object.assign(state, { nodeId, channel: opts.channel, labels: opts.labels });
  save();
  logger.info({ node_id: nodeId, channel: opts.channel, runs: state.currentReleaseId ?? null }, "enrolled; running");
  workloads?.start(signal);

  // Acks the server has confirmed, so an ack lost to a network failure is sent again.
  const confirmedHealthy = new Set<string>();
  // Plans whose signed spec verified (plan id → release id), and those refused (logged once).
  const verifiedPlans = new Map<string, string>();
  const refusedPlans = new Set<string>();
  const planAllows = async (planId: string, release: Release): Promise<boolean> => {
    if (planId === "" || verifiedPlans.get(planId) === release.releaseId) return true;
    const refusal = await checkPlanSpec(api, planId, release.releaseId, opts.planPublicKeyPem, signal);
    if (refusal === undefined) {
      verifiedPlans.set(planId, release.releaseId);
      logger.info(
        { plan_id: planId, release_id: release.releaseId, key: opts.planPublicKeyPem ? "pinned (--plan-public-key-file)" : "served by the orchestrator" },
        "verified the signed rollout plan",
      );
      return true;
    }
    if (!refusedPlans.has(planId)) {
      refusedPlans.add(planId);
      logger.error({ plan_id: planId, release_id: release.releaseId, refusal }, "refusing to act on a rollout plan whose signed spec does not check out");
    }
    return false;
  };
  const ackRequest = (release: Release, ackState: string, message: string) => ({
    releaseId: release.releaseId,
    nodeId,
    state: ackState,
    message,
    reportedReleaseId: state.currentReleaseId ?? "",
    observedAt: timestampNow(),
  });
  const acked = (release: Release, ackState: string, message: string) => {
    conn.acked({ release_id: release.releaseId, state: ackState, at: new Date().toISOString(), message: message || undefined });
  };
  const ack = async (release: Release, ackState: string, message = "") => {
    await retrying(() => api.releases.upsertAck(ackRequest(release, ackState, message), { signal }), conn, signal);
    acked(release, ackState, message);
  };
  /** The last word of a stopping agent: one attempt, not tied to the stop signal, a few seconds at most. */
  const finalAck = async (release: Release, message: string) => {
    try {
      await api.releases.upsertAck(ackRequest(release, "failed", message), { timeoutMs: 5000 });
      acked(release, "failed", message);
      logger.warn({ release_id: release.releaseId, message }, "acknowledged failed: interrupted");
    } catch (err) {
      logger.warn({ release_id: release.releaseId, err: ConnectError.from(err).message }, "could not acknowledge the interrupted install");
    }
  };

  const install = async (release: Release) => {
    const log = logger.child({ release_id: release.releaseId, version: release.version });
    log.info("installing");
    await ack(release, "downloading");
    const releaseFile = path.join(opts.stateDir, "desired-release.json");
    writeFileSync(releaseFile, toJsonString(ReleaseSchema, release, { useProtoFieldName: true }));
    const env = {
      AUTONOMY_NODE_ID: nodeId,
      AUTONOMY_RELEASE_ID: release.releaseId,
      AUTONOMY_RELEASE_VERSION: release.version,
      AUTONOMY_RELEASE_CHANNEL: release.channel,
      AUTONOMY_RELEASE_FILE: releaseFile,
    };
    const fail = async (message: string) => {
      state.failedReleaseId = release.releaseId;
      save();
      log.warn({ message }, "install failed");
      await ack(release, "failed", message);
    };
    const hook = async (name: "apply" | "health", command: string): Promise<boolean> => {
      log.info({ hook: name, command }, `running the ${name} command`);
      const result = await runHook(name, command, env, signal, log, opts.hookGraceMs);
      if (result.interrupted) {
        await finalAck(release, `interrupted: the agent was stopped during the ${name} command`);
        return false;
      }
      if (result.code !== 0) {
        await fail(`${name} command exited with status ${result.code}${result.output ? `: ${result.output}` : ""}`);
        return false;
      }
      return true;
    };
    conn.installing = release.releaseId;
    try {
      if (opts.applyCommand && !(await hook("apply", opts.applyCommand))) return;
      if (signal.aborted) return;
      await ack(release, "applied");
      if (opts.healthCommand && !(await hook("health", opts.healthCommand))) return;
    } finally {
      conn.installing = undefined;
    }
    // Booted into the release and checked: from now on the node reports running it.
    state.currentReleaseId = release.releaseId;
    state.failedReleaseId = undefined;
    save();
    await ack(release, "healthy");
    confirmedHealthy.add(release.releaseId);
    log.info("healthy");
  };

  let nextHeartbeat = 0;
  let nextPoll = 0;
  // The push stream brings the next poll forward; the loop's sleep ends when it does.
  let wake: (() => void) | undefined;
  let pushes = 0;
  const pushed =
    opts.push === false
      ? Promise.resolve()
      : followPushStream({
          api,
          logger,
          nodeId,
          signal,
          afterSequence: BigInt(state.pushSequence ?? "0"),
          onWorkloadCommand: (command) => workloads?.handle(command),
          onChange: () => {
            pushes++;
            nextPoll = 0;
            wake?.();
          },
          onSequence: (sequence) => {
            state.pushSequence = String(sequence);
            save();
          },
          onState: (s) => {
            conn.push = s;
            conn.save();
            // Back in touch: say at once what runs (the answer lists what is still to do).
            if (s.state === "open") workloads?.reportSoon();
          },
        });
  while (!signal.aborted) {
    try {
      if (Date.now() >= nextHeartbeat) {
        await api.nodes.heartbeat({ nodeId, reportedReleaseId: state.currentReleaseId ?? "", agentVersion: opts.agentVersion }, { signal });
        conn.ok();
        nextHeartbeat = Date.now() + opts.heartbeatIntervalMs;
      }
      if (Date.now() >= nextPoll) {
        const before = pushes;
        const { release, planId, reapplyToken } = await api.nodes.getDesiredRelease({ nodeId }, { signal });
        // A push during the poll may be about a change it did not see yet: poll again.
        nextPoll = pushes === before ? Date.now() + opts.pollIntervalMs : 0;
        const reapply = takeReapply(state, release, reapplyToken, save, logger);
        if (release && release.releaseId !== state.failedReleaseId && (await planAllows(planId, release))) {
          if (reapply || release.releaseId !== state.currentReleaseId) await install(release);
          else if (!confirmedHealthy.has(release.releaseId)) {
            await ack(release, "healthy");
            confirmedHealthy.add(release.releaseId);
          }
        }
      }
    } catch (err) {
      if (signal.aborted) break;
      const e = ConnectError.from(err);
      let delay = Math.min(opts.heartbeatIntervalMs, opts.pollIntervalMs, 5_000);
      if (e.code === Code.NotFound) {
        // The orchestrator forgot the node (a fresh database): enrol again.
        logger.warn({ err: e.message }, "the orchestrator does not know this node; enrolling again");
        await api.nodes.enrollNode(enrolment, { signal }).catch(() => {});
      } else delay = Math.max(delay, await conn.failed(err));
      nextHeartbeat = nextPoll = Date.now() + delay;
    }
    const wait = Math.max(0, Math.min(nextHeartbeat, nextPoll) - Date.now());
    const woken = new AbortController();
    wake = () => woken.abort();
    await sleep(wait, undefined, { signal: AbortSignal.any([signal, woken.signal]) }).catch(() => {});
    wake = undefined;
  }
  await pushed;
}
