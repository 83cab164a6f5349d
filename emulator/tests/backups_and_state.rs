//! Backups really snapshot and restore the key space (the engine's RDB file); the state file and
//! the engines' files survive restarts; the binary prints its ready line and binds port 0.

mod common;

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};

use common::*;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

#[tokio::test]
async fn backup_create_list_restore_delete() {
    let env = start().await;
    let db = env.create("bk").await;
    let id = db["database_id"].as_str().unwrap();
    env.data(&db, json!(["MSET", "a", "1", "b", "2"])).await;
    env.data(&db, json!(["HSET", "h", "f", "v"])).await;
    let (st, v) = env
        .post(
            &format!("/v2/redis/create-backup/{id}"),
            json!({"name": "before"}),
        )
        .await;
    assert_eq!((st, v), (StatusCode::OK, json!("OK")));
    let (st, list) = env.get(&format!("/v2/redis/list-backup/{id}")).await;
    assert_eq!(st, StatusCode::OK);
    let b = &list[0];
    assert_eq!(b["name"], "before");
    assert_eq!(b["database_id"], id);
    assert_eq!(b["customer_id"], EMAIL);
    assert_eq!(b["state"], "completed");
    // The size of the RDB snapshot.
    assert!(b["backup_size"].as_u64().unwrap() > 10, "{b}");
    assert_eq!(b["daily_backup"], "false");
    assert_eq!(b["hourly_backup"], "false");
    assert!(b["creation_time"].is_i64());
    assert!(b["internal_backup_tag"].is_string());
    let backup_id = b["backup_id"].as_str().unwrap().to_string();

    // Change the data, then restore: the key space is as it was at backup time.
    env.data(&db, json!(["SET", "a", "changed"])).await;
    env.data(&db, json!(["DEL", "b"])).await;
    env.data(&db, json!(["SET", "c", "new"])).await;
    env.data(&db, json!(["HSET", "h", "f", "w", "g", "x"]))
        .await;
    let (st, v) = env
        .post(
            &format!("/v2/redis/restore-backup/{id}"),
            json!({"backup_id": backup_id}),
        )
        .await;
    assert_eq!((st, v), (StatusCode::OK, json!("OK")));
    assert_eq!(
        env.data(&db, json!(["MGET", "a", "b", "c"])).await.1,
        json!({"result": ["1", "2", null]})
    );
    assert_eq!(
        env.data(&db, json!(["HGETALL", "h"])).await.1,
        json!({"result": ["f", "v"]})
    );

    let (st, v) = env
        .post(
            &format!("/v2/redis/restore-backup/{id}"),
            json!({"backup_id": "nope"}),
        )
        .await;
    assert_eq!((st, v), (StatusCode::NOT_FOUND, json!("backup not found")));
    let (st, _) = env
        .post(&format!("/v2/redis/restore-backup/{id}"), json!({}))
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    let (st, _) = env
        .post(&format!("/v2/redis/create-backup/{id}"), json!({}))
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);

    let (st, v) = env
        .call(
            Method::DELETE,
            &format!("/v2/redis/delete-backup/{id}/{backup_id}"),
            None,
        )
        .await;
    assert_eq!((st, v), (StatusCode::OK, json!("OK")));
    assert_eq!(
        env.get(&format!("/v2/redis/list-backup/{id}")).await.1,
        json!([])
    );
    let (st, v) = env
        .call(
            Method::DELETE,
            &format!("/v2/redis/delete-backup/{id}/{backup_id}"),
            None,
        )
        .await;
    assert_eq!((st, v), (StatusCode::NOT_FOUND, json!("backup not found")));
}

#[tokio::test]
async fn daily_backup_accepts_patch_and_post() {
    let env = start().await;
    let db = env.create("daily").await;
    let id = db["database_id"].as_str().unwrap();
    let get = || async { env.get(&format!("/v2/redis/database/{id}")).await.1 };
    assert_eq!(get().await["daily_backup_enabled"], false);
    assert_eq!(get().await["next_daily_backup_time"], 0);
    let (st, v) = env
        .call(
            Method::PATCH,
            &format!("/v2/redis/enable-dailybackup/{id}"),
            None,
        )
        .await;
    assert_eq!((st, v), (StatusCode::OK, json!("OK")));
    let now = get().await;
    assert_eq!(now["daily_backup_enabled"], true);
    assert!(
        now["next_daily_backup_time"].as_i64().unwrap() > now["creation_time"].as_i64().unwrap()
    );
    let (st, _) = env
        .call(
            Method::POST,
            &format!("/v2/redis/disable-dailybackup/{id}"),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(get().await["daily_backup_enabled"], false);
    let (st, _) = env
        .call(
            Method::POST,
            &format!("/v2/redis/enable-dailybackup/{id}"),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    let (st, _) = env
        .call(
            Method::PATCH,
            &format!("/v2/redis/disable-dailybackup/{id}"),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    let (st, _) = env
        .call(
            Method::GET,
            &format!("/v2/redis/enable-dailybackup/{id}"),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn state_file_keeps_databases_keys_backups_and_ca_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state/emulator.json");
    let mut cfg = config();
    cfg.state_file = Some(state.clone());
    let env = start_with(cfg.clone()).await;
    let db = env.create("durable").await;
    let id = db["database_id"].as_str().unwrap().to_string();
    env.data(&db, json!(["SET", "k", "v"])).await;
    env.data(&db, json!(["SET", "t", "x", "EX", 1000])).await;
    env.data(&db, json!(["ZADD", "z", 1, "one", 2, "two"]))
        .await;
    env.post(
        &format!("/v2/redis/create-backup/{id}"),
        json!({"name": "b1"}),
    )
    .await;
    let ca = env.emu.ca_pem().to_string();
    env.emu.shutdown().await;
    assert!(state.exists());

    let env = start_with(cfg).await;
    assert_eq!(env.emu.ca_pem(), ca, "clients trusting the CA keep working");
    let (st, got) = env.get(&format!("/v2/redis/database/{id}")).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(got["rest_token"], db["rest_token"]);
    assert_eq!(got["database_name"], "durable");
    // The data port changed (port 0), so the endpoint follows it; tokens still route.
    let (st, v) = env.data(&got, json!(["GET", "k"])).await;
    assert_eq!((st, v), (StatusCode::OK, json!({"result": "v"})));
    let ttl = env.data(&got, json!(["TTL", "t"])).await.1["result"]
        .as_i64()
        .unwrap();
    assert!(ttl > 900 && ttl <= 1000);
    assert_eq!(
        env.data(&got, json!(["ZRANGE", "z", 0, -1])).await.1,
        json!({"result": ["one", "two"]})
    );
    assert_eq!(
        env.get(&format!("/v2/redis/list-backup/{id}")).await.1[0]["name"],
        "b1"
    );
    // New databases get fresh list order after the loaded ones.
    let db2 = env.create("second").await;
    let (_, list) = env.get("/v2/redis/databases").await;
    assert_eq!(list[1]["database_id"], db2["database_id"]);
}

#[tokio::test]
async fn corrupt_state_file_is_an_error_not_a_silent_reset() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("s.json");
    std::fs::write(&state, "{garbage").unwrap();
    let mut cfg = config();
    cfg.state_file = Some(state.clone());
    let err = upstash_emulator::Emulator::start(cfg)
        .await
        .err()
        .expect("refuses to start");
    assert!(err.to_string().contains("state file"), "{err}");
    assert_eq!(
        std::fs::read_to_string(&state).unwrap(),
        "{garbage",
        "left untouched"
    );
}

#[tokio::test]
async fn binary_prints_ready_line_and_serves() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    let accounts = dir.path().join("accounts.txt");
    std::fs::write(&accounts, "# test accounts\nfile@example.com:file-key\n").unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_upstash-emulator"))
        .args([
            "--api-addr",
            "127.0.0.1:0",
            "--data-addr",
            "127.0.0.1:0",
            "--log-format",
            "json",
        ])
        .arg("--ca-out")
        .arg(&ca)
        .arg("--accounts-file")
        .arg(&accounts)
        .env("UPSTASH_EMULATOR_ACCOUNTS", "env@example.com:env-key")
        .env("RUST_LOG", "upstash_emulator=debug")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let ready: Value =
        serde_json::from_str(&line).unwrap_or_else(|_| panic!("ready line: {line:?}"));
    assert_eq!(ready["ready"], true);
    let api = ready["api_url"].as_str().unwrap().to_string();
    let port: u16 = api.rsplit(':').next().unwrap().parse().unwrap();
    assert_ne!(port, 0);
    assert!(
        ready["data_url"]
            .as_str()
            .unwrap()
            .starts_with("https://localhost:")
    );
    assert_eq!(ready["ca_file"], ca.to_str().unwrap());
    // The RESP listener binds a free port by default and is reported too.
    let resp_addr: std::net::SocketAddr = ready["resp_addr"].as_str().unwrap().parse().unwrap();
    assert_ne!(resp_addr.port(), 0);
    assert_eq!(
        ready["accounts"],
        json!(["env@example.com", "file@example.com"])
    );
    let pem = std::fs::read_to_string(&ca).unwrap();
    let http = client_for(&pem);
    let mut passwords = vec![];
    for (email, key) in [
        ("env@example.com", "env-key"),
        ("file@example.com", "file-key"),
    ] {
        let r = http
            .post(format!("{api}/v2/redis/database"))
            .basic_auth(email, Some(key))
            .json(
                &json!({"database_name": "bin", "region": "global", "primary_region": "us-east-1"}),
            )
            .send()
            .await
            .unwrap();
        let (st, db) = body_json(r).await;
        assert_eq!(st, StatusCode::OK);
        assert_eq!(db["port"], resp_addr.port());
        let r = http
            .post(format!("https://{}", db["endpoint"].as_str().unwrap()))
            .bearer_auth(db["rest_token"].as_str().unwrap())
            .json(&json!(["PING"]))
            .send()
            .await
            .unwrap();
        assert_eq!(body_json(r).await.1, json!({"result": "PONG"}));
        // The Redis protocol with the password (which must not reach the debug logs).
        let password = db["password"].as_str().unwrap();
        passwords.push(password.to_string());
        let client = redis::Client::build_with_tls(
            format!("rediss://default:{password}@localhost:{}", resp_addr.port()),
            redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(pem.as_bytes().to_vec()),
            },
        )
        .unwrap();
        let mut con = client.get_multiplexed_async_connection().await.unwrap();
        let pong: String = redis::cmd("PING").query_async(&mut con).await.unwrap();
        assert_eq!(pong, "PONG");
    }
    child.kill().unwrap();
    let out = child.wait_with_output().unwrap();
    let logs = String::from_utf8_lossy(&out.stderr);
    assert!(
        logs.contains("\"endpoint\":\"create\""),
        "JSON logs: {logs}"
    );
    assert!(
        logs.contains("\"method\":\"RESP\""),
        "RESP commands are logged: {logs}"
    );
    for secret in ["env-key", "file-key", "Basic "]
        .into_iter()
        .chain(passwords.iter().map(String::as_str))
    {
        assert!(!logs.contains(secret), "{secret} leaked into logs");
    }
}

#[tokio::test]
async fn free_databases_are_archived_with_a_backup_and_come_back() {
    let env = start().await;
    let (st, db) = env
        .post(
            "/v2/redis/database",
            json!({"database_name": "idle", "region": "global", "primary_region": "us-east-1", "plan": "free"}),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    let id = db["database_id"].as_str().unwrap();
    env.data(&db, json!(["HSET", "h", "f", "kept"])).await;
    let paid = env.create("paid").await;
    let (st, v) = env
        .control(
            Method::POST,
            &format!(
                "/databases/{}/archive",
                paid["database_id"].as_str().unwrap()
            ),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");

    let (st, view) = env
        .control(Method::POST, &format!("/databases/{id}/archive"), None)
        .await;
    assert_eq!(st, StatusCode::OK, "{view}");
    assert_eq!(view["archived"], true);
    let backups = view["backup_list"].as_array().unwrap();
    assert_eq!(backups.len(), 1);
    assert!(
        backups[0]["name"]
            .as_str()
            .unwrap()
            .starts_with("archived-")
    );
    // Gone from the Developer API and the data plane.
    let (st, v) = env.get(&format!("/v2/redis/database/{id}")).await;
    assert_eq!(
        (st, v),
        (StatusCode::NOT_FOUND, json!("database not found"))
    );
    let (_, list) = env.get("/v2/redis/databases").await;
    assert!(!list.to_string().contains(id));
    let (st, _) = env.data(&db, json!(["HGET", "h", "f"])).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    // Still listed by the control API (the console's view), and restorable from its backup.
    let (_, all) = env.control(Method::GET, "/databases", None).await;
    assert!(all.to_string().contains(id));
    let (st, back) = env
        .control(Method::POST, &format!("/databases/{id}/unarchive"), None)
        .await;
    assert_eq!(st, StatusCode::OK, "{back}");
    assert_eq!(back["archived"], false);
    assert_eq!(
        env.get(&format!("/v2/redis/database/{id}")).await.0,
        StatusCode::OK
    );
    assert_eq!(
        env.data(&db, json!(["HGET", "h", "f"])).await.1,
        json!({"result": "kept"})
    );
    let (_, backups) = env.get(&format!("/v2/redis/list-backup/{id}")).await;
    assert_eq!(
        backups.as_array().unwrap().len(),
        1,
        "the archival's backup stays"
    );
}
