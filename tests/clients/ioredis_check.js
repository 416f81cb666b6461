#!/usr/bin/env node
// ioredis through a Redis endpoint, with the library's defaults (ioredis 6 speaks RESP3).
//
// Usage: node ioredis_check.js PACKAGE HOST PORT
//   PACKAGE is an alias from package.json beside this file: ioredis5 or ioredis6.
//
// Run by tests/e2e/client_libraries.rs against redvoy; it also passes against a plain redis-server.
// Prints one JSON line ("ok", and the steps that "failed"); every step runs, a failed one
// prints its error on stderr, and any failure makes the exit status 1.
//
// Keys written (the Rust side reads them back directly on the servers):
//   PACKAGE:{i}          PACKAGE-v{i}   i < KEYS (one pipeline of SETs, one of GETs)
//   {PACKAGE:tx}:k       tx-value       in MULTI with the INCR below (one hash tag: one server)
//   {PACKAGE:tx}:c       1
"use strict";

const assert = require("node:assert/strict");

const KEYS = 10000;
// Past this the run is stuck (a reply that never comes); the Rust side has its own bound too.
const RUN_LIMIT_MS = 120000;

function packageVersion(pkg) {
  try {
    return require(`${pkg}/package.json`).version;
  } catch (e) {
    return "unknown";
  }
}

async function main() {
  const [pkg, host, portText] = process.argv.slice(2);
  if (!pkg || !host || !portText) {
    throw new Error("usage: ioredis_check.js PACKAGE HOST PORT");
  }
  const mod = require(pkg);
  const Redis = mod.Redis || mod.default || mod;
  const redis = new Redis(Number(portText), host);
  const errors = [];
  redis.on("error", (e) => errors.push(String(e)));
  const result = { package: pkg, version: packageVersion(pkg) };
  const failed = [];
  // Every step runs even when an earlier one failed, so one run names all failures.
  async function step(name, run) {
    try {
      const value = await run();
      if (value !== undefined) result[name] = value;
    } catch (e) {
      failed.push(name);
      console.error(`--- ${name} failed ---\n${e && e.stack ? e.stack : String(e)}`);
    }
  }
  try {
    await step("ping", async () => assert.equal(await redis.ping(), "PONG", "PING"));
    // What the handshake settled on: ioredis 6 asks for RESP3 with HELLO 3 and falls back to
    // RESP2 when refused; ioredis 5 only speaks RESP2.
    await step("protocol", async () => (redis.condition && redis.condition.protocol) || 2);

    await step("sets", async () => {
      const sets = redis.pipeline();
      for (let i = 0; i < KEYS; i++) sets.set(`${pkg}:${i}`, `${pkg}-v${i}`);
      const replies = await sets.exec();
      assert.equal(replies.length, KEYS, "SET pipeline length");
      replies.forEach(([err, reply], i) => {
        assert.equal(err, null, `SET ${pkg}:${i}: ${err}`);
        assert.equal(reply, "OK", `SET ${pkg}:${i}`);
      });
      return replies.length;
    });

    await step("gets", async () => {
      const gets = redis.pipeline();
      for (let i = 0; i < KEYS; i++) gets.get(`${pkg}:${i}`);
      const replies = await gets.exec();
      assert.equal(replies.length, KEYS, "GET pipeline length");
      replies.forEach(([err, reply], i) => {
        assert.equal(err, null, `GET ${pkg}:${i}: ${err}`);
        assert.equal(reply, `${pkg}-v${i}`, `GET ${pkg}:${i}`);
      });
      return replies.length;
    });

    await step("multi", async () => {
      const tag = `{${pkg}:tx}`;
      const tx = await redis.multi().set(`${tag}:k`, "tx-value").incr(`${tag}:c`).exec();
      assert.deepEqual(tx, [[null, "OK"], [null, 1]], "MULTI SET INCR EXEC");
      return tx;
    });
  } finally {
    redis.disconnect();
  }
  result.connection_errors = errors;
  result.failed = failed;
  result.ok = failed.length === 0;
  console.log(JSON.stringify(result));
  return result.ok;
}

const limit = setTimeout(() => {
  console.error(`ioredis_check: no result after ${RUN_LIMIT_MS} ms`);
  process.exit(3);
}, RUN_LIMIT_MS);
limit.unref();

main().then(
  (ok) => process.exit(ok ? 0 : 1),
  (e) => {
    console.error(e && e.stack ? e.stack : String(e));
    process.exit(1);
  }
);
