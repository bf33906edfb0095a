import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { startChildServer, type ChildServer } from "./helpers/child.js";
import { createTestDatabase } from "./helpers/postgres.js";
import { h1 } from "./helpers/http.js";

const BATCH = 200;

/** Sends numbered batches from several concurrent senders until stopped; returns the numbers answered 200. */
async function load(server: ChildServer, first: number, stop: { now: boolean }): Promise<{ acked: number[]; sent: number[] }> {
  const acked: number[] = [];
  const sent: number[] = [];
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
      try {
        const res = await h1(`${server.url}/v1/events`, { method: "POST", body });
        if (res.status === 200 && res.json().inserted === BATCH) acked.push(k);
      } catch {
        return; // the server is gone
      }
    }
  };
  await Promise.all(Array.from({ length: 6 }, sender));
  return { acked, sent };
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
      const { acked, sent } = await running;
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
