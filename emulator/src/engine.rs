//! The databases' engines: one real Redis-compatible server (`redis-server`, or `valkey-server`)
//! per database, started as a child process on the database's first data-plane use, stopped
//! when idle (or when too many run), its key space kept in an RDB file between runs.
//!
//! Creating, listing and deleting databases never starts an engine. An engine listens on a unix
//! socket in a private directory only; the emulator talks to it as three users: `upstash-emulator`
//! (the emulator's own administration: limits, `INFO`, `SAVE`), the server's `default` user (the
//! full REST token and the `default` Redis user of clients: every command except Redis's `@admin`
//! ones, `ACL` included) and `default_ro` (the read-only REST token and user: Redis's `@read`
//! commands, not `KEYS` or `SCAN`), so a refused command gets Redis's own `NOPERM` answer. ACL
//! users that clients define (`crate::acl`) log in to the engine as themselves. Plan limits
//! become the engine's `maxmemory` (the plan's data size above what the empty server uses) and
//! `maxmemory-policy` (`noeviction`, or `allkeys-random` with eviction on), so a full database
//! answers with Redis's own `OOM` error or evicts.

use std::collections::{HashMap, HashSet};
use std::io;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::UnixStream;

use crate::ids;
use crate::reply::{self, Reply};

/// Debian's package with the engine, named in the error when none is found.
pub const ENGINE_PACKAGE_HINT: &str = "install Redis (Debian/Ubuntu: `apt-get install redis-server`) \
     or Valkey (`apt-get install valkey-server`), or name the server binary with --redis-server \
     (UPSTASH_EMULATOR_REDIS_SERVER)";

/// How a connection to an engine is authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Every command except Redis's `@admin` ones (the REST token, the `default` user).
    Full,
    /// Redis's `@read` commands without `KEYS` and `SCAN` (the read-only REST token, the
    /// `default_ro` user).
    ReadOnly,
}

/// Who a connection to an engine logs in as.
#[derive(Clone, Copy)]
pub enum Who<'a> {
    /// One of the database's own users (pooled connections).
    Role(Role),
    /// An ACL user a client defined (a connection of its own; the engine checks the password).
    User { name: &'a str, password: &'a str },
}

/// What the plan asks of an engine; applied on the next use when it changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineSettings {
    /// Largest data size in bytes (the plan's max data size, or a test's lower limit).
    pub max_data_bytes: u64,
    /// Evict instead of refusing writes when full.
    pub eviction: bool,
}

impl EngineSettings {
    fn policy(&self) -> &'static str {
        if self.eviction {
            "allkeys-random"
        } else {
            "noeviction"
        }
    }
}

/// How the engines are run.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// The server binary; `None` = `redis-server`, else `valkey-server`, from `PATH`.
    pub program: Option<PathBuf>,
    /// Where key spaces and backups live; `None` = a temporary directory removed on exit.
    pub data_dir: Option<PathBuf>,
    /// An engine unused this long is stopped (its key space saved first).
    pub idle_timeout: Duration,
    /// At most this many engines run at once; starting another stops the least recently used
    /// idle one.
    pub max_running: usize,
    /// Engines kept started ahead (after the first data-plane use), so that the first command of
    /// a database that holds no data does not wait for a server to start.
    pub spare_engines: usize,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            program: None,
            data_dir: None,
            idle_timeout: Duration::from_secs(60),
            max_running: 64,
            spare_engines: 2,
        }
    }
}

/// Finds the engine binary: the one given, else `redis-server` or `valkey-server` on `PATH`.
pub fn find_program(given: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(p) = given {
        if p.components().count() == 1
            && let Some(found) = search_path(p.as_os_str())
        {
            return Ok(found);
        }
        anyhow::ensure!(
            p.is_file(),
            "the Redis server {} does not exist; {ENGINE_PACKAGE_HINT}",
            p.display()
        );
        return Ok(p.to_path_buf());
    }
    for name in ["redis-server", "valkey-server"] {
        if let Some(found) = search_path(name.as_ref()) {
            return Ok(found);
        }
    }
    anyhow::bail!("no Redis server (redis-server or valkey-server) on PATH; {ENGINE_PACKAGE_HINT}")
}

fn search_path(name: &std::ffi::OsStr) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// Counters and gauges read from an engine's `INFO`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Counters {
    hits: u64,
    misses: u64,
    evicted: u64,
    expired: u64,
}

/// What happened in an engine since its previous sample, and its size now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sample {
    pub hits: u64,
    pub misses: u64,
    pub evicted: u64,
    pub expired: u64,
    /// Keys now.
    pub keys: u64,
    /// Bytes the data takes now (`used_memory` above what the empty server used).
    pub bytes: u64,
}

fn info_fields(text: &str) -> HashMap<&str, &str> {
    text.lines()
        .filter_map(|l| l.trim_end().split_once(':'))
        .collect()
}

fn field(f: &HashMap<&str, &str>, k: &str) -> u64 {
    f.get(k).and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// Keys of database 0 in `INFO keyspace` (`db0:keys=3,expires=1,avg_ttl=0`).
fn keyspace_keys(f: &HashMap<&str, &str>) -> u64 {
    f.get("db0")
        .and_then(|v| v.split(',').find_map(|kv| kv.strip_prefix("keys=")))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// Which commands write, from the engine's own `COMMAND` table.
#[derive(Debug, Default)]
pub struct CommandTable {
    /// Lowercase `name` or `container|subcommand`.
    known: HashSet<String>,
    writes: HashSet<String>,
    containers: HashSet<String>,
}

impl CommandTable {
    fn parse(reply: &Reply) -> CommandTable {
        let mut t = CommandTable::default();
        if let Reply::Array(entries) = reply {
            for e in entries {
                t.add(e, None);
            }
        }
        t
    }

    fn add(&mut self, entry: &Reply, container: Option<&str>) {
        let Reply::Array(parts) = entry else {
            return;
        };
        let Some(name) = parts.first().and_then(Reply::as_text) else {
            return;
        };
        let name = name.to_ascii_lowercase();
        let write = matches!(parts.get(2), Some(Reply::Array(flags))
            if flags.iter().any(|f| f.as_text().as_deref() == Some("write")));
        if container.is_none()
            && let Some(Reply::Array(subs)) = parts.get(9)
            && !subs.is_empty()
        {
            self.containers.insert(name.clone());
            for s in subs {
                self.add(s, Some(&name));
            }
        }
        if write {
            self.writes.insert(name.clone());
        }
        self.known.insert(name);
    }

    /// The table's key for a command: `name`, or `name|sub` for container commands.
    fn key(&self, args: &[Vec<u8>]) -> String {
        let name = args
            .first()
            .map(|a| String::from_utf8_lossy(a).to_ascii_lowercase())
            .unwrap_or_default();
        if self.containers.contains(&name)
            && let Some(sub) = args.get(1)
        {
            return format!(
                "{name}|{}",
                String::from_utf8_lossy(sub).to_ascii_lowercase()
            );
        }
        name
    }

    /// Whether the command changes data (Redis's `write` flag).
    pub fn is_write(&self, args: &[Vec<u8>]) -> bool {
        self.writes.contains(&self.key(args))
    }
}

/// One connection to an engine.
pub struct Conn {
    stream: UnixStream,
    buf: BytesMut,
    generation: u64,
}

/// RESP2 encoding of a command.
pub fn encode_command(args: &[Vec<u8>], out: &mut Vec<u8>) {
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
}

fn broken(e: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.to_string())
}

impl Conn {
    async fn connect(
        socket: &Path,
        user: &str,
        password: &str,
        generation: u64,
    ) -> io::Result<Conn> {
        let stream = UnixStream::connect(socket).await?;
        let mut c = Conn {
            stream,
            buf: BytesMut::with_capacity(16 * 1024),
            generation,
        };
        let args = [
            b"AUTH".to_vec(),
            user.as_bytes().to_vec(),
            password.as_bytes().to_vec(),
        ];
        match c.call(&args).await? {
            Reply::Status(_) => Ok(c),
            // Wrong password, deleted or disabled user: the caller's credentials failed.
            Reply::Error(e) if e.starts_with("WRONGPASS") => {
                Err(io::Error::new(io::ErrorKind::PermissionDenied, e))
            }
            other => Err(broken(format!(
                "engine refused the emulator's login: {other:?}"
            ))),
        }
    }

    /// Writes commands (pipelined) without waiting for their replies.
    pub async fn send(&mut self, commands: &[&[Vec<u8>]]) -> io::Result<()> {
        let mut out = Vec::new();
        for c in commands {
            encode_command(c, &mut out);
        }
        self.stream.write_all(&out).await
    }

    /// Reads the next reply and its wire bytes. Cancel-safe: bytes already read stay buffered.
    pub async fn read(&mut self) -> io::Result<(Reply, Bytes)> {
        loop {
            if let Some((r, used)) = reply::decode(&self.buf).map_err(broken)? {
                let raw = self.buf.split_to(used).freeze();
                return Ok((r, raw));
            }
            if self.buf.capacity() - self.buf.len() < 4096 {
                self.buf.reserve(64 * 1024);
            }
            if self.stream.read_buf(&mut self.buf).await? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the engine closed the connection",
                ));
            }
        }
    }

    /// One command, one reply.
    pub async fn call(&mut self, args: &[Vec<u8>]) -> io::Result<Reply> {
        self.send(&[args]).await?;
        Ok(self.read().await?.0)
    }
}

fn cmd(parts: &[&str]) -> Vec<Vec<u8>> {
    parts.iter().map(|p| p.as_bytes().to_vec()).collect()
}

/// A running engine.
struct Process {
    child: std::process::Child,
    socket: PathBuf,
    generation: u64,
    /// What the empty server used after its setup; limits are counted above it.
    startup_memory: u64,
    applied: EngineSettings,
    admin: Conn,
    counters: Counters,
    last_sample: Option<Instant>,
}

impl Drop for Process {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let _ = std::fs::remove_file(&self.socket);
    }
}

impl Process {
    async fn apply(&mut self, s: EngineSettings) -> io::Result<()> {
        let max = self
            .startup_memory
            .saturating_add(s.max_data_bytes)
            .to_string();
        let r = self
            .admin
            .call(&cmd(&[
                "CONFIG",
                "SET",
                "maxmemory",
                &max,
                "maxmemory-policy",
                s.policy(),
            ]))
            .await?;
        if let Reply::Error(e) = r {
            return Err(broken(format!("CONFIG SET: {e}")));
        }
        self.applied = s;
        Ok(())
    }

    /// Reads `INFO` and returns what changed since the previous sample.
    async fn sample(&mut self) -> io::Result<Sample> {
        let r = self
            .admin
            .call(&cmd(&["INFO", "stats", "memory", "keyspace"]))
            .await?;
        let text = r.as_text().unwrap_or_default();
        let f = info_fields(&text);
        let now = Counters {
            hits: field(&f, "keyspace_hits"),
            misses: field(&f, "keyspace_misses"),
            evicted: field(&f, "evicted_keys"),
            expired: field(&f, "expired_keys"),
        };
        let prev = self.counters;
        self.counters = now;
        self.last_sample = Some(Instant::now());
        Ok(Sample {
            hits: now.hits.saturating_sub(prev.hits),
            misses: now.misses.saturating_sub(prev.misses),
            evicted: now.evicted.saturating_sub(prev.evicted),
            expired: now.expired.saturating_sub(prev.expired),
            keys: keyspace_keys(&f),
            bytes: field(&f, "used_memory").saturating_sub(self.startup_memory),
        })
    }
}

/// Idle connections of one engine, by role.
#[derive(Default)]
struct Idle {
    generation: u64,
    conns: HashMap<Role, Vec<Conn>>,
}

/// One database's engine, running or not.
struct Slot {
    process: tokio::sync::Mutex<Option<Process>>,
    running: AtomicBool,
    idle: Mutex<Idle>,
    /// Connections checked out and sessions attached.
    users: AtomicUsize,
    /// A background stop is under way.
    stopping: AtomicBool,
    /// Milliseconds since the pool was made, at the last use.
    last_used: AtomicU64,
}

/// Idle connections kept per engine and role.
const MAX_IDLE_CONNS: usize = 8;
/// Samples closer together than this are skipped (unless forced).
const SAMPLE_EVERY: Duration = Duration::from_millis(250);

/// The engines of every database.
pub struct Engines {
    program: PathBuf,
    version: String,
    data_root: PathBuf,
    persist: bool,
    idle_timeout: Duration,
    max_running: usize,
    slots: Mutex<HashMap<String, Arc<Slot>>>,
    /// Engines started ahead, without a database yet.
    spares: Mutex<Vec<Process>>,
    spares_starting: AtomicUsize,
    spare_target: usize,
    commands: tokio::sync::OnceCell<Arc<CommandTable>>,
    /// Samples taken when engines stopped, waiting to be recorded in the traffic history.
    pending: Mutex<Vec<(String, Sample)>>,
    next_id: AtomicU64,
    started: Instant,
    admin_password: String,
    app_password: String,
    ro_password: String,
    spawner: crate::spawn::Spawner,
    scripts: crate::scripts::Scripts,
    socket_dir: tempfile::TempDir,
    _data_tmp: Option<tempfile::TempDir>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A database id usable as a directory name.
fn safe_id(id: &str) -> io::Result<&str> {
    if !id.is_empty() && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        Ok(id)
    } else {
        Err(broken(format!("invalid database id {id:?}")))
    }
}

/// A connection checked out of an engine's pool; returned to it when dropped, unless a command
/// was left unanswered.
pub struct Lease {
    slot: Arc<Slot>,
    conn: Option<Conn>,
    /// The pool the connection returns to (`None`: an ACL user's, never pooled).
    role: Option<Role>,
    epoch: Instant,
    /// Commands sent whose replies have not all been read.
    pub in_flight: bool,
}

impl Lease {
    pub fn conn(&mut self) -> &mut Conn {
        self.conn.as_mut().expect("a lease holds its connection")
    }

    /// Sends commands and reads one reply per command.
    pub async fn run(&mut self, commands: &[&[Vec<u8>]]) -> io::Result<Vec<(Reply, Bytes)>> {
        self.in_flight = true;
        let conn = self.conn();
        conn.send(commands).await?;
        let mut out = Vec::with_capacity(commands.len());
        for _ in commands {
            out.push(conn.read().await?);
        }
        self.in_flight = false;
        Ok(out)
    }

    /// Never reuse this connection (its state is the client's: a session's `CLIENT SETNAME`,
    /// `WATCH`, ...).
    pub fn keep_private(&mut self) {
        self.in_flight = true;
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        touch(&self.slot, self.epoch);
        self.slot.users.fetch_sub(1, Ordering::AcqRel);
        if self.in_flight {
            return;
        }
        if let Some(conn) = self.conn.take() {
            let mut idle = lock(&self.slot.idle);
            if let Some(role) = self.role
                && conn.generation == idle.generation
            {
                let list = idle.conns.entry(role).or_default();
                if list.len() < MAX_IDLE_CONNS {
                    list.push(conn);
                }
            }
        }
    }
}

fn touch(slot: &Slot, epoch: Instant) {
    slot.last_used
        .store(epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
}

impl Engines {
    /// Checks that the server binary runs and prepares the directories. Starts no engine.
    pub fn new(opts: &EngineOptions, persist: bool) -> anyhow::Result<Engines> {
        let program = find_program(opts.program.as_deref())?;
        let out = std::process::Command::new(&program)
            .arg("--version")
            .stdin(Stdio::null())
            .output()
            .with_context(|| {
                format!(
                    "running {} --version; {ENGINE_PACKAGE_HINT}",
                    program.display()
                )
            })?;
        anyhow::ensure!(
            out.status.success(),
            "{} --version failed: {}",
            program.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let version = String::from_utf8_lossy(&out.stdout).trim().to_string();
        // Unix socket paths are limited to about 100 bytes: keep them short, in /tmp.
        let socket_base = if Path::new("/tmp").is_dir() {
            PathBuf::from("/tmp")
        } else {
            std::env::temp_dir()
        };
        remove_stale_dirs(&socket_base);
        remove_stale_dirs(&std::env::temp_dir());
        let pid = std::process::id();
        let socket_dir = tempfile::Builder::new()
            .prefix(&format!("upstash-emu-{pid}-"))
            .tempdir_in(socket_base)
            .context("creating the engines' socket directory")?;
        let (data_root, data_tmp) = match &opts.data_dir {
            Some(d) => {
                std::fs::create_dir_all(d)
                    .with_context(|| format!("creating the data directory {}", d.display()))?;
                (d.clone(), None)
            }
            None => {
                let t = tempfile::Builder::new()
                    .prefix(&format!("upstash-emu-data-{pid}-"))
                    .tempdir()
                    .context("creating the engines' data directory")?;
                (t.path().to_path_buf(), Some(t))
            }
        };
        Ok(Engines {
            program,
            version,
            data_root,
            persist,
            idle_timeout: opts.idle_timeout,
            max_running: opts.max_running.max(1),
            slots: Mutex::new(HashMap::new()),
            spares: Mutex::new(Vec::new()),
            spares_starting: AtomicUsize::new(0),
            spare_target: opts.spare_engines,
            commands: tokio::sync::OnceCell::new(),
            pending: Mutex::new(Vec::new()),
            next_id: AtomicU64::new(1),
            started: Instant::now(),
            admin_password: ids::password(),
            app_password: ids::password(),
            ro_password: ids::password(),
            spawner: crate::spawn::Spawner::new(),
            scripts: Default::default(),
            socket_dir,
            _data_tmp: data_tmp,
        })
    }

    /// Script names translated between what clients sent and what the engines got.
    pub fn scripts(&self) -> &crate::scripts::Scripts {
        &self.scripts
    }

    /// `redis-server --version`'s line.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// Where the key spaces and backups live.
    pub fn data_root(&self) -> &Path {
        &self.data_root
    }

    /// Engines running now.
    pub fn running(&self) -> usize {
        lock(&self.slots)
            .values()
            .filter(|s| s.running.load(Ordering::Acquire))
            .count()
    }

    /// The command table, once an engine has run.
    pub fn commands(&self) -> Option<Arc<CommandTable>> {
        self.commands.get().cloned()
    }

    fn slot(&self, id: &str) -> Arc<Slot> {
        lock(&self.slots)
            .entry(id.to_string())
            .or_insert_with(|| {
                Arc::new(Slot {
                    process: tokio::sync::Mutex::new(None),
                    running: AtomicBool::new(false),
                    idle: Mutex::new(Idle::default()),
                    users: AtomicUsize::new(0),
                    stopping: AtomicBool::new(false),
                    last_used: AtomicU64::new(0),
                })
            })
            .clone()
    }

    fn dir(&self, id: &str) -> io::Result<PathBuf> {
        Ok(self.data_root.join(safe_id(id)?))
    }

    fn dump(&self, id: &str) -> io::Result<PathBuf> {
        Ok(self.dir(id)?.join("dump.rdb"))
    }

    fn backup_file(&self, id: &str, backup_id: &str) -> io::Result<PathBuf> {
        Ok(self
            .dir(id)?
            .join("backups")
            .join(format!("{}.rdb", safe_id(backup_id)?)))
    }

    fn credentials(&self, role: Role) -> (&'static str, &str) {
        match role {
            Role::Full => ("default", &self.app_password),
            Role::ReadOnly => (crate::state::READ_ONLY_USER, &self.ro_password),
        }
    }

    /// The users a client defined (`ACL LIST` lines, the engine's own left out), or `None` when
    /// the engine does not run.
    pub async fn acl_list(&self, id: &str) -> io::Result<Option<Vec<String>>> {
        let Some(slot) = lock(&self.slots).get(id).cloned() else {
            return Ok(None);
        };
        let mut guard = slot.process.lock().await;
        let Some(p) = guard.as_mut() else {
            return Ok(None);
        };
        match p.admin.call(&cmd(&["ACL", "LIST"])).await? {
            Reply::Array(items) => Ok(Some(items.iter().filter_map(Reply::as_text).collect())),
            other => Err(broken(format!("ACL LIST: {other:?}"))),
        }
    }

    /// Replays a database's users on an engine that just started for it.
    async fn replay_users(&self, p: &mut Process, lines: &[String]) -> io::Result<()> {
        for args in crate::acl::replay(lines, &self.app_password) {
            if let Reply::Error(e) = p.admin.call(&args).await? {
                tracing::warn!(error = %e, "replaying an ACL user failed");
            }
        }
        Ok(())
    }

    /// A connection to the database's engine, starting the engine first if needed and applying
    /// changed settings.
    pub async fn checkout(
        self: &Arc<Self>,
        id: &str,
        settings: EngineSettings,
        users: &[String],
        who: Who<'_>,
    ) -> io::Result<Lease> {
        let slot = self.slot(id);
        slot.users.fetch_add(1, Ordering::AcqRel);
        touch(&slot, self.started);
        let role = match who {
            Who::Role(r) => Some(r),
            Who::User { .. } => None,
        };
        let mut lease = Lease {
            slot: slot.clone(),
            conn: None,
            role,
            epoch: self.started,
            in_flight: false,
        };
        let (socket, generation) = {
            let mut guard = slot.process.lock().await;
            if guard.is_none() {
                self.make_room(id);
                let mut p = match self.take_spare(id).await? {
                    Some(p) => p,
                    None => self.start(id, settings).await?,
                };
                self.replay_users(&mut p, users).await?;
                self.refill();
                lock(&slot.idle).generation = p.generation;
                *guard = Some(p);
                slot.running.store(true, Ordering::Release);
            }
            let p = guard.as_mut().expect("just started");
            if p.applied != settings {
                p.apply(settings).await?;
            }
            (p.socket.clone(), p.generation)
        };
        let reused = match role {
            Some(role) => {
                let mut idle = lock(&slot.idle);
                if idle.generation == generation {
                    idle.conns.get_mut(&role).and_then(Vec::pop)
                } else {
                    None
                }
            }
            None => None,
        };
        let conn = match (reused, who) {
            (Some(c), _) => c,
            (None, Who::Role(role)) => {
                let (user, password) = self.credentials(role);
                Conn::connect(&socket, user, password, generation).await?
            }
            (None, Who::User { name, password }) => {
                Conn::connect(&socket, name, password, generation).await?
            }
        };
        lease.conn = Some(conn);
        Ok(lease)
    }

    /// Stops least recently used idle engines (in the background) until one more fits under
    /// the limit.
    fn make_room(self: &Arc<Self>, starting: &str) {
        let victims: Vec<(String, Arc<Slot>)> = {
            let slots = lock(&self.slots);
            let running = slots
                .values()
                .filter(|s| {
                    s.running.load(Ordering::Acquire) && !s.stopping.load(Ordering::Acquire)
                })
                .count();
            if running < self.max_running {
                return;
            }
            let mut idle: Vec<(&String, &Arc<Slot>)> = slots
                .iter()
                .filter(|(id, s)| {
                    id.as_str() != starting
                        && s.running.load(Ordering::Acquire)
                        && !s.stopping.load(Ordering::Acquire)
                        && s.users.load(Ordering::Acquire) == 0
                })
                .collect();
            idle.sort_by_key(|(_, s)| s.last_used.load(Ordering::Relaxed));
            idle.into_iter()
                .take(running + 1 - self.max_running)
                .map(|(id, s)| (id.clone(), s.clone()))
                .collect()
        };
        if victims.is_empty() {
            tracing::warn!(
                limit = self.max_running,
                "every running engine is in use: starting one more than the limit"
            );
        }
        for (id, slot) in victims {
            slot.stopping.store(true, Ordering::Release);
            let this = self.clone();
            tokio::spawn(async move {
                tracing::debug!(database_id = %id, "engine limit reached: stopping the least recently used engine");
                this.stop_idle(&id, &slot).await;
                slot.stopping.store(false, Ordering::Release);
            });
        }
    }

    /// A ready spare engine for a database that holds no data yet (no RDB file), given the
    /// database's directory; `None` when it holds data or no spare is ready.
    async fn take_spare(&self, id: &str) -> io::Result<Option<Process>> {
        let dir = self.dir(id)?;
        if self.dump(id)?.exists() {
            return Ok(None);
        }
        let spare = lock(&self.spares).pop();
        let Some(mut p) = spare else {
            return Ok(None);
        };
        std::fs::create_dir_all(&dir)?;
        let mut args = cmd(&["CONFIG", "SET", "dir"]);
        args.push(dir.as_os_str().as_encoded_bytes().to_vec());
        match p.admin.call(&args).await? {
            Reply::Error(e) => Err(broken(format!("CONFIG SET dir: {e}"))),
            _ => Ok(Some(p)),
        }
    }

    /// Starts spare engines in the background up to the configured number, so that a
    /// database's first command does not wait for a server to start.
    fn refill(self: &Arc<Self>) {
        loop {
            let have = lock(&self.spares).len() + self.spares_starting.load(Ordering::Acquire);
            if have >= self.spare_target {
                return;
            }
            self.spares_starting.fetch_add(1, Ordering::AcqRel);
            let this = self.clone();
            tokio::spawn(async move {
                let dir = this.data_root.join(".spare");
                let unlimited = EngineSettings {
                    max_data_bytes: u64::MAX / 4,
                    eviction: false,
                };
                let started = match std::fs::create_dir_all(&dir) {
                    Ok(()) => this.spawn_engine(&dir, unlimited).await,
                    Err(e) => Err(e),
                };
                match started {
                    Ok(p) => lock(&this.spares).push(p),
                    Err(e) => tracing::warn!(error = %e, "starting a spare engine failed"),
                }
                this.spares_starting.fetch_sub(1, Ordering::AcqRel);
            });
        }
    }

    /// Starts the database's own engine on its files (for a database that holds data).
    async fn start(&self, id: &str, settings: EngineSettings) -> io::Result<Process> {
        let dir = self.dir(id)?;
        std::fs::create_dir_all(&dir)?;
        self.spawn_engine(&dir, settings).await
    }

    /// Starts a server whose data directory is `dir`, its users and limits set up.
    async fn spawn_engine(&self, dir: &Path, settings: EngineSettings) -> io::Result<Process> {
        let dir = dir.to_path_buf();
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        let socket = self.socket_dir.path().join(format!("{n}.sock"));
        let _ = std::fs::remove_file(&socket);
        // In the private socket directory: a spare's log stays valid when it gets a database.
        let log = self.socket_dir.path().join(format!("{n}.log"));
        let save = if self.persist {
            "3600 1 300 100 60 10000"
        } else {
            ""
        };
        let mut command = std::process::Command::new(&self.program);
        command
            .arg("--port")
            .arg("0")
            .arg("--unixsocket")
            .arg(&socket)
            .args(["--unixsocketperm", "700", "--bind", "127.0.0.1"])
            .arg("--dir")
            .arg(&dir)
            .args([
                "--dbfilename",
                "dump.rdb",
                "--save",
                save,
                "--appendonly",
                "no",
            ])
            .args([
                "--databases",
                "1",
                "--daemonize",
                "no",
                "--loglevel",
                "warning",
            ])
            .arg("--logfile")
            .arg(&log)
            .args(["--requirepass", &self.admin_password])
            .args(["--maxmemory-policy", settings.policy()])
            .args(["--jemalloc-bg-thread", "no", "--protected-mode", "yes"])
            // `dir` is set when a spare engine gets its database (over the unix socket).
            .args(["--enable-protected-configs", "local"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let started = Instant::now();
        let mut child = self.spawner.spawn(command)?;
        let admin = loop {
            if let Some(status) = child.try_wait()? {
                return Err(broken(format!(
                    "{} exited at start ({status}): {}",
                    self.program.display(),
                    tail(&log)
                )));
            }
            if socket.exists()
                && let Ok(c) = Conn::connect(&socket, "default", &self.admin_password, n).await
            {
                break c;
            }
            if started.elapsed() > Duration::from_secs(20) {
                let _ = child.kill();
                let _ = child.wait();
                return Err(broken(format!(
                    "{} did not start within 20 s: {}",
                    self.program.display(),
                    tail(&log)
                )));
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        };
        let mut p = Process {
            child,
            socket,
            generation: n,
            startup_memory: 0,
            applied: settings,
            admin,
            counters: Counters::default(),
            last_sample: None,
        };
        // The emulator's own user first (the server's `default` user becomes the clients').
        let mut admin_user = cmd(&["ACL", "SETUSER", crate::acl::ADMIN_USER, "reset", "on"]);
        admin_user.push(format!(">{}", self.admin_password).into_bytes());
        admin_user.extend(cmd(&["~*", "&*", "+@all"]));
        if let Reply::Error(e) = p.admin.call(&admin_user).await? {
            return Err(broken(format!("ACL SETUSER (administration): {e}")));
        }
        let mut auth = cmd(&["AUTH", crate::acl::ADMIN_USER]);
        auth.push(self.admin_password.as_bytes().to_vec());
        if let Reply::Error(e) = p.admin.call(&auth).await? {
            return Err(broken(format!("AUTH (administration): {e}")));
        }
        for (user, password, rules) in [
            ("default", &self.app_password, "+@all -@admin +acl"),
            (
                crate::state::READ_ONLY_USER,
                &self.ro_password,
                "-@all +@read +@connection +@transaction +info +time +eval_ro +evalsha_ro \
                 +fcall_ro +command -@admin -keys -scan",
            ),
        ] {
            let mut args = cmd(&["ACL", "SETUSER", user, "reset", "on"]);
            args.push(format!(">{password}").into_bytes());
            args.extend(cmd(&["~*", "&*"]));
            args.extend(rules.split_whitespace().map(|r| r.as_bytes().to_vec()));
            if let Reply::Error(e) = p.admin.call(&args).await? {
                return Err(broken(format!("ACL SETUSER {user}: {e}")));
            }
        }
        if self.commands.get().is_none() {
            let table = p.admin.call(&cmd(&["COMMAND"])).await?;
            let _ = self.commands.set(Arc::new(CommandTable::parse(&table)));
        }
        // What the server uses before any data (after its setup, with the emulator's own
        // connection): limits and the reported data size are counted above it.
        let memory = p.admin.call(&cmd(&["INFO", "memory"])).await?;
        let text = memory.as_text().unwrap_or_default();
        let f = info_fields(&text);
        p.startup_memory = field(&f, "used_memory").max(field(&f, "used_memory_startup"));
        p.apply(settings).await?;
        tracing::debug!(ms = started.elapsed().as_millis() as u64, "engine started");
        Ok(p)
    }

    /// Samples the engine's counters, if it runs and was not sampled in the last 250 ms (or
    /// `force`).
    pub async fn sample(&self, id: &str, force: bool) -> Option<Sample> {
        let slot = lock(&self.slots).get(id).cloned()?;
        if !slot.running.load(Ordering::Acquire) {
            return None;
        }
        let mut guard = slot.process.lock().await;
        let p = guard.as_mut()?;
        if !force && p.last_sample.is_some_and(|t| t.elapsed() < SAMPLE_EVERY) {
            return None;
        }
        p.sample().await.ok()
    }

    /// Samples taken when engines stopped, not yet recorded.
    pub fn take_pending(&self) -> Vec<(String, Sample)> {
        std::mem::take(&mut *lock(&self.pending))
    }

    /// Stops an engine, saving its key space when `save`. Its last sample goes to the pending
    /// list.
    async fn stop_slot(&self, id: &str, slot: &Slot, save: bool) {
        let mut guard = slot.process.lock().await;
        self.stop_locked(id, slot, &mut guard, save).await;
    }

    /// Stops an idle engine (saving its key space), unless it was taken into use meanwhile.
    async fn stop_idle(&self, id: &str, slot: &Slot) {
        let mut guard = slot.process.lock().await;
        if slot.users.load(Ordering::Acquire) == 0 {
            self.stop_locked(id, slot, &mut guard, true).await;
        }
    }

    /// [`Self::stop_slot`] with the slot's process lock already held.
    async fn stop_locked(&self, id: &str, slot: &Slot, guard: &mut Option<Process>, save: bool) {
        let Some(mut p) = guard.take() else {
            return;
        };
        slot.running.store(false, Ordering::Release);
        {
            let mut idle = lock(&slot.idle);
            idle.conns.clear();
            idle.generation = 0;
        }
        let mut empty = false;
        if let Ok(s) = p.sample().await {
            empty = s.keys == 0;
            lock(&self.pending).push((id.to_string(), s));
        }
        // An empty key space needs no file: the next start can be a spare engine.
        if save
            && empty
            && let Ok(dump) = self.dump(id)
        {
            let _ = std::fs::remove_file(dump);
        }
        let how = if save && !empty { "SAVE" } else { "NOSAVE" };
        if let Ok(Reply::Error(e)) = p.admin.call(&cmd(&["SHUTDOWN", how])).await {
            tracing::warn!(database_id = %id, error = %e, "engine refused to shut down; killing it");
            let _ = p.child.kill();
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while matches!(p.child.try_wait(), Ok(None)) {
            if Instant::now() > deadline {
                let _ = p.child.kill();
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        drop(p);
        tracing::debug!(database_id = %id, saved = save, "engine stopped");
    }

    /// Stops engines unused for the idle timeout.
    pub async fn reap(&self) {
        let now = self.started.elapsed().as_millis() as u64;
        let idle_ms = self.idle_timeout.as_millis() as u64;
        let idle: Vec<(String, Arc<Slot>)> = lock(&self.slots)
            .iter()
            .filter(|(_, s)| {
                s.running.load(Ordering::Acquire)
                    && s.users.load(Ordering::Acquire) == 0
                    && now.saturating_sub(s.last_used.load(Ordering::Relaxed)) >= idle_ms
            })
            .map(|(id, s)| (id.clone(), s.clone()))
            .collect();
        for (id, slot) in idle {
            self.stop_idle(&id, &slot).await;
        }
        // Nothing used for the idle timeout: no spares either.
        let last = lock(&self.slots)
            .values()
            .map(|s| s.last_used.load(Ordering::Relaxed))
            .max()
            .unwrap_or(0);
        if self.running() == 0 && now.saturating_sub(last) >= idle_ms {
            let spares = std::mem::take(&mut *lock(&self.spares));
            for mut p in spares {
                let _ = p.admin.call(&cmd(&["SHUTDOWN", "NOSAVE"])).await;
            }
        }
    }

    /// Stops every engine (saving key spaces): on shutdown.
    pub async fn stop_all(&self) {
        let spares = std::mem::take(&mut *lock(&self.spares));
        for mut p in spares {
            let _ = p.admin.call(&cmd(&["SHUTDOWN", "NOSAVE"])).await;
        }
        let all: Vec<(String, Arc<Slot>)> = lock(&self.slots)
            .iter()
            .map(|(id, s)| (id.clone(), s.clone()))
            .collect();
        for (id, slot) in all {
            self.stop_slot(&id, &slot, self.persist).await;
        }
    }

    /// Deletes the database's engine and files (key space and backups).
    pub async fn remove(&self, id: &str) {
        let slot = lock(&self.slots).remove(id);
        if let Some(slot) = slot {
            self.stop_slot(id, &slot, false).await;
        }
        if let Ok(dir) = self.dir(id) {
            let _ = std::fs::remove_dir_all(dir);
        }
        lock(&self.pending).retain(|(p, _)| p != id);
    }

    /// Deletes the key space only (the engine is stopped without saving); backups stay.
    pub async fn clear(&self, id: &str) -> io::Result<()> {
        let slot = self.slot(id);
        let mut guard = slot.process.lock().await;
        self.stop_locked(id, &slot, &mut guard, false).await;
        match std::fs::remove_file(self.dump(id)?) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Snapshots the key space into a backup file; returns its size in bytes (0 for a database
    /// that never held data).
    pub async fn backup(&self, id: &str, backup_id: &str) -> io::Result<u64> {
        let slot = self.slot(id);
        let mut guard = slot.process.lock().await;
        let dump = self.dump(id)?;
        if let Some(p) = guard.as_mut()
            && let Reply::Error(e) = p.admin.call(&cmd(&["SAVE"])).await?
        {
            return Err(broken(format!("SAVE: {e}")));
        }
        let dest = self.backup_file(id, backup_id)?;
        std::fs::create_dir_all(dest.parent().expect("backups directory"))?;
        match std::fs::copy(&dump, &dest) {
            Ok(n) => Ok(n),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(e),
        }
    }

    /// Replaces the key space with a backup's (the engine is stopped without saving and loads
    /// the backup on its next start; nothing starts it in between).
    pub async fn restore(&self, id: &str, backup_id: &str) -> io::Result<()> {
        let slot = self.slot(id);
        let mut guard = slot.process.lock().await;
        self.stop_locked(id, &slot, &mut guard, false).await;
        let src = self.backup_file(id, backup_id)?;
        let dump = self.dump(id)?;
        if src.exists() {
            std::fs::create_dir_all(self.dir(id)?)?;
            std::fs::copy(&src, &dump)?;
        } else {
            match std::fs::remove_file(&dump) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        Ok(())
    }

    /// Deletes a backup file.
    pub fn delete_backup(&self, id: &str, backup_id: &str) {
        if let Ok(p) = self.backup_file(id, backup_id) {
            let _ = std::fs::remove_file(p);
        }
    }

    /// Stops every engine without saving and deletes every database's files.
    pub async fn reset(&self) {
        let ids: Vec<String> = lock(&self.slots).keys().cloned().collect();
        for id in ids {
            self.remove(&id).await;
        }
        if let Ok(entries) = std::fs::read_dir(&self.data_root) {
            for e in entries.flatten() {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
}

/// Removes the temporary directories of emulators that were killed (their pid is in the
/// name and no such process runs any more).
fn remove_stale_dirs(base: &Path) {
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(rest) = name.to_str().and_then(|n| {
            n.strip_prefix("upstash-emu-data-")
                .or_else(|| n.strip_prefix("upstash-emu-"))
        }) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().rev().take(5).collect();
    lines.into_iter().rev().collect::<Vec<_>>().join(" | ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_parsing() {
        let f = info_fields(
            "# Stats\r\nkeyspace_hits:7\r\n# Keyspace\r\ndb0:keys=3,expires=1,avg_ttl=0\r\n",
        );
        assert_eq!(field(&f, "keyspace_hits"), 7);
        assert_eq!(field(&f, "missing"), 0);
        assert_eq!(keyspace_keys(&f), 3);
        assert_eq!(keyspace_keys(&HashMap::new()), 0);
    }

    #[test]
    fn command_table_reads_flags_and_subcommands() {
        let entry = |name: &str, flags: &[&str], subs: Vec<Reply>| {
            Reply::Array(vec![
                Reply::Bulk(name.as_bytes().to_vec()),
                Reply::Int(-1),
                Reply::Array(flags.iter().map(|f| Reply::Status(f.to_string())).collect()),
                Reply::Int(1),
                Reply::Int(1),
                Reply::Int(1),
                Reply::Array(vec![]),
                Reply::Array(vec![]),
                Reply::Array(vec![]),
                Reply::Array(subs),
            ])
        };
        let table = CommandTable::parse(&Reply::Array(vec![
            entry("set", &["write", "denyoom"], vec![]),
            entry("get", &["readonly", "fast"], vec![]),
            entry(
                "script",
                &[],
                vec![
                    entry("script|load", &["noscript"], vec![]),
                    entry("script|flush", &["write"], vec![]),
                ],
            ),
        ]));
        let args = |v: &[&str]| v.iter().map(|s| s.as_bytes().to_vec()).collect::<Vec<_>>();
        assert!(table.is_write(&args(&["SET", "k", "v"])));
        assert!(!table.is_write(&args(&["get", "k"])));
        assert!(table.is_write(&args(&["SCRIPT", "FLUSH"])));
        assert!(!table.is_write(&args(&["script", "load", "return 1"])));
        assert!(!table.is_write(&args(&["NOSUCH"])));
    }

    #[test]
    fn a_missing_server_names_the_package() {
        let err = find_program(Some(Path::new("/nonexistent/redis-server")))
            .unwrap_err()
            .to_string();
        assert!(err.contains("apt-get install redis-server"), "{err}");
        assert!(
            find_program(Some(Path::new("sh"))).is_ok(),
            "a bare name is looked up on PATH"
        );
    }

    #[test]
    fn ids_must_be_safe_directory_names() {
        assert!(safe_id("96ad0856-03b1-4ee7-9666-e81abd0349e1").is_ok());
        assert!(safe_id("../etc").is_err());
        assert!(safe_id("").is_err());
    }
}
