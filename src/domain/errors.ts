/**
 * Typed errors thrown by the domain and the stores. The transport maps each class to one
 * RPC code and one HTTP status (src/transport/errors.ts); nothing matches on message text.
 * Messages are written for the user: they never carry SQL, file paths or driver text.
 */
export abstract class DomainError extends Error {
  constructor(message: string) {
    super(message);
    this.name = new.target.name;
  }
}

/** A field of the request is missing or invalid. `field` names it, e.g. `events[3].node_id`. */
export class ValidationError extends DomainError {
  constructor(
    readonly field: string,
    reason: string,
  ) {
    super(field ? `${field}: ${reason}` : reason);
  }
}

/** The request is larger than the server accepts (events per batch, bytes per body). */
export class PayloadTooLargeError extends DomainError {}

/** The named resource does not exist. */
export class NotFoundError extends DomainError {}

/** The request conflicts with what is stored (for example an immutable record with other content). */
export class ConflictError extends DomainError {}

/** The resource is not in a state that allows the request (a rollout action its phase forbids). */
export class FailedPreconditionError extends DomainError {}

/** The request was based on a version that has since changed (optimistic concurrency). */
export class AbortedError extends DomainError {}

/** The store could not take the write in time (SQLite writer lock held elsewhere, pool exhausted). */
export class StoreBusyError extends DomainError {
  constructor(
    message: string,
    readonly retryAfterSeconds = 1,
  ) {
    super(message);
  }
}

/** The store has no room left (disk full, database size limit reached). Reads keep working. */
export class StoreFullError extends DomainError {}

/** The store cannot be reached (database down, connection refused). */
export class StoreUnavailableError extends DomainError {
  constructor(
    message: string,
    readonly retryAfterSeconds = 1,
  ) {
    super(message);
  }
}

/** A leader-only write of a leader whose epoch is no longer current: nothing was written. */
export class FencedError extends StoreUnavailableError {}

/** The database file is corrupt. The process must stop: serving from it could lose acknowledged writes. */
export class StoreCorruptError extends DomainError {}

/** A caller over its rate (the per-node ingest limit): answered 429 / resource_exhausted with Retry-After. */
export class RateLimitedError extends DomainError {
  constructor(
    message: string,
    readonly retryAfterSeconds: number,
  ) {
    super(message);
  }
}
