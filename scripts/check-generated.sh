#!/usr/bin/env bash
# Fails when generated files are not what their generators make from the sources:
# gen/ from proto/ (buf), migrations/ from the drizzle schemas (drizzle-kit). Also lints proto/.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=node_modules/.bin

"$bin/buf" lint
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$bin/buf" generate -o "$tmp"
if ! diff -r "$tmp/gen" gen; then
  echo "gen/ is not what 'buf generate' makes from proto/: run 'npm run generate' and commit gen/" >&2
  exit 1
fi

for config in drizzle.sqlite.config.ts drizzle.pg.config.ts; do
  out=$("$bin/drizzle-kit" generate --config "$config" 2>&1)
  if ! grep -q "No schema changes" <<<"$out"; then
    echo "$out" >&2
    echo "migrations/ is behind the schema of $config: commit the migration drizzle-kit generated" >&2
    exit 1
  fi
done
echo "generated code is current"
