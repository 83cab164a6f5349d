//! The CacheInstance lifecycle with the operator as a process, the real control plane and the
//! emulator: provision, update, drift, rotation, adoption, deletion, failures.

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api,
    api::{DeleteParams, Patch, PatchParams},
};
use serde_json::{Value, json};
use upstash_operator::crd::CacheInstance;

use crate::support::{
    TEST_MANAGER, apply_manifest, create_deployment, instance, redis_connect, rest_command,
    restart_stamp, secret_data, start_stack,
};

const READY_TIMEOUT: Duration = Duration::from_secs(60);

async fn wait_ready(api: &Api<CacheInstance>, name: &str) -> CacheInstance {
    testkit::wait_for_condition(api, name, "Ready", "True", READY_TIMEOUT).await
}

/// Waits for the connection Secret `name` to carry a new password, and checks that the REST
/// token changed with it.
async fn wait_rotated(
    secrets: &Api<Secret>,
    name: &str,
    old: &std::collections::BTreeMap<String, String>,
) -> std::collections::BTreeMap<String, String> {
    let new = testkit::wait_for(
        "the Secret to get new credentials",
        READY_TIMEOUT,
        || async {
            let data = secret_data(&secrets.get(name).await.ok()?);
            (data["REDIS_PASSWORD"] != old["REDIS_PASSWORD"]).then_some(data)
        },
    )
    .await;
    assert_ne!(
        new["UPSTASH_REDIS_REST_TOKEN"],
        old["UPSTASH_REDIS_REST_TOKEN"]
    );
    new
}

#[tokio::test]
async fn apply_provisions_a_database_and_a_working_secret() {
    let cluster = testkit::cluster().await;
    let ns = cluster.namespace("provision").await;
    let stack = start_stack(&ns, &[]).await;
    let client = ns.client().await;
    apply_manifest(
        &client,
        ns.name(),
        &instance(
            "crm-cache",
            json!({
                "primaryRegion": "us-east-1",
                "readRegions": ["eu-west-1"],
                "budget": 50,
                "eviction": true,
                "keyPrefix": "unite-hub:",
                "secret": {"name": "crm-redis"},
            }),
        ),
    )
    .await
    .unwrap();
    let api: Api<CacheInstance> = Api::namespaced(client.clone(), ns.name());
    let ready = wait_ready(&api, "crm-cache").await;
    let status = ready.status.clone().unwrap();
    let id = status.database_id.clone().expect("status.databaseId");
    assert_eq!(status.binding.as_ref().unwrap().name, "crm-redis");
    assert_eq!(status.observed_generation, ready.metadata.generation);
    assert_eq!(status.plan.as_deref(), Some("payg"));

    // The database in Upstash matches the spec.
    let db = stack
        .emulator
        .database(&id)
        .await
        .expect("database exists in the emulator");
    assert_eq!(db["primary_region"], "us-east-1");
    assert_eq!(db["read_regions"], json!(["eu-west-1"]));
    assert_eq!(db["budget"], 5000, "$50 in cents");
    assert_eq!(db["eviction"], true);
    // Derived from the cluster's identity (the UID of kube-system), the namespace and the name.
    let cluster_id = Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone())
        .get("kube-system")
        .await
        .unwrap()
        .metadata
        .uid
        .unwrap();
    let expected_name =
        upstash_operator::controller::naming::derived_name(&cluster_id, ns.name(), "crm-cache");
    assert!(expected_name.starts_with(&format!("{}-crm-cache-", ns.name())));
    assert_eq!(db["database_name"], expected_name.as_str());

    // Every key of the Secret has the right value.
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns.name());
    let secret = secrets.get("crm-redis").await.unwrap();
    let data = secret_data(&secret);
    let endpoint = db["endpoint"].as_str().unwrap();
    let password = db["password"].as_str().unwrap();
    let host = endpoint.split(':').next().unwrap();
    assert_eq!(
        data.keys().map(String::as_str).collect::<Vec<_>>(),
        [
            "REDIS_KEY_PREFIX",
            "REDIS_PASSWORD",
            "REDIS_TLS_ENABLED",
            "REDIS_URL",
            "UPSTASH_REDIS_REST_TOKEN",
            "UPSTASH_REDIS_REST_URL"
        ]
    );
    assert_eq!(
        data["UPSTASH_REDIS_REST_URL"],
        format!("https://{endpoint}")
    );
    assert_eq!(
        data["UPSTASH_REDIS_REST_TOKEN"],
        db["rest_token"].as_str().unwrap()
    );
    assert_eq!(data["REDIS_PASSWORD"], password);
    let port = db["port"].as_u64().unwrap();
    assert_eq!(
        data["REDIS_URL"],
        format!("rediss://default:{password}@{host}:{port}")
    );
    assert_eq!(data["REDIS_KEY_PREFIX"], "unite-hub:");
    assert_eq!(data["REDIS_TLS_ENABLED"], "true");
    let owner = &secret.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(owner.kind, "CacheInstance");
    assert_eq!(owner.controller, Some(true));

    // A real client works with the Secret's values.
    let url = &data["UPSTASH_REDIS_REST_URL"];
    let token = &data["UPSTASH_REDIS_REST_TOKEN"];
    let ca = stack.emulator.ca_file();
    let (status, body) = rest_command(url, token, ca, json!(["SET", "unite-hub:k", "v1"])).await;
    assert_eq!((status, body), (200, json!({"result": "OK"})));
    let (_, body) = rest_command(url, token, ca, json!(["GET", "unite-hub:k"])).await;
    assert_eq!(body, json!({"result": "v1"}));
    // And a Redis protocol client with REDIS_URL, on the same data.
    let mut redis = redis_connect(&data["REDIS_URL"], ca)
        .await
        .expect("connecting with REDIS_URL");
    let value: String = redis::cmd("GET")
        .arg("unite-hub:k")
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(value, "v1");
    let () = redis::cmd("SET")
        .arg("unite-hub:tcp")
        .arg("v2")
        .query_async(&mut redis)
        .await
        .unwrap();
    let (_, body) = rest_command(url, token, ca, json!(["GET", "unite-hub:tcp"])).await;
    assert_eq!(body, json!({"result": "v2"}));

    // Events: one Provisioned, naming the Secret it wrote.
    let events = crate::support::events_for(&client, ns.name(), "crm-cache").await;
    let provisioned: Vec<_> = events.iter().filter(|e| e.0 == "Provisioned").collect();
    assert_eq!(provisioned.len(), 1, "{events:?}");
    assert!(
        provisioned[0].2.ends_with("; wrote Secret crm-redis"),
        "{events:?}"
    );
    assert!(!events.iter().any(|e| e.0 == "SecretUpdated"), "{events:?}");
}

#[tokio::test]
async fn each_field_change_makes_exactly_its_call_and_a_resync_makes_none() {
    let cluster = testkit::cluster().await;
    let ns = cluster.namespace("updates").await;
    // The reconciler alone: the monitor's first `Healthy` condition is a write of its own.
    let stack = start_stack(
        &ns,
        &["--resync-interval", "3s", "--default-thresholds", "false"],
    )
    .await;
    let client = ns.client().await;
    let spec = json!({"primaryRegion": "us-east-1", "budget": 20});
    apply_manifest(&client, ns.name(), &instance("upd", spec.clone()))
        .await
        .unwrap();
    let api: Api<CacheInstance> = Api::namespaced(client.clone(), ns.name());
    let ready = wait_ready(&api, "upd").await;
    let id = ready.status.unwrap().database_id.unwrap();

    // Steady state: several resyncs, zero mutating calls and zero Kubernetes writes. First a
    // whole resync after Ready, so that nothing of the creation is still on its way.
    let settled = stack.emulator.mark().await;
    stack.emulator.wait_for_reads(&id, settled, 3).await;
    let mark = stack.emulator.mark().await;
    let before = api.get("upd").await.unwrap().metadata.resource_version;
    let secret_before = Api::<Secret>::namespaced(client.clone(), ns.name())
        .get("upd")
        .await
        .unwrap()
        .metadata
        .resource_version;
    // Witness: three reads, so that two whole resyncs ran after the mark.
    stack.emulator.wait_for_reads(&id, mark, 4).await;
    let mutating = stack.emulator.mutating_since(mark).await;
    assert!(
        mutating.is_empty(),
        "steady state made mutating calls: {mutating:?}"
    );
    let after = api.get("upd").await.unwrap();
    assert_eq!(
        after.metadata.resource_version,
        before,
        "status was rewritten: {}",
        serde_json::to_string(&after).unwrap()
    );
    assert_eq!(
        Api::<Secret>::namespaced(client.clone(), ns.name())
            .get("upd")
            .await
            .unwrap()
            .metadata
            .resource_version,
        secret_before,
        "Secret was rewritten"
    );

    // Each mutable field change → exactly its call.
    let cases: Vec<(Value, &str)> = vec![
        (json!({"budget": 75}), "update-budget"),
        (json!({"plan": "fixed_1gb"}), "change-plan"),
        (
            json!({"readRegions": ["eu-west-1", "us-west-1"]}),
            "update-regions",
        ),
        (json!({"eviction": true}), "enable-eviction"),
        (json!({"autoUpgrade": true}), "enable-autoupgrade"),
        (json!({"prodPack": true}), "enable-prodpack"),
        (json!({"eviction": false}), "disable-eviction"),
    ];
    let mut spec = spec;
    for (change, endpoint) in cases {
        stack.emulator.clear_calls().await;
        for (k, v) in change.as_object().unwrap() {
            spec[k] = v.clone();
        }
        apply_manifest(&client, ns.name(), &instance("upd", spec.clone()))
            .await
            .unwrap();
        let generation = api.get("upd").await.unwrap().metadata.generation;
        testkit::wait_for(
            &format!("{endpoint} to be observed"),
            READY_TIMEOUT,
            || async {
                let obj = api.get("upd").await.ok()?;
                let s = obj.status?;
                (s.observed_generation == generation
                    && s.conditions
                        .iter()
                        .any(|c| c.type_ == "Ready" && c.status == "True"))
                .then_some(())
            },
        )
        .await;
        let calls = stack.emulator.calls().await;
        let mutating: Vec<&str> = calls
            .iter()
            .filter(|c| c["method"] != "GET")
            .map(|c| c["endpoint"].as_str().unwrap_or_default())
            .collect();
        assert_eq!(mutating, [endpoint], "after changing {change}");
    }
    let db = stack.emulator.database(&id).await.unwrap();
    assert_eq!(db["budget"], 7500, "$75 in cents");
    assert_eq!(db["read_regions"], json!(["eu-west-1", "us-west-1"]));
    assert_eq!(db["eviction"], false);
    assert_eq!(db["auto_upgrade"], true);
    assert_eq!(db["prod_pack_enabled"], true);
}

#[tokio::test]
async fn drift_is_corrected_and_a_deleted_database_is_recreated() {
    let cluster = testkit::cluster().await;
    let ns = cluster.namespace("drift").await;
    let stack = start_stack(&ns, &["--resync-interval", "2s"]).await;
    let client = ns.client().await;
    apply_manifest(
        &client,
        ns.name(),
        &instance("d", json!({"primaryRegion": "eu-west-1", "budget": 40})),
    )
    .await
    .unwrap();
    let api: Api<CacheInstance> = Api::namespaced(client.clone(), ns.name());
    let ready = wait_ready(&api, "d").await;
    let id = ready.status.unwrap().database_id.unwrap();

    // Someone changes the budget in the Upstash console.
    let (code, _) = stack
        .emulator
        .developer_api(
            reqwest::Method::PATCH,
            &format!("/v2/redis/update-budget/{id}"),
            Some(json!({"budget": 99900})),
        )
        .await;
    assert_eq!(code, 200);
    testkit::wait_for("the budget to be set back to 40", READY_TIMEOUT, || async {
        let db = stack.emulator.database(&id).await?;
        (db["budget"] == 4000).then_some(())
    })
    .await;
    testkit::wait_for("a DriftCorrected Event", READY_TIMEOUT, || async {
        let events = crate::support::events_for(&client, ns.name(), "d").await;
        events
            .iter()
            .any(|e| e.0 == "DriftCorrected" && e.2.contains("budget"))
            .then_some(())
    })
    .await;

    // Someone deletes the database.
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns.name());
    let old_password = secret_data(&secrets.get("d").await.unwrap())["REDIS_PASSWORD"].clone();
    let (code, _) = stack
        .emulator
        .developer_api(
            reqwest::Method::DELETE,
            &format!("/v2/redis/database/{id}"),
            None,
        )
        .await;
    assert_eq!(code, 200);
    let new_id = testkit::wait_for("a new database", READY_TIMEOUT, || async {
        let s = api.get("d").await.ok()?.status?;
        let new_id = s.database_id.filter(|n| *n != id)?;
        s.conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True")
            .then_some(new_id)
    })
    .await;
    let db = stack.emulator.database(&new_id).await.unwrap();
    testkit::wait_for(
        "the Secret to carry the new password",
        READY_TIMEOUT,
        || async {
            let data = secret_data(&secrets.get("d").await.ok()?);
            (data["REDIS_PASSWORD"] == db["password"].as_str().unwrap()
                && data["REDIS_PASSWORD"] != old_password)
                .then_some(())
        },
    )
    .await;
    let events = crate::support::events_for(&client, ns.name(), "d").await;
    assert!(
        events
            .iter()
            .any(|e| e.0 == "DatabaseRecreated" && e.1 == "Warning"),
        "{events:?}"
    );
}

#[tokio::test]
async fn delete_honours_the_deletion_policy() {
    let cluster = testkit::cluster().await;
    let ns = cluster.namespace("delete").await;
    let stack = start_stack(&ns, &[]).await;
    let client = ns.client().await;
    let api: Api<CacheInstance> = Api::namespaced(client.clone(), ns.name());
    apply_manifest(
        &client,
        ns.name(),
        &instance("gone", json!({"primaryRegion": "us-east-1"})),
    )
    .await
    .unwrap();
    apply_manifest(
        &client,
        ns.name(),
        &instance(
            "kept",
            json!({"primaryRegion": "us-east-1", "deletionPolicy": "Retain"}),
        ),
    )
    .await
    .unwrap();
    let gone_id = wait_ready(&api, "gone")
        .await
        .status
        .unwrap()
        .database_id
        .unwrap();
    let kept_id = wait_ready(&api, "kept")
        .await
        .status
        .unwrap()
        .database_id
        .unwrap();

    for name in ["gone", "kept"] {
        api.delete(name, &DeleteParams::default()).await.unwrap();
    }
    for name in ["gone", "kept"] {
        testkit::wait_for(&format!("{name} to be deleted"), READY_TIMEOUT, || async {
            api.get_opt(name).await.ok()?.is_none().then_some(())
        })
        .await;
    }
    assert!(
        stack.emulator.database(&gone_id).await.is_none(),
        "Delete removed the database"
    );
    assert!(
        stack.emulator.database(&kept_id).await.is_some(),
        "Retain kept the database"
    );
    // The garbage collector removes the Secrets through their owner references.
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns.name());
    testkit::wait_for(
        "the Secrets to be garbage-collected",
        Duration::from_secs(60),
        || async {
            (secrets.get_opt("gone").await.ok()?.is_none()
                && secrets.get_opt("kept").await.ok()?.is_none())
            .then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn a_database_already_gone_never_blocks_deletion() {
    let cluster = testkit::cluster().await;
    let ns = cluster.namespace("gone").await;
    let stack = start_stack(&ns, &[]).await;
    let client = ns.client().await;
    let api: Api<CacheInstance> = Api::namespaced(client.clone(), ns.name());
    apply_manifest(
        &client,
        ns.name(),
        &instance("x", json!({"primaryRegion": "us-east-1"})),
    )
    .await
    .unwrap();
    let id = wait_ready(&api, "x")
        .await
        .status
        .unwrap()
        .database_id
        .unwrap();
    // The database disappears in Upstash, then the CacheInstance is deleted.
    stack
        .emulator
        .developer_api(
            reqwest::Method::DELETE,
            &format!("/v2/redis/database/{id}"),
            None,
        )
        .await;
    api.delete("x", &DeleteParams::default()).await.unwrap();
    testkit::wait_for("x to be deleted", READY_TIMEOUT, || async {
        api.get_opt("x").await.ok()?.is_none().then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_foreign_secret_is_left_untouched() {
    let cluster = testkit::cluster().await;
    let ns = cluster.namespace("foreign").await;
    let stack = start_stack(&ns, &[]).await;
    let client = ns.client().await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns.name());
    let foreign: Secret = serde_json::from_value(json!({
        "metadata": {"name": "app-redis"},
        "stringData": {"REDIS_URL": "redis://someone-elses:6379"}
    }))
    .unwrap();
    secrets.create(&Default::default(), &foreign).await.unwrap();
    let before = secrets.get("app-redis").await.unwrap();
    apply_manifest(
        &client,
        ns.name(),
        &instance(
            "f",
            json!({"primaryRegion": "us-east-1", "secret": {"name": "app-redis"}}),
        ),
    )
    .await
    .unwrap();
    let api: Api<CacheInstance> = Api::namespaced(client.clone(), ns.name());
    let obj = testkit::wait_for_condition(&api, "f", "SecretReady", "False", READY_TIMEOUT).await;
    let cond = obj
        .status
        .unwrap()
        .conditions
        .into_iter()
        .find(|c| c.type_ == "SecretReady")
        .unwrap();
    assert_eq!(cond.reason, "SecretConflict");
    assert!(
        cond.message.contains("not owned by this CacheInstance"),
        "{}",
        cond.message
    );
    let ready = api
        .get("f")
        .await
        .unwrap()
        .status
        .unwrap()
        .conditions
        .into_iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "SecretConflict")
    );
    // Witness: the operator looked at it again, and still left the Secret alone.
    crate::support::witness_pass(&stack.operator, &client, ns.name(), "f").await;
    let after = secrets.get("app-redis").await.unwrap();
    assert_eq!(
        after.metadata.resource_version,
        before.metadata.resource_version
    );
    assert_eq!(after.data, before.data);
    let events = crate::support::events_for(&client, ns.name(), "f").await;
    assert_eq!(
        events.iter().filter(|e| e.0 == "SecretConflict").count(),
        1,
        "{events:?}"
    );
}

#[tokio::test]
async fn on_demand_rotation_rewrites_the_secret_and_restarts_the_deployment() {
    let cluster = testkit::cluster().await;
    let ns = cluster.namespace("rotate").await;
    let stack = start_stack(&ns, &[]).await;
    let client = ns.client().await;
    let deployments = create_deployment(&client, ns.name(), "web", &[]).await;
    apply_manifest(
        &client,
        ns.name(),
        &instance(
            "r",
            json!({"primaryRegion": "us-east-1", "passwordRotation": {"every": "90d", "restart": [{"kind": "Deployment", "name": "web"}]}}),
        ),
    )
    .await
    .unwrap();
    let api: Api<CacheInstance> = Api::namespaced(client.clone(), ns.name());
    let ready = wait_ready(&api, "r").await;
    let rotation = ready.status.as_ref().unwrap().rotation.clone().unwrap();
    assert!(
        rotation.next_rotation_time.is_some(),
        "next rotation scheduled"
    );
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns.name());
    let old = secret_data(&secrets.get("r").await.unwrap());
    let first_hash = testkit::wait_for("the Deployment to be stamped", READY_TIMEOUT, || async {
        restart_stamp(&deployments.get("web").await.ok()?)
    })
    .await;

    stack.emulator.clear_calls().await;
    api.patch(
        "r",
        &PatchParams::apply(TEST_MANAGER),
        &Patch::Merge(json!({"metadata": {"annotations": {"cache.upstash-operator.dev/rotate-password": "2026-11-26T00:00:00Z"}}})),
    )
    .await
    .unwrap();
    let new = wait_rotated(&secrets, "r", &old).await;
    assert_eq!(stack.emulator.calls_to("reset-password").await.len(), 1);

    // The old token is refused, the new one works.
    let ca = stack.emulator.ca_file();
    let url = &new["UPSTASH_REDIS_REST_URL"];
    let (old_status, _) =
        rest_command(url, &old["UPSTASH_REDIS_REST_TOKEN"], ca, json!(["PING"])).await;
    assert_eq!(old_status, 401);
    let (new_status, body) =
        rest_command(url, &new["UPSTASH_REDIS_REST_TOKEN"], ca, json!(["PING"])).await;
    assert_eq!((new_status, body), (200, json!({"result": "PONG"})));
    // The same for REDIS_URL: the old password is refused, the new one connects.
    let refused = redis_connect(&old["REDIS_URL"], ca).await.err();
    assert_eq!(
        refused.map(|e| e.kind()),
        Some(redis::ErrorKind::AuthenticationFailed)
    );
    let mut redis = redis_connect(&new["REDIS_URL"], ca).await.unwrap();
    let pong: String = redis::cmd("PING").query_async(&mut redis).await.unwrap();
    assert_eq!(pong, "PONG");

    // The Deployment's pod template changed, and status records the request.
    testkit::wait_for("the Deployment to be restarted", READY_TIMEOUT, || async {
        let hash = restart_stamp(&deployments.get("web").await.ok()?)?;
        (hash != first_hash).then_some(())
    })
    .await;
    let status = testkit::wait_for("status to record the rotation", READY_TIMEOUT, || async {
        let s = api.get("r").await.ok()?.status?;
        (s.rotation.as_ref()?.last_request.as_deref() == Some("2026-11-26T00:00:00Z")).then_some(s)
    })
    .await;
    let rotated_at = status.rotation.unwrap().last_rotation_time.unwrap();
    let created_at = rotation.last_rotation_time.unwrap();
    assert!(
        rotated_at >= created_at,
        "rotated at {rotated_at:?}, created at {created_at:?}"
    );

    // Not repeated on later passes (witness: a whole pass, which reads the database anew).
    let id = status.database_id.clone().unwrap();
    let mark = stack.emulator.mark().await;
    crate::support::witness_pass(&stack.operator, &client, ns.name(), "r").await;
    stack.emulator.wait_for_reads(&id, mark, 2).await;
    assert_eq!(stack.emulator.calls_to("reset-password").await.len(), 1);
}

#[tokio::test]
async fn a_scheduled_rotation_runs_when_its_time_comes() {
    let cluster = testkit::cluster().await;
    let ns = cluster.namespace("schedule").await;
    let stack = start_stack(&ns, &[]).await;
    let client = ns.client().await;
    apply_manifest(
        &client,
        ns.name(),
        &instance(
            "s",
            json!({"primaryRegion": "us-east-1", "passwordRotation": {"every": "1h"}}),
        ),
    )
    .await
    .unwrap();
    let api: Api<CacheInstance> = Api::namespaced(client.clone(), ns.name());
    let ready = wait_ready(&api, "s").await;
    let rotation = ready.status.as_ref().unwrap().rotation.clone().unwrap();
    let created = rotation.last_rotation_time.unwrap().0;
    let hour = jiff::SignedDuration::from_hours(1);
    assert_eq!(rotation.next_rotation_time.unwrap().0, created + hour);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns.name());
    let old = secret_data(&secrets.get("s").await.unwrap());
    stack.emulator.clear_calls().await;

    // The schedule's clock lives in status: move the last rotation 61 minutes back, as if the
    // hour had passed.
    let past = jiff::Timestamp::now()
        .round(jiff::Unit::Second)
        .unwrap()
        .checked_sub(jiff::SignedDuration::from_mins(61))
        .unwrap();
    api.patch_status(
        "s",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"rotation": {
            "lastRotationTime": past.to_string(),
            "nextRotationTime": (past + hour).to_string(),
        }}})),
    )
    .await
    .unwrap();
    let new = wait_rotated(&secrets, "s", &old).await;
    let (status, body) = rest_command(
        &new["UPSTASH_REDIS_REST_URL"],
        &new["UPSTASH_REDIS_REST_TOKEN"],
        stack.emulator.ca_file(),
        json!(["PING"]),
    )
    .await;
    assert_eq!((status, body), (200, json!({"result": "PONG"})));
    assert_eq!(stack.emulator.calls_to("reset-password").await.len(), 1);
    let rotation = testkit::wait_for("status to record the rotation", READY_TIMEOUT, || async {
        let r = api.get("s").await.ok()?.status?.rotation?;
        (r.last_rotation_time.as_ref()?.0 > past + hour).then_some(r)
    })
    .await;
    let last = rotation.last_rotation_time.unwrap().0;
    assert_eq!(rotation.next_rotation_time.unwrap().0, last + hour);
    assert_eq!(rotation.last_request, None, "not an on-demand rotation");
    let events = crate::support::events_for(&client, ns.name(), "s").await;
    let rotated: Vec<_> = events
        .iter()
        .filter(|(reason, _, _)| reason == "PasswordRotated")
        .collect();
    assert_eq!(rotated.len(), 1, "{events:?}");
    assert!(rotated[0].2.ends_with("on schedule"), "{rotated:?}");

    // The next one is an hour away: later passes leave the password alone.
    api.patch(
        "s",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"tier": "web"}}})),
    )
    .await
    .unwrap();
    // Witness: whole passes after the label change, reading the database anew.
    let id = ready.status.as_ref().unwrap().database_id.clone().unwrap();
    let mark = stack.emulator.mark().await;
    crate::support::witness_pass(&stack.operator, &client, ns.name(), "s").await;
    stack.emulator.wait_for_reads(&id, mark, 2).await;
    assert_eq!(stack.emulator.calls_to("reset-password").await.len(), 1);
}

#[tokio::test]
async fn a_lost_create_answer_and_a_restart_leave_exactly_one_database() {
    let cluster = testkit::cluster().await;
    let ns = cluster.namespace("lost").await;
    let mut stack = start_stack(&ns, &[]).await;
    let client = ns.client().await;
    // The create goes through in Upstash, but the operator never hears back.
    stack
        .emulator
        .add_fault(json!({"endpoint": "create", "lose_response": true, "times": 1}))
        .await;
    apply_manifest(
        &client,
        ns.name(),
        &instance("lost", json!({"primaryRegion": "us-east-1"})),
    )
    .await
    .unwrap();
    testkit::wait_for("the create to be attempted", READY_TIMEOUT, || async {
        (!stack.emulator.calls_to("create").await.is_empty()).then_some(())
    })
    .await;
    // The operator crashes right after.
    stack.operator.process().kill();
    let mut databases = stack.emulator.databases().await;
    assert_eq!(
        databases.len(),
        1,
        "the lost create did create the database"
    );
    let created = databases.remove(0);

    let _restarted = crate::support::start_operator(&ns, &stack.emulator, &[]).await;
    let api: Api<CacheInstance> = Api::namespaced(client.clone(), ns.name());
    let ready = wait_ready(&api, "lost").await;
    assert_eq!(
        ready.status.unwrap().database_id.as_deref(),
        created["database_id"].as_str()
    );
    let databases = stack.emulator.databases().await;
    assert_eq!(databases.len(), 1, "no duplicate: {databases:?}");
    assert_eq!(stack.emulator.calls_to("create").await.len(), 1);
}

#[tokio::test]
async fn invalid_credentials_are_reported_without_leaking_secrets() {
    let cluster = testkit::cluster().await;
    let ns = cluster.namespace("creds").await;
    let mut stack = start_stack(&ns, &[]).await;
    let client = ns.client().await;
    let wrong_key = "wrong-key-5f2e8c0d9a";
    testkit::operator::write_credentials_with(
        &client,
        ns.name(),
        "team-b",
        testkit::emulator::EMAIL,
        wrong_key,
    )
    .await;
    apply_manifest(
        &client,
        ns.name(),
        &instance("good", json!({"primaryRegion": "us-east-1"})),
    )
    .await
    .unwrap();
    apply_manifest(
        &client,
        ns.name(),
        &instance(
            "bad",
            json!({"primaryRegion": "us-east-1", "credentials": {"secretRef": {"name": "team-b"}}}),
        ),
    )
    .await
    .unwrap();
    let api: Api<CacheInstance> = Api::namespaced(client.clone(), ns.name());
    let good = wait_ready(&api, "good").await;
    let bad = testkit::wait_for_condition(&api, "bad", "Ready", "False", READY_TIMEOUT).await;
    let ready = bad
        .status
        .unwrap()
        .conditions
        .into_iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert_eq!(ready.reason, "UpstashUnauthorized");
    assert!(
        ready.message.contains("rejected the credentials"),
        "{}",
        ready.message
    );
    testkit::wait_for("a Warning Event", READY_TIMEOUT, || async {
        let events = crate::support::events_for(&client, ns.name(), "bad").await;
        events
            .iter()
            .any(|e| e.0 == "UpstashUnauthorized" && e.1 == "Warning")
            .then_some(())
    })
    .await;
    // Backoff, not a crash loop: the operator keeps running and retries, each time after a
    // longer wait. Witness: three more reconciles of `bad`, so three backoffs were chosen.
    let mark = stack.operator.reconciles(ns.name(), "bad").await;
    let passes = stack
        .operator
        .wait_for_reconciles(ns.name(), "bad", mark, 3)
        .await;
    assert!(
        stack.operator.process().try_wait().is_none(),
        "the operator is still running"
    );
    let unauthorized = stack
        .emulator
        .calls()
        .await
        .into_iter()
        .filter(|c| c["status"] == 401)
        .count() as u64;
    let passes_now = stack.operator.reconciles(ns.name(), "bad").await;
    assert!(
        (1..=passes_now).contains(&unauthorized),
        "{unauthorized} rejected calls for {passes_now} reconciles: a rejected key is not retried within a pass"
    );
    // The first backoff is about 2 s; the third about 8 s.
    let (backoffs, within_4s) = crate::support::backoffs(&stack.operator, "4.0").await;
    assert!(
        backoffs >= 3,
        "{backoffs} backoffs after {passes} reconciles"
    );
    assert!(
        within_4s < backoffs,
        "the backoff grows: {within_4s} of {backoffs} backoffs were at most 4 s"
    );
    let events = crate::support::events_for(&client, ns.name(), "bad").await;
    assert_eq!(
        events
            .iter()
            .filter(|e| e.0 == "UpstashUnauthorized")
            .count(),
        1,
        "{events:?}"
    );

    // No credential in the operator's log.
    let id = good.status.unwrap().database_id.unwrap();
    let db = stack.emulator.database(&id).await.unwrap();
    let logs = stack.operator.logs();
    for secret in [
        testkit::emulator::API_KEY,
        wrong_key,
        db["password"].as_str().unwrap(),
        db["rest_token"].as_str().unwrap(),
        db["read_only_rest_token"].as_str().unwrap(),
    ] {
        assert!(
            !logs.contains(secret),
            "the operator's log contains a credential"
        );
    }
    assert!(logs.contains("reconcile failed"), "the failure is logged");
}

#[tokio::test]
async fn upstash_failing_for_a_while_backs_off_then_converges() {
    let cluster = testkit::cluster().await;
    let ns = cluster.namespace("outage").await;
    let stack = start_stack(&ns, &["--breaker-failure-threshold", "1000"]).await;
    let client = ns.client().await;
    stack
        .emulator
        .add_fault(json!({"endpoint": "*", "status": 500, "body": "\"internal error\""}))
        .await;
    apply_manifest(
        &client,
        ns.name(),
        &instance("o", json!({"primaryRegion": "us-east-1"})),
    )
    .await
    .unwrap();
    let api: Api<CacheInstance> = Api::namespaced(client.clone(), ns.name());
    let obj = testkit::wait_for_condition(&api, "o", "Ready", "False", READY_TIMEOUT).await;
    let ready = obj
        .status
        .unwrap()
        .conditions
        .into_iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert_eq!(ready.reason, "UpstashUnavailable");
    // Exponential backoff, not a hot loop: witness three more failed reconciles, then each made
    // at most its 3 attempts, and the waits between them grew.
    let mark = stack.operator.reconciles(ns.name(), "o").await;
    stack
        .operator
        .wait_for_reconciles(ns.name(), "o", mark, 3)
        .await;
    let failed = stack.emulator.calls().await.len() as u64;
    let passes = stack.operator.reconciles(ns.name(), "o").await;
    assert!(
        (2..=3 * passes).contains(&failed),
        "{failed} calls for {passes} reconciles of up to 3 attempts each"
    );
    // The first backoff after an outage's failure is about 1 s, the third about 4 s.
    let (backoffs, within_2s) = crate::support::backoffs(&stack.operator, "2.0").await;
    assert!(backoffs >= 3, "{backoffs} backoffs");
    assert!(
        within_2s < backoffs,
        "the backoff grows: {within_2s} of {backoffs} backoffs were at most 2 s"
    );
    stack.emulator.clear_faults().await;
    let ready =
        testkit::wait_for_condition(&api, "o", "Ready", "True", Duration::from_secs(90)).await;
    assert!(ready.status.unwrap().database_id.is_some());
    assert_eq!(stack.emulator.databases().await.len(), 1);
}

#[tokio::test]
async fn existing_databases_are_adopted_only_when_asked() {
    let cluster = testkit::cluster().await;
    let ns = cluster.namespace("adopt").await;
    let stack = start_stack(&ns, &crate::support::ADOPT_ANYWHERE).await;
    let client = ns.client().await;
    let create = |name: &str| {
        stack.emulator.developer_api(
            reqwest::Method::POST,
            "/v2/redis/database",
            Some(json!({"database_name": name, "platform": "aws", "primary_region": "us-east-1", "plan": "payg"})),
        )
    };
    let (code, legacy) = create("legacy-sessions").await;
    assert_eq!(code, 200);
    let (_, by_name) = create("legacy-carts").await;

    // Same name, no adoption requested: reported, never taken over, nothing created.
    apply_manifest(
        &client,
        ns.name(),
        &instance(
            "clash",
            json!({"primaryRegion": "us-east-1", "databaseName": "legacy-sessions"}),
        ),
    )
    .await
    .unwrap();
    let api: Api<CacheInstance> = Api::namespaced(client.clone(), ns.name());
    let obj =
        testkit::wait_for_condition(&api, "clash", "Provisioned", "False", READY_TIMEOUT).await;
    let cond = obj
        .status
        .unwrap()
        .conditions
        .into_iter()
        .find(|c| c.type_ == "Provisioned")
        .unwrap();
    assert_eq!(cond.reason, "NameTaken");
    assert!(
        cond.message.contains("spec.adopt.byName"),
        "{}",
        cond.message
    );

    // Adoption by id and by name.
    apply_manifest(
        &client,
        ns.name(),
        &instance(
            "by-id",
            json!({"primaryRegion": "us-east-1", "adopt": {"databaseId": legacy["database_id"]}, "deletionPolicy": "Retain", "budget": 10}),
        ),
    )
    .await
    .unwrap();
    apply_manifest(
        &client,
        ns.name(),
        &instance(
            "by-name",
            json!({"primaryRegion": "us-east-1", "databaseName": "legacy-carts", "adopt": {"byName": true}}),
        ),
    )
    .await
    .unwrap();
    let adopted = wait_ready(&api, "by-id").await.status.unwrap();
    assert_eq!(
        adopted.database_id.as_ref(),
        legacy["database_id"].as_str().map(String::from).as_ref()
    );
    let adopted = wait_ready(&api, "by-name").await.status.unwrap();
    assert_eq!(
        adopted.database_id.as_ref(),
        by_name["database_id"].as_str().map(String::from).as_ref()
    );
    // The spec is enforced on the adopted database, and the Secret carries its credentials.
    let db = stack
        .emulator
        .database(legacy["database_id"].as_str().unwrap())
        .await
        .unwrap();
    assert_eq!(db["budget"], 1000, "$10 in cents");
    let data = secret_data(
        &Api::<Secret>::namespaced(client.clone(), ns.name())
            .get("by-id")
            .await
            .unwrap(),
    );
    assert_eq!(data["REDIS_PASSWORD"], db["password"].as_str().unwrap());
    let events = crate::support::events_for(&client, ns.name(), "by-id").await;
    assert!(events.iter().any(|e| e.0 == "Adopted"), "{events:?}");
    assert!(
        stack.emulator.calls_to("create").await.len() == 2,
        "only the two test databases were created"
    );
}
