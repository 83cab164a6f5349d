//! How one Developer API call is sent: a circuit-breaker permit, a request slot (when the
//! API is gated), the rate limit, a timeout per request, retries with backoff for what may be
//! repeated, and each request counted in `upstash_api_requests_total`.

use std::{future::Future, time::Duration};

use reqwest::{Method, StatusCode};
use secrecy::ExposeSecret;
use serde::de::DeserializeOwned;

use super::{UpstashApi, elements::Elements};
use crate::{
    metrics::{ApiRequestLabels, EndpointLabels},
    upstash::{breaker::BreakerState, error::UpstashError, limiter::Kind},
};

/// The most a response's `Content-Length` makes the client reserve before the body arrives
/// (a larger body still arrives whole; its buffer then grows as it comes).
const MAX_PRESIZE: u64 = 16 * 1024 * 1024;

/// Whether a call may be repeated when its answer is lost or it failed transiently.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Idempotence {
    Retry,
    Once,
}

impl UpstashApi {
    pub(super) async fn call_ok(
        &self,
        method: Method,
        endpoint: &'static str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<(), UpstashError> {
        self.call::<serde_json::Value>(method, endpoint, path, body, Idempotence::Retry)
            .await
            .map(|_| ())
    }

    /// One call: a circuit-breaker permit, up to `attempts` requests, and one outcome
    /// recorded with the breaker. Idempotent calls are repeated after failures that may pass;
    /// creates and password resets only after failures that prove Upstash did nothing (429, no
    /// connection), since a lost answer must be resolved by looking, not by repeating. The
    /// half-open breaker's trial call is made once.
    pub(super) async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        endpoint: &'static str,
        path: &str,
        body: Option<serde_json::Value>,
        idempotence: Idempotence,
    ) -> Result<T, UpstashError> {
        self.repeated(endpoint, idempotence, || async {
            let (status, retry_after, bytes) = self
                .send_once(&method, endpoint, path, body.as_ref(), None)
                .await?;
            decoded(endpoint, status, retry_after, &bytes)
        })
        .await
    }

    /// A call whose answer is a JSON array, parsed one element at a time as it arrives (see
    /// `elements.rs`): an answer as large as the account is never held whole. Read-only, so
    /// repeated like any read.
    pub(super) async fn call_each<T: DeserializeOwned + Send>(
        &self,
        endpoint: &'static str,
        path: &str,
    ) -> Result<Vec<T>, UpstashError> {
        self.repeated(endpoint, Idempotence::Retry, || async {
            let mut out = Vec::new();
            let mut each = |element: &[u8]| {
                serde_json::from_slice::<T>(element)
                    .map(|v| out.push(v))
                    .map_err(|e| format!("{endpoint}: {e} (element {})", out.len()))
            };
            let (status, retry_after, bytes) = self
                .send_once(&Method::GET, endpoint, path, None, Some(&mut each))
                .await?;
            if status.is_success() {
                Ok(out)
            } else {
                Err(UpstashError::from_response(
                    status.as_u16(),
                    &String::from_utf8_lossy(&bytes),
                    retry_after,
                ))
            }
        })
        .await
    }

    /// Runs `attempt_once` under one circuit-breaker permit, repeating it as `idempotence` allows
    /// (see [`call`](Self::call)), and records the outcome with the breaker.
    async fn repeated<R, F, Fut>(
        &self,
        endpoint: &'static str,
        idempotence: Idempotence,
        mut attempt_once: F,
    ) -> Result<R, UpstashError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<R, UpstashError>>,
    {
        let inner = &self.client.inner;
        let permit = match inner.breaker.try_acquire() {
            Ok(permit) => permit,
            Err(wait) => {
                self.count(endpoint, "circuit_open");
                return Err(UpstashError::CircuitOpen(wait));
            }
        };
        let attempts = if permit.is_trial() {
            1
        } else {
            inner.config.attempts.max(1)
        };
        let mut attempt = 1;
        let result = loop {
            let error = match attempt_once().await {
                Ok(value) => break Ok(value),
                Err(e) => e,
            };
            if attempt >= attempts || !may_repeat(idempotence, &error) {
                break Err(error);
            }
            let backoff =
                Duration::from_millis(50 * u64::from(attempt)).min(Duration::from_secs(2));
            let wait = error.retry_after().unwrap_or(backoff).max(backoff);
            if wait > inner.config.max_inline_wait {
                break Err(error);
            }
            tracing::debug!(endpoint, attempt, wait_ms = wait.as_millis() as u64, error = %error, "retrying Upstash call");
            tokio::time::sleep(wait).await;
            attempt += 1;
        };
        let healthy = match &result {
            Ok(_) => true,
            Err(e) => !e.counts_as_outage(),
        };
        if inner.breaker.record(permit, healthy) == Some(BreakerState::Open) {
            inner.metrics.breaker_openings_total.inc();
        }
        inner
            .metrics
            .breaker_state
            .set(inner.breaker.state().as_gauge());
        result
    }

    /// One request under the rate limit, counted and timed. Returns the status, `Retry-After`
    /// and the body; with `each`, a successful answer's array elements go to `each` as they
    /// arrive instead (and the body returned is empty).
    async fn send_once(
        &self,
        method: &Method,
        endpoint: &'static str,
        path: &str,
        body: Option<&serde_json::Value>,
        each: Option<&mut ElementSink<'_>>,
    ) -> Result<Answer, UpstashError> {
        let inner = &self.client.inner;
        let kind = if *method == Method::GET {
            Kind::Read
        } else {
            Kind::Change
        };
        // The token first, where changes go ahead of reads; then the slot. (A read holding a
        // slot while it waits for the changes to pass would keep those changes from the slots,
        // so that reads would go first after all.)
        inner.limiter.until_ready(kind).await;
        let _slot = match &self.slots {
            Some(slots) => slots.acquire().await.ok(),
            None => None,
        };
        let url = inner
            .config
            .base_url
            .join(path)
            .map_err(|e| UpstashError::Transport(format!("bad URL for {endpoint}: {e}")))?;
        let mut request = inner
            .http
            .request(method.clone(), url)
            .basic_auth(
                &self.credentials.email,
                Some(self.credentials.api_key.expose_secret()),
            )
            .header(reqwest::header::ACCEPT, "application/json");
        if let Some(body) = body {
            request = request.json(body);
        }
        let started = std::time::Instant::now();
        let outcome = self.exchange(request, each).await;
        inner
            .metrics
            .api_request_duration_seconds
            .get_or_create(&EndpointLabels {
                endpoint: endpoint.to_string(),
            })
            .observe(started.elapsed().as_secs_f64());
        let code = match &outcome {
            Ok((status, _, _)) => status.as_u16().to_string(),
            Err(UpstashError::Timeout(_)) => "timeout".to_string(),
            Err(_) => "error".to_string(),
        };
        self.count(endpoint, &code);
        outcome
    }

    /// Sends the request; returns the status, `Retry-After` (seconds form) and the body.
    ///
    /// The body is read into one buffer, sized by `Content-Length` when the answer gives it,
    /// and parsed from there (reading it as text would hold it two or three times over: the
    /// chunks, their concatenation and its text copy). With `each`, a successful answer is
    /// split into its array's elements as its chunks arrive, and no buffer grows with it.
    async fn exchange(
        &self,
        request: reqwest::RequestBuilder,
        mut each: Option<&mut ElementSink<'_>>,
    ) -> Result<Answer, UpstashError> {
        let timeout = self.client.inner.config.timeout;
        let mut response = request
            .send()
            .await
            .map_err(|e| transport_error(e, timeout))?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        if status.is_success()
            && let Some(each) = each.as_mut()
        {
            let mut elements = Elements::default();
            while let Some(chunk) = response
                .chunk()
                .await
                .map_err(|e| transport_error(e, timeout))?
            {
                elements.feed(&chunk, each).map_err(UpstashError::Decode)?;
            }
            elements.finish().map_err(UpstashError::Decode)?;
            return Ok((status, retry_after, Vec::new()));
        }
        // The announced length only sizes the first allocation, within a bound: a wrong or
        // hostile header cannot make it reserve more than that.
        let announced = response.content_length().unwrap_or(0).min(MAX_PRESIZE) as usize;
        let mut body = Vec::with_capacity(announced);
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| transport_error(e, timeout))?
        {
            body.extend_from_slice(&chunk);
        }
        Ok((status, retry_after, body))
    }

    fn count(&self, endpoint: &str, code: &str) {
        self.client
            .inner
            .metrics
            .api_requests_total
            .get_or_create(&ApiRequestLabels {
                endpoint: endpoint.to_string(),
                code: code.to_string(),
            })
            .inc();
    }
}

/// An answer as sent: its status, `Retry-After` (seconds form) and body.
type Answer = (StatusCode, Option<Duration>, Vec<u8>);

/// Where the elements of an array answer go, one at a time (see `elements.rs`).
type ElementSink<'a> = dyn FnMut(&[u8]) -> Result<(), String> + Send + 'a;

/// The value of a successful answer, or the error an unsuccessful one says.
fn decoded<T: DeserializeOwned>(
    endpoint: &str,
    status: StatusCode,
    retry_after: Option<Duration>,
    body: &[u8],
) -> Result<T, UpstashError> {
    if status.is_success() {
        serde_json::from_slice::<T>(body).map_err(|e| {
            UpstashError::Decode(format!("{endpoint}: {e} (body of {} bytes)", body.len()))
        })
    } else {
        Err(UpstashError::from_response(
            status.as_u16(),
            &String::from_utf8_lossy(body),
            retry_after,
        ))
    }
}

/// Whether a failed attempt may be repeated within the same call.
pub(super) fn may_repeat(idempotence: Idempotence, error: &UpstashError) -> bool {
    match idempotence {
        Idempotence::Retry => error.is_retryable(),
        Idempotence::Once => error.is_retryable() && error.not_performed(),
    }
}

fn transport_error(e: reqwest::Error, timeout: Duration) -> UpstashError {
    if e.is_timeout() {
        return UpstashError::Timeout(timeout);
    }
    let decode = e.is_decode() || e.is_body();
    let connect = e.is_connect();
    // The URL carries no secret, but messages stay short and stable without it.
    let e = e.without_url();
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    if decode {
        UpstashError::Decode(text)
    } else if connect {
        UpstashError::Connect(text)
    } else {
        UpstashError::Transport(text)
    }
}
