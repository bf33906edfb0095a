import { InvalidArgumentError } from "commander";

const DURATION_UNITS: Record<string, number> = {
  ns: 1e-6, us: 1e-3, "µs": 1e-3, ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000,
};

/** The one way durations are written on every command line. */
export const DURATION_HINT = "30s, 10m, 2h, 7d";

/** Parses a duration ("250ms", "30s", "10m", "2h", "7d", "1h30m", "0") into milliseconds. */
export function parseDuration(value: string): number {
  const text = value.trim();
  if (text === "0") return 0;
  const re = /(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h|d)/gy;
  let total = 0;
  let consumed = 0;
  for (let m = re.exec(text); m; m = re.exec(text)) {
    total += Number(m[1]) * DURATION_UNITS[m[2]];
    consumed = re.lastIndex;
  }
  if (consumed === 0 || consumed !== text.length) {
    const hint = /^\d+(\.\d+)?$/.test(text) ? ` (a unit is needed: ${text}s, ${text}m, ...)` : ` (examples: ${DURATION_HINT})`;
    throw new InvalidArgumentError(`"${value}" is not a duration${hint}`);
  }
  return total;
}

/** Parses a duration that must be at least one millisecond. */
export function parsePositiveDuration(value: string): number {
  const ms = parseDuration(value);
  if (ms < 1) throw new InvalidArgumentError(`"${value}" must be a duration of at least 1ms`);
  return ms;
}

/** Parses a duration into whole seconds (at least one). */
export function parseDurationSeconds(value: string): number {
  const ms = parseDuration(value);
  if (ms < 1000) throw new InvalidArgumentError(`"${value}" must be at least 1s`);
  return Math.round(ms / 1000);
}

/** A duration as the flags take it: "90s", "10m", "2h", "7d", "1h30m". */
export function formatDuration(ms: number): string {
  if (ms % 1000 !== 0 || ms === 0) return `${ms}ms`;
  let s = ms / 1000;
  const parts: string[] = [];
  for (const [unit, size] of [["d", 86400], ["h", 3600], ["m", 60], ["s", 1]] as const) {
    if (s >= size) {
      parts.push(`${Math.floor(s / size)}${unit}`);
      s %= size;
    }
  }
  return parts.join("");
}

const SIZE_UNITS: Record<string, number> = {
  "": 1, b: 1, kb: 1e3, mb: 1e6, gb: 1e9, tb: 1e12, kib: 1024, mib: 1024 ** 2, gib: 1024 ** 3, tib: 1024 ** 4,
  // As Kubernetes writes them.
  ki: 1024, mi: 1024 ** 2, gi: 1024 ** 3, ti: 1024 ** 4,
};

/** Parses a byte size ("0", "4096", "512MiB", "512Mi", "2GB") into bytes. */
export function parseSize(value: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*([a-z]*)$/i.exec(value.trim());
  const unit = m ? SIZE_UNITS[m[2].toLowerCase()] : undefined;
  if (!m || unit === undefined) throw new InvalidArgumentError(`"${value}" is not a size (examples: 0, 500MB, 2GiB)`);
  return Math.floor(Number(m[1]) * unit);
}

/** Parses an amount of CPU, in cores ("2", "0.5") or millicores ("1500m"), into millicores (at least 1). */
export function parseMillicores(value: string): number {
  const m = /^(\d+(?:\.\d+)?)(m?)$/.exec(value.trim());
  if (!m) throw new InvalidArgumentError(`"${value}" is not an amount of CPU (cores such as 2 or 0.5, or millicores such as 1500m)`);
  const fraction = m[1].split(".")[1] ?? "";
  const millis = m[2] === "m" ? Number(m[1]) : fraction.length <= 3 ? Math.round(Number(m[1]) * 1000) : NaN;
  if (!Number.isSafeInteger(millis) || millis < 1) throw new InvalidArgumentError(`"${value}" must be a whole number of millicores, at least 1m`);
  return millis;
}

/** Parses a positive whole number. */
export function parsePositiveInt(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n <= 0) throw new InvalidArgumentError(`"${value}" is not a positive whole number`);
  return n;
}

/** Parses a duration that is a whole number of days ("90d", "2160h") into days (at least one). */
export function parseDays(value: string): number {
  const ms = parseDuration(value);
  if (ms < 86_400_000 || ms % 86_400_000 !== 0) throw new InvalidArgumentError(`"${value}" is not a whole number of days (examples: 1d, 90d, 365d)`);
  return ms / 86_400_000;
}

/** Parses a duration that is a whole number of hours ("12h", "30d") into hours (at least one). */
export function parseHours(value: string): number {
  const ms = parseDuration(value);
  if (ms < 3_600_000 || ms % 3_600_000 !== 0) throw new InvalidArgumentError(`"${value}" is not a whole number of hours (examples: 1h, 12h, 30d)`);
  return ms / 3_600_000;
}

/** The one way times are written on every command line: RFC 3339, or a duration meaning that long ago. */
export const TIME_HINT = "RFC 3339 such as 2026-11-23T10:00:00Z, or a duration ago such as 24h, 7d";

/** Parses a time: RFC 3339 ("2026-11-23T10:00:00Z") or a duration ago ("24h", "7d"), into epoch milliseconds. */
export function parseTimeMs(value: string, nowMs = Date.now()): number {
  const text = value.trim();
  if (/^\d{4}-\d\d-\d\dT/.test(text)) {
    const ms = Date.parse(text);
    if (!Number.isNaN(ms)) return ms;
  } else if (/^\d/.test(text)) {
    try {
      return nowMs - parseDuration(text);
    } catch {
      // Reported below with both forms.
    }
  }
  throw new InvalidArgumentError(`"${value}" is not a time (expected ${TIME_HINT})`);
}

/** Parses a size in whole MiB ("64MiB", "1GiB"); a bare number is MiB, the older form. */
export function parseMiB(value: string): number {
  if (/^\d+$/.test(value.trim())) return parsePositiveInt(value.trim());
  const bytes = parseSize(value);
  if (bytes < 1024 ** 2 || bytes % 1024 ** 2 !== 0) throw new InvalidArgumentError(`"${value}" is not a whole number of MiB (examples: 10MiB, 1GiB)`);
  return bytes / 1024 ** 2;
}
