import { ConnectError, Code } from "@connectrpc/connect";
import { ENFORCEMENT_OFF_WARNING } from "../src/services/health-service.js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createOrchestratorClients } from "../clients/index.js";
import { QueryEventsResponseSchema } from "../gen/autonomy/v1/events_pb.js";
import { referenceJsonText } from "../src/domain/json-text.js";
import { h2, TRANSPORTS } from "./helpers/http.js";
import { STORE_KINDS, startTestServer, type TestServer } from "./helpers/server.js";

const T0 = "2026-11-22T10:00:00Z";
const event = (id: string, node = "n1", extra: Record<string, unknown> = {}) => ({
  event_id: id,
  event_type: "boot",
  node_id: node,
  timestamp: T0,
  ...extra,
});

describe.each(STORE_KINDS)("REST API on %s", (kind) => {
  let server: TestServer;
  beforeAll(async () => (server = await startTestServer(kind)));
  afterAll(async () => server.stop());

  describe.each(TRANSPORTS)("over %s", (name, request) => {
    const tag = name === "HTTP/1.1" ? "h1" : "h2";
    const post = (body: unknown) =>
      request(`${server.url}/v1/events`, {
        method: "POST",
        body: typeof body === "string" ? body : JSON.stringify(body),
        headers: { "content-type": "application/json" },
      });

    it("ingests a batch and answers counts as JSON numbers", async () => {
      const res = await post({
        events: [event(`${tag}-a`), event(`${tag}-a`), event(`${tag}-b`, "n2", { release_id: "r1", lock_fingerprint: "lf", payload: { k: [1, { x: null }] } })],
      });
      expect(res.status).toBe(200);
      expect(res.headers["content-type"]).toMatch(/^application\/json/);
      expect(res.text).toBe('{"received":3,"inserted":2,"deduped":1}');
      const again = await post({ events: [event(`${tag}-a`)] });
      expect(again.json()).toEqual({ received: 1, inserted: 0, deduped: 1 });
    });

    it("dedupes per node: another node's event with the same event_id is stored, the same node's again is not", async () => {
      const id = `${tag}-crash-0001`;
      const first = await post({ events: [event(id, `${tag}-dn1`, { event_type: "probe" })] });
      expect(first.json()).toEqual({ received: 1, inserted: 1, deduped: 0 });
      const other = await post({ events: [event(id, `${tag}-dn2`, { event_type: "crash" }), event(id, `${tag}-dn2`)] });
      expect(other.json()).toEqual({ received: 2, inserted: 1, deduped: 1 });
      const again = await post({ events: [event(id, `${tag}-dn1`), event(id, `${tag}-dn2`)] });
      expect(again.json()).toEqual({ received: 2, inserted: 0, deduped: 2 });
      const stored = async (node: string) =>
        (await request(`${server.url}/v1/events?node_id=${node}`)).json().events.map((e: { event_id: string; event_type: string }) => [e.event_id, e.event_type]);
      expect(await stored(`${tag}-dn1`)).toEqual([[id, "probe"]]);
      expect(await stored(`${tag}-dn2`)).toEqual([[id, "crash"]]);
    });

    it("stores each id once when concurrent batches share ids", async () => {
      const ids = Array.from({ length: 11 * 20 + 100 }, (_, i) => `${tag}-shared-${i}`);
      const replies = await Promise.all(
        Array.from({ length: 12 }, (_, k) => post({ events: ids.slice(k * 20, k * 20 + 100).map((id) => event(id, `${tag}-shared`)) })),
      );
      expect(replies.every((r) => r.status === 200)).toBe(true);
      const bodies = replies.map((r) => r.json());
      const unique = new Set(Array.from({ length: 12 }, (_, k) => ids.slice(k * 20, k * 20 + 100)).flat()).size;
      expect(bodies.reduce((n, b) => n + b.inserted, 0)).toBe(unique);
      expect(bodies.reduce((n, b) => n + b.deduped, 0)).toBe(12 * 100 - unique);
      expect((await request(`${server.url}/v1/events?node_id=${tag}-shared&limit=1000`)).json().count).toBe(unique);
    });

    it("answers an empty batch with zero counts", async () => {
      expect((await post({ events: [] })).json()).toEqual({ received: 0, inserted: 0, deduped: 0 });
      expect((await post({})).json()).toEqual({ received: 0, inserted: 0, deduped: 0 });
    });

    it("queries newest first with snake_case fields, filters and a count", async () => {
      await post({ events: [event(`${tag}-q1`, `${tag}-qnode`), event(`${tag}-q2`, `${tag}-qnode`, { payload: { n: 1 } })] });
      const res = await request(`${server.url}/v1/events?node_id=${tag}-qnode&event_type=boot&limit=10`);
      expect(res.status).toBe(200);
      const body = res.json();
      expect(body.count).toBe(2);
      expect(body.events.map((e: { event_id: string }) => e.event_id)).toEqual([`${tag}-q2`, `${tag}-q1`]);
      expect(body.events[0]).toMatchObject({ event_id: `${tag}-q2`, event_type: "boot", node_id: `${tag}-qnode`, timestamp: T0, payload: { n: 1 } });
      expect(Object.keys(body.events[0]).every((k) => /^[a-z_]+$/.test(k))).toBe(true);
      const page2 = await request(`${server.url}/v1/events?node_id=${tag}-qnode&before=${body.events[0].seq}`);
      expect(page2.json().events.map((e: { event_id: string }) => e.event_id)).toEqual([`${tag}-q1`]);
    });

    it("answers an event page with the text protobuf-es writes for the RPC's answer, for every filter and cursor", async () => {
      const node = `${tag}-page`;
      const odd = { "2": "two", "1": ["one", 1e21, -0.5, null], ünï: "\u2028 \"q\" \\", nested: { deep: [{ x: true }] }, __proto__x: 0 };
      const batch = Array.from({ length: 30 }, (_, i) =>
        event(`${tag}-p${i}`, i % 3 ? node : `${node}-other`, {
          event_type: i % 2 ? "boot" : "heartbeat",
          timestamp: `2026-11-22T10:00:${String(i).padStart(2, "0")}.${i % 4 ? "5" : "123456789"}Z`,
          ...(i % 5 ? { payload: { ...odd, i } } : {}),
          ...(i % 4 === 1 ? { release_id: "r1", lock_fingerprint: "lf" } : {}),
        }),
      );
      expect((await post({ events: batch })).json().inserted).toBe(30);
      const api = createOrchestratorClients({ baseUrl: server.url, protocol: "connect", useBinaryFormat: true });
      try {
        const newest = await api.events.queryEvents({ nodeId: node, limit: 1 });
        const queries = [
          { nodeId: node },
          { nodeId: node, eventType: "boot", limit: 3 },
          { eventType: "heartbeat", limit: 1000 },
          { nodeId: node, before: newest.events[0].seq, limit: 7 },
          { nodeId: `${node}-nobody` },
        ];
        for (const q of queries) {
          const params = new URLSearchParams(Object.entries({ node_id: q.nodeId, event_type: q.eventType, limit: q.limit, before: q.before }).flatMap(([k, v]) => (v === undefined ? [] : [[k, String(v)] as [string, string]])));
          const res = await request(`${server.url}/v1/events?${params}`);
          expect(res.status, params.toString()).toBe(200);
          const rpc = await api.events.queryEvents(q);
          const expected = referenceJsonText(QueryEventsResponseSchema, rpc);
          expect(res.text, params.toString()).toBe(expected);
          // Asked for together, pages are written on SQLite's event page thread: the same text.
          const together = await Promise.all(Array.from({ length: 6 }, () => request(`${server.url}/v1/events?${params}`)));
          for (const r of together) expect(r.text, params.toString()).toBe(expected);
        }
        const pagesOn = async () => Object.fromEntries((await server.metrics.eventPages.get()).values.map((v) => [v.labels.on, v.value]));
        const before = await pagesOn();
        await request(`${server.url}/v1/events?node_id=${node}`);
        const after = await pagesOn();
        // A page asked for alone is answered on the event loop.
        expect(after.event_loop).toBe((before.event_loop ?? 0) + 1);
        if (kind === "postgres") expect(after.thread).toBeUndefined();
        // Six pages asked for at once over HTTP/2 overlap, so SQLite wrote some on its thread
        // (over HTTP/1.1 each can be answered before the next is read).
        else if (name === "HTTP/2 cleartext") expect(after.thread).toBeGreaterThan(0);
        expect(JSON.parse((await request(`${server.url}/v1/events?node_id=${node}&limit=1`)).text).events[0].payload).toEqual({ ...odd, i: 29 });
      } finally {
        api.close();
      }
    });

    it("answers the health probe", async () => {
      const res = await request(`${server.url}/v1/health`);
      expect(res.status).toBe(200);
      // Test servers run with RBAC enforcement off, which the probe says (test/rbac.test.ts has it on).
      expect(JSON.parse(res.text)).toEqual({ status: "ok", warning: ENFORCEMENT_OFF_WARNING });
    });

    it.each([
      ["malformed JSON", '{"events":[', "malformed JSON"],
      ["a body that is not an object", "[1,2]", "request body must be a JSON object"],
      ["a missing node_id", { events: [event("v1"), { event_id: "v2", event_type: "t", timestamp: T0 }] }, "events[1].node_id: required"],
      ["a bad timestamp", { events: [event("v3", "n", { timestamp: "yesterday" })] }, "events[0]: cannot decode message google.protobuf.Timestamp"],
      ["an unknown field", { events: [event("v4", "n", { colour: "red" })] }, 'events[0]: cannot decode message autonomy.v1.Event from JSON: key "colour" is unknown'],
      ["a wrong type", { events: [event("v5", "n", { node_id: 7 })] }, "events[0]"],
      ["a payload that is not an object", { events: [event("v6", "n", { payload: [1] })] }, "events[0]"],
    ])("rejects %s with 400 naming the problem, and stores nothing", async (_name, body, message) => {
      const res = await post(body);
      expect(res.status).toBe(400);
      expect(res.json().code).toBe("invalid_argument");
      expect(res.json().message).toContain(message);
      const stored = (await request(`${server.url}/v1/events?limit=1000`)).json().events.map((e: { event_id: string }) => e.event_id);
      expect(stored.filter((id: string) => /^v\d$/.test(id))).toEqual([]);
    });

    it("rejects a batch with one bad event whole", async () => {
      const res = await post({ events: [event(`${tag}-whole-1`, `${tag}-whole`), { ...event(`${tag}-whole-2`, `${tag}-whole`), event_type: "" }] });
      expect(res.status).toBe(400);
      expect(res.json().message).toBe("events[1].event_type: required");
      expect((await request(`${server.url}/v1/events?node_id=${tag}-whole`)).json().count).toBe(0);
    });

    it.each([
      ["limit=0", "limit: must be between 1 and 1000"],
      ["limit=1001", "limit: must be between 1 and 1000"],
      ["limit=ten", "limit"],
      ["before=-1", "before: must not be negative"],
      ["colour=red", "colour: unknown query parameter"],
    ])("rejects the query %s with 400", async (query, message) => {
      const res = await request(`${server.url}/v1/events?${query}`);
      expect(res.status).toBe(400);
      expect(res.json().message).toContain(message);
    });

    it("answers a wrong method on a known path with 405 and Allow", async () => {
      const res = await request(`${server.url}/v1/events`, { method: "DELETE" });
      expect(res.status).toBe(405);
      expect(res.headers.allow).toBe("GET, POST");
      const health = await request(`${server.url}/v1/health`, { method: "POST", body: "{}" });
      expect(health.status).toBe(405);
      expect(health.headers.allow).toBe("GET");
    });

    it("answers an unknown path with 404", async () => {
      const res = await request(`${server.url}/v1/nothing-here`);
      expect(res.status).toBe(404);
      expect(res.json().code).toBe("not_found");
    });

    it("answers more than 10,000 events with 413", async () => {
      const events = Array.from({ length: 10_001 }, (_, i) => ({ event_id: `big${i}`, event_type: "t", node_id: "n", timestamp: T0 }));
      const res = await post({ events });
      expect(res.status).toBe(413);
      expect(res.json().message).toContain("at most 10000 events");
    });

    it("answers a body over 8 MiB with 413", async () => {
      const res = await post(" ".repeat(8 * 1024 * 1024 + 1));
      expect(res.status).toBe(413);
    });
  });

  it("serves Prometheus metrics with the cp_ names", async () => {
    const res = await TRANSPORTS[0][1](`${server.url}/metrics`);
    expect(res.status).toBe(200);
    expect(res.headers["content-type"]).toMatch(/^text\/plain/);
    expect(res.text).toMatch(/^cp_events_ingested_total \d+$/m);
    expect(res.text).toMatch(/^cp_events_deduped_total \d+$/m);
    expect(res.text).toContain('cp_rpc_duration_seconds_bucket{le="0.005",rpc="autonomy.v1.EventService/IngestEvents",protocol="rest"}');
    expect(res.text).toMatch(/cp_http_requests_total\{method="POST",route="POST \/v1\/events",status="400"\} \d+/);
    expect(res.text).toMatch(/^cp_store_operation_duration_seconds_count\{operation="ingest_events",outcome="ok"\} [1-9]\d*$/m);
    expect(res.text).toMatch(/^cp_store_operation_duration_seconds_count\{operation="query_events",outcome="ok"\} [1-9]\d*$/m);
  });

  it("keeps metric labels bounded whatever method or path a client sends", async () => {
    for (let i = 0; i < 5; i++) {
      await h2(`${server.url}/random/${i}`, { method: `X-CUSTOM-${i}` });
      await h2(`${server.url}/v1/events/${i}`);
    }
    const text = (await h2(`${server.url}/metrics`)).text;
    expect(text).not.toContain("X-CUSTOM");
    expect(text).not.toContain("/random/");
    expect(text).toMatch(/cp_http_requests_total\{method="OTHER",route="not_found",status="404"\} 5/);
  });

  it("logs one line per request with method, path, route, status and duration", async () => {
    const before = server.log.lines.length;
    await TRANSPORTS[0][1](`${server.url}/v1/health`);
    await new Promise((r) => setTimeout(r, 50));
    const lines = server.log.lines.slice(before).filter((l) => l.msg === "request");
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatchObject({ method: "GET", path: "/v1/health", route: "GET /v1/health", status: 200, code: "ok" });
    expect(typeof lines[0].duration_ms).toBe("number");
  });
});

describe.each([
  ["connect", "2", true],
  ["connect", "2", false],
  ["connect", "1.1", true],
  ["grpc", "2", true],
  ["grpc-web", "2", true],
  ["grpc-web", "1.1", true],
] as const)("RPC over %s, HTTP/%s, binary %s", (protocol, httpVersion, useBinaryFormat) => {
  let server: TestServer;
  beforeAll(async () => (server = await startTestServer("sqlite")));
  afterAll(async () => server.stop());

  it("serves every RPC with typed clients", async () => {
    const api = createOrchestratorClients({ baseUrl: server.url, protocol, httpVersion, useBinaryFormat });
    try {
      const ingested = await api.events.ingestEvents({
        events: [
          { eventId: "r1", eventType: "boot", nodeId: "rpc", timestamp: { seconds: 1n, nanos: 0 }, payload: { a: "b" } },
          { eventId: "r1", eventType: "boot", nodeId: "rpc", timestamp: { seconds: 1n, nanos: 0 } },
        ],
      });
      expect(ingested).toMatchObject({ received: 2, inserted: 1, deduped: 1 });
      const queried = await api.events.queryEvents({ nodeId: "rpc" });
      expect(queried.count).toBe(1);
      expect(queried.events[0].payload).toEqual({ a: "b" });
      expect((await api.health.check({})).status).toBe("ok");
    } finally {
      api.close();
    }
  });

  it("refuses more than 10,000 events with ResourceExhausted", async () => {
    const api = createOrchestratorClients({ baseUrl: server.url, protocol, httpVersion, useBinaryFormat });
    try {
      const events = Array.from({ length: 10_001 }, (_, i) => ({ eventId: `x${i}`, eventType: "t", nodeId: "n", timestamp: { seconds: 1n, nanos: 0 } }));
      const err = await api.events.ingestEvents({ events }).catch((e) => e);
      expect((err as ConnectError).code).toBe(Code.ResourceExhausted);
      expect((await api.events.queryEvents({ nodeId: "n" })).count).toBe(0);
    } finally {
      api.close();
    }
  });

  it("refuses a message over 8 MiB with ResourceExhausted", async () => {
    const api = createOrchestratorClients({ baseUrl: server.url, protocol, httpVersion, useBinaryFormat });
    try {
      const err = await api.events
        .ingestEvents({ events: [{ eventId: "huge", eventType: "t", nodeId: "n", timestamp: { seconds: 1n, nanos: 0 }, payload: { pad: "x".repeat(9 * 1024 * 1024) } }] })
        .catch((e) => e);
      expect((err as ConnectError).code).toBe(Code.ResourceExhausted);
    } finally {
      api.close();
    }
  });

  it("answers invalid input with InvalidArgument naming the field", async () => {
    const api = createOrchestratorClients({ baseUrl: server.url, protocol, httpVersion, useBinaryFormat });
    try {
      const err = await api.events.ingestEvents({ events: [{ eventId: "x", eventType: "t", timestamp: { seconds: 1n, nanos: 0 } }] }).catch((e) => e);
      expect(err).toBeInstanceOf(ConnectError);
      expect((err as ConnectError).code).toBe(Code.InvalidArgument);
      expect((err as ConnectError).rawMessage).toBe("events[0].node_id: required");
    } finally {
      api.close();
    }
  });
});
