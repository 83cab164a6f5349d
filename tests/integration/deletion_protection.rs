//! Deletion protection, enforced by the API server: the ValidatingAdmissionPolicy installed with
//! the CRDs (`crds/`, as `kubectl apply -f crds/` installs it) refuses `kubectl delete` of a
//! CacheInstance with `spec.deletionProtection: true`, with a message that says how to turn it
//! off; after that the delete works. A namespace delete stays stuck on the protected object and
//! leaves its database in place.

use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use kube::{
    Api,
    api::{DeleteParams, Patch, PatchParams},
};
use serde_json::json;
use upstash_operator::crd::{CacheInstance, deletion_protection::DELETION_PROTECTION_POLICY};

use crate::support::{
    apply_manifest, apply_until_ready, install_crds, instance, start_operator, start_stack,
};

const TIMEOUT: Duration = Duration::from_secs(60);

/// Runs the kubectl of `scripts/test.sh` (`KUBECTL_BIN`, else `kubectl` on the PATH) against
/// the test cluster: (success, stdout + stderr).
fn kubectl(cluster: &testkit::Cluster, args: &[&str]) -> (bool, String) {
    let bin = std::env::var_os("KUBECTL_BIN").unwrap_or_else(|| "kubectl".into());
    let out = std::process::Command::new(bin)
        .arg("--kubeconfig")
        .arg(cluster.kubeconfig_path())
        .args(args)
        .output()
        .expect("running kubectl");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

/// Waits until the API server enforces the policy for `name`: a server-side dry run of its
/// delete is refused (a new policy takes the API server a moment to load).
async fn wait_enforced(api: &Api<CacheInstance>, name: &str) {
    let dry_run = DeleteParams {
        dry_run: true,
        ..DeleteParams::default()
    };
    testkit::wait_for(
        "the deletion protection policy to be enforced",
        TIMEOUT,
        || async { api.delete(name, &dry_run).await.is_err().then_some(()) },
    )
    .await;
}

#[tokio::test]
async fn kubectl_delete_of_a_protected_instance_is_refused_until_protection_is_off() {
    let cluster = testkit::cluster().await;
    let ns = cluster.namespace("delprot").await;
    let client = ns.client().await;
    let stack = start_stack(&ns, &[]).await;
    let api: Api<CacheInstance> = Api::namespaced(client.clone(), ns.name());
    let name = "crm-cache";
    let id = apply_until_ready(&client, ns.name(), name, json!({"primaryRegion": "us-east-1", "deletionPolicy": "Delete", "deletionProtection": true}), TIMEOUT).await;
    wait_enforced(&api, name).await;

    let (ok, out) = kubectl(
        cluster,
        &[
            "delete",
            "cacheinstance",
            name,
            "-n",
            ns.name(),
            "--wait=false",
        ],
    );
    assert!(
        !ok,
        "kubectl delete of a protected instance succeeded: {out}"
    );
    for expected in [
        DELETION_PROTECTION_POLICY,
        "denied request",
        &format!(
            "CacheInstance {}/{name} has spec.deletionProtection: true, so it cannot be deleted",
            ns.name()
        ),
        &format!(
            r#"kubectl patch cacheinstance {name} -n {} --type merge -p '{{"spec":{{"deletionProtection":false}}}}'"#,
            ns.name()
        ),
    ] {
        assert!(out.contains(expected), "missing {expected:?} in: {out}");
    }
    let kept = api.get(name).await.unwrap();
    assert!(kept.metadata.deletion_timestamp.is_none());
    assert!(stack.emulator.database(&id).await.is_some());
    assert!(stack.emulator.calls_to("delete").await.is_empty());

    // Off, with the command the message gives; then the delete works and the cleanup runs.
    let (ok, out) = kubectl(
        cluster,
        &[
            "patch",
            "cacheinstance",
            name,
            "-n",
            ns.name(),
            "--type",
            "merge",
            "-p",
            r#"{"spec":{"deletionProtection":false}}"#,
        ],
    );
    assert!(ok, "{out}");
    let (ok, out) = kubectl(
        cluster,
        &[
            "delete",
            "cacheinstance",
            name,
            "-n",
            ns.name(),
            "--timeout=60s",
        ],
    );
    assert!(ok, "kubectl delete after turning protection off: {out}");
    testkit::wait_for("the instance to be gone", TIMEOUT, || async {
        api.get_opt(name).await.ok()?.is_none().then_some(())
    })
    .await;
    assert!(stack.emulator.database(&id).await.is_none());
    assert_eq!(stack.emulator.calls_to("delete").await.len(), 1);
}

#[tokio::test]
async fn a_namespace_delete_leaves_a_protected_database_in_place() {
    let cluster = testkit::cluster().await;
    let ops = cluster.namespace("delprot-ops").await;
    let app = cluster.namespace("delprot-app").await;
    let admin = ops.client().await;
    install_crds(&admin).await;
    testkit::operator::write_credentials(&admin, ops.name()).await;
    let emulator = testkit::emulator::Emulator::start().await;
    let _operator = start_operator(&ops, &emulator, &["--watch-namespaces", app.name()]).await;
    let api: Api<CacheInstance> = Api::namespaced(admin.clone(), app.name());
    for (name, protected) in [("kept", true), ("gone", false)] {
        apply_manifest(
            &admin,
            app.name(),
            &instance(
                name,
                json!({"primaryRegion": "us-east-1", "deletionPolicy": "Delete", "deletionProtection": protected}),
            ),
        )
        .await
        .unwrap();
    }
    let mut ids = Vec::new();
    for name in ["kept", "gone"] {
        testkit::wait_for_condition(&api, name, "Ready", "True", TIMEOUT).await;
        ids.push(
            api.get(name)
                .await
                .unwrap()
                .status
                .unwrap()
                .database_id
                .unwrap(),
        );
    }
    let (kept_id, gone_id) = (ids[0].clone(), ids[1].clone());
    wait_enforced(&api, "kept").await;

    // kubectl delete namespace.
    let namespaces: Api<Namespace> = Api::all(admin.clone());
    namespaces
        .delete(app.name(), &DeleteParams::default())
        .await
        .unwrap();
    // Witnesses that the namespace controller went through the namespace: the unprotected
    // instance was deleted (and its database with it), and the controller reports that it
    // could not delete everything.
    testkit::wait_for("the unprotected instance to be gone", TIMEOUT, || async {
        api.get_opt("gone").await.ok()?.is_none().then_some(())
    })
    .await;
    assert!(emulator.database(&gone_id).await.is_none());
    let failure = testkit::wait_for(
        "the namespace controller to report the refused delete",
        TIMEOUT,
        || async {
            let ns = namespaces.get(app.name()).await.ok()?;
            ns.status?
                .conditions?
                .into_iter()
                .find(|c| c.type_ == "NamespaceDeletionContentFailure" && c.status == "True")
        },
    )
    .await;
    eprintln!("namespace condition: {:?}", failure.message);
    let kept = api.get("kept").await.unwrap();
    assert!(
        kept.metadata.deletion_timestamp.is_none(),
        "the protected instance is being deleted"
    );
    assert!(
        emulator.database(&kept_id).await.is_some(),
        "the protected instance's database was deleted"
    );
    let deletes = emulator.calls_to("delete").await;
    assert_eq!(
        deletes.len(),
        1,
        "only the unprotected database: {deletes:?}"
    );
    let ns = namespaces.get(app.name()).await.unwrap();
    assert_eq!(
        ns.status.and_then(|s| s.phase).as_deref(),
        Some("Terminating")
    );

    // Turning protection off lets the namespace go, and the cleanup runs as deletionPolicy says.
    api.patch(
        "kept",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"deletionProtection": false}})),
    )
    .await
    .unwrap();
    testkit::wait_for("the namespace to be gone", TIMEOUT, || async {
        namespaces
            .get_opt(app.name())
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
    assert!(emulator.database(&kept_id).await.is_none());
    assert_eq!(emulator.calls_to("delete").await.len(), 2);
}

#[tokio::test]
async fn protection_turned_on_while_a_delete_waits_keeps_the_database() {
    let cluster = testkit::cluster().await;
    let ns = cluster.namespace("delprot-late").await;
    let client = ns.client().await;
    let stack = start_stack(&ns, &[]).await;
    let api: Api<CacheInstance> = Api::namespaced(client.clone(), ns.name());
    let name = "crm-cache";
    let id = apply_until_ready(
        &client,
        ns.name(),
        name,
        json!({"primaryRegion": "us-east-1", "deletionPolicy": "Delete"}),
        TIMEOUT,
    )
    .await;

    // Paused, deleted (the finalizer holds it), then protected: the policy does not see an
    // update, and the operator's cleanup must wait.
    let merge = |v: serde_json::Value| Patch::Merge(v);
    api.patch(
        name,
        &PatchParams::default(),
        &merge(json!({"metadata": {"annotations": {"cache.upstash-operator.dev/paused": "true"}}})),
    )
    .await
    .unwrap();
    api.delete(name, &DeleteParams::default()).await.unwrap();
    api.patch(
        name,
        &PatchParams::default(),
        &merge(json!({"spec": {"deletionProtection": true}})),
    )
    .await
    .unwrap();
    api.patch(
        name,
        &PatchParams::default(),
        &merge(json!({"metadata": {"annotations": {"cache.upstash-operator.dev/paused": null}}})),
    )
    .await
    .unwrap();
    let held = testkit::wait_for_condition(&api, name, "Ready", "False", TIMEOUT).await;
    let ready = held
        .status
        .unwrap()
        .conditions
        .into_iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert_eq!(ready.reason, "DeletionProtected", "{ready:?}");
    assert!(
        ready.message.contains("spec.deletionProtection: false"),
        "{ready:?}"
    );
    assert!(stack.emulator.database(&id).await.is_some());
    assert!(stack.emulator.calls_to("delete").await.is_empty());

    // Off: the cleanup runs.
    api.patch(
        name,
        &PatchParams::default(),
        &merge(json!({"spec": {"deletionProtection": false}})),
    )
    .await
    .unwrap();
    testkit::wait_for("the instance to be gone", TIMEOUT, || async {
        api.get_opt(name).await.ok()?.is_none().then_some(())
    })
    .await;
    assert!(stack.emulator.database(&id).await.is_none());
    assert_eq!(stack.emulator.calls_to("delete").await.len(), 1);
}
