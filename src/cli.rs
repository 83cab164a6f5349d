//! Command-line options. Every flag has an environment variable fallback so the Helm chart and
//! plain manifests can configure the operator either way.

use std::{net::SocketAddr, path::PathBuf};

use clap::{Parser, ValueEnum};

use crate::{
    controller::adoption::AdoptionScope,
    crd::{DeletionPolicy, DurationString},
};

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One JSON object per line (the default in containers).
    Json,
    /// Human-readable lines.
    Text,
}

/// upstash-operator: Upstash Redis caches as Kubernetes resources.
#[derive(Debug, Clone, Parser)]
#[command(name = "upstash-operator", version, about)]
pub struct Args {
    /// Base URL of the Upstash Developer API.
    #[arg(
        long,
        env = "UPSTASH_API_URL",
        default_value = "https://api.upstash.com"
    )]
    pub upstash_api_url: url::Url,

    /// Operator-wide Upstash credentials: a Secret `<namespace>/<name>` with the keys `email`
    /// and `apiKey`. Without a namespace, the operator's own namespace is used.
    #[arg(
        long,
        env = "UPSTASH_CREDENTIALS_SECRET",
        default_value = "upstash-credentials"
    )]
    pub credentials_secret: String,

    /// Name of the per-namespace credentials Secret: when a CacheInstance's namespace holds a
    /// Secret of this name, it is used instead of the operator-wide one. Empty disables the
    /// per-namespace lookup.
    #[arg(
        long,
        env = "UPSTASH_NAMESPACE_CREDENTIALS_SECRET",
        default_value = "upstash-credentials"
    )]
    pub namespace_credentials_secret: String,

    /// PEM file with extra CA certificates to trust for Upstash (e.g. a local emulator's CA).
    #[arg(long, env = "UPSTASH_CA_FILE")]
    pub upstash_ca_file: Option<PathBuf>,

    /// Namespaces to watch, comma separated. Empty watches the whole cluster.
    #[arg(
        long,
        env = "WATCH_NAMESPACES",
        value_delimiter = ',',
        default_value = ""
    )]
    pub watch_namespaces: Vec<String>,

    /// Developer API requests the reconcilers have in flight at once (creates, reads, changes and
    /// deletes of databases). Twice as many CacheInstances are reconciled at the same time, so
    /// that the Kubernetes reads and writes of some overlap the Upstash requests of others; the
    /// monitor's samples are limited on their own (16 at once).
    #[arg(long, env = "RECONCILE_CONCURRENCY", default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub concurrency: u16,

    /// How often every CacheInstance is compared with Upstash even when nothing changed, to
    /// correct drift (e.g. `10m`).
    #[arg(long, env = "RESYNC_INTERVAL", default_value = "10m", value_parser = parse_duration_arg)]
    pub resync_interval: DurationString,

    /// The least time between two password rotations that the rotate-password annotation asks
    /// for on one CacheInstance (e.g. `5m`; `0s` for none). Each rotation revokes every
    /// client's credentials and restarts the workloads listed for it; a request within this
    /// interval of the last one served waits for its end, and the requests made meanwhile are
    /// served by one rotation.
    #[arg(long, env = "MIN_ROTATION_INTERVAL", default_value = "5m", value_parser = parse_duration_arg)]
    pub min_rotation_interval: DurationString,

    /// How long a restart of a workload (`passwordRotation.restart`) waits for the credentials
    /// of other CacheInstances it uses that change meanwhile: one restart serves them all.
    #[arg(long, env = "RESTART_WINDOW", default_value = "5s", value_parser = parse_duration_arg)]
    pub restart_window: DurationString,

    /// The least time between two restarts of one workload; credentials that change sooner are
    /// picked up by one restart when it has passed.
    #[arg(long, env = "MIN_RESTART_INTERVAL", default_value = "30s", value_parser = parse_duration_arg)]
    pub min_restart_interval: DurationString,

    /// This cluster's identity, part of every database name the operator derives
    /// (`<namespace>-<name>-<hash of cluster id, namespace and name>`). Empty: the UID of
    /// namespace `kube-system`, or of the operator's own namespace when that is not readable.
    /// Keep it stable: another value makes re-applied CacheInstances miss their databases.
    #[arg(long, env = "UPSTASH_OPERATOR_CLUSTER_ID", default_value = "")]
    pub cluster_id: String,

    /// Deletion policy for CacheInstances that set none and are not covered by a CachePolicy.
    #[arg(long, env = "DEFAULT_DELETION_POLICY", default_value = "Delete", value_parser = parse_deletion_policy)]
    pub default_deletion_policy: DeletionPolicy,

    /// Namespaces whose CacheInstances may adopt existing databases (`spec.adopt`) through the
    /// operator-wide credentials: a label selector on namespaces as JSON or YAML, e.g.
    /// `{"matchLabels": {"upstash.example.com/adopt": "true"}}` (`{}`: every namespace). Empty:
    /// none. Namespaces with credentials of their own adopt within that account regardless.
    #[arg(long, env = "ADOPTION_NAMESPACE_SELECTOR", default_value = "", value_parser = AdoptionScope::parse)]
    pub adoption_namespace_selector: AdoptionScope,

    /// Name the namespace of the CacheInstance that manages a database in the `AlreadyManaged`
    /// condition of an instance in another namespace that names the same database. Off: the
    /// condition only says that another CacheInstance manages it.
    #[arg(long, env = "REVEAL_MANAGING_NAMESPACE", default_value_t = false, action = clap::ArgAction::Set)]
    pub reveal_managing_namespace: bool,

    /// Apply the built-in thresholds (hit rate below 70%, memory above 80%, ...) to
    /// CacheInstances no CachePolicy selects. `false` monitors only selected instances.
    #[arg(long, env = "DEFAULT_THRESHOLDS", default_value_t = true, action = clap::ArgAction::Set)]
    pub default_thresholds: bool,

    /// Timeout of each Upstash API request (e.g. `30s`).
    #[arg(long, env = "UPSTASH_TIMEOUT", default_value = "30s", value_parser = parse_duration_arg)]
    pub upstash_timeout: DurationString,

    /// Upstash API requests per second across all instances.
    #[arg(long, env = "UPSTASH_RATE_LIMIT", default_value_t = 20)]
    pub upstash_rate_limit: u32,

    /// Consecutive Upstash failures that open the circuit breaker.
    #[arg(long, env = "BREAKER_FAILURE_THRESHOLD", default_value_t = 5)]
    pub breaker_failure_threshold: u32,

    /// How long the circuit breaker stays open before a trial call (e.g. `60s`).
    #[arg(long, env = "BREAKER_RESET_TIMEOUT", default_value = "60s", value_parser = parse_duration_arg)]
    pub breaker_reset_timeout: DurationString,

    /// Consecutive successful trial calls that close the circuit breaker.
    #[arg(long, env = "BREAKER_SUCCESS_THRESHOLD", default_value_t = 2)]
    pub breaker_success_threshold: u32,

    /// Address of the HTTP server for `/healthz`, `/readyz`, `/metrics` and `/status`.
    #[arg(long, env = "HTTP_ADDR", default_value = "0.0.0.0:8080")]
    pub http_addr: SocketAddr,

    /// Log format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value = "json")]
    pub log_format: LogFormat,

    /// Log filter in `RUST_LOG` syntax.
    #[arg(long, env = "LOG_LEVEL", default_value = "info")]
    pub log_level: String,

    /// Elect a leader through a Lease so that only one replica acts at a time.
    #[arg(long, env = "LEADER_ELECTION", default_value_t = false, action = clap::ArgAction::Set)]
    pub leader_election: bool,

    /// Name of the leader-election Lease.
    #[arg(long, env = "LEASE_NAME", default_value = "upstash-operator")]
    pub lease_name: String,

    /// Namespace of the Lease (default: the operator's own namespace).
    #[arg(long, env = "LEASE_NAMESPACE")]
    pub lease_namespace: Option<String>,

    /// How long a Lease is valid without renewal (e.g. `15s`).
    #[arg(long, env = "LEASE_DURATION", default_value = "15s", value_parser = parse_duration_arg)]
    pub lease_duration: DurationString,

    /// This replica's identity in the Lease (default: the pod name or host name).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,

    /// ConfigMap in the operator's namespace where the leader records when it last read each
    /// CacheInstance from Upstash (UID digests and times, nothing else), so that after a restart
    /// each is read when its resync is due. Empty: no record (after a restart, settled
    /// instances are read within the first minute).
    #[arg(
        long,
        env = "LAST_READS_CONFIGMAP",
        default_value = "upstash-operator-last-reads"
    )]
    pub last_reads_configmap: String,

    /// The operator's own namespace (set from the downward API in the chart).
    #[arg(long, env = "POD_NAMESPACE")]
    pub pod_namespace: Option<String>,
}

impl Args {
    /// The operator's namespace: `--pod-namespace`, the service account's namespace file, or
    /// `default`.
    pub fn own_namespace(&self) -> String {
        if let Some(ns) = self.pod_namespace.as_ref().filter(|ns| !ns.is_empty()) {
            return ns.clone();
        }
        std::fs::read_to_string("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
            .map(|s| s.trim().to_string())
            .ok()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "default".to_string())
    }

    /// The operator-wide credentials Secret as `(namespace, name)`.
    pub fn credentials_secret_ref(&self) -> (String, String) {
        match self.credentials_secret.split_once('/') {
            Some((ns, name)) => (ns.to_string(), name.to_string()),
            None => (self.own_namespace(), self.credentials_secret.clone()),
        }
    }

    /// Watched namespaces, without empty entries; empty means all.
    pub fn namespaces(&self) -> Vec<String> {
        self.watch_namespaces
            .iter()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect()
    }

    /// This replica's identity for leader election.
    pub fn identity(&self) -> String {
        self.identity
            .clone()
            .filter(|s| !s.is_empty())
            .or_else(|| std::env::var("HOSTNAME").ok().filter(|s| !s.is_empty()))
            .unwrap_or_else(|| format!("upstash-operator-{}", std::process::id()))
    }
}

fn parse_duration_arg(s: &str) -> Result<DurationString, String> {
    let d = DurationString::new(s);
    d.duration().map_err(|e| e.to_string())?;
    Ok(d)
}

fn parse_deletion_policy(s: &str) -> Result<DeletionPolicy, String> {
    s.parse()
        .map_err(|_| format!("expected Delete or Retain, got {s:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_is_well_formed() {
        Args::command().debug_assert();
    }

    #[test]
    fn defaults_and_parsing() {
        let args = Args::try_parse_from([
            "upstash-operator",
            "--watch-namespaces",
            "a, b,,c",
            "--credentials-secret",
            "ops/upstash",
            "--resync-interval",
            "5m",
        ])
        .unwrap();
        assert_eq!(args.namespaces(), ["a", "b", "c"]);
        assert_eq!(
            args.credentials_secret_ref(),
            ("ops".to_string(), "upstash".to_string())
        );
        assert_eq!(args.resync_interval.duration().unwrap().as_secs(), 300);
        assert_eq!(args.concurrency, 8);
        assert_eq!(args.default_deletion_policy, DeletionPolicy::Delete);
        assert_eq!(args.adoption_namespace_selector, AdoptionScope::Nobody);
        assert!(!args.reveal_managing_namespace);
        assert!(
            Args::try_parse_from(["x", "--adoption-namespace-selector", "team=a"]).is_err(),
            "a selector that is not a LabelSelector"
        );
        assert!(Args::try_parse_from(["x", "--resync-interval", "soon"]).is_err());
        assert!(Args::try_parse_from(["x", "--concurrency", "0"]).is_err());
        assert!(Args::try_parse_from(["x", "--default-deletion-policy", "Orphan"]).is_err());
    }
}
