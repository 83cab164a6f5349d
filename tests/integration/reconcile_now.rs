//! "Reconcile now" by annotation: a new value of
//! `cache.upstash-operator.dev/reconcile-requested-at` reconciles the instance at once with a
//! fresh read of its database (a change made in the console is found well before the resync),
//! and the value is echoed in `status.lastHandledReconcileAt`.

use std::time::Duration;

use kube::{
    Api,
    api::{Patch, PatchParams},
};
use serde_json::json;
use upstash_operator::crd::{CacheInstance, RECONCILE_REQUEST_ANNOTATION};

use crate::support::{apply_until_ready, start_stack};

const TIMEOUT: Duration = Duration::from_secs(60);

async fn request(api: &Api<CacheInstance>, name: &str, value: &str) {
    api.patch(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"annotations": {RECONCILE_REQUEST_ANNOTATION: value}}})),
    )
    .await
    .unwrap();
}

async fn handled(api: &Api<CacheInstance>, name: &str, value: &str) {
    testkit::wait_for(
        &format!("status.lastHandledReconcileAt to be {value}"),
        TIMEOUT,
        || async {
            let status = api.get(name).await.ok()?.status?;
            (status.last_handled_reconcile_at.as_deref() == Some(value)).then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn the_reconcile_annotation_reads_the_database_at_once_and_is_echoed_in_status() {
    let cluster = testkit::cluster().await;
    let ns = cluster.namespace("reconcile-now").await;
    let client = ns.client().await;
    // The default resync (10 minutes): only the request can explain a read within the test.
    let stack = start_stack(&ns, &[]).await;
    let emulator = &stack.emulator;
    let api: Api<CacheInstance> = Api::namespaced(client.clone(), ns.name());
    let name = "crm-cache";
    let id = apply_until_ready(
        &client,
        ns.name(),
        name,
        json!({"primaryRegion": "us-east-1", "plan": "payg", "budget": 50}),
        TIMEOUT,
    )
    .await;
    assert!(
        api.get(name)
            .await
            .unwrap()
            .status
            .unwrap()
            .last_handled_reconcile_at
            .is_none()
    );

    // A change in the console; then a request to reconcile now.
    emulator
        .console(
            "alice@example.com",
            None,
            "PATCH",
            &format!("/v2/redis/update-budget/{id}"),
            Some(json!({"budget": 30000})),
        )
        .await;
    let mark = emulator.mark().await;
    request(&api, name, "2026-12-06T23:00:00Z").await;
    handled(&api, name, "2026-12-06T23:00:00Z").await;
    assert!(
        !emulator
            .calls_since(mark, "get", Some(&id))
            .await
            .is_empty(),
        "no fresh read of the database"
    );
    assert_eq!(
        emulator
            .calls_since(mark, "update-budget", Some(&id))
            .await
            .len(),
        1
    );
    assert_eq!(emulator.database(&id).await.unwrap()["budget"], 5000);

    // Each new value is served, with a read of its own.
    let mark = emulator.mark().await;
    request(&api, name, "second").await;
    handled(&api, name, "second").await;
    assert!(
        !emulator
            .calls_since(mark, "get", Some(&id))
            .await
            .is_empty()
    );
    assert!(emulator.mutating_since(mark).await.is_empty());
}
