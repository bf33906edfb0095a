import type { Node } from "../../gen/autonomy/v1/nodes_pb.js";
import { ValidationError } from "./errors.js";
import { checkId, checkText, MAX_LABEL_VALUE_BYTES } from "./fields.js";

/**
 * Lifecycle of a node, computed from stored facts when read:
 * DRAINING (an operator drained it) wins; else HEALTHY (seen within the stale threshold),
 * STALE (seen within UNAVAILABLE_FACTOR thresholds), UNAVAILABLE (never seen, or longer ago).
 */
export const LIFECYCLES = ["HEALTHY", "STALE", "DRAINING", "UNAVAILABLE"] as const;
export type Lifecycle = (typeof LIFECYCLES)[number];
export const UNAVAILABLE_FACTOR = 5;

export const MAX_LABELS = 64;
export const DEFAULT_PAGE_SIZE = 1000;
export const MAX_PAGE_SIZE = 1000;

/** When a node counts as seen; undefined when it never was. */
export interface Liveness {
  drained: boolean;
  lastSeenMs: number | undefined;
}

export function nodeLifecycle(n: Liveness, nowMs: number, staleAfterMs: number): Lifecycle {
  if (n.drained) return "DRAINING";
  if (n.lastSeenMs === undefined) return "UNAVAILABLE";
  const age = nowMs - n.lastSeenMs;
  if (age <= staleAfterMs) return "HEALTHY";
  if (age <= staleAfterMs * UNAVAILABLE_FACTOR) return "STALE";
  return "UNAVAILABLE";
}

/** Liveness of a node message (last_seen in milliseconds). */
export function livenessOf(node: Node): Liveness {
  const ts = node.lastSeen;
  return {
    drained: node.drained,
    lastSeenMs: ts === undefined ? undefined : Number(ts.seconds) * 1000 + Math.floor(ts.nanos / 1e6),
  };
}

/** Checks an enrolment: node id, channel, bounded labels. */
export function validateEnrollment(req: { nodeId: string; channel: string; labels: Record<string, string>; agentVersion: string }): void {
  checkId(req.nodeId, "node_id", true);
  checkId(req.channel, "channel", true);
  checkText(req.agentVersion, "agent_version");
  const keys = Object.keys(req.labels);
  if (keys.length > MAX_LABELS) throw new ValidationError("labels", `at most ${MAX_LABELS} labels`);
  keys.forEach((key) => {
    checkId(key, "labels", true);
    checkText(req.labels[key], `labels[${key}]`, MAX_LABEL_VALUE_BYTES);
  });
}

/** The page size a list asked for, defaulted and bounded. */
export function pageSize(requested: number | undefined): number {
  if (requested === undefined) return DEFAULT_PAGE_SIZE;
  if (requested < 1 || requested > MAX_PAGE_SIZE) {
    throw new ValidationError("page_size", `must be between 1 and ${MAX_PAGE_SIZE}`);
  }
  return requested;
}

/** Page tokens name the last node id of the previous page; opaque to clients. */
export function encodePageToken(lastNodeId: string): string {
  return Buffer.from(lastNodeId, "utf8").toString("base64url");
}

export function decodePageToken(token: string): string | undefined {
  if (token === "") return undefined;
  const id = /^[A-Za-z0-9_-]+$/.test(token) ? Buffer.from(token, "base64url").toString("utf8") : "";
  if (id === "" || encodePageToken(id) !== token) throw new ValidationError("page_token", "not a token this server issued");
  return id;
}

/** The stale threshold of a fleet query, in milliseconds: the asked one or the server's default. */
export function staleThresholdMs(requestedSeconds: number | undefined, defaultMs: number): number {
  if (requestedSeconds === undefined) return defaultMs;
  if (requestedSeconds < 1) throw new ValidationError("stale_threshold_seconds", "must be at least 1");
  return requestedSeconds * 1000;
}
