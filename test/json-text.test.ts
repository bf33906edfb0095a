import { create, ScalarType, type DescField, type DescFile, type DescMessage } from "@bufbuild/protobuf";
import { nestedTypes } from "@bufbuild/protobuf/reflect";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { describe, expect, it } from "vitest";
import { file_autonomy_v1_agent } from "../gen/autonomy/v1/agent_pb.js";
import { file_autonomy_v1_audit } from "../gen/autonomy/v1/audit_pb.js";
import { file_autonomy_v1_enrollment } from "../gen/autonomy/v1/enrollment_pb.js";
import { EventSchema, file_autonomy_v1_events, QueryEventsResponseSchema } from "../gen/autonomy/v1/events_pb.js";
import { file_autonomy_v1_follow } from "../gen/autonomy/v1/follow_pb.js";
import { file_autonomy_v1_ha } from "../gen/autonomy/v1/ha_pb.js";
import { file_autonomy_v1_health } from "../gen/autonomy/v1/health_pb.js";
import { file_autonomy_v1_ingest_rate } from "../gen/autonomy/v1/ingest_rate_pb.js";
import { file_autonomy_v1_nodes } from "../gen/autonomy/v1/nodes_pb.js";
import { file_autonomy_v1_operations } from "../gen/autonomy/v1/operations_pb.js";
import { file_autonomy_v1_rbac } from "../gen/autonomy/v1/rbac_pb.js";
import { file_autonomy_v1_releases } from "../gen/autonomy/v1/releases_pb.js";
import { file_autonomy_v1_rollouts } from "../gen/autonomy/v1/rollouts_pb.js";
import { file_autonomy_v1_support } from "../gen/autonomy/v1/support_pb.js";
import { file_autonomy_v1_workloads } from "../gen/autonomy/v1/workloads_pb.js";
import { file_google_protobuf_struct, file_google_protobuf_timestamp } from "@bufbuild/protobuf/wkt";
import { jsonListText, jsonText, jsonTextWith, referenceJsonText, timestampText } from "../src/domain/json-text.js";
import { rng, type Rng } from "./helpers/rng.js";

const FILES: DescFile[] = [
  file_autonomy_v1_agent,
  file_autonomy_v1_audit,
  file_autonomy_v1_enrollment,
  file_autonomy_v1_events,
  file_autonomy_v1_follow,
  file_autonomy_v1_ha,
  file_autonomy_v1_health,
  file_autonomy_v1_ingest_rate,
  file_autonomy_v1_nodes,
  file_autonomy_v1_operations,
  file_autonomy_v1_rbac,
  file_autonomy_v1_releases,
  file_autonomy_v1_rollouts,
  file_autonomy_v1_support,
  file_autonomy_v1_workloads,
  file_google_protobuf_struct,
  file_google_protobuf_timestamp,
];

const MESSAGES = FILES.flatMap((f) => [...nestedTypes(f)].filter((t): t is DescMessage => t.kind === "message"));


const STRINGS = ["", "a", "node-1", "ünïcödé ✓", 'quote " and \\ backslash', "line\nbreak\ttab", "\u0000\u001f\u2028\u2029", "__proto__", "😀 astral", "\ud800 lone surrogate"];

function randomJson(r: Rng, depth: number): unknown {
  switch (r.int(depth > 2 ? 4 : 6)) {
    case 0:
      return null;
    case 1:
      return r.pick([true, false]);
    case 2:
      return r.pick([0, -0, 1, -1.5, 1e21, 1e-7, 2 ** 53 + 2, 123456.789, Number.MAX_VALUE, Number.MIN_VALUE]);
    case 3:
      return r.pick(STRINGS);
    case 4:
      return Array.from({ length: r.int(4) }, () => randomJson(r, depth + 1));
    default:
      return randomObject(r, depth + 1);
  }
}

function randomObject(r: Rng, depth: number): Record<string, unknown> {
  const o: Record<string, unknown> = {};
  for (let i = r.int(5); i > 0; i--) Object.defineProperty(o, r.pick([...STRINGS, "1", "10", "2", "key"]), { value: randomJson(r, depth), enumerable: true, writable: true, configurable: true });
  return o;
}

function randomScalar(r: Rng, type: ScalarType): unknown {
  switch (type) {
    case ScalarType.STRING:
      return r.pick(STRINGS);
    case ScalarType.BOOL:
      return r.pick([true, false]);
    case ScalarType.BYTES:
      return new Uint8Array(Array.from({ length: r.int(7) }, () => r.int(256)));
    case ScalarType.DOUBLE:
    case ScalarType.FLOAT:
      return r.pick([0, -0, 1.25, -3, 1e300, 5e-324, NaN, Infinity, -Infinity, 0.1]);
    case ScalarType.INT32:
    case ScalarType.SINT32:
    case ScalarType.SFIXED32:
      return r.pick([0, 1, -1, 2147483647, -2147483648]);
    case ScalarType.UINT32:
    case ScalarType.FIXED32:
      return r.pick([0, 1, 4294967295]);
    case ScalarType.UINT64:
    case ScalarType.FIXED64:
      return r.pick([0n, 1n, 18446744073709551615n]);
    default:
      return r.pick([0n, -1n, 9223372036854775807n, -9223372036854775808n]);
  }
}

function randomTimestamp(r: Rng) {
  const seconds = r.pick([-62135596800n, 253402300799n, 0n, -1n, 86399n, 86400n, 1_780_000_000n, BigInt(r.int(2 ** 31)), -BigInt(r.int(2 ** 31))]);
  const nanos = r.pick([0, 1, 999_999_999, 5_000_000, 123_000, 120_000_000, r.int(1_000_000_000)]);
  return create(file_google_protobuf_timestamp.messages[0], { seconds, nanos });
}

function randomValue(r: Rng, field: DescField, kind: "scalar" | "enum" | "message", depth: number): unknown {
  if (kind === "scalar") return randomScalar(r, field.scalar!);
  if (kind === "enum") {
    const values = field.enum!.values;
    return r.next() < 0.1 ? 77 : r.pick(values).number;
  }
  const desc = field.message!;
  if (desc.typeName === "google.protobuf.Timestamp") return randomTimestamp(r);
  if (desc.typeName === "google.protobuf.Struct" && field.parent.typeName !== "google.protobuf.Value") return randomObject(r, 1);
  return randomMessage(r, desc, depth + 1);
}

/** A message with every field given a value, or left unset where it has presence, at random. */
function randomMessage(r: Rng, desc: DescMessage, depth = 0): any {
  if (desc.typeName === "google.protobuf.Timestamp") return randomTimestamp(r);
  const m = create(desc) as any;
  if (depth > 3) return m;
  if (desc.typeName === "google.protobuf.Value") {
    m.kind = { case: "stringValue", value: r.pick(STRINGS) };
    return m;
  }
  for (const field of desc.fields) {
    if (field.fieldKind === "list") {
      m[field.localName] = Array.from({ length: r.int(4) }, () => randomValue(r, field, field.listKind, depth));
    } else if (field.fieldKind === "map") {
      const record: Record<string, unknown> = {};
      for (let i = r.int(4); i > 0; i--) {
        const key = field.mapKey === ScalarType.BOOL ? r.pick(["true", "false"]) : field.mapKey === ScalarType.STRING ? r.pick(STRINGS) : String(r.int(100) - 50);
        record[key] = randomValue(r, field, field.mapKind, depth);
      }
      m[field.localName] = record;
    } else if (field.oneof) {
      if (r.next() < 0.5) m[field.oneof.localName] = { case: field.localName, value: randomValue(r, field, field.fieldKind, depth) };
    } else if (field.fieldKind === "message" || field.presence !== 2 ? r.next() < 0.7 : true) {
      m[field.localName] = randomValue(r, field, field.fieldKind, depth);
    }
  }
  return m;
}

describe("the REST JSON writer", () => {
  it(`writes the text protobuf-es writes, for ${MESSAGES.length} message types and random values of every field`, () => {
    let compared = 0;
    for (const desc of MESSAGES) {
      for (let seed = 1; seed <= 40; seed++) {
        const r = rng(seed * 7919 + desc.typeName.length);
        const message = randomMessage(r, desc);
        let expected: string;
        try {
          expected = referenceJsonText(desc, message);
        } catch (err) {
          // What protobuf-es refuses, the writer refuses too (a Timestamp out of range, say).
          expect(() => jsonText(desc, message), `${desc.typeName} seed ${seed}`).toThrow();
          continue;
        }
        expect(jsonText(desc, message), `${desc.typeName} seed ${seed}`).toBe(expected);
        compared++;
      }
    }
    expect(MESSAGES.length).toBeGreaterThan(100);
    expect(compared).toBeGreaterThan(MESSAGES.length * 30);
  });

  it("writes an empty message with every implicit field and empty lists, and an event page as the reference does", () => {
    for (const desc of MESSAGES) {
      if (desc.typeName === "google.protobuf.Value") {
        // No kind set: refused by both.
        expect(() => referenceJsonText(desc, create(desc))).toThrow();
        expect(() => jsonText(desc, create(desc))).toThrow();
        continue;
      }
      expect(jsonText(desc, create(desc)), desc.typeName).toBe(referenceJsonText(desc, create(desc)));
    }
    const events = Array.from({ length: 100 }, (_, i) =>
      create(EventSchema, {
        seq: BigInt(i + 1),
        eventId: `e-${i}`,
        eventType: "heartbeat",
        nodeId: "node-1",
        timestamp: timestampFromMs(1_780_000_000_000 + i * 1234),
        payload: { temperature: 20 + i / 10, ok: true, tags: ["a", "b"] },
        ...(i % 2 ? { releaseId: "r1" } : {}),
      }),
    );
    const page = create(QueryEventsResponseSchema, { events, count: events.length });
    expect(jsonText(QueryEventsResponseSchema, page)).toBe(referenceJsonText(QueryEventsResponseSchema, page));
  });

  it("writes a message with a field given as text where the field's own text stands, and a list of messages as an array", () => {
    const events = Array.from({ length: 5 }, (_, i) =>
      create(EventSchema, { seq: BigInt(i + 1), eventId: `e-${i}`, eventType: "t", nodeId: "n", timestamp: timestampFromMs(1_780_000_000_000 + i), payload: { i } }),
    );
    const list = jsonListText(EventSchema, events);
    expect(list).toBe(JSON.stringify(events.map((e) => JSON.parse(referenceJsonText(EventSchema, e)))));
    expect(jsonListText(EventSchema, [])).toBe("[]");
    const page = create(QueryEventsResponseSchema, { events, count: 5 });
    expect(jsonTextWith(QueryEventsResponseSchema, create(QueryEventsResponseSchema, { count: 5 }), { events: list })).toBe(referenceJsonText(QueryEventsResponseSchema, page));
    // The text stands in for what the message holds in that field.
    expect(jsonTextWith(QueryEventsResponseSchema, page, { events: "[]" })).toBe('{"events":[],"count":5}');
    expect(() => jsonTextWith(QueryEventsResponseSchema, page, { colour: "1" })).toThrow(/no field colour/);
    expect(() => jsonTextWith(file_google_protobuf_timestamp.messages[0], create(file_google_protobuf_timestamp.messages[0]), { seconds: "1" })).toThrow(/JSON form of its own/);
  });

  it("formats Timestamps as RFC 3339 with 0, 3, 6 or 9 digits across days, before 1970 and at both ends of the range", () => {
    const ts = (seconds: bigint, nanos: number) => create(file_google_protobuf_timestamp.messages[0], { seconds, nanos });
    const cases: [bigint, number][] = [
      [0n, 0],
      [-1n, 999_999_999],
      [86_399n, 1_000_000],
      [86_400n, 1_000],
      [-62_135_596_800n, 0],
      [253_402_300_799n, 999_999_999],
      [951_782_400n, 5],
      [1_780_000_000n, 120_000_000],
    ];
    for (const [seconds, nanos] of cases) {
      expect(`"${timestampText(seconds, nanos)}"`).toBe(referenceJsonText(file_google_protobuf_timestamp.messages[0], ts(seconds, nanos)));
    }
    expect(timestampText(1_780_000_000n, 120_000_000)).toBe("2026-05-28T20:26:40.120Z");
    expect(() => timestampText(253_402_300_800n, 0)).toThrow(/9999-12-31/);
    expect(() => timestampText(0n, -1)).toThrow(/negative/);
  });
});
