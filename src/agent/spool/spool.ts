import {
  closeSync,
  fdatasyncSync,
  fsyncSync,
  ftruncateSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  readSync,
  rmSync,
  statSync,
  writeSync,
} from "node:fs";
import path from "node:path";
import { writeFileAtomic } from "../../files.js";
import { Deadletter, type DeadletterEntry } from "./deadletter.js";
import { decodeFrame, encodeFrame, FRAME_OVERHEAD, HEADER_BYTES, MAGIC, MAX_PAYLOAD_BYTES, resync, salvage, TRAILER_BYTES } from "./frame.js";
import { lock } from "./lock.js";

/** What `--spool-full` does when an append would pass `--spool-max-bytes`. */
export type SpoolFullPolicy = "reject" | "drop-oldest";
export const SPOOL_FULL_POLICIES: readonly SpoolFullPolicy[] = ["reject", "drop-oldest"];
export const DEFAULT_SPOOL_MAX_BYTES = 256 * 1024 * 1024;
/** A segment is closed and a new one started once it holds this many bytes. */
export const DEFAULT_SEGMENT_BYTES = 8 * 1024 * 1024;

/** Where logs of the spool go: the agent's logger, or stderr lines for a CLI command. */
export type SpoolLog = (level: "info" | "warn" | "error", fields: Record<string, unknown>, msg: string) => void;

/** An append was refused: the spool is at its byte cap (policy reject) or its disk is full. Exit status 4. */
export class SpoolFullError extends Error {
  readonly exitCode = 4;
}

/** A position in the spool: a segment (by its first sequence number), a byte offset in it, the next frame's sequence number. */
export interface SpoolPosition {
  segment: number;
  offset: number;
  seq: number;
}

/** A spooled event read for shipping. */
export interface SpooledEvent {
  seq: number;
  spooledAt: number;
  payload: Buffer;
}

/** Events read from the cursor on, and the position after them (what to commit once they are acknowledged). */
export interface SpoolBatch {
  events: SpooledEvent[];
  bytes: number;
  end: SpoolPosition;
  /** Whether `end` lies past the cursor: there are events, or damage was passed over. */
  moved: boolean;
}

/** Counters of what the spool had to drop or set aside, kept across restarts (`spool status`). */
export interface SpoolCounters {
  torn_tails_total: number;
  torn_tail_bytes_total: number;
  corrupt_regions_total: number;
  corrupt_bytes_total: number;
  deadlettered_events_total: number;
  dropped_events_total: number;
}

const ZERO_COUNTERS: SpoolCounters = {
  torn_tails_total: 0,
  torn_tail_bytes_total: 0,
  corrupt_regions_total: 0,
  corrupt_bytes_total: 0,
  deadlettered_events_total: 0,
  dropped_events_total: 0,
};

export interface SpoolStatus {
  dir: string;
  segments: number;
  /** Bytes of all segment files on disk, and of the frames not yet acknowledged. */
  disk_bytes: number;
  unsent_bytes: number;
  unsent_frames: number;
  /** When the oldest unsent event was spooled, and its age in seconds. */
  oldest_unsent_at: string | null;
  oldest_unsent_age_seconds: number | null;
  cursor: SpoolPosition;
  next_seq: number;
  deadletter_entries: number;
  counters: SpoolCounters;
}

export interface SpoolOptions {
  /** The spool directory (`<state dir>/spool`). */
  dir: string;
  maxBytes?: number;
  full?: SpoolFullPolicy;
  segmentBytes?: number;
  log?: SpoolLog;
}

const SEGMENT = /^seg-(\d{20})\.log$/;
const segmentName = (base: number) => `seg-${String(base).padStart(20, "0")}.log`;
/** A fully acknowledged last segment at least this big is replaced by an empty one. */
const ROTATE_DRAINED_BYTES = 64 * 1024;
/**
 * A file of this size is kept beside the segments and given up when the disk is full, so the
 * shipper can always write the cursor that lets it delete what was sent.
 */
const RESERVE_BYTES = 64 * 1024;
/** Bytes read at once when streaming frames out of a segment. */
const READ_CHUNK = 256 * 1024;

function fsyncDir(dir: string): void {
  const fd = openSync(dir, "r");
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

function readAt(file: string, offset: number, length: number): Buffer {
  const fd = openSync(file, "r");
  try {
    const buf = Buffer.allocUnsafe(length);
    let got = 0;
    while (got < length) {
      const n = readSync(fd, buf, got, length - got, offset + got);
      if (n === 0) break;
      got += n;
    }
    return buf.subarray(0, got);
  } finally {
    closeSync(fd);
  }
}

/** Writes all of `buf`: a write on a filling disk may take only part of it, and only the next one fails. */
function writeAll(fd: number, buf: Buffer): void {
  for (let done = 0; done < buf.length; ) done += writeSync(fd, buf, done, buf.length - done);
}

const isNoSpace = (err: unknown) => ["ENOSPC", "EDQUOT"].includes((err as NodeJS.ErrnoException).code ?? "");

/**
 * The agent's offline event spool: append-only segment files of CRC32C-checked frames
 * (frame.ts), a cursor file replaced atomically, a deadletter directory. Every method that
 * touches the files runs under the spool lock (lock.ts), so any number of appenders and one
 * shipper can share it; appends are durable (fdatasync, and the directory fsynced for a new
 * segment) before they return.
 *
 * Damage never blocks the spool: a torn or corrupt tail of the last segment is cut back to the
 * last good frame (logged once, counted); a damaged region elsewhere goes to the deadletter
 * (the event, if its JSON survives, else the raw bytes) and reading resumes at the next good frame.
 */
export class Spool {
  readonly dir: string;
  readonly deadletter: Deadletter;
  readonly maxBytes: number;
  readonly full: SpoolFullPolicy;
  readonly segmentBytes: number;
  private readonly log: SpoolLog;

  constructor(opts: SpoolOptions) {
    this.dir = opts.dir;
    this.deadletter = new Deadletter(path.join(opts.dir, "deadletter"));
    this.maxBytes = opts.maxBytes ?? DEFAULT_SPOOL_MAX_BYTES;
    this.full = opts.full ?? "reject";
    this.segmentBytes = opts.segmentBytes ?? DEFAULT_SEGMENT_BYTES;
    this.log = opts.log ?? (() => {});
    mkdirSync(this.dir, { recursive: true, mode: 0o700 });
  }

  /** Runs `fn` holding the spool lock. */
  async locked<T>(fn: () => T): Promise<T> {
    const held = await lock(this.dir, "spool");
    try {
      return fn();
    } finally {
      await held.release();
    }
  }

  append(payloads: Buffer[]): Promise<{ first: number; last: number }> {
    return this.locked(() => this.appendLocked(payloads));
  }
  readBatch(maxEvents: number, maxBytes: number): Promise<SpoolBatch> {
    return this.locked(() => this.readBatchLocked(maxEvents, maxBytes));
  }
  commit(end: SpoolPosition): Promise<void> {
    return this.locked(() => this.commitLocked(end));
  }
  /** Sets an event aside that the server refused past its retry budget. */
  deadletterEvent(entry: DeadletterEntry): Promise<void> {
    return this.locked(() => {
      this.deadletter.put(entry);
      this.count({ deadlettered_events_total: 1 });
    });
  }
  status(): Promise<SpoolStatus> {
    return this.locked(() => this.statusLocked());
  }
  /** Checks the tail of the last segment (and repairs it); what `edgectl run` does at start. */
  check(): Promise<void> {
    return this.locked(() => void this.tailLocked());
  }

  // ---- files

  private segments(): number[] {
    return readdirSync(this.dir)
      .map((n) => SEGMENT.exec(n))
      .filter((m): m is RegExpExecArray => m !== null)
      .map((m) => Number(m[1]))
      .sort((a, b) => a - b);
  }

  private file(base: number): string {
    return path.join(this.dir, segmentName(base));
  }

  private size(base: number): number {
    try {
      return statSync(this.file(base)).size;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return 0;
      throw err;
    }
  }

  private readCursor(): SpoolPosition | undefined {
    try {
      const c = JSON.parse(readFileSync(path.join(this.dir, "cursor.json"), "utf8")) as SpoolPosition;
      if ([c.segment, c.offset, c.seq].every((v) => Number.isSafeInteger(v) && v >= 0)) return c;
    } catch {
      // Missing or unreadable (it is written atomically, so only by hand): start from the oldest segment.
    }
    return undefined;
  }

  private writeCursor(c: SpoolPosition): void {
    const write = () => writeFileAtomic(path.join(this.dir, "cursor.json"), JSON.stringify(c) + "\n", 0o600);
    try {
      write();
    } catch (err) {
      if (!isNoSpace(err)) throw err;
      rmSync(path.join(this.dir, `cursor.json.tmp-${process.pid}`), { force: true });
      rmSync(path.join(this.dir, "reserve"), { force: true });
      this.log("warn", {}, "spool: the disk is full; gave up the reserve to write the cursor");
      write();
    }
  }

  /** Makes the reserve file when it is missing; a disk without room for it is a full spool. */
  private ensureReserve(): void {
    const file = path.join(this.dir, "reserve");
    try {
      if (statSync(file).size === RESERVE_BYTES) return;
    } catch {
      // missing: make it
    }
    const fd = openSync(file, "w", 0o600);
    try {
      writeAll(fd, Buffer.alloc(RESERVE_BYTES));
      fdatasyncSync(fd);
    } catch (err) {
      closeSync(fd);
      rmSync(file, { force: true });
      if (isNoSpace(err)) throw new SpoolFullError(`spool full: no space left on the disk of ${this.dir}; the events were not spooled`);
      throw err;
    }
    closeSync(fd);
  }

  counters(): SpoolCounters {
    try {
      return { ...ZERO_COUNTERS, ...(JSON.parse(readFileSync(path.join(this.dir, "counters.json"), "utf8")) as SpoolCounters) };
    } catch {
      return { ...ZERO_COUNTERS };
    }
  }

  private count(add: Partial<SpoolCounters>): void {
    const c = this.counters();
    for (const [k, v] of Object.entries(add)) c[k as keyof SpoolCounters] += v;
    try {
      writeFileAtomic(path.join(this.dir, "counters.json"), JSON.stringify(c) + "\n", 0o600);
    } catch (err) {
      rmSync(path.join(this.dir, `counters.json.tmp-${process.pid}`), { force: true });
      this.log("warn", { err: (err as Error).message }, "spool: cannot update the counters");
    }
  }

  /** The cursor, resolved against the segments that exist (a segment behind it may be gone already). */
  private position(segs: number[]): SpoolPosition {
    const c = this.readCursor();
    if (segs.length === 0) return { segment: c?.seq ?? 1, offset: 0, seq: c?.seq ?? 1 };
    if (c === undefined) return { segment: segs[0], offset: 0, seq: segs[0] };
    const at = segs.find((s) => s >= c.segment);
    if (at === undefined) {
      const last = segs[segs.length - 1];
      return { segment: last, offset: this.size(last), seq: Math.max(c.seq, last) };
    }
    if (at !== c.segment) return { segment: at, offset: 0, seq: at };
    return { segment: at, offset: Math.min(c.offset, this.size(at)), seq: c.seq };
  }

  /**
   * Checks the last segment's tail in constant time (the trailer names the last frame's start)
   * and, when it does not check out, walks the segment: a damaged region followed by good frames
   * is left for the reader; a damaged end is cut back to the last good frame. Returns the last
   * segment, its size and the next sequence number.
   */
  private tailLocked(): { base: number; size: number; nextSeq: number } | undefined {
    const segs = this.segments();
    if (segs.length === 0) return undefined;
    const base = segs[segs.length - 1];
    const file = this.file(base);
    const size = this.size(base);
    if (size === 0) return { base, size, nextSeq: base };
    if (size >= FRAME_OVERHEAD) {
      const length = readAt(file, size - TRAILER_BYTES, TRAILER_BYTES).readUInt32BE(0);
      if (length >= FRAME_OVERHEAD && length <= size) {
        const frame = decodeFrame(readAt(file, size - length, length), 0);
        if (typeof frame === "object") return { base, size, nextSeq: frame.seq + 1 };
      }
    }
    // The slow path, after a crash mid-append or damage: read the segment and find its last good frame.
    const buf = readFileSync(file);
    let lastGood = -1;
    let lastEnd = 0;
    let nextSeq = base;
    for (let p = 0; p < buf.length; ) {
      const d = decodeFrame(buf, p);
      if (typeof d === "object") {
        lastGood = p;
        lastEnd = p + d.length;
        nextSeq = d.seq + 1;
        p += d.length;
        continue;
      }
      const q = resync(buf, p + 1);
      if (q < 0) break;
      p = q;
    }
    if (lastEnd < buf.length) this.cutTail(base, lastEnd, buf.subarray(lastEnd), lastGood < 0 ? base - 1 : nextSeq - 1);
    return { base, size: lastEnd, nextSeq };
  }

  private cutTail(base: number, at: number, bytes: Buffer, lastSeq: number): void {
    const fd = openSync(this.file(base), "r+");
    try {
      ftruncateSync(fd, at);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    // Torn: the start of a frame whose end never reached the disk (a crash mid-append). Else corrupt.
    const magic = Buffer.alloc(4);
    magic.writeUInt32BE(MAGIC);
    const torn =
      bytes.length < 8
        ? magic.subarray(0, bytes.length).equals(bytes)
        : bytes.readUInt32BE(0) === MAGIC && bytes.readUInt32BE(4) > 0 && bytes.length < FRAME_OVERHEAD + bytes.readUInt32BE(4);
    const kind = torn ? "torn" : "corrupt";
    this.log(
      "warn",
      { segment: segmentName(base), offset: at, dropped_bytes: bytes.length, last_good_seq: lastSeq, kind },
      `spool: cut a ${kind} tail of ${bytes.length} bytes off ${segmentName(base)} back to the last good frame`,
    );
    this.count({ torn_tails_total: 1, torn_tail_bytes_total: bytes.length });
  }

  // ---- appending

  /** Unsent bytes: from the cursor to the end of the last segment. */
  private unsentBytes(segs: number[], at: SpoolPosition): number {
    let total = 0;
    for (const s of segs) if (s >= at.segment) total += this.size(s);
    return total - (segs.includes(at.segment) ? at.offset : 0);
  }

  appendLocked(payloads: Buffer[]): { first: number; last: number } {
    if (payloads.length === 0) throw new Error("nothing to append");
    for (const p of payloads) {
      if (p.length === 0 || p.length > MAX_PAYLOAD_BYTES) throw new Error(`an event must be 1 to ${MAX_PAYLOAD_BYTES} bytes of JSON, got ${p.length}`);
    }
    const incoming = payloads.reduce((n, p) => n + p.length + FRAME_OVERHEAD, 0);
    if (incoming > this.maxBytes) {
      throw new SpoolFullError(`spool full: ${incoming} bytes of events do not fit in --spool-max-bytes ${this.maxBytes}`);
    }
    this.ensureReserve();
    let tail = this.tailLocked();
    const segs = this.segments();
    const cursor = this.position(segs);
    const unsent = this.unsentBytes(segs, cursor);
    if (unsent + incoming > this.maxBytes) {
      if (this.full === "reject") {
        throw new SpoolFullError(
          `spool full: ${unsent} unsent bytes + ${incoming} new would pass --spool-max-bytes ${this.maxBytes} (--spool-full=reject); ` +
            "the events were not spooled",
        );
      }
      this.dropOldestLocked(unsent + incoming - this.maxBytes);
      tail = this.tailLocked();
    }
    let seq = tail?.nextSeq ?? cursor.seq;
    const first = seq;
    const now = Date.now();
    // Frames go into the last segment until it passes the segment size, then into new ones.
    const touched: { base: number; fd: number; from: number; created: boolean }[] = [];
    let current = tail && tail.size < this.segmentBytes ? { base: tail.base, size: tail.size } : undefined;
    let pending: Buffer[] = [];
    let pendingBytes = 0;
    const flush = () => {
      if (pending.length === 0 || current === undefined) return;
      let t = touched.find((x) => x.base === current!.base);
      if (!t) {
        const created = !segs.includes(current.base);
        t = { base: current.base, fd: openSync(this.file(current.base), "a", 0o600), from: current.size, created };
        touched.push(t);
      }
      writeAll(t.fd, pending.length === 1 ? pending[0] : Buffer.concat(pending, pendingBytes));
      current.size += pendingBytes;
      pending = [];
      pendingBytes = 0;
    };
    try {
      for (const p of payloads) {
        const frame = encodeFrame(seq, now, p);
        if (current === undefined || (current.size + pendingBytes > 0 && current.size + pendingBytes + frame.length > this.segmentBytes)) {
          flush();
          current = { base: seq, size: 0 };
        }
        pending.push(frame);
        pendingBytes += frame.length;
        seq++;
      }
      flush();
      for (const t of touched) fdatasyncSync(t.fd);
      if (touched.some((t) => t.created)) fsyncDir(this.dir);
    } catch (err) {
      // Leave the spool as it was: cut what was written off again.
      for (const t of touched) {
        try {
          if (t.created) rmSync(this.file(t.base), { force: true });
          else ftruncateSync(t.fd, t.from);
        } catch {
          // The tail check of the next append cuts whatever is left.
        }
      }
      if (isNoSpace(err)) throw new SpoolFullError(`spool full: no space left on the disk of ${this.dir}; the events were not spooled`);
      throw err;
    } finally {
      for (const t of touched) closeSync(t.fd);
    }
    return { first, last: seq - 1 };
  }

  /** Policy drop-oldest: moves the cursor past the oldest unsent frames until `need` bytes are free. */
  private dropOldestLocked(need: number): void {
    const segs = this.segments();
    let at = this.position(segs);
    const firstSeq = at.seq;
    let freed = 0;
    while (freed < need) {
      const i = segs.indexOf(at.segment);
      if (i < 0) break;
      const size = this.size(at.segment);
      const isLast = i === segs.length - 1;
      if (!isLast && size - at.offset <= need - freed) {
        freed += size - at.offset;
        at = { segment: segs[i + 1], offset: 0, seq: segs[i + 1] };
        continue;
      }
      // Part of a segment: hop frame by frame (headers only).
      const file = this.file(at.segment);
      let advanced = false;
      while (freed < need && at.offset < size) {
        const head = readAt(file, at.offset, HEADER_BYTES);
        if (head.length < HEADER_BYTES || head.readUInt32BE(0) !== MAGIC) break;
        const length = FRAME_OVERHEAD + head.readUInt32BE(4);
        freed += length;
        at = { segment: at.segment, offset: at.offset + length, seq: Number(head.readBigUInt64BE(8)) + 1 };
        advanced = true;
      }
      if (!advanced || at.offset >= size) {
        if (isLast) break;
        at = { segment: segs[i + 1], offset: 0, seq: segs[i + 1] };
      }
    }
    const dropped = at.seq - firstSeq;
    this.log(
      "warn",
      { dropped_events: dropped, first_seq: firstSeq, last_seq: at.seq - 1, dropped_bytes: freed },
      `spool full (--spool-full=drop-oldest): dropped the ${dropped} oldest unsent events, seq ${firstSeq} to ${at.seq - 1}`,
    );
    this.count({ dropped_events_total: dropped });
    this.commitLocked(at);
  }

  // ---- reading and acknowledging

  /**
   * Reads up to `maxEvents` frames and about `maxBytes` of payload from the cursor on (at least
   * one frame when any is there), within one segment. Damaged regions met on the way are moved
   * to the deadletter, or cut off when they are the tail.
   */
  readBatchLocked(maxEvents: number, maxBytes: number): SpoolBatch {
    const segs = this.segments();
    const start = this.position(segs);
    let at = start;
    const events: SpooledEvent[] = [];
    let bytes = 0;
    const done = (): SpoolBatch => ({ events, bytes, end: at, moved: at.segment !== start.segment || at.offset !== start.offset });
    for (;;) {
      const i = segs.indexOf(at.segment);
      if (i < 0) return done();
      const isLast = i === segs.length - 1;
      const size = this.size(at.segment);
      if (at.offset >= size) {
        if (isLast || events.length > 0) return done();
        at = { segment: segs[i + 1], offset: 0, seq: Math.max(at.seq, segs[i + 1]) };
        continue;
      }
      const file = this.file(at.segment);
      let chunkStart = at.offset;
      let buf = readAt(file, chunkStart, Math.min(size - chunkStart, READ_CHUNK));
      while (at.offset < size) {
        if (events.length >= maxEvents) return done();
        const d = decodeFrame(buf, at.offset - chunkStart);
        if (typeof d === "object") {
          if (events.length > 0 && bytes + d.payload.length > maxBytes) return done();
          events.push({ seq: d.seq, spooledAt: d.spooledAt, payload: Buffer.from(d.payload) });
          bytes += d.payload.length;
          at = { segment: at.segment, offset: at.offset + d.length, seq: d.seq + 1 };
          continue;
        }
        if (d === "incomplete" && chunkStart + buf.length < size) {
          // The frame runs past this chunk: read on from it.
          chunkStart = at.offset;
          buf = readAt(file, chunkStart, Math.min(size - chunkStart, READ_CHUNK + MAX_PAYLOAD_BYTES + FRAME_OVERHEAD));
          continue;
        }
        // Damage, or a frame cut off by the end of the file: find the next good frame in the rest of the segment.
        const rest = readAt(file, at.offset, size - at.offset);
        const q = resync(rest, 1);
        if (q < 0 && isLast) {
          this.cutTail(at.segment, at.offset, rest, at.seq - 1);
          return done();
        }
        this.setAside(q < 0 ? rest : rest.subarray(0, q), at.segment, at.offset);
        if (q < 0) {
          at = { ...at, offset: size };
          break;
        }
        at = { ...at, offset: at.offset + q };
        chunkStart = at.offset;
        buf = readAt(file, chunkStart, Math.min(size - chunkStart, READ_CHUNK));
      }
    }
  }

  /** A damaged region in the middle of the spool: to the deadletter, logged and counted. */
  private setAside(region: Buffer, base: number, offset: number): void {
    const value = salvage(region);
    const why =
      region.length >= 8 && region.readUInt32BE(0) === MAGIC && region.readUInt32BE(4) === 0
        ? "frame with a zero length prefix"
        : region.length >= 4 && region.readUInt32BE(0) === MAGIC
          ? "frame failed its CRC32C check"
          : "unreadable bytes between frames";
    const entry = Deadletter.rawEntry(region, segmentName(base), offset, `${why} (${region.length} bytes)`, value);
    if (value && region.length >= HEADER_BYTES && region.readUInt32BE(0) === MAGIC) {
      entry.seq = Number(region.readBigUInt64BE(8));
    }
    this.deadletter.put(entry);
    this.log(
      "warn",
      { segment: segmentName(base), offset, bytes: region.length, deadletter_id: entry.id, readable: value !== undefined },
      `spool: moved a damaged region to the deadletter (${why})`,
    );
    this.count({ corrupt_regions_total: 1, corrupt_bytes_total: region.length, deadlettered_events_total: value ? 1 : 0 });
  }

  /**
   * Moves the cursor to `end` (never back: drop-oldest may have passed it), deletes the segments
   * wholly behind it, and replaces a drained last segment by an empty one, so what is acknowledged
   * leaves the disk. Segments go before the cursor is written: on a full disk that frees the room
   * the cursor file needs, and a cursor naming a deleted segment resolves to the next one.
   */
  commitLocked(end: SpoolPosition): void {
    const segs = this.segments();
    const now = this.position(segs);
    const ahead = end.segment > now.segment || (end.segment === now.segment && end.offset > now.offset);
    let at = ahead ? end : now;
    for (const s of segs) if (s < at.segment) rmSync(this.file(s), { force: true });
    const last = segs[segs.length - 1];
    if (last !== undefined && at.segment === last && at.offset >= ROTATE_DRAINED_BYTES && at.offset >= this.size(last)) {
      const fd = openSync(this.file(at.seq), "a", 0o600);
      closeSync(fd);
      if (at.seq !== last) rmSync(this.file(last), { force: true });
      fsyncDir(this.dir);
      at = { segment: at.seq, offset: 0, seq: at.seq };
    } else if (segs.some((s) => s < at.segment)) fsyncDir(this.dir);
    this.writeCursor(at);
  }

  // ---- status

  statusLocked(): SpoolStatus {
    const tail = this.tailLocked();
    const segs = this.segments();
    const cursor = this.position(segs);
    const last = segs[segs.length - 1];
    const nextSeq = tail?.nextSeq ?? cursor.seq;
    let oldest: number | undefined;
    if (segs.includes(cursor.segment)) {
      const head = readAt(this.file(cursor.segment), cursor.offset, HEADER_BYTES);
      if (head.length === HEADER_BYTES && head.readUInt32BE(0) === MAGIC) oldest = Number(head.readBigUInt64BE(16));
      else if (last !== cursor.segment) {
        const next = segs[segs.indexOf(cursor.segment) + 1];
        const h = readAt(this.file(next), 0, HEADER_BYTES);
        if (h.length === HEADER_BYTES && h.readUInt32BE(0) === MAGIC) oldest = Number(h.readBigUInt64BE(16));
      }
    }
    return {
      dir: this.dir,
      segments: segs.length,
      disk_bytes: segs.reduce((n, s) => n + this.size(s), 0),
      unsent_bytes: this.unsentBytes(segs, cursor),
      unsent_frames: Math.max(0, nextSeq - cursor.seq),
      oldest_unsent_at: oldest === undefined ? null : new Date(oldest).toISOString(),
      oldest_unsent_age_seconds: oldest === undefined ? null : Math.max(0, Math.round((Date.now() - oldest) / 1000)),
      cursor,
      next_seq: nextSeq,
      deadletter_entries: this.deadletter.count(),
      counters: this.counters(),
    };
  }
}

/** The spool of a state dir. */
export function spoolDir(stateDir: string): string {
  return path.join(stateDir, "spool");
}
