#!/usr/bin/env bash
# make profile: where redvoy's CPU goes under load, for whoever optimises next. Starts
# PROFILE_SHARDS redis-servers behind redvoy (one worker, MAGLEV, as `make bench`), drives it
# with redis-benchmark, samples it with perf (cpu-clock, DWARF call graphs from the release
# build's line tables) and writes:
#   bench/.profile/report.txt      the top frames, self time (perf report --no-children)
#   bench/.profile/callers.txt     the same with callers' inclusive time (--children)
#   bench/.profile/flamegraph.svg  a flame graph (inferno; installed with cargo when missing)
#   bench/.profile/syscalls.txt    syscalls by name per request (perf's syscalls tracepoints)
#   bench/.profile/allocs.txt      heap allocations per request (uprobes on jemalloc's entry
#                                  points in the binary; needs uprobe support, else skipped)
#   bench/.profile/alloc-callers.txt  where those allocations are made (call graphs)
# A profile, not a test: it asserts nothing.
#
# Knobs (environment):
#   PROFILE_TEST      get (default), set, mset or mget
#   PROFILE_PIPELINE  redis-benchmark -P (default 16)
#   PROFILE_N         requests (default 2000000 at -P 16, 300000 at -P 1)
#   PROFILE_SHARDS    redis-servers behind redvoy (default 3)
#   PROFILE_FREQ      samples per second (default 1999)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
install_cleanup_trap

TEST="${PROFILE_TEST:-get}"
PIPELINE="${PROFILE_PIPELINE:-16}"
if [ "$PIPELINE" = 1 ]; then N="${PROFILE_N:-300000}"; else N="${PROFILE_N:-2000000}"; fi
SHARDS="${PROFILE_SHARDS:-3}"
FREQ="${PROFILE_FREQ:-1999}"

ensure_redis
ensure_curl
ensure_python
command -v perf >/dev/null 2>&1 || apt_install linux-perf
command -v perf >/dev/null 2>&1 || die "perf not found (Debian package linux-perf)"
if ! command -v inferno-flamegraph >/dev/null 2>&1 && [ ! -x "$HOME/.cargo/bin/inferno-flamegraph" ]; then
  log "installing inferno (flame graphs) with cargo"
  cargo install --quiet --locked inferno || log "inferno could not be installed: no flame graph"
fi
export PATH="$PATH:$HOME/.cargo/bin"
log "building redvoy (release)"
(cd "$ROOT" && cargo build --release --quiet --bin redvoy)

OUT="$ROOT/bench/.profile"
rm -rf "$OUT"
mkdir -p "$OUT"

PORTS=()
for shard in $(seq 1 "$SHARDS"); do
  port="$(free_port)"
  start_redis "$OUT/redis-$shard" "$port"
  PORTS+=("$port")
done
LISTEN="$(free_port)"
ADMIN="$(free_port)"
sharded_redis_bootstrap "$LISTEN" "$ADMIN" profile "" "" "${PORTS[@]}" > "$OUT/redvoy.yaml"
"${CARGO_TARGET_DIR:-$ROOT/target}/release/redvoy" -c "$OUT/redvoy.yaml" --concurrency 1 -l error \
  > "$OUT/redvoy.log" 2>&1 &
PROXY=$!
track_pid "$PROXY"
wait_ready "$ADMIN" redvoy

bench() {
  local t=(-t "$TEST")
  [ "$TEST" = mget ] && t=("${MGET_COMMAND[@]}")
  redis-benchmark -h 127.0.0.1 -p "$LISTEN" -c 50 -n "$1" -P "$PIPELINE" -r 100000 -q "${t[@]}"
}
# Warm up: connections open, buffers grow.
bench 50000 >/dev/null

# attach PERF_ARGS... — runs perf on the proxy for the length of one benchmark run.
attach() {
  local file="$1"
  shift
  perf "$@" -p "$PROXY" -o "$file" 2>/dev/null &
  local perf_pid=$!
  for _ in $(seq 1 50); do [ -s "$file" ] && break; sleep 0.1; done
  bench "$N" | tr '\r' '\n' | tail -1
  kill -INT "$perf_pid" 2>/dev/null || true
  wait "$perf_pid" 2>/dev/null || true
}

log "sampling redvoy: $TEST -P $PIPELINE, $N requests, $SHARDS shards"
attach "$OUT/perf.data" record -F "$FREQ" -e cpu-clock --call-graph dwarf,32768
perf report -i "$OUT/perf.data" --no-children --stdio --percent-limit 0.5 \
  --sort symbol 2>/dev/null | grep -v '^$' | grep -E '^ +[0-9]' > "$OUT/report.txt" || true
perf report -i "$OUT/perf.data" --children --stdio --percent-limit 2 \
  --sort symbol -g none 2>/dev/null | grep -E '^ +[0-9]' > "$OUT/callers.txt" || true
if command -v inferno-flamegraph >/dev/null 2>&1; then
  perf script -i "$OUT/perf.data" 2>/dev/null | inferno-collapse-perf > "$OUT/stacks.folded"
  inferno-flamegraph --title "redvoy $TEST -P $PIPELINE" < "$OUT/stacks.folded" > "$OUT/flamegraph.svg"
fi

log "counting syscalls: $TEST -P $PIPELINE, $N requests"
attach "$OUT/syscalls.perf" stat -x, -e 'syscalls:sys_enter_*'
python3 - "$OUT/syscalls.perf" "$N" <<'PY' > "$OUT/syscalls.txt"
import sys
path, n = sys.argv[1], int(sys.argv[2])
rows = []
for line in open(path):
    parts = line.strip().split(",")
    if len(parts) > 2 and parts[0].isdigit() and int(parts[0]) > 0:
        rows.append((int(parts[0]), parts[2].replace("syscalls:sys_enter_", "")))
rows.sort(reverse=True)
print(f"{sum(c for c, _ in rows) / n:.3f} syscalls per request")
for count, name in rows:
    print(f"  {count / n:8.3f}  {name}")
PY

# Allocations per request: a uprobe on each of jemalloc's allocation entry points (the binary
# links it statically, as _rjem_*), counted over one run.
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/redvoy"
perf probe -q -d 'probe_redvoy:*' >/dev/null 2>&1 || true
PROBES=()
for fn in _rjem_malloc _rjem_mallocx _rjem_calloc _rjem_realloc _rjem_rallocx; do
  if perf probe -q -x "$BIN" --add "$fn" >/dev/null 2>&1; then
    PROBES+=(-e "probe_redvoy:$fn")
  fi
done
if [ "${#PROBES[@]}" -gt 0 ]; then
  log "counting allocations: $TEST -P $PIPELINE, $N requests"
  attach "$OUT/allocs.perf" stat -x, "${PROBES[@]}"
  python3 - "$OUT/allocs.perf" "$N" <<'PY' > "$OUT/allocs.txt"
import sys
path, n = sys.argv[1], int(sys.argv[2])
rows = []
for line in open(path):
    parts = line.strip().split(",")
    if len(parts) > 2 and parts[0].isdigit():
        rows.append((int(parts[0]), parts[2].replace("probe_redvoy:", "")))
print(f"{sum(c for c, _ in rows) / n:.3f} allocations per request")
for count, name in rows:
    print(f"  {count / n:8.3f}  {name}")
PY
  # Where they come from: the callers of malloc, by sampled call stack.
  attach "$OUT/allocs.data" record -e probe_redvoy:_rjem_malloc -e probe_redvoy:_rjem_realloc \
    --call-graph dwarf,16384
  perf report -i "$OUT/allocs.data" --stdio --no-children -G --percent-limit 3 2>/dev/null \
    | grep -v '^$' | head -150 > "$OUT/alloc-callers.txt" || true
  perf probe -q -d 'probe_redvoy:*' >/dev/null 2>&1 || true
else
  echo "uprobes unavailable: allocations not counted" > "$OUT/allocs.txt"
fi

log "top frames (self time), $OUT/report.txt:"
head -25 "$OUT/report.txt"
log "syscalls per request, $OUT/syscalls.txt:"
cat "$OUT/syscalls.txt"
log "allocations per request, $OUT/allocs.txt:"
cat "$OUT/allocs.txt"
[ -s "$OUT/flamegraph.svg" ] && log "flame graph: $OUT/flamegraph.svg"
exit 0
