import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { startChildServer, type ChildServer } from "./helpers/child.js";
import { createTestDatabase } from "./helpers/postgres.js";
import { h1 } from "./helpers/http.js";
import { STORE_KINDS } from "./helpers/server.js";
import { until } from "./helpers/wait.js";

const BATCH = 200;

interface Answer {
  k: number;
  status: number;
  inserted?: number;
}

/** Sends numbered batches from several concurrent senders until stopped; returns the numbers answered 200. */
async function load(
  server: ChildServer,
  first: number,
  stop: { now: boolean },
): Promise<{ acked: number[]; sent: number[]; answers: Answer[] }> {
  const acked: number[] = [];
  const sent: number[] = [];
  const answers: Answer[] = [];
  let next = first;
  const sender = async () => {
    while (!stop.now) {
      const k = next++;
      sent.push(k);
      const body = JSON.stringify({
        events: Array.from({ length: BATCH }, (_, i) => ({
          event_id: `b${k}-${i}`,
          event_type: "load",
          node_id: `b${k}`,
          timestamp: "2026-11-22T10:00:00Z",
          payload: { i },
        })),
      });
      let res: Awaited<ReturnType<typeof h1>>;
      try {
        res = await h1(`${server.url}/v1/events`, { method: "POST", body });
      } catch {
        return; // the server is gone
      }
      // Every answer the server gives is a whole batch stored: it never answers part of one.
      answers.push({ k, status: res.status, inserted: res.status === 200 ? res.json().inserted : undefined });
      if (res.status === 200) acked.push(k);
    }
  };
  await Promise.all(Array.from({ length: 6 }, sender));
  return { acked, sent, answers };
}

describe("crash safety", () => {
  const dirs: string[] = [];
  const drops: (() => Promise<void>)[] = [];
  afterAll(async () => {
    dirs.forEach((dir) => rmSync(dir, { recursive: true, force: true }));
    for (const drop of drops) await drop();
  });

  it.each([
    ["kill -9 on SQLite", "SIGKILL", 3, "sqlite"],
    ["a clean stop (SIGTERM) on SQLite", "SIGTERM", 1, "sqlite"],
    ["kill -9 on PostgreSQL", "SIGKILL", 2, "postgres"],
  ] as const)("keeps every batch answered 200 across %s under load, and never keeps part of a batch", async (_name, signal, rounds, store) => {
    const dataDir = mkdtempSync(path.join(os.tmpdir(), "ao-crash-"));
    dirs.push(dataDir);
    const database = store === "postgres" ? await createTestDatabase() : undefined;
    if (database) drops.push(database.drop);
    const env = database ? { AUTONOMY_POSTGRES_URL: database.url } : {};
    const allAcked: number[] = [];
    const allSent: number[] = [];
    let first = 0;
    for (let round = 0; round < rounds; round++) {
      const server = await startChildServer(["--data-dir", dataDir], env);
      const stop = { now: false };
      const running = load(server, first, stop);
      await new Promise((r) => setTimeout(r, 700 + round * 300));
      server.proc.kill(signal);
      const { code } = await server.exited;
      if (signal === "SIGTERM") expect(code).toBe(0);
      stop.now = true;
      const { acked, sent, answers } = await running;
      // Up to the kill, every batch is answered 200 with all of it inserted (the ids are new).
      expect(answers.filter((a) => a.status !== 200 || a.inserted !== BATCH)).toEqual([]);
      allAcked.push(...acked);
      allSent.push(...sent);
      first = Math.max(...sent) + 1;
    }
    expect(allAcked.length).toBeGreaterThan(10);

    const server = await startChildServer(["--data-dir", dataDir], env);
    try {
      const counts = new Map<number, number>();
      for (const k of allSent) {
        const res = await h1(`${server.url}/v1/events?node_id=b${k}&limit=1000`);
        counts.set(k, res.json().count);
      }
      const lost = allAcked.filter((k) => counts.get(k) !== BATCH);
      const partial = allSent.filter((k) => counts.get(k) !== 0 && counts.get(k) !== BATCH);
      expect(lost).toEqual([]);
      expect(partial).toEqual([]);
    } finally {
      await server.kill();
    }
  });
});

describe("crash safety of fleet writes", () => {
  it.each(STORE_KINDS)("keeps every release and ack answered 200 across kill -9 on %s", async (store) => {
    const dataDir = mkdtempSync(path.join(os.tmpdir(), "ao-crash-fleet-"));
    const database = store === "postgres" ? await createTestDatabase() : undefined;
    const env = database ? { AUTONOMY_POSTGRES_URL: database.url } : {};
    const post = (server: ChildServer, p: string, body: unknown) =>
      h1(`${server.url}${p}`, { method: p.includes("/acks/") ? "PUT" : "POST", body: JSON.stringify(body), headers: { "content-type": "application/json" } });
    try {
      const server = await startChildServer(["--data-dir", dataDir], env);
      const nodes = Array.from({ length: 20 }, (_, i) => `crash-n${i}`);
      for (const node_id of nodes) expect((await post(server, "/v1/nodes", { node_id, channel: "c" })).status).toBe(200);
      const releases: string[] = [];
      const lastAcked = new Map<string, number>();
      let stop = false;
      const sender = async (node: string) => {
        for (let k = 1; !stop; k++) {
          try {
            const release_id = `crash-r-${node}-${k}`;
            const pub = await post(server, "/v1/releases", { release_id, channel: "c", version: String(k), artifacts: [{ name: "a", digest: `sha256:${"0".repeat(64)}` }] });
            if (pub.status !== 200) return;
            releases.push(release_id);
            const ack = await post(server, `/v1/releases/${release_id}/acks/${node}`, { state: "healthy", observed_at: new Date(Date.now() + k).toISOString() });
            if (ack.status === 200) lastAcked.set(node, k);
          } catch {
            return; // the server is gone
          }
        }
      };
      const running = Promise.all(nodes.map(sender));
      // Every node has had an ack answered (however slow the machine), then writes go on a while
      // longer, so that the kill lands among publishes and acks in flight.
      await until(`an answered ack for each of ${nodes.length} nodes`, async () => lastAcked.size === nodes.length, 15_000);
      const answered = new Map(lastAcked);
      await until("a second round of answered acks", async () => [...lastAcked].filter(([n, k]) => k > answered.get(n)!).length >= nodes.length / 2, 15_000);
      server.proc.kill("SIGKILL");
      await server.exited;
      stop = true;
      await running;
      expect(lastAcked.size).toBe(nodes.length);

      const again = await startChildServer(["--data-dir", dataDir], env);
      try {
        for (const [node, k] of lastAcked) {
          const acks = (await h1(`${again.url}/v1/nodes/${node}/acks`)).json().acks as { release_id: string }[];
          expect(acks.map((a) => a.release_id)).toContain(`crash-r-${node}-${k}`);
        }
        for (const id of releases) {
          const res = await h1(`${again.url}/v1/releases/${id}/acks`);
          expect(res.status, id).toBe(200);
        }
      } finally {
        await again.kill();
      }
    } finally {
      rmSync(dataDir, { recursive: true, force: true });
      await database?.drop();
    }
  }, 60_000);
});
