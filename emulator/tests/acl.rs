//! Redis ACL users (paid plans), enforced by the database's real Redis engine over both
//! transports: `ACL SETUSER`/`DELUSER`/`LIST`/`GETUSER`/`WHOAMI` over REST and RESP, `ACL
//! RESTTOKEN` minting a REST token that acts as the user, real clients (`redis` crate,
//! `@upstash/redis`, `ioredis`) refused with `NOPERM` outside their keys, the Database object's
//! `db_acl_enabled`/`db_acl_default_user_status`, `default` turned off, the emulator's own users
//! out of sight, users kept across an engine restart and dropped by a restore, and the free plan
//! refused.

mod common;

use std::path::PathBuf;
use std::process::Stdio;

use common::*;
use redis::AsyncCommands as _;
use reqwest::StatusCode;
use serde_json::{Value, json};

fn resp_host_port(db: &Value) -> (String, u16) {
    let endpoint = db["endpoint"].as_str().unwrap();
    let host = endpoint.rsplit_once(':').map_or(endpoint, |(h, _)| h);
    let port = u16::try_from(db["port"].as_u64().unwrap()).unwrap();
    (host.to_string(), port)
}

fn resp_url(db: &Value, user: &str, password: &str) -> String {
    let (host, port) = resp_host_port(db);
    format!("rediss://{user}:{password}@{host}:{port}")
}

async fn connect_as(
    env: &Env,
    db: &Value,
    user: &str,
    password: &str,
) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
    redis::Client::build_with_tls(
        resp_url(db, user, password),
        redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(env.emu.ca_pem().as_bytes().to_vec()),
        },
    )
    .unwrap()
    .get_multiplexed_async_connection()
    .await
}

/// One command over REST with a given token.
async fn rest(env: &Env, db: &Value, token: &str, cmd: Value) -> (StatusCode, Value) {
    let r = env
        .http
        .post(Env::rest_url(db))
        .bearer_auth(token)
        .json(&cmd)
        .send()
        .await
        .unwrap();
    body_json(r).await
}

fn token(db: &Value) -> String {
    db["rest_token"].as_str().unwrap().to_string()
}

async fn database(env: &Env, db: &Value) -> Value {
    let id = db["database_id"].as_str().unwrap();
    let (st, v) = env.get(&format!("/v2/redis/database/{id}")).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    v
}

/// Creates users `alice` (keys `a:*`, no `@admin`/`@dangerous`) and `reader` (`a:*`, read-only)
/// over REST with the database's token.
async fn create_users(env: &Env, db: &Value) {
    let t = token(db);
    for cmd in [
        json!([
            "ACL",
            "SETUSER",
            "alice",
            "on",
            ">alice-pw",
            "~a:*",
            "resetchannels",
            "+@all",
            "-@admin",
            "-@dangerous"
        ]),
        json!([
            "ACL",
            "SETUSER",
            "reader",
            "on",
            ">reader-pw",
            "~a:*",
            "+@read",
            "+@connection"
        ]),
    ] {
        assert_eq!(
            rest(env, db, &t, cmd).await,
            (StatusCode::OK, json!({"result": "OK"}))
        );
    }
}

/// An emulator whose engines stop after 300 ms unused (their key space saved).
async fn start_idle() -> Env {
    let mut cfg = config();
    cfg.engines.idle_timeout = std::time::Duration::from_millis(300);
    start_with(cfg).await
}

/// Waits until every engine stopped for being idle.
async fn wait_engines_stopped(env: &Env) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while env.emu.shared().engines.running() > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "idle engines did not stop"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn acl_users_are_enforced_by_the_engine_over_rest_and_resp() {
    let env = start_idle().await;
    let db = env.create("acl").await;
    let t = token(&db);
    let before = database(&env, &db).await;
    assert_eq!(before["db_acl_enabled"], "false");
    assert_eq!(before["db_acl_default_user_status"], "true");

    create_users(&env, &db).await;
    let after = database(&env, &db).await;
    assert_eq!(after["db_acl_enabled"], "true");
    assert_eq!(after["db_acl_default_user_status"], "true");

    // The emulator's own users are out of sight and out of reach.
    let (_, list) = rest(&env, &db, &t, json!(["ACL", "LIST"])).await;
    let names: Vec<String> = list["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            l.as_str()
                .unwrap()
                .split_whitespace()
                .nth(1)
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(names, ["alice", "default", "reader"], "{list}");
    let (_, users) = rest(&env, &db, &t, json!(["ACL", "USERS"])).await;
    assert_eq!(users, json!({"result": ["alice", "default", "reader"]}));
    for hidden in ["upstash-emulator", "default_ro"] {
        assert_eq!(
            rest(&env, &db, &t, json!(["ACL", "GETUSER", hidden])).await,
            (StatusCode::OK, json!({"result": null}))
        );
        let (st, v) = rest(&env, &db, &t, json!(["ACL", "SETUSER", hidden, "off"])).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
        let (st, v) = rest(&env, &db, &t, json!(["ACL", "DELUSER", hidden])).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
    }
    let (st, v) = rest(&env, &db, &t, json!(["ACL", "SETUSER", "default", ">mine"])).await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
    let (_, who) = rest(&env, &db, &t, json!(["ACL", "WHOAMI"])).await;
    assert_eq!(who, json!({"result": "default"}));
    let (_, alice) = rest(&env, &db, &t, json!(["ACL", "GETUSER", "alice"])).await;
    assert!(alice.to_string().contains("~a:*"), "{alice}");

    // RESP: alice logs in as herself; Redis answers NOPERM outside her keys and for FLUSHALL.
    let mut a = connect_as(&env, &db, "alice", "alice-pw").await.unwrap();
    let () = a.set("a:1", "one").await.unwrap();
    let v: String = a.get("a:1").await.unwrap();
    assert_eq!(v, "one");
    let who: String = redis::cmd("ACL")
        .arg("WHOAMI")
        .query_async(&mut a)
        .await
        .unwrap();
    assert_eq!(who, "alice");
    let err = a.set::<_, _, ()>("b:1", "x").await.unwrap_err();
    assert_eq!(err.code(), Some("NOPERM"), "{err}");
    let err = redis::cmd("FLUSHALL")
        .query_async::<()>(&mut a)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("NOPERM"), "{err}");
    let err = connect_as(&env, &db, "alice", "wrong").await.unwrap_err();
    assert_eq!(err.kind(), redis::ErrorKind::AuthenticationFailed, "{err}");
    let err = connect_as(&env, &db, "upstash-emulator", "x")
        .await
        .unwrap_err();
    assert_eq!(err.kind(), redis::ErrorKind::AuthenticationFailed, "{err}");

    // ACL RESTTOKEN: a token acting as alice over REST.
    let (st, v) = rest(
        &env,
        &db,
        &t,
        json!(["ACL", "RESTTOKEN", "alice", "alice-pw"]),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let at = v["result"].as_str().unwrap().to_string();
    assert_ne!(at, t);
    let (st, v) = rest(&env, &db, &t, json!(["ACL", "RESTTOKEN", "alice", "nope"])).await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
    assert!(v["error"].as_str().unwrap().starts_with("WRONGPASS"), "{v}");
    assert_eq!(
        rest(&env, &db, &at, json!(["GET", "a:1"])).await,
        (StatusCode::OK, json!({"result": "one"}))
    );
    let (st, v) = rest(&env, &db, &at, json!(["SET", "b:1", "x"])).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert!(v["error"].as_str().unwrap().starts_with("NOPERM"), "{v}");
    assert_eq!(
        rest(&env, &db, &at, json!(["ACL", "WHOAMI"])).await.1,
        json!({"result": "alice"})
    );

    // The read-only user reads and cannot write.
    let mut r = connect_as(&env, &db, "reader", "reader-pw").await.unwrap();
    let v: String = r.get("a:1").await.unwrap();
    assert_eq!(v, "one");
    let err = r.set::<_, _, ()>("a:2", "x").await.unwrap_err();
    assert_eq!(err.code(), Some("NOPERM"), "{err}");

    // Users survive the engine's stop and start (engines stop when idle).
    drop((a, r));
    wait_engines_stopped(&env).await;
    assert_eq!(
        rest(&env, &db, &at, json!(["GET", "a:1"])).await,
        (StatusCode::OK, json!({"result": "one"}))
    );
    let mut a = connect_as(&env, &db, "alice", "alice-pw").await.unwrap();
    let err = a.get::<_, String>("b:1").await.unwrap_err();
    assert_eq!(err.code(), Some("NOPERM"), "{err}");
    // The database password still works after the replay.
    assert_eq!(
        rest(&env, &db, &t, json!(["GET", "a:1"])).await,
        (StatusCode::OK, json!({"result": "one"}))
    );

    // Deleting a user ends its token and its logins.
    assert_eq!(
        rest(&env, &db, &t, json!(["ACL", "DELUSER", "alice"])).await,
        (StatusCode::OK, json!({"result": 1}))
    );
    let (st, _) = rest(&env, &db, &at, json!(["GET", "a:1"])).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    let err = connect_as(&env, &db, "alice", "alice-pw")
        .await
        .unwrap_err();
    assert_eq!(err.kind(), redis::ErrorKind::AuthenticationFailed, "{err}");

    // A user set and its token minted in one pipeline (as the operator does).
    let r = env
        .http
        .post(format!("{}/pipeline", Env::rest_url(&db)))
        .bearer_auth(&t)
        .json(&json!([
            [
                "ACL",
                "SETUSER",
                "carol",
                "reset",
                ">carol-pw",
                "on",
                "~c:*",
                "+@all"
            ],
            ["ACL", "RESTTOKEN", "carol", "carol-pw"],
            ["ACL", "WHOAMI"]
        ]))
        .send()
        .await
        .unwrap();
    let (st, v) = body_json(r).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let ct = v[1]["result"]
        .as_str()
        .unwrap_or_else(|| panic!("{v}"))
        .to_string();
    assert_eq!(
        rest(&env, &db, &ct, json!(["ACL", "WHOAMI"])).await.1,
        json!({"result": "carol"})
    );

    // Not inside a transaction (nothing runs).
    let r = env
        .http
        .post(format!("{}/multi-exec", Env::rest_url(&db)))
        .bearer_auth(&t)
        .json(&json!([
            ["SET", "c:1", "x"],
            ["ACL", "RESTTOKEN", "carol", "carol-pw"]
        ]))
        .send()
        .await
        .unwrap();
    let (st, v) = body_json(r).await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(
        rest(&env, &db, &t, json!(["EXISTS", "c:1"])).await.1,
        json!({"result": 0})
    );

    // Nothing secret in the call log.
    let calls = serde_json::to_string(&env.calls("?plane=data").await).unwrap();
    for secret in ["alice-pw", "reader-pw", at.as_str()] {
        assert!(!calls.contains(secret), "{secret} in the call log");
    }
}

#[tokio::test]
async fn default_off_makes_the_database_password_fail() {
    let env = start_idle().await;
    let db = env.create("off").await;
    let t = token(&db);
    let password = db["password"].as_str().unwrap();
    create_users(&env, &db).await;
    let mut before = connect_as(&env, &db, "default", password).await.unwrap();
    let () = before.set("k", "v").await.unwrap();

    // Over RESP, as an operator keeping a user of its own would.
    let mut alice = connect_as(&env, &db, "alice", "alice-pw").await.unwrap();
    let err = redis::cmd("ACL")
        .arg(&["SETUSER", "default", "off"])
        .query_async::<()>(&mut alice)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("NOPERM"), "alice has no @admin: {err}");
    let () = redis::cmd("ACL")
        .arg(&["SETUSER", "admin", "on", ">admin-pw", "~*", "&*", "+@all"])
        .query_async(&mut before)
        .await
        .unwrap();
    let mut admin = connect_as(&env, &db, "admin", "admin-pw").await.unwrap();
    let () = redis::cmd("ACL")
        .arg(&["SETUSER", "default", "off"])
        .query_async(&mut admin)
        .await
        .unwrap();
    assert_eq!(
        database(&env, &db).await["db_acl_default_user_status"],
        "false"
    );

    let err = connect_as(&env, &db, "default", password)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), redis::ErrorKind::AuthenticationFailed, "{err}");
    let err = before.get::<_, String>("k").await.unwrap_err();
    assert_eq!(err.code(), Some("WRONGPASS"), "an open session ends: {err}");
    let (st, v) = rest(&env, &db, &t, json!(["GET", "k"])).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED, "{v}");
    // Still off after the engine restarts; the other users keep working.
    drop((before, alice, admin));
    wait_engines_stopped(&env).await;
    let (st, _) = rest(&env, &db, &t, json!(["GET", "k"])).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    let mut admin = connect_as(&env, &db, "admin", "admin-pw").await.unwrap();
    let v: String = admin.get("k").await.unwrap();
    assert_eq!(v, "v");
    let () = redis::cmd("ACL")
        .arg(&["SETUSER", "default", "on"])
        .query_async(&mut admin)
        .await
        .unwrap();
    assert_eq!(
        rest(&env, &db, &t, json!(["GET", "k"])).await,
        (StatusCode::OK, json!({"result": "v"}))
    );
}

#[tokio::test]
async fn a_restore_drops_acl_users() {
    let env = start().await;
    let db = env.create("restore").await;
    let id = db["database_id"].as_str().unwrap();
    let t = token(&db);
    create_users(&env, &db).await;
    let (_, v) = rest(
        &env,
        &db,
        &t,
        json!(["ACL", "RESTTOKEN", "alice", "alice-pw"]),
    )
    .await;
    let at = v["result"].as_str().unwrap().to_string();
    rest(&env, &db, &at, json!(["SET", "a:k", "kept"])).await;
    let (st, v) = env
        .post(
            &format!("/v2/redis/create-backup/{id}"),
            json!({"name": "b"}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let (_, list) = env.get(&format!("/v2/redis/list-backup/{id}")).await;
    let backup_id = list[0]["backup_id"].as_str().unwrap().to_string();
    let (st, v) = env
        .post(
            &format!("/v2/redis/restore-backup/{id}"),
            json!({"backup_id": backup_id}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");

    // The data is back, the users are not.
    assert_eq!(
        rest(&env, &db, &t, json!(["GET", "a:k"])).await,
        (StatusCode::OK, json!({"result": "kept"}))
    );
    assert_eq!(
        rest(&env, &db, &t, json!(["ACL", "USERS"])).await.1,
        json!({"result": ["default"]})
    );
    assert_eq!(database(&env, &db).await["db_acl_enabled"], "false");
    let (st, _) = rest(&env, &db, &at, json!(["GET", "a:k"])).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    let err = connect_as(&env, &db, "alice", "alice-pw")
        .await
        .unwrap_err();
    assert_eq!(err.kind(), redis::ErrorKind::AuthenticationFailed, "{err}");
}

#[tokio::test]
async fn the_free_plan_refuses_acl() {
    let env = start().await;
    let (st, db) = env
        .post(
            "/v2/redis/database",
            json!({"database_name": "free", "region": "global", "primary_region": "us-east-1", "plan": "free"}),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    let t = token(&db);
    for cmd in [
        json!(["ACL", "SETUSER", "alice", "on", ">pw", "~a:*", "+get"]),
        json!(["ACL", "LIST"]),
        json!(["ACL", "WHOAMI"]),
    ] {
        let (st, v) = rest(&env, &db, &t, cmd).await;
        assert_eq!(st, StatusCode::BAD_REQUEST);
        assert!(v["error"].as_str().unwrap().contains("free plan"), "{v}");
    }
    let mut con = connect_as(&env, &db, "default", db["password"].as_str().unwrap())
        .await
        .unwrap();
    let err = redis::cmd("ACL")
        .arg("USERS")
        .query_async::<Vec<String>>(&mut con)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("free plan"), "{err}");
    assert_eq!(database(&env, &db).await["db_acl_enabled"], "false");
}

fn clients_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("clients")
}

/// Runs `clients/acl.mjs` (`@upstash/redis` and `ioredis`) with the given variables.
async fn node_app(ca: &std::path::Path, vars: &[(&str, String)]) -> Value {
    if !clients_dir()
        .join("node_modules/ioredis/package.json")
        .exists()
    {
        let out = tokio::process::Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--prefix"])
            .arg(clients_dir())
            .stdin(Stdio::null())
            .output()
            .await
            .expect("npm runs");
        assert!(out.status.success(), "npm ci failed");
    }
    let mut cmd = tokio::process::Command::new("node");
    cmd.arg("acl.mjs")
        .current_dir(clients_dir())
        .env("NODE_EXTRA_CA_CERTS", ca)
        .env_remove("UPSTASH_REDIS_REST_URL")
        .env_remove("UPSTASH_REDIS_REST_TOKEN")
        .env_remove("REDIS_URL")
        .stdin(Stdio::null());
    for (k, v) in vars {
        cmd.env(k, v);
    }
    let out = cmd.output().await.expect("node runs (Node.js 20+)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "node acl.mjs failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|_| panic!("not JSON: {stdout}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstash_redis_and_ioredis_act_as_acl_users() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = tmp.path().join("ca.pem");
    let mut cfg = config();
    cfg.ca_out = Some(ca.clone());
    let env = start_with(cfg).await;
    let db = env.create("apps").await;
    let t = token(&db);
    create_users(&env, &db).await;
    rest(&env, &db, &t, json!(["SET", "a:seed", "s"])).await;
    let (_, v) = rest(
        &env,
        &db,
        &t,
        json!(["ACL", "RESTTOKEN", "alice", "alice-pw"]),
    )
    .await;
    let alice_token = v["result"].as_str().unwrap().to_string();
    let (_, v) = rest(
        &env,
        &db,
        &t,
        json!(["ACL", "RESTTOKEN", "reader", "reader-pw"]),
    )
    .await;
    let reader_token = v["result"].as_str().unwrap().to_string();

    let app = |token: String, user: &str, password: &str| {
        vec![
            ("UPSTASH_REDIS_REST_URL", Env::rest_url(&db)),
            ("UPSTASH_REDIS_REST_TOKEN", token),
            ("REDIS_URL", resp_url(&db, user, password)),
            ("ALLOWED_PREFIX", "a:".to_string()),
            ("DENIED_PREFIX", "b:".to_string()),
        ]
    };
    let a = node_app(&ca, &app(alice_token, "alice", "alice-pw")).await;
    for (transport, key) in [("rest", "rest"), ("resp", "resp")] {
        let r = &a[transport];
        assert_eq!(r["set"]["ok"], "OK", "{a}");
        assert_eq!(r["get"]["ok"], format!("v-{key}"), "{a}");
        for refused in ["deniedGet", "deniedSet", "flushall"] {
            let e = r[refused]["error"].as_str().unwrap_or_default();
            assert!(e.contains("NOPERM"), "{transport} {refused}: {a}");
        }
    }
    let r = node_app(&ca, &app(reader_token, "reader", "reader-pw")).await;
    for transport in ["rest", "resp"] {
        assert_eq!(r[transport]["read"]["ok"], "s", "{r}");
        let e = r[transport]["set"]["error"].as_str().unwrap_or_default();
        assert!(e.contains("NOPERM"), "{transport}: {r}");
    }
    // Nothing was written outside a:* and nothing flushed.
    let (_, keys) = rest(&env, &db, &t, json!(["KEYS", "*"])).await;
    let mut keys: Vec<String> = serde_json::from_value(keys["result"].clone()).unwrap();
    keys.sort();
    assert_eq!(keys, ["a:resp", "a:rest", "a:seed"]);
}
