//! The Redis protocol listener (RESP2 over TLS): a real client (the `redis` crate) connects with the
//! credentials the Developer API returns; RESP and REST share the data (on the database's Redis
//! engine), the stats, the password and the checks; the `default_ro` user reads and is refused
//! writes; connection commands and protocol errors answer like Redis.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use redis::AsyncCommands as _;
use reqwest::{Method, StatusCode};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// `(host, port)` from the create response: the host of `endpoint`, and `port`.
fn resp_host_port(db: &Value) -> (String, u16) {
    let endpoint = db["endpoint"].as_str().unwrap();
    let host = endpoint.rsplit_once(':').map_or(endpoint, |(h, _)| h);
    let port = u16::try_from(db["port"].as_u64().unwrap()).unwrap();
    (host.to_string(), port)
}

/// A client for `rediss://default:<password>@<host>:<port>` that trusts only the emulator's CA.
fn redis_client(env: &Env, db: &Value, password: &str) -> redis::Client {
    redis_client_as(env, db, "default", password)
}

fn redis_client_as(env: &Env, db: &Value, user: &str, password: &str) -> redis::Client {
    let (host, port) = resp_host_port(db);
    redis::Client::build_with_tls(
        format!("rediss://{user}:{password}@{host}:{port}"),
        redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(env.emu.ca_pem().as_bytes().to_vec()),
        },
    )
    .unwrap()
}

async fn connect(
    env: &Env,
    db: &Value,
    password: &str,
) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
    redis_client(env, db, password)
        .get_multiplexed_async_connection()
        .await
}

fn password(db: &Value) -> String {
    db["password"].as_str().unwrap().to_string()
}

/// Sends raw bytes over TLS to the RESP port and returns everything the server sent until it
/// closed the connection (end the input with `QUIT` or a protocol error).
async fn raw(env: &Env, db: &Value, input: &[u8]) -> String {
    let (host, port) = resp_host_port(db);
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(env.emu.ca_pem().as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
        .await
        .unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from(host).unwrap(), tcp)
        .await
        .unwrap();
    tls.write_all(input).await.unwrap();
    let mut out = vec![];
    // A hang detector, not a speed check: an 11 MB frame takes seconds in a debug build.
    tokio::time::timeout(Duration::from_secs(60), tls.read_to_end(&mut out))
        .await
        .expect("the server closes the connection")
        .unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

/// A RESP2 command frame.
fn cmd(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n{a}\r\n", a.len()).as_bytes());
    }
    out
}

fn cmds(list: &[&[&str]]) -> Vec<u8> {
    list.iter().flat_map(|c| cmd(c)).collect()
}

#[tokio::test]
async fn the_port_is_the_resp_listener_and_the_endpoint_stays_rest() {
    let env = start().await;
    let db = env.create("ports").await;
    assert_eq!(db["port"], env.emu.resp_addr().port());
    assert_ne!(env.emu.resp_addr().port(), env.emu.data_addr().port());
    assert_eq!(
        db["endpoint"],
        format!("localhost:{}", env.emu.data_addr().port())
    );
    let (st, v) = env.data(&db, json!(["PING"])).await;
    assert_eq!((st, v), (StatusCode::OK, json!({"result": "PONG"})));
}

#[tokio::test]
async fn a_real_redis_client_runs_commands_and_transactions() {
    let env = start().await;
    let db = env.create("resp").await;
    let id = db["database_id"].as_str().unwrap();
    let mut con = connect(&env, &db, &password(&db)).await.unwrap();

    let () = con.set("greeting", "hello").await.unwrap();
    let got: Option<String> = con.get("greeting").await.unwrap();
    assert_eq!(got.as_deref(), Some("hello"));
    let missing: Option<String> = con.get("missing").await.unwrap();
    assert_eq!(missing, None);
    let n: i64 = con.incr("counter", 1).await.unwrap();
    assert_eq!(n, 1);
    let n: i64 = con.incr("counter", 41).await.unwrap();
    assert_eq!(n, 42);
    let set: bool = con.expire("counter", 100).await.unwrap();
    assert!(set);
    let ttl: i64 = con.ttl("counter").await.unwrap();
    assert!((99..=100).contains(&ttl), "ttl {ttl}");
    let pong: String = redis::cmd("PING").query_async(&mut con).await.unwrap();
    assert_eq!(pong, "PONG");
    // Binary-safe values.
    let () = con.set("bin", b"a\r\nb\x00c".to_vec()).await.unwrap();
    let bin: Vec<u8> = con.get("bin").await.unwrap();
    assert_eq!(bin, b"a\r\nb\x00c");

    // MULTI/EXEC through the client's atomic pipeline.
    let (a, b, c): (i64, i64, Option<String>) = redis::pipe()
        .atomic()
        .incr("tx", 5)
        .incr("tx", 5)
        .get("greeting")
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!((a, b, c.as_deref()), (5, 10, Some("hello")));

    // A command Upstash does not offer answers like the REST API.
    let err = redis::cmd("CONFIG")
        .arg("GET")
        .arg("*")
        .query_async::<()>(&mut con)
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("Command is not available: 'CONFIG'"),
        "{err}"
    );
    // Every data type is the engine's.
    let n: i64 = con
        .hset_multiple("user:1", &[("name", "ada"), ("visits", "1")])
        .await
        .unwrap_or(2);
    assert!(n == 2 || n == 0, "{n}");
    let visits: i64 = con.hincr("user:1", "visits", 2).await.unwrap();
    assert_eq!(visits, 3);
    let _: i64 = con.rpush("queue", &["a", "b", "c"]).await.unwrap();
    let popped: Option<String> = con.lpop("queue", None).await.unwrap();
    assert_eq!(popped.as_deref(), Some("a"));
    let _: i64 = con.zadd("board", "ada", 10).await.unwrap();
    let _: i64 = con.zadd("board", "bob", 20).await.unwrap();
    let top: Vec<String> = con.zrevrange("board", 0, 0).await.unwrap();
    assert_eq!(top, vec!["bob"]);
    let sha: String = redis::cmd("SCRIPT")
        .arg("LOAD")
        .arg("return redis.call('ZSCORE', KEYS[1], ARGV[1])")
        .query_async(&mut con)
        .await
        .unwrap();
    let score: String = redis::cmd("EVALSHA")
        .arg(&sha)
        .arg(1)
        .arg("board")
        .arg("ada")
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(score, "10");

    // RESP writes are visible over REST with the REST token, and the other way round.
    assert_eq!(
        env.data(&db, json!(["GET", "greeting"])).await.1,
        json!({"result": "hello"})
    );
    assert_eq!(
        env.data(&db, json!(["GET", "tx"])).await.1,
        json!({"result": "10"})
    );
    env.data(&db, json!(["SET", "from-rest", "over https"]))
        .await;
    let v: String = con.get("from-rest").await.unwrap();
    assert_eq!(v, "over https");

    // The stats endpoint counts RESP commands like REST ones.
    let (st, stats) = env.get(&format!("/v2/redis/stats/{id}")).await;
    assert_eq!(st, StatusCode::OK);
    let count_of = |name: &str| -> f64 {
        stats["command_counts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["metric_identifier"] == name)
            .map_or(0.0, |c| {
                c["data_points"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|p| p["y"].as_f64().unwrap())
                    .sum()
            })
    };
    // The client sends INCR as INCRBY; two outside the transaction, two inside.
    assert_eq!(count_of("INCRBY"), 4.0);
    assert_eq!(count_of("SET"), 3.0);
    assert_eq!(count_of("GET"), 7.0);
    assert_eq!(count_of("EXPIRE"), 1.0);
    assert_eq!(count_of("TTL"), 1.0);
    assert_eq!(count_of("PING"), 1.0);
    assert_eq!(count_of("ZADD"), 2.0);
    assert_eq!(count_of("HINCRBY"), 1.0);
    let sum = |k: &str| -> f64 {
        stats[k]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["y"].as_f64().unwrap())
            .sum()
    };
    // Redis's own keyspace_hits / keyspace_misses.
    assert!(sum("misses") >= 1.0, "{}", stats["misses"]);
    assert!(sum("hits") >= 6.0, "{}", stats["hits"]);

    // The call log has the RESP commands (no arguments, so no values or passwords).
    let calls = env.calls(&format!("?plane=data&database_id={id}")).await;
    let resp: Vec<&Value> = calls.iter().filter(|c| c["method"] == "RESP").collect();
    let endpoints: Vec<&str> = resp
        .iter()
        .map(|c| c["endpoint"].as_str().unwrap())
        .collect();
    assert!(endpoints.contains(&"data:set"), "{endpoints:?}");
    assert!(endpoints.contains(&"data:incrby"), "{endpoints:?}");
    assert!(endpoints.contains(&"data:multi-exec"), "{endpoints:?}");
    let config = resp
        .iter()
        .find(|c| c["endpoint"] == "data:config")
        .unwrap();
    assert_eq!(config["status"], 400);
    let text = serde_json::to_string(&calls).unwrap();
    assert!(!text.contains(&password(&db)));
    assert!(!text.contains("auth"), "AUTH is not a data call: {text}");
}

#[tokio::test]
async fn a_wrong_password_is_refused() {
    let env = start().await;
    let db = env.create("wrong").await;
    let err = connect(&env, &db, "0123456789abcdef0123456789abcdef")
        .await
        .expect_err("a wrong password is refused");
    assert_eq!(err.kind(), redis::ErrorKind::AuthenticationFailed, "{err}");
    // Another database's password opens that database, not this one.
    let other = env.create("other").await;
    let mut con = connect(&env, &db, &password(&other)).await.unwrap();
    let () = con.set("k", "in other").await.unwrap();
    assert_eq!(
        env.data(&other, json!(["GET", "k"])).await.1,
        json!({"result": "in other"})
    );
    assert_eq!(
        env.data(&db, json!(["GET", "k"])).await.1,
        json!({"result": null})
    );
}

#[tokio::test]
async fn a_password_reset_ends_the_old_password() {
    let env = start().await;
    let db = env.create("rotate").await;
    let id = db["database_id"].as_str().unwrap();
    let old = password(&db);
    let mut before = connect(&env, &db, &old).await.unwrap();
    let () = before.set("k", "v").await.unwrap();

    let (st, rotated) = env
        .call(
            Method::POST,
            &format!("/v2/redis/reset-password/{id}"),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{rotated}");
    let new = password(&rotated);
    assert_ne!(new, old);

    // The connection opened with the old password is refused on its next command.
    let err = before.get::<_, Option<String>>("k").await.unwrap_err();
    assert_eq!(err.code(), Some("WRONGPASS"), "{err}");
    // New connections: the old password is refused, the new one works, the data is kept.
    let err = connect(&env, &db, &old).await.expect_err("old refused");
    assert_eq!(err.kind(), redis::ErrorKind::AuthenticationFailed, "{err}");
    let mut after = connect(&env, &rotated, &new).await.unwrap();
    let v: String = after.get("k").await.unwrap();
    assert_eq!(v, "v");
}

#[tokio::test]
async fn deleted_database_ends_the_session() {
    let env = start().await;
    let db = env.create("gone").await;
    let id = db["database_id"].as_str().unwrap();
    let mut con = connect(&env, &db, &password(&db)).await.unwrap();
    let () = con.set("k", "v").await.unwrap();
    let (st, _) = env
        .call(Method::DELETE, &format!("/v2/redis/database/{id}"), None)
        .await;
    assert_eq!(st, StatusCode::OK);
    let err = con.get::<_, Option<String>>("k").await.unwrap_err();
    assert!(err.to_string().contains("database not found"), "{err}");
    assert!(connect(&env, &db, &password(&db)).await.is_err());
}

#[tokio::test]
async fn connection_commands_answer_like_redis() {
    let env = start().await;
    let db = env.create("conn").await;
    let pw = password(&db);

    // Before AUTH only AUTH, HELLO, QUIT and RESET are served.
    let out = raw(
        &env,
        &db,
        &cmds(&[
            &["GET", "k"],
            &["PING"],
            &["AUTH", "nope"],
            &["AUTH", "someone", &pw],
            &["QUIT"],
        ]),
    )
    .await;
    assert_eq!(
        out,
        "-NOAUTH Authentication required.\r\n\
         -NOAUTH Authentication required.\r\n\
         -WRONGPASS invalid username-password pair or user is disabled.\r\n\
         -WRONGPASS invalid username-password pair or user is disabled.\r\n\
         +OK\r\n"
    );

    // HELLO: RESP3 refused, RESP2 with AUTH authenticates and describes the server.
    let out = raw(
        &env,
        &db,
        &cmds(&[
            &["HELLO", "3", "AUTH", "default", &pw],
            &["HELLO"],
            &["HELLO", "2", "AUTH", "default", &pw, "SETNAME", "worker-1"],
            &["CLIENT", "GETNAME"],
            &["QUIT"],
        ]),
    )
    .await;
    let (first, rest) = out.split_once("\r\n").unwrap();
    assert_eq!(first, "-NOPROTO unsupported protocol version");
    assert!(rest.starts_with("-NOAUTH HELLO must be called"), "{rest}");
    let hello = rest.split_once("\r\n").unwrap().1;
    // The engine's own HELLO answer.
    assert!(hello.starts_with("*14\r\n$6\r\nserver\r\n"), "{hello}");
    assert!(hello.contains("$5\r\nproto\r\n:2\r\n"), "{hello}");
    assert!(
        hello.ends_with(
            "$4\r\nmode\r\n$10\r\nstandalone\r\n$4\r\nrole\r\n$6\r\nmaster\r\n\
             $7\r\nmodules\r\n*0\r\n$8\r\nworker-1\r\n+OK\r\n"
        ),
        "{hello}"
    );

    // SELECT, CLIENT, inline commands, MULTI/EXEC/DISCARD and EXECABORT.
    let mut input = cmds(&[
        &["AUTH", &pw],
        &["SELECT", "0"],
        &["SELECT", "1"],
        &["CLIENT", "SETNAME", "has space"],
        &["CLIENT", "SETNAME", "raw"],
        &["CLIENT", "ID"],
        &["EXEC"],
        &["MULTI"],
        &["SET", "a", "1"],
        &["INCR", "a"],
        &["EXEC"],
        &["MULTI"],
        &["SET", "b", "1"],
        &["CONFIG", "SET", "maxmemory", "1"],
        &["EXEC"],
        &["GET", "b"],
        &["MULTI"],
        &["SET", "b", "1"],
        &["NOSUCHCOMMAND"],
        &["EXEC"],
        &["GET", "b"],
        &["MULTI"],
        &["SET", "c", "1"],
        &["DISCARD"],
        &["GET", "c"],
    ]);
    input.extend_from_slice(b"ECHO \"inline value\"\r\nQUIT\r\n");
    let out = raw(&env, &db, &input).await;
    let lines: Vec<&str> = out.split("\r\n").collect();
    assert_eq!(
        &lines[..5],
        [
            "+OK",
            "+OK",
            "-ERR DB index is out of range",
            "-ERR Client names cannot contain spaces, newlines or special characters.",
            "+OK"
        ]
    );
    assert!(lines[5].starts_with(':'), "{out}");
    assert_eq!(
        &lines[6..],
        [
            "-ERR EXEC without MULTI",
            "+OK",
            "+QUEUED",
            "+QUEUED",
            "*2",
            "+OK",
            ":2",
            "+OK",
            "+QUEUED",
            "-ERR Command is not available: 'CONFIG'",
            "-EXECABORT Transaction discarded because of previous errors.",
            "$-1",
            "+OK",
            "+QUEUED",
            "-ERR unknown command 'NOSUCHCOMMAND', with args beginning with: ",
            "-EXECABORT Transaction discarded because of previous errors.",
            "$-1",
            "+OK",
            "+QUEUED",
            "+OK",
            "$-1",
            "$12",
            "inline value",
            "+OK",
            "",
        ]
    );
}

#[tokio::test]
async fn protocol_errors_close_the_connection() {
    let env = start().await;
    let db = env.create("garbage").await;
    let pw = password(&db);
    let mut input = cmd(&["AUTH", &pw]);
    input.extend_from_slice(b"*2\r\n$3\r\nGET\r\n+k\r\n");
    input.extend_from_slice(&cmd(&["PING"]));
    assert_eq!(
        raw(&env, &db, &input).await,
        "+OK\r\n-ERR Protocol error: expected '$', got '+'\r\n"
    );
    assert_eq!(
        raw(&env, &db, b"*abc\r\n").await,
        "-ERR Protocol error: invalid multibulk length\r\n"
    );
}

#[tokio::test]
async fn database_checks_are_shared_with_the_rest_api() {
    let env = start().await;
    let db = env.create("checks").await;
    let id = db["database_id"].as_str().unwrap();
    let pw = password(&db);

    // Allow-list: loopback is outside 10.0.0.0/8.
    let (st, v) = env
        .post(
            &format!("/v2/redis/update-allowlist/{id}"),
            json!({"allowed_ips": ["10.0.0.0/8"]}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let out = raw(
        &env,
        &db,
        &cmds(&[&["AUTH", &pw], &["GET", "k"], &["QUIT"]]),
    )
    .await;
    assert_eq!(
        out,
        "+OK\r\n-ERR client IP 127.0.0.1 is not in the allowed IP ranges of this database\r\n+OK\r\n"
    );
    env.post(
        &format!("/v2/redis/update-allowlist/{id}"),
        json!({"allowed_ips": []}),
    )
    .await;

    // A suspended database refuses commands.
    let (st, _) = env
        .control(
            Method::PATCH,
            &format!("/databases/{id}"),
            Some(json!({"state": "suspended"})),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    let out = raw(
        &env,
        &db,
        &cmds(&[&["AUTH", &pw], &["GET", "k"], &["QUIT"]]),
    )
    .await;
    assert_eq!(out, "+OK\r\n-ERR database is suspended\r\n+OK\r\n");

    // The plan's max request size applies to a RESP frame (pay as you go: 10 MB).
    env.control(
        Method::PATCH,
        &format!("/databases/{id}"),
        Some(json!({"state": "active"})),
    )
    .await;
    let big = "x".repeat(11 * 1024 * 1024);
    let out = raw(
        &env,
        &db,
        &cmds(&[
            &["AUTH", &pw],
            &["SET", "big", &big],
            &["DBSIZE"],
            &["QUIT"],
        ]),
    )
    .await;
    assert_eq!(
        out,
        "+OK\r\n-ERR max request size exceeded\r\n:0\r\n+OK\r\n"
    );
}

#[tokio::test]
async fn default_ro_reads_and_is_refused_writes() {
    let env = start().await;
    let db = env.create("ro-user").await;
    let id = db["database_id"].as_str().unwrap();
    env.data(&db, json!(["HSET", "profile", "name", "ada"]))
        .await;
    let (_, view) = env
        .control(Method::GET, &format!("/databases/{id}"), None)
        .await;
    let ro_password = view["read_only_password"].as_str().unwrap().to_string();
    assert_ne!(ro_password, password(&db));

    let mut ro = redis_client_as(&env, &db, "default_ro", &ro_password)
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let name: String = ro.hget("profile", "name").await.unwrap();
    assert_eq!(name, "ada");
    let size: i64 = redis::cmd("DBSIZE").query_async(&mut ro).await.unwrap();
    assert_eq!(size, 1);
    // Writes (and KEYS, SCAN) get Redis's own NOPERM answer; nothing changes.
    let err = ro.set::<_, _, ()>("k", "v").await.unwrap_err();
    assert_eq!(err.code(), Some("NOPERM"), "{err}");
    assert!(err.to_string().contains("'set' command"), "{err}");
    let err = redis::cmd("KEYS")
        .arg("*")
        .query_async::<Vec<String>>(&mut ro)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("NOPERM"), "{err}");
    assert_eq!(
        env.data(&db, json!(["EXISTS", "k"])).await.1,
        json!({"result": 0})
    );
    // The read-only password is not the full one, and the full password is not default_ro's.
    assert!(
        redis_client_as(&env, &db, "default_ro", &password(&db))
            .get_multiplexed_async_connection()
            .await
            .is_err()
    );
    assert!(connect(&env, &db, &ro_password).await.is_err());
    // A password reset changes it too.
    env.call(
        Method::POST,
        &format!("/v2/redis/reset-password/{id}"),
        None,
    )
    .await;
    let err = ro.get::<_, Option<String>>("profile").await.unwrap_err();
    assert_eq!(err.code(), Some("WRONGPASS"), "{err}");
}

#[tokio::test]
async fn faults_apply_to_the_redis_protocol() {
    let env = start().await;
    let db = env.create("faulty").await;
    let id = db["database_id"].as_str().unwrap();
    let pw = password(&db);
    env.fault(json!({"endpoint": "data:get", "database_id": id, "status": 503, "times": 1}))
        .await;
    env.fault(
        json!({"endpoint": "data:incr", "database_id": id, "lose_response": true, "times": 1}),
    )
    .await;
    let out = raw(
        &env,
        &db,
        &cmds(&[
            &["AUTH", &pw],
            &["GET", "k"],
            &["GET", "k"],
            &["INCR", "n"],
            &["PING"],
        ]),
    )
    .await;
    // The status fault answers an error without running; lose_response runs the command and
    // closes the connection without its answer.
    assert_eq!(out, "+OK\r\n-ERR service unavailable\r\n$-1\r\n");
    assert_eq!(
        env.data(&db, json!(["GET", "n"])).await.1,
        json!({"result": "1"})
    );
    let calls = env.calls(&format!("?plane=data&database_id={id}")).await;
    let faulted: Vec<&Value> = calls.iter().filter(|c| !c["fault"].is_null()).collect();
    assert_eq!(faulted.len(), 2, "{calls:?}");
    assert_eq!(faulted[0]["status"], 503);
    assert_eq!(faulted[0]["method"], "RESP");
}
