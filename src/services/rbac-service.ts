import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import type { HandlerContext, ServiceImpl } from "@connectrpc/connect";
import { BindingSchema, RoleSchema, TokenInfoSchema, type RbacService } from "../../gen/autonomy/v1/rbac_pb.js";
import { ConflictError, NotFoundError, ValidationError } from "../domain/errors.js";
import { checkBytes } from "../domain/fields.js";
import { ANONYMOUS, newToken, principalId, type Principal } from "../domain/identity.js";
import { auditRecord } from "../domain/audit.js";
import { BUILTIN_ROLES, checkPermissions, checkPrincipal, checkRoleName, grants, isBootstrapPrincipal } from "../domain/rbac.js";
import type { BindingRow, TokenRow } from "../store/rbac-rows.js";
import type { Store } from "../store/store.js";
import { requestInfoKey } from "../transport/context.js";
import { actorOf } from "./audit-record.js";

const HOUR_MS = 3_600_000;

const callerOf = (ctx: HandlerContext): Principal => ctx.values.get(requestInfoKey)?.principal ?? ANONYMOUS;
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

const usable = (t: TokenRow, nowMs: number) => t.revokedAtMs === null && t.expiresAtMs > nowMs;

/**
 * Removes the bindings of bootstrap principals whose token is revoked or expired (each with its
 * audit record), so that the bootstrap admin goes with its token. Resolves with the principals
 * whose bindings went.
 */
export async function retireBootstrapBindings(store: Store, nowMs: number): Promise<string[]> {
  const bindings = (await store.listBindings()).filter((b) => isBootstrapPrincipal(b.principal));
  if (bindings.length === 0) return [];
  const live = new Set((await store.listTokens()).filter((t) => usable(t, nowMs)).map((t) => t.principal));
  const retired: string[] = [];
  for (const b of bindings) {
    if (live.has(b.principal)) continue;
    await store.revokeRole(
      b.principal,
      b.role,
      auditRecord(
        { actor: "system:rbac", source: "server" },
        { eventName: "rbac.role.revoked", category: "auth", action: "revoke", resourceType: "principal", resource: b.principal, fields: { role: b.role }, reason: "its bootstrap token was revoked or has expired" },
      ),
    );
    retired.push(b.principal);
  }
  return retired;
}

/** Each principal's permissions, from bindings and the custom roles. */
async function permissionsByPrincipal(store: Store, bindings: readonly BindingRow[]): Promise<Map<string, Set<string>>> {
  const custom = new Map((await store.listRoles()).map((r) => [r.name, JSON.parse(r.permissions) as string[]]));
  const out = new Map<string, Set<string>>();
  for (const b of bindings) {
    const set = out.get(b.principal) ?? new Set<string>();
    for (const p of BUILTIN_ROLES[b.role] ?? custom.get(b.role) ?? []) set.add(p);
    out.set(b.principal, set);
  }
  return out;
}

const MANAGE = "rbac:manage";

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
      const warnings: string[] = [];
      if (permissions.includes("*")) warnings.push(`role "${req.role.name}" grants every permission ("*"), as admin does`);
      const row = await store.putRole(
        { name: req.role.name, permissions: JSON.stringify(permissions), createdAtMs: Date.now() },
        rbacAudit(ctx, "rbac.role.defined", "define", "role", req.role.name, { permissions }),
      );
      authorizer.invalidate();
      return { role: create(RoleSchema, { name: row.name, permissions: JSON.parse(row.permissions) as string[], builtin: false }), warnings };
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
      const bindings = await store.listBindings();
      if (!req.force && bindings.some((b) => b.principal === req.principal && b.role === req.role)) {
        const before = await permissionsByPrincipal(store, bindings);
        const after = await permissionsByPrincipal(store, bindings.filter((b) => !(b.principal === req.principal && b.role === req.role)));
        const managers = (m: Map<string, Set<string>>) => [...m].filter(([, perms]) => grants(perms, MANAGE)).length;
        if (managers(before) > 0 && managers(after) === 0) {
          throw new ConflictError(`${req.principal} is the last principal whose roles grant ${MANAGE}: without it nobody could change roles again; assign another principal a role that grants it first (autonomy rbac role assign --role admin), or pass force (autonomy: --force) to revoke anyway`);
        }
      }
      const caller = callerOf(ctx);
      const warnings = caller.kind !== "anonymous" && principalId(caller) === req.principal ? [`you revoked your own role ${req.role}; your next calls run without it`] : [];
      const revoked = await store.revokeRole(req.principal, req.role, rbacAudit(ctx, "rbac.role.revoked", "revoke", "principal", req.principal, { role: req.role }));
      authorizer.invalidate();
      return { revoked, warnings: revoked ? warnings : [] };
    },

    async createToken(req, ctx) {
      checkPrincipal(req.principal);
      checkBytes(req.description, "description", 1024);
      const ttl = req.ttlHours ?? DEFAULT_TOKEN_TTL_HOURS;
      if (!Number.isInteger(ttl) || ttl < 1 || ttl > MAX_TOKEN_TTL_HOURS) throw new ValidationError("ttl_hours", `must be 1 to ${MAX_TOKEN_TTL_HOURS}`);
      const { token, hash, id } = newToken();
      const now = Date.now();
      const row: TokenRow = { tokenId: id, tokenHash: hash, principal: req.principal, description: req.description, createdAtMs: now, expiresAtMs: now + ttl * HOUR_MS, revokedAtMs: null };
      const warnings: string[] = [];
      if (!req.principal.startsWith("node:") && !(await store.listBindings(req.principal)).length) {
        warnings.push(`${req.principal} holds no role: the token identifies it but grants nothing until a role is assigned (autonomy rbac role assign)`);
      }
      await store.createToken(row, rbacAudit(ctx, "rbac.token.created", "create", "token", id, { principal: req.principal, ttl_hours: ttl }));
      return { token, info: tokenInfoOf(row), warnings };
    },

    async listTokens() {
      return { tokens: (await store.listTokens()).map(tokenInfoOf) };
    },

    async revokeToken(req, ctx) {
      if (!/^[0-9a-f]{12}$/.test(req.tokenId)) throw new ValidationError("token_id", "12 hex digits, as token list shows");
      const now = Date.now();
      const tokens = await store.listTokens();
      const target = tokens.find((t) => t.tokenId === req.tokenId);
      if (!target) throw new NotFoundError(`token "${req.tokenId}" not found`);
      const caller = callerOf(ctx);
      if (!req.force && usable(target, now)) {
        const perms = await permissionsByPrincipal(store, await store.listBindings());
        const manages = (principal: string) => grants(perms.get(principal) ?? [], MANAGE);
        // A caller on a certificate that manages RBAC is a credential the store cannot see, and it stays.
        const certificateStays = caller.via === "certificate" && (await authorizer.accessOf(caller)).permissions.has(MANAGE);
        const others = tokens.filter((t) => t.tokenId !== target.tokenId && usable(t, now) && manages(t.principal));
        if (manages(target.principal) && others.length === 0 && !certificateStays) {
          throw new ConflictError(`token ${target.tokenId} is the last usable token of a principal whose roles grant ${MANAGE}: without it nobody could change roles again; create a token for another principal that holds it first (autonomy rbac token create), or pass force (autonomy: --force) to revoke anyway`);
        }
      }
      const warnings = caller.via === "token" && principalId(caller) === target.principal ? [`token ${target.tokenId} belongs to you (${target.principal}); if it is the one you are using, your next call will be refused`] : [];
      const row = await store.revokeToken(req.tokenId, now, rbacAudit(ctx, "rbac.token.revoked", "revoke", "token", req.tokenId, { principal: target.principal }));
      if (isBootstrapPrincipal(target.principal)) await retireBootstrapBindings(store, now);
      authorizer.invalidate();
      return { info: tokenInfoOf(row), warnings };
    },

    async whoAmI(_req, ctx) {
      const principal = callerOf(ctx);
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
