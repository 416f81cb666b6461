#!/usr/bin/env bash
# The Redis Cluster part of `make bench` (run at the end of scripts/bench.sh; runnable on its
# own): a real 6-node Redis Cluster (3 primaries, 3 replicas, `redis-cli --cluster create`) on
# free loopback ports, fronted by Envoy 1.40 and by redvoy (envoy.clusters.redis, catch-all
# route, one worker each). redis-benchmark GET and SET, -c 50, -P 1 and -P 16, random keys over
# every slot, through each proxy in rotation; and, for reference, redis-benchmark straight to
# one primary (one key that primary owns). Medians of BENCH_REPEAT
# rounds with the redvoy/envoy ratio. A benchmark, not a test: it asserts nothing.
#
# Knobs (environment):
#   BENCH_CLUSTER          0 = skip (when run from bench.sh)
#   BENCH_TARGETS          proxies among "envoy redvoy" (default both)
#   BENCH_SKIP_REDVOY      1 = drop redvoy
#   BENCH_REPEAT           rounds (default 3)
#   BENCH_N_P1 / _P16      requests per run at -P 1 / -P 16 (default 100000 / 500000)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
install_cleanup_trap

if [ "${BENCH_CLUSTER:-1}" = "0" ]; then log "Redis Cluster bench skipped (BENCH_CLUSTER=0)"; exit 0; fi

TARGETS=""
for t in ${BENCH_TARGETS:-envoy redvoy}; do
  case "$t" in envoy|redvoy) TARGETS="$TARGETS $t" ;; esac
done
if [ "${BENCH_SKIP_REDVOY:-0}" = "1" ]; then TARGETS="$(echo "$TARGETS" | sed 's/\bredvoy\b//g')"; fi
REPEAT="${BENCH_REPEAT:-3}"
N_P1="${BENCH_N_P1:-100000}"
N_P16="${BENCH_N_P16:-500000}"
CLIENTS=50
KEYSPACE=100000
NODES=6

ensure_redis
ensure_curl
ensure_python
case " $TARGETS " in *" envoy "*) ensure_envoy ;; esac
case " $TARGETS " in
  *" redvoy "*)
    command -v cargo >/dev/null 2>&1 || die "cargo not found (or set BENCH_SKIP_REDVOY=1)"
    log "building redvoy (release)"
    (cd "$ROOT" && cargo build --release --quiet --bin redvoy)
    ;;
esac

WORK="$ROOT/bench/.run-cluster"
rm -rf "$WORK"
mkdir -p "$WORK"
RESULTS="$WORK/results.csv"
: > "$RESULTS"

# The cluster: NODES cluster-enabled servers, joined with one replica per primary.
NODE_PORTS=()
for i in $(seq 1 "$NODES"); do
  port="$(free_port)"; bus="$(free_port)"
  dir="$WORK/node$i"; mkdir -p "$dir"
  redis-server --port "$port" --cluster-port "$bus" --bind 127.0.0.1 --cluster-enabled yes \
    --cluster-config-file "$dir/nodes.conf" --cluster-node-timeout 5000 --save '' \
    --appendonly no --protected-mode no --dir "$dir" --logfile "$dir/redis.log" >/dev/null 2>&1 &
  track_pid "$!"
  wait_tcp "$port" "cluster node :$port"
  NODE_PORTS+=("$port")
done
ADDRS=()
for p in "${NODE_PORTS[@]}"; do ADDRS+=("127.0.0.1:$p"); done
log "creating the cluster on ${NODE_PORTS[*]}"
redis-cli --cluster create "${ADDRS[@]}" --cluster-replicas 1 --cluster-yes > "$WORK/create.log" 2>&1 \
  || { cat "$WORK/create.log" >&2; die "redis-cli --cluster create failed"; }
deadline=$((SECONDS + 60))
converged() {
  redis-cli --cluster check "127.0.0.1:${NODE_PORTS[0]}" 2>/dev/null | grep -q "All 16384 slots covered" || return 1
  local p
  for p in "${NODE_PORTS[@]}"; do
    redis-cli -p "$p" CLUSTER INFO 2>/dev/null | grep -q "cluster_state:ok" || return 1
  done
}
# Every node must agree the cluster is up: one that does not yet answers CLUSTERDOWN.
until converged; do
  [ "$SECONDS" -lt "$deadline" ] || die "the cluster did not converge"
  sleep 0.2
done

declare -A PORT

bootstrap() {
  local listener="$1" admin="$2"
  redis_proxy_listener "$listener" "$admin" bench ", enable_redirection: true" redis_cluster
  cat <<YAML
  - name: redis_cluster
    connect_timeout: 1s
    lb_policy: CLUSTER_PROVIDED
    cluster_type:
      name: envoy.clusters.redis
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.clusters.redis.v3.RedisClusterConfig
        cluster_refresh_rate: 5s
    load_assignment:
      cluster_name: redis_cluster
      endpoints:
      - lb_endpoints:
        - endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: ${NODE_PORTS[0]}}}}
YAML
}

for target in $TARGETS; do
  port="$(free_port)"; admin="$(free_port)"
  bootstrap "$port" "$admin" > "$WORK/$target.yaml"
  bin="${ENVOY_BIN:-envoy}"
  [ "$target" = redvoy ] && bin="${CARGO_TARGET_DIR:-$ROOT/target}/release/redvoy"
  "$bin" -c "$WORK/$target.yaml" --concurrency 1 -l error --disable-hot-restart \
    > "$WORK/$target.log" 2>&1 &
  track_pid "$!"
  wait_ready "$admin" "$target" || { cat "$WORK/$target.log" >&2; exit 1; }
  PORT[$target]="$port"
  redis-cli -p "$port" SET warmup 1 >/dev/null
done

# "direct": one primary, with the single key redis-benchmark uses without -r
# (`key:__rand_int__`), sent to the primary that owns its slot — a reference for one node.
DIRECT_PORT=""
for p in "${NODE_PORTS[@]}"; do
  # Only the owner accepts the write; the other nodes answer MOVED.
  if [ "$(redis-cli -p "$p" SET 'key:__rand_int__' x 2>/dev/null)" = "OK" ]; then DIRECT_PORT="$p"; break; fi
done
[ -n "$DIRECT_PORT" ] || DIRECT_PORT="${NODE_PORTS[0]}"
log "direct reference: primary :$DIRECT_PORT (owner of key:__rand_int__)"

# One run: prints requests per second ("nan" when a run fails).
run_cell() {
  local target="$1" test="$2" pipeline="$3" n port random
  if [ "$pipeline" = 1 ]; then n="$N_P1"; else n="$N_P16"; fi
  if [ "$target" = direct ]; then
    port="$DIRECT_PORT"; random=""
  else
    port="${PORT[$target]}"; random="-r $KEYSPACE"
  fi
  # shellcheck disable=SC2086
  { redis-benchmark -h 127.0.0.1 -p "$port" -c "$CLIENTS" -n "$n" -P "$pipeline" $random \
      -t "$test" --csv 2>>"$WORK/benchmark.err" || true; } \
    | awk -F'","' 'NR > 1 { gsub(/"/, "", $2); print $2; exit }' || true
}

read -r -a TARGET_LIST <<< "direct $TARGETS"
log "Redis Cluster benchmark: $REPEAT rounds x {set get} x -P {1 16} x {${TARGET_LIST[*]}}"
for round in $(seq 1 "$REPEAT"); do
  for pipeline in 1 16; do
    for test in set get; do
      count="${#TARGET_LIST[@]}"
      for i in $(seq 0 $((count - 1))); do
        target="${TARGET_LIST[$(( (i + round) % count ))]}"
        rps="$(run_cell "$target" "$test" "$pipeline")"
        [ -n "$rps" ] || rps="nan"
        echo "$round,$target,$test,$pipeline,$rps" >> "$RESULTS"
        printf '  round %s  %-4s -P %-2s %-8s %12s rps\n' "$round" "$test" "$pipeline" "$target" "$rps"
      done
    done
  done
done

log "Redis Cluster medians (requests/s; direct = one primary, one key, no proxy)"
python3 - "$RESULTS" <<'PY' | tee "$WORK/table.txt"
import csv, statistics, sys
runs = {}
for rnd, target, test, pipeline, rps in csv.reader(open(sys.argv[1])):
    try:
        runs.setdefault((test, int(pipeline), target), []).append(float(rps))
    except ValueError:
        pass
def med(test, p, t):
    v = runs.get((test, p, t))
    return statistics.median(v) if v else None
cols = [t for t in ("direct", "envoy", "redvoy") if any(k[2] == t for k in runs)]
print("| cell      | " + " | ".join(f"{c:>10}" for c in cols) + " | redvoy/envoy |")
print("|-----------|" + "|".join("-" * 12 for _ in cols) + "|--------------|")
for p in (1, 16):
    for test in ("set", "get"):
        v = {t: med(test, p, t) for t in cols}
        r = f"{v['redvoy'] / v['envoy']:.2f}" if v.get("redvoy") and v.get("envoy") else "-"
        print(f"| {test.upper()} -P {p:<2} | " + " | ".join(
            f"{v[t]:>10.0f}" if v[t] else f"{'-':>10}" for t in cols) + f" | {r:>12} |")
PY
log "raw results: $RESULTS"
