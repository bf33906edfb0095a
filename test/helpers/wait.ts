import { setTimeout as sleep } from "node:timers/promises";

/** Polls until check passes (it throws while not yet); fails with its last error after the deadline. */
export async function eventually(check: () => Promise<void>, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      return await check();
    } catch (err) {
      if (Date.now() > deadline) throw err;
      await sleep(100);
    }
  }
}

/**
 * Polls until check answers a value (undefined or false: not yet); fails naming what it waited for,
 * also when one check itself hangs (it is given the whole timeout, however late it starts).
 */
export async function until<T>(what: string, check: () => Promise<T | undefined | false>, timeoutMs = 5000): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await within(`${what} (one check did not answer)`, check(), timeoutMs);
    if (v !== undefined && v !== false) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

/** The value of `p`, or an error naming `what` when it has not settled within `timeoutMs`. */
export async function within<T>(what: string, p: Promise<T>, timeoutMs: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out waiting for ${what} after ${timeoutMs} ms`)), timeoutMs);
  });
  try {
    return await Promise.race([p, late]);
  } finally {
    clearTimeout(timer);
  }
}
