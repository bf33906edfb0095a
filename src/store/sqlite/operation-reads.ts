import { asc, inArray } from "drizzle-orm";
import type { BetterSQLite3Database } from "drizzle-orm/better-sqlite3";
import type { NodeAck } from "../../../gen/autonomy/v1/releases_pb.js";
import { rowToAck, rowToNode } from "../fleet-rows.js";
import { divergenceWhere, type DivergedRow, type DivergenceQuery, type EmergencyStopRow } from "../operation-rows.js";
import { prepareStopRead } from "./operation-writes.js";
import { nodeAcks, nodes } from "./schema.js";

/** The operations reads of the SQLite store, on the reader connection. */
export function prepareOperationReads(db: BetterSQLite3Database) {
  const stop = prepareStopRead(db);
  return {
    emergencyStop: (): EmergencyStopRow => stop(),
    divergedNodes: (q: DivergenceQuery): DivergedRow[] =>
      db
        .select()
        .from(nodes)
        .where(divergenceWhere(nodes, q))
        .orderBy(asc(nodes.divergedSinceMs), asc(nodes.nodeId))
        .limit(q.limit)
        .all()
        .map((r) => ({ node: rowToNode(r), desiredReleaseId: r.desiredReleaseId ?? "", divergedSinceMs: r.divergedSinceMs! })),
    acksOfNodes: (ids: readonly string[]): NodeAck[] =>
      ids.length === 0 ? [] : db.select().from(nodeAcks).where(inArray(nodeAcks.nodeId, [...ids])).all().map(rowToAck),
  };
}
