import { create } from "@bufbuild/protobuf";
import { timestampFromMs, timestampMs } from "@bufbuild/protobuf/wkt";
import { DivergedNodeSchema, type DivergedNode } from "../../gen/autonomy/v1/operations_pb.js";
import type { NodeAck } from "../../gen/autonomy/v1/releases_pb.js";
import { classifyDivergence, DIVERGENCE_CLASSES, divergenceEvidence, type AckFact, type DivergenceClass, type DivergenceFacts } from "../domain/divergence.js";
import type { DivergedRow } from "../store/operation-rows.js";
import type { SightingBuffer } from "../store/sightings.js";
import type { Store } from "../store/store.js";

export interface DivergenceDeps {
  store: Store;
  sightings: SightingBuffer;
  /** --node-stale-after: an install whose node or ack has not moved for longer is stuck. */
  staleAfterMs: number;
}

/** A page of the report: classified rows, and the cursor of the next page (undefined: the last one). */
export interface DivergencePage {
  nodes: DivergedNode[];
  next?: { divergedSinceMs: number; nodeId: string };
}

const ackFact = (a: NodeAck | undefined): (AckFact & { message: string }) | undefined =>
  a && { releaseId: a.releaseId, state: a.state, updatedAtMs: a.updatedAt ? timestampMs(a.updatedAt) : 0, message: a.message };

/**
 * One page of the divergence report: the nodes of the divergence index (diverged at or
 * before `divergedAtOrBeforeMs`), with the sightings this server holds and has not written
 * applied (a node whose newest heartbeat reports its desired release is left out), each
 * classified from its acks and its newest move. Three indexed reads per page, whatever the
 * size of the fleet.
 */
export async function divergencePage(
  deps: DivergenceDeps,
  q: { channel?: string; divergedAtOrBeforeMs: number; after?: { divergedSinceMs: number; nodeId: string }; limit: number },
): Promise<DivergencePage> {
  const rows: DivergedRow[] = await deps.store.divergedNodes({ ...q, limit: q.limit + 1 });
  const more = rows.length > q.limit;
  const page = rows.slice(0, q.limit);
  const ids = page.map((r) => r.node.nodeId);
  const [acks, moves] = await Promise.all([deps.store.acksOfNodes(ids), deps.store.newestMoves(ids)]);
  const acksBy = new Map<string, NodeAck[]>();
  for (const a of acks) {
    let list = acksBy.get(a.nodeId);
    if (!list) acksBy.set(a.nodeId, (list = []));
    list.push(a);
  }
  const nowMs = Date.now();
  const nodes: DivergedNode[] = [];
  for (const row of page) {
    const node = deps.sightings.overlay(row.node);
    if (node.reportedReleaseId === row.desiredReleaseId) continue;
    const mine = acksBy.get(node.nodeId) ?? [];
    const desiredAck = mine.find((a) => a.releaseId === row.desiredReleaseId);
    const lastAck = mine.reduce<NodeAck | undefined>((best, a) => (best === undefined || ms(a) > ms(best) ? a : best), undefined);
    const move = moves.get(node.nodeId);
    const moved = move && move.releaseId === row.desiredReleaseId && node.pinnedReleaseId === "" ? move : undefined;
    const facts: DivergenceFacts = {
      nowMs,
      desiredReleaseId: row.desiredReleaseId,
      reportedReleaseId: node.reportedReleaseId,
      lastSeenMs: node.lastSeen ? timestampMs(node.lastSeen) : undefined,
      desiredAck: ackFact(desiredAck),
      ackedReported: mine.some((a) => a.releaseId === node.reportedReleaseId),
      staleAfterMs: deps.staleAfterMs,
    };
    nodes.push(
      create(DivergedNodeSchema, {
        nodeId: node.nodeId,
        channel: node.channel,
        class: classifyDivergence(facts),
        desiredReleaseId: row.desiredReleaseId,
        reportedReleaseId: node.reportedReleaseId,
        divergedSince: timestampFromMs(row.divergedSinceMs),
        lastSeen: node.lastSeen,
        desiredAck,
        lastAck,
        planId: moved?.planId ?? "",
        stageId: moved?.stageId ?? "",
        movedAt: moved ? timestampFromMs(moved.movedAtMs) : undefined,
        evidence: divergenceEvidence({
          ...facts,
          lastAck: ackFact(lastAck),
          planId: moved?.planId,
          stageId: moved?.stageId,
          movedAtMs: moved?.movedAtMs,
          pinned: node.pinnedReleaseId !== "",
        }),
        reapplyRequestedAt: node.reapplyRequestedAt,
        drained: node.drained,
      }),
    );
  }
  const last = page[page.length - 1];
  return { nodes, next: more && last ? { divergedSinceMs: last.divergedSinceMs, nodeId: last.node.nodeId } : undefined };
}

const ms = (a: NodeAck) => (a.updatedAt ? timestampMs(a.updatedAt) : 0);

/** Pages read per count of the cp_nodes_diverged gauge. */
const COUNT_PAGE = 1000;

/**
 * Diverged nodes by class (the cp_nodes_diverged gauge): every page of the report at the
 * default threshold, so a scrape costs what the diverged nodes cost, not the fleet.
 */
export async function countDiverged(deps: DivergenceDeps, thresholdSeconds: number): Promise<Record<DivergenceClass, number>> {
  const counts = Object.fromEntries(DIVERGENCE_CLASSES.map((c) => [c, 0])) as Record<DivergenceClass, number>;
  const divergedAtOrBeforeMs = Date.now() - thresholdSeconds * 1000;
  let after: DivergencePage["next"];
  do {
    const page = await divergencePage(deps, { divergedAtOrBeforeMs, after, limit: COUNT_PAGE });
    for (const n of page.nodes) counts[n.class as DivergenceClass]++;
    after = page.next;
  } while (after);
  return counts;
}
