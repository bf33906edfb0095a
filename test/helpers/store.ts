import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { PostgresStore } from "../../src/store/pg/store.js";
import { SqliteStore } from "../../src/store/sqlite/store.js";
import type { Store } from "../../src/store/store.js";
import { createTestDatabase } from "./postgres.js";
import type { StoreKind } from "./server.js";

/**
 * A store of either kind on a fresh SQLite data dir or a fresh PostgreSQL database (whose
 * default collation is that of the ICU locale pgIcuLocale when given).
 */
export async function openStore(kind: StoreKind, opts: { pgIcuLocale?: string } = {}): Promise<{ store: Store; cleanup: () => Promise<void> }> {
  if (kind === "postgres") {
    const db = await createTestDatabase({ icuLocale: opts.pgIcuLocale });
    const store = await PostgresStore.open({ url: db.url });
    return { store, cleanup: async () => (await store.close(), await db.drop()) };
  }
  const dir = mkdtempSync(path.join(os.tmpdir(), "ao-store-"));
  const store = await SqliteStore.open({ dataDir: dir, busyTimeoutMs: 1000, onFatal: () => {} });
  return { store, cleanup: async () => (await store.close(), rmSync(dir, { recursive: true, force: true })) };
}
