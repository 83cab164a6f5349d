//! Upstash's own Node clients, unchanged, against the emulator: the official CLI (`@upstash/cli`,
//! pointed at the emulator by `clients/preload.mjs`), `@upstash/redis` (trusting the emulator's
//! CA through `NODE_EXTRA_CA_CERTS`) over every data type, scripts, transactions and pipelines,
//! `@upstash/ratelimit` (its Lua scripts), and `ioredis` on the Redis protocol listener with a
//! `REDIS_URL` and as the read-only `default_ro` user. Runs `node --test` in `emulator/clients`, installing the
//! pinned packages with `npm ci` first when `node_modules` is missing.

mod common;

use std::path::PathBuf;
use std::process::Stdio;

use common::*;
use tokio::process::Command;

fn clients_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("clients")
}

async fn run(cmd: &mut Command, what: &str) -> std::process::Output {
    cmd.stdin(Stdio::null())
        .output()
        .await
        .unwrap_or_else(|e| panic!("{what}: cannot run ({e}); Node.js 20+ and npm are required"))
}

async fn ensure_node_modules() {
    let dir = clients_dir();
    let installed = [
        "@upstash/cli",
        "@upstash/redis",
        "@upstash/ratelimit",
        "ioredis",
    ]
    .iter()
    .all(|p| {
        dir.join("node_modules")
            .join(p)
            .join("package.json")
            .exists()
    });
    if installed {
        return;
    }
    let out = run(
        Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--prefix"])
            .arg(&dir),
        "npm ci",
    )
    .await;
    assert!(
        out.status.success(),
        "npm ci in {} failed:\n{}\n{}",
        dir.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_cli_and_upstash_redis_work_unchanged() {
    ensure_node_modules().await;
    let tmp = tempfile::tempdir().unwrap();
    let ca = tmp.path().join("ca.pem");
    let mut cfg = config();
    cfg.ca_out = Some(ca.clone());
    let env = start_with(cfg).await;

    let out = run(
        Command::new("node")
            .args(["--test", "--test-reporter=spec"])
            .current_dir(clients_dir())
            .env("UPSTASH_EMULATOR_API_URL", &env.api)
            .env("UPSTASH_EMAIL", EMAIL)
            .env("UPSTASH_API_KEY", KEY)
            .env("NODE_EXTRA_CA_CERTS", &ca)
            .env("UPSTASH_DISABLE_TELEMETRY", "1")
            .env_remove("UPSTASH_REDIS_REST_URL")
            .env_remove("UPSTASH_REDIS_REST_TOKEN"),
        "node --test",
    )
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "node --test failed:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("ℹ pass 7") && stdout.contains("ℹ fail 0"),
        "{stdout}"
    );

    // The clients really talked to the emulator, as the configured account.
    let calls = env.calls("?plane=api").await;
    for op in ["create", "list", "get", "reset-password", "delete"] {
        assert!(
            calls
                .iter()
                .any(|c| c["endpoint"] == op && c["status"] == 200 && c["account"] == EMAIL),
            "no successful {op} call in the log"
        );
    }
    let data = env.calls("?plane=data").await;
    for ep in [
        "data:set",
        "data:get",
        "data:incr",
        "data:pipeline",
        "data:multi-exec",
    ] {
        assert!(
            data.iter()
                .any(|c| c["endpoint"] == ep && c["status"] == 200),
            "no {ep} call"
        );
    }
    // ioredis came over the Redis protocol listener.
    for ep in [
        "data:incrby",
        "data:multi-exec",
        "data:ttl",
        "data:zadd",
        "data:hget",
    ] {
        assert!(
            data.iter()
                .any(|c| c["endpoint"] == ep && c["method"] == "RESP" && c["status"] == 200),
            "no {ep} call over RESP"
        );
    }
}
