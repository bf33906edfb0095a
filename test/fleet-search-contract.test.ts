/**
 * The fleet search in SQL (Store.searchFleetNodes, through SearchFleetNodes' service) against
 * the in-memory search it replaced, on seeded random fleets in both stores: every node read,
 * its desired release decided by desired-release.ts, the buffered sightings overlaid and the
 * lifecycle computed as of the same time, then filtered, ordered and paged in memory. Each
 * random query is walked page by page along the keyset tokens the server issues; every page,
 * its offset and the total must equal the reference's.
 */
import { create } from "@bufbuild/protobuf";
import { timestampMs } from "@bufbuild/protobuf/wkt";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { SearchFleetNodesRequestSchema } from "../gen/autonomy/v1/nodes_pb.js";
import { ReleaseSchema } from "../gen/autonomy/v1/releases_pb.js";
import { checkFleetSearch, encodeOffsetToken, FLEET_ORDER_KEYS } from "../src/domain/fleet-query.js";
import { LIFECYCLES, livenessOf, nodeLifecycle } from "../src/domain/nodes.js";
import { desiredReleases } from "../src/services/desired-release.js";
import { searchFleetNodes } from "../src/services/fleet-views.js";
import { releaseToRow } from "../src/store/fleet-rows.js";
import type { AuditRow, StatusRow } from "../src/store/rollout-rows.js";
import { SightingBuffer } from "../src/store/sightings.js";
import type { Store } from "../src/store/store.js";
import { searchFleet, type FleetSearchRow } from "./helpers/fleet-search-reference.js";
import { STORE_KINDS } from "./helpers/server.js";
import { openStore } from "./helpers/store.js";
import { rng, type Rng } from "./helpers/rng.js";

const SEED = Number(process.env.FLEET_SEARCH_SEED ?? 20261202);
const FLEETS = Number(process.env.FLEET_SEARCH_FLEETS ?? 3);
const QUERIES = Number(process.env.FLEET_SEARCH_QUERIES ?? 60);
// A time of this era: milliseconds past 2^31, as PostgreSQL must read them (bigint).
const NOW_MS = 1_796_000_000_000;
const DIGEST = `sha256:${"cd".repeat(32)}`;
// Ids and label text with characters whose UTF-16 order is not their code point order (astral
// against U+E000-U+FFFF), accents, and digits, so that text order is tested as well as ties.
const ID_CHARS = ["a", "b", "Z", "0", "9", "-", "_", "é", "\uE000", "\uFFFD", "\u{1F600}", "\u{10000}"];
const CHANNELS = ["stable", "beta", "\u{1F680}", "\uFF21ch"];
const LABEL_KEYS = ["site", "tier", "k\u{1F600}"];
const LABEL_VALUES = ["x", "y", "\uFFFF", "1", "\u{1F600}"];


const audit = (resource: string): AuditRow => ({
  atMs: 1,
  eventName: "test",
  category: "rollout",
  action: "test",
  outcome: "success",
  actor: "test",
  resourceType: "node",
  resource,
  source: "test",
  fieldsJson: "{}",
  reason: "",
});
const status = (planId: string, version: number, phase: string): StatusRow => ({ planId, version, phase, currentStage: 0, reason: "", updatedAtMs: 1, stages: "[]" });

/** A last-seen time near the lifecycle boundaries of a threshold (given in seconds) as of NOW_MS, or anywhere before. */
function seenNear(r: Rng, thresholdS: number): number {
  const t = thresholdS * 1000;
  const edges = [NOW_MS - t, NOW_MS - t - 1, NOW_MS - t + 1, NOW_MS - 5 * t, NOW_MS - 5 * t - 1, NOW_MS - 5 * t + 1, NOW_MS, NOW_MS + 7];
  return r.chance(0.5) ? r.pick(edges) : NOW_MS - r.int(8 * t);
}

/**
 * A random fleet: releases (some staged) on a few channels, nodes with labels, rollout moves
 * and rollback restores older and newer than later releases, pins, drains, stored sightings,
 * and, when `buffered`, sightings buffered in `buffer` only (some older than what is stored).
 */
async function buildFleet(store: Store, buffer: SightingBuffer, r: Rng, buffered: boolean): Promise<{ channels: string[]; releaseIds: string[] }> {
  const channels = r.subset(CHANNELS, 0.7);
  if (channels.length === 0) channels.push(CHANNELS[0]);
  const releases: { id: string; channel: string; staged: boolean }[] = [];
  let publishedAtMs = 1_000;
  let serial = 0;
  const publish = async (channel: string) => {
    const id = `rel-${channel}-${serial++}`;
    const staged = r.chance(0.4);
    publishedAtMs += 1 + r.int(3) * 500;
    await store.publishRelease(releaseToRow(create(ReleaseSchema, { releaseId: id, channel, version: "1", staged, artifacts: [{ name: "app", digest: DIGEST }] }), publishedAtMs));
    releases.push({ id, channel, staged });
  };
  for (const channel of channels) for (let i = r.int(3); i > 0; i--) await publish(channel);

  const ids = new Set<string>();
  const count = 20 + r.int(70);
  while (ids.size < count) {
    let id = "";
    for (let i = 1 + r.int(3); i > 0; i--) id += r.pick(ID_CHARS);
    ids.add(id);
  }
  const nodeIds = [...ids];
  const channelOf = new Map<string, string>();
  for (const nodeId of nodeIds) {
    const labels: Record<string, string> = {};
    for (const k of r.subset(LABEL_KEYS, 0.5)) labels[k] = r.pick(LABEL_VALUES);
    const channel = r.pick(channels);
    channelOf.set(nodeId, channel);
    await store.enrollNode({ nodeId, channel, labels, agentVersion: "1" }, 500);
  }
  const reportable = () => (r.chance(0.15) ? "" : r.chance(0.1) ? "unknown-release" : r.pick(releases)?.id ?? "");
  const thresholdS = 10;
  await store.recordSightings(
    r.subset(nodeIds, 0.7).map((nodeId) => ({ nodeId, lastSeenMs: seenNear(r, thresholdS), reportedReleaseId: r.chance(0.8) ? reportable() : undefined })),
  );

  // Plans of each channel, one after another: moves to the plan's release, some restores.
  let plans = 0;
  for (const channel of channels) {
    const targets = releases.filter((x) => x.channel === channel);
    for (let p = r.int(3); p > 0 && targets.length > 0; p--) {
      const planId = `plan-${plans++}`;
      const target = r.pick(targets);
      await store.createRollout({ planId, releaseId: target.id, channel, spec: "{}", signature: "", keyId: "", createdAtMs: publishedAtMs }, status(planId, 1, "active"), audit(planId));
      const moved = r.subset(nodeIds.filter((n) => channelOf.get(n) === channel), 0.5);
      const movedAtMs = publishedAtMs + r.int(2) * 2 - 1;
      await store.commitRollout({
        expectedVersion: 1,
        status: status(planId, 2, "active"),
        moves: moved.map((nodeId) => ({ planId, stageId: "s", nodeId, releaseId: target.id, movedAtMs, previousReleaseId: r.chance(0.5) ? r.pick(targets).id : null })),
        audit: [audit(planId)],
      });
      const restored = r.subset(moved, 0.3);
      await store.commitRollout({
        expectedVersion: 2,
        status: status(planId, 3, "completed"),
        moves: restored.map((nodeId) => ({ planId, stageId: "s", nodeId, releaseId: r.chance(0.3) ? "" : r.pick(targets).id, movedAtMs: movedAtMs + 1, kind: "restore" })),
        audit: [audit(planId)],
      });
      // A release after the moves makes them older than the channel's latest, sometimes.
      if (r.chance(0.5)) await publish(channel);
    }
  }
  for (const nodeId of r.subset(nodeIds, 0.2)) {
    // Only a node reporting a stored release can be pinned to it.
    await store.acceptReported(nodeId, NOW_MS, "test", audit(nodeId)).catch(() => undefined);
  }
  for (const nodeId of r.subset(nodeIds, 0.15)) await store.setDrained(nodeId, true, `drain ${nodeId}`);
  for (const nodeId of r.subset(nodeIds, buffered ? 0.3 : 0)) {
    buffer.record({ nodeId, lastSeenMs: seenNear(r, thresholdS), reportedReleaseId: r.chance(0.7) ? reportable() : undefined });
  }
  return { channels, releaseIds: releases.map((x) => x.id) };
}

/** Every node of a selection as SearchFleetNodes built its rows before the store searched (the reference). */
async function referenceRows(store: Store, buffer: SightingBuffer, channel: string | undefined, thresholdMs: number) {
  const all = await store.listNodes({ channel });
  const desired = await desiredReleases(store, all);
  return all.map((node): FleetSearchRow & { drained: boolean; drainReason: string } => {
    buffer.overlay(node);
    const desiredReleaseId = desired.get(node.nodeId)?.release.releaseId ?? "";
    return {
      nodeId: node.nodeId,
      channel: node.channel,
      lifecycle: nodeLifecycle(livenessOf(node), NOW_MS, thresholdMs),
      lastSeenMs: livenessOf(node).lastSeenMs,
      reportedReleaseId: node.reportedReleaseId,
      desiredReleaseId,
      drift: desiredReleaseId !== "" && desiredReleaseId !== node.reportedReleaseId,
      labels: node.labels,
      drained: node.drained,
      drainReason: node.drainReason,
    };
  });
}

describe.each(STORE_KINDS)("fleet search in SQL equals the in-memory search: %s", (kind) => {
  for (let f = 0; f < FLEETS; f++) {
    describe(`random fleet ${f} (seed ${SEED + f}${f % 3 === 2 ? ", nothing buffered" : ""})`, () => {
      const r = rng(SEED + f);
      let store: Store;
      let cleanup: () => Promise<void>;
      let buffer: SightingBuffer;
      let fleet: { channels: string[]; releaseIds: string[] };
      beforeAll(async () => {
        // A database whose default collation is English's: the search must still order by code point.
        ({ store, cleanup } = await openStore(kind, { pgIcuLocale: "en" }));
        buffer = new SightingBuffer({ store, flushIntervalMs: 3_600_000, onFlushError: () => {} });
        // Every third fleet has nothing buffered: the search reads stored rows only.
        fleet = await buildFleet(store, buffer, r, f % 3 !== 2);
      });
      afterAll(async () => {
        await cleanup();
      });

      it(`answers ${QUERIES} random queries page by page as the reference does`, async () => {
        const deps = { store, sightings: buffer, staleAfterMs: 10_000 };
        const labelPairs = LABEL_KEYS.flatMap((k) => LABEL_VALUES.map((v) => `${k}=${v}`));
        let pagesCompared = 0;
        let nonEmpty = 0;
        for (let i = 0; i < QUERIES; i++) {
          const req = {
            channel: r.chance(0.4) ? r.pick([...fleet.channels, "nowhere"]) : "",
            lifecycle: r.chance(0.4) ? r.pick(LIFECYCLES) : "",
            labelSelector: r.chance(0.4) ? r.subset(labelPairs, 0.1).slice(0, 2).join(",") : "",
            drift: r.chance(0.4) ? r.pick(["drifted", "in_sync"]) : "",
            orderBy: r.chance(0.1) ? "" : r.pick(FLEET_ORDER_KEYS),
            descending: r.chance(0.5),
            pageSize: 1 + r.int(15),
            staleThresholdSeconds: r.chance(0.5) ? undefined : r.pick([1, 10, 30]),
          };
          const thresholdMs = (req.staleThresholdSeconds ?? 10) * 1000;
          const rows = await referenceRows(store, buffer, req.channel || undefined, thresholdMs);
          const label = JSON.stringify(req);
          // A legacy offset token starts some walks part-way.
          let token = r.chance(0.2) ? encodeOffsetToken(r.int(20)) : "";
          for (let guard = 0; guard < 200; guard++) {
            const got = await searchFleetNodes(deps, create(SearchFleetNodesRequestSchema, { ...req, pageToken: token }), NOW_MS);
            const q = checkFleetSearch({ ...req, pageToken: encodeOffsetToken(got.offset ?? 0) });
            const want = searchFleet(rows, q);
            expect(got.offset, label).toBe(q.offset);
            expect(got.totalSize, label).toBe(want.total);
            expect(
              (got.rows ?? []).map((x) => ({
                nodeId: x.node?.nodeId,
                channel: x.node?.channel,
                lifecycle: x.node?.lifecycle,
                lastSeenMs: x.node?.lastSeen ? timestampMs(x.node.lastSeen as Parameters<typeof timestampMs>[0]) : undefined,
                reportedReleaseId: x.node?.reportedReleaseId,
                desiredReleaseId: x.node?.desiredReleaseId,
                drift: x.node?.drift,
                labels: x.labels,
                drained: x.drained,
                drainReason: x.drainReason,
              })),
              `${label} at ${q.offset}`,
            ).toEqual(want.page);
            pagesCompared++;
            if (want.page.length > 0) nonEmpty++;
            expect(got.nextPageToken !== "", label).toBe(want.nextOffset !== undefined);
            if (!got.nextPageToken) break;
            token = got.nextPageToken;
          }
        }
        // The queries reached rows, not only empty pages.
        expect(nonEmpty).toBeGreaterThan(QUERIES / 2);
        expect(pagesCompared).toBeGreaterThan(QUERIES);
      });
    });
  }
});
