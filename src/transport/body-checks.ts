/**
 * Checks on a request body that run before it is parsed, so that the parser's cost stays
 * linear in the body's size: nesting depth of JSON and protobuf, and the envelope framing of
 * gRPC, gRPC-Web and Connect streaming. Each is one pass over the bytes and allocates nothing.
 */
import type { DescField, DescMessage } from "@bufbuild/protobuf";
import { ValidationError } from "../domain/errors.js";

/**
 * The deepest nesting a body may have: JSON arrays and objects, or protobuf messages (the
 * request message is level 1). protobuf-es refuses binary messages deeper than 100 too.
 */
export const MAX_NESTING_DEPTH = 100;

const tooDeep = () => new ValidationError("", `request body: nested deeper than ${MAX_NESTING_DEPTH} levels`);

/**
 * A JSON nesting-depth check that is fed the body chunk by chunk as it arrives, so that a
 * body nested too deep is refused at its first bytes rather than once it is read in full.
 */
export class JsonDepthScanner {
  private depth = 0;
  private inString = false;
  private escaped = false;
  constructor(private readonly limit = MAX_NESTING_DEPTH) {}

  /** Throws ValidationError as soon as the nesting passes the limit. */
  feed(bytes: Uint8Array): void {
    let { depth, inString, escaped } = this;
    for (let i = 0; i < bytes.length; i++) {
      const c = bytes[i];
      if (inString) {
        if (escaped) escaped = false;
        else if (c === 0x5c) escaped = true;
        else if (c === 0x22) inString = false;
      } else if (c === 0x22) {
        inString = true;
      } else if (c === 0x5b || c === 0x7b) {
        if (++depth > this.limit) throw tooDeep();
      } else if (c === 0x5d || c === 0x7d) {
        depth--;
      }
    }
    this.depth = depth;
    this.inString = inString;
    this.escaped = escaped;
  }
}

/** Throws ValidationError when JSON text nests arrays and objects deeper than the limit. */
export function checkJsonDepth(bytes: Uint8Array, limit = MAX_NESTING_DEPTH): void {
  new JsonDepthScanner(limit).feed(bytes);
}

const malformed = (why: string) => new ValidationError("", `request body: malformed protobuf (${why})`);

/** The message type held by a field (a message, a list of messages, or a map's message values). */
function nestedMessage(field: DescField | undefined): { message: DescMessage; mapEntry: boolean } | undefined {
  if (!field) return undefined;
  if (field.fieldKind === "message") return { message: field.message, mapEntry: false };
  if (field.fieldKind === "list" && field.listKind === "message") return { message: field.message, mapEntry: false };
  if (field.fieldKind === "map" && field.mapKind === "message") return { message: field.message, mapEntry: true };
  return undefined;
}

class WireScanner {
  pos: number;
  constructor(
    private readonly bytes: Uint8Array,
    private readonly limit: number,
    start: number,
  ) {
    this.pos = start;
  }

  private varint(end: number): number {
    // Exact up to 2^53, which is more than any length or tag that fits a body.
    let value = 0;
    let scale = 1;
    for (let i = 0; i < 10; i++) {
      if (this.pos >= end) throw malformed("truncated varint");
      const b = this.bytes[this.pos++];
      value += (b & 0x7f) * scale;
      if ((b & 0x80) === 0) return value;
      scale *= 128;
    }
    throw malformed("varint longer than 10 bytes");
  }

  private skipGroup(fieldNo: number, end: number, depth: number): void {
    if (depth > this.limit) throw tooDeep();
    while (this.pos < end) {
      const tag = this.varint(end);
      const wireType = tag & 7;
      if (wireType === 4) {
        if (tag >>> 3 !== fieldNo) throw malformed("mismatched end group");
        return;
      }
      this.field(undefined, tag, end, depth);
    }
    throw malformed("unterminated group");
  }

  /** Scans one field whose tag was just read; `depth` is that of the message holding it. */
  private field(desc: DescMessage | undefined, tag: number, end: number, depth: number, entryValue = false): void {
    const fieldNo = tag >>> 3;
    switch (tag & 7) {
      case 0:
        this.varint(end);
        return;
      case 1:
        this.pos += 8;
        break;
      case 5:
        this.pos += 4;
        break;
      case 2: {
        const length = this.varint(end);
        const stop = this.pos + length;
        if (stop > end) throw malformed("length beyond the end");
        const nested = entryValue ? undefined : nestedMessage(desc?.fields.find((f) => f.number === fieldNo));
        if (nested?.mapEntry) this.mapEntry(nested.message, stop, depth);
        else if (nested) this.message(nested.message, stop, depth + 1);
        else if (entryValue && desc) this.message(desc, stop, depth + 1);
        this.pos = stop;
        return;
      }
      case 3:
        this.skipGroup(fieldNo, end, depth + 1);
        return;
      default:
        throw malformed(`wire type ${tag & 7}`);
    }
    if (this.pos > end) throw malformed("truncated fixed-size field");
  }

  /** A map entry: key (1) and value (2); the value message is one level below the map's message. */
  private mapEntry(value: DescMessage, end: number, depth: number): void {
    while (this.pos < end) {
      const tag = this.varint(end);
      this.field(tag >>> 3 === 2 ? value : undefined, tag, end, depth, tag >>> 3 === 2);
    }
  }

  message(desc: DescMessage, end: number, depth: number): void {
    if (depth > this.limit) throw tooDeep();
    while (this.pos < end) this.field(desc, this.varint(end), end, depth);
  }
}

/**
 * Throws ValidationError when protobuf bytes of `desc` are not well framed (truncated, a bad
 * wire type, a length beyond the end) or nest messages deeper than the limit.
 */
export function checkProtoMessage(desc: DescMessage, bytes: Uint8Array, start = 0, end = bytes.length, limit = MAX_NESTING_DEPTH): void {
  new WireScanner(bytes, limit, start).message(desc, end, 1);
}

/** One envelope of a gRPC, gRPC-Web or Connect streaming body: flags, then a 4-byte length, then the data. */
export interface Envelope {
  flags: number;
  start: number;
  end: number;
}

/** The envelopes of a framed body; throws ValidationError when the framing is broken. */
export function envelopesOf(bytes: Uint8Array): Envelope[] {
  const out: Envelope[] = [];
  let pos = 0;
  while (pos < bytes.length) {
    if (pos + 5 > bytes.length) throw new ValidationError("", "request body: truncated message frame");
    const length = ((bytes[pos + 1] << 24) | (bytes[pos + 2] << 16) | (bytes[pos + 3] << 8) | bytes[pos + 4]) >>> 0;
    const start = pos + 5;
    const end = start + length;
    if (end > bytes.length) throw new ValidationError("", "request body: message frame longer than the body");
    out.push({ flags: bytes[pos], start, end });
    pos = end;
  }
  return out;
}
