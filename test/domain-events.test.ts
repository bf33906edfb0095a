import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { EventSchema, type Event } from "../gen/autonomy/v1/events_pb.js";

type EventInit = Omit<MessageInitShape<typeof EventSchema>, "$typeName">;
import { PayloadTooLargeError, ValidationError } from "../src/domain/errors.js";
import { dedupeWithinBatch, queryCursor, queryLimit, validateEventBatch } from "../src/domain/events.js";

const ts = { seconds: 1_790_000_000n, nanos: 0 };
function event(overrides: EventInit = {}): Event {
  return create(EventSchema, { eventId: "e1", eventType: "boot", nodeId: "n1", timestamp: ts, ...overrides });
}

describe("validateEventBatch", () => {
  it("accepts a batch of complete events", () => {
    expect(() => validateEventBatch([event(), event({ eventId: "e2", releaseId: "r1", lockFingerprint: "f" })])).not.toThrow();
  });

  it.each([
    ["a missing event_id", { eventId: "" }, "events[1].event_id: required"],
    ["a missing event_type", { eventType: "" }, "events[1].event_type: required"],
    ["a missing node_id", { nodeId: "" }, "events[1].node_id: required"],
    ["a missing timestamp", { timestamp: undefined }, "events[1].timestamp: required"],
    ["an event_id over 256 bytes", { eventId: "x".repeat(257) }, "events[1].event_id: longer than 256 bytes"],
    ["a node_id of 86 three-byte characters", { nodeId: "€".repeat(86) }, "events[1].node_id: longer than 256 bytes"],
    ["a release_id over 256 bytes", { releaseId: "r".repeat(300) }, "events[1].release_id: longer than 256 bytes"],
    ["a timestamp past year 9999", { timestamp: { seconds: 253402300800n, nanos: 0 } }, "events[1].timestamp: out of range"],
    ["negative nanos", { timestamp: { seconds: 1n, nanos: -1 } }, "events[1].timestamp: out of range"],
  ] as const)("rejects %s, naming the index and the field", (_name, overrides, message) => {
    const batch = [event({ eventId: "ok" }), event(overrides as EventInit)];
    expect(() => validateEventBatch(batch)).toThrow(ValidationError);
    expect(() => validateEventBatch(batch)).toThrow(message);
  });

  it("accepts ids of exactly 256 bytes", () => {
    expect(() => validateEventBatch([event({ eventId: "x".repeat(256), nodeId: "€".repeat(85) })])).not.toThrow();
  });

  it("rejects more than 10,000 events as too large", () => {
    const batch = Array.from({ length: 10_001 }, (_, i) => event({ eventId: `e${i}` }));
    expect(() => validateEventBatch(batch)).toThrow(PayloadTooLargeError);
    expect(() => validateEventBatch(batch.slice(1))).not.toThrow();
  });
});

describe("dedupeWithinBatch", () => {
  it("keeps the first of each event_id, in order", () => {
    const batch = [event({ eventId: "a", eventType: "first" }), event({ eventId: "b" }), event({ eventId: "a", eventType: "second" })];
    const unique = dedupeWithinBatch(batch);
    expect(unique.map((e) => [e.eventId, e.eventType])).toEqual([
      ["a", "first"],
      ["b", "boot"],
    ]);
  });

  it("keeps the same event_id from another node", () => {
    const batch = [event({ eventId: "a", nodeId: "n1" }), event({ eventId: "a", nodeId: "n2" }), event({ eventId: "a", nodeId: "n1" })];
    expect(dedupeWithinBatch(batch).map((e) => [e.nodeId, e.eventId])).toEqual([
      ["n1", "a"],
      ["n2", "a"],
    ]);
  });
});

describe("query bounds", () => {
  it.each([
    [undefined, 100],
    [1, 1],
    [1000, 1000],
  ])("limit %s means %i", (asked, used) => expect(queryLimit(asked)).toBe(used));

  it.each([0, -1, 1001])("limit %i is refused, naming the field", (asked) => {
    expect(() => queryLimit(asked)).toThrow("limit: must be between 1 and 1000");
  });

  it("refuses a negative cursor", () => {
    expect(() => queryCursor(-5n)).toThrow("before: must not be negative");
    expect(queryCursor(7n)).toBe(7n);
  });
});
