import type { Release, UpsertAckRequest } from "../../gen/autonomy/v1/releases_pb.js";
import { ValidationError } from "./errors.js";
import { checkBytes, checkId, checkTimestamp } from "./fields.js";

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
  checkId(r.version, "release.version", true);
  checkBytes(r.notes, "release.notes", MAX_NOTES_BYTES);
  if (r.artifacts.length === 0) throw new ValidationError("release.artifacts", "at least one artifact is required");
  if (r.artifacts.length > MAX_ARTIFACTS) {
    throw new ValidationError("release.artifacts", `at most ${MAX_ARTIFACTS} artifacts`);
  }
  const names = new Set<string>();
  r.artifacts.forEach((a, i) => {
    const at = `release.artifacts[${i}]`;
    checkId(a.name, `${at}.name`, true);
    if (names.has(a.name)) throw new ValidationError(`${at}.name`, `duplicate artifact name "${a.name}"`);
    names.add(a.name);
    if (!DIGEST_PATTERN.test(a.digest)) {
      throw new ValidationError(`${at}.digest`, 'must be "sha256:" followed by 64 lowercase hex digits');
    }
    checkBytes(a.url, `${at}.url`, MAX_URL_BYTES);
  });
}

/** Checks an ack: ids, a known state, bounded message, an in-range observation time. */
export function validateAck(req: UpsertAckRequest): void {
  checkId(req.releaseId, "release_id", true);
  checkId(req.nodeId, "node_id", true);
  if (!isAckState(req.state)) throw new ValidationError("state", `must be one of ${ACK_STATES.join(", ")}`);
  checkBytes(req.message, "message", MAX_ACK_MESSAGE_BYTES);
  checkId(req.reportedReleaseId, "reported_release_id", false);
  if (req.observedAt) checkTimestamp(req.observedAt, "observed_at");
}
