//! Helpers of the deploy tests: helm and kubectl, rendering the chart, applying manifests to the
//! API server, and running the operator exactly as the chart's Deployment would.

use std::{
    collections::BTreeMap,
    net::TcpListener,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{
    Api, Client,
    api::{DynamicObject, GroupVersionKind, Patch, PatchParams},
    config::{Kubeconfig, NamedAuthInfo},
    discovery::{self, ApiResource, Scope},
};
use serde_json::{Value, json};

/// Field manager of everything the deploy tests apply.
pub const MANAGER: &str = "deploy-tests";

/// Path of a file in the repository.
pub fn repo_path(relative: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(relative)
}

/// The chart's directory.
pub fn chart_dir() -> PathBuf {
    repo_path("charts/upstash-operator")
}

fn tool(var: &str, name: &str) -> PathBuf {
    let path = std::env::var_os(var).map(PathBuf::from).unwrap_or_else(|| {
        panic!(
            "{var} is not set: the deploy tests need {name}. Run them through scripts/test.sh, or \
             export {var}=$(scripts/tools.sh {name} | tail -n1)"
        )
    });
    assert!(
        path.is_file(),
        "{var}={} does not exist; scripts/tools.sh {name} fetches it",
        path.display()
    );
    path
}

/// The helm binary (`$HELM_BIN`).
pub fn helm_bin() -> PathBuf {
    tool("HELM_BIN", "helm")
}

/// The kubectl binary (`$KUBECTL_BIN`).
pub fn kubectl_bin() -> PathBuf {
    tool("KUBECTL_BIN", "kubectl")
}

/// Output of a command: exit success, stdout, stderr.
pub struct Output {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

/// Runs helm with `args`.
pub fn helm(args: &[&str]) -> Output {
    let out = Command::new(helm_bin())
        .args(args)
        // Helm keeps no state between runs of the tests.
        .env(
            "HELM_CACHE_HOME",
            std::env::temp_dir().join("deploy-tests-helm/cache"),
        )
        .env(
            "HELM_CONFIG_HOME",
            std::env::temp_dir().join("deploy-tests-helm/config"),
        )
        .env(
            "HELM_DATA_HOME",
            std::env::temp_dir().join("deploy-tests-helm/data"),
        )
        .output()
        .expect("running helm");
    Output {
        success: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Parses a multi-document YAML text into its non-empty documents.
pub fn parse_documents(text: &str) -> Vec<Value> {
    serde_saphyr::from_multiple::<Value>(text)
        .unwrap_or_else(|e| panic!("parsing YAML: {e}\n{text}"))
        .into_iter()
        .filter(|v| !v.is_null())
        .collect()
}

/// `helm template` of the chart as release `release` in `namespace`, with values files (relative
/// to the chart) and `--set` pairs. Panics with helm's message when rendering fails.
pub fn render(release: &str, namespace: &str, values: &[&str], sets: &[&str]) -> Vec<Value> {
    let out = try_render(release, namespace, values, sets);
    assert!(
        out.success,
        "helm template {values:?} {sets:?} failed:\n{}",
        out.stderr
    );
    parse_documents(&out.stdout)
}

/// `helm template`, returning helm's output whether or not it succeeded.
pub fn try_render(release: &str, namespace: &str, values: &[&str], sets: &[&str]) -> Output {
    let chart = chart_dir();
    let mut args: Vec<String> = vec![
        "template".into(),
        release.into(),
        chart.to_string_lossy().into_owned(),
        "--namespace".into(),
        namespace.into(),
    ];
    for v in values {
        args.push("--values".into());
        args.push(chart.join(v).to_string_lossy().into_owned());
    }
    for s in sets {
        args.push("--set".into());
        args.push((*s).into());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    helm(&args)
}

/// The `ci/*-values.yaml` files of the chart, relative to the chart.
pub fn ci_values_files() -> Vec<String> {
    let mut files: Vec<String> = std::fs::read_dir(chart_dir().join("ci"))
        .expect("charts/upstash-operator/ci")
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with("-values.yaml"))
        .map(|n| format!("ci/{n}"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 3,
        "expected the ci values files, found {files:?}"
    );
    files
}

/// Objects of `kind` in `docs`.
pub fn of_kind<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

/// The single object of `kind` in `docs`.
pub fn one<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    let found = of_kind(docs, kind);
    assert_eq!(found.len(), 1, "expected one {kind}, found {}", found.len());
    found[0]
}

/// The env of the operator container of a rendered Deployment, as name → value (downward API
/// references as `fieldRef:<path>`).
pub fn container_env(deployment: &Value) -> BTreeMap<String, String> {
    deployment["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .expect("container env")
        .iter()
        .map(|e| {
            let name = e["name"].as_str().unwrap().to_string();
            let value = match e["value"].as_str() {
                Some(v) => v.to_string(),
                None => format!(
                    "fieldRef:{}",
                    e["valueFrom"]["fieldRef"]["fieldPath"]
                        .as_str()
                        .expect("value or fieldRef")
                ),
            };
            (name, value)
        })
        .collect()
}

/// The API resource for an object's apiVersion and kind.
pub async fn resource_for(client: &Client, obj: &Value) -> (ApiResource, Scope) {
    let api_version = obj["apiVersion"].as_str().expect("apiVersion");
    let kind = obj["kind"].as_str().expect("kind");
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let gvk = GroupVersionKind::gvk(group, version, kind);
    let (resource, caps) = discovery::pinned_kind(client, &gvk)
        .await
        .unwrap_or_else(|e| panic!("discovering {api_version} {kind}: {e}"));
    (resource, caps.scope)
}

/// Applies `obj` with server-side apply and strict field validation (as
/// `kubectl apply --server-side` does); `dry_run` asks for `dryRun=All`.
pub async fn apply(client: &Client, obj: &Value, dry_run: bool) -> Result<Value, kube::Error> {
    let (resource, scope) = resource_for(client, obj).await;
    let name = obj["metadata"]["name"].as_str().expect("metadata.name");
    let api: Api<DynamicObject> = match scope {
        Scope::Namespaced => {
            let ns = obj["metadata"]["namespace"]
                .as_str()
                .unwrap_or_else(|| panic!("{} {name} has no namespace", obj["kind"]));
            Api::namespaced_with(client.clone(), ns, &resource)
        }
        Scope::Cluster => Api::all_with(client.clone(), &resource),
    };
    let mut params = PatchParams::apply(MANAGER).force().validation_strict();
    params.dry_run = dry_run;
    api.patch(name, &params, &Patch::Apply(obj))
        .await
        .map(|o| serde_json::to_value(o).expect("an object serializes"))
}

/// Applies the CRDs among `docs` for real and waits until they are Established.
pub async fn apply_crds(client: &Client, docs: &[Value]) {
    let crds = of_kind(docs, "CustomResourceDefinition");
    assert!(!crds.is_empty(), "no CRDs to apply");
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in &crds {
        apply(client, crd, false)
            .await
            .unwrap_or_else(|e| panic!("applying CRD {}: {e}", crd["metadata"]["name"]));
    }
    for crd in crds {
        let name = crd["metadata"]["name"].as_str().unwrap().to_string();
        testkit::wait_for(
            &format!("CRD {name} to be Established"),
            Duration::from_secs(30),
            || async {
                let crd = api.get(&name).await.ok()?;
                crd.status?
                    .conditions?
                    .iter()
                    .any(|c| c.type_ == "Established" && c.status == "True")
                    .then_some(())
            },
        )
        .await;
    }
}

/// The CRDs of the chart with its default values (identical to `crds/`), applied and Established.
pub async fn install_chart_crds(client: &Client) {
    apply_crds(client, &render("crds", "default", &[], &[])).await;
}

/// A free TCP port on the loopback interface.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Writes a kubeconfig for the cluster of `cluster` that authenticates with `token` only (same
/// server and CA as the admin kubeconfig, no client certificate).
pub fn write_token_kubeconfig(cluster: &testkit::Cluster, token: &str, dir: &Path) -> PathBuf {
    let mut config: Kubeconfig = cluster.kubeconfig().clone();
    let user: NamedAuthInfo = serde_json::from_value(json!({
        "name": "service-account",
        "user": { "token": token },
    }))
    .expect("a user with a token deserializes");
    config.auth_infos = vec![user];
    for context in &mut config.contexts {
        if let Some(c) = context.context.as_mut() {
            c.user = Some("service-account".into());
        }
    }
    let path = dir.join("kubeconfig.json");
    std::fs::write(
        &path,
        serde_json::to_vec_pretty(&config).expect("a kubeconfig serializes"),
    )
    .expect("writing the kubeconfig");
    path
}

/// The value of a metric without labels in a Prometheus text exposition.
pub fn metric_value(text: &str, name: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (n, v) = l.split_once(' ')?;
        (n == name).then(|| v.trim().parse().ok()).flatten()
    })
}
