//! Admission and reconcile agree. Every check the reconciler reports as `InvalidSpec`
//! (`crd::validation::Check::ALL`; the error type carries one, so there is no other) is either
//! refused by the real API server at `kubectl apply` with the field named, or, where no admission
//! rule can express it, reported by the reconciler before any Upstash call.

use std::time::Duration;

use kube::{Api, api::DeleteParams};
use upstash_operator::crd::{
    CacheInstance,
    validation::{Admission, Check, PolicyCheck, breaking_policy_spec, breaking_spec},
};

use crate::support::{apply_manifest, install_crds, instance, policy, start_stack};

/// The name `breaking_spec` assumes (the read-only Secret collides with it).
const NAME: &str = "crm-cache";

#[tokio::test]
async fn every_invalid_spec_check_is_refused_at_admission_or_before_any_call() {
    let cluster = testkit::cluster().await;
    let ns = cluster.namespace("admission-agree").await;
    let client = ns.client().await;
    install_crds(&client).await;
    let instances: Api<CacheInstance> = Api::namespaced(client.clone(), ns.name());

    let mut reconcile_only = Vec::new();
    for &check in Check::ALL {
        let manifest = instance(NAME, breaking_spec(check));
        let result = apply_manifest(&client, ns.name(), &manifest).await;
        match check.admission() {
            Admission::Schema { field } | Admission::Cel { field } => {
                let Err(kube::Error::Api(status)) = result else {
                    panic!("{check:?}: admission accepted {manifest}");
                };
                assert_eq!(status.code, 422, "{check:?}: {status:?}");
                assert!(
                    status.message.contains(field),
                    "{check:?}: the refusal does not name {field}: {}",
                    status.message
                );
                eprintln!("{check:?}: refused at admission: {}", status.message);
            }
            Admission::ReconcileOnly { why } => {
                result.unwrap_or_else(|e| panic!("{check:?}: refused at admission: {e}"));
                eprintln!("{check:?}: cannot be refused at admission: {why}");
                reconcile_only.push(check);
                instances
                    .delete(NAME, &DeleteParams::default())
                    .await
                    .unwrap();
                testkit::wait_for(
                    "the instance to be gone",
                    Duration::from_secs(30),
                    || async { instances.get_opt(NAME).await.ok()?.is_none().then_some(()) },
                )
                .await;
            }
        }
    }

    // The CachePolicy checks, all expressible at admission.
    for &check in PolicyCheck::ALL {
        let manifest = policy("production", breaking_policy_spec(check));
        let (Admission::Cel { field } | Admission::Schema { field }) = check.admission() else {
            panic!("{check:?}: every policy check is made at admission");
        };
        let Err(kube::Error::Api(status)) = apply_manifest(&client, ns.name(), &manifest).await
        else {
            panic!("{check:?}: admission accepted {manifest}");
        };
        assert_eq!(status.code, 422, "{check:?}: {status:?}");
        assert!(
            status.message.contains(field),
            "{check:?}: the refusal does not name {field}: {}",
            status.message
        );
        eprintln!("{check:?}: refused at admission: {}", status.message);
    }

    // What admission cannot refuse, the reconciler reports before calling Upstash.
    let stack = start_stack(&ns, &[]).await;
    for check in reconcile_only {
        apply_manifest(&client, ns.name(), &instance(NAME, breaking_spec(check)))
            .await
            .unwrap();
        testkit::wait_for_condition(&instances, NAME, "Ready", "False", Duration::from_secs(60))
            .await;
        let what = format!("{check:?} reported as InvalidSpec");
        testkit::wait_for(&what, Duration::from_secs(60), || async {
            let obj = instances.get(NAME).await.ok()?;
            let ready = obj
                .status?
                .conditions
                .into_iter()
                .find(|c| c.type_ == "Ready")?;
            (ready.reason == "InvalidSpec" && ready.message.contains(check.field())).then_some(())
        })
        .await;
        let calls = stack.emulator.calls().await;
        assert!(
            calls.is_empty(),
            "{check:?}: Upstash was called for an invalid spec: {calls:?}"
        );
        instances
            .delete(NAME, &DeleteParams::default())
            .await
            .unwrap();
        testkit::wait_for(
            "the instance to be gone",
            Duration::from_secs(30),
            || async { instances.get_opt(NAME).await.ok()?.is_none().then_some(()) },
        )
        .await;
    }
}
