//! Names at Kubernetes' limits: a CacheInstance named with 253 characters in a namespace named
//! with 63 gets its database, its Secret and its Events.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::{
    Api,
    api::{DeleteParams, PostParams},
};
use serde_json::json;
use upstash_operator::crd::CacheInstance;

use crate::support::{apply_manifest, events_for, install_crds, instance, start_operator};

/// A DNS-subdomain name of exactly `len` characters: labels of at most 63, joined by dots.
fn long_name(seed: char, len: usize) -> String {
    let mut name = String::new();
    while name.len() < len {
        if !name.is_empty() {
            name.push('.');
        }
        let room = (len - name.len()).min(63);
        name.extend(std::iter::repeat_n(seed, room));
    }
    assert_eq!(name.len(), len);
    name
}

#[tokio::test]
async fn the_longest_names_work_end_to_end() {
    let cluster = testkit::cluster().await;
    let ops = cluster.namespace("long-names-ops").await;
    let admin = ops.client().await;
    install_crds(&admin).await;
    // A namespace name of 63 characters (a DNS label), unique per run.
    let suffix = format!("{:08x}", rand::random::<u32>());
    let namespace = format!("{}-{suffix}", "n".repeat(63 - suffix.len() - 1));
    assert_eq!(namespace.len(), 63);
    let namespaces: Api<Namespace> = Api::all(admin.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": namespace, "labels": {"testkit": "true"}}
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    testkit::operator::write_credentials(&admin, ops.name()).await;
    let emulator = testkit::emulator::Emulator::start().await;
    let _operator = start_operator(&ops, &emulator, &["--watch-namespaces", &namespace]).await;

    let name = long_name('c', 253);
    apply_manifest(
        &admin,
        &namespace,
        &instance(&name, json!({"primaryRegion": "eu-west-1"})),
    )
    .await
    .expect("a 253-character name is valid");
    let instances: Api<CacheInstance> = Api::namespaced(admin.clone(), &namespace);
    testkit::wait_for_condition(&instances, &name, "Ready", "True", Duration::from_secs(60)).await;

    let status = instances.get(&name).await.unwrap().status.unwrap();
    let databases = emulator.databases().await;
    assert_eq!(databases.len(), 1, "exactly one database: {databases:?}");
    let db_name = databases[0]["database_name"].as_str().unwrap().to_string();
    assert!(db_name.len() <= 64, "database name {db_name}");
    assert_eq!(status.database_name.as_deref(), Some(db_name.as_str()));

    // The Secret is named after the instance; its instance label is shortened with a hash.
    let secret = Api::<Secret>::namespaced(admin.clone(), &namespace)
        .get(&name)
        .await
        .expect("the connection Secret");
    let label = &secret.metadata.labels.as_ref().unwrap()["cache.upstash-operator.dev/instance"];
    assert!(label.len() <= 63, "{label}");
    assert_eq!(label, &upstash_operator::names::label_value(&name));
    assert!(
        secret.data.as_ref().unwrap().contains_key("REDIS_URL"),
        "the Secret holds the connection details"
    );

    // Events about the instance are published under names that fit.
    testkit::wait_for("the Provisioned Event", Duration::from_secs(30), || async {
        events_for(&admin, &namespace, &name)
            .await
            .iter()
            .any(|(reason, _, _)| reason == "Provisioned")
            .then_some(())
    })
    .await;

    // Clean up: the database goes with the instance.
    instances
        .delete(&name, &DeleteParams::default())
        .await
        .unwrap();
    testkit::wait_for(
        "the instance to be gone",
        Duration::from_secs(60),
        || async { instances.get_opt(&name).await.ok()?.is_none().then_some(()) },
    )
    .await;
    assert!(emulator.databases().await.is_empty());
    let _ = namespaces
        .delete(&namespace, &DeleteParams::background())
        .await;
}
