/**
 * Bounds on what one connection, one client address and one HTTP/2 session may hold, shared
 * by the cleartext and the TLS listeners (the `serve --http-*` and `--max-connections*` flags).
 */
import type http from "node:http";
import type http2 from "node:http2";
import type net from "node:net";
import { RateLimiter } from "./rate-limit.js";

export interface TransportLimits {
  /** A request's headers must be complete this long after the connection opened or its previous response ended. */
  headersTimeoutMs: number;
  /** A request's headers and body must be complete this long after it started. */
  requestTimeoutMs: number;
  /** An HTTP/2 session with no stream open and no traffic is closed after this long; HTTP/1.1 keep-alive waits at most 5 s of it. */
  idleTimeoutMs: number;
  /** Open connections at most, over all clients; beyond, new ones are closed at once. */
  maxConnections: number;
  /** Open connections at most from one client address. */
  maxConnectionsPerClient: number;
  /**
   * New connections per second one client address may have served, past its burst; those
   * beyond wait, unread (on TLS, before their handshake) and without a timer, until their turn. 0: no limit.
   */
  connectionRatePerClient: number;
  /** New connections one client address may have served at once before the rate applies. */
  connectionBurstPerClient: number;
  /** HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS: streams one session may have open. */
  maxConcurrentStreams: number;
  /** HTTP/2: memory one session may buffer, in MiB, before new streams are refused (Node's maxSessionMemory). */
  maxSessionMemoryMiB: number;
}

export const DEFAULT_LIMITS: TransportLimits = {
  headersTimeoutMs: 10_000,
  requestTimeoutMs: 120_000,
  idleTimeoutMs: 60_000,
  maxConnections: 10_000,
  maxConnectionsPerClient: 256,
  connectionRatePerClient: 10,
  connectionBurstPerClient: 64,
  maxConcurrentStreams: 128,
  maxSessionMemoryMiB: 16,
};

/** Node's HTTP/1.1 keep-alive default, kept unless the idle timeout is shorter. */
const KEEP_ALIVE_MS = 5_000;

/** Checks the limits before a listener starts, so a bad flag stops `serve` with its name. */
export function validateLimits(l: TransportLimits): void {
  const positive: [keyof TransportLimits, string][] = [
    ["headersTimeoutMs", "--http-headers-timeout"],
    ["requestTimeoutMs", "--http-request-timeout"],
    ["idleTimeoutMs", "--http-idle-timeout"],
    ["maxConnections", "--max-connections"],
    ["maxConnectionsPerClient", "--max-connections-per-client"],
    ["connectionBurstPerClient", "--connection-burst-per-client"],
    ["maxConcurrentStreams", "--http2-max-concurrent-streams"],
    ["maxSessionMemoryMiB", "--http2-max-session-memory"],
  ];
  for (const [key, flag] of positive) {
    if (!(l[key] > 0) || !Number.isFinite(l[key])) throw new Error(`${flag}: must be greater than 0`);
  }
  if (!(l.connectionRatePerClient >= 0) || !Number.isFinite(l.connectionRatePerClient)) throw new Error("--connection-rate-per-client: must be 0 or more");
  if (l.requestTimeoutMs < l.headersTimeoutMs) throw new Error("--http-request-timeout: must be at least --http-headers-timeout");
}

/** The HTTP/1.1 server options of the limits. */
export function http1Options(l: TransportLimits): http.ServerOptions {
  return {
    headersTimeout: l.headersTimeoutMs,
    requestTimeout: l.requestTimeoutMs,
    keepAliveTimeout: Math.min(KEEP_ALIVE_MS, l.idleTimeoutMs),
    // Node checks the two timeouts on this period; a tenth of the shorter keeps them close to exact.
    connectionsCheckingInterval: Math.max(50, Math.min(1000, Math.floor(l.headersTimeoutMs / 10))),
  };
}

/** The HTTP/2 session options of the limits. */
export function http2Options(l: TransportLimits): http2.ServerOptions {
  return {
    settings: { maxConcurrentStreams: l.maxConcurrentStreams },
    maxSessionMemory: l.maxSessionMemoryMiB,
  };
}

/**
 * Timeouts of one HTTP/2 session: its first request must open within the headers timeout,
 * and it is closed once it has been idle (no stream open, no frame) for the idle timeout.
 */
export function guardSession(session: http2.ServerHttp2Session, l: TransportLimits): void {
  let open = 0;
  const firstRequest = setTimeout(() => session.destroy(), l.headersTimeoutMs);
  firstRequest.unref();
  session.on("stream", (stream: http2.ServerHttp2Stream) => {
    clearTimeout(firstRequest);
    open++;
    stream.once("close", () => open--);
  });
  session.once("close", () => clearTimeout(firstRequest));
  session.setTimeout(l.idleTimeoutMs, () => {
    if (open === 0) session.destroy();
  });
}

/** Connections of one address waiting for their turn, with the one timer that admits the next. */
interface Waiting {
  queue: { socket: net.Socket; start: (early: Buffer) => void; early: Buffer[]; onData: (chunk: Buffer) => void }[];
  timer?: NodeJS.Timeout;
}

/** Bytes a waiting connection may send before it is no longer read (it is served later). */
const WAITING_BYTES = 16 * 1024;

/**
 * Counts open connections in total and per client address, refuses those beyond the caps, and
 * (`pace`) serves each address's new connections at a rate: a client that reopens connections
 * as fast as they are closed (idle ones at the headers timeout) costs the server the accepting,
 * parsing and closing of that rate, not of its reconnects; the ones it opens beyond the rate
 * wait, counted against its caps, until their turn.
 */
export class ConnectionGuard {
  private total = 0;
  private readonly perClient = new Map<string, number>();
  private readonly rate: RateLimiter;
  private readonly waiting = new Map<string, Waiting>();
  refused = 0;
  /** Connections waiting for their turn now. */
  held = 0;

  constructor(private readonly limits: Pick<TransportLimits, "maxConnections" | "maxConnectionsPerClient"> & Partial<Pick<TransportLimits, "connectionRatePerClient" | "connectionBurstPerClient">>) {
    this.rate = new RateLimiter({ perSecond: limits.connectionRatePerClient ?? 0, burst: limits.connectionBurstPerClient ?? 1 });
  }

  /**
   * Admits the socket (counted until it closes; destroyed, and false, beyond the caps), then
   * calls `start` with the bytes it sent so far once the address's rate lets it be served: at
   * once within the burst, else in its turn.
   */
  pace(socket: net.Socket, start: (early: Buffer) => void): boolean {
    const address = socket.remoteAddress ?? "unknown";
    if (!this.count(socket, address)) return false;
    const waiting = this.waiting.get(address);
    if (!waiting && this.rate.retryAfter(address) === 0) {
      this.rate.take(address);
      start(Buffer.alloc(0));
      return true;
    }
    const early: Buffer[] = [];
    let bytes = 0;
    // Read while it waits (so that its close is seen), up to a bound.
    const onData = (chunk: Buffer) => {
      early.push(chunk);
      bytes += chunk.length;
      if (bytes >= WAITING_BYTES) socket.pause();
    };
    const entry = { socket, start, early, onData };
    socket.on("data", onData);
    this.held++;
    const w = waiting ?? { queue: [] };
    w.queue.push(entry);
    this.waiting.set(address, w);
    socket.once("close", () => {
      const i = w.queue.indexOf(entry);
      if (i < 0) return;
      w.queue.splice(i, 1);
      this.held--;
      if (w.queue.length === 0) {
        clearTimeout(w.timer);
        this.waiting.delete(address);
      }
    });
    const next = () => {
      w.timer = undefined;
      while (w.queue.length > 0 && this.rate.retryAfter(address) === 0) {
        const e = w.queue.shift()!;
        this.held--;
        this.rate.take(address);
        e.socket.off("data", e.onData);
        e.socket.resume();
        e.start(Buffer.concat(e.early));
      }
      if (w.queue.length === 0) this.waiting.delete(address);
      else w.timer = setTimeout(next, this.rate.retryAfter(address) * 1000).unref();
    };
    w.timer ??= setTimeout(next, this.rate.retryAfter(address) * 1000).unref();
    return true;
  }

  /** Closes the connections still waiting for their turn (when the listener closes). */
  destroyWaiting(): void {
    for (const w of this.waiting.values()) for (const e of [...w.queue]) e.socket.destroy();
  }

  private count(socket: net.Socket, address: string): boolean {
    const mine = this.perClient.get(address) ?? 0;
    if (this.total >= this.limits.maxConnections || mine >= this.limits.maxConnectionsPerClient) {
      this.refused++;
      socket.destroy();
      return false;
    }
    this.total++;
    this.perClient.set(address, mine + 1);
    socket.once("close", () => {
      this.total--;
      const left = (this.perClient.get(address) ?? 1) - 1;
      if (left === 0) this.perClient.delete(address);
      else this.perClient.set(address, left);
    });
    return true;
  }
}
