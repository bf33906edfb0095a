import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { h1, h2 } from "./helpers/http.js";
import { startTestServer, type TestServer } from "./helpers/server.js";

const ALLOWED = new Set([200, 400, 413]);

/** The log lines of errors that escaped a handler (the interceptor logs them before answering internal). */
const unexpectedErrors = (lines: readonly Record<string, unknown>[]) => lines.filter((l) => l.msg === "unexpected error in handler");

/** An event-shaped object whose fields are sometimes right, sometimes any JSON at all. */
const hostileEvent = fc.record(
  {
    event_id: fc.oneof(fc.string({ maxLength: 300 }), fc.jsonValue()),
    event_type: fc.oneof(fc.string(), fc.jsonValue()),
    node_id: fc.oneof(fc.string({ unit: "grapheme", maxLength: 100 }), fc.jsonValue()),
    timestamp: fc.oneof(
      fc.date({ noInvalidDate: true }).map((d) => d.toISOString()),
      fc.string(),
      fc.constantFrom("0000-01-01T00:00:00Z", "9999-12-31T23:59:59.999999999Z", "2026-02-30T00:00:00Z", "1e400"),
      fc.jsonValue(),
    ),
    payload: fc.oneof(fc.dictionary(fc.string(), fc.jsonValue({ maxDepth: 6 })), fc.jsonValue()),
    release_id: fc.oneof(fc.string(), fc.jsonValue()),
    lock_fingerprint: fc.oneof(fc.string(), fc.jsonValue()),
    seq: fc.oneof(fc.bigInt().map(String), fc.jsonValue()),
    __proto__: fc.jsonValue(),
    constructor: fc.jsonValue(),
  },
  { requiredKeys: [] },
);

const hostileBody = fc.oneof(
  fc.json(),
  fc.string(),
  fc.uint8Array({ maxLength: 2000 }).map((b) => Buffer.from(b)),
  fc.record({ events: fc.array(hostileEvent, { maxLength: 20 }) }).map((b) => JSON.stringify(b)),
  fc.record({ events: fc.jsonValue() }).map((b) => JSON.stringify(b)),
  fc.nat({ max: 5000 }).map((depth) => "[".repeat(depth) + "]".repeat(depth)),
  fc.nat({ max: 5000 }).map((depth) => '{"events":' + '{"a":'.repeat(depth) + "1" + "}".repeat(depth + 1)),
);

describe("hostile input", () => {
  let server: TestServer;
  // Hundreds of refused bodies from one address: the refused-body budget (429 past it, tested in
  // hardening-transport) is off here, so every body reaches the checks under test.
  beforeAll(async () => (server = await startTestServer("sqlite", { refusedBodyRate: { perSecond: 0, burst: 0 } })));
  afterAll(async () => server.stop());

  it("never answers POST /v1/events with a 500", async () => {
    await fc.assert(
      fc.asyncProperty(hostileBody, fc.boolean(), async (body, useH2) => {
        const res = await (useH2 ? h2 : h1)(`${server.url}/v1/events`, { method: "POST", body });
        expect(ALLOWED.has(res.status), `${res.status} ${res.text}`).toBe(true);
        expect(() => JSON.parse(res.text)).not.toThrow();
      }),
      { numRuns: 400 },
    );
    expect(unexpectedErrors(server.log.lines)).toEqual([]);
  });

  it("never answers the Connect JSON endpoint with a 500", async () => {
    // Connect's own answers: 400 bad input, 413/429 too large, 415 a content type it does not take.
    const connectAllowed = new Set([200, 400, 413, 415, 429]);
    await fc.assert(
      fc.asyncProperty(hostileBody, fc.boolean(), async (body, useH2) => {
        const res = await (useH2 ? h2 : h1)(`${server.url}/autonomy.v1.EventService/IngestEvents`, {
          method: "POST",
          body,
          headers: { "content-type": "application/json" },
        });
        expect(connectAllowed.has(res.status), `${res.status} ${res.text}`).toBe(true);
      }),
      { numRuns: 300 },
    );
    expect(unexpectedErrors(server.log.lines)).toEqual([]);
  });

  it("never answers GET /v1/events with a 500, whatever the query string", async () => {
    const param = fc.constantFrom("node_id", "event_type", "limit", "before", "payload", "events", "x", "limit.x", "%");
    const value = fc.oneof(fc.string(), fc.integer().map(String), fc.bigInt().map(String), fc.constant("%E0%A4%A"));
    await fc.assert(
      fc.asyncProperty(fc.array(fc.tuple(param, value), { maxLength: 5 }), async (pairs) => {
        const query = pairs.map(([k, v]) => `${k}=${v.startsWith("%") ? v : encodeURIComponent(v)}`).join("&");
        const res = await h1(`${server.url}/v1/events?${query}`);
        expect(ALLOWED.has(res.status), `${query} -> ${res.status} ${res.text}`).toBe(true);
      }),
      { numRuns: 300 },
    );
    expect(unexpectedErrors(server.log.lines)).toEqual([]);
  });

  it("logs no unexpected handler error for a fixed sample of hostile bodies, on REST and Connect", async () => {
    // Self-contained, so that it proves something when run alone: it sends its own requests.
    const before = server.log.lines.length;
    const bodies = fc.sample(hostileBody, { numRuns: 150, seed: 42 });
    let answered = 0;
    for (const [i, body] of bodies.entries()) {
      const send = i % 2 === 0 ? h1 : h2;
      for (const [url, headers] of [
        [`${server.url}/v1/events`, {}],
        [`${server.url}/autonomy.v1.EventService/IngestEvents`, { "content-type": "application/json" }],
      ] as const) {
        const res = await send(url, { method: "POST", body, headers });
        expect(res.status).toBeLessThan(500);
        answered++;
      }
    }
    expect(answered).toBe(bodies.length * 2);
    expect(unexpectedErrors(server.log.lines.slice(before))).toEqual([]);
  });
});
