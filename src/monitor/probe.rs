//! Probes a database through its REST data API, as an application would: a few `PING`s for
//! latency and failures, `INFO` for live memory and evictions.

use std::time::{Duration, Instant};

use secrecy::{ExposeSecret, SecretString};

/// How a probe command went.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Answered, after this many milliseconds.
    Ok(f64),
    /// The token was refused (e.g. just rotated): fetch fresh credentials.
    Unauthorized,
    /// Any other failure: no connection, timeout, error answer.
    Failed(String),
}

/// Data-plane prober (one HTTP client for all databases).
#[derive(Clone)]
pub struct Prober {
    http: reqwest::Client,
    pings: usize,
}

impl Prober {
    /// `extra_ca_pem`: additional CA certificates (a local emulator's).
    pub fn new(
        timeout: Duration,
        extra_ca_pem: Option<&[u8]>,
        pings: usize,
    ) -> Result<Self, reqwest::Error> {
        Ok(Self {
            http: crate::upstash::client::http_client(timeout, extra_ca_pem)?,
            pings: pings.max(1),
        })
    }

    /// Sends `PING` a few times to `rest_url`.
    pub async fn ping(&self, rest_url: &str, token: &SecretString) -> Vec<Outcome> {
        let mut out = Vec::with_capacity(self.pings);
        for _ in 0..self.pings {
            let outcome = self
                .command(rest_url, token, &serde_json::json!(["PING"]))
                .await;
            let stop = matches!(outcome, Outcome::Unauthorized);
            out.push(outcome);
            if stop {
                break;
            }
        }
        out
    }

    async fn command(
        &self,
        rest_url: &str,
        token: &SecretString,
        command: &serde_json::Value,
    ) -> Outcome {
        let started = Instant::now();
        let response = match self
            .http
            .post(rest_url)
            .bearer_auth(token.expose_secret())
            .json(command)
            .send()
            .await
        {
            Ok(r) => r,
            Err(e) if e.is_timeout() => return Outcome::Failed("timeout".into()),
            Err(_) => return Outcome::Failed("connection failed".into()),
        };
        let status = response.status();
        let body: serde_json::Value = match response.json().await {
            Ok(b) => b,
            Err(_) => return Outcome::Failed(format!("unreadable answer ({status})")),
        };
        let elapsed = started.elapsed().as_secs_f64() * 1000.0;
        if status == reqwest::StatusCode::UNAUTHORIZED {
            return Outcome::Unauthorized;
        }
        if !status.is_success() || body.get("error").is_some() {
            let message = body
                .get("error")
                .and_then(|e| e.as_str())
                .unwrap_or("error")
                .chars()
                .take(200)
                .collect::<String>();
            return Outcome::Failed(format!("{status}: {message}"));
        }
        Outcome::Ok(elapsed)
    }
}

impl Prober {
    /// `INFO` through the data plane: live memory (`used_memory`) and `evicted_keys`.
    pub async fn info(&self, rest_url: &str, token: &SecretString) -> Option<InfoFigures> {
        let response = self
            .http
            .post(rest_url)
            .bearer_auth(token.expose_secret())
            .json(&serde_json::json!(["INFO"]))
            .send()
            .await
            .ok()?;
        if !response.status().is_success() {
            return None;
        }
        let body: serde_json::Value = response.json().await.ok()?;
        Some(parse_info(body.get("result")?.as_str()?))
    }
}

/// Figures from an `INFO` answer.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InfoFigures {
    pub used_memory: Option<f64>,
    pub evicted_keys: Option<f64>,
}

/// Parses Redis `INFO` text (`key:value` lines under `# Section` headers).
pub fn parse_info(text: &str) -> InfoFigures {
    let mut out = InfoFigures::default();
    for line in text.lines() {
        let Some((key, value)) = line.trim().split_once(':') else {
            continue;
        };
        let value = value.trim().parse::<f64>().ok();
        match key {
            "used_memory" => out.used_memory = value,
            "evicted_keys" => out.evicted_keys = value,
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_info() {
        let info = parse_info(
            "# Stats\r\nkeyspace_hits:10\r\nevicted_keys:3\r\n# Memory\r\nused_memory:2048\r\n",
        );
        assert_eq!(
            info,
            InfoFigures {
                used_memory: Some(2048.0),
                evicted_keys: Some(3.0)
            }
        );
    }
}
