import type { MessageInitShape } from "@bufbuild/protobuf";
import { timestampFromMs, timestampMs } from "@bufbuild/protobuf/wkt";
import type {
  GetFleetOverviewResponseSchema,
  SearchFleetNodesRequest,
  SearchFleetNodesResponseSchema,
} from "../../gen/autonomy/v1/nodes_pb.js";
import type { ChannelReleaseSchema, ListChannelReleasesResponseSchema, Release } from "../../gen/autonomy/v1/releases_pb.js";
import { checkFleetSearch, encodeKeysetToken, type FleetOrderKey } from "../domain/fleet-query.js";
import { checkId } from "../domain/fields.js";
import { staleThresholdMs } from "../domain/nodes.js";
import type { FleetSearchStoreRow } from "../store/fleet-search.js";
import type { SightingBuffer } from "../store/sightings.js";
import type { Store } from "../store/store.js";
import { desiredReleases } from "./desired-release.js";

/** The dashboard's read views over the fleet: overview, search, and a channel's releases. */
export interface FleetViewDeps {
  store: Store;
  sightings: SightingBuffer;
  staleAfterMs: number;
}

/** GetFleetOverview: totals of every node and of each channel, channels by name. */
export async function fleetOverview(deps: FleetViewDeps, req: { staleThresholdSeconds?: number }): Promise<MessageInitShape<typeof GetFleetOverviewResponseSchema>> {
  const thresholdMs = staleThresholdMs(req.staleThresholdSeconds, deps.staleAfterMs);
  // The totals projection the stores keep (as GetFleetStatus): no node is read, at any fleet size.
  const q = { seenSinceMs: Date.now() - thresholdMs, sightings: deps.sightings.pending() };
  const names = await deps.store.fleetChannels();
  const [totals, perChannel, latest] = await Promise.all([
    deps.store.fleetTotals(q),
    Promise.all(names.map((channel) => deps.store.fleetTotals({ ...q, channel }))),
    Promise.all(names.map((c) => deps.store.latestRelease(c))),
  ]);
  return {
    totals,
    channels: names.map((channel, i) => ({ channel, totals: perChannel[i], latestRelease: latest[i] })),
  };
}

/**
 * SearchFleetNodes: one filtered, ordered page of fleet rows; totals of all matching nodes.
 * The store filters, orders and pages (keyset: the token holds the last row's sort key), with
 * the lifecycle as of now and the sightings this server has buffered applied, as GetFleetStatus.
 */
export async function searchFleetNodes(deps: FleetViewDeps, req: SearchFleetNodesRequest, nowMs = Date.now()): Promise<MessageInitShape<typeof SearchFleetNodesResponseSchema>> {
  checkId(req.channel, "channel", false);
  const q = checkFleetSearch(req);
  const staleAfterMs = staleThresholdMs(req.staleThresholdSeconds, deps.staleAfterMs);
  const { rows, total } = await deps.store.searchFleetNodes({
    channel: req.channel || undefined,
    lifecycle: q.lifecycle,
    labels: q.labels,
    drift: q.drift,
    orderBy: q.orderBy,
    descending: q.descending,
    after: q.after,
    offset: q.offset,
    // One more than the page: whether there is a next one.
    limit: q.pageSize + 1,
    nowMs,
    staleAfterMs,
    sightings: deps.sightings.pending(),
  });
  const page = rows.slice(0, q.pageSize);
  const last = page[page.length - 1];
  return {
    rows: page.map((r) => ({
      node: {
        nodeId: r.nodeId,
        channel: r.channel,
        lifecycle: r.lifecycle,
        lastSeen: r.lastSeenMs === undefined ? undefined : timestampFromMs(r.lastSeenMs),
        reportedReleaseId: r.reportedReleaseId,
        desiredReleaseId: r.desiredReleaseId,
        drift: r.drift,
      },
      labels: r.labels,
      drained: r.drained,
      drainReason: r.drainReason,
    })),
    totalSize: total,
    nextPageToken: rows.length > q.pageSize ? encodeKeysetToken(q.orderBy, q.descending, { value: searchKeyOf(q.orderBy, last), nodeId: last.nodeId }, q.offset + page.length) : "",
    offset: q.offset,
  };
}

/** A row's value of the order key, as a keyset token holds it. */
function searchKeyOf(orderBy: FleetOrderKey, r: FleetSearchStoreRow): string | number | null {
  switch (orderBy) {
    case "node_id":
      return r.nodeId;
    case "channel":
      return r.channel;
    case "lifecycle":
      return r.lifecycle;
    case "last_seen":
      return r.lastSeenMs ?? null;
    case "reported_release_id":
      return r.reportedReleaseId;
    case "desired_release_id":
      return r.desiredReleaseId;
  }
}

const publishedMs = (r: Release) => (r.publishedAt ? timestampMs(r.publishedAt) : 0);

/**
 * ListChannelReleases: the channel's latest release, the releases its plans target and
 * those its nodes should run or report, newest first, with the channel's acks per state.
 * A reported release id the server does not know is left out.
 */
export async function channelReleases(deps: Pick<FleetViewDeps, "store" | "sightings">, req: { channel: string }): Promise<MessageInitShape<typeof ListChannelReleasesResponseSchema>> {
  checkId(req.channel, "channel", true);
  const { store } = deps;
  const [nodes, latest, plans] = await Promise.all([
    // With the newest buffered sightings: what each node reports it runs.
    store.listNodes({ channel: req.channel }).then((all) => all.map((n) => deps.sightings.overlay(n))),
    store.latestRelease(req.channel),
    store.listRollouts({ channel: req.channel }),
  ]);
  const desired = await desiredReleases(store, nodes);
  const ids = new Set<string>();
  if (latest) ids.add(latest.releaseId);
  for (const p of plans) ids.add(p.plan.releaseId);
  const desiredBy = new Map<string, number>();
  const reportedBy = new Map<string, number>();
  for (const n of nodes) {
    const d = desired.get(n.nodeId)?.release.releaseId;
    if (d) desiredBy.set(d, (desiredBy.get(d) ?? 0) + 1);
    if (n.reportedReleaseId) reportedBy.set(n.reportedReleaseId, (reportedBy.get(n.reportedReleaseId) ?? 0) + 1);
  }
  for (const id of desiredBy.keys()) ids.add(id);
  for (const id of reportedBy.keys()) ids.add(id);
  const channelNodes = new Set(nodes.map((n) => n.nodeId));
  const found = await Promise.all(
    [...ids].map(async (id) => {
      const release = await store.getRelease(id);
      // A node may report a release of another channel, or one this server never stored.
      if (!release || release.channel !== req.channel) return undefined;
      const acks = (await store.acksOfRelease(id)).filter((a) => channelNodes.has(a.nodeId));
      const states = new Map<string, number>();
      for (const a of acks) states.set(a.state, (states.get(a.state) ?? 0) + 1);
      const entry: MessageInitShape<typeof ChannelReleaseSchema> & { release: Release } = {
        release,
        acks: [...states].map(([state, n]) => ({ state, nodes: n })),
        notAcked: channelNodes.size - acks.length,
        latest: latest?.releaseId === id,
        planIds: plans.filter((p) => p.plan.releaseId === id).map((p) => p.plan.planId),
        desiredBy: desiredBy.get(id) ?? 0,
        reportedBy: reportedBy.get(id) ?? 0,
      };
      return entry;
    }),
  );
  const releases = found
    .filter((r) => r !== undefined)
    .sort((a, b) => publishedMs(b.release) - publishedMs(a.release) || (a.release.releaseId < b.release.releaseId ? -1 : 1));
  return { channelNodes: nodes.length, releases };
}
