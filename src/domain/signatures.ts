/**
 * Checking a signed rollout spec: pure, so that the agent (which carries no server code) and
 * the server verify the same way.
 */
import { createPublicKey, verify } from "node:crypto";

/** Whether an Ed25519 signature over bytes verifies against a PEM public key (false for a malformed key). */
export function verifySpecSignature(bytes: Uint8Array, signature: Uint8Array, publicKeyPem: string): boolean {
  try {
    return verify(null, bytes, createPublicKey(publicKeyPem), signature);
  } catch {
    return false;
  }
}
