//! The processes a run needs: the Upstash emulator and the operator, both release builds started
//! from explicit paths, with their output in `$CARGO_TARGET_DIR/test-logs/` (testkit's
//! [`Process`]).

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicU32, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use serde_json::Value;
use testkit::Process;

/// Where the release binaries are.
#[derive(Debug, Clone)]
pub struct Binaries {
    pub operator: PathBuf,
    pub emulator: PathBuf,
}

impl Binaries {
    /// `dir` or, by default, the directory of this executable (`target/release/`).
    pub fn locate(dir: Option<&Path>) -> anyhow::Result<Self> {
        let dir = match dir {
            Some(d) => d.to_path_buf(),
            None => std::env::current_exe()?
                .parent()
                .context("the executable has a directory")?
                .to_path_buf(),
        };
        let found = Self {
            operator: dir.join("upstash-operator"),
            emulator: dir.join("upstash-emulator"),
        };
        for bin in [&found.operator, &found.emulator] {
            if !bin.is_file() {
                bail!(
                    "{} is missing: build it with `cargo build --release -p upstash-operator -p upstash-emulator` (scripts/bench.sh does)",
                    bin.display()
                );
            }
        }
        Ok(found)
    }
}

/// A free loopback port.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A running emulator (started as testkit starts it, from the release binary) and a client for
/// its control API that reports failures as errors instead of panicking.
pub struct Emulator {
    inner: testkit::emulator::Emulator,
    http: reqwest::Client,
}

impl Emulator {
    /// Starts the emulator with `latency_ms` added to every Developer API call.
    pub async fn start(bin: &Path, latency_ms: u64) -> anyhow::Result<Self> {
        let latency = latency_ms.to_string();
        let inner = testkit::emulator::Emulator::start_from(
            Process::builder("bench-emulator", bin)
                .env("RUST_LOG", "warn")
                .args(["--latency-ms", &latency]),
        )
        .await;
        Ok(Self {
            inner,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(120))
                .build()?,
        })
    }

    pub fn api_url(&self) -> &str {
        self.inner.api_url()
    }

    pub fn ca_file(&self) -> &Path {
        self.inner.ca_file()
    }

    pub fn pid(&self) -> u32 {
        self.inner.pid()
    }

    pub fn log_path(&self) -> &Path {
        self.inner.log_path()
    }

    async fn control(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let url = format!("{}/_emulator/{path}", self.api_url());
        let mut request = self.http.request(method.clone(), &url);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("{method} {url}"))?;
        let status = response.status();
        let text = response.text().await?;
        if !status.is_success() {
            bail!("{method} {url}: {status}: {text}");
        }
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// A Developer API call as the test account: `(status, body)`.
    pub async fn developer_api(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<(u16, Value)> {
        Ok(self.inner.developer_api(method, path, body).await)
    }

    /// Every database of every account, with credentials.
    pub async fn databases(&self) -> anyhow::Result<Vec<Value>> {
        Ok(self
            .control(reqwest::Method::GET, "databases", None)
            .await?
            .as_array()
            .cloned()
            .unwrap_or_default())
    }

    /// Call-log entries after sequence number `since` (both planes).
    pub async fn calls_since(&self, since: u64) -> anyhow::Result<Vec<Value>> {
        Ok(self
            .control(reqwest::Method::GET, &format!("calls?since={since}"), None)
            .await?
            .as_array()
            .cloned()
            .unwrap_or_default())
    }

    /// Adds a fault rule; returns it as stored.
    pub async fn add_fault(&self, rule: Value) -> anyhow::Result<Value> {
        self.control(reqwest::Method::POST, "faults", Some(rule))
            .await
    }

    /// The fault rules with their `applied` counts.
    pub async fn faults(&self) -> anyhow::Result<Vec<Value>> {
        Ok(self
            .control(reqwest::Method::GET, "faults", None)
            .await?
            .as_array()
            .cloned()
            .unwrap_or_default())
    }

    pub async fn clear_faults(&self) -> anyhow::Result<()> {
        self.control(reqwest::Method::DELETE, "faults", None)
            .await
            .map(|_| ())
    }
}

/// How to start the operator.
#[derive(Debug, Clone)]
pub struct OperatorSpec {
    pub bin: PathBuf,
    pub kubeconfig: PathBuf,
    pub api_url: String,
    pub ca_file: PathBuf,
    /// Namespace holding the credentials Secret (the operator watches all namespaces).
    pub namespace: String,
    /// Flags for the run (`--concurrency`, `--upstash-rate-limit`, ...).
    pub args: Vec<String>,
}

/// The operator process; survives kills and restarts (its pid is shared with the samplers).
pub struct Operator {
    spec: OperatorSpec,
    process: Option<Process>,
    http: String,
    pid: Arc<AtomicU32>,
    /// Logs of every process this operator had, oldest first.
    pub logs: Vec<PathBuf>,
    pub starts: u32,
}

impl Operator {
    /// Starts the operator and waits until `/readyz` answers 200.
    pub async fn start(spec: OperatorSpec) -> anyhow::Result<Self> {
        let mut op = Self {
            spec,
            process: None,
            http: String::new(),
            pid: Arc::new(AtomicU32::new(0)),
            logs: Vec::new(),
            starts: 0,
        };
        op.spawn()?;
        op.wait_ready(Duration::from_secs(60)).await?;
        Ok(op)
    }

    /// The current process id (0 while none runs), shared.
    pub fn pid_handle(&self) -> Arc<AtomicU32> {
        self.pid.clone()
    }

    /// Replaces the run flags for the next start.
    pub fn set_args(&mut self, args: Vec<String>) {
        self.spec.args = args;
    }

    /// Starts a process without waiting for readiness.
    pub fn spawn(&mut self) -> anyhow::Result<()> {
        let port = free_port();
        self.http = format!("127.0.0.1:{port}");
        let s = &self.spec;
        let process = Process::builder("bench-operator", &s.bin)
            .env("KUBECONFIG", &s.kubeconfig)
            .env_remove("RUST_LOG")
            .args(["--upstash-api-url", &s.api_url])
            .arg("--upstash-ca-file")
            .arg(&s.ca_file)
            .args([
                "--credentials-secret",
                &format!("{}/{}", s.namespace, testkit::operator::CREDENTIALS_SECRET),
            ])
            .args(["--http-addr", &self.http])
            .args(["--log-format", "json", "--log-level", "info"])
            .args(["--identity", &format!("bench-operator-{port}")])
            .args(&s.args)
            .spawn()?;
        self.pid.store(process.id(), Ordering::Relaxed);
        self.logs.push(process.log_path().to_path_buf());
        self.process = Some(process);
        self.starts += 1;
        Ok(())
    }

    /// Waits until `/readyz` answers 200.
    pub async fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let url = format!("http://{}/readyz", self.http);
        let started = Instant::now();
        loop {
            if let Ok(r) = reqwest::get(&url).await
                && r.status().is_success()
            {
                return Ok(());
            }
            if let Some(p) = self.process.as_mut()
                && let Some(status) = p.try_wait()
            {
                bail!(
                    "upstash-operator exited ({status}); log {}",
                    p.log_path().display()
                );
            }
            if started.elapsed() > timeout {
                bail!("upstash-operator not ready within {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGKILL, as a crash.
    pub fn kill(&mut self) {
        if let Some(mut p) = self.process.take() {
            p.kill();
        }
        self.pid.store(0, Ordering::Relaxed);
    }

    /// SIGTERM and wait (graceful shutdown).
    pub fn stop(&mut self) {
        if let Some(mut p) = self.process.take() {
            p.stop();
        }
        self.pid.store(0, Ordering::Relaxed);
    }

    /// The operator's `/metrics` text.
    pub async fn metrics(&self) -> Option<String> {
        let r = reqwest::get(format!("http://{}/metrics", self.http))
            .await
            .ok()?;
        r.text().await.ok()
    }

    /// The operator's `/metrics` as series (empty when it does not answer within 10 s).
    pub async fn series(&self) -> crate::common::Series {
        match tokio::time::timeout(Duration::from_secs(10), self.metrics()).await {
            Ok(Some(text)) => crate::common::parse_series(&text),
            _ => Default::default(),
        }
    }

    /// Whether the process is still running (it exits by itself only on fatal errors).
    pub fn running(&mut self) -> bool {
        self.process
            .as_mut()
            .is_some_and(|p| p.try_wait().is_none())
    }
}

/// The control plane's processes (children of this process): testenv (etcd + kube-apiserver)
/// and its kube-controller-manager.
pub fn control_plane_pids() -> Vec<u32> {
    let me = std::process::id();
    let mut out = Vec::new();
    let mut parents = vec![me];
    // Two levels: testenv is our child, kube-controller-manager testenv's.
    for _ in 0..2 {
        let mut next = Vec::new();
        for pid in crate::observe::all_pids() {
            if let Some((comm, ppid)) = crate::observe::comm_and_ppid(pid)
                && parents.contains(&ppid)
                && comm.starts_with("testenv")
            {
                out.push(pid);
                next.push(pid);
            }
        }
        parents = next;
    }
    out
}
