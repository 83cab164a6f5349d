//! ACL users (`spec.users`) with the operator as a process, the real control plane and the
//! emulator (whose real Redis engines enforce the users): real clients scoped to their prefixes,
//! read-only users, out-of-band deletion, restore, rotation of one user (on request and on its
//! schedule, with the workloads listed for it restarted), the instance's presets and templates in
//! the users' Secrets, removal, and the free plan refused without a single ACL call.

use std::{collections::BTreeMap, path::Path, process::Stdio, time::Duration};

use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api,
    api::{Patch, PatchParams},
};
use serde_json::{Value, json};
use upstash_operator::{
    controller::restarts::{instance_key, parse, user_key},
    crd::CacheInstance,
};

use crate::support::{
    FAST_ROTATIONS_AND_RESTARTS, apply_manifest, create_deployment, events_for, instance,
    redis_connect, repo_path, rest_command, restart_stamp, secret_data, start_stack, witness_pass,
};

const TIMEOUT: Duration = Duration::from_secs(60);

/// Applies `spec` and waits until the pass that saw it finished with `Ready` and `UsersReady`
/// true.
async fn apply_and_settle(
    client: &kube::Client,
    ns: &str,
    name: &str,
    spec: &Value,
) -> CacheInstance {
    apply_manifest(client, ns, &instance(name, spec.clone()))
        .await
        .unwrap();
    let api: Api<CacheInstance> = Api::namespaced(client.clone(), ns);
    let generation = api.get(name).await.unwrap().metadata.generation;
    testkit::wait_for(
        &format!("{name} to settle with its users"),
        TIMEOUT,
        || async {
            let obj = api.get(name).await.map_err(|e| e.to_string())?;
            let s = obj.status.as_ref().ok_or("no status yet")?;
            let is = |t: &str| {
                s.conditions
                    .iter()
                    .any(|c| c.type_ == t && c.status == "True")
            };
            if s.observed_generation == generation && is("Ready") && is("UsersReady") {
                Ok(obj)
            } else {
                Err(format!("{:?}", s.conditions))
            }
        },
    )
    .await
}

async fn secret(client: &kube::Client, ns: &str, name: &str) -> BTreeMap<String, String> {
    let api: Api<Secret> = Api::namespaced(client.clone(), ns);
    secret_data(
        &api.get(name)
            .await
            .unwrap_or_else(|e| panic!("Secret {name}: {e}")),
    )
}

/// `ACL USERS` with the database's own token.
async fn acl_users(main: &BTreeMap<String, String>, ca: &Path) -> Vec<String> {
    let (status, v) = rest_command(
        &main["UPSTASH_REDIS_REST_URL"],
        &main["UPSTASH_REDIS_REST_TOKEN"],
        ca,
        json!(["ACL", "USERS"]),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    serde_json::from_value(v["result"].clone()).unwrap()
}

/// Runs `emulator/clients/acl.mjs` (`@upstash/redis` over REST, `ioredis` over `REDIS_URL`)
/// with a user's Secret; returns what each transport answered.
async fn node_app(
    secret: &BTreeMap<String, String>,
    ca: &Path,
    allowed: &str,
    denied: &str,
) -> Value {
    let dir = repo_path("emulator/clients");
    if !dir.join("node_modules/ioredis/package.json").exists() {
        let out = tokio::process::Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--prefix"])
            .arg(&dir)
            .stdin(Stdio::null())
            .output()
            .await
            .expect("npm runs (Node.js 20+)");
        assert!(out.status.success(), "npm ci in {} failed", dir.display());
    }
    let out = tokio::process::Command::new("node")
        .arg("acl.mjs")
        .current_dir(&dir)
        .env("NODE_EXTRA_CA_CERTS", ca)
        .env("UPSTASH_REDIS_REST_URL", &secret["UPSTASH_REDIS_REST_URL"])
        .env(
            "UPSTASH_REDIS_REST_TOKEN",
            &secret["UPSTASH_REDIS_REST_TOKEN"],
        )
        .env("REDIS_URL", &secret["REDIS_URL"])
        .env("ALLOWED_PREFIX", allowed)
        .env("DENIED_PREFIX", denied)
        .stdin(Stdio::null())
        .output()
        .await
        .expect("node runs (Node.js 20+)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "node acl.mjs failed: {stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|_| panic!("not JSON: {stdout}"))
}

/// How many times Events with `reason` whose note contains `text` happened (a repeated Event
/// counts its series up instead of being created again).
async fn occurrences(client: &kube::Client, ns: &str, name: &str, reason: &str, text: &str) -> i32 {
    use k8s_openapi::api::events::v1::Event;
    Api::<Event>::namespaced(client.clone(), ns)
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .iter()
        .filter(|e| {
            e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name)
                && e.reason.as_deref() == Some(reason)
                && e.note.as_deref().is_some_and(|n| n.contains(text))
        })
        .map(|e| e.series.as_ref().map_or(1, |s| s.count))
        .sum()
}

fn refused(v: &Value, transport: &str, what: &str) -> bool {
    v[transport][what]["error"]
        .as_str()
        .is_some_and(|e| e.contains("NOPERM"))
}

#[tokio::test]
async fn each_application_gets_a_user_scoped_to_its_prefix() {
    let cluster = testkit::cluster().await;
    let ns = cluster.namespace("acl-users").await;
    let stack = start_stack(&ns, &[]).await;
    let client = ns.client().await;
    let ca = stack.emulator.ca_file().to_path_buf();
    let spec = json!({
        "primaryRegion": "us-east-1",
        "keyPrefix": "a:",
        "users": [
            {"name": "a"},
            {"name": "b", "keys": ["b:*"]},
            {"name": "reader", "readOnly": true},
        ],
    });
    apply_and_settle(&client, ns.name(), "shop", &spec).await;

    let main = secret(&client, ns.name(), "shop").await;
    let a = secret(&client, ns.name(), "shop-a").await;
    let b = secret(&client, ns.name(), "shop-b").await;
    let reader = secret(&client, ns.name(), "shop-reader").await;
    assert!(
        a["REDIS_URL"].starts_with("rediss://a:"),
        "the user's name is in REDIS_URL"
    );
    assert_eq!(a["REDIS_KEY_PREFIX"], "a:");
    assert_eq!(a["REDIS_TLS_ENABLED"], "true");
    assert_eq!(a["UPSTASH_REDIS_REST_URL"], main["UPSTASH_REDIS_REST_URL"]);
    assert_ne!(
        a["UPSTASH_REDIS_REST_TOKEN"],
        main["UPSTASH_REDIS_REST_TOKEN"]
    );
    assert_ne!(a["REDIS_PASSWORD"], b["REDIS_PASSWORD"]);
    let mut users = acl_users(&main, &ca).await;
    users.sort();
    assert_eq!(users, ["a", "b", "default", "reader"]);
    rest_command(
        &main["UPSTASH_REDIS_REST_URL"],
        &main["UPSTASH_REDIS_REST_TOKEN"],
        &ca,
        json!(["SET", "a:seed", "s"]),
    )
    .await;

    // User a, with @upstash/redis over REST and ioredis over REDIS_URL.
    let v = node_app(&a, &ca, "a:", "b:").await;
    for t in ["rest", "resp"] {
        assert_eq!(v[t]["set"]["ok"], "OK", "{v}");
        assert_eq!(v[t]["get"]["ok"], format!("v-{t}"), "{v}");
        for what in ["deniedGet", "deniedSet", "flushall"] {
            assert!(refused(&v, t, what), "{t} {what}: {v}");
        }
    }
    // User b with redis-rs: its own prefix only.
    let mut con = redis_connect(&b["REDIS_URL"], &ca).await.unwrap();
    let () = redis::cmd("SET")
        .arg(&["b:1", "x"])
        .query_async(&mut con)
        .await
        .unwrap();
    let err = redis::cmd("GET")
        .arg("a:seed")
        .query_async::<Option<String>>(&mut con)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("NOPERM"), "{err}");
    // The read-only user reads and cannot write.
    let v = node_app(&reader, &ca, "a:", "b:").await;
    for t in ["rest", "resp"] {
        assert_eq!(v[t]["read"]["ok"], "s", "{v}");
        assert!(refused(&v, t, "set"), "{t}: {v}");
    }

    let events = events_for(&client, ns.name(), "shop").await;
    assert!(
        events
            .iter()
            .any(|e| e.0 == "AclUserCreated" && e.2.contains("a, b, reader")),
        "one Event names the users created: {events:?}"
    );
    // No password or token in Events, status or the operator's log.
    let status = serde_json::to_string(
        &Api::<CacheInstance>::namespaced(client.clone(), ns.name())
            .get("shop")
            .await
            .unwrap()
            .status,
    )
    .unwrap();
    let text = format!("{events:?} {status} {}", stack.operator.logs());
    for s in [&a, &b, &reader] {
        assert!(!text.contains(&s["REDIS_PASSWORD"]));
        assert!(!text.contains(&s["UPSTASH_REDIS_REST_TOKEN"]));
    }
}

#[tokio::test]
async fn users_come_back_after_deletion_and_restore_and_rotate_one_at_a_time() {
    let cluster = testkit::cluster().await;
    let ns = cluster.namespace("acl-drift").await;
    let stack = start_stack(&ns, &[]).await;
    let client = ns.client().await;
    let ca = stack.emulator.ca_file().to_path_buf();
    let mut spec = json!({
        "primaryRegion": "us-east-1",
        "keyPrefix": "a:",
        "users": [{"name": "a"}, {"name": "b", "keys": ["b:*"]}],
    });
    apply_and_settle(&client, ns.name(), "shop", &spec).await;
    let main = secret(&client, ns.name(), "shop").await;
    let (url, token) = (
        main["UPSTASH_REDIS_REST_URL"].clone(),
        main["UPSTASH_REDIS_REST_TOKEN"].clone(),
    );

    // Deleted outside Kubernetes: back after one pass, with one Event.
    let (status, v) = rest_command(&url, &token, &ca, json!(["ACL", "DELUSER", "a"])).await;
    assert_eq!((status, &v), (200, &json!({"result": 1})));
    witness_pass(&stack.operator, &client, ns.name(), "shop").await;
    let mut users = acl_users(&main, &ca).await;
    users.sort();
    assert_eq!(users, ["a", "b", "default"]);
    let a = secret(&client, ns.name(), "shop-a").await;
    let mut con = redis_connect(&a["REDIS_URL"], &ca).await.unwrap();
    let () = redis::cmd("SET")
        .arg(&["a:1", "x"])
        .query_async(&mut con)
        .await
        .unwrap();
    // (Events are published in the background: waited for, then checked to stay at one.)
    let drift = || occurrences(&client, ns.name(), "shop", "DriftCorrected", "missing");
    testkit::wait_for("one DriftCorrected Event", TIMEOUT, || async {
        drift().await == 1
    })
    .await;
    witness_pass(&stack.operator, &client, ns.name(), "shop").await;
    let events = events_for(&client, ns.name(), "shop").await;
    assert_eq!(drift().await, 1, "{events:?}");

    // Rotating a changes a's Secret and password only; its old password fails.
    let b_before = secret(&client, ns.name(), "shop-b").await;
    Api::<CacheInstance>::namespaced(client.clone(), ns.name())
        .patch(
            "shop",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {
                "cache.upstash-operator.dev/rotate-user-a": "r1"}}})),
        )
        .await
        .unwrap();
    let rotated = testkit::wait_for("user a's new password", TIMEOUT, || async {
        let api: Api<Secret> = Api::namespaced(client.clone(), ns.name());
        let data = secret_data(&api.get("shop-a").await.ok()?);
        (data["REDIS_PASSWORD"] != a["REDIS_PASSWORD"]).then_some(data)
    })
    .await;
    assert_ne!(
        rotated["UPSTASH_REDIS_REST_TOKEN"],
        a["UPSTASH_REDIS_REST_TOKEN"]
    );
    let err = redis_connect(&a["REDIS_URL"], &ca).await.unwrap_err();
    assert_eq!(err.kind(), redis::ErrorKind::AuthenticationFailed, "{err}");
    let (status, _) = rest_command(
        &url,
        &a["UPSTASH_REDIS_REST_TOKEN"],
        &ca,
        json!(["GET", "a:1"]),
    )
    .await;
    assert_eq!(status, 401, "the old token stops working");
    assert!(redis_connect(&rotated["REDIS_URL"], &ca).await.is_ok());
    witness_pass(&stack.operator, &client, ns.name(), "shop").await;
    assert_eq!(secret(&client, ns.name(), "shop-b").await, b_before);
    assert!(redis_connect(&b_before["REDIS_URL"], &ca).await.is_ok());
    let main_after = secret(&client, ns.name(), "shop").await;
    assert_eq!(main_after, main, "the main Secret is untouched");

    // A restore drops the users; the operator creates them again with the same passwords.
    spec["backup"] = json!({"requestId": "b1"});
    apply_and_settle(&client, ns.name(), "shop", &spec).await;
    spec["restore"] = json!({"requestId": "r1", "backupName": "b1"});
    let obj = apply_and_settle(&client, ns.name(), "shop", &spec).await;
    assert_eq!(obj.status.unwrap().restore.unwrap().result, "Succeeded");
    let mut users = acl_users(&main, &ca).await;
    users.sort();
    assert_eq!(users, ["a", "b", "default"]);
    let a_now = secret(&client, ns.name(), "shop-a").await;
    assert_eq!(a_now["REDIS_PASSWORD"], rotated["REDIS_PASSWORD"]);
    let mut con = redis_connect(&a_now["REDIS_URL"], &ca).await.unwrap();
    let v: Option<String> = redis::cmd("GET")
        .arg("a:1")
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(v.as_deref(), Some("x"), "the data is the backup's");
    let (status, _) = rest_command(
        &url,
        &a_now["UPSTASH_REDIS_REST_TOKEN"],
        &ca,
        json!(["GET", "a:1"]),
    )
    .await;
    assert_eq!(status, 200, "the Secret's token works after the restore");
    testkit::wait_for(
        "one more DriftCorrected after the restore",
        TIMEOUT,
        || async {
            let n = drift().await;
            if n == 2 {
                Ok(())
            } else {
                Err(format!(
                    "{n}: {:?}",
                    events_for(&client, ns.name(), "shop").await
                ))
            }
        },
    )
    .await;

    // Removing b deletes it in Redis and its Secret; a stays.
    spec["users"] = json!([{"name": "a"}]);
    apply_and_settle(&client, ns.name(), "shop", &spec).await;
    assert_eq!(acl_users(&main, &ca).await, ["a", "default"]);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns.name());
    assert!(secrets.get_opt("shop-b").await.unwrap().is_none());
    assert!(secrets.get_opt("shop-a").await.unwrap().is_some());
}

#[tokio::test]
async fn the_free_plan_gets_a_condition_and_no_acl_call() {
    let cluster = testkit::cluster().await;
    let ns = cluster.namespace("acl-free").await;
    let stack = start_stack(&ns, &[]).await;
    let client = ns.client().await;

    // Refused at admission, naming the field.
    let err = apply_manifest(
        &client,
        ns.name(),
        &instance(
            "free",
            json!({"primaryRegion": "us-east-1", "plan": "free", "users": [{"name": "a"}]}),
        ),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("spec.users"), "{err}");

    // A free database, then users with the plan left out (admission cannot tell).
    apply_manifest(
        &client,
        ns.name(),
        &instance(
            "free",
            json!({"primaryRegion": "us-east-1", "plan": "free"}),
        ),
    )
    .await
    .unwrap();
    let api: Api<CacheInstance> = Api::namespaced(client.clone(), ns.name());
    testkit::wait_for_condition(&api, "free", "Ready", "True", TIMEOUT).await;
    let mark = stack.emulator.mark().await;
    apply_manifest(
        &client,
        ns.name(),
        &instance(
            "free",
            json!({"primaryRegion": "us-east-1", "users": [{"name": "a"}]}),
        ),
    )
    .await
    .unwrap();
    let obj = testkit::wait_for_condition(&api, "free", "UsersReady", "False", TIMEOUT).await;
    let cond = obj
        .status
        .unwrap()
        .conditions
        .into_iter()
        .find(|c| c.type_ == "UsersReady")
        .unwrap();
    assert_eq!(cond.reason, "FreePlan");
    assert!(cond.message.contains("free plan"), "{}", cond.message);
    // More passes, and still no data-plane call at all.
    witness_pass(&stack.operator, &client, ns.name(), "free").await;
    let data = stack.emulator.data_calls_since(mark).await;
    assert!(data.is_empty(), "{data:?}");
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns.name());
    assert!(secrets.get_opt("free-a").await.unwrap().is_none());
}

#[tokio::test]
async fn with_the_default_user_off_the_main_password_fails_and_users_are_still_managed() {
    let cluster = testkit::cluster().await;
    let ns = cluster.namespace("acl-default").await;
    let stack = start_stack(&ns, &[]).await;
    let client = ns.client().await;
    let ca = stack.emulator.ca_file().to_path_buf();
    let mut spec = json!({
        "primaryRegion": "us-east-1",
        "keyPrefix": "a:",
        "users": [{"name": "a"}],
        "defaultUser": "Disabled",
    });
    let obj = apply_and_settle(&client, ns.name(), "shop", &spec).await;
    let id = obj.status.unwrap().database_id.unwrap();
    let main = secret(&client, ns.name(), "shop").await;
    let err = redis_connect(&main["REDIS_URL"], &ca).await.unwrap_err();
    assert_eq!(err.kind(), redis::ErrorKind::AuthenticationFailed, "{err}");
    let (status, _) = rest_command(
        &main["UPSTASH_REDIS_REST_URL"],
        &main["UPSTASH_REDIS_REST_TOKEN"],
        &ca,
        json!(["GET", "a:1"]),
    )
    .await;
    assert_eq!(status, 401);
    let db = stack.emulator.database(&id).await.unwrap();
    assert_eq!(db["db_acl_default_user_status"], "false");
    assert_eq!(db["db_acl_enabled"], "true");
    let a = secret(&client, ns.name(), "shop-a").await;
    let mut con = redis_connect(&a["REDIS_URL"], &ca).await.unwrap();
    let () = redis::cmd("SET")
        .arg(&["a:1", "x"])
        .query_async(&mut con)
        .await
        .unwrap();
    let events = events_for(&client, ns.name(), "shop").await;
    assert!(
        events.iter().any(|e| e.0 == "DefaultUserDisabled"),
        "{events:?}"
    );

    // The operator still manages users, with a user of its own.
    spec["users"] = json!([{"name": "a"}, {"name": "b", "keys": ["b:*"]}]);
    apply_and_settle(&client, ns.name(), "shop", &spec).await;
    let b = secret(&client, ns.name(), "shop-b").await;
    let mut con = redis_connect(&b["REDIS_URL"], &ca).await.unwrap();
    let () = redis::cmd("SET")
        .arg(&["b:1", "y"])
        .query_async(&mut con)
        .await
        .unwrap();
    let own = secret(&client, ns.name(), "shop-upstash-operator").await;
    assert_eq!(own["REDIS_USERNAME"], "upstash-operator");
    assert!(redis_connect(&main["REDIS_URL"], &ca).await.is_err());

    // Enabled: the main password works again.
    spec["defaultUser"] = json!("Enabled");
    apply_and_settle(&client, ns.name(), "shop", &spec).await;
    assert!(redis_connect(&main["REDIS_URL"], &ca).await.is_ok());
}

#[tokio::test]
async fn observe_mode_reports_user_drift_and_changes_nothing() {
    let cluster = testkit::cluster().await;
    let ns = cluster.namespace("acl-observe").await;
    let stack = start_stack(&ns, &[]).await;
    let client = ns.client().await;
    let ca = stack.emulator.ca_file().to_path_buf();
    let mut spec = json!({
        "primaryRegion": "us-east-1",
        "keyPrefix": "a:",
        "users": [{"name": "a"}],
    });
    apply_and_settle(&client, ns.name(), "shop", &spec).await;
    let main = secret(&client, ns.name(), "shop").await;
    spec["managementPolicy"] = json!("Observe");
    apply_and_settle(&client, ns.name(), "shop", &spec).await;

    // Deleted outside Kubernetes while only observed: reported, not re-created.
    let (status, _) = rest_command(
        &main["UPSTASH_REDIS_REST_URL"],
        &main["UPSTASH_REDIS_REST_TOKEN"],
        &ca,
        json!(["ACL", "DELUSER", "a"]),
    )
    .await;
    assert_eq!(status, 200);
    witness_pass(&stack.operator, &client, ns.name(), "shop").await;
    let api: Api<CacheInstance> = Api::namespaced(client.clone(), ns.name());
    let obj = api.get("shop").await.unwrap();
    let cond = obj
        .status
        .unwrap()
        .conditions
        .into_iter()
        .find(|c| c.type_ == "UsersReady")
        .unwrap();
    assert_eq!(
        (cond.status.as_str(), cond.reason.as_str()),
        ("False", "Drifted")
    );
    assert!(
        cond.message.contains("ACL user a is missing"),
        "{}",
        cond.message
    );
    assert_eq!(
        acl_users(&main, &ca).await,
        ["default"],
        "nothing re-created"
    );
    witness_pass(&stack.operator, &client, ns.name(), "shop").await;
    testkit::wait_for("one AclDrifted Event", TIMEOUT, || async {
        occurrences(
            &client,
            ns.name(),
            "shop",
            "AclDrifted",
            "ACL user a is missing",
        )
        .await
            == 1
    })
    .await;

    // Back to Full: the user is created again.
    spec["managementPolicy"] = json!("Full");
    apply_and_settle(&client, ns.name(), "shop", &spec).await;
    let mut users = acl_users(&main, &ca).await;
    users.sort();
    assert_eq!(users, ["a", "default"]);
}

/// `status.users` once it names every user in `names` with a next rotation time.
async fn user_statuses(
    client: &kube::Client,
    ns: &str,
    name: &str,
    names: &[&str],
) -> Vec<upstash_operator::crd::UserStatus> {
    let api: Api<CacheInstance> = Api::namespaced(client.clone(), ns);
    testkit::wait_for("status.users", TIMEOUT, || async {
        let users = api.get(name).await.ok()?.status?.users;
        let complete = names.iter().all(|n| {
            users
                .iter()
                .any(|u| u.name == *n && u.next_rotation_time.is_some())
        });
        complete.then_some(users)
    })
    .await
}

#[tokio::test]
async fn a_user_on_its_schedule_is_rotated_alone() {
    let cluster = testkit::cluster().await;
    let ns = cluster.namespace("acl-schedule").await;
    let stack = start_stack(&ns, &[]).await;
    let client = ns.client().await;
    let ca = stack.emulator.ca_file().to_path_buf();
    let spec = json!({
        "primaryRegion": "us-east-1",
        "users": [
            {"name": "a", "rotation": {"every": "1h"}},
            {"name": "b", "rotation": {"every": "1h"}},
        ],
    });
    apply_and_settle(&client, ns.name(), "shop", &spec).await;
    let users = user_statuses(&client, ns.name(), "shop", &["a", "b"]).await;
    let hour = jiff::SignedDuration::from_hours(1);
    for u in &users {
        let last = u.last_rotation_time.as_ref().unwrap().0;
        assert_eq!(u.next_rotation_time.as_ref().unwrap().0, last + hour);
        assert_eq!(u.secret_name, format!("shop-{}", u.name));
    }
    let a = secret(&client, ns.name(), "shop-a").await;
    let b = secret(&client, ns.name(), "shop-b").await;
    let b_status = users.iter().find(|u| u.name == "b").unwrap().clone();

    // The clock lives in status: move a's last rotation 61 minutes back, as if its hour had
    // passed; b's stays.
    let past = jiff::Timestamp::now()
        .round(jiff::Unit::Second)
        .unwrap()
        .checked_sub(jiff::SignedDuration::from_mins(61))
        .unwrap();
    let api: Api<CacheInstance> = Api::namespaced(client.clone(), ns.name());
    api.patch_status(
        "shop",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"users": [
            {"name": "a", "secretName": "shop-a", "lastRotationTime": past.to_string()},
            serde_json::to_value(&b_status).unwrap(),
        ]}})),
    )
    .await
    .unwrap();
    let rotated = testkit::wait_for("user a's new password", TIMEOUT, || async {
        let api: Api<Secret> = Api::namespaced(client.clone(), ns.name());
        let data = secret_data(&api.get("shop-a").await.ok()?);
        (data["REDIS_PASSWORD"] != a["REDIS_PASSWORD"]).then_some(data)
    })
    .await;
    let err = redis_connect(&a["REDIS_URL"], &ca).await.unwrap_err();
    assert_eq!(err.kind(), redis::ErrorKind::AuthenticationFailed, "{err}");
    assert!(redis_connect(&rotated["REDIS_URL"], &ca).await.is_ok());
    testkit::wait_for("a's clock to restart", TIMEOUT, || async {
        let users = api.get("shop").await.ok()?.status?.users;
        let a = users.iter().find(|u| u.name == "a")?;
        let last = a.last_rotation_time.as_ref()?.0;
        (last > past + hour && a.next_rotation_time.as_ref()?.0 == last + hour).then_some(())
    })
    .await;

    // Later passes leave both users alone: b's Secret and clock are as they were, and a was
    // rotated once.
    witness_pass(&stack.operator, &client, ns.name(), "shop").await;
    assert_eq!(secret(&client, ns.name(), "shop-b").await, b);
    assert!(redis_connect(&b["REDIS_URL"], &ca).await.is_ok());
    assert_eq!(secret(&client, ns.name(), "shop-a").await, rotated);
    let users = api.get("shop").await.unwrap().status.unwrap().users;
    assert_eq!(users.iter().find(|u| u.name == "b"), Some(&b_status));
    let scheduled = || occurrences(&client, ns.name(), "shop", "AclUserRotated", "schedule");
    testkit::wait_for("the AclUserRotated Event", TIMEOUT, || async {
        let n = scheduled().await;
        if n == 1 {
            Ok(())
        } else {
            Err(format!(
                "{n}: {:?}",
                events_for(&client, ns.name(), "shop").await
            ))
        }
    })
    .await;
    witness_pass(&stack.operator, &client, ns.name(), "shop").await;
    let events = events_for(&client, ns.name(), "shop").await;
    assert_eq!(scheduled().await, 1, "{events:?}");
}

/// Sets `cache.upstash-operator.dev/rotate-user-<user>` to `value` and waits for the user's
/// new password.
async fn rotate_user(
    client: &kube::Client,
    ns: &str,
    user: &str,
    value: &str,
    old: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    Api::<CacheInstance>::namespaced(client.clone(), ns)
        .patch(
            "shop",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {
                format!("cache.upstash-operator.dev/rotate-user-{user}"): value}}})),
        )
        .await
        .unwrap();
    testkit::wait_for(&format!("user {user}'s new password"), TIMEOUT, || async {
        let api: Api<Secret> = Api::namespaced(client.clone(), ns);
        let data = secret_data(&api.get(&format!("shop-{user}")).await.ok()?);
        (data["REDIS_PASSWORD"] != old["REDIS_PASSWORD"]).then_some(data)
    })
    .await
}

/// The `credentials-hash` annotation on `d`'s pod template, as entries.
fn stamps(d: &k8s_openapi::api::apps::v1::Deployment) -> Option<BTreeMap<String, String>> {
    restart_stamp(d).as_deref().map(parse)
}

#[tokio::test]
async fn a_workload_listed_for_a_user_restarts_once_when_that_user_rotates() {
    let cluster = testkit::cluster().await;
    let ns = cluster.namespace("acl-restart").await;
    let stack = start_stack(&ns, &[]).await;
    let client = ns.client().await;
    let deployments = create_deployment(&client, ns.name(), "orders", &[]).await;
    let spec = json!({
        "primaryRegion": "us-east-1",
        "users": [
            {"name": "a", "rotation": {"restart": [{"kind": "Deployment", "name": "orders"}]}},
            {"name": "b"},
        ],
    });
    apply_and_settle(&client, ns.name(), "shop", &spec).await;
    let key = user_key(ns.name(), "shop", "a");
    let before = deployments.get("orders").await.unwrap();
    assert_eq!(stamps(&before), None, "creating the user restarts nothing");
    let generation = before.metadata.generation;

    // Rotating b leaves the Deployment alone.
    let b = secret(&client, ns.name(), "shop-b").await;
    rotate_user(&client, ns.name(), "b", "r1", &b).await;
    witness_pass(&stack.operator, &client, ns.name(), "shop").await;
    assert_eq!(
        deployments.get("orders").await.unwrap().metadata.generation,
        generation
    );

    // Rotating a restarts it, once, after the restart window.
    let a = secret(&client, ns.name(), "shop-a").await;
    rotate_user(&client, ns.name(), "a", "r1", &a).await;
    let stamped = testkit::wait_for("the Deployment to be restarted", TIMEOUT, || async {
        let d = deployments.get("orders").await.ok()?;
        stamps(&d).map(|s| (s, d.metadata.generation))
    })
    .await;
    assert_eq!(stamped.1, generation.map(|g| g + 1));
    assert_eq!(
        stamped.0.keys().collect::<Vec<_>>(),
        vec![&key],
        "one entry, user a's: the main Secret's restarts are not involved"
    );
    let restarts = || {
        occurrences(
            &client,
            ns.name(),
            "shop",
            "WorkloadsRestarted",
            "ACL user a",
        )
    };
    testkit::wait_for("the WorkloadsRestarted Event", TIMEOUT, || async {
        restarts().await == 1
    })
    .await;
    witness_pass(&stack.operator, &client, ns.name(), "shop").await;
    let after = deployments.get("orders").await.unwrap();
    assert_eq!(
        (stamps(&after), after.metadata.generation),
        (Some(stamped.0), stamped.1)
    );
    assert_eq!(restarts().await, 1);
}

#[tokio::test]
async fn a_user_and_the_main_secret_rotated_together_restart_a_shared_workload_once() {
    let cluster = testkit::cluster().await;
    let ns = cluster.namespace("acl-coalesce").await;
    let stack = start_stack(&ns, &FAST_ROTATIONS_AND_RESTARTS).await;
    let client = ns.client().await;
    let deployments = create_deployment(&client, ns.name(), "orders", &[]).await;
    let target = json!([{"kind": "Deployment", "name": "orders"}]);
    let spec = json!({
        "primaryRegion": "us-east-1",
        "passwordRotation": {"restart": target},
        "users": [{"name": "a", "rotation": {"restart": target}}],
    });
    apply_and_settle(&client, ns.name(), "shop", &spec).await;
    let (main_key, user_key) = (
        instance_key(ns.name(), "shop"),
        user_key(ns.name(), "shop", "a"),
    );
    // The main Secret's first credentials stamp the instance's entry (a restart of its own).
    let (before, generation) = testkit::wait_for("the instance's first stamp", TIMEOUT, || async {
        let d = deployments.get("orders").await.ok()?;
        let s = stamps(&d)?;
        s.contains_key(&main_key)
            .then(|| (s, d.metadata.generation.unwrap()))
    })
    .await;
    assert!(!before.contains_key(&user_key), "{before:?}");

    // Both rotated by one edit: one restart carries both new entries.
    let (main, a) = (
        secret(&client, ns.name(), "shop").await,
        secret(&client, ns.name(), "shop-a").await,
    );
    Api::<CacheInstance>::namespaced(client.clone(), ns.name())
        .patch(
            "shop",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {
                "cache.upstash-operator.dev/rotate-password": "together",
                "cache.upstash-operator.dev/rotate-user-a": "together",
            }}})),
        )
        .await
        .unwrap();
    for (name, old) in [("shop", &main), ("shop-a", &a)] {
        testkit::wait_for(&format!("{name}'s new password"), TIMEOUT, || async {
            let now = secret(&client, ns.name(), name).await;
            (now["REDIS_PASSWORD"] != old["REDIS_PASSWORD"]).then_some(())
        })
        .await;
    }
    let after = testkit::wait_for("both new entries stamped", TIMEOUT, || async {
        let d = deployments.get("orders").await.ok()?;
        let s = stamps(&d)?;
        (s.get(&main_key) != before.get(&main_key) && s.contains_key(&user_key)).then_some(d)
    })
    .await;
    assert_eq!(
        after.metadata.generation.unwrap(),
        generation + 1,
        "one rollout for the two rotations"
    );

    // Witnessed passes: nothing restarts it again.
    witness_pass(&stack.operator, &client, ns.name(), "shop").await;
    let later = deployments.get("orders").await.unwrap();
    assert_eq!(later.metadata.generation, after.metadata.generation);
    assert_eq!(stamps(&later), stamps(&after));
}

#[tokio::test]
async fn the_instances_templates_and_presets_render_into_each_users_secret() {
    let cluster = testkit::cluster().await;
    let ns = cluster.namespace("acl-templates").await;
    let stack = start_stack(&ns, &[]).await;
    let client = ns.client().await;
    let ca = stack.emulator.ca_file().to_path_buf();
    let mut spec = json!({
        "primaryRegion": "us-east-1",
        "secret": {"templates": {
            "APP_REDIS": "{{ redisUrl }}",
            "APP_TOKEN": "{{ restToken }}",
        }},
        "users": [{"name": "a"}],
    });
    apply_and_settle(&client, ns.name(), "shop", &spec).await;
    let main = secret(&client, ns.name(), "shop").await;
    let a = secret(&client, ns.name(), "shop-a").await;
    assert!(
        a["REDIS_URL"].starts_with("rediss://a:"),
        "the user's own URL"
    );
    assert_eq!(a["APP_REDIS"], a["REDIS_URL"]);
    assert_eq!(a["APP_TOKEN"], a["UPSTASH_REDIS_REST_TOKEN"]);
    assert_eq!(a["REDIS_USERNAME"], "a");
    assert_eq!(
        main["APP_REDIS"], main["REDIS_URL"],
        "the main Secret keeps its own"
    );
    assert_ne!(main["APP_TOKEN"], a["APP_TOKEN"]);
    assert!(redis_connect(&a["APP_REDIS"], &ca).await.is_ok());

    // A preset added to the instance is added to the user's Secret, with the same password.
    spec["secret"]["presets"] = json!(["Env", "ServiceBinding"]);
    apply_and_settle(&client, ns.name(), "shop", &spec).await;
    let api: Api<Secret> = Api::namespaced(client.clone(), ns.name());
    let bound = testkit::wait_for("the ServiceBinding keys", TIMEOUT, || async {
        let s = api.get("shop-a").await.ok()?;
        let data = secret_data(&s);
        data.contains_key("uri").then_some((s.type_, data))
    })
    .await;
    let (kind, data) = bound;
    assert_eq!(kind.as_deref(), Some("servicebinding.io/redis"));
    assert_eq!(data["username"], "a");
    assert_eq!(data["uri"], a["REDIS_URL"]);
    assert_eq!(data["REDIS_PASSWORD"], a["REDIS_PASSWORD"], "not rotated");
    assert_eq!(data["APP_REDIS"], a["APP_REDIS"]);
}
