import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { Code, ConnectError, createClient, createRouterTransport } from "@connectrpc/connect";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { EventService, type Event, type OrchestratorClients } from "../clients/index.js";
import { Shipper, refusedIndex, retryHintMs } from "../src/agent/spool/shipper.js";
import { Spool, spoolDir } from "../src/agent/spool/spool.js";
import { memoryLogger } from "./helpers/server.js";

/** An EventService whose answer to each call is decided by `answer` (undefined: accepted). */
function fakeApi(answer: (events: Event[], call: number) => ConnectError | undefined) {
  const stored: string[] = [];
  const calls: number[] = [];
  const transport = createRouterTransport(({ service }) => {
    service(EventService, {
      ingestEvents(req) {
        calls.push(req.events.length);
        const err = answer(req.events, calls.length);
        if (err) throw err;
        stored.push(...req.events.map((e) => e.eventId));
        return { received: req.events.length, inserted: req.events.length, deduped: 0 };
      },
      queryEvents() {
        return { events: [], count: 0 };
      },
    });
  });
  return { api: { events: createClient(EventService, transport) } as unknown as OrchestratorClients, stored, calls };
}

describe("the shipper", () => {
  let stateDir: string;
  beforeEach(() => (stateDir = mkdtempSync(path.join(os.tmpdir(), "ao-shipper-"))));
  afterEach(() => rmSync(stateDir, { recursive: true, force: true }));

  const event = (i: number, type = "t") => Buffer.from(JSON.stringify({ event_id: `e-${i}`, event_type: type, node_id: "n", timestamp: "2026-01-01T00:00:00Z" }));
  const spool = () => new Spool({ dir: spoolDir(stateDir) });
  const shipAll = async (shipper: Shipper) => {
    while ((await shipper.step()) === "sent");
  };

  it.each([
    ["events[3].event_type: longer than 256 bytes", 3],
    ["events[12].node_id: required", 12],
    ["event_type: required", undefined],
  ])("reads the refused index of %j", (message, index) => expect(refusedIndex(message)).toBe(index));

  it("reads Retry-After in seconds and as a date, on throttled and unavailable answers only", () => {
    const hinted = (code: Code, value: string) => new ConnectError("slow down", code, new Headers({ "retry-after": value }));
    expect(retryHintMs(hinted(Code.ResourceExhausted, "2"))).toBe(2000);
    expect(retryHintMs(hinted(Code.Unavailable, new Date(Date.now() + 5000).toUTCString()))).toBeGreaterThan(3000);
    expect(retryHintMs(hinted(Code.InvalidArgument, "2"))).toBeUndefined();
    expect(retryHintMs(new ConnectError("too large", Code.ResourceExhausted))).toBeUndefined();
  });

  it("splits a batch around the event a 400 names: the rest is stored in order, that one deadlettered", async () => {
    await spool().append(Array.from({ length: 10 }, (_, i) => event(i, i === 4 ? "x".repeat(300) : "t")));
    const { api, stored } = fakeApi((events) => {
      const bad = events.findIndex((e) => e.eventType.length > 256);
      return bad < 0 ? undefined : new ConnectError(`events[${bad}].event_type: longer than 256 bytes`, Code.InvalidArgument);
    });
    const shipper = new Shipper({ api, stateDir, logger: memoryLogger().logger, signal: new AbortController().signal });
    await shipAll(shipper);
    expect(stored).toEqual(["e-0", "e-1", "e-2", "e-3", "e-5", "e-6", "e-7", "e-8", "e-9"]);
    const [entry] = shipper.spool.deadletter.list();
    expect(entry).toMatchObject({ id: "ev-5", code: "invalid_argument", reason: "event.event_type: longer than 256 bytes", event: { event_id: "e-4" } });
    expect((await shipper.spool.status()).unsent_frames).toBe(0);
  });

  it("halves a batch refused as too large until it fits", async () => {
    await spool().append(Array.from({ length: 8 }, (_, i) => event(i)));
    const { api, stored, calls } = fakeApi((events) => (events.length > 2 ? new ConnectError("body too large", Code.ResourceExhausted) : undefined));
    await shipAll(new Shipper({ api, stateDir, logger: memoryLogger().logger, signal: new AbortController().signal }));
    expect(stored).toEqual(Array.from({ length: 8 }, (_, i) => `e-${i}`));
    expect(calls).toEqual([8, 4, 2, 2, 4, 2, 2]);
  });

  it("waits as a throttled answer's Retry-After says and sends again, deadlettering nothing", async () => {
    await spool().append([event(1), event(2)]);
    const { api, stored, calls } = fakeApi((_e, call) =>
      call <= 2 ? new ConnectError("throttled", Code.ResourceExhausted, new Headers({ "retry-after": "0.05" })) : undefined,
    );
    const { logger, log } = memoryLogger();
    await shipAll(new Shipper({ api, stateDir, logger, signal: new AbortController().signal }));
    expect([stored, calls]).toEqual([["e-1", "e-2"], [2, 2, 2]]);
    expect(log.lines.filter((l) => /slow down/.test(String(l.msg)))).toHaveLength(2);
  });

  it("retries a server that is down without end, and sends everything once it is back", async () => {
    await spool().append([event(1), event(2), event(3)]);
    const { api, stored } = fakeApi((_e, call) => (call <= 4 ? new ConnectError("connection refused", Code.Unavailable) : undefined));
    await shipAll(new Shipper({ api, stateDir, logger: memoryLogger().logger, signal: new AbortController().signal, retryBudget: 2 }));
    expect(stored).toEqual(["e-1", "e-2", "e-3"]);
  });

  it("deadletters a batch refused for another reason past its retry budget, and ships what follows", async () => {
    await spool().append([event(1, "forbidden"), event(2, "forbidden")]);
    await spool().append([event(3)]);
    const { api, stored, calls } = fakeApi((events) =>
      events.some((e) => e.eventType === "forbidden") ? new ConnectError("a node may send only its own events", Code.PermissionDenied) : undefined,
    );
    const shipper = new Shipper({ api, stateDir, logger: memoryLogger().logger, signal: new AbortController().signal, retryBudget: 2, batchEvents: 2 });
    await shipAll(shipper);
    expect(calls).toEqual([2, 2, 1]);
    expect(stored).toEqual(["e-3"]);
    expect(shipper.spool.deadletter.list().map((e) => [e.id, e.code, e.attempts])).toEqual([
      ["ev-1", "permission_denied", 2],
      ["ev-2", "permission_denied", 2],
    ]);
  });
});
