import { closeSync, mkdtempSync, openSync, readdirSync, readFileSync, rmSync, statSync, truncateSync, writeSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { crc32c } from "../src/agent/spool/crc32c.js";
import { normalizeEvent, parseEventLines } from "../src/agent/spool/events.js";
import { decodeFrame, encodeFrame, FRAME_OVERHEAD, HEADER_BYTES, salvage } from "../src/agent/spool/frame.js";
import { Spool, SpoolFullError, type SpoolLog } from "../src/agent/spool/spool.js";
import { formatBytes, parseRate, readThrottleConfig, Throttle, throttleState, writeThrottleConfig } from "../src/agent/throttle.js";

describe("crc32c", () => {
  // Known vectors: the check value of the Castagnoli CRC and the test patterns of RFC 3720 (iSCSI), B.4.
  it.each([
    ["123456789", Buffer.from("123456789"), 0xe3069283],
    ["32 zero bytes", Buffer.alloc(32, 0), 0x8a9136aa],
    ["32 bytes of 0xff", Buffer.alloc(32, 0xff), 0x62a8ab43],
    ["32 incrementing bytes", Buffer.from(Array.from({ length: 32 }, (_, i) => i)), 0x46dd794e],
    ["32 decrementing bytes", Buffer.from(Array.from({ length: 32 }, (_, i) => 31 - i)), 0x113fdb5c],
    ["empty", Buffer.alloc(0), 0],
  ])("%s", (_name, data, expected) => {
    expect(crc32c(data)).toBe(expected);
  });

  it("continues across pieces as over the whole", () => {
    const data = Buffer.from(Array.from({ length: 1000 }, (_, i) => (i * 7919) & 0xff));
    for (const cut of [0, 1, 7, 8, 9, 500, 999]) {
      expect(crc32c(data, crc32c(data, 0, 0, cut), cut, data.length)).toBe(crc32c(data));
    }
  });
});

describe("frames", () => {
  it("round-trip, and every flipped bit of a frame is caught", () => {
    const payload = Buffer.from('{"event_id":"e-1","event_type":"t"}');
    const frame = encodeFrame(42, 1_700_000_000_000, payload);
    const d = decodeFrame(frame, 0);
    expect(typeof d === "object" && [d.seq, d.spooledAt, d.payload.toString(), d.length]).toEqual([42, 1_700_000_000_000, payload.toString(), frame.length]);
    for (let byte = 0; byte < frame.length; byte++) {
      for (let bit = 0; bit < 8; bit++) {
        const bad = Buffer.from(frame);
        bad[byte] ^= 1 << bit;
        expect(decodeFrame(bad, 0), `byte ${byte} bit ${bit}`).not.toMatchObject({ seq: 42 });
      }
    }
    expect(decodeFrame(frame.subarray(0, frame.length - 1), 0)).toBe("incomplete");
  });

  it("salvage finds the event of a frame whose length prefix is zeroed, whatever bytes its header holds", () => {
    const payload = Buffer.from('{"event_id":"e-7","event_type":"t","payload":{"x":"}"}}');
    // Brace bytes (0x7b, and 0x7b 0x22 as `{"`) in the sequence number and the time: none is where the payload starts.
    for (const [seq, at] of [[0x7b, 1_700_000_000_000], [0x7b7b7b7b, 0x7b_7b7b_7b7b], [0x7b22_7b22, 0x7b22_7b22_7b], [1, 1_700_000_000_123]] as const) {
      const frame = encodeFrame(seq, at, payload);
      frame.writeUInt32BE(0, 4);
      expect(salvage(frame), `seq ${seq}`).toEqual(JSON.parse(payload.toString()));
      expect(salvage(Buffer.concat([frame.subarray(4), Buffer.from([0x7b, 0])])), `headless, seq ${seq}`).toEqual(JSON.parse(payload.toString()));
    }
    expect(salvage(Buffer.from("no json here"))).toBeUndefined();
  });
});

describe("event lines", () => {
  it("fill in event_id, node_id and timestamp, and refuse a bad line naming it", () => {
    const [a] = parseEventLines('\n{"event_type":"boot","payload":{"k":1}}\n', { nodeId: "n-1" });
    const e = JSON.parse(a.toString());
    expect(e).toMatchObject({ event_type: "boot", node_id: "n-1", payload: { k: 1 } });
    expect(e.event_id).toMatch(/^[0-9a-f-]{36}$/);
    expect(Date.parse(e.timestamp)).toBeGreaterThan(0);
    expect(() => parseEventLines('{"event_type":"a"}\n{"payload":{}}', { nodeId: "n" })).toThrow("line 2: event_type: required");
    expect(() => parseEventLines("{", { nodeId: "n" })).toThrow("line 1: not valid JSON");
    expect(() => parseEventLines('{"event_type":"a"}', {})).toThrow(/line 1: node_id: required/);
    expect(() => normalizeEvent({ event_type: "x".repeat(257), node_id: "n" }, {}, "events[0]")).toThrow("events[0]: event_type: longer than 256 bytes");
  });
});

describe("the spool", () => {
  let dir: string;
  let logs: { level: string; fields: Record<string, unknown>; msg: string }[];
  const log: SpoolLog = (level, fields, msg) => logs.push({ level, fields, msg });
  const open = (opts: Partial<ConstructorParameters<typeof Spool>[0]> = {}) => new Spool({ dir, log, ...opts });
  const payload = (i: number, pad = 40) => Buffer.from(JSON.stringify({ event_id: `e-${i}`, event_type: "t", node_id: "n", pad: "a".repeat(pad) }));
  const ids = (events: { payload: Buffer }[]) => events.map((e) => JSON.parse(e.payload.toString()).event_id as string);
  const segments = () => readdirSync(dir).filter((n) => n.startsWith("seg-")).sort();
  /** Reads and acknowledges everything; returns the event ids in order. */
  const drain = async (spool: Spool) => {
    const out: string[] = [];
    for (;;) {
      const b = await spool.readBatch(7, 1 << 20);
      if (!b.moved) return out;
      out.push(...ids(b.events));
      await spool.commit(b.end);
    }
  };
  /** Frame offsets in a segment file. */
  const frameOffsets = (file: string) => {
    const buf = readFileSync(file);
    const offsets: number[] = [];
    for (let p = 0; p < buf.length; p += FRAME_OVERHEAD + buf.readUInt32BE(p + 4)) offsets.push(p);
    return offsets;
  };
  const patch = (file: string, offset: number, bytes: Buffer) => {
    const fd = openSync(file, "r+");
    writeSync(fd, bytes, 0, bytes.length, offset);
    closeSync(fd);
  };

  beforeEach(() => {
    dir = mkdtempSync(path.join(os.tmpdir(), "ao-spool-"));
    logs = [];
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it("reads back in order across segments, deletes what is acknowledged and replaces a drained last segment", async () => {
    const spool = open({ segmentBytes: 400 });
    for (let i = 0; i < 10; i++) await spool.append([payload(3 * i), payload(3 * i + 1), payload(3 * i + 2)]);
    expect(segments().length).toBeGreaterThan(5);
    const s = await spool.status();
    expect([s.unsent_frames, s.next_seq, s.cursor.seq]).toEqual([30, 31, 1]);
    expect(await drain(spool)).toEqual(Array.from({ length: 30 }, (_, i) => `e-${i}`));
    expect(segments().length).toBe(1);
    const after = await spool.status();
    expect([after.unsent_frames, after.unsent_bytes, after.next_seq]).toEqual([0, 0, 31]);
    // Numbering goes on after a drain.
    expect(await spool.append([payload(99)])).toEqual({ first: 31, last: 31 });
  });

  it("removes a drained segment from the disk once it is big enough to matter", async () => {
    const spool = open();
    const big = Array.from({ length: 400 }, (_, i) => payload(i, 200));
    await spool.append(big);
    expect(await drain(spool)).toHaveLength(400);
    expect(segments().map((n) => statSync(path.join(dir, n)).size)).toEqual([0]);
  });

  it("gives concurrent appenders distinct, contiguous sequence numbers and loses nothing", async () => {
    const writers = Array.from({ length: 4 }, () => open({ segmentBytes: 4096 }));
    const results = await Promise.all(
      writers.flatMap((w, k) => Array.from({ length: 10 }, (_, j) => w.append([payload(k * 1000 + j * 2), payload(k * 1000 + j * 2 + 1)]))),
    );
    const seqs = results.flatMap((r) => [r.first, r.last]).sort((a, b) => a - b);
    expect(seqs).toEqual(Array.from({ length: 80 }, (_, i) => i + 1));
    expect(new Set(await drain(open())).size).toBe(80);
  });

  it("cuts a torn tail back to the last good frame, logs it once and counts it", async () => {
    const spool = open();
    await spool.append([payload(1), payload(2), payload(3)]);
    const file = path.join(dir, segments()[0]);
    truncateSync(file, statSync(file).size - 10);
    await spool.append([payload(4)]);
    await spool.append([payload(5)]);
    expect(logs.filter((l) => /tail/.test(l.msg))).toMatchObject([{ level: "warn", fields: { kind: "torn", dropped_bytes: statSync(file).size > 0 ? expect.any(Number) : 0, last_good_seq: 2 } }]);
    expect(await drain(spool)).toEqual(["e-1", "e-2", "e-4", "e-5"]);
    expect((await spool.status()).counters).toMatchObject({ torn_tails_total: 1 });
  });

  it("sets a frame with a flipped bit mid-segment aside in the deadletter and reads on", async () => {
    const spool = open();
    await spool.append(Array.from({ length: 5 }, (_, i) => payload(i)));
    const file = path.join(dir, segments()[0]);
    const at = frameOffsets(file)[2] + HEADER_BYTES + 60; // inside the "pad" string of e-2
    const byte = readFileSync(file)[at];
    patch(file, at, Buffer.from([byte ^ 0x02]));
    expect(await drain(spool)).toEqual(["e-0", "e-1", "e-3", "e-4"]);
    const [entry] = spool.deadletter.list();
    expect(entry).toMatchObject({ code: "corrupt", event: { event_id: "e-2" }, seq: 3 });
    expect(entry.reason).toMatch(/CRC32C/);
    expect((await spool.status()).counters).toMatchObject({ corrupt_regions_total: 1, deadlettered_events_total: 1 });
  });

  it("sets a frame with a zero length prefix aside, and unreadable bytes as raw bytes", async () => {
    const spool = open();
    await spool.append(Array.from({ length: 6 }, (_, i) => payload(i)));
    const file = path.join(dir, segments()[0]);
    const offsets = frameOffsets(file);
    patch(file, offsets[1] + 4, Buffer.alloc(4, 0));
    patch(file, offsets[4], Buffer.alloc(offsets[5] - offsets[4], 0x5a));
    expect(await drain(spool)).toEqual(["e-0", "e-2", "e-3", "e-5"]);
    const entries = spool.deadletter.list().sort((a, b) => a.id.localeCompare(b.id, undefined, { numeric: true }));
    expect(entries.map((e) => [e.reason.replace(/ \(\d+ bytes\)/, ""), e.event?.event_id ?? null, e.raw_bytes])).toEqual([
      ["frame with a zero length prefix", "e-1", offsets[2] - offsets[1]],
      ["unreadable bytes between frames", null, offsets[5] - offsets[4]],
    ]);
    expect(Buffer.from(entries[1].raw!, "base64")).toEqual(Buffer.alloc(offsets[5] - offsets[4], 0x5a));
  });

  it("refuses an append past the cap with policy reject, and drops the oldest with drop-oldest", async () => {
    const frame = payload(0).length + FRAME_OVERHEAD;
    const reject = open({ maxBytes: frame * 10 + 10 });
    await reject.append(Array.from({ length: 10 }, (_, i) => payload(i)));
    await expect(reject.append([payload(10)])).rejects.toThrow(SpoolFullError);
    await expect(reject.append([payload(10)])).rejects.toThrow(/spool full: .*--spool-full=reject/);
    const drop = open({ maxBytes: frame * 10 + 10, full: "drop-oldest" });
    await drop.append([payload(10), payload(11), payload(12)]);
    expect(logs.find((l) => /drop-oldest/.test(l.msg))?.fields).toMatchObject({ dropped_events: 3, first_seq: 1, last_seq: 3 });
    expect(await drain(drop)).toEqual(Array.from({ length: 10 }, (_, i) => `e-${i + 3}`));
    expect((await drop.status()).counters.dropped_events_total).toBe(3);
  });
});

describe("the throttle", () => {
  let dir: string;
  beforeEach(() => (dir = mkdtempSync(path.join(os.tmpdir(), "ao-throttle-"))));
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it.each([
    ["64KiB/s", 65536],
    ["1MB/s", 1_000_000],
    ["4096", 4096],
    ["off", 0],
    ["0", 0],
  ])("parses the rate %s", (text, bytes) => expect(parseRate(text)).toBe(bytes));

  it("refuses a rate that is not a size", () => expect(() => parseRate("fast")).toThrow('--rate: "fast" is not a size'));

  it("keeps its settings in the state dir and applies a change without a restart", async () => {
    const t = new Throttle(dir);
    expect(t.batchBytes(1 << 20)).toBe(1 << 20);
    writeThrottleConfig(dir, { rate_bytes_per_second: 65536, daily_quota_bytes: 0 });
    expect(t.batchBytes(1 << 20)).toBe(65536);
    expect(readThrottleConfig(dir)).toEqual({ rate_bytes_per_second: 65536, daily_quota_bytes: 0 });
    expect(formatBytes(65536)).toBe("64KiB");
  });

  it("books shipped bytes against the daily quota and says when an exhausted one resumes", async () => {
    writeThrottleConfig(dir, { rate_bytes_per_second: 0, daily_quota_bytes: 1000 });
    const t = new Throttle(dir);
    await t.take(600, AbortSignal.timeout(1000));
    t.record(600);
    await t.take(400, AbortSignal.timeout(1000));
    t.record(400);
    const s = throttleState(dir);
    expect(s.used_last_24h_bytes).toBe(1000);
    expect(Date.parse(s.quota_resumes_at!) - Date.now()).toBeGreaterThan(23 * 3600 * 1000);
    // The next byte waits for the window (here: past the test's patience).
    await expect(t.take(1, AbortSignal.timeout(300))).rejects.toThrow();
  });
});
