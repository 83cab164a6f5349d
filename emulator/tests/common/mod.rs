//! Test helpers: an in-process emulator, HTTP clients that trust its CA, and request shortcuts.
#![allow(dead_code)]

use reqwest::{Client, Method, StatusCode};
use serde_json::{Value, json};
use upstash_emulator::{Config, Emulator, RunningEmulator};

pub const EMAIL: &str = "owner@example.com";
pub const KEY: &str = "owner-api-key";
pub const EMAIL2: &str = "other@example.com";
pub const KEY2: &str = "other-api-key";

pub struct Env {
    pub emu: RunningEmulator,
    pub http: Client,
    pub api: String,
}

pub fn config() -> Config {
    Config::default()
        .with_account(EMAIL, KEY)
        .with_account(EMAIL2, KEY2)
}

pub async fn start() -> Env {
    start_with(config()).await
}

pub async fn start_with(cfg: Config) -> Env {
    let emu = Emulator::start(cfg).await.expect("emulator starts");
    let http = client_for(emu.ca_pem());
    let api = emu.api_url();
    Env { emu, http, api }
}

/// A client that trusts only the emulator's CA.
pub fn client_for(ca_pem: &str) -> Client {
    Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap())
        .build()
        .unwrap()
}

pub async fn body_json(r: reqwest::Response) -> (StatusCode, Value) {
    let status = r.status();
    let text = r.text().await.unwrap();
    let v = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON ({status}): {text:?}"));
    (status, v)
}

impl Env {
    pub async fn call_as(
        &self,
        who: (&str, &str),
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self
            .http
            .request(method, format!("{}{}", self.api, path))
            .basic_auth(who.0, Some(who.1));
        if let Some(b) = body {
            req = req.json(&b);
        }
        body_json(req.send().await.unwrap()).await
    }

    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        self.call_as((EMAIL, KEY), method, path, body).await
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, path, Some(body)).await
    }

    /// Creates a database (CLI-style body) and returns its object.
    pub async fn create(&self, name: &str) -> Value {
        let (s, v) = self
            .post(
                "/v2/redis/database",
                json!({"database_name": name, "region": "global", "primary_region": "us-east-1"}),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        v
    }

    pub fn rest_url(db: &Value) -> String {
        format!("https://{}", db["endpoint"].as_str().unwrap())
    }

    /// One JSON-array command with the database's full token.
    pub async fn data(&self, db: &Value, cmd: Value) -> (StatusCode, Value) {
        self.data_with(db, "rest_token", "/", cmd).await
    }

    pub async fn data_with(
        &self,
        db: &Value,
        token_field: &str,
        path: &str,
        body: Value,
    ) -> (StatusCode, Value) {
        let r = self
            .http
            .post(format!("{}{}", Self::rest_url(db), path))
            .bearer_auth(db[token_field].as_str().unwrap())
            .json(&body)
            .send()
            .await
            .unwrap();
        body_json(r).await
    }

    pub async fn control(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self
            .http
            .request(method, format!("{}/_emulator{}", self.api, path));
        if let Some(b) = body {
            req = req.json(&b);
        }
        body_json(req.send().await.unwrap()).await
    }

    pub async fn fault(&self, spec: Value) -> u64 {
        let (s, v) = self.control(Method::POST, "/faults", Some(spec)).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        v["id"].as_u64().unwrap()
    }

    pub async fn calls(&self, query: &str) -> Vec<Value> {
        let (_, v) = self
            .control(Method::GET, &format!("/calls{query}"), None)
            .await;
        v.as_array().unwrap().clone()
    }
}
