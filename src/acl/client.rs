//! The operator's own data-plane calls for ACL users: `ACL` commands through the database's REST
//! API (`/pipeline`), as the monitor's probe talks to it (same HTTP client setup, the emulator's
//! CA honoured). Nothing here logs a command's arguments (they hold passwords).

use std::{
    collections::HashMap,
    sync::{Mutex, OnceLock},
    time::Duration,
};

use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;

static HTTP: OnceLock<reqwest::Client> = OnceLock::new();

/// The operator's own commands per database today, so that the monitor leaves them out of the
/// application's figures: REST URL → database id, and database id → `(unix day, commands)`.
#[derive(Default)]
struct Sent {
    ids: HashMap<String, String>,
    counts: HashMap<String, (i64, u64)>,
}

static SENT: Mutex<Option<Sent>> = Mutex::new(None);

fn sent() -> std::sync::MutexGuard<'static, Option<Sent>> {
    SENT.lock().unwrap_or_else(|e| e.into_inner())
}

fn unix_day() -> i64 {
    jiff::Timestamp::now().as_second().div_euclid(86_400)
}

/// Names the database behind `rest_url`, for counting the commands sent to it.
pub fn register(rest_url: &str, database_id: &str) {
    let mut sent = sent();
    let sent = sent.get_or_insert_with(Sent::default);
    if sent.ids.get(rest_url).map(String::as_str) != Some(database_id) {
        sent.ids
            .insert(rest_url.to_string(), database_id.to_string());
    }
}

fn count(rest_url: &str, n: u64) {
    let day = unix_day();
    let mut sent = sent();
    let sent = sent.get_or_insert_with(Sent::default);
    let Some(id) = sent.ids.get(rest_url).cloned() else {
        return;
    };
    let entry = sent.counts.entry(id).or_insert((day, 0));
    if entry.0 != day {
        *entry = (day, 0);
    }
    entry.1 += n;
}

/// Commands the operator sent to database `database_id` on unix day `day` (ACL management).
pub fn commands_on(database_id: &str, day: i64) -> u64 {
    sent()
        .as_ref()
        .and_then(|s| s.counts.get(database_id))
        .filter(|(d, _)| *d == day)
        .map_or(0, |(_, n)| *n)
}

/// Sets the HTTP client up (the operator's start: the Upstash timeout and extra CA).
pub fn init(timeout: Duration, extra_ca_pem: Option<&[u8]>) -> Result<(), reqwest::Error> {
    let client = crate::upstash::client::http_client(timeout, extra_ca_pem)?;
    let _ = HTTP.set(client);
    Ok(())
}

fn http() -> &'static reqwest::Client {
    HTTP.get_or_init(|| {
        crate::upstash::client::http_client(Duration::from_secs(10), None)
            .unwrap_or_else(|_| reqwest::Client::new())
    })
}

/// Why a call failed. Messages carry no argument.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CallError {
    /// The token was refused (rotated, or the `default` user turned off).
    #[error("the database refused the operator's REST token")]
    Unauthorized,
    #[error("the database's REST API could not be reached: {0}")]
    Unreachable(String),
    #[error("the database's REST API answered {0}")]
    Failed(String),
}

/// One command's answer: its result, or Redis's error text.
pub type Answer = Result<Value, String>;

/// Runs commands in one `/pipeline` request.
pub async fn pipeline(
    rest_url: &str,
    token: &SecretString,
    commands: &[Vec<String>],
) -> Result<Vec<Answer>, CallError> {
    let response = http()
        .post(format!("{}/pipeline", rest_url.trim_end_matches('/')))
        .bearer_auth(token.expose_secret())
        .json(commands)
        .send()
        .await
        .map_err(|e| {
            CallError::Unreachable(if e.is_timeout() {
                "timeout".into()
            } else {
                "connection failed".into()
            })
        })?;
    count(rest_url, commands.len() as u64);
    let status = response.status();
    if status == reqwest::StatusCode::UNAUTHORIZED {
        return Err(CallError::Unauthorized);
    }
    let body: Value = response
        .json()
        .await
        .map_err(|_| CallError::Failed(format!("{status} with an unreadable body")))?;
    let Some(items) = body.as_array().filter(|_| status.is_success()) else {
        let error = body
            .get("error")
            .and_then(Value::as_str)
            .unwrap_or("no error text")
            .chars()
            .take(200)
            .collect::<String>();
        return Err(CallError::Failed(format!("{status}: {error}")));
    };
    Ok(items
        .iter()
        .map(|item| match item.get("error").and_then(Value::as_str) {
            Some(e) => Err(e.chars().take(200).collect()),
            None => Ok(item.get("result").cloned().unwrap_or(Value::Null)),
        })
        .collect())
}

/// `ACL LIST`.
pub async fn acl_list(rest_url: &str, token: &SecretString) -> Result<Vec<String>, CallError> {
    let answers = pipeline(rest_url, token, &[vec!["ACL".into(), "LIST".into()]]).await?;
    match answers.into_iter().next() {
        Some(Ok(Value::Array(lines))) => Ok(lines
            .iter()
            .filter_map(|l| l.as_str().map(str::to_string))
            .collect()),
        Some(Err(e)) => Err(CallError::Failed(e)),
        _ => Err(CallError::Failed("ACL LIST gave no list".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_operators_commands_are_counted_per_database_and_day() {
        register("https://counted.example", "db-counted");
        count("https://counted.example", 2);
        count("https://counted.example", 1);
        count("https://unknown.example", 5);
        assert_eq!(commands_on("db-counted", unix_day()), 3);
        assert_eq!(commands_on("db-counted", unix_day() - 1), 0);
        assert_eq!(commands_on("db-other", unix_day()), 0);
    }
}
