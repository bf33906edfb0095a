import { randomBytes } from "node:crypto";
import pg from "pg";
import { inject } from "vitest";

/**
 * A fresh, empty database named `<prefix>_<random>` on the run's PostgreSQL server (or on
 * adminUrl), in the ICU collation of icuLocale when given; `drop` removes it. The prefix tells the tests' databases apart on a shared server.
 */
export async function createTestDatabase(
  opts: { prefix?: string; adminUrl?: string; icuLocale?: string } = {},
): Promise<{ url: string; name: string; drop: () => Promise<void> }> {
  const adminUrl = opts.adminUrl ?? inject("postgresAdminUrl");
  const name = `${opts.prefix ?? "ao_test"}_${randomBytes(6).toString("hex")}`;
  const admin = new pg.Client({ connectionString: adminUrl });
  await admin.connect();
  try {
    // With icuLocale, text compares and sorts by that language's rules unless a query says otherwise.
    const locale = opts.icuLocale === undefined ? "" : ` TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE '${opts.icuLocale}' LOCALE 'C.UTF-8'`;
    await admin.query(`CREATE DATABASE ${name}${locale}`);
  } finally {
    await admin.end();
  }
  const url = new URL(adminUrl);
  url.pathname = `/${name}`;
  return {
    url: url.toString(),
    name,
    async drop() {
      const client = new pg.Client({ connectionString: adminUrl });
      await client.connect();
      try {
        await client.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      } finally {
        await client.end();
      }
    },
  };
}
