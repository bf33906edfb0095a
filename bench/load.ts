/**
 * Load generator, run as its own process so it does not share a thread with the server
 * under test. One HTTP/2 session (cleartext, prior knowledge) with several concurrent
 * streams; bodies are encoded before the clock starts. Prints one JSON result line.
 *
 *   node dist/bench/load.js '{"kind":"ingest","url":"http://127.0.0.1:8888","mode":"rest","batches":400,"concurrency":8}'
 *   node dist/bench/load.js '{"kind":"query","url":"...","paths":["/v1/events?node_id=n1&limit=100"],"durationMs":10000,"concurrency":8}'
 *   node dist/bench/load.js '{"kind":"query-turns","urls":["...","..."],"paths":[...],"roundMs":2000,"rounds":5,"concurrency":1}'
 */
import { readFileSync } from "node:fs";
import http2 from "node:http2";
import tls from "node:tls";
import { fromBinary } from "@bufbuild/protobuf";
import { IngestEventsResponseSchema } from "../gen/autonomy/v1/events_pb.js";
import { BATCH_SIZE, protoBody, restBody } from "./workload.js";
import { request, summarize, type Reply } from "./h2-request.js";

export type IngestMode = "rest" | "connect" | "grpc";
/** https:// URLs: the CA to trust and the client certificate to present (PEM files). */
export interface TlsFilesSpec {
  caFile: string;
  certFile?: string;
  keyFile?: string;
}
export interface IngestSpec {
  kind: "ingest";
  url: string;
  mode: IngestMode;
  batches: number;
  concurrency: number;
  tls?: TlsFilesSpec;
  /** A bearer token sent with every batch (servers with RBAC enforced). */
  token?: string;
  /** Number of the first batch, so that runs against one store send new events. */
  firstBatch?: number;
}
export interface QuerySpec {
  kind: "query";
  url: string;
  paths: string[];
  durationMs: number;
  concurrency: number;
  tls?: TlsFilesSpec;
}
/**
 * The same queries against two servers in turns, from one warm process: `rounds` rounds of
 * `roundMs` each, the first server first in even rounds, the second in odd ones.
 */
export interface QueryTurnsSpec {
  kind: "query-turns";
  urls: [string, string];
  paths: string[];
  roundMs: number;
  rounds: number;
  concurrency: number;
}
/** Per round, the result of each of the two servers. */
export type QueryTurnsResult = [QueryResult, QueryResult][];
/** A new connection (and, over TLS, a full handshake) for every GET /v1/health. */
export interface ConnectionsSpec {
  kind: "connections";
  url: string;
  durationMs: number;
  concurrency: number;
  tls?: TlsFilesSpec;
}
export interface IngestResult {
  events: number;
  seconds: number;
  eventsPerSecond: number;
}
export interface QueryResult {
  requests: number;
  seconds: number;
  requestsPerSecond: number;
  p50Ms: number;
  p99Ms: number;
}

/** One secure context for every connection, so the client does not parse the PEM files each time. */
function connectOptions(files: TlsFilesSpec | undefined): http2.SecureClientSessionOptions {
  if (!files) return {};
  return {
    secureContext: tls.createSecureContext({
      ca: readFileSync(files.caFile),
      cert: files.certFile ? readFileSync(files.certFile) : undefined,
      key: files.keyFile ? readFileSync(files.keyFile) : undefined,
    }),
  };
}

function grpcFrame(message: Uint8Array): Buffer {
  const frame = Buffer.alloc(5 + message.length);
  frame.writeUInt32BE(message.length, 1);
  frame.set(message, 5);
  return frame;
}

/** Checks an ingest answer and returns how many events it inserted. */
function inserted(mode: IngestMode, reply: Reply): number {
  if (mode === "rest") {
    if (reply.status !== 200) throw new Error(`status ${reply.status}: ${reply.body}`);
    return (JSON.parse(reply.body.toString()) as { inserted: number }).inserted;
  }
  if (mode === "connect") {
    if (reply.status !== 200) throw new Error(`status ${reply.status}: ${reply.body}`);
    return fromBinary(IngestEventsResponseSchema, reply.body).inserted;
  }
  if (reply.trailers["grpc-status"] !== "0") throw new Error(`grpc-status ${reply.trailers["grpc-status"]}: ${reply.trailers["grpc-message"]}`);
  return fromBinary(IngestEventsResponseSchema, reply.body.subarray(5)).inserted;
}

async function ingest(spec: IngestSpec): Promise<IngestResult> {
  const path = spec.mode === "rest" ? "/v1/events" : "/autonomy.v1.EventService/IngestEvents";
  const headers: http2.OutgoingHttpHeaders = {
    ":method": "POST",
    ":path": path,
    "content-type": spec.mode === "rest" ? "application/json" : spec.mode === "connect" ? "application/proto" : "application/grpc",
    ...(spec.mode === "grpc" ? { te: "trailers" } : {}),
    ...(spec.token ? { authorization: `Bearer ${spec.token}` } : {}),
  };
  const first = spec.firstBatch ?? 0;
  const bodies = Array.from({ length: spec.batches }, (_, i) => {
    const b = first + i;
    return spec.mode === "rest" ? restBody(b) : spec.mode === "connect" ? protoBody(b) : grpcFrame(protoBody(b));
  });
  const session = http2.connect(spec.url, { settings: { initialWindowSize: 1 << 20 }, ...connectOptions(spec.tls) });
  session.on("error", () => {});
  let next = 0;
  let total = 0;
  const started = process.hrtime.bigint();
  await Promise.all(
    Array.from({ length: spec.concurrency }, async () => {
      while (next < bodies.length) {
        const body = bodies[next++];
        const n = inserted(spec.mode, await request(session, headers, body));
        if (n !== BATCH_SIZE) throw new Error(`a batch inserted ${n} of ${BATCH_SIZE} events`);
        total += n;
      }
    }),
  );
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  session.close();
  return { events: total, seconds, eventsPerSecond: total / seconds };
}

async function query(spec: QuerySpec): Promise<QueryResult> {
  const session = http2.connect(spec.url, connectOptions(spec.tls));
  session.on("error", () => {});
  const latencies: number[] = [];
  const started = process.hrtime.bigint();
  const deadline = Date.now() + spec.durationMs;
  let i = 0;
  await Promise.all(
    Array.from({ length: spec.concurrency }, async () => {
      while (Date.now() < deadline) {
        const path = spec.paths[i++ % spec.paths.length];
        const t0 = process.hrtime.bigint();
        const reply = await request(session, { ":method": "GET", ":path": path });
        if (reply.status !== 200) throw new Error(`status ${reply.status}: ${reply.body}`);
        latencies.push(Number(process.hrtime.bigint() - t0) / 1e6);
      }
    }),
  );
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  session.close();
  return summarize(latencies, seconds);
}

async function queryTurns(spec: QueryTurnsSpec): Promise<QueryTurnsResult> {
  const on = (url: string, durationMs: number) => query({ kind: "query", url, paths: spec.paths, durationMs, concurrency: spec.concurrency });
  // Warms this process (and both servers) up first.
  for (const url of spec.urls) await on(url, spec.roundMs);
  const out: QueryTurnsResult = [];
  for (let round = 0; round < spec.rounds; round++) {
    const pair: QueryResult[] = [];
    for (const i of round % 2 === 0 ? [0, 1] : [1, 0]) pair[i] = await on(spec.urls[i], spec.roundMs);
    out.push([pair[0], pair[1]]);
  }
  return out;
}

async function connections(spec: ConnectionsSpec): Promise<QueryResult> {
  const options = connectOptions(spec.tls);
  const latencies: number[] = [];
  const started = process.hrtime.bigint();
  const deadline = Date.now() + spec.durationMs;
  await Promise.all(
    Array.from({ length: spec.concurrency }, async () => {
      while (Date.now() < deadline) {
        const t0 = process.hrtime.bigint();
        const session = http2.connect(spec.url, options);
        session.on("error", () => {});
        const reply = await request(session, { ":method": "GET", ":path": "/v1/health" });
        session.destroy();
        if (reply.status !== 200) throw new Error(`status ${reply.status}: ${reply.body}`);
        latencies.push(Number(process.hrtime.bigint() - t0) / 1e6);
      }
    }),
  );
  return summarize(latencies, Number(process.hrtime.bigint() - started) / 1e9);
}

const spec = JSON.parse(process.argv[2]) as IngestSpec | QuerySpec | QueryTurnsSpec | ConnectionsSpec;
const result =
  spec.kind === "ingest" ? await ingest(spec) : spec.kind === "query" ? await query(spec) : spec.kind === "query-turns" ? await queryTurns(spec) : await connections(spec);
process.stdout.write(JSON.stringify(result) + "\n");
