//! Maintenance windows against the real control plane, with the operator as a process and the
//! emulator: a plan change applied outside the window is not made (witnessed by the operator's
//! reads after it) and shows in status with the window's opening; when the window opens it is
//! made once, with one Event when deferred and one when made. An approval makes a waiting
//! change at once; a budget change outside the window is made at once.

use std::time::Duration;

use k8s_openapi::jiff::{SignedDuration, Timestamp, tz::TimeZone};
use kube::{
    Api,
    api::{Patch, PatchParams},
};
use serde_json::json;
use upstash_operator::crd::{APPROVE_ANNOTATION, CacheInstance};

use crate::support::{Stack, apply_manifest, events_for, instance, start_stack, witness_pass};

const READY_TIMEOUT: Duration = Duration::from_secs(60);

const EVERY_DAY: [&str; 7] = [
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
];

/// A window opening at `start` (whole minutes, UTC) every day, for `duration`.
fn window(start: Timestamp, duration: &str) -> serde_json::Value {
    let z = start.to_zoned(TimeZone::UTC);
    json!({
        "days": EVERY_DAY,
        "start": format!("{:02}:{:02}", z.hour(), z.minute()),
        "duration": duration,
        "timeZone": "UTC",
    })
}

/// The first whole minute at least `margin` from now.
fn minute_after(margin: SignedDuration) -> Timestamp {
    let t = Timestamp::now() + margin;
    let s = t.as_second();
    let rounded = if s % 60 == 0 {
        s
    } else {
        s - s.rem_euclid(60) + 60
    };
    Timestamp::from_second(rounded).unwrap()
}

fn count(events: &[(String, String, String)], reason: &str) -> usize {
    events.iter().filter(|(r, _, _)| r == reason).count()
}

/// The `change-plan` calls for database `id` since `mark`, read after a witnessed pass of
/// `orders` and, with `reads`, after that many reads of the database since `mark`.
async fn plan_changes_after_a_pass(
    stack: &Stack,
    client: &kube::Client,
    ns: &str,
    id: &str,
    mark: u64,
    reads: u64,
) -> Vec<serde_json::Value> {
    witness_pass(&stack.operator, client, ns, "orders").await;
    if reads > 0 {
        stack.emulator.wait_for_reads(id, mark, reads).await;
    }
    stack
        .emulator
        .calls_since(mark, "change-plan", Some(id))
        .await
}

/// Waits until `status.pendingChanges` lists `field` with `when`.
async fn wait_pending(api: &Api<CacheInstance>, name: &str, field: &str, when: &str) {
    testkit::wait_for(
        &format!("status.pendingChanges to list {field} at {when}"),
        READY_TIMEOUT,
        || async {
            let obj = api.get(name).await.ok()?;
            obj.status?
                .pending_changes
                .iter()
                .any(|c| c.field == field && c.when == when && c.disruptive)
                .then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn a_plan_change_waits_for_the_window_and_is_made_once_when_it_opens() {
    let cluster = testkit::cluster().await;
    let ns = cluster.namespace("windows").await;
    let stack = start_stack(&ns, &[]).await;
    let client = ns.client().await;
    let api: Api<CacheInstance> = Api::namespaced(client.clone(), ns.name());
    let spec = json!({"primaryRegion": "us-east-1", "plan": "payg", "budget": 20});
    apply_manifest(&client, ns.name(), &instance("orders", spec))
        .await
        .unwrap();
    let ready = testkit::wait_for_condition(&api, "orders", "Ready", "True", READY_TIMEOUT).await;
    let id = ready.status.unwrap().database_id.unwrap();

    // A window that opens at the first whole minute at least 45 s from now.
    let opens = minute_after(SignedDuration::from_secs(45));
    let mark = stack.emulator.mark().await;
    let changed = json!({
        "primaryRegion": "us-east-1", "plan": "fixed_1gb", "budget": 20,
        "maintenanceWindow": window(opens, "10m"),
    });
    apply_manifest(&client, ns.name(), &instance("orders", changed))
        .await
        .unwrap();
    wait_pending(&api, "orders", "plan", &opens.to_string()).await;
    // The operator looked at the object as changed, reading the database, and made no call.
    assert_eq!(
        plan_changes_after_a_pass(&stack, &client, ns.name(), &id, mark, 3).await,
        Vec::<serde_json::Value>::new()
    );
    assert!(
        Timestamp::now() < opens,
        "the witness ran past the window's opening; the machine is too slow for this test"
    );
    let events = events_for(&client, ns.name(), "orders").await;
    assert_eq!(count(&events, "ChangeDeferred"), 1, "{events:?}");
    assert_eq!(count(&events, "Updated"), 0, "{events:?}");

    // The window opens (no change to the object): exactly one change-plan call.
    stack
        .emulator
        .wait_for_calls_within("change-plan", Some(&id), mark, 1, Duration::from_secs(150))
        .await;
    testkit::wait_for("status.plan to be fixed_1gb", READY_TIMEOUT, || async {
        let obj = api.get("orders").await.ok()?;
        let status = obj.status?;
        (status.plan.as_deref() == Some("fixed_1gb") && status.pending_changes.is_empty())
            .then_some(())
    })
    .await;
    assert_eq!(
        plan_changes_after_a_pass(&stack, &client, ns.name(), &id, mark, 0)
            .await
            .len(),
        1
    );
    let events = events_for(&client, ns.name(), "orders").await;
    assert_eq!(count(&events, "ChangeDeferred"), 1, "{events:?}");
    let made: Vec<_> = events
        .iter()
        .filter(|(r, _, note)| r == "Updated" && note.contains("plan"))
        .collect();
    assert_eq!(made.len(), 1, "{events:?}");
}

#[tokio::test]
async fn an_approval_makes_a_waiting_change_at_once_and_a_budget_change_does_not_wait() {
    let cluster = testkit::cluster().await;
    let ns = cluster.namespace("windows").await;
    let stack = start_stack(&ns, &[]).await;
    let client = ns.client().await;
    let api: Api<CacheInstance> = Api::namespaced(client.clone(), ns.name());
    // A window that opens in three hours.
    let opens = minute_after(SignedDuration::from_hours(3));
    let far = window(opens, "1m");
    let spec = json!({
        "primaryRegion": "us-east-1", "plan": "payg", "budget": 20, "maintenanceWindow": far,
    });
    apply_manifest(&client, ns.name(), &instance("orders", spec))
        .await
        .unwrap();
    let ready = testkit::wait_for_condition(&api, "orders", "Ready", "True", READY_TIMEOUT).await;
    let id = ready.status.unwrap().database_id.unwrap();

    let mark = stack.emulator.mark().await;
    let changed = json!({
        "primaryRegion": "us-east-1", "plan": "fixed_1gb", "budget": 50, "maintenanceWindow": far,
    });
    apply_manifest(&client, ns.name(), &instance("orders", changed))
        .await
        .unwrap();
    // The budget is changed at once; the plan waits.
    stack
        .emulator
        .wait_for_calls("update-budget", Some(&id), mark, 1)
        .await;
    wait_pending(&api, "orders", "plan", &opens.to_string()).await;
    assert_eq!(
        plan_changes_after_a_pass(&stack, &client, ns.name(), &id, mark, 3).await,
        Vec::<serde_json::Value>::new()
    );
    let obj = api.get("orders").await.unwrap();
    let status = obj.status.unwrap();
    assert_eq!(status.budget, Some(50));
    assert_eq!(
        status
            .pending_changes
            .iter()
            .map(|c| c.field.as_str())
            .collect::<Vec<_>>(),
        ["plan"]
    );

    // Approving makes it at once.
    api.patch(
        "orders",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"annotations": {APPROVE_ANNOTATION: "now-1"}}})),
    )
    .await
    .unwrap();
    stack
        .emulator
        .wait_for_calls("change-plan", Some(&id), mark, 1)
        .await;
    testkit::wait_for("the approval to be recorded", READY_TIMEOUT, || async {
        let obj = api.get("orders").await.ok()?;
        let status = obj.status?;
        (status.last_approval.as_deref() == Some("now-1") && status.pending_changes.is_empty())
            .then_some(())
    })
    .await;
    assert_eq!(
        plan_changes_after_a_pass(&stack, &client, ns.name(), &id, mark, 0)
            .await
            .len(),
        1
    );
    let events = events_for(&client, ns.name(), "orders").await;
    assert_eq!(count(&events, "ChangeDeferred"), 1, "{events:?}");
}

#[tokio::test]
async fn a_malformed_window_is_refused_at_admission_naming_the_field() {
    let cluster = testkit::cluster().await;
    let ns = cluster.namespace("windows").await;
    let client = ns.client().await;
    crate::support::install_crds(&client).await;
    let with = |name: &str, w: serde_json::Value| {
        instance(
            name,
            json!({"primaryRegion": "us-east-1", "maintenanceWindow": w}),
        )
    };
    for (name, w, field) in [
        (
            "late",
            json!({"days": ["Monday"], "start": "25:00", "duration": "1h"}),
            "maintenanceWindow.start",
        ),
        (
            "short",
            json!({"days": ["Monday"], "start": "02:00", "duration": "30s"}),
            "maintenanceWindow.duration must be at least 1m",
        ),
        (
            "long",
            json!({"days": ["Monday"], "start": "02:00", "duration": "8d"}),
            "maintenanceWindow.duration must be at most 7d",
        ),
        (
            "noday",
            json!({"days": [], "start": "02:00", "duration": "1h"}),
            "maintenanceWindow.days",
        ),
    ] {
        let refused = crate::support::create_manifest(&client, ns.name(), &with(name, w))
            .await
            .expect_err(name);
        let message = match refused {
            kube::Error::Api(status) => status.message,
            other => panic!("{name}: {other}"),
        };
        assert!(message.contains(field), "{name}: {message}");
    }
    // A well-formed one is accepted: the checks above can fail.
    crate::support::create_manifest(
        &client,
        ns.name(),
        &with(
            "fine",
            json!({"days": ["Monday"], "start": "02:00", "duration": "1h", "timeZone": "Europe/Berlin"}),
        ),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn a_policys_window_is_the_default_of_the_instances_it_applies_to() {
    let cluster = testkit::cluster().await;
    let ns = cluster.namespace("windows").await;
    let stack = start_stack(&ns, &[]).await;
    let client = ns.client().await;
    let api: Api<CacheInstance> = Api::namespaced(client.clone(), ns.name());
    let opens = minute_after(SignedDuration::from_hours(5));
    let nights = crate::support::policy(
        "nights",
        json!({"selector": {"matchLabels": {"tier": "prod"}}, "maintenanceWindow": window(opens, "1m")}),
    );
    apply_manifest(&client, ns.name(), &nights).await.unwrap();
    let labelled = |spec: serde_json::Value| {
        let mut doc = instance("orders", spec);
        doc["metadata"]["labels"] = json!({"tier": "prod"});
        doc
    };
    apply_manifest(
        &client,
        ns.name(),
        &labelled(json!({"primaryRegion": "us-east-1", "plan": "payg"})),
    )
    .await
    .unwrap();
    let ready = testkit::wait_for_condition(&api, "orders", "Ready", "True", READY_TIMEOUT).await;
    let id = ready.status.unwrap().database_id.unwrap();
    let mark = stack.emulator.mark().await;
    apply_manifest(
        &client,
        ns.name(),
        &labelled(json!({"primaryRegion": "us-east-1", "plan": "fixed_1gb"})),
    )
    .await
    .unwrap();
    wait_pending(&api, "orders", "plan", &opens.to_string()).await;
    assert_eq!(
        plan_changes_after_a_pass(&stack, &client, ns.name(), &id, mark, 3).await,
        Vec::<serde_json::Value>::new()
    );
    // The instance's own window (open now) wins over the policy's.
    let now = minute_after(SignedDuration::from_mins(-2));
    apply_manifest(
        &client,
        ns.name(),
        &labelled(json!({
            "primaryRegion": "us-east-1", "plan": "fixed_1gb",
            "maintenanceWindow": window(now, "1h"),
        })),
    )
    .await
    .unwrap();
    stack
        .emulator
        .wait_for_calls("change-plan", Some(&id), mark, 1)
        .await;
}
