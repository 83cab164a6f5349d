//! The chart's cluster-wide guardrails: a ValidatingAdmissionPolicy that the real API server
//! enforces, so `kubectl apply` of a CacheInstance that breaks them is refused with a message
//! naming the field, while an object that predates them can still be relabelled and deleted.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{apply, install_chart_crds, kubectl_bin, of_kind, render};

fn instance(ns: &str, name: &str, spec: Value) -> Value {
    json!({
        "apiVersion": "cache.upstash-operator.dev/v1alpha1",
        "kind": "CacheInstance",
        "metadata": {"name": name, "namespace": ns},
        "spec": spec,
    })
}

#[tokio::test]
async fn the_validating_admission_policy_refuses_a_manifest_that_breaks_the_guardrails() {
    let cluster = testkit::cluster().await;
    let ns = cluster.namespace("guardrails").await;
    let admin = cluster.client().await;
    install_chart_crds(&admin).await;
    let kubectl = |args: &[&str], stdin: Option<&Value>| {
        use std::io::Write;
        let mut child = std::process::Command::new(kubectl_bin())
            .arg("--kubeconfig")
            .arg(cluster.kubeconfig_path())
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("running kubectl");
        let mut input = child.stdin.take().unwrap();
        if let Some(doc) = stdin {
            input.write_all(&serde_json::to_vec(doc).unwrap()).unwrap();
        }
        drop(input);
        let out = child.wait_with_output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };

    // An object from before the guardrails: it breaks them.
    let old = instance(ns.name(), "old", json!({"primaryRegion": "us-east-1"}));
    apply(&admin, &old, false).await.unwrap();

    // The chart's policy, bound to this test's namespace only (other tests share the cluster).
    let values = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        values.path(),
        serde_json::to_vec(&json!({"guardrails": {
            "enabled": true,
            "allowedRegions": ["eu-west-1", "eu-central-1"],
            "highestPlan": "fixed_1gb",
            "requireEviction": true,
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns.name()}},
        }}))
        .unwrap(),
    )
    .unwrap();
    let docs = render(
        "vap",
        ns.name(),
        &[values.path().to_str().unwrap()],
        &["crds.install=false"],
    );
    let policy = of_kind(&docs, "ValidatingAdmissionPolicy");
    let binding = of_kind(&docs, "ValidatingAdmissionPolicyBinding");
    assert_eq!((policy.len(), binding.len()), (1, 1));
    for doc in policy.into_iter().chain(binding) {
        apply(&admin, doc, false)
            .await
            .unwrap_or_else(|e| panic!("applying {}: {e}", doc["kind"]));
    }

    // The API server needs a moment to load a new policy: until then a dry run passes.
    let bad = instance(
        ns.name(),
        "bad",
        json!({"primaryRegion": "us-east-1", "plan": "fixed_5gb"}),
    );
    testkit::wait_for(
        "the policy to be enforced",
        Duration::from_secs(30),
        || async { apply(&admin, &bad, true).await.is_err().then_some(()) },
    )
    .await;
    let (ok, out) = kubectl(&["apply", "--server-side", "-f", "-"], Some(&bad));
    assert!(
        !ok,
        "kubectl apply accepted a manifest that breaks the guardrails: {out}"
    );
    assert!(
        out.contains("ValidatingAdmissionPolicy") && out.contains("denied request"),
        "{out}"
    );
    assert!(
        out.contains("spec.primaryRegion us-east-1 is not among the regions the cluster allows (eu-west-1, eu-central-1)"),
        "{out}"
    );
    let missing_eviction = instance(
        ns.name(),
        "bad",
        json!({"primaryRegion": "eu-west-1", "plan": "fixed_5gb"}),
    );
    let (ok, out) = kubectl(
        &["apply", "--server-side", "-f", "-"],
        Some(&missing_eviction),
    );
    assert!(!ok);
    assert!(
        out.contains("spec.plan fixed_5gb is above fixed_1gb, the highest plan the cluster allows"),
        "{out}"
    );

    // A manifest that keeps them is accepted.
    let good = instance(
        ns.name(),
        "good",
        json!({"primaryRegion": "eu-west-1", "readRegions": ["eu-central-1"], "plan": "fixed_1gb", "eviction": true}),
    );
    let (ok, out) = kubectl(&["apply", "--server-side", "-f", "-"], Some(&good));
    assert!(ok, "{out}");

    // The older object: its spec cannot be changed to anything that breaks them, but labels
    // (and the operator's finalizer) can, and it can be deleted.
    let mut edited = old.clone();
    edited["spec"]["readRegions"] = json!(["us-west-2"]);
    let (ok, out) = kubectl(&["apply", "--server-side", "-f", "-"], Some(&edited));
    assert!(!ok, "{out}");
    let (ok, out) = kubectl(
        &["label", "cacheinstance", "-n", ns.name(), "old", "team=crm"],
        None,
    );
    assert!(ok, "{out}");
    let (ok, out) = kubectl(
        &[
            "delete",
            "cacheinstance",
            "-n",
            ns.name(),
            "old",
            "--wait=false",
        ],
        None,
    );
    assert!(ok, "{out}");

    for kind in [
        "validatingadmissionpolicybinding",
        "validatingadmissionpolicy",
    ] {
        kubectl(&["delete", kind, "vap-upstash-operator-guardrails"], None);
    }
}

#[tokio::test]
async fn required_allowed_ips_refuse_a_range_that_admits_every_address_at_admission() {
    let cluster = testkit::cluster().await;
    let ns = cluster.namespace("guardrails-ips").await;
    let admin = cluster.client().await;
    install_chart_crds(&admin).await;

    let values = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        values.path(),
        serde_json::to_vec(&json!({"guardrails": {
            "enabled": true,
            "requireAllowedIPs": true,
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns.name()}},
        }}))
        .unwrap(),
    )
    .unwrap();
    let release = "vap-ips";
    let docs = render(
        release,
        ns.name(),
        &[values.path().to_str().unwrap()],
        &["crds.install=false"],
    );
    let policy = of_kind(&docs, "ValidatingAdmissionPolicy");
    let binding = of_kind(&docs, "ValidatingAdmissionPolicyBinding");
    assert_eq!((policy.len(), binding.len()), (1, 1));
    let policy_name = policy[0]["metadata"]["name"].as_str().unwrap().to_string();
    let binding_name = binding[0]["metadata"]["name"].as_str().unwrap().to_string();
    for doc in policy.into_iter().chain(binding) {
        apply(&admin, doc, false)
            .await
            .unwrap_or_else(|e| panic!("applying {}: {e}", doc["kind"]));
    }

    // Witness that the policy is loaded: a manifest without allowedIPs is refused.
    let none = instance(ns.name(), "none", json!({"primaryRegion": "eu-west-1"}));
    testkit::wait_for(
        "the policy to be enforced",
        Duration::from_secs(30),
        || async { apply(&admin, &none, true).await.is_err().then_some(()) },
    )
    .await;

    for open in [
        json!(["0.0.0.0/0"]),
        json!(["::/0"]),
        json!(["10.0.0.0/8", "0.0.0.0/0"]),
    ] {
        let doc = instance(
            ns.name(),
            "open",
            json!({"primaryRegion": "eu-west-1", "allowedIPs": open}),
        );
        let err = apply(&admin, &doc, true)
            .await
            .expect_err(&format!("allowedIPs {open} was accepted"))
            .to_string();
        assert!(
            err.contains("a range that admits every address (such as 0.0.0.0/0 or ::/0) does not"),
            "{open}: {err}"
        );
    }
    let closed = instance(
        ns.name(),
        "closed",
        json!({"primaryRegion": "eu-west-1", "allowedIPs": ["10.0.0.0/8", "203.0.113.7", "2001:db8::/32"]}),
    );
    apply(&admin, &closed, false)
        .await
        .expect("a list of real networks is accepted");

    let api: kube::Api<kube::api::DynamicObject> = kube::Api::all_with(
        admin.clone(),
        &kube::api::ApiResource::from_gvk(&kube::api::GroupVersionKind::gvk(
            "admissionregistration.k8s.io",
            "v1",
            "ValidatingAdmissionPolicyBinding",
        )),
    );
    let _ = api.delete(&binding_name, &Default::default()).await;
    let api: kube::Api<kube::api::DynamicObject> = kube::Api::all_with(
        admin.clone(),
        &kube::api::ApiResource::from_gvk(&kube::api::GroupVersionKind::gvk(
            "admissionregistration.k8s.io",
            "v1",
            "ValidatingAdmissionPolicy",
        )),
    );
    let _ = api.delete(&policy_name, &Default::default()).await;
}
