import { useEffect, useState } from "react";
import { SignedIn, useSession } from "./auth.js";
import { EmergencyBanner, EmergencyStopButton } from "./emergency.js";
import { AuditPage } from "./pages/audit.js";
import { ClusterPage } from "./pages/cluster.js";
import { DivergedPage } from "./pages/diverged.js";
import { FleetPage } from "./pages/fleet.js";
import { NodePage } from "./pages/node.js";
import { ReleasesPage } from "./pages/releases.js";
import { RolloutsPage } from "./pages/rollouts.js";

/** The page routes in the URL fragment (#/fleet, #/nodes/ID, ...): the server has one file to serve. */
export interface Route {
  page: "fleet" | "node" | "releases" | "rollouts" | "diverged" | "cluster" | "audit";
  arg?: string;
}

export function parseRoute(hash: string): Route {
  const parts = hash.replace(/^#\/?/, "").split("/");
  switch (parts[0]) {
    case "nodes":
      return parts[1] ? { page: "node", arg: decodeURIComponent(parts[1]) } : { page: "fleet" };
    case "releases":
      return { page: "releases", arg: parts[1] ? decodeURIComponent(parts[1]) : undefined };
    case "rollouts":
      return { page: "rollouts" };
    case "diverged":
      return { page: "diverged" };
    case "cluster":
      return { page: "cluster" };
    case "audit":
      return { page: "audit" };
    default:
      return { page: "fleet" };
  }
}

function useRoute(): Route {
  const [route, setRoute] = useState(() => parseRoute(window.location.hash));
  useEffect(() => {
    const on = () => setRoute(parseRoute(window.location.hash));
    window.addEventListener("hashchange", on);
    return () => window.removeEventListener("hashchange", on);
  }, []);
  return route;
}

const TITLES: Record<Route["page"], string> = {
  fleet: "Fleet",
  node: "Node",
  releases: "Releases",
  rollouts: "Rollouts",
  diverged: "Diverged",
  cluster: "Cluster",
  audit: "Audit",
};

function Shell() {
  const route = useRoute();
  const { who, can, signOut } = useSession();
  useEffect(() => {
    document.title = `${TITLES[route.page]}${route.arg ? ` ${route.arg}` : ""} · Autonomy orchestrator`;
  }, [route]);
  const links: [Route["page"], string, boolean][] = [
    ["fleet", "#/fleet", can("fleet:read")],
    ["releases", "#/releases", can("fleet:read")],
    ["rollouts", "#/rollouts", can("rollout:read")],
    ["diverged", "#/diverged", can("fleet:read")],
    // The HA answers are public, like /v1/health.
    ["cluster", "#/cluster", true],
    ["audit", "#/audit", can("audit:read")],
  ];
  const readOnly = !["node:drain", "rollout:manage", "gate:approve", "emergency:stop", "fleet:reconcile", "ha:manage"].some(can);
  return (
    <>
      <header>
        <nav aria-label="Pages">
          <span className="brand">Autonomy</span>
          {links
            .filter(([, , shown]) => shown)
            .map(([page, href]) => (
              <a key={page} href={href} aria-current={route.page === page || (page === "fleet" && route.page === "node") ? "page" : undefined}>
                {TITLES[page]}
              </a>
            ))}
        </nav>
        <div className="who">
          <EmergencyStopButton />
          <span>
            {who.principal} ({who.authenticatedBy === "certificate" ? "client certificate" : who.authenticatedBy === "token" ? "token" : "no credential"})
            {who.roles.length > 0 && ` · ${who.roles.join(", ")}`}
            {readOnly && " · read-only"}
            {!who.enforced && " · RBAC off"}
          </span>
          {who.authenticatedBy === "token" && (
            <button type="button" onClick={signOut}>
              Sign out
            </button>
          )}
        </div>
      </header>
      <main>
        <EmergencyBanner />
        {route.page === "fleet" && <FleetPage />}
        {route.page === "node" && route.arg && <NodePage nodeId={route.arg} />}
        {route.page === "releases" && <ReleasesPage channel={route.arg} />}
        {route.page === "rollouts" && <RolloutsPage />}
        {route.page === "diverged" && (can("fleet:read") ? <DivergedPage /> : <p>The divergence report needs the fleet:read permission.</p>)}
        {route.page === "cluster" && <ClusterPage />}
        {route.page === "audit" && (can("audit:read") ? <AuditPage /> : <p>The audit trail needs the audit:read permission.</p>)}
      </main>
    </>
  );
}

export function App() {
  return (
    <SignedIn>
      <Shell />
    </SignedIn>
  );
}
