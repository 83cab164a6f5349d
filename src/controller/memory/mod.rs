//! What the operator remembers about each CacheInstance between passes: one entry per object,
//! keyed by namespace and name, holding only what is not in the object or its watch caches.
//!
//! The kinds of entry field, each for one purpose:
//! - **Last read** ([`LastRead`], in `last_read.rs`): the database the object's last successful
//!   pass saw, with when it was read. The passes that the operator's own writes trigger (its
//!   status patches, the Secret it applied, the monitor's `Healthy` condition) reuse it instead
//!   of reading Upstash again; it tells that the watch cache is behind this process's own writes
//!   ([`Memory::cache_behind`]); the monitor takes its first view of a new database from it; and
//!   the record of last reads that survives a restart is made from it. Dropped when a pass fails.
//! - **Reported outcome** per [`Topic`] (in `reported.rs`): what the object last reported with an
//!   Event (its `Ready` failure, its drift in `Observe` mode, a failing cleanup), so that an
//!   Event fires once per new failure or difference even when the cached status lags.
//! - **Refused create** (in `creates.rs`): the create call Upstash refused, so that the passes
//!   the operator's own writes trigger do not ask again before a pause (1 s doubling to 5 min)
//!   is over or the spec changes.
//! - **Answered create** (in `creates.rs`): a create call that failed with an answer from
//!   Upstash: the next pass decides from the account's list at once instead of waiting for a
//!   lost answer's database to appear.
//! - **Failures**: consecutive failed passes, for the per-object exponential backoff.
//! - **Cleanup finished**: the object's cleanup is done (its finalizer removed), so that a pass
//!   triggered before the watch shows it gone does not delete its database a second time.
//!
//! Every entry belongs to one object, by UID: an object deleted and created again under the
//! same name starts from an empty entry. An entry with nothing in it is not kept, so a healthy
//! instance costs one last read.
//!
//! An entry is forgotten in one place, [`Memory::forget`], together with the object's metric
//! series, when the CacheInstance watch says the object is gone (a `Delete` event, or missing
//! from the list after the watch restarted; see `Departures` in `controller/mod.rs`): finalizer
//! or not, so an object deleted before it ever got the finalizer leaves nothing behind.
//!
//! Not here, because they are not memories of this process about one object: the claims index
//! and the owned Secrets (views of watches, updated by the watch itself), and the record of last
//! reads a previous leader left (`startup.rs`, keyed by UID digests of objects this process may
//! never see, and emptied within one resync interval of the start).
//!
//! Every pass is triggered by every watch event of its object, status-only ones included: the
//! operator's own status writes trigger passes that the last read makes free (no Upstash call,
//! no write). Those passes are not filtered out of the trigger stream: a pass that the status
//! write triggers is also what picks up a trigger that arrived during the previous pass (a
//! Secret deleted, a policy changed) with a current copy, restores a status edited by hand, and
//! lets a pass that found its cached copy behind run again once the watch catches up. Measured
//! at N = 1,000 (BENCHMARKS.md, "One per-object memory"), a predicate filter on generation,
//! labels, annotations, finalizers and deletion saved 0.05 passes per instance and would drop no
//! kind of entry here (the last read also serves the passes of Secret, policy and credentials
//! events, the monitor and the restart record), while adding a per-object cache of its own that
//! the watch does not forget.

mod creates;
mod last_read;
mod reported;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, Instant},
};

use kube::runtime::reflector::ObjectRef;

pub use creates::{LOST_CREATE_GRACE, MIN_LOST_CREATE_GRACE, lost_create_grace};
pub use reported::Topic;

use crate::{crd::CacheInstance, metrics::Metrics};

/// How long a finished cleanup is remembered at most (the watch normally says the object is
/// gone within moments).
const CLEANUP_KEPT: Duration = Duration::from_secs(600);

/// Everything remembered about one object.
#[derive(Default)]
struct Entry {
    /// The object's UID digest ([`uid_key`]).
    uid: u64,
    last_read: Option<last_read::LastRead>,
    reported: reported::Reported,
    refused_create: Option<Box<creates::RefusedCreate>>,
    answered_create: Option<Box<creates::AnsweredCreate>>,
    /// Consecutive failed passes.
    failures: u32,
    /// When this process finished the object's cleanup.
    cleanup_finished: Option<Instant>,
}

impl Entry {
    fn is_empty(&self) -> bool {
        self.last_read.is_none()
            && self.reported.is_empty()
            && self.refused_create.is_none()
            && self.answered_create.is_none()
            && self.failures == 0
            && self.cleanup_finished.is_none()
    }
}

/// The key of `obj`'s last read: a digest of its UID (FNV-1a, 64 bits), the same in every
/// process and version, so that the record survives restarts and upgrades. 0 without a UID.
pub fn uid_key(obj: &CacheInstance) -> u64 {
    obj.metadata.uid.as_deref().map_or(0, fnv1a)
}

pub(crate) fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The per-object memory of the CacheInstance reconciler (see the module documentation).
pub struct Memory {
    /// How long a last read is reused: 80% of the resync interval.
    read_max_age: Duration,
    metrics: Arc<Metrics>,
    entries: Mutex<HashMap<ObjectRef<CacheInstance>, Entry>>,
}

impl Memory {
    /// A memory whose last reads are reused for 80% of `resync`, forgetting objects' series
    /// in `metrics`.
    pub fn new(resync: Duration, metrics: Arc<Metrics>) -> Self {
        Self {
            read_max_age: resync.mul_f64(0.8),
            metrics,
            entries: Mutex::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<ObjectRef<CacheInstance>, Entry>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `obj`'s entry, if there is one of this very object (same UID).
    fn get<R>(&self, obj: &CacheInstance, f: impl FnOnce(&Entry) -> R) -> Option<R> {
        let uid = uid_key(obj);
        self.lock()
            .get(&super::object_key(obj))
            .filter(|e| e.uid == uid)
            .map(f)
    }

    /// Changes `obj`'s entry (a new one if there is none of this very object); an entry left
    /// empty is dropped.
    fn update<R>(&self, obj: &CacheInstance, f: impl FnOnce(&mut Entry) -> R) -> R {
        let uid = uid_key(obj);
        let key = super::object_key(obj);
        let mut entries = self.lock();
        let entry = entries.entry(key.clone()).or_default();
        if entry.uid != uid {
            *entry = Entry {
                uid,
                ..Entry::default()
            };
        }
        let result = f(entry);
        if entry.is_empty() {
            entries.remove(&key);
        }
        result
    }

    /// Forgets everything kept about `obj`, which is gone: its entry and its metric series.
    /// Called when the watch says so, and only there.
    pub fn forget(&self, obj: &CacheInstance) {
        self.metrics.forget_instance(
            obj.metadata.namespace.as_deref().unwrap_or_default(),
            obj.metadata.name.as_deref().unwrap_or_default(),
        );
        self.lock().remove(&super::object_key(obj));
    }

    /// Records a failed pass over `obj` and returns how many failed in a row.
    pub fn record_failure(&self, obj: &CacheInstance) -> u32 {
        self.update(obj, |e| {
            e.failures = e.failures.saturating_add(1);
            e.failures
        })
    }

    /// Records a successful pass over `obj`: the next failure is the first.
    pub fn record_success(&self, obj: &CacheInstance) {
        self.update(obj, |e| e.failures = 0);
    }

    /// Records that this process finished `obj`'s cleanup.
    pub fn cleanup_finished(&self, obj: &CacheInstance) {
        self.update(obj, |e| e.cleanup_finished = Some(Instant::now()));
    }

    /// Whether this process finished `obj`'s cleanup (lately).
    pub fn cleanup_done(&self, obj: &CacheInstance) -> bool {
        self.get(obj, |e| {
            e.cleanup_finished
                .is_some_and(|at| at.elapsed() < CLEANUP_KEPT)
        })
        .unwrap_or(false)
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
mod tests;
