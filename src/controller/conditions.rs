//! `metav1.Condition` bookkeeping: set a condition, keeping `lastTransitionTime` unless the
//! status changes, so that recomputing identical conditions yields an identical status (and no
//! write).

use k8s_openapi::{
    apimachinery::pkg::apis::meta::v1::{Condition, Time},
    jiff::Timestamp,
};

/// Condition types of a CacheInstance.
pub const READY: &str = "Ready";
pub const PROVISIONED: &str = "Provisioned";
pub const SYNCED: &str = "Synced";
pub const SECRET_READY: &str = "SecretReady";
pub const POLICY_COMPLIANT: &str = "PolicyCompliant";
pub const HEALTHY: &str = "Healthy";

/// `True`, `False` or `Unknown`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    True,
    False,
    Unknown,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::True => "True",
            Status::False => "False",
            Status::Unknown => "Unknown",
        }
    }
}

impl From<bool> for Status {
    fn from(b: bool) -> Self {
        if b { Status::True } else { Status::False }
    }
}

/// A condition to set, without the bookkeeping fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cond {
    pub type_: &'static str,
    pub status: Status,
    pub reason: String,
    pub message: String,
}

impl Cond {
    pub fn new(
        type_: &'static str,
        status: impl Into<Status>,
        reason: &str,
        message: impl Into<String>,
    ) -> Self {
        Self {
            type_,
            status: status.into(),
            reason: reason.to_string(),
            message: message.into(),
        }
    }
}

/// Builds the new condition list from `previous`: each of `updates` replaces the condition of
/// its type, keeping the previous `lastTransitionTime` when the status did not change;
/// conditions of other types in `previous` are dropped unless listed in `keep`.
pub fn merge(
    previous: &[Condition],
    updates: &[Cond],
    keep: &[&str],
    generation: Option<i64>,
    now: Timestamp,
) -> Vec<Condition> {
    let mut out: Vec<Condition> = previous
        .iter()
        .filter(|c| keep.contains(&c.type_.as_str()) && !updates.iter().any(|u| u.type_ == c.type_))
        .cloned()
        .collect();
    for update in updates {
        let old = previous.iter().find(|c| c.type_ == update.type_);
        let last_transition_time = match old {
            Some(old) if old.status == update.status.as_str() => old.last_transition_time.clone(),
            _ => Time(now),
        };
        out.push(Condition {
            type_: update.type_.to_string(),
            status: update.status.as_str().to_string(),
            reason: update.reason.clone(),
            message: truncate(&update.message, 32_000),
            observed_generation: generation,
            last_transition_time,
        });
    }
    out.sort_by(|a, b| a.type_.cmp(&b.type_));
    out
}

/// Finds a condition by type.
pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transition_time_moves_only_with_status() {
        let t0: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let t1: Timestamp = "2026-01-01T01:00:00Z".parse().unwrap();
        let first = merge(
            &[],
            &[Cond::new(READY, false, "Provisioning", "creating")],
            &[],
            Some(1),
            t0,
        );
        let same = merge(
            &first,
            &[Cond::new(READY, false, "Provisioning", "still creating")],
            &[],
            Some(1),
            t1,
        );
        assert_eq!(same[0].last_transition_time, Time(t0));
        assert_eq!(same[0].message, "still creating");
        let flipped = merge(
            &same,
            &[Cond::new(READY, true, "Ready", "ok")],
            &[],
            Some(2),
            t1,
        );
        assert_eq!(flipped[0].last_transition_time, Time(t1));
        assert_eq!(flipped[0].observed_generation, Some(2));
    }

    #[test]
    fn recomputing_is_idempotent_and_sorted() {
        let t0: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let updates = [
            Cond::new(SYNCED, true, "Synced", "ok"),
            Cond::new(READY, true, "Ready", "ok"),
        ];
        let a = merge(&[], &updates, &[], Some(3), t0);
        let b = merge(
            &a,
            &updates,
            &[],
            Some(3),
            "2027-01-01T00:00:00Z".parse().unwrap(),
        );
        assert_eq!(a, b);
        assert_eq!(a[0].type_, READY);
    }

    #[test]
    fn other_writers_conditions_are_kept_only_when_asked() {
        let t0: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let prev = merge(
            &[],
            &[Cond::new(HEALTHY, true, "NoAlerts", "")],
            &[],
            Some(1),
            t0,
        );
        assert!(
            merge(
                &prev,
                &[Cond::new(READY, true, "Ready", "")],
                &[],
                Some(1),
                t0
            )
            .iter()
            .all(|c| c.type_ != HEALTHY)
        );
        assert!(
            merge(
                &prev,
                &[Cond::new(READY, true, "Ready", "")],
                &[HEALTHY],
                Some(1),
                t0
            )
            .iter()
            .any(|c| c.type_ == HEALTHY)
        );
    }
}
