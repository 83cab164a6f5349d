//! The REST data API over TLS (reference §7) on the databases' Redis engines: request forms, auth,
//! encodings, read-only token, allow-list enforcement, every data type, scripts, transactions,
//! data limits (Redis's OOM error, eviction), and counters that reach INFO and the stats endpoint.

mod common;

use base64::Engine as _;
use common::*;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

#[tokio::test]
async fn tls_is_real_and_signed_by_the_written_ca() {
    let dir = tempfile::tempdir().unwrap();
    let ca_path = dir.path().join("ca/ca.pem");
    let mut cfg = config();
    cfg.ca_out = Some(ca_path.clone());
    let env = start_with(cfg).await;
    let pem = std::fs::read_to_string(&ca_path).unwrap();
    assert_eq!(pem, env.emu.ca_pem());
    let db = env.create("tls").await;
    // Trusting the written CA works at https:// + endpoint ...
    let (st, v) = env.data(&db, json!(["PING"])).await;
    assert_eq!((st, v), (StatusCode::OK, json!({"result": "PONG"})));
    // ... also by IP ...
    let r = env
        .http
        .post(format!("https://127.0.0.1:{}/", env.emu.data_addr().port()))
        .bearer_auth(db["rest_token"].as_str().unwrap())
        .json(&json!(["PING"]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // ... and a client that does not trust it is refused.
    let untrusting = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .build()
        .unwrap();
    let err = untrusting
        .post(Env::rest_url(&db))
        .json(&json!(["PING"]))
        .send()
        .await;
    assert!(
        err.is_err(),
        "a client without the CA must fail the handshake"
    );
    // Plain HTTP on the TLS port is not served.
    let plain = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{}/", env.emu.data_addr().port()))
        .send()
        .await;
    assert!(!plain.map(|r| r.status().is_success()).unwrap_or(false));
}

#[tokio::test]
async fn cache_client_commands() {
    let env = start().await;
    let db = env.create("cmds").await;
    let run = |cmd: Value| {
        let env = &env;
        let db = &db;
        async move { env.data(db, cmd).await }
    };
    assert_eq!(
        run(json!(["SET", "user:1", "alice"])).await.1,
        json!({"result": "OK"})
    );
    assert_eq!(
        run(json!(["GET", "user:1"])).await.1,
        json!({"result": "alice"})
    );
    assert_eq!(
        run(json!(["GET", "missing"])).await.1,
        json!({"result": null})
    );
    assert_eq!(
        run(json!(["SET", "user:1", "bob", "NX"])).await.1,
        json!({"result": null})
    );
    assert_eq!(
        run(json!(["SET", "user:2", "carol", "EX", 100])).await.1,
        json!({"result": "OK"})
    );
    assert_eq!(
        run(json!(["TTL", "user:2"])).await.1,
        json!({"result": 100})
    );
    assert_eq!(
        run(json!(["SET", "tmp", 1, "PX", 60000, "XX"])).await.1,
        json!({"result": null})
    );
    assert_eq!(
        run(json!(["EXISTS", "user:1", "user:2", "nope"])).await.1,
        json!({"result": 2})
    );
    assert_eq!(
        run(json!(["EXPIRE", "user:1", 50])).await.1,
        json!({"result": 1})
    );
    assert_eq!(
        run(json!(["INCR", "counter"])).await.1,
        json!({"result": 1})
    );
    assert_eq!(
        run(json!(["INCRBY", "counter", 9])).await.1,
        json!({"result": 10})
    );
    assert_eq!(
        run(json!(["MSET", "a", "1", "b", "2"])).await.1,
        json!({"result": "OK"})
    );
    assert_eq!(
        run(json!(["MGET", "a", "b", "c"])).await.1,
        json!({"result": ["1", "2", null]})
    );
    assert_eq!(run(json!(["DBSIZE"])).await.1, json!({"result": 5}));
    let (_, keys) = run(json!(["KEYS", "user:*"])).await;
    let mut keys: Vec<String> = serde_json::from_value(keys["result"].clone()).unwrap();
    keys.sort();
    assert_eq!(keys, ["user:1", "user:2"]);
    let (_, scan) = run(json!(["SCAN", "0", "MATCH", "*", "COUNT", 100])).await;
    assert_eq!(scan["result"][0], "0");
    assert_eq!(scan["result"][1].as_array().unwrap().len(), 5);
    assert_eq!(
        run(json!(["DEL", "a", "b", "zz"])).await.1,
        json!({"result": 2})
    );
    assert_eq!(run(json!(["PING"])).await.1, json!({"result": "PONG"}));
    // Errors: 400 with {"error"}.
    let (st, v) = run(json!(["INCR", "user:1"])).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_eq!(
        v,
        json!({"error": "ERR value is not an integer or out of range"})
    );
    let (st, v) = run(json!(["GET"])).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("wrong number of arguments")
    );
    let (st, v) = run(json!(["NOSUCHCMD", "x"])).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert!(v["error"].is_string());
    assert_eq!(run(json!(["FLUSHDB"])).await.1, json!({"result": "OK"}));
    assert_eq!(run(json!(["DBSIZE"])).await.1, json!({"result": 0}));
}

#[tokio::test]
async fn info_reports_stats_memory_keyspace() {
    let env = start().await;
    let db = env.create("info").await;
    env.data(&db, json!(["SET", "k", "vvvv"])).await;
    env.data(&db, json!(["GET", "k"])).await;
    env.data(&db, json!(["GET", "nope"])).await;
    let (_, v) = env.data(&db, json!(["INFO"])).await;
    let info = v["result"].as_str().unwrap();
    // The engine's own INFO: a real Redis server with the plan's limit as maxmemory.
    for needle in [
        "# Server",
        "redis_version:",
        "# Stats",
        "keyspace_hits:1",
        "keyspace_misses:1",
        "evicted_keys:0",
        "# Memory",
        "used_memory:",
        "maxmemory_policy:noeviction",
        "# Keyspace",
        "db0:keys=1,expires=0",
    ] {
        assert!(info.contains(needle), "INFO lacks {needle:?}:\n{info}");
    }
    let field = |text: &str, k: &str| -> u64 {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(&format!("{k}:")))
            .unwrap_or_else(|| panic!("no {k}"))
            .parse()
            .unwrap()
    };
    let (_, v) = env.data(&db, json!(["INFO", "memory"])).await;
    let mem = v["result"].as_str().unwrap();
    assert!(mem.contains("# Memory") && !mem.contains("# Stats"));
    // maxmemory = what the empty server used after its setup + the plan's max data size
    // (payg: 100 GiB).
    let above = field(mem, "maxmemory") - field(mem, "used_memory_startup");
    assert!(
        (107_374_182_400..107_374_182_400 + (1 << 20)).contains(&above),
        "{above}"
    );
}

#[tokio::test]
async fn path_style_query_token_and_body_argument() {
    let env = start().await;
    let db = env.create("path").await;
    let url = Env::rest_url(&db);
    let token = db["rest_token"].as_str().unwrap();
    let r = env
        .http
        .get(format!("{url}/set/foo/bar/EX/100?_token={token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(body_json(r).await.1, json!({"result": "OK"}));
    let r = env
        .http
        .get(format!("{url}/get/foo"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(body_json(r).await.1, json!({"result": "bar"}));
    // Body = last argument, trailing args as query params.
    let r = env
        .http
        .post(format!("{url}/set/doc?EX=100"))
        .bearer_auth(token)
        .body("{\"a\": [1, 2]} with / slashes")
        .send()
        .await
        .unwrap();
    assert_eq!(body_json(r).await.1, json!({"result": "OK"}));
    let (_, v) = env.data(&db, json!(["GET", "doc"])).await;
    assert_eq!(v, json!({"result": "{\"a\": [1, 2]} with / slashes"}));
    let (_, v) = env.data(&db, json!(["TTL", "doc"])).await;
    assert_eq!(v, json!({"result": 100}));
    // The token never reaches the call log.
    for c in env.calls("?plane=data").await {
        assert!(!c["path"].as_str().unwrap().contains(token), "{c}");
    }
}

#[tokio::test]
async fn auth_errors_and_methods() {
    let env = start().await;
    let db = env.create("auth").await;
    let url = Env::rest_url(&db);
    let r = env
        .http
        .post(&url)
        .json(&json!(["PING"]))
        .send()
        .await
        .unwrap();
    let (st, v) = body_json(r).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    assert!(v["error"].is_string());
    let r = env
        .http
        .post(&url)
        .bearer_auth("AXnotatoken")
        .json(&json!(["PING"]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = env
        .http
        .request(Method::DELETE, format!("{url}/del/x"))
        .bearer_auth(db["rest_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    let (st, v) = body_json(r).await;
    assert_eq!(st, StatusCode::METHOD_NOT_ALLOWED);
    assert!(v["error"].is_string());
    let r = env
        .http
        .post(&url)
        .bearer_auth(db["rest_token"].as_str().unwrap())
        .body("[not json")
        .send()
        .await
        .unwrap();
    let (st, v) = body_json(r).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert!(v["error"].is_string());
}

#[tokio::test]
async fn read_only_token_refuses_writes_scan_and_keys() {
    let env = start().await;
    let db = env.create("ro").await;
    env.data(&db, json!(["SET", "k", "v"])).await;
    let ro = |cmd: Value| {
        let env = &env;
        let db = &db;
        async move { env.data_with(db, "read_only_rest_token", "/", cmd).await }
    };
    assert_eq!(
        ro(json!(["GET", "k"])).await,
        (StatusCode::OK, json!({"result": "v"}))
    );
    assert_eq!(ro(json!(["DBSIZE"])).await.1, json!({"result": 1}));
    for cmd in [
        json!(["SET", "k", "w"]),
        json!(["DEL", "k"]),
        json!(["INCR", "n"]),
        json!(["FLUSHDB"]),
        json!(["KEYS", "*"]),
        json!(["SCAN", "0"]),
    ] {
        let (st, v) = ro(cmd.clone()).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{cmd}");
        let name = cmd[0].as_str().unwrap().to_ascii_lowercase();
        assert_eq!(
            v,
            json!({"error": format!("NOPERM this user has no permissions to run the '{name}' command")})
        );
    }
    assert_eq!(
        env.data(&db, json!(["GET", "k"])).await.1,
        json!({"result": "v"}),
        "nothing changed"
    );
    // In a pipeline the refusal is per command.
    let (st, v) = env
        .data_with(
            &db,
            "read_only_rest_token",
            "/pipeline",
            json!([["GET", "k"], ["SET", "k", "x"]]),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v[0], json!({"result": "v"}));
    assert!(v[1]["error"].as_str().unwrap().starts_with("NOPERM"));
}

#[tokio::test]
async fn pipeline_and_multi_exec() {
    let env = start().await;
    let db = env.create("pipe").await;
    let (st, v) = env
        .data_with(
            &db,
            "rest_token",
            "/pipeline",
            json!([
                ["SET", "a", 1],
                ["INCR", "a"],
                ["LPUSH", "a", "x"],
                ["GET", "a"]
            ]),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v[0], json!({"result": "OK"}));
    assert_eq!(v[1], json!({"result": 2}));
    assert!(
        v[2]["error"].as_str().unwrap().starts_with("WRONGTYPE"),
        "not atomic: one failure, others run: {v}"
    );
    assert_eq!(v[3], json!({"result": "2"}));
    let (st, v) = env
        .data_with(
            &db,
            "rest_token",
            "/multi-exec",
            json!([["INCR", "a"], ["SET", "b", "x"], ["INCR", "b"]]),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v[0], json!({"result": 3}));
    assert_eq!(v[1], json!({"result": "OK"}));
    assert!(v[2]["error"].is_string(), "runtime errors are per command");
    // An unsupported command discards the whole transaction.
    let (st, v) = env
        .data_with(
            &db,
            "rest_token",
            "/multi-exec",
            json!([["INCR", "a"], ["NOPE"]]),
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert!(v["error"].as_str().unwrap().starts_with("ERR"));
    assert_eq!(
        env.data(&db, json!(["GET", "a"])).await.1,
        json!({"result": "3"})
    );
}

#[tokio::test]
async fn base64_encoding_sync_token_and_resp2() {
    let env = start().await;
    let db = env.create("enc").await;
    let url = Env::rest_url(&db);
    let token = db["rest_token"].as_str().unwrap();
    let b64 = base64::engine::general_purpose::STANDARD;
    let send = |body: Value, path: &str, hdrs: Vec<(&'static str, &'static str)>| {
        let mut req = env
            .http
            .post(format!("{url}{path}"))
            .bearer_auth(token)
            .json(&body);
        for (k, v) in hdrs {
            req = req.header(k, v);
        }
        req.send()
    };
    let r = send(
        json!(["SET", "k", "héllo"]),
        "/",
        vec![("Upstash-Encoding", "base64")],
    )
    .await
    .unwrap();
    let sync1: u64 = r.headers()["upstash-sync-token"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        body_json(r).await.1,
        json!({"result": "OK"}),
        "OK stays plain"
    );
    let r = send(
        json!(["GET", "k"]),
        "/",
        vec![("Upstash-Encoding", "base64")],
    )
    .await
    .unwrap();
    let sync2: u64 = r.headers()["upstash-sync-token"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(sync1, sync2, "reads do not advance the sync token");
    let (_, v) = body_json(r).await;
    assert_eq!(v["result"], b64.encode("héllo".as_bytes()));
    let r = send(
        json!([["PING"], ["INCR", "n"], ["MGET", "k", "zz"]]),
        "/pipeline",
        vec![("Upstash-Encoding", "base64")],
    )
    .await
    .unwrap();
    let (_, v) = body_json(r).await;
    assert_eq!(v[0]["result"], b64.encode("PONG"));
    assert_eq!(v[1]["result"], 1);
    assert_eq!(
        v[2]["result"],
        json!([b64.encode("héllo".as_bytes()), null])
    );
    let r = send(
        json!(["GET", "k"]),
        "/",
        vec![("Upstash-Response-Format", "resp2")],
    )
    .await
    .unwrap();
    assert_eq!(r.headers()["content-type"], "application/octet-stream");
    assert_eq!(
        r.bytes().await.unwrap().as_ref(),
        "$6\r\nhéllo\r\n".as_bytes()
    );
    let r = send(
        json!(["GET", "k"]),
        "/",
        vec![
            ("Upstash-Response-Format", "resp2"),
            ("Upstash-Encoding", "base64"),
        ],
    )
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn allowlist_is_enforced_on_the_data_plane() {
    let env = start().await;
    let db = env.create("fw").await;
    let id = db["database_id"].as_str().unwrap();
    let path = format!("/v2/redis/update-allowlist/{id}");
    env.post(&path, json!({"allowed_ips": ["10.0.0.0/8"]}))
        .await;
    let (st, v) = env.data(&db, json!(["PING"])).await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    assert!(v["error"].as_str().unwrap().contains("127.0.0.1"), "{v}");
    env.post(
        &path,
        json!({"allowed_ips": ["10.0.0.0/8", "127.0.0.1/32"]}),
    )
    .await;
    assert_eq!(env.data(&db, json!(["PING"])).await.0, StatusCode::OK);
    env.post(&path, json!({"allowed_ips": []})).await;
    assert_eq!(
        env.data(&db, json!(["PING"])).await.0,
        StatusCode::OK,
        "empty list allows all"
    );
}

#[tokio::test]
async fn real_traffic_reaches_the_stats_endpoint() {
    let env = start().await;
    let db = env.create("traffic").await;
    let id = db["database_id"].as_str().unwrap();
    env.data(&db, json!(["SET", "k1", "12345"])).await;
    env.data(&db, json!(["SET", "k2", "x"])).await;
    for _ in 0..3 {
        env.data(&db, json!(["GET", "k1"])).await;
    }
    env.data(&db, json!(["MGET", "k2", "nope", "nope2"])).await;
    let (st, stats) = env.get(&format!("/v2/redis/stats/{id}")).await;
    assert_eq!(st, StatusCode::OK);
    let sum = |k: &str| {
        stats[k]
            .as_array()
            .unwrap_or_else(|| panic!("{k} is a series"))
            .iter()
            .map(|p| p["y"].as_f64().unwrap())
            .sum::<f64>()
    };
    assert_eq!(sum("hits"), 4.0);
    assert_eq!(sum("misses"), 2.0);
    // Bytes the engine uses above the empty server's memory.
    let storage = stats["current_storage"].as_u64().unwrap();
    assert!(storage > 0 && storage < 1 << 20, "{storage}");
    assert_eq!(stats["daily_net_commands"], 6);
    assert_eq!(stats["daily_write_requests"], 2);
    assert_eq!(stats["daily_read_requests"], 4);
    assert_eq!(stats["total_monthly_requests"], 6);
    let keyspace = stats["keyspace"].as_array().unwrap();
    assert_eq!(keyspace.last().unwrap()["y"], 2.0);
    let disk = stats["diskusage"].as_array().unwrap();
    assert_eq!(disk.last().unwrap()["y"], storage as f64);
    let billing = stats["total_monthly_billing"].as_f64().unwrap();
    assert!(
        billing > 0.0 && billing < 0.001,
        "6 commands at $0.20/100K: {billing}"
    );
    let counts = stats["command_counts"].as_array().unwrap();
    let get = counts
        .iter()
        .find(|c| c["metric_identifier"] == "GET")
        .unwrap();
    let gets: f64 = get["data_points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["y"].as_f64().unwrap())
        .sum();
    assert_eq!(gets, 3.0);
}

#[tokio::test]
async fn endpoint_domain_on_443_looks_like_upstash_and_is_in_the_certificate() {
    // A private loopback address so port 443 does not collide with anything else.
    let ip = std::net::Ipv4Addr::new(127, 44, 3, rand_octet());
    let addr = std::net::SocketAddr::from((ip, 443));
    let mut cfg = config();
    cfg.data_addr = addr;
    cfg.endpoint_domain = Some("upstash.test".into());
    let emu = match upstash_emulator::Emulator::start(cfg).await {
        Ok(e) => e,
        Err(e) if format!("{e:#}").contains("ermission denied") => {
            eprintln!("cannot bind port 443 here (not root); endpoint-domain test not run");
            return;
        }
        Err(e) => panic!("{e:#}"),
    };
    let http = client_for(emu.ca_pem());
    let r = http
        .post(format!("{}/v2/redis/database", emu.api_url()))
        .basic_auth(EMAIL, Some(KEY))
        .json(&json!({"database_name": "dns", "region": "global", "primary_region": "us-east-1"}))
        .send()
        .await
        .unwrap();
    let (_, db) = body_json(r).await;
    let endpoint = db["endpoint"].as_str().unwrap().to_string();
    let slug = endpoint
        .strip_suffix(".upstash.test")
        .expect("<slug>.upstash.test");
    let parts: Vec<&str> = slug.split('-').collect();
    assert_eq!(parts.len(), 3, "{slug}");
    assert!(
        parts[2].len() == 5 && parts[2].chars().all(|c| c.is_ascii_digit()),
        "{slug}"
    );
    // Resolve the advertised name to the listener: the wildcard SAN must verify.
    let resolving = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(emu.ca_pem().as_bytes()).unwrap())
        .resolve(&endpoint, addr)
        .build()
        .unwrap();
    let r = resolving
        .post(format!("https://{endpoint}"))
        .bearer_auth(db["rest_token"].as_str().unwrap())
        .json(&json!(["PING"]))
        .send()
        .await
        .unwrap();
    assert_eq!(body_json(r).await.1, json!({"result": "PONG"}));
    emu.shutdown().await;
}

fn rand_octet() -> u8 {
    (std::process::id() % 200) as u8 + 20
}

#[tokio::test]
async fn every_data_type_scripts_and_transactions_are_redis() {
    let env = start().await;
    let db = env.create("types").await;
    let run = |cmd: Value| {
        let env = &env;
        let db = &db;
        async move { env.data(db, cmd).await.1 }
    };
    assert_eq!(
        run(json!(["HSET", "h", "a", 1, "b", 2])).await,
        json!({"result": 2})
    );
    assert_eq!(
        run(json!(["HINCRBY", "h", "a", 10])).await,
        json!({"result": 11})
    );
    assert_eq!(
        run(json!(["HGETALL", "h"])).await,
        json!({"result": ["a", "11", "b", "2"]})
    );
    assert_eq!(
        run(json!(["RPUSH", "l", "x", "y", "z"])).await,
        json!({"result": 3})
    );
    assert_eq!(
        run(json!(["LRANGE", "l", 0, -1])).await,
        json!({"result": ["x", "y", "z"]})
    );
    assert_eq!(
        run(json!(["SADD", "s", "m1", "m2", "m1"])).await,
        json!({"result": 2})
    );
    assert_eq!(
        run(json!(["SISMEMBER", "s", "m2"])).await,
        json!({"result": 1})
    );
    assert_eq!(
        run(json!(["ZADD", "z", 3, "c", 1, "a", 2, "b"])).await,
        json!({"result": 3})
    );
    assert_eq!(
        run(json!(["ZRANGE", "z", 0, -1, "WITHSCORES"])).await,
        json!({"result": ["a", "1", "b", "2", "c", "3"]})
    );
    assert_eq!(
        run(json!(["XADD", "st", "1-1", "f", "v"])).await,
        json!({"result": "1-1"})
    );
    assert_eq!(
        run(json!(["PFADD", "hll", "a", "b"])).await,
        json!({"result": 1})
    );
    // Lua: EVAL, SCRIPT LOAD, EVALSHA; a missing script is Redis's NOSCRIPT.
    let script = "return redis.call('HINCRBY', KEYS[1], ARGV[1], ARGV[2])";
    assert_eq!(
        run(json!(["EVAL", script, 1, "h", "b", 5])).await,
        json!({"result": 7})
    );
    let sha = run(json!(["SCRIPT", "LOAD", script])).await["result"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        run(json!(["EVALSHA", sha, 1, "h", "b", 1])).await,
        json!({"result": 8})
    );
    let (st, v) = env
        .data(
            &db,
            json!(["EVALSHA", "0000000000000000000000000000000000000000", 0]),
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert!(v["error"].as_str().unwrap().starts_with("NOSCRIPT"), "{v}");
    // A transaction is atomic on the engine; a failing command inside is reported in place.
    let (st, v) = env
        .data_with(
            &db,
            "rest_token",
            "/multi-exec",
            json!([["HSET", "h", "c", 1], ["LPUSH", "h", "x"], ["HLEN", "h"]]),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v[0], json!({"result": 1}));
    assert!(
        v[1]["error"].as_str().unwrap().starts_with("WRONGTYPE"),
        "{v}"
    );
    assert_eq!(v[2], json!({"result": 3}));
    // Expiry is Redis's.
    run(json!(["SET", "short", "v", "PX", 50])).await;
    tokio::time::sleep(std::time::Duration::from_millis(120)).await;
    assert_eq!(run(json!(["GET", "short"])).await, json!({"result": null}));
    assert_eq!(run(json!(["TYPE", "z"])).await, json!({"result": "zset"}));
}

/// Writes 1 KiB values until the database answers an error (at most `limit`).
async fn fill(env: &Env, db: &Value, limit: usize) -> Option<String> {
    let value = "v".repeat(1024);
    for i in 0..limit {
        let (st, v) = env
            .data(db, json!(["SET", format!("key:{i}"), value]))
            .await;
        if st != StatusCode::OK {
            return Some(v["error"].as_str().unwrap_or_default().to_string());
        }
    }
    None
}

#[tokio::test]
async fn a_full_database_refuses_writes_with_redis_oom_error_or_evicts() {
    let env = start().await;
    let db = env.create("full").await;
    let id = db["database_id"].as_str().unwrap();
    // A 256 KiB data limit instead of the plan's 100 GiB, through the control API.
    let (st, view) = env
        .control(
            Method::PATCH,
            &format!("/databases/{id}"),
            Some(json!({"max_data_size_bytes": 256 * 1024})),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{view}");
    assert_eq!(view["db_disk_threshold"], 256 * 1024);
    // Eviction off: Redis's own OOM answer, and reads still work.
    let err = fill(&env, &db, 2000).await.expect("a write is refused");
    assert_eq!(
        err,
        "OOM command not allowed when used memory > 'maxmemory'."
    );
    let (st, keys) = env.data(&db, json!(["DBSIZE"])).await;
    assert_eq!(st, StatusCode::OK);
    let kept = keys["result"].as_u64().unwrap();
    assert!(kept > 50 && kept < 256, "{kept}");
    assert_eq!(
        env.data(&db, json!(["GET", "key:0"])).await.0,
        StatusCode::OK
    );
    // The stats report the database as full.
    let (_, stats) = env.get(&format!("/v2/redis/stats/{id}")).await;
    let storage = stats["current_storage"].as_u64().unwrap();
    assert!(storage > 200 * 1024, "{storage}");

    // Eviction on (the Developer API's switch): writes succeed and keys are evicted.
    let (st, _) = env
        .post(&format!("/v2/redis/enable-eviction/{id}"), json!({}))
        .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(fill(&env, &db, 2000).await, None, "no write is refused");
    let (_, keys) = env.data(&db, json!(["DBSIZE"])).await;
    assert!(keys["result"].as_u64().unwrap() < 2000);
    let (_, info) = env.data(&db, json!(["INFO", "stats"])).await;
    let evicted: u64 = info["result"]
        .as_str()
        .unwrap()
        .lines()
        .find_map(|l| l.trim().strip_prefix("evicted_keys:"))
        .unwrap()
        .parse()
        .unwrap();
    assert!(evicted > 0, "evicted_keys");
    let (_, info) = env.data(&db, json!(["INFO", "memory"])).await;
    assert!(
        info["result"]
            .as_str()
            .unwrap()
            .contains("maxmemory_policy:allkeys-random")
    );

    // Back to the plan's limit.
    let (_, view) = env
        .control(
            Method::PATCH,
            &format!("/databases/{id}"),
            Some(json!({"max_data_size_bytes": null})),
        )
        .await;
    assert_eq!(view["db_disk_threshold"], 107_374_182_400u64);
}

#[tokio::test]
async fn engines_start_on_first_use_and_databases_without_traffic_cost_none() {
    let env = start().await;
    let mut dbs = vec![];
    for i in 0..20 {
        dbs.push(env.create(&format!("quiet-{i}")).await);
    }
    env.get("/v2/redis/databases").await;
    assert_eq!(
        env.emu.shared().engines.running(),
        0,
        "create and list start no engine"
    );
    env.data(&dbs[3], json!(["SET", "k", "v"])).await;
    assert_eq!(env.emu.shared().engines.running(), 1);
    let id = dbs[3]["database_id"].as_str().unwrap();
    env.call(Method::DELETE, &format!("/v2/redis/database/{id}"), None)
        .await;
    assert_eq!(env.emu.shared().engines.running(), 0, "delete stops it");
    for db in &dbs[..3] {
        let id = db["database_id"].as_str().unwrap();
        env.call(Method::DELETE, &format!("/v2/redis/database/{id}"), None)
            .await;
    }
    assert_eq!(env.emu.shared().engines.running(), 0);
}

#[tokio::test]
async fn idle_engines_stop_and_their_data_survives() {
    let mut cfg = config();
    cfg.engines.idle_timeout = std::time::Duration::from_millis(300);
    cfg.engines.max_running = 2;
    let env = start_with(cfg).await;
    let a = env.create("a").await;
    let b = env.create("b").await;
    let c = env.create("c").await;
    env.data(&a, json!(["HSET", "h", "f", "a"])).await;
    env.data(&b, json!(["HSET", "h", "f", "b"])).await;
    // A third engine stops the least recently used one (a), saving its key space.
    env.data(&c, json!(["HSET", "h", "f", "c"])).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while env.emu.shared().engines.running() > 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "the limit is not kept"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(
        env.data(&a, json!(["HGET", "h", "f"])).await.1,
        json!({"result": "a"})
    );
    // Unused for the idle timeout: every engine stops; the data is still there afterwards.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while env.emu.shared().engines.running() > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "idle engines did not stop"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    for (db, v) in [(&a, "a"), (&b, "b"), (&c, "c")] {
        assert_eq!(
            env.data(db, json!(["HGET", "h", "f"])).await.1,
            json!({"result": v})
        );
    }
}
