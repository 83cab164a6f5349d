//! What the monitor remembers per instance between samples, and the table that holds it.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
    time::Instant,
};

use kube::runtime::reflector::ObjectRef;

use super::{
    figures::WriteCounters,
    probe::ProbeWindow,
    report::InstanceReport,
    thresholds::{AlertKind, AlertState, Thresholds},
};
use crate::{crd::CacheInstance, upstash::Database};

/// One monitored instance.
pub struct InstanceState {
    pub id: u64,
    pub instance: Arc<CacheInstance>,
    /// The `resourceVersion` (its digest) and policy set the thresholds were computed for.
    pub seen_version: Option<u64>,
    pub policies_version: u64,
    /// `None`: not monitored (no policy applies and the defaults are off).
    /// Shared by every instance with the same thresholds (see `Monitor::discover`).
    pub thresholds: Option<Arc<Thresholds>>,
    /// The applicable policies' names.
    pub policies: Option<String>,
    pub database_id: String,
    /// Bumped when the schedule changes; queued work of an older epoch is dropped.
    pub epoch: u64,
    pub sampling: bool,
    pub probing: bool,
    /// The database object (limits, plan, the data-plane token) and when it was read.
    /// Shared with the reconciler's last read when it came from there.
    pub db: Option<(Arc<Database>, Instant)>,
    /// Whether `db` was ever filled (afterwards, refreshes read Upstash themselves).
    pub had_db: bool,
    pub alerts: BTreeMap<AlertKind, AlertState>,
    pub probe: ProbeWindow,
    /// `evicted_keys` from the latest probe round's `INFO`.
    pub evicted_keys: Option<f64>,
    /// The counters at the previous sample, for eviction rates.
    pub counters: Option<WriteCounters>,
    /// Probe commands sent today: `(unix day, count)`.
    pub probe_commands_today: (i64, u64),
    pub report: Option<InstanceReport>,
}

impl InstanceState {
    /// A fresh state, with alerts the object already shows as firing (so a restarted operator
    /// does not announce them again).
    pub fn restore(id: u64, instance: Arc<CacheInstance>) -> Self {
        let status = instance.status.clone().unwrap_or_default();
        let alerts = status
            .alerts
            .iter()
            .filter_map(|a| AlertKind::parse(&a.type_))
            .map(|k| (k, AlertState::Firing { since: 0.0 }))
            .collect();
        Self {
            id,
            database_id: status.database_id.unwrap_or_default(),
            instance,
            seen_version: None,
            policies_version: 0,
            thresholds: None,
            policies: None,
            epoch: 0,
            sampling: false,
            probing: false,
            db: None,
            had_db: false,
            alerts,
            probe: ProbeWindow::default(),
            evicted_keys: None,
            counters: None,
            probe_commands_today: (0, 0),
            report: None,
        }
    }

    /// Counts probe commands sent on unix day `day`; returns today's total.
    pub fn count_probe_commands(&mut self, day: i64, n: u64) -> u64 {
        if self.probe_commands_today.0 != day {
            self.probe_commands_today = (day, 0);
        }
        self.probe_commands_today.1 += n;
        self.probe_commands_today.1
    }

    /// Probe commands sent on unix day `day`.
    pub fn probe_commands_on(&self, day: i64) -> u64 {
        if self.probe_commands_today.0 == day {
            self.probe_commands_today.1
        } else {
            0
        }
    }
}

/// Every monitored instance, by a small id (queue entries carry the id, not the name).
#[derive(Default)]
pub struct Table {
    next_id: u64,
    ids: HashMap<ObjectRef<CacheInstance>, u64>,
    /// Boxed: a state is about 1.3 KB, and the table keeps room for more entries than it holds.
    pub states: HashMap<u64, Box<InstanceState>>,
}

impl Table {
    pub fn id_of(&self, key: &ObjectRef<CacheInstance>) -> Option<u64> {
        self.ids.get(key).copied()
    }

    /// Adds a state for `instance` and returns its id.
    pub fn insert(&mut self, key: ObjectRef<CacheInstance>, instance: Arc<CacheInstance>) -> u64 {
        self.next_id += 1;
        let id = self.next_id;
        self.ids.insert(key, id);
        self.states
            .insert(id, Box::new(InstanceState::restore(id, instance)));
        id
    }

    /// Forgets every instance whose id `keep` turns down.
    pub fn retain(&mut self, mut keep: impl FnMut(u64) -> bool) {
        let states = &mut self.states;
        self.ids.retain(|_, id| {
            let kept = keep(*id);
            if !kept {
                states.remove(id);
            }
            kept
        });
    }

    pub fn len(&self) -> usize {
        self.states.len()
    }

    pub fn is_empty(&self) -> bool {
        self.states.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instance(name: &str, alerts: serde_json::Value) -> Arc<CacheInstance> {
        Arc::new(
            serde_json::from_value(serde_json::json!({
                "apiVersion": "cache.upstash-operator.dev/v1alpha1",
                "kind": "CacheInstance",
                "metadata": {"name": name, "namespace": "crm"},
                "spec": {"primaryRegion": "us-east-1"},
                "status": {"databaseId": "db-1", "alerts": alerts},
            }))
            .unwrap(),
        )
    }

    #[test]
    fn a_restart_remembers_the_firing_alerts() {
        let i = instance(
            "a",
            serde_json::json!([
                {"type": "LatencyHigh", "since": "2026-01-01T00:00:00Z", "message": "m"},
                {"type": "Unknown", "since": "2026-01-01T00:00:00Z", "message": "m"},
            ]),
        );
        let s = InstanceState::restore(1, i);
        assert_eq!(s.database_id, "db-1");
        assert_eq!(
            s.alerts.keys().copied().collect::<Vec<_>>(),
            [AlertKind::LatencyHigh]
        );
    }

    #[test]
    fn the_table_forgets_what_is_gone_and_counts_per_day() {
        let mut t = Table::default();
        let a = instance("a", serde_json::json!([]));
        let b = instance("b", serde_json::json!([]));
        let (ka, kb) = (
            ObjectRef::from_obj(a.as_ref()),
            ObjectRef::from_obj(b.as_ref()),
        );
        let ia = t.insert(ka, a);
        let ib = t.insert(kb.clone(), b);
        assert_ne!(ia, ib);
        t.retain(|id| id == ia);
        assert_eq!(t.len(), 1);
        assert_eq!(t.id_of(&kb), None);
        let s = t.states.get_mut(&ia).unwrap();
        assert_eq!(s.count_probe_commands(10, 2), 2);
        assert_eq!(s.count_probe_commands(10, 2), 4);
        assert_eq!(s.count_probe_commands(11, 2), 2, "a new day starts at zero");
        assert_eq!(s.probe_commands_on(12), 0);
    }
}
