//! Rendering `spec.secret.templates`, with a bounded cost, away from the operator's own memory
//! and threads.
//!
//! Templates are written by whoever may create CacheInstances, so a template may be hostile:
//! `{{ "x" * 100000000 }}` asks for 100 MB in one step, `{% set a = b ~ b %}` doubles a string
//! per step, nested loops run for ever. Each render therefore has
//!
//! * execution fuel ([`FUEL`] template instructions), a recursion limit ([`RECURSION_LIMIT`]
//!   nested loops, macros and includes) and an output limit ([`OUTPUT_LIMIT`] bytes per value);
//! * a memory limit: renders run in worker processes (the operator's own binary, started with
//!   [`WORKER_ARG`]) whose data segment is limited to [`WORKER_MEMORY`]; an allocation past it
//!   ends the worker, not the operator;
//! * a time limit ([`RENDER_TIMEOUT`]), after which the worker is killed.
//!
//! At most [`WORKERS`] renders run at once, and a reconcile waits for its render without
//! holding a thread, so a slow render holds up neither other reconciles nor `/readyz` and
//! `/metrics`. A template past a bound is reported as a bad template of that instance alone; the
//! worker that stopped is replaced for the next render.

use std::{
    collections::BTreeMap,
    io::{BufRead, Write},
    path::PathBuf,
    process::Stdio,
    sync::Mutex,
    time::Duration,
};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// Template instructions one render may execute.
pub const FUEL: u64 = 100_000;
/// Bytes one rendered value may hold.
pub const OUTPUT_LIMIT: usize = 64 * 1024;
/// Nesting depth of loops, macro calls and includes.
pub const RECURSION_LIMIT: usize = 16;
/// The data segment (heap and other private memory) of a render worker.
pub const WORKER_MEMORY: u64 = 32 * 1024 * 1024;
/// How long one render may take, including its worker's start.
pub const RENDER_TIMEOUT: Duration = Duration::from_secs(5);
/// Render workers (and renders) at once.
pub const WORKERS: usize = 2;
/// The first argument that makes the operator's binary a render worker.
pub const WORKER_ARG: &str = "render-templates-worker";

/// Renders `source` with `context` within [`FUEL`], [`RECURSION_LIMIT`] and [`OUTPUT_LIMIT`]
/// (the memory limit is the worker's). The error names the problem, never a value.
pub fn render_bounded(source: &str, context: &minijinja::Value) -> Result<String, String> {
    let mut env = minijinja::Environment::new();
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
    env.set_fuel(Some(FUEL));
    env.set_recursion_limit(RECURSION_LIMIT);
    let template = env.template_from_str(source).map_err(describe)?;
    let mut out = LimitedOutput::default();
    match template.render_captured_to(context, &mut out) {
        Ok(_) => String::from_utf8(out.buf).map_err(|_| "the output is not UTF-8".to_string()),
        Err(_) if out.over => Err(format!(
            "the output is longer than {OUTPUT_LIMIT} bytes, the most a template may render"
        )),
        Err(e) => Err(describe(e)),
    }
}

/// minijinja's message names the problem and position, never the values; running out of fuel
/// says which bound it hit.
fn describe(e: minijinja::Error) -> String {
    match e.kind() {
        minijinja::ErrorKind::OutOfFuel => {
            format!("rendering needs more than {FUEL} template steps, the most a template may take")
        }
        _ => e.to_string(),
    }
}

/// A buffer that refuses to grow past [`OUTPUT_LIMIT`].
#[derive(Default)]
struct LimitedOutput {
    buf: Vec<u8>,
    over: bool,
}

impl Write for LimitedOutput {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        if self.buf.len() + data.len() > OUTPUT_LIMIT {
            self.over = true;
            return Err(std::io::Error::other("output limit"));
        }
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// One render, as a line to the worker.
#[derive(Serialize, Deserialize)]
struct Request {
    template: String,
    context: serde_json::Value,
}

/// Its answer.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Response {
    Ok(String),
    Err(String),
}

/// The render worker: limits its own memory, then renders one request per line of stdin and
/// answers with one line on stdout, until stdin closes. Returns the process's exit code.
pub fn worker_main() -> i32 {
    use rustix::process::{Resource, Rlimit, setrlimit};
    let limit = Rlimit {
        current: Some(WORKER_MEMORY),
        maximum: Some(WORKER_MEMORY),
    };
    if let Err(e) = setrlimit(Resource::Data, limit) {
        eprintln!("{WORKER_ARG}: cannot limit memory: {e}");
        return 2;
    }
    let stdin = std::io::stdin().lock();
    let mut stdout = std::io::stdout().lock();
    for line in stdin.lines() {
        let Ok(line) = line else { return 1 };
        let response = match serde_json::from_str::<Request>(&line) {
            Ok(request) => {
                let context = minijinja::Value::from_serialize(&request.context);
                match render_bounded(&request.template, &context) {
                    Ok(out) => Response::Ok(out),
                    Err(e) => Response::Err(e),
                }
            }
            Err(e) => Response::Err(format!("unreadable request: {e}")),
        };
        let Ok(mut answer) = serde_json::to_string(&response) else {
            return 1;
        };
        answer.push('\n');
        if stdout.write_all(answer.as_bytes()).is_err() || stdout.flush().is_err() {
            return 1;
        }
    }
    0
}

/// A running worker.
struct Worker {
    child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    stdout: BufReader<tokio::process::ChildStdout>,
}

/// Renders templates in a pool of bounded worker processes.
pub struct Renderer {
    program: Option<PathBuf>,
    idle: Mutex<Vec<Worker>>,
    slots: tokio::sync::Semaphore,
}

impl Default for Renderer {
    fn default() -> Self {
        Self::new()
    }
}

impl Renderer {
    /// Workers run this process's own binary.
    pub fn new() -> Self {
        Self {
            // `/proc/self/exe` starts this very binary even if its file was replaced since.
            program: Some(PathBuf::from("/proc/self/exe"))
                .filter(|p| p.exists())
                .or_else(|| std::env::current_exe().ok()),
            idle: Mutex::new(Vec::new()),
            slots: tokio::sync::Semaphore::new(WORKERS),
        }
    }

    /// Renders every template of `templates` with `context`, in key order; the first that does
    /// not render is the error, with its key.
    pub async fn render_all(
        &self,
        templates: &BTreeMap<String, String>,
        context: &serde_json::Value,
    ) -> Result<BTreeMap<String, String>, RenderError> {
        let mut out = BTreeMap::new();
        for (key, template) in templates {
            let rendered = self
                .render(template, context)
                .await
                .map_err(|reason| RenderError {
                    key: key.clone(),
                    reason,
                })?;
            out.insert(key.clone(), rendered);
        }
        Ok(out)
    }

    /// Renders one template in a worker.
    pub async fn render(
        &self,
        template: &str,
        context: &serde_json::Value,
    ) -> Result<String, RenderFailure> {
        let _slot =
            self.slots.acquire().await.map_err(|_| {
                RenderFailure::Unavailable("the template renderer is shut down".into())
            })?;
        let idle = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let mut worker = match idle {
            Some(w) => w,
            None => self.spawn()?,
        };
        let mut line = serde_json::to_string(&Request {
            template: template.to_string(),
            context: context.clone(),
        })
        .map_err(|e| RenderFailure::Unavailable(e.to_string()))?;
        line.push('\n');
        let mut answer = String::new();
        let exchange = async {
            worker.stdin.write_all(line.as_bytes()).await?;
            worker.stdin.flush().await?;
            worker.stdout.read_line(&mut answer).await
        };
        match tokio::time::timeout(RENDER_TIMEOUT, exchange).await {
            Ok(Ok(n)) if n > 0 => {
                let response = serde_json::from_str::<Response>(&answer)
                    .map_err(|e| RenderFailure::Unavailable(e.to_string()));
                self.idle
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(worker);
                match response? {
                    Response::Ok(out) => Ok(out),
                    Response::Err(reason) => Err(RenderFailure::Template(reason)),
                }
            }
            Ok(_) => {
                // The worker stopped. An allocation past its memory limit aborts it; anything
                // else is no fault of the template.
                use std::os::unix::process::ExitStatusExt;
                let status = worker.child.wait().await.ok();
                tracing::debug!(?status, "a template render worker stopped");
                if status.and_then(|s| s.signal()) == Some(rustix::process::Signal::ABORT.as_raw())
                {
                    Err(RenderFailure::Template(format!(
                        "rendering needs more than {} MiB of memory, the most a template may use",
                        WORKER_MEMORY / (1024 * 1024)
                    )))
                } else {
                    Err(RenderFailure::Unavailable(format!(
                        "a template render worker stopped ({})",
                        status.map_or_else(|| "unknown status".to_string(), |s| s.to_string())
                    )))
                }
            }
            Err(_) => {
                let _ = worker.child.kill().await;
                Err(RenderFailure::Template(format!(
                    "rendering takes longer than {} s, the most a template may take",
                    RENDER_TIMEOUT.as_secs()
                )))
            }
        }
    }

    fn spawn(&self) -> Result<Worker, RenderFailure> {
        let program = self.program.as_ref().ok_or_else(|| {
            RenderFailure::Unavailable("the operator's executable is not known".into())
        })?;
        let mut child = tokio::process::Command::new(program)
            .arg(WORKER_ARG)
            .env_clear()
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| {
                RenderFailure::Unavailable(format!("cannot start a template render worker: {e}"))
            })?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err(RenderFailure::Unavailable(
                "a template render worker has no pipes".into(),
            ));
        };
        Ok(Worker {
            child,
            stdin,
            stdout: BufReader::new(stdout),
        })
    }
}

/// Why one template did not render.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RenderFailure {
    /// The template is wrong or past a bound: the spec's problem.
    Template(String),
    /// No worker could render it: the operator's problem, tried again.
    Unavailable(String),
}

impl std::fmt::Display for RenderFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RenderFailure::Template(s) | RenderFailure::Unavailable(s) => f.write_str(s),
        }
    }
}

/// A template of `spec.secret.templates` that did not render.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderError {
    pub key: String,
    pub reason: RenderFailure,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> minijinja::Value {
        minijinja::context! { host => "example.upstash.io", port => 6379 }
    }

    #[test]
    fn ordinary_templates_render() {
        assert_eq!(
            render_bounded("{{ host }}:{{ port }}", &ctx()).unwrap(),
            "example.upstash.io:6379"
        );
        assert_eq!(
            render_bounded("{% for i in range(3) %}{{ i }}{% endfor %}", &ctx()).unwrap(),
            "012"
        );
    }

    #[test]
    fn hostile_templates_stop_at_a_bound() {
        let huge = render_bounded(r#"{{ "x" * 100000 }}"#, &ctx()).unwrap_err();
        assert!(huge.contains("longer than 65536 bytes"), "{huge}");
        let long = render_bounded(
            "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
            &ctx(),
        )
        .unwrap_err();
        assert!(long.contains("template steps"), "{long}");
        let nested: String = (0..40)
            .map(|i| format!("{{% for a{i} in [1] %}}"))
            .chain((0..40).map(|_| "{% endfor %}".to_string()))
            .collect();
        assert!(render_bounded(&nested, &ctx()).is_err());
        let unknown = render_bounded("{{ password }}", &ctx()).unwrap_err();
        assert!(unknown.contains("undefined"), "{unknown}");
    }
}
