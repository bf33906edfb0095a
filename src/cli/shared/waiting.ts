import type { Interceptor } from "@connectrpc/connect";

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
