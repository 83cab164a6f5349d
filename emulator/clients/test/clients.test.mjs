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
