//! Wiring: builds the clients, the shared context and the controllers from the command line,
//! and runs them with the HTTP server until a shutdown signal.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use anyhow::Context as _;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::{Api, Client, api::ListParams, runtime::events::Reporter};
use tokio::sync::watch;

use crate::{
    cli::Args,
    cluster_id,
    controller::startup::ReadRecord,
    controller::{self, Context, REPORTING_CONTROLLER, Settings},
    crd::CacheInstance,
    credentials::CredentialResolver,
    http::{self, AdminState},
    leader::{LeaderElector, LeaseConfig},
    metrics::Metrics,
    monitor::{self, Monitor, MonitorSettings, probe::Prober},
    policies,
    upstash::{UpstashClient, breaker::BreakerConfig, client::ClientConfig},
};

/// Exit code when the CRDs are not installed.
pub const EXIT_CRDS_MISSING: i32 = 3;
/// Exit code when this replica loses the leader Lease (the new leader carries on).
pub const EXIT_LEADERSHIP_LOST: i32 = 4;

/// A startup failure that should end the process with a specific exit code.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Fatal {
    pub message: String,
    pub code: i32,
}

/// Runs the operator until SIGTERM or SIGINT.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let client = Client::try_default()
        .await
        .context("cannot configure a Kubernetes client (in-cluster config or KUBECONFIG)")?;
    let namespaces = args.namespaces();
    check_crds(&client, &namespaces).await?;

    let metrics = Arc::new(Metrics::new());
    let extra_ca: Option<Vec<u8>> = match &args.upstash_ca_file {
        Some(path) => {
            Some(std::fs::read(path).with_context(|| format!("reading {}", path.display()))?)
        }
        None => None,
    };
    let upstash = UpstashClient::new(
        ClientConfig {
            base_url: args.upstash_api_url.clone(),
            timeout: args.upstash_timeout.duration()?,
            rate_limit_per_second: args.upstash_rate_limit,
            rate_limit_burst: args.upstash_rate_limit.saturating_mul(2),
            breaker: BreakerConfig {
                failure_threshold: args.breaker_failure_threshold.max(1),
                reset_timeout: args.breaker_reset_timeout.duration()?,
                success_threshold: args.breaker_success_threshold.max(1),
            },
            extra_ca_pem: extra_ca.clone(),
            ..ClientConfig::default()
        },
        metrics.clone(),
    )
    .context("building the Upstash HTTP client")?;
    let credentials = CredentialResolver::new(
        client.clone(),
        args.credentials_secret_ref(),
        Some(args.namespace_credentials_secret.clone()),
    );

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutting down");
        let _ = shutdown_tx.send(true);
    });
    let shutdown = move || {
        let mut rx = shutdown_rx.clone();
        async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }
    };

    let cluster_id =
        cluster_id::resolve(&client, Some(&args.cluster_id), &args.own_namespace()).await?;
    // One shared watch per scope feeds the policy store, the CacheInstance controller and the
    // CachePolicy status controller.
    let policy_watches = policies::watch(&client, &namespaces);
    let policies = policy_watches.policies.clone();
    let reporter = Reporter {
        controller: REPORTING_CONTROLLER.to_string(),
        instance: Some(args.identity()),
    };
    let ctx = Arc::new(Context::new(
        client.clone(),
        upstash,
        credentials,
        reporter,
        metrics.clone(),
        policies.clone(),
        Settings {
            resync: args.resync_interval.duration()?,
            default_deletion_policy: args.default_deletion_policy,
            concurrency: args.concurrency,
            cluster_id,
            lost_create_grace: crate::controller::instance::lost_create_grace(
                args.upstash_timeout.duration()?,
            ),
            adoption: args.adoption_namespace_selector.clone(),
            reveal_managing_namespace: args.reveal_managing_namespace,
            min_rotation_interval: args.min_rotation_interval.duration()?,
            restart_window: args.restart_window.duration()?,
            min_restart_interval: args.min_restart_interval.duration()?,
        },
    ));
    let scopes: Vec<Option<String>> = if namespaces.is_empty() {
        vec![None]
    } else {
        namespaces.iter().cloned().map(Some).collect()
    };
    ctx.credentials.watch(&scopes);
    let controllers: Vec<_> = scopes
        .iter()
        .map(|scope| {
            controller::instance_controller(
                &ctx,
                scope.as_deref(),
                policy_watches.scope(scope.as_deref()).instance_trigger(),
                shutdown(),
            )
        })
        .collect();
    let policy_status = policies::status::StatusControllers::new(&policies, &policy_watches.scopes);
    let instance_stores: Vec<_> = controllers.iter().map(|c| c.store()).collect();
    crate::acl::client::init(
        args.upstash_timeout
            .duration()?
            .min(Duration::from_secs(10)),
        extra_ca.as_deref(),
    )
    .context("building the data-plane HTTP client for ACL users")?;
    let prober = Prober::new(
        args.upstash_timeout
            .duration()?
            .min(Duration::from_secs(10)),
        extra_ca.as_deref(),
        1,
    )
    .context("building the data-plane HTTP client")?;
    let monitor = Monitor::new(
        ctx.clone(),
        instance_stores.clone(),
        MonitorSettings {
            default_thresholds: args.default_thresholds,
            request_budget_per_s: f64::from(args.upstash_rate_limit)
                * monitor::REQUEST_BUDGET_SHARE,
        },
        prober,
        Some(policy_status.nudger()),
    );

    let ready = Arc::new(AtomicBool::new(false));
    let admin = AdminState {
        ready: ready.clone(),
        metrics: metrics.clone(),
        status: {
            let monitor = monitor.clone();
            Arc::new(move || monitor.status_page())
        },
    };
    let http_task = tokio::spawn(http::serve(args.http_addr, admin, shutdown()));

    // Leader election: a standby waits here until it holds the Lease. It answers /readyz
    // meanwhile, so that rollouts of several replicas finish.
    let leadership = if args.leader_election {
        let elector = LeaderElector::new(client.clone(), LeaseConfig::from_args(&args)?);
        ready.store(true, Ordering::Release);
        let leadership = tokio::select! {
            acquired = elector.acquire() => acquired?,
            _ = shutdown() => {
                http_task.await??;
                return Ok(());
            }
        };
        ready.store(false, Ordering::Release);
        metrics.leader.set(1);
        Some(leadership)
    } else {
        None
    };

    // The previous leader's record of last reads, before the first passes: settled instances
    // are read when their resync is due by it. Only the leader records.
    let read_record = Some(args.last_reads_configmap.trim())
        .filter(|name| !name.is_empty())
        .map(|name| ReadRecord::new(client.clone(), &args.own_namespace(), name));
    if let Some(record) = &read_record {
        if let Some(reads) = record.load(&ctx.config.cluster_id).await {
            ctx.first_reads.load(&reads);
        }
        tokio::spawn(record.clone().run(ctx.clone(), shutdown()));
    }

    let own = ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Pod".into()),
        name: Some(args.identity()),
        namespace: Some(args.own_namespace()),
        ..Default::default()
    };
    tokio::spawn(monitor::watch_breaker(ctx.clone(), own));
    let monitor_task = tokio::spawn(monitor.run(shutdown()));
    tokio::spawn(
        ctx.credentials
            .clone()
            .release_loop(controllers.iter().map(|c| c.store()).collect(), shutdown()),
    );
    let policy_status_task = tokio::spawn(policy_status.run(
        Arc::new(policies::status::StatusContext {
            client: client.clone(),
            instances: instance_stores,
        }),
        shutdown,
    ));
    let mut warm = Vec::new();
    let mut tasks = Vec::new();
    for c in controllers {
        let (tx, rx) = tokio::sync::oneshot::channel();
        warm.push(rx);
        tasks.push(tokio::spawn(controller::run_instances(c, ctx.clone(), tx)));
    }
    let credentials = ctx.credentials.clone();
    tokio::spawn(async move {
        for rx in warm {
            let _ = rx.await;
        }
        tracing::debug!("CacheInstance caches are warm");
        policies.wait_until_ready().await;
        credentials.wait_until_ready().await;
        ready.store(true, Ordering::Release);
        tracing::info!("caches are warm; ready");
    });
    tracing::info!(
        upstash_api = %args.upstash_api_url,
        namespaces = %if namespaces.is_empty() { "*".to_string() } else { namespaces.join(",") },
        concurrency = args.concurrency,
        "upstash-operator started"
    );
    let run_controllers = async {
        for t in tasks {
            t.await?;
        }
        monitor_task.await?;
        policy_status_task.await?;
        anyhow::Ok(())
    };
    match &leadership {
        Some(leadership) => tokio::select! {
            done = run_controllers => done?,
            _ = leadership.lost() => {
                metrics.leader.set(0);
                return Err(Fatal {
                    message: "lost the leader Lease; exiting so that only the new leader acts".into(),
                    code: EXIT_LEADERSHIP_LOST,
                }
                .into());
            }
        },
        None => run_controllers.await?,
    }
    // A clean shutdown records the last reads once more, so that the next leader knows them
    // to the second.
    if let Some(record) = &read_record {
        record.write_now(&ctx).await;
    }
    if let Some(leadership) = leadership {
        metrics.leader.set(0);
        leadership.release().await;
    }
    http_task.await??;
    Ok(())
}

/// Fails with an install hint when the CRDs are missing.
async fn check_crds(client: &Client, namespaces: &[String]) -> anyhow::Result<()> {
    let api: Api<CacheInstance> = match namespaces.first() {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    match api.list_metadata(&ListParams::default().limit(1)).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Err(Fatal {
            message: "the CacheInstance CRD is not installed: apply crds/ (kubectl apply --server-side -f crds/) or install the Helm chart with crds.install=true".into(),
            code: EXIT_CRDS_MISSING,
        }
        .into()),
        Err(e) => Err(anyhow::Error::new(e).context("listing CacheInstances")),
    }
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing a SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
