/**
 * The peer: POST /v1/events as a TypeScript developer would write it without this project,
 * with Fastify over HTTP/2 (cleartext) and better-sqlite3, the same schema, validation
 * (required fields, 256-byte ids, RFC 3339 timestamps, 10,000 events), dedupe within the
 * batch and against the store, one durable transaction per batch.
 * Usage: node dist/bench/peer.js DB_FILE  (prints the port it listens on)
 */
import Database from "better-sqlite3";
import Fastify from "fastify";
import { applySchema, durablePragmas, INSERT_SQL } from "./sqlite-schema.js";

interface InEvent {
  event_id: string;
  event_type: string;
  node_id: string;
  timestamp: string;
  lock_fingerprint?: string;
  release_id?: string;
  payload?: Record<string, unknown>;
}

const id = { type: "string", minLength: 1, maxLength: 256 };
const bodySchema = {
  type: "object",
  required: ["events"],
  properties: {
    events: {
      type: "array",
      maxItems: 10000,
      items: {
        type: "object",
        required: ["event_id", "event_type", "node_id", "timestamp"],
        additionalProperties: false,
        properties: {
          event_id: id,
          event_type: id,
          node_id: id,
          timestamp: { type: "string", format: "date-time" },
          lock_fingerprint: { type: "string", maxLength: 256 },
          release_id: { type: "string", maxLength: 256 },
          payload: { type: "object" },
        },
      },
    },
  },
};

const db = new Database(process.argv[2]);
durablePragmas(db);
applySchema(db);
const insert = db.prepare(INSERT_SQL);
const ingest = db.transaction((events: InEvent[], receivedAtMs: number) => {
  let inserted = 0;
  for (const e of events) {
    const ms = Date.parse(e.timestamp);
    inserted += insert.run({
      eventId: e.event_id,
      eventType: e.event_type,
      nodeId: e.node_id,
      tsSeconds: Math.floor(ms / 1000),
      tsNanos: (ms % 1000) * 1e6,
      lockFingerprint: e.lock_fingerprint ?? null,
      releaseId: e.release_id ?? null,
      payload: e.payload === undefined ? null : JSON.stringify(e.payload),
      receivedAtMs,
    }).changes;
  }
  return inserted;
});

const app = Fastify({ http2: true, bodyLimit: 8 * 1024 * 1024 });
app.post<{ Body: { events: InEvent[] } }>("/v1/events", { schema: { body: bodySchema } }, async (req) => {
  const seen = new Set<string>();
  const unique = req.body.events.filter((e) => !seen.has(e.event_id) && seen.add(e.event_id));
  const inserted = ingest(unique, Date.now());
  const received = req.body.events.length;
  return { received, inserted, deduped: received - inserted };
});

const address = await app.listen({ host: "127.0.0.1", port: 0 });
process.stdout.write(`${new URL(address).port}\n`);
