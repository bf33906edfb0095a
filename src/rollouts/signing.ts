import { createHash, createPrivateKey, createPublicKey, generateKeyPairSync, sign, type KeyObject } from "node:crypto";
import { mkdirSync, readFileSync } from "node:fs";
import path from "node:path";
import { writeFileAtomic } from "../files.js";
import type { SigningKeyRow } from "../store/rollout-rows.js";

/** The private key that signs rollout specs, inside --data-dir. */
export const SIGNING_KEY_FILE = "rollout-signing-key.pem";

/** A key's id: the first 16 hex digits of the SHA-256 of its public key (SubjectPublicKeyInfo, DER). */
export function keyIdOf(publicKey: KeyObject): string {
  return createHash("sha256")
    .update(publicKey.export({ type: "spki", format: "der" }))
    .digest("hex")
    .slice(0, 16);
}

/**
 * The server's Ed25519 spec signer. The key is created on first start and kept in the data
 * dir (mode 0600); its public half is registered in the store so every replica can serve
 * every key that ever signed a stored spec.
 */
export class SpecSigner {
  private constructor(
    private readonly privateKey: KeyObject,
    readonly keyId: string,
    readonly publicKeyPem: string,
  ) {}

  /** Loads the key from the data dir, creating it when there is none. */
  static load(dataDir: string): SpecSigner {
    const file = path.join(dataDir, SIGNING_KEY_FILE);
    let pem: string;
    try {
      pem = readFileSync(file, "utf8");
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
      mkdirSync(dataDir, { recursive: true, mode: 0o700 });
      const { privateKey } = generateKeyPairSync("ed25519");
      pem = privateKey.export({ type: "pkcs8", format: "pem" }) as string;
      writeFileAtomic(file, pem, 0o600);
    }
    const privateKey = createPrivateKey(pem);
    if (privateKey.asymmetricKeyType !== "ed25519") throw new Error(`${SIGNING_KEY_FILE} does not hold an Ed25519 key`);
    const publicKey = createPublicKey(privateKey);
    return new SpecSigner(privateKey, keyIdOf(publicKey), publicKey.export({ type: "spki", format: "pem" }) as string);
  }

  row(nowMs: number): SigningKeyRow {
    return { keyId: this.keyId, publicKeyPem: this.publicKeyPem, createdAtMs: nowMs };
  }

  sign(bytes: Uint8Array): Buffer {
    return sign(null, bytes, this.privateKey);
  }
}
