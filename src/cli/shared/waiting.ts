import type { Interceptor } from "@connectrpc/connect";
import { formatDuration } from "./parse.js";

/**
 * The one line a CLI prints when a call never reached the orchestrator's handlers: for a
 * timeout, the URL, where it came from and how long the call waited (and --request-timeout,
 * which sets it).
 */
export function transportFailureMessage(failure: { kind: string; message: string }, target: { url: string; source: string }, timeoutMs: number): string {
  const from = target.source ? ` (${target.source})` : "";
  return failure.kind === "timeout"
    ? `no answer from ${target.url}${from} within ${formatDuration(timeoutMs)} (--request-timeout)`
    : `cannot reach the orchestrator at ${target.url}${from}: ${failure.message}`;
}

/**
 * Says on stderr, once, that a call has been waiting more than a second, so a server that
 * accepts connections but does not answer is not mistaken for a hung CLI.
 */
export function waitingNotice(url: string, program = "autonomy"): Interceptor {
  let told = false;
  return (next) => async (req) => {
    // A long poll waits by design.
    if (req.method.name === "FollowEvents") return next(req);
    const timer = setTimeout(() => {
      if (told) return;
      told = true;
      process.stderr.write(`${program}: waiting for ${url} ...\n`);
    }, 1000);
    try {
      return await next(req);
    } finally {
      clearTimeout(timer);
    }
  };
}
