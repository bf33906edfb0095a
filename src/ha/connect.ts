import { PostgresStore } from "../store/pg/store.js";
import type { Logger } from "../observability/logger.js";

const MAX_BACKOFF_MS = 10_000;

/**
 * Opens the PostgreSQL store, waiting for the database when it cannot be reached: one clear
 * line when the first attempt fails, then retries with backoff (1 s doubling to 10 s), one
 * line when it is reached. Other failures (a bad URL, refused credentials, a failing
 * migration) stop the start as before.
 */
export async function openPostgres(url: string, logger: Logger, opts: { signal?: AbortSignal } = {}): Promise<PostgresStore> {
  let delay = 1_000;
  let since: number | undefined;
  for (;;) {
    try {
      const store = await PostgresStore.open({ url });
      if (since !== undefined) logger.info({ waited_ms: Date.now() - since }, "PostgreSQL reached; starting");
      return store;
    } catch (err) {
      if (!unreachable(err) || opts.signal?.aborted) throw err;
      if (since === undefined) {
        since = Date.now();
        logger.error({ err: (err as Error).message }, "PostgreSQL cannot be reached at start; retrying with backoff (up to every 10s) until it can");
      }
      await new Promise((r) => setTimeout(r, delay));
      delay = Math.min(MAX_BACKOFF_MS, delay * 2);
    }
  }
}

/** Connection refused, reset, timed out, host unknown, or the server starting or shutting down. */
function unreachable(err: unknown): boolean {
  const code = (err as { code?: unknown }).code ?? (err as { cause?: { code?: unknown } }).cause?.code;
  if (typeof code !== "string") return /timeout|terminated|Connection/i.test(String((err as Error)?.message));
  return ["ECONNREFUSED", "ECONNRESET", "ETIMEDOUT", "EHOSTUNREACH", "ENETUNREACH", "EAI_AGAIN", "57P03", "57P01", "08006", "08001"].includes(code);
}
