//! The first passes of a (re)started operator. Its initial list triggers a pass for every
//! CacheInstance at once, and each would read its database from Upstash: after a restart, the
//! instances still being provisioned would wait behind reads of every settled one, under the
//! same rate limit and the same reconcile slots. A settled instance (Ready for its current
//! spec, its Secrets in place, nothing once-only due) therefore has its first read of this
//! process spread over the next minute (at most the resync interval), in random order, while
//! the others go first. Anything that unsettles it (a spec change, a deleted Secret, a
//! rotation request) ends the wait at once.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use kube::runtime::reflector::ObjectRef;
use rand::Rng;

use crate::{
    controller::conditions,
    crd::{CacheInstance, LEGACY_PENDING_CREATE_ANNOTATION},
};

/// The longest a settled instance's first read waits after a start.
pub const FIRST_READ_SPREAD: Duration = Duration::from_secs(60);

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

/// The first reads of this process that are waiting, per object.
pub struct FirstReads {
    started: Instant,
    waiting: Mutex<HashMap<ObjectRef<CacheInstance>, Instant>>,
}

impl Default for FirstReads {
    fn default() -> Self {
        Self {
            started: Instant::now(),
            waiting: Mutex::default(),
        }
    }
}

impl FirstReads {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ObjectRef<CacheInstance>, Instant>> {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How long the pass of `obj` waits before its first read, if it does: `settled` says
    /// whether it is settled (see [`settled`], plus its Secrets and once-only actions),
    /// `read_before` whether this process read its database already. Only passes in the
    /// first `spread` after the start wait.
    pub fn wait(
        &self,
        obj: &CacheInstance,
        settled: bool,
        read_before: bool,
        spread: Duration,
    ) -> Option<Duration> {
        let key = super::object_key(obj);
        let mut waiting = self.lock();
        let now = Instant::now();
        if !settled || read_before || now.duration_since(self.started) >= spread {
            if !waiting.is_empty() {
                waiting.remove(&key);
            }
            return None;
        }
        let until = *waiting.entry(key.clone()).or_insert_with(|| {
            let millis = spread.as_millis().max(1) as u64;
            now + Duration::from_millis(rand::rng().random_range(0..millis))
        });
        if until <= now {
            // Its turn: this pass reads, and the next ones follow the usual rules.
            waiting.remove(&key);
            return None;
        }
        Some(until - now)
    }

    /// Instances whose first read is still waiting.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::instance::fixtures::instance;

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

    #[test]
    fn a_settled_instance_waits_once_for_its_turn() {
        let reads = FirstReads::default();
        let obj = ready("");
        let spread = Duration::from_secs(60);
        let first = reads.wait(&obj, true, false, spread).expect("waits");
        assert!(first <= spread);
        // Another trigger meanwhile keeps the same turn.
        let again = reads.wait(&obj, true, false, spread).expect("still waits");
        assert!(again <= first);
        assert_eq!(reads.len(), 1);
        // Unsettled (say, its Secret was deleted): no more waiting.
        assert_eq!(reads.wait(&obj, false, false, spread), None);
        assert!(reads.is_empty());
        // Read already by this process: the usual rules.
        assert_eq!(reads.wait(&obj, true, true, spread), None);
    }

    #[test]
    fn only_the_passes_right_after_the_start_wait() {
        let reads = FirstReads {
            started: Instant::now() - Duration::from_secs(61),
            waiting: Mutex::default(),
        };
        assert_eq!(
            reads.wait(&ready(""), true, false, Duration::from_secs(60)),
            None
        );
    }

    #[test]
    fn when_the_turn_comes_the_pass_reads() {
        let reads = FirstReads::default();
        let obj = ready("");
        // A spread of a millisecond: the turn comes at once or right after.
        let _ = reads.wait(&obj, true, false, Duration::from_millis(1));
        std::thread::sleep(Duration::from_millis(2));
        assert_eq!(
            reads.wait(&obj, true, false, Duration::from_millis(1)),
            None
        );
        assert!(reads.is_empty());
    }
}
