import { spawn } from "node:child_process";
import { writeFileSync } from "node:fs";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { toJsonString } from "@bufbuild/protobuf";
import { timestampNow } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import { ReleaseSchema, type OrchestratorClients, type Release } from "../../clients/index.js";
import type { Logger } from "../observability/logger.js";
import { verifySpecSignature } from "../rollouts/signing.js";
import { writeState, type AgentState } from "./state.js";

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
  const spec = await api.rollouts.getRolloutSpec({ planId }, { signal });
  let pem = pinnedPem;
  if (pem === undefined) {
    const { keys } = await api.rollouts.listSigningKeys({}, { signal });
    pem = keys.find((k) => k.keyId === spec.keyId)?.publicKeyPem;
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

/** Most output of a hook kept for the ack message. */
const MESSAGE_TAIL = 1000;

/** Runs a shell command with the release in its environment; resolves with its status and output tail. */
function runHook(command: string, env: NodeJS.ProcessEnv, signal: AbortSignal): Promise<{ code: number; output: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn("/bin/sh", ["-c", command], { env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"], signal, killSignal: "SIGTERM" });
    let output = "";
    const keep = (chunk: Buffer) => (output = (output + chunk.toString("utf8")).slice(-MESSAGE_TAIL));
    child.stdout.on("data", keep);
    child.stderr.on("data", keep);
    child.once("error", reject);
    child.once("close", (code, sig) => resolve({ code: code ?? (sig ? 128 : 1), output: output.trim() }));
  });
}

/** Retries an RPC that failed for a reason a retry can cure (server down, busy), with backoff. */
async function retrying<T>(what: string, fn: () => Promise<T>, logger: Logger, signal: AbortSignal): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await fn();
    } catch (err) {
      const code = ConnectError.from(err).code;
      const retriable = [Code.Unavailable, Code.ResourceExhausted, Code.DeadlineExceeded, Code.Unknown, Code.Internal, Code.Aborted].includes(code);
      if (!retriable || signal.aborted) throw err;
      const delay = Math.min(30_000, 250 * 2 ** Math.min(attempt, 7));
      logger.warn({ err: ConnectError.from(err).message, attempt, retry_in_ms: delay }, `${what} failed; retrying`);
      await sleep(delay, undefined, { signal });
    }
  }
}

/**
 * The edge agent: enrols, heartbeats, polls the node's desired release, installs it with the
 * apply hook and acknowledges each step (downloading → applied → healthy, or failed). It
 * keeps what the node runs in its state dir, so a restart reports the truth. Resolves when
 * the signal aborts (SIGTERM), after stopping a running hook.
 */
export async function runAgent(opts: AgentOptions, state: AgentState): Promise<void> {
  const { api, logger, signal, nodeId } = opts;
  const save = () => writeState(opts.stateDir, state);
  const enrolment = { nodeId, channel: opts.channel, labels: opts.labels, agentVersion: opts.agentVersion };
  await retrying("enrolment", () => api.nodes.enrollNode(enrolment, { signal }), logger, signal);
  Object.assign(state, { nodeId, channel: opts.channel, labels: opts.labels });
  save();
  logger.info({ node_id: nodeId, channel: opts.channel, runs: state.currentReleaseId ?? null }, "enrolled; running");

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
      return true;
    }
    if (!refusedPlans.has(planId)) {
      refusedPlans.add(planId);
      logger.error({ plan_id: planId, release_id: release.releaseId, refusal }, "refusing to act on a rollout plan whose signed spec does not check out");
    }
    return false;
  };
  const ack = (release: Release, ackState: string, message = "") =>
    retrying(
      `ack ${ackState}`,
      () =>
        api.releases.upsertAck(
          { releaseId: release.releaseId, nodeId, state: ackState, message, reportedReleaseId: state.currentReleaseId ?? "", observedAt: timestampNow() },
          { signal },
        ),
      logger,
      signal,
    );

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
    if (opts.applyCommand) {
      const result = await runHook(opts.applyCommand, env, signal);
      if (signal.aborted) return;
      if (result.code !== 0) return fail(`apply command exited with status ${result.code}${result.output ? `: ${result.output}` : ""}`);
    }
    await ack(release, "applied");
    if (opts.healthCommand) {
      const result = await runHook(opts.healthCommand, env, signal);
      if (signal.aborted) return;
      if (result.code !== 0) return fail(`health command exited with status ${result.code}${result.output ? `: ${result.output}` : ""}`);
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
  while (!signal.aborted) {
    try {
      if (Date.now() >= nextHeartbeat) {
        await api.nodes.heartbeat({ nodeId, reportedReleaseId: state.currentReleaseId ?? "", agentVersion: opts.agentVersion }, { signal });
        nextHeartbeat = Date.now() + opts.heartbeatIntervalMs;
      }
      if (Date.now() >= nextPoll) {
        const { release, planId } = await api.nodes.getDesiredRelease({ nodeId }, { signal });
        nextPoll = Date.now() + opts.pollIntervalMs;
        if (release && release.releaseId !== state.failedReleaseId && (await planAllows(planId, release))) {
          if (release.releaseId !== state.currentReleaseId) await install(release);
          else if (!confirmedHealthy.has(release.releaseId)) {
            await ack(release, "healthy");
            confirmedHealthy.add(release.releaseId);
          }
        }
      }
    } catch (err) {
      if (signal.aborted) break;
      const e = ConnectError.from(err);
      if (e.code === Code.NotFound) {
        // The orchestrator forgot the node (a fresh database): enrol again.
        logger.warn({ err: e.message }, "the orchestrator does not know this node; enrolling again");
        await api.nodes.enrollNode(enrolment, { signal }).catch(() => {});
      } else logger.warn({ err: e.message }, "cannot reach the orchestrator; will retry");
      nextHeartbeat = nextPoll = Date.now() + Math.min(opts.heartbeatIntervalMs, opts.pollIntervalMs, 5_000);
    }
    const wait = Math.max(0, Math.min(nextHeartbeat, nextPoll) - Date.now());
    await sleep(wait, undefined, { signal }).catch(() => {});
  }
  logger.info("stopped");
}
