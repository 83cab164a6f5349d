//! `kubectl upstash plan -f` and `kubectl upstash status` (the built plugin binary) against the
//! real control plane, with the operator as a process and the emulator: what a manifest would
//! change, with markers and exit codes, and that previewing reads only the Kubernetes API.

use std::{path::Path, process::Output, time::Duration};

use kube::Api;
use serde_json::json;
use upstash_operator::crd::CacheInstance;

use crate::support::{apply_manifest, instance, start_stack, witness_pass};

const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs the built `kubectl-upstash` with the test cluster's kubeconfig.
fn plugin(kubeconfig: &Path, args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_kubectl-upstash"))
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .output()
        .expect("running kubectl-upstash")
}

fn write_manifest(dir: &Path, file: &str, docs: &[serde_json::Value]) -> String {
    let text = docs
        .iter()
        .map(|d| serde_json::to_string_pretty(d).unwrap())
        .collect::<Vec<_>>()
        .join("\n---\n");
    let path = dir.join(file);
    std::fs::write(&path, text).unwrap();
    path.to_string_lossy().into_owned()
}

fn with_namespace(mut doc: serde_json::Value, ns: &str) -> serde_json::Value {
    doc["metadata"]["namespace"] = json!(ns);
    doc
}

#[tokio::test]
async fn plan_previews_a_manifest_without_calls_or_writes() {
    let cluster = testkit::cluster().await;
    let ns = cluster.namespace("preview").await;
    let stack = start_stack(&ns, &[]).await;
    let client = ns.client().await;
    let kubeconfig = ns.cluster().kubeconfig_path().to_path_buf();
    let spec = json!({"primaryRegion": "us-east-1", "plan": "payg", "budget": 20});
    let applied = instance("orders", spec.clone());
    apply_manifest(&client, ns.name(), &applied).await.unwrap();
    let api: Api<CacheInstance> = Api::namespaced(client.clone(), ns.name());
    let ready = testkit::wait_for_condition(&api, "orders", "Ready", "True", READY_TIMEOUT).await;
    let id = ready.status.unwrap().database_id.unwrap();
    // The operator has settled: a whole pass ran on the object as it is.
    witness_pass(&stack.operator, &client, ns.name(), "orders").await;

    let dir = tempfile::tempdir().unwrap();
    let changed = write_manifest(
        dir.path(),
        "changed.yaml",
        &[
            with_namespace(
                instance(
                    "orders",
                    json!({"primaryRegion": "eu-west-1", "plan": "fixed_1gb", "budget": 50}),
                ),
                ns.name(),
            ),
            with_namespace(instance("fresh", spec.clone()), ns.name()),
        ],
    );
    let before = api.get("orders").await.unwrap().metadata.resource_version;
    let mark = stack.emulator.mark().await;
    let out = plugin(&kubeconfig, &["plan", "-f", &changed]);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stdout}\n{stderr}");
    let orders = format!("cacheinstance {}/orders:", ns.name());
    assert!(stdout.contains(&orders), "{stdout}");
    assert!(
        stdout.contains("  ! primaryRegion: us-east-1 → eu-west-1  [recreate required:"),
        "{stdout}"
    );
    let plan_line = stdout
        .lines()
        .find(|l| l.starts_with("  ~ plan: payg → fixed_1gb  [disruptive:"))
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(
        !plan_line.contains("(at "),
        "no window: made at once: {stdout}"
    );
    assert!(stdout.contains("  ~ budget: 20 → 50\n"), "{stdout}");
    let fresh = format!("cacheinstance {}/fresh: would be created", ns.name());
    assert!(stdout.contains(&fresh), "{stdout}");

    // No Developer API call: the call log has nothing after the mark...
    assert_eq!(
        stack.emulator.all_calls_since(mark).await,
        Vec::<serde_json::Value>::new()
    );
    // ... and no write: the object is as it was, and `fresh` does not exist.
    assert_eq!(
        api.get("orders").await.unwrap().metadata.resource_version,
        before
    );
    assert!(api.get_opt("fresh").await.unwrap().is_none());

    // The same flags with the namespace given explicitly, on a manifest the cluster matches.
    let unchanged = write_manifest(
        dir.path(),
        "unchanged.yaml",
        &[instance("orders", spec.clone())],
    );
    let out = plugin(&kubeconfig, &["plan", "-n", ns.name(), "-f", &unchanged]);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("orders: no changes"), "{stdout}");

    // Witness that the checks above can fail: applying a budget change makes the call and
    // moves the resourceVersion; the plan of that manifest then shows nothing left to do.
    let budget = instance(
        "orders",
        json!({"primaryRegion": "us-east-1", "plan": "payg", "budget": 50}),
    );
    apply_manifest(&client, ns.name(), &budget).await.unwrap();
    stack
        .emulator
        .wait_for_calls("update-budget", Some(&id), mark, 1)
        .await;
    assert_ne!(
        api.get("orders").await.unwrap().metadata.resource_version,
        before
    );
    let applied = write_manifest(dir.path(), "applied.yaml", &[budget]);
    testkit::wait_for("status.budget to be 50", READY_TIMEOUT, || async {
        let obj = api.get("orders").await.ok()?;
        (obj.status?.budget == Some(50)).then_some(())
    })
    .await;
    let out = plugin(&kubeconfig, &["plan", "-n", ns.name(), "-f", &applied]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    // `status` lists the instance with its readiness, plan and pending changes.
    let out = plugin(&kubeconfig, &["status", "-n", ns.name()]);
    assert_eq!(out.status.code(), Some(0));
    let table = String::from_utf8_lossy(&out.stdout).to_string();
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header[..3], ["NAME", "READY", "PLAN"], "{table}");
    let row: Vec<&str> = table.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(row[..3], ["orders", "True", "payg"], "{table}");
    assert_eq!(row.last(), Some(&"0"), "{table}");

    // A CachePolicy's maintenance window is the default of the instances it applies to: the
    // plan change then shows when the window opens (every day, 3 hours from now, so closed).
    let opens = (jiff::Timestamp::now() + jiff::SignedDuration::from_hours(3))
        .to_zoned(jiff::tz::TimeZone::UTC);
    let window = json!({
        "days": ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"],
        "start": format!("{:02}:00", opens.hour()),
        "duration": "1h",
        "timeZone": "UTC",
    });
    let nights = crate::support::policy(
        "nights",
        json!({"selector": {"matchLabels": {}}, "maintenanceWindow": window}),
    );
    apply_manifest(&client, ns.name(), &nights).await.unwrap();
    let out = plugin(&kubeconfig, &["plan", "-f", &changed]);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(out.status.code(), Some(2), "{stdout}");
    let plan_line = stdout
        .lines()
        .find(|l| l.starts_with("  ~ plan: payg → fixed_1gb  [disruptive:"))
        .unwrap_or_else(|| panic!("{stdout}"));
    let expected = format!(
        "(at {:04}-{:02}-{:02}T{:02}:00:00Z)",
        opens.year(),
        opens.month(),
        opens.day(),
        opens.hour()
    );
    assert!(
        plan_line.ends_with(&expected),
        "{plan_line} (expected {expected})"
    );
}
