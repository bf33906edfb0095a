/**
 * The store's pool gives back a client whose connection ends while it is checked out: drizzle's
 * node-postgres transaction() sends BEGIN outside the try/finally that releases its client, so a
 * connection dropped right after checkout would otherwise hold that client for good, and the
 * pool's end() (the store's close) would wait forever.
 */
import { drizzle } from "drizzle-orm/node-postgres";
import pg from "pg";
import { describe, expect, inject, it } from "vitest";
import { StorePool } from "../src/store/pg/pool.js";
import { within } from "./helpers/wait.js";

type ConnectCallback = (err: Error | undefined, client: pg.PoolClient | undefined, done: (release?: unknown) => void) => void;

/** `pool`, cutting a client's connection right after its checkout (before drizzle's BEGIN) when asked. */
function dropping<P extends pg.Pool>(pool: P): P & { dropNext: boolean } {
  const asked = Object.assign(pool, { dropNext: false });
  const connect = pool.connect.bind(pool) as (callback?: ConnectCallback) => Promise<pg.PoolClient> | void;
  const drop = (client: pg.PoolClient) => {
    if (asked.dropNext) {
      asked.dropNext = false;
      (client as unknown as { connection: { stream: { destroy(): void } } }).connection.stream.destroy();
    }
    return client;
  };
  (asked as { connect: unknown }).connect = (callback?: ConnectCallback) => (callback ? connect(callback) : (connect() as Promise<pg.PoolClient>).then(drop));
  return asked;
}

describe("the store's PostgreSQL pool", () => {
  const url = inject("postgresAdminUrl");

  it("gives back a client whose connection dropped before BEGIN: the pool serves on and ends", async () => {
    const pool = dropping(new StorePool({ connectionString: url, max: 1 }));
    pool.on("error", () => {});
    pool.on("connect", (client) => client.on("error", () => {}));
    const db = drizzle({ client: pool });
    pool.dropNext = true;
    await expect(db.transaction(async (tx) => tx.execute("SELECT 1"))).rejects.toThrow();
    // With one client in all, the next transaction runs only if the dead one was given back.
    const rows = await within("a transaction after the drop", db.transaction(async (tx) => (await tx.execute("SELECT 2 AS n")).rows), 10_000);
    expect(rows).toEqual([{ n: 2 }]);
    await within("the pool's end", pool.end(), 10_000);
    expect(pool.totalCount).toBe(0);
  });

  it("without it, pg.Pool keeps that client out for good (the behaviour it guards against)", async () => {
    const pool = dropping(new pg.Pool({ connectionString: url, max: 1, connectionTimeoutMillis: 1000 }));
    pool.on("error", () => {});
    pool.on("connect", (client) => client.on("error", () => {}));
    const db = drizzle({ client: pool });
    pool.dropNext = true;
    await expect(db.transaction(async (tx) => tx.execute("SELECT 1"))).rejects.toThrow();
    expect(pool.totalCount).toBe(1);
    await expect(db.transaction(async (tx) => tx.execute("SELECT 2"))).rejects.toThrow(/timeout/i);
  });

  it("gives a client back once, however often release is called", async () => {
    const pool = new StorePool({ connectionString: url, max: 1 });
    const client = await pool.connect();
    client.release();
    client.release();
    expect((await pool.query("SELECT 3 AS n")).rows).toEqual([{ n: 3 }]);
    await pool.end();
  });
});
