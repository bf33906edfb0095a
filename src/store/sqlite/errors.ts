import {
  StoreBusyError,
  StoreCorruptError,
  StoreFullError,
} from "../../domain/errors.js";

/** What kind of SQLite failure an error is, from its extended result code (`err.code`). */
export type SqliteFailure = "busy" | "full" | "corrupt" | "other";

export function classifySqliteError(err: unknown): SqliteFailure {
  const code = (err as { code?: unknown } | null)?.code;
  if (typeof code !== "string") return "other";
  if (code.startsWith("SQLITE_BUSY") || code.startsWith("SQLITE_LOCKED")) return "busy";
  if (code === "SQLITE_FULL") return "full";
  if (code.startsWith("SQLITE_CORRUPT") || code === "SQLITE_NOTADB") return "corrupt";
  return "other";
}

/** The typed error for a classified failure; `undefined` for failures the caller must treat as internal. */
export function sqliteDomainError(kind: SqliteFailure): Error | undefined {
  switch (kind) {
    case "busy":
      return new StoreBusyError("the database is busy: another writer holds the lock; retry shortly");
    case "full":
      return new StoreFullError("the database is full: no space left for writes");
    case "corrupt":
      return new StoreCorruptError("the database file is corrupt");
    default:
      return undefined;
  }
}
