import type { ServiceImpl } from "@connectrpc/connect";
import type { EventService } from "../../gen/autonomy/v1/events_pb.js";
import { dedupeWithinBatch, queryCursor, queryLimit, validateEventBatch } from "../domain/events.js";
import type { Metrics } from "../observability/metrics.js";
import type { RolloutController } from "../rollouts/controller.js";
import type { Store } from "../store/store.js";

/** EventService: validates, dedupes within the batch, and hands the rest to the store. */
export function createEventService(deps: {
  store: Store;
  metrics: Metrics;
  controller?: RolloutController;
}): ServiceImpl<typeof EventService> {
  const { store, metrics, controller } = deps;
  return {
    async ingestEvents(req) {
      validateEventBatch(req.events);
      const unique = dedupeWithinBatch(req.events);
      const inserted = unique.length === 0 ? 0 : await store.ingestEvents(unique);
      const received = req.events.length;
      metrics.eventsReceived.inc(received);
      metrics.eventsInserted.inc(inserted);
      metrics.eventsDeduped.inc(received - inserted);
      if (inserted > 0) controller?.onEvents(unique, inserted === unique.length);
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
