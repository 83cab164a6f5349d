//! Argo CD: the health checks in `deploy/argocd/resource_customizations/`, run by Argo CD's own
//! Lua runtime, the `argocd-cm` snippet that carries them, and the example Application.
//!
//! `tools/argocd-lua` builds Argo CD's `util/lua` package (gopher-lua with Argo CD's libraries,
//! its safe `os`, its 1 s timeout and its status checks) from the Go module proxy into a small
//! command that reads the health checks from `deploy/argocd/argocd-cm.yaml` with Argo CD's own
//! settings code, as `argocd admin settings resource-overrides health` does, and prints for each
//! object what the script returned and the health Argo CD assigns. The test cases are Argo CD's
//! own `health_test.yaml` format, so the directories can be sent upstream unchanged.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::support::{parse_documents, repo_path};

/// Directory of a kind's health check.
pub fn customization_dir(kind: &str) -> PathBuf {
    repo_path(&format!(
        "deploy/argocd/resource_customizations/cache.upstash-operator.dev/{kind}"
    ))
}

/// The `argocd-lua` binary (`$ARGOCD_LUA_BIN`, which `scripts/test.sh` sets from
/// `tools/argocd-lua/build.sh`).
fn argocd_lua_bin() -> PathBuf {
    let path = std::env::var_os("ARGOCD_LUA_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            panic!(
                "ARGOCD_LUA_BIN is not set: run the deploy tests through scripts/test.sh, or export \
                 ARGOCD_LUA_BIN=$(tools/argocd-lua/build.sh | tail -n1)"
            )
        });
    assert!(
        path.is_file(),
        "ARGOCD_LUA_BIN={} does not exist",
        path.display()
    );
    path
}

/// What Argo CD's runtime made of one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArgoHealth {
    /// `(status, message)` as the health script returned them (what Argo CD's
    /// `TestLuaHealthScript` compares with `health_test.yaml`), or the script's error.
    pub script: Result<(String, String), String>,
    /// `(status, message)` Argo CD assigns the resource (gitops-engine's `GetResourceHealth`,
    /// which for example reports an object being deleted before running any script).
    pub argocd: Result<(String, String), String>,
}

fn parse_result(v: &Value) -> Result<(String, String), String> {
    if let Some(e) = v["error"].as_str() {
        return Err(e.to_string());
    }
    Ok((
        v["status"].as_str().unwrap_or_default().to_string(),
        v["message"].as_str().unwrap_or_default().to_string(),
    ))
}

/// Runs Argo CD's health assessment, with the checks of `argocd_cm`, on every object file.
fn run_argocd_lua(argocd_cm: &Path, files: &[PathBuf]) -> Vec<ArgoHealth> {
    let out = std::process::Command::new(argocd_lua_bin())
        .arg("--argocd-cm")
        .arg(argocd_cm)
        .args(files)
        .output()
        .expect("running argocd-lua");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "argocd-lua failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert_eq!(lines.len(), files.len(), "{stdout}");
    lines
        .iter()
        .zip(files)
        .map(|(line, file)| {
            assert_eq!(line["path"], file.to_string_lossy().as_ref(), "{line}");
            ArgoHealth {
                script: parse_result(&line["script"]),
                argocd: parse_result(&line["argocd"]),
            }
        })
        .collect()
}

/// Argo CD's health of each object, by the committed checks in `deploy/argocd/argocd-cm.yaml`.
pub fn argo_health(objs: &[Value]) -> Vec<ArgoHealth> {
    let dir = tempfile::tempdir().unwrap();
    let files: Vec<PathBuf> = objs
        .iter()
        .enumerate()
        .map(|(i, obj)| {
            // JSON is YAML.
            let file = dir.path().join(format!("object-{i}.yaml"));
            std::fs::write(&file, serde_json::to_vec(obj).unwrap()).unwrap();
            file
        })
        .collect();
    run_argocd_lua(&repo_path("deploy/argocd/argocd-cm.yaml"), &files)
}

/// The health the committed script of `obj`'s kind gives it in Argo CD's runtime.
pub fn health_of(kind: &str, obj: &Value) -> (String, String) {
    assert_eq!(obj["kind"], kind, "{obj}");
    let health = argo_health(std::slice::from_ref(obj)).remove(0);
    health
        .script
        .unwrap_or_else(|e| panic!("{kind} health.lua failed: {e}"))
}

fn read_yaml(path: &Path) -> Value {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    parse_documents(&text)
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("{} is empty", path.display()))
}

/// Every `health_test.yaml` case, as Argo CD's `TestLuaHealthScript` runs them, in Argo CD's own
/// runtime with the scripts as `argocd-cm` carries them (standard libraries off, as for any
/// custom health check unless an admin enables them).
#[test]
fn health_checks_pass_their_argo_cd_tests_in_argo_cds_runtime() {
    let mut statuses =
        std::collections::BTreeMap::<String, std::collections::BTreeSet<String>>::new();
    let mut ran = 0;
    for kind in ["CacheInstance", "CachePolicy"] {
        let dir = customization_dir(kind);
        let tests = read_yaml(&dir.join("health_test.yaml"));
        let cases = tests["tests"].as_array().expect("tests: [...]");
        assert!(cases.len() >= 4, "{kind}: too few cases");
        let mut inputs = std::collections::BTreeSet::new();
        let mut files = Vec::new();
        for case in cases {
            let input = case["inputPath"].as_str().expect("inputPath");
            inputs.insert(input.to_string());
            let obj = read_yaml(&dir.join(input));
            assert_eq!(obj["kind"], kind, "{input}");
            assert_eq!(
                obj["apiVersion"], "cache.upstash-operator.dev/v1alpha1",
                "{input}"
            );
            files.push(dir.join(input));
        }
        let results = run_argocd_lua(&repo_path("deploy/argocd/argocd-cm.yaml"), &files);
        for ((case, file), health) in cases.iter().zip(&files).zip(results) {
            let input = case["inputPath"].as_str().unwrap();
            let expected = (
                case["healthStatus"]["status"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                case["healthStatus"]["message"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            );
            let script = health
                .script
                .unwrap_or_else(|e| panic!("{kind}/{input}: the script failed: {e}"));
            assert_eq!(script, expected, "{kind}/{input}");
            // What Argo CD shows: the script's answer, except for an object being deleted,
            // which Argo CD reports as Progressing before it runs any script.
            let argocd = health
                .argocd
                .unwrap_or_else(|e| panic!("{kind}/{input}: Argo CD's assessment failed: {e}"));
            if read_yaml(file)["metadata"]["deletionTimestamp"].is_string() {
                assert_eq!(argocd.0, "Progressing", "{kind}/{input}");
            } else {
                assert_eq!(argocd, script, "{kind}/{input}");
            }
            statuses.entry(kind.into()).or_default().insert(script.0);
            ran += 1;
        }
        // Every testdata file is used by a test.
        let files: std::collections::BTreeSet<String> = std::fs::read_dir(dir.join("testdata"))
            .unwrap()
            .map(|e| format!("testdata/{}", e.unwrap().file_name().to_string_lossy()))
            .collect();
        assert_eq!(
            files, inputs,
            "{kind}: testdata files without a test, or the reverse"
        );
    }
    for kind in ["CacheInstance", "CachePolicy"] {
        for status in ["Healthy", "Progressing", "Degraded"] {
            assert!(
                statuses[kind].contains(status),
                "{kind}: no test expects {status}"
            );
        }
    }
    assert!(ran >= 12, "{ran} cases");
}

/// The runtime is Argo CD's, with its limits for custom checks: no `string` library (so a
/// script that uses one fails), the 1 s timeout, an unknown status turned into `Unknown`, and
/// no global `os`.
#[test]
fn argo_cds_runtime_has_argo_cds_limits() {
    let dir = tempfile::tempdir().unwrap();
    let key = "resource.customizations.health.cache.upstash-operator.dev_CacheInstance";
    let run = |script: &str| {
        let cm = serde_json::json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "argocd-cm", "namespace": "argocd"},
            "data": {(key): script},
        });
        let cm_file = dir.path().join("argocd-cm.yaml");
        std::fs::write(&cm_file, serde_json::to_vec(&cm).unwrap()).unwrap();
        let obj = serde_json::json!({
            "apiVersion": "cache.upstash-operator.dev/v1alpha1",
            "kind": "CacheInstance",
            "metadata": {"name": "x", "namespace": "crm"},
            "spec": {"list": [1, 2, 3]},
        });
        let obj_file = dir.path().join("obj.yaml");
        std::fs::write(&obj_file, serde_json::to_vec(&obj).unwrap()).unwrap();
        run_argocd_lua(&cm_file, &[obj_file]).remove(0).script
    };
    let err = run(r#"if string.find(obj.metadata.name, "x") then return {status = "Healthy"} end"#)
        .unwrap_err();
    assert!(
        err.contains("attempt to index a non-table object(nil) with key 'find'"),
        "{err}"
    );
    let err = run(r#"return { status = ("healthy"):upper() }"#).unwrap_err();
    assert!(err.contains("with key 'upper'"), "{err}");
    let err = run("while true do end").unwrap_err();
    assert!(err.contains("context deadline exceeded"), "{err}");
    assert_eq!(
        run(r#"return { status = "Fine" }"#).unwrap(),
        (
            "Unknown".to_string(),
            "Lua returned an invalid health status".to_string()
        )
    );
    // What the health scripts do use works: ipairs, numbers, nil for absent fields. The safe
    // os library (time and date) is not a global in Argo CD (its loader registers it under the
    // name "table"); a script must `require("os")`, which the imitation this runtime replaced
    // got wrong.
    let ok = r#"
        local n = 0
        for _, c in ipairs(obj.spec.list) do n = n + c end
        local safe_os = require("os")
        if n == 6 and os == nil and safe_os.time() > 0 and safe_os.exit == nil
            and obj.status == nil then
          return { status = "Healthy", message = "sum " .. n }
        end
        return { status = "Degraded" }
    "#;
    assert_eq!(
        run(ok).unwrap(),
        ("Healthy".to_string(), "sum 6".to_string())
    );
}

/// `deploy/argocd/argocd-cm.yaml` carries exactly the committed scripts under Argo CD's keys.
#[test]
fn the_argocd_cm_snippet_carries_the_scripts() {
    let cm = read_yaml(&repo_path("deploy/argocd/argocd-cm.yaml"));
    assert_eq!(cm["kind"], "ConfigMap");
    assert_eq!(cm["metadata"]["name"], "argocd-cm");
    assert_eq!(cm["metadata"]["namespace"], "argocd");
    for kind in ["CacheInstance", "CachePolicy"] {
        let key = format!("resource.customizations.health.cache.upstash-operator.dev_{kind}");
        let script = std::fs::read_to_string(customization_dir(kind).join("health.lua")).unwrap();
        assert_eq!(
            cm["data"][&key].as_str(),
            Some(script.as_str()),
            "{key} in deploy/argocd/argocd-cm.yaml differs from health.lua: run scripts/render-manifests.sh"
        );
    }
}

/// The example Application installs this chart with server-side apply and server-side diff.
#[test]
fn the_application_installs_the_chart_server_side() {
    let app = read_yaml(&repo_path("deploy/argocd/application.yaml"));
    assert_eq!(app["apiVersion"], "argoproj.io/v1alpha1");
    assert_eq!(app["kind"], "Application");
    assert_eq!(
        app["metadata"]["annotations"]["argocd.argoproj.io/compare-options"],
        "ServerSideDiff=true"
    );
    let options: Vec<&str> = app["spec"]["syncPolicy"]["syncOptions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(options.contains(&"ServerSideApply=true"), "{options:?}");
    assert!(options.contains(&"CreateNamespace=true"), "{options:?}");
    let source = &app["spec"]["source"];
    let path = source["path"].as_str().unwrap();
    assert!(repo_path(path).join("Chart.yaml").is_file(), "{path}");
    // Its values pass the chart's schema and render.
    let values = serde_json::to_string(&source["helm"]["valuesObject"]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("values.json");
    std::fs::write(&file, values).unwrap();
    let docs = crate::support::render(
        source["helm"]["releaseName"].as_str().unwrap(),
        app["spec"]["destination"]["namespace"].as_str().unwrap(),
        &[file.to_str().unwrap()],
        &[],
    );
    let deployment = crate::support::one(&docs, "Deployment");
    assert_eq!(deployment["metadata"]["namespace"], "upstash-operator");
}
