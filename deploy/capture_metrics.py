#!/usr/bin/env python3
"""Runs a proxy (redvoy, or Envoy for comparison) in front of a throw-away redis-server, sends a
few commands through it and writes what its admin port serves at /stats/prometheus.

    python3 deploy/capture_metrics.py --out deploy/grafana/testdata/redvoy-metrics.txt
    python3 deploy/capture_metrics.py --proxy "$(which envoy)" --out /tmp/envoy-metrics.txt

The bootstrap is deploy/grafana/testdata/metrics-bootstrap.yaml. Everything listens on
127.0.0.1 on free ports; every process started here is stopped by its PID. The proxy binary is
copied to the temporary directory first, so a rebuild of target/ during the run does no harm.
Needs redis-server on PATH; standard library only.
"""

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
BOOTSTRAP = os.path.join(HERE, "grafana", "testdata", "metrics-bootstrap.yaml")
# What is sent through the proxy: successes, a reply error from Redis (WRONGTYPE, counted as a
# success by the proxy, as Envoy counts it), an unsupported command and an invalid request
# (proxy-side errors), a multi-key command split per key.
COMMANDS = [
    ["SET", "k1", "v1"], ["SET", "k2", "v2"], ["SET", "k3", "v3"],
    ["GET", "k1"], ["GET", "k2"], ["GET", "missing"],
    ["MGET", "k1", "k2", "k3"], ["MSET", "a", "1", "b", "2"],
    ["INCR", "counter"], ["LPUSH", "k1", "x"], ["DEL", "a", "b"],
    ["FOOBAR"], ["GET"], ["PING"],
]
# The proxy's stats_flush_interval is 1 s: histograms reach /stats/prometheus at the next flush.
FLUSH_WAIT_S = 2.5


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def resp_command(sock_file, args):
    out = b"*%d\r\n" % len(args)
    for a in args:
        a = a.encode()
        out += b"$%d\r\n%s\r\n" % (len(a), a)
    sock_file.write(out)
    sock_file.flush()
    return read_reply(sock_file)


def read_reply(f):
    line = f.readline()
    if not line:
        raise ConnectionError("connection closed")
    kind, rest = line[:1], line[1:-2]
    if kind in (b"+", b"-", b":"):
        return (kind + rest).decode(errors="replace")
    if kind == b"$":
        n = int(rest)
        return None if n < 0 else f.read(n + 2)[:-2].decode(errors="replace")
    if kind == b"*":
        n = int(rest)
        return None if n < 0 else [read_reply(f) for _ in range(n)]
    raise ValueError(f"unexpected reply {line!r}")


def wait_for(what, check, timeout=20.0):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except OSError as e:
            last = e
        time.sleep(0.1)
    raise TimeoutError(f"{what} not ready after {timeout}s ({last})")


def http_get(port, path):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
        return r.status, r.read().decode()


def ready(port):
    try:
        return http_get(port, "/ready")[1].strip() == "LIVE"
    except OSError:
        return False


def default_redvoy():
    for candidate in (os.environ.get("REDVOY_BIN"),
                      os.path.join(ROOT, "target", "debug", "redvoy"),
                      os.path.join(ROOT, "target", "release", "redvoy")):
        if candidate and os.path.isfile(candidate):
            return candidate
    return None


def stop(proc):
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def capture(proxy_bin, out_path, extra_args=()):
    if not shutil.which("redis-server"):
        sys.exit("capture_metrics: redis-server not found on PATH")
    procs = []
    with tempfile.TemporaryDirectory(prefix="redvoy-metrics-") as tmp:
        try:
            ports = {name: free_port() for name in ("ADMIN_PORT", "LISTEN_PORT", "REDIS_PORT", "XDS_PORT")}
            ports["DIR"] = tmp
            text = open(BOOTSTRAP).read()
            for k, v in ports.items():
                text = text.replace(f"@{k}@", str(v))
            boot = os.path.join(tmp, "bootstrap.yaml")
            with open(boot, "w") as f:
                f.write(text)
            for name in ("cds.yaml", "lds.yaml"):
                with open(os.path.join(tmp, name), "w") as f:
                    f.write('version_info: "1"\nresources: []\n')
            binary = os.path.join(tmp, "proxy")
            shutil.copy2(proxy_bin, binary)

            redis = subprocess.Popen(
                ["redis-server", "--port", str(ports["REDIS_PORT"]), "--bind", "127.0.0.1",
                 "--save", "", "--appendonly", "no", "--daemonize", "no"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            procs.append(redis)
            wait_for("redis-server", lambda: socket.create_connection(("127.0.0.1", ports["REDIS_PORT"]), 1).close() or True)

            log = open(os.path.join(tmp, "proxy.log"), "w")
            proxy = subprocess.Popen([binary, "-c", boot, "--concurrency", "1", *extra_args],
                                     stdout=log, stderr=subprocess.STDOUT, cwd=tmp)
            procs.append(proxy)
            try:
                wait_for("proxy /ready", lambda: ready(ports["ADMIN_PORT"]))
            except TimeoutError:
                log.flush()
                sys.stderr.write(open(os.path.join(tmp, "proxy.log")).read()[-4000:])
                raise

            with socket.create_connection(("127.0.0.1", ports["LISTEN_PORT"]), 5) as s:
                f = s.makefile("rwb")
                for cmd in COMMANDS:
                    resp_command(f, cmd)
            time.sleep(FLUSH_WAIT_S)
            status, body = http_get(ports["ADMIN_PORT"], "/stats/prometheus")
            if status != 200 or "# TYPE" not in body:
                sys.exit(f"capture_metrics: /stats/prometheus answered {status}")
            with open(out_path, "w") as f:
                f.write(body)
            families = sum(1 for line in body.splitlines() if line.startswith("# TYPE "))
            print(f"capture_metrics: {families} metric families from {proxy_bin} -> {out_path}")
        finally:
            for p in reversed(procs):
                stop(p)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--proxy", help="redvoy (default: $REDVOY_BIN, target/debug/redvoy, "
                    "target/release/redvoy) or an envoy binary")
    ap.add_argument("--out", required=True, help="where to write the /stats/prometheus text")
    ap.add_argument("--base-id", help="Envoy only: --base-id, so it can run beside another Envoy")
    args = ap.parse_args()
    proxy = args.proxy or default_redvoy()
    if not proxy:
        sys.exit("capture_metrics: no redvoy binary (build it, or pass --proxy / set REDVOY_BIN)")
    extra = ["--base-id", args.base_id] if args.base_id else []
    capture(os.path.realpath(proxy), args.out, extra)


if __name__ == "__main__":
    main()
