//! The Helm chart: lint, render with defaults and every `ci/*-values.yaml`, schema, toggles,
//! RBAC, pod security, configuration of every operator flag, and server-side dry runs of the
//! rendered manifests against the real API server.

use std::collections::{BTreeMap, BTreeSet};

use clap::CommandFactory;
use kube::Client;
use serde_json::{Value, json};

use crate::support::{
    apply, apply_crds, ci_values_files, container_env, helm, of_kind, one, parse_documents, render,
    repo_path, try_render,
};

#[test]
fn helm_lint_passes_with_defaults_and_every_ci_values_file() {
    let chart = crate::support::chart_dir();
    let chart = chart.to_string_lossy();
    let out = helm(&["lint", "--strict", &chart]);
    assert!(out.success, "helm lint:\n{}{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("0 chart(s) failed"), "{}", out.stdout);
    for file in ci_values_files() {
        let path = format!("{chart}/{file}");
        let out = helm(&["lint", "--strict", &chart, "--values", &path]);
        assert!(
            out.success,
            "helm lint -f {file}:\n{}{}",
            out.stdout, out.stderr
        );
    }
}

#[test]
fn renders_with_defaults_and_every_ci_values_file() {
    let defaults = render("uo", "ops", &[], &[]);
    let kinds: BTreeSet<&str> = defaults.iter().filter_map(|d| d["kind"].as_str()).collect();
    assert_eq!(
        kinds,
        BTreeSet::from([
            "ClusterRole",
            "ClusterRoleBinding",
            "CustomResourceDefinition",
            "Deployment",
            "Role",
            "RoleBinding",
            "Service",
            "ServiceAccount",
            "ValidatingAdmissionPolicy",
            "ValidatingAdmissionPolicyBinding",
        ])
    );
    for file in ci_values_files() {
        let docs = render("uo", "ops", &[&file], &[]);
        // No randomness: Argo CD re-renders on every comparison.
        assert_eq!(
            docs,
            render("uo", "ops", &[&file], &[]),
            "{file} renders differently twice"
        );
        for doc in &docs {
            let kind = doc["kind"].as_str().unwrap_or_default();
            let name = doc["metadata"]["name"].as_str().unwrap_or_default();
            assert!(!name.is_empty(), "{file}: a {kind} without a name");
            assert_eq!(
                doc["metadata"]["labels"]["app.kubernetes.io/part-of"], "upstash-operator",
                "{file}: {kind} {name} lacks the chart's labels"
            );
        }
        one(&docs, "Deployment");
    }

    let monitoring = render("uo", "ops", &["ci/monitoring-values.yaml"], &[]);
    for kind in ["ServiceMonitor", "PrometheusRule", "NetworkPolicy"] {
        one(&monitoring, kind);
    }
    let dashboard = of_kind(&monitoring, "ConfigMap");
    assert_eq!(dashboard.len(), 1);
    assert_eq!(dashboard[0]["metadata"]["labels"]["grafana_dashboard"], "1");
    let json: Value = serde_json::from_str(
        dashboard[0]["data"]["upstash-operator.json"]
            .as_str()
            .unwrap(),
    )
    .expect("the dashboard is JSON");
    assert_eq!(json["uid"], "upstash-operator");

    let ha = render("uo", "ops", &["ci/ha-values.yaml"], &[]);
    let deployment = one(&ha, "Deployment");
    assert_eq!(deployment["spec"]["replicas"], 2);
    assert_eq!(container_env(deployment)["LEADER_ELECTION"], "true");
    assert_eq!(container_env(deployment)["LEASE_DURATION"], "20s");
    assert_eq!(one(&ha, "PodDisruptionBudget")["spec"]["minAvailable"], 1);
}

#[test]
fn namespaced_mode_grants_roles_in_the_listed_namespaces_only() {
    let docs = render("uo", "ops", &["ci/namespaced-values.yaml"], &[]);
    assert!(
        of_kind(&docs, "ClusterRole").is_empty() && of_kind(&docs, "ClusterRoleBinding").is_empty(),
        "namespaced mode must not create cluster roles"
    );
    let role_namespaces: BTreeSet<&str> = of_kind(&docs, "Role")
        .iter()
        .filter(|r| r["metadata"]["name"] == "uo-upstash-operator")
        .map(|r| r["metadata"]["namespace"].as_str().unwrap())
        .collect();
    assert_eq!(role_namespaces, BTreeSet::from(["team-a", "team-b"]));
    let env = container_env(one(&docs, "Deployment"));
    assert_eq!(env["WATCH_NAMESPACES"], "team-a,team-b");
    assert_eq!(
        env["UPSTASH_CREDENTIALS_SECRET"],
        "ops/uo-upstash-operator-credentials"
    );
    assert_eq!(env["UPSTASH_CA_FILE"], "/etc/upstash-operator/ca/ca.crt");
    let secret = one(&docs, "Secret");
    assert_eq!(
        secret["metadata"]["name"],
        "uo-upstash-operator-credentials"
    );
    assert_eq!(secret["stringData"]["email"], "ops@example.com");
    let ca = one(&docs, "ConfigMap");
    assert!(
        ca["data"]["ca.crt"]
            .as_str()
            .unwrap()
            .starts_with("-----BEGIN CERTIFICATE-----")
    );
}

#[test]
fn each_optional_object_is_off_by_default_behind_one_toggle() {
    let defaults = render("uo", "ops", &[], &[]);
    let toggles = [
        ("serviceMonitor.enabled=true", "ServiceMonitor"),
        ("prometheusRule.enabled=true", "PrometheusRule"),
        ("grafanaDashboard.enabled=true", "ConfigMap"),
        ("podDisruptionBudget.enabled=true", "PodDisruptionBudget"),
        ("networkPolicy.enabled=true", "NetworkPolicy"),
    ];
    for (set, kind) in toggles {
        assert!(
            of_kind(&defaults, kind).is_empty(),
            "{kind} is on by default"
        );
        let docs = render("uo", "ops", &[], &[set]);
        assert_eq!(
            of_kind(&docs, kind).len(),
            1,
            "--set {set} renders one {kind}"
        );
        assert_eq!(
            docs.len(),
            defaults.len() + 1,
            "--set {set} adds only the {kind}"
        );
    }
    let extra = render(
        "uo",
        "ops",
        &[],
        &[
            "extraObjects[0]=apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: '{{ .Release.Name }}-extra'",
        ],
    );
    assert_eq!(one(&extra, "ConfigMap")["metadata"]["name"], "uo-extra");
}

#[test]
fn the_values_schema_rejects_bad_values_with_helms_message() {
    for (set, message) in [
        ("foo=1", "additional properties 'foo' not allowed"),
        (
            "serviceMonitor.enable=true",
            "additional properties 'enable' not allowed",
        ),
        ("concurrency=0", "/concurrency"),
        ("defaultDeletionPolicy=Orphan", "/defaultDeletionPolicy"),
        ("resyncInterval=soon", "/resyncInterval"),
        ("logging.format=xml", "/logging/format"),
        ("watchNamespaces[0]=Not_A_Namespace", "/watchNamespaces/0"),
    ] {
        let out = try_render("uo", "ops", &[], &[set]);
        assert!(!out.success, "--set {set} was accepted");
        assert!(
            out.stderr
                .contains("values don't meet the specifications of the schema")
                || out.stderr.contains(message),
            "--set {set}: unexpected error:\n{}",
            out.stderr
        );
        assert!(
            out.stderr.contains(message),
            "--set {set}: expected {message:?} in:\n{}",
            out.stderr
        );
    }
    // A string where a number belongs.
    let out = helm(&[
        "template",
        "uo",
        &crate::support::chart_dir().to_string_lossy(),
        "--set-string",
        "concurrency=eight",
    ]);
    assert!(!out.success);
    assert!(
        out.stderr.contains("/concurrency") && out.stderr.contains("want integer"),
        "{}",
        out.stderr
    );
    // Lint applies the schema too.
    let out = helm(&[
        "lint",
        &crate::support::chart_dir().to_string_lossy(),
        "--set",
        "replicas=2",
    ]);
    assert!(!out.success);
    assert!(
        out.stdout
            .contains("additional properties 'replicas' not allowed")
            || out
                .stderr
                .contains("additional properties 'replicas' not allowed"),
        "{}{}",
        out.stdout,
        out.stderr
    );
}

#[test]
fn unsafe_combinations_fail_with_an_explanation() {
    let out = try_render(
        "uo",
        "ops",
        &[],
        &["replicaCount=2", "leaderElection.enabled=false"],
    );
    assert!(!out.success);
    assert!(
        out.stderr
            .contains("replicaCount > 1 requires leaderElection.enabled=true"),
        "{}",
        out.stderr
    );
    let out = try_render("uo", "ops", &[], &["upstash.credentials.create=true"]);
    assert!(!out.success);
    assert!(
        out.stderr
            .contains("needs upstash.credentials.email and upstash.credentials.apiKey"),
        "{}",
        out.stderr
    );
    // The API server refuses a binding with both Deny and Warn; the chart says so first.
    let out = try_render(
        "uo",
        "ops",
        &[],
        &[
            "guardrails.enabled=true",
            "guardrails.requireEviction=true",
            "guardrails.validationActions={Deny,Warn}",
        ],
    );
    assert!(!out.success);
    assert!(
        out.stderr
            .contains("Kubernetes refuses Deny together with Warn"),
        "{}",
        out.stderr
    );
    // Without leader election, a rolling update would briefly run two acting pods.
    let single = render("uo", "ops", &[], &["leaderElection.enabled=false"]);
    assert_eq!(
        one(&single, "Deployment")["spec"]["strategy"]["type"],
        "Recreate"
    );
    assert!(of_kind(&single, "Role").iter().all(|r| {
        !r["metadata"]["name"]
            .as_str()
            .unwrap()
            .ends_with("leader-election")
    }));
}

#[test]
fn image_reference_uses_the_digest_when_given() {
    let deployment = |sets: &[&str]| {
        render("uo", "ops", &[], sets)
            .into_iter()
            .find(|d| d["kind"] == "Deployment")
            .unwrap()
    };
    let image = |d: &Value| {
        d["spec"]["template"]["spec"]["containers"][0]["image"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let chart_yaml =
        std::fs::read_to_string(repo_path("charts/upstash-operator/Chart.yaml")).unwrap();
    let app_version = parse_documents(&chart_yaml)[0]["appVersion"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        image(&deployment(&[])),
        format!("ghcr.io/upstash-operator/upstash-operator:{app_version}")
    );
    assert_eq!(
        app_version,
        env!("CARGO_PKG_VERSION"),
        "Chart.yaml appVersion follows the crate version"
    );
    let digest = format!("sha256:{}", "ab".repeat(32));
    assert_eq!(
        image(&deployment(&[
            "image.tag=9.9.9",
            &format!("image.digest={digest}")
        ])),
        format!("ghcr.io/upstash-operator/upstash-operator@{digest}")
    );
}

/// Every environment variable the chart sets is an operator flag, and every flag is set.
#[test]
fn the_deployment_configures_every_operator_flag_by_its_env_var() {
    let command = upstash_operator::cli::Args::command();
    let flags: BTreeSet<String> = command
        .get_arguments()
        .filter_map(|a| a.get_env().map(|e| e.to_string_lossy().into_owned()))
        .collect();
    assert!(flags.len() > 20, "clap reports the env vars: {flags:?}");
    for values in [vec![], vec!["ci/namespaced-values.yaml"]] {
        let docs = render("uo", "ops", &values, &[]);
        let env = container_env(one(&docs, "Deployment"));
        let set: BTreeSet<String> = env.keys().cloned().collect();
        let unknown: Vec<_> = set.difference(&flags).collect();
        assert!(
            unknown.is_empty(),
            "the chart sets unknown env vars {unknown:?}"
        );
        // UPSTASH_CA_FILE is set only when a CA bundle is configured.
        let missing: Vec<_> = flags
            .difference(&set)
            .filter(|f| !(values.is_empty() && *f == "UPSTASH_CA_FILE"))
            .collect();
        assert!(
            missing.is_empty(),
            "{values:?}: the chart does not configure {missing:?}"
        );
        assert_eq!(env["POD_NAME"], "fieldRef:metadata.name");
        assert_eq!(env["POD_NAMESPACE"], "fieldRef:metadata.namespace");
        assert_eq!(env["HTTP_ADDR"], "0.0.0.0:8080");
        assert_eq!(env["LEASE_NAMESPACE"], "ops");
    }
    // Every value parses: the operator accepts the chart's env as its configuration.
    let docs = render("uo", "ops", &["ci/namespaced-values.yaml"], &[]);
    let env = container_env(one(&docs, "Deployment"));
    let with_env: Vec<String> = env
        .iter()
        .filter(|(_, v)| !v.starts_with("fieldRef:"))
        .flat_map(|(k, v)| {
            let arg = command
                .get_arguments()
                .find(|a| a.get_env().is_some_and(|e| e == k.as_str()))
                .unwrap();
            let long = arg.get_long().unwrap();
            [format!("--{long}"), v.clone()]
        })
        .collect();
    <upstash_operator::cli::Args as clap::Parser>::try_parse_from(
        std::iter::once("upstash-operator".to_string()).chain(with_env.clone()),
    )
    .unwrap_or_else(|e| panic!("the operator rejects the chart's configuration {with_env:?}: {e}"));
}

#[test]
fn probes_port_and_pod_security_follow_the_restricted_standard() {
    let docs = render("uo", "ops", &[], &[]);
    let pod = &one(&docs, "Deployment")["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(container["ports"][0]["containerPort"], 8080);
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    let sc = &container["securityContext"];
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]));
    assert_eq!(pod["serviceAccountName"], "uo-upstash-operator");
}

/// The RBAC rules: least privilege, events create + patch, the Lease and the credentials Secret
/// by name.
#[test]
fn rbac_is_least_privilege() {
    let docs = render("uo", "ops", &[], &[]);
    let manager = of_kind(&docs, "ClusterRole")
        .into_iter()
        .find(|r| r["metadata"]["name"] == "uo-upstash-operator")
        .expect("the operator's ClusterRole");
    let rules = manager["rules"].as_array().unwrap();
    let verbs_for = |group: &str, resource: &str| -> BTreeSet<String> {
        rules
            .iter()
            .filter(|r| {
                r["apiGroups"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|g| g == group)
                    && r["resources"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|x| x == resource)
            })
            .flat_map(|r| r["verbs"].as_array().unwrap().iter())
            .map(|v| v.as_str().unwrap().to_string())
            .collect()
    };
    let set = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
    for role in of_kind(&docs, "ClusterRole")
        .iter()
        .chain(of_kind(&docs, "Role").iter())
    {
        for rule in role["rules"].as_array().unwrap() {
            for field in ["apiGroups", "resources", "verbs"] {
                assert!(
                    !rule[field].as_array().unwrap().iter().any(|v| v == "*"),
                    "{} has a wildcard in {field}",
                    role["metadata"]["name"]
                );
            }
        }
    }
    assert_eq!(
        verbs_for("events.k8s.io", "events"),
        set(&["create", "patch"])
    );
    assert_eq!(
        verbs_for("cache.upstash-operator.dev", "cacheinstances"),
        set(&["get", "list", "watch", "patch"])
    );
    assert_eq!(
        verbs_for("cache.upstash-operator.dev", "cacheinstances/status"),
        set(&["patch"])
    );
    assert_eq!(
        verbs_for("cache.upstash-operator.dev", "cachepolicies"),
        set(&["get", "list", "watch"])
    );
    assert_eq!(
        verbs_for("", "secrets"),
        set(&["get", "list", "watch", "create", "patch", "delete"])
    );
    assert_eq!(verbs_for("apps", "deployments"), set(&["get", "patch"]));
    assert!(verbs_for("coordination.k8s.io", "leases").is_empty());

    let roles = of_kind(&docs, "Role");
    let lease_role = roles
        .iter()
        .find(|r| r["metadata"]["name"] == "uo-upstash-operator-leader-election")
        .expect("leader-election Role");
    assert_eq!(lease_role["metadata"]["namespace"], "ops");
    for rule in lease_role["rules"].as_array().unwrap() {
        let verbs = rule["verbs"].as_array().unwrap();
        if verbs != &vec![json!("create")] {
            assert_eq!(rule["resourceNames"], json!(["uo-upstash-operator-leader"]));
        }
    }
    let env = container_env(one(&docs, "Deployment"));
    assert_eq!(env["LEASE_NAME"], "uo-upstash-operator-leader");
    // The record of last reads: created, then read and written by name only.
    let record_role = roles
        .iter()
        .find(|r| r["metadata"]["name"] == "uo-upstash-operator-last-reads")
        .expect("last-reads Role");
    assert_eq!(record_role["metadata"]["namespace"], "ops");
    assert_eq!(
        record_role["rules"],
        json!([
            {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["create"]},
            {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["uo-upstash-operator-last-reads"], "verbs": ["get", "patch"]}
        ])
    );
    assert_eq!(
        env["LAST_READS_CONFIGMAP"],
        "uo-upstash-operator-last-reads"
    );
    let credentials = roles
        .iter()
        .find(|r| r["metadata"]["name"] == "uo-upstash-operator-credentials")
        .expect("credentials Role");
    assert_eq!(
        credentials["rules"],
        json!([{"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["upstash-credentials"], "verbs": ["get", "list", "watch", "patch"]}])
    );

    let aggregated: BTreeMap<String, Value> = of_kind(&docs, "ClusterRole")
        .into_iter()
        .filter(|r| r["metadata"]["name"] != "uo-upstash-operator")
        .map(|r| {
            (
                r["metadata"]["name"].as_str().unwrap().to_string(),
                r.clone(),
            )
        })
        .collect();
    let labels = |name: &str| aggregated[name]["metadata"]["labels"].clone();
    assert_eq!(
        labels("uo-upstash-operator-view")["rbac.authorization.k8s.io/aggregate-to-view"],
        "true"
    );
    assert_eq!(
        labels("uo-upstash-operator-edit")["rbac.authorization.k8s.io/aggregate-to-edit"],
        "true"
    );
    assert!(
        labels("uo-upstash-operator-edit")["rbac.authorization.k8s.io/aggregate-to-view"].is_null()
    );
    assert_eq!(
        labels("uo-upstash-operator-admin")["rbac.authorization.k8s.io/aggregate-to-admin"],
        "true"
    );
    assert!(
        labels("uo-upstash-operator-admin")["rbac.authorization.k8s.io/aggregate-to-edit"]
            .is_null()
    );
    let off = render("uo", "ops", &[], &["rbac.aggregateClusterRoles=false"]);
    assert_eq!(of_kind(&off, "ClusterRole").len(), 1);
}

/// The chart's CRDs are `crds/` with the chart's labels and, by default, the keep annotation.
#[test]
fn chart_crds_are_the_generated_crds() {
    for entry in std::fs::read_dir(repo_path("crds")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let copy = repo_path(&format!("charts/upstash-operator/files/crds/{name}"));
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            std::fs::read_to_string(&copy).unwrap_or_default(),
            "charts/upstash-operator/files/crds/{name} differs from crds/{name}: run scripts/render-manifests.sh"
        );
    }
    let generated: BTreeMap<String, Value> = std::fs::read_dir(repo_path("crds"))
        .unwrap()
        .flat_map(|e| parse_documents(&std::fs::read_to_string(e.unwrap().path()).unwrap()))
        .map(|d| {
            (
                format!(
                    "{}/{}",
                    d["kind"].as_str().unwrap(),
                    d["metadata"]["name"].as_str().unwrap()
                ),
                d,
            )
        })
        .collect();
    // Both CRDs, and the deletion protection policy with its binding.
    assert_eq!(generated.len(), 4, "{:?}", generated.keys());
    let docs = render("uo", "ops", &[], &[]);
    let rendered: Vec<&Value> = [
        "CustomResourceDefinition",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
    ]
    .into_iter()
    .flat_map(|kind| of_kind(&docs, kind))
    .collect();
    assert_eq!(rendered.len(), 4);
    for crd in rendered {
        let name = &format!(
            "{}/{}",
            crd["kind"].as_str().unwrap(),
            crd["metadata"]["name"].as_str().unwrap()
        );
        assert_eq!(
            crd["metadata"]["annotations"]["helm.sh/resource-policy"],
            "keep"
        );
        assert_eq!(
            crd["metadata"]["labels"]["app.kubernetes.io/instance"],
            "uo"
        );
        let mut stripped = crd.clone();
        let meta = stripped["metadata"].as_object_mut().unwrap();
        meta.remove("annotations");
        meta.remove("labels");
        assert_eq!(
            &stripped, &generated[name],
            "rendered CRD {name} differs from crds/"
        );
    }
    let not_kept = render("uo", "ops", &[], &["crds.keep=false"]);
    for crd in of_kind(&not_kept, "CustomResourceDefinition") {
        assert!(crd["metadata"]["annotations"].is_null());
    }
    let none = render("uo", "ops", &[], &["crds.install=false"]);
    assert!(of_kind(&none, "CustomResourceDefinition").is_empty());
    assert!(of_kind(&none, "ValidatingAdmissionPolicy").is_empty());
    assert!(of_kind(&none, "ValidatingAdmissionPolicyBinding").is_empty());
}

/// Namespaces the namespaced ci values file names; they must exist for dry runs there.
async fn ensure_namespaces(client: &Client, names: &[&str]) {
    use k8s_openapi::api::core::v1::Namespace;
    for name in names {
        let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
        let _: Namespace = serde_json::from_value(ns.clone()).unwrap();
        apply(client, &ns, false)
            .await
            .unwrap_or_else(|e| panic!("creating namespace {name}: {e}"));
    }
}

/// The rendered manifests (defaults and every ci values file) pass a server-side dry run with
/// strict field validation on the real API server: every field exists, every reference
/// resolves, RBAC escalation checks pass. The CRDs are applied for real first, as are minimal
/// monitoring.coreos.com CRDs for the ServiceMonitor and PrometheusRule.
#[tokio::test]
async fn rendered_manifests_pass_a_server_side_dry_run() {
    let cluster = testkit::cluster().await;
    let ns = cluster.namespace("dry-run").await;
    let client = ns.client().await;
    crate::support::install_chart_crds(&client).await;
    apply_crds(
        &client,
        &parse_documents(
            &std::fs::read_to_string(repo_path("tests/deploy/fixtures/monitoring-crds.yaml"))
                .unwrap(),
        ),
    )
    .await;
    ensure_namespaces(&client, &["team-a", "team-b"]).await;
    let mut runs: Vec<Vec<String>> = vec![vec![]];
    runs.extend(ci_values_files().into_iter().map(|f| vec![f]));
    for values in runs {
        let values: Vec<&str> = values.iter().map(String::as_str).collect();
        let docs = render("uo", ns.name(), &values, &[]);
        let mut applied = 0;
        for doc in &docs {
            apply(&client, doc, true).await.unwrap_or_else(|e| {
                panic!(
                    "{values:?}: dry run of {} {} failed: {e}",
                    doc["kind"], doc["metadata"]["name"]
                )
            });
            applied += 1;
        }
        assert_eq!(applied, docs.len());
    }
    // A field the API does not know is rejected: the dry runs above are strict.
    let mut docs = render("uo", ns.name(), &[], &[]);
    let deployment = docs.iter_mut().find(|d| d["kind"] == "Deployment").unwrap();
    deployment["spec"]["template"]["spec"]["containers"][0]["livenessProbes"] = json!({});
    let err = apply(&client, deployment, true).await.unwrap_err();
    assert!(err.to_string().contains("livenessProbes"), "{err}");
}

/// The operator's pod passes the restricted Pod Security Standard: the API server's Pod
/// Security admission accepts the pod template in a namespace that enforces `restricted`, and
/// rejects the same pod without the chart's security context.
#[tokio::test]
async fn the_operator_pod_is_admitted_under_the_restricted_standard() {
    use k8s_openapi::api::core::v1::Namespace;
    use kube::Api;
    let cluster = testkit::cluster().await;
    let ns = cluster.namespace("restricted").await;
    let client = ns.client().await;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .patch(
            ns.name(),
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"metadata": {"labels": {
                "pod-security.kubernetes.io/enforce": "restricted",
                "pod-security.kubernetes.io/enforce-version": "latest",
            }}})),
        )
        .await
        .unwrap();
    for values in [
        vec![],
        vec!["ci/ha-values.yaml"],
        vec!["ci/namespaced-values.yaml"],
    ] {
        let docs = render("uo", ns.name(), &values, &[]);
        apply(&client, one(&docs, "ServiceAccount"), false)
            .await
            .unwrap();
        let template = &one(&docs, "Deployment")["spec"]["template"];
        let pod = json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "operator-pod", "namespace": ns.name(), "labels": template["metadata"]["labels"]},
            "spec": template["spec"],
        });
        apply(&client, &pod, true)
            .await
            .unwrap_or_else(|e| panic!("{values:?}: restricted admission rejected the pod: {e}"));
    }
    // The check has teeth: the same pod with the default (empty) security context is refused.
    let docs = render("uo", ns.name(), &[], &[]);
    let template = &one(&docs, "Deployment")["spec"]["template"];
    let mut spec = template["spec"].clone();
    spec.as_object_mut().unwrap().remove("securityContext");
    spec["containers"][0]
        .as_object_mut()
        .unwrap()
        .remove("securityContext");
    let pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "operator-pod", "namespace": ns.name()},
        "spec": spec,
    });
    let err = apply(&client, &pod, true).await.unwrap_err();
    assert!(err.to_string().contains("violates PodSecurity"), "{err}");
}

/// The chart's README documents every value.
#[test]
fn the_readme_lists_every_value() {
    fn leaves(prefix: &str, value: &Value, out: &mut Vec<String>) {
        match value {
            Value::Object(map) if !map.is_empty() && !prefix.ends_with("labels") => {
                for (k, v) in map {
                    let key = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    leaves(&key, v, out);
                }
            }
            _ => out.push(prefix.to_string()),
        }
    }
    let values = parse_documents(
        &std::fs::read_to_string(repo_path("charts/upstash-operator/values.yaml")).unwrap(),
    )
    .remove(0);
    let readme = std::fs::read_to_string(repo_path("charts/upstash-operator/README.md")).unwrap();
    let mut keys = Vec::new();
    leaves("", &values, &mut keys);
    assert!(keys.len() > 60, "{keys:?}");
    let missing: Vec<_> = keys
        .iter()
        .filter(|k| !k.starts_with("containerSecurityContext.capabilities"))
        .filter(|k| !readme.contains(&format!("| `{k}` |")))
        .collect();
    assert!(
        missing.is_empty(),
        "charts/upstash-operator/README.md lacks {missing:?}"
    );
}
