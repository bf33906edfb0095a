/**
 * Identity and authorization: who is calling (a client certificate, else a bearer token) and
 * whether the RPC's permission, declared next to it in the .proto file, is theirs. One
 * interceptor checks every RPC, whatever the protocol, and the REST paths, which run through
 * the same interceptors.
 */
import { createHash, randomBytes } from "node:crypto";
import { getOption, type DescMethod } from "@bufbuild/protobuf";
import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";
import type { TLSSocket } from "node:tls";
import { permission as permissionOption } from "../../gen/autonomy/v1/options_pb.js";
import { OPERATOR_HEADER } from "../../clients/index.js";
import { ANONYMOUS, BUILTIN_ROLES, grants, NODE_ROLE, principalId, type Principal } from "../domain/rbac.js";
import type { Logger } from "../observability/logger.js";
import { auditRecord } from "../services/audit-record.js";
import type { Store } from "../store/store.js";
import { requestInfoKey, type RequestInfo } from "../transport/context.js";

/** What a verified client certificate says: its CN and OU (the profile). */
export interface PeerIdentity {
  cn: string;
  ou: string;
}

const peers = new WeakMap<object, PeerIdentity | null>();

/** The verified client certificate of a connection (cached per socket), or undefined. */
export function peerIdentity(socket: unknown): PeerIdentity | undefined {
  const tls = socket as TLSSocket | undefined;
  if (!tls || typeof tls.getPeerCertificate !== "function") return undefined;
  let known = peers.get(tls);
  if (known === undefined) {
    const subject = tls.authorized ? tls.getPeerCertificate()?.subject : undefined;
    const one = (v: string | string[] | undefined) => (Array.isArray(v) ? v[0] : v) ?? "";
    known = subject ? { cn: one(subject.CN), ou: one(subject.OU) } : null;
    peers.set(tls, known);
  }
  return known ?? undefined;
}

export const TOKEN_PREFIX = "ao_";

export function newToken(): { token: string; hash: string; id: string } {
  const token = `${TOKEN_PREFIX}${randomBytes(32).toString("base64url")}`;
  return { token, hash: hashToken(token), id: randomBytes(6).toString("hex") };
}

export const hashToken = (token: string) => createHash("sha256").update(token).digest("hex");

/** A role's permissions: built-in, or custom from the store. */
export type RoleLookup = (role: string) => readonly string[] | undefined;

export interface AuthorizerDeps {
  store: Store;
  logger: Logger;
  /** False with AUTONOMY_RBAC_ENFORCEMENT=0: calls are identified and audited, never refused. */
  enforced: boolean;
}

/** How long token lookups and role data are reused before they are read again. */
const CACHE_MS = 1000;

export class Authorizer {
  private tokens = new Map<string, { principal: Principal | undefined; at: number }>();
  private rbac: { at: number; roles: Map<string, readonly string[]>; bindings: Map<string, string[]> } | undefined;

  constructor(private readonly deps: AuthorizerDeps) {}

  get enforced(): boolean {
    return this.deps.enforced;
  }

  /** Forget cached role data and tokens (after an RBAC change on this server). */
  invalidate(): void {
    this.tokens.clear();
    this.rbac = undefined;
  }

  /** The caller: a verified client certificate wins; else a valid bearer token; else anonymous. */
  async principalOf(peer: PeerIdentity | undefined, authorization: string | null): Promise<Principal> {
    if (peer && (peer.ou === "node" || peer.ou === "operator" || peer.ou === "server") && peer.cn !== "") {
      return { kind: peer.ou, name: peer.cn, via: "certificate" };
    }
    const m = /^Bearer\s+(\S+)$/i.exec(authorization ?? "");
    if (!m) {
      if (authorization) throw new ConnectError('authorization: expected "Bearer <token>"', Code.Unauthenticated);
      return ANONYMOUS;
    }
    const hash = hashToken(m[1]);
    const now = Date.now();
    let cached = this.tokens.get(hash);
    if (!cached || now - cached.at > CACHE_MS) {
      const row = await this.deps.store.tokenByHash(hash);
      const usable = row && row.revokedAtMs === null && row.expiresAtMs > now;
      const [kind, ...rest] = (row?.principal ?? "").split(":");
      cached = { principal: usable ? { kind: kind as Principal["kind"], name: rest.join(":"), via: "token" } : undefined, at: now };
      this.tokens.set(hash, cached);
    }
    if (!cached.principal) throw new ConnectError("the bearer token is unknown, expired or revoked", Code.Unauthenticated);
    return cached.principal;
  }

  /** A principal's roles and permissions. Nodes hold the edge role without an assignment. */
  async accessOf(p: Principal): Promise<{ roles: string[]; permissions: Set<string> }> {
    const now = Date.now();
    if (!this.rbac || now - this.rbac.at > CACHE_MS) {
      const [roles, bindings] = await Promise.all([this.deps.store.listRoles(), this.deps.store.listBindings()]);
      const byPrincipal = new Map<string, string[]>();
      for (const b of bindings) byPrincipal.set(b.principal, [...(byPrincipal.get(b.principal) ?? []), b.role]);
      this.rbac = { at: now, roles: new Map(roles.map((r) => [r.name, JSON.parse(r.permissions) as string[]])), bindings: byPrincipal };
    }
    const roles = [...(this.rbac.bindings.get(principalId(p)) ?? [])];
    if (p.kind === "node" && !roles.includes(NODE_ROLE)) roles.push(NODE_ROLE);
    const permissions = new Set<string>();
    for (const role of roles) for (const perm of BUILTIN_ROLES[role] ?? this.rbac.roles.get(role) ?? []) permissions.add(perm);
    return { roles, permissions };
  }

  /** The interceptor: identity, then the RPC's permission, then a node's own-data rule. */
  interceptor(): Interceptor {
    const permissions = new Map<DescMethod, string>();
    const permissionOf = (method: DescMethod) => {
      let p = permissions.get(method);
      if (p === undefined) permissions.set(method, (p = getOption(method, permissionOption)));
      return p;
    };
    return (next) => async (req) => {
      const info: RequestInfo = req.contextValues.get(requestInfoKey) ?? {};
      const principal = await this.principalOf(info.peer, req.header.get("authorization"));
      info.principal = principal;
      const rpc = `${req.service.typeName}/${req.method.name}`;
      const deny = async (code: Code, message: string, reason: string) => {
        await this.recordDenial(principal, rpc, reason, req.header.get(OPERATOR_HEADER));
        throw new ConnectError(message, code);
      };
      // The audit trail never names a claimed operator that differs from the credential.
      const claimed = req.header.get(OPERATOR_HEADER)?.trim();
      if (claimed && principal.kind === "operator" && claimed !== principal.name) {
        await deny(Code.PermissionDenied, `AUTONOMY_OPERATOR says "${claimed}" but the credential is ${principalId(principal)}`, "operator mismatch");
      }
      const needed = permissionOf(req.method);
      if (needed === "public") return next(req);
      if (!needed) await deny(Code.PermissionDenied, `${rpc} declares no permission`, "no permission declared");
      if (this.deps.enforced) {
        if (principal.kind === "anonymous") {
          await deny(Code.Unauthenticated, `${rpc} needs ${needed}: present a client certificate or a bearer token (Authorization: Bearer ...)`, "no credentials");
        }
        const access = await this.accessOf(principal);
        if (!grants(access.permissions, needed)) {
          await deny(
            Code.PermissionDenied,
            `${principalId(principal)} lacks ${needed} for ${rpc} (roles: ${access.roles.join(", ") || "none"})`,
            `lacks ${needed}`,
          );
        }
      }
      if (principal.kind === "node") {
        const foreign = foreignNodeField(req.message as unknown as Record<string, unknown>, principal.name);
        if (foreign) await deny(Code.PermissionDenied, `node ${principal.name} may write and read only its own data: ${foreign}`, "another node's data");
      }
      return next(req);
    };
  }

  /**
   * Authentication from the headers alone, so the transport can answer before it reads a body:
   * undefined when the call may go on to the interceptor (a public RPC, enforcement off, or a
   * credential that names a principal), else the `unauthenticated` error the interceptor would
   * raise, with the same audit record.
   */
  async checkCredential(method: DescMethod, peer: PeerIdentity | undefined, header: Headers): Promise<ConnectError | undefined> {
    const needed = getOption(method, permissionOption);
    if (!this.deps.enforced || !needed || needed === "public") return undefined;
    let principal: Principal;
    try {
      principal = await this.principalOf(peer, header.get("authorization"));
    } catch (err) {
      if (err instanceof ConnectError) return err;
      throw err;
    }
    if (principal.kind !== "anonymous") return undefined;
    const rpc = `${method.parent.typeName}/${method.name}`;
    await this.recordDenial(principal, rpc, "no credentials", header.get(OPERATOR_HEADER));
    return new ConnectError(`${rpc} needs ${needed}: present a client certificate or a bearer token (Authorization: Bearer ...)`, Code.Unauthenticated);
  }

  private async recordDenial(p: Principal, rpc: string, reason: string, claimed: string | null): Promise<void> {
    const record = auditRecord(
      { actor: p.kind === "anonymous" ? (claimed ? `anonymous (claims ${claimed})` : "anonymous") : principalId(p), source: "api" },
      { eventName: "auth.denied", category: "auth", action: "call", resourceType: "rpc", resource: rpc, reason },
    );
    record.outcome = "denied";
    try {
      await this.deps.store.appendAudit([record]);
    } catch (err) {
      this.deps.logger.error({ err: (err as Error).message, rpc }, "could not record a denial in the audit trail");
    }
  }
}

/** The first node id in a request that is not the caller's, named by its field; undefined when all are. */
export function foreignNodeField(message: Record<string, unknown>, nodeId: string): string | undefined {
  if (Array.isArray(message.events)) {
    const i = (message.events as { nodeId: string }[]).findIndex((e) => e.nodeId !== nodeId);
    return i < 0 ? undefined : `events[${i}].node_id is "${(message.events as { nodeId: string }[])[i].nodeId}"`;
  }
  if (typeof message.nodeId === "string" && message.nodeId !== nodeId) return `node_id is "${message.nodeId}"`;
  return undefined;
}
