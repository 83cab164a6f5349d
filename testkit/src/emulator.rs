//! The Upstash emulator as a child process, and its control API.

use std::{path::PathBuf, time::Duration};

use serde_json::{Value, json};

use crate::process::{Process, ProcessBuilder, cargo_bin};

/// Account the emulator accepts in tests.
pub const EMAIL: &str = "ops@example.com";
/// API key of [`EMAIL`].
pub const API_KEY: &str = "test-api-key-4d1c9e";

/// A running `upstash-emulator` with one account ([`EMAIL`] / [`API_KEY`]).
pub struct Emulator {
    process: Process,
    api_url: String,
    data_url: String,
    ca_file: PathBuf,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Emulator {
    /// Starts an emulator on free loopback ports.
    pub async fn start() -> Self {
        Self::start_with(&[]).await
    }

    /// Starts an emulator with extra command-line arguments (e.g. `--latency-ms 50`).
    pub async fn start_with(extra: &[&str]) -> Self {
        let bin = cargo_bin("upstash-emulator");
        Self::start_from(Process::builder("upstash-emulator", bin).args(extra)).await
    }

    /// Starts the emulator `builder` describes (a program, a name, extra arguments and
    /// environment), adding the loopback addresses, the test account and the CA output.
    pub async fn start_from(builder: ProcessBuilder) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let ca_file = dir.path().join("upstash-ca.pem");
        let accounts = format!("{EMAIL}:{API_KEY}");
        let mut process = builder
            .args([
                "--api-addr",
                "127.0.0.1:0",
                "--data-addr",
                "127.0.0.1:0",
                "--accounts",
                &accounts,
            ])
            .arg("--ca-out")
            .arg(&ca_file)
            .spawn()
            .expect("starting upstash-emulator");
        let logs = process
            .wait_for_log("\"ready\":true", Duration::from_secs(30))
            .await;
        let ready: Value = logs
            .lines()
            .find(|l| l.contains("\"ready\":true"))
            .and_then(|l| serde_json::from_str(l.trim()).ok())
            .expect("the emulator's ready line is JSON");
        Self {
            api_url: ready["api_url"].as_str().expect("api_url").to_string(),
            data_url: ready["data_url"].as_str().expect("data_url").to_string(),
            ca_file,
            http: reqwest::Client::new(),
            process,
            _dir: dir,
        }
    }

    /// Base URL of the Developer API (`UPSTASH_API_URL`-style).
    pub fn api_url(&self) -> &str {
        &self.api_url
    }

    /// Base URL of the data plane.
    pub fn data_url(&self) -> &str {
        &self.data_url
    }

    /// PEM file of the CA that signs the data plane's certificate.
    pub fn ca_file(&self) -> &std::path::Path {
        &self.ca_file
    }

    /// The emulator's process (for its logs).
    pub fn process(&mut self) -> &mut Process {
        &mut self.process
    }

    /// The emulator's process id.
    pub fn pid(&self) -> u32 {
        self.process.id()
    }

    /// The emulator's log file.
    pub fn log_path(&self) -> &std::path::Path {
        self.process.log_path()
    }

    async fn control(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}/_emulator/{path}", self.api_url);
        let mut request = self.http.request(method.clone(), &url);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        assert!(status.is_success(), "{method} {url}: {status}: {text}");
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }

    /// Every database of every account (archived ones too), with credentials, the read-only
    /// Redis password (`read_only_password`, for the `default_ro` user) and `archived`.
    pub async fn databases(&self) -> Vec<Value> {
        let v = self.control(reqwest::Method::GET, "databases", None).await;
        v.as_array().cloned().unwrap_or_default()
    }

    /// One database by id, with credentials.
    pub async fn database(&self, id: &str) -> Option<Value> {
        self.databases()
            .await
            .into_iter()
            .find(|d| d["database_id"] == id)
    }

    /// The call log (Developer API and data plane).
    pub async fn calls(&self) -> Vec<Value> {
        let v = self
            .control(reqwest::Method::GET, "calls?plane=api", None)
            .await;
        v.as_array().cloned().unwrap_or_default()
    }

    /// Developer API calls whose operation name is `endpoint`.
    pub async fn calls_to(&self, endpoint: &str) -> Vec<Value> {
        self.calls()
            .await
            .into_iter()
            .filter(|c| c["endpoint"] == endpoint)
            .collect()
    }

    /// Clears the call log.
    pub async fn clear_calls(&self) {
        self.control(reqwest::Method::DELETE, "calls", None).await;
    }

    /// Adds a fault rule (see the emulator's README) and returns its id.
    pub async fn add_fault(&self, rule: Value) -> String {
        let v = self
            .control(reqwest::Method::POST, "faults", Some(rule))
            .await;
        v["id"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| v["id"].to_string())
    }

    /// Removes every fault rule.
    pub async fn clear_faults(&self) {
        self.control(reqwest::Method::DELETE, "faults", None).await;
    }

    /// Adds an account (for tests of per-namespace and per-instance credentials).
    pub async fn add_account(&self, email: &str, api_key: &str) {
        self.control(
            reqwest::Method::POST,
            "accounts",
            Some(json!({"email": email, "api_key": api_key})),
        )
        .await;
    }

    /// Adds an API key of `email` that acts for the team `team` (a name, created when unknown,
    /// or an id); the key sees the team's databases, which carry the team id as `customer_id`.
    /// Returns the team id.
    pub async fn add_team_key(&self, email: &str, api_key: &str, team: &str) -> String {
        let v = self
            .control(
                reqwest::Method::POST,
                "accounts",
                Some(json!({"email": email, "api_key": api_key, "team": team})),
            )
            .await;
        v["team_id"].as_str().expect("team_id").to_string()
    }

    /// Adds a read-only API key of `email`: its mutating calls get "Readonly API key".
    pub async fn add_read_only_key(&self, email: &str, api_key: &str) {
        self.control(
            reqwest::Method::POST,
            "accounts",
            Some(json!({"email": email, "api_key": api_key, "readonly": true})),
        )
        .await;
    }

    /// Lowers a database's data limit (`None`: back to the plan's), e.g. to fill it in a test:
    /// past it, writes get Redis's OOM error, or keys are evicted with eviction on.
    pub async fn set_data_limit(&self, id: &str, bytes: Option<u64>) {
        self.control(
            reqwest::Method::PATCH,
            &format!("databases/{id}"),
            Some(json!({"max_data_size_bytes": bytes})),
        )
        .await;
    }

    /// Sets a database's state (`active`, `suspended`, `passive`).
    pub async fn set_state(&self, id: &str, state: &str) {
        self.control(
            reqwest::Method::PATCH,
            &format!("databases/{id}"),
            Some(json!({"state": state})),
        )
        .await;
    }

    /// Archives a free database as Upstash does after 30 idle days: it disappears from the
    /// Developer API and the data plane; a backup of its data is kept.
    pub async fn archive_database(&self, id: &str) {
        self.control(
            reqwest::Method::POST,
            &format!("databases/{id}/archive"),
            None,
        )
        .await;
    }

    /// Brings an archived database back from its archival backup.
    pub async fn unarchive_database(&self, id: &str) {
        self.control(
            reqwest::Method::POST,
            &format!("databases/{id}/unarchive"),
            None,
        )
        .await;
    }

    /// Merges stats overrides into a database's stats.
    pub async fn set_stats(&self, id: &str, stats: Value) {
        self.control(
            reqwest::Method::PATCH,
            &format!("databases/{id}/stats"),
            Some(stats),
        )
        .await;
    }

    /// Calls the Developer API as the test account, like the Upstash console would.
    pub async fn developer_api(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        self.developer_api_as(EMAIL, API_KEY, method, path, body)
            .await
    }

    /// Calls the Developer API with another key (a team key, a read-only key, ...).
    pub async fn developer_api_as(
        &self,
        email: &str,
        api_key: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let url = format!("{}{path}", self.api_url);
        let mut request = self
            .http
            .request(method, &url)
            .basic_auth(email, Some(api_key));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("developer API request");
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(json!(text)))
    }
}
