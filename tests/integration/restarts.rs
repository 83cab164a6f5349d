//! Restarts of the operator process: a settled instance is read when its resync is due by the
//! record of last reads the previous process left, while an instance whose spec changed is
//! read at once.

use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::{
    Api,
    api::{Patch, PatchParams},
};
use serde_json::{Value, json};
use upstash_operator::crd::CacheInstance;

use crate::support::{apply_manifest, instance, start_operator, start_stack};

const TIMEOUT: Duration = Duration::from_secs(120);
const RECORD: &str = "last-reads";

/// Developer API calls of `endpoint` on database `id` in the emulator's call log.
async fn calls_on(emulator: &testkit::emulator::Emulator, endpoint: &str, id: &str) -> usize {
    emulator
        .calls_to(endpoint)
        .await
        .iter()
        .filter(|c| c["database_id"] == Value::String(id.to_string()))
        .count()
}

#[tokio::test]
async fn a_restart_reads_a_settled_instance_when_its_resync_is_due() {
    let cluster = testkit::cluster().await;
    let ns = cluster.namespace("restart").await;
    // A resync interval of an hour: the settled instance's next read is due long after this
    // test, and the record of last reads kept in the test's namespace.
    let args = [
        "--resync-interval",
        "1h",
        "--pod-namespace",
        ns.name(),
        "--last-reads-configmap",
        RECORD,
    ];
    let mut stack = start_stack(&ns, &args).await;
    let client = ns.client().await;
    let api: Api<CacheInstance> = Api::namespaced(client.clone(), ns.name());
    for name in ["settled", "edited"] {
        apply_manifest(
            &client,
            ns.name(),
            &instance(name, json!({"primaryRegion": "us-east-1"})),
        )
        .await
        .unwrap();
    }
    let mut ids = Vec::new();
    for name in ["settled", "edited"] {
        let ready = testkit::wait_for_condition(&api, name, "Ready", "True", TIMEOUT).await;
        ids.push(ready.status.unwrap().database_id.expect("a database"));
    }
    let (settled, edited) = (ids[0].clone(), ids[1].clone());

    // A clean shutdown leaves the record: 12 bytes per instance read.
    stack.operator.process().stop();
    let record = Api::<ConfigMap>::namespaced(client.clone(), ns.name())
        .get(RECORD)
        .await
        .expect("the record of last reads");
    assert_eq!(
        record.data.as_ref().unwrap()["count"],
        "2",
        "{:?}",
        record.data
    );
    assert_eq!(record.binary_data.as_ref().unwrap()["reads"].0.len(), 24);
    let text = serde_json::to_string(&record).unwrap();
    assert!(
        !text.contains("settled") && !text.contains(&settled),
        "no names, no databases: {text}"
    );

    // While the operator is down, one spec changes: that instance is no longer settled.
    api.patch(
        "edited",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"eviction": true}})),
    )
    .await
    .unwrap();
    stack.emulator.clear_calls().await;
    let mut restarted = start_operator(&ns, &stack.emulator, &args).await;

    // The edited instance is read at once and its change made; the settled one is sampled by
    // the monitor (proof that the new process looked at it) without its database being read.
    testkit::wait_for(
        "the edited instance read and the settled one sampled",
        TIMEOUT,
        || async {
            let edited_read = calls_on(&stack.emulator, "get", &edited).await > 0;
            let settled_sampled = calls_on(&stack.emulator, "stats", &settled).await > 0;
            (edited_read && settled_sampled).then_some(())
        },
    )
    .await;
    testkit::wait_for(
        "the edited instance Ready for its new spec",
        TIMEOUT,
        || {
            let api = api.clone();
            async move {
                let obj = api.get("edited").await.ok()?;
                let status = obj.status?;
                (status.observed_generation == obj.metadata.generation
                    && status.eviction == Some(true))
                .then_some(())
            }
        },
    )
    .await;
    assert_eq!(
        calls_on(&stack.emulator, "get", &settled).await,
        0,
        "the settled instance was read before its resync was due; operator log:\n{}",
        restarted.logs()
    );
    assert!(
        restarted.logs().contains("read the record of last reads"),
        "{}",
        restarted.logs()
    );
    restarted.process().stop();
}
