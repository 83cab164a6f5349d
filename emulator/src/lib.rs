//! upstash-emulator: a faithful local stand-in for Upstash — the Developer API under
//! `/v2/redis/...` and `/v2/teams`, database stats, the REST data API over TLS and the Redis
//! protocol (RESP2) over TLS, with every database's commands running on a real Redis server —
//! plus a control API under `/_emulator/` for tests (fault injection, stats overrides, call log,
//! data limits, archival).
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use upstash_emulator::{Config, Emulator};
//! let emu = Emulator::start(Config::default().with_account("dev@example.com", "key")).await?;
//! println!("{} {}", emu.api_url(), emu.data_url());
//! emu.shutdown().await;
//! # Ok(()) }
//! ```

pub mod accounts;
pub mod acl;
pub mod api;
pub mod audit;
pub mod calllog;
pub mod control;
pub mod data_plane;
pub mod engine;
pub mod faults;
pub mod ids;
pub mod model;
pub mod reply;
pub mod resp;
pub mod scripts;
pub mod server;
mod spawn;
pub mod state;
pub mod stats;
pub mod tls;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use axum::Router;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use crate::accounts::{
    KeySpec, parse_file as parse_accounts_file, parse_list as parse_accounts_list,
};
use crate::calllog::CallLog;
use crate::engine::{EngineOptions, Engines};
use crate::faults::Faults;
use crate::state::{EndpointStyle, Persister, State};

/// The default account used when none is configured.
pub const DEFAULT_ACCOUNT: (&str, &str) = ("emulator@upstash.local", "emulator-api-key");

/// How to run the emulator.
#[derive(Debug, Clone)]
pub struct Config {
    /// Developer API + control API (plain HTTP).
    pub api_addr: SocketAddr,
    /// REST data API (HTTPS).
    pub data_addr: SocketAddr,
    /// Redis protocol (RESP2 over TLS) of every database, routed by password; its port is the
    /// databases' `port` in the Developer API.
    pub resp_addr: SocketAddr,
    /// API keys (personal, team, read-only). Empty = the single [`DEFAULT_ACCOUNT`].
    pub accounts: Vec<KeySpec>,
    /// Where to write the CA certificate (PEM).
    pub ca_out: Option<PathBuf>,
    /// State file (loaded on start, saved after each mutation).
    pub state_file: Option<PathBuf>,
    /// Latency added to every Developer API call.
    pub latency_ms: u64,
    /// Domain for advertised endpoints (`<slug>.<domain>`).
    pub endpoint_domain: Option<String>,
    /// When set, the control API requires `Authorization: Bearer <token>`.
    pub admin_token: Option<String>,
    /// How the databases' Redis engines run (the binary, idle timeout, how many at once).
    pub engines: EngineOptions,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            api_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            data_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            resp_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            accounts: vec![],
            ca_out: None,
            state_file: None,
            latency_ms: 0,
            endpoint_domain: None,
            admin_token: None,
            engines: EngineOptions::default(),
        }
    }
}

impl Config {
    /// Adds a personal API key.
    pub fn with_account(mut self, email: &str, api_key: &str) -> Self {
        self.accounts.push(KeySpec::personal(email, api_key));
        self
    }

    /// Adds an API key of `email` that acts for the team named `team` (created if missing).
    pub fn with_team_key(mut self, email: &str, api_key: &str, team: &str) -> Self {
        let mut k = KeySpec::personal(email, api_key);
        k.team = Some(team.to_string());
        self.accounts.push(k);
        self
    }

    /// Adds a read-only personal API key.
    pub fn with_read_only_key(mut self, email: &str, api_key: &str) -> Self {
        let mut k = KeySpec::personal(email, api_key);
        k.read_only = true;
        self.accounts.push(k);
        self
    }
}

/// Runtime settings shared by the handlers.
pub struct Settings {
    pub endpoint: EndpointStyle,
    pub admin_token: Option<String>,
    pub started: Instant,
    pub config_accounts: Vec<KeySpec>,
}

/// State shared by all handlers.
pub struct Shared {
    pub state: Arc<Mutex<State>>,
    pub faults: Mutex<Faults>,
    pub calls: Mutex<CallLog>,
    /// The audit log (`GET /v2/auditlogs`).
    pub audit: Mutex<audit::AuditLog>,
    pub latency_ms: AtomicU64,
    pub settings: Settings,
    pub persister: Option<Arc<Persister>>,
    /// The databases' Redis engines.
    pub engines: Arc<Engines>,
}

impl Shared {
    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
    pub fn faults_lock(&self) -> MutexGuard<'_, Faults> {
        self.faults.lock().unwrap_or_else(|e| e.into_inner())
    }
    pub fn calls_lock(&self) -> MutexGuard<'_, CallLog> {
        self.calls.lock().unwrap_or_else(|e| e.into_inner())
    }
    pub fn audit_lock(&self) -> MutexGuard<'_, audit::AuditLog> {
        self.audit.lock().unwrap_or_else(|e| e.into_inner())
    }
    /// Schedules a state-file save.
    pub fn mark_dirty(&self) {
        if let Some(p) = &self.persister {
            p.mark_dirty();
        }
    }
    pub fn latency(&self) -> u64 {
        self.latency_ms.load(Ordering::Relaxed)
    }
}

/// Entry point.
pub struct Emulator;

/// A started emulator.
pub struct RunningEmulator {
    api_addr: SocketAddr,
    data_addr: SocketAddr,
    resp_addr: SocketAddr,
    ca_pem: String,
    ca_file: Option<PathBuf>,
    shutdown: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
    shared: Arc<Shared>,
}

impl Emulator {
    /// Binds the listeners (API, REST data, RESP) and starts serving.
    pub async fn start(config: Config) -> anyhow::Result<RunningEmulator> {
        let mut state = match &config.state_file {
            Some(p) => state::load(p)?,
            None => State::default(),
        };
        let config_accounts = if config.accounts.is_empty() {
            vec![KeySpec::personal(DEFAULT_ACCOUNT.0, DEFAULT_ACCOUNT.1)]
        } else {
            config.accounts.clone()
        };
        for k in &config_accounts {
            state.accounts.add(k)?;
        }
        // Key spaces live beside the state file, or in a temporary directory.
        let mut engine_options = config.engines.clone();
        if engine_options.data_dir.is_none()
            && let Some(p) = &config.state_file
        {
            let mut dir = p.clone().into_os_string();
            dir.push(".data");
            engine_options.data_dir = Some(PathBuf::from(dir));
        }
        let engines = Arc::new(Engines::new(&engine_options, config.state_file.is_some())?);

        let api_listener = TcpListener::bind(config.api_addr)
            .await
            .with_context(|| format!("binding the API address {}", config.api_addr))?;
        let data_listener = TcpListener::bind(config.data_addr)
            .await
            .with_context(|| format!("binding the data address {}", config.data_addr))?;
        let resp_listener = TcpListener::bind(config.resp_addr)
            .await
            .with_context(|| format!("binding the RESP address {}", config.resp_addr))?;
        let api_addr = api_listener.local_addr()?;
        let data_addr = data_listener.local_addr()?;
        let resp_addr = resp_listener.local_addr()?;

        let tls = tls::setup(state.ca.take(), config.endpoint_domain.as_deref())?;
        state.ca = Some(tls.ca.clone());
        let ca_pem = tls.ca.cert_pem.clone();
        if let Some(p) = &config.ca_out {
            if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
            }
            std::fs::write(p, &ca_pem).with_context(|| format!("writing CA to {}", p.display()))?;
        }

        let shutdown = CancellationToken::new();
        let state = Arc::new(Mutex::new(state));
        let persister = config
            .state_file
            .as_ref()
            .map(|p| Arc::new(Persister::new(p.clone())));
        let shared = Arc::new(Shared {
            state: state.clone(),
            faults: Mutex::new(Faults::default()),
            calls: Mutex::new(CallLog::default()),
            audit: Mutex::new(audit::AuditLog::default()),
            latency_ms: AtomicU64::new(config.latency_ms),
            settings: Settings {
                endpoint: EndpointStyle {
                    domain: config.endpoint_domain.clone(),
                    data_port: data_addr.port(),
                    resp_port: resp_addr.port(),
                },
                admin_token: config.admin_token.clone(),
                started: Instant::now(),
                config_accounts,
            },
            persister: persister.clone(),
            engines: engines.clone(),
        });

        let mut tasks = vec![];
        tasks.push(tokio::spawn(reap_engines(shared.clone(), shutdown.clone())));
        if let Some(p) = persister {
            p.save_now(&state);
            tasks.push(tokio::spawn(p.run(state.clone(), shutdown.clone())));
        }
        let api_router = Router::new()
            .nest("/_emulator", control::router(shared.clone()))
            .fallback(api::dispatch)
            .with_state(shared.clone());
        let data_router = Router::new()
            .fallback(data_plane::handle)
            .with_state(shared.clone());
        tasks.push(tokio::spawn(server::serve(
            api_listener,
            None,
            api_router,
            shutdown.clone(),
        )));
        let acceptor = tokio_rustls::TlsAcceptor::from(tls.server_config);
        tasks.push(tokio::spawn(server::serve(
            data_listener,
            Some(acceptor.clone()),
            data_router,
            shutdown.clone(),
        )));
        tasks.push(tokio::spawn(resp::serve(
            resp_listener,
            acceptor,
            shared.clone(),
            shutdown.clone(),
        )));
        tracing::info!(%api_addr, %data_addr, %resp_addr, engine = %engines.version(), "upstash-emulator listening");
        Ok(RunningEmulator {
            api_addr,
            data_addr,
            resp_addr,
            ca_pem,
            ca_file: config.ca_out.clone(),
            shutdown,
            tasks,
            shared,
        })
    }
}

impl RunningEmulator {
    pub fn api_addr(&self) -> SocketAddr {
        self.api_addr
    }
    pub fn data_addr(&self) -> SocketAddr {
        self.data_addr
    }
    /// The RESP listener (Redis protocol over TLS): `rediss://default:<password>@localhost:<port>`.
    pub fn resp_addr(&self) -> SocketAddr {
        self.resp_addr
    }
    /// `http://<api addr>` — the Developer API base URL (paths `/v2/redis/...`).
    pub fn api_url(&self) -> String {
        format!("http://{}", self.api_addr)
    }
    /// `https://localhost:<data port>` — the data plane (all databases; routed by token).
    pub fn data_url(&self) -> String {
        format!("https://localhost:{}", self.data_addr.port())
    }
    /// The CA certificate (PEM) that signs the data plane's certificate.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }
    pub fn ca_file(&self) -> Option<&PathBuf> {
        self.ca_file.as_ref()
    }
    /// Access to the shared state (for in-process assertions).
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }
    /// A token that stops the emulator when cancelled.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }
    /// Stops serving, stops the engines (saving key spaces when there is a state file), saves
    /// the state file, and waits for the listeners to close.
    pub async fn shutdown(mut self) {
        self.shared.engines.stop_all().await;
        data_plane::record(&self.shared, "", &[], None);
        self.shutdown.cancel();
        for t in std::mem::take(&mut self.tasks) {
            let _ = t.await;
        }
    }

    /// The engine binary's version line (`Redis server v=7.0.15 ...`).
    pub fn engine_version(&self) -> &str {
        self.shared.engines.version()
    }
    /// Waits until the shutdown token is cancelled, then shuts down.
    pub async fn wait(self) {
        self.shutdown.cancelled().await;
        self.shutdown().await;
    }
}

impl Drop for RunningEmulator {
    /// Dropping stops the listeners (without waiting for the final state-file save).
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Stops idle engines every second and records their last counters.
async fn reap_engines(shared: Arc<Shared>, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {
                shared.engines.reap().await;
                data_plane::record(&shared, "", &[], None);
            }
            _ = shutdown.cancelled() => return,
        }
    }
}
