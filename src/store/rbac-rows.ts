import type { RowOf } from "./schema-check.js";

/** Rows of the RBAC tables as both dialects hold them, from the drizzle schemas. A role's permissions are a JSON array. */
export type RoleRow = RowOf<"rbacRoles">;
export type BindingRow = RowOf<"rbacBindings">;
export type TokenRow = RowOf<"rbacTokens">;
