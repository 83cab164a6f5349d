"""upstash-redis (Upstash's Python client), unchanged, against upstash-emulator.

Needs a database of a running emulator in the variables the client reads
(UPSTASH_REDIS_REST_URL, UPSTASH_REDIS_REST_TOKEN), its read-only token in
UPSTASH_REDIS_REST_READONLY_TOKEN, and SSL_CERT_FILE naming the emulator's CA file. The Rust
test emulator/tests/python_client.rs sets them and runs `python -m unittest` here.
"""

import os
import unittest

from upstash_redis import Redis
from upstash_redis.errors import UpstashError


class UpstashRedisAgainstTheEmulator(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.redis = Redis.from_env(allow_telemetry=False)
        cls.redis.flushdb()

    def test_strings_and_expiry(self):
        r = self.redis
        self.assertTrue(r.set("greeting", "héllo", ex=60))
        self.assertEqual(r.get("greeting"), "héllo")
        self.assertEqual(r.ttl("greeting"), 60)
        self.assertEqual(r.incrby("visits", 5), 5)
        self.assertIsNone(r.get("missing"))

    def test_hashes(self):
        r = self.redis
        self.assertEqual(r.hset("user:1", values={"name": "ada", "visits": 1}), 2)
        self.assertEqual(r.hincrby("user:1", "visits", 4), 5)
        self.assertEqual(r.hgetall("user:1"), {"name": "ada", "visits": "5"})
        self.assertEqual(r.hget("user:1", "name"), "ada")

    def test_lists(self):
        r = self.redis
        self.assertEqual(r.rpush("jobs", "a", "b", "c"), 3)
        self.assertEqual(r.lpop("jobs"), "a")
        self.assertEqual(r.lrange("jobs", 0, -1), ["b", "c"])
        self.assertEqual(r.llen("jobs"), 2)

    def test_sets(self):
        r = self.redis
        self.assertEqual(r.sadd("tags", "red", "green", "red"), 2)
        self.assertTrue(r.sismember("tags", "green"))
        self.assertEqual(sorted(r.smembers("tags")), ["green", "red"])

    def test_sorted_sets(self):
        r = self.redis
        self.assertEqual(r.zadd("board", {"ada": 10, "bob": 30, "cy": 20}), 3)
        self.assertEqual(r.zrange("board", 0, -1), ["ada", "cy", "bob"])
        self.assertEqual(r.zrange("board", 0, 0, rev=True, withscores=True), [("bob", 30.0)])
        self.assertEqual(r.zincrby("board", 15, "ada"), 25.0)
        self.assertEqual(r.zrank("board", "ada"), 1)

    def test_scripts(self):
        r = self.redis
        r.hset("conf", "mode", "fast")
        self.assertEqual(r.eval("return redis.call('HGET', KEYS[1], ARGV[1])", ["conf"], ["mode"]), "fast")
        sha = r.script_load("return redis.call('INCRBY', KEYS[1], ARGV[1])")
        self.assertEqual(r.evalsha(sha, ["counter"], ["3"]), 3)
        self.assertEqual(r.evalsha(sha, ["counter"], ["3"]), 6)
        self.assertEqual(r.script_exists(sha), [1])
        with self.assertRaises(UpstashError) as e:
            r.evalsha("0" * 40, [], [])
        self.assertIn("NOSCRIPT", str(e.exception))

    def test_transactions(self):
        r = self.redis
        tx = r.multi()
        tx.hset("order:7", "status", "paid")
        tx.lpush("events", "order:7 paid")
        tx.incr("orders")
        tx.hget("order:7", "status")
        self.assertEqual(tx.exec(), [1, 1, 1, "paid"])

    def test_pipelines(self):
        r = self.redis
        p = r.pipeline()
        p.set("p:a", "1")
        p.incr("p:a")
        p.sadd("p:s", "x")
        p.zadd("p:z", {"m": 1})
        p.get("p:a")
        self.assertEqual(p.exec(), [True, 2, 1, 1, "2"])

    def test_errors_are_redis(self):
        self.redis.set("plain", "v")
        with self.assertRaises(UpstashError) as e:
            self.redis.lpush("plain", "x")
        self.assertIn("WRONGTYPE", str(e.exception))

    def test_read_only_token_reads_and_refuses_writes(self):
        self.redis.set("shared", "value")
        ro = Redis(
            url=os.environ["UPSTASH_REDIS_REST_URL"],
            token=os.environ["UPSTASH_REDIS_REST_READONLY_TOKEN"],
            allow_telemetry=False,
        )
        self.assertEqual(ro.get("shared"), "value")
        with self.assertRaises(UpstashError) as e:
            ro.set("shared", "changed")
        self.assertIn("NOPERM", str(e.exception))
        self.assertEqual(self.redis.get("shared"), "value")


if __name__ == "__main__":
    unittest.main()
