/**
 * The edge agent's event spool as a library, for programs on the node that report events
 * without running `edgectl events send`:
 *
 *   import { spoolEvents } from "autonomy-orchestrator/agent/spool";
 *   await spoolEvents([{ event_type: "door_opened", payload: { door: 2 } }], { stateDir });
 *
 * The promise resolves once the events are on the node's disk (fsynced); `edgectl run` ships
 * them. It loads no native module and opens no connection.
 */
import { readState } from "../state.js";
import { normalizeEvent } from "./events.js";
import { pokeShipper } from "./shipper.js";
import { Spool, spoolDir, type SpoolFullPolicy, type SpoolLog } from "./spool.js";

export { Deadletter, type DeadletterEntry } from "./deadletter.js";
export { crc32c } from "./crc32c.js";
export { normalizeEvent, parseEventLines } from "./events.js";
export {
  DEFAULT_SPOOL_MAX_BYTES,
  SPOOL_FULL_POLICIES,
  Spool,
  SpoolFullError,
  spoolDir,
  type SpoolCounters,
  type SpoolFullPolicy,
  type SpoolLog,
  type SpoolOptions,
  type SpoolStatus,
} from "./spool.js";

export interface SpoolEventsOptions {
  /** The agent's state dir (`edgectl --state-dir`). */
  stateDir: string;
  /** node_id of events that name none; default: the node `edgectl enroll` stored. */
  nodeId?: string;
  /** Byte cap of unsent events (default 256 MiB) and what to do when it is reached (default reject). */
  maxBytes?: number;
  full?: SpoolFullPolicy;
  log?: SpoolLog;
}

/**
 * Appends events (proto JSON objects; `event_id` made when absent) to the spool, all or none,
 * and resolves once they are durable. Throws a ValidationError naming `events[i]` for an event
 * the server would refuse, and SpoolFullError when the spool is at its cap or its disk is full.
 */
export async function spoolEvents(events: readonly unknown[], opts: SpoolEventsOptions): Promise<{ count: number; firstSeq: number; lastSeq: number }> {
  const nodeId = opts.nodeId ?? readState(opts.stateDir).nodeId;
  const payloads = events.map((e, i) => normalizeEvent(e, { nodeId }, `events[${i}]`));
  if (payloads.length === 0) return { count: 0, firstSeq: 0, lastSeq: 0 };
  const spool = new Spool({ dir: spoolDir(opts.stateDir), maxBytes: opts.maxBytes, full: opts.full, log: opts.log });
  const { first, last } = await spool.append(payloads);
  await pokeShipper(opts.stateDir);
  return { count: payloads.length, firstSeq: first, lastSeq: last };
}
