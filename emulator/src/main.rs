//! `upstash-emulator`: a local stand-in for Upstash (Developer API, stats, REST data API and Redis
//! protocol over TLS) with a control API for tests. See `emulator/README.md`.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, ValueEnum};
use upstash_emulator::engine::EngineOptions;
use upstash_emulator::{Config, Emulator, parse_accounts_file, parse_accounts_list};

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Json,
    Text,
}

/// A faithful local Upstash: Developer API under /v2/redis, REST data API and Redis protocol (RESP2)
/// over TLS, and a control API under /_emulator for tests.
#[derive(Debug, Parser)]
#[command(name = "upstash-emulator", version)]
struct Args {
    /// Developer API + control API listen address (plain HTTP). Port 0 picks a free port.
    #[arg(
        long,
        env = "UPSTASH_EMULATOR_API_ADDR",
        default_value = "127.0.0.1:8080"
    )]
    api_addr: SocketAddr,
    /// REST data API listen address (HTTPS, all databases). Port 0 picks a free port.
    #[arg(
        long,
        env = "UPSTASH_EMULATOR_DATA_ADDR",
        default_value = "127.0.0.1:8443"
    )]
    data_addr: SocketAddr,
    /// Redis protocol listen address (RESP2 over TLS, all databases, routed by password); its port
    /// is the databases' `port`. Port 0 (the default) picks a free port.
    #[arg(
        long,
        env = "UPSTASH_EMULATOR_RESP_ADDR",
        default_value = "127.0.0.1:0"
    )]
    resp_addr: SocketAddr,
    /// API keys as `email:apikey,email:apikey`; `;team=<name>` makes a team key,
    /// `;readonly` a read-only one (`ops@example.com:k2;team=Platform;readonly`).
    #[arg(long, env = "UPSTASH_EMULATOR_ACCOUNTS", hide_env_values = true)]
    accounts: Option<String>,
    /// File with one `email:apikey[;team=<name>][;readonly]` per line, or JSON
    /// (`{"email": "key"}` or `[{"email", "api_key", "team"?, "readonly"?}]`).
    #[arg(long, env = "UPSTASH_EMULATOR_ACCOUNTS_FILE")]
    accounts_file: Option<PathBuf>,
    /// Write the data plane's CA certificate (PEM) here.
    #[arg(long, env = "UPSTASH_EMULATOR_CA_OUT")]
    ca_out: Option<PathBuf>,
    /// Keep databases, key spaces and backups in this file across restarts.
    #[arg(long, env = "UPSTASH_EMULATOR_STATE_FILE")]
    state_file: Option<PathBuf>,
    /// Latency added to every Developer API call, in milliseconds.
    #[arg(long, env = "UPSTASH_EMULATOR_LATENCY_MS", default_value_t = 0)]
    latency_ms: u64,
    /// Domain of advertised endpoints (`<slug>.<domain>`); also added to the certificate.
    #[arg(long, env = "UPSTASH_EMULATOR_ENDPOINT_DOMAIN")]
    endpoint_domain: Option<String>,
    /// Require `Authorization: Bearer <token>` on the control API.
    #[arg(long, env = "UPSTASH_EMULATOR_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// The Redis server that runs the databases' commands (default: `redis-server`, else
    /// `valkey-server`, from PATH).
    #[arg(long, env = "UPSTASH_EMULATOR_REDIS_SERVER")]
    redis_server: Option<PathBuf>,
    /// Stop a database's Redis server after this many seconds without use (its data is kept).
    #[arg(long, env = "UPSTASH_EMULATOR_ENGINE_IDLE_SECS", default_value_t = 60)]
    engine_idle_secs: u64,
    /// Run at most this many Redis servers at once (the least recently used idle one stops).
    #[arg(long, env = "UPSTASH_EMULATOR_MAX_ENGINES", default_value_t = 64)]
    max_engines: usize,
    /// Keep this many Redis servers started ahead (after the first data-plane use), so that the
    /// first command of a database without data does not wait for one to start.
    #[arg(long, env = "UPSTASH_EMULATOR_SPARE_ENGINES", default_value_t = 2)]
    spare_engines: usize,
    /// Log format (logs go to stderr; stdout carries only the ready line).
    #[arg(
        long,
        env = "UPSTASH_EMULATOR_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    log_format: LogFormat,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match args.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }

    let mut accounts = vec![];
    if let Some(list) = &args.accounts {
        accounts.extend(parse_accounts_list(list)?);
    }
    if let Some(path) = &args.accounts_file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading accounts file {}", path.display()))?;
        accounts.extend(parse_accounts_file(&text)?);
    }
    let config = Config {
        api_addr: args.api_addr,
        data_addr: args.data_addr,
        resp_addr: args.resp_addr,
        accounts,
        ca_out: args.ca_out.clone(),
        state_file: args.state_file.clone(),
        latency_ms: args.latency_ms,
        endpoint_domain: args.endpoint_domain.clone(),
        admin_token: args.admin_token.clone(),
        engines: EngineOptions {
            program: args.redis_server.clone(),
            data_dir: None,
            idle_timeout: std::time::Duration::from_secs(args.engine_idle_secs),
            max_running: args.max_engines,
            spare_engines: args.spare_engines,
        },
    };
    let emu = Emulator::start(config).await?;
    let accounts: Vec<String> = emu.shared().lock().accounts.emails();
    let ready = serde_json::json!({
        "ready": true,
        "engine": emu.engine_version(),
        "api_url": emu.api_url(),
        "data_url": emu.data_url(),
        "resp_addr": emu.resp_addr().to_string(),
        "ca_file": emu.ca_file(),
        "accounts": accounts,
    });
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{ready}")?;
        out.flush()?;
    }
    let token = emu.shutdown_token();
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutting down");
        token.cancel();
    });
    emu.wait().await;
    Ok(())
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory as _;

    #[test]
    fn cli_is_consistent() {
        Args::command().debug_assert();
    }
}
