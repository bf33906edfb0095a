#!/usr/bin/env bash
# Installs the package as an edge node would, from its tarball, without optional dependencies
# (better-sqlite3, the server's only native module) preferring the npm cache, then checks
# that nothing native was built and that edgectl, autonomy and the spool library work.
# Needs a built tree (npm run build).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
tarball=$(npm pack --ignore-scripts --silent --pack-destination "$tmp" | tail -1)
mkdir "$tmp/node"
cd "$tmp/node"
echo '{"name":"edge-node","private":true,"type":"module"}' > package.json
npm install --prefer-offline --omit=optional --no-audit --no-fund --loglevel=error "$tmp/$tarball" >/dev/null
pkg=node_modules/autonomy-orchestrator
fail() { echo "check-agent-install: $*" >&2; exit 1; }
[ -d "$pkg/dist/src/cli/edgectl" ] || fail "the package has no edgectl"
[ ! -e node_modules/better-sqlite3 ] || fail "better-sqlite3 was installed"
if find node_modules -name '*.node' -print -quit | grep -q .; then fail "a native module was installed: $(find node_modules -name '*.node' | head -3)"; fi
npx --no-install edgectl --help | grep -q "The edge agent" || fail "edgectl --help did not run"
npx --no-install autonomy --help | grep -q "Operator CLI" || fail "autonomy --help did not run"
# The spool library and the clients load without the server's modules.
node -e '
  const { spoolEvents } = await import("autonomy-orchestrator/agent/spool");
  const { createOrchestratorClients } = await import("autonomy-orchestrator/clients");
  const n = await spoolEvents([{ event_type: "installed" }], { stateDir: process.argv[1], nodeId: "board-1" });
  createOrchestratorClients({ baseUrl: "http://127.0.0.1:1" }).close();
  if (n.count !== 1) throw new Error("spooled " + JSON.stringify(n));
' --input-type=module "$tmp/state" || fail "the spool library or the clients did not load"
# The server says what is missing instead of a stack trace.
out=$(npx --no-install autonomy-orchestrator serve --listen 127.0.0.1:0 --data-dir "$tmp/data" 2>&1 || true)
grep -q "needs better-sqlite3" <<<"$out" || fail "serve without better-sqlite3 did not say so: $out"
size=$(du -sm node_modules | cut -f1)
echo "check-agent-install: ok: installed from $(basename "$tarball") with no native module, ${size} MiB of node_modules; edgectl, autonomy and the spool library run; serve names the missing better-sqlite3"
