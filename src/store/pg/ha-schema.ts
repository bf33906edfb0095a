import { bigint, integer, pgTable, text, timestamp } from "drizzle-orm/pg-core";

/**
 * Leadership among the replicas of one database (src/ha/): one row per epoch, the newest the
 * current one. A leader renews its row (renewed_at, by the database's clock) and every
 * leader-only write checks, in its own transaction, that its epoch is the newest, not resigned
 * and its lease not run out. lease_ms is the lease the holder was started with.
 * PostgreSQL only (SQLite runs standalone, its own leader): not mirrored in ../sqlite/schema.ts.
 */
export const leaderEpochs = pgTable("leader_epochs", {
  epoch: bigint("epoch", { mode: "number" }).primaryKey(),
  holderId: text("holder_id").notNull(),
  acquiredAt: timestamp("acquired_at", { withTimezone: true, precision: 6 }).notNull(),
  renewedAt: timestamp("renewed_at", { withTimezone: true, precision: 6 }).notNull(),
  resignedAt: timestamp("resigned_at", { withTimezone: true, precision: 6 }),
  leaseMs: integer("lease_ms").notNull(),
  /** Why the epoch ended: resigned, superseded (lease ran out or lock connection gone), failover. */
  endReason: text("end_reason"),
});
