//! Every fault does what it says; the call log, stats overrides, latency and reset work.

mod common;

use std::time::{Duration, Instant};

use common::*;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const CREATE: &str = "/v2/redis/database";

fn create_body(name: &str) -> Value {
    json!({"database_name": name, "region": "global", "primary_region": "us-east-1"})
}

async fn db_names(env: &Env) -> Vec<String> {
    let (_, v) = env.control(Method::GET, "/databases", None).await;
    v.as_array()
        .unwrap()
        .iter()
        .map(|d| d["database_name"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn status_fault_with_default_and_custom_body_and_times() {
    let env = start().await;
    env.fault(json!({"endpoint": "create", "status": 500, "times": 1}))
        .await;
    let (st, v) = env.post(CREATE, create_body("x")).await;
    assert_eq!(st, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(v, json!("internal server error"));
    assert!(
        db_names(&env).await.is_empty(),
        "a failed create creates nothing"
    );
    // `times: 1` expired: the next create works.
    let (st, _) = env.post(CREATE, create_body("x")).await;
    assert_eq!(st, StatusCode::OK);
    let (_, faults) = env.control(Method::GET, "/faults", None).await;
    assert_eq!(faults, json!([]));

    env.fault(json!({"endpoint": "list", "status": 503, "body": "{\"error\":\"maintenance\"}"}))
        .await;
    let (st, v) = env.get("/v2/redis/databases").await;
    assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(v, json!({"error": "maintenance"}));
    let (st, _) = env.get("/v2/redis/databases").await;
    assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE, "unlimited by default");
    let (st, _) = env.control(Method::DELETE, "/faults", None).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(env.get("/v2/redis/databases").await.0, StatusCode::OK);
}

#[tokio::test]
async fn rate_limit_fault_sets_retry_after() {
    let env = start().await;
    env.fault(json!({"endpoint": "*", "retry_after": 3, "times": 2}))
        .await;
    for _ in 0..2 {
        let r = env
            .http
            .get(format!("{}/v2/redis/databases", env.api))
            .basic_auth(EMAIL, Some(KEY))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(r.headers()["retry-after"], "3");
    }
    assert_eq!(env.get("/v2/redis/databases").await.0, StatusCode::OK);
    // 429 without Retry-After.
    env.fault(json!({"endpoint": "list", "status": 429, "times": 1}))
        .await;
    let r = env
        .http
        .get(format!("{}/v2/redis/databases", env.api))
        .basic_auth(EMAIL, Some(KEY))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(r.headers().get("retry-after").is_none());
}

#[tokio::test]
async fn latency_fault_and_global_latency() {
    let env = start().await;
    env.fault(json!({"endpoint": "list", "latency_ms": 300, "times": 1}))
        .await;
    let t = Instant::now();
    let (st, _) = env.get("/v2/redis/databases").await;
    assert_eq!(st, StatusCode::OK, "latency alone still performs the call");
    assert!(
        t.elapsed() >= Duration::from_millis(300),
        "{:?}",
        t.elapsed()
    );

    let (st, v) = env
        .control(Method::PUT, "/latency", Some(json!({"ms": 200})))
        .await;
    assert_eq!((st, v), (StatusCode::OK, json!({"ms": 200})));
    let t = Instant::now();
    env.get("/v2/redis/databases").await;
    assert!(t.elapsed() >= Duration::from_millis(200));
    // The control API is not slowed down.
    let (_, v) = env.control(Method::GET, "/latency", None).await;
    assert_eq!(v, json!({"ms": 200}));
    env.control(Method::PUT, "/latency", Some(json!({"ms": 0})))
        .await;
}

#[tokio::test]
async fn configured_latency_applies_to_every_developer_api_call() {
    let mut cfg = config();
    cfg.latency_ms = 150;
    let env = start_with(cfg).await;
    let t = Instant::now();
    env.get("/v2/redis/databases").await;
    assert!(t.elapsed() >= Duration::from_millis(150));
}

#[tokio::test]
async fn timeout_fault_holds_the_request_until_the_client_gives_up() {
    let env = start().await;
    env.fault(json!({"endpoint": "create", "timeout": true, "times": 1}))
        .await;
    let r = env
        .http
        .post(format!("{}{CREATE}", env.api))
        .basic_auth(EMAIL, Some(KEY))
        .timeout(Duration::from_millis(500))
        .json(&create_body("slow"))
        .send()
        .await;
    let err = r.expect_err("no answer");
    assert!(err.is_timeout(), "{err}");
    assert!(db_names(&env).await.is_empty(), "not performed");
    let calls = env.calls("?endpoint=create").await;
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0]["status"], 0);
    assert!(calls[0]["fault"].is_u64());
}

#[tokio::test]
async fn truncate_fault_performs_then_cuts_the_body() {
    let env = start().await;
    env.fault(json!({"endpoint": "create", "truncate": true, "times": 1}))
        .await;
    let r = env
        .http
        .post(format!("{}{CREATE}", env.api))
        .basic_auth(EMAIL, Some(KEY))
        .json(&create_body("cut"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let text = r.text().await.unwrap();
    assert!(!text.is_empty());
    assert!(
        serde_json::from_str::<Value>(&text).is_err(),
        "truncated: {text}"
    );
    assert_eq!(db_names(&env).await, vec!["cut"], "the create happened");
}

#[tokio::test]
async fn lose_response_on_create_leaves_a_database_the_client_never_saw() {
    let env = start().await;
    env.fault(json!({"endpoint": "create", "lose_response": true, "times": 1}))
        .await;
    let r = env
        .http
        .post(format!("{}{CREATE}", env.api))
        .basic_auth(EMAIL, Some(KEY))
        .timeout(Duration::from_secs(10))
        .json(&create_body("ghost"))
        .send()
        .await;
    let err = r.expect_err("the connection is dropped");
    assert!(!err.is_timeout(), "dropped, not held: {err}");
    // The database exists (the client must find it by listing).
    let (_, list) = env.get("/v2/redis/databases").await;
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["database_name"], "ghost");
    let calls = env.calls("?endpoint=create").await;
    assert_eq!(calls[0]["status"], 0);
    assert_eq!(calls[0]["database_id"], list[0]["database_id"]);

    // With a status: performed, answered with that status and no body.
    env.fault(json!({"endpoint": "create", "lose_response": true, "status": 502, "times": 1}))
        .await;
    let r = env
        .http
        .post(format!("{}{CREATE}", env.api))
        .basic_auth(EMAIL, Some(KEY))
        .json(&create_body("ghost2"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(r.text().await.unwrap(), "");
    assert_eq!(db_names(&env).await, vec!["ghost", "ghost2"]);
}

#[tokio::test]
async fn faults_scope_by_database_and_probability() {
    let env = start().await;
    let a = env.create("a").await;
    let b = env.create("b").await;
    let (aid, bid) = (
        a["database_id"].as_str().unwrap(),
        b["database_id"].as_str().unwrap(),
    );
    env.fault(json!({"endpoint": "get", "database_id": aid, "status": 500}))
        .await;
    assert_eq!(
        env.get(&format!("/v2/redis/database/{aid}")).await.0,
        StatusCode::INTERNAL_SERVER_ERROR
    );
    assert_eq!(
        env.get(&format!("/v2/redis/database/{bid}")).await.0,
        StatusCode::OK
    );
    env.control(Method::DELETE, "/faults", None).await;
    let never = env
        .fault(json!({"endpoint": "get", "status": 500, "probability": 0.0}))
        .await;
    for _ in 0..20 {
        assert_eq!(
            env.get(&format!("/v2/redis/database/{aid}")).await.0,
            StatusCode::OK
        );
    }
    let (st, _) = env
        .control(Method::DELETE, &format!("/faults/{never}"), None)
        .await;
    assert_eq!(st, StatusCode::OK);
    let (st, _) = env
        .control(Method::DELETE, &format!("/faults/{never}"), None)
        .await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    env.fault(json!({"endpoint": "get", "status": 500, "probability": 1.0}))
        .await;
    assert_eq!(
        env.get(&format!("/v2/redis/database/{aid}")).await.0,
        StatusCode::INTERNAL_SERVER_ERROR
    );
    // Bad rules are refused.
    let (st, _) = env
        .control(
            Method::POST,
            "/faults",
            Some(json!({"endpoint": "get", "probability": 2})),
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    let (st, _) = env
        .control(
            Method::POST,
            "/faults",
            Some(json!({"endpoint": "get", "oops": 1})),
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn data_plane_faults() {
    let env = start().await;
    let db = env.create("probe").await;
    env.fault(json!({"endpoint": "data:ping", "status": 503, "times": 1}))
        .await;
    let (st, v) = env.data(&db, json!(["PING"])).await;
    assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE);
    assert!(v["error"].is_string());
    assert_eq!(
        env.data(&db, json!(["GET", "x"])).await.0,
        StatusCode::OK,
        "other commands unaffected"
    );
    assert_eq!(env.data(&db, json!(["PING"])).await.0, StatusCode::OK);
    // `data` matches every data-plane request but no Developer API call.
    env.fault(json!({"endpoint": "data", "latency_ms": 250, "times": 1}))
        .await;
    assert_eq!(env.get("/v2/redis/databases").await.0, StatusCode::OK);
    let t = Instant::now();
    assert_eq!(env.data(&db, json!(["INFO"])).await.0, StatusCode::OK);
    assert!(t.elapsed() >= Duration::from_millis(250));
    env.fault(json!({"endpoint": "data:pipeline", "lose_response": true, "times": 1}))
        .await;
    let r = env
        .http
        .post(format!("{}/pipeline", Env::rest_url(&db)))
        .bearer_auth(db["rest_token"].as_str().unwrap())
        .json(&json!([["SET", "lost", "1"]]))
        .send()
        .await;
    assert!(r.is_err());
    assert_eq!(
        env.data(&db, json!(["GET", "lost"])).await.1,
        json!({"result": "1"}),
        "performed"
    );
}

#[tokio::test]
async fn call_log_counts_calls_and_filters() {
    let env = start().await;
    let db = env.create("c").await;
    let id = db["database_id"].as_str().unwrap();
    env.get(&format!("/v2/redis/database/{id}")).await;
    env.get(&format!("/v2/redis/database/{id}?credentials=hide"))
        .await;
    env.get("/v2/redis/databases").await;
    env.data(&db, json!(["PING"])).await;
    let all = env.calls("").await;
    assert_eq!(all.len(), 5);
    let first = &all[0];
    assert_eq!(first["endpoint"], "create");
    assert_eq!(first["method"], "POST");
    assert_eq!(first["path"], "/v2/redis/database");
    assert_eq!(first["status"], 200);
    assert_eq!(first["account"], EMAIL);
    assert_eq!(first["database_id"], id);
    assert_eq!(first["plane"], "api");
    let gets = env.calls("?endpoint=get").await;
    assert_eq!(gets.len(), 2);
    assert_eq!(
        gets[1]["path"],
        format!("/v2/redis/database/{id}?credentials=hide")
    );
    let since = all[2]["seq"].as_u64().unwrap();
    let later = env.calls(&format!("?since={since}")).await;
    assert_eq!(later.len(), 2);
    assert_eq!(env.calls("?plane=data").await[0]["endpoint"], "data:ping");
    // Errors are logged with their status.
    env.call_as((EMAIL, "bad"), Method::GET, "/v2/redis/databases", None)
        .await;
    let last = env.calls("").await.pop().unwrap();
    assert_eq!(last["status"], 401);
    let (st, _) = env.control(Method::DELETE, "/calls", None).await;
    assert_eq!(st, StatusCode::OK);
    assert!(env.calls("").await.is_empty());
    // No credential appears anywhere in the log.
    let text = serde_json::to_string(&all).unwrap();
    for secret in [
        KEY,
        db["password"].as_str().unwrap(),
        db["rest_token"].as_str().unwrap(),
    ] {
        assert!(!text.contains(secret));
    }
}

#[tokio::test]
async fn stats_overrides_replace_series_and_scalars() {
    let env = start().await;
    let db = env.create("s").await;
    let id = db["database_id"].as_str().unwrap();
    let (st, _) = env
        .control(
            Method::PUT,
            &format!("/databases/{id}/stats"),
            Some(json!({
                "hits": [90, 80, 60],
                "misses": [10, 20, 40],
                "current_storage": 85_899_345_920u64,
                "total_monthly_billing": 42.5,
                "read_latency_99": [{"x": "2025-08-31 15:12:52.799480932 +0000 UTC", "y": 61.5}],
                "dailyrequests": [100, 200],
            })),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    let (_, stats) = env.get(&format!("/v2/redis/stats/{id}")).await;
    let ys = |k: &str| {
        stats[k]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["y"].as_f64().unwrap())
            .collect::<Vec<_>>()
    };
    assert_eq!(ys("hits"), vec![90.0, 80.0, 60.0]);
    assert_eq!(ys("misses"), vec![10.0, 20.0, 40.0]);
    assert_eq!(stats["current_storage"], 85_899_345_920u64);
    assert_eq!(stats["total_monthly_billing"], 42.5);
    assert_eq!(
        stats["read_latency_99"][0]["x"],
        "2025-08-31 15:12:52.799480932 +0000 UTC"
    );
    assert_eq!(ys("dailyrequests"), vec![100.0, 200.0]);
    assert_eq!(stats["days"].as_array().unwrap().len(), 2);
    // PATCH merges, DELETE clears.
    env.control(
        Method::PATCH,
        &format!("/databases/{id}/stats"),
        Some(json!({"hits": [1]})),
    )
    .await;
    let (_, stats) = env.get(&format!("/v2/redis/stats/{id}")).await;
    assert_eq!(stats["hits"].as_array().unwrap().len(), 1);
    assert_eq!(stats["current_storage"], 85_899_345_920u64);
    env.control(Method::DELETE, &format!("/databases/{id}/stats"), None)
        .await;
    let (_, stats) = env.get(&format!("/v2/redis/stats/{id}")).await;
    assert_eq!(stats["current_storage"], 0);
    assert_eq!(stats["hits"].as_array().unwrap().len(), 60);
    let (st, _) = env
        .control(Method::PUT, "/databases/nope/stats", Some(json!({})))
        .await;
    assert_eq!(st, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn stats_shape_follows_the_reference() {
    let env = start().await;
    let db = env.create("shape").await;
    let id = db["database_id"].as_str().unwrap();
    let (st, stats) = env.get(&format!("/v2/redis/stats/{id}")).await;
    assert_eq!(st, StatusCode::OK);
    for series in [
        "hits",
        "misses",
        "keyspace",
        "diskusage",
        "throughput",
        "latencymean",
        "latency_99",
        "read_latency_mean",
        "read_latency_99",
        "write_latency_mean",
        "write_latency_99",
        "read",
        "write",
        "connection_count",
        "dailyrequests",
        "dailybilling",
        "bandwidths",
    ] {
        let pts = stats[series]
            .as_array()
            .unwrap_or_else(|| panic!("{series} is an array"));
        for p in pts {
            let x = p["x"].as_str().unwrap();
            // Go time.String(): "2025-08-31 15:12:52.799480932 +0000 UTC"
            assert!(
                x.ends_with(" +0000 UTC") && x.len() >= 29 && &x[10..11] == " ",
                "{series}: {x}"
            );
            assert!(p["y"].is_number());
        }
    }
    assert!(
        stats["monitor_count"].is_object(),
        "a single object, not an array"
    );
    let days = stats["days"].as_array().unwrap();
    assert_eq!(days.len(), stats["dailyrequests"].as_array().unwrap().len());
    let weekdays = [
        "Monday",
        "Tuesday",
        "Wednesday",
        "Thursday",
        "Friday",
        "Saturday",
        "Sunday",
    ];
    assert!(days.iter().all(|d| weekdays.contains(&d.as_str().unwrap())));
    for scalar in [
        "daily_net_commands",
        "current_storage",
        "total_monthly_requests",
        "total_monthly_storage",
        "dailybandwidth",
    ] {
        assert!(stats[scalar].is_u64(), "{scalar}");
    }
    assert!(stats["total_monthly_billing"].is_f64() || stats["total_monthly_billing"].is_u64());
    let (st, _) = env.get(&format!("/v2/redis/stats/{id}?period=7d")).await;
    assert_eq!(st, StatusCode::OK);
    let (st, v) = env.get(&format!("/v2/redis/stats/{id}?period=2w")).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert!(v.is_string());
}

#[tokio::test]
async fn control_database_view_state_accounts_and_reset() {
    let env = start().await;
    let db = env.create("v").await;
    let id = db["database_id"].as_str().unwrap();
    env.data(&db, json!(["SET", "k", "v"])).await;
    let (_, view) = env
        .control(Method::GET, &format!("/databases/{id}"), None)
        .await;
    assert_eq!(view["account"], EMAIL);
    assert_eq!(view["keys"], 1);
    assert_eq!(view["rest_token"], db["rest_token"]);
    assert_eq!(view["rest_url"], Env::rest_url(&db));
    let (st, _) = env
        .control(
            Method::PATCH,
            &format!("/databases/{id}"),
            Some(json!({"state": "suspended"})),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(
        env.get(&format!("/v2/redis/database/{id}")).await.1["state"],
        "suspended"
    );
    assert_eq!(
        env.data(&db, json!(["GET", "k"])).await.0,
        StatusCode::BAD_REQUEST
    );

    let (st, _) = env
        .control(
            Method::POST,
            "/accounts",
            Some(json!({"email": "new@example.com", "api_key": "k3"})),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    let (st, _) = env
        .call_as(
            ("new@example.com", "k3"),
            Method::GET,
            "/v2/redis/databases",
            None,
        )
        .await;
    assert_eq!(st, StatusCode::OK);

    env.fault(json!({"endpoint": "list", "status": 500})).await;
    let (st, _) = env.control(Method::POST, "/reset", None).await;
    assert_eq!(st, StatusCode::OK);
    let (st, list) = env.get("/v2/redis/databases").await;
    assert_eq!(
        (st, list),
        (StatusCode::OK, json!([])),
        "faults and databases gone"
    );
    let (st, _) = env
        .call_as(
            ("new@example.com", "k3"),
            Method::GET,
            "/v2/redis/databases",
            None,
        )
        .await;
    assert_eq!(st, StatusCode::UNAUTHORIZED, "runtime accounts are reset");
}

#[tokio::test]
async fn admin_token_guards_the_control_api() {
    let mut cfg = config();
    cfg.admin_token = Some("s3cret".into());
    let env = start_with(cfg).await;
    let (st, _) = env.control(Method::GET, "/calls", None).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    let r = env
        .http
        .get(format!("{}/_emulator/calls", env.api))
        .bearer_auth("s3cret")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}
