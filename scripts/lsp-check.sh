#!/usr/bin/env bash
# Drive the real yaml-language-server (from npm) over LSP against the committed
# schema and print its answers (see scripts/lsp-check.mjs). Needs node and npm.
# PRUN_NODE_MODULES may name a node_modules that has yaml-language-server already.
# Exit 0: passed; 1: failed; 3: node or npm is missing.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "lsp-check: node and npm are not installed; the language-server check did not run" >&2
  exit 3
fi
if [ -n "${PRUN_NODE_MODULES:-}" ] && [ -e "$PRUN_NODE_MODULES/yaml-language-server" ]; then
  modules="$PRUN_NODE_MODULES"
else
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  if ! (cd "$tmp" && npm init -y >/dev/null && npm install --silent --no-audit --no-fund yaml-language-server@1 >/dev/null); then
    echo "lsp-check.sh: npm could not install yaml-language-server@1; the check did not run" >&2
    exit 3
  fi
  modules="$tmp/node_modules"
fi
PRUN_ROOT="$root" YAML_LS="$modules/yaml-language-server/bin/yaml-language-server" node "$root/scripts/lsp-check.mjs"
