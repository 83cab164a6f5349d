//! The operator binary: parse flags, set up logging, run.

use clap::Parser;
use upstash_operator::{cli::Args, operator, telemetry, templates};

fn main() {
    tune_allocator();
    // The operator's binary also renders Secret templates, in bounded worker processes.
    if std::env::args_os().nth(1).as_deref() == Some(templates::WORKER_ARG.as_ref()) {
        std::process::exit(templates::worker_main());
    }
    run();
}

#[tokio::main]
async fn run() {
    let args = Args::parse();
    if let Err(e) = telemetry::init(args.log_format, &args.log_level) {
        eprintln!("upstash-operator: invalid log settings: {e}");
        std::process::exit(2);
    }
    if let Err(e) = operator::run(args).await {
        let code = e.downcast_ref::<operator::Fatal>().map_or(1, |f| f.code);
        tracing::error!(err = format!("{e:#}"), "upstash-operator stopped");
        eprintln!("upstash-operator: {e:#}");
        std::process::exit(code);
    }
}

/// Allocator settings for glibc builds (the release image is a static musl binary, whose
/// allocator gives freed memory back eagerly and needs none of this). Here, in the binary,
/// because the library forbids `unsafe`.
///
/// glibc serves an allocation of at least `M_MMAP_THRESHOLD` (128 KiB by default) with a mapping
/// of its own, given back when freed, but by default it *raises* that threshold to the size of
/// each such block freed, up to 32 MiB. After the first large short-lived buffer (a page of
/// listed objects, an answer being read, a growing `Vec`), buffers of that size come from the
/// heap instead, and once freed they stay in the process's RSS wherever other allocations keep
/// the heap from shrinking. Which of them stay is a matter of timing, so the RSS after a burst
/// varied by up to 3 MiB between runs of the same bench (BENCHMARKS.md). Fixing the threshold
/// at its default keeps large buffers in mappings of their own, counted while they live and
/// given back when freed.
fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `mallopt` only changes allocator parameters, and it runs before any other thread
    // exists, as glibc asks.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
}
