import http from "node:http";
import http2 from "node:http2";
import net from "node:net";
import { ConnectionGuard, DEFAULT_LIMITS, guardSession, http1Options, http2Options, type TransportLimits } from "./limits.js";
import type { NodeRequest, NodeResponse } from "./rest.js";

export type RequestHandler = (req: NodeRequest, res: NodeResponse) => void;

/** A parsed `host:port` listen address. */
export interface ListenAddress {
  host: string;
  port: number;
}

/** Parses "0.0.0.0:8888", "127.0.0.1:0", ":9090" (all interfaces) or "[::1]:8888". */
export function parseListenAddress(value: string): ListenAddress {
  const m = /^(?:\[([^\]]+)\]|([^:]*)):(\d{1,5})$/.exec(value.trim());
  const port = m ? Number(m[3]) : NaN;
  if (!m || port > 65535) throw new Error(`invalid listen address "${value}": expected host:port, e.g. 0.0.0.0:8888`);
  return { host: m[1] ?? (m[2] || "0.0.0.0"), port };
}

export interface Listener {
  /** The address actually bound (the real port when 0 was asked for). */
  readonly address: ListenAddress;
  /** Stops accepting, then ends every open connection and HTTP/2 session. */
  close(): Promise<void>;
  /** Connections waiting for their turn under the per-address rate (--connection-rate-per-client). */
  waiting?(): number;
}

/** Binds a server to an address; resolves with the address actually bound. */
export async function listenOn(server: net.Server, address: ListenAddress): Promise<ListenAddress> {
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(address.port, address.host, () => {
      server.off("error", reject);
      resolve();
    });
  });
  const bound = server.address() as net.AddressInfo;
  return { host: bound.address, port: bound.port };
}

const H2_PREFACE = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "latin1");
/** An HTTP/2 frame header: length (3 bytes), type, flags, stream id (4). */
const H2_FRAME_HEADER_BYTES = 9;

/**
 * Serves one handler on one cleartext port for both HTTP/2 with prior knowledge (h2c, as
 * gRPC and `curl --http2-prior-knowledge` speak it) and HTTP/1.1: it reads the first bytes
 * of each connection and hands the socket to the matching server. TLS, where ALPN chooses
 * the protocol, uses `http2.createSecureServer({ allowHTTP1: true })` with the same handler.
 * The limits bound every connection: its first bytes (for HTTP/2, the preface and the header
 * of the client's first frame) and each request's headers must come within the headers timeout,
 * a request within the request timeout, connections beyond the caps (in total, per client
 * address) are closed as they open, and one address's new connections are served at a rate
 * (those beyond wait their turn: ConnectionGuard.pace).
 */
export async function listenCleartext(address: ListenAddress, handler: RequestHandler, limits: TransportLimits = DEFAULT_LIMITS): Promise<Listener> {
  const h2 = http2.createServer(http2Options(limits), handler);
  const h1 = http.createServer(http1Options(limits), handler as http.RequestListener);
  // http.Server enforces headersTimeout and requestTimeout only on connections it tracks, and
  // it starts tracking on "listening"; h1 never listens (sockets come from the net.Server
  // below), so it is told here. test/hardening-transport.test.ts fails if this stops working.
  h1.emit("listening");
  const guard = new ConnectionGuard(limits);
  const sessions = new Set<http2.Http2Session>();
  const sockets = new Set<net.Socket>();
  // Requests in flight per HTTP/1.1 socket: http.Server tracks idle connections only for
  // sockets it accepted itself, so closing lets go of idle keep-alive sockets here.
  const inFlight = new Map<net.Socket, number>();
  let closing = false;
  h1.on("request", (req: http.IncomingMessage, res: http.ServerResponse) => {
    const socket = req.socket;
    inFlight.set(socket, (inFlight.get(socket) ?? 0) + 1);
    res.once("close", () => {
      const left = (inFlight.get(socket) ?? 1) - 1;
      inFlight.set(socket, left);
      if (closing && left === 0) socket.destroy();
    });
  });
  h2.on("session", (session) => {
    guardSession(session, limits);
    sessions.add(session);
    session.once("close", () => sessions.delete(session));
  });

  // Connections whose first bytes have not arrived yet: nothing to finish on close.
  const undecided = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    socket.on("error", () => socket.destroy());
    guard.pace(socket, (early) => {
      if (socket.destroyed) return;
      sockets.add(socket);
      undecided.add(socket);
      socket.once("close", () => {
        sockets.delete(socket);
        undecided.delete(socket);
        inFlight.delete(socket);
      });
      socket.setTimeout(limits.headersTimeoutMs, () => socket.destroy());
      let head: Buffer = Buffer.alloc(0);
      const onData = (chunk: Buffer) => {
        head = head.length === 0 ? chunk : Buffer.concat([head, chunk]);
        const n = Math.min(head.length, H2_PREFACE.length);
        const isH2Prefix = head.subarray(0, n).equals(H2_PREFACE.subarray(0, n));
        // Wait while the bytes so far could still be the start of the HTTP/2 preface, and past
        // it for the header of the SETTINGS frame that a client sends with its preface (RFC 9113
        // 3.4): an HTTP/2 session (nghttp2's state and buffers, the server's SETTINGS) is made
        // only then, so that a connection that sends the preface alone costs no more than one
        // that sends nothing, and is closed at the headers timeout the same way.
        if (isH2Prefix && head.length < H2_PREFACE.length + H2_FRAME_HEADER_BYTES) return;
        socket.off("data", onData);
        socket.setTimeout(0);
        undecided.delete(socket);
        socket.pause();
        socket.unshift(head);
        if (isH2Prefix) {
          // The HTTP/2 session drains the bytes put back into the socket's buffer itself;
          // resuming here would flush them past it.
          h2.emit("connection", socket);
        } else {
          inFlight.set(socket, 0);
          h1.emit("connection", socket);
          socket.resume();
        }
      };
      socket.on("data", onData);
      // Bytes it sent while it waited for its turn.
      if (early.length > 0) onData(early);
    });
  });

  // A port that cannot be bound leaves nothing running: h1's connection checks stop too.
  const bound = await listenOn(server, address).catch((err: unknown) => {
    h1.close(() => {});
    throw err;
  });

  return {
    address: bound,
    waiting: () => guard.held,
    async close() {
      closing = true;
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      // Stops the connection checks started by the "listening" above (h1 itself never bound).
      h1.close(() => {});
      for (const session of sessions) session.close();
      for (const [socket, requests] of inFlight) if (requests === 0) socket.destroy();
      for (const socket of undecided) socket.destroy();
      guard.destroyWaiting();
      // Give in-flight requests a moment, then cut what is left.
      const deadline = setTimeout(() => {
        for (const session of sessions) session.destroy();
        for (const socket of sockets) socket.destroy();
      }, 2000);
      deadline.unref();
      await closed;
      clearTimeout(deadline);
    },
  };
}
