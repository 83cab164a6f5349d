//! Each class of spec that can never work is refused at `kubectl apply` with the field named, the
//! way Kubernetes validates its own objects, while its valid neighbour (the same fields, one value
//! changed) is accepted: on the real API server, for every reconcile check that admission makes
//! (`Check::ALL`, `PolicyCheck::ALL`), with every example of the label-syntax classes.

use serde_json::Value;
use upstash_operator::crd::validation::{
    Admission, Check, PolicyCheck, breaking_policy_specs, breaking_spec, valid_neighbour,
    valid_policy_neighbour,
};

use crate::support::{apply_manifest, install_crds, instance, policy};

/// The name `breaking_spec` and `valid_neighbour` assume.
const NAME: &str = "crm-cache";

/// Applies `manifest` and expects a 422 that names `field`.
async fn expect_refused(
    client: &kube::Client,
    ns: &str,
    what: &str,
    manifest: &Value,
    field: &str,
) {
    let Err(kube::Error::Api(status)) = apply_manifest(client, ns, manifest).await else {
        panic!("{what}: admission accepted {manifest}");
    };
    assert_eq!(status.code, 422, "{what}: {status:?}");
    assert!(
        status.message.contains(field),
        "{what}: the refusal does not name {field}: {}",
        status.message
    );
    eprintln!("{what}: refused: {}", status.message);
}

#[tokio::test]
async fn each_class_is_refused_naming_its_field_and_its_valid_neighbour_is_accepted() {
    let cluster = testkit::cluster().await;
    let ns = cluster.namespace("admission-classes").await;
    let client = ns.client().await;
    install_crds(&client).await;

    let mut refused = 0;
    for &check in Check::ALL {
        let (Admission::Schema { field } | Admission::Cel { field }) = check.admission() else {
            continue;
        };
        let what = format!("{check:?}");
        expect_refused(
            &client,
            ns.name(),
            &what,
            &instance(NAME, breaking_spec(check)),
            field,
        )
        .await;
        refused += 1;
        let neighbour = instance(NAME, valid_neighbour(check));
        apply_manifest(&client, ns.name(), &neighbour)
            .await
            .unwrap_or_else(|e| panic!("{what}: the valid neighbour {neighbour} was refused: {e}"));
        // A new object each time: `adopt` and `databaseName` are immutable.
        kube::Api::<upstash_operator::crd::CacheInstance>::namespaced(client.clone(), ns.name())
            .delete(NAME, &Default::default())
            .await
            .unwrap();
    }
    for &check in PolicyCheck::ALL {
        let (Admission::Schema { field } | Admission::Cel { field }) = check.admission() else {
            panic!("{check:?}: every policy check is made at admission");
        };
        for (i, spec) in breaking_policy_specs(check).into_iter().enumerate() {
            let what = format!("{check:?} #{i}");
            expect_refused(
                &client,
                ns.name(),
                &what,
                &policy("production", spec),
                field,
            )
            .await;
            refused += 1;
        }
        let neighbour = policy("production", valid_policy_neighbour(check));
        apply_manifest(&client, ns.name(), &neighbour)
            .await
            .unwrap_or_else(|e| {
                panic!("{check:?}: the valid neighbour {neighbour} was refused: {e}")
            });
        // The next example is a new object, not an update of this one.
        kube::Api::<upstash_operator::crd::CachePolicy>::namespaced(client.clone(), ns.name())
            .delete("production", &Default::default())
            .await
            .unwrap();
    }
    // The classes: duplicates in the lists sent to Upstash, a budget on the free plan, adoption
    // by name without a name, and label syntax in matchLabels and matchExpressions.
    for check in [
        Check::DuplicateReadRegion,
        Check::DuplicateAllowedIp,
        Check::BudgetOnFreePlan,
        Check::AdoptByNameWithoutName,
    ] {
        assert!(
            matches!(check.admission(), Admission::Cel { .. }),
            "{check:?}"
        );
    }
    assert!(refused >= 20, "{refused} refusals");
}
