//! The maintenance window (pure): whether it is open at a given time and when it opens next,
//! and which changes wait for it. A change that disrupts clients (see
//! [`super::preview`]: a plan or read-region change, a scheduled rotation) waits for the
//! window unless a new value of the approve annotation lets it through; everything else, an
//! on-demand rotation and a restore request included, is made at once.

use std::time::Duration;

use k8s_openapi::jiff::{
    SignedDuration, Timestamp, ToSpan,
    civil::{self, Weekday as CivilWeekday},
    tz::TimeZone,
};
use kube::ResourceExt;

use super::{
    Notice, RotationPlan, SettingsPlan, changes_note,
    preview::{NOW, RESTORE_DISRUPTS},
};
use crate::{
    controller::{
        conditions::{self, Cond},
        desired::{Change, RotationDue},
    },
    crd::{
        APPROVE_ANNOTATION, CacheInstance, CacheInstanceStatus, MaintenanceWindow, PendingChange,
        Weekday,
    },
    upstash::Database,
};

/// The window at a given time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Open until this time.
    Open { until: Timestamp },
    /// Closed; it opens at this time.
    Closed { opens: Timestamp },
}

/// Whether a disruptive change may be made in this pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gate {
    /// Now: no window, the window is open, or an approval lets the changes through.
    Open,
    /// At the window's next opening.
    Closed { opens: Timestamp },
    /// Not until the window is fixed (this says what is wrong with it).
    Invalid(String),
}

/// `when` of a change waiting for a window that cannot be read.
pub const WINDOW_INVALID: &str = "WindowInvalid";

fn civil_day(day: Weekday) -> CivilWeekday {
    match day {
        Weekday::Monday => CivilWeekday::Monday,
        Weekday::Tuesday => CivilWeekday::Tuesday,
        Weekday::Wednesday => CivilWeekday::Wednesday,
        Weekday::Thursday => CivilWeekday::Thursday,
        Weekday::Friday => CivilWeekday::Friday,
        Weekday::Saturday => CivilWeekday::Saturday,
        Weekday::Sunday => CivilWeekday::Sunday,
    }
}

/// The window's time zone; an unknown name is a spec error naming the field.
pub fn time_zone(window: &MaintenanceWindow) -> Result<TimeZone, String> {
    match window.time_zone.as_deref() {
        None | Some("UTC") => Ok(TimeZone::UTC),
        Some(name) => TimeZone::get(name).map_err(|_| {
            format!("maintenanceWindow.timeZone {name:?} is not an IANA time zone (e.g. Europe/Berlin, UTC)")
        }),
    }
}

fn start_of(window: &MaintenanceWindow) -> Result<(i8, i8), String> {
    let bad = || {
        format!(
            "maintenanceWindow.start {:?} is not HH:MM (24-hour clock)",
            window.start
        )
    };
    let (h, m) = window.start.split_once(':').ok_or_else(bad)?;
    let (h, m): (i8, i8) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    if !(0..24).contains(&h) || !(0..60).contains(&m) {
        return Err(bad());
    }
    Ok((h, m))
}

fn length(window: &MaintenanceWindow) -> Result<SignedDuration, String> {
    let bad = || {
        format!(
            "maintenanceWindow.duration {:?} must be between 1m and 7d",
            window.duration.as_str()
        )
    };
    let d = window.duration.duration().map_err(|_| bad())?;
    if d.as_secs() < 60 || d.as_secs() > 7 * 86_400 {
        return Err(bad());
    }
    SignedDuration::try_from(d).map_err(|_| bad())
}

/// The window at `now`: open (until when) or closed (opening when). Each opening is the start
/// time on one of the days in the time zone (on a day a clock change skips it, the moment the
/// clock has moved past it), and lasts `duration` of real time.
pub fn state(window: &MaintenanceWindow, now: Timestamp) -> Result<State, String> {
    let tz = time_zone(window)?;
    let (h, m) = start_of(window)?;
    let length = length(window)?;
    let today = now.to_zoned(tz.clone()).date();
    let mut open: Option<Timestamp> = None;
    let mut next: Option<Timestamp> = None;
    // A window lasts at most 7 days: the openings of the 8 days before may still be open.
    for offset in -8i64..=8 {
        let Ok(day) = today.checked_add(offset.days()) else {
            continue;
        };
        if !window.days.iter().any(|d| civil_day(*d) == day.weekday()) {
            continue;
        }
        let Ok(start) = civil::DateTime::from(day)
            .with()
            .hour(h)
            .minute(m)
            .build()
            .and_then(|t| t.to_zoned(tz.clone()))
        else {
            continue;
        };
        let start = start.timestamp();
        let Ok(end) = start.checked_add(length) else {
            continue;
        };
        if start <= now && now < end {
            open = Some(open.map_or(end, |o| o.max(end)));
        } else if start > now {
            next = Some(next.map_or(start, |n| n.min(start)));
        }
    }
    match (open, next) {
        (Some(until), _) => Ok(State::Open { until }),
        (None, Some(opens)) => Ok(State::Closed { opens }),
        (None, None) => Err("maintenanceWindow names no day".to_string()),
    }
}

/// The window that applies to `obj`: its own, else its policies' (`policy`).
pub fn chosen<'a>(
    obj: &'a CacheInstance,
    policy: Option<&'a MaintenanceWindow>,
) -> Option<&'a MaintenanceWindow> {
    obj.spec.maintenance_window.as_deref().or(policy)
}

/// The approve annotation's value when it approves the pending changes: set and different from
/// the last one acted on.
pub fn approval<'a>(obj: &'a CacheInstance, status: &CacheInstanceStatus) -> Option<&'a str> {
    obj.annotations()
        .get(APPROVE_ANNOTATION)
        .map(String::as_str)
        .filter(|v| !v.is_empty() && Some(*v) != status.last_approval.as_deref())
}

/// The gate of a pass: `window` is the instance's own, else its policy's.
pub fn gate(window: Option<&MaintenanceWindow>, approved: bool, now: Timestamp) -> Gate {
    let Some(window) = window else {
        return Gate::Open;
    };
    match state(window, now) {
        Err(why) => Gate::Invalid(why),
        Ok(_) if approved => Gate::Open,
        Ok(State::Open { .. }) => Gate::Open,
        Ok(State::Closed { opens }) => Gate::Closed { opens },
    }
}

/// Whether a settings change disrupts clients (the same classification as the preview).
pub fn disrupts(change: &Change) -> bool {
    matches!(change, Change::Plan(_) | Change::ReadRegions(_))
}

/// The settings decision with the gate applied: the changes that disrupt clients wait while it
/// is closed (returned second), the others are made. A change that `previous` (the pending
/// changes the status shows) shows waiting for the window is made as a spec change, not as the
/// correction of a drift.
pub fn defer(
    decided: SettingsPlan,
    gate: &Gate,
    previous: &[PendingChange],
) -> (SettingsPlan, Vec<Change>) {
    let waited = |c: &Change| {
        previous
            .iter()
            .any(|p| p.field == c.field() && p.disruptive && p.when != NOW)
    };
    let decided = match decided {
        SettingsPlan::Apply { changes, drift } => {
            let drift = drift && !changes.iter().any(waited);
            SettingsPlan::Apply { changes, drift }
        }
        other => other,
    };
    match decided {
        SettingsPlan::Apply { changes, drift } if *gate != Gate::Open => {
            let (now, waiting): (Vec<_>, Vec<_>) = changes.into_iter().partition(|c| !disrupts(c));
            let plan = if now.is_empty() {
                SettingsPlan::InLine
            } else {
                SettingsPlan::Apply {
                    changes: now,
                    drift,
                }
            };
            (plan, waiting)
        }
        other => (other, Vec::new()),
    }
}

/// The `Synced` condition of a pass whose `waiting` changes wait for the window.
pub fn waiting_synced(waiting: &[Change], gate: &Gate, db: &Database) -> Option<Cond> {
    if waiting.is_empty() {
        return None;
    }
    let note = changes_note(waiting, db);
    Some(match gate {
        Gate::Invalid(why) => Cond::new(
            conditions::SYNCED,
            false,
            "MaintenanceWindowInvalid",
            format!("{note} waits for the maintenance window, which cannot be read: {why}"),
        ),
        Gate::Closed { opens } => Cond::new(
            conditions::SYNCED,
            true,
            "WaitingForMaintenanceWindow",
            format!(
                "{note} waits for the maintenance window opening at {opens} (annotate {APPROVE_ANNOTATION} with a new value to make it now); the other settings match the spec"
            ),
        ),
        Gate::Open => return None,
    })
}

/// The rotation decision with the gate applied: a scheduled rotation waits while it is closed;
/// an on-demand one goes through.
pub fn rotation(mut plan: RotationPlan, gate: &Gate, now: Timestamp) -> RotationPlan {
    if plan.due == Some(RotationDue::Scheduled) && *gate != Gate::Open {
        plan.due = None;
        plan.requeue = until(gate, now);
    }
    plan
}

/// How long until the gate opens (`None`: open, or never by itself).
pub fn until(gate: &Gate, now: Timestamp) -> Option<Duration> {
    match gate {
        Gate::Closed { opens } => Some(opens.duration_since(now).unsigned_abs()),
        _ => None,
    }
}

/// Whether a pending change (as the preview lists it) waits for the window: a disruptive one,
/// except a restore request and an on-demand rotation, which go through at once.
pub fn waits(change: &PendingChange) -> bool {
    change.disruptive
        && change.when == NOW
        && change.reason.as_deref() != Some(RESTORE_DISRUPTS)
        && !change.desired.starts_with("rotated (request")
}

/// Sets `when` of the changes that wait for the window: the time it opens.
pub fn schedule(changes: &mut [PendingChange], gate: &Gate) {
    let when = match gate {
        Gate::Open => return,
        Gate::Closed { opens } => opens.to_string(),
        Gate::Invalid(_) => WINDOW_INVALID.to_string(),
    };
    for change in changes.iter_mut().filter(|c| waits(c)) {
        change.when = when.clone();
    }
}

/// The changes of `next` (the pending changes about to be written) that wait for the window
/// and that `previous` did not show waiting for it: the news of a `ChangeDeferred` Event, once
/// per change and opening.
pub fn newly_deferred<'a>(
    previous: &[PendingChange],
    next: &'a [PendingChange],
    gate: &Gate,
) -> Vec<&'a PendingChange> {
    let Gate::Closed { opens } = gate else {
        return Vec::new();
    };
    let when = opens.to_string();
    next.iter()
        .filter(|c| c.disruptive && c.when == when)
        .filter(|c| {
            !previous
                .iter()
                .any(|p| p.field == c.field && p.desired == c.desired && p.when == c.when)
        })
        .collect()
}

/// The Event of changes that wait for the window.
pub fn deferred_notice(deferred: &[&PendingChange]) -> Option<Notice> {
    let first = deferred.first()?;
    let what = deferred
        .iter()
        .map(|c| format!("{} {} → {}", c.field, c.live, c.desired))
        .collect::<Vec<_>>()
        .join(", ");
    Some(Notice::normal(
        "ChangeDeferred",
        "Defer",
        format!(
            "{what} waits for the maintenance window opening at {}; annotate {APPROVE_ANNOTATION} with a new value to make it now",
            first.when
        ),
    ))
}

#[cfg(test)]
mod tests;
