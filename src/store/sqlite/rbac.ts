import { and, asc, count, eq } from "drizzle-orm";
import type { BetterSQLite3Database } from "drizzle-orm/better-sqlite3";
import type { BindingRow, RoleRow, TokenRow } from "../rbac-rows.js";
import type { AuditRow } from "../rollout-rows.js";
import type { AppendAudit } from "./audit-writes.js";
import type { WriteHandlers } from "./write-ops.js";
import { requireToken } from "../write-rules.js";
import { rbacBindings, rbacRoles, rbacTokens } from "./schema.js";

/** An RBAC write, run by the writer thread with its audit record. */
export type RbacWrite =
  | { op: "putRole"; row: RoleRow; audit: AuditRow }
  | { op: "assignRole"; row: BindingRow; audit: AuditRow }
  | { op: "revokeRole"; principal: string; role: string; audit: AuditRow }
  | { op: "createToken"; row: TokenRow; audit: AuditRow }
  | { op: "revokeToken"; tokenId: string; atMs: number; audit: AuditRow };

/** What each RBAC write answers. */
export interface RbacWriteResults {
  putRole: { role: RoleRow };
  assignRole: { binding: BindingRow };
  revokeRole: { revoked: boolean };
  createToken: { token: TokenRow };
  revokeToken: { token: TokenRow };
}

export function prepareRbacWrites(db: BetterSQLite3Database, audit: AppendAudit) {
  return {
    putRole: (w) => {
      db.insert(rbacRoles).values(w.row).onConflictDoUpdate({ target: rbacRoles.name, set: { permissions: w.row.permissions } }).run();
      audit([w.audit]);
      return { role: db.select().from(rbacRoles).where(eq(rbacRoles.name, w.row.name)).get()! };
    },
    assignRole: (w) => {
      db.insert(rbacBindings).values(w.row).onConflictDoNothing().run();
      audit([w.audit]);
      return { binding: db.select().from(rbacBindings).where(and(eq(rbacBindings.principal, w.row.principal), eq(rbacBindings.role, w.row.role))).get()! };
    },
    revokeRole: (w) => {
      const removed = db.delete(rbacBindings).where(and(eq(rbacBindings.principal, w.principal), eq(rbacBindings.role, w.role))).run().changes;
      if (removed > 0) audit([w.audit]);
      return { revoked: removed > 0 };
    },
    createToken: (w) => {
      db.insert(rbacTokens).values(w.row).run();
      audit([w.audit]);
      return { token: w.row };
    },
    revokeToken: (w) => {
      const token = requireToken(w.tokenId, db.select().from(rbacTokens).where(eq(rbacTokens.tokenId, w.tokenId)).get());
      if (token.revokedAtMs === null) {
        db.update(rbacTokens).set({ revokedAtMs: w.atMs }).where(eq(rbacTokens.tokenId, w.tokenId)).run();
        audit([w.audit]);
      }
      return { token: db.select().from(rbacTokens).where(eq(rbacTokens.tokenId, w.tokenId)).get()! };
    },
  } satisfies WriteHandlers<RbacWrite, RbacWriteResults>;
}

export function prepareRbacReads(db: BetterSQLite3Database) {
  return {
    listRoles: (): RoleRow[] => db.select().from(rbacRoles).orderBy(asc(rbacRoles.name)).all(),
    listBindings: (principal?: string): BindingRow[] =>
      db
      .select()
      .from(rbacBindings)
      .where(principal === undefined ? undefined : eq(rbacBindings.principal, principal))
      .orderBy(asc(rbacBindings.principal), asc(rbacBindings.role))
      .all(),
    listTokens: (): TokenRow[] => db.select().from(rbacTokens).orderBy(asc(rbacTokens.createdAtMs)).all(),
    tokenByHash: (hash: string): TokenRow | undefined => db.select().from(rbacTokens).where(eq(rbacTokens.tokenHash, hash)).get(),
    rbacCounts: (): { bindings: number; tokens: number } => ({
      bindings: db.select({ n: count() }).from(rbacBindings).get()!.n,
      tokens: db.select({ n: count() }).from(rbacTokens).get()!.n,
    }),
  };
}
