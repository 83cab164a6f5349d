//! Steps the scenarios share: CRDs, instances, waits, operator metrics.

use std::{
    collections::BTreeMap,
    future::Future,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use futures::StreamExt;
use k8s_openapi::{
    api::core::v1::Namespace,
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api, Client,
    api::{
        ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams,
    },
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
            // The deletion protection policy of crds/ is not needed here.
            if doc.is_null() || doc["kind"] != "CustomResourceDefinition" {
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

/// Label that assigns an instance to one of the bench's CachePolicies.
pub const GROUP_LABEL: &str = "bench.upstash-operator.dev/group";

/// The smallest useful CacheInstance (the sample `cacheinstance-minimal.yaml`); with
/// `policies > 0`, labelled into one of that many groups, each selected by one CachePolicy.
pub fn instance_manifest(name: &str, i: usize, policies: usize) -> DynamicObject {
    let mut labels = serde_json::Map::new();
    if policies > 0 {
        labels.insert(GROUP_LABEL.into(), json!((i % policies).to_string()));
    }
    serde_json::from_value(json!({
        "apiVersion": "cache.upstash-operator.dev/v1alpha1",
        "kind": "CacheInstance",
        "metadata": {"name": name, "labels": labels},
        "spec": {"primaryRegion": "us-east-1"},
    }))
    .expect("a valid CacheInstance")
}

/// CachePolicy `k` of `namespace`: the guide's thresholds (the sample
/// `cachepolicy-production.yaml` without guardrails) for the instances of group `k`.
pub fn policy_manifest(k: usize) -> DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": "cache.upstash-operator.dev/v1alpha1",
        "kind": "CachePolicy",
        "metadata": {"name": format!("bench-policy-{k}")},
        "spec": {
            "selector": {"matchLabels": {GROUP_LABEL: k.to_string()}},
            "hitRate": {"warningBelow": 70, "target": 80},
            "memory": {"warningAbove": 80},
            "errorRate": {"warningAbove": 1},
            "latency": {"p95WarningAboveMs": 50},
            "budget": {"warningAbovePercent": 80},
            "connectionFailures": {"warningAfter": 3},
            "evaluationInterval": "60s",
        },
    }))
    .expect("a valid CachePolicy")
}

/// Creates `k` CachePolicies in `namespace` (see [`policy_manifest`]).
pub async fn create_policies(client: &Client, namespace: &str, k: usize) -> anyhow::Result<()> {
    let resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("cache.upstash-operator.dev", "v1alpha1", "CachePolicy"),
        "cachepolicies",
    );
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &resource);
    let params = PostParams {
        field_manager: Some(BENCH_MANAGER.into()),
        ..Default::default()
    };
    for k in 0..k {
        api.create(&params, &policy_manifest(k))
            .await
            .with_context(|| format!("creating CachePolicy bench-policy-{k}"))?;
    }
    Ok(())
}

/// The CacheInstances of `namespace`.
pub fn instances_api(client: &Client, namespace: &str) -> Api<DynamicObject> {
    Api::namespaced_with(client.clone(), namespace, &cache_instance_resource())
}

/// Creates `n` instances, `parallel` POSTs at a time, noting each creation in `recorder`;
/// labelled into `policies` groups (see [`instance_manifest`]).
pub async fn create_instances(
    api: &Api<DynamicObject>,
    n: usize,
    parallel: usize,
    policies: usize,
    recorder: &Recorder,
) -> anyhow::Result<()> {
    create_instance_range(api, 0..n, parallel, policies, recorder).await
}

/// Creates the instances numbered `range` (see [`instance_name`]), `parallel` POSTs at a time.
pub async fn create_instance_range(
    api: &Api<DynamicObject>,
    range: std::ops::Range<usize>,
    parallel: usize,
    policies: usize,
    recorder: &Recorder,
) -> anyhow::Result<()> {
    let results: Vec<anyhow::Result<()>> = futures::stream::iter(range)
        .map(|i| async move {
            let name = instance_name(i);
            let obj = instance_manifest(&name, i, policies);
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

/// Deletes namespace `name` and waits until it is gone (everything in it deleted), at most
/// `timeout`; a namespace still there afterwards is reported, not fatal.
pub async fn delete_namespace(client: &Client, name: &str, timeout: Duration) {
    let api: Api<Namespace> = Api::all(client.clone());
    let started = Instant::now();
    if let Err(e) = api.delete(name, &DeleteParams::background()).await {
        eprintln!("bench: deleting namespace {name}: {e}");
        return;
    }
    let gone = wait_until(&format!("namespace {name} to be deleted"), timeout, || {
        let api = api.clone();
        let name = name.to_string();
        async move { matches!(api.get_opt(&name).await, Ok(None)) }
    })
    .await;
    match gone {
        Ok(()) => eprintln!(
            "bench: namespace {name} deleted in {:.1}s",
            started.elapsed().as_secs_f64()
        ),
        Err(e) => eprintln!("bench: {e:#}"),
    }
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

/// Every sample of Prometheus text, by series (`name{labels}`).
pub type Series = BTreeMap<String, f64>;

/// Parses Prometheus text into its samples (comments and malformed lines skipped).
pub fn parse_series(text: &str) -> Series {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (key, value) = l.rsplit_once(' ')?;
            Some((key.to_string(), value.parse::<f64>().ok()?))
        })
        .collect()
}

/// Counters of an operator that is killed and restarted: what its dead processes reported
/// last, plus the running one's current values. Every counter (and histogram bucket) of a
/// new process starts at zero, so the sums are the totals of the run.
#[derive(Debug, Clone, Default)]
pub struct OperatorCounters {
    dead: Series,
}

impl OperatorCounters {
    /// Adds the last scrape of a process that is about to end.
    pub fn retire(&mut self, last: &Series) {
        for (k, v) in last {
            *self.dead.entry(k.clone()).or_default() += v;
        }
    }

    /// The run's totals with `current` as the running process's values.
    pub fn totals(&self, current: &Series) -> Series {
        let mut out = self.dead.clone();
        for (k, v) in current {
            *out.entry(k.clone()).or_default() += v;
        }
        out
    }
}

/// `after - before` for every series.
pub fn series_diff(before: &Series, after: &Series) -> Series {
    after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0.0)))
        .collect()
}

/// Sum of every series of family `name` (`name` alone or `name{...}`).
pub fn series_sum(series: &Series, name: &str) -> f64 {
    series
        .iter()
        .filter(|(k, _)| {
            k.strip_prefix(name)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('{'))
        })
        .map(|(_, v)| v)
        .sum()
}

/// The buckets of histogram `name` as `(upper bound, cumulative count)`, summed over label
/// sets, sorted by bound (`+Inf` last).
pub fn histogram_buckets(series: &Series, name: &str) -> Vec<(f64, f64)> {
    let prefix = format!("{name}_bucket{{");
    let mut buckets: BTreeMap<u64, (f64, f64)> = BTreeMap::new();
    for (k, v) in series {
        let Some(labels) = k.strip_prefix(&prefix) else {
            continue;
        };
        let Some(le) = labels
            .split(',')
            .find_map(|l| l.trim_end_matches('}').strip_prefix("le=\""))
            .map(|l| l.trim_end_matches('"'))
        else {
            continue;
        };
        let bound = if le == "+Inf" {
            f64::INFINITY
        } else {
            match le.parse::<f64>() {
                Ok(b) => b,
                Err(_) => continue,
            }
        };
        let e = buckets.entry(bound.to_bits()).or_insert((bound, 0.0));
        e.1 += v;
    }
    let mut out: Vec<(f64, f64)> = buckets.into_values().collect();
    out.sort_by(|a, b| a.0.total_cmp(&b.0));
    out
}

/// The upper bound of the bucket holding the `p`-th percentile (0–100) of a histogram given
/// by [`histogram_buckets`]; `None` without observations.
pub fn histogram_percentile(buckets: &[(f64, f64)], p: f64) -> Option<f64> {
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = (p / 100.0 * total).ceil().max(1.0);
    buckets.iter().find(|(_, c)| *c >= rank).map(|(b, _)| *b)
}

/// Renders a duration flag value (`30s`).
pub fn secs_flag(d: Duration) -> String {
    format!("{}s", d.as_secs())
}

/// The finalizer the operator puts on a credentials Secret while CacheInstances use it.
pub const CREDENTIALS_IN_USE_FINALIZER: &str = "cache.upstash-operator.dev/credentials-in-use";

/// Waits until the namespace's credentials Secret no longer carries the operator's in-use
/// finalizer (its last CacheInstance is gone, so the operator releases it); returns how long
/// that took. Part of "nothing left": a Secret still claimed would hold its namespace's
/// deletion once the operator is stopped.
pub async fn credentials_released(
    client: &Client,
    namespace: &str,
    timeout: Duration,
) -> anyhow::Result<f64> {
    let api: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(client.clone(), namespace);
    let started = Instant::now();
    wait_until("the credentials Secret to be released", timeout, || {
        let api = api.clone();
        async move {
            api.get_opt(testkit::operator::CREDENTIALS_SECRET)
                .await
                .ok()
                .flatten()
                .is_none_or(|s| {
                    !s.metadata
                        .finalizers
                        .unwrap_or_default()
                        .iter()
                        .any(|f| f == CREDENTIALS_IN_USE_FINALIZER)
                })
        }
    })
    .await?;
    Ok(started.elapsed().as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_add_up_over_restarts() {
        let first = parse_series(
            "# TYPE x counter\nx_total 3\nh_bucket{controller=\"c\",le=\"2.0\"} 1\nh_bucket{controller=\"c\",le=\"+Inf\"} 2\n",
        );
        let mut counters = OperatorCounters::default();
        counters.retire(&first);
        let second = parse_series(
            "x_total 4\nh_bucket{controller=\"c\",le=\"2.0\"} 0\nh_bucket{controller=\"c\",le=\"+Inf\"} 1\n",
        );
        let totals = counters.totals(&second);
        assert_eq!(series_sum(&totals, "x_total"), 7.0);
        assert_eq!(
            histogram_buckets(&totals, "h"),
            vec![(2.0, 1.0), (f64::INFINITY, 3.0)]
        );
        let d = series_diff(&first, &totals);
        assert_eq!(series_sum(&d, "x_total"), 4.0);
    }

    #[test]
    fn histogram_percentiles_are_bucket_bounds() {
        let b = vec![(1.0, 2.0), (2.0, 5.0), (4.0, 9.0), (f64::INFINITY, 10.0)];
        assert_eq!(histogram_percentile(&b, 10.0), Some(1.0));
        assert_eq!(histogram_percentile(&b, 50.0), Some(2.0));
        assert_eq!(histogram_percentile(&b, 90.0), Some(4.0));
        assert_eq!(histogram_percentile(&b, 100.0), Some(f64::INFINITY));
        assert_eq!(histogram_percentile(&[(1.0, 0.0)], 50.0), None);
    }

    #[test]
    fn instances_are_grouped_for_the_policies() {
        let labels = |i, k| {
            instance_manifest("x", i, k)
                .metadata
                .labels
                .unwrap_or_default()
        };
        assert!(labels(3, 0).is_empty());
        assert_eq!(labels(13, 10)[GROUP_LABEL], "3");
        let policy = policy_manifest(3);
        assert_eq!(
            policy.data["spec"]["selector"]["matchLabels"][GROUP_LABEL],
            "3"
        );
    }

    #[test]
    fn names_sort() {
        assert_eq!(instance_name(7), "cache-0007");
        assert!(instance_name(99) < instance_name(100));
    }
}
