import { enrollmentTokenState } from "../../domain/enrollment.js";
import { desc, eq } from "drizzle-orm";
import type { BetterSQLite3Database } from "drizzle-orm/better-sqlite3";
import type { EnrollmentTokenRow, NodeCertificateRow, TokenEnrollment } from "../enrollment-rows.js";
import type { NodeRow } from "../fleet-rows.js";
import type { AuditRow } from "../rollout-rows.js";
import type { Enrollment } from "../store.js";
import { refuseRevokingUsedToken, requireEnrollmentToken, requireNode, requireUnspentEnrollmentToken } from "../write-rules.js";
import type { AppendAudit } from "./audit-writes.js";
import type { WriteHandlers } from "./write-ops.js";
import { enrollmentTokens, nodeCertificates, nodes } from "./schema.js";

/** An enrolment write, run by the writer thread with its audit record. */
export type EnrollmentWrite =
  | { op: "createEnrollmentToken"; row: EnrollmentTokenRow; audit: AuditRow }
  | { op: "revokeEnrollmentToken"; tokenId: string; atMs: number; audit: AuditRow }
  | { op: "enrollWithToken"; enrollment: TokenEnrollment }
  | { op: "recordCertificateRenewal"; row: NodeCertificateRow; audit: AuditRow };

/** What each enrolment write answers. */
export interface EnrollmentWriteResults {
  createEnrollmentToken: { token: EnrollmentTokenRow };
  revokeEnrollmentToken: { token: EnrollmentTokenRow };
  enrollWithToken: { node: NodeRow };
  recordCertificateRenewal: { done: true };
}

/**
 * The enrolment writes of the SQLite store; `enrollNode` is the fleet write that registers a
 * node, run in the same transaction so a token is spent only with the node it enrols.
 */
export function prepareEnrollmentWrites(db: BetterSQLite3Database, audit: AppendAudit, enrollNode: (enrollment: Enrollment, nowMs: number) => NodeRow) {
  const tokenById = (id: string) => db.select().from(enrollmentTokens).where(eq(enrollmentTokens.tokenId, id)).get();
  return {
    createEnrollmentToken: (w) => {
      db.insert(enrollmentTokens).values(w.row).run();
      audit([w.audit]);
      return { token: w.row };
    },
    revokeEnrollmentToken: (w) => {
      const token = requireEnrollmentToken(w.tokenId, tokenById(w.tokenId));
      refuseRevokingUsedToken(token);
      if (enrollmentTokenState(token, w.atMs) === "unused") {
        db.update(enrollmentTokens).set({ revokedAtMs: w.atMs }).where(eq(enrollmentTokens.tokenId, w.tokenId)).run();
        audit([w.audit]);
      }
      return { token: tokenById(w.tokenId)! };
    },
    enrollWithToken: ({ enrollment: e }) => {
      requireUnspentEnrollmentToken(tokenById(e.tokenId), e.atMs);
      db.update(enrollmentTokens).set({ usedAtMs: e.atMs, certificateSerial: e.certificate.serial }).where(eq(enrollmentTokens.tokenId, e.tokenId)).run();
      db.insert(nodeCertificates).values(e.certificate).run();
      const node = enrollNode(e.enrollment, e.atMs);
      audit([e.audit]);
      return { node };
    },
    recordCertificateRenewal: (w) => {
      requireNode(w.row.nodeId, db.select({ id: nodes.nodeId }).from(nodes).where(eq(nodes.nodeId, w.row.nodeId)).get());
      db.insert(nodeCertificates).values(w.row).run();
      audit([w.audit]);
      return { done: true as const };
    },
  } satisfies WriteHandlers<EnrollmentWrite, EnrollmentWriteResults>;
}

export function prepareEnrollmentReads(db: BetterSQLite3Database) {
  return {
    listEnrollmentTokens: (q: { nodeId?: string }): EnrollmentTokenRow[] =>
      db
        .select()
        .from(enrollmentTokens)
        .where(q.nodeId === undefined ? undefined : eq(enrollmentTokens.nodeId, q.nodeId))
        .orderBy(desc(enrollmentTokens.createdAtMs), desc(enrollmentTokens.tokenId))
        .all(),
    enrollmentTokenByHash: (hash: string): EnrollmentTokenRow | undefined => db.select().from(enrollmentTokens).where(eq(enrollmentTokens.tokenHash, hash)).get(),
    nodeCertificates: (nodeId: string): NodeCertificateRow[] =>
      db.select().from(nodeCertificates).where(eq(nodeCertificates.nodeId, nodeId)).orderBy(desc(nodeCertificates.issuedAtMs), desc(nodeCertificates.serial)).all(),
  };
}
