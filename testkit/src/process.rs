//! Child processes for tests (the operator, the emulator, ...), with their output kept in
//! a log file under `target/test-logs/` and killed when the test drops them.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::cluster::{tail, target_dir, workspace_root};

/// How long [`Process::stop`] waits after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// Configures a [`Process`]; start it with [`ProcessBuilder::spawn`].
pub struct ProcessBuilder {
    name: String,
    command: Command,
}

impl ProcessBuilder {
    /// Adds an argument.
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.command.arg(arg);
        self
    }

    /// Adds arguments.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.command.args(args);
        self
    }

    /// Sets an environment variable (the rest of the environment is inherited).
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.command.env(key, value);
        self
    }

    /// Removes an inherited environment variable.
    pub fn env_remove(mut self, key: impl AsRef<OsStr>) -> Self {
        self.command.env_remove(key);
        self
    }

    /// Sets the working directory.
    pub fn current_dir(mut self, dir: impl AsRef<Path>) -> Self {
        self.command.current_dir(dir);
        self
    }

    /// Starts the process with stdout and stderr appended to
    /// `target/test-logs/<name>-<time>-<n>.log` and stdin a pipe that stays open until the
    /// [`Process`] is dropped.
    pub fn spawn(mut self) -> io::Result<Process> {
        let dir = target_dir().join("test-logs");
        fs::create_dir_all(&dir)?;
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let millis = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or_default();
        let log_path = dir.join(format!(
            "{}-{millis}-{}.log",
            self.name,
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let log = File::create(&log_path)?;
        self.command
            .stdin(Stdio::piped())
            .stdout(log.try_clone()?)
            .stderr(log);
        let mut child = self.command.spawn().map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "starting {} ({:?}): {e}",
                    self.name,
                    self.command.get_program()
                ),
            )
        })?;
        let stdin = child.stdin.take();
        Ok(Process {
            name: self.name,
            child,
            stdin,
            log_path,
            status: None,
        })
    }
}

/// A running child process. Dropping it stops it (SIGTERM, then SIGKILL after 5 s).
pub struct Process {
    name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    log_path: PathBuf,
    status: Option<ExitStatus>,
}

impl Process {
    /// Prepares to run `program`; `name` names the log file and error messages.
    pub fn builder(name: &str, program: impl AsRef<OsStr>) -> ProcessBuilder {
        ProcessBuilder {
            name: name.to_string(),
            command: Command::new(program),
        }
    }

    /// Runs `program` with `args` and extra environment variables `envs`.
    pub fn spawn<I, S>(
        name: &str,
        program: impl AsRef<OsStr>,
        args: I,
        envs: &[(&str, &str)],
    ) -> io::Result<Process>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut builder = Self::builder(name, program).args(args);
        for (k, v) in envs {
            builder = builder.env(k, v);
        }
        builder.spawn()
    }

    /// The process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// The file that receives the process's stdout and stderr.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// Everything the process has written so far.
    pub fn logs(&self) -> String {
        fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// The exit status if the process has ended, without waiting.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
        }
        self.status
    }

    /// Closes the process's stdin (a process that exits on end of input then exits).
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Waits until the log contains `needle` and returns the whole log.
    ///
    /// # Panics
    ///
    /// After `timeout`, or when the process exits first, with the end of the log.
    pub async fn wait_for_log(&mut self, needle: &str, timeout: Duration) -> String {
        let started = Instant::now();
        loop {
            let logs = self.logs();
            if logs.contains(needle) {
                return logs;
            }
            if let Some(status) = self.try_wait() {
                panic!(
                    "{} exited ({status}) before logging {needle:?}; {}:\n{}",
                    self.name,
                    self.log_path.display(),
                    tail(&self.log_path, 40)
                );
            }
            if started.elapsed() > timeout {
                panic!(
                    "{} did not log {needle:?} within {timeout:?}; {}:\n{}",
                    self.name,
                    self.log_path.display(),
                    tail(&self.log_path, 40)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Kills the process at once (SIGKILL), as a crash would, and waits for it.
    pub fn kill(&mut self) -> Option<ExitStatus> {
        if let Some(status) = self.try_wait() {
            return Some(status);
        }
        let _ = self.child.kill();
        self.status = self.child.wait().ok();
        self.status
    }

    /// Stops the process: SIGTERM, then SIGKILL if it is still running after 5 s.
    /// Returns how it ended.
    pub fn stop(&mut self) -> Option<ExitStatus> {
        if let Some(status) = self.try_wait() {
            return Some(status);
        }
        self.stdin = None;
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: kill(2) with a pid we own and a valid signal number has no memory effects.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
        let deadline = Instant::now() + STOP_GRACE;
        while Instant::now() < deadline {
            if let Some(status) = self.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        self.status = self.child.wait().ok();
        self.status
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The path of binary `name` from this workspace, built for the profile the tests run
/// with (`cargo build --workspace --bin <name>`, once per test process; a no-op when it
/// is up to date).
///
/// Integration tests of the package that defines the binary can use
/// `env!("CARGO_BIN_EXE_<name>")` instead, which Cargo builds beforehand.
///
/// # Panics
///
/// When the build fails.
pub fn cargo_bin(name: &str) -> PathBuf {
    static BUILT: OnceLock<Mutex<HashMap<String, PathBuf>>> = OnceLock::new();
    let built = BUILT.get_or_init(Default::default);
    let mut built = built.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(path) = built.get(name) {
        return path.clone();
    }

    // Test executables live in <target>/<profile>/deps/; binaries in <target>/<profile>/.
    let exe = std::env::current_exe().expect("the test executable's path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test executables live in <target>/<profile>/deps")
        .to_path_buf();
    let profile = match profile_dir.file_name().and_then(OsStr::to_str) {
        Some("debug") | None => "dev".to_string(),
        Some(other) => other.to_string(),
    };
    let target = profile_dir
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(target_dir);
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
    let status = Command::new(cargo)
        .current_dir(workspace_root())
        .args(["build", "--workspace", "--bin", name, "--profile", &profile])
        .arg("--target-dir")
        .arg(&target)
        .stdout(Stdio::null())
        .status()
        .unwrap_or_else(|e| panic!("running cargo build --bin {name}: {e}"));
    assert!(
        status.success(),
        "cargo build --bin {name} failed: {status}"
    );
    let path = profile_dir.join(name);
    assert!(
        path.is_file(),
        "cargo build --bin {name} succeeded but {} is missing",
        path.display()
    );
    built.insert(name.to_string(), path.clone());
    path
}

#[cfg(test)]
mod tests {
    use super::Process;
    use std::time::Duration;

    #[tokio::test]
    async fn captures_output_and_stops_on_drop() {
        let mut process = Process::spawn(
            "sh-test",
            "sh",
            [
                "-c",
                "echo \"started $GREETING\"; echo oops >&2; exec sleep 60",
            ],
            &[("GREETING", "hello")],
        )
        .unwrap();
        let logs = process
            .wait_for_log("started hello", Duration::from_secs(10))
            .await;
        assert!(
            process
                .log_path()
                .starts_with(crate::target_dir().join("test-logs"))
        );
        let pid = process.id() as libc::pid_t;
        assert!(process.try_wait().is_none(), "still running: {logs}");
        process.wait_for_log("oops", Duration::from_secs(10)).await;
        drop(process);
        // SAFETY: signal 0 only checks whether the pid exists.
        let alive = unsafe { libc::kill(pid, 0) } == 0;
        assert!(!alive, "the process survived its drop");
    }

    #[tokio::test]
    #[should_panic(expected = "exited (exit status: 3) before logging \"never\"")]
    async fn wait_for_log_reports_an_early_exit() {
        let mut process = Process::spawn("sh-exit", "sh", ["-c", "exit 3"], &[]).unwrap();
        process.wait_for_log("never", Duration::from_secs(10)).await;
    }
}
