#!/usr/bin/env bash
# make bench: redis-benchmark (SET, GET, MSET and MGET of 10 keys; -c 50; -P 1 and -P 16)
# against direct Redis, twemproxy (nutcracker), Envoy 1.40 and redvoy, one worker each,
# interleaved: every cell runs for all targets in rotation, repeated BENCH_REPEAT times; medians
# and ratios are printed, with each proxy's requests per CPU-second (utime+stime from
# /proc/<pid>/stat around every run). Then syscalls per request (perf's raw_syscalls tracepoint
# on the proxy during one GET run at -P 1 and -P 16, outside the timed rounds) and the RSS per
# idle client connection (10,000 clients). A benchmark, not a test, but it fails (after printing
# everything) when redvoy misses its idle-client target.
#
# Every proxy shards over the same BENCH_SHARDS redis-servers (3 by default, the setup users run
# and twemproxy/predixy are compared in); "direct" is redis-benchmark against the first of them,
# so proxy/direct says what the hop costs against one server.
#
# Knobs (environment):
#   BENCH_TARGETS     targets, default "direct twemproxy envoy redvoy"; "redvoy-cmdstats" adds
#                     redvoy with enable_command_stats (the cost of stats recording)
#   BENCH_SKIP_REDVOY 1 = drop redvoy (e.g. before the binary exists)
#   BENCH_REPEAT      repetitions per cell (default 3)
#   BENCH_N_P1        requests per SET/GET run at -P 1 (default 100000)
#   BENCH_N_P16       requests per SET/GET run at -P 16 (default 500000)
#                     (MSET runs use a quarter: each request carries 10 keys)
#   BENCH_SHARDS      redis-servers behind every proxy (default 3)
#   BENCH_TESTS       cells, default "set get mset mget"
#   BENCH_SYSCALLS    0 = skip the syscalls-per-request pass
#   BENCH_IDLE_CONNS  idle connections for the RSS measurement (default 10000; fewer when the
#                     file descriptor limit is lower); redvoy must stay at or below 2 KiB each
#   BENCH_XDS         0 = skip the xDS push benchmark run at the end (scripts/bench_xds.sh;
#                     BENCH_XDS_COUNT = clusters and listeners pushed, default 1000; more
#                     BENCH_XDS_* knobs there)
#   BENCH_CLUSTER     0 = skip the Redis Cluster benchmark run last (scripts/bench_cluster.sh)
#   BENCH_TLS         0 = skip the TLS targets: envoy-tls and redvoy-tls reach the same
#                     redis-server on its TLS port (a CA made here with openssl; default 1),
#                     and direct-tls is redis-benchmark --tls against that port (the ceiling:
#                     what the TLS redis-server itself serves on this machine)
#   BENCH_BASE_BIN    a second redvoy binary (e.g. a release build of an older commit) run as
#                     the target "redvoy-base" in the same rotation, for before/after numbers
#                     of a change: adds the column and the ratio redvoy/base
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
install_cleanup_trap

TARGETS="${BENCH_TARGETS:-direct twemproxy envoy redvoy}"
if [ "${BENCH_TLS:-1}" != "0" ]; then
  case " $TARGETS " in *" envoy "*) TARGETS="$TARGETS envoy-tls" ;; esac
  case " $TARGETS " in *" redvoy "*) TARGETS="$TARGETS redvoy-tls" ;; esac
  case " $TARGETS " in *" direct "*) TARGETS="$TARGETS direct-tls" ;; esac
fi
if [ "${BENCH_SKIP_REDVOY:-0}" = "1" ]; then TARGETS="$(echo "$TARGETS" | sed 's/\bredvoy\b//g')"; fi
if [ -n "${BENCH_BASE_BIN:-}" ] && [[ " $TARGETS " != *" redvoy-base "* ]]; then TARGETS="$TARGETS redvoy-base"; fi
REPEAT="${BENCH_REPEAT:-3}"
N_P1="${BENCH_N_P1:-100000}"
N_P16="${BENCH_N_P16:-500000}"
IDLE_CONNS="${BENCH_IDLE_CONNS:-10000}"
CLIENTS=50
KEYSPACE=100000
TESTS="${BENCH_TESTS:-set get mset mget}"
SHARDS="${BENCH_SHARDS:-3}"
PIPELINES="1 16"

ensure_redis
ensure_curl
ensure_python
case " $TARGETS " in *" twemproxy "*) ensure_nutcracker ;; esac
case " $TARGETS " in *" envoy "*) ensure_envoy ;; esac
case " $TARGETS " in
  *" redvoy"*)
    command -v cargo >/dev/null 2>&1 || die "cargo not found (or set BENCH_SKIP_REDVOY=1)"
    log "building redvoy (release)"
    (cd "$ROOT" && cargo build --release --quiet --bin redvoy)
    ;;
esac

# 10,000 idle clients need file descriptors on both sides (each side is its own process).
ulimit -n 20000 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if [ "$(ulimit -n)" != unlimited ] && [ "$IDLE_CONNS" -gt "$(( $(ulimit -n) - 1000 ))" ]; then
  IDLE_CONNS=$(( $(ulimit -n) - 1000 ))
  log "file descriptor limit $(ulimit -n): measuring $IDLE_CONNS idle clients"
fi

WORK="$ROOT/bench/.run"
rm -rf "$WORK"
mkdir -p "$WORK"
RESULTS="$WORK/results.csv"
: > "$RESULTS"

REDIS_PORTS=()
REDIS_TLS_PORTS=()
TLS=""
if [[ " $TARGETS " == *"-tls "* ]]; then
  # A CA and a server certificate for the TLS targets (the servers also listen in plaintext).
  TLS="$WORK/tls"; mkdir -p "$TLS"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj "/CN=bench CA" -keyout "$TLS/ca-key.pem" -out "$TLS/ca.pem" 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=redis.bench" \
    -keyout "$TLS/server-key.pem" -out "$TLS/server.csr" 2>/dev/null
  printf 'subjectAltName=DNS:redis.bench\n' > "$TLS/ext.cnf"
  openssl x509 -req -in "$TLS/server.csr" -CA "$TLS/ca.pem" -CAkey "$TLS/ca-key.pem" \
    -CAcreateserial -days 2 -extfile "$TLS/ext.cnf" -out "$TLS/server.pem" 2>/dev/null
fi
for shard in $(seq 1 "$SHARDS"); do
  port="$(free_port)"
  TLS_ARGS=()
  if [ -n "$TLS" ]; then
    tls_port="$(free_port)"
    REDIS_TLS_PORTS+=("$tls_port")
    TLS_ARGS=(--tls-port "$tls_port" --tls-cert-file "$TLS/server.pem"
              --tls-key-file "$TLS/server-key.pem" --tls-ca-cert-file "$TLS/ca.pem"
              --tls-auth-clients no)
  fi
  log "redis-server on :$port${tls_port:+ (TLS :$tls_port)}"
  start_redis "$WORK/redis-$shard" "$port" "${TLS_ARGS[@]}"
  REDIS_PORTS+=("$port")
  [ "$shard" = 1 ] && REDIS_PID="$LAST_PID"
done
REDIS_PORT="${REDIS_PORTS[0]}"
REDIS_TLS_PORT="${REDIS_TLS_PORTS[0]:-}"

declare -A PORT PID

# A bootstrap (shared by Envoy and redvoy) with one cluster of the shards, keys placed by
# MAGLEV; with a fourth argument, the cluster reaches the servers' TLS ports, verifying them
# against the bench CA.
bootstrap() {
  local listener="$1" admin="$2" settings_extra="${3:-}" tls="${4:-}"
  local ports=("${REDIS_PORTS[@]}") transport=""
  if [ -n "$tls" ]; then
    ports=("${REDIS_TLS_PORTS[@]}")
    transport="
    transport_socket:
      name: envoy.transport_sockets.tls
      typed_config:
        \"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
        sni: redis.bench
        common_tls_context:
          validation_context:
            trusted_ca: {filename: $TLS/ca.pem}
            match_typed_subject_alt_names:
            - {san_type: DNS, matcher: {exact: redis.bench}}"
  fi
  sharded_redis_bootstrap "$listener" "$admin" bench "$settings_extra" "$transport" "${ports[@]}"
}

start_target() {
  local target="$1" port admin
  case "$target" in
    direct)
      PORT[direct]="$REDIS_PORT"
      PID[direct]="$REDIS_PID"
      ;;
    direct-tls)
      PORT[direct-tls]="$REDIS_TLS_PORT"
      PID[direct-tls]="$REDIS_PID"
      ;;
    twemproxy)
      port="$(free_port)"; admin="$(free_port)"
      cat > "$WORK/nutcracker.yml" <<YAML
bench:
  listen: 127.0.0.1:$port
  hash: fnv1a_64
  distribution: ketama
  redis: true
  preconnect: true
  auto_eject_hosts: false
  server_connections: 1
  servers:
$(for p in "${REDIS_PORTS[@]}"; do echo "   - 127.0.0.1:$p:1"; done)
YAML
      nutcracker -c "$WORK/nutcracker.yml" -s "$admin" -a 127.0.0.1 -o "$WORK/nutcracker.log" &
      PID[twemproxy]=$!; track_pid "${PID[twemproxy]}"
      wait_tcp "$port" twemproxy
      PORT[twemproxy]="$port"
      ;;
    envoy|redvoy|redvoy-cmdstats|redvoy-base|envoy-tls|redvoy-tls)
      port="$(free_port)"; admin="$(free_port)"
      # redvoy-cmdstats: the same proxy with per-command upstream stats on, to show what
      # stats recording costs on the data path.
      local extra=""
      [ "$target" = redvoy-cmdstats ] && extra=", enable_command_stats: true"
      local tls=""
      case "$target" in *-tls) tls=1 ;; esac
      bootstrap "$port" "$admin" "$extra" "$tls" > "$WORK/$target.yaml"
      local bin="${ENVOY_BIN:-}"
      case "$target" in
        redvoy-base) bin="${BENCH_BASE_BIN:?BENCH_BASE_BIN must name the base redvoy binary}" ;;
        redvoy*) bin="${CARGO_TARGET_DIR:-$ROOT/target}/release/redvoy" ;;
      esac
      "$bin" -c "$WORK/$target.yaml" --concurrency 1 -l error --disable-hot-restart \
        > "$WORK/$target.log" 2>&1 &
      PID[$target]=$!; track_pid "${PID[$target]}"
      wait_ready "$admin" "$target" || { cat "$WORK/$target.log" >&2; exit 1; }
      PORT[$target]="$port"
      ;;
    *) die "unknown target $target" ;;
  esac
  # Warm up: the first request opens the upstream connection.
  redis-cli -p "${PORT[$target]}" $(tls_flags "$target") SET warmup 1 >/dev/null
}

# tls_flags TARGET — redis-cli / redis-benchmark flags to reach TARGET (TLS for direct-tls).
tls_flags() {
  [ "$1" = direct-tls ] && echo "--tls --insecure"
  return 0
}

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }

# idle_rss TARGET — RSS growth per idle client: open N connections, PING each once, hold.
idle_rss() {
  local target="$1" pid="${PID[$1]:-}"
  # The same redis-server as direct, and its clients would need TLS.
  [ "$target" = direct-tls ] && { echo "n/a"; return; }
  [ -n "$pid" ] && [ -r "/proc/$pid/status" ] || { echo "n/a"; return; }
  python3 - "${PORT[$target]}" "$IDLE_CONNS" "$pid" <<'PY'
import socket, sys, time
port, count, pid = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]

def rss_kib():
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])

time.sleep(0.5)
before = rss_kib()
conns = []
for _ in range(count):
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(b"*1\r\n$4\r\nPING\r\n")
    conns.append(s)
for s in conns:
    buf = b""
    while not buf.endswith(b"\r\n"):
        chunk = s.recv(64)
        if not chunk:
            break
        buf += chunk
time.sleep(1.0)
after = rss_kib()
print(f"{(after - before) * 1024 / count:.0f}")
for s in conns:
    s.close()
PY
}

log "targets: $TARGETS"
for target in $TARGETS; do start_target "$target"; done

log "RSS per idle client connection ($IDLE_CONNS clients, PING once, then idle)"
declare -A RSS
for target in $TARGETS; do
  RSS[$target]="$(idle_rss "$target")"
  printf '  %-10s %s bytes\n' "$target" "${RSS[$target]}"
done

# cpu_ticks PID — user+system CPU time of the process so far, in clock ticks.
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat" 2>/dev/null || echo 0; }
CLK_TCK="$(getconf CLK_TCK)"

# benchmark TARGET TEST PIPELINE N [EXTRA...] — one redis-benchmark run; prints the CSV row.
benchmark() {
  local target="$1" test="$2" pipeline="$3" n="$4"
  shift 4
  local t=(-t "$test")
  [ "$test" = mget ] && t=("${MGET_COMMAND[@]}")
  # shellcheck disable=SC2046 # the flags are words
  redis-benchmark -h 127.0.0.1 -p "${PORT[$target]}" $(tls_flags "$target") \
    -c "$CLIENTS" -n "$n" -P "$pipeline" -r "$KEYSPACE" "$@" --csv "${t[@]}" 2>/dev/null \
    | awk -F'","' 'NR > 1 { gsub(/"/, "", $2); print $2; exit }'
}

cell_requests() {
  local test="$1" pipeline="$2" n
  if [ "$pipeline" = 1 ]; then n="$N_P1"; else n="$N_P16"; fi
  case "$test" in mset|mget) n=$((n / 4)) ;; esac
  echo "$n"
}

# One run: prints "requests-per-second requests-per-CPU-second" (the second for the process
# behind the target: the proxy, or the first redis-server for direct).
run_cell() {
  local target="$1" test="$2" pipeline="$3" n before after rps
  n="$(cell_requests "$test" "$pipeline")"
  before="$(cpu_ticks "${PID[$target]}")"
  rps="$(benchmark "$target" "$test" "$pipeline" "$n")"
  after="$(cpu_ticks "${PID[$target]}")"
  echo "${rps:-nan} $(python3 -c "t = ($after - $before) / $CLK_TCK; print(f'{$n / t:.0f}' if t > 0 else 'nan')")"
}

read -r -a TARGET_LIST <<< "$TARGETS"
log "benchmark: $REPEAT rounds x {$TESTS} x -P {$PIPELINES} x {${TARGET_LIST[*]}}, interleaved"
for round in $(seq 1 "$REPEAT"); do
  for pipeline in $PIPELINES; do
    for test in $TESTS; do
      # Rotate the starting target each round so no target always runs first.
      count="${#TARGET_LIST[@]}"
      for i in $(seq 0 $((count - 1))); do
        target="${TARGET_LIST[$(( (i + round) % count ))]}"
        read -r rps per_cpu <<< "$(run_cell "$target" "$test" "$pipeline")"
        echo "$round,$target,$test,$pipeline,$rps,$per_cpu" >> "$RESULTS"
        printf '  round %s  %-6s -P %-2s %-10s %12s rps %12s req/CPU-s\n' \
          "$round" "$test" "$pipeline" "$target" "$rps" "$per_cpu"
      done
    done
  done
done

# Syscalls per request: perf counts the raw_syscalls tracepoint of the proxy's process (every
# thread) over one GET run per pipeline depth, outside the timed rounds.
SYSCALLS=""
if [ "${BENCH_SYSCALLS:-1}" != "0" ] && command -v perf >/dev/null 2>&1 \
    && perf stat -e raw_syscalls:sys_enter true >/dev/null 2>&1; then
  log "syscalls per request (perf stat -e raw_syscalls:sys_enter, GET)"
  for target in $TARGETS; do
    case "$target" in direct*) continue ;; esac
    for pipeline in $PIPELINES; do
      n="$(cell_requests get "$pipeline")"
      perf stat -x, -e raw_syscalls:sys_enter -p "${PID[$target]}" -o "$WORK/perf-$target-$pipeline.txt" &
      perf_pid=$!
      # perf attaches asynchronously: its output file appears once it counts.
      for _ in $(seq 1 50); do [ -s "$WORK/perf-$target-$pipeline.txt" ] && break; sleep 0.1; done
      benchmark "$target" get "$pipeline" "$n" >/dev/null
      kill -INT "$perf_pid" 2>/dev/null || true
      wait "$perf_pid" 2>/dev/null || true
      count="$(awk -F, '/raw_syscalls/ { print $1 }' "$WORK/perf-$target-$pipeline.txt")"
      per="$(python3 -c "print(f'{${count:-0} / $n:.3f}')")"
      printf '  %-12s GET -P %-2s %s syscalls/request\n' "$target" "$pipeline" "$per"
      SYSCALLS="$SYSCALLS $target:$pipeline=$per"
    done
  done
else
  log "syscalls per request skipped (no perf, or its tracepoints are not readable)"
fi

log "medians (requests/s; MSET and MGET commands of 10 keys; $SHARDS shards behind every proxy)"
RSS_LINE=""
for target in $TARGETS; do RSS_LINE="$RSS_LINE $target=${RSS[$target]}"; done
python3 - "$RESULTS" "$TARGETS" "$RSS_LINE" "$SYSCALLS" <<'PY' | tee "$WORK/table.txt"
import csv, statistics, sys
path, targets, rss, syscalls = sys.argv[1], sys.argv[2].split(), sys.argv[3].split(), sys.argv[4].split()
runs, cpu = {}, {}
for rnd, target, test, pipeline, rps, per_cpu in csv.reader(open(path)):
    try:
        runs.setdefault((test, int(pipeline), target), []).append(float(rps))
        cpu.setdefault((test, int(pipeline), target), []).append(float(per_cpu))
    except ValueError:
        pass
def med(test, p, t):
    v = runs.get((test, p, t))
    return statistics.median(v) if v else None
def ratio(a, b):
    return f"{a / b:.2f}" if a and b else "-"
cols = [t for t in ["direct", "twemproxy", "envoy", "redvoy-base", "redvoy", "redvoy-cmdstats", "direct-tls", "envoy-tls", "redvoy-tls"] if t in targets]
head = f"| {'cell':<12} | " + " | ".join(f"{c:>10}" for c in cols)
extra = []
if "redvoy" in cols:
    extra = [("redvoy/envoy", "redvoy", "envoy"), ("redvoy/twemproxy", "redvoy", "twemproxy"), ("redvoy/direct", "redvoy", "direct")]
if "redvoy-base" in cols:
    extra.append(("redvoy/base", "redvoy", "redvoy-base"))
if "redvoy-cmdstats" in cols:
    extra.append(("cmdstats/redvoy", "redvoy-cmdstats", "redvoy"))
extra.append(("tls: redvoy/envoy", "redvoy-tls", "envoy-tls"))
extra.append(("tls: redvoy/direct", "redvoy-tls", "direct-tls"))
extra += [(f"{t}/direct", t, "direct") for t in ("envoy", "twemproxy") if t in cols and "direct" in cols]
extra = [e for e in extra if e[1] in cols and e[2] in cols]
head += "".join(f" | {name:>16}" for name, _, _ in extra) + " |"
print(head)
print("|" + "-" * (len(head) - 2) + "|")
tests = [t for t in ("set", "get", "mset", "mget") if any(k[0] == t for k in runs)]
for p in (1, 16):
    for test in tests:
        vals = {t: med(test, p, t) for t in cols}
        line = f"| {test.upper() + ' -P ' + str(p):<12} | " + " | ".join(
            f"{vals[t]:>10.0f}" if vals[t] else f"{'-':>10}" for t in cols)
        line += "".join(f" | {ratio(vals[a], vals[b]):>16}" for _, a, b in extra) + " |"
        print(line)
print()
print("thousand requests per CPU-second of the proxy process (direct: of the redis-server)")
print(f"| {'cell':<12} | " + " | ".join(f"{c:>10}" for c in cols) + " |")
for p in (1, 16):
    for test in tests:
        line = f"| {test.upper() + ' -P ' + str(p):<12} | "
        vals = [cpu.get((test, p, t)) for t in cols]
        line += " | ".join(f"{statistics.median(v) / 1000:>10.0f}" if v else f"{'-':>10}" for v in vals)
        print(line + " |")
print()
if syscalls:
    print("syscalls per request (GET): " + ", ".join(syscalls))
print("RSS per idle client connection (bytes): " + ", ".join(rss))
PY
log "raw results: $RESULTS"

# The xDS push benchmark (scripts/bench_xds.sh: push→ACK of 1,000 clusters and listeners, RSS,
# route push→first use; BENCH_XDS=0 skips it, BENCH_XDS_COUNT sizes it). The proxies above are
# stopped first so they do not share the cores with it.
cleanup_tracked
if [ "${BENCH_XDS:-1}" != "0" ]; then
  BENCH_TARGETS="$(echo "$TARGETS" | sed 's/redvoy-base//; s/[a-z]*-tls//g')" bash "$ROOT/scripts/bench_xds.sh"
fi
# The Redis Cluster benchmark (scripts/bench_cluster.sh: GET/SET through Envoy and redvoy to a
# real 6-node cluster, and redis-benchmark --cluster direct; BENCH_CLUSTER=0 skips it).
if [ "${BENCH_CLUSTER:-1}" != "0" ]; then
  BENCH_TARGETS="$(echo "$TARGETS" | sed 's/redvoy-base//; s/[a-z]*-tls//g')" bash "$ROOT/scripts/bench_cluster.sh"
fi
# redvoy's idle-client target (issue 16): at most 2 KiB per idle client after one command.
# Checked last, so that a miss still prints every table above.
IDLE_TARGET_BYTES=2048
case "${RSS[redvoy]:-n/a}" in
  n/a|'') ;;
  *) [ "${RSS[redvoy]}" -le "$IDLE_TARGET_BYTES" ] ||
       die "redvoy holds ${RSS[redvoy]} bytes per idle client (target: $IDLE_TARGET_BYTES)" ;;
esac
