//! The call log: every Developer API and data-plane request the emulator answered (method, path
//! without credentials, operation name, status), so tests can count Upstash calls.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

/// Oldest entries are dropped past this many.
const MAX_ENTRIES: usize = 100_000;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Call {
    pub seq: u64,
    /// RFC 3339.
    pub time: String,
    /// `api` (Developer API) or `data` (REST data API, or a RESP command).
    pub plane: String,
    /// Account email (Developer API) or `null`.
    pub account: Option<String>,
    /// HTTP method, or `RESP` for a Redis-protocol command.
    pub method: String,
    /// Path and query, with `_token` removed (empty for RESP).
    pub path: String,
    /// Stable operation name (`create`, `get`, ..., `data:get`, `data:pipeline`).
    pub endpoint: String,
    /// HTTP status sent; `0` when no response was sent (timeout / lost response).
    pub status: u16,
    pub database_id: Option<String>,
    /// Id of the fault rule applied, if any.
    pub fault: Option<u64>,
    pub duration_ms: f64,
}

#[derive(Debug, Default)]
pub struct CallLog {
    entries: VecDeque<Call>,
    next_seq: u64,
}

/// Filters of `GET /_emulator/calls`.
#[derive(Debug, Default, Deserialize)]
pub struct CallFilter {
    pub since: Option<u64>,
    pub endpoint: Option<String>,
    pub plane: Option<String>,
    pub database_id: Option<String>,
}

impl CallLog {
    pub fn push(&mut self, mut call: Call) -> u64 {
        self.next_seq += 1;
        call.seq = self.next_seq;
        self.entries.push_back(call);
        while self.entries.len() > MAX_ENTRIES {
            self.entries.pop_front();
        }
        self.next_seq
    }

    pub fn clear(&mut self) {
        self.entries.clear();
    }

    pub fn query(&self, f: &CallFilter) -> Vec<Call> {
        self.entries
            .iter()
            .filter(|c| f.since.is_none_or(|s| c.seq > s))
            .filter(|c| f.endpoint.as_deref().is_none_or(|e| c.endpoint == e))
            .filter(|c| f.plane.as_deref().is_none_or(|p| c.plane == p))
            .filter(|c| {
                f.database_id
                    .as_deref()
                    .is_none_or(|d| c.database_id.as_deref() == Some(d))
            })
            .cloned()
            .collect()
    }
}

/// Removes `_token=...` from a query string so tokens never reach the log.
pub fn redact_path(path: &str, query: Option<&str>) -> String {
    match query {
        None | Some("") => path.to_string(),
        Some(q) => {
            let kept: Vec<&str> = q
                .split('&')
                .filter(|kv| !kv.starts_with("_token=") && *kv != "_token")
                .collect();
            if kept.is_empty() {
                path.to_string()
            } else {
                format!("{path}?{}", kept.join("&"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_token() {
        assert_eq!(redact_path("/get/a", Some("_token=AXsecret")), "/get/a");
        assert_eq!(redact_path("/set/a", Some("EX=1&_token=x")), "/set/a?EX=1");
        assert_eq!(redact_path("/x", None), "/x");
    }

    #[test]
    fn since_filter() {
        let mut log = CallLog::default();
        for e in ["get", "list", "get"] {
            log.push(Call {
                seq: 0,
                time: String::new(),
                plane: "api".into(),
                account: None,
                method: "GET".into(),
                path: "/".into(),
                endpoint: e.into(),
                status: 200,
                database_id: None,
                fault: None,
                duration_ms: 0.0,
            });
        }
        assert_eq!(log.query(&CallFilter::default()).len(), 3);
        let f = CallFilter {
            since: Some(1),
            endpoint: Some("get".into()),
            ..Default::default()
        };
        let r = log.query(&f);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].seq, 3);
    }
}
