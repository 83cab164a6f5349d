//! The Developer API client.
//!
//! One [`UpstashClient`] per process holds the HTTP connection pool, the global rate limit
//! (changes ahead of reads, see [`super::limiter`]) and the circuit breaker; [`UpstashClient::with_credentials`] binds it to an account, giving an
//! [`UpstashApi`] with one method per endpoint. Every call has a timeout, is counted in
//! `upstash_api_requests_total`, and idempotent calls are retried a few times with backoff
//! (`min(attempt * 50 ms, 2 s)`), honouring `Retry-After`. Creates and password resets are never
//! retried blindly: a lost answer must be resolved by looking, not by repeating; they are
//! repeated only when the failure proves Upstash did nothing (429, no connection). The circuit
//! breaker sees one outcome per call, after its retries.

use std::{fmt, sync::Arc, time::Duration};

use reqwest::Method;
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::Semaphore;

use super::{
    breaker::{BreakerConfig, CircuitBreaker},
    error::UpstashError,
    limiter::Limiter,
    types::{
        AuditLogEntry, Backup, Budget, CreateDatabase, Database, DatabaseStats, ListedDatabase,
    },
};
use crate::metrics::Metrics;

mod elements;
mod transport;

use transport::Idempotence;

/// Settings of the shared client.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Base URL of the Developer API, `https://api.upstash.com` in production.
    pub base_url: url::Url,
    /// Timeout of each HTTP request.
    pub timeout: Duration,
    /// Requests per second across all instances and accounts.
    pub rate_limit_per_second: u32,
    /// Burst above the steady rate.
    pub rate_limit_burst: u32,
    /// Attempts for idempotent calls (1 = no retry).
    pub attempts: u32,
    /// Longest `Retry-After` the client waits in place before giving the error back.
    pub max_inline_wait: Duration,
    pub breaker: BreakerConfig,
    /// Extra CA certificates (PEM) to trust, e.g. a local emulator's.
    pub extra_ca_pem: Option<Vec<u8>>,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            base_url: url::Url::parse("https://api.upstash.com").expect("static URL"),
            timeout: Duration::from_secs(30),
            rate_limit_per_second: 20,
            rate_limit_burst: 40,
            attempts: 3,
            max_inline_wait: Duration::from_secs(5),
            breaker: BreakerConfig::default(),
            extra_ca_pem: None,
        }
    }
}

/// Upstash account credentials: the account email and a Developer API key. `Debug` and
/// `Display` never show the key.
#[derive(Clone)]
pub struct Credentials {
    pub email: String,
    pub api_key: SecretString,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("email", &self.email)
            .field("api_key", &"<redacted>")
            .finish()
    }
}

impl PartialEq for Credentials {
    fn eq(&self, other: &Self) -> bool {
        self.email == other.email && self.api_key.expose_secret() == other.api_key.expose_secret()
    }
}

/// The process-wide client.
#[derive(Clone)]
pub struct UpstashClient {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    config: ClientConfig,
    limiter: Limiter,
    breaker: Arc<CircuitBreaker>,
    metrics: Arc<Metrics>,
}

/// Builds an HTTP client that trusts the public roots plus `extra_ca_pem`.
pub fn http_client(
    timeout: Duration,
    extra_ca_pem: Option<&[u8]>,
) -> Result<reqwest::Client, reqwest::Error> {
    let mut builder = reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(10)))
        .pool_idle_timeout(Duration::from_secs(60))
        .user_agent(concat!("upstash-operator/", env!("CARGO_PKG_VERSION")));
    if let Some(pem) = extra_ca_pem {
        for cert in reqwest::Certificate::from_pem_bundle(pem)? {
            builder = builder.add_root_certificate(cert);
        }
    }
    builder.build()
}

impl UpstashClient {
    pub fn new(config: ClientConfig, metrics: Arc<Metrics>) -> Result<Self, reqwest::Error> {
        let http = http_client(config.timeout, config.extra_ca_pem.as_deref())?;
        let limiter = Limiter::new(config.rate_limit_per_second, config.rate_limit_burst);
        let breaker = Arc::new(CircuitBreaker::new(config.breaker));
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                config,
                limiter,
                breaker,
                metrics,
            }),
        })
    }

    /// The circuit breaker shared by every call.
    pub fn breaker(&self) -> &Arc<CircuitBreaker> {
        &self.inner.breaker
    }

    /// The Developer API base URL.
    pub fn base_url(&self) -> &url::Url {
        &self.inner.config.base_url
    }

    /// Binds the client to an account.
    pub fn with_credentials(&self, credentials: Credentials) -> UpstashApi {
        UpstashApi {
            client: self.clone(),
            credentials,
            slots: None,
        }
    }
}

/// The Developer API for one account.
#[derive(Clone)]
pub struct UpstashApi {
    client: UpstashClient,
    credentials: Credentials,
    /// When set, each request first takes one of these slots (see [`UpstashApi::gated`]).
    slots: Option<Arc<Semaphore>>,
}

impl fmt::Debug for UpstashApi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpstashApi")
            .field("base_url", &self.client.base_url().as_str())
            .field("email", &self.credentials.email)
            .finish()
    }
}

impl UpstashApi {
    /// The same account, with each request holding one of `slots` while it is sent and
    /// answered (not while it waits to be retried): however many callers share the slots, no
    /// more requests than there are slots are in flight at once.
    pub fn gated(&self, slots: &Arc<Semaphore>) -> UpstashApi {
        UpstashApi {
            slots: Some(slots.clone()),
            ..self.clone()
        }
    }

    /// Every database of the account, by id, name and account (see [`ListedDatabase`]).
    pub async fn list_databases(&self) -> Result<Vec<ListedDatabase>, UpstashError> {
        self.call_each("list", "/v2/redis/databases").await
    }

    /// One database with its credentials; `None` if it does not exist.
    pub async fn get_database(&self, id: &str) -> Result<Option<Database>, UpstashError> {
        let path = format!("/v2/redis/database/{}", segment(id));
        not_found_as_none(
            self.call(Method::GET, "get", &path, None, Idempotence::Retry)
                .await,
        )
    }

    /// Creates a database. Not retried: if the answer is lost, the caller looks the database up
    /// by name.
    pub async fn create_database(
        &self,
        request: &CreateDatabase,
    ) -> Result<Database, UpstashError> {
        let body =
            serde_json::to_value(request).map_err(|e| UpstashError::Decode(e.to_string()))?;
        self.call(
            Method::POST,
            "create",
            "/v2/redis/database",
            Some(body),
            Idempotence::Once,
        )
        .await
    }

    /// Deletes a database. `Ok(false)` if it was already gone.
    pub async fn delete_database(&self, id: &str) -> Result<bool, UpstashError> {
        let path = format!("/v2/redis/database/{}", segment(id));
        match self
            .call::<serde_json::Value>(Method::DELETE, "delete", &path, None, Idempotence::Retry)
            .await
        {
            Ok(_) => Ok(true),
            Err(UpstashError::NotFound { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Resets the password and both REST tokens; the old ones stop working.
    pub async fn reset_password(&self, id: &str) -> Result<Database, UpstashError> {
        let path = format!("/v2/redis/reset-password/{}", segment(id));
        self.call(
            Method::POST,
            "reset-password",
            &path,
            Some(serde_json::json!({})),
            Idempotence::Once,
        )
        .await
    }

    /// Replaces the set of read regions.
    pub async fn update_regions(
        &self,
        id: &str,
        read_regions: &[String],
    ) -> Result<(), UpstashError> {
        let path = format!("/v2/redis/update-regions/{}", segment(id));
        let body = serde_json::json!({ "read_regions": read_regions });
        self.call_ok(Method::POST, "update-regions", &path, Some(body))
            .await
    }

    /// Moves the database to another plan.
    pub async fn change_plan(&self, id: &str, plan: &str) -> Result<(), UpstashError> {
        let path = format!("/v2/redis/{}/change-plan", segment(id));
        let body = serde_json::json!({ "plan_name": plan });
        self.call_ok(Method::POST, "change-plan", &path, Some(body))
            .await
    }

    /// Sets the monthly budget to `usd` US dollars (sent in cents, see [`Budget`]).
    pub async fn update_budget(&self, id: &str, usd: i64) -> Result<(), UpstashError> {
        let path = format!("/v2/redis/update-budget/{}", segment(id));
        let body = serde_json::json!({ "budget": Budget::from_usd(usd) });
        self.call_ok(Method::PATCH, "update-budget", &path, Some(body))
            .await
    }

    /// Turns eviction on or off.
    pub async fn set_eviction(&self, id: &str, on: bool) -> Result<(), UpstashError> {
        let endpoint = if on {
            "enable-eviction"
        } else {
            "disable-eviction"
        };
        let path = format!("/v2/redis/{endpoint}/{}", segment(id));
        self.call_ok(Method::POST, endpoint, &path, None).await
    }

    /// Turns automatic plan upgrades on or off. "Already enabled/disabled" counts as success.
    pub async fn set_auto_upgrade(&self, id: &str, on: bool) -> Result<(), UpstashError> {
        let endpoint = if on {
            "enable-autoupgrade"
        } else {
            "disable-autoupgrade"
        };
        let path = format!("/v2/redis/{endpoint}/{}", segment(id));
        match self.call_ok(Method::POST, endpoint, &path, None).await {
            Err(UpstashError::Rejected { message, .. })
                if message.contains("already enabled") || message.contains("already disabled") =>
            {
                Ok(())
            }
            other => other,
        }
    }

    /// Turns the Prod Pack add-on on or off.
    pub async fn set_prod_pack(&self, id: &str, on: bool) -> Result<(), UpstashError> {
        let endpoint = if on {
            "enable-prodpack"
        } else {
            "disable-prodpack"
        };
        let path = format!("/v2/redis/{endpoint}/{}", segment(id));
        self.call_ok(Method::POST, endpoint, &path, None).await
    }

    /// Replaces the IP allow-list; an empty list allows every address.
    pub async fn update_allowlist(
        &self,
        id: &str,
        allowed_ips: &[String],
    ) -> Result<(), UpstashError> {
        let path = format!("/v2/redis/update-allowlist/{}", segment(id));
        let body = serde_json::json!({ "allowed_ips": allowed_ips });
        self.call_ok(Method::POST, "update-allowlist", &path, Some(body))
            .await
    }

    /// Turns daily backups on or off.
    pub async fn set_daily_backup(&self, id: &str, on: bool) -> Result<(), UpstashError> {
        let endpoint = if on {
            "enable-dailybackup"
        } else {
            "disable-dailybackup"
        };
        let path = format!("/v2/redis/{endpoint}/{}", segment(id));
        self.call_ok(Method::PATCH, endpoint, &path, None).await
    }

    /// Backups of a database.
    pub async fn list_backups(&self, id: &str) -> Result<Vec<Backup>, UpstashError> {
        let path = format!("/v2/redis/list-backup/{}", segment(id));
        self.call(Method::GET, "list-backup", &path, None, Idempotence::Retry)
            .await
    }

    /// The account's audit log (who changed what, from where), as far back as its retention.
    pub async fn audit_logs(&self) -> Result<Vec<AuditLogEntry>, UpstashError> {
        self.call(
            Method::GET,
            "auditlogs",
            "/v2/auditlogs",
            None,
            Idempotence::Retry,
        )
        .await
    }

    /// Takes a backup named `name`. Not retried: the caller looks for it by name instead.
    pub async fn create_backup(&self, id: &str, name: &str) -> Result<(), UpstashError> {
        let path = format!("/v2/redis/create-backup/{}", segment(id));
        let body = serde_json::json!({ "name": name });
        self.call::<serde_json::Value>(
            Method::POST,
            "create-backup",
            &path,
            Some(body),
            Idempotence::Once,
        )
        .await
        .map(|_| ())
    }

    /// Replaces the database's data with a backup. Not retried.
    pub async fn restore_backup(&self, id: &str, backup_id: &str) -> Result<(), UpstashError> {
        let path = format!("/v2/redis/restore-backup/{}", segment(id));
        let body = serde_json::json!({ "backup_id": backup_id });
        self.call::<serde_json::Value>(
            Method::POST,
            "restore-backup",
            &path,
            Some(body),
            Idempotence::Once,
        )
        .await
        .map(|_| ())
    }

    /// Usage statistics of a database.
    pub async fn stats(&self, id: &str) -> Result<DatabaseStats, UpstashError> {
        let path = format!("/v2/redis/stats/{}", segment(id));
        self.call(Method::GET, "stats", &path, None, Idempotence::Retry)
            .await
    }
}

fn not_found_as_none<T>(result: Result<T, UpstashError>) -> Result<Option<T>, UpstashError> {
    match result {
        Ok(v) => Ok(Some(v)),
        Err(UpstashError::NotFound { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Percent-encodes an id for use as one path segment.
fn segment(id: &str) -> String {
    url::form_urlencoded::byte_serialize(id.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

#[cfg(test)]
mod tests {
    use super::transport::may_repeat;
    use super::*;

    #[test]
    fn credentials_never_print_the_key() {
        let c = Credentials {
            email: "ops@example.com".into(),
            api_key: SecretString::from("k-123-very-secret"),
        };
        let shown = format!("{c:?}");
        assert!(shown.contains("ops@example.com"));
        assert!(!shown.contains("k-123"));
    }

    #[test]
    fn once_only_calls_repeat_only_what_was_not_performed() {
        let throttled = UpstashError::RateLimited {
            retry_after: Some(Duration::from_secs(1)),
        };
        let failed = UpstashError::Server {
            status: 500,
            message: "internal error".into(),
        };
        let refused = UpstashError::Rejected {
            status: 400,
            message: "invalid region".into(),
        };
        let unconnected = UpstashError::Connect("connection refused".into());
        let timeout = UpstashError::Timeout(Duration::from_secs(3));
        for e in [&throttled, &failed, &unconnected, &timeout] {
            assert!(may_repeat(Idempotence::Retry, e), "{e}");
        }
        assert!(!may_repeat(Idempotence::Retry, &refused));
        assert!(may_repeat(Idempotence::Once, &throttled));
        assert!(may_repeat(Idempotence::Once, &unconnected));
        for e in [&failed, &timeout, &refused] {
            assert!(!may_repeat(Idempotence::Once, e), "{e}");
        }
    }

    /// A Developer API stand-in that answers every request with an empty list after `delay`,
    /// counting the requests it holds at once.
    async fn slow_server(
        delay: Duration,
    ) -> (
        url::Url,
        Arc<std::sync::atomic::AtomicUsize>,
        Arc<std::sync::atomic::AtomicUsize>,
    ) {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = url::Url::parse(&format!("http://{}", listener.local_addr().unwrap())).unwrap();
        let (now, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (held, peak) = (now.clone(), most.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut socket, _)) = listener.accept().await else {
                    return;
                };
                let (held, peak) = (held.clone(), peak.clone());
                tokio::spawn(async move {
                    let mut seen = Vec::new();
                    let mut buf = [0u8; 1024];
                    loop {
                        // One request per connection (`Connection: close` in the answer).
                        match socket.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => seen.extend_from_slice(&buf[..n]),
                        }
                        if seen.windows(4).any(|w| w == b"\r\n\r\n") {
                            break;
                        }
                    }
                    let at_once = held.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(at_once, Ordering::SeqCst);
                    tokio::time::sleep(delay).await;
                    held.fetch_sub(1, Ordering::SeqCst);
                    let _ = socket
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\nconnection: close\r\n\r\n[]")
                        .await;
                });
            }
        });
        (url, now, most)
    }

    fn client_for(base_url: url::Url) -> UpstashClient {
        let config = ClientConfig {
            base_url,
            rate_limit_per_second: 10_000,
            rate_limit_burst: 10_000,
            ..ClientConfig::default()
        };
        UpstashClient::new(config, Arc::new(Metrics::default())).unwrap()
    }

    fn account(client: &UpstashClient) -> UpstashApi {
        client.with_credentials(Credentials {
            email: "ops@example.com".into(),
            api_key: SecretString::from("key"),
        })
    }

    #[tokio::test]
    async fn gated_requests_never_exceed_their_slots() {
        let (url, held, peak) = slow_server(Duration::from_millis(40)).await;
        let client = client_for(url);
        let slots = Arc::new(Semaphore::new(3));
        let gated = account(&client).gated(&slots);
        let calls = (0..12).map(|_| gated.list_databases());
        for listed in futures::future::join_all(calls).await {
            assert!(listed.unwrap().is_empty());
        }
        assert_eq!(peak.load(std::sync::atomic::Ordering::SeqCst), 3);
        assert_eq!(held.load(std::sync::atomic::Ordering::SeqCst), 0);
        assert_eq!(slots.available_permits(), 3, "every slot is given back");

        // Without slots (the monitor's binding), the same calls all go at once.
        let (url, _, peak) = slow_server(Duration::from_millis(40)).await;
        let free = account(&client_for(url));
        let calls = (0..12).map(|_| free.list_databases());
        futures::future::join_all(calls).await;
        assert_eq!(peak.load(std::sync::atomic::Ordering::SeqCst), 12);
    }

    #[tokio::test]
    async fn no_slot_is_held_while_waiting_for_the_rate_limit() {
        let (url, _, _) = slow_server(Duration::ZERO).await;
        let config = ClientConfig {
            base_url: url,
            rate_limit_per_second: 1,
            rate_limit_burst: 1,
            ..ClientConfig::default()
        };
        let client = UpstashClient::new(config, Arc::new(Metrics::default())).unwrap();
        let slots = Arc::new(Semaphore::new(1));
        let api = account(&client).gated(&slots);
        // The only token of the burst.
        api.list_databases().await.unwrap();
        // A change waiting for the next token, and a read waiting for the change: neither may
        // keep the other (or anyone else) from the slot while it waits.
        let change = tokio::spawn({
            let api = api.clone();
            async move { api.delete_database("db-1").await }
        });
        let read = tokio::spawn({
            let api = api.clone();
            async move { api.list_databases().await }
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(
            !change.is_finished() && !read.is_finished(),
            "both wait for tokens"
        );
        assert_eq!(
            slots.available_permits(),
            1,
            "no slot is held while waiting"
        );
        change.await.unwrap().unwrap();
        read.await.unwrap().unwrap();
    }

    /// A Developer API stand-in that answers every request with `parts`, written one after the
    /// other with a pause between them.
    async fn answering_server(parts: Vec<Vec<u8>>) -> url::Url {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = url::Url::parse(&format!("http://{}", listener.local_addr().unwrap())).unwrap();
        let parts = Arc::new(parts);
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let parts = parts.clone();
                tokio::spawn(async move {
                    let mut seen = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                        match socket.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => seen.extend_from_slice(&buf[..n]),
                        }
                    }
                    for part in parts.iter() {
                        let _ = socket.write_all(part).await;
                        let _ = socket.flush().await;
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                });
            }
        });
        url
    }

    /// An HTTP/1.1 chunked encoding of `body`, in pieces of `size` bytes.
    fn chunked(body: &[u8], size: usize) -> Vec<Vec<u8>> {
        let mut parts: Vec<Vec<u8>> = body
            .chunks(size)
            .map(|c| {
                let mut part = format!("{:x}\r\n", c.len()).into_bytes();
                part.extend_from_slice(c);
                part.extend_from_slice(b"\r\n");
                part
            })
            .collect();
        parts.push(b"0\r\n\r\n".to_vec());
        parts
    }

    #[tokio::test]
    async fn a_list_keeps_ids_names_and_accounts_whatever_the_framing() {
        let listed: Vec<serde_json::Value> = (0..40)
            .map(|i| {
                serde_json::json!({
                    "database_id": format!("id-{i}"),
                    "database_name": format!("name-{i}"),
                    "customer_id": if i == 0 { serde_json::Value::Null } else { "team-1".into() },
                    "user_email": "ops@example.com",
                    "password": "p-very-secret",
                    "rest_token": "t-very-secret",
                    "endpoint": "x.upstash.io",
                    "port": 6379,
                    "read_regions": null,
                })
            })
            .collect();
        let body = serde_json::to_vec(&listed).unwrap();
        let want: Vec<ListedDatabase> = (0..40)
            .map(|i| ListedDatabase {
                database_id: format!("id-{i}"),
                database_name: format!("name-{i}"),
                customer_id: if i == 0 {
                    String::new()
                } else {
                    "team-1".into()
                },
                user_email: "ops@example.com".into(),
            })
            .collect();

        // Announced length, body in pieces.
        let mut head = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            body.len()
        )
        .into_bytes();
        head.extend_from_slice(&body[..100]);
        let parts = vec![head, body[100..1000].to_vec(), body[1000..].to_vec()];
        let api = account(&client_for(answering_server(parts).await));
        assert_eq!(api.list_databases().await.unwrap(), want);

        // No length: chunked transfer encoding.
        let mut parts = vec![
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n".to_vec(),
        ];
        parts.extend(chunked(&body, 333));
        let api = account(&client_for(answering_server(parts).await));
        assert_eq!(api.list_databases().await.unwrap(), want);
    }

    #[tokio::test]
    async fn an_error_answer_keeps_its_message_even_when_not_utf8() {
        let body = b"{\"error\":\"invalid region \xff\"}";
        let mut answer = format!(
            "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            body.len()
        )
        .into_bytes();
        answer.extend_from_slice(body);
        let api = account(&client_for(answering_server(vec![answer]).await));
        match api.list_databases().await {
            Err(UpstashError::Rejected { status, message }) => {
                assert_eq!(status, 400);
                assert!(message.contains("invalid region"), "{message}");
            }
            other => panic!("expected a rejection, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn an_answer_shorter_than_announced_is_an_error_not_a_list() {
        let answer = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 1000000000\r\nconnection: close\r\n\r\n[]".to_vec();
        let api = account(&client_for(answering_server(vec![answer]).await));
        let outcome = api.list_databases().await;
        assert!(outcome.is_err(), "{outcome:?}");
    }

    #[test]
    fn ids_are_one_path_segment() {
        assert_eq!(segment("96ad0856-03b1"), "96ad0856-03b1");
        assert_eq!(segment("../x y"), "..%2Fx%20y");
    }
}
