import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, type HandlerContext, type ServiceImpl } from "@connectrpc/connect";
import { EnrollmentTokenSchema, NodeCertificateSchema, type EnrollmentService } from "../../gen/autonomy/v1/enrollment_pb.js";
import {
  checkCertNodeId,
  checkEnrollmentTtl,
  csrNodeMismatch,
  enrollmentTokenRefusal,
  enrollmentTokenState,
  newEnrollmentToken,
  type CheckedCsrLike,
  type NodeCertificateAuthority,
  type SignedNodeCertificate,
} from "../domain/enrollment.js";
import { ConflictError, FailedPreconditionError, ValidationError } from "../domain/errors.js";
import { checkBytes, checkId } from "../domain/fields.js";
import { hashToken, principalId } from "../domain/identity.js";
import { validateEnrollment } from "../domain/nodes.js";
import type { EnrollmentTokenRow } from "../store/enrollment-rows.js";
import type { SightingBuffer } from "../store/sightings.js";
import type { Store } from "../store/store.js";
import { requestInfoKey } from "../transport/context.js";
import { actorOf, auditRecord } from "./audit-record.js";
import { nodeView } from "./node-service.js";

/** What the service records of a refused enrolment or renewal (src/security/denials.ts coalesces them). */
export interface RefusalLog {
  record(r: { eventName: "auth.denied" | "auth.failed"; source: string; actor: string; rpc: string; reason: string; fields?: Record<string, unknown> }): Promise<void>;
}

export interface EnrollmentServiceDeps {
  store: Store;
  sightings: SightingBuffer;
  staleAfterMs: number;
  /** The CA the server signs node certificates with (serve --ca-dir); none: enrolment and renewal are refused. */
  ca?: NodeCertificateAuthority;
  refusals: RefusalLog;
  /** The clock tokens expire by. */
  now?: () => number;
}

const MAX_TOKEN_BYTES = 512;
const NO_CA = "this server signs no certificates: start it with --ca-dir (the directory of autonomy cert init-ca) to enrol nodes";
const RPC = (method: string) => `autonomy.v1.EnrollmentService/${method}`;

const tokenOf = (t: EnrollmentTokenRow, nowMs: number) =>
  create(EnrollmentTokenSchema, {
    tokenId: t.tokenId,
    nodeId: t.nodeId,
    channel: t.channel,
    createdAt: timestampFromMs(t.createdAtMs),
    expiresAt: timestampFromMs(t.expiresAtMs),
    createdBy: t.createdBy,
    state: enrollmentTokenState(t, nowMs),
    usedAt: t.usedAtMs === null ? undefined : timestampFromMs(t.usedAtMs),
    certificateSerial: t.certificateSerial ?? "",
    revokedAt: t.revokedAtMs === null ? undefined : timestampFromMs(t.revokedAtMs),
  });

const certificateOf = (c: SignedNodeCertificate) =>
  create(NodeCertificateSchema, {
    serial: c.serial,
    certificateChainPem: c.chainPem,
    caCertificatePem: c.caPem,
    notBefore: timestampFromMs(c.notBeforeMs),
    notAfter: timestampFromMs(c.notAfterMs),
    renewAfter: timestampFromMs(c.renewAfterMs),
  });

/**
 * EnrollmentService: one-time tokens an operator makes, enrolment with a token and a CSR, and
 * renewal with the node's current certificate. Every change is audited with it; every refusal
 * is audited too (coalesced, as refused calls are).
 */
export function createEnrollmentService(deps: EnrollmentServiceDeps): ServiceImpl<typeof EnrollmentService> {
  const { store, sightings, staleAfterMs, ca, refusals } = deps;
  const now = deps.now ?? Date.now;
  const sourceOf = (ctx: HandlerContext) => ctx.values.get(requestInfoKey)?.remoteAddress ?? "unknown";
  const requireCa = (): NodeCertificateAuthority<CheckedCsrLike> => {
    if (!ca) throw new FailedPreconditionError(NO_CA);
    return ca;
  };
  const refuse = async (ctx: HandlerContext, r: { eventName: "auth.denied" | "auth.failed"; actor?: string; rpc: string; reason: string; fields?: Record<string, unknown> }, code: Code, message: string): Promise<never> => {
    await refusals.record({ source: sourceOf(ctx), actor: r.actor ?? "anonymous", eventName: r.eventName, rpc: r.rpc, reason: r.reason, fields: r.fields });
    throw new ConnectError(message, code);
  };
  /** Why a token is refused, as the audit trail's reason (the answer says more). */
  const reasonOf = (t: EnrollmentTokenRow | undefined, nowMs: number) => (t ? `${enrollmentTokenState(t, nowMs)} enrolment token` : "unknown enrolment token");

  return {
    async createEnrollmentToken(req, ctx) {
      checkCertNodeId(req.nodeId);
      checkId(req.channel, "channel", true);
      const ttl = checkEnrollmentTtl(req.ttlSeconds);
      const nowMs = now();
      const { token, hash, id } = newEnrollmentToken(req.nodeId);
      const actor = actorOf(ctx);
      const row: EnrollmentTokenRow = {
        tokenId: id,
        tokenHash: hash,
        nodeId: req.nodeId,
        channel: req.channel,
        createdBy: actor.actor,
        createdAtMs: nowMs,
        expiresAtMs: nowMs + ttl * 1000,
        usedAtMs: null,
        certificateSerial: null,
        revokedAtMs: null,
      };
      const audit = auditRecord(actor, {
        eventName: "node.enrollment_token.created",
        category: "cert",
        action: "create",
        resourceType: "enrollment_token",
        resource: id,
        fields: { node_id: req.nodeId, channel: req.channel, ttl_seconds: ttl, expires_at: new Date(row.expiresAtMs).toISOString() },
      }, nowMs);
      await store.createEnrollmentToken(row, audit);
      const warnings = ca ? [] : [`${NO_CA}; the token enrols only at a server that has one`];
      return { token, info: tokenOf(row, nowMs), warnings };
    },

    async listEnrollmentTokens(req) {
      checkId(req.nodeId, "node_id", false);
      const nowMs = now();
      return { tokens: (await store.listEnrollmentTokens({ nodeId: req.nodeId || undefined })).map((t) => tokenOf(t, nowMs)) };
    },

    async revokeEnrollmentToken(req, ctx) {
      if (!/^[0-9a-f]{12}$/.test(req.tokenId)) throw new ValidationError("token_id", "12 hex digits, as autonomy node enrollment-token list shows");
      const nowMs = now();
      const audit = auditRecord(actorOf(ctx), { eventName: "node.enrollment_token.revoked", category: "cert", action: "revoke", resourceType: "enrollment_token", resource: req.tokenId }, nowMs);
      return { info: tokenOf(await store.revokeEnrollmentToken(req.tokenId, nowMs, audit), nowMs) };
    },

    async enroll(req, ctx) {
      if (req.token === "") throw new ValidationError("token", "required: the one-time enrolment token (autonomy node enrollment-token create)");
      checkBytes(req.token, "token", MAX_TOKEN_BYTES);
      if (req.csrPem === "") throw new ValidationError("csr_pem", "required: a PKCS#10 certificate signing request (PEM)");
      const signer = requireCa();
      let nowMs = now();
      const token = await store.enrollmentTokenByHash(hashToken(req.token));
      const refusal = enrollmentTokenRefusal(token, nowMs);
      if (refusal || !token) {
        return refuse(ctx, { eventName: "auth.failed", rpc: RPC("Enroll"), reason: reasonOf(token, nowMs), fields: token ? { token_id: token.tokenId, node_id: token.nodeId } : {} }, Code.Unauthenticated, refusal!);
      }
      const nodeId = token.nodeId;
      validateEnrollment({ nodeId, channel: token.channel, labels: req.labels, agentVersion: req.agentVersion });
      const csr = await signer.checkCsr(req.csrPem);
      const mismatch = csrNodeMismatch(csr.names, nodeId);
      if (mismatch) {
        return refuse(
          ctx,
          { eventName: "auth.denied", actor: `node:${nodeId}`, rpc: RPC("Enroll"), reason: "a certificate signing request for another node", fields: { token_id: token.tokenId, node_id: nodeId, csr_common_names: csr.names.commonNames } },
          Code.PermissionDenied,
          mismatch,
        );
      }
      // Enrolling again without labels keeps the ones the node has.
      let labels = req.labels;
      if (Object.keys(labels).length === 0) labels = (await store.getNode(nodeId))?.labels ?? {};
      const signed = await signer.sign(csr, nodeId, "enrolment");
      nowMs = now();
      const audit = auditRecord({ actor: `node:${nodeId}`, source: "api" }, {
        eventName: "node.enrolled",
        category: "cert",
        action: "enroll",
        resourceType: "node",
        resource: nodeId,
        fields: { via: "enrollment_token", token_id: token.tokenId, serial: signed.serial, not_after: new Date(signed.notAfterMs).toISOString(), channel: token.channel, labels, agent_version: req.agentVersion },
      }, nowMs);
      let node;
      try {
        node = await store.enrollWithToken({
          tokenId: token.tokenId,
          atMs: nowMs,
          enrollment: { nodeId, channel: token.channel, labels, agentVersion: req.agentVersion },
          certificate: { serial: signed.serial, nodeId, issuedAtMs: nowMs, notBeforeMs: signed.notBeforeMs, notAfterMs: signed.notAfterMs, tokenId: token.tokenId, previousSerial: null },
          audit,
        });
      } catch (err) {
        // Another enrolment spent the token (or it expired) while this one was signed: nothing was written.
        if (err instanceof ConflictError) {
          return refuse(ctx, { eventName: "auth.failed", rpc: RPC("Enroll"), reason: "enrolment token spent meanwhile", fields: { token_id: token.tokenId, node_id: nodeId } }, Code.Unauthenticated, err.message);
        }
        throw err;
      }
      return { node: nodeView(node, sightings, Date.now(), staleAfterMs), certificate: certificateOf(signed) };
    },

    async renewCertificate(req, ctx) {
      const info = ctx.values.get(requestInfoKey);
      const principal = info?.principal;
      if (!principal || principal.kind !== "node" || principal.via !== "certificate") {
        return refuse(
          ctx,
          { eventName: "auth.denied", actor: principal ? principalId(principal) : "anonymous", rpc: RPC("RenewCertificate"), reason: "renewal without a node certificate" },
          Code.PermissionDenied,
          `a node certificate is renewed over mutual TLS with the node's current certificate, not as ${principal ? principalId(principal) : "anonymous"}${principal?.via === "token" ? " (a bearer token)" : ""}`,
        );
      }
      checkCertNodeId(req.nodeId);
      const signer = requireCa();
      const csr = await signer.checkCsr(req.csrPem);
      const mismatch = csrNodeMismatch(csr.names, principal.name);
      if (mismatch) {
        return refuse(ctx, { eventName: "auth.denied", actor: principalId(principal), rpc: RPC("RenewCertificate"), reason: "a certificate signing request for another node" }, Code.PermissionDenied, mismatch);
      }
      // Only for a node the store knows: a certificate is not signed for nothing.
      if (!(await store.getNode(principal.name))) throw new FailedPreconditionError(`node "${principal.name}" is not enrolled; enrol it with a token (edgectl enroll --token)`);
      const signed = await signer.sign(csr, principal.name, "renewal");
      const nowMs = now();
      const previousSerial = info?.peer?.serial ?? null;
      await store.recordCertificateRenewal(
        { serial: signed.serial, nodeId: principal.name, issuedAtMs: nowMs, notBeforeMs: signed.notBeforeMs, notAfterMs: signed.notAfterMs, tokenId: null, previousSerial },
        auditRecord({ actor: principalId(principal), source: "api" }, {
          eventName: "node.certificate.renewed",
          category: "cert",
          action: "renew",
          resourceType: "node",
          resource: principal.name,
          fields: { serial: signed.serial, previous_serial: previousSerial, not_after: new Date(signed.notAfterMs).toISOString() },
        }, nowMs),
      );
      return { certificate: certificateOf(signed) };
    },
  };
}
