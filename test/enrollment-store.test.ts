import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { hashToken } from "../src/domain/identity.js";
import { ConflictError, FailedPreconditionError, NotFoundError } from "../src/domain/errors.js";
import { auditRecord } from "../src/services/audit-record.js";
import type { EnrollmentTokenRow, NodeCertificateRow } from "../src/store/enrollment-rows.js";
import type { Store } from "../src/store/store.js";
import { STORE_KINDS } from "./helpers/server.js";
import { openStore } from "./helpers/store.js";

const NOW = Date.now();
const who = { actor: "operator:olga", source: "api" };
const record = (eventName: string, resource: string) => auditRecord(who, { eventName, category: "cert", action: "test", resourceType: "enrollment_token", resource }, NOW);

const token = (tokenId: string, nodeId: string, over: Partial<EnrollmentTokenRow> = {}): EnrollmentTokenRow => ({
  tokenId,
  tokenHash: hashToken(`secret-${tokenId}`),
  nodeId,
  channel: "stable",
  createdBy: who.actor,
  createdAtMs: NOW,
  expiresAtMs: NOW + 900_000,
  usedAtMs: null,
  certificateSerial: null,
  revokedAtMs: null,
  ...over,
});
const cert = (serial: string, nodeId: string, over: Partial<NodeCertificateRow> = {}): NodeCertificateRow => ({
  serial,
  nodeId,
  issuedAtMs: NOW,
  notBeforeMs: NOW - 60_000,
  notAfterMs: NOW + 86_400_000,
  tokenId: null,
  previousSerial: null,
  ...over,
});
const enrollment = (nodeId: string) => ({ nodeId, channel: "stable", labels: { site: "lab" }, agentVersion: "1.0.0" });

/** Enrolment tokens and the certificates signed for nodes: the same on both stores. */
describe.each(STORE_KINDS)("enrolment store contract: %s", (kind) => {
  let store: Store;
  let cleanup: () => Promise<void>;
  beforeAll(async () => ({ store, cleanup } = await openStore(kind)));
  afterAll(async () => cleanup());

  const auditOf = async (eventName: string) => (await store.auditRecords({ eventName, limit: 100 })).map((r) => r.resource);

  it("stores a token by its hash, with its audit record, and lists a node's tokens newest first", async () => {
    await store.createEnrollmentToken(token("a1", "robot-1"), record("t.created", "a1"));
    await store.createEnrollmentToken(token("a2", "robot-1", { createdAtMs: NOW + 5 }), record("t.created", "a2"));
    await store.createEnrollmentToken(token("b1", "robot-2"), record("t.created", "b1"));
    expect((await store.listEnrollmentTokens({ nodeId: "robot-1" })).map((t) => t.tokenId)).toEqual(["a2", "a1"]);
    expect((await store.listEnrollmentTokens({})).map((t) => t.tokenId)).toEqual(["a2", "b1", "a1"]);
    expect(await store.enrollmentTokenByHash(hashToken("secret-b1"))).toMatchObject({ tokenId: "b1", nodeId: "robot-2", usedAtMs: null });
    expect(await store.enrollmentTokenByHash(hashToken("nothing"))).toBeUndefined();
    expect(await auditOf("t.created")).toEqual(["b1", "a2", "a1"]);
  });

  it("enrols with a token in one transaction: token spent, certificate recorded, node registered, audited", async () => {
    const node = await store.enrollWithToken({
      tokenId: "a1",
      atMs: NOW + 10,
      enrollment: enrollment("robot-1"),
      certificate: cert("AA01", "robot-1", { tokenId: "a1" }),
      audit: record("t.enrolled", "robot-1"),
    });
    expect(node).toMatchObject({ nodeId: "robot-1", channel: "stable", labels: { site: "lab" }, agentVersion: "1.0.0" });
    expect(await store.enrollmentTokenByHash(hashToken("secret-a1"))).toMatchObject({ usedAtMs: NOW + 10, certificateSerial: "AA01" });
    expect(await store.nodeCertificates("robot-1")).toEqual([cert("AA01", "robot-1", { tokenId: "a1" })]);
    expect(await auditOf("t.enrolled")).toEqual(["robot-1"]);
  });

  it.each([
    ["a used token", "a1", NOW + 20, /was used already/],
    ["an expired token", "a2", NOW + 900_000, /expired at/],
    ["an unknown token", "zz", NOW, /unknown/],
  ])("refuses %s, writing nothing", async (_name, tokenId, atMs, message) => {
    const before = (await store.auditRecords({ limit: 1000 })).length;
    const attempt = store.enrollWithToken({
      tokenId,
      atMs,
      enrollment: enrollment("robot-9"),
      certificate: cert(`BB-${tokenId}`, "robot-9", { tokenId }),
      audit: record("t.enrolled", "robot-9"),
    });
    await expect(attempt).rejects.toThrow(ConflictError);
    await expect(attempt).rejects.toThrow(message);
    expect(await store.getNode("robot-9")).toBeUndefined();
    expect(await store.nodeCertificates("robot-9")).toEqual([]);
    expect((await store.auditRecords({ limit: 1000 })).length).toBe(before);
  });

  it("of two enrolments racing with one token, exactly one wins", async () => {
    await store.createEnrollmentToken(token("race", "robot-3"), record("t.created", "race"));
    const tries = [1, 2, 3, 4].map((i) =>
      store.enrollWithToken({
        tokenId: "race",
        atMs: NOW + 30,
        enrollment: enrollment("robot-3"),
        certificate: cert(`CC0${i}`, "robot-3", { tokenId: "race" }),
        audit: record("t.enrolled", "robot-3"),
      }),
    );
    const outcomes = await Promise.allSettled(tries);
    expect(outcomes.filter((o) => o.status === "fulfilled")).toHaveLength(1);
    for (const o of outcomes.filter((x) => x.status === "rejected")) expect((o as PromiseRejectedResult).reason).toBeInstanceOf(ConflictError);
    expect(await store.nodeCertificates("robot-3")).toHaveLength(1);
  });

  it("revokes an unused token once; a used one is refused naming the certificate to revoke; an unknown one is not found", async () => {
    const revoked = await store.revokeEnrollmentToken("b1", NOW + 40, record("t.revoked", "b1"));
    expect(revoked).toMatchObject({ tokenId: "b1", revokedAtMs: NOW + 40 });
    expect(await store.revokeEnrollmentToken("b1", NOW + 50, record("t.revoked", "b1"))).toMatchObject({ revokedAtMs: NOW + 40 });
    expect(await auditOf("t.revoked")).toEqual(["b1"]);
    await expect(store.revokeEnrollmentToken("a1", NOW + 40, record("t.revoked", "a1"))).rejects.toThrow(FailedPreconditionError);
    await expect(store.revokeEnrollmentToken("a1", NOW + 40, record("t.revoked", "a1"))).rejects.toThrow(/autonomy cert revoke --serial AA01/);
    await expect(store.revokeEnrollmentToken("nope", NOW, record("t.revoked", "nope"))).rejects.toThrow(NotFoundError);
    // A revoked token enrols nobody.
    await expect(
      store.enrollWithToken({ tokenId: "b1", atMs: NOW + 60, enrollment: enrollment("robot-2"), certificate: cert("DD01", "robot-2"), audit: record("t.enrolled", "robot-2") }),
    ).rejects.toThrow(/was revoked at/);
  });

  it("records renewals of enrolled nodes only", async () => {
    await store.recordCertificateRenewal(cert("AA02", "robot-1", { previousSerial: "AA01", issuedAtMs: NOW + 100 }), record("t.renewed", "robot-1"));
    expect((await store.nodeCertificates("robot-1")).map((c) => [c.serial, c.previousSerial])).toEqual([
      ["AA02", "AA01"],
      ["AA01", null],
    ]);
    await expect(store.recordCertificateRenewal(cert("EE01", "robot-404"), record("t.renewed", "robot-404"))).rejects.toThrow(NotFoundError);
    expect(await auditOf("t.renewed")).toEqual(["robot-1"]);
  });
});
