//! Network and data protection: the IP allow-list, daily backups, on-demand backup and restore,
//! and the guardrails that require them.

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api,
    api::{Patch, PatchParams},
};
use serde_json::{Value, json};
use upstash_operator::crd::{CacheInstance, CachePolicy};

use crate::support::{
    TEST_MANAGER, apply_manifest, events_for, instance, rest_command, secret_data, start_stack,
};

const TIMEOUT: Duration = Duration::from_secs(60);

/// Applies `spec` and waits until the operator has acted on this generation and is Ready.
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

fn mutating(calls: &[Value]) -> Vec<String> {
    calls
        .iter()
        .filter(|c| c["method"] != "GET")
        .map(|c| c["endpoint"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[tokio::test]
async fn the_allow_list_is_set_changed_cleared_and_enforced() {
    let cluster = testkit::cluster().await;
    let ns = cluster.namespace("allowlist").await;
    let stack = start_stack(&ns, &["--resync-interval", "3s"]).await;
    let client = ns.client().await;
    let mut spec = json!({"primaryRegion": "us-east-1"});
    let obj = apply_and_settle(&client, ns.name(), "net", &spec).await;
    let id = obj.status.unwrap().database_id.unwrap();
    let data = secret_data(
        &Api::<Secret>::namespaced(client.clone(), ns.name())
            .get("net")
            .await
            .unwrap(),
    );
    let url = data["UPSTASH_REDIS_REST_URL"].clone();
    let token = data["UPSTASH_REDIS_REST_TOKEN"].clone();
    let ca = stack.emulator.ca_file().to_path_buf();
    let ping = || rest_command(&url, &token, &ca, json!(["PING"]));

    // Set: only the office network; the test (127.0.0.1) is outside it.
    stack.emulator.clear_calls().await;
    spec["allowedIPs"] = json!(["10.0.0.0/8"]);
    let obj = apply_and_settle(&client, ns.name(), "net", &spec).await;
    assert_eq!(
        mutating(&stack.emulator.calls().await),
        ["update-allowlist"]
    );
    assert_eq!(
        obj.status.unwrap().allowed_ips,
        Some(vec!["10.0.0.0/8".to_string()])
    );
    let (code, body) = ping().await;
    assert_eq!(code, 403, "a client outside the list is refused: {body}");

    // Change: loopback allowed; the client is served.
    stack.emulator.clear_calls().await;
    spec["allowedIPs"] = json!(["10.0.0.0/8", "127.0.0.1"]);
    apply_and_settle(&client, ns.name(), "net", &spec).await;
    assert_eq!(
        mutating(&stack.emulator.calls().await),
        ["update-allowlist"]
    );
    assert_eq!(ping().await, (200, json!({"result": "PONG"})));
    let db = stack.emulator.database(&id).await.unwrap();
    assert_eq!(
        db["allowed_ip_ranges"],
        json!(["10.0.0.0/8", "127.0.0.1/32"])
    );

    // Resyncs with no change make no call (witness: three reads, two whole resyncs).
    stack.emulator.clear_calls().await;
    let mark = stack.emulator.mark().await;
    stack.emulator.wait_for_reads(&id, mark, 3).await;
    assert!(mutating(&stack.emulator.calls().await).is_empty());

    // Clear: every address allowed again (an explicit empty list; omitting the field leaves the
    // allow-list alone).
    spec["allowedIPs"] = json!([]);
    let obj = apply_and_settle(&client, ns.name(), "net", &spec).await;
    assert_eq!(
        mutating(&stack.emulator.calls().await),
        ["update-allowlist"]
    );
    assert_eq!(obj.status.unwrap().allowed_ips, Some(vec![]));
    assert_eq!(
        stack.emulator.database(&id).await.unwrap()["allowed_ip_ranges"],
        json!([])
    );
}

#[tokio::test]
async fn daily_backups_toggle_with_one_call_each_way() {
    let cluster = testkit::cluster().await;
    let ns = cluster.namespace("daily").await;
    let stack = start_stack(&ns, &["--resync-interval", "3s"]).await;
    let client = ns.client().await;
    let mut spec = json!({"primaryRegion": "eu-west-1"});
    let obj = apply_and_settle(&client, ns.name(), "d", &spec).await;
    let id = obj.status.unwrap().database_id.unwrap();
    for (on, endpoint) in [(true, "enable-dailybackup"), (false, "disable-dailybackup")] {
        stack.emulator.clear_calls().await;
        spec["dailyBackup"] = json!(on);
        let obj = apply_and_settle(&client, ns.name(), "d", &spec).await;
        assert_eq!(mutating(&stack.emulator.calls().await), [endpoint]);
        assert_eq!(obj.status.unwrap().daily_backup, Some(on));
        assert_eq!(
            stack.emulator.database(&id).await.unwrap()["daily_backup_enabled"],
            on
        );
        stack.emulator.clear_calls().await;
        let mark = stack.emulator.mark().await;
        stack.emulator.wait_for_reads(&id, mark, 3).await;
        assert!(
            mutating(&stack.emulator.calls().await).is_empty(),
            "resync made a call"
        );
    }
}

#[tokio::test]
async fn a_backup_then_a_restore_bring_data_back_once() {
    let cluster = testkit::cluster().await;
    let ns = cluster.namespace("backup").await;
    let stack = start_stack(&ns, &["--resync-interval", "3s"]).await;
    let client = ns.client().await;
    let mut spec = json!({"primaryRegion": "us-east-1"});
    let id = apply_and_settle(&client, ns.name(), "b", &spec)
        .await
        .status
        .unwrap()
        .database_id
        .unwrap();
    let data = secret_data(
        &Api::<Secret>::namespaced(client.clone(), ns.name())
            .get("b")
            .await
            .unwrap(),
    );
    let (url, token) = (
        data["UPSTASH_REDIS_REST_URL"].clone(),
        data["UPSTASH_REDIS_REST_TOKEN"].clone(),
    );
    let ca = stack.emulator.ca_file().to_path_buf();
    assert_eq!(
        rest_command(&url, &token, &ca, json!(["SET", "order:1", "paid"]))
            .await
            .0,
        200
    );

    spec["backup"] = json!({"requestId": "before-migration"});
    let obj = apply_and_settle(&client, ns.name(), "b", &spec).await;
    let backup = obj.status.unwrap().backup.unwrap();
    assert_eq!(
        (backup.request_id.as_str(), backup.result.as_str()),
        ("before-migration", "Succeeded")
    );
    assert_eq!(backup.backup_name.as_deref(), Some("before-migration"));

    // The data changes after the backup.
    rest_command(&url, &token, &ca, json!(["SET", "order:1", "refunded"])).await;
    rest_command(&url, &token, &ca, json!(["SET", "order:2", "new"])).await;

    spec["restore"] = json!({"requestId": "undo-migration", "backupName": "before-migration"});
    let obj = apply_and_settle(&client, ns.name(), "b", &spec).await;
    let restore = obj.status.unwrap().restore.unwrap();
    assert_eq!(
        (restore.request_id.as_str(), restore.result.as_str()),
        ("undo-migration", "Succeeded")
    );
    assert_eq!(restore.backup_id, Some(backup.backup_id.clone().unwrap()));
    assert_eq!(
        rest_command(&url, &token, &ca, json!(["GET", "order:1"]))
            .await
            .1,
        json!({"result": "paid"})
    );
    assert_eq!(
        rest_command(&url, &token, &ca, json!(["GET", "order:2"]))
            .await
            .1,
        json!({"result": null})
    );

    // Neither runs again on later resyncs, even after the data changes again.
    rest_command(&url, &token, &ca, json!(["SET", "order:1", "shipped"])).await;
    let mark = stack.emulator.mark().await;
    stack.emulator.wait_for_reads(&id, mark, 3).await;
    assert_eq!(stack.emulator.calls_to("create-backup").await.len(), 1);
    assert_eq!(stack.emulator.calls_to("restore-backup").await.len(), 1);
    assert_eq!(
        rest_command(&url, &token, &ca, json!(["GET", "order:1"]))
            .await
            .1,
        json!({"result": "shipped"})
    );
    let events = events_for(&client, ns.name(), "b").await;
    assert_eq!(
        events.iter().filter(|e| e.0 == "BackupTaken").count(),
        1,
        "{events:?}"
    );
    assert_eq!(
        events.iter().filter(|e| e.0 == "Restored").count(),
        1,
        "{events:?}"
    );

    // A restore of a backup that does not exist fails once, with a reason, and is not retried.
    spec["restore"] = json!({"requestId": "typo", "backupName": "no-such-backup"});
    apply_manifest(&client, ns.name(), &instance("b", spec.clone()))
        .await
        .unwrap();
    let api: Api<CacheInstance> = Api::namespaced(client.clone(), ns.name());
    let restore = testkit::wait_for("the failed restore", TIMEOUT, || async {
        let r = api.get("b").await.ok()?.status?.restore?;
        (r.request_id == "typo").then_some(r)
    })
    .await;
    assert_eq!(restore.result, "Failed");
    assert!(
        restore.message.contains("no-such-backup"),
        "{}",
        restore.message
    );
    assert_eq!(stack.emulator.calls_to("restore-backup").await.len(), 1);
}

#[tokio::test]
async fn a_policy_requiring_an_allow_list_blocks_an_instance_without_one() {
    let cluster = testkit::cluster().await;
    let ns = cluster.namespace("require").await;
    let stack = start_stack(&ns, &[]).await;
    let client = ns.client().await;
    apply_manifest(
        &client,
        ns.name(),
        &json!({
            "apiVersion": "cache.upstash-operator.dev/v1alpha1",
            "kind": "CachePolicy",
            "metadata": {"name": "production"},
            "spec": {"selector": {}, "guardrails": {"requireAllowedIPs": true, "requireDailyBackup": true}},
        }),
    )
    .await
    .unwrap();
    let policies: Api<CachePolicy> = Api::namespaced(client.clone(), ns.name());
    testkit::wait_for("the policy to be known", TIMEOUT, || async {
        policies
            .get("production")
            .await
            .ok()?
            .status?
            .conditions
            .iter()
            .any(|c| c.type_ == "Ready")
            .then_some(())
    })
    .await;
    apply_manifest(
        &client,
        ns.name(),
        &instance("open", json!({"primaryRegion": "us-east-1"})),
    )
    .await
    .unwrap();
    let api: Api<CacheInstance> = Api::namespaced(client.clone(), ns.name());
    let obj = testkit::wait_for_condition(&api, "open", "PolicyCompliant", "False", TIMEOUT).await;
    let cond = obj
        .status
        .unwrap()
        .conditions
        .into_iter()
        .find(|c| c.type_ == "PolicyCompliant")
        .unwrap();
    assert!(cond.message.contains("spec.allowedIPs"), "{}", cond.message);
    assert!(
        cond.message.contains("spec.dailyBackup"),
        "{}",
        cond.message
    );
    testkit::wait_for("a PolicyViolation Event", TIMEOUT, || async {
        let events = events_for(&client, ns.name(), "open").await;
        events
            .iter()
            .any(|e| e.0 == "PolicyViolation" && e.1 == "Warning")
            .then_some(())
    })
    .await;
    assert!(stack.emulator.databases().await.is_empty());

    // Complying unblocks it.
    api.patch(
        "open",
        &PatchParams::apply(TEST_MANAGER),
        &Patch::Merge(json!({"spec": {"allowedIPs": ["127.0.0.1"], "dailyBackup": true}})),
    )
    .await
    .unwrap();
    let obj = testkit::wait_for_condition(&api, "open", "Ready", "True", TIMEOUT).await;
    let id = obj.status.unwrap().database_id.unwrap();
    let db = stack.emulator.database(&id).await.unwrap();
    assert_eq!(db["allowed_ip_ranges"], json!(["127.0.0.1/32"]));
    assert_eq!(db["daily_backup_enabled"], true);
}
