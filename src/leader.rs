//! Leader election on a `coordination.k8s.io/v1` Lease, so that of several replicas exactly one
//! acts and a standby takes over when the leader goes away.
//!
//! The algorithm is client-go's `leaderelection` package:
//!
//! * Every write is a `PUT` carrying the `resourceVersion` that was read (optimistic
//!   concurrency): of two candidates that try to take the same Lease, the API server lets one
//!   win and answers `409 Conflict` to the other.
//! * A candidate judges expiry by its *own* clock: a Lease held by someone else is free once the
//!   candidate has seen the same record (same `resourceVersion`) for `leaseDurationSeconds`.
//!   Clock skew between nodes therefore does not matter, only clock rates.
//! * The leader renews every third of the lease duration and gives up (the [`Leadership::lost`]
//!   future resolves) when it has not renewed successfully within the *renew deadline*, two
//!   thirds of the lease duration after the start of its last successful renewal. A partitioned
//!   leader therefore stops before any candidate can consider the Lease expired: two replicas
//!   never act at once.
//! * On a clean shutdown the leader releases the Lease (empty holder), so a standby takes over
//!   at once instead of after the lease duration.
//!
//! Two maintained crates were evaluated and not used:
//!
//! * `kube-lease-manager` (0.13, which supports kube 5) keeps reporting leadership while
//!   renewals fail (retrying with a back-off of up to 30 s, with no renew deadline), and it
//!   clears an expired Lease with an unconditional patch, which can erase a lock another
//!   candidate has just taken; either lets two replicas act at once.
//! * `kubert`'s `lease` module (what Linkerd runs; 0.25 is the newest release) is built on
//!   kube 1.1 and k8s-openapi 0.25: its `LeaseManager` takes an `Api<Lease>` of that kube, so
//!   using it would mean a second Kubernetes client stack beside kube 5. Its algorithm also
//!   differs where it matters here: a candidate judges a Lease expired by comparing the
//!   holder's `renewTime` with its own wall clock (so clock skew between nodes shortens or
//!   stretches a lease, where client-go and this module only compare a clock with itself);
//!   the holder has no renew deadline before the lease duration (the spawned task retries a
//!   failed renewal and keeps publishing the last claim, which a holder must check against
//!   its own clock to step down in time); and the Lease must exist before `init`, which
//!   would need the chart or a separate create step. Its optimistic-concurrency writes
//!   (server-side apply and strategic patches carrying the `resourceVersion` read) and its
//!   release on shutdown are what this module does too.

use std::{fmt, future::Future, time::Duration};

use anyhow::Context as _;
use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::MicroTime,
    jiff::Timestamp,
};
use kube::{
    Api, Client,
    api::{ObjectMeta, PostParams},
};
use tokio::{
    sync::{oneshot, watch},
    task::JoinHandle,
    time::Instant,
};

/// Where the Lease is and who this replica is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseConfig {
    /// Name of the Lease.
    pub name: String,
    /// Namespace of the Lease.
    pub namespace: String,
    /// This replica's identity (unique among the replicas: the pod name).
    pub identity: String,
    /// How long the Lease is valid without renewal.
    pub lease_duration: Duration,
}

impl LeaseConfig {
    /// The configuration from the command line: `--lease-name`, `--lease-namespace` (default:
    /// the operator's own namespace), `--identity` and `--lease-duration`.
    pub fn from_args(args: &crate::cli::Args) -> anyhow::Result<Self> {
        let lease_duration = args.lease_duration.duration().context("--lease-duration")?;
        let config = Self {
            name: args.lease_name.clone(),
            namespace: args
                .lease_namespace
                .clone()
                .filter(|ns| !ns.is_empty())
                .unwrap_or_else(|| args.own_namespace()),
            identity: args.identity(),
            lease_duration,
        };
        config.validate()?;
        Ok(config)
    }

    /// Checks the values the timing depends on.
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(!self.name.is_empty(), "the Lease name is empty");
        anyhow::ensure!(!self.identity.is_empty(), "the leader identity is empty");
        anyhow::ensure!(
            self.lease_duration >= Duration::from_secs(1),
            "the lease duration must be at least 1s, got {:?}",
            self.lease_duration
        );
        Ok(())
    }

    /// The lease duration in whole seconds, as written to the Lease (rounded up).
    pub fn lease_duration_seconds(&self) -> i32 {
        let secs =
            self.lease_duration.as_secs() + u64::from(self.lease_duration.subsec_nanos() > 0);
        i32::try_from(secs.max(1)).unwrap_or(i32::MAX)
    }

    /// The timing derived from the lease duration.
    pub fn timing(&self) -> Timing {
        Timing::for_duration(Duration::from_secs(
            u64::try_from(self.lease_duration_seconds()).unwrap_or(1),
        ))
    }
}

/// How often to renew and retry, and when to give up: fractions of the lease duration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// Validity of the Lease without renewal.
    pub lease_duration: Duration,
    /// The leader renews this long after its last successful renewal.
    pub renew_interval: Duration,
    /// The leader gives up when it has not renewed within this long after the start of its last
    /// successful renewal. Shorter than the lease duration.
    pub renew_deadline: Duration,
    /// Pause between attempts of a candidate, and between failed renewals.
    pub retry_period: Duration,
}

impl Timing {
    /// Renew every third of `lease_duration`, give up after two thirds, retry every tenth
    /// (between 100 ms and 2 s).
    pub fn for_duration(lease_duration: Duration) -> Self {
        Self {
            lease_duration,
            renew_interval: lease_duration / 3,
            renew_deadline: lease_duration * 2 / 3,
            retry_period: (lease_duration / 10)
                .clamp(Duration::from_millis(100), Duration::from_secs(2)),
        }
    }
}

/// A candidate's memory of the Lease record it last saw, to judge expiry by its own clock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observation {
    resource_version: String,
    at: Instant,
}

/// What a candidate does after reading the Lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Write the Lease with this replica as holder.
    Take {
        /// Whether the holder changes (the transition counter goes up).
        transition: bool,
    },
    /// Someone else holds a valid Lease: look again after this long.
    Wait { holder: String, retry_in: Duration },
}

/// Decides what a candidate does with the Lease it read at `now`. `observed` is updated when
/// the record changed since the last look.
pub fn decide(
    lease: &Lease,
    identity: &str,
    timing: &Timing,
    observed: &mut Option<Observation>,
    now: Instant,
) -> Decision {
    let spec = lease.spec.clone().unwrap_or_default();
    let holder = spec.holder_identity.unwrap_or_default();
    if holder.is_empty() {
        return Decision::Take { transition: true };
    }
    if holder == identity {
        return Decision::Take { transition: false };
    }
    let rv = lease.metadata.resource_version.clone().unwrap_or_default();
    let seen_at = match observed {
        Some(o) if o.resource_version == rv => o.at,
        _ => {
            *observed = Some(Observation {
                resource_version: rv,
                at: now,
            });
            now
        }
    };
    let duration = spec
        .lease_duration_seconds
        .and_then(|s| u64::try_from(s).ok())
        .filter(|s| *s > 0)
        .map_or(timing.lease_duration, Duration::from_secs);
    let expires = seen_at + duration;
    if now >= expires {
        Decision::Take { transition: true }
    } else {
        Decision::Wait {
            holder,
            retry_in: (expires - now).min(timing.retry_period),
        }
    }
}

/// Competes for a Lease.
#[derive(Clone)]
pub struct LeaderElector {
    api: Api<Lease>,
    config: LeaseConfig,
    timing: Timing,
}

impl fmt::Debug for LeaderElector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LeaderElector")
            .field("config", &self.config)
            .field("timing", &self.timing)
            .finish()
    }
}

/// Outcome of one write attempt.
enum Attempt {
    Won(Box<Lease>),
    Lost,
}

impl LeaderElector {
    /// An elector for the Lease `config.namespace/config.name`.
    pub fn new(client: Client, config: LeaseConfig) -> Self {
        let timing = config.timing();
        Self {
            api: Api::namespaced(client, &config.namespace),
            config,
            timing,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &LeaseConfig {
        &self.config
    }

    /// The timing.
    pub fn timing(&self) -> Timing {
        self.timing
    }

    /// Blocks until this replica holds the Lease (creating it if needed), then renews it in the
    /// background. API errors while waiting are logged and retried; errors that cannot heal
    /// (e.g. no permission on Leases) are logged at error level and retried too, so a fixed
    /// RoleBinding lets the replica proceed without a restart.
    pub async fn acquire(&self) -> anyhow::Result<Leadership> {
        self.config.validate()?;
        let mut observed: Option<Observation> = None;
        let mut waiting_for: Option<String> = None;
        loop {
            let started = Instant::now();
            match self.try_acquire(&mut observed, &mut waiting_for).await {
                Ok(Some(lease)) => {
                    tracing::info!(
                        lease = %format!("{}/{}", self.config.namespace, self.config.name),
                        identity = %self.config.identity,
                        lease_duration_s = self.config.lease_duration_seconds(),
                        "acquired the leader Lease"
                    );
                    return Ok(self.lead(lease, started));
                }
                Ok(None) => {}
                Err(e) => {
                    let forbidden = matches!(&e, kube::Error::Api(s) if s.code == 403);
                    if forbidden {
                        tracing::error!(err = %e, lease = %self.config.name, "may not use the leader Lease; check the operator's Role");
                    } else {
                        tracing::warn!(err = %e, lease = %self.config.name, "leader election attempt failed");
                    }
                    tokio::time::sleep(self.timing.retry_period).await;
                }
            }
        }
    }

    /// One look at the Lease: `Some` when this replica now holds it, `None` after waiting as
    /// long as the current holder's Lease stays valid (at most the retry period).
    async fn try_acquire(
        &self,
        observed: &mut Option<Observation>,
        waiting_for: &mut Option<String>,
    ) -> Result<Option<Lease>, kube::Error> {
        let Some(current) = self.api.get_opt(&self.config.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.config.name.clone()),
                    namespace: Some(self.config.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    // The first holder is no transition.
                    lease_transitions: Some(0),
                    ..self.held_spec(None, true)
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(created) => Ok(Some(created)),
                // Another candidate created it first: look again.
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(None),
                Err(e) => Err(e),
            };
        };
        match decide(
            &current,
            &self.config.identity,
            &self.timing,
            observed,
            Instant::now(),
        ) {
            Decision::Take { transition } => match self.write(current, transition).await? {
                Attempt::Won(lease) => Ok(Some(*lease)),
                Attempt::Lost => {
                    *observed = None;
                    Ok(None)
                }
            },
            Decision::Wait { holder, retry_in } => {
                if waiting_for.as_deref() != Some(holder.as_str()) {
                    tracing::info!(
                        holder = %holder,
                        identity = %self.config.identity,
                        "standing by: another replica holds the leader Lease"
                    );
                    *waiting_for = Some(holder);
                }
                tokio::time::sleep(retry_in).await;
                Ok(None)
            }
        }
    }

    /// The spec of a Lease held by this replica, based on `previous`.
    fn held_spec(&self, previous: Option<&LeaseSpec>, transition: bool) -> LeaseSpec {
        let now = MicroTime(Timestamp::now());
        let previous = previous.cloned().unwrap_or_default();
        LeaseSpec {
            holder_identity: Some(self.config.identity.clone()),
            lease_duration_seconds: Some(self.config.lease_duration_seconds()),
            acquire_time: if transition {
                Some(now.clone())
            } else {
                previous.acquire_time.clone().or(Some(now.clone()))
            },
            renew_time: Some(now),
            lease_transitions: Some(
                previous.lease_transitions.unwrap_or(0) + i32::from(transition),
            ),
            ..previous
        }
    }

    /// Writes `current` with this replica as holder, guarded by its resourceVersion.
    async fn write(&self, mut current: Lease, transition: bool) -> Result<Attempt, kube::Error> {
        current.spec = Some(self.held_spec(current.spec.as_ref(), transition));
        match self
            .api
            .replace(&self.config.name, &PostParams::default(), &current)
            .await
        {
            Ok(lease) => Ok(Attempt::Won(Box::new(lease))),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(Attempt::Lost),
            Err(e) => Err(e),
        }
    }

    /// Starts renewing `lease`, acquired by an attempt that started at `renewed_at`.
    fn lead(&self, lease: Lease, renewed_at: Instant) -> Leadership {
        let (state_tx, state_rx) = watch::channel(true);
        let (stop_tx, stop_rx) = oneshot::channel();
        let elector = self.clone();
        let task = tokio::spawn(async move {
            let outcome = tokio::select! {
                lost = elector.renew(lease, renewed_at) => Some(lost),
                _ = stop_rx => None,
            };
            match outcome {
                Some((reason, lease)) => {
                    tracing::error!(identity = %elector.config.identity, reason = %reason, "lost the leader Lease");
                    let _ = state_tx.send(false);
                    lease
                }
                // Released: the caller writes the Lease.
                None => None,
            }
        });
        Leadership {
            elector: self.clone(),
            state: state_rx,
            stop: Some(stop_tx),
            task: Some(task),
        }
    }

    /// Renews until leadership is lost; returns why, and the last Lease written by this replica
    /// if it still is the holder on record.
    async fn renew(&self, mut lease: Lease, mut renewed_at: Instant) -> (String, Option<Lease>) {
        loop {
            tokio::time::sleep_until(renewed_at + self.timing.renew_interval).await;
            let deadline = renewed_at + self.timing.renew_deadline;
            loop {
                let started = Instant::now();
                match tokio::time::timeout_at(deadline, self.renew_once(&lease)).await {
                    Ok(Ok(Some(renewed))) => {
                        lease = renewed;
                        renewed_at = started;
                        break;
                    }
                    Ok(Ok(None)) => {
                        let holder = lease
                            .spec
                            .as_ref()
                            .and_then(|s| s.holder_identity.clone())
                            .unwrap_or_default();
                        return (format!("the Lease is now held by {holder:?}"), None);
                    }
                    Ok(Err((e, latest))) => {
                        if let Some(latest) = latest {
                            lease = latest;
                        }
                        tracing::warn!(err = %e, "renewing the leader Lease failed; retrying");
                        if Instant::now() + self.timing.retry_period >= deadline {
                            return (
                                format!(
                                    "no successful renewal within the renew deadline ({:?}): {e}",
                                    self.timing.renew_deadline
                                ),
                                Some(lease),
                            );
                        }
                        tokio::time::sleep(self.timing.retry_period).await;
                    }
                    Err(_) => {
                        return (
                            format!(
                                "no successful renewal within the renew deadline ({:?})",
                                self.timing.renew_deadline
                            ),
                            Some(lease),
                        );
                    }
                }
            }
        }
    }

    /// One renewal: `Ok(Some)` renewed, `Ok(None)` someone else holds the Lease now. On a
    /// conflict, the Lease is read again; when still ours, the error carries it for the retry.
    async fn renew_once(
        &self,
        lease: &Lease,
    ) -> Result<Option<Lease>, (kube::Error, Option<Lease>)> {
        match self.write(lease.clone(), false).await {
            Ok(Attempt::Won(renewed)) => Ok(Some(*renewed)),
            Ok(Attempt::Lost) => {
                let latest = self
                    .api
                    .get(&self.config.name)
                    .await
                    .map_err(|e| (e, None))?;
                let holder = latest
                    .spec
                    .as_ref()
                    .and_then(|s| s.holder_identity.as_deref())
                    .unwrap_or_default();
                if holder == self.config.identity {
                    Err((
                        kube::Error::Api(
                            kube::core::Status::failure(
                                "the Lease changed while it was renewed",
                                "Conflict",
                            )
                            .with_code(409)
                            .boxed(),
                        ),
                        Some(latest),
                    ))
                } else {
                    Ok(None)
                }
            }
            Err(e) => Err((e, None)),
        }
    }

    /// Clears the holder of `lease` (if this replica still holds it), so that a standby takes
    /// over at once.
    async fn release(&self, lease: Option<Lease>) {
        let lease = match lease {
            Some(lease) => lease,
            None => match self.api.get_opt(&self.config.name).await {
                Ok(Some(lease)) => lease,
                Ok(None) => return,
                Err(e) => {
                    tracing::warn!(err = %e, "could not read the leader Lease to release it");
                    return;
                }
            },
        };
        let holder = lease
            .spec
            .as_ref()
            .and_then(|s| s.holder_identity.as_deref())
            .unwrap_or_default();
        if holder != self.config.identity {
            return;
        }
        let mut released = lease.clone();
        released.spec = Some(LeaseSpec {
            holder_identity: None,
            lease_duration_seconds: Some(1),
            renew_time: Some(MicroTime(Timestamp::now())),
            ..lease.spec.clone().unwrap_or_default()
        });
        match self
            .api
            .replace(&self.config.name, &PostParams::default(), &released)
            .await
        {
            Ok(_) => tracing::info!(identity = %self.config.identity, "released the leader Lease"),
            Err(e) => {
                tracing::warn!(err = %e, "could not release the leader Lease; it expires on its own")
            }
        }
    }
}

/// Holding the Lease. Dropping it stops the renewals without releasing the Lease (it then
/// expires after the lease duration); call [`Leadership::release`] on a clean shutdown.
pub struct Leadership {
    elector: LeaderElector,
    state: watch::Receiver<bool>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Option<Lease>>>,
}

impl fmt::Debug for Leadership {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Leadership")
            .field("identity", &self.elector.config.identity)
            .field("leader", &self.is_leader())
            .finish()
    }
}

impl Leadership {
    /// Whether the Lease is still held.
    pub fn is_leader(&self) -> bool {
        *self.state.borrow()
    }

    /// Resolves when the Lease is lost (someone else holds it, or no renewal succeeded within
    /// the renew deadline). The caller must then stop acting at once.
    pub fn lost(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut state = self.state.clone();
        async move {
            // An error means the renewing task is gone, which also ends leadership.
            let _ = state.wait_for(|leader| !*leader).await;
        }
    }

    /// Stops renewing and hands the Lease back (at most 5 s), so a standby takes over at once.
    pub async fn release(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let last = match self.task.take() {
            Some(task) => task.await.ok().flatten(),
            None => None,
        };
        if !self.is_leader() && last.is_none() {
            // Lost to another replica: nothing to hand back.
            return;
        }
        if tokio::time::timeout(Duration::from_secs(5), self.elector.release(last))
            .await
            .is_err()
        {
            tracing::warn!("releasing the leader Lease timed out; it expires on its own");
        }
    }
}

impl Drop for Leadership {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(holder: Option<&str>, rv: &str, duration: Option<i32>) -> Lease {
        Lease {
            metadata: ObjectMeta {
                name: Some("l".into()),
                resource_version: Some(rv.into()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: holder.map(str::to_string),
                lease_duration_seconds: duration,
                ..LeaseSpec::default()
            }),
        }
    }

    #[test]
    fn timing_is_a_fraction_of_the_lease() {
        let t = Timing::for_duration(Duration::from_secs(15));
        assert_eq!(t.renew_interval, Duration::from_secs(5));
        assert_eq!(t.renew_deadline, Duration::from_secs(10));
        assert_eq!(t.retry_period, Duration::from_millis(1500));
        assert!(t.renew_deadline < t.lease_duration);
        let short = Timing::for_duration(Duration::from_secs(1));
        assert_eq!(short.retry_period, Duration::from_millis(100));
        let long = Timing::for_duration(Duration::from_secs(120));
        assert_eq!(long.retry_period, Duration::from_secs(2));
    }

    #[test]
    fn lease_duration_rounds_up_to_seconds() {
        let mut c = LeaseConfig {
            name: "n".into(),
            namespace: "ns".into(),
            identity: "a".into(),
            lease_duration: Duration::from_millis(4500),
        };
        assert_eq!(c.lease_duration_seconds(), 5);
        c.lease_duration = Duration::from_secs(15);
        assert_eq!(c.lease_duration_seconds(), 15);
        c.lease_duration = Duration::from_millis(500);
        assert!(c.validate().is_err());
        c.lease_duration = Duration::from_secs(2);
        c.identity = String::new();
        assert!(c.validate().is_err());
    }

    #[test]
    fn a_free_or_own_lease_is_taken_at_once() {
        let timing = Timing::for_duration(Duration::from_secs(10));
        let now = Instant::now();
        let mut seen = None;
        assert_eq!(
            decide(&lease(None, "1", None), "me", &timing, &mut seen, now),
            Decision::Take { transition: true }
        );
        assert_eq!(
            decide(
                &lease(Some(""), "1", Some(10)),
                "me",
                &timing,
                &mut seen,
                now
            ),
            Decision::Take { transition: true }
        );
        assert_eq!(
            decide(
                &lease(Some("me"), "1", Some(10)),
                "me",
                &timing,
                &mut seen,
                now
            ),
            Decision::Take { transition: false }
        );
    }

    #[test]
    fn expiry_is_judged_by_the_candidates_own_clock() {
        let timing = Timing::for_duration(Duration::from_secs(10));
        let t0 = Instant::now();
        let mut seen = None;
        let held = lease(Some("other"), "7", Some(10));
        // First sight: wait, however old renewTime may be.
        assert_eq!(
            decide(&held, "me", &timing, &mut seen, t0),
            Decision::Wait {
                holder: "other".into(),
                retry_in: timing.retry_period
            }
        );
        // Same record 9.5 s later: still valid, look again when it expires.
        assert_eq!(
            decide(
                &held,
                "me",
                &timing,
                &mut seen,
                t0 + Duration::from_millis(9500)
            ),
            Decision::Wait {
                holder: "other".into(),
                retry_in: Duration::from_millis(500)
            }
        );
        // Unchanged for the whole lease duration: expired.
        assert_eq!(
            decide(
                &held,
                "me",
                &timing,
                &mut seen,
                t0 + Duration::from_secs(10)
            ),
            Decision::Take { transition: true }
        );
        // A renewal (new resourceVersion) restarts the clock.
        let renewed = lease(Some("other"), "8", Some(10));
        assert!(matches!(
            decide(
                &renewed,
                "me",
                &timing,
                &mut seen,
                t0 + Duration::from_secs(11)
            ),
            Decision::Wait { .. }
        ));
        assert!(matches!(
            decide(
                &renewed,
                "me",
                &timing,
                &mut seen,
                t0 + Duration::from_secs(20)
            ),
            Decision::Wait { .. }
        ));
        assert_eq!(
            decide(
                &renewed,
                "me",
                &timing,
                &mut seen,
                t0 + Duration::from_secs(21)
            ),
            Decision::Take { transition: true }
        );
    }

    #[test]
    fn the_holders_lease_duration_wins_over_ours() {
        let timing = Timing::for_duration(Duration::from_secs(5));
        let t0 = Instant::now();
        let mut seen = None;
        let held = lease(Some("other"), "1", Some(30));
        decide(&held, "me", &timing, &mut seen, t0);
        assert!(matches!(
            decide(
                &held,
                "me",
                &timing,
                &mut seen,
                t0 + Duration::from_secs(29)
            ),
            Decision::Wait { .. }
        ));
        assert_eq!(
            decide(
                &held,
                "me",
                &timing,
                &mut seen,
                t0 + Duration::from_secs(30)
            ),
            Decision::Take { transition: true }
        );
    }
}
