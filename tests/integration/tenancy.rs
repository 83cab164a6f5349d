//! Teams sharing one operator and its operator-wide Upstash account: a tenant cannot adopt,
//! change, rotate or delete another tenant's database, and adopting through the shared account
//! is the platform team's decision per namespace.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::{
    Api, Client,
    api::{DeleteParams, Patch, PatchParams},
};
use serde_json::{Value, json};
use upstash_operator::crd::CacheInstance;

use crate::support::{
    apply_manifest, events_for, instance, redis_connect, secret_data, start_operator, start_stack,
};

const TIMEOUT: Duration = Duration::from_secs(60);
/// The namespace label the tests' platform configuration allows adoption with.
const ADOPT_LABEL: &str = "tenancy.upstash-operator.dev/adopt";

fn adoption_selector() -> String {
    json!({"matchLabels": {ADOPT_LABEL: "yes"}}).to_string()
}

/// Operator arguments: the tenants' namespaces watched besides the operator's own, adoption
/// through the operator-wide credentials allowed where the namespace carries [`ADOPT_LABEL`].
fn operator_args(tenants: &[&testkit::TestNamespace]) -> Vec<String> {
    let names: Vec<&str> = tenants.iter().map(|t| t.name()).collect();
    vec![
        "--watch-namespaces".into(),
        names.join(","),
        "--adoption-namespace-selector".into(),
        adoption_selector(),
    ]
}

async fn allow_adoption(client: &Client, namespace: &str) {
    Api::<Namespace>::all(client.clone())
        .patch(
            namespace,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {ADOPT_LABEL: "yes"}}})),
        )
        .await
        .unwrap();
}

fn condition(obj: &CacheInstance, type_: &str) -> (String, String, String) {
    let c = obj
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == type_))
        .unwrap_or_else(|| panic!("no {type_} condition: {:?}", obj.status));
    (c.status.clone(), c.reason.clone(), c.message.clone())
}

/// Waits until `name` reports `Ready=False` with `reason`.
async fn wait_refused(api: &Api<CacheInstance>, name: &str, reason: &str) -> CacheInstance {
    testkit::wait_for(&format!("{name} to report {reason}"), TIMEOUT, || async {
        let obj = api.get(name).await.ok()?;
        let ready = obj
            .status
            .as_ref()?
            .conditions
            .iter()
            .find(|c| c.type_ == "Ready")?;
        (ready.status == "False" && ready.reason == reason).then_some(obj)
    })
    .await
}

/// The Developer API calls that change something about database `id`.
async fn mutating_calls(emulator: &testkit::emulator::Emulator, id: &str) -> Vec<Value> {
    emulator
        .calls()
        .await
        .into_iter()
        .filter(|c| c["database_id"] == id && c["method"] != "GET")
        .collect()
}

/// Every value of every Secret in `namespace`.
async fn secret_values(client: &Client, namespace: &str) -> Vec<String> {
    Api::<Secret>::namespaced(client.clone(), namespace)
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .iter()
        .flat_map(|s| secret_data(s).into_values())
        .collect()
}

/// Tenant A's database, ready, with its Secret: `(database id, database name, Secret data)`.
async fn provision_a(
    client: &Client,
    a: &testkit::TestNamespace,
) -> (String, String, std::collections::BTreeMap<String, String>) {
    apply_manifest(
        client,
        a.name(),
        &instance(
            "prod",
            json!({"primaryRegion": "us-east-1", "budget": 300, "eviction": false}),
        ),
    )
    .await
    .unwrap();
    let api: Api<CacheInstance> = Api::namespaced(client.clone(), a.name());
    let ready = testkit::wait_for_condition(&api, "prod", "Ready", "True", TIMEOUT).await;
    let status = ready.status.unwrap();
    let data = secret_data(
        &Api::<Secret>::namespaced(client.clone(), a.name())
            .get("prod")
            .await
            .unwrap(),
    );
    (
        status.database_id.unwrap(),
        status.database_name.unwrap(),
        data,
    )
}

/// A's database is untouched and A's Secret still works with a real Redis client.
async fn assert_a_intact(
    client: &Client,
    a: &testkit::TestNamespace,
    emulator: &testkit::emulator::Emulator,
    id: &str,
    a_secret: &std::collections::BTreeMap<String, String>,
) {
    let db = emulator
        .database(id)
        .await
        .expect("A's database still exists");
    assert_eq!(db["budget"], 30000, "A's budget unchanged ($300)");
    assert_eq!(db["eviction"], false, "A's eviction unchanged");
    assert_eq!(
        db["password"].as_str(),
        Some(a_secret["REDIS_PASSWORD"].as_str()),
        "A's password was not reset"
    );
    let api: Api<CacheInstance> = Api::namespaced(client.clone(), a.name());
    let a_obj = api.get("prod").await.unwrap();
    assert_eq!(condition(&a_obj, "Ready").0, "True");
    let mut redis = redis_connect(&a_secret["REDIS_URL"], emulator.ca_file())
        .await
        .expect("A's REDIS_URL still connects");
    let () = redis::cmd("SET")
        .arg("tenancy:k")
        .arg("still-mine")
        .query_async(&mut redis)
        .await
        .unwrap();
    let value: String = redis::cmd("GET")
        .arg("tenancy:k")
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(value, "still-mine");
}

#[tokio::test]
async fn a_tenant_cannot_adopt_change_rotate_or_delete_another_tenants_database() {
    let cluster = testkit::cluster().await;
    let ops = cluster.namespace("tenancy-ops").await;
    let a = cluster.namespace("tenancy-a").await;
    let b = cluster.namespace("tenancy-b").await;
    let client = ops.client().await;
    // B may adopt through the shared account: only the one-manager rule stands in the way.
    allow_adoption(&client, b.name()).await;
    let args = operator_args(&[&a, &b]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let stack = start_stack(&ops, &args).await;
    let (id, name, a_secret) = provision_a(&client, &a).await;
    stack.emulator.clear_calls().await;

    // B asks for A's database by id and by name, with settings of its own, a rotation and
    // `deletionPolicy: Delete`.
    let hostile = |adopt: Value, database_name: Option<&str>| {
        let mut spec = json!({
            "primaryRegion": "us-east-1", "adopt": adopt, "budget": 1, "eviction": true,
            "deletionPolicy": "Delete",
        });
        if let Some(n) = database_name {
            spec["databaseName"] = json!(n);
        }
        spec
    };
    let b_api: Api<CacheInstance> = Api::namespaced(client.clone(), b.name());
    for (obj_name, spec) in [
        ("by-id", hostile(json!({"databaseId": id}), None)),
        ("by-name", hostile(json!({"byName": true}), Some(&name))),
    ] {
        let mut manifest = instance(obj_name, spec);
        manifest["metadata"]["annotations"] =
            json!({"cache.upstash-operator.dev/rotate-password": "now"});
        apply_manifest(&client, b.name(), &manifest).await.unwrap();
    }
    for obj_name in ["by-id", "by-name"] {
        let refused = wait_refused(&b_api, obj_name, "AlreadyManaged").await;
        let (status, reason, message) = condition(&refused, "Provisioned");
        assert_eq!(
            (status.as_str(), reason.as_str()),
            ("False", "AlreadyManaged")
        );
        assert!(
            message.contains("another CacheInstance")
                && !message.contains(&format!("namespace {}", a.name())),
            "A's namespace is not disclosed by default: {message}"
        );
        assert!(refused.status.unwrap().database_id.is_none());
        let events = events_for(&client, b.name(), obj_name).await;
        assert_eq!(
            events.iter().filter(|e| e.0 == "AlreadyManaged").count(),
            1,
            "{events:?}"
        );
    }
    // A rotation asked again and a settings change on the refused objects: still nothing.
    for obj_name in ["by-id", "by-name"] {
        b_api
            .patch(
                obj_name,
                &PatchParams::default(),
                &Patch::Merge(json!({
                    "metadata": {"annotations": {"cache.upstash-operator.dev/rotate-password": "again"}},
                    "spec": {"budget": 2},
                })),
            )
            .await
            .unwrap();
    }
    for obj_name in ["by-id", "by-name"] {
        testkit::wait_for(
            "the operator to look at the changed spec",
            TIMEOUT,
            || async {
                let obj = b_api.get(obj_name).await.ok()?;
                let status = obj.status.as_ref()?;
                let ready = status.conditions.iter().find(|c| c.type_ == "Ready")?;
                (status.observed_generation == obj.metadata.generation
                    && ready.reason == "AlreadyManaged")
                    .then_some(())
            },
        )
        .await;
    }

    // A copy of A's object in B, with A's finalizer and a status naming A's database (as a
    // backup restored into another namespace makes it, or a tenant allowed to write status). It
    // is the younger of the two: it neither changes, rotates nor deletes the database. (Paused
    // while its status is written, so that the operator sees it only with that status.)
    // Creation times count in whole seconds, and of two objects created in the same second
    // the lower UID counts as the older: the copy is made in a later second than A.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let mut copy = instance(
        "copy",
        json!({"primaryRegion": "us-east-1", "budget": 1, "eviction": true, "deletionPolicy": "Delete"}),
    );
    copy["metadata"]["finalizers"] = json!(["cache.upstash-operator.dev/cleanup"]);
    copy["metadata"]["annotations"] = json!({"cache.upstash-operator.dev/paused": "true"});
    apply_manifest(&client, b.name(), &copy).await.unwrap();
    b_api
        .patch_status(
            "copy",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"databaseId": id, "databaseName": name}})),
        )
        .await
        .unwrap();
    b_api
        .patch(
            "copy",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {
                "cache.upstash-operator.dev/paused": null,
                "cache.upstash-operator.dev/rotate-password": "now",
            }}})),
        )
        .await
        .unwrap();
    wait_refused(&b_api, "copy", "AlreadyManaged").await;

    // Deleting every B object: the copy's cleanup keeps A's database.
    for obj_name in ["by-id", "by-name", "copy"] {
        b_api
            .delete(obj_name, &DeleteParams::default())
            .await
            .unwrap();
    }
    testkit::wait_for("B's objects to be gone", TIMEOUT, || async {
        let left = b_api.list(&Default::default()).await.ok()?;
        left.items.is_empty().then_some(())
    })
    .await;
    let events = events_for(&client, b.name(), "copy").await;
    assert!(
        events
            .iter()
            .any(|e| e.0 == "Retained" && e.2.contains(&id) && e.2.contains("managed by")),
        "{events:?}"
    );
    assert!(
        !events.iter().any(|e| e.0 == "Deleted"),
        "nothing deleted: {events:?}"
    );

    // Zero mutating calls against A's database, with proof that the operator looked: the
    // conditions above, and the reads of the copy's pass.
    assert_eq!(
        mutating_calls(&stack.emulator, &id).await,
        Vec::<Value>::new()
    );
    assert!(stack.emulator.calls_to("delete").await.is_empty());
    // No Secret in B holds A's credentials.
    let values = secret_values(&client, b.name()).await;
    for key in ["REDIS_PASSWORD", "UPSTASH_REDIS_REST_TOKEN"] {
        assert!(
            !values.contains(&a_secret[key]),
            "A's {key} found in a Secret of B"
        );
    }
    assert_a_intact(&client, &a, &stack.emulator, &id, &a_secret).await;
}

#[tokio::test]
async fn the_one_manager_rule_holds_across_a_restart_and_can_name_the_namespace() {
    let cluster = testkit::cluster().await;
    let ops = cluster.namespace("tenancy-restart-ops").await;
    let a = cluster.namespace("tenancy-restart-a").await;
    let b = cluster.namespace("tenancy-restart-b").await;
    let client = ops.client().await;
    allow_adoption(&client, b.name()).await;
    let mut args = operator_args(&[&a, &b]);
    args.extend(["--reveal-managing-namespace".into(), "true".into()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut stack = start_stack(&ops, &args).await;
    let (id, _, a_secret) = provision_a(&client, &a).await;

    // A new operator process: B's object is there before its first list of CacheInstances.
    stack.operator.process().stop();
    apply_manifest(
        &client,
        b.name(),
        &instance(
            "by-id",
            json!({"primaryRegion": "us-east-1", "adopt": {"databaseId": id}, "budget": 1}),
        ),
    )
    .await
    .unwrap();
    stack.emulator.clear_calls().await;
    let _operator = start_operator(&ops, &stack.emulator, &args).await;
    let b_api: Api<CacheInstance> = Api::namespaced(client.clone(), b.name());
    let refused = wait_refused(&b_api, "by-id", "AlreadyManaged").await;
    let (_, _, message) = condition(&refused, "Provisioned");
    assert!(
        message.contains(&format!("namespace {}", a.name())),
        "the platform allows naming the namespace: {message}"
    );
    assert_eq!(
        mutating_calls(&stack.emulator, &id).await,
        Vec::<Value>::new()
    );
    assert!(
        !secret_values(&client, b.name())
            .await
            .contains(&a_secret["REDIS_PASSWORD"])
    );
    assert_a_intact(&client, &a, &stack.emulator, &id, &a_secret).await;
}

#[tokio::test]
async fn adopting_through_the_shared_account_needs_the_platforms_consent() {
    let cluster = testkit::cluster().await;
    let ops = cluster.namespace("tenancy-consent-ops").await;
    let denied = cluster.namespace("tenancy-denied").await;
    let allowed = cluster.namespace("tenancy-allowed").await;
    let client = ops.client().await;
    allow_adoption(&client, allowed.name()).await;
    let args = operator_args(&[&denied, &allowed]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let stack = start_stack(&ops, &args).await;
    let mut ids = Vec::new();
    for name in ["legacy-denied", "legacy-allowed"] {
        let (code, db) = stack
            .emulator
            .developer_api(
                reqwest::Method::POST,
                "/v2/redis/database",
                Some(json!({"database_name": name, "platform": "aws", "primary_region": "us-east-1", "plan": "payg"})),
            )
            .await;
        assert_eq!(code, 200, "{db}");
        ids.push(db["database_id"].as_str().unwrap().to_string());
    }
    stack.emulator.clear_calls().await;
    for (ns, id) in [(&denied, &ids[0]), (&allowed, &ids[1])] {
        apply_manifest(
            &client,
            ns.name(),
            &instance(
                "legacy",
                json!({"primaryRegion": "us-east-1", "adopt": {"databaseId": id}, "budget": 10}),
            ),
        )
        .await
        .unwrap();
    }

    // Refused: a condition, one Event, no call about the database at all and no Secret.
    let denied_api: Api<CacheInstance> = Api::namespaced(client.clone(), denied.name());
    let refused = wait_refused(&denied_api, "legacy", "AdoptionNotAllowed").await;
    let (_, reason, message) = condition(&refused, "Provisioned");
    assert_eq!(reason, "AdoptionNotAllowed");
    assert!(
        message.contains("operator-wide") && message.contains(denied.name()),
        "{message}"
    );
    // The Event follows the status write.
    testkit::wait_for("the AdoptionNotAllowed Event", TIMEOUT, || async {
        events_for(&client, denied.name(), "legacy")
            .await
            .iter()
            .any(|e| e.0 == "AdoptionNotAllowed")
            .then_some(())
    })
    .await;
    let events = events_for(&client, denied.name(), "legacy").await;
    assert_eq!(
        events
            .iter()
            .filter(|e| e.0 == "AdoptionNotAllowed" && e.1 == "Warning")
            .count(),
        1,
        "{events:?}"
    );
    assert!(
        Api::<Secret>::namespaced(client.clone(), denied.name())
            .get_opt("legacy")
            .await
            .unwrap()
            .is_none()
    );

    // Allowed: adopted, its spec applied, its Secret written.
    let allowed_api: Api<CacheInstance> = Api::namespaced(client.clone(), allowed.name());
    let ready = testkit::wait_for_condition(&allowed_api, "legacy", "Ready", "True", TIMEOUT).await;
    assert_eq!(ready.status.unwrap().database_id.as_ref(), Some(&ids[1]));
    let db = stack.emulator.database(&ids[1]).await.unwrap();
    assert_eq!(db["budget"], 1000);
    let data = secret_data(
        &Api::<Secret>::namespaced(client.clone(), allowed.name())
            .get("legacy")
            .await
            .unwrap(),
    );
    assert_eq!(data["REDIS_PASSWORD"], db["password"].as_str().unwrap());

    // The refused database was never read, let alone changed (the allowed one was: the
    // operator was at work meanwhile).
    let calls = stack.emulator.calls().await;
    assert!(calls.iter().any(|c| c["database_id"] == ids[1].as_str()));
    assert!(
        !calls.iter().any(|c| c["database_id"] == ids[0].as_str()),
        "{calls:?}"
    );

    // Deleting the adopted instance keeps the database: adoption never implies deletion.
    allowed_api
        .delete("legacy", &DeleteParams::default())
        .await
        .unwrap();
    testkit::wait_for("the adopted instance to be gone", TIMEOUT, || async {
        allowed_api
            .get_opt("legacy")
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
    assert!(stack.emulator.database(&ids[1]).await.is_some());
    let events = events_for(&client, allowed.name(), "legacy").await;
    assert!(
        events
            .iter()
            .any(|e| e.0 == "Retained" && e.2.contains("adopted")),
        "{events:?}"
    );
    assert!(stack.emulator.calls_to("delete").await.is_empty());
}

#[tokio::test]
async fn adopting_by_name_a_database_that_is_gone_reports_it_once() {
    let cluster = testkit::cluster().await;
    let ns = cluster.namespace("tenancy-gone").await;
    let stack = start_stack(&ns, &crate::support::ADOPT_ANYWHERE).await;
    let client = ns.client().await;
    let (code, db) = stack
        .emulator
        .developer_api(
            reqwest::Method::POST,
            "/v2/redis/database",
            Some(json!({"database_name": "legacy-gone", "platform": "aws", "primary_region": "us-east-1", "plan": "payg"})),
        )
        .await;
    assert_eq!(code, 200, "{db}");
    let id = db["database_id"].as_str().unwrap().to_string();
    // Held back (another primary region), after the account's list showed the database.
    apply_manifest(
        &client,
        ns.name(),
        &instance(
            "late",
            json!({"primaryRegion": "eu-west-1", "databaseName": "legacy-gone", "adopt": {"byName": true}}),
        ),
    )
    .await
    .unwrap();
    let api: Api<CacheInstance> = Api::namespaced(client.clone(), ns.name());
    wait_refused(&api, "late", "AdoptionConflict").await;
    // The database goes; the next pass finds it gone and says so.
    let (code, _) = stack
        .emulator
        .developer_api(
            reqwest::Method::DELETE,
            &format!("/v2/redis/database/{id}"),
            None,
        )
        .await;
    assert_eq!(code, 200);
    stack.emulator.clear_calls().await;
    api.patch(
        "late",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"annotations": {"example.com/nudge": "1"}}})),
    )
    .await
    .unwrap();
    let failed = wait_refused(&api, "late", "AdoptionFailed").await;
    let (_, _, message) = condition(&failed, "Provisioned");
    assert!(
        message.contains("no Upstash database is named legacy-gone"),
        "{message}"
    );
    let gets = stack
        .emulator
        .calls()
        .await
        .into_iter()
        .filter(|c| c["database_id"] == id.as_str())
        .count();
    assert!(gets <= 1, "{gets} reads of the gone database");
}
