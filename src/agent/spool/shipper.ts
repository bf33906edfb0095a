import { setTimeout as sleep } from "node:timers/promises";
import { Code, ConnectError } from "@connectrpc/connect";
import { codeToString } from "@connectrpc/connect/protocol-connect";
import type { OrchestratorClients } from "../../../clients/index.js";
import type { Event } from "../../../gen/autonomy/v1/events_pb.js";
import type { Logger } from "../../observability/logger.js";
import { Throttle } from "../throttle.js";
import type { DeadletterEntry } from "./deadletter.js";
import { decodeSpooled } from "./events.js";
import { poke, tryLock, type HeldLock } from "./lock.js";
import { Spool, spoolDir, type SpoolLog, type SpoolStatus } from "./spool.js";

export interface ShipperOptions {
  api: OrchestratorClients;
  stateDir: string;
  logger: Logger;
  signal: AbortSignal;
  /** Most events per IngestEvents call (the server takes up to 10,000). */
  batchEvents?: number;
  /** Most payload bytes per call (the server takes 8 MiB bodies). */
  batchBytes?: number;
  /** Attempts of a batch refused for a reason a retry may not cure (permission denied, ...) before it goes to the deadletter. */
  retryBudget?: number;
  /** How long an idle shipper sleeps when nothing wakes it. */
  idleMs?: number;
}

/** Codes a retry cures by itself (server down, busy, restarting): retried without end, never deadlettered. */
const TRANSIENT = [Code.Unavailable, Code.DeadlineExceeded, Code.Unknown, Code.Internal, Code.Aborted, Code.Canceled];
const MAX_HINT_MS = 10 * 60_000;

/** The wait a server asked for: `Retry-After` (seconds or an HTTP date) on a throttled or unavailable answer. */
export function retryHintMs(err: ConnectError, now = Date.now()): number | undefined {
  if (err.code !== Code.ResourceExhausted && err.code !== Code.Unavailable) return undefined;
  const value = err.metadata.get("retry-after");
  if (value === null || value.trim() === "") return undefined;
  const seconds = Number(value);
  const ms = Number.isFinite(seconds) ? seconds * 1000 : Date.parse(value) - now;
  if (!Number.isFinite(ms)) return undefined;
  return Math.min(MAX_HINT_MS, Math.max(0, ms));
}

/** The index a 400 names for a batch ("events[3].node_id: required"). */
export function refusedIndex(message: string): number | undefined {
  const m = /^events\[(\d+)\]/.exec(message);
  return m ? Number(m[1]) : undefined;
}

export const spoolLogOf =
  (logger: Logger): SpoolLog =>
  (level, fields, msg) =>
    logger[level](fields, msg);

interface Item {
  seq: number;
  spooledAt: number;
  event: Event;
  json: Buffer;
}

/**
 * Ships the spool to IngestEvents, oldest first, one batch at a time: a batch is read from the
 * cursor, waits for the throttle, is sent, and the cursor moves past it only once the server
 * answered. A refused event goes to the deadletter instead of blocking the rest: a 400 names
 * its index, so the batch is split around it (halved when no index is given); an event refused
 * for other reasons past the retry budget follows it. Server-down and throttled answers are
 * retried without end (a `Retry-After` hint is honoured), so nothing is lost to an outage.
 */
export class Shipper {
  readonly spool: Spool;
  readonly throttle: Throttle;
  private wake: (() => void) | undefined;
  private readonly batchEvents: number;
  private readonly batchBytes: number;
  private readonly retryBudget: number;

  constructor(private readonly opts: ShipperOptions) {
    this.spool = new Spool({ dir: spoolDir(opts.stateDir), log: spoolLogOf(opts.logger) });
    let lastWait = "";
    this.throttle = new Throttle(opts.stateDir, (why, ms) => {
      if (why !== lastWait) opts.logger.info({ wait_ms: ms, limit: why }, `spool: shipping waits for the ${why} limit`);
      lastWait = why;
    });
    this.batchEvents = opts.batchEvents ?? 500;
    this.batchBytes = opts.batchBytes ?? 1024 * 1024;
    this.retryBudget = opts.retryBudget ?? 5;
  }

  /** Ends a nap early: new events were spooled, or a flush asks. */
  poke(): void {
    this.wake?.();
  }

  /** Sleeps until the time passes, the signal aborts or a poke comes. */
  async nap(ms: number, signal = this.opts.signal): Promise<void> {
    const ac = new AbortController();
    this.wake = () => ac.abort();
    const onAbort = () => ac.abort();
    signal.addEventListener("abort", onAbort, { once: true });
    try {
      await sleep(ms, undefined, { signal: ac.signal });
    } catch {
      // woken
    } finally {
      signal.removeEventListener("abort", onAbort);
      this.wake = undefined;
    }
  }

  /** Ships one batch; "idle" when the spool had nothing to send. */
  async step(signal = this.opts.signal): Promise<"sent" | "idle"> {
    const batch = await this.spool.readBatch(this.batchEvents, this.throttle.batchBytes(this.batchBytes));
    if (batch.events.length === 0) {
      if (batch.moved) await this.spool.commit(batch.end);
      return batch.moved ? "sent" : "idle";
    }
    const items: Item[] = [];
    for (const e of batch.events) {
      try {
        items.push({ seq: e.seq, spooledAt: e.spooledAt, event: decodeSpooled(e.payload), json: e.payload });
      } catch (err) {
        await this.setAside({ seq: e.seq, spooledAt: e.spooledAt, json: e.payload }, "not_an_event", `the spooled frame is not an event: ${(err as Error).message}`, 0);
      }
    }
    await this.throttle.take(batch.bytes, signal);
    if (items.length > 0) await this.deliver(items, signal);
    this.throttle.record(batch.bytes);
    await this.spool.commit(batch.end);
    return "sent";
  }

  private async deliver(items: Item[], signal: AbortSignal): Promise<void> {
    const { api, logger } = this.opts;
    let attempts = 0;
    let transient = 0;
    for (;;) {
      try {
        await api.events.ingestEvents({ events: items.map((i) => i.event) }, { signal });
        return;
      } catch (err) {
        if (signal.aborted) throw err;
        const e = ConnectError.from(err);
        const hint = retryHintMs(e);
        if (hint !== undefined) {
          logger.warn({ code: codeToString(e.code), retry_in_ms: hint }, "spool: the orchestrator asks to slow down; waiting as it says");
          await this.nap(Math.max(hint, 50), signal);
          continue;
        }
        if (TRANSIENT.includes(e.code)) {
          transient++;
          const delay = Math.min(5_000, 100 * 2 ** Math.min(transient, 6));
          if (transient === 1 || transient % 20 === 0) logger.warn({ err: e.message, attempt: transient, retry_in_ms: delay }, "spool: cannot ship events; will retry");
          await this.nap(delay, signal);
          continue;
        }
        if (e.code === Code.InvalidArgument) {
          if (items.length === 1) return this.setAside(items[0], "invalid_argument", e.rawMessage, attempts + 1);
          const bad = refusedIndex(e.rawMessage);
          if (bad !== undefined && bad < items.length) {
            if (bad > 0) await this.deliver(items.slice(0, bad), signal);
            await this.setAside(items[bad], "invalid_argument", e.rawMessage.replace(/^events\[\d+\]/, "event"), attempts + 1);
            if (bad + 1 < items.length) await this.deliver(items.slice(bad + 1), signal);
            return;
          }
          return this.halves(items, signal);
        }
        // Too large a batch (413 is resource_exhausted without a hint): halve it.
        if (e.code === Code.ResourceExhausted && items.length > 1) return this.halves(items, signal);
        attempts++;
        if (attempts >= this.retryBudget) {
          for (const item of items) await this.setAside(item, codeToString(e.code), e.rawMessage, attempts);
          return;
        }
        const delay = Math.min(30_000, 500 * 2 ** attempts);
        logger.warn({ err: e.message, attempt: attempts, budget: this.retryBudget, retry_in_ms: delay }, "spool: the orchestrator refused a batch; will retry");
        await this.nap(delay, signal);
      }
    }
  }

  private async halves(items: Item[], signal: AbortSignal): Promise<void> {
    const mid = Math.ceil(items.length / 2);
    await this.deliver(items.slice(0, mid), signal);
    await this.deliver(items.slice(mid), signal);
  }

  private async setAside(item: Omit<Item, "event"> & { event?: Event }, code: string, reason: string, attempts: number): Promise<void> {
    let event: Record<string, unknown> | undefined;
    try {
      event = JSON.parse(item.json.toString("utf8")) as Record<string, unknown>;
    } catch {
      event = undefined;
    }
    const entry: DeadletterEntry = {
      id: `ev-${item.seq}`,
      reason,
      code,
      attempts,
      deadlettered_at: new Date().toISOString(),
      seq: item.seq,
      spooled_at: new Date(item.spooledAt).toISOString(),
      event,
      raw: event ? undefined : item.json.toString("base64"),
    };
    await this.spool.deadletterEvent(entry);
    this.opts.logger.warn(
      { deadletter_id: entry.id, event_id: event?.event_id, code, reason, attempts },
      "spool: an event went to the deadletter",
    );
  }
}

/**
 * Runs the shipper of `edgectl run` until the signal aborts. It holds the spool's shipper lock
 * (one shipper per spool; a `spool flush` in progress has it first) and wakes when `events send`
 * or `spool flush` pokes it.
 */
export function startShipper(opts: ShipperOptions): { done: Promise<void> } {
  const done = (async () => {
    const shipper = new Shipper(opts);
    const dir = shipper.spool.dir;
    const { logger, signal } = opts;
    let held: HeldLock | undefined;
    while (!signal.aborted && (held = await tryLock(dir, "shipper", () => shipper.poke())) === undefined) await shipper.nap(1000);
    if (!held) return;
    try {
      await shipper.spool.check();
      const s = await shipper.spool.status();
      logger.info({ unsent_frames: s.unsent_frames, unsent_bytes: s.unsent_bytes, deadletter: s.deadletter_entries }, "spool: shipping");
      while (!signal.aborted) {
        try {
          if ((await shipper.step()) === "idle") await shipper.nap(opts.idleMs ?? 2000);
        } catch (err) {
          if (signal.aborted) break;
          logger.warn({ err: (err as Error).message }, "spool: shipping failed; will retry");
          await shipper.nap(1000);
        }
      }
    } finally {
      await held.release();
    }
  })();
  return { done };
}

/**
 * `edgectl spool flush`: ships everything now and waits. When `edgectl run` ships this spool it
 * is woken and watched; otherwise the spool is shipped here. Resolves with the status at the end
 * (`unsent_frames` 0 when everything went).
 */
export async function flushSpool(opts: Omit<ShipperOptions, "signal"> & { timeoutMs: number }): Promise<SpoolStatus> {
  const deadline = AbortSignal.timeout(opts.timeoutMs);
  const shipper = new Shipper({ ...opts, signal: deadline });
  const dir = shipper.spool.dir;
  const held = await tryLock(dir, "shipper", () => shipper.poke());
  if (held === undefined) {
    await poke(dir, "shipper");
    for (;;) {
      const s = await shipper.spool.status();
      if (s.unsent_frames === 0 || deadline.aborted) return s;
      await sleep(100);
    }
  }
  try {
    while (!deadline.aborted) {
      try {
        if ((await shipper.step(deadline)) === "idle") break;
      } catch (err) {
        if (deadline.aborted) break;
        throw err;
      }
    }
    return await shipper.spool.status();
  } finally {
    await held.release();
  }
}

/** Wakes the shipper of a state dir's spool, if one runs (after an append). */
export function pokeShipper(stateDir: string): Promise<boolean> {
  return poke(spoolDir(stateDir), "shipper");
}
