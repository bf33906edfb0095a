/**
 * Enrolment without long-lived secrets: one-time enrolment tokens (only their hash is stored),
 * the rules a certificate signing request must meet, and when a node certificate is renewed.
 * Pure: no I/O, no clock of its own.
 */
import { randomBytes } from "node:crypto";
import { ValidationError } from "./errors.js";
import { hashToken } from "./identity.js";

/** Every enrolment token starts with this (bearer tokens start with ao_). */
export const ENROLLMENT_TOKEN_PREFIX = "aoe_";
/** Characters of a token's secret: 32 random bytes, base64url. */
const SECRET_CHARS = 43;

export const DEFAULT_ENROLLMENT_TTL_SECONDS = 15 * 60;
export const MAX_ENROLLMENT_TTL_SECONDS = 7 * 86_400;

/** A node id a certificate can name: its CN, and a file name on the node. */
const CERT_NODE_ID = /^[A-Za-z0-9._-]{1,128}$/;

export function checkCertNodeId(nodeId: string, field = "node_id"): void {
  if (nodeId === "") throw new ValidationError(field, "required");
  if (!CERT_NODE_ID.test(nodeId)) throw new ValidationError(field, `"${nodeId}": a certificate names it, so 1 to 128 letters, digits, dots, dashes or underscores`);
}

export function checkEnrollmentTtl(ttlSeconds: number | undefined): number {
  const ttl = ttlSeconds ?? DEFAULT_ENROLLMENT_TTL_SECONDS;
  if (!Number.isInteger(ttl) || ttl < 1 || ttl > MAX_ENROLLMENT_TTL_SECONDS) {
    throw new ValidationError("ttl_seconds", `must be 1 second to 7 days (${MAX_ENROLLMENT_TTL_SECONDS} seconds)`);
  }
  return ttl;
}

/**
 * A new token: `aoe_<node id>_<secret>`. The node id in it lets `edgectl enroll --token T` build
 * the request for the right node without being told; the server never trusts it (the token is
 * looked up by its hash, and the hash covers the node id too).
 */
export function newEnrollmentToken(nodeId: string): { token: string; hash: string; id: string } {
  const token = `${ENROLLMENT_TOKEN_PREFIX}${nodeId}_${randomBytes(32).toString("base64url")}`;
  return { token, hash: hashToken(token), id: randomBytes(6).toString("hex") };
}

/** The node id a token names, or undefined when it is not shaped like one. */
export function nodeIdOfEnrollmentToken(token: string): string | undefined {
  if (!token.startsWith(ENROLLMENT_TOKEN_PREFIX)) return undefined;
  const body = token.slice(ENROLLMENT_TOKEN_PREFIX.length);
  if (body.length < SECRET_CHARS + 2 || body[body.length - SECRET_CHARS - 1] !== "_") return undefined;
  const nodeId = body.slice(0, body.length - SECRET_CHARS - 1);
  return CERT_NODE_ID.test(nodeId) && /^[A-Za-z0-9_-]+$/.test(body.slice(-SECRET_CHARS)) ? nodeId : undefined;
}

/** What the store keeps of a token, as far as its state goes. */
export interface EnrollmentTokenFacts {
  tokenId: string;
  nodeId: string;
  expiresAtMs: number;
  usedAtMs: number | null;
  revokedAtMs: number | null;
}

export const ENROLLMENT_TOKEN_STATES = ["unused", "used", "expired", "revoked"] as const;
export type EnrollmentTokenState = (typeof ENROLLMENT_TOKEN_STATES)[number];

/** A token's state at a time: used and revoked stay so; an unused one expires at expires_at. */
export function enrollmentTokenState(t: EnrollmentTokenFacts, nowMs: number): EnrollmentTokenState {
  if (t.usedAtMs !== null) return "used";
  if (t.revokedAtMs !== null) return "revoked";
  return t.expiresAtMs <= nowMs ? "expired" : "unused";
}

/** Why a token cannot enrol a node now (for an `unauthenticated` answer), or undefined when it can. */
export function enrollmentTokenRefusal(t: EnrollmentTokenFacts | undefined, nowMs: number): string | undefined {
  if (!t) return "the enrolment token is unknown (ask an operator for a new one: autonomy node enrollment-token create)";
  const iso = (ms: number) => new Date(ms).toISOString();
  switch (enrollmentTokenState(t, nowMs)) {
    case "used":
      return `enrolment token ${t.tokenId} was used already, at ${iso(t.usedAtMs!)}: a token enrols once; ask an operator for a new one`;
    case "revoked":
      return `enrolment token ${t.tokenId} was revoked at ${iso(t.revokedAtMs!)}`;
    case "expired":
      return `enrolment token ${t.tokenId} expired at ${iso(t.expiresAtMs)}; ask an operator for a new one`;
    default:
      return undefined;
  }
}

/** What a certificate signing request asks for, as far as whom it names goes. */
export interface CsrNames {
  commonNames: readonly string[];
  organizationalUnits: readonly string[];
  /** Subject alternative names, "dns:robot-7", "uri:...". */
  altNames: readonly string[];
}

/**
 * Why a request may not be signed for a node (for a `permission_denied` answer), or undefined.
 * Its subject must name the node (one CN, the node id; an OU, if any, "node"); alternative
 * names, if any, must be the node id as a DNS name. The certificate signed never copies them:
 * its subject is the CA's own node profile (CN=<node id>, OU=node, O=autonomy).
 */
export function csrNodeMismatch(names: CsrNames, nodeId: string): string | undefined {
  if (names.commonNames.length !== 1) {
    return `the certificate signing request must name the node in exactly one CN, and names ${names.commonNames.length === 0 ? "none" : names.commonNames.map((n) => `"${n}"`).join(", ")}`;
  }
  const cn = names.commonNames[0];
  if (cn !== nodeId) return `the certificate signing request is for node "${cn}", but this credential enrols node "${nodeId}"`;
  const ou = names.organizationalUnits.find((u) => u !== "node");
  if (ou !== undefined) return `the certificate signing request asks for OU "${ou}"; a node certificate's OU is "node"`;
  const other = names.altNames.find((n) => n !== `dns:${nodeId}`);
  if (other !== undefined) return `the certificate signing request asks for the alternative name ${other}; a node's certificate may name only dns:${nodeId}`;
  return undefined;
}

/** Shortest and longest life of a certificate signed at enrolment or renewal. */
export const MIN_NODE_CERT_LIFETIME_MS = 5_000;
export const MAX_NODE_CERT_LIFETIME_MS = 3650 * 86_400_000;
export const DEFAULT_NODE_CERT_LIFETIME_MS = 30 * 86_400_000;

/**
 * How far back a signed certificate's notBefore is set, for clocks a little behind the
 * server's: a minute, but never more than a tenth of the certificate's life.
 */
export function certificateBackdateMs(lifetimeMs: number): number {
  return Math.min(60_000, Math.floor(lifetimeMs / 10));
}

/** When a certificate is renewed: two thirds into its validity. */
export function renewAtMs(notBeforeMs: number, notAfterMs: number): number {
  return notBeforeMs + Math.floor(((notAfterMs - notBeforeMs) * 2) / 3);
}

/** A node certificate as a CA signed it: what the node is answered and what the store records. */
export interface SignedNodeCertificate {
  /** Upper-case hex. */
  serial: string;
  certPem: string;
  /** The node certificate, then the CA certificate. */
  chainPem: string;
  caPem: string;
  notBeforeMs: number;
  notAfterMs: number;
  renewAfterMs: number;
}

/** A certificate signing request that parsed and verified: the names it asks for, and its key (opaque here). */
export interface CheckedCsrLike {
  names: CsrNames;
}

/**
 * What enrolment needs of a CA (src/security/node-signer.ts): reading requests (ValidationError
 * naming csr_pem for a bad one) and signing a node certificate for the key of one.
 */
export interface NodeCertificateAuthority<C extends CheckedCsrLike = CheckedCsrLike> {
  readonly lifetimeMs: number;
  checkCsr(pem: string): Promise<C>;
  sign(csr: C, nodeId: string, origin: "enrolment" | "renewal", nowMs?: number): Promise<SignedNodeCertificate>;
}
