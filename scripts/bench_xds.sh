#!/usr/bin/env bash
# The xDS part of `make bench` (run at the end of scripts/bench.sh; runnable on its own):
# Envoy 1.40 and redvoy, each driven by an in-process ADS control plane, take a CDS push of
# N EDS clusters and an LDS push of N Istio-style listeners; prints push→ACK times, RSS before
# and after, and route push→first use latency (crates/test-util/src/bin/xds_bench.rs). A
# benchmark, not a test: it asserts nothing.
#
# Knobs (environment):
#   BENCH_XDS                 0 = skip (when run from bench.sh)
#   BENCH_XDS_COUNT           clusters and listeners pushed (default 1000)
#   BENCH_XDS_TARGETS         default: envoy and redvoy among BENCH_TARGETS ("envoy redvoy")
#   BENCH_SKIP_REDVOY         1 = drop redvoy
#   BENCH_XDS_ROUTE_REPEATS   route pushes (default 5; the median is reported)
#   BENCH_XDS_STEP_TIMEOUT_S  bound on each push→ACK step (default 120)
#   BENCH_XDS_ROUTE_TIMEOUT_S bound on one route push becoming visible (default 30)
#   BENCH_XDS_DRAIN_S         --drain-time-s of both proxies (default 2)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
install_cleanup_trap

if [ "${BENCH_XDS:-1}" = "0" ]; then log "xDS bench skipped (BENCH_XDS=0)"; exit 0; fi

if [ -n "${BENCH_XDS_TARGETS:-}" ]; then
  XDS_TARGETS="$BENCH_XDS_TARGETS"
else
  XDS_TARGETS=""
  for t in ${BENCH_TARGETS:-envoy redvoy}; do
    case "$t" in envoy|redvoy) XDS_TARGETS="$XDS_TARGETS $t" ;; esac
  done
fi
if [ "${BENCH_SKIP_REDVOY:-0}" = "1" ]; then XDS_TARGETS="$(echo "$XDS_TARGETS" | sed 's/\bredvoy\b//g')"; fi
XDS_TARGETS="$(echo $XDS_TARGETS)"
[ -n "$XDS_TARGETS" ] || { log "xDS bench: no envoy/redvoy target, skipped"; exit 0; }

ensure_redis
case " $XDS_TARGETS " in *" envoy "*) ensure_envoy ;; esac
command -v cargo >/dev/null 2>&1 || die "cargo not found (or set BENCH_XDS=0)"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
log "building xds_bench (release)"
(cd "$ROOT" && cargo build --release --quiet -p redvoy-test-util --bin xds_bench)
case " $XDS_TARGETS " in
  *" redvoy "*) (cd "$ROOT" && cargo build --release --quiet --bin redvoy) ;;
esac

# 1,000 listeners and clusters plus the probe connections need descriptors.
ulimit -n 8192 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

WORK="$ROOT/bench/.run"
mkdir -p "$WORK"
log "xDS push benchmark: ${BENCH_XDS_COUNT:-1000} clusters + listeners, targets: $XDS_TARGETS"
REDVOY_BIN="${REDVOY_BIN:-$TARGET_DIR/release/redvoy}" BENCH_XDS_TARGETS="$XDS_TARGETS" \
  "$TARGET_DIR/release/xds_bench" | tee "$WORK/xds_table.txt"
