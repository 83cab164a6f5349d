//! Helpers shared by the integration tests.

use std::{path::PathBuf, time::Duration};

use k8s_openapi::{
    api::admissionregistration::v1::{ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding},
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api, Client,
    api::{Patch, PatchParams},
};

/// Field manager the tests use when they apply manifests, as `kubectl apply --server-side` would.
pub const TEST_MANAGER: &str = "integration-tests";

/// Path of a file in the repository.
pub fn repo_path(relative: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(relative)
}

/// Parses a (possibly multi-document) YAML file into JSON values.
pub fn read_yaml_documents(relative: &str) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(repo_path(relative))
        .unwrap_or_else(|e| panic!("reading {relative}: {e}"));
    serde_saphyr::from_multiple::<serde_json::Value>(&text)
        .unwrap_or_else(|e| panic!("parsing {relative}: {e}"))
        .into_iter()
        .filter(|v| !v.is_null())
        .collect()
}

/// Server-side applies one cluster-scoped object of `crds/`.
async fn apply_cluster_object<K>(client: &Client, doc: serde_json::Value)
where
    K: kube::Resource<Scope = k8s_openapi::ClusterResourceScope>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + serde::Serialize,
    K::DynamicType: Default,
{
    let object: K = serde_json::from_value(doc).unwrap();
    let name = object.meta().name.clone().unwrap();
    Api::<K>::all(client.clone())
        .patch(
            &name,
            &PatchParams::apply(TEST_MANAGER).force(),
            &Patch::Apply(&object),
        )
        .await
        .unwrap_or_else(|e| panic!("applying {name}: {e}"));
}

/// Applies the committed `crds/*.yaml` (idempotent: the CRDs, and the deletion protection
/// policy with its binding, as `kubectl apply -f crds/` does) and waits until both CRDs are
/// Established.
pub async fn install_crds(client: &Client) {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let mut names = Vec::new();
    for entry in std::fs::read_dir(repo_path("crds")).unwrap() {
        let path = entry.unwrap().path();
        let relative = format!("crds/{}", path.file_name().unwrap().to_string_lossy());
        for doc in read_yaml_documents(&relative) {
            // The deletion protection policy and its binding come with the CRDs.
            match doc["kind"].as_str() {
                Some("ValidatingAdmissionPolicy") => {
                    apply_cluster_object::<ValidatingAdmissionPolicy>(client, doc).await;
                    continue;
                }
                Some("ValidatingAdmissionPolicyBinding") => {
                    apply_cluster_object::<ValidatingAdmissionPolicyBinding>(client, doc).await;
                    continue;
                }
                _ => {}
            }
            let crd: CustomResourceDefinition = serde_json::from_value(doc).unwrap();
            let name = crd.metadata.name.clone().unwrap();
            api.patch(
                &name,
                &PatchParams::apply(TEST_MANAGER).force(),
                &Patch::Apply(&crd),
            )
            .await
            .unwrap_or_else(|e| panic!("applying CRD {name}: {e}"));
            names.push(name);
        }
    }
    assert_eq!(names.len(), 2, "expected two CRDs in crds/");
    for name in names {
        let what = format!("CRD {name} to be Established");
        testkit::wait_for(&what, Duration::from_secs(30), || async {
            let crd = api.get(&name).await.ok()?;
            crd.status?
                .conditions?
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True")
                .then_some(())
        })
        .await;
    }
}

/// Applies a manifest in `namespace` with server-side apply and strict field validation, as
/// `kubectl apply --server-side` does. Returns the API server's error, if any.
pub async fn apply_manifest(
    client: &Client,
    namespace: &str,
    manifest: &serde_json::Value,
) -> Result<serde_json::Value, kube::Error> {
    let api_version = manifest["apiVersion"].as_str().expect("apiVersion");
    let kind = manifest["kind"].as_str().expect("kind");
    let name = manifest["metadata"]["name"]
        .as_str()
        .expect("metadata.name");
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let gvk = kube::api::GroupVersionKind::gvk(group, version, kind);
    let (resource, _) = kube::discovery::pinned_kind(client, &gvk)
        .await
        .unwrap_or_else(|e| panic!("discovering {api_version}/{kind}: {e}"));
    let api: Api<kube::api::DynamicObject> =
        Api::namespaced_with(client.clone(), namespace, &resource);
    let params = PatchParams::apply(TEST_MANAGER).validation_strict();
    api.patch(name, &params, &Patch::Apply(manifest))
        .await
        .map(|o| serde_json::to_value(o).unwrap())
}

/// Creates a manifest in `namespace` with a plain POST and strict field validation, as
/// `kubectl create` does.
pub async fn create_manifest(
    client: &Client,
    namespace: &str,
    manifest: &serde_json::Value,
) -> Result<serde_json::Value, kube::Error> {
    let api_version = manifest["apiVersion"].as_str().expect("apiVersion");
    let kind = manifest["kind"].as_str().expect("kind");
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let gvk = kube::api::GroupVersionKind::gvk(group, version, kind);
    let (resource, _) = kube::discovery::pinned_kind(client, &gvk)
        .await
        .unwrap_or_else(|e| panic!("discovering {api_version}/{kind}: {e}"));
    let request = http::Request::post(format!(
        "/apis/{api_version}/namespaces/{namespace}/{}?fieldValidation=Strict",
        resource.plural
    ))
    .header("Content-Type", "application/json")
    .body(serde_json::to_vec(manifest).unwrap())
    .unwrap();
    client.request(request).await
}

/// An emulator and an operator watching `ns`, with the credentials Secret in place.
pub struct Stack {
    pub emulator: testkit::emulator::Emulator,
    pub operator: testkit::operator::Operator,
}

/// Starts an emulator and an operator for the test namespace `ns` (CRDs installed).
/// Operator arguments of a platform that lets every namespace adopt through the operator-wide
/// credentials (by default none may; see `tenancy.rs`).
pub const ADOPT_ANYWHERE: [&str; 2] = ["--adoption-namespace-selector", "{}"];

pub async fn start_stack(ns: &testkit::TestNamespace, extra_args: &[&str]) -> Stack {
    let cluster = ns.cluster();
    let client = ns.client().await;
    install_crds(&client).await;
    testkit::operator::write_credentials(&client, ns.name()).await;
    let emulator = testkit::emulator::Emulator::start().await;
    let operator = start_operator(ns, &emulator, extra_args).await;
    let _ = cluster;
    Stack { emulator, operator }
}

/// Starts (another) operator for `ns` against `emulator`.
pub async fn start_operator(
    ns: &testkit::TestNamespace,
    emulator: &testkit::emulator::Emulator,
    extra_args: &[&str],
) -> testkit::operator::Operator {
    testkit::operator::Operator::start(testkit::operator::OperatorConfig {
        kubeconfig: ns.cluster().kubeconfig_path(),
        emulator,
        namespace: ns.name(),
        args: extra_args.iter().map(|s| s.to_string()).collect(),
    })
    .await
}

/// Changes an annotation of CacheInstance `name` that means nothing to the operator: it looks
/// at the object again, and reads its database anew (its metadata changed).
pub async fn nudge(client: &Client, namespace: &str, name: &str) {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NUDGES: AtomicU64 = AtomicU64::new(0);
    let n = NUDGES.fetch_add(1, Ordering::Relaxed);
    Api::<upstash_operator::crd::CacheInstance>::namespaced(client.clone(), namespace)
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({
                "metadata": {"annotations": {"tests.upstash-operator.dev/nudge": n.to_string()}}
            })),
        )
        .await
        .unwrap_or_else(|e| panic!("nudging {namespace}/{name}: {e}"));
}

/// A witness that the operator looked at CacheInstance `name` after this call: nudges it three
/// times, each time waiting until `operator` started another reconcile of it. The second of
/// those started after the first nudge was in place, and ended before the third started (the
/// operator never reconciles one object twice at once): a whole reconcile ran on the object as
/// it was when this was called, or later.
pub async fn witness_pass(
    operator: &testkit::operator::Operator,
    client: &Client,
    namespace: &str,
    name: &str,
) {
    let mut mark = operator.reconciles(namespace, name).await;
    for _ in 0..3 {
        nudge(client, namespace, name).await;
        mark = operator.wait_for_reconciles(namespace, name, mark, 1).await;
    }
}

/// The reconciler's per-object backoffs so far, from `/metrics`: how many, and how many of them
/// were at most `le` seconds (a bucket bound of the histogram: 1.0, 2.0, 4.0, 8.0, ...).
pub async fn backoffs(operator: &testkit::operator::Operator, le: &str) -> (u64, u64) {
    let text = operator.metrics().await;
    let name = "upstash_operator_reconcile_backoff_seconds";
    let count = testkit::witness::metric_value(
        &text,
        &format!("{name}_count"),
        "controller=\"cacheinstance\"",
    )
    .unwrap_or(0.0);
    let within = testkit::witness::metric_value(
        &text,
        &format!("{name}_bucket"),
        &format!("le=\"{le}\",controller=\"cacheinstance\""),
    )
    .unwrap_or_else(|| panic!("no bucket le={le} in\n{text}"));
    (count as u64, within as u64)
}

/// Decoded data of a Secret.
pub fn secret_data(
    secret: &k8s_openapi::api::core::v1::Secret,
) -> std::collections::BTreeMap<String, String> {
    secret
        .data
        .iter()
        .flatten()
        .map(|(k, v)| {
            (
                k.clone(),
                String::from_utf8(v.0.clone()).expect("UTF-8 Secret value"),
            )
        })
        .collect()
}

/// Runs one Redis command through the REST data API, as `@upstash/redis` does.
pub async fn rest_command(
    rest_url: &str,
    token: &str,
    ca_file: &std::path::Path,
    command: serde_json::Value,
) -> (u16, serde_json::Value) {
    let ca = reqwest::Certificate::from_pem(&std::fs::read(ca_file).unwrap()).unwrap();
    let http = reqwest::Client::builder()
        .add_root_certificate(ca)
        .build()
        .unwrap();
    let response = http
        .post(rest_url)
        .bearer_auth(token)
        .json(&command)
        .send()
        .await
        .expect("REST request");
    let status = response.status().as_u16();
    (
        status,
        response.json().await.unwrap_or(serde_json::Value::Null),
    )
}

/// Connects to a `REDIS_URL` (`rediss://default:<password>@<host>:<port>`) with a real Redis
/// client that trusts only the emulator's CA, as an application would.
pub async fn redis_connect(
    redis_url: &str,
    ca_file: &std::path::Path,
) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
    let client = redis::Client::build_with_tls(
        redis_url,
        redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(std::fs::read(ca_file).expect("the emulator's CA file")),
        },
    )?;
    client.get_multiplexed_async_connection().await
}

/// Events about object `name` in `namespace` as `(reason, type, note)`, oldest first.
///
/// # Panics
///
/// When the Events cannot be listed, or one about `name` has no reason or type: a list that
/// cannot be read is never taken for "no such Event".
pub async fn events_for(
    client: &Client,
    namespace: &str,
    name: &str,
) -> Vec<(String, String, String)> {
    use k8s_openapi::api::events::v1::Event;
    let api: Api<Event> = Api::namespaced(client.clone(), namespace);
    let mut events: Vec<Event> = api
        .list(&Default::default())
        .await
        .unwrap_or_else(|e| panic!("listing the Events of {namespace}: {e}"))
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .collect();
    events.sort_by_key(|e| e.metadata.creation_timestamp.clone().map(|t| t.0));
    events
        .into_iter()
        .map(|e| {
            let (Some(reason), Some(type_)) = (e.reason.clone(), e.type_.clone()) else {
                panic!("an Event about {name} without reason or type: {e:?}");
            };
            (reason, type_, e.note.unwrap_or_default())
        })
        .collect()
}

/// A CacheInstance manifest.
/// Applies CacheInstance `name` with `spec`, waits until it is Ready (within `timeout`) and
/// returns the database id its status records.
pub async fn apply_until_ready(
    client: &Client,
    namespace: &str,
    name: &str,
    spec: serde_json::Value,
    timeout: std::time::Duration,
) -> String {
    apply_manifest(client, namespace, &instance(name, spec))
        .await
        .unwrap_or_else(|e| panic!("applying {namespace}/{name}: {e}"));
    let api: Api<upstash_operator::crd::CacheInstance> = Api::namespaced(client.clone(), namespace);
    testkit::wait_for_condition(&api, name, "Ready", "True", timeout).await;
    api.get(name)
        .await
        .unwrap_or_else(|e| panic!("reading {namespace}/{name}: {e}"))
        .status
        .and_then(|s| s.database_id)
        .unwrap_or_else(|| panic!("{namespace}/{name} is Ready without status.databaseId"))
}

pub fn instance(name: &str, spec: serde_json::Value) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "cache.upstash-operator.dev/v1alpha1",
        "kind": "CacheInstance",
        "metadata": {"name": name},
        "spec": spec,
    })
}

/// A CachePolicy manifest.
pub fn policy(name: &str, spec: serde_json::Value) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "cache.upstash-operator.dev/v1alpha1",
        "kind": "CachePolicy",
        "metadata": {"name": name},
        "spec": spec,
    })
}

/// Creates the Deployment `name` in `ns` (one container whose image is never pulled, with the
/// Secrets `env_from` as its environment); returns the Deployments of `ns`.
pub async fn create_deployment(
    client: &Client,
    ns: &str,
    name: &str,
    env_from: &[&str],
) -> Api<k8s_openapi::api::apps::v1::Deployment> {
    use k8s_openapi::api::apps::v1::Deployment;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let env_from: Vec<serde_json::Value> = env_from
        .iter()
        .map(|s| serde_json::json!({"secretRef": {"name": s}}))
        .collect();
    let deployment: Deployment = serde_json::from_value(serde_json::json!({
        "metadata": {"name": name},
        "spec": {
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{
                    "name": name,
                    "image": format!("example.invalid/{name}:1"),
                    "envFrom": env_from,
                }]}
            }
        }
    }))
    .unwrap();
    deployments
        .create(&Default::default(), &deployment)
        .await
        .unwrap_or_else(|e| panic!("creating Deployment {name}: {e}"));
    deployments
}

/// The operator's restart annotation (`credentials-hash`) on a Deployment's pod template.
pub fn restart_stamp(d: &k8s_openapi::api::apps::v1::Deployment) -> Option<String> {
    d.spec
        .as_ref()?
        .template
        .metadata
        .as_ref()?
        .annotations
        .as_ref()?
        .get(upstash_operator::controller::restarts::RESTART_ANNOTATION)
        .cloned()
}

/// Operator flags for tests of rotations and restarts: no floor between rotations, a 5 s
/// restart window and 10 s between restarts of one workload.
pub const FAST_ROTATIONS_AND_RESTARTS: [&str; 6] = [
    "--min-rotation-interval",
    "0s",
    "--restart-window",
    "5s",
    "--min-restart-interval",
    "10s",
];
