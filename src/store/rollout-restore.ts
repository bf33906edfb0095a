import { sql, type SQL } from "drizzle-orm";

/**
 * How far a plan's rollback got, in SQL both dialects run: per restore row, the node is back
 * when, since the rollback, it acked its previous release healthy or reported running it (a
 * node that never left it), or when it had no previous release (its channel's release is its
 * desired one again, nothing to wait for); it failed when it acked that release failed since.
 */
export function restoreProgressSql(planId: string): SQL {
  const back = sql`(m.release_id = ''
      OR (a.state = 'healthy' AND a.reported_release_id = m.release_id AND a.updated_at_ms >= m.moved_at_ms)
      OR (n.reported_release_id = m.release_id AND n.last_seen_ms >= m.moved_at_ms))`;
  return sql`SELECT count(*) AS nodes,
      coalesce(sum(CASE WHEN ${back} THEN 1 ELSE 0 END), 0) AS restored,
      coalesce(sum(CASE WHEN ${back} THEN 0 WHEN a.state IN ('failed', 'rolled_back') AND a.updated_at_ms >= m.moved_at_ms THEN 1 ELSE 0 END), 0) AS failed
    FROM rollout_moves m
    LEFT JOIN node_acks a ON a.release_id = m.release_id AND a.node_id = m.node_id
    LEFT JOIN nodes n ON n.node_id = m.node_id
    WHERE m.plan_id = ${planId} AND m.kind = 'restore'`;
}
