//! The emulator alone at N databases (`upstash-bench emulator --n 1000,10000`): what its memory
//! and CPU are with many databases, with and without data-plane traffic. No operator and no
//! control plane; no added latency.
//!
//! Phases: `create` (N databases through the Developer API, `--parallel` at a time), `idle`
//! (3 s), `list` (one `GET /v2/redis/databases`), `probe` (`PING`, `SET`, `GET`, `INFO` over REST
//! on `--probe` of the databases, one after the other: each starts its database's Redis engine,
//! and past `--max-engines` the least recently used one stops), `settled` (3 s), `delete` (every
//! database). Each phase reports the emulator's RSS alone and with its Redis engines, the engines
//! running, and the CPU of both (engines that stopped included).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use futures::StreamExt as _;
use serde::Serialize;
use serde_json::{Value, json};

use crate::observe::{Phase, TreePhase, TreeSampler, tree_cpu_seconds};
use crate::stack::{Binaries, Emulator};

#[derive(Debug, Clone, Serialize)]
pub struct EmulatorConfig {
    pub n: usize,
    /// Databases whose data plane is used.
    pub probe: usize,
    /// Developer API calls in flight.
    pub parallel: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct EmulatorResult {
    pub config: EmulatorConfig,
    /// Phase → seconds.
    pub durations: BTreeMap<String, f64>,
    /// Phase → memory of the emulator and its engines.
    pub memory: BTreeMap<String, TreePhase>,
    /// Phase → CPU seconds of the emulator with its engines.
    pub cpu: BTreeMap<String, f64>,
    /// Bytes of the list answer.
    pub list_bytes: usize,
    pub databases_after_delete: usize,
}

struct Phases {
    phase: Phase,
    sampler: TreeSampler,
    pid: u32,
    current: Option<(String, Instant, f64)>,
    durations: BTreeMap<String, f64>,
    cpu: BTreeMap<String, f64>,
}

impl Phases {
    fn enter(&mut self, name: Option<&str>) {
        self.sampler.sample();
        let cpu = tree_cpu_seconds(self.pid);
        if let Some((n, started, cpu0)) = self.current.take() {
            self.durations
                .insert(n.clone(), started.elapsed().as_secs_f64());
            self.cpu.insert(n, cpu - cpu0);
        }
        if let Some(name) = name {
            self.phase.set(name);
            self.current = Some((name.to_string(), Instant::now(), cpu));
        } else {
            self.phase.set("after");
        }
    }
}

pub async fn run(bins: &Binaries, cfg: EmulatorConfig) -> anyhow::Result<EmulatorResult> {
    eprintln!("bench: emulator with N={} databases: {cfg:?}", cfg.n);
    let emulator = Arc::new(Emulator::start(&bins.emulator, 0).await?);
    let phase = Phase::default();
    let mut phases = Phases {
        sampler: TreeSampler::start(emulator.pid(), phase.clone()),
        phase,
        pid: emulator.pid(),
        current: None,
        durations: BTreeMap::new(),
        cpu: BTreeMap::new(),
    };
    let ca = std::fs::read(emulator.ca_file()).context("the emulator's CA")?;
    let data = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&ca)?)
        .build()?;

    phases.enter(Some("create"));
    let created: Vec<anyhow::Result<Value>> = futures::stream::iter(0..cfg.n)
        .map(|i| {
            let emulator = emulator.clone();
            async move {
                let body = json!({"database_name": format!("bench-{i}"), "region": "global", "primary_region": "us-east-1"});
                let (status, db) = emulator
                    .developer_api(reqwest::Method::POST, "/v2/redis/database", Some(body))
                    .await?;
                if status != 200 {
                    bail!("create: {status}: {db}");
                }
                Ok(db)
            }
        })
        .buffer_unordered(cfg.parallel.max(1))
        .collect()
        .await;
    let dbs: Vec<Value> = created.into_iter().collect::<anyhow::Result<_>>()?;
    eprintln!("bench: {} databases created", dbs.len());

    phases.enter(Some("idle"));
    tokio::time::sleep(Duration::from_secs(3)).await;

    phases.enter(Some("list"));
    let (status, list) = emulator
        .developer_api(reqwest::Method::GET, "/v2/redis/databases", None)
        .await?;
    if status != 200 || list.as_array().map(Vec::len) != Some(cfg.n) {
        bail!(
            "list: {status}, {} databases",
            list.as_array().map_or(0, Vec::len)
        );
    }
    let list_bytes = list.to_string().len();

    phases.enter(Some("probe"));
    for db in dbs.iter().take(cfg.probe) {
        let url = format!(
            "https://{}/pipeline",
            db["endpoint"].as_str().unwrap_or_default()
        );
        let r = data
            .post(&url)
            .bearer_auth(db["rest_token"].as_str().unwrap_or_default())
            .json(&json!([
                ["PING"],
                ["SET", "k", "v"],
                ["GET", "k"],
                ["INFO", "memory"]
            ]))
            .send()
            .await
            .with_context(|| format!("POST {url}"))?;
        if !r.status().is_success() {
            bail!(
                "probe: {}: {}",
                r.status(),
                r.text().await.unwrap_or_default()
            );
        }
    }

    phases.enter(Some("settled"));
    tokio::time::sleep(Duration::from_secs(3)).await;

    phases.enter(Some("delete"));
    let deleted: Vec<anyhow::Result<()>> = futures::stream::iter(dbs.iter())
        .map(|db| {
            let emulator = emulator.clone();
            let id = db["database_id"].as_str().unwrap_or_default().to_string();
            async move {
                let (status, body) = emulator
                    .developer_api(
                        reqwest::Method::DELETE,
                        &format!("/v2/redis/database/{id}"),
                        None,
                    )
                    .await?;
                if status != 200 {
                    bail!("delete: {status}: {body}");
                }
                Ok(())
            }
        })
        .buffer_unordered(cfg.parallel.max(1))
        .collect()
        .await;
    deleted.into_iter().collect::<anyhow::Result<Vec<()>>>()?;
    phases.enter(None);
    let databases_after_delete = emulator.databases().await?.len();
    Ok(EmulatorResult {
        config: cfg,
        durations: phases.durations,
        memory: phases.sampler.phases(),
        cpu: phases.cpu,
        list_bytes,
        databases_after_delete,
    })
}

/// The Markdown table of emulator runs.
pub fn markdown(results: &[EmulatorResult]) -> String {
    let mib = crate::stats::mib;
    let mut s = String::from("| |");
    for r in results {
        s.push_str(&format!(" N = {} |", r.config.n));
    }
    s.push_str("\n|---|");
    for _ in results {
        s.push_str("---|");
    }
    s.push('\n');
    let mut row = |name: &str, f: &dyn Fn(&EmulatorResult) -> String| {
        s.push_str(&format!("| {name} |"));
        for r in results {
            s.push_str(&format!(" {} |", f(r)));
        }
        s.push('\n');
    };
    let secs = |r: &EmulatorResult, p: &str| r.durations.get(p).copied().unwrap_or(0.0);
    let cpu = |r: &EmulatorResult, p: &str| r.cpu.get(p).copied().unwrap_or(0.0);
    let mem = |r: &EmulatorResult, p: &str| r.memory.get(p).cloned().unwrap_or_default();
    row("Create all (Developer API)", &|r| {
        format!("{:.1} s, CPU {:.1} s", secs(r, "create"), cpu(r, "create"))
    });
    row(
        "RSS with every database created: emulator / with engines (engines)",
        &|r| {
            let m = mem(r, "idle");
            format!(
                "{:.1} / {:.1} MiB ({})",
                mib(m.last_rss),
                mib(m.last_total_rss),
                m.last_children
            )
        },
    );
    row("List (one call): time, answer size", &|r| {
        format!(
            "{:.2} s, {:.1} MiB",
            secs(r, "list"),
            mib(r.list_bytes as u64)
        )
    });
    row("Data plane used on", &|r| {
        format!("{} databases, one after the other", r.config.probe)
    });
    row("Probe: time, CPU with engines", &|r| {
        format!("{:.1} s, {:.1} s", secs(r, "probe"), cpu(r, "probe"))
    });
    row(
        "Probe: peak RSS emulator / with engines (engines at once)",
        &|r| {
            let m = mem(r, "probe");
            format!(
                "{:.1} / {:.1} MiB ({})",
                mib(m.peak_rss),
                mib(m.peak_total_rss),
                m.peak_children
            )
        },
    );
    row(
        "After the probe: RSS emulator / with engines (engines)",
        &|r| {
            let m = mem(r, "settled");
            format!(
                "{:.1} / {:.1} MiB ({})",
                mib(m.last_rss),
                mib(m.last_total_rss),
                m.last_children
            )
        },
    );
    row("Delete all", &|r| {
        format!("{:.1} s, CPU {:.1} s", secs(r, "delete"), cpu(r, "delete"))
    });
    row("Databases left", &|r| r.databases_after_delete.to_string());
    s
}
