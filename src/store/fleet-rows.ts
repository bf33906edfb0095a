import { create } from "@bufbuild/protobuf";
import { timestampFromMs, timestampMs, type Timestamp } from "@bufbuild/protobuf/wkt";
import { NodeSchema, type Node } from "../../gen/autonomy/v1/nodes_pb.js";
import { NodeAckSchema, ReleaseSchema, type NodeAck, type Release } from "../../gen/autonomy/v1/releases_pb.js";
import type { RowOf } from "./schema-check.js";

/** A node enrolling: what it says of itself. */
export interface Enrollment {
  nodeId: string;
  channel: string;
  labels: Record<string, string>;
  agentVersion: string;
}

/**
 * Rows of the fleet tables as both dialects hold them, from the drizzle schemas (which
 * ./schema-check.ts proves alike). A release's artifacts are canonical JSON ([{name, digest,
 * url}] in the published order); a node's labels a JSON object with sorted keys.
 */
export type ReleaseRow = Omit<RowOf<"releases">, "seq">;
export type NodeRow = RowOf<"nodes">;
export type AckRow = RowOf<"nodeAcks">;

/** What a heartbeat, an ack or an enrolment tells about a node's liveness; coalesced before it is written. */
export interface NodeSighting {
  nodeId: string;
  lastSeenMs: number;
  reportedReleaseId?: string;
  agentVersion?: string;
}

const msOf = (ts: Timestamp | undefined, fallback: number) => (ts === undefined ? fallback : timestampMs(ts));

export function releaseToRow(r: Release, publishedAtMs: number): ReleaseRow {
  return {
    releaseId: r.releaseId,
    channel: r.channel,
    version: r.version,
    artifacts: JSON.stringify(r.artifacts.map((a) => ({ name: a.name, digest: a.digest, url: a.url }))),
    notes: r.notes,
    publishedAtMs,
    staged: r.staged,
  };
}

/** Whether two rows hold the same release content (the publish time aside). */
export function sameReleaseContent(a: ReleaseRow, b: ReleaseRow): boolean {
  return (
    a.releaseId === b.releaseId &&
    a.channel === b.channel &&
    a.version === b.version &&
    a.artifacts === b.artifacts &&
    a.notes === b.notes &&
    a.staged === b.staged
  );
}

export function rowToRelease(r: ReleaseRow): Release {
  return create(ReleaseSchema, {
    releaseId: r.releaseId,
    channel: r.channel,
    version: r.version,
    artifacts: JSON.parse(r.artifacts) as { name: string; digest: string; url: string }[],
    notes: r.notes,
    publishedAt: timestampFromMs(r.publishedAtMs),
    staged: r.staged,
  });
}

export function labelsToJson(labels: Record<string, string>): string {
  return JSON.stringify(Object.fromEntries(Object.keys(labels).sort().map((k) => [k, labels[k]])));
}

export function rowToNode(r: NodeRow): Node {
  return create(NodeSchema, {
    nodeId: r.nodeId,
    channel: r.channel,
    labels: JSON.parse(r.labels) as Record<string, string>,
    agentVersion: r.agentVersion,
    enrolledAt: timestampFromMs(r.enrolledAtMs),
    lastSeen: r.lastSeenMs === null ? undefined : timestampFromMs(r.lastSeenMs),
    reportedReleaseId: r.reportedReleaseId ?? "",
    drained: r.drained,
    drainReason: r.drainReason,
    pinnedReleaseId: r.pinnedReleaseId ?? "",
    pinnedAt: r.pinnedAtMs === null ? undefined : timestampFromMs(r.pinnedAtMs),
    pinReason: r.pinReason,
    reapplyRequestedAt: r.reapplyRequestedAtMs === null ? undefined : timestampFromMs(r.reapplyRequestedAtMs),
    reapplyReleaseId: r.reapplyReleaseId ?? "",
  });
}

/** The row of a validated ack; observed_at defaults to the server's clock. */
export function ackToRow(
  a: { releaseId: string; nodeId: string; state: string; message: string; reportedReleaseId: string; observedAt?: Timestamp },
  nowMs: number,
): AckRow {
  return {
    releaseId: a.releaseId,
    nodeId: a.nodeId,
    state: a.state,
    message: a.message,
    reportedReleaseId: a.reportedReleaseId,
    observedAtMs: msOf(a.observedAt, nowMs),
    updatedAtMs: nowMs,
  };
}

export function rowToAck(r: AckRow): NodeAck {
  return create(NodeAckSchema, {
    releaseId: r.releaseId,
    nodeId: r.nodeId,
    state: r.state,
    message: r.message,
    reportedReleaseId: r.reportedReleaseId,
    observedAt: timestampFromMs(r.observedAtMs),
    updatedAt: timestampFromMs(r.updatedAtMs),
  });
}
