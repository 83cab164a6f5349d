use super::*;
use crate::controller::instance::fixtures::instance;

/// CacheInstance `namespace/name` created at `created` (minutes past midnight), overridden by
/// `rest` (`spec`, `status`, `metadata`).
fn obj(namespace: &str, name: &str, created: u32, rest: &str) -> CacheInstance {
    instance(&format!(
        "metadata: {{namespace: {namespace}, name: {name}, uid: uid-{namespace}-{name}, creationTimestamp: '2026-10-01T00:{created:02}:00Z'}}\n{rest}"
    ))
}

fn managing(namespace: &str, name: &str, created: u32, id: &str) -> CacheInstance {
    obj(
        namespace,
        name,
        created,
        &format!("spec: {{primaryRegion: us-east-1}}\nstatus: {{databaseId: {id}}}"),
    )
}

fn adopting(namespace: &str, name: &str, created: u32, id: &str) -> CacheInstance {
    obj(
        namespace,
        name,
        created,
        &format!("spec: {{primaryRegion: us-east-1, adopt: {{databaseId: {id}}}}}"),
    )
}

/// `o` with a create record for database `name`.
fn recording(mut o: CacheInstance, name: &str) -> CacheInstance {
    let uid = o.metadata.uid.clone().unwrap();
    o.metadata.annotations = Some(
        [(
            crate::crd::CREATE_RECORD_ANNOTATION.to_string(),
            format!(
                r#"{{"databaseName":"{name}","started":"2026-10-01T00:00:00Z","uid":"{uid}"}}"#
            ),
        )]
        .into(),
    );
    o
}

fn listed(objs: &[CacheInstance]) -> Claims {
    let claims = Claims::default();
    let scope = claims.register();
    claims.observe(scope, &watcher::Event::Init);
    for o in objs {
        claims.observe(scope, &watcher::Event::InitApply(o.clone()));
    }
    claims.observe(scope, &watcher::Event::InitDone);
    claims
}

fn claim(o: &CacheInstance) -> Claim {
    Claim::of(o).expect("a claim")
}

#[test]
fn an_instance_claims_its_database_its_create_in_flight_and_a_new_adoption() {
    let m = claim(&managing("a", "orders", 0, "db-a"));
    assert_eq!(m.manages.as_deref(), Some("db-a"));
    assert_eq!((m.creating.as_ref(), m.adopting.as_ref()), (None, None));

    let creating = recording(
        obj("a", "carts", 0, "spec: {primaryRegion: us-east-1}"),
        "a-carts-1",
    );
    assert_eq!(claim(&creating).creating.as_deref(), Some("a-carts-1"));

    let by_id = claim(&adopting("b", "x", 1, "db-a"));
    assert_eq!(by_id.adopting, Some(Target::Id("db-a".into())));
    let by_name = claim(&obj(
        "b",
        "by-name",
        1,
        "spec: {primaryRegion: us-east-1, databaseName: legacy, adopt: {byName: true}}",
    ));
    assert_eq!(by_name.adopting, Some(Target::Name("legacy".into())));

    // Once judged (a Ready condition), an adoption that did not happen claims nothing.
    let refused = obj(
        "b",
        "x",
        1,
        "spec: {primaryRegion: us-east-1, adopt: {databaseId: db-a}}\nstatus: {conditions: [{type: Ready, status: 'False', reason: AdoptionNotAllowed, message: refused, lastTransitionTime: '2026-10-01T00:00:00Z'}]}",
    );
    assert_eq!(Claim::of(&refused), None);
    assert_eq!(
        Claim::of(&obj("c", "plain", 0, "spec: {primaryRegion: us-east-1}")),
        None
    );
}

#[test]
fn the_instance_whose_status_names_the_database_wins() {
    let a = claim(&managing("a", "orders", 5, "db-a"));
    // B is older but only asks to adopt: A keeps its database.
    let b = Claim::contender(&adopting("b", "thief", 0, "db-a"), None);
    assert_eq!(
        judge(&b, "db-a", Some("a-orders-1"), [&a]),
        Some(Held::Managed(a.key.clone()))
    );
    // A itself is not held back by B's wish.
    let b_claim = claim(&adopting("b", "thief", 0, "db-a"));
    assert_eq!(
        judge(
            &Claim::contender(&managing("a", "orders", 5, "db-a"), Some("db-a")),
            "db-a",
            None,
            [&b_claim]
        ),
        None
    );
    // Another database is free.
    assert_eq!(judge(&b, "db-other", None, [&a]), None);
}

#[test]
fn of_two_whose_status_names_it_the_older_wins_then_the_lower_uid() {
    let original = claim(&managing("a", "orders", 0, "db-a"));
    let copy = claim(&managing("restored", "orders", 9, "db-a"));
    assert_eq!(
        judge(&copy, "db-a", None, [&original]),
        Some(Held::Managed(original.key.clone()))
    );
    assert_eq!(judge(&original, "db-a", None, [&copy]), None);
    // Same creation time: the lower UID.
    let twin = claim(&managing("z", "orders", 0, "db-a"));
    assert_eq!(
        judge(&twin, "db-a", None, [&original]),
        Some(Held::Managed(original.key.clone()))
    );
    assert_eq!(judge(&original, "db-a", None, [&twin]), None);
}

#[test]
fn of_two_new_adopters_the_older_wins_and_a_create_in_flight_wins_over_both() {
    let older = claim(&adopting("b", "first", 1, "db-x"));
    let younger = claim(&adopting("c", "second", 2, "db-x"));
    assert_eq!(
        judge(&younger, "db-x", None, [&older]),
        Some(Held::Adopting(older.key.clone()))
    );
    assert_eq!(judge(&older, "db-x", None, [&younger]), None);
    // By name against by id: the same database once its name is known.
    let by_name = claim(&obj(
        "d",
        "third",
        0,
        "spec: {primaryRegion: us-east-1, databaseName: shared, adopt: {byName: true}}",
    ));
    assert_eq!(
        judge(&older, "db-x", Some("shared"), [&by_name]),
        Some(Held::Adopting(by_name.key.clone()))
    );
    let creating = claim(&recording(
        obj("a", "maker", 9, "spec: {primaryRegion: us-east-1}"),
        "shared",
    ));
    assert_eq!(
        judge(&older, "db-x", Some("shared"), [&by_name, &creating]),
        Some(Held::Creating(creating.key.clone())),
        "a create in flight ranks before an adoption"
    );
}

#[tokio::test]
async fn the_index_follows_the_watch_and_releases_a_deleted_manager() {
    let a = managing("a", "orders", 0, "db-a");
    let claims = listed(std::slice::from_ref(&a));
    let b = Claim::contender(&adopting("b", "x", 1, "db-a"), None);
    assert!(matches!(
        claims.check(&b, "db-a", None).await,
        Err(Held::Managed(_))
    ));
    // A no longer names it (its database was replaced): released.
    let scope = ScopeId(0);
    claims.observe(
        scope,
        &watcher::Event::Apply(managing("a", "orders", 0, "db-new")),
    );
    assert!(claims.holder(&b, "db-a", None).await.is_none());
    // A names it again, then is deleted: released.
    claims.observe(scope, &watcher::Event::Apply(a.clone()));
    assert!(claims.holder(&b, "db-a", None).await.is_some());
    claims.observe(scope, &watcher::Event::Delete(a));
    assert!(claims.holder(&b, "db-a", None).await.is_none());
}

#[tokio::test]
async fn a_relist_replaces_what_the_index_knew() {
    let claims = listed(&[managing("a", "orders", 0, "db-a")]);
    let b = Claim::contender(&adopting("b", "x", 1, "db-a"), None);
    assert!(claims.holder(&b, "db-a", None).await.is_some());
    let scope = ScopeId(0);
    // A relist that no longer has A (its delete was missed): the old index serves until done.
    claims.observe(scope, &watcher::Event::Init);
    assert!(claims.holder(&b, "db-a", None).await.is_some());
    claims.observe(scope, &watcher::Event::InitDone);
    assert!(claims.holder(&b, "db-a", None).await.is_none());
}

#[tokio::test]
async fn no_decision_before_every_scope_has_listed() {
    let claims = Claims::default();
    let first = claims.register();
    let second = claims.register();
    claims.observe(first, &watcher::Event::Init);
    claims.observe(first, &watcher::Event::InitDone);
    let b = Claim::contender(&adopting("b", "x", 1, "db-a"), None);
    let waiting = tokio::time::timeout(Duration::from_millis(50), claims.holder(&b, "db-a", None));
    assert!(waiting.await.is_err(), "decided on an incomplete index");
    // The second scope lists A, which manages the database.
    claims.observe(second, &watcher::Event::Init);
    claims.observe(
        second,
        &watcher::Event::InitApply(managing("a", "orders", 0, "db-a")),
    );
    claims.observe(second, &watcher::Event::InitDone);
    assert!(matches!(
        claims.holder(&b, "db-a", None).await,
        Some(Held::Managed(_))
    ));
}

#[tokio::test]
async fn a_pass_that_takes_a_database_keeps_it_from_others_until_its_status_shows() {
    let claims = listed(&[]);
    // Neither is new any more (both were judged), so neither claims by its wish.
    let b = Claim::contender(&adopting("b", "x", 1, "db-a"), None);
    let c = Claim::contender(&adopting("c", "other", 0, "db-a"), None);
    let taken = claims.check(&b, "db-a", None).await.expect("free");
    assert!(taken.is_some());
    assert_eq!(
        claims.check(&c, "db-a", None).await.err(),
        Some(Held::Reserved(b.key.clone()))
    );
    // B's own next look keeps it.
    let again = claims.check(&b, "db-a", None).await.expect("still B's");
    drop(taken);
    assert_eq!(
        claims.check(&c, "db-a", None).await.err(),
        Some(Held::Reserved(b.key.clone())),
        "held by B's newer guard"
    );
    drop(again);
    // Until B's status write shows, the reservation holds; then B's status does.
    assert!(claims.check(&c, "db-a", None).await.is_err());
    claims.observe(
        ScopeId(0),
        &watcher::Event::Apply(managing("b", "x", 1, "db-a")),
    );
    assert_eq!(
        claims.check(&c, "db-a", None).await.err(),
        Some(Held::Managed(b.key.clone()))
    );
}

#[test]
fn the_message_names_other_namespaces_only_when_allowed() {
    let me = Key {
        namespace: "b".into(),
        name: "x".into(),
    };
    let elsewhere = Held::Managed(Key {
        namespace: "a".into(),
        name: "orders".into(),
    });
    let hidden = elsewhere.message(&me, "database db-a", false);
    assert!(hidden.contains("another CacheInstance"), "{hidden}");
    assert!(
        !hidden.contains("namespace") && !hidden.contains("orders"),
        "{hidden}"
    );
    let shown = elsewhere.message(&me, "database db-a", true);
    assert!(shown.contains("namespace a"), "{shown}");
    assert!(!shown.contains("orders"), "{shown}");
    let here = Held::Managed(Key {
        namespace: "b".into(),
        name: "first".into(),
    });
    assert!(
        here.message(&me, "database db-a", false)
            .contains("CacheInstance first in this namespace")
    );
}

#[test]
fn the_monitor_skips_a_database_that_another_instance_manages() {
    let a = managing("a", "orders", 0, "db-a");
    // A copy in another namespace whose status names A's database (restored, or copied).
    let copy = managing("b", "orders", 5, "db-a");
    let own = managing("b", "carts", 5, "db-b");
    let unlisted = Claims::default();
    let _scope = unlisted.register();
    assert!(
        unlisted.held_by_other(&own),
        "nothing is sampled before the index has listed"
    );

    let claims = listed(&[a.clone(), copy.clone(), own.clone()]);
    assert!(!claims.held_by_other(&a));
    assert!(claims.held_by_other(&copy));
    assert!(!claims.held_by_other(&own));
    assert!(!claims.held_by_other(&obj("c", "new", 9, "spec: {primaryRegion: us-east-1}")));
}
