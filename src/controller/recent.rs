//! The database each CacheInstance's last successful reconcile saw, so that reconciles
//! triggered by the operator's own writes (its status patches, the Secret it applied, the
//! monitor's `Healthy` condition) do not read Upstash again.
//!
//! A reconcile reads the database from Upstash when any of these holds:
//! - the last read is older than [`RecentReads::max_age`] (80% of the resync interval, so every
//!   timer-driven resync — which comes at least 90% of the interval after the previous pass —
//!   reads and can notice drift);
//! - the spec (`metadata.generation`), labels or annotations changed since that read;
//! - the last reconcile failed (the entry is dropped on failure), or the object is new to this
//!   process.
//!
//! kube-runtime's `Controller` triggers on every watch event, status-only ones included. Filtering the trigger stream with a generation
//! predicate would also drop the owned Secret's deletion and the policy watch, so the reuse
//! decision is made inside the reconcile instead, where all inputs are known.
//!
//! The monitor also takes its first view of a new database from here instead of reading it.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use kube::{ResourceExt, runtime::reflector::ObjectRef};

use super::WATCH_LAG;

use crate::{
    crd::{CREATE_RECORD_ANNOTATION, CacheInstance, LEGACY_PENDING_CREATE_ANNOTATION},
    upstash::Database,
};

/// What a cached read is valid for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Inputs {
    uid: u64,
    generation: Option<i64>,
    metadata: u64,
}

impl Inputs {
    fn of(obj: &CacheInstance) -> Self {
        // The operator's own bookkeeping annotation changes within a pass; it says nothing about
        // what the database should be.
        let annotations: Vec<(&String, &String)> = obj
            .annotations()
            .iter()
            .filter(|(k, _)| {
                k.as_str() != CREATE_RECORD_ANNOTATION
                    && k.as_str() != LEGACY_PENDING_CREATE_ANNOTATION
            })
            .collect();
        Self {
            uid: super::startup::uid_key(obj),
            generation: obj.metadata.generation,
            metadata: fingerprint(&(obj.labels(), annotations)),
        }
    }
}

use crate::digest::of as fingerprint;

struct Entry {
    inputs: Inputs,
    /// Digest of the credentials the database was read with (hashed again: one per instance is
    /// kept): other credentials read again.
    credentials: u64,
    database: Arc<Database>,
    read_at: Instant,
    recorded_at: Instant,
}

/// Per-object last read databases (credentials included: they stay in process memory, as in
/// the monitor's own cache, and are never logged).
pub struct RecentReads {
    max_age: Duration,
    entries: Mutex<HashMap<ObjectRef<CacheInstance>, Entry>>,
}

impl RecentReads {
    /// Reads are reused for 80% of `resync`.
    pub fn new(resync: Duration) -> Self {
        Self {
            max_age: resync.mul_f64(0.8),
            entries: Mutex::default(),
        }
    }

    /// How long a read is reused.
    pub fn max_age(&self) -> Duration {
        self.max_age
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ObjectRef<CacheInstance>, Entry>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The database `obj`'s last successful pass saw, if that pass read it recently, with the
    /// same spec, labels, annotations and credentials (`credentials` is their digest), and it
    /// is still the database `id`.
    pub fn reuse(&self, obj: &CacheInstance, id: &str, credentials: &str) -> Option<Database> {
        let entries = self.lock();
        let entry = entries.get(&super::object_key(obj))?;
        (entry.inputs == Inputs::of(obj)
            && entry.credentials == fingerprint(&credentials)
            && entry.database.database_id == id
            && entry.read_at.elapsed() < self.max_age)
            .then(|| Database::clone(&entry.database))
    }

    /// Records what a successful pass ended with. `read_at` is when the database was last
    /// read from Upstash (earlier than now when the pass itself reused a read).
    pub fn record(
        &self,
        obj: &CacheInstance,
        credentials: &str,
        database: Database,
        read_at: Instant,
    ) {
        self.lock().insert(
            super::object_key(obj),
            Entry {
                inputs: Inputs::of(obj),
                credentials: fingerprint(&credentials),
                database: Arc::new(database),
                read_at,
                recorded_at: Instant::now(),
            },
        );
    }

    /// Whether this process's pass over `obj` (the same UID) ended moments ago with a database
    /// that `obj`, as cached, does not name: the cache is behind that pass's writes, whose watch
    /// event will trigger the next pass. A pass on such a copy would only find its decision
    /// refused (its first write is conditional) and read the object again.
    pub fn cache_behind(&self, obj: &CacheInstance) -> bool {
        let names_none = obj.status.as_ref().is_none_or(|s| s.database_id.is_none());
        names_none
            && self.lock().get(&super::object_key(obj)).is_some_and(|e| {
                e.inputs.uid == super::startup::uid_key(obj) && e.recorded_at.elapsed() < WATCH_LAG
            })
    }

    /// When `obj`'s recorded database was read, if it is the database `id`.
    pub fn read_at(&self, obj: &CacheInstance, id: &str) -> Option<Instant> {
        self.lock()
            .get(&super::object_key(obj))
            .filter(|e| e.database.database_id == id)
            .map(|e| e.read_at)
    }

    /// The recorded database `id` of `obj` and its age, whatever the inputs (for the monitor).
    /// Shared, not copied: the monitor keeps it as its copy of the database.
    pub fn peek(&self, obj: &CacheInstance, id: &str) -> Option<(Arc<Database>, Duration)> {
        self.lock()
            .get(&super::object_key(obj))
            .filter(|e| e.database.database_id == id)
            .map(|e| (e.database.clone(), e.read_at.elapsed()))
    }

    /// Drops `obj`'s entry (after a failure, or when it is deleted).
    pub fn forget(&self, obj: &CacheInstance) {
        self.lock().remove(&super::object_key(obj));
    }

    /// Each object's UID digest ([`super::startup::uid_key`]) and the age of its last read,
    /// for the record that survives a restart.
    pub fn read_ages(&self) -> Vec<(u64, Duration)> {
        self.lock()
            .values()
            .map(|e| (e.inputs.uid, e.read_at.elapsed()))
            .collect()
    }

    /// Objects with an entry.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no object has an entry.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::CacheInstanceSpec;

    fn instance(generation: i64) -> CacheInstance {
        let mut obj: CacheInstance = CacheInstance::new(
            "orders",
            serde_json::from_value::<CacheInstanceSpec>(serde_json::json!({
                "primaryRegion": "us-east-1"
            }))
            .expect("a valid spec"),
        );
        obj.metadata.namespace = Some("shop".into());
        obj.metadata.uid = Some("0f9e".into());
        obj.metadata.generation = Some(generation);
        obj
    }

    fn database(id: &str) -> Database {
        serde_json::from_value(serde_json::json!({
            "database_id": id,
            "database_name": "shop-orders",
        }))
        .expect("a database")
    }

    #[test]
    fn reuses_a_fresh_read_of_the_same_inputs() {
        let recent = RecentReads::new(Duration::from_secs(300));
        let obj = instance(1);
        assert!(recent.reuse(&obj, "db-1", "k").is_none());
        recent.record(&obj, "k", database("db-1"), Instant::now());
        assert_eq!(recent.reuse(&obj, "db-1", "k").unwrap().database_id, "db-1");
        assert!(
            recent.reuse(&obj, "db-2", "k").is_none(),
            "another database"
        );
        assert!(
            recent.reuse(&obj, "db-1", "other").is_none(),
            "other credentials"
        );
    }

    #[test]
    fn a_spec_label_or_annotation_change_reads_again() {
        let recent = RecentReads::new(Duration::from_secs(300));
        let obj = instance(1);
        recent.record(&obj, "k", database("db-1"), Instant::now());
        assert!(
            recent.reuse(&instance(2), "db-1", "k").is_none(),
            "generation"
        );
        let mut labelled = instance(1);
        labelled.labels_mut().insert("tier".into(), "gold".into());
        assert!(recent.reuse(&labelled, "db-1", "k").is_none(), "labels");
        let mut annotated = instance(1);
        annotated
            .annotations_mut()
            .insert(crate::crd::ROTATE_ANNOTATION.into(), "now".into());
        assert!(
            recent.reuse(&annotated, "db-1", "k").is_none(),
            "annotations"
        );
        let mut pending = instance(1);
        pending
            .annotations_mut()
            .insert(CREATE_RECORD_ANNOTATION.into(), "{}".into());
        assert!(
            recent.reuse(&pending, "db-1", "k").is_some(),
            "the operator's own bookkeeping"
        );
        let mut replaced = instance(1);
        replaced.metadata.uid = Some("another".into());
        assert!(recent.reuse(&replaced, "db-1", "k").is_none(), "uid");
    }

    #[test]
    fn reads_expire_before_the_next_resync() {
        let recent = RecentReads::new(Duration::from_secs(10));
        assert_eq!(recent.max_age(), Duration::from_secs(8));
        let obj = instance(1);
        let old = Instant::now()
            .checked_sub(Duration::from_secs(9))
            .expect("a past instant");
        recent.record(&obj, "k", database("db-1"), old);
        assert!(recent.reuse(&obj, "db-1", "k").is_none());
        assert!(recent.peek(&obj, "db-1").unwrap().1 >= Duration::from_secs(9));
    }

    #[test]
    fn forget_drops_the_entry() {
        let recent = RecentReads::new(Duration::from_secs(300));
        let obj = instance(1);
        recent.record(&obj, "k", database("db-1"), Instant::now());
        assert_eq!(recent.len(), 1);
        recent.forget(&obj);
        assert!(recent.is_empty());
        assert!(recent.reuse(&obj, "db-1", "k").is_none());
    }

    #[test]
    fn a_cached_copy_without_the_database_just_recorded_is_behind() {
        let recent = RecentReads::new(Duration::from_secs(300));
        let cached = instance(1);
        assert!(!recent.cache_behind(&cached), "nothing recorded yet");
        recent.record(&cached, "k", database("db-1"), Instant::now());
        assert!(recent.cache_behind(&cached));
        let mut current = cached.clone();
        current.status = Some(crate::crd::CacheInstanceStatus {
            database_id: Some("db-1".into()),
            ..Default::default()
        });
        assert!(!recent.cache_behind(&current));
        // Another object of the same name (deleted and created again) is not behind.
        let mut other = cached.clone();
        other.metadata.uid = Some("1a2b".into());
        assert!(!recent.cache_behind(&other));
    }
}
