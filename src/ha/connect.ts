import pg from "pg";
import { PostgresStore } from "../store/pg/store.js";
import type { Logger } from "../observability/logger.js";

const MAX_BACKOFF_MS = 10_000;

/** --postgres-url leads through a transaction-mode pooler: the start stops (never retried). */
export class TransactionPoolerError extends Error {
  readonly code = "TRANSACTION_POOLER";
}

/**
 * Refuses a transaction-mode pooler (PgBouncer pool_mode=transaction, ...): there, statements of
 * one client run on whichever server connection is free, so a session advisory lock and LISTEN
 * are not this client's. Seen as one server connection shared by two clients, or a client's
 * server connection changing between two statements.
 */
export async function refuseTransactionPooler(url: string): Promise<void> {
  const a = new pg.Client({ connectionString: url, connectionTimeoutMillis: 5_000 });
  const b = new pg.Client({ connectionString: url, connectionTimeoutMillis: 5_000 });
  a.on("error", () => {});
  b.on("error", () => {});
  const pid = async (c: pg.Client) => Number((await c.query<{ pid: number }>("SELECT pg_backend_pid() AS pid")).rows[0].pid);
  try {
    await a.connect();
    await b.connect();
    const first = await pid(a);
    await b.query("BEGIN");
    const other = await pid(b);
    const again = await pid(a);
    await b.query("ROLLBACK");
    if (other === first || again !== first) {
      throw new TransactionPoolerError(
        "--postgres-url reaches PostgreSQL through a transaction-mode connection pooler: leader election needs a session advisory lock and LISTEN on one connection, which do not survive one; point it at PostgreSQL itself or at a session-mode pool",
      );
    }
  } finally {
    await a.end().catch(() => undefined);
    await b.end().catch(() => undefined);
  }
}

/**
 * Opens the PostgreSQL store, waiting for the database when it cannot be reached: one clear
 * line when the first attempt fails, then retries with backoff (1 s doubling to 10 s), one
 * line when it is reached; `onWaiting` hears why it waits (the readiness answers say it).
 * Before anything is written the connection is checked for a transaction-mode pooler
 * (`poolerCheckUrl`: the URL as the operator gave it). Other failures (a pooler, a bad URL,
 * refused credentials, a failing migration) stop the start.
 */
export async function openPostgres(
  url: string,
  logger: Logger,
  opts: { signal?: AbortSignal; poolerCheckUrl?: string; onWaiting?: (reason: string) => void; fields?: Record<string, unknown> } = {},
): Promise<PostgresStore> {
  let delay = 1_000;
  let since: number | undefined;
  for (;;) {
    try {
      if (opts.poolerCheckUrl) await refuseTransactionPooler(opts.poolerCheckUrl);
      const store = await PostgresStore.open({ url });
      if (since !== undefined) logger.info({ waited_ms: Date.now() - since }, "PostgreSQL reached; starting");
      return store;
    } catch (err) {
      if (!unreachable(err) || opts.signal?.aborted) throw err;
      opts.onWaiting?.(`PostgreSQL cannot be reached: ${(err as Error).message}; retrying`);
      if (since === undefined) {
        since = Date.now();
        logger.error({ ...opts.fields, err: (err as Error).message }, "PostgreSQL cannot be reached at start; retrying with backoff (up to every 10s) until it can");
      }
      await new Promise((r) => setTimeout(r, delay));
      delay = Math.min(MAX_BACKOFF_MS, delay * 2);
    }
  }
}

/** Connection refused, reset, timed out, host unknown, or the server starting or shutting down. */
function unreachable(err: unknown): boolean {
  if (err instanceof TransactionPoolerError) return false;
  const code = (err as { code?: unknown }).code ?? (err as { cause?: { code?: unknown } }).cause?.code;
  if (typeof code !== "string") return /timeout|terminated|Connection/i.test(String((err as Error)?.message));
  return ["ECONNREFUSED", "ECONNRESET", "ETIMEDOUT", "EHOSTUNREACH", "ENETUNREACH", "EAI_AGAIN", "57P03", "57P01", "08006", "08001"].includes(code);
}
