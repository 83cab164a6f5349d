//! Install tests: the chart rendered and applied for real (all but the Deployment), and the
//! operator run as a local process configured exactly like the chart's container (its env) and
//! authenticated with a token of the chart's ServiceAccount, so it has exactly the shipped RBAC.

use std::{
    collections::BTreeMap,
    path::PathBuf,
    time::{Duration, Instant},
};

use k8s_openapi::api::{authentication::v1::SelfSubjectReview, core::v1::Secret};
use kube::{
    Api,
    api::{ListParams, Patch, PatchParams, PostParams},
};
use serde_json::{Value, json};
use testkit::{Process, TestNamespace, emulator::Emulator};
use upstash_operator::crd::{CacheInstance, CachePolicy};

use crate::support::{
    apply, container_env, free_port, install_chart_crds, metric_value, one, render,
    write_token_kubeconfig,
};

const READY_TIMEOUT: Duration = Duration::from_secs(90);

/// The chart applied in a test namespace, without its Deployment.
pub struct ChartInstall {
    pub namespace: String,
    pub docs: Vec<Value>,
    /// The operator container's env as the chart renders it.
    pub env: BTreeMap<String, String>,
    pub service_account: String,
    pub token: String,
    pub kubeconfig: PathBuf,
    _dir: tempfile::TempDir,
}

impl ChartInstall {
    /// Renders the chart as release `<namespace>` into `ns` with `sets`, applies every object
    /// except the Deployment (and the CRDs, which every test shares: they are applied from the
    /// chart once), creates the credentials Secret for the emulator's account and mints a token
    /// for the chart's ServiceAccount.
    pub async fn install(ns: &TestNamespace, sets: &[&str]) -> Self {
        let cluster = ns.cluster();
        let admin = ns.client().await;
        install_chart_crds(&admin).await;
        let release = ns.name().to_string();
        let docs = render(&release, ns.name(), &[], sets);
        for doc in &docs {
            let kind = doc["kind"].as_str().unwrap();
            if kind == "Deployment" || kind == "CustomResourceDefinition" {
                continue;
            }
            apply(&admin, doc, false)
                .await
                .unwrap_or_else(|e| panic!("applying {kind} {}: {e}", doc["metadata"]["name"]));
        }
        let deployment = one(&docs, "Deployment");
        let env = container_env(deployment);
        let service_account = deployment["spec"]["template"]["spec"]["serviceAccountName"]
            .as_str()
            .unwrap()
            .to_string();
        testkit::operator::write_credentials(&admin, ns.name()).await;
        let token = testkit::service_account_token(
            admin,
            ns.name(),
            &service_account,
            &[],
            Duration::from_secs(3600),
        )
        .await
        .expect("a token for the chart's ServiceAccount");
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = write_token_kubeconfig(cluster, &token, dir.path());
        Self {
            namespace: ns.name().to_string(),
            docs,
            env,
            service_account,
            token,
            kubeconfig,
            _dir: dir,
        }
    }

    /// Starts an operator process as pod `identity` of the chart's Deployment would run, talking
    /// to `emulator` instead of Upstash, and watching only `watch` (other tests share the
    /// control plane: a cluster-wide operator would act on their CacheInstances too; the
    /// cluster-wide RBAC is checked with the token directly).
    pub fn start_operator(
        &self,
        emulator: &Emulator,
        identity: &str,
        watch: &str,
    ) -> ChartOperator {
        let chart_watch = &self.env["WATCH_NAMESPACES"];
        assert!(
            chart_watch.is_empty() || chart_watch == watch,
            "the chart watches {chart_watch}, the test {watch}"
        );
        let http = format!("127.0.0.1:{}", free_port());
        let mut builder = Process::builder(
            &format!("operator-{identity}"),
            testkit::cargo_bin("upstash-operator"),
        )
        .env("KUBECONFIG", &self.kubeconfig)
        .env_remove("RUST_LOG");
        for (name, value) in &self.env {
            let value = match value.as_str() {
                "fieldRef:metadata.name" => identity.to_string(),
                "fieldRef:metadata.namespace" => self.namespace.clone(),
                other => other.to_string(),
            };
            builder = builder.env(name, value);
        }
        let process = builder
            // Where the pod would listen, Upstash, and the emulator's CA instead of the real ones.
            .env("HTTP_ADDR", &http)
            .env("UPSTASH_API_URL", emulator.api_url())
            .env("UPSTASH_CA_FILE", emulator.ca_file())
            .env("WATCH_NAMESPACES", watch)
            .spawn()
            .expect("starting upstash-operator");
        ChartOperator {
            process,
            http,
            identity: identity.to_string(),
        }
    }

    /// The operator's ServiceAccount as a user name.
    pub fn user(&self) -> String {
        format!(
            "system:serviceaccount:{}:{}",
            self.namespace, self.service_account
        )
    }
}

/// An operator process started by [`ChartInstall::start_operator`].
pub struct ChartOperator {
    pub process: Process,
    pub http: String,
    pub identity: String,
}

impl ChartOperator {
    /// GETs a path of the operator's HTTP server.
    pub async fn get(&self, path: &str) -> Option<(u16, String)> {
        let r = reqwest::get(format!("http://{}{path}", self.http))
            .await
            .ok()?;
        Some((r.status().as_u16(), r.text().await.unwrap_or_default()))
    }

    /// Waits until `/readyz` answers 200.
    pub async fn wait_ready(&mut self, timeout: Duration) {
        let started = Instant::now();
        loop {
            if let Some((200, _)) = self.get("/readyz").await {
                return;
            }
            if let Some(status) = self.process.try_wait() {
                panic!(
                    "{} exited ({status}):\n{}",
                    self.identity,
                    self.process.logs()
                );
            }
            assert!(
                started.elapsed() < timeout,
                "{} not ready within {timeout:?}:\n{}",
                self.identity,
                self.process.logs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `leader_election_master_status` from `/metrics`, if the operator answers.
    pub async fn leader(&self) -> Option<bool> {
        let (status, text) = self.get("/metrics").await?;
        if status != 200 {
            return None;
        }
        metric_value(&text, "leader_election_master_status").map(|v| v == 1.0)
    }
}

fn instance(name: &str, spec: Value) -> Value {
    json!({
        "apiVersion": "cache.upstash-operator.dev/v1alpha1",
        "kind": "CacheInstance",
        "metadata": {"name": name},
        "spec": spec,
    })
}

/// Creates a CacheInstance in `namespace` (as a user would, with the admin client).
pub async fn create_instance(client: &kube::Client, namespace: &str, name: &str) {
    let mut obj = instance(
        name,
        json!({"primaryRegion": "us-east-1", "keyPrefix": "app:"}),
    );
    obj["metadata"]["namespace"] = json!(namespace);
    apply(client, &obj, false)
        .await
        .unwrap_or_else(|e| panic!("creating CacheInstance {name}: {e}"));
}

/// Asserts who the token authenticates as, with a SelfSubjectReview.
async fn assert_identity(cluster: &testkit::Cluster, token: &str, user: &str) {
    let client = cluster.client_for_token(token).await;
    let review: SelfSubjectReview = serde_json::from_value(json!({
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "SelfSubjectReview",
    }))
    .unwrap();
    let review = Api::<SelfSubjectReview>::all(client)
        .create(&PostParams::default(), &review)
        .await
        .expect("a SelfSubjectReview");
    assert_eq!(
        review
            .status
            .unwrap()
            .user_info
            .unwrap()
            .username
            .as_deref(),
        Some(user)
    );
}

/// Writes the live objects to `$DEPLOY_TESTS_DUMP_DIR` (to refresh Argo CD testdata by hand).
fn dump(name: &str, obj: &impl serde::Serialize) {
    if let Some(dir) = std::env::var_os("DEPLOY_TESTS_DUMP_DIR") {
        let path = PathBuf::from(dir).join(format!("{name}.json"));
        std::fs::write(path, serde_json::to_vec_pretty(obj).unwrap()).unwrap();
    }
}

/// Cluster-wide install: a CacheInstance in another namespace becomes Ready, its Secret is
/// written, Events are recorded, and Argo CD's health check calls it Healthy.
#[tokio::test]
async fn cluster_wide_install_provisions_with_the_shipped_rbac() {
    let cluster = testkit::cluster().await;
    let ns = cluster.namespace("install").await;
    let app = cluster.namespace("install-app").await;
    let install = ChartInstall::install(&ns, &[]).await;
    assert_identity(cluster, &install.token, &install.user()).await;
    let emulator = Emulator::start().await;
    // The ClusterRole lets the ServiceAccount watch CacheInstances, CachePolicies and Secrets in
    // every namespace, as a cluster-wide operator does.
    let as_operator = cluster.client_for_token(&install.token).await;
    Api::<CacheInstance>::all(as_operator.clone())
        .list(&ListParams::default().limit(1))
        .await
        .expect("cluster-wide CacheInstance list");
    Api::<CachePolicy>::all(as_operator.clone())
        .list(&ListParams::default().limit(1))
        .await
        .expect("cluster-wide CachePolicy list");
    Api::<Secret>::all(as_operator)
        .list(&ListParams::default().limit(1))
        .await
        .expect("cluster-wide Secret list");
    let mut operator = install.start_operator(&emulator, "install-0", app.name());
    operator.wait_ready(Duration::from_secs(60)).await;

    let admin = app.client().await;
    create_instance(&admin, app.name(), "orders-cache").await;
    let instances: Api<CacheInstance> = Api::namespaced(admin.clone(), app.name());
    let ready =
        testkit::wait_for_condition(&instances, "orders-cache", "Ready", "True", READY_TIMEOUT)
            .await;
    let status = ready.status.clone().unwrap();
    assert_eq!(status.observed_generation, ready.metadata.generation);
    let id = status.database_id.clone().expect("status.databaseId");
    assert!(emulator.database(&id).await.is_some());

    let secret = Api::<Secret>::namespaced(admin.clone(), app.name())
        .get("orders-cache")
        .await
        .expect("the connection Secret");
    let keys: Vec<&String> = secret.data.as_ref().unwrap().keys().collect();
    for key in [
        "REDIS_URL",
        "UPSTASH_REDIS_REST_URL",
        "UPSTASH_REDIS_REST_TOKEN",
    ] {
        assert!(keys.iter().any(|k| *k == key), "{key} missing in {keys:?}");
    }

    let events = testkit::wait_for(
        "Events about orders-cache",
        Duration::from_secs(30),
        || async {
            let events =
                Api::<k8s_openapi::api::events::v1::Event>::namespaced(admin.clone(), app.name())
                    .list(&ListParams::default())
                    .await
                    .ok()?
                    .items;
            let reasons: Vec<String> = events
                .iter()
                .filter(|e| {
                    e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("orders-cache")
                })
                .filter_map(|e| e.reason.clone())
                .collect();
            // One Event for a new instance: Provisioned, naming the Secret it wrote.
            reasons
                .iter()
                .any(|r| r == "Provisioned")
                .then_some(reasons)
        },
    )
    .await;
    assert!(!events.is_empty());

    // The live object is Healthy for Argo CD.
    let live = serde_json::to_value(&ready).unwrap();
    dump("cacheinstance-ready", &live);
    assert_eq!(
        crate::argocd::health_of("CacheInstance", &live).0,
        "Healthy",
        "{live:#}"
    );

    // A CachePolicy gets a status from the operator and is Healthy too.
    let policy = json!({
        "apiVersion": "cache.upstash-operator.dev/v1alpha1",
        "kind": "CachePolicy",
        "metadata": {"name": "production", "namespace": app.name()},
        "spec": {"selector": {"matchLabels": {"tier": "production"}}, "hitRate": {"warningBelow": 70, "target": 80}},
    });
    apply(&admin, &policy, false).await.unwrap();
    let policies: Api<CachePolicy> = Api::namespaced(admin.clone(), app.name());
    let policy =
        testkit::wait_for_condition(&policies, "production", "Ready", "True", READY_TIMEOUT).await;
    let live = serde_json::to_value(&policy).unwrap();
    dump("cachepolicy-ready", &live);
    assert_eq!(crate::argocd::health_of("CachePolicy", &live).0, "Healthy");

    // The operator identified itself in the Lease and wrote nothing with the admin's identity.
    let lease = Api::<k8s_openapi::api::coordination::v1::Lease>::namespaced(admin, ns.name())
        .get(install.env["LEASE_NAME"].as_str())
        .await
        .expect("the leader Lease");
    assert_eq!(
        lease.spec.unwrap().holder_identity.as_deref(),
        Some("install-0")
    );
    let logs = operator.process.logs();
    assert!(
        !logs.contains(testkit::emulator::API_KEY),
        "the API key appears in the logs"
    );
    operator.process.stop();
}

/// Namespaced install: the operator works in its namespace with Roles only, and its
/// ServiceAccount cannot read Secrets anywhere else.
#[tokio::test]
async fn namespaced_install_is_confined_to_its_namespaces() {
    let cluster = testkit::cluster().await;
    let ns = cluster.namespace("install-ns").await;
    let app = cluster.namespace("install-team").await;
    let other = cluster.namespace("install-other").await;
    let watch = format!("watchNamespaces={{{}}}", app.name());
    let install = ChartInstall::install(&ns, &[&watch, "rbac.aggregateClusterRoles=false"]).await;
    assert!(
        crate::support::of_kind(&install.docs, "ClusterRole").is_empty(),
        "namespaced mode renders no ClusterRole"
    );
    assert_eq!(install.env["WATCH_NAMESPACES"], app.name());

    // A Secret in a namespace the operator does not watch stays out of reach.
    let admin = other.client().await;
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "not-yours"},
        "stringData": {"password": "s3cret"},
    }))
    .unwrap();
    Api::<Secret>::namespaced(admin.clone(), other.name())
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    let as_operator = cluster.client_for_token(&install.token).await;
    let secrets: Api<Secret> = Api::namespaced(as_operator.clone(), other.name());
    for result in [
        secrets.get("not-yours").await.map(|_| ()),
        secrets.list(&ListParams::default()).await.map(|_| ()),
    ] {
        match result {
            Err(kube::Error::Api(s)) => assert_eq!(s.code, 403, "{s:?}"),
            other => panic!("the ServiceAccount read a Secret in another namespace: {other:?}"),
        }
    }
    // Nor can it list Secrets cluster-wide, or touch CacheInstances elsewhere.
    match Api::<Secret>::all(as_operator.clone())
        .list(&ListParams::default())
        .await
    {
        Err(kube::Error::Api(s)) => assert_eq!(s.code, 403),
        other => panic!("cluster-wide Secret list allowed: {other:?}"),
    }
    match Api::<CacheInstance>::namespaced(as_operator.clone(), other.name())
        .list(&ListParams::default())
        .await
    {
        Err(kube::Error::Api(s)) => assert_eq!(s.code, 403),
        other => panic!("CacheInstances of another namespace readable: {other:?}"),
    }
    // The credentials Secret is readable by name only.
    let own: Api<Secret> = Api::namespaced(as_operator.clone(), ns.name());
    own.get(testkit::operator::CREDENTIALS_SECRET)
        .await
        .expect("the credentials Secret is readable");
    assert!(
        matches!(own.list(&ListParams::default()).await, Err(kube::Error::Api(s)) if s.code == 403)
    );

    let emulator = Emulator::start().await;
    let mut operator = install.start_operator(&emulator, "namespaced-0", app.name());
    operator.wait_ready(Duration::from_secs(60)).await;
    let admin = app.client().await;
    create_instance(&admin, app.name(), "team-cache").await;
    let instances: Api<CacheInstance> = Api::namespaced(admin.clone(), app.name());
    testkit::wait_for_condition(&instances, "team-cache", "Ready", "True", READY_TIMEOUT).await;
    Api::<Secret>::namespaced(admin.clone(), app.name())
        .get("team-cache")
        .await
        .expect("the connection Secret");
    // The operator may write Events in the namespace it watches (namespaced RBAC).
    testkit::wait_for("the Provisioned Event", Duration::from_secs(30), || async {
        let reasons: Vec<String> =
            Api::<k8s_openapi::api::events::v1::Event>::namespaced(admin.clone(), app.name())
                .list(&ListParams::default())
                .await
                .ok()?
                .items
                .into_iter()
                .filter_map(|e| e.reason)
                .collect();
        // Events are published in the background: wait for the ones this pass emits.
        ["Provisioned"]
            .iter()
            .all(|wanted| reasons.iter().any(|r| r == wanted))
            .then_some(reasons)
    })
    .await;

    // A CacheInstance outside the watched namespace is left alone. Witness: reconciles of the
    // watched one, nudged after the other was created, each started after the one before ended.
    let outside = other.client().await;
    create_instance(&outside, other.name(), "ignored").await;
    let reconciles = |namespace: &str, name: &str| {
        let labels = format!("namespace=\"{namespace}\",name=\"{name}\"");
        let operator = &operator;
        async move {
            match operator.get("/metrics").await {
                Some((200, text)) => Ok(testkit::witness::metric_value(
                    &text,
                    "upstash_cache_reconciles_total",
                    &labels,
                )
                .unwrap_or(0.0) as u64),
                other => Err(format!("GET /metrics: {other:?}")),
            }
        }
    };
    let mut mark = reconciles(app.name(), "team-cache").await.unwrap();
    for n in 0..3 {
        instances
            .patch(
                "team-cache",
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"annotations": {"tests.upstash-operator.dev/nudge": n.to_string()}}})),
            )
            .await
            .unwrap();
        mark = testkit::witness::wait_for_growth(
            "a reconcile of team-cache",
            READY_TIMEOUT,
            mark,
            1,
            || reconciles(app.name(), "team-cache"),
        )
        .await;
    }
    let ignored = Api::<CacheInstance>::namespaced(outside, other.name())
        .get("ignored")
        .await
        .unwrap();
    assert!(ignored.status.is_none(), "{:?}", ignored.status);
    assert_eq!(
        reconciles(other.name(), "ignored").await.unwrap(),
        0,
        "the operator reconciled an instance outside its namespace"
    );
    let logs = operator.process.logs();
    assert!(
        !logs.contains(" 403") && !logs.contains("forbidden"),
        "the operator hit RBAC denials with the namespaced Roles:\n{logs}"
    );
    operator.process.stop();
}

/// `helm install`, `helm upgrade` and `helm uninstall` with the helm binary against the real API
/// server, as users run them (CRDs off: the other tests share CRDs that Helm does not own).
#[tokio::test]
async fn helm_installs_upgrades_and_uninstalls_the_release() {
    use k8s_openapi::api::{apps::v1::Deployment, rbac::v1::ClusterRole};
    let cluster = testkit::cluster().await;
    let ns = cluster.namespace("helm").await;
    let kubeconfig = cluster.kubeconfig_path().to_string_lossy().into_owned();
    let chart = crate::support::chart_dir().to_string_lossy().into_owned();
    let release = ns.name().to_string();
    let helm = |args: &[&str]| {
        let mut all = vec![
            "--kubeconfig",
            kubeconfig.as_str(),
            "--namespace",
            ns.name(),
        ];
        all.extend_from_slice(args);
        let out = crate::support::helm(&all);
        assert!(out.success, "helm {args:?}:\n{}{}", out.stdout, out.stderr);
        out.stdout
    };
    helm(&[
        "install",
        &release,
        &chart,
        "--set",
        "crds.install=false",
        "--set",
        "upstash.credentials.create=true",
        "--set",
        "upstash.credentials.email=ops@example.com",
        "--set",
        "upstash.credentials.apiKey=helm-test-key",
    ]);
    let client = ns.client().await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns.name());
    let name = format!("{release}-upstash-operator");
    let deployment = deployments.get(&name).await.expect("the Deployment");
    assert_eq!(deployment.spec.unwrap().replicas, Some(1));
    Api::<Secret>::namespaced(client.clone(), ns.name())
        .get(&format!("{name}-credentials"))
        .await
        .expect("the credentials Secret");
    let status = helm(&["status", &release]);
    assert!(status.contains("STATUS: deployed"), "{status}");
    assert!(
        status.contains("kubectl wait --for=condition=Ready"),
        "NOTES: {status}"
    );

    helm(&[
        "upgrade",
        &release,
        &chart,
        "--reuse-values",
        "--set",
        "replicaCount=2",
        "--set",
        "podDisruptionBudget.enabled=true",
    ]);
    let deployment = deployments.get(&name).await.unwrap();
    assert_eq!(deployment.spec.unwrap().replicas, Some(2));

    helm(&["uninstall", &release]);
    testkit::wait_for(
        "the release's objects to be deleted",
        Duration::from_secs(30),
        || async {
            let gone = deployments.get_opt(&name).await.ok()?.is_none()
                && Api::<ClusterRole>::all(client.clone())
                    .get_opt(&name)
                    .await
                    .ok()?
                    .is_none();
            gone.then_some(())
        },
    )
    .await;
}
