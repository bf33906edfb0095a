import { inject } from "vitest";
import { createTestDatabase } from "./postgres.js";

/** A fresh database named ha_* on the run's PostgreSQL server (or on adminUrl); `drop` removes it. */
export function createHaDatabase(adminUrl: string = inject("postgresAdminUrl")): Promise<{ url: string; name: string; drop: () => Promise<void> }> {
  return createTestDatabase({ prefix: "ha", adminUrl });
}
