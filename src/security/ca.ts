/**
 * A certificate authority kept in one directory, as `autonomy cert` manages it:
 *
 *   ca.pem            the CA certificate (give it to servers as --tls-ca-file, to clients as theirs)
 *   ca-key.pem        its private key (mode 0600; keep the directory offline if you can)
 *   crl.pem           the current CRL, signed by the CA, numbered (give it to servers as --tls-crl-file)
 *   certs.json        every certificate issued: serial, profile, name, validity, revocation
 *                     (also those a server signed at a node's enrolment or renewal, for keys
 *                     the CA never held; changed under certs.json.lock)
 *   <profile>-<name>.pem, <profile>-<name>-key.pem   issued certificates and keys (mode 0600 for keys)
 *
 * Every file is written atomically (a temporary file, fsync, rename), so a server watching
 * crl.pem never reads half of one.
 */
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, statSync, unlinkSync, writeSync } from "node:fs";
import { setTimeout as sleep } from "node:timers/promises";
import { writeFileAtomic } from "../files.js";
import path from "node:path";
import {
  checkCrl,
  createCrl,
  crlNumber,
  crlPem,
  EC_ALGORITHM,
  generateKeyPair,
  importPrivateKeyPem,
  normalizeSerial,
  privateKeyPem,
  randomSerial,
  x509,
  type CryptoKey,
  type Profile,
} from "./pki.js";

export const CA_CERT = "ca.pem";
export const CA_KEY = "ca-key.pem";
export const CRL_FILE = "crl.pem";
export const REGISTRY = "certs.json";
export const DEFAULT_LEAF_DAYS = 90;
export const DEFAULT_CA_DAYS = 3650;
export const DEFAULT_CRL_DAYS = 30;

/** A certificate the CA signed, as certs.json records it. */
export interface RegisteredCert {
  serial: string;
  profile: Profile;
  name: string;
  notBefore: string;
  notAfter: string;
  /** Where `cert issue` wrote it and its key; absent for a certificate a server signed for a node's own key. */
  certFile?: string;
  keyFile?: string;
  /** Set for a certificate a server signed (serve --ca-dir): at the node's enrolment, or at a renewal. */
  origin?: "enrolment" | "renewal";
  revokedAt?: string;
}

/** A certificate `cert issue` made, with the files it wrote. */
export type IssuedCert = RegisteredCert & { certFile: string; keyFile: string };

function readRegistry(dir: string): RegisteredCert[] {
  const file = path.join(dir, REGISTRY);
  return existsSync(file) ? (JSON.parse(readFileSync(file, "utf8")) as RegisteredCert[]) : [];
}

const LOCK_WAIT_MS = 10_000;
const isAlive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
};

/**
 * Runs `fn` holding certs.json.lock: `autonomy cert` and a server signing node certificates
 * (serve --ca-dir) may change the registry and the CRL at the same time. A lock left by a
 * process that died is taken over.
 */
export async function withRegistryLock<T>(dir: string, fn: () => Promise<T>): Promise<T> {
  const lock = path.join(dir, `${REGISTRY}.lock`);
  const deadline = Date.now() + LOCK_WAIT_MS;
  for (;;) {
    try {
      const fd = openSync(lock, "wx", 0o600);
      try {
        writeSync(fd, String(process.pid));
      } finally {
        closeSync(fd);
      }
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
      let holder = NaN;
      let ageMs = 0;
      try {
        holder = Number(readFileSync(lock, "utf8"));
        ageMs = Date.now() - statSync(lock).mtimeMs;
      } catch {
        continue; // released meanwhile
      }
      // A holder that died, or a lock file never written (a crash between create and write).
      if ((Number.isInteger(holder) && holder > 0 && !isAlive(holder)) || (!Number.isInteger(holder) && ageMs > LOCK_WAIT_MS)) {
        try {
          unlinkSync(lock);
        } catch {
          // another waiter took it over first
        }
        continue;
      }
      if (Date.now() > deadline) throw new Error(`${lock} is held by process ${Number.isInteger(holder) ? holder : "(unknown)"}: another autonomy cert command or a server signing certificates is changing the CA`);
      await sleep(20);
    }
  }
  try {
    return await fn();
  } finally {
    try {
      unlinkSync(lock);
    } catch {
      // nothing to release
    }
  }
}

/** A CA as loaded from its directory. */
export interface LoadedCa {
  cert: x509.X509Certificate;
  key: CryptoKey;
  pem: string;
}

export async function loadCa(dir: string): Promise<LoadedCa> {
  const certFile = path.join(dir, CA_CERT);
  if (!existsSync(certFile)) throw new Error(`${dir} holds no CA: run \`autonomy cert init-ca --ca-dir ${dir}\` first`);
  const pem = readFileSync(certFile, "utf8");
  return { cert: new x509.X509Certificate(pem), key: await importPrivateKeyPem(readFileSync(path.join(dir, CA_KEY), "utf8")), pem };
}

/** Appends a certificate to certs.json (under its lock). */
export function registerCert(dir: string, c: RegisteredCert): Promise<void> {
  return withRegistryLock(dir, async () => writeFileAtomic(path.join(dir, REGISTRY), JSON.stringify([...readRegistry(dir), c], null, 2) + "\n"));
}

/**
 * Signs a leaf certificate for a public key: ECDSA P-256, SHA-256. node and operator
 * certificates are for clients (their CN is the node id or the operator name); server
 * certificates carry the DNS names and IP addresses given (localhost and 127.0.0.1 when none).
 */
export async function signLeaf(
  ca: LoadedCa,
  opts: { profile: Profile; name: string; publicKey: CryptoKey | x509.PublicKey; notBefore: Date; notAfter: Date; dns?: string[]; ips?: string[] },
): Promise<{ cert: x509.X509Certificate; serial: string }> {
  const serial = randomSerial();
  const extensions: x509.Extension[] = [
    new x509.BasicConstraintsExtension(false, undefined, true),
    new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyAgreement, true),
    // Servers are clients too when they pull CRLs from their peers.
    new x509.ExtendedKeyUsageExtension(
      opts.profile === "server" ? [x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth] : [x509.ExtendedKeyUsage.clientAuth],
    ),
    await x509.AuthorityKeyIdentifierExtension.create(ca.cert.publicKey),
  ];
  if (opts.profile === "server") {
    const dns = opts.dns?.length || opts.ips?.length ? (opts.dns ?? []) : ["localhost"];
    const ips = opts.dns?.length || opts.ips?.length ? (opts.ips ?? []) : ["127.0.0.1"];
    extensions.push(
      new x509.SubjectAlternativeNameExtension([...dns.map((value) => ({ type: "dns" as const, value })), ...ips.map((value) => ({ type: "ip" as const, value }))]),
    );
  }
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: serial,
    subject: `CN=${opts.name}, OU=${opts.profile}, O=autonomy`,
    issuer: ca.cert.subjectName,
    notBefore: opts.notBefore,
    notAfter: opts.notAfter,
    signingAlgorithm: EC_ALGORITHM,
    publicKey: opts.publicKey,
    signingKey: ca.key,
    extensions,
  });
  return { cert, serial: normalizeSerial(serial) };
}

/** A name usable in a subject and a file name: letters, digits, dot, dash, underscore. */
function checkName(name: string): void {
  if (!/^[A-Za-z0-9._-]{1,128}$/.test(name)) throw new Error(`--name "${name}": use 1 to 128 letters, digits, dots, dashes or underscores`);
}

/** Creates a CA (certificate, key, empty CRL number 1) in an empty directory. */
export async function initCa(dir: string, opts: { commonName?: string; days?: number; crlDays?: number } = {}): Promise<{ certFile: string }> {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  if (existsSync(path.join(dir, CA_CERT))) throw new Error(`${path.join(dir, CA_CERT)} exists already; a CA is created once`);
  const keys = await generateKeyPair();
  const now = new Date();
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: randomSerial(),
    name: `CN=${opts.commonName ?? "autonomy orchestrator CA"}, O=autonomy`,
    notBefore: new Date(now.getTime() - 60_000),
    notAfter: new Date(now.getTime() + (opts.days ?? DEFAULT_CA_DAYS) * 86_400_000),
    signingAlgorithm: EC_ALGORITHM,
    keys,
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  writeFileAtomic(path.join(dir, CA_KEY), await privateKeyPem(keys.privateKey), 0o600);
  writeFileAtomic(path.join(dir, CA_CERT), cert.toString("pem"));
  writeFileAtomic(path.join(dir, REGISTRY), "[]\n");
  const crl = await createCrl({ caCert: cert, caKey: keys.privateKey, number: 1n, revoked: [], validDays: opts.crlDays ?? DEFAULT_CRL_DAYS });
  writeFileAtomic(path.join(dir, CRL_FILE), crlPem(crl));
  return { certFile: path.join(dir, CA_CERT) };
}

/**
 * Issues a certificate with a new key: `days` long (90 by default), written with its key
 * (mode 0600) and recorded in certs.json (see signLeaf).
 */
export async function issueCert(
  dir: string,
  opts: { profile: Profile; name: string; days?: number; dns?: string[]; ips?: string[]; outDir?: string; now?: Date },
): Promise<IssuedCert> {
  checkName(opts.name);
  const ca = await loadCa(dir);
  const keys = await generateKeyPair();
  const now = opts.now ?? new Date();
  const days = opts.days ?? DEFAULT_LEAF_DAYS;
  if (!Number.isInteger(days) || days < 1) throw new Error("--days: a whole number of days, at least 1");
  const { cert, serial } = await signLeaf(ca, {
    profile: opts.profile,
    name: opts.name,
    publicKey: keys.publicKey,
    notBefore: new Date(now.getTime() - 60_000),
    notAfter: new Date(now.getTime() + days * 86_400_000),
    dns: opts.dns,
    ips: opts.ips,
  });
  const outDir = opts.outDir ?? dir;
  mkdirSync(outDir, { recursive: true, mode: 0o700 });
  const base = path.join(outDir, `${opts.profile}-${opts.name}`);
  const issued: IssuedCert = {
    serial,
    profile: opts.profile,
    name: opts.name,
    notBefore: cert.notBefore.toISOString(),
    notAfter: cert.notAfter.toISOString(),
    certFile: `${base}.pem`,
    keyFile: `${base}-key.pem`,
  };
  writeFileAtomic(issued.keyFile, await privateKeyPem(keys.privateKey), 0o600);
  writeFileAtomic(issued.certFile, cert.toString("pem"));
  await registerCert(dir, issued);
  return issued;
}

/**
 * Revokes certificates (by serial, or every valid one of a name) and writes the next CRL; with
 * nothing to revoke it re-signs the CRL with a new number and validity (a refresh).
 */
export async function revokeCerts(
  dir: string,
  opts: { serial?: string; profile?: Profile; name?: string; crlDays?: number; now?: Date },
): Promise<{ revoked: RegisteredCert[]; crlNumber: bigint; crlFile: string }> {
  const ca = await loadCa(dir);
  return withRegistryLock(dir, () => revokeLocked(dir, ca, opts));
}

async function revokeLocked(
  dir: string,
  ca: LoadedCa,
  opts: { serial?: string; profile?: Profile; name?: string; crlDays?: number; now?: Date },
): Promise<{ revoked: RegisteredCert[]; crlNumber: bigint; crlFile: string }> {
  const registry = readRegistry(dir);
  const now = opts.now ?? new Date();
  const serial = opts.serial === undefined ? undefined : normalizeSerial(opts.serial);
  const targets = registry.filter(
    (c) => c.revokedAt === undefined && (serial !== undefined ? c.serial === serial : c.name === opts.name && (opts.profile === undefined || c.profile === opts.profile)),
  );
  if ((serial !== undefined || opts.name !== undefined) && targets.length === 0) {
    throw new Error(`no valid certificate ${serial !== undefined ? `with serial ${serial}` : `named "${opts.name}"`} in ${path.join(dir, REGISTRY)}`);
  }
  for (const c of targets) c.revokedAt = now.toISOString();
  const crlFile = path.join(dir, CRL_FILE);
  const current = existsSync(crlFile) ? crlNumber(new x509.X509Crl(x509.PemConverter.decode(readFileSync(crlFile, "utf8"))[0])) : 0n;
  const crl = await createCrl({
    caCert: ca.cert,
    caKey: ca.key,
    number: current + 1n,
    revoked: registry.filter((c) => c.revokedAt !== undefined).map((c) => ({ serial: c.serial, revokedAt: new Date(c.revokedAt!) })),
    validDays: opts.crlDays ?? DEFAULT_CRL_DAYS,
    now,
  });
  writeFileAtomic(path.join(dir, REGISTRY), JSON.stringify(registry, null, 2) + "\n");
  writeFileAtomic(crlFile, crlPem(crl));
  return { revoked: targets, crlNumber: current + 1n, crlFile };
}

export type CertState = "valid" | "expiring" | "expired" | "revoked";

/** Every certificate issued, with its state now; `expiringWithinDays` marks those ending soon. */
export function listCerts(dir: string, opts: { expiringWithinDays?: number; now?: Date } = {}): (RegisteredCert & { state: CertState })[] {
  const now = (opts.now ?? new Date()).getTime();
  const soon = now + (opts.expiringWithinDays ?? 0) * 86_400_000;
  return readRegistry(dir).map((c) => {
    const end = Date.parse(c.notAfter);
    const state: CertState = c.revokedAt ? "revoked" : end < now ? "expired" : opts.expiringWithinDays !== undefined && end < soon ? "expiring" : "valid";
    return { ...c, state };
  });
}

/** Whether a certificate file is revoked by a CRL (checked against the CA first). */
export async function checkRevocation(opts: { certFile: string; crlFile: string; caFile: string }): Promise<{ serial: string; revoked: boolean; crlNumber: bigint; subject: string }> {
  const cert = new x509.X509Certificate(readFileSync(opts.certFile, "utf8"));
  const crl = await checkCrl(readFileSync(opts.crlFile), readFileSync(opts.caFile, "utf8"));
  const serial = normalizeSerial(cert.serialNumber);
  return { serial, revoked: crl.revoked.has(serial), crlNumber: crl.number, subject: cert.subject };
}
