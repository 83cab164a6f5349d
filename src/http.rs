//! The operator's own HTTP server: `/healthz` (alive), `/readyz` (watches warm),
//! `/metrics` (Prometheus text) and `/status` (a JSON health page with cache figures and the
//! circuit breaker's state).

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use axum::{
    Json, Router,
    extract::State,
    http::{StatusCode, header},
    response::IntoResponse,
    routing::get,
};

use crate::metrics::Metrics;

/// Produces the `/status` document.
pub type StatusFn = Arc<dyn Fn() -> serde_json::Value + Send + Sync>;

/// Shared state of the HTTP server.
#[derive(Clone)]
pub struct AdminState {
    pub ready: Arc<AtomicBool>,
    pub metrics: Arc<Metrics>,
    pub status: StatusFn,
}

/// The router, separate from the listener so tests can drive it.
pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/livez", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/status", get(status))
        .with_state(state)
}

async fn readyz(State(state): State<AdminState>) -> impl IntoResponse {
    if state.ready.load(Ordering::Acquire) {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "caches are not warm yet")
    }
}

/// Chunks of the `/metrics` text written ahead of the reader.
const METRICS_CHUNKS_IN_FLIGHT: usize = 2;

/// The text exposition, streamed as it is written (see [`Metrics::render_chunks`]); written on a
/// blocking thread, since at 10,000 instances it takes tens of milliseconds.
async fn metrics(State(state): State<AdminState>) -> impl IntoResponse {
    // Bounded: the writer waits for the reader, so that no more than a few chunks are held
    // at once however slowly the scraper reads.
    let (tx, rx) = tokio::sync::mpsc::channel::<String>(METRICS_CHUNKS_IN_FLIGHT);
    let metrics = state.metrics.clone();
    tokio::task::spawn_blocking(move || {
        metrics.render_chunks(|chunk| tx.blocking_send(chunk).is_ok());
    });
    let rx = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|chunk| (Ok::<_, std::convert::Infallible>(chunk), rx))
    });
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        axum::body::Body::from_stream(rx),
    )
}

async fn status(State(state): State<AdminState>) -> impl IntoResponse {
    Json((state.status)())
}

/// Serves the router on `addr` until `shutdown` resolves.
pub async fn serve(
    addr: SocketAddr,
    state: AdminState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?;
    tracing::info!(address = %listener.local_addr()?, "serving /healthz /readyz /metrics /status");
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await?;
    Ok(())
}
