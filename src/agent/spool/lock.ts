import { createHash } from "node:crypto";
import { realpathSync, rmSync } from "node:fs";
import net from "node:net";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";

/**
 * A lock between processes, held by listening on a Unix socket. On Linux the socket is in the
 * abstract namespace (its name derived from the spool's real path): the kernel releases it
 * when the holder exits, even by kill -9, so there is no stale lock file to judge or remove.
 * Elsewhere it is a socket file in the spool dir, taken over when nobody answers on it.
 *
 * The socket also carries a wake-up: `poke` connects to the holder, which calls `onPoke`
 * (the shipper uses it so `events send` and `spool flush` need not wait for its next poll).
 */
export interface HeldLock {
  release(): Promise<void>;
}

export class LockTimeoutError extends Error {}

function address(dir: string, name: string): string {
  let real: string;
  try {
    real = realpathSync(dir);
  } catch {
    real = path.resolve(dir);
  }
  if (process.platform === "linux") {
    const hash = createHash("sha256").update(real).digest("hex").slice(0, 40);
    return `\0autonomy-edgectl-${name}-${hash}`;
  }
  return path.join(real, `.${name}.sock`);
}

function listen(server: net.Server, where: string): Promise<boolean> {
  return new Promise((resolve, reject) => {
    const onError = (err: NodeJS.ErrnoException) => {
      server.removeListener("listening", onListening);
      if (err.code === "EADDRINUSE") resolve(false);
      else reject(err);
    };
    const onListening = () => {
      server.removeListener("error", onError);
      resolve(true);
    };
    server.once("error", onError);
    server.once("listening", onListening);
    server.listen({ path: where, exclusive: true });
  });
}

/** Whether anyone listens at a socket file (non-Linux only: abstract sockets need no check). */
function answers(where: string): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ path: where });
    socket.once("connect", () => (socket.destroy(), resolve(true)));
    socket.once("error", () => resolve(false));
  });
}

/** Takes the lock once; resolves undefined when another process holds it. */
export async function tryLock(dir: string, name: string, onPoke?: () => void): Promise<HeldLock | undefined> {
  const where = address(dir, name);
  const server = net.createServer((socket) => {
    socket.on("error", () => {});
    socket.end();
    onPoke?.();
  });
  server.unref();
  let ok = await listen(server, where);
  if (!ok && !where.startsWith("\0") && !(await answers(where))) {
    rmSync(where, { force: true });
    ok = await listen(server, where);
  }
  if (!ok) return undefined;
  return {
    release: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

/** Takes the lock, waiting for its holder up to `timeoutMs`. */
export async function lock(dir: string, name: string, timeoutMs = 30_000): Promise<HeldLock> {
  const deadline = Date.now() + timeoutMs;
  for (let wait = 1; ; wait = Math.min(wait * 2, 20)) {
    const held = await tryLock(dir, name);
    if (held) return held;
    if (Date.now() > deadline) throw new LockTimeoutError(`the spool in ${dir} stayed locked for ${Math.round(timeoutMs / 1000)}s`);
    await sleep(wait);
  }
}

/** Wakes the holder of a lock, if any; never fails. */
export function poke(dir: string, name: string): Promise<boolean> {
  const where = address(dir, name);
  return new Promise((resolve) => {
    const socket = net.connect({ path: where });
    const timer = setTimeout(() => (socket.destroy(), resolve(false)), 500);
    socket.once("connect", () => {
      clearTimeout(timer);
      socket.end();
      resolve(true);
    });
    socket.once("error", () => (clearTimeout(timer), resolve(false)));
  });
}
