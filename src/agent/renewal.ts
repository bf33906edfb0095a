/**
 * Keeps the node's enrolled certificate fresh while the agent runs: at two thirds of its life
 * (renewAfter) a new key and CSR, sent over mutual TLS with the current certificate; the new
 * pair is written (./identity.ts) and handed on, so the next connection uses it. No restart.
 * A failed renewal is retried with a backoff bounded by the time left.
 */
import { setTimeout as sleep } from "node:timers/promises";
import { timestampMs, type Timestamp } from "@bufbuild/protobuf/wkt";
import { ConnectError } from "@connectrpc/connect";
import type { OrchestratorClients } from "../../clients/index.js";
import type { Logger } from "../observability/logger.js";
import { newKeyAndCsr, PendingKey, type LoadedIdentity } from "./identity.js";

const MAX_RETRY_MS = 5 * 60_000;
const MIN_RETRY_MS = 1_000;

export interface RenewalOptions {
  api: OrchestratorClients;
  logger: Logger;
  stateDir: string;
  identity: LoadedIdentity;
  signal: AbortSignal;
  /** The new identity, on disk: the caller makes its next connection with it. */
  onRenewed(identity: LoadedIdentity): void;
  now?: () => number;
}

const msOf = (ts: Timestamp | undefined) => (ts ? timestampMs(ts) : 0);

/** One renewal: resolves with the new identity (on disk), or throws (nothing changed on disk). */
export async function renewOnce(opts: Pick<RenewalOptions, "api" | "stateDir" | "identity" | "signal">): Promise<LoadedIdentity> {
  const { identity } = opts;
  const { keyPem, csrPem } = await newKeyAndCsr(identity.nodeId);
  const pending = PendingKey.write(opts.stateDir, keyPem);
  try {
    const { certificate: c } = await opts.api.enrollment.renewCertificate({ nodeId: identity.nodeId, csrPem }, { signal: opts.signal });
    return pending.adopt(
      { nodeId: identity.nodeId, serial: c!.serial, chainPem: c!.certificateChainPem, notBeforeMs: msOf(c!.notBefore), notAfterMs: msOf(c!.notAfter), renewAfterMs: msOf(c!.renewAfter) },
      { orchestratorUrl: identity.orchestratorUrl, serverCaFile: identity.serverCaFile },
    );
  } catch (err) {
    pending.discard();
    throw err;
  }
}

/** Runs until the signal aborts, renewing the certificate each time it reaches renewAfter. */
export async function keepCertificateFresh(opts: RenewalOptions): Promise<void> {
  const { logger, signal } = opts;
  const now = opts.now ?? Date.now;
  let identity = opts.identity;
  let failures = 0;
  let expiredLogged = false;
  logger.info({ serial: identity.serial, not_after: identity.notAfter, renew_after: identity.renewAfter }, "using the enrolled node certificate");
  while (!signal.aborted) {
    const wait = Date.parse(identity.renewAfter) - now();
    if (wait > 0 && failures === 0) {
      await sleep(wait, undefined, { signal }).catch(() => undefined);
      if (signal.aborted) break;
    }
    try {
      const renewed = await renewOnce({ ...opts, identity, signal });
      logger.info({ serial: renewed.serial, previous_serial: identity.serial, not_after: renewed.notAfter, renew_after: renewed.renewAfter }, "renewed the node certificate; the next connection uses it");
      identity = renewed;
      failures = 0;
      opts.onRenewed(renewed);
    } catch (err) {
      if (signal.aborted) break;
      failures++;
      const left = Date.parse(identity.notAfter) - now();
      const message = ConnectError.from(err).message;
      if (left <= 0) {
        if (!expiredLogged) logger.error({ serial: identity.serial, not_after: identity.notAfter, err: message }, "the node certificate expired before it could be renewed; enrol again with a new token (edgectl enroll --token)");
        expiredLogged = true;
      } else {
        logger.warn({ serial: identity.serial, not_after: identity.notAfter, attempt: failures, err: message }, "could not renew the node certificate; retrying");
      }
      const retryMs = Math.min(MAX_RETRY_MS, Math.max(MIN_RETRY_MS, left > 0 ? Math.floor(left / 10) : MAX_RETRY_MS));
      await sleep(retryMs, undefined, { signal }).catch(() => undefined);
    }
  }
}
