//! Upstash's Credential Protection: once Upstash keeps no copy of a database's credentials (a
//! Get answers none), the connection Secret is the only copy. The operator keeps it as it is
//! over its resyncs, says so in status and in one Event, and when the Secret is deleted it
//! recovers with exactly one reset-password call and a Secret that works with real clients.

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::{Api, api::DeleteParams};
use serde_json::json;
use upstash_operator::crd::CacheInstance;

use crate::support::{
    apply_until_ready, events_for, redis_connect, rest_command, secret_data, start_stack,
    witness_pass,
};

const TIMEOUT: Duration = Duration::from_secs(60);

#[tokio::test]
async fn a_protected_database_keeps_its_secret_and_a_lost_one_is_recovered_by_one_reset() {
    let cluster = testkit::cluster().await;
    let ns = cluster.namespace("credprot").await;
    let client = ns.client().await;
    let stack = start_stack(&ns, &[]).await;
    let emulator = &stack.emulator;
    let api: Api<CacheInstance> = Api::namespaced(client.clone(), ns.name());
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns.name());
    let name = "crm-cache";
    let id = apply_until_ready(
        &client,
        ns.name(),
        name,
        json!({"primaryRegion": "us-east-1", "keyPrefix": "crm:"}),
        TIMEOUT,
    )
    .await;
    let before = secret_data(&secrets.get(name).await.unwrap());
    assert!(!before["REDIS_PASSWORD"].is_empty());

    // Protection on, in the Upstash console: a Get answers no credentials.
    emulator.set_credential_protection(&id, true).await;
    let answer = emulator
        .developer_api(
            reqwest::Method::GET,
            &format!("/v2/redis/database/{id}"),
            None,
        )
        .await;
    assert_eq!(answer.1["password"], "", "{answer:?}");

    // Two witnessed resyncs, each with a read of the database: the Secret stays as it was.
    for round in 0..2 {
        let mark = emulator.mark().await;
        witness_pass(&stack.operator, &client, ns.name(), name).await;
        emulator.wait_for_reads(&id, mark, 1).await;
        let now = secret_data(&secrets.get(name).await.unwrap());
        assert_eq!(now, before, "round {round}: the Secret changed");
        let status = api.get(name).await.unwrap().status.unwrap();
        assert_eq!(status.credentials_protected, Some(true), "round {round}");
        assert!(
            status
                .conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True"),
            "round {round}: {:?}",
            status.conditions
        );
    }
    assert!(emulator.calls_to("reset-password").await.is_empty());
    let events = events_for(&client, ns.name(), name).await;
    let protected: Vec<_> = events
        .iter()
        .filter(|(reason, _, _)| reason == "CredentialsProtected")
        .collect();
    assert_eq!(protected.len(), 1, "{events:?}");
    assert!(
        protected[0]
            .2
            .contains(&format!("Secret {name} holds the only copy")),
        "{events:?}"
    );

    // The Secret is lost: one reset-password call, and a Secret with the new credentials.
    let mark = emulator.mark().await;
    secrets
        .delete(name, &DeleteParams::default())
        .await
        .unwrap();
    let after = testkit::wait_for("the Secret to be written again", TIMEOUT, || async {
        let s = secrets.get_opt(name).await.ok()??;
        let data = secret_data(&s);
        (data.get("REDIS_PASSWORD").is_some_and(|p| !p.is_empty())).then_some(data)
    })
    .await;
    assert_ne!(after["REDIS_PASSWORD"], before["REDIS_PASSWORD"]);
    assert_ne!(
        after["UPSTASH_REDIS_REST_TOKEN"],
        before["UPSTASH_REDIS_REST_TOKEN"]
    );
    for (key, value) in &after {
        assert!(
            !value.is_empty() || key == "REDIS_KEY_PREFIX",
            "{key} is empty"
        );
    }
    // A witnessed pass after the recovery: still exactly one reset.
    witness_pass(&stack.operator, &client, ns.name(), name).await;
    let resets = emulator
        .calls_since(mark, "reset-password", Some(&id))
        .await;
    assert_eq!(resets.len(), 1, "{resets:?}");
    assert_eq!(emulator.calls_to("reset-password").await.len(), 1);
    assert_eq!(secret_data(&secrets.get(name).await.unwrap()), after);

    // The new Secret works with real clients; the old credentials do not.
    let ca = emulator.ca_file();
    let (code, body) = rest_command(
        &after["UPSTASH_REDIS_REST_URL"],
        &after["UPSTASH_REDIS_REST_TOKEN"],
        ca,
        json!(["SET", "crm:k", "v"]),
    )
    .await;
    assert_eq!((code, &body["result"]), (200, &json!("OK")), "{body}");
    let mut redis = redis_connect(&after["REDIS_URL"], ca)
        .await
        .expect("connecting with the new REDIS_URL");
    let value: String = redis::cmd("GET")
        .arg("crm:k")
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(value, "v");
    let (code, _) = rest_command(
        &before["UPSTASH_REDIS_REST_URL"],
        &before["UPSTASH_REDIS_REST_TOKEN"],
        ca,
        json!(["PING"]),
    )
    .await;
    assert_eq!(code, 401, "the old REST token still works");

    let events = events_for(&client, ns.name(), name).await;
    let resets: Vec<_> = events
        .iter()
        .filter(|(reason, _, _)| reason == "CredentialsReset")
        .collect();
    assert_eq!(resets.len(), 1, "{events:?}");
    assert_eq!(resets[0].1, "Warning");
    assert!(resets[0].2.contains("revoked"), "{events:?}");
    assert_eq!(
        api.get(name)
            .await
            .unwrap()
            .status
            .unwrap()
            .credentials_protected,
        Some(true)
    );
}
