import { execFileSync } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";
import { hasProc, readProcStat } from "./process.js";

/** What one replica, or all of them, use. */
export interface Usage {
  /** CPU in thousandths of a core, averaged since the previous sample. */
  cpuMillis: number;
  /** Resident memory, summed over the processes (pages they share count once per process). */
  memoryBytes: number;
}

/** CPU is averaged over at least this long, so reports made close together do not read noise. */
const MIN_CPU_WINDOW_MS = 1000;

function getconf(name: string, fallback: number): number {
  if (!hasProc) return fallback;
  try {
    const n = Number(execFileSync("getconf", [name], { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] }).trim());
    return Number.isSafeInteger(n) && n > 0 ? n : fallback;
  } catch {
    return fallback;
  }
}

/**
 * Measures the replicas' use from /proc: every process of a replica's process group counts
 * (the replica, what it started, and its watchdog). CPU comes from the change of utime + stime
 * between samples, memory from the resident pages of /proc/PID/statm. A process that ends
 * between the listing and the read is left out; one that appeared since the previous sample
 * counts from the next. Off Linux everything reads 0. It keeps one number per live process of
 * the replicas, nothing of those that ended.
 */
export class UsageSampler {
  /** Clock ticks per second and the page size, asked of getconf once there is something to measure. */
  private units: { hz: number; pageBytes: number } | undefined;
  /** CPU ticks per process (`pid:starttime`) at the start of the current window. */
  private base = new Map<string, number>();
  private baseAt: number | undefined;
  private cpu = new Map<string, number>();

  constructor(private readonly now: () => number = () => performance.now()) {}

  /** Samples the groups (replica id → process group id) now. */
  sample(groups: ReadonlyMap<string, number>): { replicas: Map<string, Usage>; total: Usage } {
    const byGroup = new Map<number, string>();
    for (const [id, pgid] of groups) byGroup.set(pgid, id);
    const replicas = new Map<string, Usage>();
    for (const id of groups.keys()) replicas.set(id, { cpuMillis: 0, memoryBytes: 0 });
    const at = this.now();
    const newWindow = this.baseAt === undefined || at - this.baseAt >= MIN_CPU_WINDOW_MS;
    const ticks = new Map<string, number>();
    const seconds = this.baseAt === undefined ? 0 : (at - this.baseAt) / 1000;
    const cpuTicks = new Map<string, number>();
    if (hasProc && byGroup.size > 0) {
      this.units ??= { hz: getconf("CLK_TCK", 100), pageBytes: getconf("PAGESIZE", 4096) };
      for (const name of readdirSync("/proc")) {
        if (!/^\d+$/.test(name)) continue;
        const stat = readProcStat(Number(name));
        const id = stat && byGroup.get(stat.pgid);
        if (!stat || id === undefined || stat.state === "Z" || stat.state === "X") continue;
        const key = `${stat.pid}:${stat.startTime}`;
        ticks.set(key, stat.cpuTicks);
        const before = this.base.get(key);
        if (before !== undefined) cpuTicks.set(id, (cpuTicks.get(id) ?? 0) + Math.max(0, stat.cpuTicks - before));
        const u = replicas.get(id)!;
        u.memoryBytes += this.residentBytes(stat.pid);
      }
    }
    if (newWindow) {
      const cpu = new Map<string, number>();
      for (const id of groups.keys()) {
        const t = cpuTicks.get(id) ?? 0;
        cpu.set(id, seconds > 0 && this.units ? Math.round((t / this.units.hz / seconds) * 1000) : 0);
      }
      this.cpu = cpu;
      this.base = ticks;
      this.baseAt = at;
    }
    const total: Usage = { cpuMillis: 0, memoryBytes: 0 };
    for (const [id, u] of replicas) {
      u.cpuMillis = this.cpu.get(id) ?? 0;
      total.cpuMillis += u.cpuMillis;
      total.memoryBytes += u.memoryBytes;
    }
    return { replicas, total };
  }

  private residentBytes(pid: number): number {
    try {
      const pages = Number(readFileSync(`/proc/${pid}/statm`, "utf8").split(" ")[1]);
      return Number.isFinite(pages) ? pages * (this.units?.pageBytes ?? 4096) : 0;
    } catch {
      return 0;
    }
  }
}
