//! Errors from Upstash calls, classified so the reconciler knows whether to retry.

use std::time::Duration;

/// A failed Upstash call. Messages carry what Upstash said, never credentials.
#[derive(Debug, Clone, thiserror::Error)]
pub enum UpstashError {
    /// The account email or API key was rejected (401/403).
    #[error("Upstash rejected the credentials ({status}): {message}")]
    Unauthorized { status: u16, message: String },
    /// The database (or other object) does not exist (404).
    #[error("not found: {message}")]
    NotFound { message: String },
    /// Upstash refused the request as invalid (400 and other 4xx).
    #[error("Upstash refused the request ({status}): {message}")]
    Rejected { status: u16, message: String },
    /// Too many requests (429); `retry_after` from the `Retry-After` header when present.
    #[error("Upstash is rate limiting requests (429)")]
    RateLimited { retry_after: Option<Duration> },
    /// Upstash failed (5xx).
    #[error("Upstash failed ({status}): {message}")]
    Server { status: u16, message: String },
    /// No answer within the timeout.
    #[error("Upstash did not answer within {0:?}")]
    Timeout(Duration),
    /// No connection could be made, so the request was never sent.
    #[error("could not connect to Upstash: {0}")]
    Connect(String),
    /// The connection failed or broke off.
    #[error("could not reach Upstash: {0}")]
    Transport(String),
    /// The answer was not what the API documents (for example a truncated body).
    #[error("unexpected answer from Upstash: {0}")]
    Decode(String),
    /// The circuit breaker is open after repeated failures; no call was made.
    #[error("Upstash calls are paused after repeated failures (circuit breaker open)")]
    CircuitOpen(Duration),
}

impl UpstashError {
    /// Whether trying again later may succeed without anyone changing anything.
    pub fn is_retryable(&self) -> bool {
        !matches!(
            self,
            UpstashError::Unauthorized { .. }
                | UpstashError::NotFound { .. }
                | UpstashError::Rejected { .. }
        )
    }

    /// Whether the failure says Upstash is unavailable (and so counts for the circuit
    /// breaker): a 5xx, no answer in time, no connection, a broken or truncated answer. An
    /// answer that refuses the request (4xx, 429 included) comes from a working API: throttling
    /// is handled by `Retry-After` and the rate limit, refusals by fixing the request.
    pub fn counts_as_outage(&self) -> bool {
        matches!(
            self,
            UpstashError::Server { .. }
                | UpstashError::Timeout(_)
                | UpstashError::Connect(_)
                | UpstashError::Transport(_)
                | UpstashError::Decode(_)
        )
    }

    /// Whether the failure proves that Upstash did not act on the request: it refused it
    /// (4xx, 429 included) or the request was never sent (the circuit breaker was open, or no
    /// connection could be made). A 5xx, a timeout or a broken connection leaves it unknown.
    pub fn not_performed(&self) -> bool {
        matches!(
            self,
            UpstashError::Unauthorized { .. }
                | UpstashError::NotFound { .. }
                | UpstashError::Rejected { .. }
                | UpstashError::RateLimited { .. }
                | UpstashError::Connect(_)
                | UpstashError::CircuitOpen(_)
        )
    }

    /// Whether Upstash finished handling the request even though it failed: it answered with
    /// an error of its own (a 5xx other than a gateway's 502 or 504, after which the request
    /// may still be running behind the gateway) or with a body that could not be read. Whatever
    /// the request did is then visible to the next read.
    pub fn answered(&self) -> bool {
        match self {
            UpstashError::Server { status, .. } => !matches!(status, 502 | 504),
            UpstashError::Decode(_) => true,
            _ => false,
        }
    }

    /// How long Upstash asked us to wait, if it did.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            UpstashError::RateLimited { retry_after } => *retry_after,
            UpstashError::CircuitOpen(d) => Some(*d),
            _ => None,
        }
    }

    /// A short, fixed label for metrics and condition reasons.
    pub fn label(&self) -> &'static str {
        match self {
            UpstashError::Unauthorized { .. } => "Unauthorized",
            UpstashError::NotFound { .. } => "NotFound",
            UpstashError::Rejected { .. } => "Rejected",
            UpstashError::RateLimited { .. } => "RateLimited",
            UpstashError::Server { .. } => "ServerError",
            UpstashError::Timeout(_) => "Timeout",
            UpstashError::Connect(_) | UpstashError::Transport(_) => "Unreachable",
            UpstashError::Decode(_) => "BadResponse",
            UpstashError::CircuitOpen(_) => "CircuitOpen",
        }
    }

    /// Builds the error for a non-success HTTP answer from its status, body and `Retry-After`.
    pub fn from_response(status: u16, body: &str, retry_after: Option<Duration>) -> Self {
        let message = error_message(body);
        match status {
            401 | 403 => UpstashError::Unauthorized { status, message },
            404 => UpstashError::NotFound { message },
            429 => UpstashError::RateLimited { retry_after },
            500..=599 => UpstashError::Server { status, message },
            _ => UpstashError::Rejected { status, message },
        }
    }
}

/// Extracts the human message from an Upstash error body: a JSON string (`"database not
/// found"`), an object with `error` or `message`, or plain text.
pub fn error_message(body: &str) -> String {
    let trimmed = body.trim();
    let message = match serde_json::from_str::<serde_json::Value>(trimmed) {
        Ok(serde_json::Value::String(s)) => s,
        Ok(serde_json::Value::Object(map)) => map
            .get("error")
            .or_else(|| map.get("message"))
            .and_then(|v| v.as_str())
            .map(str::to_string)
            .unwrap_or_else(|| trimmed.to_string()),
        _ => trimmed.to_string(),
    };
    let mut message: String = message.chars().filter(|c| !c.is_control()).collect();
    if message.len() > 300 {
        let mut end = 300;
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message.truncate(end);
        message.push('…');
    }
    if message.is_empty() {
        "(empty body)".to_string()
    } else {
        message
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_bodies_in_every_shape() {
        assert_eq!(
            error_message(r#""database not found""#),
            "database not found"
        );
        assert_eq!(error_message(r#"{"error":"Unauthorized"}"#), "Unauthorized");
        assert_eq!(
            error_message(r#"{"code":"x","message":"bad plan"}"#),
            "bad plan"
        );
        assert_eq!(error_message("plain text\n"), "plain text");
        assert_eq!(error_message(""), "(empty body)");
        assert_eq!(error_message(&"x".repeat(1000)).chars().count(), 301);
    }

    #[test]
    fn classification() {
        let e = UpstashError::from_response(404, r#""database not found""#, None);
        assert!(matches!(e, UpstashError::NotFound { .. }));
        assert!(!e.is_retryable());
        let e = UpstashError::from_response(429, "", Some(Duration::from_secs(3)));
        assert_eq!(e.retry_after(), Some(Duration::from_secs(3)));
        assert!(e.is_retryable() && !e.counts_as_outage() && e.not_performed());
        let e = UpstashError::from_response(401, r#"{"error":"Unauthorized"}"#, None);
        assert_eq!(e.label(), "Unauthorized");
        assert!(!e.counts_as_outage());
        let e = UpstashError::from_response(503, "down", None);
        assert!(e.is_retryable() && e.counts_as_outage() && !e.not_performed());
        assert!(UpstashError::Timeout(Duration::from_secs(3)).counts_as_outage());
        assert!(!UpstashError::Timeout(Duration::from_secs(3)).not_performed());
        let e = UpstashError::Connect("connection refused".into());
        assert!(e.counts_as_outage() && e.not_performed() && e.is_retryable());
        assert!(!UpstashError::Transport("reset".into()).not_performed());
        assert!(UpstashError::CircuitOpen(Duration::from_secs(1)).not_performed());
        // What the next read can tell apart: a call Upstash finished, or one still unknown.
        assert!(UpstashError::from_response(500, "oops", None).answered());
        assert!(UpstashError::from_response(503, "down", None).answered());
        assert!(!UpstashError::from_response(502, "bad gateway", None).answered());
        assert!(!UpstashError::from_response(504, "gateway timeout", None).answered());
        assert!(!UpstashError::Timeout(Duration::from_secs(3)).answered());
        assert!(!UpstashError::Transport("reset".into()).answered());
        let e = UpstashError::from_response(400, r#""invalid region""#, None);
        assert_eq!(
            e.to_string(),
            "Upstash refused the request (400): invalid region"
        );
    }
}
