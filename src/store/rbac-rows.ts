/** Rows of the RBAC tables as both dialects hold them. */
export interface RoleRow {
  name: string;
  /** JSON array of permissions. */
  permissions: string;
  createdAtMs: number;
}

export interface BindingRow {
  principal: string;
  role: string;
  createdAtMs: number;
}

export interface TokenRow {
  tokenId: string;
  tokenHash: string;
  principal: string;
  description: string;
  createdAtMs: number;
  expiresAtMs: number;
  revokedAtMs: number | null;
}
