import type { Timestamp } from "@bufbuild/protobuf/wkt";
import { ValidationError } from "./errors.js";

/** Longest id, type, channel, fingerprint or release id, in UTF-8 bytes. */
export const MAX_ID_BYTES = 256;

/** Checks a string against a byte bound; UTF-8 takes at most 3 bytes per UTF-16 unit, so short strings skip the count. */
export function checkBytes(value: string, field: string, max: number): void {
  if (value.length * 3 > max && Buffer.byteLength(value, "utf8") > max) {
    throw new ValidationError(field, `longer than ${max} bytes`);
  }
}

/** Longest label value, in UTF-8 bytes. */
export const MAX_LABEL_VALUE_BYTES = 256;

// C0 controls (NUL included), DEL, C1 controls, and the marks and overrides that reorder text
// on screen (U+061C, U+200E/F, U+202A-E, U+2066-9): a value holding one can print as another.
const UNPRINTABLE = /[\u0000-\u001f\u007f-\u009f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]/;
// Ids also appear in REST paths and file names: no "/".
const NOT_IN_ID = /[\u0000-\u001f\u007f-\u009f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069/]/;

/** What is wrong with a character, for the error message. */
function describe(value: string, at: number): string {
  const c = value.codePointAt(at)!;
  return c === 0x2f ? 'must not contain "/"' : `must not contain control characters or bidirectional marks (U+${c.toString(16).toUpperCase().padStart(4, "0")} at ${at})`;
}

/**
 * Checks an id or label key: required or optional, at most MAX_ID_BYTES, and free of control
 * characters, NUL, "/" and bidirectional overrides.
 */
export function checkId(value: string, field: string, required: boolean): void {
  if (value === "") {
    if (required) throw new ValidationError(field, "required");
    return;
  }
  checkBytes(value, field, MAX_ID_BYTES);
  const m = NOT_IN_ID.exec(value);
  if (m) throw new ValidationError(field, describe(value, m.index));
}

/** Checks a one-line text field (a label value, a version, a filter): bounded, no control characters or bidirectional marks. */
export function checkText(value: string, field: string, max: number = MAX_ID_BYTES): void {
  checkBytes(value, field, max);
  const m = UNPRINTABLE.exec(value);
  if (m) throw new ValidationError(field, describe(value, m.index));
}

/** Checks that a timestamp lies in the RFC 3339 range protobuf allows: 0001-01-01 to 9999-12-31. */
export function checkTimestamp(ts: Timestamp, field: string): void {
  const { seconds, nanos } = ts;
  if (seconds < -62135596800n || seconds > 253402300799n || nanos < 0 || nanos > 999_999_999) {
    throw new ValidationError(field, "out of range");
  }
}
