//! Argo CD: the health checks in `deploy/argocd/resource_customizations/`, run as Argo CD runs
//! them, the `argocd-cm` snippet that carries them, and the example Application.
//!
//! Argo CD runs custom health checks in gopher-lua (Lua 5.1 semantics) with only the base,
//! table and package libraries and a "safe" os library (`os.time`, `os.date`): no `string`
//! library unless an admin sets `useOpenLibs`, and a 1 s timeout (argo-cd `util/lua/lua.go`).
//! The harness below does the same with Lua 5.1 through mlua, and reads Argo CD's own
//! `health_test.yaml` format, so the directories can be sent upstream unchanged.

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use mlua::{HookTriggers, Lua, LuaOptions, StdLib, Value as LuaValue, VmState};
use serde_json::Value;

use crate::support::{parse_documents, repo_path};

/// The health statuses Argo CD accepts from a script.
const VALID: [&str; 6] = [
    "Unknown",
    "Progressing",
    "Suspended",
    "Healthy",
    "Degraded",
    "Missing",
];

/// Directory of a kind's health check.
pub fn customization_dir(kind: &str) -> PathBuf {
    repo_path(&format!(
        "deploy/argocd/resource_customizations/cache.upstash-operator.dev/{kind}"
    ))
}

/// A Lua state like Argo CD's for custom health checks.
fn argo_lua() -> Lua {
    let lua =
        Lua::new_with(StdLib::TABLE | StdLib::PACKAGE, LuaOptions::default()).expect("a Lua state");
    // The safe os library: time and date only.
    let os = lua.create_table().unwrap();
    os.set(
        "time",
        lua.create_function(|_, ()| {
            Ok(std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() as f64)
                .unwrap_or_default())
        })
        .unwrap(),
    )
    .unwrap();
    os.set(
        "date",
        lua.create_function(|_, format: Option<String>| {
            let format = format.unwrap_or_else(|| "%c".into());
            let format = format.trim_start_matches('!');
            Ok(jiff::Timestamp::now().strftime(format).to_string())
        })
        .unwrap(),
    )
    .unwrap();
    lua.globals().set("os", os).unwrap();
    lua
}

/// Converts JSON to Lua as Argo CD's `decodeValue` does: null is nil, arrays are sequences.
fn to_lua(lua: &Lua, value: &Value) -> LuaValue {
    match value {
        Value::Null => LuaValue::Nil,
        Value::Bool(b) => LuaValue::Boolean(*b),
        Value::Number(n) => LuaValue::Number(n.as_f64().expect("a finite number")),
        Value::String(s) => LuaValue::String(lua.create_string(s).unwrap()),
        Value::Array(items) => {
            let table = lua.create_table().unwrap();
            for (i, item) in items.iter().enumerate() {
                table.raw_set(i + 1, to_lua(lua, item)).unwrap();
            }
            LuaValue::Table(table)
        }
        Value::Object(map) => {
            let table = lua.create_table().unwrap();
            for (k, v) in map {
                table.raw_set(k.as_str(), to_lua(lua, v)).unwrap();
            }
            LuaValue::Table(table)
        }
    }
}

/// Runs a health script on `obj` like Argo CD; returns `(status, message)` or the Lua error.
pub fn run_health(script: &str, obj: &Value) -> Result<(String, String), String> {
    let lua = argo_lua();
    let started = Instant::now();
    lua.set_hook(
        HookTriggers::new().every_nth_instruction(1000),
        move |_, _| {
            if started.elapsed() > Duration::from_secs(1) {
                Err(mlua::Error::runtime("health script ran longer than 1s"))
            } else {
                Ok(VmState::Continue)
            }
        },
    )
    .map_err(|e| e.to_string())?;
    lua.globals()
        .set("obj", to_lua(&lua, obj))
        .map_err(|e| e.to_string())?;
    let result: LuaValue = lua.load(script).eval().map_err(|e| e.to_string())?;
    let LuaValue::Table(table) = result else {
        return Err(format!(
            "expect table output from Lua script, not {}",
            result.type_name()
        ));
    };
    let status: Option<String> = table.get("status").map_err(|e| e.to_string())?;
    let message: Option<String> = table.get("message").map_err(|e| e.to_string())?;
    let status = status.unwrap_or_default();
    if !VALID.contains(&status.as_str()) {
        return Ok((
            "Unknown".into(),
            "Lua returned an invalid health status".into(),
        ));
    }
    Ok((status, message.unwrap_or_default()))
}

/// The health of `obj` by the committed script of its kind.
pub fn health_of(kind: &str, obj: &Value) -> (String, String) {
    let script = std::fs::read_to_string(customization_dir(kind).join("health.lua")).unwrap();
    run_health(&script, obj).unwrap_or_else(|e| panic!("{kind} health.lua failed: {e}"))
}

fn read_yaml(path: &Path) -> Value {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    parse_documents(&text)
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("{} is empty", path.display()))
}

/// Every `health_test.yaml` case, as Argo CD's `TestLuaHealthScript` runs them.
#[test]
fn health_checks_pass_their_argo_cd_tests() {
    let mut statuses =
        std::collections::BTreeMap::<String, std::collections::BTreeSet<String>>::new();
    for kind in ["CacheInstance", "CachePolicy"] {
        let dir = customization_dir(kind);
        let script = std::fs::read_to_string(dir.join("health.lua")).unwrap();
        let tests = read_yaml(&dir.join("health_test.yaml"));
        let cases = tests["tests"].as_array().expect("tests: [...]");
        assert!(cases.len() >= 4, "{kind}: too few cases");
        let mut inputs = std::collections::BTreeSet::new();
        for case in cases {
            let input = case["inputPath"].as_str().expect("inputPath");
            inputs.insert(input.to_string());
            let obj = read_yaml(&dir.join(input));
            assert_eq!(obj["kind"], kind, "{input}");
            assert_eq!(
                obj["apiVersion"], "cache.upstash-operator.dev/v1alpha1",
                "{input}"
            );
            let expected = &case["healthStatus"];
            let (status, message) = run_health(&script, &obj)
                .unwrap_or_else(|e| panic!("{kind}/{input}: the script failed: {e}"));
            assert_eq!(
                status,
                expected["status"].as_str().unwrap(),
                "{kind}/{input}"
            );
            assert_eq!(
                message,
                expected["message"].as_str().unwrap_or_default(),
                "{kind}/{input}"
            );
            statuses.entry(kind.into()).or_default().insert(status);
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
}

/// The harness is as strict as Argo CD: no `string` library, and scripts are stopped after 1 s.
#[test]
fn the_harness_has_argo_cds_limits() {
    let obj = serde_json::json!({"metadata": {"name": "x"}});
    let uses_string = r#"
        local hs = {}
        if string.find(obj.metadata.name, "x") then hs.status = "Healthy" end
        return hs
    "#;
    let err = run_health(uses_string, &obj).unwrap_err();
    assert!(err.contains("string"), "{err}");
    let uses_method = r#"return { status = ("healthy"):upper() }"#;
    assert!(run_health(uses_method, &obj).is_err());
    let spins = "while true do end";
    let err = run_health(spins, &obj).unwrap_err();
    assert!(err.contains("longer than 1s"), "{err}");
    assert_eq!(
        run_health(r#"return { status = "Fine" }"#, &obj).unwrap(),
        (
            "Unknown".to_string(),
            "Lua returned an invalid health status".to_string()
        )
    );
    // What the health scripts do use works: ipairs, comparisons of numbers, the os library.
    let ok = r#"
        local n = 0
        for _, c in ipairs(obj.list) do n = n + c end
        if n == 6 and os.time() > 0 and obj.missing == nil then
          return { status = "Healthy", message = "sum " .. n }
        end
        return { status = "Degraded" }
    "#;
    let obj = serde_json::json!({"list": [1, 2, 3], "missing": null});
    assert_eq!(
        run_health(ok, &obj).unwrap(),
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
