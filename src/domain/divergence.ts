/**
 * The divergence report's rules, pure: which class a diverged node is in, from the evidence
 * the store holds (its acks, its last sighting, the plan that moved it), and the bounds of
 * the report's and reconcile's inputs.
 */
import { ValidationError } from "./errors.js";

export const DIVERGENCE_CLASSES = ["installing", "failed", "stuck", "unexpected"] as const;
export type DivergenceClass = (typeof DIVERGENCE_CLASSES)[number];

export const RECONCILE_STRATEGIES = ["reapply", "accept", "drain"] as const;
export type ReconcileStrategy = (typeof RECONCILE_STRATEGIES)[number];

/** --older-than when not given: ten minutes. */
export const DEFAULT_DIVERGENCE_SECONDS = 600;
/** Longest threshold accepted: a year. */
export const MAX_DIVERGENCE_SECONDS = 366 * 24 * 3600;

/** Ack states of an install still on its way. */
const IN_PROGRESS = new Set(["pending", "downloading", "applied"]);
const FAILED = new Set(["failed", "rolled_back"]);

/** An ack as the classification needs it. */
export interface AckFact {
  releaseId: string;
  state: string;
  updatedAtMs: number;
}

/** What the store knows of a diverged node. */
export interface DivergenceFacts {
  nowMs: number;
  desiredReleaseId: string;
  /** Empty when the node never reported a release. */
  reportedReleaseId: string;
  lastSeenMs?: number;
  /** The node's ack of its desired release. */
  desiredAck?: AckFact;
  /** Whether the node has ever acked the release it reports (any state). */
  ackedReported: boolean;
  /** --node-stale-after: an install whose node or ack has not moved for longer is not progressing. */
  staleAfterMs: number;
}

/**
 * The class of a diverged node, first match wins:
 *
 * - `unexpected`: it reports a release nobody desired for it: one it never acked (nobody asked
 *   it to install that release), or another one after it acked its desired release healthy
 *   (changed by hand since);
 * - `failed`: its ack of the desired release is failed (or rolled_back);
 * - `installing`: that ack is on its way (pending, downloading, applied) and both the ack and
 *   the node's last sighting are more recent than --node-stale-after;
 * - `stuck`: anything else: no ack of the desired release, or no ack or heartbeat progress.
 */
export function classifyDivergence(f: DivergenceFacts): DivergenceClass {
  if (f.reportedReleaseId !== "" && (!f.ackedReported || f.desiredAck?.state === "healthy")) return "unexpected";
  if (f.desiredAck && FAILED.has(f.desiredAck.state)) return "failed";
  const recent = (ms: number | undefined) => ms !== undefined && f.nowMs - ms <= f.staleAfterMs;
  if (f.desiredAck && IN_PROGRESS.has(f.desiredAck.state) && recent(f.desiredAck.updatedAtMs) && recent(f.lastSeenMs)) return "installing";
  return "stuck";
}

const ago = (nowMs: number, ms: number) => {
  const s = Math.max(0, Math.round((nowMs - ms) / 1000));
  return s < 120 ? `${s}s ago` : s < 7200 ? `${Math.round(s / 60)}m ago` : `${Math.round(s / 3600)}h ago`;
};

/** The evidence of a class in one line, for people. */
export function divergenceEvidence(
  f: DivergenceFacts & { lastAck?: AckFact & { message: string }; planId?: string; stageId?: string; movedAtMs?: number; pinned?: boolean },
): string {
  const parts: string[] = [];
  parts.push(f.reportedReleaseId === "" ? "reports no release" : `reports ${f.reportedReleaseId}${f.ackedReported ? "" : " (never acked by this node)"}`);
  parts.push(f.desiredAck ? `ack of ${f.desiredReleaseId}: ${f.desiredAck.state} ${ago(f.nowMs, f.desiredAck.updatedAtMs)}` : `no ack of ${f.desiredReleaseId}`);
  if (f.lastAck && f.lastAck.releaseId !== f.desiredReleaseId) parts.push(`last ack: ${f.lastAck.state} of ${f.lastAck.releaseId} ${ago(f.nowMs, f.lastAck.updatedAtMs)}`);
  if (f.desiredAck && FAILED.has(f.desiredAck.state) && f.lastAck?.releaseId === f.desiredReleaseId && f.lastAck.message !== "") parts.push(`"${f.lastAck.message.slice(0, 200)}"`);
  parts.push(f.lastSeenMs === undefined ? "never seen" : `last seen ${ago(f.nowMs, f.lastSeenMs)}`);
  if (f.planId) parts.push(`moved by plan ${f.planId}${f.stageId ? ` stage ${f.stageId}` : ""}${f.movedAtMs === undefined ? "" : ` ${ago(f.nowMs, f.movedAtMs)}`}`);
  else if (f.pinned) parts.push("pinned");
  else parts.push("follows its channel's latest release");
  return parts.join("; ");
}

/** The threshold of a request in seconds: the default when unset, else 0 to a year. */
export function checkOlderThan(seconds: bigint | undefined, field = "older_than_seconds"): number {
  if (seconds === undefined) return DEFAULT_DIVERGENCE_SECONDS;
  if (seconds < 0n || seconds > BigInt(MAX_DIVERGENCE_SECONDS)) throw new ValidationError(field, `must be 0 to ${MAX_DIVERGENCE_SECONDS} seconds`);
  return Number(seconds);
}

/** A page token of the report: the last row's diverged-since time and node id. */
export function encodeDivergenceToken(divergedSinceMs: number, nodeId: string): string {
  return Buffer.from(JSON.stringify([divergedSinceMs, nodeId])).toString("base64url");
}

export function decodeDivergenceToken(token: string): { divergedSinceMs: number; nodeId: string } | undefined {
  if (token === "") return undefined;
  try {
    const value = JSON.parse(Buffer.from(token, "base64url").toString("utf8")) as unknown;
    if (Array.isArray(value) && value.length === 2 && Number.isSafeInteger(value[0]) && typeof value[1] === "string" && value[1].length <= 256) {
      return { divergedSinceMs: value[0] as number, nodeId: value[1] };
    }
  } catch {
    // falls through to the refusal
  }
  throw new ValidationError("page_token", "not a token this server gave (pass next_page_token as it was)");
}
