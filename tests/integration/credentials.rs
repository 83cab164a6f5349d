//! Where an instance's Upstash credentials come from (its own `spec.credentials`, its
//! namespace's Secret, the operator-wide Secret), and what happens when they change account.

use std::time::Duration;

use k8s_openapi::{ByteString, api::core::v1::Secret};
use kube::{
    Api,
    api::{DeleteParams, Patch, PatchParams, PostParams},
};
use serde_json::json;
use upstash_operator::crd::CacheInstance;

use crate::support::{
    apply_manifest, events_for, install_crds, instance, secret_data, start_operator, start_stack,
};

const TIMEOUT: Duration = Duration::from_secs(60);
const TEAM: (&str, &str) = ("team@example.com", "team-key-7b1e");
const BILLING: (&str, &str) = ("billing@example.com", "billing-key-52c0");

fn credentials_secret(name: &str, pairs: &[(&str, &str)]) -> Secret {
    Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(name.to_string()),
            ..Default::default()
        },
        data: Some(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
                .collect(),
        ),
        ..Default::default()
    }
}

/// Points the namespace's credentials Secret at another account, as a team editing it would.
async fn switch_account(secrets: &Api<Secret>, (email, api_key): (&str, &str)) {
    let name = testkit::operator::CREDENTIALS_SECRET;
    let mut secret = secrets.get(name).await.unwrap();
    secret.data = credentials_secret(name, &[("email", email), ("apiKey", api_key)]).data;
    secrets
        .replace(name, &PostParams::default(), &secret)
        .await
        .unwrap();
}

fn database_id(instance: &CacheInstance) -> String {
    let status = instance.status.as_ref().expect("a status");
    status.database_id.clone().expect("status.databaseId")
}

/// The account owning the database recorded in `instance`'s status, as the emulator sees it.
async fn owner(emulator: &testkit::emulator::Emulator, instance: &CacheInstance) -> String {
    let db = emulator
        .database(&database_id(instance))
        .await
        .expect("the database exists");
    db["account"].as_str().unwrap().to_string()
}

/// Changes an annotation so that the operator looks at the object now rather than at its next
/// retry. An object already gone is fine: the operator may have acted on a Secret change (it
/// watches the credentials) before the nudge arrives, and a deleted object needs no nudge.
async fn nudge(api: &Api<CacheInstance>, name: &str, value: &str) {
    match api
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"test/nudge": value}}})),
        )
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 404 => {}
        Err(e) => panic!("nudging {name}: {e}"),
    }
}

fn ready_reason(instance: &CacheInstance) -> Option<(String, String, String)> {
    let c = instance
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")?;
    Some((c.status.clone(), c.reason.clone(), c.message.clone()))
}

#[tokio::test]
async fn spec_namespace_and_operator_credentials_pick_the_account_and_a_changed_account_is_left_alone()
 {
    let cluster = testkit::cluster().await;
    let ops = cluster.namespace("creds-ops").await;
    let team = cluster.namespace("creds-team").await;
    let client = ops.client().await;
    install_crds(&client).await;
    testkit::operator::write_credentials(&client, ops.name()).await;
    let emulator = testkit::emulator::Emulator::start().await;
    emulator.add_account(TEAM.0, TEAM.1).await;
    emulator.add_account(BILLING.0, BILLING.1).await;
    let _operator = start_operator(&ops, &emulator, &["--watch-namespaces", team.name()]).await;

    let secrets: Api<Secret> = Api::namespaced(client.clone(), team.name());
    // The team namespace's own account, under the default name and keys.
    testkit::operator::write_credentials_with(
        &client,
        team.name(),
        testkit::operator::CREDENTIALS_SECRET,
        TEAM.0,
        TEAM.1,
    )
    .await;
    // Another account named by one instance, under custom keys.
    secrets
        .create(
            &PostParams::default(),
            &credentials_secret(
                "billing-upstash",
                &[("user", BILLING.0), ("token", BILLING.1)],
            ),
        )
        .await
        .unwrap();

    let region = json!({"primaryRegion": "us-east-1"});
    for (name, spec) in [
        ("team-cache", region.clone()),
        (
            "billing-cache",
            json!({"primaryRegion": "us-east-1", "credentials": {"secretRef": {"name": "billing-upstash", "emailKey": "user", "apiKeyKey": "token"}}}),
        ),
        (
            "missing-cache",
            json!({"primaryRegion": "us-east-1", "credentials": {"secretRef": {"name": "not-there-yet"}}}),
        ),
    ] {
        apply_manifest(&client, team.name(), &instance(name, spec))
            .await
            .unwrap();
    }
    apply_manifest(&client, ops.name(), &instance("ops-cache", region.clone()))
        .await
        .unwrap();

    let team_api: Api<CacheInstance> = Api::namespaced(client.clone(), team.name());
    let ops_api: Api<CacheInstance> = Api::namespaced(client.clone(), ops.name());
    let team_cache =
        testkit::wait_for_condition(&team_api, "team-cache", "Ready", "True", TIMEOUT).await;
    let billing_cache =
        testkit::wait_for_condition(&team_api, "billing-cache", "Ready", "True", TIMEOUT).await;
    let ops_cache =
        testkit::wait_for_condition(&ops_api, "ops-cache", "Ready", "True", TIMEOUT).await;
    assert_eq!(owner(&emulator, &team_cache).await, TEAM.0);
    assert_eq!(owner(&emulator, &billing_cache).await, BILLING.0);
    assert_eq!(owner(&emulator, &ops_cache).await, testkit::emulator::EMAIL);
    for (instance, account) in [
        (&team_cache, TEAM.0),
        (&billing_cache, BILLING.0),
        (&ops_cache, testkit::emulator::EMAIL),
    ] {
        assert_eq!(
            instance.status.as_ref().unwrap().account.as_deref(),
            Some(account)
        );
    }

    // A named Secret that does not exist: a clear condition and no database anywhere.
    let missing =
        testkit::wait_for_condition(&team_api, "missing-cache", "Ready", "False", TIMEOUT).await;
    let (_, reason, message) = ready_reason(&missing).unwrap();
    assert_eq!(reason, "CredentialsMissing");
    assert_eq!(
        message,
        format!(
            "spec.credentials names Secret {}/not-there-yet, which does not exist",
            team.name()
        )
    );
    assert_eq!(emulator.databases().await.len(), 3);
    // Once it exists, the instance provisions under that account.
    testkit::operator::write_credentials_with(
        &client,
        team.name(),
        "not-there-yet",
        BILLING.0,
        BILLING.1,
    )
    .await;
    nudge(&team_api, "missing-cache", "1").await;
    let provisioned =
        testkit::wait_for_condition(&team_api, "missing-cache", "Ready", "True", TIMEOUT).await;
    assert_eq!(owner(&emulator, &provisioned).await, BILLING.0);

    // The namespace Secret is edited to name another account. To those credentials the team
    // database looks deleted; the operator must not create a replacement there, rewrite the
    // connection Secret, or give up the database on delete.
    let connection_before = secret_data(&secrets.get("team-cache").await.unwrap());
    let databases_before = emulator.databases().await.len();
    switch_account(&secrets, BILLING).await;
    nudge(&team_api, "team-cache", "1").await;
    let changed = testkit::wait_for("team-cache to report AccountChanged", TIMEOUT, || async {
        let obj = team_api.get("team-cache").await.ok()?;
        let (status, reason, message) = ready_reason(&obj)?;
        (status == "False" && reason == "AccountChanged").then_some(message)
    })
    .await;
    let id = database_id(&team_cache);
    assert_eq!(
        changed,
        format!(
            "database {id} belongs to Upstash account {}, but the credentials now come from Secret {}/{} for account {}; the database is not read, changed, recreated or deleted until credentials for {} are back",
            TEAM.0,
            team.name(),
            testkit::operator::CREDENTIALS_SECRET,
            BILLING.0,
            TEAM.0
        )
    );
    assert_eq!(emulator.databases().await.len(), databases_before);
    assert_eq!(
        secret_data(&secrets.get("team-cache").await.unwrap()),
        connection_before
    );
    let events = events_for(&client, team.name(), "team-cache").await;
    assert_eq!(
        events
            .iter()
            .filter(|(reason, kind, _)| reason == "AccountChanged" && kind == "Warning")
            .count(),
        1,
        "{events:?}"
    );

    team_api
        .delete("team-cache", &DeleteParams::default())
        .await
        .unwrap();
    testkit::wait_for("the delete to be refused", TIMEOUT, || async {
        events_for(&client, team.name(), "team-cache")
            .await
            .iter()
            .any(|(reason, _, _)| reason == "DeletionBlocked")
    })
    .await;
    assert!(emulator.database(&id).await.is_some());
    assert!(team_api.get_opt("team-cache").await.unwrap().is_some());

    // The right account back: the delete goes through, in that account.
    switch_account(&secrets, TEAM).await;
    nudge(&team_api, "team-cache", "2").await;
    testkit::wait_for("team-cache to be deleted", TIMEOUT, || async {
        team_api
            .get_opt("team-cache")
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
    assert!(emulator.database(&id).await.is_none());

    // The others are deleted with their own accounts.
    for name in ["billing-cache", "missing-cache"] {
        team_api
            .delete(name, &DeleteParams::default())
            .await
            .unwrap();
    }
    ops_api
        .delete("ops-cache", &DeleteParams::default())
        .await
        .unwrap();
    testkit::wait_for("every database to be deleted", TIMEOUT, || async {
        emulator.databases().await.is_empty()
    })
    .await;
}

/// A team's key for the same email acts for another account: the personal database is not
/// visible to it and must not be recreated in the team, whether or not the team already has
/// databases from which the operator can learn whose key it is.
#[tokio::test]
async fn a_team_key_of_the_same_email_is_another_account() {
    let cluster = testkit::cluster().await;
    let ns = cluster.namespace("creds-team-key").await;
    let client = ns.client().await;
    let stack = start_stack(&ns, &[]).await;
    let emulator = &stack.emulator;
    let team_id = emulator
        .add_team_key(testkit::emulator::EMAIL, "team-key-51a8", "Platform")
        .await;
    // A second team of the same person, whose key the operator has never used.
    let other_team = emulator
        .add_team_key(testkit::emulator::EMAIL, "team-key-77c0", "Analytics")
        .await;
    let api: Api<CacheInstance> = Api::namespaced(client.clone(), ns.name());
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns.name());

    apply_manifest(
        &client,
        ns.name(),
        &instance("personal", json!({"primaryRegion": "us-east-1"})),
    )
    .await
    .unwrap();
    let personal = testkit::wait_for_condition(&api, "personal", "Ready", "True", TIMEOUT).await;
    let id = database_id(&personal);
    assert_eq!(
        personal.status.as_ref().unwrap().account.as_deref(),
        Some(testkit::emulator::EMAIL),
        "a personal database's account is its owner's email"
    );

    // A database created with the team's key belongs to the team, by Upstash's customer_id.
    testkit::operator::write_credentials_with(
        &client,
        ns.name(),
        "platform-credentials",
        testkit::emulator::EMAIL,
        "team-key-51a8",
    )
    .await;
    apply_manifest(
        &client,
        ns.name(),
        &instance(
            "team-owned",
            json!({"primaryRegion": "us-east-1", "credentials": {"secretRef": {"name": "platform-credentials"}}}),
        ),
    )
    .await
    .unwrap();
    let team_owned =
        testkit::wait_for_condition(&api, "team-owned", "Ready", "True", TIMEOUT).await;
    assert_eq!(
        team_owned.status.as_ref().unwrap().account.as_deref(),
        Some(team_id.as_str())
    );
    api.delete("team-owned", &DeleteParams::default())
        .await
        .unwrap();
    testkit::wait_for("the team's database to be deleted", TIMEOUT, || async {
        api.get_opt("team-owned")
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;

    // The namespace's Secret gets a team key of the same email that the operator has never
    // used, while that team has no database to tell whose key it is: the personal database is
    // not recreated.
    emulator.clear_calls().await;
    switch_account(&secrets, (testkit::emulator::EMAIL, "team-key-77c0")).await;
    nudge(&api, "personal", "1").await;
    let why = testkit::wait_for("AccountChanged for an unknown account", TIMEOUT, || async {
        let obj = api.get("personal").await.ok()?;
        let (status, reason, message) = ready_reason(&obj)?;
        (status == "False" && reason == "AccountChanged").then_some(message)
    })
    .await;
    assert!(
        why.contains(&id) && why.contains(testkit::emulator::EMAIL),
        "{why}"
    );
    assert!(
        emulator.calls_to("create").await.is_empty(),
        "a replacement was created with the team's key"
    );

    // Once the team has a database, the operator learns the key is the team's.
    let (code, _) = emulator
        .developer_api_as(
            testkit::emulator::EMAIL,
            "team-key-77c0",
            reqwest::Method::POST,
            "/v2/redis/database",
            Some(json!({"database_name": "team-other", "platform": "aws", "primary_region": "us-east-1"})),
        )
        .await;
    assert_eq!(code, 200);
    emulator.clear_calls().await;
    nudge(&api, "personal", "2").await;
    let why = testkit::wait_for("AccountChanged naming the team", TIMEOUT, || async {
        let obj = api.get("personal").await.ok()?;
        let (_, reason, message) = ready_reason(&obj)?;
        (reason == "AccountChanged" && message.contains(&other_team)).then_some(message)
    })
    .await;
    assert!(why.contains(testkit::emulator::EMAIL), "{why}");
    assert!(emulator.calls_to("create").await.is_empty());
    assert!(emulator.database(&id).await.is_some());

    // The personal key back: Ready with the same database, nothing created.
    switch_account(
        &secrets,
        (testkit::emulator::EMAIL, testkit::emulator::API_KEY),
    )
    .await;
    nudge(&api, "personal", "3").await;
    let back = testkit::wait_for("the personal database back", TIMEOUT, || async {
        let obj = api.get("personal").await.ok()?;
        let (status, _, _) = ready_reason(&obj)?;
        (status == "True").then_some(obj)
    })
    .await;
    assert_eq!(database_id(&back), id);
    assert!(emulator.calls_to("create").await.is_empty());
}

/// Instances created together share their credentials Secret: it changes only for the
/// operator's marks on it (the account learned from the first database, for the operator-wide
/// Secret the tests use), once each, however many passes race on it; no mark flaps. (A repeated
/// patch that changes nothing leaves no new version; the bench counts those requests.)
#[tokio::test]
async fn instances_created_together_change_their_credentials_secret_once_per_mark() {
    use futures::StreamExt;
    use kube::runtime::{WatchStreamExt, watcher};

    let cluster = testkit::cluster().await;
    let ns = cluster.namespace("marks").await;
    let stack = start_stack(&ns, &["--concurrency", "8"]).await;
    let client = ns.client().await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns.name());
    let initial = secrets
        .get(testkit::operator::CREDENTIALS_SECRET)
        .await
        .unwrap()
        .metadata
        .resource_version;
    let versions = std::sync::Arc::new(std::sync::Mutex::new(std::collections::BTreeSet::new()));
    let seen = versions.clone();
    let watch = tokio::spawn(async move {
        let config = watcher::Config::default().fields(&format!(
            "metadata.name={}",
            testkit::operator::CREDENTIALS_SECRET
        ));
        let mut stream = watcher(secrets, config).applied_objects().boxed();
        while let Some(Ok(secret)) = stream.next().await {
            if secret.metadata.resource_version != initial {
                seen.lock()
                    .unwrap()
                    .insert(secret.metadata.resource_version.unwrap_or_default());
            }
        }
    });

    let api: Api<CacheInstance> = Api::namespaced(client.clone(), ns.name());
    let names: Vec<String> = (0..16).map(|i| format!("c{i:02}")).collect();
    futures::future::join_all(names.iter().map(|name| {
        let client = client.clone();
        let ns = ns.name().to_string();
        async move {
            apply_manifest(
                &client,
                &ns,
                &instance(name, json!({"primaryRegion": "us-east-1"})),
            )
            .await
            .unwrap()
        }
    }))
    .await;
    for name in &names {
        testkit::wait_for("every instance Ready", TIMEOUT, || async {
            let obj = api.get(name).await.ok()?;
            obj.status?
                .conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
                .then_some(())
        })
        .await;
    }
    // Witness: a whole pass over every instance after all were Ready, so that any late write
    // of a pass has been made.
    futures::future::join_all(
        names
            .iter()
            .map(|name| crate::support::witness_pass(&stack.operator, &client, ns.name(), name)),
    )
    .await;
    watch.abort();
    let changes = versions.lock().unwrap().len();
    assert!(
        (1..=2).contains(&changes),
        "the credentials Secret changed {changes} times for 16 instances"
    );
}
