/**
 * --connection-rate-per-client on the TLS listener, against real mutual-TLS servers: one
 * address's connections beyond the burst wait before their handshake, each is handshaken and
 * served in its turn (its ClientHello kept while it waited), and rate 0 paces nothing.
 */
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import http2 from "node:http2";
import os from "node:os";
import { setTimeout as sleep } from "node:timers/promises";
import path from "node:path";
import tls from "node:tls";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CA_CERT, CRL_FILE, initCa, issueCert, type IssuedCert } from "../src/security/ca.js";
import type { TransportLimits } from "../src/transport/limits.js";
import { startTestServer, type TestServer } from "./helpers/server.js";
import { until } from "./helpers/wait.js";

/** One client connection: when its handshake finished (in order), and what it was answered. */
interface Conn {
  socket: tls.TLSSocket;
  secured: Promise<void>;
  /** Connections of the server waiting for their turn when this one's handshake finished. */
  waitingAtHandshake?: number;
  closed: Promise<void>;
}

describe("new connections per client address at a rate, on the TLS listener", () => {
  let work: string;
  let ca: string;
  let serverCert: IssuedCert;
  let robot: IssuedCert;
  let caPem: Buffer;
  const servers: TestServer[] = [];

  const start = async (limits: Partial<TransportLimits>) => {
    const s = await startTestServer("sqlite", {
      tls: { certFile: serverCert.certFile, keyFile: serverCert.keyFile, caFile: path.join(ca, CA_CERT), crlFile: path.join(ca, CRL_FILE) },
      limits,
    });
    servers.push(s);
    return s;
  };

  beforeAll(async () => {
    work = mkdtempSync(path.join(os.tmpdir(), "ao-tls-pace-"));
    ca = path.join(work, "ca");
    await initCa(ca);
    serverCert = await issueCert(ca, { profile: "server", name: "api" });
    robot = await issueCert(ca, { profile: "node", name: "robot-1" });
    caPem = readFileSync(path.join(ca, CA_CERT));
  });
  afterAll(async () => {
    for (const s of servers) await s.stop();
    rmSync(work, { recursive: true, force: true });
  });

  const waitingNow = (s: TestServer) => s.metrics.countWaitingConnections?.() ?? 0;
  // localAddress goes on to the TCP connection (net.connect), which the TLS option types leave out.
  const tlsOptions = (s: TestServer, alpn: string, localAddress = "127.0.0.1"): tls.ConnectionOptions & { localAddress: string } => ({
    host: "127.0.0.1",
    port: s.address.port,
    localAddress,
    ca: caPem,
    cert: readFileSync(robot.certFile),
    key: readFileSync(robot.keyFile),
    ALPNProtocols: [alpn],
  });
  /** Opens a TLS connection (its ClientHello goes out as soon as TCP connects) and notes when its handshake ends. */
  const open = (s: TestServer, alpn: string): Conn => {
    const socket = tls.connect(tlsOptions(s, alpn));
    socket.on("error", () => {});
    const conn: Conn = {
      socket,
      secured: new Promise<void>((resolve) =>
        socket.once("secureConnect", () => {
          conn.waitingAtHandshake = waitingNow(s);
          resolve();
        }),
      ),
      closed: new Promise<void>((resolve) => socket.once("close", () => resolve())),
    };
    return conn;
  };
  /** GET /v1/health on the connection once it is handshaken: HTTP/1.1 by hand, or an HTTP/2 session on it. */
  const health = async (s: TestServer, conn: Conn): Promise<string> => {
    await conn.secured;
    if (conn.socket.alpnProtocol === "h2") {
      const session = http2.connect(s.url, { createConnection: () => conn.socket });
      session.on("error", () => {});
      try {
        return await new Promise<string>((resolve, reject) => {
          const req = session.request({ ":path": "/v1/health" });
          let status = 0;
          let body = "";
          req.on("response", (h) => (status = Number(h[":status"])));
          req.on("data", (c: Buffer) => (body += c.toString()));
          req.on("end", () => resolve(`h2 ${status} ${/"status":"(\w+)"/.exec(body)?.[1]}`));
          req.on("error", reject);
          req.end();
        });
      } finally {
        session.destroy();
      }
    }
    const chunks: Buffer[] = [];
    conn.socket.on("data", (c: Buffer) => chunks.push(c));
    conn.socket.write("GET /v1/health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    await conn.closed;
    const text = Buffer.concat(chunks).toString();
    // The status line and the probe's status field (the body may come chunked).
    return `http/1.1 ${/^HTTP\/1\.1 (\d+) /.exec(text)?.[1]} ${/"status":"(\w+)"/.exec(text)?.[1]}`;
  };
  /** cp_connections_waiting from GET /metrics, over one HTTP/2 session from another address (not paced with the first). */
  const scraper = (s: TestServer) => {
    const session = http2.connect(s.url, tlsOptions(s, "h2", "127.0.0.2"));
    session.on("error", () => {});
    return {
      waiting: () =>
        new Promise<number>((resolve, reject) => {
          const req = session.request({ ":path": "/metrics" });
          let body = "";
          req.on("data", (c: Buffer) => (body += c.toString()));
          req.on("end", () => resolve(Number(/^cp_connections_waiting (\d+)$/m.exec(body)?.[1])));
          req.on("error", reject);
          req.end();
        }),
      close: () => session.destroy(),
    };
  };

  it("handshakes an address's burst at once, the connections beyond it only in their turn, and serves each", async () => {
    // Each second past the burst of 3 lets 3 more in (a full bucket).
    const s = await start({ connectionBurstPerClient: 3, connectionRatePerClient: 10, headersTimeoutMs: 2000, requestTimeoutMs: 4000 });
    const metrics = scraper(s);
    expect(await metrics.waiting()).toBe(0);
    const conns = Array.from({ length: 8 }, (_, i) => open(s, i % 2 === 0 ? "http/1.1" : "h2"));
    await until("the 5 connections beyond the burst to wait", async () => waitingNow(s) === 5);
    // While 5 wait, at most the 3 of the burst have had their handshake.
    expect(conns.filter((c) => c.waitingAtHandshake !== undefined).length).toBeLessThanOrEqual(3);
    expect(await until("/metrics to count them", async () => (await metrics.waiting()) > 0 || undefined)).toBe(true);
    // The last one, once served, sends nothing: the headers timeout applies to it as to any.
    const silent = conns.pop()!;
    const answers = await Promise.all(conns.map((c) => health(s, c)));
    expect(answers).toEqual(["http/1.1 200 ok", "h2 200 ok", "http/1.1 200 ok", "h2 200 ok", "http/1.1 200 ok", "h2 200 ok", "http/1.1 200 ok"]);
    await silent.secured;
    silent.socket.resume(); // a paused socket would never see the server's end
    await silent.closed;
    // The burst finished its handshakes while the others were waiting; the last ones when none was left.
    const seen = [...conns, silent].map((c) => c.waitingAtHandshake!);
    expect(Math.max(...seen)).toBeGreaterThan(0);
    expect(seen.filter((w) => w === 0).length).toBeGreaterThan(0);
    expect(waitingNow(s)).toBe(0);
    expect(await metrics.waiting()).toBe(0);
    metrics.close();
  });

  it("keeps a waiting connection unhandshaken and without a timer, and forgets it when it closes", async () => {
    // A rate this low serves no waiting connection while the test runs.
    const s = await start({ connectionBurstPerClient: 1, connectionRatePerClient: 0.001, headersTimeoutMs: 300, requestTimeoutMs: 1000 });
    const first = open(s, "http/1.1");
    await first.secured;
    first.socket.resume();
    const waiting = [open(s, "http/1.1"), open(s, "h2")];
    await until("the two connections beyond the burst to wait", async () => waitingNow(s) === 2);
    // The served one sends nothing and is closed at the headers timeout; the waiting ones are not,
    // however long they wait past it (here two more timeouts after they opened).
    await first.closed;
    await sleep(600);
    expect(waitingNow(s)).toBe(2);
    expect(waiting.map((c) => [c.waitingAtHandshake, c.socket.destroyed])).toEqual([
      [undefined, false],
      [undefined, false],
    ]);
    waiting[0].socket.destroy();
    await until("the closed waiting connection to be forgotten", async () => waitingNow(s) === 1);
    waiting[1].socket.destroy();
    await until("the other one too", async () => waitingNow(s) === 0);
  });

  it("paces nothing with rate 0", async () => {
    const s = await start({ connectionBurstPerClient: 2, connectionRatePerClient: 0 });
    const conns = Array.from({ length: 6 }, (_, i) => open(s, i % 2 === 0 ? "http/1.1" : "h2"));
    const answers = await Promise.all(conns.map((c) => health(s, c)));
    expect(answers).toEqual(["http/1.1 200 ok", "h2 200 ok", "http/1.1 200 ok", "h2 200 ok", "http/1.1 200 ok", "h2 200 ok"]);
    expect(conns.map((c) => c.waitingAtHandshake)).toEqual([0, 0, 0, 0, 0, 0]);
  });
});
