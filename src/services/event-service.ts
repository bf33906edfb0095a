import type { ServiceImpl } from "@connectrpc/connect";
import { RateLimitedError } from "../domain/errors.js";
import { create } from "@bufbuild/protobuf";
import { QueryEventsResponseSchema, type Event, type EventService, type QueryEventsRequest } from "../../gen/autonomy/v1/events_pb.js";
import { jsonTextWith } from "../domain/json-text.js";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { dedupeWithinBatch, ingestRateWindow, queryCursor, queryLimit, validateEventBatch } from "../domain/events.js";
import type { Metrics } from "../observability/metrics.js";
import type { RolloutController } from "../rollouts/controller.js";
import { actorOf, auditRecord, type Actor } from "./audit-record.js";
import type { EventQuery, Store } from "../store/store.js";
import type { EventFeed } from "./event-feed.js";

/** The audit record of an ingested batch (--audit-data-plane): who sent it and for which nodes. */
function ingestAudit(who: Actor, received: number, events: readonly Event[]) {
  const nodeIds = [...new Set(events.map((e) => e.nodeId))];
  return auditRecord(who, {
    eventName: "telemetry.events.ingested",
    category: "system",
    action: "ingest",
    resourceType: "events",
    resource: nodeIds.length === 1 ? nodeIds[0] : `${nodeIds.length} nodes`,
    fields: { received, node_ids: nodeIds.slice(0, 20) },
  });
}

/** The store query of a QueryEvents request, its limit and cursor validated. */
function eventQueryOf(req: QueryEventsRequest): EventQuery {
  return { nodeId: req.nodeId || undefined, eventType: req.eventType || undefined, limit: queryLimit(req.limit), before: queryCursor(req.before) };
}

/**
 * QueryEvents on its REST binding: the same events as the RPC, asked of the store as a page of
 * JSON text written from the stored rows (no message, no payload parsed), in the response's JSON.
 * While the API answers other requests (`busy`), SQLite writes the page on its event page thread.
 */
export function createEventPageText(deps: { store: Store; metrics: Metrics; busy?: () => boolean }): (req: QueryEventsRequest) => Promise<string> {
  return async (req) => {
    const page = await deps.store.queryEventPage(eventQueryOf(req), { busy: deps.busy?.() ?? false });
    deps.metrics.eventPages.inc({ on: page.onThread ? "thread" : "event_loop" });
    return jsonTextWith(QueryEventsResponseSchema, create(QueryEventsResponseSchema, { count: page.count }), { events: page.text });
  };
}

/** A token bucket per node in events (src/transport/rate-limit.ts RateLimiter). */
export interface IngestLimiter {
  readonly enabled: boolean;
  /** Seconds until `key` may send `n` events; 0: now. */
  waitFor(key: string, n: number): number;
  takeN(key: string, n: number): void;
}

/** EventService: validates, dedupes within the batch, and hands the rest to the store. */
export function createEventService(deps: {
  store: Store;
  metrics: Metrics;
  controller?: RolloutController;
  /** --audit-data-plane: record every ingested batch in the audit trail. */
  auditDataPlane?: boolean;
  /** --node-ingest-rate: events per second per node, with a burst. */
  nodeIngestLimiter?: IngestLimiter;
  /** Woken when a batch stored new events (followers answer at once). */
  feed?: EventFeed;
}): ServiceImpl<typeof EventService> {
  const { store, metrics, controller } = deps;
  const limiter = deps.nodeIngestLimiter?.enabled ? deps.nodeIngestLimiter : undefined;
  // The metric's node label names enrolled nodes only, so its series stay bounded by the fleet.
  const enrolled = new Set<string>();
  const labelOf = async (nodeId: string) => {
    if (enrolled.has(nodeId)) return nodeId;
    if (await store.getNode(nodeId)) {
      enrolled.add(nodeId);
      return nodeId;
    }
    return "unenrolled";
  };
  /** Refuses the whole batch when a node in it is over its limit; else takes each node's share. */
  const admit = async (events: readonly Event[]) => {
    const perNode = new Map<string, number>();
    for (const e of events) perNode.set(e.nodeId, (perNode.get(e.nodeId) ?? 0) + 1);
    for (const [nodeId, n] of perNode) {
      const wait = limiter!.waitFor(nodeId, n);
      if (wait > 0) {
        metrics.ingestThrottled.inc({ node: await labelOf(nodeId) });
        throw new RateLimitedError(`node ${nodeId} is over its ingest limit (--node-ingest-rate); retry in ${wait}s`, wait);
      }
    }
    for (const [nodeId, n] of perNode) limiter!.takeN(nodeId, n);
  };
  return {
    async ingestEvents(req, ctx) {
      validateEventBatch(req.events);
      if (limiter) await admit(req.events);
      const unique = dedupeWithinBatch(req.events);
      const audit = deps.auditDataPlane ? ingestAudit(actorOf(ctx), req.events.length, unique) : undefined;
      const inserted = unique.length === 0 ? 0 : await store.ingestEvents(unique, audit);
      const received = req.events.length;
      metrics.eventsReceived.inc(received);
      metrics.eventsInserted.inc(inserted);
      metrics.eventsDeduped.inc(received - inserted);
      if (inserted > 0) {
        controller?.onEvents(unique, inserted === unique.length);
        deps.feed?.stored();
      }
      return { received, inserted, deduped: received - inserted };
    },

    async queryEvents(req) {
      const events = await store.queryEvents(eventQueryOf(req));
      return { events, count: events.length };
    },

    async getIngestRate(req) {
      const q = ingestRateWindow(req, Date.now());
      const counts = await store.ingestCounts(q);
      return {
        bucketSeconds: q.bucketMs / 1000,
        buckets: counts.map((events, i) => ({ start: timestampFromMs(q.sinceMs + i * q.bucketMs), events: BigInt(events) })),
        total: BigInt(counts.reduce((a, b) => a + b, 0)),
      };
    },
  };
}
