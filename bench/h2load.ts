/**
 * h2load (nghttp2's HTTP/2 load tool, Debian package nghttp2-client) as a load generator: the
 * same requests as bench/fleet-load.ts on one connection with the same concurrent streams,
 * for a fraction of the CPU. On a machine of two cores the Node generator takes about as much
 * CPU per request as the server it loads, and the two then share the cores the figure is
 * about; with h2load most of them go to the server.
 */
import { execFile } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { summarize } from "./h2-request.js";

const run = promisify(execFile);

/** What sends a bench's acks: h2load, or the Node generator (bench/fleet-load.ts). */
export type AckLoad = "h2load" | "node";

/**
 * h2load when it can be run, else the Node generator, saying why through `log`;
 * BENCH_LOAD=node asks for the Node generator.
 */
export async function ackLoadTool(log: (line: string) => void): Promise<AckLoad> {
  if (process.env.BENCH_LOAD === "node") {
    log("  BENCH_LOAD=node: the acks run from the Node generator");
    return "node";
  }
  try {
    await run("h2load", ["--version"]);
    return "h2load";
  } catch {
    log("  h2load not found (apt-get install nghttp2-client): the acks run from the Node generator");
    return "node";
  }
}

export interface H2loadSpec {
  /** Every request's URL, in order; each is requested once. */
  urls: string[];
  /** The body POSTed with each request. */
  body: string;
  concurrency: number;
}

/**
 * POSTs `body` (JSON) once to each URL over one HTTP/2 connection with `concurrency` streams in
 * flight. Throws unless every answer is 200. Latencies are h2load's own, per request.
 */
export async function h2loadPost(spec: H2loadSpec): Promise<ReturnType<typeof summarize>> {
  const dir = mkdtempSync(path.join(os.tmpdir(), "ao-h2load-"));
  try {
    const urls = path.join(dir, "urls");
    const body = path.join(dir, "body");
    const log = path.join(dir, "log");
    writeFileSync(urls, spec.urls.join("\n") + "\n");
    writeFileSync(body, spec.body);
    // execFile, not its Sync form: the bench process must keep draining the server's output meanwhile.
    const { stdout } = await run("h2load", ["-n", String(spec.urls.length), "-c", "1", "-m", String(spec.concurrency), "-i", urls, "-d", body, "-H", "content-type: application/json", "--log-file", log], {
      maxBuffer: 16 * 1024 * 1024,
    });
    const finished = /finished in ([\d.]+)(s|ms|us),/.exec(stdout);
    if (!finished) throw new Error(`h2load: no result in its output:\n${stdout}`);
    const seconds = Number(finished[1]) / { s: 1, ms: 1e3, us: 1e6 }[finished[2] as "s" | "ms" | "us"];
    const rows = readFileSync(log, "utf8").trim().split("\n").map((line) => line.split("\t"));
    const refused = rows.filter(([, status]) => status !== "200");
    if (rows.length !== spec.urls.length || refused.length > 0) {
      throw new Error(`h2load: ${rows.length} of ${spec.urls.length} requests answered, ${refused.length} not 200 (first status ${refused[0]?.[1]})`);
    }
    return summarize(rows.map(([, , us]) => Number(us) / 1000), seconds);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
