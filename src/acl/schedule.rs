//! The users' rotation clocks: each user with `rotation.every` is rotated on a schedule of its
//! own, counted from its last rotation as `status.users` records it. Pure.

use std::time::Duration;

use k8s_openapi::{
    apimachinery::pkg::apis::meta::v1::Time,
    jiff::{SignedDuration, Timestamp},
};

use super::plan::{Desired, SecretView};
use crate::crd::{CacheInstance, UserStatus};

/// When the user's last rotation was, as recorded (unknown: the clock starts now).
fn recorded_last(recorded: &[UserStatus], name: &str) -> Option<Timestamp> {
    recorded
        .iter()
        .find(|r| r.name == name)
        .and_then(|r| r.last_rotation_time.as_ref())
        .map(|t| t.0)
}

/// The next scheduled rotation after `last`: `every`, at least `floor` (the operator's
/// `--min-rotation-interval`).
fn next_after(last: Timestamp, every: SignedDuration, floor: SignedDuration) -> Timestamp {
    last.checked_add(every.max(floor)).unwrap_or(Timestamp::MAX)
}

/// Marks the users whose scheduled rotation is due at `now`.
pub fn mark_due(
    desired: &mut [Desired],
    recorded: &[UserStatus],
    floor: SignedDuration,
    now: Timestamp,
) {
    for d in desired.iter_mut() {
        d.scheduled = match (d.every, recorded_last(recorded, &d.name)) {
            (Some(every), Some(last)) => now >= next_after(last, every, floor),
            _ => false,
        };
    }
}

/// Whether the scheduled rotation of any of `obj`'s users may be due at `now`, as `recorded`
/// says (then the pass reads the API server's copy of the status first: the watch cache may not
/// have the last rotation yet).
pub fn any_due(
    obj: &CacheInstance,
    recorded: &[UserStatus],
    floor: SignedDuration,
    now: Timestamp,
) -> bool {
    obj.spec.users.iter().flatten().any(|u| {
        let every = u
            .rotation
            .as_ref()
            .and_then(|r| r.every.as_ref())
            .and_then(|e| e.duration().ok())
            .and_then(|e| SignedDuration::try_from(e).ok());
        every
            .zip(recorded_last(recorded, &u.name))
            .is_some_and(|(every, last)| now >= next_after(last, every, floor))
    })
}

/// The users' status after a pass, and when the next scheduled rotation is due: `rotated`
/// names the users given a new password in this pass (created or rotated). Users with no
/// Secret (not created) are left out.
pub fn statuses(
    desired: &[Desired],
    secrets: &[SecretView],
    recorded: &[UserStatus],
    rotated: &[&str],
    floor: SignedDuration,
    now: Timestamp,
) -> (Vec<UserStatus>, Option<Duration>) {
    let mut out = Vec::new();
    let mut requeue: Option<Duration> = None;
    for d in desired {
        let fresh = rotated.contains(&d.name.as_str());
        let has_secret = secrets
            .iter()
            .any(|s| s.user == d.name && s.name == d.secret_name);
        if !fresh && !has_secret {
            continue;
        }
        let last = if fresh {
            now
        } else {
            recorded_last(recorded, &d.name).unwrap_or(now)
        };
        let next = d.every.map(|every| next_after(last, every, floor));
        if let Some(next) = next.filter(|n| *n > now) {
            let after = next.duration_since(now).unsigned_abs();
            requeue = Some(requeue.map_or(after, |r| r.min(after)));
        }
        out.push(UserStatus {
            name: d.name.clone(),
            secret_name: d.secret_name.clone(),
            last_rotation_time: Some(Time(last)),
            next_rotation_time: next.map(Time),
        });
    }
    (out, requeue)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::acl::plan::{self, Target};

    const HOUR: SignedDuration = SignedDuration::from_hours(1);

    fn users() -> Vec<Desired> {
        let users: Vec<crate::crd::AclUser> = serde_json::from_value(serde_json::json!([
            {"name": "a", "rotation": {"every": "1h"}},
            {"name": "b"},
        ]))
        .unwrap();
        let target = Target {
            database_id: "db",
            endpoint: "e",
            port: 6379,
            key_prefix: None,
            secret_format: None,
        };
        plan::desired("shop", &users, &target, &BTreeMap::new())
    }

    fn record(name: &str, last: Timestamp) -> UserStatus {
        UserStatus {
            name: name.into(),
            secret_name: format!("shop-{name}"),
            last_rotation_time: Some(Time(last)),
            next_rotation_time: None,
        }
    }

    fn secret(name: &str) -> SecretView {
        SecretView {
            name: format!("shop-{name}"),
            user: name.into(),
            ..Default::default()
        }
    }

    #[test]
    fn only_the_user_whose_hour_has_passed_is_due() {
        let now = Timestamp::from_second(1_800_000_000).unwrap();
        let mut d = users();
        assert_eq!(d[0].every, Some(HOUR));
        assert_eq!(d[1].every, None);
        let old = now - SignedDuration::from_mins(61);
        mark_due(
            &mut d,
            &[record("a", old), record("b", old)],
            SignedDuration::ZERO,
            now,
        );
        assert!(d[0].scheduled);
        assert!(!d[1].scheduled, "no schedule, never due");

        let recent = now - SignedDuration::from_mins(59);
        mark_due(&mut d, &[record("a", recent)], SignedDuration::ZERO, now);
        assert!(!d[0].scheduled);
        // The operator's floor wins over a shorter schedule.
        mark_due(
            &mut d,
            &[record("a", old)],
            SignedDuration::from_hours(2),
            now,
        );
        assert!(!d[0].scheduled);
        // No record yet: the clock starts now.
        mark_due(&mut d, &[], SignedDuration::ZERO, now);
        assert!(!d[0].scheduled);
    }

    #[test]
    fn status_restarts_the_clock_of_rotated_users_only_and_requeues_for_the_next() {
        let now = Timestamp::from_second(1_800_000_000).unwrap();
        let d = users();
        let before = now - SignedDuration::from_mins(20);
        let recorded = [record("a", before), record("b", before)];
        let secrets = [secret("a"), secret("b")];
        let (s, requeue) = statuses(&d, &secrets, &recorded, &[], SignedDuration::ZERO, now);
        assert_eq!(s[0].last_rotation_time, Some(Time(before)));
        assert_eq!(s[0].next_rotation_time, Some(Time(before + HOUR)));
        assert_eq!(s[1].last_rotation_time, Some(Time(before)));
        assert_eq!(s[1].next_rotation_time, None);
        assert_eq!(requeue, Some(Duration::from_secs(40 * 60)));

        let (s, requeue) = statuses(&d, &secrets, &recorded, &["a"], SignedDuration::ZERO, now);
        assert_eq!(s[0].last_rotation_time, Some(Time(now)));
        assert_eq!(s[0].next_rotation_time, Some(Time(now + HOUR)));
        assert_eq!(
            s[1].last_rotation_time,
            Some(Time(before)),
            "b keeps its clock"
        );
        assert_eq!(requeue, Some(Duration::from_secs(3600)));

        // A user without a Secret (not created) has no status.
        let (s, _) = statuses(&d, &secrets[..1], &recorded, &[], SignedDuration::ZERO, now);
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].secret_name, "shop-a");
    }
}
