/**
 * Signed checkpoints of the audit chain's head, written at start, periodically (when the trail
 * grew) and after every prune: into the chain as an audit.checkpoint record, as a JSON line to a
 * file (mode 0600) and to the log, so that an operator can keep them somewhere the database's
 * owner cannot reach. `audit verify` checks the chain against them.
 */
import { appendFileSync, closeSync, fchmodSync, fsyncSync, openSync, readFileSync } from "node:fs";
import { verify as verifySignature, createPublicKey } from "node:crypto";
import { auditRecord, CHECKPOINT_EVENT, checkpointBytes, parseCheckpoint, type AuditCheckpoint } from "../domain/audit.js";
import type { Logger } from "../observability/logger.js";
import type { Store } from "../store/store.js";

/** The checkpoint file inside --data-dir. */
export const CHECKPOINT_FILE = "audit-checkpoints.jsonl";
export const DEFAULT_CHECKPOINT_INTERVAL_MS = 5 * 60_000;

/** What signs checkpoints: the server's Ed25519 key (src/rollouts/signing.ts). */
export interface CheckpointSigner {
  readonly keyId: string;
  readonly publicKeyPem: string;
  sign(bytes: Uint8Array): Buffer;
}

export interface AuditCheckpointsOptions {
  store: Store;
  signer: CheckpointSigner;
  /** The checkpoint file (in the data dir). */
  file: string;
  logger: Logger;
  /** 0: only at start and after prunes. */
  intervalMs?: number;
}

export class AuditCheckpoints {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<unknown> = Promise.resolve();

  constructor(private readonly opts: AuditCheckpointsOptions) {}

  /** The keys checkpoints are verified with: this server's own (never one read from the database). */
  trustedKeys(): Map<string, (bytes: Buffer, signature: Buffer) => boolean> {
    const key = createPublicKey(this.opts.signer.publicKeyPem);
    return new Map([[this.opts.signer.keyId, (bytes: Buffer, signature: Buffer) => verifySignature(null, bytes, key, signature)]]);
  }

  /** The checkpoints in the file (lines that do not parse are skipped). */
  fileCheckpoints(): AuditCheckpoint[] {
    let text: string;
    try {
      text = readFileSync(this.opts.file, "utf8");
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return [];
      throw err;
    }
    return text
      .split("\n")
      .filter((l) => l.trim() !== "")
      .map((l) => {
        try {
          return parseCheckpoint(JSON.parse(l));
        } catch {
          return undefined;
        }
      })
      .filter((c): c is AuditCheckpoint => c !== undefined);
  }

  /** Writes a checkpoint at start, then every interval while the trail grows. */
  async start(): Promise<void> {
    await this.checkpoint("start");
    const every = this.opts.intervalMs ?? DEFAULT_CHECKPOINT_INTERVAL_MS;
    if (every > 0) {
      this.timer = setInterval(() => void this.checkpoint("interval").catch(() => undefined), every);
      this.timer.unref();
    }
  }

  /** Stops the timer and writes a last checkpoint when the trail grew (at shutdown, before the store closes). */
  async close(): Promise<void> {
    clearInterval(this.timer);
    await this.checkpoint("stop").catch(() => undefined);
  }

  /**
   * Signs the head of the chain and writes the checkpoint (unless nothing was appended since the
   * last one). `prunedTo`: after a prune, the seq the trail now starts at. Resolves with the
   * checkpoint, or undefined when there was nothing to sign.
   */
  checkpoint(reason: "start" | "interval" | "prune" | "stop", prunedTo?: number): Promise<AuditCheckpoint | undefined> {
    const next = this.running.catch(() => undefined).then(() => this.write(reason, prunedTo));
    this.running = next;
    return next;
  }

  private async write(reason: string, prunedTo: number | undefined): Promise<AuditCheckpoint | undefined> {
    const [head] = await this.opts.store.auditRecords({ order: "desc", limit: 1 });
    if (!head) return undefined;
    if (reason !== "prune" && head.eventName === CHECKPOINT_EVENT) return undefined;
    const { signer } = this.opts;
    const unsigned: Omit<AuditCheckpoint, "signature"> = { seq: head.seq, hash: head.hash, at: new Date().toISOString(), key_id: signer.keyId, reason };
    if (prunedTo !== undefined) unsigned.pruned_to = prunedTo;
    const checkpoint: AuditCheckpoint = { ...unsigned, signature: signer.sign(checkpointBytes(unsigned)).toString("base64") };
    // The file and the log first: they are what an operator keeps elsewhere. A full disk may
    // refuse the file (the change it follows has committed): the log and the chain still hold it.
    try {
      this.append(JSON.stringify(checkpoint));
    } catch (err) {
      this.opts.logger.warn({ err: (err as Error).message, file: this.opts.file }, "could not append an audit checkpoint to its file; the log and the chain hold it");
    }
    this.opts.logger.info({ audit_checkpoint: checkpoint }, "audit checkpoint");
    try {
      await this.opts.store.appendAudit([
        auditRecord(
          { actor: "system:audit", source: "server" },
          { eventName: CHECKPOINT_EVENT, category: "system", action: "checkpoint", resourceType: "audit_trail", resource: "audit_records", fields: checkpoint, reason },
        ),
      ]);
    } catch (err) {
      // A full database refuses it; the file and the log hold it.
      this.opts.logger.warn({ err: (err as Error).message }, "could not write an audit checkpoint into the chain");
    }
    return checkpoint;
  }

  private append(line: string): void {
    const fd = openSync(this.opts.file, "a", 0o600);
    try {
      fchmodSync(fd, 0o600);
      appendFileSync(fd, `${line}\n`);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
  }
}
