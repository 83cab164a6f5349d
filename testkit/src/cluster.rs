//! Starting (or finding) the control plane that a test process shares.

use std::env;
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use kube::config::{AuthInfo, KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use serde::Deserialize;
use tokio::sync::OnceCell;

use crate::namespace::TestNamespace;

/// How long to wait for testenv's ready line. A cold start on 2 cores takes 10–30 s.
const READY_TIMEOUT: Duration = Duration::from_secs(240);

/// The Kubernetes control plane the tests of one process share.
pub struct Cluster {
    kubeconfig: Kubeconfig,
    kubeconfig_path: PathBuf,
    server: String,
    version: String,
    /// The testenv child, kept for the life of the process: when the test process exits,
    /// the pipe to testenv's stdin closes and testenv shuts down and removes its files.
    _process: Option<Mutex<(Child, ChildStdin)>>,
}

static CLUSTER: OnceCell<Result<Cluster, String>> = OnceCell::const_new();

/// The shared control plane, started on first use (see the crate documentation).
///
/// # Panics
///
/// When the control plane cannot be started or the existing cluster cannot be reached;
/// the message says why and where the logs are. The first failure is remembered, so the
/// other tests of the process fail at once with the same message.
pub async fn cluster() -> &'static Cluster {
    let result = CLUSTER
        .get_or_init(|| async {
            if env::var("USE_EXISTING_CLUSTER").is_ok_and(|v| v == "true") {
                Cluster::existing().await
            } else {
                Cluster::start().await
            }
        })
        .await;
    match result {
        Ok(cluster) => cluster,
        Err(e) => panic!("testkit: no Kubernetes control plane: {e}"),
    }
}

/// The ready line testenv prints on stdout.
#[derive(Deserialize)]
struct ReadyLine {
    ready: bool,
    kubeconfig: PathBuf,
    server: String,
    version: String,
}

impl Cluster {
    /// Starts testenv and waits for its ready line.
    async fn start() -> Result<Self, String> {
        let bin = testenv_binary()?;
        let logs_dir = target_dir().join("test-logs");
        fs::create_dir_all(&logs_dir)
            .map_err(|e| format!("creating {}: {e}", logs_dir.display()))?;
        let log_path = logs_dir.join(format!("testenv-{}.log", std::process::id()));
        // testenv appends component logs to the same file: open it in append mode too, or
        // the two writers would overwrite each other.
        let log_err = fs::File::create(&log_path)
            .and_then(|_| fs::OpenOptions::new().append(true).open(&log_path))
            .map_err(|e| format!("creating {}: {e}", log_path.display()))?;

        let mut cmd = Command::new(&bin);
        cmd.arg("--log-file").arg(&log_path);
        if let Some(assets) = kubebuilder_assets() {
            cmd.arg("--apiserver-bin")
                .arg(assets.join("kube-apiserver"));
            cmd.arg("--etcd-bin").arg(assets.join("etcd"));
            let kcm = assets.join("kube-controller-manager");
            if kcm.is_file() {
                cmd.arg("--controller-manager-bin").arg(kcm);
            }
        }
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log_err);

        let started = Instant::now();
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("running {}: {e}", bin.display()))?;
        let stdin = child.stdin.take().expect("stdin is piped");
        let stdout = child.stdout.take().expect("stdout is piped");

        // Read the ready line on a plain thread: the child must not depend on the runtime
        // of whichever test happened to start it.
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let result = BufReader::new(stdout).read_line(&mut line).map(|_| line);
            let _ = tx.send(result);
        });
        let line = match tokio::time::timeout(READY_TIMEOUT, rx).await {
            Ok(Ok(Ok(line))) if !line.trim().is_empty() => line,
            Ok(Ok(Ok(_))) | Ok(Err(_)) => {
                let status = child.wait().map(|s| s.to_string()).unwrap_or_default();
                return Err(format!(
                    "{} exited ({status}) before it was ready; log {}:\n{}",
                    bin.display(),
                    log_path.display(),
                    tail(&log_path, 40)
                ));
            }
            Ok(Ok(Err(e))) => return Err(format!("reading testenv's stdout: {e}")),
            Err(_) => {
                let _ = child.kill();
                return Err(format!(
                    "{} was not ready within {READY_TIMEOUT:?}; log {}:\n{}",
                    bin.display(),
                    log_path.display(),
                    tail(&log_path, 40)
                ));
            }
        };
        let ready: ReadyLine = serde_json::from_str(&line)
            .map_err(|e| format!("unexpected line from testenv ({e}): {line}"))?;
        if !ready.ready {
            return Err(format!("testenv reported not ready: {line}"));
        }
        if let Some(minor) = requested_minor()
            && !ready.version.starts_with(&format!("{minor}."))
        {
            return Err(format!(
                "TESTENV_KUBERNETES asks for Kubernetes {minor}, but {} runs {}",
                bin.display(),
                ready.version
            ));
        }
        let kubeconfig = Kubeconfig::read_from(&ready.kubeconfig)
            .map_err(|e| format!("reading {}: {e}", ready.kubeconfig.display()))?;
        eprintln!(
            "testkit: kube-apiserver {} at {} ready after {:.1}s (logs: {})",
            ready.version,
            ready.server,
            started.elapsed().as_secs_f64(),
            log_path.display()
        );
        Ok(Cluster {
            kubeconfig,
            kubeconfig_path: ready.kubeconfig,
            server: ready.server,
            version: ready.version,
            _process: Some(Mutex::new((child, stdin))),
        })
    }

    /// Starts a control plane of its own for one test (from the same testenv binary as the
    /// shared one, also with `USE_EXISTING_CLUSTER=true`), for tests that change cluster-wide
    /// objects other tests rely on, such as the CRDs. It stops when the value is dropped.
    ///
    /// # Panics
    ///
    /// When the control plane cannot be started; the message says why and where the logs are.
    pub async fn start_private() -> Self {
        Self::start()
            .await
            .unwrap_or_else(|e| panic!("testkit: no Kubernetes control plane: {e}"))
    }

    /// Uses the cluster that `KUBECONFIG` (or `~/.kube/config`) points at.
    async fn existing() -> Result<Self, String> {
        let kubeconfig_path = match env::var_os("KUBECONFIG") {
            Some(paths) => env::split_paths(&paths)
                .next()
                .ok_or("USE_EXISTING_CLUSTER=true but KUBECONFIG is empty")?,
            None => env::var_os("HOME")
                .map(|home| PathBuf::from(home).join(".kube/config"))
                .ok_or("USE_EXISTING_CLUSTER=true but neither KUBECONFIG nor HOME is set")?,
        };
        let kubeconfig = Kubeconfig::read().map_err(|e| format!("reading the kubeconfig: {e}"))?;
        let config =
            Config::from_custom_kubeconfig(kubeconfig.clone(), &KubeConfigOptions::default())
                .await
                .map_err(|e| format!("loading the kubeconfig: {e}"))?;
        let server = config
            .cluster_url
            .to_string()
            .trim_end_matches('/')
            .to_string();
        let client = Client::try_from(config).map_err(|e| format!("creating a client: {e}"))?;
        let version = client
            .apiserver_version()
            .await
            .map_err(|e| format!("GET {server}/version: {e}"))?
            .git_version;
        eprintln!("testkit: using the existing cluster at {server} (Kubernetes {version})");
        Ok(Cluster {
            kubeconfig,
            kubeconfig_path,
            server,
            version,
            _process: None,
        })
    }

    /// The admin kubeconfig (for child processes such as the operator: `KUBECONFIG=...`).
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig_path
    }

    /// The parsed admin kubeconfig.
    pub fn kubeconfig(&self) -> &Kubeconfig {
        &self.kubeconfig
    }

    /// The API server URL, e.g. `https://127.0.0.1:41235`.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// The server's version as `/version` reports it, e.g. `v1.36.3`.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The admin client configuration (cluster-admin through `system:masters`).
    pub async fn config(&self) -> Config {
        Config::from_custom_kubeconfig(self.kubeconfig.clone(), &KubeConfigOptions::default())
            .await
            .unwrap_or_else(|e| panic!("testkit: loading {}: {e}", self.kubeconfig_path.display()))
    }

    /// A new admin client, bound to the calling test's runtime.
    pub async fn client(&self) -> Client {
        let config = self.config().await;
        Client::try_from(config).unwrap_or_else(|e| panic!("testkit: creating a client: {e}"))
    }

    /// A new client that authenticates with a bearer token only (no client certificate),
    /// against the same server and CA: requests run with exactly the token's identity.
    pub async fn client_for_token(&self, token: &str) -> Client {
        let mut config = self.config().await;
        config.auth_info =
            serde_json::from_value::<AuthInfo>(serde_json::json!({ "token": token }))
                .expect("an AuthInfo with a token deserializes");
        Client::try_from(config).unwrap_or_else(|e| panic!("testkit: creating a client: {e}"))
    }

    /// Creates a namespace for one test; see [`TestNamespace`].
    pub async fn namespace(&'static self, prefix: &str) -> TestNamespace {
        TestNamespace::create(self, prefix).await
    }
}

/// The workspace's root directory (where `Cargo.lock` is).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("testkit lives in a workspace subdirectory")
        .to_path_buf()
}

/// Cargo's target directory: `$CARGO_TARGET_DIR` if set, else `<workspace>/target`.
pub fn target_dir() -> PathBuf {
    match env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => {
            let dir = PathBuf::from(dir);
            if dir.is_absolute() {
                dir
            } else {
                workspace_root().join(dir)
            }
        }
        _ => workspace_root().join("target"),
    }
}

/// `$KUBEBUILDER_ASSETS` when it holds both `kube-apiserver` and `etcd`.
fn kubebuilder_assets() -> Option<PathBuf> {
    let dir = PathBuf::from(env::var_os("KUBEBUILDER_ASSETS")?);
    (dir.join("kube-apiserver").is_file() && dir.join("etcd").is_file()).then_some(dir)
}

/// The Kubernetes minor `TESTENV_KUBERNETES` asks for, as `v1.31`.
fn requested_minor() -> Option<String> {
    env::var("TESTENV_KUBERNETES")
        .ok()
        .filter(|v| !v.is_empty())
        .map(|v| format!("v{}", v.trim_start_matches('v')))
}

/// The testenv binary: `$TESTENV_BIN`, or `tools/testenv/bin/testenv`, built when missing;
/// with `TESTENV_KUBERNETES=1.31`, the older minor's `tools/testenv/bin/testenv-v1.31`.
fn testenv_binary() -> Result<PathBuf, String> {
    if let Some(bin) = env::var_os("TESTENV_BIN") {
        let bin = PathBuf::from(bin);
        return if bin.is_file() {
            Ok(bin)
        } else {
            Err(format!("TESTENV_BIN={} does not exist", bin.display()))
        };
    }
    let root = workspace_root();
    let version_dir = requested_minor();
    let bin = match &version_dir {
        Some(dir) => root.join(format!("tools/testenv/bin/testenv-{dir}")),
        None => root.join("tools/testenv/bin/testenv"),
    };
    if bin.is_file() {
        return Ok(bin);
    }
    let script = root.join("tools/testenv/build.sh");
    eprintln!(
        "testkit: {} is missing; building it with {} (the first build takes 10-20 minutes)",
        bin.display(),
        script.display()
    );
    let status = Command::new("bash")
        .arg(&script)
        .args(&version_dir)
        .stdout(Stdio::null())
        .status()
        .map_err(|e| format!("running {}: {e}", script.display()))?;
    if !status.success() || !bin.is_file() {
        return Err(format!(
            "{} failed ({status}); run it by hand to see why",
            script.display()
        ));
    }
    Ok(bin)
}

/// The last `n` lines of a file, for error messages.
pub(crate) fn tail(path: &Path, n: usize) -> String {
    match fs::read_to_string(path) {
        Ok(text) => {
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(n)..].join("\n")
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}
