//! The paths platform teams walk: adopting existing databases without changing what the spec
//! leaves out, observing only, pausing, deletions that cannot run, databases that disappear,
//! objects applied again or restored without their status, renamed Secrets.

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api, ResourceExt,
    api::{DeleteParams, Patch, PatchParams},
};
use serde_json::{Value, json};
use upstash_operator::{
    controller::{FIELD_MANAGER, FINALIZER, instance::finalizer},
    crd::{CREATE_RECORD_ANNOTATION, CacheInstance, PendingCreate},
};

use crate::support::{
    apply_manifest, events_for, instance, secret_data, start_operator, start_stack,
};

const TIMEOUT: Duration = Duration::from_secs(60);

fn mutating(calls: &[Value]) -> Vec<String> {
    calls
        .iter()
        .filter(|c| c["method"] != "GET")
        .map(|c| c["endpoint"].as_str().unwrap_or_default().to_string())
        .collect()
}

fn condition(obj: &CacheInstance, type_: &str) -> Option<(String, String, String)> {
    let c = obj
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)?;
    Some((c.status.clone(), c.reason.clone(), c.message.clone()))
}

/// Creates a database directly in the emulator, as the Upstash console would.
async fn console_create(emulator: &testkit::emulator::Emulator, body: Value) -> String {
    let (code, db) = emulator
        .developer_api(reqwest::Method::POST, "/v2/redis/database", Some(body))
        .await;
    assert_eq!(code, 200, "{db}");
    db["database_id"].as_str().unwrap().to_string()
}

/// Applies `spec` and waits until the operator has acted on this generation and is Ready.
async fn settle(client: &kube::Client, ns: &str, name: &str, spec: &Value) -> CacheInstance {
    apply_manifest(client, ns, &instance(name, spec.clone()))
        .await
        .unwrap();
    let api: Api<CacheInstance> = Api::namespaced(client.clone(), ns);
    let generation = api.get(name).await.unwrap().metadata.generation;
    testkit::wait_for(&format!("{name} to settle"), TIMEOUT, || async {
        let obj = api.get(name).await.ok()?;
        let s = obj.status.as_ref()?;
        (s.observed_generation == generation
            && s.conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True"))
        .then_some(obj)
    })
    .await
}

#[tokio::test]
async fn adopting_changes_nothing_the_spec_leaves_out_and_shows_the_live_values() {
    let cluster = testkit::cluster().await;
    let ns = cluster.namespace("adopt-live").await;
    let stack = start_stack(
        &ns,
        &[
            "--resync-interval",
            "2s",
            crate::support::ADOPT_ANYWHERE[0],
            crate::support::ADOPT_ANYWHERE[1],
        ],
    )
    .await;
    let client = ns.client().await;
    // A production database: fixed plan, a read replica, eviction, a budget, an allow-list.
    let prod = console_create(
        &stack.emulator,
        json!({"database_name": "legacy-prod", "platform": "aws", "primary_region": "us-east-1",
               "plan": "fixed_1gb", "read_regions": ["eu-west-1"], "eviction": true, "budget": 30000}),
    )
    .await;
    let (code, _) = stack
        .emulator
        .developer_api(
            reqwest::Method::POST,
            &format!("/v2/redis/update-allowlist/{prod}"),
            Some(json!({"allowed_ips": ["10.0.0.0/8"]})),
        )
        .await;
    assert_eq!(code, 200);
    stack.emulator.clear_calls().await;

    let mut spec = json!({"primaryRegion": "us-east-1", "deletionPolicy": "Retain", "adopt": {"databaseId": prod}});
    let obj = settle(&client, ns.name(), "prod", &spec).await;
    let status = obj.status.unwrap();
    assert_eq!(status.database_id.as_deref(), Some(prod.as_str()));
    assert_eq!(status.plan.as_deref(), Some("fixed_1gb"));
    assert_eq!(status.read_regions, Some(vec!["eu-west-1".to_string()]));
    assert_eq!(status.allowed_ips, Some(vec!["10.0.0.0/8".to_string()]));
    assert_eq!(status.eviction, Some(true));
    assert_eq!(status.budget, Some(300));
    assert_eq!(status.auto_upgrade, Some(false));
    assert_eq!(status.prod_pack, Some(false));
    assert_eq!(status.daily_backup, Some(false));
    // Two resyncs later (witness: three reads): not one mutating call.
    let mark = stack.emulator.mark().await;
    stack.emulator.wait_for_reads(&prod, mark, 3).await;
    let calls = stack.emulator.calls().await;
    assert!(mutating(&calls).is_empty(), "{:?}", mutating(&calls));
    let db = stack.emulator.database(&prod).await.unwrap();
    assert_eq!(db["allowed_ip_ranges"], json!(["10.0.0.0/8"]));
    assert_eq!(db["read_regions"], json!(["eu-west-1"]));

    // An explicit empty allow-list: exactly one call.
    stack.emulator.clear_calls().await;
    spec["allowedIPs"] = json!([]);
    let obj = settle(&client, ns.name(), "prod", &spec).await;
    assert_eq!(
        mutating(&stack.emulator.calls().await),
        ["update-allowlist"]
    );
    assert_eq!(obj.status.unwrap().allowed_ips, Some(vec![]));

    // An adopted database that differs from fields the spec sets: one Event listing each
    // change, old → new.
    let other = console_create(
        &stack.emulator,
        json!({"database_name": "legacy-other", "platform": "aws", "primary_region": "us-east-1", "budget": 30000}),
    )
    .await;
    stack.emulator.clear_calls().await;
    let spec = json!({"primaryRegion": "us-east-1", "adopt": {"databaseId": other}, "budget": 10, "eviction": true});
    settle(&client, ns.name(), "other", &spec).await;
    let mut calls = mutating(&stack.emulator.calls().await);
    calls.sort();
    assert_eq!(calls, ["enable-eviction", "update-budget"]);
    let events = testkit::wait_for("the Adopted Event", TIMEOUT, || async {
        let events = events_for(&client, ns.name(), "other").await;
        events.iter().any(|e| e.0 == "Adopted").then_some(events)
    })
    .await;
    let adopted: Vec<_> = events.iter().filter(|e| e.0 == "Adopted").collect();
    assert_eq!(adopted.len(), 1, "{events:?}");
    assert!(
        adopted[0].2.contains("budget 300 → 10") && adopted[0].2.contains("eviction false → true"),
        "{adopted:?}"
    );
    assert!(!events.iter().any(|e| e.0 == "Updated"), "{events:?}");
}

#[tokio::test]
async fn observe_reports_drift_changes_nothing_and_keeps_the_database() {
    let cluster = testkit::cluster().await;
    let ns = cluster.namespace("observe").await;
    let stack = start_stack(
        &ns,
        &[
            "--resync-interval",
            "2s",
            crate::support::ADOPT_ANYWHERE[0],
            crate::support::ADOPT_ANYWHERE[1],
        ],
    )
    .await;
    let client = ns.client().await;
    let id = console_create(
        &stack.emulator,
        json!({"database_name": "observed", "platform": "aws", "primary_region": "us-east-1", "budget": 10000}),
    )
    .await;
    stack.emulator.clear_calls().await;
    // Differs from the database in every mutable field.
    let mut spec = json!({
        "primaryRegion": "us-east-1", "managementPolicy": "Observe", "adopt": {"databaseId": id},
        "deletionPolicy": "Delete", "readRegions": ["us-west-1"], "plan": "fixed_1gb", "budget": 10,
        "eviction": true, "autoUpgrade": true, "prodPack": true, "allowedIPs": ["127.0.0.1"],
        "dailyBackup": true,
    });
    let obj = settle(&client, ns.name(), "watched", &spec).await;
    let (status, reason, message) = condition(&obj, "Synced").unwrap();
    assert_eq!((status.as_str(), reason.as_str()), ("False", "Drifted"));
    for fragment in [
        "readRegions (spec [us-west-1], live [])",
        "plan (spec fixed_1gb, live payg)",
        "budget (spec 10, live 100)",
        "eviction (spec true, live false)",
        "autoUpgrade (spec true, live false)",
        "prodPack (spec true, live false)",
        "allowedIPs (spec [127.0.0.1/32], live [])",
        "dailyBackup (spec true, live false)",
    ] {
        assert!(message.contains(fragment), "{fragment} in {message}");
    }
    // The Secret is written for the observed database.
    let db = stack.emulator.database(&id).await.unwrap();
    let data = secret_data(
        &Api::<Secret>::namespaced(client.clone(), ns.name())
            .get("watched")
            .await
            .unwrap(),
    );
    assert_eq!(data["REDIS_PASSWORD"], db["password"].as_str().unwrap());
    // Two resyncs later (witness: three reads): not one mutating call.
    let mark = stack.emulator.mark().await;
    stack.emulator.wait_for_reads(&id, mark, 3).await;
    assert!(mutating(&stack.emulator.calls().await).is_empty());
    let events = events_for(&client, ns.name(), "watched").await;
    assert_eq!(
        events.iter().filter(|e| e.0 == "Drifted").count(),
        1,
        "{events:?}"
    );

    // Full: exactly the calls that bring each field in line.
    spec["managementPolicy"] = json!("Full");
    let obj = settle(&client, ns.name(), "watched", &spec).await;
    let mut calls = mutating(&stack.emulator.calls().await);
    calls.sort();
    assert_eq!(
        calls,
        [
            "change-plan",
            "enable-autoupgrade",
            "enable-dailybackup",
            "enable-eviction",
            "enable-prodpack",
            "update-allowlist",
            "update-budget",
            "update-regions"
        ]
    );
    assert_eq!(condition(&obj, "Synced").unwrap().1, "Synced");

    // Observe again, then delete: the database stays although deletionPolicy is Delete.
    spec["managementPolicy"] = json!("Observe");
    settle(&client, ns.name(), "watched", &spec).await;
    let api: Api<CacheInstance> = Api::namespaced(client.clone(), ns.name());
    api.delete("watched", &DeleteParams::default())
        .await
        .unwrap();
    testkit::wait_for("watched to be deleted", TIMEOUT, || async {
        api.get_opt("watched").await.ok()?.is_none().then_some(())
    })
    .await;
    assert!(stack.emulator.database(&id).await.is_some());
    assert!(stack.emulator.calls_to("delete").await.is_empty());
}

#[tokio::test]
async fn a_paused_instance_gets_no_calls_and_no_writes_until_resumed() {
    let cluster = testkit::cluster().await;
    let ns = cluster.namespace("pause").await;
    // Without default thresholds the monitor samples nothing: every call is the reconciler's.
    let stack = start_stack(
        &ns,
        &["--resync-interval", "2s", "--default-thresholds", "false"],
    )
    .await;
    let client = ns.client().await;
    let api: Api<CacheInstance> = Api::namespaced(client.clone(), ns.name());
    let obj = settle(
        &client,
        ns.name(),
        "p",
        &json!({"primaryRegion": "us-east-1", "budget": 5}),
    )
    .await;
    let id = obj.status.unwrap().database_id.unwrap();
    let pause = |value: Value| {
        let api = api.clone();
        async move {
            api.patch(
                "p",
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"annotations": {"cache.upstash-operator.dev/paused": value}}})),
            )
            .await
        }
    };
    pause(json!("true")).await.unwrap();
    // Witness: whole reconciles of the paused object, so that no pass from before is running.
    crate::support::witness_pass(&stack.operator, &client, ns.name(), "p").await;
    stack.emulator.clear_calls().await;
    // A spec change while paused is not acted on, nor written to the status.
    let changed = api
        .patch(
            "p",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"budget": 9}})),
        )
        .await
        .unwrap();
    crate::support::witness_pass(&stack.operator, &client, ns.name(), "p").await;
    assert!(
        stack.emulator.calls().await.is_empty(),
        "{:?}",
        stack.emulator.calls().await
    );
    let now = api.get("p").await.unwrap();
    assert_eq!(
        serde_json::to_value(&now.status).unwrap(),
        serde_json::to_value(&changed.status).unwrap(),
        "the status was written while paused"
    );
    assert_eq!(now.metadata.finalizers, changed.metadata.finalizers);
    // A delete waits too.
    api.delete("p", &DeleteParams::default()).await.unwrap();
    crate::support::witness_pass(&stack.operator, &client, ns.name(), "p").await;
    assert!(api.get_opt("p").await.unwrap().is_some());
    assert!(stack.emulator.calls().await.is_empty());
    // Resumed: the delete goes through and the database goes with it.
    pause(Value::Null).await.unwrap();
    testkit::wait_for("p to be deleted", TIMEOUT, || async {
        api.get_opt("p").await.ok()?.is_none().then_some(())
    })
    .await;
    assert!(stack.emulator.database(&id).await.is_none());
}

#[tokio::test]
async fn a_cleanup_that_cannot_run_says_how_to_let_the_object_go() {
    let cluster = testkit::cluster().await;
    let ns = cluster.namespace("wedge").await;
    // The first failing delete call (three attempts; the breaker counts a call once, after
    // its retries) opens the circuit breaker for good: after it, no call reaches Upstash, so a
    // delete call after the way out is taken would be the operator ignoring it.
    let stack = start_stack(
        &ns,
        &[
            "--breaker-failure-threshold",
            "1",
            "--breaker-reset-timeout",
            "10m",
        ],
    )
    .await;
    let client = ns.client().await;
    let api: Api<CacheInstance> = Api::namespaced(client.clone(), ns.name());
    let obj = settle(
        &client,
        ns.name(),
        "w",
        &json!({"primaryRegion": "us-east-1"}),
    )
    .await;
    let id = obj.status.unwrap().database_id.unwrap();
    // Upstash refuses every delete.
    stack
        .emulator
        .add_fault(json!({"endpoint": "delete", "status": 500, "body": "\"internal error\""}))
        .await;
    api.delete("w", &DeleteParams::default()).await.unwrap();
    let message = testkit::wait_for("the failed cleanup to be reported", TIMEOUT, || async {
        let obj = api.get("w").await.ok()?;
        let (status, reason, message) = condition(&obj, "Ready")?;
        (status == "False" && reason == "CleanupFailed").then_some(message)
    })
    .await;
    assert!(
        message.contains(&format!("could not delete database {id}")),
        "{message}"
    );
    assert!(
        message.ends_with(upstash_operator::controller::instance::WAY_OUT),
        "{message}"
    );
    testkit::wait_for(
        "a CleanupFailed Warning with Upstash's answer",
        TIMEOUT,
        || async {
            events_for(&client, ns.name(), "w")
                .await
                .iter()
                .any(|e| {
                    e.0 == "CleanupFailed" && e.1 == "Warning" && e.2.contains("internal error")
                })
                .then_some(())
        },
    )
    .await;

    // The way out: Retain on the terminating object. It goes without another delete call.
    let deletes = stack.emulator.calls_to("delete").await.len();
    api.patch(
        "w",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"deletionPolicy": "Retain"}})),
    )
    .await
    .unwrap();
    testkit::wait_for("w to be deleted", TIMEOUT, || async {
        api.get_opt("w").await.ok()?.is_none().then_some(())
    })
    .await;
    assert_eq!(stack.emulator.calls_to("delete").await.len(), deletes);
    stack.emulator.clear_faults().await;
    assert!(stack.emulator.database(&id).await.is_some());
}

#[tokio::test]
async fn a_database_gone_from_upstash_is_recreated_or_only_reported() {
    let cluster = testkit::cluster().await;
    let ns = cluster.namespace("missing").await;
    let stack = start_stack(&ns, &["--resync-interval", "2s"]).await;
    let client = ns.client().await;
    let api: Api<CacheInstance> = Api::namespaced(client.clone(), ns.name());
    let again = settle(
        &client,
        ns.name(),
        "again",
        &json!({"primaryRegion": "us-east-1"}),
    )
    .await;
    let report = settle(
        &client,
        ns.name(),
        "report",
        &json!({"primaryRegion": "us-east-1", "onMissing": "Report"}),
    )
    .await;
    let ids: Vec<String> = [&again, &report]
        .iter()
        .map(|o| o.status.as_ref().unwrap().database_id.clone().unwrap())
        .collect();
    stack.emulator.clear_calls().await;
    for id in &ids {
        stack
            .emulator
            .developer_api(
                reqwest::Method::DELETE,
                &format!("/v2/redis/database/{id}"),
                None,
            )
            .await;
    }
    // Recreated, with a Warning that says where the data may be.
    testkit::wait_for("again to get a new database", TIMEOUT, || async {
        let s = api.get("again").await.ok()?.status?;
        (s.database_id.as_ref()? != &ids[0]).then_some(())
    })
    .await;
    let warning = testkit::wait_for("a DatabaseRecreated Warning", TIMEOUT, || async {
        events_for(&client, ns.name(), "again")
            .await
            .into_iter()
            .find(|e| e.0 == "DatabaseRecreated" && e.1 == "Warning")
    })
    .await;
    assert!(warning.2.contains("30 days"), "{warning:?}");
    // Only reported.
    let obj = testkit::wait_for_condition(&api, "report", "Provisioned", "False", TIMEOUT).await;
    let (_, reason, message) = condition(&obj, "Provisioned").unwrap();
    assert_eq!(reason, "DatabaseMissing");
    assert!(message.contains("keeps a backup"), "{message}");
    // Witness: whole passes over `report` after it reported the missing database.
    crate::support::witness_pass(&stack.operator, &client, ns.name(), "report").await;
    assert_eq!(
        stack.emulator.calls_to("create").await.len(),
        1,
        "only again's"
    );
    assert_eq!(
        api.get("report")
            .await
            .unwrap()
            .status
            .unwrap()
            .database_id
            .as_deref(),
        Some(ids[1].as_str())
    );
}

#[tokio::test]
async fn objects_applied_again_or_restored_without_status_take_back_their_database() {
    let cluster = testkit::cluster().await;
    let ns = cluster.namespace("reapply").await;
    let mut stack = start_stack(&ns, &[]).await;
    let client = ns.client().await;
    let api: Api<CacheInstance> = Api::namespaced(client.clone(), ns.name());
    let spec = json!({"primaryRegion": "us-east-1", "deletionPolicy": "Retain"});
    let first = settle(&client, ns.name(), "gitops", &spec).await;
    // The record of the create that made the database stays once the status names it.
    let record = first
        .annotations()
        .get(CREATE_RECORD_ANNOTATION)
        .cloned()
        .expect("the create record stays on the object");
    let id = first.status.unwrap().database_id.unwrap();
    let first_uid = first.metadata.uid.unwrap();
    let delete_and_wait = || async {
        api.delete("gitops", &DeleteParams::default())
            .await
            .unwrap();
        testkit::wait_for("gitops to be deleted", TIMEOUT, || async {
            api.get_opt("gitops").await.ok()?.is_none().then_some(())
        })
        .await;
    };

    // Deleted with Retain and applied again from Git: a new UID, no status.
    delete_and_wait().await;
    let again = settle(&client, ns.name(), "gitops", &spec).await;
    assert_ne!(again.metadata.uid.as_deref(), Some(first_uid.as_str()));
    assert_eq!(
        again.status.unwrap().database_id.as_deref(),
        Some(id.as_str())
    );
    assert_eq!(stack.emulator.calls_to("create").await.len(), 1);

    // Restored by a backup tool (a backup of the first object) into a freshly started operator:
    // the same. A backup keeps the object's annotations, the operator's create record among
    // them; the restored copy (another UID) does not take that record for its own.
    assert!(record.contains(&first_uid), "{record}");
    delete_and_wait().await;
    stack.operator.process().kill();
    let _restarted = start_operator(&ns, &stack.emulator, &[]).await;
    let mut backup = instance("gitops", spec.clone());
    backup["metadata"]["annotations"] = json!({ CREATE_RECORD_ANNOTATION: record });
    apply_manifest(&client, ns.name(), &backup).await.unwrap();
    let restored = settle(&client, ns.name(), "gitops", &spec).await;
    assert_eq!(
        restored.status.unwrap().database_id.as_deref(),
        Some(id.as_str())
    );
    assert_eq!(stack.emulator.calls_to("create").await.len(), 1);
    assert_eq!(stack.emulator.databases().await.len(), 1);
    let events = events_for(&client, ns.name(), "gitops").await;
    assert!(
        events
            .iter()
            .any(|e| e.0 == "Provisioned" && e.2.contains("took back")),
        "{events:?}"
    );
}

#[tokio::test]
async fn a_renamed_secret_replaces_the_old_one() {
    let cluster = testkit::cluster().await;
    let ns = cluster.namespace("rename").await;
    let stack = start_stack(&ns, &[]).await;
    let client = ns.client().await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns.name());
    let obj = settle(
        &client,
        ns.name(),
        "r",
        &json!({"primaryRegion": "us-east-1", "secret": {"name": "app-redis", "readOnly": {"name": "app-redis-ro"}}}),
    )
    .await;
    let id = obj.status.unwrap().database_id.unwrap();
    assert!(secrets.get_opt("app-redis").await.unwrap().is_some());
    // A Secret of the old name that the operator does not own is never touched.
    settle(
        &client,
        ns.name(),
        "r",
        &json!({"primaryRegion": "us-east-1", "secret": {"name": "web-redis", "readOnly": {"name": "web-redis-ro"}}}),
    )
    .await;
    testkit::wait_for("the old Secrets to go", TIMEOUT, || async {
        (secrets.get_opt("app-redis").await.ok()?.is_none()
            && secrets.get_opt("app-redis-ro").await.ok()?.is_none())
        .then_some(())
    })
    .await;
    let db = stack.emulator.database(&id).await.unwrap();
    let data = secret_data(&secrets.get("web-redis").await.unwrap());
    assert_eq!(data["REDIS_PASSWORD"], db["password"].as_str().unwrap());
    let ro = secret_data(&secrets.get("web-redis-ro").await.unwrap());
    assert_eq!(
        ro["UPSTASH_REDIS_REST_TOKEN"],
        db["read_only_rest_token"].as_str().unwrap()
    );
}

#[tokio::test]
async fn a_new_objects_first_write_holds_only_if_its_copy_was_current() {
    // The operator decides a new object's create on its cached copy and makes its first write
    // (the finalizer with the create record) conditional on that copy's resourceVersion: the
    // API server must refuse the write once the object has changed.
    let cluster = testkit::cluster().await;
    let ns = cluster.namespace("firstwrite").await;
    let client = ns.client().await;
    let api: Api<CacheInstance> = Api::namespaced(client.clone(), ns.name());
    apply_manifest(
        &client,
        ns.name(),
        &instance("fresh", json!({"primaryRegion": "us-east-1"})),
    )
    .await
    .unwrap();
    let copy = api.get("fresh").await.unwrap();
    api.patch(
        "fresh",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"team": "crm"}}})),
    )
    .await
    .unwrap();
    let record = PendingCreate {
        database_name: "never-sent".into(),
        started: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::now(),
        ),
        uid: copy.metadata.uid.clone(),
    };
    let write = |obj: &CacheInstance| {
        let body =
            finalizer::metadata_apply(obj, Some(&record), obj.metadata.resource_version.as_deref());
        let api = api.clone();
        async move {
            api.patch(
                "fresh",
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&body),
            )
            .await
        }
    };
    match write(&copy).await {
        Err(kube::Error::Api(s)) => assert_eq!(s.code, 409, "{s:?}"),
        other => panic!("a write on a stale copy went through: {other:?}"),
    }
    let unchanged = api.get("fresh").await.unwrap();
    assert!(unchanged.finalizers().is_empty());
    assert!(
        !unchanged
            .annotations()
            .contains_key(CREATE_RECORD_ANNOTATION)
    );
    let written = write(&unchanged).await.unwrap();
    assert_eq!(written.finalizers(), [FINALIZER.to_string()]);
    assert!(written.annotations().contains_key(CREATE_RECORD_ANNOTATION));

    // An operator that starts now finds a create recorded but its database not listed: it waits
    // for the call's answer to have surely been lost, then creates the database, once.
    let stack = start_stack(&ns, &[]).await;
    let ready = settle(
        &client,
        ns.name(),
        "fresh",
        &json!({"primaryRegion": "us-east-1"}),
    )
    .await;
    assert!(ready.status.unwrap().database_id.is_some());
    assert_eq!(stack.emulator.calls_to("create").await.len(), 1);
}
