//! `kubectl delete namespace` on namespaces full of CacheInstances: the namespace controller
//! deletes the credentials Secrets together with the instances, and each instance's cleanup must
//! still run with the credentials it used. The namespaces go, each database is deleted or kept
//! as its instance's deletionPolicy says, and no Secret keeps a finalizer.

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use serde_json::json;
use upstash_operator::{
    crd::CacheInstance,
    credentials::usage::{CLAIM_LABEL, IN_USE_FINALIZER},
};

use crate::support::{apply_manifest, install_crds, instance, start_operator};

const READY: Duration = Duration::from_secs(60);
const TEAM: (&str, &str) = ("team@example.com", "team-key-0c41");
const PROJECT: (&str, &str) = ("project@example.com", "project-key-93d2");

/// One instance of the test: where it lives, where its credentials come from, its policy.
struct Case {
    namespace: String,
    name: &'static str,
    account: &'static str,
    retain: bool,
    database_id: String,
}

async fn create(client: &kube::Client, namespace: &str, name: &str, spec: serde_json::Value) {
    apply_manifest(client, namespace, &instance(name, spec))
        .await
        .unwrap_or_else(|e| panic!("applying {namespace}/{name}: {e}"));
}

#[tokio::test]
async fn deleting_namespaces_cleans_up_with_every_credentials_source() {
    let cluster = testkit::cluster().await;
    let ops = cluster.namespace("nsdel-ops").await;
    // `own` holds its own per-namespace Secret; `shared` uses the operator-wide one. Both have
    // instances reading a per-instance Secret named in spec.credentials.
    let own = cluster.namespace("nsdel-own").await;
    let shared = cluster.namespace("nsdel-shared").await;
    let admin = ops.client().await;
    install_crds(&admin).await;
    let emulator = testkit::emulator::Emulator::start().await;
    emulator.add_account(TEAM.0, TEAM.1).await;
    emulator.add_account(PROJECT.0, PROJECT.1).await;
    testkit::operator::write_credentials(&admin, ops.name()).await;
    testkit::operator::write_credentials_with(
        &admin,
        own.name(),
        testkit::operator::CREDENTIALS_SECRET,
        TEAM.0,
        TEAM.1,
    )
    .await;
    for ns in [own.name(), shared.name()] {
        testkit::operator::write_credentials_with(
            &admin,
            ns,
            "project-credentials",
            PROJECT.0,
            PROJECT.1,
        )
        .await;
    }
    let _operator = start_operator(
        &ops,
        &emulator,
        &[
            "--watch-namespaces",
            &format!("{},{}", own.name(), shared.name()),
        ],
    )
    .await;

    let per_instance = json!({"secretRef": {"name": "project-credentials"}});
    let mut cases = Vec::new();
    for (ns, implicit_account) in [
        (own.name(), TEAM.0),
        (shared.name(), testkit::emulator::EMAIL),
    ] {
        for retain in [false, true] {
            let policy = if retain { "Retain" } else { "Delete" };
            let implicit = if retain {
                "implicit-retain"
            } else {
                "implicit-delete"
            };
            create(
                &admin,
                ns,
                implicit,
                json!({"primaryRegion": "us-east-1", "deletionPolicy": policy}),
            )
            .await;
            cases.push(Case {
                namespace: ns.to_string(),
                name: implicit,
                account: implicit_account,
                retain,
                database_id: String::new(),
            });
            let named = if retain {
                "named-retain"
            } else {
                "named-delete"
            };
            create(
                &admin,
                ns,
                named,
                json!({"primaryRegion": "us-east-1", "deletionPolicy": policy, "credentials": per_instance}),
            )
            .await;
            cases.push(Case {
                namespace: ns.to_string(),
                name: named,
                account: PROJECT.0,
                retain,
                database_id: String::new(),
            });
        }
    }
    for case in &mut cases {
        let api: Api<CacheInstance> = Api::namespaced(admin.clone(), &case.namespace);
        testkit::wait_for_condition(&api, case.name, "Ready", "True", READY).await;
        let status = api.get(case.name).await.unwrap().status.unwrap();
        case.database_id = status.database_id.clone().unwrap();
        let db = emulator.database(&case.database_id).await.unwrap();
        assert_eq!(
            db["account"], case.account,
            "{}/{} provisioned in the wrong account",
            case.namespace, case.name
        );
    }

    // Every credentials Secret an instance uses is claimed; the operator-wide one is not.
    for ns in [own.name(), shared.name()] {
        let secrets: Api<Secret> = Api::namespaced(admin.clone(), ns);
        let claimed = if ns == own.name() {
            vec!["project-credentials", testkit::operator::CREDENTIALS_SECRET]
        } else {
            vec!["project-credentials"]
        };
        for name in claimed {
            let what = format!("Secret {ns}/{name} to be claimed");
            testkit::wait_for(&what, READY, || async {
                let s = secrets.get(name).await.ok()?;
                (s.metadata
                    .finalizers
                    .iter()
                    .flatten()
                    .any(|f| f == IN_USE_FINALIZER)
                    && s.metadata
                        .labels
                        .iter()
                        .flatten()
                        .any(|(k, _)| k == CLAIM_LABEL))
                .then_some(())
            })
            .await;
        }
    }
    let operator_secret = Api::<Secret>::namespaced(admin.clone(), ops.name())
        .get(testkit::operator::CREDENTIALS_SECRET)
        .await
        .unwrap();
    assert!(
        operator_secret
            .metadata
            .finalizers
            .unwrap_or_default()
            .is_empty(),
        "the operator-wide Secret must never carry a finalizer"
    );

    // kubectl delete namespace, both at once; each must be gone within 60 s.
    let started = std::time::Instant::now();
    tokio::join!(
        own.delete(Duration::from_secs(60)),
        shared.delete(Duration::from_secs(60))
    );
    let took = started.elapsed();

    for case in &cases {
        let db = emulator.database(&case.database_id).await;
        if case.retain {
            assert!(
                db.is_some(),
                "{}/{} (Retain): its database was deleted",
                case.namespace,
                case.name
            );
        } else {
            assert!(
                db.is_none(),
                "{}/{} (Delete): its database {} is still there",
                case.namespace,
                case.name,
                case.database_id
            );
        }
    }
    let deletes = emulator.calls_to("delete").await;
    assert_eq!(
        deletes.len(),
        cases.iter().filter(|c| !c.retain).count(),
        "one delete per Delete instance: {deletes:?}"
    );
    let operator_secret = Api::<Secret>::namespaced(admin.clone(), ops.name())
        .get(testkit::operator::CREDENTIALS_SECRET)
        .await
        .unwrap();
    assert!(
        operator_secret
            .metadata
            .finalizers
            .unwrap_or_default()
            .is_empty(),
        "the operator-wide Secret carries a finalizer after the deletion"
    );
    eprintln!("both namespaces deleted in {took:?}");
}
