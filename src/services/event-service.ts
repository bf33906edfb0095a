import type { ServiceImpl } from "@connectrpc/connect";
import type { Event, EventService } from "../../gen/autonomy/v1/events_pb.js";
import { dedupeWithinBatch, queryCursor, queryLimit, validateEventBatch } from "../domain/events.js";
import type { Metrics } from "../observability/metrics.js";
import type { RolloutController } from "../rollouts/controller.js";
import { actorOf, auditRecord, type Actor } from "./audit-record.js";
import type { Store } from "../store/store.js";
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

/** EventService: validates, dedupes within the batch, and hands the rest to the store. */
export function createEventService(deps: {
  store: Store;
  metrics: Metrics;
  controller?: RolloutController;
  /** --audit-data-plane: record every ingested batch in the audit trail. */
  auditDataPlane?: boolean;
  /** Woken when a batch stored new events (followers answer at once). */
  feed?: EventFeed;
}): ServiceImpl<typeof EventService> {
  const { store, metrics, controller } = deps;
  return {
    async ingestEvents(req, ctx) {
      validateEventBatch(req.events);
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
      const limit = queryLimit(req.limit);
      const before = queryCursor(req.before);
      const events = await store.queryEvents({ nodeId: req.nodeId || undefined, eventType: req.eventType || undefined, limit, before });
      return { events, count: events.length };
    },
  };
}
