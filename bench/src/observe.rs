//! What a run measures, each from outside the operator:
//!
//! * [`ProcSampler`]: RSS (`VmRSS`, `VmHWM`) and CPU (`utime + stime`) from `/proc`;
//! * [`TreeSampler`]: the emulator with its Redis engines (its child processes): RSS, engines
//!   running and CPU, including engines that already stopped;
//! * [`ApiserverMetrics`]: `apiserver_request_total` from the API server's `/metrics`;
//! * [`CallCollector`]: the emulator's call log (`GET /_emulator/calls`), by endpoint;
//! * [`Recorder`]: a watch on the CacheInstances and the operator's Secrets that counts every
//!   `resourceVersion` change, attributes it to field managers through `managedFields`, and
//!   records when each instance was first seen Ready.
//!
//! Every counter is kept per phase (`converge`, `settle`, `steady`, `delete`, ...).

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU32, Ordering},
    },
    time::{Duration, Instant},
};

use futures::StreamExt;
use kube::{
    Api, Client,
    api::{ApiResource, DynamicObject, GroupVersionKind},
    runtime::watcher,
};
use serde::Serialize;
use serde_json::Value;

use crate::stack::Emulator;

// ---------------------------------------------------------------------------------------------
// /proc

/// Every pid in `/proc`.
pub fn all_pids() -> Vec<u32> {
    std::fs::read_dir("/proc")
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// `(comm, ppid)` of a process.
pub fn comm_and_ppid(pid: u32) -> Option<(String, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat[open + 1..close].to_string();
    let rest: Vec<&str> = stat[close + 2..].split_whitespace().collect();
    Some((comm, rest.get(1)?.parse().ok()?))
}

/// CPU seconds (user + system) a process has used.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let close = stat.rfind(')')?;
    let fields: Vec<&str> = stat[close + 2..].split_whitespace().collect();
    // Fields after the command: state(0) ppid(1) ... utime(11) stime(12).
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / clock_ticks())
}

/// CPU seconds of a process and of its children that ended (`cutime + cstime`).
pub fn cpu_with_ended_children(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let close = stat.rfind(')')?;
    let f: Vec<&str> = stat[close + 2..].split_whitespace().collect();
    // utime(11) stime(12) cutime(13) cstime(14)
    let sum: f64 = (11..=14)
        .filter_map(|i| f.get(i)?.parse::<f64>().ok())
        .sum();
    Some(sum / clock_ticks())
}

/// CPU seconds of a process, its children that ended, and its children that still run.
pub fn tree_cpu_seconds(pid: u32) -> f64 {
    cpu_with_ended_children(pid).unwrap_or(0.0)
        + children(pid)
            .into_iter()
            .filter_map(cpu_seconds)
            .sum::<f64>()
}

/// The pids whose parent is `pid`.
pub fn children(pid: u32) -> Vec<u32> {
    all_pids()
        .into_iter()
        .filter(|p| comm_and_ppid(*p).is_some_and(|(_, ppid)| ppid == pid))
        .collect()
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no memory effects.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as f64 } else { 100.0 }
}

/// `(VmRSS, VmHWM)` in bytes.
pub fn rss(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kb * 1024)
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// Memory and CPU of one process (or a set of processes, summed) in one phase.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ProcPhase {
    /// Largest sampled `VmRSS`.
    pub peak_rss: u64,
    /// `VmHWM` at the end of the phase (peak since the process started).
    pub hwm: u64,
    /// `VmRSS` at the end of the phase.
    pub last_rss: u64,
    /// CPU seconds used during the phase (summed over restarts).
    pub cpu_s: f64,
    /// Most processes seen at once (for [`Pids::Tree`]: the process and its children).
    pub peak_procs: usize,
}

/// The processes a [`ProcSampler`] follows.
#[derive(Clone)]
pub enum Pids {
    /// One process that may be killed and restarted: its current pid, 0 while none runs.
    Restarting(Arc<AtomicU32>),
    /// A fixed set, whose RSS and CPU are added up (the control plane's processes).
    Fixed(Vec<u32>),
    /// One process with its children (the emulator and its Redis engines): RSS and CPU of all
    /// of them, including the CPU of children that already ended.
    Tree(u32),
}

impl Pids {
    /// The pids to sample, each with whether its CPU includes its ended children.
    fn current(&self) -> Vec<(u32, bool)> {
        match self {
            Pids::Restarting(pid) => {
                let pid = pid.load(Ordering::Relaxed);
                if pid == 0 {
                    Vec::new()
                } else {
                    vec![(pid, false)]
                }
            }
            Pids::Fixed(pids) => pids.iter().map(|p| (*p, false)).collect(),
            Pids::Tree(pid) => std::iter::once((*pid, true))
                .chain(children(*pid).into_iter().map(|c| (c, false)))
                .collect(),
        }
    }
}

#[derive(Default)]
struct ProcState {
    phases: BTreeMap<String, ProcPhase>,
    /// pid → CPU seconds at the last sample.
    last_cpu: HashMap<u32, f64>,
}

/// Samples a process (or a set of processes) every 200 ms.
#[derive(Clone)]
pub struct ProcSampler {
    pids: Pids,
    phase: Phase,
    state: Arc<Mutex<ProcState>>,
}

impl ProcSampler {
    pub fn start(pids: Pids, phase: Phase) -> Self {
        let this = Self {
            pids,
            phase,
            state: Arc::default(),
        };
        let sampler = this.clone();
        tokio::spawn(async move {
            loop {
                sampler.sample();
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        this
    }

    /// Takes one sample now (also called at phase changes).
    pub fn sample(&self) {
        let pids = self.pids.current();
        if pids.is_empty() {
            return;
        }
        let phase = self.phase.get();
        let mut st = self.state.lock().unwrap();
        let mut cpu_delta = 0.0;
        let (mut rss_sum, mut hwm_sum, mut seen) = (0, 0, false);
        let procs = pids.len();
        for (pid, with_ended_children) in pids {
            let cpu = if with_ended_children {
                cpu_with_ended_children(pid)
            } else {
                cpu_seconds(pid)
            };
            if let Some(cpu) = cpu {
                // A new process starts from zero CPU.
                let before = st.last_cpu.insert(pid, cpu).unwrap_or(0.0);
                cpu_delta += (cpu - before).max(0.0);
            }
            if let Some((rss, hwm)) = rss(pid) {
                rss_sum += rss;
                hwm_sum += hwm;
                seen = true;
            }
        }
        let entry = st.phases.entry(phase).or_default();
        entry.cpu_s += cpu_delta;
        entry.peak_procs = entry.peak_procs.max(procs);
        if seen {
            entry.peak_rss = entry.peak_rss.max(rss_sum);
            entry.hwm = hwm_sum;
            entry.last_rss = rss_sum;
        }
    }

    pub fn phases(&self) -> BTreeMap<String, ProcPhase> {
        self.sample();
        self.state.lock().unwrap().phases.clone()
    }
}

/// The emulator and its Redis engines in one phase.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TreePhase {
    /// Largest sampled `VmRSS` of the emulator process alone.
    pub peak_rss: u64,
    /// Largest sampled sum of `VmRSS` over the emulator and its engines.
    pub peak_total_rss: u64,
    /// Most engines running at once.
    pub peak_children: usize,
    /// At the end of the phase: the emulator's RSS, the total, the engines running.
    pub last_rss: u64,
    pub last_total_rss: u64,
    pub last_children: usize,
}

/// Samples a process and its children (the emulator's engines) every 200 ms.
#[derive(Clone)]
pub struct TreeSampler {
    pid: u32,
    phase: Phase,
    phases: Arc<Mutex<BTreeMap<String, TreePhase>>>,
}

impl TreeSampler {
    pub fn start(pid: u32, phase: Phase) -> Self {
        let this = Self {
            pid,
            phase,
            phases: Arc::default(),
        };
        let sampler = this.clone();
        tokio::spawn(async move {
            loop {
                sampler.sample();
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        this
    }

    pub fn sample(&self) {
        let Some((own, _)) = rss(self.pid) else {
            return;
        };
        let kids = children(self.pid);
        let total = own
            + kids
                .iter()
                .filter_map(|k| rss(*k))
                .map(|(r, _)| r)
                .sum::<u64>();
        let mut phases = self.phases.lock().unwrap();
        let p = phases.entry(self.phase.get()).or_default();
        p.peak_rss = p.peak_rss.max(own);
        p.peak_total_rss = p.peak_total_rss.max(total);
        p.peak_children = p.peak_children.max(kids.len());
        p.last_rss = own;
        p.last_total_rss = total;
        p.last_children = kids.len();
    }

    pub fn phases(&self) -> BTreeMap<String, TreePhase> {
        self.sample();
        self.phases.lock().unwrap().clone()
    }
}

// ---------------------------------------------------------------------------------------------
// Phases

/// The current phase, shared by every collector.
#[derive(Clone, Default)]
pub struct Phase(Arc<Mutex<String>>);

impl Phase {
    pub fn get(&self) -> String {
        self.0.lock().unwrap().clone()
    }
    pub fn set(&self, name: &str) {
        *self.0.lock().unwrap() = name.to_string();
    }
}

// ---------------------------------------------------------------------------------------------
// kube-apiserver /metrics

/// `apiserver_request_total` summed by `(verb, resource[/subresource])`.
pub type RequestCounts = BTreeMap<(String, String), f64>;

/// Reads `apiserver_request_total` for the resources the operator touches.
pub struct ApiserverMetrics {
    client: Client,
}

/// Resources whose requests are counted.
const COUNTED_RESOURCES: [&str; 4] = ["cacheinstances", "secrets", "events", "cachepolicies"];

impl ApiserverMetrics {
    pub fn new(client: Client) -> Self {
        Self { client }
    }

    pub async fn snapshot(&self) -> anyhow::Result<RequestCounts> {
        let request = http::Request::get("/metrics").body(Vec::new())?;
        let text = self.client.request_text(request).await?;
        Ok(parse_request_totals(&text))
    }
}

/// Parses the Prometheus text of `/metrics` into request counts.
pub fn parse_request_totals(text: &str) -> RequestCounts {
    let mut out = RequestCounts::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("apiserver_request_total{") else {
            continue;
        };
        let Some(close) = rest.rfind('}') else {
            continue;
        };
        let labels = parse_labels(&rest[..close]);
        let Ok(value) = rest[close + 1..].trim().parse::<f64>() else {
            continue;
        };
        let resource = labels.get("resource").cloned().unwrap_or_default();
        if !COUNTED_RESOURCES.contains(&resource.as_str()) {
            continue;
        }
        let sub = labels.get("subresource").cloned().unwrap_or_default();
        let what = if sub.is_empty() {
            resource
        } else {
            format!("{resource}/{sub}")
        };
        let verb = labels.get("verb").cloned().unwrap_or_default();
        *out.entry((verb, what)).or_default() += value;
    }
    out
}

fn parse_labels(s: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut rest = s;
    while let Some(eq) = rest.find("=\"") {
        let key = rest[..eq].trim_start_matches(',').trim().to_string();
        let after = &rest[eq + 2..];
        let mut end = 0;
        let bytes = after.as_bytes();
        while end < bytes.len() {
            if bytes[end] == b'\\' {
                end += 2;
                continue;
            }
            if bytes[end] == b'"' {
                break;
            }
            end += 1;
        }
        out.insert(key, after[..end.min(after.len())].to_string());
        rest = &after[(end + 1).min(after.len())..];
    }
    out
}

/// `after - before`, dropping zero rows.
pub fn diff_counts(before: &RequestCounts, after: &RequestCounts) -> RequestCounts {
    after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0.0)))
        .filter(|(_, v)| *v > 0.0)
        .collect()
}

/// Whether a verb writes.
pub fn is_mutating(verb: &str) -> bool {
    matches!(
        verb,
        "POST" | "PUT" | "PATCH" | "APPLY" | "DELETE" | "DELETECOLLECTION" | "CREATE" | "UPDATE"
    )
}

// ---------------------------------------------------------------------------------------------
// The emulator's call log

/// Upstash calls in one phase.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CallPhase {
    /// Developer API calls by operation.
    pub by_endpoint: BTreeMap<String, u64>,
    /// Developer API calls by method.
    pub by_method: BTreeMap<String, u64>,
    /// Developer API answers by status class (`2xx`, `4xx`, `5xx`, `0` = none sent).
    pub by_status: BTreeMap<String, u64>,
    /// Calls a fault rule applied to.
    pub faulted: u64,
    /// Data-plane requests (the monitor's probes).
    pub data_plane: u64,
    /// Developer API calls that change something (not GET).
    pub mutating: u64,
    /// `create` calls that were performed (a database came out of them).
    pub creates_performed: u64,
    /// Databases read (`get` answered 2xx) at least once in the phase.
    #[serde(skip)]
    pub read_ids: HashSet<String>,
}

#[derive(Default)]
struct CallState {
    since: u64,
    phases: BTreeMap<String, CallPhase>,
    /// Every Developer API entry read, when asked to keep them.
    raw: Option<Vec<Value>>,
    /// Databases whose usage was read (`stats` answered 2xx: a monitoring sample) so far.
    sampled: HashSet<String>,
}

/// Follows the emulator's call log every second.
#[derive(Clone)]
pub struct CallCollector {
    emulator: Arc<Emulator>,
    phase: Phase,
    state: Arc<tokio::sync::Mutex<CallState>>,
}

impl CallCollector {
    pub fn start(emulator: Arc<Emulator>, phase: Phase) -> Self {
        let this = Self {
            emulator,
            phase,
            state: Arc::default(),
        };
        let poller = this.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                if let Err(e) = poller.collect().await {
                    eprintln!("bench: reading the call log: {e:#}");
                }
            }
        });
        this
    }

    /// Reads new entries and books them on the current phase.
    pub async fn collect(&self) -> anyhow::Result<()> {
        let mut guard = self.state.lock().await;
        let st = &mut *guard;
        let calls = self.emulator.calls_since(st.since).await?;
        let phase = self.phase.get();
        let raw = &mut st.raw;
        let entry = st.phases.entry(phase.clone()).or_default();
        let mut last = None;
        for c in &calls {
            last = c["seq"].as_u64().or(last);
            if c["plane"] != "api" {
                entry.data_plane += 1;
                continue;
            }
            if let Some(raw) = raw.as_mut().filter(|_| !phase.is_empty()) {
                let mut c = c.clone();
                c["phase"] = Value::String(phase.clone());
                raw.push(c);
            }
            let endpoint = c["endpoint"].as_str().unwrap_or("?").to_string();
            let method = c["method"].as_str().unwrap_or("?").to_string();
            let status = c["status"].as_u64().unwrap_or(0);
            let class = if status == 0 {
                "none".to_string()
            } else {
                format!("{}xx", status / 100)
            };
            if method != "GET" {
                entry.mutating += 1;
            }
            if c["fault"].is_u64() {
                entry.faulted += 1;
            }
            if endpoint == "create" && c["database_id"].is_string() {
                entry.creates_performed += 1;
            }
            if endpoint == "get"
                && (200..300).contains(&status)
                && let Some(id) = c["database_id"].as_str()
            {
                entry.read_ids.insert(id.to_string());
            }
            if endpoint == "stats"
                && (200..300).contains(&status)
                && let Some(id) = c["database_id"].as_str()
            {
                st.sampled.insert(id.to_string());
            }
            *entry.by_endpoint.entry(endpoint).or_default() += 1;
            *entry.by_method.entry(method).or_default() += 1;
            *entry.by_status.entry(class).or_default() += 1;
        }
        if let Some(seq) = last {
            st.since = seq;
        }
        Ok(())
    }

    pub async fn phases(&self) -> BTreeMap<String, CallPhase> {
        let _ = self.collect().await;
        self.state.lock().await.phases.clone()
    }

    /// Keeps every Developer API entry from now on (for [`CallCollector::raw`]).
    pub async fn keep_raw(&self) {
        self.state.lock().await.raw.get_or_insert_with(Vec::new);
    }

    /// The Developer API entries kept since [`CallCollector::keep_raw`], each with its phase.
    pub async fn raw(&self) -> Vec<Value> {
        let _ = self.collect().await;
        self.state.lock().await.raw.clone().unwrap_or_default()
    }

    /// How many distinct databases the monitor sampled (`stats`, 2xx) so far, in any phase.
    pub async fn databases_sampled(&self) -> usize {
        let _ = self.collect().await;
        self.state.lock().await.sampled.len()
    }

    /// How many of the databases `ids` were read (`get`, 2xx) in `phase` so far.
    pub async fn databases_read_of(&self, phase: &str, ids: &HashSet<String>) -> usize {
        let _ = self.collect().await;
        self.state
            .lock()
            .await
            .phases
            .get(phase)
            .map_or(0, |p| p.read_ids.intersection(ids).count())
    }

    /// How many distinct databases were read (`get`, 2xx) in `phase` so far.
    pub async fn databases_read(&self, phase: &str) -> usize {
        let _ = self.collect().await;
        self.state
            .lock()
            .await
            .phases
            .get(phase)
            .map_or(0, |p| p.read_ids.len())
    }
}

// ---------------------------------------------------------------------------------------------
// Watching the objects

/// The CacheInstance resource.
pub fn cache_instance_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("cache.upstash-operator.dev", "v1alpha1", "CacheInstance"),
        "cacheinstances",
    )
}

/// The Secret resource.
pub fn secret_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("", "v1", "Secret"), "secrets")
}

/// What the watch knows about one object.
#[derive(Debug, Clone, Default)]
struct Seen {
    rv: String,
    /// `(manager, operation, subresource)` → time of its last write.
    managers: BTreeMap<(String, String, String), String>,
    ready: bool,
    healthy: bool,
    first_ready: Option<Duration>,
    created: Option<Duration>,
}

/// Object changes seen by the watch in one phase.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ChangePhase {
    /// `kind` → `manager` → number of new resourceVersions.
    pub by_manager: BTreeMap<String, BTreeMap<String, u64>>,
    /// `kind` → creations / updates / deletions.
    pub created: BTreeMap<String, u64>,
    pub updated: BTreeMap<String, u64>,
    pub deleted: BTreeMap<String, u64>,
}

#[derive(Default)]
struct RecState {
    objects: HashMap<(String, String), Seen>,
    phases: BTreeMap<String, ChangePhase>,
    ready: usize,
    healthy: usize,
    instances: usize,
    /// The operator's Secrets (labelled as managed by it).
    secrets: usize,
    /// When the last resourceVersion change happened.
    last_change: Option<Instant>,
}

/// Watches CacheInstances and the operator's Secrets in one namespace.
#[derive(Clone)]
pub struct Recorder {
    start: Instant,
    phase: Phase,
    state: Arc<Mutex<RecState>>,
}

/// Field managers whose writes count as the operator's.
pub const OPERATOR_MANAGERS: [&str; 2] = ["upstash-operator", "upstash-operator/monitor"];

impl Recorder {
    pub async fn start(
        client: Client,
        namespace: &str,
        start: Instant,
        phase: Phase,
    ) -> anyhow::Result<Self> {
        let this = Self {
            start,
            phase,
            state: Arc::default(),
        };
        let instances: Api<DynamicObject> =
            Api::namespaced_with(client.clone(), namespace, &cache_instance_resource());
        let secrets: Api<DynamicObject> =
            Api::namespaced_with(client, namespace, &secret_resource());
        let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(2);
        for (kind, api, config) in [
            ("CacheInstance", instances, watcher::Config::default()),
            (
                "Secret",
                secrets,
                watcher::Config::default().labels("app.kubernetes.io/managed-by=upstash-operator"),
            ),
        ] {
            let rec = this.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut stream = watcher(api, config).boxed();
                let mut told = false;
                while let Some(event) = stream.next().await {
                    match event {
                        Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) => {
                            rec.apply(kind, &o)
                        }
                        Ok(watcher::Event::Delete(o)) => rec.delete(kind, &o),
                        Ok(watcher::Event::InitDone) if !told => {
                            told = true;
                            let _ = tx.send(()).await;
                        }
                        Ok(_) => {}
                        Err(e) => eprintln!("bench: {kind} watch: {e}"),
                    }
                }
            });
        }
        // Both watches have their initial list.
        for _ in 0..2 {
            rx.recv().await;
        }
        Ok(this)
    }

    /// Records when the bench created an instance.
    pub fn created(&self, name: &str) {
        let at = self.start.elapsed();
        let mut st = self.state.lock().unwrap();
        let seen = st
            .objects
            .entry(("CacheInstance".into(), name.into()))
            .or_default();
        seen.created.get_or_insert(at);
    }

    fn apply(&self, kind: &str, obj: &DynamicObject) {
        let name = obj.metadata.name.clone().unwrap_or_default();
        let rv = obj.metadata.resource_version.clone().unwrap_or_default();
        let managers: BTreeMap<(String, String, String), String> = obj
            .metadata
            .managed_fields
            .iter()
            .flatten()
            .map(|m| {
                (
                    (
                        m.manager.clone().unwrap_or_default(),
                        m.operation.clone().unwrap_or_default(),
                        m.subresource.clone().unwrap_or_default(),
                    ),
                    m.time.as_ref().map(|t| t.0.to_string()).unwrap_or_default(),
                )
            })
            .collect();
        let (ready, healthy) = if kind == "CacheInstance" {
            (
                condition(&obj.data, "Ready") == Some("True"),
                condition(&obj.data, "Healthy").is_some(),
            )
        } else {
            (false, false)
        };
        let phase = self.phase.get();
        let at = self.start.elapsed();
        let mut st = self.state.lock().unwrap();
        let key = (kind.to_string(), name);
        let existed = st.objects.get(&key).is_some_and(|s| !s.rv.is_empty());
        let seen = st.objects.entry(key).or_default();
        if seen.rv == rv {
            return; // a relist
        }
        // Who wrote: managers whose entry is new or has a new time; else the latest one.
        let mut writers: Vec<String> = managers
            .iter()
            .filter(|(k, t)| seen.managers.get(*k) != Some(*t))
            .map(|((m, _, _), _)| m.clone())
            .collect();
        if writers.is_empty() {
            let latest = managers.values().max().cloned().unwrap_or_default();
            writers = managers
                .iter()
                .filter(|(_, t)| **t == latest)
                .map(|((m, _, _), _)| m.clone())
                .collect();
        }
        writers.sort();
        writers.dedup();
        if std::env::var_os("BENCH_DEBUG_WATCH").is_some() {
            eprintln!(
                "watch {kind} {} rv {rv} -> {writers:?} status {}",
                key_name(obj),
                obj.data
                    .get("status")
                    .map(|s| s.to_string())
                    .unwrap_or_default()
            );
        }
        let writer = if writers.is_empty() {
            "unknown".to_string()
        } else {
            writers.join("+")
        };
        let was_ready = seen.ready;
        let was_healthy = seen.healthy;
        seen.rv = rv;
        seen.managers = managers;
        seen.ready = ready;
        seen.healthy = healthy;
        if ready && seen.first_ready.is_none() {
            seen.first_ready = Some(at);
        }
        if kind == "Secret" && !existed {
            st.secrets += 1;
        }
        if kind == "CacheInstance" {
            if !existed {
                st.instances += 1;
            }
            st.ready = st.ready + usize::from(ready) - usize::from(was_ready);
            st.healthy = st.healthy + usize::from(healthy) - usize::from(was_healthy);
        }
        st.last_change = Some(Instant::now());
        let p = st.phases.entry(phase).or_default();
        if existed {
            *p.updated.entry(kind.to_string()).or_default() += 1;
        } else {
            *p.created.entry(kind.to_string()).or_default() += 1;
        }
        *p.by_manager
            .entry(kind.to_string())
            .or_default()
            .entry(writer)
            .or_default() += 1;
    }

    fn delete(&self, kind: &str, obj: &DynamicObject) {
        let name = obj.metadata.name.clone().unwrap_or_default();
        let phase = self.phase.get();
        let mut st = self.state.lock().unwrap();
        match st.objects.remove(&(kind.to_string(), name)) {
            Some(seen) if kind == "CacheInstance" => {
                st.instances -= 1;
                st.ready -= usize::from(seen.ready);
                st.healthy -= usize::from(seen.healthy);
            }
            Some(seen) if kind == "Secret" && !seen.rv.is_empty() => st.secrets -= 1,
            _ => {}
        }
        st.last_change = Some(Instant::now());
        *st.phases
            .entry(phase)
            .or_default()
            .deleted
            .entry(kind.to_string())
            .or_default() += 1;
    }

    /// `(instances, ready, healthy)` as last seen.
    pub fn counts(&self) -> (usize, usize, usize) {
        let st = self.state.lock().unwrap();
        (st.instances, st.ready, st.healthy)
    }

    /// The operator's Secrets as last seen.
    pub fn secrets(&self) -> usize {
        self.state.lock().unwrap().secrets
    }

    /// Time since the last change of any watched object.
    pub fn quiet_for(&self) -> Duration {
        self.state
            .lock()
            .unwrap()
            .last_change
            .map_or(Duration::MAX, |t| t.elapsed())
    }

    /// Creation-to-first-Ready of the instances `names` that have both, in seconds.
    pub fn ready_latencies_of(&self, names: &[String]) -> Vec<f64> {
        let st = self.state.lock().unwrap();
        names
            .iter()
            .filter_map(|name| st.objects.get(&("CacheInstance".to_string(), name.clone())))
            .filter_map(|s| Some((s.first_ready? - s.created?).as_secs_f64()))
            .collect()
    }

    /// Creation-to-first-Ready of every instance that has both, in seconds.
    pub fn ready_latencies(&self) -> Vec<f64> {
        let st = self.state.lock().unwrap();
        st.objects
            .iter()
            .filter(|((k, _), _)| k == "CacheInstance")
            .filter_map(|(_, s)| Some((s.first_ready? - s.created?).as_secs_f64()))
            .collect()
    }

    /// The `k` instances that took longest from creation to Ready: `(name, created, Ready)`
    /// in seconds from the run's start.
    pub fn slowest(&self, k: usize) -> Vec<(String, f64, f64)> {
        let st = self.state.lock().unwrap();
        let mut all: Vec<(String, f64, f64)> = st
            .objects
            .iter()
            .filter(|((kind, _), _)| kind == "CacheInstance")
            .filter_map(|((_, name), s)| {
                Some((
                    name.clone(),
                    s.created?.as_secs_f64(),
                    s.first_ready?.as_secs_f64(),
                ))
            })
            .collect();
        all.sort_by(|a, b| (b.2 - b.1).total_cmp(&(a.2 - a.1)));
        all.truncate(k);
        all
    }

    /// The latest first-Ready time, from the run's start.
    pub fn last_first_ready(&self) -> Option<Duration> {
        let st = self.state.lock().unwrap();
        st.objects
            .iter()
            .filter(|((k, _), _)| k == "CacheInstance")
            .filter_map(|(_, s)| s.first_ready)
            .max()
    }

    pub fn phases(&self) -> BTreeMap<String, ChangePhase> {
        self.state.lock().unwrap().phases.clone()
    }
}

fn key_name(obj: &DynamicObject) -> String {
    obj.metadata.name.clone().unwrap_or_default()
}

/// Status of condition `type_` in `status.conditions`.
fn condition<'a>(data: &'a Value, type_: &str) -> Option<&'a str> {
    data.pointer("/status/conditions")?
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)?
        .get("status")?
        .as_str()
}

// ---------------------------------------------------------------------------------------------
// Events

/// Events about CacheInstances in one phase.
#[derive(Debug, Clone, Default, Serialize)]
pub struct EventPhase {
    /// Reason → times it was emitted (a repeat the operator folds into an Event's series
    /// counts as one more).
    pub by_reason: BTreeMap<String, u64>,
    /// Event objects created.
    pub objects: u64,
}

#[derive(Default)]
struct EventState {
    /// Event name → emissions seen so far.
    seen: HashMap<String, u64>,
    phases: BTreeMap<String, EventPhase>,
}

/// Watches the `events.k8s.io/v1` Events of one namespace and counts those about
/// CacheInstances by reason.
#[derive(Clone)]
pub struct EventCounter {
    phase: Phase,
    state: Arc<Mutex<EventState>>,
}

impl EventCounter {
    pub fn start(client: Client, namespace: &str, phase: Phase) -> Self {
        let this = Self {
            phase,
            state: Arc::default(),
        };
        let api: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client, namespace);
        let counter = this.clone();
        tokio::spawn(async move {
            let mut stream = watcher(api, watcher::Config::default()).boxed();
            while let Some(event) = stream.next().await {
                match event {
                    Ok(watcher::Event::Apply(e) | watcher::Event::InitApply(e)) => {
                        counter.apply(&e)
                    }
                    Ok(_) => {}
                    Err(e) => eprintln!("bench: Event watch: {e}"),
                }
            }
        });
        this
    }

    fn apply(&self, e: &k8s_openapi::api::events::v1::Event) {
        if e.regarding.as_ref().and_then(|r| r.kind.as_deref()) != Some("CacheInstance") {
            return;
        }
        let name = e.metadata.name.clone().unwrap_or_default();
        let emitted = e
            .series
            .as_ref()
            .map_or(1, |s| u64::try_from(s.count).unwrap_or(1))
            .max(1);
        let reason = e.reason.clone().unwrap_or_default();
        let phase = self.phase.get();
        let mut st = self.state.lock().unwrap();
        let before = st.seen.insert(name, emitted);
        let delta = emitted.saturating_sub(before.unwrap_or(0));
        let p = st.phases.entry(phase).or_default();
        if before.is_none() {
            p.objects += 1;
        }
        if delta > 0 {
            *p.by_reason.entry(reason).or_default() += delta;
        }
    }

    pub fn phases(&self) -> BTreeMap<String, EventPhase> {
        self.state.lock().unwrap().phases.clone()
    }
}

// ---------------------------------------------------------------------------------------------
// All collectors together

/// The collectors of one run, switched between phases together.
pub struct Observers {
    pub phase: Phase,
    /// The operator's process (across restarts).
    pub operator: ProcSampler,
    /// The emulator's process with its Redis engines.
    pub emulator: ProcSampler,
    /// The control plane: etcd and kube-apiserver (one testenv process) and
    /// kube-controller-manager.
    pub control_plane: ProcSampler,
    pub calls: CallCollector,
    pub events: EventCounter,
    pub apiserver: ApiserverMetrics,
    /// Phase → API server request counts during it.
    pub requests: BTreeMap<String, RequestCounts>,
    /// Phase → wall-clock seconds.
    pub durations: BTreeMap<String, f64>,
    current: Option<PhaseMark>,
}

struct PhaseMark {
    name: String,
    started: Instant,
    requests: RequestCounts,
}

impl Observers {
    /// Observers of one run: the processes of the operator, the emulator and the control
    /// plane, the emulator's call log, the namespace's Events and the API server's request
    /// counters.
    pub fn attach(
        phase: Phase,
        operator: &crate::stack::Operator,
        emulator: Arc<Emulator>,
        client: Client,
        namespace: &str,
    ) -> Self {
        Self {
            operator: ProcSampler::start(Pids::Restarting(operator.pid_handle()), phase.clone()),
            emulator: ProcSampler::start(Pids::Tree(emulator.pid()), phase.clone()),
            control_plane: ProcSampler::start(
                Pids::Fixed(crate::stack::control_plane_pids()),
                phase.clone(),
            ),
            calls: CallCollector::start(emulator, phase.clone()),
            events: EventCounter::start(client.clone(), namespace, phase.clone()),
            apiserver: ApiserverMetrics::new(client),
            phase,
            requests: BTreeMap::new(),
            durations: BTreeMap::new(),
            current: None,
        }
    }

    /// Ends the current phase (if any) and starts `name` (`None`: just end).
    pub async fn enter(&mut self, name: Option<&str>) -> anyhow::Result<()> {
        // Book what happened so far on the phase that is ending.
        let _ = self.calls.collect().await;
        for sampler in [&self.operator, &self.emulator, &self.control_plane] {
            sampler.sample();
        }
        let requests = self.apiserver.snapshot().await?;
        if let Some(mark) = self.current.take() {
            self.durations
                .insert(mark.name.clone(), mark.started.elapsed().as_secs_f64());
            self.requests
                .insert(mark.name, diff_counts(&mark.requests, &requests));
        }
        if let Some(name) = name {
            self.phase.set(name);
            self.current = Some(PhaseMark {
                name: name.to_string(),
                started: Instant::now(),
                requests,
            });
        } else {
            self.phase.set("after");
        }
        Ok(())
    }

    /// Memory and CPU per phase of the three processes.
    pub fn processes(&self) -> Processes {
        Processes {
            operator: self.operator.phases(),
            emulator: self.emulator.phases(),
            control_plane: self.control_plane.phases(),
        }
    }
}

/// Memory and CPU per phase of the operator, the emulator and the control plane.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Processes {
    pub operator: BTreeMap<String, ProcPhase>,
    pub emulator: BTreeMap<String, ProcPhase>,
    pub control_plane: BTreeMap<String, ProcPhase>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_request_totals() {
        let text = r#"# HELP apiserver_request_total x
apiserver_request_total{code="201",component="apiserver",dry_run="",group="cache.upstash-operator.dev",resource="cacheinstances",scope="resource",subresource="",verb="POST",version="v1alpha1"} 5
apiserver_request_total{code="200",component="apiserver",dry_run="",group="cache.upstash-operator.dev",resource="cacheinstances",scope="resource",subresource="status",verb="APPLY",version="v1alpha1"} 7
apiserver_request_total{code="200",component="apiserver",dry_run="",group="",resource="secrets",scope="resource",subresource="",verb="APPLY",version="v1"} 2
apiserver_request_total{code="409",component="apiserver",dry_run="",group="",resource="secrets",scope="resource",subresource="",verb="APPLY",version="v1"} 1
apiserver_request_total{code="200",component="apiserver",dry_run="",group="",resource="pods",scope="resource",subresource="",verb="GET",version="v1"} 9
"#;
        let counts = parse_request_totals(text);
        assert_eq!(counts[&("POST".into(), "cacheinstances".into())], 5.0);
        assert_eq!(
            counts[&("APPLY".into(), "cacheinstances/status".into())],
            7.0
        );
        assert_eq!(counts[&("APPLY".into(), "secrets".into())], 3.0);
        assert_eq!(counts.len(), 3);
        let later = parse_request_totals(&text.replace("} 5", "} 8"));
        let d = diff_counts(&counts, &later);
        assert_eq!(d.len(), 1);
        assert_eq!(d[&("POST".into(), "cacheinstances".into())], 3.0);
    }

    #[test]
    fn labels_with_escapes() {
        let l = parse_labels(r#"a="x",b="y\"z",c="""#);
        assert_eq!(l["a"], "x");
        assert_eq!(l["b"], r#"y\"z"#);
        assert_eq!(l["c"], "");
    }

    #[test]
    fn reads_own_process() {
        let me = std::process::id();
        assert!(cpu_seconds(me).is_some());
        let (rss, hwm) = rss(me).unwrap();
        assert!(rss > 0 && hwm >= rss);
        assert!(comm_and_ppid(me).is_some());
    }
}
