import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import type { ServiceImpl } from "@connectrpc/connect";
import { BindingSchema, RoleSchema, TokenInfoSchema, type RbacService } from "../../gen/autonomy/v1/rbac_pb.js";
import { ConflictError, NotFoundError, ValidationError } from "../domain/errors.js";
import { checkBytes } from "../domain/fields.js";
import { ANONYMOUS, newToken, principalId, type Principal } from "../domain/identity.js";
import { BUILTIN_ROLES, checkPermissions, checkPrincipal, checkRoleName } from "../domain/rbac.js";
import type { BindingRow, TokenRow } from "../store/rbac-rows.js";
import type { Store } from "../store/store.js";
import { requestInfoKey } from "../transport/context.js";
import { actorOf, auditRecord } from "./audit-record.js";

const HOUR_MS = 3_600_000;
export const DEFAULT_TOKEN_TTL_HOURS = 720;
export const MAX_TOKEN_TTL_HOURS = 8760;

const bindingOf = (b: BindingRow) => create(BindingSchema, { principal: b.principal, role: b.role, createdAt: timestampFromMs(b.createdAtMs) });
const tokenInfoOf = (t: TokenRow) =>
  create(TokenInfoSchema, {
    tokenId: t.tokenId,
    principal: t.principal,
    description: t.description,
    createdAt: timestampFromMs(t.createdAtMs),
    expiresAt: timestampFromMs(t.expiresAtMs),
    revokedAt: t.revokedAtMs === null ? undefined : timestampFromMs(t.revokedAtMs),
  });

/** What the RBAC service needs of the authorizer: whether it enforces, who holds what, and a cache to drop. */
export interface AccessControl {
  readonly enforced: boolean;
  accessOf(p: Principal): Promise<{ roles: string[]; permissions: Set<string> }>;
  invalidate(): void;
}

/** RbacService: roles, bindings and tokens, every change audited in its own transaction. */
export function createRbacService(deps: { store: Store; authorizer: AccessControl }): ServiceImpl<typeof RbacService> {
  const { store, authorizer } = deps;
  const knownRole = async (role: string) => {
    checkRoleName(role);
    if (BUILTIN_ROLES[role]) return;
    if (!(await store.listRoles()).some((r) => r.name === role)) throw new NotFoundError(`role "${role}" is not defined; see autonomy rbac role list`);
  };
  const rbacAudit = (ctx: Parameters<typeof actorOf>[0], eventName: string, action: string, resourceType: string, resource: string, fields: object) =>
    auditRecord(actorOf(ctx), { eventName, category: "auth", action, resourceType, resource, fields });

  return {
    async listRoles() {
      const custom = await store.listRoles();
      const roles = [
        ...Object.entries(BUILTIN_ROLES).map(([name, permissions]) => create(RoleSchema, { name, permissions: [...permissions], builtin: true })),
        ...custom.map((r) => create(RoleSchema, { name: r.name, permissions: JSON.parse(r.permissions) as string[], builtin: false })),
      ];
      return { roles };
    },

    async createRole(req, ctx) {
      if (!req.role) throw new ValidationError("role", "required");
      checkRoleName(req.role.name, "role.name");
      if (BUILTIN_ROLES[req.role.name]) throw new ConflictError(`role "${req.role.name}" is built in and cannot be redefined`);
      checkPermissions(req.role.permissions);
      const permissions = [...new Set(req.role.permissions)].sort();
      const row = await store.putRole(
        { name: req.role.name, permissions: JSON.stringify(permissions), createdAtMs: Date.now() },
        rbacAudit(ctx, "rbac.role.defined", "define", "role", req.role.name, { permissions }),
      );
      authorizer.invalidate();
      return { role: create(RoleSchema, { name: row.name, permissions: JSON.parse(row.permissions) as string[], builtin: false }) };
    },

    async listBindings(req) {
      if (req.principal !== "") checkPrincipal(req.principal);
      return { bindings: (await store.listBindings(req.principal || undefined)).map(bindingOf) };
    },

    async assignRole(req, ctx) {
      checkPrincipal(req.principal);
      await knownRole(req.role);
      const binding = await store.assignRole(
        { principal: req.principal, role: req.role, createdAtMs: Date.now() },
        rbacAudit(ctx, "rbac.role.assigned", "assign", "principal", req.principal, { role: req.role }),
      );
      authorizer.invalidate();
      return { binding: bindingOf(binding) };
    },

    async revokeRole(req, ctx) {
      checkPrincipal(req.principal);
      checkRoleName(req.role);
      const revoked = await store.revokeRole(req.principal, req.role, rbacAudit(ctx, "rbac.role.revoked", "revoke", "principal", req.principal, { role: req.role }));
      authorizer.invalidate();
      return { revoked };
    },

    async createToken(req, ctx) {
      checkPrincipal(req.principal);
      checkBytes(req.description, "description", 1024);
      const ttl = req.ttlHours ?? DEFAULT_TOKEN_TTL_HOURS;
      if (!Number.isInteger(ttl) || ttl < 1 || ttl > MAX_TOKEN_TTL_HOURS) throw new ValidationError("ttl_hours", `must be 1 to ${MAX_TOKEN_TTL_HOURS}`);
      const { token, hash, id } = newToken();
      const now = Date.now();
      const row: TokenRow = { tokenId: id, tokenHash: hash, principal: req.principal, description: req.description, createdAtMs: now, expiresAtMs: now + ttl * HOUR_MS, revokedAtMs: null };
      await store.createToken(row, rbacAudit(ctx, "rbac.token.created", "create", "token", id, { principal: req.principal, ttl_hours: ttl }));
      return { token, info: tokenInfoOf(row) };
    },

    async listTokens() {
      return { tokens: (await store.listTokens()).map(tokenInfoOf) };
    },

    async revokeToken(req, ctx) {
      if (!/^[0-9a-f]{12}$/.test(req.tokenId)) throw new ValidationError("token_id", "12 hex digits, as token list shows");
      const row = await store.revokeToken(req.tokenId, Date.now(), rbacAudit(ctx, "rbac.token.revoked", "revoke", "token", req.tokenId, {}));
      authorizer.invalidate();
      return { info: tokenInfoOf(row) };
    },

    async whoAmI(_req, ctx) {
      const principal = ctx.values.get(requestInfoKey)?.principal ?? ANONYMOUS;
      const access = principal.kind === "anonymous" ? { roles: [], permissions: new Set<string>() } : await authorizer.accessOf(principal);
      return {
        principal: principalId(principal),
        authenticatedBy: principal.via,
        roles: access.roles,
        permissions: [...access.permissions].sort(),
        enforced: authorizer.enforced,
      };
    },
  };
}
