#!/usr/bin/env bash
# make soak: redvoy under mixed load for SOAK_SECONDS (default 1800) while its ADS control
# plane pushes a change every second and a redis-server is killed and restarted every
# SOAK_KILL_EVERY_S (default 180); see crates/test-util/src/bin/soak.rs for what runs and what
# the report holds. Not part of `make test`. Exits 1 when something failed outside the kill
# windows, a push was NACKed, or memory or descriptors grew. The report is printed and kept
# in bench/.run/soak_report.md.
#
# Knobs (environment): SOAK_SECONDS, SOAK_KILL_EVERY_S, SOAK_DOWN_S, SOAK_GRACE_S,
# SOAK_SAMPLE_S, SOAK_PUSH_MS.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
install_cleanup_trap

ensure_redis
ensure_client_libs
command -v cargo >/dev/null 2>&1 || die "cargo not found"
log "building redvoy and the soak driver (release)"
(cd "$ROOT" && cargo build --release --quiet -p redvoy -p redvoy-test-util --bin redvoy --bin soak)
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
mkdir -p "$ROOT/bench/.run"
ulimit -n 8192 2>/dev/null || true
log "soak: ${SOAK_SECONDS:-1800} s"
REDVOY_BIN="$TARGET_DIR/release/redvoy" SOAK_REPORT="$ROOT/bench/.run/soak_report.md" \
  SOAK_NODE_DIR="$ROOT/tests/clients" "$TARGET_DIR/release/soak"
