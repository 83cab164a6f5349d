//! Conformance of the Developer API (`reference/upstash-api.md` §2, §4, trip-ups 1–10) over HTTP.

mod common;

use common::*;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

fn s(v: &str) -> Value {
    Value::String(v.into())
}

#[tokio::test]
async fn create_returns_the_full_database_object() {
    let env = start().await;
    let db = env.create("crm-cache").await;
    let id = db["database_id"].as_str().unwrap();
    let uuid = uuid::Uuid::parse_str(id).unwrap();
    assert_eq!(uuid.get_version_num(), 4);
    assert_eq!(db["database_name"], "crm-cache");
    assert_eq!(db["region"], "global");
    assert_eq!(db["type"], "payg");
    assert_eq!(db["database_type"], "Pay as You Go");
    // `port` is the RESP listener's (6379 on Upstash).
    assert_eq!(db["port"], env.emu.resp_addr().port());
    assert_eq!(db["state"], "active");
    assert_eq!(db["tls"], true);
    assert_eq!(db["primary_region"], "us-east-1");
    assert_eq!(db["primary_members"], json!(["us-east-1"]));
    assert_eq!(db["all_members"], json!(["us-east-1"]));
    assert_eq!(db["user_email"], EMAIL);
    assert!(db["creation_time"].is_i64());
    let pw = db["password"].as_str().unwrap();
    assert_eq!(pw.len(), 32);
    assert!(pw.chars().all(|c| c.is_ascii_hexdigit()));
    assert!(db["rest_token"].as_str().unwrap().starts_with("AX"));
    assert!(
        db["read_only_rest_token"]
            .as_str()
            .unwrap()
            .starts_with("An")
    );
    // Loopback deviation: the endpoint is localhost:<data port>, so https:// + endpoint works.
    assert_eq!(
        db["endpoint"],
        format!("localhost:{}", env.emu.data_addr().port())
    );
    // String-typed booleans and camelCase securityAddons (trip-up 4).
    assert_eq!(db["db_acl_enabled"], "false");
    assert_eq!(db["db_acl_default_user_status"], "true");
    assert_eq!(db["prometheus_enabled"], "false");
    assert_eq!(db["securityAddons"]["ipWhitelisting"], false);
    assert!(db["securityAddons"]["encryptionAtRest"].is_boolean());
    assert_eq!(db["db_disk_threshold"], 107_374_182_400u64);
    assert_eq!(db["db_max_request_size"], 10_485_760);
    assert_eq!(db["db_max_entry_size"], 104_857_600);
    assert_eq!(db["modifying_state"], "");
    assert_eq!(db["allowed_ip_ranges"], json!([]));
}

#[tokio::test]
async fn request_limit_is_emitted_as_two_to_the_63() {
    let env = start().await;
    let db = env.create("big").await;
    let text = env
        .http
        .get(format!(
            "{}/v2/redis/database/{}",
            env.api,
            db["database_id"].as_str().unwrap()
        ))
        .basic_auth(EMAIL, Some(KEY))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains("\"db_request_limit\":9223372036854775808"),
        "{text}"
    );
}

#[tokio::test]
async fn create_accepts_both_request_generations() {
    let env = start().await;
    // Old docs / MCP: `name`; new spec: `platform` instead of `region`.
    let (st, db) = env
        .post(
            "/v2/redis/database",
            json!({"name": "old-style", "platform": "aws", "primary_region": "eu-central-1",
                   "read_regions": ["us-east-1", "eu-west-1"], "plan": "fixed_1gb", "budget": 50,
                   "eviction": true, "tls": false}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{db}");
    assert_eq!(db["database_name"], "old-style");
    assert_eq!(
        db["all_members"],
        json!(["eu-central-1", "us-east-1", "eu-west-1"])
    );
    assert_eq!(db["read_regions"], json!(["us-east-1", "eu-west-1"]));
    assert_eq!(db["type"], "paid");
    assert_eq!(db["db_disk_threshold"], 1_073_741_824u64);
    assert_eq!(db["budget"], 50);
    assert_eq!(db["eviction"], true);
    assert_eq!(db["db_eviction"], true);
    assert_eq!(db["tls"], true, "TLS cannot be turned off");
    // GCP primary via platform.
    let (st, db) = env
        .post(
            "/v2/redis/database",
            json!({"database_name": "g", "platform": "gcp", "primary_region": "us-central1", "plan": "free"}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{db}");
    assert_eq!(db["type"], "free");
    assert_eq!(db["database_type"], "Free");
    assert_eq!(db["db_disk_threshold"], 268_435_456u64);
}

#[tokio::test]
async fn body_is_parsed_without_content_type() {
    let env = start().await;
    let r = env
        .http
        .post(format!("{}/v2/redis/database", env.api))
        .basic_auth(EMAIL, Some(KEY))
        .body(r#"{"database_name":"nohdr","region":"global","primary_region":"us-west-2"}"#)
        .send()
        .await
        .unwrap();
    let (st, v) = body_json(r).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["primary_region"], "us-west-2");
}

#[tokio::test]
async fn create_validation_errors_are_json_strings() {
    let env = start().await;
    let cases: Vec<(Value, &str)> = vec![
        (
            json!({"database_name": "x", "region": "eu-west-1", "primary_region": "eu-west-1"}),
            "regional db creation is deprecated",
        ),
        (
            json!({"database_name": "x", "region": "global", "primary_region": "mars-1"}),
            "invalid primary region",
        ),
        (
            json!({"database_name": "x", "region": "global"}),
            "primary_region",
        ),
        (
            json!({"database_name": "", "region": "global", "primary_region": "us-east-1"}),
            "name",
        ),
        (
            json!({"region": "global", "primary_region": "us-east-1"}),
            "database_name",
        ),
        (
            json!({"database_name": "bad\nname", "region": "global", "primary_region": "us-east-1"}),
            "name",
        ),
        (
            json!({"database_name": "n".repeat(101), "region": "global", "primary_region": "us-east-1"}),
            "name",
        ),
        (
            json!({"database_name": "x", "region": "global", "primary_region": "us-east-1", "plan": "gold"}),
            "invalid plan",
        ),
        (
            json!({"database_name": "x", "region": "global", "primary_region": "us-east-1", "read_regions": ["af-south-1"]}),
            "invalid read region",
        ),
        (
            json!({"database_name": "x", "region": "global", "primary_region": "us-east-1", "read_regions": ["us-central1"]}),
            "invalid read region",
        ),
        (
            json!({"database_name": "x", "region": "global", "primary_region": "us-east-1", "read_regions": ["us-east-1"]}),
            "read region",
        ),
        (
            json!({"database_name": "x", "platform": "azure", "primary_region": "us-east-1"}),
            "platform",
        ),
        (
            json!({"database_name": "x", "platform": "gcp", "primary_region": "us-east-1"}),
            "platform",
        ),
        (
            json!({"database_name": "x", "region": "global", "primary_region": "us-east-1", "plan": "free", "read_regions": ["eu-west-1", "us-west-1"]}),
            "read region",
        ),
        (
            json!({"database_name": "x", "region": "global", "primary_region": "us-east-1", "budget": "ten"}),
            "budget",
        ),
    ];
    for (body, needle) in cases {
        let (st, v) = env.post("/v2/redis/database", body.clone()).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{body} -> {v}");
        let msg = v
            .as_str()
            .unwrap_or_else(|| panic!("error body must be a JSON string: {v}"));
        assert!(
            msg.contains(needle),
            "{body}: {msg:?} should mention {needle:?}"
        );
    }
    // Exact text for the regional case (PUL35).
    let (_, v) = env
        .post(
            "/v2/redis/database",
            json!({"database_name": "x", "region": "us-east-1", "primary_region": "us-east-1"}),
        )
        .await;
    assert_eq!(v, s("regional db creation is deprecated"));
    // Invalid JSON.
    let r = env
        .http
        .post(format!("{}/v2/redis/database", env.api))
        .basic_auth(EMAIL, Some(KEY))
        .body("{not json")
        .send()
        .await
        .unwrap();
    let (st, v) = body_json(r).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert!(v.is_string());
    // Nothing was created by any of the failures.
    let (_, list) = env.get("/v2/redis/databases").await;
    assert_eq!(list, json!([]));
}

#[tokio::test]
async fn duplicate_names_are_allowed_and_list_keeps_creation_order() {
    let env = start().await;
    let a = env.create("same").await;
    let b = env.create("same").await;
    assert_ne!(a["database_id"], b["database_id"]);
    let (st, list) = env.get("/v2/redis/databases").await;
    assert_eq!(st, StatusCode::OK);
    let ids: Vec<&Value> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|d| &d["database_id"])
        .collect();
    assert_eq!(ids, vec![&a["database_id"], &b["database_id"]]);
    assert_eq!(
        list[0]["password"], a["password"],
        "list carries credentials"
    );
}

#[tokio::test]
async fn get_and_credentials_hide() {
    let env = start().await;
    let db = env.create("g").await;
    let id = db["database_id"].as_str().unwrap();
    let (st, got) = env.get(&format!("/v2/redis/database/{id}")).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(got["rest_token"], db["rest_token"]);
    let (_, hidden) = env
        .get(&format!("/v2/redis/database/{id}?credentials=hide"))
        .await;
    assert_eq!(hidden["password"], "***");
    assert_eq!(hidden["rest_token"], "***");
    assert_eq!(hidden["read_only_rest_token"], "***");
    assert_eq!(hidden["database_name"], "g");
    assert_eq!(hidden["endpoint"], db["endpoint"]);
}

#[tokio::test]
async fn auth_is_required_and_accounts_are_isolated() {
    let env = start().await;
    let db = env.create("mine").await;
    let id = db["database_id"].as_str().unwrap();
    // No credentials / wrong key / unknown email / bearer → 401 {"error": "Unauthorized"}.
    let r = env
        .http
        .get(format!("{}/v2/redis/databases", env.api))
        .send()
        .await
        .unwrap();
    let (st, v) = body_json(r).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    assert_eq!(v, json!({"error": "Unauthorized"}));
    for who in [(EMAIL, "wrong"), ("nobody@example.com", KEY)] {
        let (st, _) = env
            .call_as(who, Method::GET, "/v2/redis/databases", None)
            .await;
        assert_eq!(st, StatusCode::UNAUTHORIZED);
    }
    let r = env
        .http
        .get(format!("{}/v2/redis/databases", env.api))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    // The other account sees nothing and gets 404 for our id.
    let other = (EMAIL2, KEY2);
    let (_, list) = env
        .call_as(other, Method::GET, "/v2/redis/databases", None)
        .await;
    assert_eq!(list, json!([]));
    for (m, p) in [
        (Method::GET, format!("/v2/redis/database/{id}")),
        (Method::DELETE, format!("/v2/redis/database/{id}")),
        (Method::GET, format!("/v2/redis/stats/{id}")),
    ] {
        let (st, v) = env.call_as(other, m, &p, None).await;
        assert_eq!(st, StatusCode::NOT_FOUND);
        assert_eq!(v, s("database not found"));
    }
    let (st, _) = env.get(&format!("/v2/redis/database/{id}")).await;
    assert_eq!(
        st,
        StatusCode::OK,
        "still there after the other account's delete"
    );
}

#[tokio::test]
async fn unknown_id_is_404_database_not_found_everywhere() {
    let env = start().await;
    let id = uuid::Uuid::new_v4().to_string();
    let routes: Vec<(Method, String, Option<Value>)> = vec![
        (Method::GET, format!("/v2/redis/database/{id}"), None),
        (Method::DELETE, format!("/v2/redis/database/{id}"), None),
        (
            Method::POST,
            format!("/v2/redis/rename/{id}"),
            Some(json!({"name": "n"})),
        ),
        (Method::POST, format!("/v2/redis/reset-password/{id}"), None),
        (Method::POST, format!("/v2/redis/enable-tls/{id}"), None),
        (
            Method::POST,
            format!("/v2/redis/enable-eviction/{id}"),
            None,
        ),
        (
            Method::POST,
            format!("/v2/redis/disable-eviction/{id}"),
            None,
        ),
        (
            Method::POST,
            format!("/v2/redis/enable-autoupgrade/{id}"),
            None,
        ),
        (
            Method::POST,
            format!("/v2/redis/disable-autoupgrade/{id}"),
            None,
        ),
        (
            Method::POST,
            format!("/v2/redis/{id}/change-plan"),
            Some(json!({"plan_name": "payg"})),
        ),
        (
            Method::POST,
            format!("/v2/redis/change-plan/{id}"),
            Some(json!({"plan": "payg"})),
        ),
        (
            Method::PATCH,
            format!("/v2/redis/update-budget/{id}"),
            Some(json!({"budget": 1})),
        ),
        (
            Method::POST,
            format!("/v2/redis/update-regions/{id}"),
            Some(json!({"read_regions": []})),
        ),
        (Method::GET, format!("/v2/redis/stats/{id}"), None),
        (Method::GET, format!("/v2/redis/list-backup/{id}"), None),
        (
            Method::POST,
            format!("/v2/redis/create-backup/{id}"),
            Some(json!({"name": "b"})),
        ),
        (
            Method::POST,
            format!("/v2/redis/restore-backup/{id}"),
            Some(json!({"backup_id": "x"})),
        ),
        (
            Method::DELETE,
            format!("/v2/redis/delete-backup/{id}/x"),
            None,
        ),
        (
            Method::PATCH,
            format!("/v2/redis/enable-dailybackup/{id}"),
            None,
        ),
        (
            Method::POST,
            format!("/v2/redis/disable-dailybackup/{id}"),
            None,
        ),
        (
            Method::POST,
            format!("/v2/redis/enable-prodpack/{id}"),
            None,
        ),
        (
            Method::POST,
            format!("/v2/redis/disable-prodpack/{id}"),
            None,
        ),
        (
            Method::POST,
            format!("/v2/redis/update-allowlist/{id}"),
            Some(json!({"allowed_ips": []})),
        ),
    ];
    for (m, p, b) in routes {
        let (st, v) = env.call(m.clone(), &p, b).await;
        assert_eq!(st, StatusCode::NOT_FOUND, "{m} {p}");
        assert_eq!(v, s("database not found"), "{m} {p}");
    }
}

#[tokio::test]
async fn unknown_routes_and_wrong_methods() {
    let env = start().await;
    let (st, v) = env.get("/v2/redis/nonsense/x").await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    assert!(v.is_string());
    let db = env.create("m").await;
    let id = db["database_id"].as_str().unwrap();
    // update-budget is PATCH only (trip-up 7); there is no disable-tls (trip-up 8).
    let (st, _) = env
        .post(
            &format!("/v2/redis/update-budget/{id}"),
            json!({"budget": 5}),
        )
        .await;
    assert_eq!(st, StatusCode::METHOD_NOT_ALLOWED);
    let (st, _) = env
        .post(&format!("/v2/redis/disable-tls/{id}"), json!({}))
        .await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (st, _) = env.get("/v2/redis/database").await;
    assert_eq!(st, StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn delete_then_gone() {
    let env = start().await;
    let db = env.create("d").await;
    let id = db["database_id"].as_str().unwrap();
    let (st, v) = env
        .call(Method::DELETE, &format!("/v2/redis/database/{id}"), None)
        .await;
    assert_eq!((st, v), (StatusCode::OK, s("OK")));
    let (st, v) = env.get(&format!("/v2/redis/database/{id}")).await;
    assert_eq!((st, v), (StatusCode::NOT_FOUND, s("database not found")));
    let (st, _) = env
        .call(Method::DELETE, &format!("/v2/redis/database/{id}"), None)
        .await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    // Its tokens no longer open the data plane.
    let (st, _) = env.data(&db, json!(["PING"])).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn rename_reset_password_enable_tls_return_the_object() {
    let env = start().await;
    let db = env.create("before").await;
    let id = db["database_id"].as_str().unwrap();
    let (st, v) = env
        .post(&format!("/v2/redis/rename/{id}"), json!({"name": "after"}))
        .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v["database_name"], "after");
    assert_eq!(v["database_id"], db["database_id"]);
    let (st, v) = env
        .post(&format!("/v2/redis/rename/{id}"), json!({"name": ""}))
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert!(v.is_string());
    let (st, _) = env
        .post(
            &format!("/v2/redis/rename/{id}"),
            json!({"database_name": "x"}),
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "rename uses `name`");

    let (st, _) = env.data(&db, json!(["SET", "k", "v"])).await;
    assert_eq!(st, StatusCode::OK);
    let (st, reset) = env
        .call(
            Method::POST,
            &format!("/v2/redis/reset-password/{id}"),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    for f in ["password", "rest_token", "read_only_rest_token"] {
        assert_ne!(reset[f], db[f], "{f} must change");
    }
    // Old tokens are revoked at once; the new one sees the same data.
    let (st, v) = env.data(&db, json!(["GET", "k"])).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED, "{v}");
    let (st, v) = env
        .data_with(&db, "read_only_rest_token", "/", json!(["GET", "k"]))
        .await;
    assert_eq!(st, StatusCode::UNAUTHORIZED, "{v}");
    let (st, v) = env.data(&reset, json!(["GET", "k"])).await;
    assert_eq!((st, v), (StatusCode::OK, json!({"result": "v"})));

    let (st, v) = env
        .post(&format!("/v2/redis/enable-tls/{id}"), json!({}))
        .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v["tls"], true);
    assert_eq!(v["database_name"], "after");
}

#[tokio::test]
async fn eviction_autoupgrade_prodpack_toggles() {
    let env = start().await;
    let db = env.create("t").await;
    let id = db["database_id"].as_str().unwrap();
    let get = || async { env.get(&format!("/v2/redis/database/{id}")).await.1 };
    assert_eq!(
        env.post(&format!("/v2/redis/enable-eviction/{id}"), json!({}))
            .await
            .1,
        s("OK")
    );
    assert_eq!(get().await["eviction"], true);
    assert_eq!(
        env.post(&format!("/v2/redis/enable-eviction/{id}"), json!({}))
            .await
            .1,
        s("OK")
    );
    assert_eq!(
        env.post(&format!("/v2/redis/disable-eviction/{id}"), json!({}))
            .await
            .1,
        s("OK")
    );
    assert_eq!(get().await["db_eviction"], false);

    let (st, v) = env
        .post(&format!("/v2/redis/enable-autoupgrade/{id}"), json!({}))
        .await;
    assert_eq!((st, v), (StatusCode::OK, s("OK")));
    assert_eq!(get().await["auto_upgrade"], true);
    let (st, v) = env
        .post(&format!("/v2/redis/enable-autoupgrade/{id}"), json!({}))
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert!(v.as_str().unwrap().contains("already enabled"), "{v}");
    let (st, _) = env
        .post(&format!("/v2/redis/disable-autoupgrade/{id}"), json!({}))
        .await;
    assert_eq!(st, StatusCode::OK);
    let (st, v) = env
        .post(&format!("/v2/redis/disable-autoupgrade/{id}"), json!({}))
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert!(v.as_str().unwrap().contains("already disabled"), "{v}");

    assert_eq!(
        env.post(&format!("/v2/redis/enable-prodpack/{id}"), json!({}))
            .await
            .1,
        s("OK")
    );
    assert_eq!(get().await["prod_pack_enabled"], true);
    assert_eq!(
        env.post(&format!("/v2/redis/disable-prodpack/{id}"), json!({}))
            .await
            .1,
        s("OK")
    );
    assert_eq!(get().await["prod_pack_enabled"], false);
}

#[tokio::test]
async fn change_plan_both_paths_and_bodies() {
    let env = start().await;
    let db = env.create("p").await;
    let id = db["database_id"].as_str().unwrap();
    let get = || async { env.get(&format!("/v2/redis/database/{id}")).await.1 };
    // Spec path + plan_name.
    let (st, v) = env
        .post(
            &format!("/v2/redis/{id}/change-plan"),
            json!({"plan_name": "fixed_250mb", "auto_upgrade": true}),
        )
        .await;
    assert_eq!((st, v), (StatusCode::OK, s("OK")));
    let now = get().await;
    assert_eq!(now["type"], "paid");
    assert_eq!(now["db_disk_threshold"], 262_144_000u64);
    assert_eq!(now["auto_upgrade"], true);
    assert!(now["last_plan_upgrade_time"].as_i64().unwrap() > 0);
    // Old path + CLI body {"plan": "free|payg|pro|paid"}.
    let (st, _) = env
        .post(
            &format!("/v2/redis/change-plan/{id}"),
            json!({"plan": "free"}),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(get().await["type"], "free");
    let (st, _) = env
        .post(
            &format!("/v2/redis/change-plan/{id}"),
            json!({"plan": "payg"}),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(get().await["database_type"], "Pay as You Go");
    let (st, v) = env
        .post(
            &format!("/v2/redis/{id}/change-plan"),
            json!({"plan_name": "platinum"}),
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert!(v.as_str().unwrap().contains("invalid plan"));
    let (st, _) = env
        .post(&format!("/v2/redis/{id}/change-plan"), json!({}))
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn update_budget_and_regions() {
    let env = start().await;
    let db = env.create("b").await;
    let id = db["database_id"].as_str().unwrap();
    let (st, v) = env
        .call(
            Method::PATCH,
            &format!("/v2/redis/update-budget/{id}"),
            Some(json!({"budget": 75})),
        )
        .await;
    assert_eq!((st, v), (StatusCode::OK, s("OK")));
    assert_eq!(
        env.get(&format!("/v2/redis/database/{id}")).await.1["budget"],
        75
    );
    let (st, _) = env
        .call(
            Method::PATCH,
            &format!("/v2/redis/update-budget/{id}"),
            Some(json!({})),
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    let (st, _) = env
        .call(
            Method::PATCH,
            &format!("/v2/redis/update-budget/{id}"),
            Some(json!({"budget": -1})),
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);

    let (st, v) = env
        .post(
            &format!("/v2/redis/update-regions/{id}"),
            json!({"read_regions": ["eu-west-1", "ap-south-1"]}),
        )
        .await;
    assert_eq!((st, v), (StatusCode::OK, s("OK")));
    let got = env.get(&format!("/v2/redis/database/{id}")).await.1;
    assert_eq!(got["read_regions"], json!(["eu-west-1", "ap-south-1"]));
    assert_eq!(
        got["all_members"],
        json!(["us-east-1", "eu-west-1", "ap-south-1"])
    );
    // Replaces the whole set.
    env.post(
        &format!("/v2/redis/update-regions/{id}"),
        json!({"read_regions": []}),
    )
    .await;
    assert_eq!(
        env.get(&format!("/v2/redis/database/{id}")).await.1["read_regions"],
        json!([])
    );
    for bad in [
        json!(["us-east-1"]),
        json!(["af-south-1"]),
        json!(["europe-west1"]),
        json!(["nowhere"]),
    ] {
        let (st, v) = env
            .post(
                &format!("/v2/redis/update-regions/{id}"),
                json!({"read_regions": bad}),
            )
            .await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{bad}");
        assert!(v.is_string());
    }
}

#[tokio::test]
async fn allowlist_is_reflected_and_validated() {
    let env = start().await;
    let db = env.create("a").await;
    let id = db["database_id"].as_str().unwrap();
    let (st, v) = env
        .post(
            &format!("/v2/redis/update-allowlist/{id}"),
            json!({"allowed_ips": ["10.1.0.0/16", "192.168.1.7"]}),
        )
        .await;
    assert_eq!((st, v), (StatusCode::OK, s("OK")));
    let got = env.get(&format!("/v2/redis/database/{id}")).await.1;
    assert_eq!(
        got["allowed_ip_ranges"],
        json!(["10.1.0.0/16", "192.168.1.7/32"])
    );
    assert_eq!(got["securityAddons"]["ipWhitelisting"], true);
    let (st, v) = env
        .post(
            &format!("/v2/redis/update-allowlist/{id}"),
            json!({"allowed_ips": ["300.1.1.1/8"]}),
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert!(v.as_str().unwrap().contains("300.1.1.1/8"));
    let (st, _) = env
        .post(&format!("/v2/redis/update-allowlist/{id}"), json!({}))
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
}

const TEAM_KEY: &str = "owner-platform-key";
const TEAM_KEY2: &str = "other-platform-key";

#[tokio::test]
async fn team_keys_see_the_teams_databases_and_move_to_team_moves_one() {
    let cfg = config()
        .with_team_key(EMAIL, TEAM_KEY, "Platform")
        .with_team_key(EMAIL2, TEAM_KEY2, "Platform");
    let env = start_with(cfg).await;
    let personal = (EMAIL, KEY);
    let team = (EMAIL, TEAM_KEY);
    let create = |who: (&'static str, &'static str), name: &'static str| {
        let env = &env;
        async move {
            let (st, v) = env
                .call_as(
                    who,
                    Method::POST,
                    "/v2/redis/database",
                    Some(json!({"database_name": name, "region": "global", "primary_region": "us-east-1"})),
                )
                .await;
            assert_eq!(st, StatusCode::OK, "{v}");
            v
        }
    };
    let list = |who: (&'static str, &'static str)| {
        let env = &env;
        async move {
            let (_, v) = env
                .call_as(who, Method::GET, "/v2/redis/databases", None)
                .await;
            v.as_array()
                .unwrap()
                .iter()
                .map(|d| d["database_name"].as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        }
    };
    let p = create(personal, "mine").await;
    let t = create(team, "shared").await;

    // The team: listed for its members, with the configured name and a stable id.
    let (st, teams) = env.call_as(personal, Method::GET, "/v2/teams", None).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(teams.as_array().unwrap().len(), 1, "{teams}");
    assert_eq!(teams[0]["team_name"], "Platform");
    assert_eq!(teams[0]["copy_cc"], false);
    let team_id = teams[0]["team_id"].as_str().unwrap().to_string();
    let (_, members) = env
        .call_as(personal, Method::GET, &format!("/v2/teams/{team_id}"), None)
        .await;
    let roles: Vec<(String, String)> = members
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            assert_eq!(m["team_id"], team_id.as_str());
            (
                m["member_email"].as_str().unwrap().into(),
                m["member_role"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        roles,
        vec![
            (EMAIL.into(), "owner".into()),
            (EMAIL2.into(), "dev".into())
        ]
    );

    // A team database carries the team as its account; a personal one the email.
    assert_eq!(p["customer_id"], EMAIL);
    assert_eq!(p["user_email"], EMAIL);
    assert_eq!(t["customer_id"], team_id.as_str());
    assert_eq!(t["user_email"], team_id.as_str());
    // The same person's two keys see different databases; the team's other member sees the
    // team's.
    assert_eq!(list(personal).await, vec!["mine"]);
    assert_eq!(list(team).await, vec!["shared"]);
    assert_eq!(list((EMAIL2, TEAM_KEY2)).await, vec!["shared"]);
    assert!(list((EMAIL2, KEY2)).await.is_empty());
    let t_id = t["database_id"].as_str().unwrap();
    let p_id = p["database_id"].as_str().unwrap();
    let (st, v) = env
        .call_as(
            personal,
            Method::GET,
            &format!("/v2/redis/database/{t_id}"),
            None,
        )
        .await;
    assert_eq!((st, v), (StatusCode::NOT_FOUND, s("database not found")));
    let (st, _) = env
        .call_as(
            team,
            Method::GET,
            &format!("/v2/redis/database/{p_id}"),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    // Backups of a team database name the team too.
    env.call_as(
        team,
        Method::POST,
        &format!("/v2/redis/create-backup/{t_id}"),
        Some(json!({"name": "b"})),
    )
    .await;
    let (_, backups) = env
        .call_as(
            team,
            Method::GET,
            &format!("/v2/redis/list-backup/{t_id}"),
            None,
        )
        .await;
    assert_eq!(backups[0]["customer_id"], team_id.as_str());

    // move-to-team: unknown team, unknown (or another owner's) database, then a real move.
    let (st, v) = env
        .call_as(
            personal,
            Method::POST,
            "/v2/redis/move-to-team",
            Some(json!({"team_id": "t-1", "database_id": p_id})),
        )
        .await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    assert_eq!(v, s("team not found: t-1"));
    let (st, v) = env
        .call_as(
            personal,
            Method::POST,
            "/v2/redis/move-to-team",
            Some(json!({"team_id": team_id, "database_id": t_id})),
        )
        .await;
    assert_eq!((st, v), (StatusCode::NOT_FOUND, s("database not found")));
    let (st, v) = env
        .call_as(
            personal,
            Method::POST,
            "/v2/redis/move-to-team",
            Some(json!({"team_id": team_id, "database_id": p_id})),
        )
        .await;
    assert_eq!((st, v), (StatusCode::OK, s("OK")));
    assert!(list(personal).await.is_empty());
    assert_eq!(list(team).await, vec!["mine", "shared"]);
    let (_, moved) = env
        .call_as(
            team,
            Method::GET,
            &format!("/v2/redis/database/{p_id}"),
            None,
        )
        .await;
    assert_eq!(moved["customer_id"], team_id.as_str());

    // Teams made through the API: members added and removed by the owner; a team with
    // databases cannot be deleted, an empty one can.
    let (st, made) = env
        .call_as(
            personal,
            Method::POST,
            "/v2/team",
            Some(json!({"team_name": "Data", "copy_cc": true})),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{made}");
    assert_eq!(made["team_name"], "Data");
    assert_eq!(made["copy_cc"], true);
    let data_id = made["team_id"].as_str().unwrap();
    let (st, m) = env
        .call_as(
            personal,
            Method::POST,
            "/v2/teams/member",
            Some(json!({"team_id": data_id, "member_email": EMAIL2, "member_role": "admin"})),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{m}");
    assert_eq!(m["member_role"], "admin");
    let (st, _) = env
        .call_as(
            personal,
            Method::POST,
            "/v2/teams/member",
            Some(
                json!({"team_id": data_id, "member_email": "x@example.com", "member_role": "boss"}),
            ),
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    let (_, teams2) = env
        .call_as((EMAIL2, KEY2), Method::GET, "/v2/teams", None)
        .await;
    assert_eq!(teams2.as_array().unwrap().len(), 2, "{teams2}");
    let (st, v) = env
        .call_as(
            personal,
            Method::DELETE,
            "/v2/teams/member",
            Some(json!({"team_id": data_id, "member_email": EMAIL2})),
        )
        .await;
    assert_eq!((st, v), (StatusCode::OK, s("OK")));
    let (st, v) = env
        .call_as(
            personal,
            Method::DELETE,
            &format!("/v2/team/{team_id}"),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert!(v.as_str().unwrap().contains("databases"), "{v}");
    let (st, v) = env
        .call_as(
            personal,
            Method::DELETE,
            &format!("/v2/team/{data_id}"),
            None,
        )
        .await;
    assert_eq!((st, v), (StatusCode::OK, s("OK")));
    let (st, _) = env
        .call_as(personal, Method::GET, &format!("/v2/teams/{data_id}"), None)
        .await;
    assert_eq!(st, StatusCode::NOT_FOUND);

    // A member removed from the team loses its team key.
    env.call_as(
        personal,
        Method::DELETE,
        "/v2/teams/member",
        Some(json!({"team_id": team_id, "member_email": EMAIL2})),
    )
    .await;
    let (st, _) = env
        .call_as(
            (EMAIL2, TEAM_KEY2),
            Method::GET,
            "/v2/redis/databases",
            None,
        )
        .await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);

    // Team keys added through the control API join the team by name.
    let (st, added) = env
        .control(
            Method::POST,
            "/accounts",
            Some(
                json!({"email": "new@example.com", "api_key": "new-team-key", "team": "Platform"}),
            ),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{added}");
    assert_eq!(added["team_id"], team_id.as_str());
    assert_eq!(
        list(("new@example.com", "new-team-key")).await,
        vec!["mine", "shared"]
    );
}

#[tokio::test]
async fn read_only_keys_read_and_are_refused_every_change_before_any_lookup() {
    let env = start_with(config().with_read_only_key(EMAIL, "ro-key")).await;
    let db = env.create("ro").await;
    let id = db["database_id"].as_str().unwrap();
    let ro = (EMAIL, "ro-key");
    // Reads work and see the person's databases.
    let (st, list) = env
        .call_as(ro, Method::GET, "/v2/redis/databases", None)
        .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(list[0]["database_id"], id);
    for path in [
        format!("/v2/redis/database/{id}"),
        format!("/v2/redis/stats/{id}"),
        format!("/v2/redis/list-backup/{id}"),
        "/v2/teams".to_string(),
    ] {
        let (st, v) = env.call_as(ro, Method::GET, &path, None).await;
        assert_eq!(st, StatusCode::OK, "{path}: {v}");
    }
    // The MCP server's probe: a normal key gets "database not found", a read-only key
    // "Readonly API key", before the id is looked up.
    let probe = "/v2/redis/database/readonly-check-nonexistent";
    let (st, v) = env.call(Method::DELETE, probe, None).await;
    assert_eq!((st, v), (StatusCode::NOT_FOUND, s("database not found")));
    let (st, v) = env.call_as(ro, Method::DELETE, probe, None).await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    assert!(v.as_str().unwrap().contains("Readonly API key"), "{v}");
    for (m, path, body) in [
        (Method::DELETE, format!("/v2/redis/database/{id}"), None),
        (
            Method::POST,
            "/v2/redis/database".to_string(),
            Some(json!({"database_name": "x", "region": "global", "primary_region": "us-east-1"})),
        ),
        (Method::POST, format!("/v2/redis/reset-password/{id}"), None),
        (
            Method::PATCH,
            format!("/v2/redis/update-budget/{id}"),
            Some(json!({"budget": 100})),
        ),
        (
            Method::POST,
            format!("/v2/redis/create-backup/{id}"),
            Some(json!({"name": "b"})),
        ),
        (
            Method::POST,
            "/v2/redis/move-to-team".to_string(),
            Some(json!({"team_id": "t", "database_id": id})),
        ),
        (
            Method::POST,
            "/v2/team".to_string(),
            Some(json!({"team_name": "T"})),
        ),
    ] {
        let (st, v) = env.call_as(ro, m.clone(), &path, body).await;
        assert_eq!(st, StatusCode::FORBIDDEN, "{m} {path}");
        assert!(v.as_str().unwrap().contains("Readonly API key"), "{v}");
    }
    // Nothing changed.
    let (_, after) = env.get(&format!("/v2/redis/database/{id}")).await;
    assert_eq!(after["password"], db["password"]);
    assert_eq!(after["budget"], 0);
    assert_eq!(
        env.get("/v2/redis/databases")
            .await
            .1
            .as_array()
            .unwrap()
            .len(),
        1
    );
    // Read-only keys added through the control API behave the same.
    let (st, _) = env
        .control(
            Method::POST,
            "/accounts",
            Some(json!({"email": EMAIL2, "api_key": "ro2", "readonly": true})),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    let (st, _) = env
        .call_as((EMAIL2, "ro2"), Method::DELETE, probe, None)
        .await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let (_, keys) = env.control(Method::GET, "/keys", None).await;
    assert!(
        keys.as_array()
            .unwrap()
            .iter()
            .any(|k| k["email"] == EMAIL2 && k["readonly"] == true)
    );
    assert!(
        !keys.to_string().contains("ro2"),
        "key values are never shown"
    );
}

#[tokio::test]
async fn terraform_requests_null_clears_lists_and_names_may_have_spaces() {
    let env = start().await;
    // The provider's own example name, and `read_regions: null` on create.
    let (st, db) = env
        .post(
            "/v2/redis/database",
            json!({"database_name": "Terraform DB6", "region": "global", "primary_region": "us-east-1", "read_regions": null}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{db}");
    assert_eq!(db["database_name"], "Terraform DB6");
    assert_eq!(db["read_regions"], json!([]));
    let id = db["database_id"].as_str().unwrap();
    let get = || async { env.get(&format!("/v2/redis/database/{id}")).await.1 };
    let (st, v) = env
        .post(
            &format!("/v2/redis/rename/{id}"),
            json!({"name": "Orders cache (prod)"}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(get().await["database_name"], "Orders cache (prod)");

    env.post(
        &format!("/v2/redis/update-allowlist/{id}"),
        json!({"allowed_ips": ["10.0.0.0/8"]}),
    )
    .await;
    assert_eq!(get().await["allowed_ip_ranges"], json!(["10.0.0.0/8"]));
    let (st, v) = env
        .post(
            &format!("/v2/redis/update-allowlist/{id}"),
            json!({"allowed_ips": null}),
        )
        .await;
    assert_eq!((st, v), (StatusCode::OK, s("OK")));
    let got = get().await;
    assert_eq!(got["allowed_ip_ranges"], json!([]));
    assert_eq!(got["securityAddons"]["ipWhitelisting"], false);

    env.post(
        &format!("/v2/redis/update-regions/{id}"),
        json!({"read_regions": ["eu-west-1"]}),
    )
    .await;
    assert_eq!(get().await["read_regions"], json!(["eu-west-1"]));
    let (st, v) = env
        .post(
            &format!("/v2/redis/update-regions/{id}"),
            json!({"read_regions": null}),
        )
        .await;
    assert_eq!((st, v), (StatusCode::OK, s("OK")));
    let got = get().await;
    assert_eq!(got["read_regions"], json!([]));
    assert_eq!(got["all_members"], json!(["us-east-1"]));
    // A missing field is still an error (it is not "clear").
    let (st, _) = env
        .post(&format!("/v2/redis/update-regions/{id}"), json!({}))
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn budget_is_in_cents_and_a_spent_budget_rate_limits_the_data_plane() {
    let env = start().await;
    let (st, db) = env
        .post(
            "/v2/redis/database",
            json!({"database_name": "b", "region": "global", "primary_region": "us-east-1", "budget": 2000}),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    // Stored and answered as sent: 2000 cents = $20.
    assert_eq!(db["budget"], 2000);
    let id = db["database_id"].as_str().unwrap();
    env.data(&db, json!(["SET", "k", "v"])).await;
    // $19.99 spent of $20: still served.
    let (st, _) = env
        .control(
            Method::PATCH,
            &format!("/databases/{id}/stats"),
            Some(json!({"total_monthly_billing": 19.99})),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(
        env.data(&db, json!(["GET", "k"])).await,
        (StatusCode::OK, json!({"result": "v"}))
    );
    // $20 spent: refused.
    env.control(
        Method::PATCH,
        &format!("/databases/{id}/stats"),
        Some(json!({"total_monthly_billing": 20.0})),
    )
    .await;
    let (st, v) = env.data(&db, json!(["GET", "k"])).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert!(v["error"].as_str().unwrap().contains("budget"), "{v}");
    // A larger budget (in cents) lifts it.
    let (st, _) = env
        .call(
            Method::PATCH,
            &format!("/v2/redis/update-budget/{id}"),
            Some(json!({"budget": 5000})),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(
        env.get(&format!("/v2/redis/database/{id}")).await.1["budget"],
        5000
    );
    assert_eq!(env.data(&db, json!(["GET", "k"])).await.0, StatusCode::OK);
}
