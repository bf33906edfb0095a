import { create } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { ReleaseSchema, UpsertAckRequestSchema } from "../gen/autonomy/v1/releases_pb.js";
import { ValidationError } from "../src/domain/errors.js";
import { decodePageToken, encodePageToken, nodeLifecycle, pageSize, staleThresholdMs, validateEnrollment } from "../src/domain/nodes.js";
import { validateAck, validateRelease } from "../src/domain/releases.js";

const DIGEST = `sha256:${"0123456789abcdef".repeat(4)}`;
const good = { releaseId: "r1", channel: "stable", version: "1.0", artifacts: [{ name: "app", digest: DIGEST }] };

describe("validateRelease", () => {
  it("accepts a release pinned by digest", () => {
    expect(() => validateRelease(create(ReleaseSchema, good))).not.toThrow();
  });

  it.each([
    ["no release", undefined, "release: required"],
    ["no id", { ...good, releaseId: "" }, "release.release_id: required"],
    ["no channel", { ...good, channel: "" }, "release.channel: required"],
    ["no version", { ...good, version: "" }, "release.version: required"],
    ["no artifacts", { ...good, artifacts: [] }, "release.artifacts: at least one artifact is required"],
    ["a tag instead of a digest", { ...good, artifacts: [{ name: "app", digest: "latest" }] }, "release.artifacts[0].digest"],
    ["another algorithm", { ...good, artifacts: [{ name: "app", digest: `sha512:${"a".repeat(64)}` }] }, "release.artifacts[0].digest"],
    ["upper-case hex", { ...good, artifacts: [{ name: "app", digest: DIGEST.toUpperCase().replace("SHA256", "sha256") }] }, "release.artifacts[0].digest"],
    ["a short digest", { ...good, artifacts: [{ name: "app", digest: DIGEST.slice(0, -1) }] }, "release.artifacts[0].digest"],
    ["a second artifact without a name", { ...good, artifacts: [good.artifacts[0], { name: "", digest: DIGEST }] }, "release.artifacts[1].name: required"],
    ["two artifacts of one name", { ...good, artifacts: [good.artifacts[0], good.artifacts[0]] }, "release.artifacts[1].name: duplicate"],
    ["an overlong channel", { ...good, channel: "c".repeat(257) }, "release.channel: longer than 256 bytes"],
  ])("refuses %s, naming the field", (_name, init, message) => {
    const r = init === undefined ? undefined : create(ReleaseSchema, init);
    expect(() => validateRelease(r)).toThrow(ValidationError);
    expect(() => validateRelease(r)).toThrow(message);
  });
});

describe("validateAck", () => {
  const ack = { releaseId: "r1", nodeId: "n1", state: "healthy" };
  it.each(["pending", "downloading", "applied", "healthy", "failed", "rolled_back"])("accepts the state %s", (state) => {
    expect(() => validateAck(create(UpsertAckRequestSchema, { ...ack, state }))).not.toThrow();
  });
  it.each([
    ["an unknown state", { ...ack, state: "HEALTHY" }, "state: must be one of pending, downloading"],
    ["no release", { ...ack, releaseId: "" }, "release_id: required"],
    ["no node", { ...ack, nodeId: "" }, "node_id: required"],
    ["an overlong message", { ...ack, message: "m".repeat(4097) }, "message: longer than 4096 bytes"],
    ["a time out of range", { ...ack, observedAt: { seconds: 253402300800n } }, "observed_at: out of range"],
  ])("refuses %s", (_name, init, message) => {
    expect(() => validateAck(create(UpsertAckRequestSchema, init))).toThrow(message);
  });
});

describe("nodeLifecycle", () => {
  const now = 1_000_000;
  const stale = 120_000;
  it.each([
    ["drained wins over fresh", { drained: true, lastSeenMs: now }, "DRAINING"],
    ["never seen", { drained: false, lastSeenMs: undefined }, "UNAVAILABLE"],
    ["seen just now", { drained: false, lastSeenMs: now }, "HEALTHY"],
    ["seen exactly at the threshold", { drained: false, lastSeenMs: now - stale }, "HEALTHY"],
    ["seen just past the threshold", { drained: false, lastSeenMs: now - stale - 1 }, "STALE"],
    ["seen five thresholds ago", { drained: false, lastSeenMs: now - 5 * stale }, "STALE"],
    ["seen longer ago", { drained: false, lastSeenMs: now - 5 * stale - 1 }, "UNAVAILABLE"],
  ])("%s", (_name, liveness, expected) => {
    expect(nodeLifecycle(liveness, now, stale)).toBe(expected);
  });
});

describe("enrolment, pages and thresholds", () => {
  it("refuses an enrolment without a channel or with too many labels", () => {
    const e = { nodeId: "n1", channel: "stable", labels: {}, agentVersion: "" };
    expect(() => validateEnrollment(e)).not.toThrow();
    expect(() => validateEnrollment({ ...e, channel: "" })).toThrow("channel: required");
    const labels = Object.fromEntries(Array.from({ length: 65 }, (_, i) => [`k${i}`, "v"]));
    expect(() => validateEnrollment({ ...e, labels })).toThrow("labels: at most 64 labels");
    expect(() => validateEnrollment({ ...e, labels: { "": "v" } })).toThrow("labels: required");
  });

  it("round-trips page tokens and refuses forged ones", () => {
    for (const id of ["n-1", "ünïcode/node", "a b"]) expect(decodePageToken(encodePageToken(id))).toBe(id);
    expect(decodePageToken("")).toBeUndefined();
    expect(() => decodePageToken("!!")).toThrow("page_token");
    expect(() => decodePageToken("bm9kZQ=")).toThrow("page_token");
  });

  it("bounds page sizes and thresholds", () => {
    expect(pageSize(undefined)).toBe(1000);
    expect(() => pageSize(0)).toThrow("page_size: must be between 1 and 1000");
    expect(() => pageSize(1001)).toThrow("page_size");
    expect(staleThresholdMs(undefined, 120_000)).toBe(120_000);
    expect(staleThresholdMs(60, 120_000)).toBe(60_000);
    expect(() => staleThresholdMs(0, 1)).toThrow("stale_threshold_seconds: must be at least 1");
  });
});
