#!/usr/bin/env bash
# Validate `prun validate --format sarif` output with Microsoft's SARIF Multitool (from
# npm; ~100 MB, installed into a temporary directory): schema and SARIF rules. Prints
# the multitool's findings. Usage: scripts/check-sarif.sh [FILE.yaml...] (default: the
# cases of tests/invalid). Exit 0: valid; 1: errors; 3: node or npm is missing.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "check-sarif: node and npm are not installed; the SARIF check did not run" >&2
  exit 3
fi
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm init -y >/dev/null && npm install --silent --no-audit --no-fund @microsoft/sarif-multitool >/dev/null)
files=("$@")
if [ ${#files[@]} -eq 0 ]; then files=("$root"/tests/invalid/*.yaml); fi
(cd "$root" && cargo build --quiet)
"$root/target/debug/prun" validate --format sarif "${files[@]}" > "$tmp/prun.sarif" || true
(cd "$tmp" && npx sarif-multitool validate prun.sarif --output check.sarif >/dev/null 2>&1 || true)
node -e '
const log = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
const results = log.runs[0].results || [];
let errors = 0;
for (const r of results) {
  const level = r.level || "warning";
  if (level === "error") errors++;
  console.log(`${level} ${r.ruleId}: ${r.message.text || (r.message.arguments || []).join(" ")}`);
}
console.log(errors ? `${errors} SARIF error(s)` : `valid SARIF 2.1.0 (${results.length} note(s) from the multitool)`);
process.exit(errors ? 1 : 0);
' "$tmp/check.sarif"
