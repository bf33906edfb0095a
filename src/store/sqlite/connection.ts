import { createRequire } from "node:module";
import type Database from "better-sqlite3";

/** Why the SQLite store cannot run here, undefined when it can: better-sqlite3 is an optional dependency. */
export function sqliteUnavailable(): string | undefined {
  try {
    // Its native binding loads with the first database: open one in memory to know.
    new (loadDriver())(":memory:").close();
    return undefined;
  } catch (err) {
    return (
      `the SQLite store needs better-sqlite3, which is not installed or did not build here (${(err as Error).message.split("\n")[0]}); ` +
      "install it (npm install better-sqlite3, with a C++ toolchain where no prebuilt binary fits) or serve from PostgreSQL (--postgres-url)"
    );
  }
}

let driver: typeof Database | undefined;

/** better-sqlite3, loaded when a store first opens: the clients and the agent never load it. */
export function loadDriver(): typeof Database {
  driver ??= createRequire(import.meta.url)("better-sqlite3") as typeof Database;
  return driver;
}

/** Options shared by the writer and reader connections of one SQLite store. */
export interface SqliteConnectionOptions {
  file: string;
  /** How long a connection waits for the write lock before SQLITE_BUSY, in milliseconds. */
  busyTimeoutMs: number;
  /**
   * Largest database size in bytes; writes beyond it fail as "full", except those that make
   * room (an audit prune, revocations), which may use a reserve above it. 0 or undefined: unlimited.
   */
  maxDbBytes?: number;
}

/** Room above --max-db-size kept for the writes that free space, so a prune can commit at the limit. */
export function dbSizeReserveBytes(maxDbBytes: number): number {
  return Math.max(256 * 1024, Math.floor(maxDbBytes / 20));
}

/**
 * Opens a connection with the durability settings every connection of the store shares:
 * WAL, synchronous=FULL (a committed transaction survives power loss), a bounded busy timeout.
 */
export function openConnection(opts: SqliteConnectionOptions, role: "writer" | "reader"): Database.Database {
  const db = new (loadDriver())(opts.file);
  db.pragma(`busy_timeout = ${Math.max(0, Math.floor(opts.busyTimeoutMs))}`);
  if (role === "writer") {
    db.pragma("journal_mode = WAL");
    db.pragma("synchronous = FULL");
    db.pragma("foreign_keys = ON");
    if (opts.maxDbBytes && opts.maxDbBytes > 0) {
      const pageSize = db.pragma("page_size", { simple: true }) as number;
      db.pragma(`max_page_count = ${Math.max(1, Math.floor((opts.maxDbBytes + dbSizeReserveBytes(opts.maxDbBytes)) / pageSize))}`);
    }
  } else {
    db.pragma("query_only = ON");
    // 32 MiB of page cache (the default is 2 MiB): index and recent pages stay in memory.
    db.pragma("cache_size = -32768");
  }
  return db;
}
