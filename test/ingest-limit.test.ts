import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { timestampNow } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createOrchestratorClients, type OrchestratorClients } from "../clients/index.js";
import { startShipper } from "../src/agent/spool/shipper.js";
import { Spool, spoolDir } from "../src/agent/spool/spool.js";
import { RateLimiter } from "../src/transport/rate-limit.js";
import { h1 } from "./helpers/http.js";
import { memoryLogger, startTestServer, type TestServer } from "./helpers/server.js";
import { eventually } from "./helpers/wait.js";

let seq = 0;
const events = (nodeId: string, n: number) =>
  Array.from({ length: n }, () => ({ eventId: `${nodeId}-${++seq}`, nodeId, eventType: "t", timestamp: timestampNow() }));

async function throttledCount(server: TestServer, node: string): Promise<number> {
  const text = await server.metrics.registry.metrics();
  const line = text.split("\n").find((l) => l.startsWith(`cp_ingest_throttled_total{node="${node}"}`));
  return line ? Number(line.split(" ").pop()) : 0;
}

describe("the per-node ingest limit (--node-ingest-rate)", () => {
  let server: TestServer;
  let api: OrchestratorClients;

  beforeAll(async () => {
    // Slow to refill: a refused node stays refused for the length of a test.
    server = await startTestServer("sqlite", { nodeIngestRate: { perSecond: 0.2, burst: 40 } });
    api = createOrchestratorClients({ baseUrl: server.url });
    for (const nodeId of ["lim-a", "lim-b", "lim-c", "lim-d"]) await api.nodes.enrollNode({ nodeId, channel: "c" });
  });
  afterAll(async () => {
    api.close();
    await server.stop();
  });

  it("refuses a node over its limit with resource_exhausted and a retry hint (RPC) or 429 and Retry-After (REST); other nodes pass", async () => {
    await api.events.ingestEvents({ events: events("lim-a", 40) });
    const refused = await api.events.ingestEvents({ events: events("lim-a", 5) }).then(
      () => undefined,
      (err: unknown) => ConnectError.from(err),
    );
    expect(refused?.code).toBe(Code.ResourceExhausted);
    expect(refused?.rawMessage).toMatch(/^node lim-a is over its ingest limit \(--node-ingest-rate\); retry in \d+s$/);
    expect(Number(refused?.metadata.get("retry-after"))).toBeGreaterThanOrEqual(1);

    const rest = await h1(`${server.url}/v1/events`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ events: [{ event_id: "rest-1", node_id: "lim-a", event_type: "t", timestamp: "2026-01-01T00:00:00Z" }] }),
    });
    expect(rest.status).toBe(429);
    expect(Number(rest.headers["retry-after"])).toBeGreaterThanOrEqual(1);
    expect(JSON.parse(rest.text)).toMatchObject({ code: "resource_exhausted" });

    expect(await api.events.ingestEvents({ events: events("lim-b", 40) })).toMatchObject({ inserted: 40 });
    expect(await throttledCount(server, "lim-a")).toBe(2);
    expect(await throttledCount(server, "lim-b")).toBe(0);
  });

  it("refuses a batch whole when one of its nodes is over, and names only enrolled nodes in the metric", async () => {
    await api.events.ingestEvents({ events: events("lim-c", 40) });
    const mixed = [...events("lim-d", 3), ...events("lim-c", 3)];
    await expect(api.events.ingestEvents({ events: mixed })).rejects.toThrow(/node lim-c is over its ingest limit/);
    expect((await api.events.queryEvents({ nodeId: "lim-d" })).events).toHaveLength(0);
    await api.events.ingestEvents({ events: events("stranger-1", 40) });
    await api.events.ingestEvents({ events: events("stranger-2", 40) });
    await expect(api.events.ingestEvents({ events: events("stranger-1", 1) })).rejects.toThrow(/over its ingest limit/);
    await expect(api.events.ingestEvents({ events: events("stranger-2", 1) })).rejects.toThrow(/over its ingest limit/);
    expect(await throttledCount(server, "unenrolled")).toBe(2);
    expect(await server.metrics.registry.metrics()).not.toMatch(/cp_ingest_throttled_total\{node="stranger/);
  });

  it("an agent over its limit backs off as told and delivers everything, in order; another node meanwhile is never refused", async () => {
    const stateDir = mkdtempSync(path.join(os.tmpdir(), "ao-ingest-limit-"));
    const spool = new Spool({ dir: spoolDir(stateDir) });
    const total = 200;
    for (let i = 0; i < total; i += 20) {
      await spool.append(
        Array.from({ length: 20 }, (_, j) => Buffer.from(JSON.stringify({ event_id: `ship-${String(i + j).padStart(4, "0")}`, node_id: "lim-ship", event_type: "t", timestamp: "2026-01-01T00:00:00Z" }))),
      );
    }
    const fast = await startTestServer("sqlite", { nodeIngestRate: { perSecond: 40, burst: 40 } });
    const api = createOrchestratorClients({ baseUrl: fast.url });
    await api.nodes.enrollNode({ nodeId: "lim-ship", channel: "c" });
    const stop = new AbortController();
    const { logger, log } = memoryLogger();
    const shipper = startShipper({ api, stateDir, logger, signal: stop.signal, batchEvents: 20, idleMs: 100 });
    let otherRefused = 0;
    let otherSent = 0;
    const other = (async () => {
      while (!stop.signal.aborted) {
        try {
          await api.events.ingestEvents({ events: events("lim-other", 2) });
          otherSent += 2;
        } catch {
          otherRefused++;
        }
        await sleep(100);
      }
    })();
    try {
      await eventually(async () => expect((await api.events.queryEvents({ nodeId: "lim-ship", limit: 1000 })).events).toHaveLength(total), 30_000);
      const stored = (await api.events.queryEvents({ nodeId: "lim-ship", limit: 1000 })).events.map((e) => e.eventId).reverse();
      expect(stored).toEqual(Array.from({ length: total }, (_, i) => `ship-${String(i).padStart(4, "0")}`));
      expect(await throttledCount(fast, "lim-ship")).toBeGreaterThan(0);
      expect(log.lines.some((l) => l.msg === "spool: the orchestrator asks to slow down; waiting as it says")).toBe(true);
      expect(log.lines.filter((l) => l.msg === "spool: an event went to the deadletter")).toEqual([]);
    } finally {
      stop.abort();
      await shipper.done;
      await other;
      api.close();
      await fast.stop();
      rmSync(stateDir, { recursive: true, force: true });
    }
    expect(otherRefused).toBe(0);
    expect(otherSent).toBeGreaterThan(0);
  });
});

describe("the token bucket's batch admission", () => {
  it("admits a batch once min(n, burst) tokens are there, lets a large batch into debt, and says how long to wait", () => {
    let now = 0;
    const limiter = new RateLimiter({ perSecond: 10, burst: 10 }, () => now);
    expect(limiter.waitFor("n", 25)).toBe(0);
    limiter.takeN("n", 25);
    expect(limiter.waitFor("n", 1)).toBe(2);
    now = 1500;
    expect(limiter.waitFor("n", 1)).toBe(1);
    now = 1600;
    expect(limiter.waitFor("n", 1)).toBe(0);
    expect(limiter.waitFor("other", 10)).toBe(0);
    expect(new RateLimiter({ perSecond: 0, burst: 1 }).waitFor("n", 1e9)).toBe(0);
  });
});
