//! Listeners: accepts connections (plain or TLS), serves an axum router on each, and gives handlers
//! a way to drop their connection without answering (the `lose_response` fault). Also the shared
//! request wrapper that applies faults and writes the call log for both planes.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use http::{HeaderValue, StatusCode, header};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio_rustls::{TlsAcceptor, server::TlsStream};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;

use crate::Shared;
use crate::calllog::Call;
use crate::faults::FaultRule;

/// Per-connection facts, inserted into every request's extensions.
#[derive(Clone)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    kill: Arc<Notify>,
}

impl ConnInfo {
    /// Drops the connection without sending anything more.
    pub fn kill(&self) {
        self.kill.notify_one();
    }
}

/// Accepts connections until shutdown and hands each one (Nagle off) to `handle`. A failed
/// accept (e.g. out of file descriptors) is logged and retried after 50 ms.
pub async fn accept_until_shutdown(
    listener: TcpListener,
    shutdown: &CancellationToken,
    mut handle: impl FnMut(TcpStream, SocketAddr),
) {
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => return,
        };
        let _ = stream.set_nodelay(true);
        handle(stream, peer);
    }
}

/// The server side of a TLS handshake; `None` when it fails (logged) or shutdown comes first.
pub async fn tls_handshake(
    acceptor: &TlsAcceptor,
    stream: TcpStream,
    peer: SocketAddr,
    shutdown: &CancellationToken,
) -> Option<TlsStream<TcpStream>> {
    tokio::select! {
        r = acceptor.accept(stream) => match r {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::debug!(error = %e, %peer, "TLS handshake failed");
                None
            }
        },
        _ = shutdown.cancelled() => None,
    }
}

/// Serves `router` on every connection (plain, or TLS with `tls`) until shutdown.
pub async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    router: Router,
    shutdown: CancellationToken,
) {
    accept_until_shutdown(listener, &shutdown, |stream, peer| {
        let router = router.clone();
        let tls = tls.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let conn = ConnInfo {
                peer,
                kill: Arc::new(Notify::new()),
            };
            let kill = conn.kill.clone();
            let svc =
                hyper::service::service_fn(move |mut req: http::Request<hyper::body::Incoming>| {
                    req.extensions_mut().insert(conn.clone());
                    router.clone().oneshot(req.map(Body::new))
                });
            let builder = Builder::new(TokioExecutor::new());
            match tls {
                Some(acceptor) => {
                    let Some(stream) = tls_handshake(&acceptor, stream, peer, &shutdown).await
                    else {
                        return;
                    };
                    let fut = builder.serve_connection(TokioIo::new(stream), svc);
                    tokio::select! {
                        _ = fut => {}
                        _ = kill.notified() => {}
                        _ = shutdown.cancelled() => {}
                    }
                }
                None => {
                    let fut = builder.serve_connection(TokioIo::new(stream), svc);
                    tokio::select! {
                        _ = fut => {}
                        _ = kill.notified() => {}
                        _ = shutdown.cancelled() => {}
                    }
                }
            }
        });
    })
    .await;
}

/// The result of performing an operation.
pub struct Outcome {
    pub status: StatusCode,
    pub body: Bytes,
    pub headers: Vec<(header::HeaderName, HeaderValue)>,
}

impl Outcome {
    pub fn json(status: StatusCode, v: &serde_json::Value) -> Self {
        Outcome {
            status,
            body: Bytes::from(serde_json::to_vec(v).unwrap_or_default()),
            headers: vec![],
        }
    }

    pub fn into_response(self) -> Response {
        let mut r = Response::new(Body::from(self.body));
        *r.status_mut() = self.status;
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        for (k, v) in self.headers {
            r.headers_mut().insert(k, v);
        }
        r
    }
}

/// One request as the wrapper sees it.
pub struct Exchange<'a> {
    pub shared: &'a Arc<Shared>,
    pub conn: &'a ConnInfo,
    pub plane: &'static str,
    pub account: Option<String>,
    pub method: String,
    pub path: String,
    pub endpoint: String,
    pub database_id: Option<String>,
    /// Latency added before anything else (the global Developer API latency).
    pub base_latency_ms: u64,
    /// Default body of an injected error status.
    pub error_body: fn(StatusCode) -> serde_json::Value,
}

impl Exchange<'_> {
    fn log(&self, status: u16, fault: Option<&FaultRule>, started: Instant) {
        self.log_with(status, fault, started, None);
    }

    fn log_with(
        &self,
        status: u16,
        fault: Option<&FaultRule>,
        started: Instant,
        body: Option<&Bytes>,
    ) {
        // A create's database id is only known from its response.
        let database_id = self.database_id.clone().or_else(|| {
            let body = body.filter(|_| self.endpoint == "create")?;
            let v: serde_json::Value = serde_json::from_slice(body).ok()?;
            v.get("database_id")?.as_str().map(str::to_string)
        });
        let call = Call {
            seq: 0,
            time: jiff::Timestamp::now().to_string(),
            plane: self.plane.into(),
            account: self.account.clone(),
            method: self.method.clone(),
            path: self.path.clone(),
            endpoint: self.endpoint.clone(),
            status,
            database_id,
            fault: fault.map(|f| f.id),
            duration_ms: started.elapsed().as_secs_f64() * 1000.0,
        };
        // Developer API calls at info; data-plane requests (far more numerous) at debug.
        if self.plane == "api" {
            tracing::info!(
                plane = self.plane,
                method = %self.method,
                path = %self.path,
                endpoint = %self.endpoint,
                status,
                fault = fault.map(|f| f.id),
                "request"
            );
        } else {
            tracing::debug!(
                plane = self.plane,
                method = %self.method,
                path = %self.path,
                endpoint = %self.endpoint,
                status,
                fault = fault.map(|f| f.id),
                "request"
            );
        }
        self.shared.calls_lock().push(call);
    }

    /// Applies the global latency and any matching fault around `op`, and logs the call.
    pub async fn run<F>(self, op: F) -> Response
    where
        F: Future<Output = Outcome>,
    {
        let started = Instant::now();
        if self.base_latency_ms > 0 {
            tokio::time::sleep(Duration::from_millis(self.base_latency_ms)).await;
        }
        let fault = self
            .shared
            .faults_lock()
            .take(&self.endpoint, self.database_id.as_deref());
        let Some(fault) = fault else {
            let out = op.await;
            self.log_with(out.status.as_u16(), None, started, Some(&out.body));
            return out.into_response();
        };
        let spec = &fault.spec;
        if let Some(ms) = spec.latency_ms {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        if spec.timeout {
            self.log(0, Some(&fault), started);
            // Hold the request until the client gives up (or the emulator stops).
            std::future::pending::<()>().await;
        }
        if let Some(status) = spec.error_status() {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let body = match &spec.body {
                Some(b) => Bytes::from(b.clone()),
                None => {
                    Bytes::from(serde_json::to_vec(&(self.error_body)(status)).unwrap_or_default())
                }
            };
            let mut headers = vec![];
            if let Some(ra) = spec.retry_after
                && let Ok(v) = HeaderValue::from_str(&ra.to_string())
            {
                headers.push((header::RETRY_AFTER, v));
            }
            self.log(status.as_u16(), Some(&fault), started);
            return Outcome {
                status,
                body,
                headers,
            }
            .into_response();
        }
        let out = op.await;
        if spec.lose_response {
            if let Some(status) = spec.status {
                let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
                self.log_with(status.as_u16(), Some(&fault), started, Some(&out.body));
                return Outcome {
                    status,
                    body: Bytes::new(),
                    headers: vec![],
                }
                .into_response();
            }
            self.log_with(0, Some(&fault), started, Some(&out.body));
            self.conn.kill();
            std::future::pending::<()>().await;
        }
        if spec.truncate {
            let cut = out.body.len() / 2;
            self.log_with(out.status.as_u16(), Some(&fault), started, Some(&out.body));
            return Outcome {
                status: out.status,
                body: out.body.slice(..cut),
                headers: out.headers,
            }
            .into_response();
        }
        self.log_with(out.status.as_u16(), Some(&fault), started, Some(&out.body));
        out.into_response()
    }
}
