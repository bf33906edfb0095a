/**
 * The preconditions of the store's writes and the errors they answer, written once for both
 * dialects: each store reads what a rule needs inside its own transaction and calls the rule,
 * so SQLite and PostgreSQL refuse the same writes with the same messages. Only the SQL differs.
 */
import { enrollmentTokenRefusal, type EnrollmentTokenFacts } from "../domain/enrollment.js";
import { AbortedError, ConflictError, FailedPreconditionError, NotFoundError } from "../domain/errors.js";
import type { AuditRow } from "./rollout-rows.js";
import { canonicalSpec, serviceChange } from "../domain/workloads.js";
import type { AppliedChange, ServiceRow, WorkloadApply } from "./workload-rows.js";
import { sameReleaseContent, type ReleaseRow } from "./fleet-rows.js";

/** A release id must name a published release (acks, rollout plans). */
export function requireRelease(releaseId: string, found: unknown): void {
  if (!found) throw new NotFoundError(`release "${releaseId}" not found`);
}

/** A node id must name an enrolled node (acks, drains). */
export function requireNode<T>(nodeId: string, found: T | undefined): T {
  if (!found) throw new NotFoundError(`node "${nodeId}" is not enrolled`);
  return found;
}

/** Releases are immutable: publishing an id again must carry the same content. */
export function requireSameRelease(stored: ReleaseRow, row: ReleaseRow): void {
  if (!sameReleaseContent(stored, row)) {
    throw new ConflictError(`release "${row.releaseId}" is already published with other content; releases are immutable`);
  }
}

/** A plan's signed spec is immutable: publishing a plan id again must carry the same spec. */
export function requireSamePlanSpec(planId: string, storedSpec: string, spec: string): void {
  if (storedSpec !== spec) throw new ConflictError(`plan "${planId}" is already published with another spec; plans are immutable`);
}

/** A channel takes one unfinished plan at a time. */
export function requireChannelFree(channel: string, busy: { planId: string; phase: string } | undefined): void {
  if (busy) {
    throw new ConflictError(`plan "${busy.planId}" of channel "${channel}" is ${busy.phase}; cancel or roll it back before publishing another`);
  }
}

/**
 * A status update applies only at the version it was read at. Called when the versioned
 * UPDATE changed nothing, with the stored version (undefined: no such plan).
 */
export function refuseStaleStatus(planId: string, storedVersion: number | undefined, expectedVersion: number): never {
  if (storedVersion === undefined) throw new NotFoundError(`plan "${planId}" not found`);
  throw new AbortedError(`plan "${planId}" is at version ${storedVersion}, not ${expectedVersion}: it changed since it was read`);
}

/** A token id must name a stored token. */
export function requireToken<T>(tokenId: string, found: T | undefined): T {
  if (!found) throw new NotFoundError(`token "${tokenId}" not found`);
  return found;
}

/** An enrolment token id must name a stored token. */
export function requireEnrollmentToken<T>(tokenId: string, found: T | undefined): T {
  if (!found) throw new NotFoundError(`enrolment token "${tokenId}" not found`);
  return found;
}

/**
 * An enrolment spends its token only while the token is still unused, unrevoked and unexpired
 * when the transaction runs (another enrolment with the same token may have won the race).
 */
export function requireUnspentEnrollmentToken(token: EnrollmentTokenFacts | undefined, atMs: number): void {
  const refusal = enrollmentTokenRefusal(token, atMs);
  if (refusal) throw new ConflictError(refusal);
}

/** A used token enrols nothing more: revoking it would change nothing, so it is refused, naming what to revoke instead. */
export function refuseRevokingUsedToken(token: EnrollmentTokenFacts & { certificateSerial: string | null }): void {
  if (token.usedAtMs === null) return;
  throw new FailedPreconditionError(
    `enrolment token ${token.tokenId} was used at ${new Date(token.usedAtMs).toISOString()} and enrols nothing more; ` +
      `to cut node ${token.nodeId} off, revoke its certificate (autonomy cert revoke --serial ${token.certificateSerial ?? "SERIAL"})`,
  );
}

/** The record of an audit prune, its fields completed with how many records went and the first seq kept. */
export function pruneRecord(record: AuditRow, removed: number, firstKeptSeq: number | undefined): AuditRow {
  const fields = { ...(JSON.parse(record.fieldsJson) as object), removed, first_kept_seq: firstKeptSeq ?? null };
  return { ...record, fieldsJson: JSON.stringify(fields) };
}

/** A workload write based on a version that has since moved is refused, nothing written. */
export function requireWorkloadVersion(stored: number, expected: number | undefined): void {
  if (expected !== undefined && expected !== stored) {
    throw new AbortedError(`the workload state is at version ${stored}, not ${expected}: it changed since it was read; read it again and retry`);
  }
}

/** What an apply writes to the stored services (those it changes) and says of each it lists. */
export function planWorkloadApply(stored: ReadonlyMap<string, ServiceRow>, apply: WorkloadApply): { writes: ServiceRow[]; changes: AppliedChange[] } {
  const writes: ServiceRow[] = [];
  const changes = apply.specs.map((spec): AppliedChange => {
    const before = stored.get(spec.name);
    const { change, generation } = serviceChange(before, spec);
    if (change !== "unchanged") {
      writes.push({ name: spec.name, spec: canonicalSpec(spec), generation, createdAtMs: before?.createdAtMs ?? apply.atMs, updatedAtMs: apply.atMs });
    }
    return { name: spec.name, change, generation };
  });
  return { writes, changes };
}

/** The record of an apply or delete, its fields completed with what changed and the version after. */
export function workloadRecord(record: AuditRow, version: number, changes: readonly AppliedChange[] = []): AuditRow {
  const fields = { ...(JSON.parse(record.fieldsJson) as object), version, ...(changes.length > 0 ? { changes: changes.filter((c) => c.change !== "unchanged").map((c) => `${c.name}:${c.change}`) } : {}) };
  return { ...record, fieldsJson: JSON.stringify(fields) };
}

/** A service to delete must be stored. */
export function requireService<T>(name: string, found: T | undefined): T {
  if (!found) throw new NotFoundError(`service "${name}" not found`);
  return found;
}
