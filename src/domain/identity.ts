/**
 * Who is calling: the identity a verified client certificate or a bearer token gives, and
 * the bearer tokens themselves (only their hash is stored).
 */
import { createHash, randomBytes } from "node:crypto";

/** What a verified client certificate says: its CN and OU (the profile), and its serial. */
export interface PeerIdentity {
  cn: string;
  ou: string;
  /** Upper-case hex without leading zeros (normalizeSerial), when the certificate has one. */
  serial?: string;
}

export type PrincipalKind = "operator" | "node" | "server" | "anonymous";

/** Who is calling, as authenticated (or anonymous). */
export interface Principal {
  kind: PrincipalKind;
  name: string;
  /** certificate, token or none */
  via: "certificate" | "token" | "none";
}

export const ANONYMOUS: Principal = { kind: "anonymous", name: "", via: "none" };

export function principalId(p: Principal): string {
  return p.kind === "anonymous" ? "anonymous" : `${p.kind}:${p.name}`;
}

/** Every bearer token starts with this, so a leaked one is easy to recognise. */
export const TOKEN_PREFIX = "ao_";

/** A new bearer token, the hash the store keeps of it, and its public id. */
export function newToken(): { token: string; hash: string; id: string } {
  const token = `${TOKEN_PREFIX}${randomBytes(32).toString("base64url")}`;
  return { token, hash: hashToken(token), id: randomBytes(6).toString("hex") };
}

export const hashToken = (token: string) => createHash("sha256").update(token).digest("hex");
