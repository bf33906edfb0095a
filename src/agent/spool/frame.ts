import { crc32c } from "./crc32c.js";

/**
 * One spooled event on disk, a frame:
 *
 *   offset  size  field
 *        0     4  magic "EVT1"
 *        4     4  payload length (u32, big endian; 1 to MAX_PAYLOAD_BYTES)
 *        8     8  sequence number (u64): one per frame, increasing through the spool
 *       16     8  spooled at (u64, milliseconds since the epoch)
 *       24     4  CRC32C of bytes 4..24 and the payload
 *       28     n  payload: the event as proto JSON (UTF-8)
 *     28+n     4  frame length (u32) again, so the tail of a segment is checked without a scan
 *
 * The magic lets a reader find the next frame after a damaged one; the CRC covers everything
 * but the magic and the CRC itself, so a flipped bit anywhere in a frame is caught.
 */
export const MAGIC = 0x45565431;
export const HEADER_BYTES = 28;
export const TRAILER_BYTES = 4;
export const FRAME_OVERHEAD = HEADER_BYTES + TRAILER_BYTES;
/** Largest event payload a frame holds (a batch must stay under the server's 8 MiB body). */
export const MAX_PAYLOAD_BYTES = 1024 * 1024;

export interface Frame {
  seq: number;
  spooledAt: number;
  payload: Buffer;
  /** Offset of the frame in its buffer, and its whole length on disk. */
  offset: number;
  length: number;
}

export function encodeFrame(seq: number, spooledAt: number, payload: Buffer): Buffer {
  const n = payload.length;
  const buf = Buffer.allocUnsafe(FRAME_OVERHEAD + n);
  buf.writeUInt32BE(MAGIC, 0);
  buf.writeUInt32BE(n, 4);
  buf.writeBigUInt64BE(BigInt(seq), 8);
  buf.writeBigUInt64BE(BigInt(spooledAt), 16);
  payload.copy(buf, HEADER_BYTES);
  buf.writeUInt32BE(crc32c(buf, crc32c(buf, 0, 4, 24), HEADER_BYTES, HEADER_BYTES + n), 24);
  buf.writeUInt32BE(FRAME_OVERHEAD + n, HEADER_BYTES + n);
  return buf;
}

/** A frame, "incomplete" when the buffer ends inside one that may be whole on disk, or "bad". */
export type Decoded = Frame | "incomplete" | "bad";

/** Decodes the frame at `offset` of `buf[0, end)`. */
export function decodeFrame(buf: Buffer, offset: number, end = buf.length): Decoded {
  if (end - offset < HEADER_BYTES) return end - offset >= 4 && buf.readUInt32BE(offset) !== MAGIC ? "bad" : "incomplete";
  if (buf.readUInt32BE(offset) !== MAGIC) return "bad";
  const n = buf.readUInt32BE(offset + 4);
  if (n === 0 || n > MAX_PAYLOAD_BYTES) return "bad";
  if (end - offset < FRAME_OVERHEAD + n) return "incomplete";
  const p = offset + HEADER_BYTES;
  const crc = crc32c(buf, crc32c(buf, 0, offset + 4, offset + 24), p, p + n);
  if (crc !== buf.readUInt32BE(offset + 24)) return "bad";
  if (buf.readUInt32BE(p + n) !== FRAME_OVERHEAD + n) return "bad";
  return {
    seq: Number(buf.readBigUInt64BE(offset + 8)),
    spooledAt: Number(buf.readBigUInt64BE(offset + 16)),
    payload: buf.subarray(p, p + n),
    offset,
    length: FRAME_OVERHEAD + n,
  };
}

/** The offset of the next whole, valid frame in `buf[from, end)`, or -1. */
export function resync(buf: Buffer, from: number, end = buf.length): number {
  const magic = Buffer.from([0x45, 0x56, 0x54, 0x31]);
  for (let i = buf.indexOf(magic, from); i >= 0 && i < end; i = buf.indexOf(magic, i + 1)) {
    const d = decodeFrame(buf, i, end);
    if (typeof d === "object") return i;
  }
  return -1;
}

/** What can be read of a damaged region: the event JSON object it carries, if one survives. */
export function salvage(region: Buffer): Record<string, unknown> | undefined {
  const parse = (text: string) => {
    try {
      const value = JSON.parse(text) as unknown;
      if (value !== null && typeof value === "object" && !Array.isArray(value)) return value as Record<string, unknown>;
    } catch {
      // not this one
    }
    return undefined;
  };
  // A header whose length still fits names the payload exactly.
  if (region.length >= FRAME_OVERHEAD && region.readUInt32BE(0) === MAGIC) {
    const n = region.readUInt32BE(4);
    if (n > 0 && HEADER_BYTES + n <= region.length) {
      const value = parse(region.subarray(HEADER_BYTES, HEADER_BYTES + n).toString("utf8"));
      if (value) return value;
    }
  }
  // Else the longest JSON object from one of the first `{"` (an event's JSON starts so; a few
  // tries: damaged bytes are not worth a long search). The payload starts after a header that is
  // still there, whose binary fields (sequence, time, CRC) may hold such bytes of their own.
  const from = region.length >= HEADER_BYTES && region.readUInt32BE(0) === MAGIC ? HEADER_BYTES : 0;
  for (let start = region.indexOf('{"', from), starts = 0; start >= 0 && starts < 8; start = region.indexOf('{"', start + 1), starts++) {
    const text = region.subarray(start).toString("utf8");
    let end = text.lastIndexOf("}");
    for (let tries = 0; end > 0 && tries < 16; tries++, end = text.lastIndexOf("}", end - 1)) {
      const value = parse(text.slice(0, end + 1));
      if (value) return value;
    }
  }
  return undefined;
}
