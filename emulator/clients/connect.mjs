// Connects to a database the way applications do, with the variables of the operator's Secret:
// @upstash/redis reading UPSTASH_REDIS_REST_URL and UPSTASH_REDIS_REST_TOKEN, and ioredis
// reading REDIS_URL; both honour REDIS_KEY_PREFIX. Runs SET, GET and INCR over REST, reads the
// value back over the Redis protocol, and prints what came back.
import { Redis } from "@upstash/redis";
import IORedis from "ioredis";

const prefix = process.env.REDIS_KEY_PREFIX ?? "";
const redis = Redis.fromEnv();
const key = `${prefix}demo:greeting`;
await redis.set(key, "hello from @upstash/redis", { ex: 300 });
const value = await redis.get(key);
const visits = await redis.incr(`${prefix}demo:visits`);
const result = { url: process.env.UPSTASH_REDIS_REST_URL, set: key, get: value, incr: visits };
if (value !== "hello from @upstash/redis") {
  console.error("unexpected GET result over REST");
  process.exit(1);
}

if (process.env.REDIS_URL) {
  const tcp = new IORedis(process.env.REDIS_URL, { maxRetriesPerRequest: 1, retryStrategy: () => null, lazyConnect: true });
  try {
    await tcp.connect();
    result.redisProtocol = { get: await tcp.get(key), incr: await tcp.incr(`${prefix}demo:visits`) };
  } finally {
    tcp.disconnect();
  }
  if (result.redisProtocol.get !== value) {
    console.error("unexpected GET result over the Redis protocol");
    process.exit(1);
  }
}
console.log(JSON.stringify(result));
