import type { Metrics } from "../observability/metrics.js";
import type { Store } from "./store.js";

async function timed<T>(metrics: Metrics, operation: string, fn: () => Promise<T>): Promise<T> {
  const end = metrics.storeDuration.startTimer({ operation });
  try {
    const result = await fn();
    end({ outcome: "ok" });
    return result;
  } catch (err) {
    end({ outcome: "error" });
    throw err;
  }
}

/** The store with each operation's latency and outcome recorded in cp_store_operation_duration_seconds. */
export function instrumentStore(store: Store, metrics: Metrics): Store {
  return {
    dialect: store.dialect,
    ingestEvents: (events) => timed(metrics, "ingest_events", () => store.ingestEvents(events)),
    queryEvents: (query) => timed(metrics, "query_events", () => store.queryEvents(query)),
    close: () => store.close(),
  };
}
