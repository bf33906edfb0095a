import { mkdirSync, readFileSync, statSync } from "node:fs";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { writeFileAtomic } from "../files.js";

/**
 * The agent-side limit on what the spool ships: a token bucket in bytes per second (its burst is
 * one second of the rate) and a rolling 24-hour byte quota. Bytes are those of the events as
 * spooled (their JSON). 0 turns either limit off. Kept in `throttle.json` in the state dir and
 * re-read while the agent runs, so `edgectl throttle set` applies without a restart.
 */
export interface ThrottleConfig {
  rate_bytes_per_second: number;
  daily_quota_bytes: number;
}

export const NO_THROTTLE: ThrottleConfig = { rate_bytes_per_second: 0, daily_quota_bytes: 0 };
const CONFIG = "throttle.json";
const USAGE = "throttle-usage.json";
const DAY_MS = 24 * 3600 * 1000;
const MINUTE_MS = 60_000;

const SIZE_UNITS: Record<string, number> = {
  "": 1, b: 1, kb: 1e3, mb: 1e6, gb: 1e9, tb: 1e12, kib: 1024, mib: 1024 ** 2, gib: 1024 ** 3, tib: 1024 ** 4,
};

/** Parses a byte size ("0", "65536", "64KiB", "500MiB", "off" for 0). */
export function parseByteSize(value: string, what: string): number {
  const text = value.trim();
  if (text.toLowerCase() === "off") return 0;
  const m = /^(\d+(?:\.\d+)?)\s*([a-z]*)$/i.exec(text);
  const unit = m ? SIZE_UNITS[m[2].toLowerCase()] : undefined;
  if (!m || unit === undefined) throw new Error(`${what}: "${value}" is not a size (examples: 0, 64KiB, 500MiB, off)`);
  return Math.floor(Number(m[1]) * unit);
}

/** Parses a rate: a size per second ("64KiB/s", "1MB/s", "65536"; "0" or "off" for none). */
export function parseRate(value: string): number {
  return parseByteSize(value.trim().replace(/\/s$/i, ""), "--rate");
}

/** A byte count for people: 65536 → "64KiB". */
export function formatBytes(n: number): string {
  for (const [unit, size] of [["GiB", 1024 ** 3], ["MiB", 1024 ** 2], ["KiB", 1024]] as const) {
    if (n >= size) return `${Number((n / size).toFixed(n % size === 0 ? 0 : 1))}${unit}`;
  }
  return `${n}B`;
}

export function readThrottleConfig(stateDir: string): ThrottleConfig {
  try {
    const c = JSON.parse(readFileSync(path.join(stateDir, CONFIG), "utf8")) as Partial<ThrottleConfig>;
    const ok = (v: unknown) => (typeof v === "number" && Number.isFinite(v) && v >= 0 ? Math.floor(v) : 0);
    return { rate_bytes_per_second: ok(c.rate_bytes_per_second), daily_quota_bytes: ok(c.daily_quota_bytes) };
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return { ...NO_THROTTLE };
    throw new Error(`${path.join(stateDir, CONFIG)}: unreadable throttle settings (${(err as Error).message}); set them again with edgectl throttle set`);
  }
}

export function writeThrottleConfig(stateDir: string, config: ThrottleConfig): void {
  mkdirSync(stateDir, { recursive: true, mode: 0o700 });
  writeFileAtomic(path.join(stateDir, CONFIG), JSON.stringify(config, null, 2) + "\n", 0o600);
}

/** Bytes shipped per minute over the last 24 hours (kept in the state dir while a quota is set). */
export function readUsage(stateDir: string): Map<number, number> {
  try {
    const { minutes } = JSON.parse(readFileSync(path.join(stateDir, USAGE), "utf8")) as { minutes: [number, number][] };
    return new Map(minutes.filter(([m, b]) => Number.isSafeInteger(m) && Number.isFinite(b)));
  } catch {
    return new Map();
  }
}

export function usedInLastDay(usage: Map<number, number>, now = Date.now()): number {
  const since = Math.floor((now - DAY_MS) / MINUTE_MS);
  let used = 0;
  for (const [minute, bytes] of usage) if (minute > since) used += bytes;
  return used;
}

/** What the shipper is waiting for, for `spool status`. */
export interface ThrottleState extends ThrottleConfig {
  used_last_24h_bytes: number;
  /** When a send waits for the quota, the time it will go on. */
  quota_resumes_at: string | null;
}

export function throttleState(stateDir: string, now = Date.now()): ThrottleState {
  const config = readThrottleConfig(stateDir);
  const usage = readUsage(stateDir);
  const used = usedInLastDay(usage, now);
  const resume = config.daily_quota_bytes > 0 && used >= config.daily_quota_bytes ? quotaResume(usage, config.daily_quota_bytes, 1, now) : undefined;
  return { ...config, used_last_24h_bytes: used, quota_resumes_at: resume === undefined ? null : new Date(resume).toISOString() };
}

/** When enough of the last day's usage has aged out for `bytes` more to fit in the quota. */
function quotaResume(usage: Map<number, number>, quota: number, bytes: number, now: number): number {
  const since = Math.floor((now - DAY_MS) / MINUTE_MS);
  const minutes = [...usage.entries()].filter(([m]) => m > since).sort((a, b) => a[0] - b[0]);
  let used = minutes.reduce((n, [, b]) => n + b, 0);
  for (const [minute, b] of minutes) {
    if (used + bytes <= quota || used === 0) break;
    used -= b;
    // This minute leaves the window once a full day has passed since its end.
    if (used + bytes <= quota || used === 0) return (minute + 1) * MINUTE_MS + DAY_MS;
  }
  return now;
}

/**
 * The throttle as the shipper applies it. `take(bytes)` waits until the bucket and the quota
 * allow the bytes, re-reading the settings at least every second; `record(bytes)` books what
 * the server accepted against the quota.
 */
export class Throttle {
  private config: ThrottleConfig = { ...NO_THROTTLE };
  private configStamp = "";
  private tokens = 0;
  private refilledAt = Date.now();
  private readonly usage: Map<number, number>;

  constructor(
    private readonly stateDir: string,
    private readonly onWait: (why: string, ms: number) => void = () => {},
  ) {
    this.usage = readUsage(stateDir);
    this.reload();
    this.tokens = this.config.rate_bytes_per_second;
  }

  /** The settings, re-read when the file changed. */
  current(): ThrottleConfig {
    this.reload();
    return this.config;
  }

  private reload(): void {
    let stamp = "";
    try {
      const s = statSync(path.join(this.stateDir, CONFIG));
      stamp = `${s.mtimeMs}:${s.size}:${s.ino}`;
    } catch {
      stamp = "none";
    }
    if (stamp === this.configStamp) return;
    this.configStamp = stamp;
    const before = this.config.rate_bytes_per_second;
    try {
      this.config = readThrottleConfig(this.stateDir);
    } catch {
      return; // keep the last good settings
    }
    // A new rate starts with a full second of tokens, not with debt owed to an older one.
    if (this.config.rate_bytes_per_second !== before) {
      this.tokens = Math.min(Math.max(this.tokens, 0), this.config.rate_bytes_per_second);
      this.refilledAt = Date.now();
    }
  }

  /** The largest batch worth sending at once: a second of the rate (at least 4 KiB), else unbounded. */
  batchBytes(max: number): number {
    const rate = this.current().rate_bytes_per_second;
    return rate > 0 ? Math.min(max, Math.max(4096, rate)) : max;
  }

  async take(bytes: number, signal: AbortSignal): Promise<void> {
    for (;;) {
      this.reload();
      const { rate_bytes_per_second: rate, daily_quota_bytes: quota } = this.config;
      const now = Date.now();
      let waitMs = 0;
      let why = "";
      if (quota > 0) {
        const used = usedInLastDay(this.usage, now);
        // An event larger than the whole quota goes alone once the window is empty, not never.
        if (used > 0 && used + bytes > quota) {
          waitMs = quotaResume(this.usage, quota, bytes, now) - now;
          why = "daily quota";
        }
      }
      if (waitMs <= 0 && rate > 0) {
        this.tokens = Math.min(rate, this.tokens + ((now - this.refilledAt) / 1000) * rate);
        this.refilledAt = now;
        if (this.tokens < 0) {
          waitMs = Math.ceil((-this.tokens / rate) * 1000);
          why = "rate";
        }
      }
      if (waitMs <= 0) {
        if (rate > 0) this.tokens -= bytes;
        return;
      }
      this.onWait(why, waitMs);
      await sleep(Math.min(waitMs, 1000), undefined, { signal });
    }
  }

  record(bytes: number): void {
    const minute = Math.floor(Date.now() / MINUTE_MS);
    this.usage.set(minute, (this.usage.get(minute) ?? 0) + bytes);
    const since = Math.floor((Date.now() - DAY_MS) / MINUTE_MS);
    for (const m of this.usage.keys()) if (m <= since) this.usage.delete(m);
    if (this.config.daily_quota_bytes > 0) {
      try {
        writeFileAtomic(path.join(this.stateDir, USAGE), JSON.stringify({ minutes: [...this.usage] }) + "\n", 0o600);
      } catch {
        // The quota is then counted from memory until the next write succeeds.
      }
    }
  }
}
