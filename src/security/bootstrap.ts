/**
 * The first start of an enforced server on an empty RBAC store: a one-time admin token, so
 * that someone can give people their roles and tokens.
 */
import { mkdirSync } from "node:fs";
import path from "node:path";
import { writeFileAtomic } from "../files.js";
import type { Logger } from "../observability/logger.js";
import { auditRecord } from "../services/audit-record.js";
import type { Store } from "../store/store.js";
import { newToken } from "./authz.js";

/** The one-time admin token written into the data dir on the first start of an empty RBAC store. */
export const BOOTSTRAP_TOKEN_FILE = "bootstrap-admin-token";
const BOOTSTRAP_PRINCIPAL = "operator:admin";
const BOOTSTRAP_TTL_MS = 24 * 3_600_000;

/**
 * On an RBAC store with no binding and no token: a token for operator:admin, who gets the
 * admin role, written to the data dir (mode 0600). It expires after 24 hours; use it to give
 * people their roles and tokens, then revoke it.
 */
export async function bootstrapRbac(store: Store, dataDir: string, logger: Logger): Promise<void> {
  const counts = await store.rbacCounts();
  if (counts.bindings > 0 || counts.tokens > 0) return;
  const { token, hash, id } = newToken();
  const now = Date.now();
  const who = { actor: "system:bootstrap", source: "server" };
  await store.assignRole(
    { principal: BOOTSTRAP_PRINCIPAL, role: "admin", createdAtMs: now },
    auditRecord(who, { eventName: "rbac.role.assigned", category: "auth", action: "assign", resourceType: "principal", resource: BOOTSTRAP_PRINCIPAL, fields: { role: "admin" }, reason: "bootstrap of an empty RBAC store" }),
  );
  await store.createToken(
    { tokenId: id, tokenHash: hash, principal: BOOTSTRAP_PRINCIPAL, description: "bootstrap admin token", createdAtMs: now, expiresAtMs: now + BOOTSTRAP_TTL_MS, revokedAtMs: null },
    auditRecord(who, { eventName: "rbac.token.created", category: "auth", action: "create", resourceType: "token", resource: id, fields: { principal: BOOTSTRAP_PRINCIPAL, ttl_hours: 24 }, reason: "bootstrap of an empty RBAC store" }),
  );
  mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  const file = path.join(dataDir, BOOTSTRAP_TOKEN_FILE);
  writeFileAtomic(file, `${token}\n`, 0o600);
  logger.warn(
    { file, principal: BOOTSTRAP_PRINCIPAL, token_id: id, expires_in: "24h" },
    "RBAC store was empty: wrote a one-time admin token; use it (autonomy --token-file FILE) to assign roles and create tokens, then revoke it",
  );
}
