#!/usr/bin/env node
// ioredis's share of `make soak` (scripts/soak.sh), with the library's defaults: CONNS
// connections, each looping SET/GET, a pipeline of MSET + MGET, INCR and MULTI/EXEC on
// hash-tagged keys, every reply checked, until SECONDS have passed.
//
// Usage: node soak_client.js PACKAGE PORT SECONDS CONNS   (PACKAGE: ioredis5 or ioredis6)
// Prints one JSON line: operations done and every error with its time (epoch seconds) and kind.
"use strict";

const [pkg, portText, secondsText, connsText] = process.argv.slice(2);
const mod = require(pkg);
const Redis = mod.Redis || mod.default || mod;
const errors = [];
let ops = 0;

function kind(e) {
  return `${(e && e.name) || "Error"}: ${String((e && e.message) || e).slice(0, 300)}`;
}

async function work(id, end) {
  const redis = new Redis(Number(portText), "127.0.0.1");
  // Connection events are counted with the failed commands they cause.
  redis.on("error", () => {});
  let i = 0;
  while (Date.now() < end) {
    i += 1;
    const key = `soak:js:${id}:${i % 5000}`;
    try {
      await redis.set(key, key);
      if ((await redis.get(key)) !== key) throw new Error("lost write");
      const keys = [0, 1, 2].map((n) => `${key}:${n}`);
      const piped = await redis
        .pipeline()
        .mset(...keys.flatMap((k) => [k, k]))
        .mget(...keys)
        .exec();
      for (const [err] of piped) if (err) throw err;
      if (JSON.stringify(piped[1][1]) !== JSON.stringify(keys)) {
        throw new Error("MGET disagrees with MSET");
      }
      await redis.incr(`soak:js:counter:${id}`);
      const tx = await redis
        .multi()
        .set(`{soak:js:${id}}:a`, String(i))
        .get(`{soak:js:${id}}:a`)
        .exec();
      if (!tx || tx[1][1] !== String(i)) throw new Error("transaction read its own write wrong");
      ops += 5;
    } catch (e) {
      errors.push([Date.now() / 1000, kind(e)]);
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  redis.disconnect();
}

async function main() {
  const end = Date.now() + Number(secondsText) * 1000;
  const conns = Number(connsText);
  await Promise.all(Array.from({ length: conns }, (_, id) => work(id, end)));
  console.log(JSON.stringify({ client: pkg, ops, errors }));
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
