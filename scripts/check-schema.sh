#!/usr/bin/env bash
# Check schemas/pipeline.schema.json with the real Ajv (strict mode, draft-07), as
# SchemaStore does. Needs node and npm; installs ajv and yaml from the npm registry
# into a temporary directory (or uses PRUN_NODE_MODULES if set to a node_modules dir
# that has them). Exit 0: passed; 1: failed; 3: node or npm is missing.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "check-schema: node and npm are not installed; the Ajv check did not run" >&2
  exit 3
fi
if [ -n "${PRUN_NODE_MODULES:-}" ]; then
  modules="$PRUN_NODE_MODULES"
else
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  if ! (cd "$tmp" && npm init -y >/dev/null && npm install --silent --no-audit --no-fund ajv@8 yaml@2 >/dev/null); then
    echo "check-schema.sh: npm could not install ajv@8 yaml@2; the check did not run" >&2
    exit 3
  fi
  modules="$tmp/node_modules"
fi
# Node resolves bare imports from the script's directory upward: give it a copy next
# to the modules.
dir="$(mktemp -d)"
trap 'rm -rf "$dir" ${tmp:+"$tmp"}' EXIT
ln -s "$modules" "$dir/node_modules"
sed "s#^const root = .*#const root = \"$(cd "$here/.." && pwd)\";#" "$here/check-schema.mjs" > "$dir/check.mjs"
node "$dir/check.mjs"
