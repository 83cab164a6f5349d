//! `spec.maintenanceWindow`: when the operator may make changes that disrupt clients.

use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::DurationString;

/// Annotation that approves the changes waiting for the maintenance window: set it to a new
/// value (a timestamp or any string that differs from `status.lastApproval`) and the next pass
/// makes every pending change at once. The value is recorded in `status.lastApproval`, so it
/// approves only what is pending when it is set.
pub const APPROVE_ANNOTATION: &str = "cache.upstash-operator.dev/approve-pending";

/// A day of the week.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum Weekday {
    Monday,
    Tuesday,
    Wednesday,
    Thursday,
    Friday,
    Saturday,
    Sunday,
}

/// When changes that disrupt clients (a plan change, a read-region change, a scheduled
/// password rotation, the correction of such a setting changed outside Kubernetes) may be
/// made. Everything else is made at once; so are an on-demand rotation (the rotate annotation)
/// and a restore request. While a change waits, `status.pendingChanges` shows it with the
/// time the window opens; the `cache.upstash-operator.dev/approve-pending` annotation (a new
/// value) makes it at once.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct MaintenanceWindow {
    /// The days the window opens on (`Monday` ... `Sunday`), in `timeZone`. A window that
    /// runs past midnight belongs to the day it opens.
    #[schemars(length(min = 1, max = 7))]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub days: Vec<Weekday>,

    /// The time the window opens, `HH:MM` (24-hour clock) in `timeZone`. On a day a clock
    /// change skips that time, the window opens when the clock has moved on.
    #[schemars(pattern(r"^([01][0-9]|2[0-3]):[0-5][0-9]$"))]
    pub start: String,

    /// How long the window stays open, e.g. `2h` or `1h30m` (units s, m, h, d, w; at least
    /// 1m, at most 7d).
    #[x_kube(validation = Rule::new(super::common::duration_at_least_rule(60))
        .message("maintenanceWindow.duration must be at least 1m")
        .reason(Reason::FieldValueInvalid))]
    #[x_kube(validation = Rule::new(format!("!self.matches('{}') || !({})", super::common::DURATION_PATTERN, super::common::duration_at_least_rule(604801)))
        .message("maintenanceWindow.duration must be at most 7d")
        .reason(Reason::FieldValueInvalid))]
    pub duration: DurationString,

    /// The IANA time zone of `start` and `days`, e.g. `Europe/Berlin`. Default: `UTC`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64))]
    pub time_zone: Option<String>,
}
