//! `upstash-bench`: benchmarks at scale and a chaos run of upstash-operator, with real parts
//! only (the real control plane from `tools/testenv`, the release-built operator) and the
//! Upstash emulator as the one stand-in. Run it through `scripts/bench.sh`, which builds
//! everything first; see `BENCHMARKS.md` for the results and how to read them.

mod chaos;
mod common;
mod emulator_scale;
mod lower_bound;
mod observe;
mod report;
mod scale;
mod stack;
mod stats;

use std::{fmt::Write as _, path::PathBuf, time::Duration};

use anyhow::Context as _;
use clap::{Parser, ValueEnum};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// N = 100 and 1,000 (or `--n`): convergence, steady state, deletion.
    Scale,
    /// N = 200 (or `--n`) with SIGKILLs and failing Upstash calls.
    Chaos,
    /// Both.
    All,
    /// The emulator alone with N = 1,000 and 10,000 databases (or `--n`): memory and CPU with
    /// and without data-plane traffic (no operator, no control plane).
    Emulator,
}

/// Benchmarks at scale and a chaos run of upstash-operator.
#[derive(Debug, Parser)]
#[command(name = "upstash-bench")]
struct Args {
    #[arg(value_enum, default_value = "all")]
    mode: Mode,
    /// Instances: the scale runs (comma separated), or the chaos run's N with `chaos`.
    #[arg(long, value_delimiter = ',')]
    n: Vec<usize>,
    /// Instances of the chaos run with `all`.
    #[arg(long, default_value_t = 200)]
    chaos_n: usize,
    /// Latency the emulator adds to every Developer API call.
    #[arg(long, default_value_t = 50)]
    latency_ms: u64,
    /// The operator's `--concurrency`.
    #[arg(long, default_value_t = 8)]
    concurrency: u16,
    /// The operator's `--upstash-rate-limit` (requests per second).
    #[arg(long, default_value_t = 20)]
    upstash_rate_limit: u32,
    /// The limit raised: `--upstash-rate-limit 1000 --concurrency 10` (overrides both), where
    /// only latency, concurrency and the control plane bound the result.
    #[arg(long)]
    raised_limit: bool,
    /// `--resync-interval` of the steady-state phase, in seconds.
    #[arg(long, default_value_t = 30)]
    resync_interval: u64,
    /// Resync intervals the steady-state window lasts.
    #[arg(long, default_value_t = 3)]
    steady_intervals: u32,
    /// Scale: new CacheInstances applied right after a restart (provisioning during a restart).
    #[arg(long, default_value_t = 20)]
    provision_during_restart: usize,
    /// Extra operator flag (repeatable), e.g. `--operator-arg=--default-thresholds=false`.
    #[arg(long = "operator-arg", allow_hyphen_values = true)]
    operator_args: Vec<String>,
    /// Scale: CachePolicies in the namespace, each selecting an equal share of the instances
    /// by label (0: none; the instances get the default thresholds).
    #[arg(long, default_value_t = 0)]
    policies: usize,
    /// CacheInstance POSTs and DELETEs the bench sends at a time.
    #[arg(long, default_value_t = 16)]
    parallel: usize,
    /// Longest wait for all Ready / all gone, in seconds.
    #[arg(long, default_value_t = 1800)]
    timeout: u64,
    /// Chaos: share of Developer API calls that fail.
    #[arg(long, default_value_t = 0.25)]
    fault_rate: f64,
    /// Chaos: skip the fault-free run of the same N (the chaos time is compared with it).
    #[arg(long)]
    no_baseline: bool,
    /// Chaos: SIGKILLs while provisioning.
    #[arg(long, default_value_t = 6)]
    kills: u32,
    /// Chaos: SIGKILLs while deleting.
    #[arg(long, default_value_t = 3)]
    delete_kills: u32,
    /// Chaos: a kill comes between this and `--kill-after-max-ms` after the previous start.
    #[arg(long, default_value_t = 500)]
    kill_after_min_ms: u64,
    #[arg(long, default_value_t = 6000)]
    kill_after_max_ms: u64,
    /// Chaos: the operator's `--upstash-timeout`, in seconds (timeout faults hold requests
    /// until the client gives up).
    #[arg(long, default_value_t = 3)]
    upstash_timeout: u64,
    /// Emulator: databases whose data plane is used (PING, SET, GET, INFO).
    #[arg(long, default_value_t = 200)]
    probe: usize,
    /// Chaos: random seed (default: random, printed).
    #[arg(long)]
    seed: Option<u64>,
    /// Where results go (default `$CARGO_TARGET_DIR/bench` or `target/bench`).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Directory of the release binaries (default: this executable's).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
}

/// `nproc`, memory, CPU model and kernel.
fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem_kb: u64 = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))?
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()
        })
        .unwrap_or(0);
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))?
                .split_once(':')
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    format!(
        "{cpus} CPUs (nproc), {:.1} GiB memory, {model}, Linux {kernel}",
        mem_kb as f64 / 1024.0 / 1024.0
    )
}

fn out_dir(args: &Args) -> PathBuf {
    args.out
        .clone()
        .unwrap_or_else(|| testkit::target_dir().join("bench"))
}

fn stamp() -> String {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs().to_string())
        .unwrap_or_default()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = Args::parse();
    if args.raised_limit {
        args.upstash_rate_limit = 1000;
        args.concurrency = 10;
    }
    let bins = stack::Binaries::locate(args.bin_dir.as_deref())?;
    let out = out_dir(&args);
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let machine = machine();
    eprintln!("bench: {machine}");
    if args.mode == Mode::Emulator {
        let ns = if args.n.is_empty() {
            vec![1000, 10_000]
        } else {
            args.n.clone()
        };
        let mut results = Vec::new();
        for n in ns {
            let cfg = emulator_scale::EmulatorConfig {
                n,
                probe: args.probe.min(n),
                parallel: args.parallel,
            };
            let result = emulator_scale::run(&bins, cfg).await?;
            let path = out.join(format!("emulator-{n}-{}.json", stamp()));
            std::fs::write(&path, serde_json::to_vec_pretty(&result)?)?;
            eprintln!("bench: wrote {}", path.display());
            results.push(result);
        }
        let markdown = format!(
            "Machine: {machine}.\n\n## The emulator alone\n\n{}",
            emulator_scale::markdown(&results)
        );
        let path = out.join(format!("results-emulator-{}.md", stamp()));
        std::fs::write(&path, &markdown)?;
        println!("{markdown}");
        eprintln!("bench: wrote {}", path.display());
        return Ok(());
    }
    let cluster = testkit::cluster().await;
    let mut markdown = format!(
        "Machine: {machine}. Kubernetes {} (tools/testenv).\n\n",
        cluster.version()
    );
    let mut failed = false;

    if matches!(args.mode, Mode::Scale | Mode::All) {
        let ns = if args.n.is_empty() {
            vec![100, 1000]
        } else {
            args.n.clone()
        };
        let mut results = Vec::new();
        for n in ns {
            let cfg = scale::ScaleConfig {
                n,
                latency_ms: args.latency_ms,
                concurrency: args.concurrency,
                rate_limit: args.upstash_rate_limit,
                converge_resync: Duration::from_secs(600),
                steady_resync: Duration::from_secs(args.resync_interval),
                steady_intervals: args.steady_intervals,
                provision_during_restart: args.provision_during_restart,
                extra_args: args.operator_args.clone(),
                policies: args.policies,
                client_parallelism: args.parallel,
                ready_timeout: Duration::from_secs(args.timeout),
            };
            let result = scale::run(cluster, &bins, cfg).await?;
            let path = out.join(format!(
                "scale-{n}{}{}-{}.json",
                if args.raised_limit { "-raised" } else { "" },
                if args.policies > 0 {
                    format!("-policies-{}", args.policies)
                } else {
                    String::new()
                },
                stamp()
            ));
            std::fs::write(&path, serde_json::to_vec_pretty(&result)?)?;
            eprintln!("bench: wrote {}", path.display());
            results.push(result);
        }
        let table = report::scale_markdown(&results);
        let _ = writeln!(markdown, "## Scale\n\n{table}");
        let targets = report::scale_targets(&results);
        let _ = writeln!(markdown, "Targets:\n\n{targets}");
    }

    if matches!(args.mode, Mode::Chaos | Mode::All) {
        let n = match (args.mode, args.n.first()) {
            (Mode::Chaos, Some(n)) => *n,
            _ => args.chaos_n,
        };
        let seed = args.seed.unwrap_or_else(rand::random);
        let cfg = chaos::ChaosConfig {
            n,
            latency_ms: args.latency_ms,
            concurrency: args.concurrency,
            rate_limit: args.upstash_rate_limit,
            upstash_timeout: Duration::from_secs(args.upstash_timeout),
            fault_rate: args.fault_rate,
            provision_kills: args.kills,
            delete_kills: args.delete_kills,
            kill_after_min: Duration::from_millis(args.kill_after_min_ms),
            kill_after_max: Duration::from_millis(
                args.kill_after_max_ms.max(args.kill_after_min_ms),
            ),
            seed,
            baseline: !args.no_baseline,
            extra_args: args.operator_args.clone(),
            client_parallelism: args.parallel,
            timeout: Duration::from_secs(args.timeout),
        };
        let result = chaos::run(cluster, &bins, cfg).await?;
        let path = out.join(format!("chaos-{n}-{}.json", stamp()));
        std::fs::write(&path, serde_json::to_vec_pretty(&result)?)?;
        eprintln!("bench: wrote {}", path.display());
        let path = out.join(format!("chaos-{n}-calls-{}.json", stamp()));
        std::fs::write(&path, serde_json::to_vec(&result.raw_calls)?)?;
        eprintln!("bench: wrote {} (every Developer API call)", path.display());
        let _ = writeln!(
            markdown,
            "## Chaos (seed {seed})\n\n{}",
            report::chaos_markdown(&result)
        );
        failed |= !result.problems.is_empty();
    }

    let path = out.join(format!("results-{}.md", stamp()));
    std::fs::write(&path, &markdown)?;
    println!("{markdown}");
    eprintln!("bench: wrote {}", path.display());
    // An error return (not `process::exit`) lets the runtime drop every task first, so the
    // emulators and operators the runs started are stopped with them.
    anyhow::ensure!(
        !failed,
        "a target was not met or the chaos check failed (see the tables above)"
    );
    Ok(())
}
