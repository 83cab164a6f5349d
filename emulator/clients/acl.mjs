// Acts as one application holding an ACL user's credentials (the variables of its Secret):
// @upstash/redis over REST (UPSTASH_REDIS_REST_URL, UPSTASH_REDIS_REST_TOKEN) and ioredis over
// the Redis protocol (REDIS_URL). Writes and reads a key under ALLOWED_PREFIX, then tries a key
// under DENIED_PREFIX and FLUSHALL; prints, as JSON, what each transport answered (values, or
// the error texts) for the caller to judge.
import { Redis } from "@upstash/redis";
import IORedis from "ioredis";

const allowed = process.env.ALLOWED_PREFIX ?? "";
const denied = process.env.DENIED_PREFIX ?? "";
const tag = process.env.VALUE ?? "v";

async function attempt(f) {
  try {
    return { ok: await f() };
  } catch (e) {
    return { error: String(e?.message ?? e) };
  }
}

const out = {};
if (process.env.UPSTASH_REDIS_REST_TOKEN) {
  const rest = new Redis({
    url: process.env.UPSTASH_REDIS_REST_URL,
    token: process.env.UPSTASH_REDIS_REST_TOKEN,
    retry: false,
  });
  out.rest = {
    set: await attempt(() => rest.set(`${allowed}rest`, `${tag}-rest`)),
    get: await attempt(() => rest.get(`${allowed}rest`)),
    read: await attempt(() => rest.get(`${allowed}seed`)),
    deniedGet: await attempt(() => rest.get(`${denied}rest`)),
    deniedSet: await attempt(() => rest.set(`${denied}rest`, "x")),
    flushall: await attempt(() => rest.flushall()),
  };
}
if (process.env.REDIS_URL) {
  const tcp = new IORedis(process.env.REDIS_URL, {
    maxRetriesPerRequest: 0,
    retryStrategy: () => null,
    lazyConnect: true,
    enableOfflineQueue: false,
  });
  const connected = await attempt(() => tcp.connect());
  if (connected.error) {
    out.resp = { connect: connected };
  } else {
    out.resp = {
      set: await attempt(() => tcp.set(`${allowed}resp`, `${tag}-resp`)),
      get: await attempt(() => tcp.get(`${allowed}resp`)),
      read: await attempt(() => tcp.get(`${allowed}seed`)),
      deniedGet: await attempt(() => tcp.get(`${denied}resp`)),
      deniedSet: await attempt(() => tcp.set(`${denied}resp`, "x")),
      flushall: await attempt(() => tcp.flushall()),
    };
    tcp.disconnect();
  }
}
console.log(JSON.stringify(out));
