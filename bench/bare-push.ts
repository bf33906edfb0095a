/**
 * The push ceiling of bench/workloads.ts: a bare node:http2 server that holds streams open
 * (GET /stream/N) and, on POST /go, writes TOTAL messages of SIZE bytes spread over them, then
 * ends them; POST /open answers how many streams it has taken in so far. It does nothing else.
 * Usage: node dist/bench/bare-push.js STREAMS TOTAL SIZE (prints its port).
 */
import http2 from "node:http2";

const total = Number(process.argv[3]);
const message = Buffer.alloc(Number(process.argv[4]), 7);
let opened = 0;
let held: http2.ServerHttp2Stream[] = [];

const server = http2.createServer();
server.on("stream", (stream, headers) => {
  const p = String(headers[":path"]);
  if (p.startsWith("/stream/")) {
    opened++;
    stream.respond({ ":status": 200, "content-type": "application/octet-stream" });
    held.push(stream);
    return;
  }
  stream.respond({ ":status": 200 });
  if (p === "/go") {
    const streams = held;
    held = [];
    for (let i = 0; i < total; i++) streams[i % streams.length].write(message);
    for (const s of streams) s.end();
  }
  stream.end(p === "/open" ? String(opened) : "");
});
server.listen(0, "127.0.0.1", () => {
  const address = server.address();
  process.stdout.write(`${typeof address === "object" && address ? address.port : 0}\n`);
});
