import type { FleetOrderKey, FleetSearch } from "../../src/domain/fleet-query.js";

/**
 * The fleet search as SearchFleetNodes answered it before the stores did it in SQL: every
 * node's row read, then filtered, ordered and cut in memory. The stores' answers are checked
 * against it (test/fleet-search-contract.test.ts). Offsets only: a keyset page is the
 * reference's page at the offset its token carries.
 */

/** One node as the fleet search sees it: the columns it filters and orders by. */
export interface FleetSearchRow {
  nodeId: string;
  channel: string;
  lifecycle: string;
  /** Undefined when the node was never seen. */
  lastSeenMs: number | undefined;
  reportedReleaseId: string;
  desiredReleaseId: string;
  drift: boolean;
  labels: Record<string, string>;
}

/** Code point order (UTF-8 byte order), as both stores compare text: not UTF-16's for astral characters. */
function byText(a: string, b: string): number {
  const x = [...a].map((c) => c.codePointAt(0)!);
  const y = [...b].map((c) => c.codePointAt(0)!);
  for (let i = 0; i < Math.min(x.length, y.length); i++) if (x[i] !== y[i]) return x[i] - y[i];
  return x.length - y.length;
}

function compareBy(key: FleetOrderKey, a: FleetSearchRow, b: FleetSearchRow): number {
  switch (key) {
    case "node_id":
      return byText(a.nodeId, b.nodeId);
    case "channel":
      return byText(a.channel, b.channel);
    case "lifecycle":
      return byText(a.lifecycle, b.lifecycle);
    case "reported_release_id":
      return byText(a.reportedReleaseId, b.reportedReleaseId);
    case "desired_release_id":
      return byText(a.desiredReleaseId, b.desiredReleaseId);
    case "last_seen":
      // Never seen sorts before any time.
      return (a.lastSeenMs ?? -Infinity) - (b.lastSeenMs ?? -Infinity) || 0;
  }
}

/**
 * Filters, orders and cuts the rows: every filter must match; ties of the order key are
 * broken by node id (ascending or descending with the rest), so pages never overlap.
 */
export function searchFleet<R extends FleetSearchRow>(rows: readonly R[], q: FleetSearch): { page: R[]; total: number; nextOffset?: number } {
  const matching = rows.filter(
    (r) =>
      (q.lifecycle === undefined || r.lifecycle === q.lifecycle) &&
      (q.drift === undefined || r.drift === q.drift) &&
      q.labels.every(([k, v]) => r.labels[k] === v),
  );
  const sign = q.descending ? -1 : 1;
  matching.sort((a, b) => sign * (compareBy(q.orderBy, a, b) || byText(a.nodeId, b.nodeId)));
  const page = matching.slice(q.offset, q.offset + q.pageSize);
  const end = q.offset + page.length;
  return { page, total: matching.length, nextOffset: end < matching.length ? end : undefined };
}
