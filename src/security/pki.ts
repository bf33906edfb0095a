/**
 * X.509 certificates and CRLs for the control plane's own small CA, with @peculiar/x509 over
 * Node's WebCrypto: ECDSA P-256 keys, SHA-256 signatures.
 */
import "reflect-metadata";
import { webcrypto } from "node:crypto";
import * as x509 from "@peculiar/x509";

type CryptoKey = webcrypto.CryptoKey;
type CryptoKeyPair = webcrypto.CryptoKeyPair;
export type { CryptoKey };

x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0]);

export const EC_ALGORITHM = { name: "ECDSA", namedCurve: "P-256", hash: "SHA-256" } as const;
const CRL_NUMBER_OID = "2.5.29.20";

/** The kinds of certificate the CA issues. The profile is the subject's OU. */
export const PROFILES = ["node", "operator", "server"] as const;
export type Profile = (typeof PROFILES)[number];

export { x509 };

/** Serial numbers compare as upper-case hex without leading zeros (Node prints them upper case, @peculiar lower). */
export function normalizeSerial(serial: string): string {
  return serial.replace(/^0+(?=.)/, "").toUpperCase();
}

export async function generateKeyPair(): Promise<CryptoKeyPair> {
  return (await webcrypto.subtle.generateKey(EC_ALGORITHM, true, ["sign", "verify"])) as CryptoKeyPair;
}

export async function privateKeyPem(key: CryptoKey): Promise<string> {
  const der = await webcrypto.subtle.exportKey("pkcs8", key);
  return x509.PemConverter.encode(der, "PRIVATE KEY");
}

export async function importPrivateKeyPem(pem: string): Promise<CryptoKey> {
  const der = x509.PemConverter.decode(pem)[0];
  return webcrypto.subtle.importKey("pkcs8", der, EC_ALGORITHM, true, ["sign"]);
}

/** A random positive 16-byte serial, as hex. */
export function randomSerial(): string {
  const bytes = webcrypto.getRandomValues(new Uint8Array(16));
  bytes[0] &= 0x7f;
  if (bytes[0] === 0) bytes[0] = 1;
  return Buffer.from(bytes).toString("hex");
}

/** DER INTEGER of a non-negative bigint. */
function derInteger(n: bigint): ArrayBuffer {
  let hex = n.toString(16);
  if (hex.length % 2) hex = `0${hex}`;
  let body = Buffer.from(hex, "hex");
  if (body[0] & 0x80) body = Buffer.concat([Buffer.from([0]), body]);
  return new Uint8Array(Buffer.concat([Buffer.from([0x02, body.length]), body])).buffer;
}

/** The CRL number of a CRL (its extension 2.5.29.20), 0 when it carries none. */
export function crlNumber(crl: x509.X509Crl): bigint {
  const ext = crl.getExtension(CRL_NUMBER_OID);
  if (!ext) return 0n;
  const der = Buffer.from(ext.value);
  if (der[0] !== 0x02) return 0n;
  return BigInt(`0x${der.subarray(2, 2 + der[1]).toString("hex") || "0"}`);
}

export interface RevokedEntry {
  serial: string;
  revokedAt: Date;
}

/** A CRL signed by the CA key, numbered, valid for `validDays`. */
export async function createCrl(params: {
  caCert: x509.X509Certificate;
  caKey: CryptoKey;
  number: bigint;
  revoked: readonly RevokedEntry[];
  validDays: number;
  now?: Date;
}): Promise<x509.X509Crl> {
  const now = params.now ?? new Date();
  return x509.X509CrlGenerator.create({
    issuer: params.caCert.subjectName,
    thisUpdate: now,
    nextUpdate: new Date(now.getTime() + params.validDays * 86_400_000),
    signingAlgorithm: EC_ALGORITHM,
    signingKey: params.caKey,
    entries: params.revoked.map((r) => ({ serialNumber: r.serial.toLowerCase(), revocationDate: r.revokedAt, reason: x509.X509CrlReason.unspecified })),
    extensions: [new x509.Extension(CRL_NUMBER_OID, false, derInteger(params.number))],
  });
}

/** PEM with the label OpenSSL (and so Node's TLS) reads: X509 CRL. */
export function crlPem(crl: x509.X509Crl): string {
  return x509.PemConverter.encode(crl.rawData, "X509 CRL");
}

/** What a server needs of a CRL it accepted. */
export interface CheckedCrl {
  /** The bytes as read (PEM or DER), served at GET /v1/crl and handed to TLS. */
  raw: Buffer;
  pem: string;
  number: bigint;
  thisUpdate: Date;
  nextUpdate?: Date;
  /** Normalized serials (normalizeSerial). */
  revoked: ReadonlySet<string>;
}

/**
 * Parses a CRL (PEM or DER) and checks it: signed by the CA, not past its nextUpdate. Throws
 * an Error whose message says what is wrong, for a one-line startup failure.
 */
export async function checkCrl(raw: Buffer, caPem: string, now = new Date()): Promise<CheckedCrl> {
  let crl: x509.X509Crl;
  try {
    const text = raw.toString("latin1");
    crl = new x509.X509Crl(text.includes("-----BEGIN") ? x509.PemConverter.decode(text)[0] : new Uint8Array(raw));
  } catch {
    throw new Error("not a CRL (expected PEM or DER X.509 CRL)");
  }
  const ca = new x509.X509Certificate(caPem);
  if (!(await crl.verify({ publicKey: ca.publicKey }))) throw new Error("not signed by the CA of --tls-ca-file");
  if (crl.nextUpdate && crl.nextUpdate.getTime() < now.getTime()) {
    throw new Error(`expired: its nextUpdate was ${crl.nextUpdate.toISOString()}`);
  }
  return {
    raw,
    pem: crlPem(crl),
    number: crlNumber(crl),
    thisUpdate: crl.thisUpdate,
    nextUpdate: crl.nextUpdate,
    revoked: new Set(crl.entries.map((e) => normalizeSerial(e.serialNumber))),
  };
}
