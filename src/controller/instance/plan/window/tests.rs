use k8s_openapi::jiff::Timestamp;

use super::*;
use crate::{
    controller::instance::fixtures::{database, instance},
    crd::Plan,
};

fn at(t: &str) -> Timestamp {
    t.parse().unwrap()
}

fn window(days: &[&str], start: &str, duration: &str, tz: Option<&str>) -> MaintenanceWindow {
    serde_json::from_value(serde_json::json!({
        "days": days, "start": start, "duration": duration, "timeZone": tz,
    }))
    .unwrap()
}

#[test]
fn a_window_is_open_from_its_start_for_its_duration_on_its_days() {
    // 2026-11-02 is a Monday.
    let w = window(&["Monday", "Wednesday"], "02:00", "2h", None);
    assert_eq!(
        state(&w, at("2026-11-02T01:59:59Z")),
        Ok(State::Closed {
            opens: at("2026-11-02T02:00:00Z")
        })
    );
    assert_eq!(
        state(&w, at("2026-11-02T02:00:00Z")),
        Ok(State::Open {
            until: at("2026-11-02T04:00:00Z")
        })
    );
    assert_eq!(
        state(&w, at("2026-11-02T04:00:00Z")),
        Ok(State::Closed {
            opens: at("2026-11-04T02:00:00Z")
        })
    );
}

#[test]
fn a_window_that_spans_midnight_belongs_to_the_day_it_opens() {
    // Friday 23:00 for 3h: open early on Saturday, not on a Saturday night.
    let w = window(&["Friday"], "23:00", "3h", None);
    assert_eq!(
        state(&w, at("2026-11-07T01:00:00Z")),
        Ok(State::Open {
            until: at("2026-11-07T02:00:00Z")
        })
    );
    assert_eq!(
        state(&w, at("2026-11-07T02:00:00Z")),
        Ok(State::Closed {
            opens: at("2026-11-13T23:00:00Z")
        })
    );
    assert_eq!(
        state(&w, at("2026-11-07T23:30:00Z")),
        Ok(State::Closed {
            opens: at("2026-11-13T23:00:00Z")
        })
    );
}

#[test]
fn a_window_follows_its_time_zone_across_a_clock_change() {
    // Berlin: 02:30 local is 01:30Z in winter (CET) and 00:30Z in summer (CEST); on
    // 2026-03-29 the clock jumps from 02:00 to 03:00, so the window opens at 03:30 CEST.
    let w = window(&["Sunday"], "02:30", "1h", Some("Europe/Berlin"));
    assert_eq!(
        state(&w, at("2026-03-20T00:00:00Z")),
        Ok(State::Closed {
            opens: at("2026-03-22T01:30:00Z")
        })
    );
    assert_eq!(
        state(&w, at("2026-03-23T00:00:00Z")),
        Ok(State::Closed {
            opens: at("2026-03-29T01:30:00Z")
        })
    );
    assert_eq!(
        state(&w, at("2026-03-29T02:00:00Z")),
        Ok(State::Open {
            until: at("2026-03-29T02:30:00Z")
        })
    );
    assert_eq!(
        state(&w, at("2026-03-30T00:00:00Z")),
        Ok(State::Closed {
            opens: at("2026-04-05T00:30:00Z")
        })
    );
}

#[test]
fn an_unknown_time_zone_is_named_in_the_error() {
    let w = window(&["Sunday"], "02:30", "1h", Some("Mars/Olympus"));
    let err = state(&w, at("2026-03-20T00:00:00Z")).unwrap_err();
    assert!(err.contains("maintenanceWindow.timeZone"), "{err}");
    assert_eq!(
        gate(Some(&w), false, at("2026-03-20T00:00:00Z")),
        Gate::Invalid(err)
    );
}

#[test]
fn no_window_or_an_approval_opens_the_gate() {
    let now = at("2026-11-02T12:00:00Z");
    let w = window(&["Monday"], "02:00", "1h", None);
    assert_eq!(gate(None, false, now), Gate::Open);
    assert_eq!(gate(Some(&w), true, now), Gate::Open);
    assert_eq!(
        gate(Some(&w), false, now),
        Gate::Closed {
            opens: at("2026-11-09T02:00:00Z")
        }
    );
}

#[test]
fn an_approval_counts_once_per_value() {
    let obj = instance(&format!(
        "metadata: {{annotations: {{{APPROVE_ANNOTATION}: ok-1}}}}\nspec: {{primaryRegion: us-east-1}}"
    ));
    let mut status = CacheInstanceStatus::default();
    assert_eq!(approval(&obj, &status), Some("ok-1"));
    status.last_approval = Some("ok-1".into());
    assert_eq!(approval(&obj, &status), None);
}

#[test]
fn a_closed_gate_holds_back_the_plan_and_regions_and_lets_the_rest_through() {
    let closed = Gate::Closed {
        opens: at("2026-11-09T02:00:00Z"),
    };
    let changes = vec![
        Change::Plan(Plan::Fixed1Gb),
        Change::Budget(40),
        Change::ReadRegions(vec!["eu-west-1".into()]),
        Change::Eviction(true),
    ];
    let decided = SettingsPlan::Apply {
        changes: changes.clone(),
        drift: false,
    };
    let (now, waiting) = defer(decided.clone(), &closed, &[]);
    assert_eq!(
        now,
        SettingsPlan::Apply {
            changes: vec![Change::Budget(40), Change::Eviction(true)],
            drift: false
        }
    );
    assert_eq!(
        waiting,
        vec![
            Change::Plan(Plan::Fixed1Gb),
            Change::ReadRegions(vec!["eu-west-1".into()])
        ]
    );
    assert_eq!(defer(decided.clone(), &Gate::Open, &[]), (decided, vec![]));
    // Only disruptive ones: nothing to call now.
    let only_plan = SettingsPlan::Apply {
        changes: vec![Change::Plan(Plan::Fixed1Gb)],
        drift: true,
    };
    assert_eq!(
        defer(only_plan.clone(), &closed, &[]).0,
        SettingsPlan::InLine
    );
    // Made once the window opens: a spec change that waited, not a drift.
    let mut shown = pending("plan", "fixed_1gb", Some("disrupts"));
    shown.when = "2026-11-09T02:00:00Z".into();
    assert_eq!(
        defer(only_plan, &Gate::Open, &[shown]).0,
        SettingsPlan::Apply {
            changes: vec![Change::Plan(Plan::Fixed1Gb)],
            drift: false
        }
    );
    let synced = waiting_synced(&waiting, &closed, &database("{}")).unwrap();
    assert_eq!(synced.reason, "WaitingForMaintenanceWindow");
    assert!(
        synced.message.contains("2026-11-09T02:00:00Z"),
        "{}",
        synced.message
    );
}

fn rotation_plan(due: Option<RotationDue>) -> RotationPlan {
    RotationPlan {
        last: at("2026-10-01T00:00:00Z"),
        next: Some(at("2026-11-01T00:00:00Z")),
        due,
        requeue: None,
    }
}

#[test]
fn a_scheduled_rotation_waits_for_the_window_and_a_requested_one_does_not() {
    let now = at("2026-11-02T12:00:00Z");
    let closed = Gate::Closed {
        opens: at("2026-11-02T14:00:00Z"),
    };
    let waited = rotation(rotation_plan(Some(RotationDue::Scheduled)), &closed, now);
    assert_eq!(waited.due, None);
    assert_eq!(waited.requeue, Some(Duration::from_secs(7200)));
    let requested = rotation_plan(Some(RotationDue::Requested));
    assert_eq!(rotation(requested.clone(), &closed, now), requested);
    let open = rotation_plan(Some(RotationDue::Scheduled));
    assert_eq!(rotation(open.clone(), &Gate::Open, now), open);
}

fn pending(field: &str, desired: &str, reason: Option<&str>) -> PendingChange {
    PendingChange {
        field: field.into(),
        live: "x".into(),
        desired: desired.into(),
        disruptive: reason.is_some(),
        reason: reason.map(str::to_string),
        when: NOW.into(),
    }
}

#[test]
fn pending_changes_that_wait_show_the_opening_and_are_announced_once() {
    use super::super::preview::{PLAN_DISRUPTS, ROTATION_DISRUPTS};
    let closed = Gate::Closed {
        opens: at("2026-11-09T02:00:00Z"),
    };
    let mut list = vec![
        pending("plan", "fixed_1gb", Some(PLAN_DISRUPTS)),
        pending("budget", "40", None),
        pending("restore", "r-1", Some(RESTORE_DISRUPTS)),
        pending("password", "rotated (request r-2)", Some(ROTATION_DISRUPTS)),
        pending("password", "rotated (schedule)", Some(ROTATION_DISRUPTS)),
    ];
    schedule(&mut list, &closed);
    let whens: Vec<_> = list.iter().map(|c| c.when.as_str()).collect();
    assert_eq!(
        whens,
        [
            "2026-11-09T02:00:00Z",
            NOW,
            NOW,
            NOW,
            "2026-11-09T02:00:00Z"
        ]
    );
    let news = newly_deferred(&[], &list, &closed);
    assert_eq!(news.len(), 2);
    let notice = deferred_notice(&news).unwrap();
    assert_eq!(notice.reason, "ChangeDeferred");
    assert!(
        notice.note.contains("plan x → fixed_1gb"),
        "{}",
        notice.note
    );
    // The next pass shows the same: no news.
    assert_eq!(
        newly_deferred(&list, &list, &closed),
        Vec::<&PendingChange>::new()
    );
    // No window: nothing changes.
    let mut open = vec![pending("plan", "fixed_1gb", Some(PLAN_DISRUPTS))];
    schedule(&mut open, &Gate::Open);
    assert_eq!(open[0].when, NOW);
    assert_eq!(
        newly_deferred(&[], &open, &Gate::Open),
        Vec::<&PendingChange>::new()
    );
}

#[test]
fn the_instances_window_wins_over_its_policys_default() {
    use crate::{
        controller::instance::{fixtures::policy, validate::policy_verdict},
        crd::DeletionPolicy,
    };
    let policies = [
        policy(
            "b-nights",
            "{selector: {}, maintenanceWindow: {days: [Monday], start: '01:00', duration: 1h}}",
        ),
        policy(
            "a-weekends",
            "{selector: {}, maintenanceWindow: {days: [Sunday], start: '03:00', duration: 2h}}",
        ),
        policy("none", "{selector: {}}"),
    ];
    let plain = instance("spec: {primaryRegion: us-east-1}");
    let verdict = policy_verdict(&plain, &policies, DeletionPolicy::Delete);
    let from_policy = chosen(&plain, verdict.window.as_ref()).unwrap();
    assert_eq!(from_policy.start, "03:00", "the first policy by name");
    let own = instance(
        "spec: {primaryRegion: us-east-1, maintenanceWindow: {days: [Friday], start: '22:00', duration: 30m}}",
    );
    let verdict = policy_verdict(&own, &policies, DeletionPolicy::Delete);
    assert_eq!(
        chosen(&own, verdict.window.as_ref()).unwrap().start,
        "22:00"
    );
    let unselected = policy_verdict(&plain, &policies[2..], DeletionPolicy::Delete);
    assert_eq!(chosen(&plain, unselected.window.as_ref()), None);
}
