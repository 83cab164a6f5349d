//! Leader election: the elector against the real API server, and two operator processes
//! installed by the chart (its Lease Role, its ServiceAccount) of which exactly one acts.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use k8s_openapi::api::coordination::v1::Lease;
use kube::{
    Api, Client,
    api::{Patch, PatchParams},
};
use serde_json::json;
use testkit::emulator::Emulator;
use tokio::{
    io::AsyncWriteExt,
    net::{TcpListener, TcpStream},
    task::JoinSet,
};
use upstash_operator::{
    crd::CacheInstance,
    leader::{LeaderElector, LeaseConfig},
};

use crate::install::{ChartInstall, ChartOperator, create_instance};

fn config(namespace: &str, identity: &str, seconds: u64) -> LeaseConfig {
    LeaseConfig {
        name: "elector-test".into(),
        namespace: namespace.into(),
        identity: identity.into(),
        lease_duration: Duration::from_secs(seconds),
    }
}

async fn lease(client: &Client, namespace: &str) -> Lease {
    Api::<Lease>::namespaced(client.clone(), namespace)
        .get("elector-test")
        .await
        .expect("the Lease")
}

fn holder(lease: &Lease) -> Option<String> {
    lease.spec.as_ref().and_then(|s| s.holder_identity.clone())
}

/// A witness: waits until the Lease's holder renewed it `n` more times (its `renewTime`
/// changed `n` times, as this test saw it) and returns the Lease then.
async fn renewals(client: &Client, namespace: &str, n: u64) -> Lease {
    let mut last = lease(client, namespace).await;
    let mut seen = 0;
    while seen < n {
        last = testkit::wait_for(
            "the holder to renew the Lease",
            Duration::from_secs(30),
            || {
                let last = last.clone();
                async move {
                    let now = lease(client, namespace).await;
                    let renewed = |l: &Lease| l.spec.as_ref().and_then(|s| s.renew_time.clone());
                    (renewed(&now) != renewed(&last)).then_some(now)
                }
            },
        )
        .await;
        seen += 1;
    }
    last
}

/// The whole microseconds between two Lease times.
fn micros_between(
    from: &k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime,
    to: &k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime,
) -> i64 {
    to.0.duration_since(from.0).as_micros() as i64
}

/// One of two candidates leads; when it stops renewing (a crash), the other takes over after
/// the lease duration and not before; after a release it takes over at once.
#[tokio::test]
async fn a_standby_takes_over_after_expiry_or_release() {
    let cluster = testkit::cluster().await;
    let ns = cluster.namespace("elector").await;
    let client = ns.client().await;
    let a = LeaderElector::new(client.clone(), config(ns.name(), "a", 3));
    let b = LeaderElector::new(client.clone(), config(ns.name(), "b", 3));

    let leading_a = a.acquire().await.unwrap();
    assert!(leading_a.is_leader());
    let created = lease(&client, ns.name()).await;
    assert_eq!(holder(&created).as_deref(), Some("a"));
    assert_eq!(
        created.spec.as_ref().unwrap().lease_duration_seconds,
        Some(3)
    );

    // b waits while a renews: for three lease durations (witness: nine renewals, one every
    // third of the lease duration).
    let b2 = b.clone();
    let waiting = tokio::spawn(async move { b2.acquire().await });
    let renewed = renewals(&client, ns.name(), 9).await;
    assert!(
        !waiting.is_finished(),
        "b took a Lease that a kept renewing"
    );
    assert!(leading_a.is_leader());
    assert_eq!(holder(&renewed).as_deref(), Some("a"));

    // a "crashes": renewals stop, the Lease is not released.
    drop(leading_a);
    let last_renewal = lease(&client, ns.name())
        .await
        .spec
        .unwrap()
        .renew_time
        .unwrap();
    let leading_b = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("b takes over")
        .unwrap()
        .unwrap();
    let taken = lease(&client, ns.name()).await;
    assert_eq!(holder(&taken).as_deref(), Some("b"));
    // Ordering, by the Lease's own record: b acquired it only once a's last renewal had expired
    // (3 s; b counts from when it first saw that renewal), and not much later.
    let after = micros_between(
        &last_renewal,
        taken.spec.as_ref().unwrap().acquire_time.as_ref().unwrap(),
    );
    assert!(
        (3_000_000..=5_000_000).contains(&after),
        "b acquired the Lease {after} µs after a's last renewal, with a 3 s lease"
    );
    assert_eq!(taken.spec.as_ref().unwrap().lease_transitions, Some(1));

    // b releases on a clean shutdown: a takes over at once, before b's last renewal would have
    // expired (witness that a was waiting: b renewed while a tried).
    let a2 = a.clone();
    let waiting = tokio::spawn(async move { a2.acquire().await });
    let renewed = renewals(&client, ns.name(), 1).await;
    assert!(!waiting.is_finished(), "a took a Lease that b held");
    leading_b.release().await;
    let leading_a = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("a takes over after the release")
        .unwrap()
        .unwrap();
    let acquired = lease(&client, ns.name())
        .await
        .spec
        .unwrap()
        .acquire_time
        .unwrap();
    let after = micros_between(
        renewed.spec.as_ref().unwrap().renew_time.as_ref().unwrap(),
        &acquired,
    );
    assert!(
        after < 3_000_000,
        "a took over {after} µs after b's last renewal: it waited for the expiry, not the release"
    );
    assert_eq!(
        holder(&lease(&client, ns.name()).await).as_deref(),
        Some("a")
    );
    leading_a.release().await;
}

/// Many candidates racing for a free Lease: exactly one wins (resourceVersion conflicts).
#[tokio::test]
async fn racing_candidates_elect_exactly_one() {
    let cluster = testkit::cluster().await;
    let ns = cluster.namespace("elector-race").await;
    let client = ns.client().await;
    let leaders = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut set = JoinSet::new();
    for i in 0..6 {
        let elector = LeaderElector::new(client.clone(), config(ns.name(), &format!("c{i}"), 5));
        let leaders = leaders.clone();
        set.spawn(async move {
            let leadership = elector.acquire().await.unwrap();
            leaders.lock().unwrap().push(format!("c{i}"));
            // Hold it for the rest of the test.
            tokio::time::sleep(Duration::from_secs(60)).await;
            drop(leadership);
        });
    }
    // Witness: the winner renewed three times while the others kept trying.
    testkit::wait_for("a leader", Duration::from_secs(30), || async {
        (!leaders.lock().unwrap().is_empty()).then_some(())
    })
    .await;
    renewals(&client, ns.name(), 3).await;
    let won = leaders.lock().unwrap().clone();
    assert_eq!(won.len(), 1, "leaders: {won:?}");
    assert_eq!(
        holder(&lease(&client, ns.name()).await),
        Some(won[0].clone())
    );
    set.abort_all();
}

/// The leader learns that it lost the Lease: when someone else holds it, and when it cannot
/// renew within the renew deadline (here: the API server becomes unreachable), before the Lease
/// could expire for the others.
#[tokio::test]
async fn the_leader_notices_a_lost_lease() {
    let cluster = testkit::cluster().await;
    let ns = cluster.namespace("elector-lost").await;
    let admin = ns.client().await;

    // Taken over by someone else.
    let a = LeaderElector::new(admin.clone(), config(ns.name(), "a", 3));
    let leading = a.acquire().await.unwrap();
    Api::<Lease>::namespaced(admin.clone(), ns.name())
        .patch(
            "elector-test",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"holderIdentity": "intruder"}})),
        )
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(3), leading.lost())
        .await
        .expect("lost() resolves once the Lease names another holder");
    assert!(!leading.is_leader());
    leading.release().await;
    assert_eq!(
        holder(&lease(&admin, ns.name()).await).as_deref(),
        Some("intruder"),
        "a released a Lease it no longer held"
    );

    // Cut off from the API server.
    Api::<Lease>::namespaced(admin.clone(), ns.name())
        .delete("elector-test", &Default::default())
        .await
        .unwrap();
    let proxy = Proxy::start(cluster.server()).await;
    let mut config_through_proxy = cluster.config().await;
    config_through_proxy.cluster_url = proxy.url().parse().unwrap();
    // The API server's certificate names 127.0.0.1, which the proxy also listens on.
    let client = Client::try_from(config_through_proxy).unwrap();
    let b = LeaderElector::new(client, config(ns.name(), "b", 3));
    let timing = b.timing();
    let leading = b.acquire().await.unwrap();
    proxy.cut();
    // Ordering: b gives up before another candidate, which judges the Lease expired by its own
    // clock, can take it.
    let c = LeaderElector::new(admin.clone(), config(ns.name(), "c", 3));
    let mut taking = tokio::spawn(async move { c.acquire().await });
    tokio::select! {
        biased;
        () = leading.lost() => {}
        taken = &mut taking => panic!(
            "c took the Lease before b gave up: {:?}",
            taken.map(|t| t.map(|l| l.is_leader()))
        ),
        () = tokio::time::sleep(timing.lease_duration * 3) => panic!("b never gave up"),
    }
    assert!(!leading.is_leader());
    let taken = tokio::time::timeout(Duration::from_secs(10), taking)
        .await
        .expect("c takes over once the Lease expired")
        .unwrap()
        .unwrap();
    taken.release().await;
}

/// A TCP proxy to the API server that can cut every connection.
struct Proxy {
    addr: std::net::SocketAddr,
    open: Arc<AtomicBool>,
    tasks: Arc<std::sync::Mutex<JoinSet<()>>>,
}

impl Proxy {
    async fn start(server: &str) -> Self {
        let upstream = server
            .trim_start_matches("https://")
            .trim_end_matches('/')
            .to_string();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let open = Arc::new(AtomicBool::new(true));
        let tasks = Arc::new(std::sync::Mutex::new(JoinSet::new()));
        let (open2, tasks2) = (open.clone(), tasks.clone());
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !open2.load(Ordering::SeqCst) {
                    let _ = inbound.shutdown().await;
                    continue;
                }
                let upstream = upstream.clone();
                tasks2.lock().unwrap().spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(&upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        Self { addr, open, tasks }
    }

    fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    fn cut(&self) {
        self.open.store(false, Ordering::SeqCst);
        self.tasks.lock().unwrap().abort_all();
    }
}

async fn leaders(operators: &[ChartOperator]) -> Vec<Option<bool>> {
    let mut out = Vec::new();
    for o in operators {
        out.push(o.leader().await);
    }
    out
}

/// Two operator processes installed by the chart (replicaCount 2, a 5 s Lease): exactly one
/// leads, only it calls Upstash (one create per CacheInstance), and when it is killed the other
/// takes over within the lease duration.
#[tokio::test]
async fn two_replicas_one_leader_and_a_takeover_within_the_lease() {
    let cluster = testkit::cluster().await;
    let ns = cluster.namespace("ha").await;
    let app = cluster.namespace("ha-app").await;
    let install = ChartInstall::install(
        &ns,
        &[
            "replicaCount=2",
            "leaderElection.leaseDuration=5s",
            "podDisruptionBudget.enabled=true",
        ],
    )
    .await;
    let lease_duration = Duration::from_secs(5);
    let emulator = Emulator::start().await;
    let mut operators = vec![
        install.start_operator(&emulator, "ha-0", app.name()),
        install.start_operator(&emulator, "ha-1", app.name()),
    ];
    // Both become ready: the standby too, so that rollouts finish.
    for o in operators.iter_mut() {
        o.wait_ready(Duration::from_secs(60)).await;
    }
    let state = testkit::wait_for("exactly one leader", Duration::from_secs(30), || async {
        let state = leaders(&operators).await;
        (state.iter().filter(|l| **l == Some(true)).count() == 1
            && state.iter().all(Option::is_some))
        .then_some(state)
    })
    .await;
    let leader = state.iter().position(|l| *l == Some(true)).unwrap();
    let standby = 1 - leader;
    let admin = app.client().await;
    let lease = Api::<Lease>::namespaced(admin.clone(), ns.name())
        .get(&install.env["LEASE_NAME"])
        .await
        .unwrap();
    assert_eq!(
        lease.spec.as_ref().unwrap().holder_identity.as_deref(),
        Some(operators[leader].identity.as_str())
    );

    // Three caches, each created exactly once in Upstash, by the leader.
    emulator.clear_calls().await;
    let instances: Api<CacheInstance> = Api::namespaced(admin.clone(), app.name());
    for name in ["alpha", "beta", "gamma"] {
        create_instance(&admin, app.name(), name).await;
    }
    for name in ["alpha", "beta", "gamma"] {
        testkit::wait_for_condition(&instances, name, "Ready", "True", Duration::from_secs(90))
            .await;
    }
    let creates = emulator.calls_to("create").await;
    assert_eq!(creates.len(), 3, "create calls: {creates:#?}");
    assert!(
        operators[standby]
            .process
            .logs()
            .contains("standing by: another replica holds the leader Lease"),
        "{}",
        operators[standby].process.logs()
    );
    assert_eq!(leaders(&operators).await[standby], Some(false));

    // Kill the leader (SIGKILL: no release); the standby takes over once the Lease expired.
    let leases = Api::<Lease>::namespaced(admin.clone(), ns.name());
    let lease_name = install.env["LEASE_NAME"].clone();
    operators[leader].process.kill();
    let last_renewal = leases
        .get(&lease_name)
        .await
        .unwrap()
        .spec
        .unwrap()
        .renew_time
        .unwrap();
    testkit::wait_for(
        "the standby to take over",
        lease_duration + Duration::from_secs(10),
        || async { (operators[standby].leader().await == Some(true)).then_some(()) },
    )
    .await;
    // By the Lease's own record: acquired no sooner than the lease duration after the dead
    // leader's last renewal, and within a couple of retry periods after it.
    let acquired = leases
        .get(&lease_name)
        .await
        .unwrap()
        .spec
        .unwrap()
        .acquire_time
        .unwrap();
    let takeover = acquired.0.duration_since(last_renewal.0);
    eprintln!("takeover {takeover:?} after the last renewal (lease {lease_duration:?})");
    let takeover = Duration::from_micros(takeover.as_micros().max(0) as u64);
    assert!(
        takeover >= lease_duration && takeover <= lease_duration + Duration::from_secs(2),
        "the standby took over {takeover:?} after the last renewal, lease duration {lease_duration:?}"
    );

    // The new leader acts: a fourth cache is created; the three others are not created again.
    create_instance(&admin, app.name(), "delta").await;
    testkit::wait_for_condition(
        &instances,
        "delta",
        "Ready",
        "True",
        Duration::from_secs(90),
    )
    .await;
    let creates = emulator.calls_to("create").await;
    assert_eq!(
        creates.len(),
        4,
        "one create per instance across the takeover: {creates:#?}"
    );
    let lease = Api::<Lease>::namespaced(admin, ns.name())
        .get(&install.env["LEASE_NAME"])
        .await
        .unwrap();
    assert_eq!(
        lease.spec.unwrap().holder_identity.as_deref(),
        Some(operators[standby].identity.as_str())
    );
    operators[standby].process.stop();
}
