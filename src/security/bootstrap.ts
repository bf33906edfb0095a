/**
 * The first start of an empty RBAC store: a one-time admin token in the data dir, for a
 * principal of its own (operator:bootstrap-<token id>), so that no later credential — a
 * certificate issued for "admin", say — inherits the bootstrap's role. Its binding goes when
 * the token is revoked or expires (src/services/rbac-service.ts, retireBootstrapBindings).
 */
import { mkdirSync } from "node:fs";
import path from "node:path";
import { auditRecord } from "../domain/audit.js";
import { newToken } from "../domain/identity.js";
import { BOOTSTRAP_PRINCIPAL_PREFIX } from "../domain/rbac.js";
import { writeFileAtomic } from "../files.js";
import type { Logger } from "../observability/logger.js";
import type { Store } from "../store/store.js";

/** The one-time admin token written into the data dir on the first start of an empty RBAC store. */
export const BOOTSTRAP_TOKEN_FILE = "bootstrap-admin-token";
export const BOOTSTRAP_TTL_MS = 24 * 3_600_000;

/**
 * On an RBAC store with no binding and no token: a token for operator:bootstrap-<id>, who gets
 * the admin role, written to the data dir (mode 0600). It expires after 24 hours; use it to
 * give people their roles and tokens, then revoke it. Resolves with the principal, or
 * undefined when the store was not empty.
 */
export async function bootstrapRbac(store: Store, dataDir: string, logger: Logger): Promise<string | undefined> {
  const counts = await store.rbacCounts();
  if (counts.bindings > 0 || counts.tokens > 0) return undefined;
  const { token, hash, id } = newToken();
  const principal = `${BOOTSTRAP_PRINCIPAL_PREFIX}${id}`;
  const now = Date.now();
  const who = { actor: "system:bootstrap", source: "server" };
  const reason = "bootstrap of an empty RBAC store";
  await store.assignRole(
    { principal, role: "admin", createdAtMs: now },
    auditRecord(who, { eventName: "rbac.role.assigned", category: "auth", action: "assign", resourceType: "principal", resource: principal, fields: { role: "admin" }, reason }),
  );
  await store.createToken(
    { tokenId: id, tokenHash: hash, principal, description: "bootstrap admin token", createdAtMs: now, expiresAtMs: now + BOOTSTRAP_TTL_MS, revokedAtMs: null },
    auditRecord(who, { eventName: "rbac.token.created", category: "auth", action: "create", resourceType: "token", resource: id, fields: { principal, ttl_hours: 24 }, reason }),
  );
  mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  const file = path.join(dataDir, BOOTSTRAP_TOKEN_FILE);
  writeFileAtomic(file, `${token}\n`, 0o600);
  logger.warn(
    { file, principal, token_id: id, expires_in: "24h" },
    "RBAC store was empty: wrote a one-time admin token; use it (autonomy --token-file FILE) to assign roles and create tokens, then revoke it (its admin binding goes with it)",
  );
  return principal;
}
