/**
 * The node's own identity, made at enrolment (edgectl enroll --token) and renewed by the agent:
 * a P-256 key that never leaves the node and the certificate the orchestrator's CA signed for
 * it, kept in the state dir:
 *
 *   identity/node-<serial>-key.pem   the key (mode 0600)
 *   identity/node-<serial>.pem       the certificate, then the CA certificate that signed it
 *   identity/server-ca.pem           the CA the orchestrator's certificate was checked with at enrolment
 *   identity.json                    which pair is current, with its validity and the orchestrator's URL
 *
 * A new pair is written beside the old one, then identity.json is replaced atomically: a crash
 * leaves the old identity or the new one, never a key with another key's certificate.
 */
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync } from "node:fs";
import path from "node:path";
import { randomBytes } from "node:crypto";
import { writeFileAtomic } from "../files.js";
import { EC_ALGORITHM, generateKeyPair, privateKeyPem, x509 } from "../security/pki.js";

export const IDENTITY_FILE = "identity.json";
export const IDENTITY_DIR = "identity";

/** identity.json: the current key and certificate (paths relative to the state dir). */
export interface NodeIdentity {
  nodeId: string;
  serial: string;
  certFile: string;
  keyFile: string;
  notBefore: string;
  notAfter: string;
  /** When the agent renews it (two thirds into its validity, as the orchestrator said). */
  renewAfter: string;
  /** The orchestrator it enrolled with: the default when no flag, variable or config.yaml names one. */
  orchestratorUrl?: string;
  /** The CA file (--tls-ca-file) it enrolled with, copied: the default likewise. */
  serverCaFile?: string;
}

/** The identity and its files resolved against the state dir. */
export interface LoadedIdentity extends NodeIdentity {
  certPath: string;
  keyPath: string;
  serverCaPath?: string;
}

/** What an identity remembers besides its key and certificate. */
export interface Remembered {
  orchestratorUrl?: string;
  /** A new CA file to keep (at enrolment)... */
  serverCaPem?: Buffer;
  /** ...or the one kept already (at renewal), relative to the state dir. */
  serverCaFile?: string;
}

const SERVER_CA = "server-ca.pem";

function resolved(stateDir: string, identity: NodeIdentity): LoadedIdentity {
  return {
    ...identity,
    certPath: path.resolve(stateDir, identity.certFile),
    keyPath: path.resolve(stateDir, identity.keyFile),
    serverCaPath: identity.serverCaFile === undefined ? undefined : path.resolve(stateDir, identity.serverCaFile),
  };
}

export const identityPath = (stateDir: string) => path.join(stateDir, IDENTITY_FILE);

/** The node's enrolled identity, or undefined when it has none. An unreadable identity.json is an error naming it. */
export function readIdentity(stateDir: string): LoadedIdentity | undefined {
  const file = identityPath(stateDir);
  let parsed: NodeIdentity;
  try {
    parsed = JSON.parse(readFileSync(file, "utf8")) as NodeIdentity;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw new Error(`${file}: unreadable node identity (${(err as Error).message}); enrol again (edgectl enroll --token)`);
  }
  for (const key of ["nodeId", "serial", "certFile", "keyFile", "notBefore", "notAfter", "renewAfter"] as const) {
    if (typeof parsed[key] !== "string" || parsed[key] === "") throw new Error(`${file}: no ${key}; enrol again (edgectl enroll --token)`);
  }
  return resolved(stateDir, parsed);
}

/** A new key (PEM, not yet written anywhere) and a PKCS#10 request for it naming the node. */
export async function newKeyAndCsr(nodeId: string): Promise<{ keyPem: string; csrPem: string }> {
  const keys = await generateKeyPair();
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({ name: `CN=${nodeId}, OU=node`, keys, signingAlgorithm: EC_ALGORITHM });
  return { keyPem: await privateKeyPem(keys.privateKey), csrPem: csr.toString("pem") };
}

/**
 * A key written to the state dir (mode 0600) before its request is sent, so an answered
 * certificate always has its key on disk; `adopt` makes it the node's identity once the
 * certificate is there, `discard` removes it when the request failed.
 */
export class PendingKey {
  private constructor(
    private readonly stateDir: string,
    private readonly tmpKey: string,
  ) {}

  static write(stateDir: string, keyPem: string): PendingKey {
    const dir = path.join(stateDir, IDENTITY_DIR);
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    const tmpKey = path.join(dir, `pending-${randomBytes(6).toString("hex")}-key.pem`);
    writeFileAtomic(tmpKey, keyPem, 0o600);
    return new PendingKey(stateDir, tmpKey);
  }

  /** Writes the certificate beside the key, then points identity.json at the pair, then removes older pairs. */
  adopt(
    cert: { nodeId: string; serial: string; chainPem: string; notBeforeMs: number; notAfterMs: number; renewAfterMs: number },
    remember: Remembered = {},
  ): LoadedIdentity {
    const dir = path.join(this.stateDir, IDENTITY_DIR);
    const base = `node-${cert.serial}`;
    const keyFile = path.join(IDENTITY_DIR, `${base}-key.pem`);
    const certFile = path.join(IDENTITY_DIR, `${base}.pem`);
    writeFileAtomic(path.join(this.stateDir, certFile), cert.chainPem, 0o644);
    let serverCaFile = remember.serverCaFile;
    if (remember.serverCaPem !== undefined) {
      serverCaFile = path.join(IDENTITY_DIR, SERVER_CA);
      writeFileAtomic(path.join(this.stateDir, serverCaFile), remember.serverCaPem, 0o644);
    }
    renameSync(this.tmpKey, path.join(this.stateDir, keyFile));
    const identity: NodeIdentity = {
      nodeId: cert.nodeId,
      serial: cert.serial,
      certFile,
      keyFile,
      notBefore: new Date(cert.notBeforeMs).toISOString(),
      notAfter: new Date(cert.notAfterMs).toISOString(),
      renewAfter: new Date(cert.renewAfterMs).toISOString(),
      ...(remember.orchestratorUrl ? { orchestratorUrl: remember.orchestratorUrl } : {}),
      ...(serverCaFile ? { serverCaFile } : {}),
    };
    // The rename of the key and the new identity.json both reach the disk with this write's directory fsync.
    writeFileAtomic(identityPath(this.stateDir), JSON.stringify(identity, null, 2) + "\n", 0o600);
    const keep = new Set([`${base}-key.pem`, `${base}.pem`, ...(serverCaFile ? [path.basename(serverCaFile)] : [])]);
    for (const name of readdirSync(dir)) if (!keep.has(name)) rmSync(path.join(dir, name), { force: true });
    return resolved(this.stateDir, identity);
  }

  discard(): void {
    if (existsSync(this.tmpKey)) rmSync(this.tmpKey, { force: true });
  }
}
