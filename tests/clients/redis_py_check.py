#!/usr/bin/env python3
"""redis-py 8 through a Redis endpoint, with the library's defaults (RESP3 via HELLO 3).

Usage: redis_py_check.py HOST PORT

Run by tests/e2e/client_libraries.rs against redvoy; it also passes against a plain redis-server
(except what needs several servers). Prints one JSON line ("ok", and the steps
that "failed"); every step runs, a failed one prints its traceback on stderr, and any failure
makes the exit status 1.

Keys written (the Rust side reads them back directly on the servers):
  py:{i}             value-{i}       i < 2000 (the first 1000 one by one, the rest pipelined)
  pyscript:{i}       script-{i}      i < SCRIPT_KEYS
  pydb0:{i}          db0-{i}         i < DB_KEYS, by a db=0 client after a db=1 client ran
  pyasync:{t}:{j}    async-{t}-{j}   t < ASYNC_TASKS, j < ASYNC_PAIRS
  pywatch:counter    WATCH_THREADS * WATCH_INCREMENTS
plus pyhash and pyset (a hash and a set).
"""

import asyncio
import json
import sys
import threading
import traceback

import redis
import redis.asyncio

ONE_BY_ONE = 1000
PIPELINED = 1000
# Enough keys that, over three servers, every server gets some (a miss is ~1e-11).
SCRIPT_KEYS = 64
DB_KEYS = 50
WATCH_THREADS = 2
WATCH_INCREMENTS = 200
# A WATCH conflict is retried; past this many retries in total the proxy is not isolating
# the watching connection and the run fails instead of spinning.
WATCH_MAX_RETRIES = 20000
ASYNC_TASKS = 50
ASYNC_PAIRS = 100


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def negotiated_protocol(client):
    """The RESP version the pooled connection settled on after its handshake."""
    conn = client.connection_pool.get_connection()
    try:
        return conn.protocol if conn.protocol is not None else 2
    finally:
        client.connection_pool.release(conn)


def one_by_one(r):
    for i in range(ONE_BY_ONE):
        k = f"py:{i}"
        check(r.set(k, f"value-{i}") is True, f"SET {k}")
        got = r.get(k)
        check(got == f"value-{i}".encode(), f"GET {k}: {got!r}")


def pipelined(r):
    keys = range(ONE_BY_ONE, ONE_BY_ONE + PIPELINED)
    with r.pipeline(transaction=False) as p:
        for i in keys:
            p.set(f"py:{i}", f"value-{i}")
        replies = p.execute()
    check(replies == [True] * PIPELINED, f"pipelined SETs: {replies[:5]!r}...")
    with r.pipeline(transaction=False) as p:
        for i in keys:
            p.get(f"py:{i}")
        replies = p.execute()
    expected = [f"value-{i}".encode() for i in keys]
    check(replies == expected, "pipelined GETs differ from what was SET")


def scan(r):
    seen = list(r.scan_iter(match="py:*"))
    expected = {f"py:{i}".encode() for i in range(ONE_BY_ONE + PIPELINED)}
    dups = len(seen) - len(set(seen))
    check(dups == 0, f"SCAN returned {dups} keys more than once")
    missing = expected - set(seen)
    extra = set(seen) - expected
    check(
        not missing and not extra,
        f"SCAN: {len(missing)} missing (e.g. {sorted(missing)[:3]}), "
        f"{len(extra)} unexpected (e.g. {sorted(extra)[:3]})",
    )
    return len(seen)


def script(r):
    get = r.register_script("return redis.call('GET', KEYS[1])")
    for i in range(SCRIPT_KEYS):
        k = f"pyscript:{i}"
        r.set(k, f"script-{i}")
        got = get(keys=[k])
        check(got == f"script-{i}".encode(), f"script GET {k}: {got!r}")
    return get.sha


def types(r):
    r.delete("pyhash", "pyset")
    r.hset("pyhash", mapping={"a": "1", "b": "2"})
    h = r.hgetall("pyhash")
    check(isinstance(h, dict), f"HGETALL type {type(h).__name__}")
    check(h == {b"a": b"1", b"b": b"2"}, f"HGETALL {h!r}")
    r.sadd("pyset", "x", "y", "z")
    s = r.smembers("pyset")
    check(isinstance(s, set), f"SMEMBERS type {type(s).__name__}")
    check(s == {b"x", b"y", b"z"}, f"SMEMBERS {s!r}")


def watch(r):
    key = "pywatch:counter"
    r.set(key, 0)
    retries = [0]
    errors = []
    lock = threading.Lock()

    def worker():
        try:
            for _ in range(WATCH_INCREMENTS):
                while True:
                    with r.pipeline() as p:
                        try:
                            p.watch(key)
                            v = p.get(key)
                            p.multi()
                            p.set(key, int(v) + 1)
                            p.execute()
                            break
                        except redis.WatchError:
                            with lock:
                                retries[0] += 1
                                if retries[0] > WATCH_MAX_RETRIES:
                                    raise AssertionError("too many WATCH retries")
        except BaseException as e:  # reported by the main thread
            errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(WATCH_THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    final = int(r.get(key))
    expected = WATCH_THREADS * WATCH_INCREMENTS
    check(final == expected, f"WATCH counter {final}, expected {expected} (lost updates)")
    return retries[0]


def select_db1(host, port):
    """A db=1 client does whatever the endpoint lets it; a db=0 client then writes keys,
    which must stay in db 0 (the Rust side checks on the servers)."""
    r1 = redis.Redis(host=host, port=port, db=1)
    try:
        r1.set("pydb1:probe", "1")
        outcome = "accepted"
    except redis.RedisError as e:
        outcome = f"{type(e).__name__}: {e}"
    finally:
        r1.close()
    r0 = redis.Redis(host=host, port=port)
    for i in range(DB_KEYS):
        r0.set(f"pydb0:{i}", f"db0-{i}")
    for i in range(DB_KEYS):
        got = r0.get(f"pydb0:{i}")
        check(got == f"db0-{i}".encode(), f"GET pydb0:{i}: {got!r}")
    r0.close()
    return outcome


async def asyncio_pairs(host, port):
    r = redis.asyncio.Redis(host=host, port=port)

    async def task(t):
        for j in range(ASYNC_PAIRS):
            k = f"pyasync:{t}:{j}"
            check(await r.set(k, f"async-{t}-{j}") is True, f"async SET {k}")
            got = await r.get(k)
            check(got == f"async-{t}-{j}".encode(), f"async GET {k}: {got!r}")

    try:
        await asyncio.gather(*(task(t) for t in range(ASYNC_TASKS)))
    finally:
        await r.aclose()


def main():
    host, port = sys.argv[1], int(sys.argv[2])
    r = redis.Redis(host=host, port=port)
    result = {"redis_py": redis.__version__}
    failed = []

    def step(name, run):
        # Every step runs even when an earlier one failed, so one run names all failures.
        try:
            value = run()
            if value is not None:
                result[name] = value
        except BaseException:
            failed.append(name)
            print(f"--- {name} failed ---\n{traceback.format_exc()}", file=sys.stderr)

    step("ping", lambda: check(r.ping() is True, "PING"))
    step("protocol", lambda: negotiated_protocol(r))
    step("set_get", lambda: one_by_one(r))
    step("pipeline", lambda: pipelined(r))
    step("scanned", lambda: scan(r))
    step("script_sha", lambda: script(r))
    step("types", lambda: types(r))
    step("watch_retries", lambda: watch(r))
    step("db1_client", lambda: select_db1(host, port))
    step("asyncio", lambda: asyncio.run(asyncio_pairs(host, port)))
    r.close()
    result["failed"] = failed
    result["ok"] = not failed
    print(json.dumps(result))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
