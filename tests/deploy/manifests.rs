//! The generated files (`deploy/manifests/`, `deploy/argocd/argocd-cm.yaml`, the chart's CRD
//! copies) are current, and the plain manifests install with `kubectl apply -k` as documented.

use k8s_openapi::api::apps::v1::Deployment;
use kube::Api;

use crate::support::{helm_bin, kubectl_bin, repo_path};

/// Files `scripts/render-manifests.sh` writes, relative to the repository.
fn generated_files() -> Vec<String> {
    let mut files = vec![
        "deploy/manifests/upstash-operator.yaml".to_string(),
        "deploy/argocd/argocd-cm.yaml".to_string(),
    ];
    for entry in std::fs::read_dir(repo_path("crds")).unwrap() {
        files.push(format!(
            "charts/upstash-operator/files/crds/{}",
            entry.unwrap().file_name().to_string_lossy()
        ));
    }
    files
}

#[test]
fn generated_files_are_current() {
    let out = tempfile::tempdir().unwrap();
    let status = std::process::Command::new("bash")
        .arg(repo_path("scripts/render-manifests.sh"))
        .arg(out.path())
        .env("HELM_BIN", helm_bin())
        .status()
        .expect("running scripts/render-manifests.sh");
    assert!(status.success(), "scripts/render-manifests.sh failed");
    for file in generated_files() {
        let fresh = std::fs::read_to_string(out.path().join(&file))
            .unwrap_or_else(|e| panic!("render-manifests.sh did not write {file}: {e}"));
        let committed = std::fs::read_to_string(repo_path(&file)).unwrap_or_default();
        assert!(
            fresh == committed,
            "{file} is stale: run scripts/render-manifests.sh and commit the result"
        );
    }
    // No stray CRD copies in the chart.
    let copies = std::fs::read_dir(repo_path("charts/upstash-operator/files/crds"))
        .unwrap()
        .count();
    assert_eq!(
        copies,
        std::fs::read_dir(repo_path("crds")).unwrap().count()
    );
}

/// `kubectl apply --server-side -k deploy/manifests` on the real API server, as the README tells
/// users to: everything is created, and the operator's pod is admitted in the namespace, which
/// enforces the restricted Pod Security Standard.
#[tokio::test]
async fn kubectl_applies_the_plain_manifests() {
    let cluster = testkit::cluster().await;
    let kubeconfig = cluster.kubeconfig_path();
    let kubectl = |args: &[&str]| {
        let out = std::process::Command::new(kubectl_bin())
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .args(args)
            .output()
            .expect("running kubectl");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let dir = repo_path("deploy/manifests");
    // Other tests share the CRDs and set their own release labels on them.
    let (ok, out) = kubectl(&[
        "apply",
        "--server-side",
        "--force-conflicts",
        "-k",
        dir.to_str().unwrap(),
    ]);
    assert!(ok, "kubectl apply -k deploy/manifests:\n{out}");
    for expected in [
        "namespace/upstash-operator serverside-applied",
        "customresourcedefinition.apiextensions.k8s.io/cacheinstances.cache.upstash-operator.dev serverside-applied",
        "deployment.apps/upstash-operator serverside-applied",
        "clusterrole.rbac.authorization.k8s.io/upstash-operator serverside-applied",
    ] {
        assert!(out.contains(expected), "missing {expected:?} in:\n{out}");
    }
    let (ok, out) = kubectl(&[
        "-n",
        "upstash-operator",
        "create",
        "secret",
        "generic",
        "upstash-credentials",
        "--from-literal=email=ops@example.com",
        "--from-literal=apiKey=kubectl-test-key",
    ]);
    assert!(ok, "{out}");

    // The Deployment as stored (with the API server's defaults): its pod passes the restricted
    // Pod Security admission of the namespace (the test control plane runs no ReplicaSet
    // controller, so the pod is created with a dry run).
    let client = cluster.client().await;
    let deployment = Api::<Deployment>::namespaced(client.clone(), "upstash-operator")
        .get("upstash-operator")
        .await
        .expect("the Deployment");
    let template = deployment.spec.unwrap().template;
    let pod = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "upstash-operator-pod", "namespace": "upstash-operator", "labels": template.metadata.unwrap().labels},
        "spec": template.spec.unwrap(),
    });
    let admitted = crate::support::apply(&client, &pod, true)
        .await
        .unwrap_or_else(|e| panic!("the operator pod is not admitted: {e}"));
    assert_eq!(admitted["spec"]["serviceAccountName"], "upstash-operator");
    let (ok, out) = kubectl(&[
        "-n",
        "upstash-operator",
        "get",
        "deployment,serviceaccount,role,secret",
        "-o",
        "name",
    ]);
    assert!(ok, "{out}");
    for expected in [
        "deployment.apps/upstash-operator",
        "serviceaccount/upstash-operator",
        "role.rbac.authorization.k8s.io/upstash-operator-leader-election",
        "secret/upstash-credentials",
    ] {
        assert!(
            out.lines().any(|l| l == expected),
            "missing {expected} in:\n{out}"
        );
    }
}
