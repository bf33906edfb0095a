/**
 * A real PgBouncer in front of the run's PostgreSQL: `serve --postgres-url` through a
 * transaction-mode pool stops at start with one line saying why (before it writes anything);
 * through a session-mode pool it serves. PgBouncer must be installed (apt-get install -y pgbouncer).
 */
import { spawn, type ChildProcess } from "node:child_process";
import { chmodSync, existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createHaDatabase } from "./helpers/ha-db.js";
import { h1 } from "./helpers/http.js";
import { freePort } from "./helpers/net.js";
import { ORCHESTRATOR_BIN, runProgram, startChildServer } from "./helpers/child.js";

const PGBOUNCER = ["/usr/sbin/pgbouncer", "/usr/bin/pgbouncer"].find((p) => existsSync(p));

describe("HA behind PgBouncer", () => {
  let db: Awaited<ReturnType<typeof createHaDatabase>>;
  let work: string;
  let bouncer: ChildProcess | undefined;
  let bouncerLog = "";
  let port = 0;
  const through = (alias: string) => `postgres://${encodeURIComponent(new URL(db.url).username || "postgres")}@127.0.0.1:${port}/${alias}`;

  beforeAll(async () => {
    if (!PGBOUNCER) throw new Error("PgBouncer is not installed: install it (apt-get install -y pgbouncer); this test proves the transaction-pooler refusal against a real one");
    db = await createHaDatabase();
    const u = new URL(db.url);
    const user = decodeURIComponent(u.username || "postgres");
    const server = `host=${u.hostname} port=${u.port || 5432} dbname=${u.pathname.slice(1)}${u.password ? ` password=${decodeURIComponent(u.password)}` : ""}`;
    work = mkdtempSync(path.join(os.tmpdir(), "ha-pooler-"));
    port = await freePort();
    const ini = path.join(work, "pgbouncer.ini");
    // trust: PgBouncer asks the client nothing; the password (if any) is the one it logs in to PostgreSQL with.
    writeFileSync(path.join(work, "users.txt"), `"${user}" "${decodeURIComponent(u.password).replace(/"/g, '""')}"\n`);
    writeFileSync(
      ini,
      [
        "[databases]",
        `tx = ${server} pool_mode=transaction`,
        `session = ${server} pool_mode=session`,
        "[pgbouncer]",
        "listen_addr = 127.0.0.1",
        `listen_port = ${port}`,
        "unix_socket_dir =",
        "auth_type = trust",
        `auth_file = ${path.join(work, "users.txt")}`,
        // The store names its sessions and bounds idle transactions with startup options PgBouncer does not forward.
        "ignore_startup_parameters = extra_float_digits,options",
        "",
      ].join("\n"),
    );
    // PgBouncer refuses to run as root; -u drops to an unprivileged user, which must read the files.
    chmodSync(work, 0o755);
    const asRoot = process.getuid?.() === 0;
    bouncer = spawn(PGBOUNCER, [...(asRoot ? ["-u", "nobody"] : []), ini], { stdio: ["ignore", "pipe", "pipe"] });
    bouncer.stdout!.on("data", (c: Buffer) => (bouncerLog += c.toString()));
    bouncer.stderr!.on("data", (c: Buffer) => (bouncerLog += c.toString()));
    for (let i = 0; ; i++) {
      const up = await new Promise<boolean>((resolve) => {
        const s = net.connect(port, "127.0.0.1", () => resolve(true)).on("error", () => resolve(false));
        s.unref();
        setTimeout(() => s.destroy(), 200);
      });
      if (up) break;
      if (i > 100 || bouncer.exitCode !== null) throw new Error(`PgBouncer did not start: ${bouncerLog}`);
      await sleep(50);
    }
    // Both pools reach the database (so what the server says below is about the pool mode).
    for (const alias of ["tx", "session"]) {
      const c = new pg.Client({ connectionString: through(alias) });
      await c.connect();
      expect((await c.query("SELECT 1 AS one")).rows).toEqual([{ one: 1 }]);
      await c.end();
    }
  }, 30_000);

  afterAll(async () => {
    if (bouncer && bouncer.exitCode === null) {
      const exited = new Promise((r) => bouncer!.once("exit", r));
      bouncer.kill("SIGTERM");
      await exited;
    }
    await db?.drop();
    if (work) rmSync(work, { recursive: true, force: true });
  });

  it("through a transaction-mode pool, serve exits non-zero with one line saying why, and writes nothing", async () => {
    const run = await runProgram(ORCHESTRATOR_BIN, ["serve", "--listen", "127.0.0.1:0", "--log-format", "json", "--data-dir", path.join(work, "tx"), "--postgres-url", through("tx")], {
      AUTONOMY_RBAC_ENFORCEMENT: "0",
    });
    expect(run.code).not.toBe(0);
    const lines = run.stderr.split("\n").filter((l) => /pooler/.test(l));
    expect(lines).toHaveLength(1);
    expect((JSON.parse(lines[0]) as { msg: string }).msg).toBe(
      "cannot start: --postgres-url reaches PostgreSQL through a transaction-mode connection pooler: leader election needs a session advisory lock and LISTEN on one connection, which do not survive one; point it at PostgreSQL itself or at a session-mode pool",
    );
    // Refused before the store was opened: no migration ran through the pool.
    const admin = new pg.Client({ connectionString: db.url });
    await admin.connect();
    try {
      expect((await admin.query("SELECT to_regclass('leader_epochs') AS t")).rows).toEqual([{ t: null }]);
    } finally {
      await admin.end();
    }
  }, 60_000);

  it("through a session-mode pool, serve starts, leads and answers", async () => {
    const server = await startChildServer(["--data-dir", path.join(work, "session"), "--postgres-url", through("session"), "--leader-lease", "3s", "--leader-renew", "500ms"]);
    try {
      expect((await h1(`${server.url}/v1/health`)).json()).toMatchObject({ status: "ok" });
      expect((await h1(`${server.url}/v1/health/write-ready`)).json()).toEqual({ ready: true, mode: "postgres" });
      let leader: { this_replica_is_leader?: boolean } = {};
      for (let i = 0; i < 100 && !leader.this_replica_is_leader; i++) {
        leader = (await h1(`${server.url}/v1/health/leader`)).json();
        if (!leader.this_replica_is_leader) await sleep(100);
      }
      expect(leader).toMatchObject({ this_replica_is_leader: true, session_lock_held: true });
    } finally {
      await server.kill();
    }
  }, 60_000);
});
