/**
 * The TLS part of `npm run bench`: what mutual TLS costs, as ratios of the cleartext figures
 * measured in the same run against the same server build and flags.
 *
 *   connections/s   a new connection for every GET /v1/health (over TLS: a full handshake with a
 *                   client certificate, checked against the CA and the CRL)
 *   ingest events/s 400 batches of 500 events, REST JSON, 8 streams on one connection
 *
 * Prints a table and writes bench/results/tls-<time>.json.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { packageRoot } from "../src/paths.js";
import { CA_CERT, CRL_FILE, initCa, issueCert } from "../src/security/ca.js";
import type { ConnectionsSpec, IngestResult, IngestSpec, QueryResult, TlsFilesSpec } from "./load.js";
import { runToEnd, startOrchestrator } from "./processes.js";

const LOAD = path.join(packageRoot, "dist", "bench", "load.js");
const CONNECT_MS = 5000;
const BATCHES = 400;
const REPS = 3;

const log = (line: string) => process.stderr.write(line + "\n");
const fmt = (n: number, digits = 0) => n.toLocaleString("en", { maximumFractionDigits: digits, minimumFractionDigits: digits });
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[xs.length >> 1];
const load = async <R>(spec: IngestSpec | ConnectionsSpec) => JSON.parse(await runToEnd(LOAD, [JSON.stringify(spec)])) as R;

async function measure(dir: string, name: string, serverArgs: string[], tls?: TlsFilesSpec) {
  const connections: QueryResult[] = [];
  const ingest: number[] = [];
  for (let rep = 0; rep < REPS; rep++) {
    const server = await startOrchestrator(path.join(dir, `${name}-${rep}`), serverArgs);
    try {
      const url = tls ? server.url.replace(/^http:/, "https:") : server.url;
      ingest.push((await load<IngestResult>({ kind: "ingest", url, mode: "rest", batches: BATCHES, concurrency: 8, tls })).eventsPerSecond);
      connections.push(await load<QueryResult>({ kind: "connections", url, durationMs: CONNECT_MS, concurrency: 4, tls }));
    } finally {
      await server.stop();
    }
  }
  const perSecond = median(connections.map((c) => c.requestsPerSecond));
  const p99 = median(connections.map((c) => c.p99Ms));
  log(`  ${name}: ${fmt(perSecond)} connections/s (p99 ${fmt(p99, 2)} ms), ingest ${fmt(median(ingest))} events/s`);
  return { connectionsPerSecond: perSecond, connectP99Ms: p99, ingestEventsPerSecond: median(ingest) };
}

async function main(): Promise<void> {
  const dir = mkdtempSync(path.join(os.tmpdir(), "ao-bench-tls-"));
  try {
    const ca = path.join(dir, "ca");
    await initCa(ca);
    const server = await issueCert(ca, { profile: "server", name: "api" });
    // An operator certificate: the load sends events of many nodes, which a node may not.
    const client = await issueCert(ca, { profile: "operator", name: "bench" });
    log(`tls: median of ${REPS} fresh servers each; ECDSA P-256 certificates, CRL checked`);
    const clear = await measure(dir, "cleartext (h2c)", []);
    const mtls = await measure(
      dir,
      "mutual TLS",
      ["--tls-cert-file", server.certFile, "--tls-key-file", server.keyFile, "--tls-ca-file", path.join(ca, CA_CERT), "--tls-crl-file", path.join(ca, CRL_FILE)],
      { caFile: path.join(ca, CA_CERT), certFile: client.certFile, keyFile: client.keyFile },
    );
    let out = "\nTLS: mutual TLS against cleartext, same run\n";
    out += `  new connection + GET /v1/health   cleartext ${fmt(clear.connectionsPerSecond)}/s   mutual TLS ${fmt(mtls.connectionsPerSecond)} handshakes/s (p99 ${fmt(mtls.connectP99Ms, 2)} ms)   ratio ${fmt(mtls.connectionsPerSecond / clear.connectionsPerSecond, 2)}\n`;
    out += `  ingest, REST JSON, 500-event batches   cleartext ${fmt(clear.ingestEventsPerSecond)} events/s   mutual TLS ${fmt(mtls.ingestEventsPerSecond)} events/s   ratio ${fmt(mtls.ingestEventsPerSecond / clear.ingestEventsPerSecond, 2)}\n`;
    process.stdout.write(out);
    const resultsDir = path.join(packageRoot, "bench", "results");
    mkdirSync(resultsDir, { recursive: true });
    const date = new Date().toISOString();
    const file = path.join(resultsDir, `tls-${date.replace(/[:.]/g, "-")}.json`);
    writeFileSync(file, JSON.stringify({ date, machine: { cpus: os.cpus().length, node: process.version }, cleartext: clear, mutualTls: mtls }, null, 2) + "\n");
    log(`results written to ${path.relative(process.cwd(), file)}`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();
