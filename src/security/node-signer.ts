/**
 * The server's side of enrolment (serve --ca-dir): it reads certificate signing requests
 * (PKCS#10) and signs node certificates for the keys in them with the CA of `autonomy cert`
 * (./ca.ts), recording each in the CA's certs.json so `autonomy cert list` and
 * `autonomy cert revoke` know them. The server holds the CA key only when it is given --ca-dir.
 */
import { ValidationError } from "../domain/errors.js";
import { certificateBackdateMs, renewAtMs, type CsrNames, type NodeCertificateAuthority, type SignedNodeCertificate } from "../domain/enrollment.js";
import { loadCa, registerCert, signLeaf, type LoadedCa } from "./ca.js";
import { x509 } from "./pki.js";

/** Longest CSR read, in bytes of PEM (a P-256 request is well under 1 KiB). */
export const MAX_CSR_BYTES = 16 * 1024;
const SAN_OID = "2.5.29.17";

/** A request that parsed, whose signature verified: the key it carries and the names it asks for. */
export interface CheckedCsr {
  publicKey: x509.PublicKey;
  names: CsrNames;
}

const pemLine = (pem: string) => (pem.endsWith("\n") ? pem : `${pem}\n`);

/**
 * Parses a CSR and checks what needs no policy: a PEM PKCS#10 request, for an ECDSA P-256 key,
 * signed by that key (so the caller holds it). ValidationError naming csr_pem otherwise.
 */
export async function checkCsr(pem: string): Promise<CheckedCsr> {
  const field = "csr_pem";
  if (pem === "") throw new ValidationError(field, "required: a PKCS#10 certificate signing request (PEM)");
  if (Buffer.byteLength(pem, "utf8") > MAX_CSR_BYTES) throw new ValidationError(field, `longer than ${MAX_CSR_BYTES} bytes`);
  if (!pem.includes("-----BEGIN CERTIFICATE REQUEST-----")) throw new ValidationError(field, "not a PEM certificate signing request (-----BEGIN CERTIFICATE REQUEST-----)");
  let csr: x509.Pkcs10CertificateRequest;
  try {
    csr = new x509.Pkcs10CertificateRequest(pem);
  } catch {
    throw new ValidationError(field, "not a readable PKCS#10 certificate signing request");
  }
  const algorithm = csr.publicKey.algorithm as { name?: string; namedCurve?: string };
  if (algorithm.name !== "ECDSA" || algorithm.namedCurve !== "P-256") {
    throw new ValidationError(field, `the key must be ECDSA P-256, not ${algorithm.name ?? "unknown"}${algorithm.namedCurve ? ` ${algorithm.namedCurve}` : ""}`);
  }
  let verified = false;
  try {
    verified = await csr.verify();
  } catch {
    verified = false;
  }
  if (!verified) throw new ValidationError(field, "its signature does not verify: the request was not signed by the key it carries");
  let altNames: string[] = [];
  const san = csr.getExtension(SAN_OID);
  if (san) {
    try {
      altNames = new x509.SubjectAlternativeNameExtension(san.rawData).names.toJSON().map((n) => `${n.type}:${n.value}`);
    } catch {
      throw new ValidationError(field, "its subject alternative names cannot be read");
    }
  }
  return {
    publicKey: csr.publicKey,
    names: { commonNames: csr.subjectName.getField("CN"), organizationalUnits: csr.subjectName.getField("OU"), altNames },
  };
}

/** Signs node certificates with the CA of a directory made by `autonomy cert init-ca`. */
export class NodeCertificateSigner implements NodeCertificateAuthority<CheckedCsr> {
  private constructor(
    private readonly dir: string,
    private readonly ca: LoadedCa,
    /** How long a signed certificate is valid (serve --node-cert-valid-for). */
    readonly lifetimeMs: number,
  ) {}

  /**
   * Loads the CA of `dir`. With `trustedCaPem` (the server's --tls-ca-file), the CA must be one
   * of the certificates in it: else the server would refuse the certificates it signs.
   */
  static async load(dir: string, opts: { lifetimeMs: number; trustedCaPem?: string }): Promise<NodeCertificateSigner> {
    let ca: LoadedCa;
    try {
      ca = await loadCa(dir);
    } catch (err) {
      throw new Error(`--ca-dir ${dir}: ${(err as NodeJS.ErrnoException).code === "ENOENT" ? "no ca-key.pem beside ca.pem" : (err as Error).message}`);
    }
    if (opts.trustedCaPem !== undefined) {
      const own = Buffer.from(ca.cert.rawData);
      const trusted = x509.PemConverter.decode(opts.trustedCaPem).map((der) => Buffer.from(der));
      if (!trusted.some((der) => der.equals(own))) {
        throw new Error(`--ca-dir ${dir}: its CA certificate is not in --tls-ca-file, so this server would refuse the node certificates it signs`);
      }
    }
    return new NodeCertificateSigner(dir, ca, opts.lifetimeMs);
  }

  checkCsr(pem: string): Promise<CheckedCsr> {
    return checkCsr(pem);
  }

  get caPem(): string {
    return pemLine(this.ca.pem);
  }

  /**
   * Signs a node certificate for the request's key, valid from now (a little before, for
   * clocks behind) for lifetimeMs, with the CA's node profile (CN=<node id>, OU=node), and
   * records it in certs.json before it is handed out.
   */
  async sign(csr: CheckedCsr, nodeId: string, origin: "enrolment" | "renewal", nowMs = Date.now()): Promise<SignedNodeCertificate> {
    const notBefore = new Date(nowMs - certificateBackdateMs(this.lifetimeMs));
    const notAfter = new Date(nowMs + this.lifetimeMs);
    const { cert, serial } = await signLeaf(this.ca, { profile: "node", name: nodeId, publicKey: csr.publicKey, notBefore, notAfter });
    // X.509 keeps whole seconds: the times as the certificate says them.
    const notBeforeMs = cert.notBefore.getTime();
    const notAfterMs = cert.notAfter.getTime();
    await registerCert(this.dir, { serial, profile: "node", name: nodeId, notBefore: cert.notBefore.toISOString(), notAfter: cert.notAfter.toISOString(), origin });
    const certPem = pemLine(cert.toString("pem"));
    return { serial, certPem, chainPem: certPem + this.caPem, caPem: this.caPem, notBeforeMs, notAfterMs, renewAfterMs: renewAtMs(notBeforeMs, notAfterMs) };
  }
}
