import { randomUUID } from "node:crypto";
import { fromJson, toJsonString, type JsonValue } from "@bufbuild/protobuf";
import { timestampNow } from "@bufbuild/protobuf/wkt";
import { EventSchema, type Event } from "../../../gen/autonomy/v1/events_pb.js";
import { ValidationError } from "../../domain/errors.js";
import { checkId, checkTimestamp } from "../../domain/fields.js";
import { MAX_PAYLOAD_BYTES } from "./frame.js";

/**
 * Turns one event as a program writes it (proto JSON: `event_type`, optional `event_id`,
 * `node_id`, `timestamp`, `lock_fingerprint`, `release_id`, `payload`) into the bytes the spool
 * keeps: an `event_id` is made when absent (a random UUID), `node_id` defaults to this node's,
 * `timestamp` to now. Anything the server would refuse is refused here, naming `where`
 * ("line 3"), so a bad event never reaches the spool.
 */
export function normalizeEvent(value: unknown, defaults: { nodeId?: string }, where: string): Buffer {
  if (value === null || typeof value !== "object" || Array.isArray(value)) throw new ValidationError(where, "not a JSON object");
  const obj = { ...(value as Record<string, JsonValue>) };
  if (obj.event_id === undefined && obj.eventId === undefined) obj.event_id = randomUUID();
  if (obj.node_id === undefined && obj.nodeId === undefined && defaults.nodeId) obj.node_id = defaults.nodeId;
  let event: Event;
  try {
    event = fromJson(EventSchema, obj);
  } catch (err) {
    throw new ValidationError(where, (err as Error).message.replace(/^cannot decode message autonomy\.v1\.Event from JSON: /, ""));
  }
  if (event.timestamp === undefined) event.timestamp = timestampNow();
  checkId(event.eventId, `${where}: event_id`, true);
  checkId(event.eventType, `${where}: event_type`, true);
  if (event.nodeId === "") throw new ValidationError(`${where}: node_id`, "required (pass --node-id, or run edgectl enroll first)");
  checkId(event.nodeId, `${where}: node_id`, true);
  checkTimestamp(event.timestamp, `${where}: timestamp`);
  if (event.lockFingerprint !== undefined) checkId(event.lockFingerprint, `${where}: lock_fingerprint`, false);
  if (event.releaseId !== undefined) checkId(event.releaseId, `${where}: release_id`, false);
  event.seq = 0n;
  const bytes = Buffer.from(toJsonString(EventSchema, event, { useProtoFieldName: true }));
  if (bytes.length > MAX_PAYLOAD_BYTES) throw new ValidationError(where, `an event may hold at most ${MAX_PAYLOAD_BYTES} bytes of JSON, this one ${bytes.length}`);
  return bytes;
}

/** Parses JSON lines (blank lines skipped) into spool payloads; the first bad line refuses them all. */
export function parseEventLines(text: string, defaults: { nodeId?: string }): Buffer[] {
  const out: Buffer[] = [];
  const lines = text.split("\n");
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i].trim();
    if (line === "") continue;
    let value: unknown;
    try {
      value = JSON.parse(line);
    } catch {
      throw new ValidationError(`line ${i + 1}`, "not valid JSON");
    }
    out.push(normalizeEvent(value, defaults, `line ${i + 1}`));
  }
  return out;
}

/** The event a spool payload holds. */
export function decodeSpooled(payload: Buffer): Event {
  return fromJson(EventSchema, JSON.parse(payload.toString("utf8")) as JsonValue, { ignoreUnknownFields: true });
}
