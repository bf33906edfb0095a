import { enrollmentTokenState } from "../../domain/enrollment.js";
import { desc, eq } from "drizzle-orm";
import type { NodePgDatabase } from "drizzle-orm/node-postgres";
import type { Node } from "../../../gen/autonomy/v1/nodes_pb.js";
import type { EnrollmentTokenRow, NodeCertificateRow, TokenEnrollment } from "../enrollment-rows.js";
import type { AuditRow } from "../rollout-rows.js";
import { refuseRevokingUsedToken, requireEnrollmentToken, requireNode, requireUnspentEnrollmentToken } from "../write-rules.js";
import { pgFleet } from "./fleet.js";
import { appendAudit } from "./rollouts.js";
import { enrollmentTokens, nodeCertificates, nodes } from "./schema.js";

type Db = NodePgDatabase;

const tokenForUpdate = async (tx: Db, tokenId: string) =>
  (await tx.select().from(enrollmentTokens).where(eq(enrollmentTokens.tokenId, tokenId)).for("update"))[0];

/** The enrolment operations of the PostgreSQL store; each write is one transaction with its audit record. */
export const pgEnrollment = {
  createEnrollmentToken: (db: Db, row: EnrollmentTokenRow, audit: AuditRow) =>
    db.transaction(async (tx) => {
      await tx.insert(enrollmentTokens).values(row);
      await appendAudit(tx, [audit]);
      return row;
    }),
  revokeEnrollmentToken: (db: Db, tokenId: string, atMs: number, audit: AuditRow) =>
    db.transaction(async (tx) => {
      const token = requireEnrollmentToken(tokenId, await tokenForUpdate(tx, tokenId));
      refuseRevokingUsedToken(token);
      if (enrollmentTokenState(token, atMs) !== "unused") return token;
      const [updated] = await tx.update(enrollmentTokens).set({ revokedAtMs: atMs }).where(eq(enrollmentTokens.tokenId, tokenId)).returning();
      await appendAudit(tx, [audit]);
      return updated;
    }),
  /** The token row is locked first: of two enrolments with one token, the second reads it spent. */
  enrollWithToken: (db: Db, e: TokenEnrollment): Promise<Node> =>
    db.transaction(async (tx) => {
      requireUnspentEnrollmentToken(await tokenForUpdate(tx, e.tokenId), e.atMs);
      await tx.update(enrollmentTokens).set({ usedAtMs: e.atMs, certificateSerial: e.certificate.serial }).where(eq(enrollmentTokens.tokenId, e.tokenId));
      await tx.insert(nodeCertificates).values(e.certificate);
      const node = await pgFleet.enrollNode(tx, e.enrollment, e.atMs);
      await appendAudit(tx, [e.audit]);
      return node;
    }),
  recordCertificateRenewal: (db: Db, row: NodeCertificateRow, audit: AuditRow) =>
    db.transaction(async (tx) => {
      requireNode(row.nodeId, (await tx.select({ id: nodes.nodeId }).from(nodes).where(eq(nodes.nodeId, row.nodeId)))[0]);
      await tx.insert(nodeCertificates).values(row);
      await appendAudit(tx, [audit]);
    }),
  listEnrollmentTokens: (db: Db, q: { nodeId?: string }): Promise<EnrollmentTokenRow[]> =>
    db
      .select()
      .from(enrollmentTokens)
      .where(q.nodeId === undefined ? undefined : eq(enrollmentTokens.nodeId, q.nodeId))
      .orderBy(desc(enrollmentTokens.createdAtMs), desc(enrollmentTokens.tokenId)),
  enrollmentTokenByHash: async (db: Db, hash: string): Promise<EnrollmentTokenRow | undefined> =>
    (await db.select().from(enrollmentTokens).where(eq(enrollmentTokens.tokenHash, hash)))[0],
  nodeCertificates: (db: Db, nodeId: string): Promise<NodeCertificateRow[]> =>
    db.select().from(nodeCertificates).where(eq(nodeCertificates.nodeId, nodeId)).orderBy(desc(nodeCertificates.issuedAtMs), desc(nodeCertificates.serial)),
};
