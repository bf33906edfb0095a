import { and, asc, count, eq } from "drizzle-orm";
import type { NodePgDatabase } from "drizzle-orm/node-postgres";
import { requireToken } from "../write-rules.js";
import type { BindingRow, RoleRow, TokenRow } from "../rbac-rows.js";
import type { AuditRow } from "../rollout-rows.js";
import { appendAudit } from "./rollouts.js";
import { rbacBindings, rbacRoles, rbacTokens } from "./schema.js";

type Db = NodePgDatabase;

/** The RBAC operations of the PostgreSQL store; each write is one transaction with its audit record. */
export const pgRbac = {
  putRole: (db: Db, row: RoleRow, audit: AuditRow) =>
    db.transaction(async (tx) => {
      const [stored] = await tx.insert(rbacRoles).values(row).onConflictDoUpdate({ target: rbacRoles.name, set: { permissions: row.permissions } }).returning();
      await appendAudit(tx, [audit]);
      return stored;
    }),
  assignRole: (db: Db, row: BindingRow, audit: AuditRow) =>
    db.transaction(async (tx) => {
      await tx.insert(rbacBindings).values(row).onConflictDoNothing();
      await appendAudit(tx, [audit]);
      const [stored] = await tx.select().from(rbacBindings).where(and(eq(rbacBindings.principal, row.principal), eq(rbacBindings.role, row.role)));
      return stored;
    }),
  revokeRole: (db: Db, principal: string, role: string, audit: AuditRow) =>
    db.transaction(async (tx) => {
      const removed = await tx.delete(rbacBindings).where(and(eq(rbacBindings.principal, principal), eq(rbacBindings.role, role))).returning();
      if (removed.length > 0) await appendAudit(tx, [audit]);
      return removed.length > 0;
    }),
  createToken: (db: Db, row: TokenRow, audit: AuditRow) =>
    db.transaction(async (tx) => {
      await tx.insert(rbacTokens).values(row);
      await appendAudit(tx, [audit]);
      return row;
    }),
  revokeToken: (db: Db, tokenId: string, atMs: number, audit: AuditRow) =>
    db.transaction(async (tx) => {
      const token = requireToken(tokenId, (await tx.select().from(rbacTokens).where(eq(rbacTokens.tokenId, tokenId)).for("update"))[0]);
      if (token.revokedAtMs !== null) return token;
      const [updated] = await tx.update(rbacTokens).set({ revokedAtMs: atMs }).where(eq(rbacTokens.tokenId, tokenId)).returning();
      await appendAudit(tx, [audit]);
      return updated;
    }),
  listRoles: (db: Db): Promise<RoleRow[]> => db.select().from(rbacRoles).orderBy(asc(rbacRoles.name)),
  listBindings: (db: Db, principal?: string): Promise<BindingRow[]> =>
    db
      .select()
      .from(rbacBindings)
      .where(principal === undefined ? undefined : eq(rbacBindings.principal, principal))
      .orderBy(asc(rbacBindings.principal), asc(rbacBindings.role)),
  listTokens: (db: Db): Promise<TokenRow[]> => db.select().from(rbacTokens).orderBy(asc(rbacTokens.createdAtMs)),
  tokenByHash: async (db: Db, hash: string): Promise<TokenRow | undefined> => (await db.select().from(rbacTokens).where(eq(rbacTokens.tokenHash, hash)))[0],
  rbacCounts: async (db: Db) => {
    const [b] = await db.select({ n: count() }).from(rbacBindings);
    const [t] = await db.select({ n: count() }).from(rbacTokens);
    return { bindings: Number(b.n), tokens: Number(t.n) };
  },
};
