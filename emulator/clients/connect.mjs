// Connects to a database the way an application does: @upstash/redis reading
// UPSTASH_REDIS_REST_URL and UPSTASH_REDIS_REST_TOKEN (for example from the operator's Secret),
// honouring REDIS_KEY_PREFIX. Runs SET, GET and INCR and prints what came back.
import { Redis } from "@upstash/redis";

const prefix = process.env.REDIS_KEY_PREFIX ?? "";
const redis = Redis.fromEnv();
const key = `${prefix}demo:greeting`;
await redis.set(key, "hello from @upstash/redis", { ex: 300 });
const value = await redis.get(key);
const visits = await redis.incr(`${prefix}demo:visits`);
console.log(JSON.stringify({ url: process.env.UPSTASH_REDIS_REST_URL, set: key, get: value, incr: visits }));
if (value !== "hello from @upstash/redis") {
  console.error("unexpected GET result");
  process.exit(1);
}
