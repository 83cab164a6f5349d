//! The last read: the database an object's last successful pass saw.
//!
//! A pass reads the database from Upstash when any of these holds:
//! - the last read is older than 80% of the resync interval (so every timer-driven resync —
//!   which comes at least 90% of the interval after the previous pass — reads and can notice
//!   drift);
//! - the spec (`metadata.generation`), labels or annotations changed since that read;
//! - the last pass failed (the last read is dropped on failure), or the object is new to this
//!   process.
//!
//! The credentials the database was read with stay in process memory, as in the monitor's own
//! cache, and are never logged.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use kube::ResourceExt;

use super::Memory;
use crate::{
    controller::WATCH_LAG,
    crd::{CREATE_RECORD_ANNOTATION, CacheInstance, LEGACY_PENDING_CREATE_ANNOTATION},
    digest::of as fingerprint,
    upstash::Database,
};

/// What a last read is valid for besides the object's UID: its spec and metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Inputs {
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
            generation: obj.metadata.generation,
            metadata: fingerprint(&(obj.labels(), annotations)),
        }
    }
}

/// The database an object's last successful pass saw.
pub(super) struct LastRead {
    inputs: Inputs,
    /// Digest of the credentials the database was read with (hashed again: one per instance is
    /// kept): other credentials read again.
    credentials: u64,
    database: Arc<Database>,
    read_at: Instant,
    recorded_at: Instant,
}

impl Memory {
    /// How long a last read is reused.
    pub fn read_max_age(&self) -> Duration {
        self.read_max_age
    }

    /// The database `obj`'s last successful pass saw, if that pass read it recently, with the
    /// same spec, labels, annotations and credentials (`credentials` is their digest), and it
    /// is still the database `id`.
    pub fn reusable_read(
        &self,
        obj: &CacheInstance,
        id: &str,
        credentials: &str,
    ) -> Option<Database> {
        let inputs = Inputs::of(obj);
        self.get(obj, |e| {
            e.last_read
                .as_ref()
                .filter(|r| {
                    r.inputs == inputs
                        && r.credentials == fingerprint(&credentials)
                        && r.database.database_id == id
                        && r.read_at.elapsed() < self.read_max_age
                })
                .map(|r| Database::clone(&r.database))
        })
        .flatten()
    }

    /// Records what a successful pass ended with. `read_at` is when the database was last
    /// read from Upstash (earlier than now when the pass itself reused a read).
    pub fn record_read(
        &self,
        obj: &CacheInstance,
        credentials: &str,
        database: Database,
        read_at: Instant,
    ) {
        let read = LastRead {
            inputs: Inputs::of(obj),
            credentials: fingerprint(&credentials),
            database: Arc::new(database),
            read_at,
            recorded_at: Instant::now(),
        };
        self.update(obj, |e| e.last_read = Some(read));
    }

    /// Drops `obj`'s last read (after a failure): its next pass reads the database again.
    pub fn forget_read(&self, obj: &CacheInstance) {
        self.update(obj, |e| e.last_read = None);
    }

    /// Whether this process's pass over `obj` (the same UID) ended moments ago with a database
    /// that `obj`, as cached, does not name: the cache is behind that pass's writes, whose watch
    /// event will trigger the next pass. A pass on such a copy would only find its decision
    /// refused (its first write is conditional) and read the object again.
    pub fn cache_behind(&self, obj: &CacheInstance) -> bool {
        let names_none = obj.status.as_ref().is_none_or(|s| s.database_id.is_none());
        names_none
            && self
                .get(obj, |e| {
                    e.last_read
                        .as_ref()
                        .is_some_and(|r| r.recorded_at.elapsed() < WATCH_LAG)
                })
                .unwrap_or(false)
    }

    /// When `obj`'s last read database was read, if it is the database `id`.
    pub fn read_at(&self, obj: &CacheInstance, id: &str) -> Option<Instant> {
        self.get(obj, |e| {
            e.last_read
                .as_ref()
                .filter(|r| r.database.database_id == id)
                .map(|r| r.read_at)
        })
        .flatten()
    }

    /// The last read database `id` of `obj` and its age, whatever the inputs (for the monitor).
    /// Shared, not copied: the monitor keeps it as its copy of the database.
    pub fn peek_read(&self, obj: &CacheInstance, id: &str) -> Option<(Arc<Database>, Duration)> {
        self.get(obj, |e| {
            e.last_read
                .as_ref()
                .filter(|r| r.database.database_id == id)
                .map(|r| (r.database.clone(), r.read_at.elapsed()))
        })
        .flatten()
    }

    /// Each object's UID digest ([`crate::controller::memory::uid_key`]) and the age of its
    /// last read, for the record that survives a restart.
    pub fn read_ages(&self) -> Vec<(u64, Duration)> {
        self.lock()
            .values()
            .filter_map(|e| e.last_read.as_ref().map(|r| (e.uid, r.read_at.elapsed())))
            .collect()
    }
}
