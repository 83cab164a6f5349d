//! The change log: a setting changed outside Kubernetes is set back with a `DriftCorrected`
//! Event that names who changed it and from where, from Upstash's audit log, read once for the
//! detected drift (never per resync).

use std::time::Duration;

use serde_json::json;

use crate::support::{apply_until_ready, events_for, start_stack, witness_pass};

const TIMEOUT: Duration = Duration::from_secs(60);

#[tokio::test]
async fn a_drift_event_names_who_changed_the_setting_from_the_audit_log() {
    let cluster = testkit::cluster().await;
    let ns = cluster.namespace("changelog").await;
    let client = ns.client().await;
    let stack = start_stack(&ns, &[]).await;
    let emulator = &stack.emulator;
    let name = "crm-cache";
    let id = apply_until_ready(
        &client,
        ns.name(),
        name,
        json!({"primaryRegion": "us-east-1", "plan": "payg", "budget": 50}),
        TIMEOUT,
    )
    .await;
    // Resyncs without drift read no audit log.
    witness_pass(&stack.operator, &client, ns.name(), name).await;
    assert!(emulator.calls_to("auditlogs").await.is_empty());

    // Alice raises the budget in the console with her CI key ($300, in cents).
    let mark = emulator.mark().await;
    emulator
        .console(
            "alice@example.com",
            Some("ci-key"),
            "PATCH",
            &format!("/v2/redis/update-budget/{id}"),
            Some(json!({"budget": 30000})),
        )
        .await;
    assert!(
        emulator.all_calls_since(mark).await.is_empty(),
        "the console's change is not a Developer API call"
    );
    assert_eq!(emulator.database(&id).await.unwrap()["budget"], 30000);

    // The operator sets it back and says who changed it.
    witness_pass(&stack.operator, &client, ns.name(), name).await;
    emulator
        .wait_for_calls("update-budget", Some(&id), mark, 1)
        .await;
    let event = testkit::wait_for("the DriftCorrected Event", TIMEOUT, || async {
        events_for(&client, ns.name(), name)
            .await
            .into_iter()
            .find(|(reason, _, _)| reason == "DriftCorrected")
    })
    .await;
    eprintln!("{event:?}");
    assert!(event.2.contains("budget 300 → 50"), "{event:?}");
    assert!(
        event
            .2
            .contains("budget was changed by alice@example.com (API_KEY - ci-key)"),
        "{event:?}"
    );
    assert_eq!(emulator.database(&id).await.unwrap()["budget"], 5000);

    // One audit-log read for the drift; the resyncs after it read none.
    witness_pass(&stack.operator, &client, ns.name(), name).await;
    let reads = emulator.calls_to("auditlogs").await;
    assert_eq!(reads.len(), 1, "{reads:?}");
    let updates = emulator.calls_since(mark, "update-budget", Some(&id)).await;
    assert_eq!(updates.len(), 1, "{updates:?}");

    // The operator's own change is in the audit log too, with its key.
    let (code, log) = emulator
        .developer_api(reqwest::Method::GET, "/v2/auditlogs", None)
        .await;
    assert_eq!(code, 200, "{log}");
    let entries = log.as_array().unwrap();
    assert!(
        entries.iter().any(|e| e["actor"] == "alice@example.com"
            && e["source"] == "API_KEY - ci-key"
            && e["action_string"] == "Update Budget"
            && e["secondary_entity"] == id.as_str()),
        "{log:#}"
    );
    assert!(
        entries.iter().any(
            |e| e["actor"] == testkit::emulator::EMAIL && e["action_string"] == "Update Budget"
        ),
        "{log:#}"
    );
}
