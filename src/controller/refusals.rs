//! Create calls Upstash refused, per object. Every write a pass makes triggers another pass at
//! once, and a pass that records a create attempt writes; so that the pass right after a refusal
//! does not ask again, a refused create waits for a pause that doubles with each refusal (1 s up
//! to 5 minutes), or for a change of the spec.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use kube::{ResourceExt, runtime::reflector::ObjectRef};

use crate::{crd::CacheInstance, upstash::UpstashError};

const LONGEST_PAUSE: Duration = Duration::from_secs(300);

struct Entry {
    uid: String,
    generation: Option<i64>,
    error: UpstashError,
    until: Instant,
    count: u32,
}

/// The last refused create per object.
#[derive(Default)]
pub struct Refusals {
    entries: Mutex<HashMap<ObjectRef<CacheInstance>, Entry>>,
}

impl Refusals {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ObjectRef<CacheInstance>, Entry>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn same(entry: &Entry, obj: &CacheInstance) -> bool {
        entry.uid == obj.uid().unwrap_or_default() && entry.generation == obj.metadata.generation
    }

    /// Records that Upstash refused to create `obj`'s database with `error`.
    pub fn refused(&self, obj: &CacheInstance, error: &UpstashError) {
        let mut entries = self.lock();
        let key = super::object_key(obj);
        let count = entries
            .get(&key)
            .filter(|e| Self::same(e, obj))
            .map_or(1, |e| e.count.saturating_add(1));
        let pause = Duration::from_secs(1u64 << (count - 1).min(9)).min(LONGEST_PAUSE);
        entries.insert(
            key,
            Entry {
                uid: obj.uid().unwrap_or_default(),
                generation: obj.metadata.generation,
                error: error.clone(),
                until: Instant::now() + pause,
                count,
            },
        );
    }

    /// The refusal that still stands for `obj` (same object, same spec, pause not over).
    pub fn standing(&self, obj: &CacheInstance) -> Option<UpstashError> {
        let entries = self.lock();
        entries
            .get(&super::object_key(obj))
            .filter(|e| Self::same(e, obj) && Instant::now() < e.until)
            .map(|e| e.error.clone())
    }

    /// Drops the record (the create went through, or the object is gone).
    pub fn forget(&self, obj: &CacheInstance) {
        self.lock().remove(&super::object_key(obj));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::instance::fixtures::instance;

    fn rejected() -> UpstashError {
        UpstashError::Rejected {
            status: 400,
            message: "database limit reached".into(),
        }
    }

    #[test]
    fn a_refusal_stands_for_its_pause_and_a_spec_change_ends_it() {
        let refusals = Refusals::default();
        let obj = instance("spec: {primaryRegion: us-east-1}");
        assert!(refusals.standing(&obj).is_none());
        refusals.refused(&obj, &rejected());
        assert!(matches!(
            refusals.standing(&obj),
            Some(UpstashError::Rejected { .. })
        ));
        let mut edited = obj.clone();
        edited.metadata.generation = Some(2);
        assert!(
            refusals.standing(&edited).is_none(),
            "a new spec is tried at once"
        );
        refusals.forget(&obj);
        assert!(refusals.standing(&obj).is_none());
    }

    #[test]
    fn each_refusal_doubles_the_pause() {
        let refusals = Refusals::default();
        let obj = instance("spec: {primaryRegion: us-east-1}");
        for _ in 0..3 {
            refusals.refused(&obj, &rejected());
        }
        let entries = refusals.lock();
        let entry = entries.values().next().unwrap();
        assert_eq!(entry.count, 3);
        let left = entry.until.saturating_duration_since(Instant::now());
        assert!(
            left > Duration::from_secs(3) && left <= Duration::from_secs(4),
            "{left:?}"
        );
    }
}
