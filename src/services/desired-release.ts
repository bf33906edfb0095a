import type { Node } from "../../gen/autonomy/v1/nodes_pb.js";
import type { Release } from "../../gen/autonomy/v1/releases_pb.js";
import { timestampMs } from "@bufbuild/protobuf/wkt";
import type { Store } from "../store/store.js";

/** What a node should run, and the rollout plan that decided it (none: its channel's latest unstaged release or a pin). */
export interface DesiredRelease {
  release: Release;
  planId?: string;
  /** The release is the node's pin (an operator accepted what it reports). */
  pinned?: boolean;
}

/** What an agent is answered: its desired release, or while an emergency stop is in force, what it runs now. */
export interface AgentDesiredRelease {
  release?: Release;
  planId: string;
  /** Non-empty while an operator's reapply request of this release is pending. */
  reapplyToken: string;
  emergencyStop: boolean;
}

/** Above this many nodes, every node's newest move is read in one query instead of by id. */
const MOVES_BY_ID_LIMIT = 1000;

/**
 * The release each node should run, by node id (undefined: none). This is the one place
 * that decides it. The newest decision wins:
 *
 * - a rollout plan moving the node to its release (the node's newest move, whatever became
 *   of the plan afterwards: a halted, cancelled or aborted plan leaves its nodes where they
 *   are), or a rollback giving it back the release it ran before that move (with no plan:
 *   the node acts on it without a plan to verify; none before: the rule below), or
 * - the latest unstaged release of the node's channel, which every node of the channel
 *   follows from the moment it is published.
 *
 * A pin (`autonomy fleet reconcile --strategy accept`) comes before both, until the node's
 * next move removes it. Staged releases reach nodes only through plans. This is the stored
 * decision, which views show; what an agent is told is agentDesiredRelease's answer.
 */
export async function desiredReleases(store: Store, nodes: readonly Node[]): Promise<Map<string, DesiredRelease | undefined>> {
  const ids = nodes.map((n) => n.nodeId);
  const [moves, channelReleases] = await Promise.all([
    store.newestMoves(ids.length > MOVES_BY_ID_LIMIT ? undefined : ids),
    latestUnstaged(store, nodes),
  ]);
  const released = new Map<string, Promise<Release | undefined>>();
  const releaseOf = (id: string) => {
    let r = released.get(id);
    if (!r) released.set(id, (r = store.getRelease(id)));
    return r;
  };
  const desired = new Map<string, DesiredRelease | undefined>();
  for (const node of nodes) {
    if (node.pinnedReleaseId !== "") {
      const pinned = await releaseOf(node.pinnedReleaseId);
      if (pinned) {
        desired.set(node.nodeId, { release: pinned, pinned: true });
        continue;
      }
    }
    const move = moves.get(node.nodeId);
    const latest = channelReleases.get(node.channel);
    const latestMs = latest?.publishedAt ? timestampMs(latest.publishedAt) : -1;
    if (move && move.movedAtMs >= latestMs) {
      const release = move.releaseId === "" ? undefined : await releaseOf(move.releaseId);
      if (release) {
        desired.set(node.nodeId, move.kind === "restore" ? { release } : { release, planId: move.planId });
        continue;
      }
    }
    desired.set(node.nodeId, latest && { release: latest });
  }
  return desired;
}

async function latestUnstaged(store: Store, nodes: readonly Node[]): Promise<Map<string, Release | undefined>> {
  const channels = [...new Set(nodes.map((n) => n.channel))];
  const releases = await Promise.all(channels.map((c) => store.latestRelease(c, { unstagedOnly: true })));
  return new Map(channels.map((c, i) => [c, releases[i]]));
}

/** The request token of a reapply: the release and the time it was asked for. */
export const reapplyToken = (releaseId: string, requestedAtMs: number) => `${releaseId}@${requestedAtMs}`;

/**
 * What an agent is told to run. While an emergency stop is in force: the release the node
 * reports (none when it reports nothing this server knows), so no install starts and the
 * stored decision stays as it is for after the resume. Otherwise its desired release, with
 * the token of a reapply request still pending (one the node has not acked since).
 */
export async function agentDesiredRelease(store: Store, node: Node): Promise<AgentDesiredRelease> {
  const [stop, desired] = await Promise.all([store.emergencyStop(), desiredReleases(store, [node]).then((d) => d.get(node.nodeId))]);
  if (stop.active) {
    const runs = node.reportedReleaseId === "" ? undefined : await store.getRelease(node.reportedReleaseId);
    return { release: runs, planId: "", reapplyToken: "", emergencyStop: true };
  }
  let token = "";
  const requestedAtMs = node.reapplyRequestedAt ? timestampMs(node.reapplyRequestedAt) : undefined;
  if (desired && requestedAtMs !== undefined && node.reapplyReleaseId === desired.release.releaseId) {
    const ack = (await store.acksOfNode(node.nodeId)).find((a) => a.releaseId === desired.release.releaseId);
    const ackedAtMs = ack?.updatedAt ? timestampMs(ack.updatedAt) : -1;
    if (ackedAtMs < requestedAtMs) token = reapplyToken(desired.release.releaseId, requestedAtMs);
  }
  return { release: desired?.release, planId: desired?.planId ?? "", reapplyToken: token, emergencyStop: false };
}
