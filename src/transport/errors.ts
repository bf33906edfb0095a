import { Code, ConnectError } from "@connectrpc/connect";
import { codeToHttpStatus, codeToString } from "@connectrpc/connect/protocol-connect";
import {
  AbortedError,
  ConflictError,
  FailedPreconditionError,
  NotFoundError,
  PayloadTooLargeError,
  RateLimitedError,
  StoreBusyError,
  StoreCorruptError,
  StoreFullError,
  StoreUnavailableError,
  ValidationError,
} from "../domain/errors.js";

/** The request did not arrive in full within the request timeout (--http-request-timeout). */
export class RequestTimeoutError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "RequestTimeoutError";
  }
}

type ErrorClass = abstract new (...args: never[]) => Error;

/** Each domain error class: its RPC code and, where it differs from Connect's mapping, its REST status. */
const MAPPING: ReadonlyArray<{ type: ErrorClass; code: Code; status?: number }> = [
  { type: ValidationError, code: Code.InvalidArgument },
  { type: PayloadTooLargeError, code: Code.ResourceExhausted, status: 413 },
  { type: RateLimitedError, code: Code.ResourceExhausted, status: 429 },
  { type: NotFoundError, code: Code.NotFound },
  { type: ConflictError, code: Code.AlreadyExists },
  { type: FailedPreconditionError, code: Code.FailedPrecondition, status: 409 },
  { type: AbortedError, code: Code.Aborted, status: 409 },
  { type: StoreBusyError, code: Code.Unavailable },
  { type: StoreUnavailableError, code: Code.Unavailable },
  { type: StoreFullError, code: Code.ResourceExhausted, status: 507 },
  { type: StoreCorruptError, code: Code.Internal },
  { type: RequestTimeoutError, code: Code.DeadlineExceeded, status: 408 },
];

/**
 * The ConnectError for a typed domain error, keeping the domain error as `cause` so the
 * REST layer can pick its status. Returns undefined for anything else: the caller answers
 * `internal` without detail, because a driver's message may carry SQL or paths.
 */
export function domainToConnectError(err: unknown): ConnectError | undefined {
  const entry = MAPPING.find((m) => err instanceof m.type);
  if (!entry) return undefined;
  const metadata = new Headers();
  const retryAfter = (err as { retryAfterSeconds?: number }).retryAfterSeconds;
  if (retryAfter !== undefined) metadata.set("retry-after", String(retryAfter));
  const message = entry.code === Code.Internal ? "internal error" : (err as Error).message;
  return new ConnectError(message, entry.code, metadata, undefined, err);
}

/** The HTTP status of an error on a REST path: Connect's mapping, refined by the domain error. */
export function restStatus(err: ConnectError): number {
  const entry = err.cause === undefined ? undefined : MAPPING.find((m) => err.cause instanceof m.type);
  return entry?.status ?? codeToHttpStatus(err.code);
}

/** The JSON body of a REST error: `{"code":"invalid_argument","message":"..."}`. */
export function restErrorBody(err: ConnectError): string {
  return JSON.stringify({ code: codeToString(err.code), message: err.rawMessage });
}
