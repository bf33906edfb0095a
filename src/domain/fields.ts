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

/** Checks an id-like field: required or optional, at most MAX_ID_BYTES. */
export function checkId(value: string, field: string, required: boolean): void {
  if (value === "") {
    if (required) throw new ValidationError(field, "required");
    return;
  }
  checkBytes(value, field, MAX_ID_BYTES);
}

/** Checks that a timestamp lies in the RFC 3339 range protobuf allows: 0001-01-01 to 9999-12-31. */
export function checkTimestamp(ts: Timestamp, field: string): void {
  const { seconds, nanos } = ts;
  if (seconds < -62135596800n || seconds > 253402300799n || nanos < 0 || nanos > 999_999_999) {
    throw new ValidationError(field, "out of range");
  }
}
