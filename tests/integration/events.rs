//! The operator's Event publisher on a real API server: a repeat within six minutes raises
//! the first Event's count instead of creating another, a different reason or note is another
//! Event, and an object named at the length limit still gets its Events.

use k8s_openapi::api::{core::v1::ConfigMap, events::v1::Event};
use kube::{Api, Resource, api::ListParams, runtime::events::Reporter};
use upstash_operator::events::{EventType, Publisher};

#[tokio::test]
async fn repeats_are_counted_on_one_event_and_long_names_fit() {
    let cluster = testkit::cluster().await;
    let client = cluster.client().await;
    let ns = cluster.namespace("events").await;
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), ns.name());
    let long = "c".repeat(253);
    let mut regarding = Vec::new();
    for name in ["orders", long.as_str()] {
        let map: ConfigMap = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name},
        }))
        .unwrap();
        let map = maps.create(&Default::default(), &map).await.unwrap();
        regarding.push(map.object_ref(&()));
    }
    let publisher = Publisher::new(
        client.clone(),
        Reporter {
            controller: "upstash-operator".into(),
            instance: Some("events-test".into()),
        },
    );
    for reference in &regarding {
        for _ in 0..3 {
            publisher
                .publish(
                    reference,
                    EventType::Warning,
                    "Failed",
                    "Reconcile",
                    "it failed",
                )
                .await
                .unwrap();
        }
        publisher
            .publish(
                reference,
                EventType::Normal,
                "Provisioned",
                "Create",
                "it worked",
            )
            .await
            .unwrap();
        // Another note is another Event: the first one's note cannot be changed.
        publisher
            .publish(
                reference,
                EventType::Warning,
                "Failed",
                "Reconcile",
                "it failed differently",
            )
            .await
            .unwrap();
    }

    let events: Api<Event> = Api::namespaced(client, ns.name());
    let all = events.list(&ListParams::default()).await.unwrap().items;
    for reference in &regarding {
        let about: Vec<&Event> = all
            .iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.uid.as_ref()) == reference.uid.as_ref())
            .collect();
        let reasons: Vec<(&str, i32)> = {
            let mut r: Vec<(&str, i32)> = about
                .iter()
                .map(|e| {
                    (
                        e.reason.as_deref().unwrap_or_default(),
                        e.series.as_ref().map_or(1, |s| s.count),
                    )
                })
                .collect();
            r.sort();
            r
        };
        assert_eq!(
            reasons,
            vec![("Failed", 1), ("Failed", 3), ("Provisioned", 1)],
            "Events about {:?}",
            reference.name
        );
        for e in &about {
            let name = e.metadata.name.as_deref().unwrap();
            assert!(name.len() <= 253, "{name}");
            assert_eq!(e.reporting_controller.as_deref(), Some("upstash-operator"));
            assert_eq!(e.reporting_instance.as_deref(), Some("events-test"));
        }
    }
    assert_eq!(
        publisher.kept(),
        6,
        "one key per object, type, reason, action and note"
    );
}
