//! `kubectl upstash`: a kubectl plugin (krew naming: the binary `kubectl-upstash` on `PATH`)
//! that previews what the operator would do and lists the instances. It reads the Kubernetes API
//! only (no Upstash credentials) and writes nothing.
//!
//! - `kubectl upstash plan -f cache.yaml`: for each CacheInstance in the file, the changes the
//!   operator would make against the live object and its status; exit code 2 when anything would
//!   change, 0 when nothing would, 1 on an error.
//! - `kubectl upstash status [-n NAMESPACE | -A]`: readiness, plan, cost, firing alerts and
//!   pending changes of each instance.

use std::{path::PathBuf, process::ExitCode, sync::Arc};

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use k8s_openapi::jiff::Timestamp;
use kube::{
    Api, Client, Config, ResourceExt,
    api::ListParams,
    config::{KubeConfigOptions, Kubeconfig},
};
use upstash_operator::{
    crd::{CacheInstance, CachePolicy, MaintenanceWindow},
    guardrails, plugin,
};

#[derive(Parser)]
#[command(
    name = "kubectl upstash",
    bin_name = "kubectl upstash",
    version,
    about = "Preview and list Upstash caches managed by upstash-operator"
)]
struct Cli {
    /// Namespace (default: the manifest's, else the kubeconfig context's).
    #[arg(short = 'n', long, global = true)]
    namespace: Option<String>,
    /// Kubeconfig context to use (default: the current context).
    #[arg(long, global = true)]
    context: Option<String>,
    /// Path to the kubeconfig file (default: $KUBECONFIG, else ~/.kube/config).
    #[arg(long, global = true)]
    kubeconfig: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Show the changes applying a manifest would make. Exit code 2: something would change.
    Plan {
        /// The manifest (YAML, one or more documents; `-` reads standard input).
        #[arg(short = 'f', long = "filename", required = true)]
        files: Vec<PathBuf>,
    },
    /// List the CacheInstances with readiness, plan, cost, alerts and pending changes.
    Status {
        /// Every namespace.
        #[arg(short = 'A', long)]
        all_namespaces: bool,
    },
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

async fn config(cli: &Cli) -> anyhow::Result<Config> {
    let options = KubeConfigOptions {
        context: cli.context.clone(),
        ..Default::default()
    };
    let config = match &cli.kubeconfig {
        Some(path) => {
            let file = Kubeconfig::read_from(path)
                .with_context(|| format!("reading {}", path.display()))?;
            Config::from_custom_kubeconfig(file, &options).await?
        }
        None if cli.context.is_some() => Config::from_kubeconfig(&options).await?,
        None => Config::infer().await?,
    };
    Ok(config)
}

async fn run(cli: Cli) -> anyhow::Result<u8> {
    let config = config(&cli).await.context("loading the kubeconfig")?;
    let default_ns = cli
        .namespace
        .clone()
        .unwrap_or_else(|| config.default_namespace.clone());
    let client = Client::try_from(config)?;
    match &cli.command {
        Command::Plan { files } => {
            plan(&client, files, cli.namespace.as_deref(), &default_ns).await
        }
        Command::Status { all_namespaces } => {
            let api: Api<CacheInstance> = if *all_namespaces {
                Api::all(client)
            } else {
                Api::namespaced(client, &default_ns)
            };
            let mut objs = api.list(&ListParams::default()).await?.items;
            objs.sort_by_key(|o| (o.namespace(), o.name_any()));
            if objs.is_empty() {
                eprintln!("no CacheInstances found");
            } else {
                print!("{}", plugin::render_status(&objs, *all_namespaces));
            }
            Ok(0)
        }
    }
}

async fn plan(
    client: &Client,
    files: &[PathBuf],
    namespace: Option<&str>,
    default_ns: &str,
) -> anyhow::Result<u8> {
    let mut manifests = Vec::new();
    for file in files {
        let text = if file.as_os_str() == "-" {
            std::io::read_to_string(std::io::stdin())?
        } else {
            std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?
        };
        let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(&text)
            .with_context(|| format!("parsing {}", file.display()))?;
        for doc in docs.into_iter().filter(|d| !d.is_null()) {
            let kind = doc.get("kind").and_then(|k| k.as_str()).unwrap_or("");
            if kind != "CacheInstance" {
                eprintln!(
                    "skipping a {kind} in {}: only CacheInstances are planned",
                    file.display()
                );
                continue;
            }
            let obj: CacheInstance = serde_json::from_value(doc)
                .with_context(|| format!("a CacheInstance in {}", file.display()))?;
            manifests.push(obj);
        }
    }
    let now = Timestamp::now();
    let mut changes = false;
    for manifest in &manifests {
        let ns = match (namespace, manifest.namespace()) {
            (Some(flag), Some(own)) if flag != own => anyhow::bail!(
                "the namespace from the provided object \"{own}\" does not match the namespace \"{flag}\""
            ),
            (Some(flag), _) => flag.to_string(),
            (None, Some(own)) => own,
            (None, None) => default_ns.to_string(),
        };
        let name = manifest.name_any();
        let api: Api<CacheInstance> = Api::namespaced(client.clone(), &ns);
        let live = api
            .get_opt(&name)
            .await
            .with_context(|| format!("reading cacheinstance {ns}/{name}"))?;
        let mut placed = manifest.clone();
        placed.metadata.namespace = Some(ns.clone());
        let window = policy_window(client, &ns, &placed).await;
        let outcome = plugin::outcome(&placed, live.as_ref(), window.as_ref(), now);
        changes |= outcome.changes_anything();
        print!("{}", plugin::render_plan(&ns, &name, &outcome));
    }
    Ok(if changes { plugin::CHANGES as u8 } else { 0 })
}

/// The maintenance window the CachePolicies of `ns` that apply to `manifest` give it (the
/// default for a manifest without a window of its own), as the operator chooses it. Without
/// permission to list the policies, none, with a warning: changes then show as made at once.
async fn policy_window(
    client: &Client,
    ns: &str,
    manifest: &CacheInstance,
) -> Option<MaintenanceWindow> {
    if manifest.spec.maintenance_window.is_some() {
        return None;
    }
    let api: Api<CachePolicy> = Api::namespaced(client.clone(), ns);
    match api.list(&ListParams::default()).await {
        Ok(list) => {
            let policies: Vec<Arc<CachePolicy>> = list.items.into_iter().map(Arc::new).collect();
            guardrails::applicable(manifest, &policies).window()
        }
        Err(e) => {
            eprintln!(
                "warning: cannot list cachepolicies in {ns} ({e}); a policy's maintenance window is not taken into account"
            );
            None
        }
    }
}
