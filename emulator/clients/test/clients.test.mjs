// Upstash's own clients, unchanged, against upstash-emulator.
//
// Needs a running emulator and these variables (the Rust test `node_clients` sets them):
//   UPSTASH_EMULATOR_API_URL  Developer API base URL, e.g. http://127.0.0.1:8080
//   UPSTASH_EMAIL, UPSTASH_API_KEY  an emulator account
//   NODE_EXTRA_CA_CERTS  the emulator's CA file (--ca-out)

import { test } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { createRequire } from "node:module";
import { Redis } from "@upstash/redis";
import { Ratelimit } from "@upstash/ratelimit";
import IORedis from "ioredis";

const here = dirname(fileURLToPath(import.meta.url));
const preload = join(here, "..", "preload.mjs");
const require = createRequire(import.meta.url);
const cliBin = join(dirname(require.resolve("@upstash/cli/package.json")), "dist", "cli.js");
// An empty working directory: the CLI loads a .env file from its cwd.
const cwd = mkdtempSync(join(tmpdir(), "upstash-cli-"));

for (const v of ["UPSTASH_EMULATOR_API_URL", "UPSTASH_EMAIL", "UPSTASH_API_KEY", "NODE_EXTRA_CA_CERTS"]) {
  assert.ok(process.env[v], `${v} must be set`);
}

/** Runs the official `upstash` CLI; resolves {code, json, stderr}. */
function upstash(...args) {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      ["--import", preload, cliBin, ...args],
      { cwd, env: { ...process.env, HOME: cwd } },
      (err, stdout, stderr) => {
        let json;
        try {
          json = JSON.parse(stdout);
        } catch {
          json = undefined;
        }
        resolve({ code: err ? err.code : 0, json, stdout, stderr });
      },
    );
  });
}

async function ok(...args) {
  const r = await upstash(...args);
  assert.equal(r.code, 0, `upstash ${args.join(" ")} failed: ${r.stderr}${r.stdout}`);
  return r.json;
}

test("official CLI: create, list, get, reset-password, redis exec, delete", async () => {
  const name = `cli-${Date.now()}`;
  const db = await ok("redis", "create", "--name", name, "--region", "us-east-1", "--read-regions", "eu-west-1");
  assert.equal(db.database_name, name);
  assert.equal(db.region, "global");
  assert.deepEqual(db.read_regions, ["eu-west-1"]);
  assert.match(db.database_id, /^[0-9a-f-]{36}$/);
  const restUrl = `https://${db.endpoint}`;

  const list = await ok("redis", "list");
  assert.ok(list.some((d) => d.database_id === db.database_id), "list contains the new database");

  const got = await ok("redis", "get", "--db-id", db.database_id);
  assert.equal(got.rest_token, db.rest_token);
  const hidden = await ok("redis", "get", "--db-id", db.database_id, "--hide-credentials");
  assert.equal(hidden.password, "***");

  // redis exec through the data plane with the REST URL and token.
  const set = await ok("redis", "exec", "--db-url", restUrl, "--db-token", db.rest_token, "SET", "greeting", "hello");
  assert.deepEqual(set, { result: "OK" });
  const get = await ok("redis", "exec", "--db-url", restUrl, "--db-token", db.rest_token, "--json", '["GET","greeting"]');
  assert.deepEqual(get, { result: "hello" });

  const reset = await ok("redis", "reset-password", "--db-id", db.database_id);
  assert.notEqual(reset.password, db.password);
  assert.notEqual(reset.rest_token, db.rest_token);
  const stale = await upstash("redis", "exec", "--db-url", restUrl, "--db-token", db.rest_token, "GET", "greeting");
  assert.notEqual(stale.code, 0, "the old token is revoked");
  const fresh = await ok("redis", "exec", "--db-url", restUrl, "--db-token", reset.rest_token, "GET", "greeting");
  assert.deepEqual(fresh, { result: "hello" });
  // The env-var form of redis exec works too.
  const viaEnv = await new Promise((resolve) =>
    execFile(
      process.execPath,
      ["--import", preload, cliBin, "redis", "exec", "INCR", "visits"],
      { cwd, env: { ...process.env, HOME: cwd, UPSTASH_REDIS_REST_URL: restUrl, UPSTASH_REDIS_REST_TOKEN: reset.rest_token } },
      (err, stdout, stderr) => resolve({ err, stdout, stderr }),
    ),
  );
  assert.equal(viaEnv.err, null, viaEnv.stderr);
  assert.deepEqual(JSON.parse(viaEnv.stdout), { result: 1 });

  const del = await ok("redis", "delete", "--db-id", db.database_id);
  assert.deepEqual(del, { deleted: true, database_id: db.database_id });
  const gone = await upstash("redis", "get", "--db-id", db.database_id);
  assert.notEqual(gone.code, 0);
  assert.match(gone.stderr, /database not found/);
  const after = await ok("redis", "list");
  assert.ok(!after.some((d) => d.database_id === db.database_id));
});

test("official CLI: wrong API key is refused", async () => {
  const r = await upstash("redis", "list", "--email", process.env.UPSTASH_EMAIL, "--api-key", "wrong");
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /Unauthorized/);
});

test("@upstash/redis: SET/GET/INCR, pipeline and read-only token over TLS", async () => {
  const db = await ok("redis", "create", "--name", `sdk-${Date.now()}`, "--region", "eu-central-1");
  const url = `https://${db.endpoint}`;
  const redis = new Redis({ url, token: db.rest_token, enableTelemetry: false });
  assert.equal(await redis.set("user:1", { name: "alice", visits: 1 }), "OK");
  assert.deepEqual(await redis.get("user:1"), { name: "alice", visits: 1 });
  assert.equal(await redis.set("plain", "héllo wörld", { ex: 60 }), "OK");
  assert.equal(await redis.get("plain"), "héllo wörld");
  assert.equal(await redis.incr("counter"), 1);
  assert.equal(await redis.incrby("counter", 41), 42);
  assert.equal(await redis.get("counter"), 42);
  assert.equal(await redis.get("missing"), null);
  assert.equal(await redis.ttl("plain"), 60);
  assert.equal(await redis.ping(), "PONG");
  assert.deepEqual(await redis.mget("counter", "missing"), [42, null]);
  const p = redis.pipeline();
  p.set("p1", "a");
  p.incr("p2");
  p.get("p1");
  assert.deepEqual(await p.exec(), ["OK", 1, "a"]);
  const tx = redis.multi();
  tx.incr("p2");
  tx.get("p2");
  assert.deepEqual(await tx.exec(), [2, 2]);
  // Auto-pipelined concurrent commands.
  const many = await Promise.all([redis.get("p1"), redis.incr("p2"), redis.exists("p1", "nope")]);
  assert.deepEqual(many, ["a", 3, 1]);
  const [cursor, keys] = await redis.scan(0, { match: "p*", count: 100 });
  assert.equal(String(cursor), "0");
  assert.deepEqual([...keys].sort(), ["p1", "p2", "plain"]);
  assert.ok((await redis.dbsize()) >= 5);

  const ro = new Redis({ url, token: db.read_only_rest_token, enableTelemetry: false, enableAutoPipelining: false });
  assert.equal(await ro.get("p1"), "a");
  await assert.rejects(() => ro.set("p1", "b"), /NOPERM/);

  const bad = new Redis({ url, token: "AXwrong", enableTelemetry: false, retry: false, enableAutoPipelining: false });
  await assert.rejects(() => bad.get("p1"), /Unauthorized/);

  await ok("redis", "delete", "--db-id", db.database_id);
});

test("ioredis: REDIS_URL (rediss://default:<password>@<endpoint host>:<port>) over TLS", async () => {
  const db = await ok("redis", "create", "--name", `tcp-${Date.now()}`, "--region", "us-east-1");
  const host = db.endpoint.replace(/:\d+$/, "");
  const redisUrl = `rediss://default:${db.password}@${host}:${db.port}`;
  // NODE_EXTRA_CA_CERTS makes Node trust the emulator's CA, as it would a real certificate.
  const client = new IORedis(redisUrl, { maxRetriesPerRequest: 0, retryStrategy: () => null, lazyConnect: true });
  await client.connect();
  try {
    assert.equal(await client.ping(), "PONG");
    assert.equal(await client.set("app:greeting", "hello", "EX", 60), "OK");
    assert.equal(await client.get("app:greeting"), "hello");
    assert.equal(await client.incrby("app:visits", 5), 5);
    assert.deepEqual(await client.multi().incr("app:visits").get("app:visits").exec(), [
      [null, 6],
      [null, "6"],
    ]);
    assert.equal(await client.ttl("app:greeting"), 60);
    // What ioredis wrote, @upstash/redis reads over REST.
    const rest = new Redis({ url: `https://${db.endpoint}`, token: db.rest_token, enableTelemetry: false });
    assert.equal(await rest.get("app:greeting"), "hello");
  } finally {
    client.disconnect();
  }

  // A wrong password is refused, and after reset-password the old one is too.
  const connectWith = async (password) => {
    const c = new IORedis(`rediss://default:${password}@${host}:${db.port}`, {
      maxRetriesPerRequest: 0,
      retryStrategy: () => null,
      lazyConnect: true,
    });
    // ioredis reports an AUTH refusal as an "error" event and then the closed connection.
    const errors = [];
    c.on("error", (e) => errors.push(e.message));
    try {
      await c.connect();
      return await c.ping();
    } catch (e) {
      throw new Error([...errors, e.message].join("; "));
    } finally {
      c.disconnect();
    }
  };
  await assert.rejects(() => connectWith("wrong"), /WRONGPASS/);
  const reset = await ok("redis", "reset-password", "--db-id", db.database_id);
  await assert.rejects(() => connectWith(db.password), /WRONGPASS/);
  assert.equal(await connectWith(reset.password), "PONG");

  await ok("redis", "delete", "--db-id", db.database_id);
});

/** The emulator's control API (the database's read-only password is only shown there). */
async function control(path) {
  const r = await fetch(`${process.env.UPSTASH_EMULATOR_API_URL}/_emulator${path}`);
  assert.equal(r.status, 200, `GET /_emulator${path}`);
  return r.json();
}

test("@upstash/redis: hashes, lists, sets, sorted sets, scripts, transactions, pipelines", async () => {
  const db = await ok("redis", "create", "--name", `types-${Date.now()}`, "--region", "us-east-1");
  const redis = new Redis({ url: `https://${db.endpoint}`, token: db.rest_token, enableTelemetry: false });
  try {
    // Hashes.
    assert.equal(await redis.hset("user:1", { name: "ada", visits: 1 }), 2);
    assert.equal(await redis.hincrby("user:1", "visits", 4), 5);
    assert.deepEqual(await redis.hgetall("user:1"), { name: "ada", visits: 5 });
    assert.deepEqual(await redis.hkeys("user:1"), ["name", "visits"]);
    // Lists.
    assert.equal(await redis.rpush("jobs", "a", "b", "c"), 3);
    assert.equal(await redis.lpop("jobs"), "a");
    assert.deepEqual(await redis.lrange("jobs", 0, -1), ["b", "c"]);
    assert.equal(await redis.llen("jobs"), 2);
    // Sets.
    assert.equal(await redis.sadd("tags", "red", "green", "red"), 2);
    assert.equal(await redis.sismember("tags", "green"), 1);
    assert.deepEqual((await redis.smembers("tags")).sort(), ["green", "red"]);
    // Sorted sets.
    await redis.zadd("board", { score: 10, member: "ada" }, { score: 30, member: "bob" }, { score: 20, member: "cy" });
    assert.deepEqual(await redis.zrange("board", 0, -1), ["ada", "cy", "bob"]);
    assert.deepEqual(await redis.zrange("board", 0, 0, { rev: true, withScores: true }), ["bob", 30]);
    assert.equal(await redis.zincrby("board", 15, "ada"), 25);
    assert.equal(await redis.zrank("board", "ada"), 1);
    // Scripts: EVAL, SCRIPT LOAD + EVALSHA, and the client's own script helper (EVALSHA, NOSCRIPT, EVAL).
    assert.equal(await redis.eval("return redis.call('HGET', KEYS[1], ARGV[1])", ["user:1"], ["name"]), "ada");
    const sha = await redis.scriptLoad("return redis.call('ZSCORE', KEYS[1], ARGV[1])");
    assert.equal(await redis.evalsha(sha, ["board"], ["cy"]), 20);
    const script = redis.createScript("return redis.call('INCRBY', KEYS[1], ARGV[1])");
    assert.equal(await script.exec(["hits"], ["3"]), 3);
    assert.equal(await script.exec(["hits"], ["3"]), 6);
    // A transaction (MULTI/EXEC on the engine) and a pipeline.
    const tx = redis.multi();
    tx.hset("order:7", { status: "paid" });
    tx.lpush("events", "order:7 paid");
    tx.zadd("board", { score: 1, member: "dee" });
    tx.hget("order:7", "status");
    assert.deepEqual(await tx.exec(), [1, 1, 1, "paid"]);
    const p = redis.pipeline();
    p.sadd("seen", "x");
    p.scard("seen");
    p.zcard("board");
    p.lrange("events", 0, -1);
    assert.deepEqual(await p.exec(), [1, 1, 4, ["order:7 paid"]]);
    // Errors are Redis's.
    await assert.rejects(() => redis.lpush("user:1", "x"), /WRONGTYPE/);
    assert.equal(await redis.type("board"), "zset");
  } finally {
    await ok("redis", "delete", "--db-id", db.database_id);
  }
});

test("@upstash/ratelimit: sliding window and token bucket allow, then refuse", async () => {
  const db = await ok("redis", "create", "--name", `ratelimit-${Date.now()}`, "--region", "us-east-1");
  const redis = new Redis({ url: `https://${db.endpoint}`, token: db.rest_token, enableTelemetry: false });
  try {
    const sliding = new Ratelimit({
      redis,
      limiter: Ratelimit.slidingWindow(3, "30 s"),
      prefix: "rl:sliding",
      ephemeralCache: false,
      analytics: false,
    });
    const window = [];
    for (let i = 0; i < 5; i++) window.push((await sliding.limit("user-1")).success);
    assert.deepEqual(window, [true, true, true, false, false]);
    // Another identifier has its own window.
    assert.equal((await sliding.limit("user-2")).success, true);
    const refused = await sliding.limit("user-1");
    assert.equal(refused.success, false);
    assert.equal(refused.remaining, 0);
    assert.equal(refused.limit, 3);

    const bucket = new Ratelimit({
      redis,
      limiter: Ratelimit.tokenBucket(1, "60 s", 2),
      prefix: "rl:bucket",
      ephemeralCache: false,
      analytics: false,
    });
    const tokens = [];
    for (let i = 0; i < 4; i++) tokens.push((await bucket.limit("api-key-1")).success);
    assert.deepEqual(tokens, [true, true, false, false]);
    // The limiter's state lives in the database, where its Lua scripts put it.
    const keys = await redis.keys("rl:*");
    assert.ok(keys.some((k) => k.startsWith("rl:sliding")), keys.join(","));
    assert.ok(keys.some((k) => k.startsWith("rl:bucket")), keys.join(","));
  } finally {
    await ok("redis", "delete", "--db-id", db.database_id);
  }
});

test("ioredis and @upstash/redis on the same data; default_ro reads and is refused writes", async () => {
  const db = await ok("redis", "create", "--name", `ro-${Date.now()}`, "--region", "us-east-1");
  const host = db.endpoint.replace(/:\d+$/, "");
  const rest = new Redis({ url: `https://${db.endpoint}`, token: db.rest_token, enableTelemetry: false });
  const client = new IORedis(`rediss://default:${db.password}@${host}:${db.port}`, {
    maxRetriesPerRequest: 0,
    retryStrategy: () => null,
    lazyConnect: true,
  });
  const { read_only_password } = await control(`/databases/${db.database_id}`);
  const ro = new IORedis(`rediss://default_ro:${read_only_password}@${host}:${db.port}`, {
    maxRetriesPerRequest: 0,
    retryStrategy: () => null,
    lazyConnect: true,
  });
  try {
    await client.connect();
    await ro.connect();
    // Written over REST, read over the Redis protocol, and the other way round.
    await rest.hset("cart:9", { apples: 3 });
    assert.equal(await client.hincrby("cart:9", "apples", 2), 5);
    await client.zadd("scores", 5, "ada", 7, "bob");
    assert.deepEqual(await rest.zrange("scores", 0, -1), ["ada", "bob"]);
    await client.rpush("log", "one", "two");
    assert.deepEqual(await rest.lrange("log", 0, -1), ["one", "two"]);
    assert.deepEqual(await client.multi().sadd("s", "a").scard("s").exec(), [
      [null, 1],
      [null, 1],
    ]);
    assert.equal(await rest.scard("s"), 1);
    // default_ro sees the same data and is refused writes with Redis's NOPERM.
    assert.equal(await ro.hget("cart:9", "apples"), "5");
    assert.deepEqual(await ro.zrange("scores", 0, -1), ["ada", "bob"]);
    await assert.rejects(() => ro.set("k", "v"), /NOPERM/);
    await assert.rejects(() => ro.hset("cart:9", "pears", 1), /NOPERM/);
    await assert.rejects(() => ro.keys("*"), /NOPERM/);
    assert.equal(await rest.exists("k"), 0);
    assert.equal(await rest.hget("cart:9", "pears"), null);
  } finally {
    client.disconnect();
    ro.disconnect();
    await ok("redis", "delete", "--db-id", db.database_id);
  }
});
