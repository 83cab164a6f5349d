//! The operator as a child process, configured for a test namespace and an emulator.

use std::{net::TcpListener, path::Path, time::Duration};

use k8s_openapi::{ByteString, api::core::v1::Secret};
use kube::{
    Api, Client,
    api::{ObjectMeta, PostParams},
};

use crate::{
    emulator::{API_KEY, EMAIL, Emulator},
    process::{Process, cargo_bin},
};

/// Name of the credentials Secret [`write_credentials`] creates.
pub const CREDENTIALS_SECRET: &str = "upstash-credentials";

/// Creates the Upstash credentials Secret for the emulator's test account in `namespace`.
pub async fn write_credentials(client: &Client, namespace: &str) {
    write_credentials_with(client, namespace, CREDENTIALS_SECRET, EMAIL, API_KEY).await;
}

/// Creates a credentials Secret with the given values.
pub async fn write_credentials_with(
    client: &Client,
    namespace: &str,
    name: &str,
    email: &str,
    api_key: &str,
) {
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            ..Default::default()
        },
        data: Some(
            [("email", email), ("apiKey", api_key)]
                .into_iter()
                .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
                .collect(),
        ),
        ..Default::default()
    };
    Api::<Secret>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), &secret)
        .await
        .unwrap_or_else(|e| panic!("creating Secret {namespace}/{name}: {e}"));
}

/// A running operator.
pub struct Operator {
    process: Process,
    http: String,
}

/// How to start an operator.
pub struct OperatorConfig<'a> {
    /// Kubeconfig the operator uses.
    pub kubeconfig: &'a Path,
    /// The emulator it talks to.
    pub emulator: &'a Emulator,
    /// Namespace watched and holding the credentials Secret.
    pub namespace: &'a str,
    /// Extra arguments.
    pub args: Vec<String>,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl Operator {
    /// Starts the operator for `config.namespace` and waits until `/readyz` answers 200.
    pub async fn start(config: OperatorConfig<'_>) -> Self {
        let port = free_port();
        let http = format!("127.0.0.1:{port}");
        let mut process = Process::builder("upstash-operator", cargo_bin("upstash-operator"))
            .env("KUBECONFIG", config.kubeconfig)
            .env_remove("RUST_LOG")
            .args(["--upstash-api-url", config.emulator.api_url()])
            .arg("--upstash-ca-file")
            .arg(config.emulator.ca_file())
            .args(["--watch-namespaces", config.namespace])
            .args([
                "--credentials-secret",
                &format!("{}/{CREDENTIALS_SECRET}", config.namespace),
            ])
            .args(["--http-addr", &http])
            .args([
                "--log-format",
                "json",
                "--log-level",
                "info,upstash_operator=debug",
            ])
            .args(["--identity", &format!("operator-{port}")])
            .args(&config.args)
            .spawn()
            .expect("starting upstash-operator");
        let url = format!("http://{http}/readyz");
        let started = std::time::Instant::now();
        loop {
            if let Ok(r) = reqwest::get(&url).await
                && r.status().is_success()
            {
                break;
            }
            if let Some(status) = process.try_wait() {
                panic!("upstash-operator exited ({status}):\n{}", process.logs());
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "upstash-operator not ready within 60 s:\n{}",
                process.logs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Self { process, http }
    }

    /// `host:port` of the operator's HTTP server.
    pub fn http_addr(&self) -> &str {
        &self.http
    }

    /// GETs a path of the operator's HTTP server and returns status and body.
    pub async fn get(&self, path: &str) -> (u16, String) {
        let r = reqwest::get(format!("http://{}{path}", self.http))
            .await
            .expect("operator HTTP");
        (r.status().as_u16(), r.text().await.unwrap_or_default())
    }

    /// The text of `/metrics`.
    ///
    /// # Panics
    ///
    /// When the operator does not answer 200.
    pub async fn metrics(&self) -> String {
        let (code, text) = self.get("/metrics").await;
        assert_eq!(code, 200, "GET /metrics: {text}");
        text
    }

    /// How many reconciles of CacheInstance `namespace/name` this operator started
    /// (`upstash_cache_reconciles_total`; 0 before the first).
    pub async fn reconciles(&self, namespace: &str, name: &str) -> u64 {
        let labels = format!("namespace=\"{namespace}\",name=\"{name}\"");
        crate::witness::metric_value(
            &self.metrics().await,
            "upstash_cache_reconciles_total",
            &labels,
        )
        .unwrap_or(0.0) as u64
    }

    /// A witness that the operator looked at CacheInstance `namespace/name`: waits until it has
    /// started at least `n` more reconciles of it than `mark` (an earlier
    /// [`Operator::reconciles`]), and returns the count then. Two prove that one whole
    /// reconcile ran after the mark (the second starts only after the first ended).
    pub async fn wait_for_reconciles(&self, namespace: &str, name: &str, mark: u64, n: u64) -> u64 {
        let what = format!("{n} reconcile(s) of {namespace}/{name}");
        crate::witness::wait_for_growth(&what, Duration::from_secs(60), mark, n, || async {
            Ok::<_, std::convert::Infallible>(self.reconciles(namespace, name).await)
        })
        .await
    }

    /// The operator's process (logs, kill, stop).
    pub fn process(&mut self) -> &mut Process {
        &mut self.process
    }

    /// Everything the operator logged.
    pub fn logs(&self) -> String {
        self.process.logs()
    }
}
