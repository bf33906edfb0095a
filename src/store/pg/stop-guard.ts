import { eq } from "drizzle-orm";
import type { NodePgDatabase } from "drizzle-orm/node-postgres";
import { NO_STOP, type EmergencyStopRow } from "../operation-rows.js";
import { emergencyStop } from "./schema.js";

type Db = NodePgDatabase;

export const STOP_COLUMNS = {
  active: emergencyStop.active,
  sinceMs: emergencyStop.sinceMs,
  stoppedBy: emergencyStop.stoppedBy,
  reason: emergencyStop.reason,
  resumedAtMs: emergencyStop.resumedAtMs,
  resumedBy: emergencyStop.resumedBy,
  resumeReason: emergencyStop.resumeReason,
};

/**
 * Reads the stop inside a write's transaction. FOR SHARE: a stop beginning now (which takes
 * the row FOR UPDATE) waits for this transaction, or this one waits for the stop's commit and
 * then reads it; so no write the stop forbids commits beside it, on any replica.
 */
export async function stopForWrite(tx: Db): Promise<EmergencyStopRow> {
  const [row] = await tx.select(STOP_COLUMNS).from(emergencyStop).where(eq(emergencyStop.id, 1)).for("share");
  return row ?? NO_STOP;
}

