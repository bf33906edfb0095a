import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createOrchestratorClients } from "../clients/index.js";
import { AUTONOMY_BIN, startChildServer, type ChildServer } from "./helpers/child.js";
import { freePort } from "./helpers/net.js";
import { STORE_KINDS, startTestServer, type TestServer } from "./helpers/server.js";
import { until } from "./helpers/wait.js";

const event = (id: string, node = "n1", type = "boot") => ({ event_id: id, event_type: type, node_id: node, timestamp: "2026-01-01T00:00:00Z" });

interface FollowAnswer {
  events: { event_id: string; seq: string }[];
  count: number;
  next_after: string;
}
const follow = async (url: string): Promise<FollowAnswer> => (await fetch(url)).json() as Promise<FollowAnswer>;

async function post(url: string, events: object[]): Promise<void> {
  const res = await fetch(`${url}/v1/events`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ events }) });
  expect(res.status).toBe(200);
}

describe.each(STORE_KINDS)("FollowEvents: %s", (kind) => {
  let server: TestServer;
  beforeAll(async () => (server = await startTestServer(kind)));
  afterAll(async () => server?.stop());

  it("a REST long poll over HTTP/1.1 answers with the events stored after its cursor, filtered", async () => {
    await post(server.url, [event("before")]);
    const start = await follow(`${server.url}/v1/events/follow?from_newest=true`);
    expect(start).toMatchObject({ events: [], count: 0 });
    const after = start.next_after;
    const waiting = follow(`${server.url}/v1/events/follow?after=${after}&node_id=n1&wait_seconds=30`);
    await new Promise((r) => setTimeout(r, 300));
    await post(server.url, [event("other", "n2"), event("mine", "n1")]);
    const res = await waiting;
    expect(res.events.map((e) => e.event_id)).toEqual(["mine"]);
    expect(res.next_after).toBe(res.events[0].seq);
    // Nothing newer: the poll ends empty when its wait does, the cursor unchanged.
    const idle = await follow(`${server.url}/v1/events/follow?after=${res.next_after}&node_id=n1&wait_seconds=0`);
    expect(idle).toMatchObject({ events: [], count: 0, next_after: res.next_after });
  });

  it("the Connect client over HTTP/1.1 follows oldest first from a cursor", async () => {
    const api = createOrchestratorClients({ baseUrl: server.url, httpVersion: "1.1" });
    try {
      const first = await api.follow.followEvents({ after: 0n, limit: 2, waitSeconds: 5 });
      expect(first.events).toHaveLength(2);
      expect(first.events[0].seq).toBeLessThan(first.events[1].seq);
      const next = await api.follow.followEvents({ after: first.nextAfter, limit: 1000, waitSeconds: 5 });
      expect(next.events[0].seq).toBe(first.events[1].seq + 1n);
    } finally {
      api.close();
    }
  });

  it.each([
    ["limit", "after=0&limit=0", "limit"],
    ["wait", "after=0&wait_seconds=61", "wait_seconds"],
    ["negative cursor", "after=-1", "after"],
    ["both starts", "after=3&from_newest=true", "from_newest"],
  ])("refuses a bad %s with 400 naming the field", async (_name, query, field) => {
    const res = await fetch(`${server.url}/v1/events/follow?${query}`);
    expect(res.status).toBe(400);
    expect(((await res.json()) as { message: string }).message).toContain(field);
  });
});

describe("a server stopping", () => {
  it("answers its waiting long polls, empty with their cursor, instead of cutting them", async () => {
    const server = await startTestServer("sqlite");
    const waiting = follow(`${server.url}/v1/events/follow?after=7&wait_seconds=60`);
    await new Promise((r) => setTimeout(r, 300));
    await server.stop();
    expect(await waiting).toMatchObject({ events: [], count: 0, next_after: "7" });
  });
});

describe("autonomy logs --follow", () => {
  let dataDir: string;
  let server: ChildServer | undefined;
  beforeAll(() => void (dataDir = mkdtempSync(path.join(os.tmpdir(), "ao-follow-"))));
  afterAll(async () => {
    await server?.kill("SIGKILL");
    rmSync(dataDir, { recursive: true, force: true });
  });

  it("prints events as they are stored and resumes after the last seq it printed across a server restart", async () => {
    const port = await freePort();
    const args = ["--data-dir", dataDir, "--listen", `127.0.0.1:${port}`];
    server = await startChildServer(args);
    await post(server.url, [event("old")]);
    const cli = spawn(process.execPath, [AUTONOMY_BIN, "--orchestrator-url", server.url, "--output", "json", "logs", "--follow", "--node-id", "n1"], {
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    cli.stdout.on("data", (c: Buffer) => (stdout += c.toString()));
    cli.stderr.on("data", (c: Buffer) => (stderr += c.toString()));
    const exited = new Promise<number | null>((resolve) => cli.once("exit", (code) => resolve(code)));
    const printed = () => stdout.split("\n").filter(Boolean).map((l) => JSON.parse(l) as { event_id: string; seq: string });
    try {
      // The follow starts after the newest stored event: "old" is never printed.
      // Its first call (from the newest) is answered at once and logged.
      await until("the follow has started", async () => server!.lines.some((l) => String(l.path ?? "").endsWith("/FollowEvents")), 10_000);
      await post(server.url, [event("a1"), event("x1", "n2"), event("a2")]);
      await until("two events printed", async () => printed().length >= 2, 10_000);

      // kill -9 and a new process on the same port and data dir.
      await server.kill("SIGKILL");
      server = await startChildServer(args);
      await post(server.url, [event("a3"), event("x2", "n2"), event("a4")]);
      await until("four events printed", async () => printed().length >= 4, 20_000);
      await new Promise((r) => setTimeout(r, 500));

      const lines = printed();
      expect(lines.map((l) => l.event_id)).toEqual(["a1", "a2", "a3", "a4"]);
      const seqs = lines.map((l) => Number(l.seq));
      expect([...seqs].sort((x, y) => x - y)).toEqual(seqs);
      expect(stderr).toMatch(/resuming after seq \d+/);
    } finally {
      cli.kill("SIGINT");
    }
    expect(await exited).toBe(0);
  });
});
