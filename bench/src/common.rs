//! Steps the scenarios share: CRDs, instances, waits, operator metrics.

use std::{
    future::Future,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use futures::StreamExt;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{
    Api, Client,
    api::{DeleteParams, DynamicObject, Patch, PatchParams, PostParams},
};
use serde_json::json;

use crate::observe::{Recorder, cache_instance_resource};

/// Field manager of the bench's own writes.
pub const BENCH_MANAGER: &str = "upstash-bench";

/// Applies the committed `crds/*.yaml` and waits until they are Established.
pub async fn install_crds(client: &Client) -> anyhow::Result<()> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let dir = testkit::workspace_root().join("crds");
    let mut names = Vec::new();
    for entry in std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path)?;
        for doc in serde_saphyr::from_multiple::<serde_json::Value>(&text)
            .with_context(|| format!("parsing {}", path.display()))?
        {
            if doc.is_null() {
                continue;
            }
            let crd: CustomResourceDefinition = serde_json::from_value(doc)?;
            let name = crd.metadata.name.clone().context("CRD name")?;
            api.patch(
                &name,
                &PatchParams::apply(BENCH_MANAGER).force(),
                &Patch::Apply(&crd),
            )
            .await
            .with_context(|| format!("applying CRD {name}"))?;
            names.push(name);
        }
    }
    for name in names {
        wait_until(
            &format!("CRD {name} Established"),
            Duration::from_secs(60),
            || {
                let api = api.clone();
                let name = name.clone();
                async move {
                    api.get(&name)
                        .await
                        .ok()
                        .and_then(|c| c.status)
                        .is_some_and(|s| {
                            s.conditions
                                .iter()
                                .flatten()
                                .any(|c| c.type_ == "Established" && c.status == "True")
                        })
                }
            },
        )
        .await?;
    }
    Ok(())
}

/// Name of instance `i`.
pub fn instance_name(i: usize) -> String {
    format!("cache-{i:04}")
}

/// The smallest useful CacheInstance (the sample `cacheinstance-minimal.yaml`).
pub fn instance_manifest(name: &str) -> DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": "cache.upstash-operator.dev/v1alpha1",
        "kind": "CacheInstance",
        "metadata": {"name": name},
        "spec": {"primaryRegion": "us-east-1"},
    }))
    .expect("a valid CacheInstance")
}

/// The CacheInstances of `namespace`.
pub fn instances_api(client: &Client, namespace: &str) -> Api<DynamicObject> {
    Api::namespaced_with(client.clone(), namespace, &cache_instance_resource())
}

/// Creates `n` instances, `parallel` POSTs at a time, noting each creation in `recorder`.
pub async fn create_instances(
    api: &Api<DynamicObject>,
    n: usize,
    parallel: usize,
    recorder: &Recorder,
) -> anyhow::Result<()> {
    let results: Vec<anyhow::Result<()>> = futures::stream::iter(0..n)
        .map(|i| async move {
            let name = instance_name(i);
            let obj = instance_manifest(&name);
            let params = PostParams {
                field_manager: Some(BENCH_MANAGER.into()),
                ..Default::default()
            };
            let mut tries = 0;
            loop {
                match api.create(&params, &obj).await {
                    Ok(_) => break,
                    Err(e) if tries < 5 => {
                        tries += 1;
                        eprintln!("bench: creating {name}: {e}; retrying");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    Err(e) => return Err(anyhow::Error::new(e).context(name)),
                }
            }
            recorder.created(&name);
            Ok(())
        })
        .buffer_unordered(parallel)
        .collect()
        .await;
    results.into_iter().collect()
}

/// Deletes `n` instances, `parallel` DELETEs at a time.
pub async fn delete_instances(
    api: &Api<DynamicObject>,
    n: usize,
    parallel: usize,
) -> anyhow::Result<()> {
    let results: Vec<anyhow::Result<()>> = futures::stream::iter(0..n)
        .map(|i| async move {
            let name = instance_name(i);
            match api.delete(&name, &DeleteParams::default()).await {
                Ok(_) => Ok(()),
                Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
                Err(e) => Err(anyhow::Error::new(e).context(name)),
            }
        })
        .buffer_unordered(parallel)
        .collect()
        .await;
    results.into_iter().collect()
}

/// Polls `check` every 250 ms until it holds; fails after `timeout`.
pub async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let started = Instant::now();
    loop {
        if check().await {
            return Ok(());
        }
        if started.elapsed() > timeout {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Sum of a counter family in Prometheus text (every series whose name is `name`).
pub fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Renders a duration flag value (`30s`).
pub fn secs_flag(d: Duration) -> String {
    format!("{}s", d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_a_family() {
        let text = "# TYPE controller_runtime_reconcile_total counter\ncontroller_runtime_reconcile_total{controller=\"c\",result=\"success\"} 3\ncontroller_runtime_reconcile_total{controller=\"c\",result=\"error\"} 2\ncontroller_runtime_reconcile_time_seconds_sum 9\n";
        assert_eq!(metric_sum(text, "controller_runtime_reconcile_total"), 5.0);
    }

    #[test]
    fn names_sort() {
        assert_eq!(instance_name(7), "cache-0007");
        assert!(instance_name(99) < instance_name(100));
    }
}
