//! The operator binary: parse flags, set up logging, run.

use clap::Parser;
use upstash_operator::{cli::Args, operator, telemetry, templates};

fn main() {
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
