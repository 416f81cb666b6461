#!/usr/bin/env bash
# make demo: three local redis-servers behind redvoy on the bundled example bootstrap; a few
# commands through it with redis-cli; where the keys landed; the stats. Then the control plane
# path: istio-examples/prefix-sharding through redvoy-control-plane, with a live edit of its
# EnvoyFilter (scripts/demo_scenario.sh). Stops what it started.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
install_cleanup_trap

ensure_redis
ensure_curl
ensure_python
# REDVOY_BIN runs another binary instead of building (e.g. `envoy`, to compare by hand).
if [ -n "${REDVOY_BIN:-}" ]; then
  REDVOY="$REDVOY_BIN"
else
  command -v cargo >/dev/null 2>&1 || die "cargo not found: install a Rust toolchain (rustup) first"
  log "building redvoy (release)"
  (cd "$ROOT" && cargo build --release --quiet --bin redvoy)
  REDVOY="${CARGO_TARGET_DIR:-$ROOT/target}/release/redvoy"
fi

WORK="$ROOT/.demo"
rm -rf "$WORK"
mkdir -p "$WORK"

LISTENER="$(free_port)"
ADMIN="$(free_port)"
REDIS_PORTS=("$(free_port)" "$(free_port)" "$(free_port)")

log "starting redis-servers on ${REDIS_PORTS[*]}"
for i in 0 1 2; do start_redis "$WORK/redis-$i" "${REDIS_PORTS[$i]}"; done

# The example with the demo's ports in place of its fixed ones.
sed -e "s/port_value: 6380}/port_value: $LISTENER}/" \
    -e "s/port_value: 9901}/port_value: $ADMIN}/" \
    -e "s/port_value: 7001}/port_value: ${REDIS_PORTS[0]}}/" \
    -e "s/port_value: 7002}/port_value: ${REDIS_PORTS[1]}}/" \
    -e "s/port_value: 7003}/port_value: ${REDIS_PORTS[2]}}/" \
    "$ROOT/examples/redvoy-demo.yaml" > "$WORK/bootstrap.yaml"

log "starting redvoy -c examples/redvoy-demo.yaml (listener :$LISTENER, admin :$ADMIN)"
"$REDVOY" -c "$WORK/bootstrap.yaml" --concurrency 1 -l warning --disable-hot-restart \
  > "$WORK/redvoy.log" 2>&1 &
track_pid $!
if ! wait_ready "$ADMIN" redvoy 2>/dev/null; then
  cat "$WORK/redvoy.log" >&2
  die "redvoy did not start (log above)"
fi

run() {
  printf '\n$ redis-cli -p %s %s\n' "$LISTENER" "$*"
  redis-cli -p "$LISTENER" "$@"
}
log "commands through redvoy"
run PING
run SET user:1 alice
run SET user:2 bob
run MSET city:1 paris city:2 tokyo city:3 lima counter 0
run INCR counter
run MGET user:1 user:2 city:1 city:2 city:3 nokey
run SET session:abc token-123
run GET session:abc
run DEL city:3
run UNKNOWNCMD x

log "where the keys landed (KEYS * on each server directly)"
for port in "${REDIS_PORTS[@]}"; do
  printf 'redis-server :%s -> %s\n' "$port" "$(redis-cli -p "$port" KEYS '*' | sort | tr '\n' ' ')"
done
echo "(session:abc was stored as 'abc': its route removes the prefix)"

log "stats (curl http://127.0.0.1:$ADMIN/stats?filter=redis, non-zero counters)"
curl -s "http://127.0.0.1:$ADMIN/stats?filter=redis" | grep -E ': [1-9][0-9]*$' || true

log "stopping redvoy and the redis-servers"
cleanup_tracked

# The control plane path: the same kind of sharding, configured by an Istio EnvoyFilter that
# redvoy-control-plane serves over xDS, and changed live on disk.
if [ -z "${REDVOY_BIN:-}" ]; then
  log "live config push: istio-examples/prefix-sharding through redvoy-control-plane"
  bash "$ROOT/scripts/demo_scenario.sh" prefix-sharding
fi
