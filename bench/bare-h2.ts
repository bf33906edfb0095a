/**
 * The request-rate ceiling: a bare node:http2 server that answers every request with the
 * same JSON, doing no work. Usage: node dist/bench/bare-h2.js BODY_FILE (prints its port).
 */
import { readFileSync } from "node:fs";
import http2 from "node:http2";

const body = readFileSync(process.argv[2]);
const server = http2.createServer((_req, res) => {
  res.writeHead(200, { "content-type": "application/json" });
  res.end(body);
});
server.listen(0, "127.0.0.1", () => {
  const address = server.address();
  process.stdout.write(`${typeof address === "object" && address ? address.port : 0}\n`);
});
