import { closeSync, fsyncSync, mkdirSync, openSync, readFileSync, writeSync } from "node:fs";
import path from "node:path";
import { writeFileAtomic } from "../../files.js";
import { validateReplicaSpec, type ReplicaSpec } from "./spec.js";

/** What the supervisor keeps of a replica on disk: enough to report it and to find its processes again. */
export interface ReplicaRecord {
  spec: ReplicaSpec;
  state: string;
  pid: number | null;
  /** Start time of the pid (/proc/PID/stat field 22): tells it from a later process of the same pid. */
  procStart?: string;
  /** The boot the pid belongs to. */
  bootId?: string;
  /** A random token in the replica's environment (AUTONOMY_REPLICA_INSTANCE), for what the leader left behind. */
  instance?: string;
  restarts: number;
  lastExitCode: number | null;
  lastSignal: string | null;
  startedAt: number | null;
  since: number;
  reason: string;
}

export interface CommandRecord {
  id: string;
  ok: boolean;
  message: string;
}

const REPLICAS = "replicas.json";
const COMMANDS = "commands.log";

export class UnreadableStateError extends Error {}

/**
 * The supervisor's files in its state dir:
 *
 * - `replicas.json`: every replica and its process (pid, start time, boot), replaced atomically
 *   (written, fsynced, renamed, directory fsynced) on every change of state.
 * - `commands.log`: one JSON line per command done, appended and fsynced before the command is
 *   answered, so an acknowledged command is known after kill -9. A torn last line (a crash in
 *   the middle of an append) is ignored. It keeps the newest `limit` ids: when the file holds
 *   half as many again, it is rewritten atomically with the newest `limit`.
 */
export class SupervisorStore {
  private fd: number | undefined;
  private lines = 0;

  private constructor(
    readonly dir: string,
    private readonly limit: number,
  ) {}

  static open(dir: string, limit: number): { store: SupervisorStore; replicas: ReplicaRecord[]; commands: CommandRecord[]; skipped: number } {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    const store = new SupervisorStore(dir, limit);
    const replicas = store.readReplicas();
    const { commands, skipped, lines, clean } = store.readCommands();
    store.lines = lines;
    // A torn or unreadable line, or a last line without its newline, would spoil the next append.
    if (!clean || lines > commands.length || commands.length > limit) store.compact(commands.slice(-limit));
    return { store, replicas, commands: commands.slice(-limit), skipped };
  }

  writeReplicas(replicas: ReplicaRecord[]): void {
    writeFileAtomic(path.join(this.dir, REPLICAS), JSON.stringify({ version: 1, replicas }) + "\n", 0o600);
  }

  /** Appends one command, durably; `all` gives the newest ids when the file is due to be rewritten. */
  appendCommand(record: CommandRecord, all: () => CommandRecord[]): void {
    if (this.lines >= this.limit + Math.ceil(this.limit / 2)) {
      this.compact([...all(), record].slice(-this.limit));
      return;
    }
    const fd = this.appendFd();
    const buf = Buffer.from(JSON.stringify(record) + "\n");
    for (let done = 0; done < buf.length; ) done += writeSync(fd, buf, done, buf.length - done);
    fsyncSync(fd);
    this.lines++;
  }

  close(): void {
    if (this.fd !== undefined) closeSync(this.fd);
    this.fd = undefined;
  }

  private appendFd(): number {
    if (this.fd === undefined) {
      this.fd = openSync(path.join(this.dir, COMMANDS), "a", 0o600);
      // The file may be new: its directory entry must be durable too.
      const dirFd = openSync(this.dir, "r");
      try {
        fsyncSync(dirFd);
      } finally {
        closeSync(dirFd);
      }
    }
    return this.fd;
  }

  private compact(records: CommandRecord[]): void {
    this.close();
    writeFileAtomic(path.join(this.dir, COMMANDS), records.map((r) => JSON.stringify(r) + "\n").join(""), 0o600);
    this.lines = records.length;
  }

  private readReplicas(): ReplicaRecord[] {
    const file = path.join(this.dir, REPLICAS);
    let text: string;
    try {
      text = readFileSync(file, "utf8");
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return [];
      throw err;
    }
    try {
      const parsed = JSON.parse(text) as { version?: unknown; replicas?: unknown };
      if (parsed.version !== 1 || !Array.isArray(parsed.replicas)) throw new Error("not a version 1 replica list");
      for (const r of parsed.replicas as ReplicaRecord[]) {
        validateReplicaSpec(r.spec);
        if (typeof r.state !== "string" || (r.pid !== null && !Number.isSafeInteger(r.pid))) throw new Error(`bad record of ${r.spec.replicaId}`);
      }
      return parsed.replicas as ReplicaRecord[];
    } catch (err) {
      throw new UnreadableStateError(`${file}: unreadable replica state (${(err as Error).message}); move it away to start afresh`);
    }
  }

  private readCommands(): { commands: CommandRecord[]; skipped: number; lines: number; clean: boolean } {
    let text: string;
    try {
      text = readFileSync(path.join(this.dir, COMMANDS), "utf8");
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return { commands: [], skipped: 0, lines: 0, clean: true };
      throw err;
    }
    const commands: CommandRecord[] = [];
    let skipped = 0;
    let lines = 0;
    for (const line of text.split("\n")) {
      if (line === "") continue;
      lines++;
      try {
        const r = JSON.parse(line) as CommandRecord;
        if (typeof r.id === "string" && typeof r.ok === "boolean" && typeof r.message === "string") commands.push({ id: r.id, ok: r.ok, message: r.message });
        else skipped++;
      } catch {
        skipped++;
      }
    }
    return { commands, skipped, lines, clean: text === "" || text.endsWith("\n") };
  }
}
