"""One client library's share of `make soak` (scripts/soak.sh): redis-py with its defaults,
THREADS threads of SET/GET, a non-transactional pipeline (MSET + MGET), INCR and a
MULTI/EXEC transaction on hash-tagged keys, each reply checked, until SECONDS have passed.
Prints one JSON object: operations done and every error with its time and kind."""

import json
import sys
import threading
import time

import redis

port, seconds, threads = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
lock = threading.Lock()
errors = []  # [epoch seconds, kind]
ops = [0]


def kind(e):
    # The driver strips keys and numbers (and a pipeline's preamble) to group them.
    return f"{type(e).__name__}: {str(e)[:300]}"


def work(tid):
    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=10, socket_connect_timeout=5)
    end = time.time() + seconds
    i = 0
    done = 0
    while time.time() < end:
        i += 1
        key = f"soak:py:{tid}:{i % 5000}"
        try:
            client.set(key, key)
            if client.get(key) != key.encode():
                raise ValueError("lost write")
            keys = [f"{key}:{n}" for n in range(3)]
            pipe = client.pipeline(transaction=False)
            pipe.mset({k: k for k in keys})
            pipe.mget(keys)
            _, values = pipe.execute()
            if values != [k.encode() for k in keys]:
                raise ValueError("MGET disagrees with MSET")
            client.incr(f"soak:py:counter:{tid}")
            tx = client.pipeline(transaction=True)
            tx.set(f"{{soak:{tid}}}:a", i)
            tx.get(f"{{soak:{tid}}}:a")
            _, got = tx.execute()
            if got != str(i).encode():
                raise ValueError("transaction read its own write wrong")
            done += 5
        except Exception as e:  # noqa: BLE001 - every failure is counted by kind
            with lock:
                errors.append([time.time(), kind(e)])
            time.sleep(0.05)
    with lock:
        ops[0] += done


workers = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
for w in workers:
    w.start()
for w in workers:
    w.join()
print(json.dumps({"client": "redis-py", "ops": ops[0], "errors": errors}))
