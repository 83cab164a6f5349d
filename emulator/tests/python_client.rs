//! Upstash's Python client (`upstash-redis` from PyPI), unchanged, against the emulator: every
//! data type, scripts, transactions, pipelines and the read-only token, over TLS trusting the
//! emulator's CA. The pinned packages (`clients/python/requirements.txt`) are installed once in
//! a virtualenv under `target/python-clients/<hash of requirements.txt>/`; it needs `python3`
//! with the `venv` module (Debian: `python3-venv`).

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;

use common::*;
use serde_json::json;
use tokio::process::Command;

fn python_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("clients/python")
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"))
}

/// FNV-1a of the requirements file: the virtualenv's cache key.
fn fingerprint(bytes: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{h:016x}")
}

async fn run(cmd: &mut Command, what: &str) {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap_or_else(|e| panic!("{what}: cannot run ({e}); python3 with venv is required"));
    assert!(
        out.status.success(),
        "{what} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The virtualenv with the pinned packages, made on first use.
async fn virtualenv() -> PathBuf {
    let requirements = python_dir().join("requirements.txt");
    let bytes = std::fs::read(&requirements).unwrap();
    let base = target_dir().join("python-clients");
    let venv = base.join(fingerprint(&bytes));
    if venv.join(".installed").exists() {
        return venv;
    }
    // A virtualenv's scripts name its directory, so it is made in place; the marker, written
    // last, tells a finished install from an interrupted one (which is made again).
    std::fs::create_dir_all(&base).unwrap();
    let _ = std::fs::remove_dir_all(&venv);
    run(
        Command::new("python3").arg("-m").arg("venv").arg(&venv),
        "python3 -m venv",
    )
    .await;
    run(
        Command::new(venv.join("bin/pip"))
            .args([
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "--no-input",
                "-r",
            ])
            .arg(&requirements),
        "pip install -r clients/python/requirements.txt",
    )
    .await;
    std::fs::write(venv.join(".installed"), b"").unwrap();
    venv
}

fn python(venv: &Path) -> PathBuf {
    venv.join("bin/python")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstash_redis_for_python_works_unchanged() {
    let venv = virtualenv().await;
    let tmp = tempfile::tempdir().unwrap();
    let ca = tmp.path().join("ca.pem");
    let mut cfg = config();
    cfg.ca_out = Some(ca.clone());
    let env = start_with(cfg).await;
    let db = env.create("python").await;
    let out = Command::new(python(&venv))
        .args(["-m", "unittest", "-v", "test_upstash_redis"])
        .current_dir(python_dir())
        .env("UPSTASH_REDIS_REST_URL", Env::rest_url(&db))
        .env(
            "UPSTASH_REDIS_REST_TOKEN",
            db["rest_token"].as_str().unwrap(),
        )
        .env(
            "UPSTASH_REDIS_REST_READONLY_TOKEN",
            db["read_only_rest_token"].as_str().unwrap(),
        )
        .env("SSL_CERT_FILE", &ca)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "python -m unittest failed:\n{stderr}");
    assert!(
        stderr.contains("Ran 10 tests") && stderr.contains("\nOK"),
        "{stderr}"
    );
    // The client really used the data plane (base64 encoding, pipeline, multi-exec).
    let data = env.calls("?plane=data").await;
    for ep in [
        "data:hset",
        "data:zadd",
        "data:evalsha",
        "data:pipeline",
        "data:multi-exec",
    ] {
        assert!(
            data.iter()
                .any(|c| c["endpoint"] == ep && c["status"] == 200),
            "no {ep} call"
        );
    }
    assert_eq!(
        env.data(&db, json!(["HGET", "order:7", "status"])).await.1,
        json!({"result": "paid"})
    );
}
