import type { ServiceImpl } from "@connectrpc/connect";
import type { Event } from "../../gen/autonomy/v1/events_pb.js";
import type { EventFollowService } from "../../gen/autonomy/v1/follow_pb.js";
import { ValidationError } from "../domain/errors.js";
import type { Store } from "../store/store.js";
import type { EventFeed } from "./event-feed.js";

export const DEFAULT_FOLLOW_LIMIT = 500;
export const MAX_FOLLOW_LIMIT = 1000;
export const DEFAULT_FOLLOW_WAIT_SECONDS = 20;
export const MAX_FOLLOW_WAIT_SECONDS = 60;
/** How often a waiting follow re-reads the store besides this process's signal (other replicas' events). */
const RECHECK_MS = 500;

function followLimit(limit: number | undefined): number {
  if (limit === undefined) return DEFAULT_FOLLOW_LIMIT;
  if (!Number.isInteger(limit) || limit < 1 || limit > MAX_FOLLOW_LIMIT) throw new ValidationError("limit", `must be between 1 and ${MAX_FOLLOW_LIMIT}`);
  return limit;
}

function followWait(seconds: number | undefined): number {
  if (seconds === undefined) return DEFAULT_FOLLOW_WAIT_SECONDS;
  if (!Number.isInteger(seconds) || seconds < 0 || seconds > MAX_FOLLOW_WAIT_SECONDS) {
    throw new ValidationError("wait_seconds", `must be between 0 and ${MAX_FOLLOW_WAIT_SECONDS}`);
  }
  return seconds;
}

/** EventFollowService: a long poll over the store's events after a cursor. */
export function createFollowService(deps: { store: Store; feed: EventFeed; recheckMs?: number }): ServiceImpl<typeof EventFollowService> {
  const { store, feed } = deps;
  const recheckMs = deps.recheckMs ?? RECHECK_MS;
  return {
    async followEvents(req, ctx) {
      if (req.after < 0n) throw new ValidationError("after", "must not be negative");
      if (req.fromNewest && req.after !== 0n) throw new ValidationError("from_newest", "goes without after");
      const limit = followLimit(req.limit);
      const waitMs = followWait(req.waitSeconds) * 1000;
      const after = req.fromNewest ? await store.newestEventSeq() : req.after;
      if (req.fromNewest) return { events: [], count: 0, nextAfter: after };
      const query = { nodeId: req.nodeId || undefined, eventType: req.eventType || undefined, afterSeq: after, limit };
      const deadline = Date.now() + waitMs;
      let events: Event[] = await store.eventsAfter(query);
      while (events.length === 0 && !ctx.signal.aborted && !feed.closed) {
        const left = deadline - Date.now();
        if (left <= 0) break;
        await feed.next(Math.min(left, recheckMs), ctx.signal);
        if (ctx.signal.aborted) break;
        events = await store.eventsAfter(query);
      }
      return { events, count: events.length, nextAfter: events.length > 0 ? events[events.length - 1].seq : after };
    },
  };
}
