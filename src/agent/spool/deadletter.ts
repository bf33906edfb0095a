import { mkdirSync, readdirSync, readFileSync, rmSync, statSync } from "node:fs";
import path from "node:path";
import { writeFileAtomic } from "../../files.js";

/**
 * An event set aside instead of blocking the rest: the server refused it past its retry budget,
 * or its frame was damaged on disk. `event` holds the event when it can be read at all; `raw`
 * (base64) the bytes of a damaged region when it cannot.
 */
export interface DeadletterEntry {
  id: string;
  reason: string;
  /** The RPC code of the last refusal (invalid_argument, ...), or "corrupt" for a damaged frame. */
  code: string;
  attempts: number;
  deadlettered_at: string;
  /** Sequence number of the frame the event was spooled in, when known. */
  seq?: number;
  spooled_at?: string;
  event?: Record<string, unknown>;
  raw?: string;
  raw_bytes?: number;
  /** Where a damaged region was found: segment file and byte offset. */
  source?: { segment: string; offset: number };
}

const ID = /^[a-z]+-[0-9a-z-]+$/;
/** Most bytes of a damaged region kept in its entry. */
const MAX_RAW_BYTES = 64 * 1024;

/** The deadletter list of a spool: one JSON file per entry, written atomically. */
export class Deadletter {
  constructor(readonly dir: string) {}

  put(entry: DeadletterEntry): void {
    mkdirSync(this.dir, { recursive: true, mode: 0o700 });
    writeFileAtomic(path.join(this.dir, `${entry.id}.json`), JSON.stringify(entry, null, 2) + "\n", 0o600);
  }

  /** A damaged region: the event in it if one can be read, else (part of) its bytes. */
  static rawEntry(region: Buffer, segment: string, offset: number, reason: string, event: Record<string, unknown> | undefined): DeadletterEntry {
    return {
      id: `bytes-${segment.replace(/\D/g, "")}-${offset}`,
      reason,
      code: "corrupt",
      attempts: 0,
      deadlettered_at: new Date().toISOString(),
      event,
      raw: event ? undefined : region.subarray(0, MAX_RAW_BYTES).toString("base64"),
      raw_bytes: region.length,
      source: { segment, offset },
    };
  }

  list(): DeadletterEntry[] {
    let names: string[];
    try {
      names = readdirSync(this.dir);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return [];
      throw err;
    }
    const entries: DeadletterEntry[] = [];
    for (const name of names) {
      if (!name.endsWith(".json")) continue;
      try {
        entries.push(JSON.parse(readFileSync(path.join(this.dir, name), "utf8")) as DeadletterEntry);
      } catch {
        // A half-written entry cannot exist (atomic writes); anything else unreadable is skipped.
      }
    }
    return entries.sort((a, b) => a.deadlettered_at.localeCompare(b.deadlettered_at) || a.id.localeCompare(b.id));
  }

  count(): number {
    try {
      return readdirSync(this.dir).filter((n) => n.endsWith(".json")).length;
    } catch {
      return 0;
    }
  }

  get(id: string): DeadletterEntry | undefined {
    if (!ID.test(id)) return undefined;
    try {
      return JSON.parse(readFileSync(path.join(this.dir, `${id}.json`), "utf8")) as DeadletterEntry;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
      throw err;
    }
  }

  remove(id: string): void {
    if (ID.test(id)) rmSync(path.join(this.dir, `${id}.json`), { force: true });
  }

  /** Removes every entry, or those set aside before `before`; returns how many went. */
  purge(before?: Date): number {
    let n = 0;
    for (const e of this.list()) {
      if (before && !(Date.parse(e.deadlettered_at) < before.getTime())) continue;
      this.remove(e.id);
      n++;
    }
    return n;
  }

  /** The size on disk of the list, for status. */
  bytes(): number {
    try {
      return readdirSync(this.dir).reduce((sum, n) => sum + statSync(path.join(this.dir, n)).size, 0);
    } catch {
      return 0;
    }
  }
}
