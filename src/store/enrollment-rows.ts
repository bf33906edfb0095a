import type { AuditRow } from "../domain/audit.js";
import type { RowOf } from "./schema-check.js";
import type { Enrollment } from "./fleet-rows.js";

/** An enrolment token as both dialects hold it (its hash, never the token). */
export type EnrollmentTokenRow = RowOf<"enrollmentTokens">;
/** A certificate the server's CA signed for a node. */
export type NodeCertificateRow = RowOf<"nodeCertificates">;

/**
 * An enrolment by token, written in one transaction: the token is spent (only while it is
 * still unused, unrevoked and unexpired at atMs), the certificate recorded, the node
 * registered or updated, and the audit record appended.
 */
export interface TokenEnrollment {
  tokenId: string;
  atMs: number;
  enrollment: Enrollment;
  certificate: NodeCertificateRow;
  audit: AuditRow;
}
