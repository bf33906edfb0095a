import http2 from "node:http2";
import net from "node:net";
import type tls from "node:tls";
import { normalizeSerial, type CheckedCrl } from "../security/pki.js";
import { ConnectionGuard, DEFAULT_LIMITS, guardSession, http1Options, http2Options, type TransportLimits } from "./limits.js";
import { listenOn, type Listener, type ListenAddress, type RequestHandler } from "./listener.js";

export interface TlsSettings {
  cert: Buffer;
  key: Buffer;
  /** Mutual TLS: client certificates must be signed by this CA. */
  ca?: Buffer;
  /** Revoked client certificates are refused (requires ca). */
  crl?: CheckedCrl;
  /**
   * With a CA: "require" (every client presents a certificate it signed) or "request" (a
   * client without a certificate is let in, to authenticate with a bearer token; one that
   * presents a certificate must still present a valid one).
   */
  clientAuth?: "require" | "request";
  /**
   * With "require": let a client that presents no certificate at all finish the handshake
   * anyway, for enrolment (serve --ca-dir). The gate then lets its requests call only the
   * enrolment RPC; a client presenting a bad certificate is still cut off here.
   */
  admitCertless?: boolean;
}

export interface TlsEvents {
  /** A client failed certificate verification (the code Node reports, e.g. CERT_REVOKED). */
  onRefused(reason: string): void;
  /** An open connection of a certificate the new CRL revokes was closed. */
  onRevokedClosed(): void;
}

export interface TlsListener extends Listener {
  /** Takes a new CRL for new handshakes and closes open connections of the certificates it revokes. */
  updateCrl(crl: CheckedCrl): number;
}

/**
 * Serves the handler over TLS on one port, HTTP/2 and HTTP/1.1 chosen by ALPN, so Connect,
 * gRPC, gRPC-Web and REST all work. With a CA, every client must present a certificate it
 * signed; a client that does not, or whose certificate is expired or revoked, is cut off right
 * after the handshake, before any request is read. One address's new connections are served at
 * a rate like on the cleartext listener (ConnectionGuard.pace): those beyond wait their turn
 * before their handshake starts, their first bytes (the ClientHello) kept for it.
 */
export async function listenTls(
  address: ListenAddress,
  handler: RequestHandler,
  settings: TlsSettings,
  events: TlsEvents,
  limits: TransportLimits = DEFAULT_LIMITS,
): Promise<TlsListener> {
  const mutual = settings.ca !== undefined;
  const optional = settings.clientAuth === "request";
  const contextOptions = (crl?: CheckedCrl): tls.SecureContextOptions => ({
    cert: settings.cert,
    key: settings.key,
    ca: settings.ca,
    crl: crl?.pem,
  });
  // Never listens itself: connections come from the net.Server below, which paces them before
  // handing them on, so that a waiting connection costs no handshake.
  const server = http2.createSecureServer(
    {
      ...contextOptions(settings.crl),
      ...http2Options(limits),
      allowHTTP1: true,
      requestCert: mutual,
      // Verified below, so a refusal can say why (Node would only reset the connection).
      rejectUnauthorized: false,
      handshakeTimeout: limits.headersTimeoutMs,
    },
    handler,
  );
  // HTTP/1.1 over TLS: Node's Http2SecureServer with allowHTTP1 checks these on its connections,
  // once it has started tracking them, on "listening"; it never listens, so it is told here.
  // test/hardening-transport.test.ts (half a request line over TLS) fails if this stops working.
  Object.assign(server, http1Options(limits));
  server.emit("listening");
  const guard = new ConnectionGuard(limits);
  const peers = new Map<tls.TLSSocket, string>();
  const sessions = new Set<http2.ServerHttp2Session>();
  const sockets = new Set<net.Socket>();
  const accept = net.createServer((socket) => {
    socket.on("error", () => socket.destroy());
    guard.pace(socket, (early) => {
      if (socket.destroyed) return;
      sockets.add(socket);
      socket.once("close", () => sockets.delete(socket));
      // The TLS socket made in the server's "connection" listener takes over the TCP handle and
      // first reads what is in this socket's buffer: the bytes it sent while it waited.
      socket.pause();
      if (early.length > 0) socket.unshift(early);
      server.emit("connection", socket);
    });
  });
  // http2 opens its session in its own listener of this event, which runs first; destroying the
  // socket here, in the same turn, ends that session before it reads a request.
  server.on("secureConnection", (socket: tls.TLSSocket) => {
    if (!mutual) return;
    if (!socket.authorized) {
      const presented = Object.keys(socket.getPeerCertificate() ?? {}).length > 0;
      // --tls-client-auth request: no certificate is allowed (the caller needs a token); a bad one is not.
      // With --ca-dir, no certificate is allowed for enrolment only (the gate sees to it).
      if ((optional || settings.admitCertless) && !presented) return;
      const code = (socket.authorizationError as unknown as { code?: string } | null)?.code ?? String(socket.authorizationError ?? "unknown");
      events.onRefused(presented ? code : "NO_CERTIFICATE");
      socket.destroy();
      return;
    }
    const serial = socket.getPeerCertificate()?.serialNumber;
    if (serial) {
      peers.set(socket, normalizeSerial(serial));
      socket.once("close", () => peers.delete(socket));
    }
  });
  server.on("session", (session) => {
    guardSession(session, limits);
    sessions.add(session);
    session.once("close", () => sessions.delete(session));
  });
  // A failed handshake (no certificate at all when one is required, a protocol error).
  server.on("tlsClientError", (err: Error & { code?: string }, socket) => {
    events.onRefused(err.code ?? "handshake_failed");
    socket.destroy();
  });

  // A port that cannot be bound leaves nothing running: the server's connection checks stop too.
  const bound = await listenOn(accept, address).catch((err: unknown) => {
    server.close(() => {});
    throw err;
  });

  return {
    address: bound,
    waiting: () => guard.held,
    updateCrl(crl) {
      server.setSecureContext(contextOptions(crl));
      let closed = 0;
      for (const [socket, serial] of peers) {
        if (!crl.revoked.has(serial)) continue;
        socket.destroy();
        closed++;
        events.onRevokedClosed();
      }
      return closed;
    },
    async close() {
      const closed = new Promise<void>((resolve) => accept.close(() => resolve()));
      // Closes idle HTTP/1.1 keep-alive connections and stops the checks started by the
      // "listening" above (the server itself never bound).
      server.close(() => {});
      for (const session of sessions) session.close();
      guard.destroyWaiting();
      // Sessions and HTTP/1.1 keep-alive sockets that have not finished after 2 seconds are cut.
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
