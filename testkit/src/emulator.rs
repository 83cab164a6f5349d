//! The Upstash emulator as a child process, and its control API.

use std::{path::PathBuf, time::Duration};

use serde_json::{Value, json};

use crate::process::{Process, ProcessBuilder, cargo_bin};

/// Account the emulator accepts in tests.
pub const EMAIL: &str = "ops@example.com";
/// API key of [`EMAIL`].
pub const API_KEY: &str = "test-api-key-4d1c9e";

/// How long a witness waits by default.
pub const WITNESS_TIMEOUT: Duration = Duration::from_secs(60);

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

    /// The Developer API's part of the call log.
    ///
    /// # Panics
    ///
    /// When the answer is not a list of calls: a log that cannot be read is never taken for an
    /// empty one.
    pub async fn calls(&self) -> Vec<Value> {
        self.query_calls("plane=api").await
    }

    /// Call log entries matching `query` (the control API's filters: `since`, `endpoint`,
    /// `plane`, `database_id`).
    async fn query_calls(&self, query: &str) -> Vec<Value> {
        let v = self
            .control(reqwest::Method::GET, &format!("calls?{query}"), None)
            .await;
        let Value::Array(calls) = v else {
            panic!("the call log ({query}) is not a list: {v}");
        };
        for call in &calls {
            assert!(
                call["seq"].is_u64() && call["endpoint"].is_string() && call["method"].is_string(),
                "an entry of the call log without seq, endpoint or method: {call}"
            );
        }
        calls
    }

    /// A mark in the call log: the sequence number of the latest call (0 when the log is
    /// empty, which is before every call still to come). See [`Emulator::wait_for_calls`].
    pub async fn mark(&self) -> u64 {
        self.query_calls("")
            .await
            .iter()
            .filter_map(|c| c["seq"].as_u64())
            .max()
            .unwrap_or(0)
    }

    /// Developer API calls to `endpoint` (for `database_id`, if given) after `mark`.
    pub async fn calls_since(
        &self,
        mark: u64,
        endpoint: &str,
        database_id: Option<&str>,
    ) -> Vec<Value> {
        let mut query = format!("plane=api&since={mark}&endpoint={endpoint}");
        if let Some(id) = database_id {
            query.push_str(&format!("&database_id={id}"));
        }
        self.query_calls(&query).await
    }

    /// Every data-plane call (REST and Redis protocol) after `mark`.
    pub async fn data_calls_since(&self, mark: u64) -> Vec<Value> {
        self.query_calls(&format!("plane=data&since={mark}")).await
    }

    /// Every Developer API call after `mark`.
    pub async fn all_calls_since(&self, mark: u64) -> Vec<Value> {
        self.query_calls(&format!("plane=api&since={mark}")).await
    }

    /// The operation names of the Developer API calls after `mark` that change something
    /// (every method but GET).
    pub async fn mutating_since(&self, mark: u64) -> Vec<String> {
        self.all_calls_since(mark)
            .await
            .iter()
            .filter(|c| c["method"] != "GET")
            .map(|c| c["endpoint"].as_str().unwrap_or_default().to_string())
            .collect()
    }

    /// A witness: waits until the call log shows at least `n` calls to `endpoint` (for
    /// `database_id`, if given) after `mark`, and returns a new mark. Within `timeout`.
    ///
    /// # Panics
    ///
    /// When they do not come, naming what was awaited and how many came.
    pub async fn wait_for_calls_within(
        &self,
        endpoint: &str,
        database_id: Option<&str>,
        mark: u64,
        n: u64,
        timeout: Duration,
    ) -> u64 {
        let what = match database_id {
            Some(id) => format!("{n} `{endpoint}` call(s) for database {id} after call #{mark}"),
            None => format!("{n} `{endpoint}` call(s) after call #{mark}"),
        };
        crate::witness::wait_for_growth(&what, timeout, 0, n, || async {
            Ok::<_, std::convert::Infallible>(
                self.calls_since(mark, endpoint, database_id).await.len() as u64,
            )
        })
        .await;
        self.mark().await
    }

    /// [`Emulator::wait_for_calls_within`] with a timeout of 60 s.
    pub async fn wait_for_calls(
        &self,
        endpoint: &str,
        database_id: Option<&str>,
        mark: u64,
        n: u64,
    ) -> u64 {
        self.wait_for_calls_within(endpoint, database_id, mark, n, WITNESS_TIMEOUT)
            .await
    }

    /// A witness that the operator looked at database `id`: waits until it has read it (`get`)
    /// at least `n` times after `mark`, and returns a new mark. The operator reads a database
    /// once per pass and never works on one object twice at once, so three reads prove that a
    /// whole pass ran that started after the mark: the second read's pass began after the first
    /// one's ended, and ended before the third began. A test that asserts that a pass changed
    /// nothing waits for them first.
    pub async fn wait_for_reads(&self, id: &str, mark: u64, n: u64) -> u64 {
        self.wait_for_calls("get", Some(id), mark, n).await
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

    /// A change made in the Upstash console by `actor` (with the API key named `key_name`, if
    /// given): the Developer API call `method` `path` with `body` on the database's account,
    /// recorded in the audit log, not in the call log. Returns the Developer API's answer.
    pub async fn console(
        &self,
        actor: &str,
        key_name: Option<&str>,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Value {
        self.control(
            reqwest::Method::POST,
            "console",
            Some(json!({"actor": actor, "key_name": key_name, "method": method, "path": path, "body": body})),
        )
        .await
    }

    /// Switches Upstash's Credential Protection of a database on or off, as its console does:
    /// while on, a Get answers no credentials; turning it off issues new ones.
    pub async fn set_credential_protection(&self, id: &str, on: bool) {
        self.control(
            reqwest::Method::PATCH,
            &format!("databases/{id}"),
            Some(json!({"credential_protection": on})),
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

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;

    /// The panic message of a witness that is expected to fail.
    async fn failure(witness: impl std::future::Future<Output = u64>) -> String {
        let panic = std::panic::AssertUnwindSafe(witness)
            .catch_unwind()
            .await
            .expect_err("the witness must fail");
        panic.downcast::<String>().map(|m| *m).unwrap_or_default()
    }

    /// A witness that waits for reads nobody makes fails; the reads, once made, satisfy it.
    #[tokio::test]
    async fn waiting_for_reads_fails_when_nothing_reads() {
        let emulator = Emulator::start().await;
        let (code, db) = emulator
            .developer_api(
                reqwest::Method::POST,
                "/v2/redis/database",
                Some(json!({"database_name": "witness", "platform": "aws",
                            "primary_region": "us-east-1", "plan": "payg"})),
            )
            .await;
        assert_eq!(code, 200, "{db}");
        let id = db["database_id"].as_str().unwrap().to_string();
        let mark = emulator.mark().await;
        assert!(mark >= 1, "the create is in the log");
        let short = Duration::from_millis(600);

        // Nothing reads.
        let message =
            failure(emulator.wait_for_calls_within("get", Some(&id), mark, 2, short)).await;
        assert!(
            message.contains(&format!("waiting for 2 `get` call(s) for database {id}"))
                && message.contains("moved by 0 of 2"),
            "{message}"
        );

        // One read is not two.
        let path = format!("/v2/redis/database/{id}");
        let read = || emulator.developer_api(reqwest::Method::GET, &path, None);
        assert_eq!(read().await.0, 200);
        let message =
            failure(emulator.wait_for_calls_within("get", Some(&id), mark, 2, short)).await;
        assert!(message.contains("moved by 1 of 2"), "{message}");
        // Reads of another database do not count.
        let message =
            failure(emulator.wait_for_calls_within("get", Some("db-other"), mark, 1, short)).await;
        assert!(message.contains("moved by 0 of 1"), "{message}");

        // The second read satisfies it; nothing is logged after the new mark.
        assert_eq!(read().await.0, 200);
        let after = emulator.wait_for_reads(&id, mark, 2).await;
        assert!(after >= mark + 2, "{after}");
        assert!(
            emulator
                .calls_since(after, "get", Some(&id))
                .await
                .is_empty()
        );
    }
}
