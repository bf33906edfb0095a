/**
 * What `migrate` does with each table of a SQLite data dir. Every table the SQLite schema has
 * must be named here: the copy refuses to start on a database with a table this list does not
 * know (a table added later cannot be left behind unnoticed), and test/migrate.test.ts checks
 * the list against the schema the migrations build.
 */
export type TableRule =
  /** Rows copied as they are, in this order (parents before the rows that refer to them). */
  | { kind: "copy"; step: string }
  /**
   * A projection PostgreSQL keeps by triggers on the copied tables (as SQLite does): it fills
   * itself during the copy and is checked against the source afterwards, never written.
   * `countsOnly`: a table of counters, whose rows at 0 mean nothing (SQLite keeps some that
   * PostgreSQL drops): only the rows with n <> 0 are compared.
   */
  | { kind: "derived"; of: string; countsOnly?: boolean }
  /** Written by the schema migrations themselves (a fixed row); checked, never written. */
  | { kind: "schema" }
  /** Not data of the control plane: the migrations' own bookkeeping, the cutover records. */
  | { kind: "skip"; why: string };

/** The copy order: schema → releases + node_acks → events → rollout plans + status → the rest. */
export const COPY_ORDER = [
  // node_acks refer to releases and nodes.
  ["releases", "releases + node_acks"],
  ["nodes", "releases + node_acks"],
  ["node_acks", "releases + node_acks"],
  ["events", "events"],
  ["rollout_plans", "rollout plans + stage status"],
  ["rollout_status", "rollout plans + stage status"],
  ["rollout_moves", "rollout plans + stage status"],
  ["signing_keys", "the rest"],
  ["audit_records", "the rest"],
  ["rbac_roles", "the rest"],
  ["rbac_bindings", "the rest"],
  ["rbac_tokens", "the rest"],
  ["enrollment_tokens", "the rest"],
  ["node_certificates", "the rest"],
  ["workload_services", "the rest"],
  ["workload_state", "the rest"],
  ["workload_replicas", "the rest"],
  ["workload_nodes", "the rest"],
  ["workload_commands", "the rest"],
  // One row, written by the schema migrations and changed by `autonomy emergency stop|resume`.
  ["emergency_stop", "the rest"],
] as const;

/** Rows the schema migrations themselves write into a copied table: a database holding only these holds no data yet. */
export const SEEDED_ROWS: Readonly<Record<string, number>> = { emergency_stop: 1 };

export const TABLE_RULES: Readonly<Record<string, TableRule>> = {
  ...Object.fromEntries(COPY_ORDER.map(([table, step]) => [table, { kind: "copy", step } satisfies TableRule])),
  node_last_events: { kind: "derived", of: "events" },
  fleet_totals: { kind: "derived", of: "nodes", countsOnly: true },
  fleet_seen: { kind: "derived", of: "nodes", countsOnly: true },
  audit_prune_gate: { kind: "schema" },
  __drizzle_migrations: { kind: "skip", why: "the schema step applies PostgreSQL's own migrations" },
  sqlite_sequence: { kind: "skip", why: "its counters set the PostgreSQL sequences" },
  ha_cutover: { kind: "skip", why: "cutover records are written in PostgreSQL, never copied" },
};

/** Tables SQLite creates by itself (sqlite_stat1 after ANALYZE, ...), never data. */
export function isSqliteInternal(table: string): boolean {
  return table.startsWith("sqlite_") && table !== "sqlite_sequence";
}
