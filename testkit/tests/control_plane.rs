//! The control plane behaves like a real cluster: CRDs, the status subresource, server-side
//! apply conflicts, watches, garbage collection, namespace deletion and RBAC for
//! ServiceAccount tokens. All tests share one control plane (one test binary).

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch,
    PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::runtime::wait::conditions;
use kube::{Error, ResourceExt};
use rand::Rng;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

fn from_json<T: DeserializeOwned>(value: Value) -> T {
    serde_json::from_value(value).expect("test object deserializes")
}

/// The HTTP status of an API error, or a panic describing what happened instead.
fn api_error_code<T: std::fmt::Debug>(result: Result<T, Error>) -> (u16, String, String) {
    match result {
        Err(Error::Api(status)) => (status.code, status.reason.clone(), status.message.clone()),
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test]
async fn reports_a_stamped_release_version() {
    let cluster = testkit::cluster().await;
    let info = cluster.client().await.apiserver_version().await.unwrap();
    assert_eq!(info.git_version, cluster.version());
    assert!(
        info.git_version.starts_with("v1.") && !info.git_version.contains("master"),
        "/version reports {:?}, not a release version",
        info.git_version
    );
    assert_eq!(info.major, "1");
    assert!(cluster.server().starts_with("https://"));
}

#[tokio::test]
async fn crd_becomes_established_and_custom_objects_round_trip_with_status() {
    let cluster = testkit::cluster().await;
    let ns = cluster.namespace("crd").await;
    let client = cluster.client().await;

    // A group of its own, so runs against a shared cluster cannot collide.
    let suffix: u32 = rand::rng().random_range(0..0x100_0000);
    let group = format!("t{suffix:06x}.testkit.upstash.example");
    let crd_name = format!("widgets.{group}");
    let crd: CustomResourceDefinition = from_json(json!({
        "metadata": { "name": crd_name },
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": { "plural": "widgets", "singular": "widget", "kind": "Widget", "listKind": "WidgetList" },
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "subresources": { "status": {} },
                "schema": { "openAPIV3Schema": {
                    "type": "object",
                    "properties": {
                        "spec": { "type": "object", "required": ["size"], "properties": {
                            "size": { "type": "integer", "minimum": 1 },
                            "color": { "type": "string" }
                        }},
                        "status": { "type": "object", "properties": {
                            "phase": { "type": "string" },
                            "observedGeneration": { "type": "integer" }
                        }}
                    }
                }}
            }]
        }
    }));
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.create(&PostParams::default(), &crd).await.unwrap();
    testkit::await_condition(
        crds.clone(),
        &crd_name,
        "the CRD to become Established",
        Duration::from_secs(30),
        conditions::is_crd_established(),
    )
    .await;

    let resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(&group, "v1", "Widget"),
        "widgets",
    );
    let widgets: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns.name(), &resource);
    // Discovery and the CRD handler lag Established slightly; retry the first create.
    let widget: DynamicObject = from_json(json!({
        "apiVersion": format!("{group}/v1"), "kind": "Widget",
        "metadata": { "name": "w1" },
        "spec": { "size": 3, "color": "blue" },
        "status": { "phase": "Ignored" }
    }));
    let post = PostParams::default();
    let created = testkit::wait_for(
        "the Widget endpoint to accept objects",
        Duration::from_secs(30),
        || widgets.create(&post, &widget),
    )
    .await;
    assert_eq!(created.data["spec"], json!({ "size": 3, "color": "blue" }));
    assert_eq!(created.metadata.generation, Some(1));
    assert!(
        created.data.get("status").is_none(),
        "status must be dropped on create when the status subresource is on: {:?}",
        created.data
    );

    // The structural schema is enforced.
    let invalid: DynamicObject = from_json(json!({
        "apiVersion": format!("{group}/v1"), "kind": "Widget",
        "metadata": { "name": "w2" },
        "spec": { "size": 0 }
    }));
    let (code, reason, message) =
        api_error_code(widgets.create(&PostParams::default(), &invalid).await);
    assert_eq!((code, reason.as_str()), (422, "Invalid"), "{message}");
    assert!(message.contains("spec.size"), "{message}");

    // Status goes through the status subresource, and does not bump the generation.
    let patched = widgets
        .patch_status(
            "w1",
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": { "phase": "Ready", "observedGeneration": 1 } })),
        )
        .await
        .unwrap();
    assert_eq!(patched.data["status"]["phase"], "Ready");
    assert_eq!(patched.metadata.generation, Some(1));

    // A status change sent to the main resource is ignored; a spec change bumps generation.
    let updated = widgets
        .patch(
            "w1",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "size": 4 }, "status": { "phase": "Hacked" } })),
        )
        .await
        .unwrap();
    assert_eq!(updated.metadata.generation, Some(2));
    assert_eq!(updated.data["status"]["phase"], "Ready");

    let fetched = widgets.get("w1").await.unwrap();
    assert_eq!(fetched.data["spec"], json!({ "size": 4, "color": "blue" }));
    assert_eq!(
        fetched.data["status"],
        json!({ "phase": "Ready", "observedGeneration": 1 })
    );
    let status_view = widgets.get_status("w1").await.unwrap();
    assert_eq!(status_view.data["status"]["phase"], "Ready");

    crds.delete(&crd_name, &DeleteParams::default())
        .await
        .unwrap();
}

#[tokio::test]
async fn server_side_apply_reports_conflicts_between_field_managers() {
    let cluster = testkit::cluster().await;
    let ns = cluster.namespace("ssa").await;
    let api: Api<ConfigMap> = ns.api().await;
    let manifest = |value: &str| {
        json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": { "name": "shared" },
            "data": { "key": value }
        })
    };

    api.patch(
        "shared",
        &PatchParams::apply("alice"),
        &Patch::Apply(manifest("a")),
    )
    .await
    .unwrap();

    let (code, reason, message) = api_error_code(
        api.patch(
            "shared",
            &PatchParams::apply("bob"),
            &Patch::Apply(manifest("b")),
        )
        .await,
    );
    assert_eq!((code, reason.as_str()), (409, "Conflict"), "{message}");
    assert!(
        message.contains("conflict with \"alice\"") && message.contains(".data.key"),
        "unexpected conflict message: {message}"
    );
    assert_eq!(api.get("shared").await.unwrap().data.unwrap()["key"], "a");

    // Re-applying the same value is not a conflict; forcing takes the field over.
    api.patch(
        "shared",
        &PatchParams::apply("bob"),
        &Patch::Apply(manifest("a")),
    )
    .await
    .unwrap();
    let forced = api
        .patch(
            "shared",
            &PatchParams::apply("bob").force(),
            &Patch::Apply(manifest("b")),
        )
        .await
        .unwrap();
    assert_eq!(forced.data.unwrap()["key"], "b");
    let managers: Vec<String> = forced
        .metadata
        .managed_fields
        .unwrap_or_default()
        .into_iter()
        .filter_map(|m| m.manager)
        .collect();
    assert_eq!(
        managers,
        vec!["bob".to_string()],
        "alice lost the only field she owned"
    );
}

#[tokio::test]
async fn watch_sees_added_modified_and_deleted() {
    let cluster = testkit::cluster().await;
    let ns = cluster.namespace("watch").await;
    let api: Api<ConfigMap> = ns.api().await;

    let version = api
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let params = WatchParams::default()
        .fields("metadata.name=watched")
        .timeout(60);
    let mut stream = api.watch(&params, &version).await.unwrap().boxed();

    let cm: ConfigMap =
        from_json(json!({ "metadata": { "name": "watched" }, "data": { "n": "1" } }));
    api.create(&PostParams::default(), &cm).await.unwrap();
    api.patch(
        "watched",
        &PatchParams::default(),
        &Patch::Merge(json!({ "data": { "n": "2" } })),
    )
    .await
    .unwrap();
    api.delete("watched", &DeleteParams::default())
        .await
        .unwrap();

    let mut seen = Vec::new();
    let collect = async {
        while let Some(event) = stream.try_next().await.unwrap() {
            match event {
                WatchEvent::Added(cm) => seen.push(("ADDED", cm.data.unwrap()["n"].clone())),
                WatchEvent::Modified(cm) => seen.push(("MODIFIED", cm.data.unwrap()["n"].clone())),
                WatchEvent::Deleted(cm) => {
                    seen.push(("DELETED", cm.data.unwrap()["n"].clone()));
                    break;
                }
                WatchEvent::Bookmark(_) => {}
                WatchEvent::Error(e) => panic!("watch error: {e:?}"),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), collect)
        .await
        .expect("the DELETED event within 30s");
    let expected = [("ADDED", "1"), ("MODIFIED", "2"), ("DELETED", "2")]
        .map(|(kind, n)| (kind, n.to_string()));
    assert_eq!(seen, expected);
}

#[tokio::test]
async fn garbage_collector_deletes_dependents_of_a_deleted_owner() {
    let cluster = testkit::cluster().await;
    let ns = cluster.namespace("gc").await;
    let api: Api<ConfigMap> = ns.api().await;

    let owner = api
        .create(
            &PostParams::default(),
            &from_json(json!({ "metadata": { "name": "owner" } })),
        )
        .await
        .unwrap();
    let dependent: ConfigMap = from_json(json!({
        "metadata": {
            "name": "dependent",
            "ownerReferences": [{
                "apiVersion": "v1", "kind": "ConfigMap",
                "name": "owner", "uid": owner.uid().unwrap()
            }]
        }
    }));
    api.create(&PostParams::default(), &dependent)
        .await
        .unwrap();
    // An unrelated object that must survive.
    api.create(
        &PostParams::default(),
        &from_json(json!({ "metadata": { "name": "bystander" } })),
    )
    .await
    .unwrap();

    api.delete("owner", &DeleteParams::background())
        .await
        .unwrap();
    testkit::wait_for(
        "the garbage collector to delete ConfigMap dependent",
        Duration::from_secs(30),
        || async {
            api.get_opt("dependent")
                .await
                .map(|cm| cm.is_none())
                .unwrap_or(false)
        },
    )
    .await;
    assert!(api.get_opt("bystander").await.unwrap().is_some());
}

#[tokio::test]
async fn namespace_deletion_completes() {
    let cluster = testkit::cluster().await;
    let ns = cluster.namespace("nsdelete").await;
    let name = ns.name().to_string();

    // The ServiceAccount controller fills every new namespace with "default".
    let service_accounts: Api<ServiceAccount> = ns.api().await;
    testkit::wait_for(
        "ServiceAccount default in the new namespace",
        Duration::from_secs(30),
        || async { service_accounts.get_opt("default").await.ok().flatten() },
    )
    .await;
    let config_maps: Api<ConfigMap> = ns.api().await;
    config_maps
        .create(
            &PostParams::default(),
            &from_json(json!({ "metadata": { "name": "content" } })),
        )
        .await
        .unwrap();

    ns.delete(Duration::from_secs(60)).await;
    let namespaces: Api<Namespace> = Api::all(cluster.client().await);
    assert!(namespaces.get_opt(&name).await.unwrap().is_none());
}

#[tokio::test]
async fn service_account_token_is_bound_by_rbac() {
    let cluster = testkit::cluster().await;
    let ns = cluster.namespace("rbac").await;
    let admin = ns.client().await;

    let service_accounts: Api<ServiceAccount> = ns.api().await;
    service_accounts
        .create(
            &PostParams::default(),
            &from_json(json!({ "metadata": { "name": "reader" } })),
        )
        .await
        .unwrap();
    let roles: Api<Role> = ns.api().await;
    roles
        .create(
            &PostParams::default(),
            &from_json(json!({
                "metadata": { "name": "secret-reader" },
                "rules": [{ "apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "list"] }]
            })),
        )
        .await
        .unwrap();
    let bindings: Api<RoleBinding> = ns.api().await;
    bindings
        .create(
            &PostParams::default(),
            &from_json(json!({
                "metadata": { "name": "reader-reads-secrets" },
                "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "secret-reader" },
                "subjects": [{ "kind": "ServiceAccount", "name": "reader", "namespace": ns.name() }]
            })),
        )
        .await
        .unwrap();

    let token =
        testkit::service_account_token(admin, ns.name(), "reader", &[], Duration::from_secs(600))
            .await
            .unwrap();
    let reader = cluster.client_for_token(&token).await;
    let secrets: Api<Secret> = Api::namespaced(reader.clone(), ns.name());

    // The RBAC authorizer sees the new binding through an informer: wait for it.
    let list = ListParams::default();
    testkit::wait_for(
        "the reader to be allowed to list secrets",
        Duration::from_secs(30),
        || secrets.list(&list),
    )
    .await;

    let secret: Secret = from_json(json!({
        "metadata": { "name": "forbidden" },
        "stringData": { "k": "v" }
    }));
    let (code, reason, message) =
        api_error_code(secrets.create(&PostParams::default(), &secret).await);
    assert_eq!((code, reason.as_str()), (403, "Forbidden"), "{message}");
    assert!(
        message.contains(&format!("system:serviceaccount:{}:reader", ns.name())),
        "the denial names the ServiceAccount: {message}"
    );

    // The same token cannot reach another namespace's secrets either.
    let elsewhere: Api<Secret> = Api::namespaced(reader, "default");
    let (code, _, message) = api_error_code(elsewhere.list(&ListParams::default()).await);
    assert_eq!(code, 403, "{message}");
}
