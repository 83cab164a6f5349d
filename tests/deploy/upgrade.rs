//! `helm upgrade` from the previous chart release with CacheInstances in place, on a control
//! plane of its own (the release owns the CRDs there, and the previous release's CRDs must not
//! replace the ones the other tests share).
//!
//! The previous release is the packaged chart in `tests/deploy/fixtures/` (a clean or shallow
//! clone has it without git history). The operator runs as a local process configured from the
//! live Deployment's pod template, as its pod would be, with a token of the chart's
//! ServiceAccount: first as the previous release's pod, then as the upgraded one's.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::Duration,
};

use k8s_openapi::{
    api::{
        apps::v1::Deployment,
        core::v1::{Namespace, Secret},
    },
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api, Client, ResourceExt,
    api::{DynamicObject, ListParams, PostParams},
};
use serde_json::{Value, json};
use testkit::{
    Process,
    emulator::{API_KEY, EMAIL, Emulator},
};
use upstash_operator::crd::CacheInstance;

use crate::{
    install::{ChartOperator, create_instance},
    support::{
        chart_dir, container_env, free_port, helm, of_kind, parse_documents, render, repo_path,
        resource_for, write_token_kubeconfig,
    },
};

/// The chart of the previous release, as `helm package` wrote it.
const PREVIOUS_CHART: &str = "tests/deploy/fixtures/upstash-operator-0.1.0.tgz";
const RELEASE: &str = "upstash-operator";
const NAMESPACE: &str = "upstash-operator";
const APP: &str = "shop";
const INSTANCES: [&str; 3] = ["orders", "sessions", "catalog"];
const TIMEOUT: Duration = Duration::from_secs(90);

/// The values of both releases: the chart's credentials Secret for the emulator's account, and a
/// short resync so that the upgraded operator's reads of every database come within the test.
fn values() -> Vec<String> {
    vec![
        "upstash.credentials.create=true".into(),
        format!("upstash.credentials.email={EMAIL}"),
        format!("upstash.credentials.apiKey={API_KEY}"),
        "resyncInterval=15s".into(),
    ]
}

/// Runs helm against `kubeconfig`; panics with its output when it fails.
fn run_helm(kubeconfig: &str, args: &[&str]) -> String {
    let mut all = vec!["--kubeconfig", kubeconfig];
    all.extend_from_slice(args);
    let out = helm(&all);
    assert!(out.success, "helm {args:?}:\n{}{}", out.stdout, out.stderr);
    out.stdout
}

/// `name-version` of a chart, as in the `helm.sh/chart` label.
fn chart_label(chart: &str, kubeconfig: &str) -> String {
    let meta = parse_documents(&run_helm(kubeconfig, &["show", "chart", chart])).remove(0);
    format!(
        "{}-{}",
        meta["name"].as_str().unwrap(),
        meta["version"].as_str().unwrap()
    )
}

/// The release's Deployment as the API server has it.
async fn deployment(admin: &Client) -> Deployment {
    let mut found = Api::<Deployment>::namespaced(admin.clone(), NAMESPACE)
        .list(&ListParams::default().labels(&format!("app.kubernetes.io/instance={RELEASE}")))
        .await
        .unwrap()
        .items;
    assert_eq!(found.len(), 1, "the release has one Deployment");
    found.remove(0)
}

/// The operator container's env of the live Deployment, as [`container_env`] reads a rendered
/// one (the API server drops empty values, which the chart renders as `value: ""`).
async fn live_env(admin: &Client) -> (Value, BTreeMap<String, String>) {
    let mut live = serde_json::to_value(deployment(admin).await).unwrap();
    if let Some(env) = live["spec"]["template"]["spec"]["containers"][0]["env"].as_array_mut() {
        for var in env {
            if var.get("value").is_none() && var.get("valueFrom").is_none() {
                var["value"] = json!("");
            }
        }
    }
    let env = container_env(&live);
    (live, env)
}

/// Starts the operator as a pod of the live Deployment would run (its env, its
/// ServiceAccount's token), talking to `emulator` instead of Upstash.
async fn start_pod(
    cluster: &testkit::Cluster,
    admin: &Client,
    emulator: &Emulator,
    identity: &str,
    dir: &std::path::Path,
) -> ChartOperator {
    let (live, env) = live_env(admin).await;
    let service_account = live["spec"]["template"]["spec"]["serviceAccountName"]
        .as_str()
        .expect("the pod's ServiceAccount");
    let token = testkit::service_account_token(
        admin.clone(),
        NAMESPACE,
        service_account,
        &[],
        Duration::from_secs(3600),
    )
    .await
    .expect("a token for the chart's ServiceAccount");
    let pod_dir = dir.join(identity);
    std::fs::create_dir_all(&pod_dir).unwrap();
    let kubeconfig = write_token_kubeconfig(cluster, &token, &pod_dir);
    let http = format!("127.0.0.1:{}", free_port());
    let mut builder = Process::builder(
        &format!("operator-{identity}"),
        testkit::cargo_bin("upstash-operator"),
    )
    .env("KUBECONFIG", &kubeconfig)
    .env_remove("RUST_LOG");
    for (name, value) in &env {
        let value = match value.as_str() {
            "fieldRef:metadata.name" => identity,
            "fieldRef:metadata.namespace" => NAMESPACE,
            other => other,
        };
        builder = builder.env(name, value);
    }
    let process = builder
        .env("HTTP_ADDR", &http)
        .env("UPSTASH_API_URL", emulator.api_url())
        .env("UPSTASH_CA_FILE", emulator.ca_file())
        .spawn()
        .expect("starting upstash-operator");
    let mut pod = ChartOperator {
        process,
        http,
        identity: identity.to_string(),
    };
    pod.wait_ready(Duration::from_secs(60)).await;
    pod
}

async fn wait_leader(pod: &ChartOperator) {
    testkit::wait_for(
        &format!("{} to lead", pod.identity),
        Duration::from_secs(60),
        || async { pod.leader().await.filter(|l| *l) },
    )
    .await;
}

/// The highest sequence number in the emulator's call log (0 when it is empty).
async fn last_call(emulator: &Emulator) -> u64 {
    emulator
        .calls()
        .await
        .iter()
        .filter_map(|c| c["seq"].as_u64())
        .max()
        .unwrap_or(0)
}

/// What must not change across the upgrade: each instance's database and the Ready condition's
/// last transition, and its Secret's data.
async fn instances_state(admin: &Client) -> BTreeMap<String, (String, String, Value)> {
    let instances: Api<CacheInstance> = Api::namespaced(admin.clone(), APP);
    let secrets: Api<Secret> = Api::namespaced(admin.clone(), APP);
    let mut state = BTreeMap::new();
    for name in INSTANCES {
        let obj = instances.get(name).await.unwrap();
        let status = obj.status.clone().unwrap_or_default();
        let ready = status
            .conditions
            .iter()
            .find(|c| c.type_ == "Ready")
            .unwrap_or_else(|| panic!("{name} has no Ready condition: {status:?}"));
        assert_eq!(ready.status, "True", "{name}: {ready:?}");
        assert_eq!(
            status.observed_generation, obj.metadata.generation,
            "{name} is Ready for its current spec"
        );
        let secret = secrets.get(name).await.unwrap();
        state.insert(
            name.to_string(),
            (
                status.database_id.clone().expect("status.databaseId"),
                serde_json::to_string(&ready.last_transition_time).unwrap(),
                serde_json::to_value(&secret.data).unwrap(),
            ),
        );
    }
    state
}

/// The live object of a rendered one.
async fn live(admin: &Client, rendered: &Value) -> Value {
    let (resource, _) = resource_for(admin, rendered).await;
    let name = rendered["metadata"]["name"].as_str().unwrap();
    let api: Api<DynamicObject> = match rendered["metadata"]["namespace"].as_str() {
        Some(ns) => Api::namespaced_with(admin.clone(), ns, &resource),
        None => Api::all_with(admin.clone(), &resource),
    };
    let obj = api
        .get(name)
        .await
        .unwrap_or_else(|e| panic!("{} {name}: {e}", rendered["kind"]));
    serde_json::to_value(obj).unwrap()
}

/// Installs the previous release, provisions instances with its operator, upgrades to this
/// chart and rolls the operator: the served CRDs, the RBAC and the pod template are this chart's,
/// the upgraded operator leads and has read every database, every instance stayed Ready (no
/// transition), and Upstash saw no mutating call from before the upgrade to the end.
#[tokio::test]
async fn helm_upgrade_from_the_previous_release_keeps_instances_ready() {
    let cluster = testkit::Cluster::start_private().await;
    let admin = cluster.client().await;
    let kubeconfig = cluster.kubeconfig_path().to_string_lossy().into_owned();
    let dir = tempfile::tempdir().unwrap();
    let emulator = Emulator::start().await;
    let previous = repo_path(PREVIOUS_CHART).to_string_lossy().into_owned();
    let current = chart_dir().to_string_lossy().into_owned();
    let previous_label = chart_label(&previous, &kubeconfig);
    let current_label = chart_label(&current, &kubeconfig);
    assert_ne!(
        previous_label, current_label,
        "the chart's version must differ from the previous release's ({PREVIOUS_CHART})"
    );
    let values = values();
    let mut value_args: Vec<&str> = Vec::new();
    for v in &values {
        value_args.extend(["--set", v.as_str()]);
    }
    let release_args = ["--namespace", NAMESPACE];

    // The previous release, with its CRDs, and its operator provisioning instances.
    let mut args = vec!["install", RELEASE, previous.as_str(), "--create-namespace"];
    args.extend(release_args);
    args.extend(&value_args);
    run_helm(&kubeconfig, &args);
    let crds: Api<CustomResourceDefinition> = Api::all(admin.clone());
    let crd_names: Vec<String> = crds
        .list(&ListParams::default().labels(&format!("app.kubernetes.io/instance={RELEASE}")))
        .await
        .unwrap()
        .items
        .iter()
        .map(|c| c.name_any())
        .collect();
    assert_eq!(crd_names.len(), 2, "the release installs both CRDs");
    for name in &crd_names {
        assert_eq!(
            crds.get(name).await.unwrap().labels().get("helm.sh/chart"),
            Some(&previous_label),
            "CRD {name} comes from the previous release"
        );
        testkit::wait_for(
            &format!("CRD {name} to be Established"),
            Duration::from_secs(30),
            || async {
                let crd = crds.get(name).await.ok()?;
                crd.status?
                    .conditions?
                    .iter()
                    .any(|c| c.type_ == "Established" && c.status == "True")
                    .then_some(())
            },
        )
        .await;
    }
    let app: Namespace = serde_json::from_value(json!({"metadata": {"name": APP}})).unwrap();
    Api::<Namespace>::all(admin.clone())
        .create(&PostParams::default(), &app)
        .await
        .unwrap();
    let mut old = start_pod(
        &cluster,
        &admin,
        &emulator,
        "upstash-operator-old",
        dir.path(),
    )
    .await;
    wait_leader(&old).await;
    let instances: Api<CacheInstance> = Api::namespaced(admin.clone(), APP);
    for name in INSTANCES {
        create_instance(&admin, APP, name).await;
    }
    for name in INSTANCES {
        testkit::wait_for_condition(&instances, name, "Ready", "True", TIMEOUT).await;
    }
    let before = instances_state(&admin).await;
    let databases_before = emulator.databases().await.len();
    let upgrade_started = last_call(&emulator).await;

    // The upgrade.
    let mut args = vec!["upgrade", RELEASE, current.as_str()];
    args.extend(release_args);
    args.extend(&value_args);
    run_helm(&kubeconfig, &args);
    let mut args = vec!["status", RELEASE, "--output", "json"];
    args.extend(release_args);
    let status: Value = serde_json::from_str(&run_helm(&kubeconfig, &args)).unwrap();
    assert_eq!(status["version"], 2, "{status:#}");
    assert_eq!(status["info"]["status"], "deployed", "{status:#}");
    let values_refs: Vec<&str> = values.iter().map(String::as_str).collect();
    let rendered = render(RELEASE, NAMESPACE, &[], &values_refs);

    // The CRDs are this chart's: the API server serves its schemas (Helm upgrades them because
    // the chart has them in templates/, not crds/).
    let rendered_crds = of_kind(&rendered, "CustomResourceDefinition");
    assert_eq!(rendered_crds.len(), crd_names.len());
    for doc in rendered_crds {
        let want: CustomResourceDefinition = serde_json::from_value(doc.clone()).unwrap();
        let name = want.name_any();
        let got = crds.get(&name).await.unwrap();
        assert_eq!(
            got.labels().get("helm.sh/chart"),
            Some(&current_label),
            "CRD {name} was upgraded with the release"
        );
        assert_eq!(got.spec.versions.len(), want.spec.versions.len(), "{name}");
        for (got, want) in got.spec.versions.iter().zip(&want.spec.versions) {
            assert_eq!(got.name, want.name, "{name}");
            assert_eq!((got.served, got.storage), (want.served, want.storage));
            assert!(
                got.schema == want.schema,
                "CRD {name} {} serves another schema than the chart's",
                got.name
            );
            assert_eq!(
                got.additional_printer_columns, want.additional_printer_columns,
                "{name}"
            );
            assert_eq!(got.subresources, want.subresources, "{name}");
        }
    }

    // RBAC: the release's roles and bindings are exactly this chart's.
    for (kind, field) in [
        ("ClusterRole", "rules"),
        ("Role", "rules"),
        ("ClusterRoleBinding", "subjects"),
        ("RoleBinding", "subjects"),
    ] {
        let docs = of_kind(&rendered, kind);
        for doc in &docs {
            let obj = live(&admin, doc).await;
            assert_eq!(
                obj[field], doc[field],
                "{kind} {} after the upgrade",
                doc["metadata"]["name"]
            );
            if field == "subjects" {
                assert_eq!(obj["roleRef"], doc["roleRef"]);
            }
        }
        if let Some(sample) = docs.first() {
            let (resource, _) = resource_for(&admin, sample).await;
            let api: Api<DynamicObject> = Api::all_with(admin.clone(), &resource);
            let live_names: BTreeSet<String> = api
                .list(
                    &ListParams::default().labels(&format!("app.kubernetes.io/instance={RELEASE}")),
                )
                .await
                .unwrap()
                .items
                .iter()
                .map(|o| o.name_any())
                .collect();
            let want: BTreeSet<String> = docs
                .iter()
                .map(|d| d["metadata"]["name"].as_str().unwrap().to_string())
                .collect();
            assert_eq!(live_names, want, "the release's {kind}s after the upgrade");
        }
    }

    // The pod template is this chart's: a new pod (new image tag and env) rolls out.
    let deployment_doc = crate::support::one(&rendered, "Deployment");
    let (live_deployment, env) = live_env(&admin).await;
    assert_eq!(env, container_env(deployment_doc));
    let template = &live_deployment["spec"]["template"];
    assert_eq!(
        template["metadata"]["labels"]["helm.sh/chart"],
        json!(current_label)
    );
    assert_eq!(
        template["spec"]["containers"][0]["image"],
        deployment_doc["spec"]["template"]["spec"]["containers"][0]["image"]
    );

    // The rollout: the new pod starts and is ready, the old one stops, the new one leads.
    let new = start_pod(
        &cluster,
        &admin,
        &emulator,
        "upstash-operator-new",
        dir.path(),
    )
    .await;
    old.process.stop();
    wait_leader(&new).await;
    let leading_from = last_call(&emulator).await;

    // Witness: the upgraded operator read every instance's database after it took over.
    let ids: BTreeSet<String> = before.values().map(|(id, _, _)| id.clone()).collect();
    testkit::wait_for(
        "the upgraded operator to read every database",
        TIMEOUT,
        || async {
            let read: BTreeSet<String> = emulator
                .calls_to("get")
                .await
                .iter()
                .filter(|c| c["seq"].as_u64().unwrap_or(0) > leading_from)
                .filter_map(|c| c["database_id"].as_str().map(String::from))
                .collect();
            ids.is_subset(&read).then_some(())
        },
    )
    .await;

    // Nothing changed in Upstash from before the upgrade to now, and every instance stayed
    // Ready (same Ready transition), with the same database and the same Secret data.
    let mutating: Vec<Value> = emulator
        .calls()
        .await
        .into_iter()
        .filter(|c| c["seq"].as_u64().unwrap_or(0) > upgrade_started && c["method"] != "GET")
        .collect();
    assert!(
        mutating.is_empty(),
        "mutating Upstash calls across the upgrade: {mutating:#?}"
    );
    assert_eq!(emulator.databases().await.len(), databases_before);
    assert_eq!(instances_state(&admin).await, before);
    let logs = new.process.logs();
    assert!(
        !logs.contains(" 403") && !logs.contains("forbidden"),
        "the upgraded operator hit RBAC denials:\n{logs}"
    );
}
