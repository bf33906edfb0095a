import type { Release, UpsertAckRequest } from "../../gen/autonomy/v1/releases_pb.js";
import { ValidationError } from "./errors.js";
import { timestampMs } from "@bufbuild/protobuf/wkt";
import { checkBytes, checkId, checkText, checkTimestamp } from "./fields.js";

/** A digest that pins an artifact's content: "sha256:" and 64 lowercase hex digits. */
export const DIGEST_PATTERN = /^sha256:[0-9a-f]{64}$/;
export const MAX_ARTIFACTS = 256;
export const MAX_URL_BYTES = 2048;
export const MAX_NOTES_BYTES = 64 * 1024;
export const MAX_ACK_MESSAGE_BYTES = 4096;

/** The states an ack may report. Only `healthy` counts as success for a rollout. */
export const ACK_STATES = ["pending", "downloading", "applied", "healthy", "failed", "rolled_back"] as const;
export type AckState = (typeof ACK_STATES)[number];

export function isAckState(s: string): s is AckState {
  return (ACK_STATES as readonly string[]).includes(s);
}

/** Checks a release before it is published: ids, version, and every artifact's digest. */
export function validateRelease(r: Release | undefined): asserts r is Release {
  if (r === undefined) throw new ValidationError("release", "required");
  checkId(r.releaseId, "release.release_id", true);
  checkId(r.channel, "release.channel", true);
  if (r.version === "") throw new ValidationError("release.version", "required");
  checkText(r.version, "release.version");
  checkBytes(r.notes, "release.notes", MAX_NOTES_BYTES);
  if (r.artifacts.length === 0) throw new ValidationError("release.artifacts", "at least one artifact is required");
  if (r.artifacts.length > MAX_ARTIFACTS) {
    throw new ValidationError("release.artifacts", `at most ${MAX_ARTIFACTS} artifacts`);
  }
  const names = new Set<string>();
  r.artifacts.forEach((a, i) => {
    const at = `release.artifacts[${i}]`;
    if (a.name === "") throw new ValidationError(`${at}.name`, "required");
    checkText(a.name, `${at}.name`);
    if (names.has(a.name)) throw new ValidationError(`${at}.name`, `duplicate artifact name "${a.name}"`);
    names.add(a.name);
    if (!DIGEST_PATTERN.test(a.digest)) {
      throw new ValidationError(`${at}.digest`, 'must be "sha256:" followed by 64 lowercase hex digits');
    }
    checkBytes(a.url, `${at}.url`, MAX_URL_BYTES);
  });
}

/**
 * How far ahead of the server's clock an ack's observed_at may be. Stale acks are ignored, so
 * a node whose ack claimed a far future time would pin it against every later one.
 */
export const MAX_ACK_CLOCK_SKEW_MS = 5 * 60_000;

/** Checks an ack: ids, a known state, bounded message, an observation time in range and not ahead of the server's clock. */
export function validateAck(req: UpsertAckRequest, nowMs = Date.now()): void {
  checkId(req.releaseId, "release_id", true);
  checkId(req.nodeId, "node_id", true);
  if (!isAckState(req.state)) throw new ValidationError("state", `must be one of ${ACK_STATES.join(", ")}`);
  checkBytes(req.message, "message", MAX_ACK_MESSAGE_BYTES);
  checkId(req.reportedReleaseId, "reported_release_id", false);
  if (req.observedAt) {
    checkTimestamp(req.observedAt, "observed_at");
    if (timestampMs(req.observedAt) > nowMs + MAX_ACK_CLOCK_SKEW_MS) {
      throw new ValidationError("observed_at", `more than ${MAX_ACK_CLOCK_SKEW_MS / 60_000} minutes ahead of the server's clock (${new Date(nowMs).toISOString()})`);
    }
  }
}
