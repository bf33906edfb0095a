import { useQuery, useQueryClient } from "@tanstack/react-query";
import { createContext, useContext, useState, type FormEvent, type ReactNode } from "react";
import type { WhoAmIResponse } from "../../gen/autonomy/v1/rbac_pb.js";
import { api, Code, ConnectError, describeError, tokenStore } from "./api.js";

export interface Session {
  who: WhoAmIResponse;
  /** Whether the caller holds a permission (every one when the server does not enforce RBAC). */
  can(permission: string): boolean;
  signOut(): void;
}

const SessionContext = createContext<Session | undefined>(undefined);

export function useSession(): Session {
  const s = useContext(SessionContext);
  if (!s) throw new Error("useSession outside <SignedIn>");
  return s;
}

/** Asks WhoAmI; shows the sign-in form until the server knows the caller, then the children. */
export function SignedIn({ children }: { children: ReactNode }) {
  const queryClient = useQueryClient();
  const [tokenError, setTokenError] = useState<string>();
  const who = useQuery({
    queryKey: ["whoami"],
    queryFn: () => api.rbac.whoAmI({}),
    refetchInterval: 30_000,
    retry: false,
  });

  const signOut = () => {
    tokenStore.clear();
    queryClient.clear();
    void who.refetch();
  };

  if (who.isPending) return <p className="loading">Connecting…</p>;
  const anonymous = who.isError || (who.data.enforced && who.data.principal === "anonymous");
  if (anonymous) {
    const failure =
      tokenError ?? (who.isError && ConnectError.from(who.error).code !== Code.Unauthenticated ? describeError(who.error) : undefined);
    return (
      <SignInForm
        error={failure}
        onToken={async (token) => {
          tokenStore.set(token);
          const r = await who.refetch();
          if (r.isError || !r.data || (r.data.enforced && r.data.principal === "anonymous")) {
            tokenStore.clear();
            setTokenError(r.isError ? describeError(r.error) : "The server did not accept the token.");
          } else {
            setTokenError(undefined);
          }
        }}
      />
    );
  }
  const data = who.data;
  const perms = new Set(data.permissions);
  const session: Session = {
    who: data,
    can: (p) => !data.enforced || perms.has("*") || perms.has(p),
    signOut,
  };
  return <SessionContext.Provider value={session}>{children}</SessionContext.Provider>;
}

function SignInForm({ error, onToken }: { error?: string; onToken: (token: string) => Promise<void> }) {
  const [token, setToken] = useState("");
  const [busy, setBusy] = useState(false);
  const submit = async (e: FormEvent) => {
    e.preventDefault();
    if (token.trim() === "") return;
    setBusy(true);
    try {
      await onToken(token.trim());
    } finally {
      setBusy(false);
      setToken("");
    }
  };
  return (
    <main className="signin">
      <h1>Autonomy orchestrator</h1>
      <form onSubmit={submit} aria-label="Sign in">
        <p>
          Sign in with a bearer token (<code>autonomy rbac token create</code>). It is kept in this tab only and sent
          as <code>Authorization: Bearer</code>. On a server with mutual TLS, the browser's client certificate signs
          you in without a token.
        </p>
        <label htmlFor="token">Token</label>
        <input id="token" name="token" type="password" autoComplete="off" value={token} onChange={(e) => setToken(e.target.value)} required />
        <button type="submit" disabled={busy}>
          Sign in
        </button>
        {error && (
          <p role="alert" className="error">
            {error}
          </p>
        )}
      </form>
    </main>
  );
}
