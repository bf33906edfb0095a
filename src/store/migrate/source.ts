import { copyFileSync, constants, existsSync, linkSync, mkdtempSync, rmSync, statSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import type Database from "better-sqlite3";
import { loadDriver } from "../sqlite/connection.js";
import { DB_FILE_NAME } from "../sqlite/store.js";

/** A value of a SQLite row as read for the copy: integers exactly (bigint), text, or null. */
export type SourceValue = bigint | string | null | Buffer;

/** The --sqlite-dir does not hold a database to copy; the message names the path looked in. */
export class SourceNotFoundError extends Error {}

/**
 * A SQLite data dir opened for reading only, so that the copy changes nothing in it: not the
 * database, not its write-ahead log, and no file is created or removed there.
 *
 * A read-only connection of a WAL database needs the -wal and -shm files and creates them when
 * they are missing. So: when both are there (a server is running, or was killed), the database
 * is read in place, which writes nothing but the shared-memory index a reader always uses; when
 * they are not (a clean shutdown leaves none), it is read through a hard link (or, on another
 * filesystem, a copy) in a private temporary directory, where SQLite makes its files instead.
 */
export class SqliteSource {
  private constructor(
    readonly dir: string,
    readonly file: string,
    private readonly db: Database.Database,
    private readonly scratch: string | undefined,
    /** How the database was opened, for the report. */
    readonly access: "in place" | "through a hard link" | "through a copy",
  ) {}

  static open(dir: string): SqliteSource {
    const abs = path.resolve(dir);
    if (!existsSync(abs) || !statSync(abs).isDirectory()) {
      throw new SourceNotFoundError(`--sqlite-dir ${abs}: no such directory`);
    }
    const file = path.join(abs, DB_FILE_NAME);
    if (!existsSync(file)) {
      throw new SourceNotFoundError(`--sqlite-dir ${abs}: no ${DB_FILE_NAME} there (looked for ${file}); give the --data-dir the server ran with`);
    }
    const wal = `${file}-wal`;
    const shm = `${file}-shm`;
    if (existsSync(wal) && existsSync(shm)) {
      return new SqliteSource(abs, file, openReadOnly(file), undefined, "in place");
    }
    const scratch = mkdtempSync(path.join(os.tmpdir(), "autonomy-migrate-"));
    try {
      const names = [DB_FILE_NAME, ...(existsSync(wal) ? [`${DB_FILE_NAME}-wal`] : [])];
      let access: SqliteSource["access"] = "through a hard link";
      for (const name of names) {
        try {
          linkSync(path.join(abs, name), path.join(scratch, name));
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code !== "EXDEV" && (err as NodeJS.ErrnoException).code !== "EPERM") throw err;
          copyFileSync(path.join(abs, name), path.join(scratch, name), constants.COPYFILE_FICLONE);
          access = "through a copy";
        }
      }
      return new SqliteSource(abs, file, openReadOnly(path.join(scratch, DB_FILE_NAME)), scratch, access);
    } catch (err) {
      rmSync(scratch, { recursive: true, force: true });
      throw err;
    }
  }

  /** Starts the one read transaction every later read is made in: the copy is of one moment. */
  beginSnapshot(): void {
    if (!this.db.inTransaction) {
      this.db.exec("BEGIN");
      // A deferred transaction takes its snapshot at the first read.
      this.db.prepare("SELECT count(*) FROM sqlite_master").get();
    }
  }

  /** The tables of the database (SQLite's own sqlite_* tables included). */
  tables(): string[] {
    return (this.db.prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name").pluck().all() as string[]);
  }

  columns(table: string): string[] {
    return (this.db.prepare(`SELECT name FROM pragma_table_info(?) ORDER BY cid`).pluck().all(table) as string[]);
  }

  count(table: string, where = "1"): number {
    return Number(this.db.prepare(`SELECT count(*) FROM ${quote(table)} WHERE ${where}`).pluck().get());
  }

  /** The AUTOINCREMENT counter of a table: the largest id it ever handed out (0 when none). */
  sequence(table: string): bigint {
    if (!this.tables().includes("sqlite_sequence")) return 0n;
    const v = this.db.prepare("SELECT seq FROM sqlite_sequence WHERE name = ?").safeIntegers(true).pluck().get(table);
    return typeof v === "bigint" ? v : 0n;
  }

  /**
   * Up to `limit` rows of a table after rowid `after`, in rowid order: the rowid first, then
   * `columns` in that order.
   */
  batch(table: string, columns: readonly string[], after: bigint, limit: number): SourceValue[][] {
    const sql = `SELECT rowid, ${columns.map(quote).join(", ")} FROM ${quote(table)} WHERE rowid > ? ORDER BY rowid LIMIT ?`;
    return this.db.prepare(sql).safeIntegers(true).raw(true).all(after, limit) as SourceValue[][];
  }

  /** Every row of a table, ordered by all its columns (for comparing small tables). */
  rows(table: string, columns: readonly string[], where = "1"): SourceValue[][] {
    const cols = columns.map(quote).join(", ");
    return this.db.prepare(`SELECT ${cols} FROM ${quote(table)} WHERE ${where} ORDER BY ${cols}`).safeIntegers(true).raw(true).all() as SourceValue[][];
  }

  close(): void {
    if (this.db.inTransaction) this.db.exec("COMMIT");
    this.db.close();
    if (this.scratch) rmSync(this.scratch, { recursive: true, force: true });
  }
}

function openReadOnly(file: string): Database.Database {
  const db = new (loadDriver())(file, { readonly: true, fileMustExist: true });
  db.pragma("query_only = ON");
  db.pragma("cache_size = -32768");
  return db;
}

/** An identifier quoted for SQL (table and column names come from the database's own catalog). */
export function quote(name: string): string {
  return `"${name.replaceAll('"', '""')}"`;
}
