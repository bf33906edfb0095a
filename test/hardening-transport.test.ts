/**
 * The transport under hostile clients, against real servers: unauthenticated and deeply nested
 * bodies, slow and idle connections, connection and stream floods, floods of unauthenticated
 * calls, malformed protobuf and gRPC frames, and --tls-client-auth request.
 */
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import http from "node:http";
import http2 from "node:http2";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import tls from "node:tls";
import { gzipSync } from "node:zlib";
import { fromBinary, fromJson, toBinary } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createOrchestratorClients, IngestEventsRequestSchema, IngestEventsResponseSchema } from "../clients/index.js";
import { BOOTSTRAP_TOKEN_FILE } from "../src/security/bootstrap.js";
import { CA_CERT, initCa, issueCert, type IssuedCert } from "../src/security/ca.js";
import { ORCHESTRATOR_BIN, runProgram, startChildServer, type ChildServer } from "./helpers/child.js";
import { h1 } from "./helpers/http.js";
import { until } from "./helpers/wait.js";
import { startTestServer, type TestServer } from "./helpers/server.js";

const ENFORCED = { AUTONOMY_RBAC_ENFORCEMENT: "1" };
const MiB = 1024 * 1024;

interface Answer {
  status: number;
  headers: http2.IncomingHttpHeaders;
  trailers: http2.IncomingHttpHeaders;
  body: Buffer;
}

/**
 * One request on an HTTP/2 session. The server may answer before it reads the body and reset
 * the stream; write errors after the answer are expected and ignored.
 */
function h2Request(session: http2.ClientHttp2Session, headers: http2.OutgoingHttpHeaders, body?: Buffer | string): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = session.request(headers);
    let answer: Answer | undefined;
    const chunks: Buffer[] = [];
    req.on("response", (h) => (answer = { status: Number(h[":status"]), headers: h, trailers: {}, body: Buffer.alloc(0) }));
    req.on("trailers", (t) => answer && (answer.trailers = t));
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("error", () => {});
    const done = () => {
      if (!answer) return reject(new Error(`stream closed without an answer (RST ${req.rstCode})`));
      answer.body = Buffer.concat(chunks);
      resolve(answer);
    };
    // The answer is complete at its end, even while the server has not read the whole body.
    req.on("end", done);
    req.on("close", done);
    req.end(body);
  });
}

/** Peak resident set size of a process, in MiB. */
function peakRssMiB(pid: number): number {
  const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
  if (!m) throw new Error("no VmHWM");
  return Number(m[1]) / 1024;
}

/** An ingest body of about `size` bytes whose one payload is arrays nested as deep as the bytes allow. */
function nestedBody(size: number): Buffer {
  const head = '{"events":[{"event_id":"e1","event_type":"t","node_id":"n1","timestamp":"2026-11-22T10:00:00Z","payload":{"a":';
  const tail = "}}]}";
  const depth = Math.floor((size - head.length - tail.length) / 2);
  return Buffer.from(head + "[".repeat(depth) + "]".repeat(depth) + tail);
}

/** Resolves when the server closes the socket (the test times out if it never does). */
const closedByServer = (socket: net.Socket) =>
  new Promise<void>((resolve) => {
    socket.once("close", () => resolve());
    socket.resume(); // a paused socket would never see the server's end
  });

function tempDir(prefix: string): string {
  return mkdtempSync(path.join(os.tmpdir(), `ao-hard-${prefix}-`));
}

describe("bodies: authentication first, then bounded parsing", () => {
  let dir: string;
  let server: ChildServer;
  let token: string;
  beforeAll(async () => {
    dir = tempDir("bodies");
    server = await startChildServer(["--data-dir", dir], ENFORCED);
    token = readFileSync(path.join(dir, BOOTSTRAP_TOKEN_FILE), "utf8").trim();
  });
  afterAll(async () => {
    await server.kill();
    rmSync(dir, { recursive: true, force: true });
  });

  const body = nestedBody(8 * MiB - 1024);
  const targets = [
    ["REST", "/v1/events"],
    ["Connect JSON", "/autonomy.v1.EventService/IngestEvents"],
  ] as const;

  /** 16 bodies at once (8 per target) over two sessions, with a health probe beside them. */
  async function flood(headers: http2.OutgoingHttpHeaders): Promise<{ answers: Answer[]; health: Answer }> {
    // The client queues each body whole: let its session hold them.
    const sessions = [http2.connect(server.url, { maxSessionMemory: 1000 }), http2.connect(server.url, { maxSessionMemory: 1000 })];
    try {
      const sent = targets.flatMap(([, p], t) =>
        Array.from({ length: 8 }, () => h2Request(sessions[t], { ":method": "POST", ":path": p, "content-type": "application/json", ...headers }, body)),
      );
      const probe = http2.connect(server.url);
      const health = h2Request(probe, { ":path": "/v1/health" }).finally(() => probe.close());
      return { answers: await Promise.all(sent), health: await health };
    } finally {
      for (const s of sessions) s.close();
    }
  }

  it("answers 16 unauthenticated 8 MiB nested bodies 401 without reading them; RSS stays under 300 MB", async () => {
    expect(body.length).toBeGreaterThan(8 * MiB - 2048);
    const { answers, health } = await flood({});
    expect(answers.map((a) => a.status)).toEqual(Array(16).fill(401));
    expect(JSON.parse(answers[0].body.toString())).toMatchObject({ code: "unauthenticated" });
    expect(JSON.parse(answers[15].body.toString())).toMatchObject({ code: "unauthenticated", message: expect.stringContaining("autonomy.v1.EventService/IngestEvents needs telemetry:write") });
    expect(health.status).toBe(200);
    expect(peakRssMiB(server.proc.pid!)).toBeLessThan(300);
  });

  it("answers an authenticated caller's nested bodies 400 before parsing them, and keeps RSS under 300 MB", async () => {
    const { answers, health } = await flood({ authorization: `Bearer ${token}` });
    expect(answers.map((a) => a.status)).toEqual(Array(16).fill(400));
    for (const a of answers) {
      expect(JSON.parse(a.body.toString())).toEqual({ code: "invalid_argument", message: "request body: nested deeper than 100 levels" });
    }
    expect(health.status).toBe(200);
    expect(peakRssMiB(server.proc.pid!)).toBeLessThan(300);
  });

  it("still ingests a normal authenticated batch, with nesting up to the limit", async () => {
    const nested = (n: number): unknown => (n === 0 ? 1 : [nested(n - 1)]);
    const session = http2.connect(server.url);
    try {
      const event = { event_id: "deep-ok", event_type: "t", node_id: "n1", timestamp: "2026-11-22T10:00:00Z", payload: { a: nested(90) } };
      const ok = await h2Request(session, { ":method": "POST", ":path": "/v1/events", "content-type": "application/json", authorization: `Bearer ${token}` }, JSON.stringify({ events: [event] }));
      expect([ok.status, JSON.parse(ok.body.toString())]).toEqual([200, { received: 1, inserted: 1, deduped: 0 }]);
    } finally {
      session.close();
    }
  });
});

describe("slow, idle and too many connections", () => {
  let work: string;
  let server: ChildServer;
  let tlsServer: ChildServer;
  let caPem: Buffer;
  const limits = ["--http-headers-timeout", "500ms", "--http-request-timeout", "1s", "--http-idle-timeout", "1s", "--max-connections-per-client", "30"];
  beforeAll(async () => {
    work = tempDir("conns");
    const ca = path.join(work, "ca");
    await initCa(ca);
    const cert = await issueCert(ca, { profile: "server", name: "api" });
    caPem = readFileSync(path.join(ca, CA_CERT));
    server = await startChildServer(["--data-dir", path.join(work, "clear"), ...limits]);
    tlsServer = await startChildServer(["--data-dir", path.join(work, "tls"), "--tls-cert-file", cert.certFile, "--tls-key-file", cert.keyFile, ...limits]);
  });
  afterAll(async () => {
    await Promise.all([server.kill(), tlsServer.kill()]);
    rmSync(work, { recursive: true, force: true });
  });

  const port = (s: ChildServer) => Number(new URL(s.url).port);
  const cleartext = (s: ChildServer, localAddress = "127.0.0.1") =>
    new Promise<net.Socket>((resolve) => {
      const socket = net.connect({ port: port(s), host: "127.0.0.1", localAddress }, () => resolve(socket));
      socket.on("error", () => {});
    });
  const overTls = (s: ChildServer, alpn: string) =>
    new Promise<tls.TLSSocket>((resolve) => {
      const socket = tls.connect({ port: port(s), host: "127.0.0.1", ca: caPem, servername: "localhost", ALPNProtocols: [alpn], checkServerIdentity: () => undefined }, () => resolve(socket));
      socket.on("error", () => {});
    });

  it.each([
    ["cleartext", false],
    ["TLS", true],
  ])("closes 20 connections that sent half a request line (%s)", async (_name, secure) => {
    const sockets = await Promise.all(Array.from({ length: 20 }, () => (secure ? overTls(tlsServer, "http/1.1") : cleartext(server))));
    const closed = sockets.map(closedByServer);
    for (const s of sockets) s.write("GET /v1/hea");
    await Promise.all(closed);
    expect(sockets.every((s) => s.destroyed)).toBe(true);
  });

  it.each([
    ["cleartext", false],
    ["TLS", true],
  ])("closes connections that send nothing, HTTP/1.1 and HTTP/2 (%s)", async (_name, secure) => {
    const sockets = secure ? [await overTls(tlsServer, "http/1.1"), await overTls(tlsServer, "h2")] : [await cleartext(server)];
    await Promise.all(sockets.map(closedByServer));
  });

  it("closes an HTTP/2 session that sent the preface but no request, and one idle after its request", async () => {
    const silent = http2.connect(server.url);
    silent.on("error", () => {});
    const idle = http2.connect(server.url);
    idle.on("error", () => {});
    const closed = [silent, idle].map((s) => new Promise<void>((resolve) => s.once("close", () => resolve())));
    expect((await h2Request(idle, { ":path": "/v1/health" })).status).toBe(200);
    await Promise.all(closed);
  });

  it("makes no HTTP/2 session for a connection that sends only the preface, and one for the preface with its SETTINGS", async () => {
    const preface = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "latin1");
    // An empty SETTINGS frame: length 0, type 4, no flags, stream 0.
    const settings = Buffer.from([0, 0, 0, 4, 0, 0, 0, 0, 0]);
    const bare = await cleartext(server);
    const withSettings = await cleartext(server);
    const received = new Map<net.Socket, Buffer[]>([
      [bare, []],
      [withSettings, []],
    ]);
    for (const [s, chunks] of received) s.on("data", (c: Buffer) => chunks.push(c));
    const closed = [bare, withSettings].map(closedByServer);
    bare.write(preface);
    withSettings.write(Buffer.concat([preface, settings]));
    await Promise.all(closed);
    // A session answers with its own SETTINGS frame (type 4) at once; the preface alone got none.
    expect(Buffer.concat(received.get(bare)!).length).toBe(0);
    const answer = Buffer.concat(received.get(withSettings)!);
    expect(answer.length).toBeGreaterThanOrEqual(9);
    expect(answer[3]).toBe(4);
  });

  it("cuts a request whose body does not arrive within the request timeout, HTTP/1.1 and HTTP/2", async () => {
    const socket = await cleartext(server);
    const closed = closedByServer(socket);
    let reply = "";
    socket.on("data", (c: Buffer) => (reply += c.toString()));
    socket.write('POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"events":');
    await closed;
    expect(reply).toMatch(/^HTTP\/1\.1 408 /);

    const session = http2.connect(server.url);
    try {
      const answer = await new Promise<Answer>((resolve, reject) => {
        const req = session.request({ ":method": "POST", ":path": "/v1/events", "content-type": "application/json" });
        req.write('{"events":'); // and never the rest
        let status = 0;
        const chunks: Buffer[] = [];
        req.on("response", (h) => (status = Number(h[":status"])));
        req.on("data", (c: Buffer) => chunks.push(c));
        req.on("error", () => {});
        const done = () => (status ? resolve({ status, headers: {}, trailers: {}, body: Buffer.concat(chunks) }) : reject(new Error("no answer")));
        req.on("end", done);
        req.on("close", done);
      });
      expect([answer.status, JSON.parse(answer.body.toString()).code]).toEqual([408, "deadline_exceeded"]);
    } finally {
      session.destroy();
    }
  });

  it("caps open connections per client address; another address is still served", async () => {
    const mine = await Promise.all(Array.from({ length: 40 }, () => cleartext(server, "127.0.0.2")));
    let closed = 0;
    for (const s of mine) s.once("close", () => closed++);
    // The 10 beyond the cap are closed as they open.
    await until("the server to close the connections beyond the cap", async () => closed >= 10);
    // A request from another address is served while 127.0.0.2 holds its 30, which stay open.
    expect((await h1(`${server.url}/v1/health`)).status).toBe(200);
    expect(closed).toBe(10);
    for (const s of mine) s.destroy();
  });

  it("bounds HTTP/2 sessions: SETTINGS_MAX_CONCURRENT_STREAMS is 128 by default", async () => {
    const session = http2.connect(server.url);
    try {
      await new Promise<void>((resolve) => session.once("remoteSettings", () => resolve()));
      expect(session.remoteSettings.maxConcurrentStreams).toBe(128);
    } finally {
      session.close();
    }
  });
});

describe("throttling unauthenticated calls per address", () => {
  let dir: string;
  let server: ChildServer;
  let token: string;
  beforeAll(async () => {
    dir = tempDir("throttle");
    server = await startChildServer(["--data-dir", dir, "--unauthenticated-burst", "5", "--unauthenticated-rate", "0.1"], ENFORCED);
    token = readFileSync(path.join(dir, BOOTSTRAP_TOKEN_FILE), "utf8").trim();
  });
  afterAll(async () => {
    await server.kill();
    rmSync(dir, { recursive: true, force: true });
  });

  /** GET from a chosen local address (127.0.0.0/8 is all loopback on Linux). */
  const from = (localAddress: string, p: string, headers: Record<string, string> = {}) =>
    new Promise<{ status: number; headers: http.IncomingHttpHeaders; body: string }>((resolve, reject) => {
      const req = http.get(`${server.url}${p}`, { localAddress, headers, agent: false }, (res) => {
        let body = "";
        res.on("data", (c) => (body += c));
        res.on("end", () => resolve({ status: res.statusCode!, headers: res.headers, body }));
      });
      req.on("error", reject);
    });

  it("answers 429 with Retry-After past the burst (REST) and resource_exhausted (RPC); health and metrics stay open", async () => {
    const statuses: number[] = [];
    let last;
    for (let i = 0; i < 8; i++) {
      last = await from("127.0.0.3", "/v1/fleet");
      statuses.push(last.status);
    }
    expect(statuses).toEqual([401, 401, 401, 401, 401, 429, 429, 429]);
    expect(Number(last!.headers["retry-after"])).toBeGreaterThanOrEqual(1);
    expect(JSON.parse(last!.body)).toMatchObject({ code: "resource_exhausted" });

    const api = createOrchestratorClients({ baseUrl: server.url });
    try {
      // The RPC client connects from 127.0.0.1, whose bucket is fresh: 5 refusals, then throttled.
      const codes: Code[] = [];
      for (let i = 0; i < 7; i++) codes.push(await api.nodes.listNodes({}).then(() => Code.Unknown, (e) => ConnectError.from(e).code));
      expect(codes).toEqual([...Array(5).fill(Code.Unauthenticated), Code.ResourceExhausted, Code.ResourceExhausted]);
    } finally {
      api.close();
    }
    expect((await from("127.0.0.3", "/v1/health")).status).toBe(200);
    expect((await from("127.0.0.3", "/metrics")).status).toBe(200);
    // Another address has its own bucket, and a credential is served there.
    expect((await from("127.0.0.4", "/v1/fleet")).status).toBe(401);
    expect((await from("127.0.0.4", "/v1/fleet", { authorization: `Bearer ${token}` })).status).toBe(200);
  });
});

describe("new connections per client address at a rate (--connection-rate-per-client)", () => {
  let dir: string;
  let server: ChildServer;
  beforeAll(async () => {
    dir = tempDir("conn-rate");
    // A rate this low serves no waiting connection while the test runs.
    server = await startChildServer(["--data-dir", dir, "--connection-burst-per-client", "2", "--connection-rate-per-client", "0.001"]);
  });
  afterAll(async () => {
    await server.kill();
    rmSync(dir, { recursive: true, force: true });
  });

  const connect = (localAddress: string) =>
    new Promise<net.Socket>((resolve) => {
      const socket = net.connect({ port: Number(new URL(server.url).port), host: "127.0.0.1", localAddress }, () => resolve(socket));
      socket.on("error", () => {});
    });
  /** Sends GET /v1/health on the socket; `replies` collects what comes back. */
  const ask = (socket: net.Socket) => {
    const replies: Buffer[] = [];
    socket.on("data", (c: Buffer) => replies.push(c));
    socket.write("GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n");
    return replies;
  };
  // One kept-alive connection, from an address of its own, for every scrape.
  const scraper = new http.Agent({ keepAlive: true, maxSockets: 1 });
  const waiting = () =>
    new Promise<number>((resolve, reject) => {
      const req = http.get(`${server.url}/metrics`, { agent: scraper, localAddress: "127.0.0.13" }, (res) => {
        let body = "";
        res.on("data", (c) => (body += c));
        res.on("end", () => resolve(Number(/^cp_connections_waiting (\d+)$/m.exec(body)?.[1])));
      });
      req.on("error", reject);
    });

  it("serves an address's burst, keeps its next connection waiting unread while other addresses are served, and forgets it when it closes", async () => {
    const served = await Promise.all([connect("127.0.0.11"), connect("127.0.0.11")]);
    const answers = served.map(ask);
    await until("both connections of the burst to be answered", async () => answers.every((r) => /^HTTP\/1\.1 200 /.test(Buffer.concat(r).toString())));
    const third = await connect("127.0.0.11");
    const unanswered = ask(third);
    await until("the third connection to wait for its turn", async () => (await waiting()) === 1);
    // Another address is served meanwhile, and the waiting connection has had no answer.
    const other = await connect("127.0.0.12");
    const otherAnswer = ask(other);
    await until("the other address to be answered", async () => /^HTTP\/1\.1 200 /.test(Buffer.concat(otherAnswer).toString()));
    expect(Buffer.concat(unanswered).length).toBe(0);
    expect(third.destroyed).toBe(false);
    third.destroy();
    await until("the closed waiting connection to be forgotten", async () => (await waiting()) === 0);
    for (const s of [...served, other]) s.destroy();
    scraper.destroy();
  });

  it("is documented in serve --help", async () => {
    const help = await runProgram(ORCHESTRATOR_BIN, ["serve", "--help"]);
    expect(help.stdout).toMatch(/--connection-rate-per-client <n>/);
    expect(help.stdout).toMatch(/--connection-burst-per-client <n>/);
  });
});

describe("budget of refused bodies per principal and address (--refused-body-rate)", () => {
  let dir: string;
  let server: ChildServer;
  let token: string;
  beforeAll(async () => {
    dir = tempDir("refused");
    // A rate this low refills nothing while the test runs.
    server = await startChildServer(["--data-dir", dir, "--refused-body-burst", "3", "--refused-body-rate", "0.001"], ENFORCED);
    token = readFileSync(path.join(dir, BOOTSTRAP_TOKEN_FILE), "utf8").trim();
  });
  afterAll(async () => {
    await server.kill();
    rmSync(dir, { recursive: true, force: true });
  });

  const port = () => Number(new URL(server.url).port);
  /** An HTTP/2 session from a chosen local address (127.0.0.0/8 is all loopback on Linux). */
  const sessionFrom = (localAddress: string) => {
    const s = http2.connect(server.url, { createConnection: () => net.connect({ host: "127.0.0.1", port: port(), localAddress }) });
    s.on("error", () => {});
    return s;
  };
  const post = (s: http2.ClientHttp2Session, p: string, body: Buffer | string, headers: http2.OutgoingHttpHeaders = {}) =>
    h2Request(s, { ":method": "POST", ":path": p, "content-type": "application/json", ...headers }, body);
  const deep = nestedBody(64 * 1024);
  const good = JSON.stringify({ events: [{ event_id: "budget-ok", event_type: "t", node_id: "n1", timestamp: "2026-11-22T10:00:00Z" }] });

  it("answers a principal 429 with Retry-After, without reading the body, once its refused bodies used up the burst", async () => {
    const auth = { authorization: `Bearer ${token}` };
    // Each refused body closes its session (GOAWAY): one session per call.
    const statuses: number[] = [];
    for (let i = 0; i < 3; i++) {
      const s = sessionFrom("127.0.0.5");
      try {
        statuses.push((await post(s, i % 2 ? "/autonomy.v1.EventService/IngestEvents" : "/v1/events", deep, auth)).status);
      } finally {
        s.destroy();
      }
    }
    expect(statuses).toEqual([400, 400, 400]);
    // The same principal from another address: its own budget is spent, valid body or not.
    const other = sessionFrom("127.0.0.6");
    try {
      const rest = await post(other, "/v1/events", good, auth);
      expect(rest.status).toBe(429);
      expect(Number(rest.headers["retry-after"])).toBeGreaterThanOrEqual(1);
      expect(JSON.parse(rest.body.toString())).toMatchObject({ code: "resource_exhausted", message: expect.stringContaining("too many refused request bodies") });
      const connect = await post(other, "/autonomy.v1.EventService/IngestEvents", deep, auth);
      expect([connect.status, JSON.parse(connect.body.toString()).code]).toEqual([429, "resource_exhausted"]);
      // Calls without a body are not throttled, and the session stays open after a 429.
      const list = await h2Request(other, { ":path": "/v1/fleet", ...auth });
      expect(list.status).toBe(200);
    } finally {
      other.destroy();
    }
  });

  it("counts refused bodies per address too, for calls that need no credential and for any principal there", async () => {
    // Enroll is public: its calls are counted by address alone.
    const statuses: number[] = [];
    for (let i = 0; i < 4; i++) {
      const s = sessionFrom("127.0.0.8");
      try {
        statuses.push((await post(s, "/v1/enrollments", deep)).status);
      } finally {
        s.destroy();
      }
    }
    expect(statuses).toEqual([400, 400, 400, 429]);
    const there = sessionFrom("127.0.0.8");
    const fresh = sessionFrom("127.0.0.9");
    const anonymous = sessionFrom("127.0.0.10");
    try {
      expect((await post(there, "/v1/events", good, { authorization: `Bearer ${token}` })).status).toBe(429);
      // Another address has its own budget; an unauthenticated call there is refused by its credential first.
      expect((await post(fresh, "/v1/enrollments", deep)).status).toBe(400);
      expect((await post(anonymous, "/v1/events", good)).status).toBe(401);
    } finally {
      there.destroy();
      fresh.destroy();
      anonymous.destroy();
    }
  });
});

describe("malformed input is 400, not 500", () => {
  let server: TestServer;
  beforeAll(async () => (server = await startTestServer("sqlite")));
  afterAll(async () => server.stop());

  const deepRequest = () => {
    const nested = (n: number): unknown => (n === 0 ? 1 : [nested(n - 1)]);
    const json = { events: [{ eventId: "e", eventType: "t", nodeId: "n", timestamp: "2026-11-22T10:00:00Z", payload: { a: nested(60) } }] };
    return Buffer.from(toBinary(IngestEventsRequestSchema, fromJson(IngestEventsRequestSchema, json as never)));
  };
  const frame = (flags: number, message: Buffer) => {
    const out = Buffer.alloc(5 + message.length);
    out[0] = flags;
    out.writeUInt32BE(message.length, 1);
    message.copy(out, 5);
    return out;
  };

  it("Connect protobuf nested deeper than 100 levels: invalid_argument (400)", async () => {
    const session = http2.connect(server.url);
    try {
      const a = await h2Request(session, { ":method": "POST", ":path": "/autonomy.v1.EventService/IngestEvents", "content-type": "application/proto" }, deepRequest());
      expect([a.status, JSON.parse(a.body.toString())]).toEqual([400, { code: "invalid_argument", message: "request body: nested deeper than 100 levels" }]);
      const g = await h2Request(session, { ":method": "POST", ":path": "/autonomy.v1.EventService/IngestEvents", "content-type": "application/grpc", te: "trailers" }, frame(0, deepRequest()));
      expect((g.trailers["grpc-status"] ?? g.headers["grpc-status"])).toBe(String(Code.InvalidArgument));
      const truncated = await h2Request(session, { ":method": "POST", ":path": "/autonomy.v1.EventService/IngestEvents", "content-type": "application/proto" }, deepRequest().subarray(0, 40));
      expect([truncated.status, JSON.parse(truncated.body.toString()).code]).toEqual([400, "invalid_argument"]);
    } finally {
      session.close();
    }
  });

  it("checks compressed bodies too: gzip Connect and gRPC, deep ones refused, good ones served", async () => {
    const session = http2.connect(server.url);
    try {
      const ingest = { ":method": "POST", ":path": "/autonomy.v1.EventService/IngestEvents" };
      const deep = await h2Request(session, { ...ingest, "content-type": "application/proto", "content-encoding": "gzip" }, gzipSync(deepRequest()));
      expect([deep.status, JSON.parse(deep.body.toString()).message]).toEqual([400, "request body: nested deeper than 100 levels"]);
      const deepGrpc = await h2Request(session, { ...ingest, "content-type": "application/grpc", "grpc-encoding": "gzip", te: "trailers" }, frame(1, gzipSync(deepRequest())));
      expect(deepGrpc.trailers["grpc-status"] ?? deepGrpc.headers["grpc-status"]).toBe(String(Code.InvalidArgument));
      const good = Buffer.from(
        toBinary(IngestEventsRequestSchema, fromJson(IngestEventsRequestSchema, { events: [{ eventId: "gz-1", eventType: "t", nodeId: "n", timestamp: "2026-11-22T10:00:00Z" }] })),
      );
      const ok = await h2Request(session, { ...ingest, "content-type": "application/grpc", "grpc-encoding": "gzip", te: "trailers" }, frame(1, gzipSync(good)));
      expect(ok.trailers["grpc-status"]).toBe("0");
      expect(fromBinary(IngestEventsResponseSchema, ok.body.subarray(5)).inserted).toBe(1);
      const okConnect = await h2Request(session, { ...ingest, "content-type": "application/proto", "content-encoding": "gzip" }, gzipSync(good));
      expect([okConnect.status, fromBinary(IngestEventsResponseSchema, okConnect.body).deduped]).toEqual([200, 1]);
    } finally {
      session.close();
    }
  });

  it("a gRPC frame flagged compressed without grpc-encoding: invalid_argument, not internal", async () => {
    const session = http2.connect(server.url);
    try {
      const message = Buffer.from(toBinary(IngestEventsRequestSchema, fromJson(IngestEventsRequestSchema, { events: [] })));
      const a = await h2Request(session, { ":method": "POST", ":path": "/autonomy.v1.EventService/IngestEvents", "content-type": "application/grpc", te: "trailers" }, frame(1, message));
      expect(a.trailers["grpc-status"] ?? a.headers["grpc-status"]).toBe(String(Code.InvalidArgument));
      expect(decodeURIComponent(String(a.trailers["grpc-message"] ?? a.headers["grpc-message"]))).toMatch(/flagged compressed but the request names no grpc-encoding/);
    } finally {
      session.close();
    }
  });

  it("audit prune older_than_days 2147483647: invalid_argument naming the field", async () => {
    const api = createOrchestratorClients({ baseUrl: server.url });
    try {
      const err = await api.audit.pruneAuditRecords({ olderThanDays: 2147483647, reason: "probe" }).then(() => undefined, (e) => ConnectError.from(e));
      expect([err?.code, err?.rawMessage]).toEqual([Code.InvalidArgument, "older_than_days: must be at most 36500 (100 years)"]);
    } finally {
      api.close();
    }
  });
});

describe("--tls-client-auth request", () => {
  let work: string;
  let server: ChildServer;
  let token: string;
  const certs: Record<string, IssuedCert> = {};
  let caPem: Buffer;
  beforeAll(async () => {
    work = tempDir("clientauth");
    const ca = path.join(work, "ca");
    const otherCa = path.join(work, "other-ca");
    await initCa(ca);
    await initCa(otherCa, { commonName: "someone else" });
    caPem = readFileSync(path.join(ca, CA_CERT));
    certs.server = await issueCert(ca, { profile: "server", name: "api" });
    certs.alice = await issueCert(ca, { profile: "operator", name: "alice" });
    certs.stranger = await issueCert(otherCa, { profile: "operator", name: "alice" });
    const data = path.join(work, "data");
    server = await startChildServer(
      ["--data-dir", data, "--tls-cert-file", certs.server.certFile, "--tls-key-file", certs.server.keyFile, "--tls-ca-file", path.join(ca, CA_CERT), "--tls-client-auth", "request"],
      ENFORCED,
    );
    token = readFileSync(path.join(data, BOOTSTRAP_TOKEN_FILE), "utf8").trim();
  });
  afterAll(async () => {
    await server.kill();
    rmSync(work, { recursive: true, force: true });
  });

  const whoami = async (cert?: IssuedCert, bearer?: string) => {
    const session = http2.connect(server.url, { ca: caPem, cert: cert && readFileSync(cert.certFile), key: cert && readFileSync(cert.keyFile) });
    session.on("error", () => {});
    try {
      const a = await h2Request(session, { ":path": "/v1/rbac/whoami", ...(bearer ? { authorization: `Bearer ${bearer}` } : {}) });
      const fleet = await h2Request(session, { ":path": "/v1/fleet", ...(bearer ? { authorization: `Bearer ${bearer}` } : {}) });
      return `${JSON.parse(a.body.toString()).principal} by ${JSON.parse(a.body.toString()).authenticated_by}, fleet ${fleet.status}`;
    } catch (err) {
      return `refused: ${(err as Error).message}`;
    } finally {
      session.destroy();
    }
  };

  it("lets a client without a certificate in to authenticate with a bearer token", async () => {
    expect(await whoami(undefined, token)).toMatch(/^operator:bootstrap-[0-9a-f]+ by token, fleet 200$/);
    expect(await whoami(undefined)).toBe("anonymous by none, fleet 401");
  });

  it("still identifies a client by its certificate, and refuses one the CA did not sign", async () => {
    expect(await whoami(certs.alice)).toBe("operator:alice by certificate, fleet 403");
    expect(await whoami(certs.stranger)).toMatch(/^refused/);
  });

  it("is documented in serve --help", async () => {
    const help = await runProgram(ORCHESTRATOR_BIN, ["serve", "--help"]);
    expect(help.stdout).toMatch(/--tls-client-auth <mode>/);
    expect(help.stdout).toMatch(/request lets it in to authenticate with a bearer token/);
    expect(help.stdout).toMatch(/--refused-body-rate <n>/);
    expect(help.stdout).toMatch(/--refused-body-burst <n>/);
  });
});
