//! The first passes of a (re)started operator. Its initial list triggers a pass for every
//! CacheInstance at once, and each would read its database from Upstash: after a restart, the
//! instances still being provisioned would wait behind reads of every settled one, under the
//! same rate limit and the same reconcile slots, and the account would spend in a minute the
//! reads of a whole resync interval, made minutes before by the previous process.
//!
//! A settled instance (Ready for its current spec, its Secrets in place, nothing once-only
//! due) therefore has its first read of this process when its resync is due by the last time
//! it was read, as if the operator had not restarted. The leader records when it last read
//! each instance in a ConfigMap of its own namespace, [`LastReads`]: the instance's UID
//! digest and the second of the read, 12 bytes each, written at most once a minute and once
//! more on a clean shutdown, and only when it changed. It holds no name, no credential and
//! nothing of the database. An instance the record does not know (no record, one from another
//! cluster, one that cannot be read), or whose read is overdue, is read within the first
//! minute (at most one resync interval) in random order. Anything that unsettles it (a spec
//! change, a deleted Secret, a rotation request) ends the wait at once; the instances still
//! being provisioned, failing or with a once-only action due go first.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Mutex,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use k8s_openapi::{
    ByteString, api::core::v1::ConfigMap, apimachinery::pkg::apis::meta::v1::ObjectMeta,
    jiff::Timestamp,
};
use kube::{
    Api, Client,
    api::{Patch, PatchParams},
};
use rand::Rng;

use crate::{
    controller::{
        FIELD_MANAGER, conditions,
        memory::{Memory, uid_key},
    },
    crd::{CacheInstance, LEGACY_PENDING_CREATE_ANNOTATION},
};

/// The longest a settled instance's first read waits after a start when its last read
/// is not known, or is overdue.
pub const FIRST_READ_SPREAD: Duration = Duration::from_secs(60);
/// How often the leader records the last reads, at most.
pub const RECORD_EVERY: Duration = Duration::from_secs(60);
/// Reads a record holds at most: 12 bytes each, 16 characters in base64, under the API
/// server's 1 MiB per object. Beyond it the oldest reads are left out (they are the next due).
pub const RECORD_MAX_READS: usize = 60_000;
/// Version of the record's layout.
const RECORD_FORMAT: &str = "1";
/// Bytes per read in the record: the UID digest and the second of the read, big-endian.
const READ_BYTES: usize = 12;

/// Whether `obj` is settled: Ready for its current generation, with a database (so no create
/// of its is in flight: the create record is done with once the status names it), no record
/// of an earlier operator version, and nothing else (Secrets, once-only actions) for the caller to check.
pub fn settled(obj: &CacheInstance) -> bool {
    let Some(status) = obj.status.as_ref() else {
        return false;
    };
    let generation = obj.metadata.generation;
    obj.metadata.deletion_timestamp.is_none()
        && status.database_id.is_some()
        && status.observed_generation == generation
        && !obj
            .metadata
            .annotations
            .as_ref()
            .is_some_and(|a| a.contains_key(LEGACY_PENDING_CREATE_ANNOTATION))
        && status.conditions.iter().any(|c| {
            c.type_ == conditions::READY
                && c.status == "True"
                && c.observed_generation == generation
        })
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// How long a settled instance's first read of this process waits (pure): until its resync is
/// due by `last_read` (seconds since the epoch, from the record; jittered like every resync by
/// `draw` in `[0, 1)`, and never longer than one resync interval), else, when the last read is
/// not known or its resync is overdue, a random share (`draw`) of `spread`.
pub fn first_read_delay(
    last_read: Option<u64>,
    now: u64,
    resync: Duration,
    spread: Duration,
    draw: f64,
) -> Duration {
    let draw = draw.clamp(0.0, 1.0);
    let spread_turn = spread.mul_f64(draw);
    let Some(last) = last_read else {
        return spread_turn;
    };
    // ±10% like the resync requeue, so that reads recorded in the same second do not stay in
    // lockstep.
    let due = last as f64 + resync.as_secs_f64() * (0.9 + 0.2 * draw);
    let wait = due - now as f64;
    if wait <= 0.0 {
        return spread_turn;
    }
    Duration::from_secs_f64(wait).min(resync)
}

/// What the record of last reads holds: when it was written, the cluster it was written in,
/// and each read as `(uid_key, second)`, sorted by key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LastReads {
    pub written: u64,
    pub cluster: String,
    pub reads: Vec<(u64, u32)>,
}

impl LastReads {
    /// The ConfigMap `name` that holds it.
    pub fn to_config_map(&self, name: &str) -> ConfigMap {
        let mut bytes = Vec::with_capacity(self.reads.len() * READ_BYTES);
        for (key, at) in &self.reads {
            bytes.extend_from_slice(&key.to_be_bytes());
            bytes.extend_from_slice(&at.to_be_bytes());
        }
        let written = i64::try_from(self.written)
            .ok()
            .and_then(|s| Timestamp::from_second(s).ok())
            .map_or_else(String::new, |t| t.to_string());
        ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                labels: Some(BTreeMap::from([(
                    "app.kubernetes.io/managed-by".to_string(),
                    FIELD_MANAGER.to_string(),
                )])),
                annotations: Some(BTreeMap::from([(
                    "cache.upstash-operator.dev/description".to_string(),
                    "When the operator last read each CacheInstance's database from Upstash (UID digest and time), so that a restarted operator reads each when its resync is due. Safe to delete."
                        .to_string(),
                )])),
                ..Default::default()
            },
            data: Some(BTreeMap::from([
                ("format".to_string(), RECORD_FORMAT.to_string()),
                ("cluster".to_string(), self.cluster.clone()),
                ("written".to_string(), written),
                // Not `reads`: a key is either text or binary.
                ("count".to_string(), self.reads.len().to_string()),
            ])),
            binary_data: Some(BTreeMap::from([("reads".to_string(), ByteString(bytes))])),
            ..Default::default()
        }
    }

    /// Reads the record from its ConfigMap; an error says why it is not used (another layout,
    /// another cluster, damaged).
    pub fn from_config_map(cm: &ConfigMap, cluster: &str) -> Result<Self, String> {
        let data = cm.data.as_ref().ok_or("no data")?;
        let field = |key: &str| data.get(key).map(String::as_str);
        if field("format") != Some(RECORD_FORMAT) {
            return Err(format!("format {:?}, not {RECORD_FORMAT}", field("format")));
        }
        if field("cluster") != Some(cluster) {
            return Err("written in another cluster".into());
        }
        let written = field("written")
            .and_then(|w| w.parse::<Timestamp>().ok())
            .and_then(|t| u64::try_from(t.as_second()).ok())
            .ok_or("no time of writing")?;
        let bytes = cm
            .binary_data
            .as_ref()
            .and_then(|b| b.get("reads"))
            .map_or(&[][..], |b| b.0.as_slice());
        let count: usize = field("count")
            .and_then(|n| n.parse().ok())
            .ok_or("no count of reads")?;
        if bytes.len() != count * READ_BYTES {
            return Err(format!("{} bytes of reads for {count} reads", bytes.len()));
        }
        let reads = bytes
            .chunks_exact(READ_BYTES)
            .map(|c| {
                let (key, at) = c.split_at(8);
                (
                    u64::from_be_bytes(key.try_into().expect("8 bytes")),
                    u32::from_be_bytes(at.try_into().expect("4 bytes")),
                )
            })
            .collect();
        Ok(Self {
            written,
            cluster: cluster.to_string(),
            reads,
        })
    }

    /// The record of `reads` (each with its second), the most recent [`RECORD_MAX_READS`].
    pub fn of(written: u64, cluster: &str, mut reads: Vec<(u64, u32)>) -> Self {
        reads.retain(|(key, at)| *key != 0 && *at != 0);
        reads.sort_unstable_by_key(|(key, at)| (*key, std::cmp::Reverse(*at)));
        reads.dedup_by_key(|(key, _)| *key);
        if reads.len() > RECORD_MAX_READS {
            reads.sort_unstable_by_key(|(_, at)| std::cmp::Reverse(*at));
            reads.truncate(RECORD_MAX_READS);
            reads.sort_unstable_by_key(|(key, _)| *key);
        }
        Self {
            written,
            cluster: cluster.to_string(),
            reads,
        }
    }
}

/// A settled instance whose first read of this process waits: until when, and the second of
/// its last read by the record (0: not known), kept for the next record.
#[derive(Debug, Clone, Copy)]
struct Waiting {
    until: Instant,
    last_read: u32,
}

#[derive(Default)]
struct State {
    /// The last reads of the record loaded at the start, until each instance's first pass takes
    /// its own (or, for instances that are gone, until they are no longer of use).
    carried: HashMap<u64, u32>,
    waiting: HashMap<u64, Waiting>,
}

/// The first reads of this process: the record loaded at the start and the instances whose
/// first read waits, by UID digest (a few bytes each).
pub struct FirstReads {
    started: Instant,
    state: Mutex<State>,
}

impl Default for FirstReads {
    fn default() -> Self {
        Self {
            started: Instant::now(),
            state: Mutex::default(),
        }
    }
}

impl FirstReads {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes the last reads of the record written by the previous leader.
    pub fn load(&self, record: &LastReads) {
        let mut state = self.lock();
        state.carried = record.reads.iter().copied().collect();
        state.carried.shrink_to_fit();
    }

    /// How long the pass of `obj` waits before its first read, if it does: `settled` says
    /// whether it is settled (see [`settled`], plus its Secrets and once-only actions),
    /// `read_before` whether this process read its database already.
    pub fn wait(
        &self,
        obj: &CacheInstance,
        settled: bool,
        read_before: bool,
        resync: Duration,
    ) -> Option<Duration> {
        self.wait_at(
            uid_key(obj),
            settled,
            read_before,
            resync,
            Instant::now(),
            unix_now(),
            rand::rng().random_range(0.0..1.0),
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn wait_at(
        &self,
        key: u64,
        settled: bool,
        read_before: bool,
        resync: Duration,
        now: Instant,
        unix: u64,
        draw: f64,
    ) -> Option<Duration> {
        let mut state = self.lock();
        if !settled || read_before {
            // Read now (or already): the usual rules from here on.
            state.waiting.remove(&key);
            state.carried.remove(&key);
            return None;
        }
        if let Some(waiting) = state.waiting.get(&key).copied() {
            if waiting.until <= now {
                // Its turn: this pass reads, and the next ones follow the usual rules.
                state.waiting.remove(&key);
                return None;
            }
            return Some(waiting.until - now);
        }
        let spread = resync.min(FIRST_READ_SPREAD);
        let last_read = state.carried.remove(&key);
        if last_read.is_none() && now.duration_since(self.started) >= spread {
            // Not known, and past the first minute: an instance this process has seen settle.
            return None;
        }
        let delay = first_read_delay(last_read.map(u64::from), unix, resync, spread, draw);
        if delay.is_zero() {
            return None;
        }
        state.waiting.insert(
            key,
            Waiting {
                until: now + delay,
                last_read: last_read.unwrap_or(0),
            },
        );
        Some(delay)
    }

    /// Whether this process started less than [`FIRST_READ_SPREAD`] ago.
    pub fn starting(&self) -> bool {
        self.started.elapsed() < FIRST_READ_SPREAD
    }

    /// Whether `obj`'s first read of this process is still waiting for its turn, or may be
    /// (the record knows it and its first pass has not decided yet).
    pub fn deferred(&self, obj: &CacheInstance) -> bool {
        let key = uid_key(obj);
        let now = Instant::now();
        let state = self.lock();
        state.waiting.get(&key).is_some_and(|w| w.until > now) || state.carried.contains_key(&key)
    }

    /// The record to write now: this process's last reads, and the record's reads of the
    /// instances it has not read yet, up to one resync interval (and the first minute) after
    /// the start: later, those are instances that are gone.
    pub fn record(&self, memory: &Memory, cluster: &str, resync: Duration) -> LastReads {
        let unix = unix_now();
        let mut reads: Vec<(u64, u32)> = memory
            .read_ages()
            .into_iter()
            .map(|(key, age)| {
                let at = unix.saturating_sub(age.as_secs());
                (key, u32::try_from(at).unwrap_or(u32::MAX))
            })
            .collect();
        let mut state = self.lock();
        let useful = self.started.elapsed() < resync.mul_f64(1.1) + FIRST_READ_SPREAD;
        if !useful && !state.carried.is_empty() {
            state.carried = HashMap::new();
        }
        reads.extend(state.carried.iter().map(|(k, v)| (*k, *v)));
        reads.extend(
            state
                .waiting
                .iter()
                .filter(|(_, w)| w.last_read != 0)
                .map(|(k, w)| (*k, w.last_read)),
        );
        drop(state);
        LastReads::of(unix, cluster, reads)
    }

    /// Instances whose first read is still waiting.
    pub fn len(&self) -> usize {
        self.lock().waiting.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Where the leader keeps its record of last reads: ConfigMap `name` in its own namespace.
#[derive(Clone)]
pub struct ReadRecord {
    api: Api<ConfigMap>,
    name: String,
    /// What was last written (or loaded), so that an unchanged record is not written again.
    last: std::sync::Arc<Mutex<Option<u64>>>,
}

impl ReadRecord {
    pub fn new(client: Client, namespace: &str, name: &str) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            name: name.to_string(),
            last: Default::default(),
        }
    }

    /// The record left by the previous leader, if there is a usable one (anything else is
    /// logged and ignored: the first reads are then spread over the first minute).
    pub async fn load(&self, cluster: &str) -> Option<LastReads> {
        let found = tokio::time::timeout(Duration::from_secs(10), self.api.get_opt(&self.name))
            .await
            .map_err(|_| "no answer in 10s".to_string())
            .and_then(|r| r.map_err(|e| crate::error::kube_message(&e)));
        let why = match found {
            Ok(Some(cm)) => match LastReads::from_config_map(&cm, cluster) {
                Ok(record) => {
                    tracing::info!(
                        configmap = %self.name,
                        reads = record.reads.len(),
                        age_s = unix_now().saturating_sub(record.written),
                        "read the record of last reads: settled instances are read when their resync is due"
                    );
                    return Some(record);
                }
                Err(why) => why,
            },
            Ok(None) => "not found".to_string(),
            Err(why) => why,
        };
        tracing::info!(configmap = %self.name, reason = %why, "no record of last reads to use: settled instances are read within the first minute");
        None
    }

    /// Writes `record` unless it holds the same reads as the last one written.
    pub async fn write(&self, record: &LastReads) {
        let digest = crate::digest::of(&record.reads);
        if *self.last.lock().unwrap_or_else(|e| e.into_inner()) == Some(digest) {
            return;
        }
        let cm = record.to_config_map(&self.name);
        let params = PatchParams::apply(FIELD_MANAGER).force();
        let result = tokio::time::timeout(
            Duration::from_secs(10),
            self.api.patch(&self.name, &params, &Patch::Apply(&cm)),
        )
        .await;
        match result {
            Ok(Ok(_)) => {
                *self.last.lock().unwrap_or_else(|e| e.into_inner()) = Some(digest);
                tracing::debug!(configmap = %self.name, reads = record.reads.len(), "recorded the last reads");
            }
            Ok(Err(e)) => {
                tracing::warn!(configmap = %self.name, error = %crate::error::kube_message(&e), "could not record the last reads")
            }
            Err(_) => {
                tracing::warn!(configmap = %self.name, "could not record the last reads: no answer in 10s")
            }
        }
    }

    /// Records the last reads of `ctx` every [`RECORD_EVERY`] until `shutdown` (the caller
    /// writes once more when the controllers have stopped).
    pub async fn run(
        self,
        ctx: std::sync::Arc<super::Context>,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        tokio::pin!(shutdown);
        let mut tick = tokio::time::interval(RECORD_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick is at once: nothing to record yet.
        tick.tick().await;
        loop {
            tokio::select! {
                _ = &mut shutdown => return,
                _ = tick.tick() => self.write_now(&ctx).await,
            }
        }
    }

    /// Writes the record of `ctx`'s last reads now (if it changed).
    pub async fn write_now(&self, ctx: &super::Context) {
        let record = ctx
            .first_reads
            .record(&ctx.memory, &ctx.config.cluster_id, ctx.config.resync);
        self.write(&record).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::instance::fixtures::instance;
    use crate::controller::memory::fnv1a;

    fn ready(extra: &str) -> CacheInstance {
        instance(&format!(
            "spec: {{primaryRegion: us-east-1}}
status:
  observedGeneration: 1
  databaseId: db-1
  conditions:
  - {{type: Ready, status: 'True', reason: Available, message: ok, observedGeneration: 1, lastTransitionTime: '2026-10-01T00:00:00Z'}}
{extra}"
        ))
    }

    #[test]
    fn only_a_ready_instance_of_its_current_spec_is_settled() {
        assert!(settled(&ready("")));
        let mut edited = ready("");
        edited.metadata.generation = Some(2);
        assert!(!settled(&edited), "a new spec goes first");
        let creating = instance("spec: {primaryRegion: us-east-1}");
        assert!(!settled(&creating));
        let annotated = |key: &str| {
            let mut obj = ready("");
            obj.metadata.annotations =
                Some([(key.to_string(), "{}".to_string())].into_iter().collect());
            obj
        };
        // An earlier version's record of a create in flight goes first; this version's record
        // is done with once the status names the database.
        assert!(!settled(&annotated(LEGACY_PENDING_CREATE_ANNOTATION)));
        assert!(settled(&annotated(crate::crd::CREATE_RECORD_ANNOTATION)));
        let not_ready = instance(
            "spec: {primaryRegion: us-east-1}
status:
  observedGeneration: 1
  databaseId: db-1
  conditions:
  - {type: Ready, status: 'False', reason: UpstashUnavailable, message: down, observedGeneration: 1, lastTransitionTime: '2026-10-01T00:00:00Z'}",
        );
        assert!(!settled(&not_ready));
    }

    const RESYNC: Duration = Duration::from_secs(600);
    const SPREAD: Duration = Duration::from_secs(60);

    fn close(got: Duration, want: Duration) {
        assert!(
            got.abs_diff(want) < Duration::from_millis(1),
            "{got:?}, not {want:?}"
        );
    }

    #[test]
    fn a_recent_read_waits_until_its_resync_is_due() {
        let now = 1_000_000;
        // Read 100 s ago, resync 600 s: due in 440–560 s (±10%), whatever the draw.
        for draw in [0.0, 0.5, 0.999] {
            let wait = first_read_delay(Some(now - 100), now, RESYNC, SPREAD, draw);
            assert!(
                wait >= Duration::from_secs(440) && wait <= Duration::from_secs(560),
                "{wait:?}"
            );
        }
        // Due by the middle draw: one interval after the read.
        close(
            first_read_delay(Some(now - 100), now, RESYNC, SPREAD, 0.5),
            Duration::from_secs(500),
        );
    }

    #[test]
    fn an_unknown_or_overdue_read_is_spread_over_the_first_minute() {
        let now = 1_000_000;
        for last in [None, Some(now - 700), Some(now - 100_000), Some(0)] {
            for draw in [0.0, 0.25, 0.999] {
                let wait = first_read_delay(last, now, RESYNC, SPREAD, draw);
                assert_eq!(wait, SPREAD.mul_f64(draw), "{last:?} {draw}");
            }
        }
    }

    #[test]
    fn a_read_in_the_future_waits_one_interval_at_most() {
        // A clock that was ahead: never longer than one resync interval.
        let now = 1_000_000;
        assert_eq!(
            first_read_delay(Some(now + 10_000), now, RESYNC, SPREAD, 0.5),
            RESYNC
        );
    }

    fn first_reads_with(reads: &[(u64, u32)]) -> FirstReads {
        let first = FirstReads::default();
        first.load(&LastReads::of(1, "c", reads.to_vec()));
        first
    }

    #[test]
    fn the_first_pass_of_a_settled_instance_waits_for_its_turn_once() {
        let unix = 1_000_000u32;
        let reads = first_reads_with(&[(7, unix - 100)]);
        let now = Instant::now();
        let wait = reads
            .wait_at(7, true, false, RESYNC, now, u64::from(unix), 0.5)
            .expect("waits");
        close(wait, Duration::from_secs(500));
        // Another trigger meanwhile keeps the same turn.
        let later = now + Duration::from_secs(100);
        close(
            reads
                .wait_at(7, true, false, RESYNC, later, u64::from(unix) + 100, 0.0)
                .expect("still waits"),
            Duration::from_secs(400),
        );
        assert_eq!(reads.len(), 1);
        // Its turn: it reads, and the waiting is over.
        let due = now + wait;
        assert_eq!(
            reads.wait_at(7, true, false, RESYNC, due, u64::from(unix) + 500, 0.5),
            None
        );
        assert!(reads.is_empty());
        // Later passes (long after the start) follow the usual rules.
        assert_eq!(
            reads.wait_at(7, true, false, RESYNC, due, u64::from(unix) + 500, 0.5),
            None
        );
    }

    #[test]
    fn instances_that_are_not_settled_go_first() {
        let unix = 1_000_000u32;
        let reads = first_reads_with(&[(7, unix - 100), (8, unix - 100)]);
        let now = Instant::now();
        // Being provisioned, failing, edited or with a once-only action due: read now, and
        // the record's entry is done with.
        assert_eq!(
            reads.wait_at(7, false, false, RESYNC, now, u64::from(unix), 0.5),
            None
        );
        assert_eq!(
            reads.wait_at(7, true, false, RESYNC, now, u64::from(unix), 0.5),
            Some(SPREAD / 2),
            "no longer the record's turn: spread over the first minute"
        );
        // Unsettled while waiting (say, its Secret was deleted): no more waiting.
        assert!(
            reads
                .wait_at(8, true, false, RESYNC, now, u64::from(unix), 0.5)
                .is_some()
        );
        assert_eq!(
            reads.wait_at(8, false, false, RESYNC, now, u64::from(unix), 0.5),
            None
        );
        // Read already by this process: the usual rules.
        assert_eq!(
            reads.wait_at(9, true, true, RESYNC, now, u64::from(unix), 0.5),
            None
        );
    }

    #[test]
    fn without_a_record_only_the_passes_of_the_first_minute_wait() {
        let reads = FirstReads::default();
        let now = Instant::now();
        let wait = reads.wait_at(7, true, false, RESYNC, now, 1_000_000, 0.5);
        assert_eq!(wait, Some(SPREAD / 2));
        let later = FirstReads {
            started: now - Duration::from_secs(61),
            state: Mutex::default(),
        };
        assert_eq!(
            later.wait_at(7, true, false, RESYNC, now, 1_000_000, 0.5),
            None
        );
        // The spread is at most one resync interval.
        let short = Duration::from_secs(20);
        assert_eq!(
            reads.wait_at(8, true, false, short, now, 1_000_000, 0.5),
            Some(Duration::from_secs(10))
        );
    }

    #[test]
    fn a_record_survives_its_config_map_and_refuses_others() {
        let record = LastReads::of(1_765_000_000, "cluster-a", vec![(3, 30), (1, 10), (2, 20)]);
        assert_eq!(record.reads, [(1, 10), (2, 20), (3, 30)]);
        let cm = record.to_config_map("upstash-operator-last-reads");
        assert_eq!(
            cm.metadata.name.as_deref(),
            Some("upstash-operator-last-reads")
        );
        let back = LastReads::from_config_map(&cm, "cluster-a").expect("readable");
        assert_eq!(back, record);
        // 12 bytes per read; the API server refuses a key that is both text and binary.
        assert_eq!(cm.binary_data.as_ref().unwrap()["reads"].0.len(), 36);
        let binary = cm.binary_data.as_ref().unwrap();
        assert!(
            cm.data
                .as_ref()
                .unwrap()
                .keys()
                .all(|k| !binary.contains_key(k))
        );

        assert!(
            LastReads::from_config_map(&cm, "cluster-b").is_err(),
            "another cluster"
        );
        let mut damaged = cm.clone();
        damaged
            .binary_data
            .as_mut()
            .unwrap()
            .get_mut("reads")
            .unwrap()
            .0
            .pop();
        assert!(LastReads::from_config_map(&damaged, "cluster-a").is_err());
        let mut other_format = cm.clone();
        other_format
            .data
            .as_mut()
            .unwrap()
            .insert("format".into(), "2".into());
        assert!(LastReads::from_config_map(&other_format, "cluster-a").is_err());
        assert!(LastReads::from_config_map(&ConfigMap::default(), "cluster-a").is_err());
    }

    #[test]
    fn a_record_keeps_the_latest_read_of_each_instance_and_the_most_recent_reads() {
        let record = LastReads::of(1, "c", vec![(1, 10), (1, 50), (0, 5), (2, 0)]);
        assert_eq!(
            record.reads,
            [(1, 50)],
            "the latest read; no UID or no time left out"
        );
        let many: Vec<(u64, u32)> = (1..=RECORD_MAX_READS as u64 + 10)
            .map(|k| (k, k as u32))
            .collect();
        let record = LastReads::of(1, "c", many);
        assert_eq!(record.reads.len(), RECORD_MAX_READS);
        assert_eq!(record.reads[0], (11, 11), "the oldest reads are left out");
        let cm = record.to_config_map("r");
        let size = serde_json::to_vec(&cm).unwrap().len();
        assert!(size < 1024 * 1024, "{size} bytes");
    }

    #[test]
    fn the_record_holds_this_process_reads_and_the_ones_it_has_not_made_yet() {
        let memory = Memory::new(RESYNC, std::sync::Arc::new(crate::metrics::Metrics::new()));
        let unix = unix_now() as u32;
        let reads = first_reads_with(&[(7, unix - 100), (8, unix - 200)]);
        // 7 waits for its turn; 8 has not had its first pass yet.
        let now = Instant::now();
        assert!(
            reads
                .wait_at(7, true, false, RESYNC, now, u64::from(unix), 0.5)
                .is_some()
        );
        let record = reads.record(&memory, "c", RESYNC);
        assert_eq!(record.reads, [(7, unix - 100), (8, unix - 200)]);
        // Long after the start, the record's reads of instances never seen are dropped.
        let old = FirstReads {
            started: now - RESYNC * 2,
            state: Mutex::default(),
        };
        old.load(&LastReads::of(1, "c", vec![(8, unix - 200)]));
        assert!(old.record(&memory, "c", RESYNC).reads.is_empty());
    }

    #[test]
    fn the_uid_digest_is_stable() {
        // FNV-1a: the same in every process and version (the record outlives them).
        assert_eq!(fnv1a(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a("a"), 0xaf63_dc4c_8601_ec8c);
        let mut obj = instance("spec: {primaryRegion: us-east-1}");
        obj.metadata.uid = Some("4a1f0c3e-1d2b-4c5d-8e9f-0a1b2c3d4e5f".into());
        assert_eq!(uid_key(&obj), fnv1a("4a1f0c3e-1d2b-4c5d-8e9f-0a1b2c3d4e5f"));
        obj.metadata.uid = None;
        assert_eq!(uid_key(&obj), 0);
    }
}
