/**
 * Attack clients for bench/hostile.ts, run as their own process so they share neither a thread
 * nor file descriptors with the server or the legitimate load. Prints "ready" once the attack
 * runs, keeps it up until SIGTERM, then writes a JSON summary to `spec.summaryFile`.
 *
 *   flood   unauthenticated calls, REST and Connect, as fast as 64 streams allow
 *   nested  16 concurrent 8 MiB bodies of nested arrays, again and again (with `token`: authenticated)
 *   idle    `connections` TCP connections that send nothing, half a request line or only the
 *           HTTP/2 preface, reopened as the server closes them
 *
 * Clients bind the given source addresses (127.0.0.0/8 is all loopback on Linux), so the
 * per-address limits see them apart from the legitimate client on 127.0.0.1.
 */
import { writeFileSync } from "node:fs";
import http2 from "node:http2";
import net from "node:net";

export interface AttackSpec {
  kind: "flood" | "nested" | "idle";
  url: string;
  sources: string[];
  token?: string;
  connections?: number;
  summaryFile: string;
}

const spec = JSON.parse(process.argv[2]) as AttackSpec;
const target = new URL(spec.url);
const port = Number(target.port);
const statuses: Record<string, number> = {};
let requests = 0;
let opened = 0;
let closedByServer = 0;
let stopping = false;

const count = (status: string) => (statuses[status] = (statuses[status] ?? 0) + 1);

function session(source: string): http2.ClientHttp2Session {
  const s = http2.connect(spec.url, {
    createConnection: () => net.connect({ host: target.hostname, port, localAddress: source }),
    // The nested bodies are queued whole.
    maxSessionMemory: 1000,
  });
  s.on("error", () => {});
  return s;
}

/** One request; resolves with its status ("reset" when the stream ended without one). */
function call(s: http2.ClientHttp2Session, headers: http2.OutgoingHttpHeaders, body: Buffer): Promise<string> {
  return new Promise((resolve) => {
    let status = "reset";
    let req: http2.ClientHttp2Stream;
    try {
      req = s.request(headers);
    } catch {
      return resolve("refused");
    }
    req.on("response", (h) => (status = String(h[":status"])));
    req.on("data", () => {});
    req.on("error", () => {});
    const done = () => resolve(status === "reset" ? `reset ${req.rstCode ?? ""}`.trim() : status);
    req.on("end", done);
    req.on("close", done);
    req.end(body);
  });
}

/** `loops` request loops per session, sessions spread over the sources, each reopened when it fails. */
async function loops(sessions: number, perSession: number, request: (i: number) => { headers: http2.OutgoingHttpHeaders; body: Buffer }): Promise<void> {
  await Promise.all(
    Array.from({ length: sessions }, async (_, k) => {
      let s = session(spec.sources[k % spec.sources.length]);
      await Promise.all(
        Array.from({ length: perSession }, async (_, j) => {
          for (let i = j; !stopping; i += perSession) {
            if (s.destroyed || s.closed) s = session(spec.sources[k % spec.sources.length]);
            const { headers, body } = request(i);
            count(await call(s, headers, body));
            requests++;
          }
        }),
      );
      s.destroy();
    }),
  );
}

const INGEST_PATHS = ["/v1/events", "/autonomy.v1.EventService/IngestEvents"];

function flood(): Promise<void> {
  const body = Buffer.from(JSON.stringify({ events: [{ event_id: "x", event_type: "t", node_id: "n", timestamp: "2026-11-22T10:00:00Z" }] }));
  return loops(4, 16, (i) => ({ headers: { ":method": "POST", ":path": INGEST_PATHS[i % 2], "content-type": "application/json" }, body }));
}

function nested(): Promise<void> {
  const head = '{"events":[{"event_id":"e1","event_type":"t","node_id":"n1","timestamp":"2026-11-22T10:00:00Z","payload":{"a":';
  const depth = Math.floor((8 * 1024 * 1024 - 1024 - head.length) / 2);
  const body = Buffer.from(head + "[".repeat(depth) + "]".repeat(depth) + "}}]}");
  const auth = spec.token ? { authorization: `Bearer ${spec.token}` } : {};
  return loops(2, 8, (i) => ({ headers: { ":method": "POST", ":path": INGEST_PATHS[i % 2], "content-type": "application/json", ...auth }, body }));
}

const OPENINGS = [Buffer.alloc(0), Buffer.from("GET /v1/hea"), Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")];

/** Keeps `n` idle connections open, reopening each one the server closes. */
function idle(n: number): Promise<void> {
  return new Promise((resolve) => {
    let open = 0;
    const one = (i: number) => {
      if (stopping) return;
      const socket = net.connect({ host: target.hostname, port, localAddress: spec.sources[i % spec.sources.length] });
      socket.on("connect", () => {
        opened++;
        open++;
        const opening = OPENINGS[i % OPENINGS.length];
        if (opening.length > 0) socket.write(opening);
      });
      socket.on("data", () => {});
      socket.on("error", () => {});
      socket.on("close", () => {
        if (stopping) return;
        closedByServer++;
        open = Math.max(0, open - 1);
        setTimeout(() => one(i), 50);
      });
      sockets.add(socket);
      socket.once("close", () => sockets.delete(socket));
    };
    const sockets = new Set<net.Socket>();
    // Open in steps, so the accept queue is not the limit measured.
    let next = 0;
    const step = setInterval(() => {
      for (let k = 0; k < 250 && next < n; k++) one(next++);
      if (next >= n) clearInterval(step);
    }, 20);
    const waitOpen = setInterval(() => {
      if (open >= n * 0.95) {
        clearInterval(waitOpen);
        process.stdout.write("ready\n");
      }
    }, 50);
    stop = () => {
      clearInterval(step);
      clearInterval(waitOpen);
      for (const s of sockets) s.destroy();
      resolve();
    };
  });
}

let stop: () => void = () => {};
process.on("SIGTERM", () => {
  stopping = true;
  stop();
  // The attacker's own CPU: on a machine of few cores it is taken from the server and the
  // legitimate load too, which the ratio cannot tell apart from what the attack costs the server.
  const cpu = process.cpuUsage();
  const cpuSeconds = (cpu.user + cpu.system) / 1e6;
  const seconds = process.uptime();
  writeFileSync(spec.summaryFile, JSON.stringify({ kind: spec.kind, requests, statuses, opened, closedByServer, cpuSeconds, seconds }) + "\n");
  process.exit(0);
});

if (spec.kind === "idle") {
  void idle(spec.connections ?? 5000);
} else {
  process.stdout.write("ready\n");
  void (spec.kind === "flood" ? flood() : nested());
}
