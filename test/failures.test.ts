import { spawn, spawnSync } from "node:child_process";
import { closeSync, mkdirSync, mkdtempSync, openSync, rmSync, writeSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { randomBytes } from "node:crypto";
import Database from "better-sqlite3";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { DB_FILE_NAME } from "../src/store/sqlite/store.js";
import { startChildServer } from "./helpers/child.js";
import { h1 } from "./helpers/http.js";
import { startTestServer, type TestServer } from "./helpers/server.js";

const T0 = "2026-11-22T10:00:00Z";
function batch(prefix: string, n: number, payloadBytes = 0) {
  const pad = "x".repeat(payloadBytes);
  return JSON.stringify({
    events: Array.from({ length: n }, (_, i) => ({
      event_id: `${prefix}-${i}`,
      event_type: "t",
      node_id: prefix,
      timestamp: T0,
      ...(payloadBytes ? { payload: { pad } } : {}),
    })),
  });
}
const post = (url: string, body: string) => h1(`${url}/v1/events`, { method: "POST", body });

/** No error answer may carry SQL, a stack or a file path. */
function expectNoLeak(text: string, dataDir: string) {
  expect(text).not.toMatch(/INSERT|SELECT|sqlite_|SQLITE_|\bat .*\.(js|ts):\d+/);
  expect(text).not.toContain(dataDir);
}

describe("SQLite writer busy beyond busy_timeout", () => {
  let server: TestServer;
  beforeAll(async () => (server = await startTestServer("sqlite", { busyTimeoutMs: 200 })));
  afterAll(async () => server.stop());

  it("answers 503 with Retry-After while another process holds the write lock, and reads keep working", async () => {
    await post(server.url, batch("before-lock", 3));
    // Another process takes SQLite's write lock and keeps it until its stdin closes.
    const holder = spawn(
      process.execPath,
      [
        "-e",
        `const D = require("better-sqlite3"); const db = new D(process.argv[1]); db.exec("BEGIN IMMEDIATE");
         process.stdout.write("locked\\n"); process.stdin.on("end", () => { db.exec("ROLLBACK"); db.close(); }); process.stdin.resume();`,
        path.join(server.dataDir, DB_FILE_NAME),
      ],
      { cwd: process.cwd(), stdio: ["pipe", "pipe", "inherit"] },
    );
    await new Promise<void>((resolve) => holder.stdout!.once("data", () => resolve()));
    try {
      const res = await post(server.url, batch("during-lock", 3));
      expect(res.status).toBe(503);
      expect(res.headers["retry-after"]).toBe("1");
      expect(res.json().code).toBe("unavailable");
      expectNoLeak(res.text, server.dataDir);
      const read = await h1(`${server.url}/v1/events?node_id=before-lock`);
      expect(read.status).toBe(200);
      expect(read.json().count).toBe(3);
    } finally {
      holder.stdin!.end();
      await new Promise((resolve) => holder.once("exit", resolve));
    }
    const after = await post(server.url, batch("during-lock", 3));
    expect(after.json()).toEqual({ received: 3, inserted: 3, deduped: 0 });
  });
});

describe("database full", () => {
  async function fillUntilFull(server: { url: string }, dataDir: string) {
    let last;
    for (let i = 0; i < 200; i++) {
      last = await post(server.url, batch(`fill${i}`, 50, 2000));
      if (last.status !== 200) break;
    }
    expect(last!.status).toBe(507);
    expect(last!.json().code).toBe("resource_exhausted");
    expectNoLeak(last!.text, dataDir);
    return last!;
  }

  /** Fills the store until writes answer 507; then a refused batch leaves nothing, reads work, nothing is fatal. */
  async function expectFullButReadable(server: TestServer, dataDir: string) {
    await post(server.url, batch("kept", 5));
    await fillUntilFull(server, dataDir);
    // Larger than the batch that no longer fitted, so it cannot fit in the space that batch's rollback freed.
    const refused = await post(server.url, batch("refused", 60, 2000));
    expect(refused.status).toBe(507);
    expect((await h1(`${server.url}/v1/events?node_id=refused`)).json().count).toBe(0);
    const read = await h1(`${server.url}/v1/events?node_id=kept`);
    expect(read.status).toBe(200);
    expect(read.json().count).toBe(5);
    expect(server.fatal).toEqual([]);
  }

  it("answers 507 at the --max-db-size limit, stores nothing of the refused batch, and keeps serving reads", async () => {
    const server = await startTestServer("sqlite", { maxDbBytes: 512 * 1024 });
    try {
      await expectFullButReadable(server, server.dataDir);
    } finally {
      await server.stop();
    }
  });

  // A real full filesystem needs a tmpfs mount, which needs root (as on CI and the dev machines here).
  const mountable = process.getuid?.() === 0 && spawnSync("mount", ["--version"]).status === 0;
  it.skipIf(!mountable)("answers 507 when the filesystem is really full, and keeps serving reads", async () => {
    const mnt = mkdtempSync(path.join(os.tmpdir(), "ao-full-"));
    const mounted = spawnSync("mount", ["-t", "tmpfs", "-o", "size=1m", "tmpfs", mnt]);
    expect(mounted.status, String(mounted.stderr)).toBe(0);
    const server = await startTestServer("sqlite", { dataDir: mnt });
    try {
      await expectFullButReadable(server, mnt);
    } finally {
      await server.close();
      spawnSync("umount", [mnt]);
      rmSync(mnt, { recursive: true, force: true });
    }
  });
});

describe("a corrupt database", () => {
  let dataDir: string;
  afterEach(() => rmSync(dataDir, { recursive: true, force: true }));

  async function populate(): Promise<string> {
    dataDir = mkdtempSync(path.join(os.tmpdir(), "ao-corrupt-"));
    const server = await startChildServer(["--data-dir", dataDir]);
    for (let i = 0; i < 10; i++) expect((await post(server.url, batch(`c${i}`, 500, 100))).status).toBe(200);
    await server.kill("SIGTERM");
    return path.join(dataDir, DB_FILE_NAME);
  }

  it("makes the process log one clear line and exit non-zero when a query meets it", async () => {
    const file = await populate();
    // Overwrite the pages of the events table and its indexes; keep everything startup reads
    // (the schema, which spans several pages, the migrations table, the rollout tables).
    const db = new Database(file, { readonly: true });
    const pageSize = db.pragma("page_size", { simple: true }) as number;
    const eventPages = db
      .prepare("SELECT pageno FROM dbstat WHERE name IN (SELECT name FROM sqlite_master WHERE tbl_name = 'events')")
      .all() as { pageno: number }[];
    db.close();
    expect(eventPages.length).toBeGreaterThan(10);
    const fd = openSync(file, "r+");
    for (const { pageno } of eventPages) writeSync(fd, randomBytes(pageSize), 0, pageSize, (pageno - 1) * pageSize);
    closeSync(fd);

    const server = await startChildServer(["--data-dir", dataDir]);
    // The process ends on the corruption: the query is answered 500 or its connection closes first.
    const outcome = await h1(`${server.url}/v1/events?node_id=c3`).then(
      (res) => res.status,
      () => "connection closed",
    );
    const { code } = await server.exited;
    expect(code).not.toBe(0);
    expect([500, "connection closed"]).toContain(outcome);
    const fatal = server.lines.filter((l) => l.level === 60);
    expect(fatal).toHaveLength(1);
    expect(String(fatal[0].msg)).toContain("corrupt");
  });

  it("refuses to start on a file that is not a database, with one clear line", async () => {
    dataDir = mkdtempSync(path.join(os.tmpdir(), "ao-corrupt-"));
    mkdirSync(dataDir, { recursive: true });
    const fd = openSync(path.join(dataDir, DB_FILE_NAME), "w");
    writeSync(fd, randomBytes(64 * 1024));
    closeSync(fd);
    await expect(startChildServer(["--data-dir", dataDir])).rejects.toThrow(/exited \(1\) before serving.*corrupt/);
  });
});
