//! The CRDs on a real API server: installation, samples, admission validation, kubectl UX.

use serde_json::{Value, json};

use crate::support::{
    apply_manifest, create_manifest, install_crds, instance, policy, read_yaml_documents,
};

#[tokio::test]
async fn crds_install_and_every_sample_applies() {
    let cluster = testkit::cluster().await;
    let client = cluster.client().await;
    install_crds(&client).await;
    let ns = cluster.namespace("samples").await;
    let mut applied = 0;
    for entry in std::fs::read_dir(crate::support::repo_path("deploy/samples")).unwrap() {
        let path = entry.unwrap().path();
        let relative = format!(
            "deploy/samples/{}",
            path.file_name().unwrap().to_string_lossy()
        );
        for doc in read_yaml_documents(&relative) {
            apply_manifest(&client, ns.name(), &doc)
                .await
                .unwrap_or_else(|e| panic!("{relative} was rejected: {e}"));
            applied += 1;
        }
    }
    assert!(
        applied >= 4,
        "expected at least four samples, applied {applied}"
    );
}

/// What the API server must answer for an invalid manifest: the field path it names and a
/// fragment of the message.
struct Invalid {
    what: &'static str,
    /// Created first (valid), then `manifest` is applied as an update.
    before: Option<Value>,
    /// Sent with a plain create (`kubectl create`) instead of server-side apply.
    create: bool,
    manifest: Value,
    field: &'static str,
    message: &'static str,
}

fn invalid_manifests() -> Vec<Invalid> {
    let ok = json!({"primaryRegion": "us-east-1"});
    vec![
        Invalid {
            what: "unknown primary region",
            before: None,
            create: false,
            manifest: instance("bad-region", json!({"primaryRegion": "mars-1"})),
            field: "spec.primaryRegion",
            message: "Unsupported value: \"mars-1\"",
        },
        Invalid {
            what: "missing primary region",
            before: None,
            create: false,
            manifest: instance("no-region", json!({"plan": "payg"})),
            field: "spec.primaryRegion",
            message: "Required value",
        },
        Invalid {
            what: "unknown plan",
            before: None,
            create: false,
            manifest: instance(
                "bad-plan",
                json!({"primaryRegion": "us-east-1", "plan": "gold"}),
            ),
            field: "spec.plan",
            message: "Unsupported value: \"gold\"",
        },
        Invalid {
            what: "negative budget",
            before: None,
            create: false,
            manifest: instance(
                "neg-budget",
                json!({"primaryRegion": "us-east-1", "budget": -5}),
            ),
            field: "spec.budget",
            message: "greater than or equal to 0",
        },
        Invalid {
            what: "bad rotation duration",
            before: None,
            create: false,
            manifest: instance(
                "bad-duration",
                json!({"primaryRegion": "us-east-1", "passwordRotation": {"every": "90 days"}}),
            ),
            field: "spec.passwordRotation.every",
            message: "should match",
        },
        Invalid {
            what: "read region equal to the primary",
            before: None,
            create: false,
            manifest: instance(
                "primary-read",
                json!({"primaryRegion": "eu-west-1", "readRegions": ["us-east-1", "eu-west-1"]}),
            ),
            field: "spec.readRegions",
            message: "must not contain the primaryRegion",
        },
        Invalid {
            what: "read region Upstash cannot replicate to",
            before: None,
            create: false,
            manifest: instance(
                "af-read",
                json!({"primaryRegion": "us-east-1", "readRegions": ["af-south-1"]}),
            ),
            field: "spec.readRegions[0]",
            message: "Unsupported value: \"af-south-1\"",
        },
        Invalid {
            what: "duplicate read regions",
            before: None,
            create: true,
            manifest: instance(
                "dup-read",
                json!({"primaryRegion": "us-east-1", "readRegions": ["eu-west-1", "eu-west-1"]}),
            ),
            field: "spec.readRegions",
            message: "Duplicate value",
        },
        Invalid {
            what: "two read regions on the free plan",
            before: None,
            create: false,
            manifest: instance(
                "free-reads",
                json!({"primaryRegion": "us-east-1", "plan": "free", "readRegions": ["eu-west-1", "us-west-1"]}),
            ),
            field: "spec.readRegions",
            message: "free plan allows at most one read region",
        },
        Invalid {
            what: "changing the primary region",
            create: false,
            before: Some(instance("move-region", ok.clone())),
            manifest: instance("move-region", json!({"primaryRegion": "eu-west-1"})),
            field: "spec.primaryRegion",
            message: "primaryRegion is immutable",
        },
        Invalid {
            what: "changing the database name",
            create: false,
            before: Some(instance(
                "rename-db",
                json!({"primaryRegion": "us-east-1", "databaseName": "first"}),
            )),
            manifest: instance(
                "rename-db",
                json!({"primaryRegion": "us-east-1", "databaseName": "second"}),
            ),
            field: "spec.databaseName",
            message: "databaseName is immutable",
        },
        Invalid {
            what: "adding a database name later",
            create: false,
            before: Some(instance("late-name", ok.clone())),
            manifest: instance(
                "late-name",
                json!({"primaryRegion": "us-east-1", "databaseName": "late"}),
            ),
            field: "spec.databaseName",
            message: "databaseName is immutable",
        },
        Invalid {
            what: "bad Secret name",
            before: None,
            create: false,
            manifest: instance(
                "bad-secret",
                json!({"primaryRegion": "us-east-1", "secret": {"name": "Crm_Redis"}}),
            ),
            field: "spec.secret.name",
            message: "should match",
        },
        Invalid {
            what: "bad template key",
            before: None,
            create: false,
            manifest: instance(
                "bad-template",
                json!({"primaryRegion": "us-east-1", "secret": {"templates": {"bad key!": "{{ host }}"}}}),
            ),
            field: "spec.secret.templates",
            message: "valid Secret data keys",
        },
        Invalid {
            what: "adopt with both an id and byName",
            before: None,
            create: false,
            manifest: instance(
                "bad-adopt",
                json!({"primaryRegion": "us-east-1", "adopt": {"databaseId": "abc", "byName": true}}),
            ),
            field: "spec.adopt",
            message: "exactly one of adopt.databaseId or adopt.byName",
        },
        Invalid {
            what: "restart of a kind that cannot be restarted",
            before: None,
            create: false,
            manifest: instance(
                "bad-restart",
                json!({"primaryRegion": "us-east-1", "passwordRotation": {"restart": [{"kind": "Pod", "name": "web"}]}}),
            ),
            field: "spec.passwordRotation.restart[0].kind",
            message: "Unsupported value: \"Pod\"",
        },
        Invalid {
            what: "unknown deletion policy",
            before: None,
            create: false,
            manifest: instance(
                "bad-deletion",
                json!({"primaryRegion": "us-east-1", "deletionPolicy": "Orphan"}),
            ),
            field: "spec.deletionPolicy",
            message: "Unsupported value: \"Orphan\"",
        },
        Invalid {
            what: "misspelt field",
            before: None,
            create: true,
            manifest: instance(
                "typo",
                json!({"primaryRegion": "us-east-1", "evicton": true}),
            ),
            field: "spec.evicton",
            message: "unknown field",
        },
        Invalid {
            what: "an allow-list entry that is not an address",
            before: None,
            create: false,
            manifest: instance(
                "bad-cidr",
                json!({"primaryRegion": "us-east-1", "allowedIPs": ["10.0.0.0/8", "office-network"]}),
            ),
            field: "spec.allowedIPs",
            message: "IP addresses or CIDR ranges",
        },
        Invalid {
            what: "a restore naming both a backup id and a name",
            before: None,
            create: false,
            manifest: instance(
                "bad-restore",
                json!({"primaryRegion": "us-east-1", "restore": {"requestId": "r1", "backupId": "x", "backupName": "y"}}),
            ),
            field: "spec.restore",
            message: "exactly one of restore.backupName or restore.backupId",
        },
        Invalid {
            what: "hit rate of 150 percent",
            before: None,
            create: false,
            manifest: policy("pct", json!({"hitRate": {"warningBelow": 150}})),
            field: "spec.hitRate.warningBelow",
            message: "less than or equal to 100",
        },
        Invalid {
            what: "negative memory threshold",
            before: None,
            create: false,
            manifest: policy("neg-mem", json!({"memory": {"warningAbove": -1}})),
            field: "spec.memory.warningAbove",
            message: "greater than or equal to 0",
        },
        Invalid {
            what: "warning level above the target",
            before: None,
            create: false,
            manifest: policy(
                "inverted",
                json!({"hitRate": {"warningBelow": 90, "target": 80}}),
            ),
            field: "spec.hitRate.warningBelow",
            message: "must not be above hitRate.target",
        },
        Invalid {
            what: "bad evaluation interval",
            before: None,
            create: false,
            manifest: policy("bad-interval", json!({"evaluationInterval": "soon"})),
            field: "spec.evaluationInterval",
            message: "should match",
        },
        Invalid {
            what: "unknown region in guardrails",
            before: None,
            create: false,
            manifest: policy(
                "bad-guard",
                json!({"guardrails": {"allowedRegions": ["nowhere"]}}),
            ),
            field: "spec.guardrails.allowedRegions[0]",
            message: "Unsupported value: \"nowhere\"",
        },
        Invalid {
            what: "unknown plan in guardrails",
            before: None,
            create: false,
            manifest: policy(
                "bad-plan-guard",
                json!({"guardrails": {"highestPlan": "huge"}}),
            ),
            field: "spec.guardrails.highestPlan",
            message: "Unsupported value: \"huge\"",
        },
    ]
}

#[tokio::test]
async fn invalid_manifests_are_rejected_naming_the_field() {
    let cluster = testkit::cluster().await;
    let client = cluster.client().await;
    install_crds(&client).await;
    let ns = cluster.namespace("invalid").await;
    let cases = invalid_manifests();
    assert!(cases.len() >= 15);
    let mut failures = Vec::new();
    for case in cases {
        if let Some(before) = &case.before {
            apply_manifest(&client, ns.name(), before)
                .await
                .unwrap_or_else(|e| panic!("{}: the valid original was rejected: {e}", case.what));
        }
        let answer = if case.create {
            create_manifest(&client, ns.name(), &case.manifest).await
        } else {
            apply_manifest(&client, ns.name(), &case.manifest).await
        };
        match answer {
            Ok(_) => failures.push(format!("{}: accepted", case.what)),
            Err(kube::Error::Api(status)) => {
                let named = status.message.contains(case.field);
                let explained = status.message.contains(case.message);
                if status.code != 422 && status.code != 400 || !named || !explained {
                    failures.push(format!(
                        "{}: expected 422 naming {:?} with {:?}, got {}: {}",
                        case.what, case.field, case.message, status.code, status.message
                    ));
                }
            }
            Err(e) => failures.push(format!("{}: unexpected error {e}", case.what)),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test]
async fn kubectl_sees_printer_columns_short_names_and_category() {
    let cluster = testkit::cluster().await;
    let client = cluster.client().await;
    install_crds(&client).await;
    let ns = cluster.namespace("columns").await;
    apply_manifest(
        &client,
        ns.name(),
        &instance(
            "shown",
            json!({"primaryRegion": "eu-west-1", "plan": "payg"}),
        ),
    )
    .await
    .unwrap();

    // What `kubectl get cacheinstances` asks for: a server-side Table.
    let request = http::Request::get(format!(
        "/apis/cache.upstash-operator.dev/v1alpha1/namespaces/{}/cacheinstances?includeObject=None",
        ns.name()
    ))
    .header(
        "Accept",
        "application/json;as=Table;v=v1;g=meta.k8s.io,application/json",
    )
    .body(Vec::new())
    .unwrap();
    let table: Value = client.request(request).await.unwrap();
    let columns: Vec<(String, i64)> = table["columnDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap().to_string(),
                c["priority"].as_i64().unwrap_or(0),
            )
        })
        .collect();
    let normal: Vec<&str> = columns
        .iter()
        .filter(|(_, p)| *p == 0)
        .map(|(n, _)| n.as_str())
        .collect();
    let wide: Vec<&str> = columns
        .iter()
        .filter(|(_, p)| *p > 0)
        .map(|(n, _)| n.as_str())
        .collect();
    assert_eq!(
        normal,
        [
            "Name",
            "Ready",
            "Reason",
            "Region",
            "Plan",
            "Secret",
            "Projected",
            "Age"
        ]
    );
    assert_eq!(wide, ["Spend", "Endpoint", "Database"]);
    let row = &table["rows"][0]["cells"];
    assert_eq!(row[0], "shown");
    assert_eq!(row[3], "eu-west-1");

    // What `kubectl get upstash` and `kubectl get ucache` resolve through discovery.
    let request = http::Request::get("/apis/cache.upstash-operator.dev/v1alpha1")
        .body(Vec::new())
        .unwrap();
    let list: Value = client.request(request).await.unwrap();
    let resources = list["resources"].as_array().unwrap();
    let find = |name: &str| {
        resources
            .iter()
            .find(|r| r["name"] == name)
            .unwrap_or_else(|| panic!("{name} not served"))
            .clone()
    };
    let instances = find("cacheinstances");
    assert_eq!(instances["shortNames"], json!(["ucache"]));
    assert_eq!(instances["categories"], json!(["upstash"]));
    assert_eq!(instances["namespaced"], true);
    let policies = find("cachepolicies");
    assert_eq!(policies["shortNames"], json!(["ucpolicy"]));
    assert_eq!(policies["categories"], json!(["upstash"]));

    // The short names must not shadow a built-in resource.
    let core: Value = client
        .request(http::Request::get("/api/v1").body(Vec::new()).unwrap())
        .await
        .unwrap();
    let mut builtin_short_names = Vec::new();
    for r in core["resources"].as_array().unwrap() {
        if let Some(names) = r["shortNames"].as_array() {
            builtin_short_names.extend(names.iter().filter_map(|n| n.as_str().map(String::from)));
        }
    }
    assert!(!builtin_short_names.contains(&"ucache".to_string()));
    assert!(!builtin_short_names.contains(&"ucpolicy".to_string()));
}
