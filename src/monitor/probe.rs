//! The opt-in data-plane probe: a `PING` and an `INFO` through the database's REST API, as an
//! application would send them, for client-side latency and failures and for evictions; and
//! the window of recent outcomes the client-side figures are computed over (pure).

use std::{
    collections::VecDeque,
    time::{Duration, Instant},
};

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

    /// Commands one round sends: the `PING`s and one `INFO`.
    pub fn commands_per_round(&self) -> usize {
        self.pings + 1
    }

    /// Sends `PING` to `rest_url` (once per configured ping).
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
    /// `INFO` through the data plane: its outcome (it counts as a probe command like a `PING`)
    /// and, when it answered, live memory (`used_memory`) and `evicted_keys`.
    pub async fn info(
        &self,
        rest_url: &str,
        token: &SecretString,
    ) -> (Outcome, Option<InfoFigures>) {
        let started = Instant::now();
        let response = match self
            .http
            .post(rest_url)
            .bearer_auth(token.expose_secret())
            .json(&serde_json::json!(["INFO"]))
            .send()
            .await
        {
            Ok(r) => r,
            Err(e) if e.is_timeout() => return (Outcome::Failed("timeout".into()), None),
            Err(_) => return (Outcome::Failed("connection failed".into()), None),
        };
        let status = response.status();
        if status == reqwest::StatusCode::UNAUTHORIZED {
            return (Outcome::Unauthorized, None);
        }
        let body: Option<serde_json::Value> = response.json().await.ok();
        let elapsed = started.elapsed().as_secs_f64() * 1000.0;
        match body
            .as_ref()
            .and_then(|b| b.get("result"))
            .and_then(|r| r.as_str())
        {
            Some(text) if status.is_success() => (Outcome::Ok(elapsed), Some(parse_info(text))),
            _ => (Outcome::Failed(format!("INFO answered {status}")), None),
        }
    }
}

/// Recent probe outcomes of one database, over the last `capacity` commands.
#[derive(Clone, Debug, PartialEq)]
pub struct ProbeWindow {
    capacity: usize,
    latencies_ms: VecDeque<f64>,
    outcomes: VecDeque<bool>,
    /// Probe rounds in a row without one answer.
    pub consecutive_failures: u32,
}

impl Default for ProbeWindow {
    fn default() -> Self {
        Self::new(super::thresholds::DEFAULT_MIN_SAMPLES)
    }
}

fn push<T>(q: &mut VecDeque<T>, v: T, capacity: usize) {
    q.push_back(v);
    while q.len() > capacity {
        q.pop_front();
    }
}

impl ProbeWindow {
    /// A window over the last `capacity` commands; figures are judged once it is full.
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            latencies_ms: VecDeque::new(),
            outcomes: VecDeque::new(),
            consecutive_failures: 0,
        }
    }

    /// Changes the window's length (the policy changed), keeping the newest outcomes.
    pub fn resize(&mut self, capacity: usize) {
        self.capacity = capacity.max(1);
        while self.outcomes.len() > self.capacity {
            self.outcomes.pop_front();
        }
        while self.latencies_ms.len() > self.capacity {
            self.latencies_ms.pop_front();
        }
    }

    /// Records one probe round. A round in which no command answered is a connection failure.
    /// An `Unauthorized` outcome (credentials just rotated) counts neither way.
    pub fn record(&mut self, outcomes: &[Outcome]) {
        let mut answered = false;
        let mut failed = false;
        for o in outcomes {
            match o {
                Outcome::Ok(ms) => {
                    answered = true;
                    push(&mut self.latencies_ms, *ms, self.capacity);
                    push(&mut self.outcomes, true, self.capacity);
                }
                Outcome::Failed(_) => {
                    failed = true;
                    push(&mut self.outcomes, false, self.capacity);
                }
                Outcome::Unauthorized => {}
            }
        }
        if answered {
            self.consecutive_failures = 0;
        } else if failed {
            self.consecutive_failures += 1;
        }
    }

    /// Commands in the window.
    pub fn samples(&self) -> usize {
        self.outcomes.len()
    }

    /// The `q` quantile (0–1) of the window's latencies, nearest rank, once the window holds
    /// `capacity` answered commands.
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        if self.latencies_ms.len() < self.capacity {
            return None;
        }
        let mut sorted: Vec<f64> = self.latencies_ms.iter().copied().collect();
        sorted.sort_by(f64::total_cmp);
        let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
        Some(sorted[rank - 1])
    }

    /// Failed commands in percent of the window, once it is full.
    pub fn error_rate_percent(&self) -> Option<f64> {
        if self.outcomes.len() < self.capacity {
            return None;
        }
        let failed = self.outcomes.iter().filter(|ok| !**ok).count();
        Some(100.0 * failed as f64 / self.outcomes.len() as f64)
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

    fn oks(n: usize, ms: f64) -> Vec<Outcome> {
        vec![Outcome::Ok(ms); n]
    }

    #[test]
    fn one_lost_command_among_few_or_a_hundred_is_not_an_error_rate() {
        let mut w = ProbeWindow::new(100);
        w.record(&[Outcome::Failed("timeout".into()), Outcome::Ok(3.0)]);
        assert_eq!(
            w.error_rate_percent(),
            None,
            "2 commands are too few to judge"
        );
        for _ in 0..49 {
            w.record(&oks(2, 3.0));
        }
        assert_eq!(w.samples(), 100);
        assert_eq!(
            w.error_rate_percent(),
            Some(1.0),
            "1 in 100 is not above the default 1%"
        );
        w.record(&[Outcome::Failed("503".into()), Outcome::Failed("503".into())]);
        assert_eq!(
            w.error_rate_percent(),
            Some(2.0),
            "the first loss left the window"
        );
        assert_eq!(w.consecutive_failures, 1);
        w.record(&oks(2, 3.0));
        assert_eq!(w.consecutive_failures, 0);
    }

    #[test]
    fn client_latency_needs_a_full_window() {
        let mut w = ProbeWindow::new(20);
        for ms in 1..=19 {
            w.record(&[Outcome::Ok(f64::from(ms))]);
        }
        assert_eq!(w.quantile_ms(0.95), None);
        w.record(&[Outcome::Ok(20.0)]);
        assert_eq!(w.quantile_ms(0.95), Some(19.0));
        // The window slides: the oldest latencies leave it.
        for _ in 0..20 {
            w.record(&[Outcome::Ok(100.0)]);
        }
        assert_eq!(w.quantile_ms(0.5), Some(100.0));
        w.resize(5);
        assert_eq!(w.samples(), 5);
        // Refused credentials count neither way.
        w.record(&[Outcome::Unauthorized]);
        assert_eq!((w.samples(), w.consecutive_failures), (5, 0));
    }

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
