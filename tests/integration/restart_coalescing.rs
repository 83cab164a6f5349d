//! Restart coalescing: one Deployment uses the Secrets of three CacheInstances (each lists it in
//! `passwordRotation.restart`). Rotated together, they restart it once, and the pod template
//! keeps one entry per instance, so no instance restarts it again for another's credentials.

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api,
    api::{Patch, PatchParams},
};
use serde_json::json;
use upstash_operator::controller::restarts::{instance_key, parse};
use upstash_operator::crd::CacheInstance;

use crate::support::{
    FAST_ROTATIONS_AND_RESTARTS, apply_manifest, create_deployment, instance, restart_stamp,
    secret_data, start_stack, witness_pass,
};

const TIMEOUT: Duration = Duration::from_secs(90);
const NAMES: [&str; 3] = ["orders", "sessions", "catalog"];

#[tokio::test]
async fn three_instances_rotated_together_restart_their_deployment_once() {
    let cluster = testkit::cluster().await;
    let ns = cluster.namespace("coalesce").await;
    let client = ns.client().await;
    let stack = start_stack(&ns, &FAST_ROTATIONS_AND_RESTARTS).await;
    let deployments = create_deployment(&client, ns.name(), "web", &NAMES).await;
    let api: Api<CacheInstance> = Api::namespaced(client.clone(), ns.name());
    for name in NAMES {
        apply_manifest(
            &client,
            ns.name(),
            &instance(
                name,
                json!({"primaryRegion": "us-east-1", "passwordRotation": {"restart": [{"kind": "Deployment", "name": "web"}]}}),
            ),
        )
        .await
        .unwrap();
    }
    for name in NAMES {
        testkit::wait_for_condition(&api, name, "Ready", "True", TIMEOUT).await;
    }
    let keys: Vec<String> = NAMES.iter().map(|n| instance_key(ns.name(), n)).collect();
    // The first stamp carries an entry of each instance.
    let first = testkit::wait_for("an entry of each instance", TIMEOUT, || async {
        let d = deployments.get("web").await.ok()?;
        let entries = parse(&restart_stamp(&d)?);
        keys.iter()
            .all(|k| entries.contains_key(k))
            .then_some((entries, d.metadata.generation.unwrap()))
    })
    .await;
    let (before, generation) = first;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns.name());
    let mut old = Vec::new();
    for name in NAMES {
        old.push(secret_data(&secrets.get(name).await.unwrap()));
    }

    // Rotate the three together.
    for name in NAMES {
        api.patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"cache.upstash-operator.dev/rotate-password": "together"}}})),
        )
        .await
        .unwrap();
    }
    for (name, old) in NAMES.iter().zip(&old) {
        testkit::wait_for("the Secret to get new credentials", TIMEOUT, || async {
            let data = secret_data(&secrets.get(name).await.ok()?);
            (data["REDIS_PASSWORD"] != old["REDIS_PASSWORD"]).then_some(())
        })
        .await;
    }
    assert_eq!(stack.emulator.calls_to("reset-password").await.len(), 3);
    let after = testkit::wait_for(
        "the new credentials of all three stamped",
        TIMEOUT,
        || async {
            let d = deployments.get("web").await.ok()?;
            let entries = parse(&restart_stamp(&d)?);
            keys.iter()
                .all(|k| entries.get(k).is_some_and(|v| Some(v) != before.get(k)))
                .then_some(d)
        },
    )
    .await;
    assert_eq!(
        after.metadata.generation.unwrap(),
        generation + 1,
        "one rollout restart for the three rotations"
    );

    // Witnessed passes of each instance: none restarts it again.
    for name in NAMES {
        witness_pass(&stack.operator, &client, ns.name(), name).await;
    }
    let later = deployments.get("web").await.unwrap();
    assert_eq!(later.metadata.generation, after.metadata.generation);
    assert_eq!(restart_stamp(&later), restart_stamp(&after));
}
