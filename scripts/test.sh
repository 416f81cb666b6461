#!/usr/bin/env bash
# make test: installs what the tests need (redis-server/redis-tools, Envoy 1.40 from PyPI, the
# client libraries of tests/e2e/client_libraries.rs: redis-py, Node.js with ioredis 5 and 6),
# then runs every test of the workspace: unit tests and the end-to-end tests in tests/e2e/, which
# run each scenario through real Envoy (the oracle) and through redvoy.
#
# REDVOY_TEST_TARGETS=envoy|redvoy|envoy,redvoy (default both) selects the targets.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ensure_redis
ensure_python
ensure_client_libs
ensure_envoy
ensure_iptables
command -v cargo >/dev/null 2>&1 || die "cargo not found: install a Rust toolchain (rustup) first"

cd "$ROOT"
# Debug info costs link time and disk on every test binary and is not needed to read a
# failing assertion; CI builds everything once on 2 cores.
if [ "${CI:-}" = "true" ]; then export CARGO_PROFILE_DEV_DEBUG="${CARGO_PROFILE_DEV_DEBUG:-line-tables-only}"; fi
log "cargo test --workspace (targets: ${REDVOY_TEST_TARGETS:-envoy,redvoy})"
cargo test --workspace ${CARGO_TEST_ARGS:-}

# deploy/: the manifests against the Kubernetes schemas and Istio's EnvoyFilter CRD, the
# Grafana dashboard's queries against the metric families a running redvoy exports.
log "deploy/check.sh"
bash "$ROOT/deploy/check.sh"
