/**
 * Identity and authorization: who is calling (a client certificate, else a bearer token) and
 * whether the RPC's permission, declared next to it in the .proto file, is theirs. One
 * interceptor checks every RPC, whatever the protocol, and the REST paths, which run through
 * the same interceptors.
 */
import type { DescMethod } from "@bufbuild/protobuf";
import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";
import { Gauge, type Registry } from "prom-client";
import type { TLSSocket } from "node:tls";
import { RolloutService } from "../../gen/autonomy/v1/rollouts_pb.js";
import { OPERATOR_HEADER } from "../../clients/index.js";
import { boundClaim } from "../domain/audit.js";
import { ANONYMOUS, hashToken, principalId, type PeerIdentity, type Principal } from "../domain/identity.js";
import { BUILTIN_ROLES, grants, isBootstrapPrincipal, NODE_ROLE } from "../domain/rbac.js";
import { permissionOf } from "../domain/permissions.js";
import type { Logger } from "../observability/logger.js";
import { retireBootstrapBindings } from "../services/rbac-service.js";
import type { Store } from "../store/store.js";
import { RefusalRecorder } from "./denials.js";
import { normalizeSerial } from "./pki.js";
import { requestInfoKey, type RequestInfo } from "../transport/context.js";

const peers = new WeakMap<object, PeerIdentity | null>();

/** The verified client certificate of a connection (cached per socket), or undefined. */
export function peerIdentity(socket: unknown): PeerIdentity | undefined {
  const tls = socket as TLSSocket | undefined;
  if (!tls || typeof tls.getPeerCertificate !== "function") return undefined;
  let known = peers.get(tls);
  if (known === undefined) {
    const cert = tls.authorized ? tls.getPeerCertificate() : undefined;
    const subject = cert?.subject;
    const one = (v: string | string[] | undefined) => (Array.isArray(v) ? v[0] : v) ?? "";
    known = subject ? { cn: one(subject.CN), ou: one(subject.OU), serial: cert.serialNumber ? normalizeSerial(cert.serialNumber) : undefined } : null;
    peers.set(tls, known);
  }
  return known ?? undefined;
}

/** A role's permissions: built-in, or custom from the store. */
export type RoleLookup = (role: string) => readonly string[] | undefined;

export interface AuthorizerDeps {
  store: Store;
  logger: Logger;
  /** False with AUTONOMY_RBAC_ENFORCEMENT=0: calls are identified and audited, never refused. */
  enforced: boolean;
  /** Where the token cache sizes are reported (cp_auth_token_cache_entries). */
  registry?: Registry;
  /** Largest number of valid tokens kept in memory; 10,000 when unset. */
  tokenCacheSize?: number;
  /** Largest number of unknown, revoked or expired token hashes kept; 1,000 when unset. */
  negativeCacheSize?: number;
  /** How long one audit record stands for repeats of the same refusal; 10 seconds when unset. */
  refusalIntervalMs?: number;
}

/** How long token lookups and role data are reused before they are read again. */
const CACHE_MS = 1000;
export const DEFAULT_TOKEN_CACHE_SIZE = 10_000;
export const DEFAULT_NEGATIVE_CACHE_SIZE = 1_000;

/**
 * A map that keeps at most `max` entries, dropping the least recently used: Map iterates in
 * insertion order, so a hit is moved to the end and the first key is the oldest.
 */
export class LruMap<K, V> {
  private readonly map = new Map<K, V>();
  constructor(private readonly max: number) {}
  get size(): number {
    return this.map.size;
  }
  get(key: K): V | undefined {
    const v = this.map.get(key);
    if (v !== undefined) {
      this.map.delete(key);
      this.map.set(key, v);
    }
    return v;
  }
  set(key: K, value: V): void {
    this.map.delete(key);
    this.map.set(key, value);
    while (this.map.size > this.max) this.map.delete(this.map.keys().next().value as K);
  }
  delete(key: K): void {
    this.map.delete(key);
  }
  clear(): void {
    this.map.clear();
  }
}

/** A failed authentication, with what the audit record may say about it. */
class AuthenticationFailure extends ConnectError {
  constructor(
    message: string,
    readonly reason: string,
    readonly fields: Record<string, unknown> = {},
  ) {
    super(message, Code.Unauthenticated);
  }
}

const BAD_TOKEN = "the bearer token is unknown, expired or revoked";

export class Authorizer {
  private readonly tokens: LruMap<string, { principal: Principal; at: number }>;
  private readonly unusable: LruMap<string, { at: number; reason: string; fields: Record<string, unknown> }>;
  private rbac: { at: number; roles: Map<string, readonly string[]>; bindings: Map<string, string[]> } | undefined;
  readonly refusals: RefusalRecorder;

  constructor(private readonly deps: AuthorizerDeps) {
    this.tokens = new LruMap(deps.tokenCacheSize ?? DEFAULT_TOKEN_CACHE_SIZE);
    this.unusable = new LruMap(deps.negativeCacheSize ?? DEFAULT_NEGATIVE_CACHE_SIZE);
    this.refusals = new RefusalRecorder({ store: deps.store, logger: deps.logger, intervalMs: deps.refusalIntervalMs });
    if (deps.registry) {
      const sizes = () => ({ valid: this.tokens.size, unusable: this.unusable.size });
      new Gauge({
        name: "cp_auth_token_cache_entries",
        help: "Bearer tokens held in memory: valid ones (an LRU) and unknown, revoked or expired ones (a smaller LRU)",
        labelNames: ["cache"],
        registers: [deps.registry],
        collect() {
          const s = sizes();
          this.set({ cache: "valid" }, s.valid);
          this.set({ cache: "unusable" }, s.unusable);
        },
      });
    }
  }

  get enforced(): boolean {
    return this.deps.enforced;
  }

  /** How many tokens each cache holds. */
  cacheSizes(): { valid: number; unusable: number } {
    return { valid: this.tokens.size, unusable: this.unusable.size };
  }

  /** Forget cached role data and tokens (after an RBAC change on this server). */
  invalidate(): void {
    this.tokens.clear();
    this.unusable.clear();
    this.rbac = undefined;
  }

  /** Writes the refusals still being counted (at shutdown, before the store closes). */
  close(): Promise<void> {
    return this.refusals.close();
  }

  /** The caller: a verified client certificate wins; else a valid bearer token; else anonymous. */
  async principalOf(peer: PeerIdentity | undefined, authorization: string | null): Promise<Principal> {
    if (peer && (peer.ou === "node" || peer.ou === "operator" || peer.ou === "server") && peer.cn !== "") {
      return { kind: peer.ou, name: peer.cn, via: "certificate" };
    }
    const m = /^Bearer\s+(\S+)$/i.exec(authorization ?? "");
    if (!m) {
      if (authorization) throw new AuthenticationFailure('authorization: expected "Bearer <token>"', "malformed authorization header");
      return ANONYMOUS;
    }
    const hash = hashToken(m[1]);
    const now = Date.now();
    const cached = this.tokens.get(hash);
    if (cached && now - cached.at <= CACHE_MS) return cached.principal;
    const known = this.unusable.get(hash);
    if (known && now - known.at <= CACHE_MS) throw new AuthenticationFailure(BAD_TOKEN, known.reason, known.fields);
    const row = await this.deps.store.tokenByHash(hash);
    const reason = !row ? "unknown token" : row.revokedAtMs !== null ? "revoked token" : row.expiresAtMs <= now ? "expired token" : undefined;
    if (!row || reason) {
      this.tokens.delete(hash);
      const fields = row ? { token_id: row.tokenId, principal: row.principal } : {};
      this.unusable.set(hash, { at: now, reason: reason!, fields });
      throw new AuthenticationFailure(BAD_TOKEN, reason!, fields);
    }
    const [kind, ...rest] = row.principal.split(":");
    const principal: Principal = { kind: kind as Principal["kind"], name: rest.join(":"), via: "token" };
    this.unusable.delete(hash);
    this.tokens.set(hash, { principal, at: now });
    return principal;
  }

  /**
   * A principal's roles and permissions. Nodes hold the edge role without an assignment. A
   * bootstrap principal's binding counts only through its token, and goes (from the store
   * too) once that token is revoked or expired.
   */
  async accessOf(p: Principal): Promise<{ roles: string[]; permissions: Set<string> }> {
    const now = Date.now();
    if (!this.rbac || now - this.rbac.at > CACHE_MS) {
      const [roles, bindings] = await Promise.all([this.deps.store.listRoles(), this.deps.store.listBindings()]);
      let live = bindings;
      if (bindings.some((b) => isBootstrapPrincipal(b.principal))) {
        // Failing to remove one is no reason to refuse the call: a revoked or expired token
        // authenticates nobody, and a bootstrap binding never counts for a certificate.
        const retired = await retireBootstrapBindings(this.deps.store, now).catch((err: Error) => {
          this.deps.logger.warn({ err: err.message }, "could not remove the binding of an expired bootstrap token; retrying at the next role reload");
          return [] as string[];
        });
        live = bindings.filter((b) => !retired.includes(b.principal));
      }
      const byPrincipal = new Map<string, string[]>();
      for (const b of live) byPrincipal.set(b.principal, [...(byPrincipal.get(b.principal) ?? []), b.role]);
      this.rbac = { at: now, roles: new Map(roles.map((r) => [r.name, JSON.parse(r.permissions) as string[]])), bindings: byPrincipal };
    }
    const id = principalId(p);
    const roles = isBootstrapPrincipal(id) && p.via !== "token" ? [] : [...(this.rbac.bindings.get(id) ?? [])];
    if (p.kind === "node" && !roles.includes(NODE_ROLE)) roles.push(NODE_ROLE);
    const permissions = new Set<string>();
    for (const role of roles) for (const perm of BUILTIN_ROLES[role] ?? this.rbac.roles.get(role) ?? []) permissions.add(perm);
    return { roles, permissions };
  }

  /** The interceptor: identity, then the RPC's permission, then a node's own-data rules. */
  interceptor(): Interceptor {
    return (next) => async (req) => {
      const info: RequestInfo = req.contextValues.get(requestInfoKey) ?? {};
      const rpc = `${req.service.typeName}/${req.method.name}`;
      const source = info.remoteAddress ?? "unknown";
      const claimed = req.header.get(OPERATOR_HEADER)?.trim() ?? "";
      let principal: Principal;
      try {
        principal = await this.principalOf(info.peer, req.header.get("authorization"));
      } catch (err) {
        if (err instanceof AuthenticationFailure) {
          await this.refusals.record({ eventName: "auth.failed", source, actor: "anonymous", claim: claimed, rpc, reason: err.reason, fields: err.fields });
        }
        throw err;
      }
      info.principal = principal;
      const deny = async (code: Code, message: string, reason: string) => {
        await this.refusals.record({
          eventName: "auth.denied",
          source,
          actor: principalId(principal),
          claim: principal.kind === "anonymous" || claimed !== principal.name ? claimed : undefined,
          rpc,
          reason,
        });
        throw new ConnectError(message, code);
      };
      // The audit trail never names a claimed operator that differs from the credential.
      if (claimed && principal.kind === "operator" && claimed !== principal.name) {
        await deny(Code.PermissionDenied, `AUTONOMY_OPERATOR says "${boundClaim(claimed).value}" but the credential is ${principalId(principal)}`, "operator mismatch");
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
      if (principal.kind === "node" && req.stream) {
        // A streaming call's messages are checked as the handler reads them.
        const node = principal.name;
        const messages = req.message;
        async function* own() {
          for await (const m of messages) {
            const foreign = foreignNodeField(m as unknown as Record<string, unknown>, node);
            if (foreign) await deny(Code.PermissionDenied, `node ${node} may write and read only its own data: ${foreign}`, "another node's data");
            yield m;
          }
        }
        return next({ ...req, message: own() });
      }
      if (principal.kind === "node" && !req.stream) {
        const message = req.message as unknown as Record<string, unknown>;
        const foreign = foreignNodeField(message, principal.name);
        if (foreign) await deny(Code.PermissionDenied, `node ${principal.name} may write and read only its own data: ${foreign}`, "another node's data");
        if (req.method.name === GET_SPEC && req.service.typeName === RolloutService.typeName) {
          const planId = String(message.planId ?? "");
          const moved = planId !== "" && (await this.deps.store.planMovedNode(planId, principal.name));
          if (!moved) await deny(Code.PermissionDenied, `node ${principal.name} may read only the specs of plans that moved it: plan_id is "${planId}"`, "a plan that did not move the node");
        }
      }
      return next(req);
    };
  }
  /**
   * Authentication from the headers alone, so the transport can answer before it reads a body:
   * `denied`, the `unauthenticated` error the interceptor would raise, recorded (coalesced) in
   * the audit trail the same way; else the call may go on to the interceptor (a public RPC,
   * enforcement off, or a credential that names a principal: `principal`, its id).
   */
  async checkCredential(method: DescMethod, peer: PeerIdentity | undefined, header: Headers, source = "unknown"): Promise<CredentialCheck> {
    const needed = permissionOf(method);
    if (!this.deps.enforced || !needed || needed === "public") return {};
    const rpc = `${method.parent.typeName}/${method.name}`;
    const claimed = header.get(OPERATOR_HEADER)?.trim() ?? "";
    let principal: Principal;
    try {
      principal = await this.principalOf(peer, header.get("authorization"));
    } catch (err) {
      if (err instanceof AuthenticationFailure) {
        await this.refusals.record({ eventName: "auth.failed", source, actor: "anonymous", claim: claimed, rpc, reason: err.reason, fields: err.fields });
        return { denied: err };
      }
      throw err;
    }
    if (principal.kind !== "anonymous") return { principal: principalId(principal) };
    await this.refusals.record({ eventName: "auth.denied", source, actor: principalId(principal), claim: claimed, rpc, reason: "no credentials" });
    return { denied: new ConnectError(`${rpc} needs ${needed}: present a client certificate or a bearer token (Authorization: Bearer ...)`, Code.Unauthenticated) };
  }
}

/** What `checkCredential` found: a refusal, or the principal the credential names (none for a call that needs none). */
export interface CredentialCheck {
  denied?: ConnectError;
  principal?: string;
}

const GET_SPEC = RolloutService.method.getRolloutSpec.name;

/** The first node id in a request that is not the caller's, named by its field; undefined when all are. */
export function foreignNodeField(message: Record<string, unknown>, nodeId: string): string | undefined {
  if (Array.isArray(message.events)) {
    const i = (message.events as { nodeId: string }[]).findIndex((e) => e.nodeId !== nodeId);
    return i < 0 ? undefined : `events[${i}].node_id is "${(message.events as { nodeId: string }[])[i].nodeId}"`;
  }
  if (typeof message.nodeId === "string" && message.nodeId !== nodeId) return `node_id is "${message.nodeId}"`;
  return undefined;
}
