/**
 * Import rules for src/: no cycles, and imports point one way through the layers
 * domain ← store ← services and rollouts ← transport and security ← server (and the CLIs).
 * `npm run lint:deps` checks them; CI runs it on the whole tree.
 */
const layer = (name) => `^src/${name}/`;
const below = (...names) => ({ path: names.map((n) => (n === "server" ? "^src/server\\.ts$" : layer(n))) });

module.exports = {
  forbidden: [
    { name: "no-circular", severity: "error", comment: "An import cycle couples modules that should be changeable alone.", from: {}, to: { circular: true } },
    {
      name: "domain-is-pure",
      severity: "error",
      comment: "src/domain holds pure logic: it imports no other layer of the server.",
      from: { path: layer("domain") },
      to: below("store", "services", "rollouts", "transport", "security", "server", "cli", "agent", "observability"),
    },
    {
      name: "store-below-services",
      severity: "error",
      from: { path: layer("store") },
      to: below("services", "rollouts", "transport", "security", "server", "cli", "agent"),
    },
    {
      name: "services-below-transport",
      severity: "error",
      comment: "Services read the per-request context (its key is a leaf module) and nothing else of the transport.",
      from: { path: [layer("services"), layer("rollouts")] },
      to: { ...below("transport", "server", "cli", "agent"), pathNot: "^src/transport/context\\.ts$" },
    },
    {
      name: "transport-security-below-server",
      severity: "error",
      from: { path: [layer("transport"), layer("security")] },
      to: below("server", "cli", "agent"),
    },
    {
      name: "server-code-not-in-clients",
      severity: "error",
      comment: "clients/ and the agent are installed on nodes: they must not pull in the server.",
      from: { path: ["^clients/", layer("agent")] },
      to: below("store", "services", "rollouts", "transport", "server"),
    },
  ],
  options: {
    doNotFollow: { path: "node_modules" },
    exclude: { path: ["^gen/", "^dist/", "node_modules"] },
    tsPreCompilationDeps: true,
    tsConfig: { fileName: "tsconfig.json" },
  },
};
