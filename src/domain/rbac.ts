import { ValidationError } from "./errors.js";
import { declaredPermissions } from "./permissions.js";

/** The roles the server defines; they cannot be redefined. `*` grants every permission. */
export const BUILTIN_ROLES: Readonly<Record<string, readonly string[]>> = {
  admin: ["*"],
  operator: ["fleet:read", "telemetry:read", "release:read", "release:publish", "node:drain", "enrollment:manage", "enrollment:read", "rollout:read", "rollout:spec", "rollout:manage", "gate:approve", "emergency:stop", "fleet:reconcile", "support:bundle", "workload:apply", "workload:read"],
  analyst: ["fleet:read", "telemetry:read", "release:read", "rollout:read", "rollout:spec", "workload:read"],
  auditor: ["audit:read", "rbac:read", "enrollment:read", "fleet:read", "release:read", "rollout:read", "support:bundle", "workload:read"],
  integrator: ["telemetry:write", "telemetry:read", "release:read", "release:publish", "fleet:read", "rollout:read", "rollout:spec"],
  edge: ["telemetry:write", "node:enroll", "node:heartbeat", "cert:renew", "release:ack", "release:read", "rollout:spec"],
};

/** A node's certificate or token gives it the edge role without an assignment. */
export const NODE_ROLE = "edge";

export const PERMISSION_PATTERN = /^[a-z][a-z_]*:[a-z][a-z_]*$/;
export const PRINCIPAL_PATTERN = /^(operator|node):[A-Za-z0-9._@-]{1,128}$/;
export const ROLE_PATTERN = /^[a-z][a-z0-9_-]{0,63}$/;

/** The principals of bootstrap tokens: operator:bootstrap-<token id>, one per bootstrap. */
export const BOOTSTRAP_PRINCIPAL_PREFIX = "operator:bootstrap-";

export const isBootstrapPrincipal = (principal: string) => principal.startsWith(BOOTSTRAP_PRINCIPAL_PREFIX);

export function checkPrincipal(value: string, field = "principal"): void {
  if (!PRINCIPAL_PATTERN.test(value)) throw new ValidationError(field, 'must be "operator:NAME" or "node:ID" (letters, digits, . _ @ -)');
}

export function checkRoleName(value: string, field = "role"): void {
  if (!ROLE_PATTERN.test(value)) throw new ValidationError(field, "a role name is lower case letters, digits, - and _, starting with a letter");
}

export function checkPermissions(values: readonly string[], field = "role.permissions"): void {
  if (values.length === 0) throw new ValidationError(field, "at least one permission");
  const known = declaredPermissions();
  values.forEach((v, i) => {
    if (v === "*") return;
    if (!PERMISSION_PATTERN.test(v)) throw new ValidationError(`${field}[${i}]`, `"${v}" is not resource:verb`);
    if (!known.has(v)) throw new ValidationError(`${field}[${i}]`, `"${v}" is a permission no RPC needs; known: ${[...known].sort().join(", ")}`);
  });
}

/** Whether a set of permissions (with "*") grants one. */
export function grants(permissions: Iterable<string>, needed: string): boolean {
  for (const p of permissions) if (p === "*" || p === needed) return true;
  return false;
}
