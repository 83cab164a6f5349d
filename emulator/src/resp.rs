//! The Redis protocol listener: RESP2 over TLS for every database, routed by password, the way
//! clients reach Upstash at `rediss://default:<password>@<endpoint>:<port>` (or as the
//! read-only `default_ro` user with its own password).
//!
//! `AUTH`, `HELLO`'s options, `QUIT` and `RESET` are answered here; every other command goes to
//! the database's engine (a real Redis server) over a connection of the session's own, so
//! transactions, `WATCH`, blocking commands and `CLIENT` behave as Redis's. Before a batch of
//! pipelined commands reaches the engine, the checks of the REST API apply
//! ([`data_plane::admit`]: password still current, allow-list, state, request size, budget;
//! [`data_plane::precheck`]: commands Upstash does not offer, max entry size), and so do fault
//! rules; after it, the same traffic history and call log. After a password reset the next
//! command gets `WRONGPASS` and the connection is closed.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf as _, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::Shared;
use crate::acl;
use crate::calllog::Call;
use crate::data_plane::{self, Caller, Ran, Refused, Transport, WRONGPASS};
use crate::engine::Lease;
use crate::faults::FaultRule;
use crate::reply::Reply;
use crate::scripts::ReplyFix;
use crate::server;

/// Largest frame (one command, all its arguments) read from a connection; plan limits (the
/// database's max request size) are checked afterwards, like the REST API's body limit.
pub const MAX_FRAME: usize = 128 * 1024 * 1024;
/// Longest header or inline command line (Redis's own limit).
const MAX_LINE: usize = 64 * 1024;
/// Most arguments in one multibulk frame (Redis's own limit).
const MAX_ARGS: i64 = 1024 * 1024;
/// Largest single bulk string (Redis's `proto-max-bulk-len` default).
const MAX_BULK: i64 = 512 * 1024 * 1024;
/// How much room a read is given.
const READ_CHUNK: usize = 16 * 1024;

const NOAUTH: &str = "NOAUTH Authentication required.";
const NOAUTH_HELLO: &str = "NOAUTH HELLO must be called with the client already authenticated, \
     otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client \
     and select the RESP protocol version at the same time";
const EXECABORT: &str = "EXECABORT Transaction discarded because of previous errors.";

/// A malformed frame; the connection answers `-ERR Protocol error: ...` and is closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtocolError(String);

impl std::fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Protocol error: {}", self.0)
    }
}

impl std::error::Error for ProtocolError {}

fn protocol_error(msg: impl Into<String>) -> ProtocolError {
    ProtocolError(msg.into())
}

/// One command as read from the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The command name and its arguments.
    pub args: Vec<Vec<u8>>,
    /// Bytes the frame took on the wire (the request size checked against the plan).
    pub size: usize,
}

/// A multibulk frame whose arguments have not all arrived yet.
#[derive(Debug)]
struct Partial {
    remaining: usize,
    args: Vec<Vec<u8>>,
    size: usize,
}

/// Incremental RESP2 request decoder: arrays of bulk strings and inline commands. Complete
/// arguments are taken out of the buffer as they arrive, so a large frame is scanned once.
#[derive(Debug)]
pub struct Decoder {
    max_frame: usize,
    partial: Option<Partial>,
}

impl Decoder {
    /// A decoder refusing frames larger than `max_frame` bytes.
    pub fn new(max_frame: usize) -> Self {
        Decoder {
            max_frame,
            partial: None,
        }
    }

    /// Takes the next complete command from the front of `buf`, consuming its bytes; `Ok(None)`
    /// when more bytes are needed. Empty commands (`*0`, blank lines) are skipped.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, ProtocolError> {
        loop {
            if self.partial.is_none() {
                let Some(&first) = buf.first() else {
                    return Ok(None);
                };
                if first != b'*' {
                    match decode_inline(buf)? {
                        Some(f) if f.args.is_empty() => continue,
                        other => return Ok(other),
                    }
                }
                let Some(count) = self.start_multibulk(buf)? else {
                    return Ok(None);
                };
                if count == 0 {
                    continue;
                }
            }
            return self.continue_multibulk(buf);
        }
    }

    /// Reads `*<count>\r\n`; returns the count (0 for an empty or null array, which is skipped).
    fn start_multibulk(&mut self, buf: &mut BytesMut) -> Result<Option<usize>, ProtocolError> {
        let Some((line, used)) = crlf_line(buf, "too big mbulk count string")? else {
            return Ok(None);
        };
        let count = parse_len(&line[1..])
            .filter(|n| *n <= MAX_ARGS)
            .ok_or_else(|| protocol_error("invalid multibulk length"))?;
        buf.advance(used);
        let Ok(count) = usize::try_from(count) else {
            return Ok(Some(0));
        };
        if count > 0 {
            self.partial = Some(Partial {
                remaining: count,
                args: Vec::with_capacity(count.min(1024)),
                size: used,
            });
        }
        Ok(Some(count))
    }

    /// Reads as many `$<len>\r\n<bytes>\r\n` arguments as have arrived.
    fn continue_multibulk(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, ProtocolError> {
        let max_frame = self.max_frame;
        let Some(p) = self.partial.as_mut() else {
            return Ok(None);
        };
        while p.remaining > 0 {
            let Some(&first) = buf.first() else {
                return Ok(None);
            };
            if first != b'$' {
                return Err(protocol_error(format!(
                    "expected '$', got '{}'",
                    char::from(first).escape_default()
                )));
            }
            let Some((line, header)) = crlf_line(buf, "too big bulk count string")? else {
                return Ok(None);
            };
            let len = parse_len(&line[1..])
                .filter(|n| (0..=MAX_BULK).contains(n))
                .and_then(|n| usize::try_from(n).ok())
                .ok_or_else(|| protocol_error("invalid bulk length"))?;
            let total = header + len + 2;
            if p.size + total > max_frame {
                return Err(protocol_error(format!(
                    "request too large (more than {max_frame} bytes)"
                )));
            }
            if buf.len() < total {
                return Ok(None);
            }
            if &buf[header + len..total] != b"\r\n" {
                return Err(protocol_error("expected CRLF after bulk data"));
            }
            buf.advance(header);
            p.args.push(buf.split_to(len).to_vec());
            buf.advance(2);
            p.size += total;
            p.remaining -= 1;
        }
        Ok(self.partial.take().map(|p| Frame {
            args: p.args,
            size: p.size,
        }))
    }
}

/// The first `\r\n`-terminated line of `buf` and its length with the terminator.
fn crlf_line<'a>(buf: &'a [u8], too_big: &str) -> Result<Option<(&'a [u8], usize)>, ProtocolError> {
    match buf.windows(2).position(|w| w == b"\r\n") {
        Some(end) if end <= MAX_LINE => Ok(Some((&buf[..end], end + 2))),
        Some(_) => Err(protocol_error(too_big)),
        None if buf.len() > MAX_LINE => Err(protocol_error(too_big)),
        None => Ok(None),
    }
}

/// A decimal length (`-1` allowed), or `None` for anything else.
fn parse_len(digits: &[u8]) -> Option<i64> {
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// An inline command: one line split on whitespace, with Redis-style quoting.
fn decode_inline(buf: &mut BytesMut) -> Result<Option<Frame>, ProtocolError> {
    let Some(end) = buf.iter().position(|&b| b == b'\n') else {
        if buf.len() > MAX_LINE {
            return Err(protocol_error("too big inline request"));
        }
        return Ok(None);
    };
    if end > MAX_LINE {
        return Err(protocol_error("too big inline request"));
    }
    let line = buf.split_to(end + 1);
    let text = line.strip_suffix(b"\n").unwrap_or(&line);
    let text = text.strip_suffix(b"\r").unwrap_or(text);
    Ok(Some(Frame {
        args: split_inline(text)?,
        size: end + 1,
    }))
}

/// Splits an inline command into arguments: whitespace separates, `"..."` (with `\n`, `\r`,
/// `\t`, `\\`, `\"`, `\xHH` escapes) and `'...'` (with `\'`) quote.
pub fn split_inline(line: &[u8]) -> Result<Vec<Vec<u8>>, ProtocolError> {
    let mut args = vec![];
    let mut i = 0;
    loop {
        while i < line.len() && line[i].is_ascii_whitespace() {
            i += 1;
        }
        if i == line.len() {
            return Ok(args);
        }
        let (arg, next) = match line[i] {
            b'"' => double_quoted(line, i + 1)?,
            b'\'' => single_quoted(line, i + 1)?,
            _ => {
                let end = line[i..]
                    .iter()
                    .position(u8::is_ascii_whitespace)
                    .map_or(line.len(), |p| i + p);
                (line[i..end].to_vec(), end)
            }
        };
        args.push(arg);
        i = next;
    }
}

fn unbalanced() -> ProtocolError {
    protocol_error("unbalanced quotes in request")
}

/// A closing quote at `at` must end the argument.
fn after_quote(line: &[u8], at: usize) -> Result<usize, ProtocolError> {
    match line.get(at + 1) {
        None => Ok(at + 1),
        Some(b) if b.is_ascii_whitespace() => Ok(at + 1),
        Some(_) => Err(unbalanced()),
    }
}

fn double_quoted(line: &[u8], mut i: usize) -> Result<(Vec<u8>, usize), ProtocolError> {
    let mut arg = vec![];
    loop {
        match line.get(i) {
            None => return Err(unbalanced()),
            Some(b'"') => return Ok((arg, after_quote(line, i)?)),
            Some(b'\\') => {
                let hex = line
                    .get(i + 2..i + 4)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match (line.get(i + 1), hex) {
                    (Some(b'x'), Some(byte)) => {
                        arg.push(byte);
                        i += 4;
                        continue;
                    }
                    (Some(&c), _) => arg.push(match c {
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        b'b' => 0x08,
                        b'a' => 0x07,
                        other => other,
                    }),
                    (None, _) => return Err(unbalanced()),
                }
                i += 2;
            }
            Some(&c) => {
                arg.push(c);
                i += 1;
            }
        }
    }
}

fn single_quoted(line: &[u8], mut i: usize) -> Result<(Vec<u8>, usize), ProtocolError> {
    let mut arg = vec![];
    loop {
        match line.get(i) {
            None => return Err(unbalanced()),
            Some(b'\\') if line.get(i + 1) == Some(&b'\'') => {
                arg.push(b'\'');
                i += 2;
            }
            Some(b'\'') => return Ok((arg, after_quote(line, i)?)),
            Some(&c) => {
                arg.push(c);
                i += 1;
            }
        }
    }
}

/// Whether the connection goes on after a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    Continue,
    /// Close after writing what was answered.
    Close,
    /// Answer nothing more (a `timeout` fault): wait for the client to leave.
    Hold,
}

/// The credentials a connection authenticated with. Never logged.
struct Login {
    database_id: String,
    password: String,
    read_only: bool,
    /// An ACL user a client defined (`None`: `default` or `default_ro`).
    user: Option<String>,
}

/// A transaction being queued: the commands (for the traffic history at `EXEC`) and whether one
/// was refused here, which makes `EXEC` answer `EXECABORT`.
#[derive(Default)]
struct Multi {
    queued: Vec<Vec<Vec<u8>>>,
    /// Changes to the queued commands' answers (scripts' names), by position.
    fixes: Vec<Option<ReplyFix>>,
    size: usize,
    failed: bool,
}

/// How a forwarded command counts.
enum Counts {
    /// One command: logged and in the traffic history.
    Command,
    /// Queued in a transaction: counted when `EXEC` runs.
    Queued,
    /// `EXEC`, with the commands it runs and the changes to their answers.
    Exec(Vec<Vec<Vec<u8>>>, Vec<Option<ReplyFix>>),
    /// Not counted (`MULTI`, and commands the emulator sends for the client).
    Silent,
}

/// A command on its way to the engine.
struct Forward {
    args: Vec<Vec<u8>>,
    counts: Counts,
    /// The reply is not written to the client (the emulator's own helper commands).
    hidden: bool,
    fault: Option<FaultRule>,
    /// A change to the engine's answer (a script's name).
    fix: Option<ReplyFix>,
}

/// What to do with one frame.
enum Step {
    Local(Reply, Flow),
    /// `ACL RESTTOKEN <user> <password>`, answered after the commands before it ran.
    RestToken(Vec<u8>, Vec<u8>),
    Forward(Box<Forward>),
}

/// One connection's state.
struct Session {
    peer: SocketAddr,
    login: Option<Login>,
    engine: Option<Lease>,
    multi: Option<Multi>,
}

fn upper(b: &[u8]) -> String {
    String::from_utf8_lossy(b).to_ascii_uppercase()
}

fn wrong_args(cmd: &str) -> Reply {
    Reply::err(format!(
        "ERR wrong number of arguments for '{}' command",
        cmd.to_ascii_lowercase()
    ))
}

/// The reply to a refused batch.
fn refusal_reply(refused: &Refused) -> Reply {
    match refused {
        Refused::UnknownDatabase => Reply::err("ERR database not found"),
        other => Reply::err(other.message()),
    }
}

fn owned_args(parts: &[&str]) -> Vec<Vec<u8>> {
    parts.iter().map(|p| p.as_bytes().to_vec()).collect()
}

/// The client's side of the connection while the session waits for the engine: bytes that
/// arrive are kept for later, and a client that leaves ends the wait.
struct ClientIn<'a, R> {
    reader: &'a mut R,
    buf: &'a mut BytesMut,
}

impl<R: AsyncRead + Unpin> ClientIn<'_, R> {
    /// The engine's next reply, or `Ok(None)` when the client left first.
    async fn reply(&mut self, lease: &mut Lease) -> std::io::Result<Option<(Reply, Bytes)>> {
        loop {
            if self.buf.capacity() - self.buf.len() < READ_CHUNK / 4 {
                self.buf.reserve(READ_CHUNK);
            }
            tokio::select! {
                r = lease.conn().read() => return r.map(Some),
                n = self.reader.read_buf(self.buf) => {
                    if n? == 0 {
                        return Ok(None);
                    }
                }
            }
        }
    }
}

impl Session {
    fn new(peer: SocketAddr) -> Self {
        Session {
            peer,
            login: None,
            engine: None,
            multi: None,
        }
    }

    /// Decides what to do with one frame.
    fn plan(&mut self, shared: &Shared, frame: Frame) -> Vec<Step> {
        let local = |r: Reply| vec![Step::Local(r, Flow::Continue)];
        let Some(first) = frame.args.first() else {
            return local(Reply::err("ERR empty command"));
        };
        let name = upper(first);
        let rest = &frame.args[1..];
        match name.as_str() {
            "QUIT" => return vec![Step::Local(Reply::ok(), Flow::Close)],
            "RESET" => {
                self.login = None;
                self.engine = None;
                self.multi = None;
                return local(Reply::Status("RESET".into()));
            }
            "AUTH" => return local(self.auth(shared, rest)),
            "HELLO" => return vec![self.hello(shared, rest)],
            _ => {}
        }
        let Some(database_id) = self.login.as_ref().map(|l| l.database_id.clone()) else {
            return local(Reply::err(NOAUTH));
        };
        let (max_entry, max_request) = {
            let st = shared.lock();
            st.databases
                .get(&database_id)
                .map_or((u64::MAX, u64::MAX), |d| {
                    let p = d.meta.plan();
                    (p.max_entry_size, p.max_request_size)
                })
        };
        // The plan's max request size applies to each frame (and to a transaction as a whole).
        let request = match (&self.multi, name.as_str()) {
            (Some(m), n) if !matches!(n, "EXEC" | "DISCARD") => m.size + frame.size,
            _ => frame.size,
        };
        let mut hide_users = false;
        let mut token = None;
        let checked = if request as u64 > max_request {
            Err(Reply::err(Refused::TooLarge.message()))
        } else {
            data_plane::precheck(&frame.args, Transport::Resp, max_entry).and_then(|()| {
                match acl::check(shared, &database_id, &frame.args) {
                    acl::Check::Local(r) => Err(r),
                    acl::Check::RestToken { user, password } => {
                        token = Some((user, password));
                        Ok(())
                    }
                    acl::Check::Hide => {
                        hide_users = true;
                        Ok(())
                    }
                    acl::Check::Changes | acl::Check::Pass => Ok(()),
                }
            })
        };
        if let Err(e) = checked {
            if let Some(m) = self.multi.as_mut()
                && e.is_error()
            {
                m.failed = true;
            }
            record_call(
                shared,
                &endpoint_of(&frame.args),
                if e.is_error() { 400 } else { 200 },
                &database_id,
                None,
                Instant::now(),
            );
            return local(e);
        }
        if let Some((user, password)) = token {
            record_call(
                shared,
                &endpoint_of(&frame.args),
                200,
                &database_id,
                None,
                Instant::now(),
            );
            return vec![Step::RestToken(user, password)];
        }
        let fault = |endpoint: &str| shared.faults_lock().take(endpoint, Some(&database_id));
        // Scripts written for Upstash, as Redis takes them.
        let (frame, fix) = match shared.engines.scripts().translate(&frame.args) {
            Some((args, fix)) => (
                Frame {
                    args,
                    size: frame.size,
                },
                fix,
            ),
            None => (frame, hide_users.then_some(ReplyFix::HideUsers)),
        };
        let forward =
            |frame: Frame, counts: Counts, fault: Option<FaultRule>, fix: Option<ReplyFix>| {
                vec![Step::Forward(Box::new(Forward {
                    args: frame.args,
                    counts,
                    hidden: false,
                    fault,
                    fix,
                }))]
            };
        let in_multi = self.multi.is_some();
        match name.as_str() {
            "MULTI" if !in_multi => {
                self.multi = Some(Multi::default());
                forward(frame, Counts::Silent, None, None)
            }
            "EXEC" if in_multi => {
                let m = self.multi.take().unwrap_or_default();
                if m.failed {
                    // Discard on the engine, answer as Redis does for a refused command.
                    return vec![
                        Step::Forward(Box::new(Forward {
                            args: owned_args(&["DISCARD"]),
                            counts: Counts::Silent,
                            hidden: true,
                            fault: None,
                            fix: None,
                        })),
                        Step::Local(Reply::err(EXECABORT), Flow::Continue),
                    ];
                }
                let f = fault("data:multi-exec");
                vec![Step::Forward(Box::new(Forward {
                    args: frame.args,
                    counts: Counts::Exec(m.queued, m.fixes),
                    hidden: false,
                    fault: f,
                    fix: None,
                }))]
            }
            "DISCARD" if in_multi => {
                self.multi = None;
                forward(frame, Counts::Silent, None, None)
            }
            "MULTI" | "WATCH" if in_multi => forward(frame, Counts::Silent, None, None),
            _ if in_multi => {
                if let Some(m) = self.multi.as_mut() {
                    m.queued.push(frame.args.clone());
                    m.fixes.push(fix);
                    m.size += frame.size;
                }
                forward(frame, Counts::Queued, None, None)
            }
            _ => {
                let f = fault(&endpoint_of(&frame.args));
                forward(frame, Counts::Command, f, fix)
            }
        }
    }

    /// `AUTH <password>` / `AUTH <user> <password>` (`default` or `default_ro`).
    fn auth(&mut self, shared: &Shared, args: &[Vec<u8>]) -> Reply {
        let (user, password): (&[u8], &[u8]) = match args {
            [p] => (b"default", p),
            [u, p] => (u, p),
            _ => return wrong_args("AUTH"),
        };
        match self.log_in(shared, user, password) {
            Ok(()) => Reply::ok(),
            Err(e) => e,
        }
    }

    /// Looks the user and password up; a failed attempt keeps an earlier login (as Redis does).
    fn log_in(&mut self, shared: &Shared, user: &[u8], password: &[u8]) -> Result<(), Reply> {
        let (Ok(user), Ok(password)) = (std::str::from_utf8(user), std::str::from_utf8(password))
        else {
            return Err(Reply::err(WRONGPASS));
        };
        let Some(found) = shared.lock().find_password(user, password) else {
            return Err(Reply::err(WRONGPASS));
        };
        let user = found.user.map(|(u, _)| u);
        let same = self.login.as_ref().is_some_and(|l| {
            l.database_id == found.database_id && l.read_only == found.read_only && l.user == user
        });
        if !same {
            // Another database or user: a new engine connection on the next command.
            self.engine = None;
            self.multi = None;
        }
        self.login = Some(Login {
            database_id: found.database_id,
            password: password.to_string(),
            read_only: found.read_only,
            user,
        });
        Ok(())
    }

    /// `HELLO [2 [AUTH user pass] [SETNAME name]]`: RESP2 only; the answer is the engine's.
    fn hello(&mut self, shared: &Shared, args: &[Vec<u8>]) -> Step {
        let local = |r: Reply| Step::Local(r, Flow::Continue);
        let mut options = args;
        if let Some((version, rest)) = args.split_first() {
            match parse_len(version) {
                Some(2) => {}
                Some(_) => return local(Reply::err("NOPROTO unsupported protocol version")),
                None => {
                    return local(Reply::err(
                        "ERR Protocol version is not an integer or out of range",
                    ));
                }
            }
            options = rest;
        }
        let mut setname = None;
        while let Some((option, rest)) = options.split_first() {
            match (upper(option).as_str(), rest) {
                ("AUTH", [user, password, tail @ ..]) => {
                    if let Err(e) = self.log_in(shared, user, password) {
                        return local(e);
                    }
                    options = tail;
                }
                ("SETNAME", [name, tail @ ..]) => {
                    setname = Some(name.clone());
                    options = tail;
                }
                (other, _) => {
                    return local(Reply::err(format!(
                        "ERR Syntax error in HELLO option '{}'",
                        other.to_ascii_lowercase()
                    )));
                }
            }
        }
        if self.login.is_none() {
            return local(Reply::err(NOAUTH_HELLO));
        }
        let mut hello = owned_args(&["HELLO", "2"]);
        if let Some(name) = setname {
            hello.push(b"SETNAME".to_vec());
            hello.push(name);
        }
        Step::Forward(Box::new(Forward {
            args: hello,
            counts: Counts::Silent,
            hidden: false,
            fault: None,
            fix: None,
        }))
    }

    /// Answers a batch of pipelined frames, in order.
    async fn process<R: AsyncRead + Unpin>(
        &mut self,
        shared: &Shared,
        frames: Vec<Frame>,
        out: &mut Vec<u8>,
        client: &mut ClientIn<'_, R>,
    ) -> Flow {
        let mut group: Vec<Forward> = Vec::new();
        for frame in frames {
            for step in self.plan(shared, frame) {
                match step {
                    Step::Local(reply, flow) => {
                        let f = self.flush(shared, &mut group, out, client).await;
                        if f != Flow::Continue {
                            return f;
                        }
                        reply.to_resp2(out);
                        if flow != Flow::Continue {
                            return flow;
                        }
                    }
                    Step::RestToken(user, password) => {
                        let f = self.flush(shared, &mut group, out, client).await;
                        if f != Flow::Continue {
                            return f;
                        }
                        acl::rest_token(shared, &self.database_id(), &user, &password)
                            .to_resp2(out);
                    }
                    Step::Forward(fw) => {
                        let Some(fault) = fw.fault.clone() else {
                            group.push(*fw);
                            continue;
                        };
                        let f = self.flush(shared, &mut group, out, client).await;
                        if f != Flow::Continue {
                            return f;
                        }
                        let spec = &fault.spec;
                        if let Some(ms) = spec.latency_ms {
                            tokio::time::sleep(Duration::from_millis(ms)).await;
                        }
                        let database_id = self.database_id();
                        let endpoint = endpoint_for(&fw);
                        if spec.timeout {
                            record_call(
                                shared,
                                &endpoint,
                                0,
                                &database_id,
                                Some(fault.id),
                                Instant::now(),
                            );
                            return Flow::Hold;
                        }
                        if let Some(status) = spec.error_status() {
                            let text = spec.body.clone().unwrap_or_else(|| {
                                let reason = http::StatusCode::from_u16(status)
                                    .ok()
                                    .and_then(|s| s.canonical_reason())
                                    .unwrap_or("error");
                                format!("ERR {}", reason.to_ascii_lowercase())
                            });
                            record_call(
                                shared,
                                &endpoint,
                                status,
                                &database_id,
                                Some(fault.id),
                                Instant::now(),
                            );
                            Reply::err(text).to_resp2(out);
                            continue;
                        }
                        group.push(*fw);
                        let f = self.flush(shared, &mut group, out, client).await;
                        if f != Flow::Continue {
                            return f;
                        }
                    }
                }
            }
        }
        self.flush(shared, &mut group, out, client).await
    }

    fn database_id(&self) -> String {
        self.login
            .as_ref()
            .map(|l| l.database_id.clone())
            .unwrap_or_default()
    }

    /// Sends the grouped commands to the engine and writes their replies.
    async fn flush<R: AsyncRead + Unpin>(
        &mut self,
        shared: &Shared,
        group: &mut Vec<Forward>,
        out: &mut Vec<u8>,
        client: &mut ClientIn<'_, R>,
    ) -> Flow {
        if group.is_empty() {
            return Flow::Continue;
        }
        let batch = std::mem::take(group);
        let started = Instant::now();
        let Some(login) = self.login.as_ref() else {
            for _ in &batch {
                Reply::err(NOAUTH).to_resp2(out);
            }
            return Flow::Continue;
        };
        let database_id = login.database_id.clone();
        let caller = Caller {
            database_id: &login.database_id,
            read_only: login.read_only,
            password: Some(&login.password),
            peer: self.peer.ip(),
            user: login.user.as_deref(),
        };
        let acl_changes = batch.iter().any(|f| match &f.counts {
            Counts::Exec(queued, _) => queued.iter().any(|q| acl::changes_users(q)),
            Counts::Command => acl::changes_users(&f.args),
            Counts::Queued | Counts::Silent => false,
        });
        // Sizes were checked frame by frame.
        let admitted = match data_plane::admit(shared, &caller, 0) {
            Ok(a) => a,
            Err(refused) => {
                let reply = refusal_reply(&refused);
                for f in batch.iter().filter(|f| !f.hidden) {
                    reply.to_resp2(out);
                    if !matches!(f.counts, Counts::Silent | Counts::Queued) {
                        record_call(
                            shared,
                            &endpoint_for(f),
                            refused.status().as_u16(),
                            &database_id,
                            None,
                            started,
                        );
                    }
                }
                if refused.status() == http::StatusCode::UNAUTHORIZED {
                    // The credentials stopped working (password reset, database deleted).
                    self.login = None;
                    self.engine = None;
                    return Flow::Close;
                }
                return Flow::Continue;
            }
        };
        if self.engine.is_none() {
            match shared
                .engines
                .checkout(
                    &database_id,
                    admitted.settings,
                    &admitted.users,
                    caller.who(),
                )
                .await
            {
                Ok(mut lease) => {
                    lease.keep_private();
                    self.engine = Some(lease);
                }
                Err(e) => {
                    let refused = data_plane::engine_error(e);
                    let reply = refusal_reply(&refused);
                    if refused == Refused::WrongPassword {
                        for _ in batch.iter().filter(|f| !f.hidden) {
                            reply.to_resp2(out);
                        }
                        self.login = None;
                        return Flow::Close;
                    }
                    for _ in batch.iter().filter(|f| !f.hidden) {
                        reply.to_resp2(out);
                    }
                    return Flow::Continue;
                }
            }
        }
        let lease = self.engine.as_mut().expect("checked out above");
        let commands: Vec<&[Vec<u8>]> = batch.iter().map(|f| f.args.as_slice()).collect();
        let mut ran_owned: Vec<(Vec<Vec<u8>>, f64, bool)> = Vec::new();
        let result: std::io::Result<Flow> = async {
            lease.conn().send(&commands).await?;
            let mut last = Instant::now();
            for f in &batch {
                let Some((reply, raw)) = client.reply(lease).await? else {
                    return Ok(Flow::Close);
                };
                let now = Instant::now();
                let latency_ms = (now - last).as_secs_f64() * 1000.0;
                last = now;
                let status = if reply.is_error() { 400 } else { 200 };
                let fault = f.fault.as_ref();
                match &f.counts {
                    Counts::Command => {
                        ran_owned.push((f.args.clone(), latency_ms, reply.is_error()));
                        record_call(
                            shared,
                            &endpoint_for(f),
                            status,
                            &database_id,
                            fault.map(|x| x.id),
                            started,
                        );
                    }
                    Counts::Exec(queued, _) => {
                        if let Reply::Array(items) = &reply {
                            let per = latency_ms / items.len().max(1) as f64;
                            for (q, r) in queued.iter().zip(items) {
                                ran_owned.push((q.clone(), per, r.is_error()));
                            }
                        }
                        record_call(
                            shared,
                            &endpoint_for(f),
                            status,
                            &database_id,
                            fault.map(|x| x.id),
                            started,
                        );
                    }
                    Counts::Queued | Counts::Silent => {}
                }
                if f.hidden {
                    continue;
                }
                if let Some(rule) = fault {
                    if rule.spec.lose_response {
                        return Ok(Flow::Close);
                    }
                    if rule.spec.truncate {
                        out.extend_from_slice(&raw[..raw.len() / 2]);
                        return Ok(Flow::Close);
                    }
                }
                match (&f.fix, &f.counts) {
                    (Some(fix), _) => fix.apply(reply).to_resp2(out),
                    (None, Counts::Exec(_, fixes)) if fixes.iter().any(Option::is_some) => {
                        match reply {
                            Reply::Array(items) => Reply::Array(
                                items
                                    .into_iter()
                                    .zip(fixes.iter().chain(std::iter::repeat(&None)))
                                    .map(|(r, fix)| match fix {
                                        Some(fix) => fix.apply(r),
                                        None => r,
                                    })
                                    .collect(),
                            )
                            .to_resp2(out),
                            other => other.to_resp2(out),
                        }
                    }
                    _ => out.extend_from_slice(&raw),
                }
            }
            Ok(Flow::Continue)
        }
        .await;
        let flow = match result {
            Ok(flow) => flow,
            Err(e) => {
                // The engine went away (stopped, restored, deleted): answer and reconnect later.
                tracing::debug!(database_id = %database_id, error = %e, "engine connection lost");
                self.engine = None;
                self.multi = None;
                Reply::err(format!("ERR database unavailable: {e}")).to_resp2(out);
                Flow::Continue
            }
        };
        let ran: Vec<Ran<'_>> = ran_owned
            .iter()
            .map(|(a, l, failed)| Ran {
                args: a,
                latency_ms: *l,
                failed: *failed,
            })
            .collect();
        if acl_changes {
            acl::sync(shared, &database_id).await;
        }
        let sample = shared.engines.sample(&database_id, false).await;
        data_plane::record(shared, &database_id, &ran, sample);
        flow
    }
}

/// `data:<command>` (lowercase).
fn endpoint_of(args: &[Vec<u8>]) -> String {
    match args.first() {
        Some(c) => format!("data:{}", String::from_utf8_lossy(c).to_ascii_lowercase()),
        None => "data:unknown".into(),
    }
}

fn endpoint_for(f: &Forward) -> String {
    match f.counts {
        Counts::Exec(..) => "data:multi-exec".into(),
        _ => endpoint_of(&f.args),
    }
}

/// Adds a data-plane entry to the call log: method `RESP`, no path, endpoint `data:<command>` or
/// `data:multi-exec`. Arguments (and so passwords) are never recorded.
fn record_call(
    shared: &Shared,
    endpoint: &str,
    status: u16,
    database_id: &str,
    fault: Option<u64>,
    started: Instant,
) {
    tracing::debug!(
        plane = "data",
        method = "RESP",
        endpoint = %endpoint,
        status,
        "request"
    );
    shared.calls_lock().push(Call {
        seq: 0,
        time: jiff::Timestamp::now().to_string(),
        plane: "data".into(),
        account: None,
        method: "RESP".into(),
        path: String::new(),
        endpoint: endpoint.to_string(),
        status,
        database_id: Some(database_id.to_string()),
        fault,
        duration_ms: started.elapsed().as_secs_f64() * 1000.0,
    });
}

/// Accepts RESP connections until shutdown; one task per connection.
pub async fn serve(
    listener: TcpListener,
    tls: TlsAcceptor,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
) {
    server::accept_until_shutdown(listener, &shutdown, |stream, peer| {
        tokio::spawn(serve_connection(
            stream,
            peer,
            tls.clone(),
            shared.clone(),
            shutdown.clone(),
        ));
    })
    .await;
}

/// TLS handshake, then the session until the client leaves, is closed, or shutdown.
async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    tls: TlsAcceptor,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
) {
    let Some(stream) = server::tls_handshake(&tls, stream, peer, &shutdown).await else {
        return;
    };
    tokio::select! {
        r = run_session(stream, peer, &shared) => {
            if let Err(e) = r {
                tracing::debug!(error = %e, %peer, "RESP connection ended");
            }
        }
        _ = shutdown.cancelled() => {}
    }
}

/// Reads frames, answers each batch (pipelined replies are written together), until EOF or close.
async fn run_session<S>(io: S, peer: SocketAddr, shared: &Shared) -> std::io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (mut reader, mut writer) = tokio::io::split(io);
    let mut session = Session::new(peer);
    let mut decoder = Decoder::new(MAX_FRAME);
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    let mut out = Vec::new();
    loop {
        let mut frames = Vec::new();
        let mut protocol_error = None;
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(frame)) => frames.push(frame),
                Ok(None) => break,
                Err(e) => {
                    protocol_error = Some(e);
                    break;
                }
            }
        }
        if frames.is_empty() && protocol_error.is_none() {
            // Everything buffered is answered: wait for more.
            if buf.capacity() - buf.len() < READ_CHUNK / 4 {
                buf.reserve(READ_CHUNK);
            }
            if reader.read_buf(&mut buf).await? == 0 {
                return Ok(());
            }
            continue;
        }
        let mut flow = Flow::Continue;
        if !frames.is_empty() {
            let mut client = ClientIn {
                reader: &mut reader,
                buf: &mut buf,
            };
            flow = session.process(shared, frames, &mut out, &mut client).await;
        }
        if flow == Flow::Continue
            && let Some(e) = protocol_error
        {
            Reply::err(format!("ERR {e}")).to_resp2(&mut out);
            flow = Flow::Close;
        }
        if !out.is_empty() {
            writer.write_all(&out).await?;
            writer.flush().await?;
            out.clear();
        }
        match flow {
            Flow::Close => {
                let _ = writer.shutdown().await;
                return Ok(());
            }
            Flow::Hold => {
                // Never answer again; drain until the client gives up.
                let mut sink = [0u8; 4096];
                while reader.read(&mut sink).await? > 0 {}
                return Ok(());
            }
            // Frames that arrived while the engine answered are decoded next.
            Flow::Continue => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(v: &[&str]) -> Vec<Vec<u8>> {
        v.iter().map(|s| s.as_bytes().to_vec()).collect()
    }

    fn decode_all(input: &[u8]) -> Result<Vec<Vec<Vec<u8>>>, ProtocolError> {
        let mut d = Decoder::new(MAX_FRAME);
        let mut buf = BytesMut::from(input);
        let mut out = vec![];
        while let Some(f) = d.decode(&mut buf)? {
            out.push(f.args);
        }
        Ok(out)
    }

    #[test]
    fn decodes_multibulk_frames() {
        let mut d = Decoder::new(MAX_FRAME);
        let mut buf =
            BytesMut::from(&b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\n*1\r\n$4\r\nPING\r\n"[..]);
        let f = d.decode(&mut buf).unwrap().unwrap();
        assert_eq!(f.args, vec![b"SET".to_vec(), b"k".to_vec(), vec![]]);
        assert_eq!(f.size, 4 + 9 + 7 + 6);
        let f = d.decode(&mut buf).unwrap().unwrap();
        assert_eq!(f.args, args(&["PING"]));
        assert_eq!(d.decode(&mut buf).unwrap(), None);
        assert!(buf.is_empty());
    }

    #[test]
    fn binary_values_keep_their_bytes() {
        let got = decode_all(b"*2\r\n$3\r\nGET\r\n$4\r\na\r\nb\r\n").unwrap();
        assert_eq!(got, vec![vec![b"GET".to_vec(), b"a\r\nb".to_vec()]]);
    }

    #[test]
    fn partial_frames_wait_for_more_bytes() {
        let whole = b"*2\r\n$3\r\nGET\r\n$10\r\n0123456789\r\n";
        // Every split point: nothing is returned early, the result is the same.
        for cut in 0..whole.len() {
            let mut d = Decoder::new(MAX_FRAME);
            let mut buf = BytesMut::from(&whole[..cut]);
            assert_eq!(d.decode(&mut buf).unwrap(), None, "cut at {cut}");
            buf.extend_from_slice(&whole[cut..]);
            let f = d.decode(&mut buf).unwrap().unwrap();
            assert_eq!(f.args, args(&["GET", "0123456789"]), "cut at {cut}");
            assert_eq!(f.size, whole.len());
        }
        // Byte by byte.
        let mut d = Decoder::new(MAX_FRAME);
        let mut buf = BytesMut::new();
        let mut frames = vec![];
        for b in whole.iter().chain(b"PING\r\n") {
            buf.extend_from_slice(&[*b]);
            if let Some(f) = d.decode(&mut buf).unwrap() {
                frames.push(f.args);
            }
        }
        assert_eq!(frames, vec![args(&["GET", "0123456789"]), args(&["PING"])]);
    }

    #[test]
    fn inline_commands() {
        assert_eq!(
            decode_all(b"PING\r\nSET k   v\n\r\n  \r\nECHO \"a b\\n\\x41\" 'it\\'s'\r\n").unwrap(),
            vec![
                args(&["PING"]),
                args(&["SET", "k", "v"]),
                args(&["ECHO", "a b\nA", "it's"]),
            ]
        );
        assert_eq!(decode_all(b"GET k").unwrap(), Vec::<Vec<Vec<u8>>>::new());
        assert_eq!(
            decode_all(b"ECHO \"open\r\n").unwrap_err().to_string(),
            "Protocol error: unbalanced quotes in request"
        );
        assert_eq!(
            decode_all(b"ECHO \"a\"b\r\n").unwrap_err().to_string(),
            "Protocol error: unbalanced quotes in request"
        );
    }

    #[test]
    fn empty_arrays_are_skipped() {
        assert_eq!(
            decode_all(b"*0\r\n*-1\r\n*1\r\n$4\r\nPING\r\n").unwrap(),
            vec![args(&["PING"])]
        );
    }

    #[test]
    fn garbage_is_a_protocol_error() {
        let err = |input: &[u8]| decode_all(input).unwrap_err().to_string();
        assert_eq!(err(b"*x\r\n"), "Protocol error: invalid multibulk length");
        assert_eq!(
            err(b"*99999999999\r\n"),
            "Protocol error: invalid multibulk length"
        );
        assert_eq!(
            err(b"*1\r\n+OK\r\n"),
            "Protocol error: expected '$', got '+'"
        );
        assert_eq!(err(b"*1\r\n$-5\r\n"), "Protocol error: invalid bulk length");
        assert_eq!(
            err(b"*1\r\n$abc\r\n"),
            "Protocol error: invalid bulk length"
        );
        assert_eq!(
            err(b"*1\r\n$2\r\nabcd\r\n"),
            "Protocol error: expected CRLF after bulk data"
        );
        assert_eq!(
            err(b"*1\r\n\x00\x01\r\n"),
            "Protocol error: expected '$', got '\\u{0}'"
        );
    }

    #[test]
    fn oversize_frames_are_refused_before_their_bytes_arrive() {
        let mut d = Decoder::new(1024);
        let mut buf = BytesMut::from(&b"*2\r\n$3\r\nSET\r\n$2000\r\n"[..]);
        assert_eq!(
            d.decode(&mut buf).unwrap_err().to_string(),
            "Protocol error: request too large (more than 1024 bytes)"
        );
        // The sum of arguments counts, not each one alone.
        let mut d = Decoder::new(30);
        let mut buf = BytesMut::from(&b"*3\r\n$10\r\n0123456789\r\n$10\r\n0123456789\r\n"[..]);
        assert!(d.decode(&mut buf).is_err());
        // Unterminated header and inline lines are capped too.
        let long = vec![b'a'; MAX_LINE + 1];
        assert_eq!(
            decode_all(&long).unwrap_err().to_string(),
            "Protocol error: too big inline request"
        );
        let mut header = b"*1".to_vec();
        header.extend(std::iter::repeat_n(b'1', MAX_LINE));
        assert_eq!(
            decode_all(&header).unwrap_err().to_string(),
            "Protocol error: too big mbulk count string"
        );
        let mut bulk = b"*1\r\n$".to_vec();
        bulk.extend(std::iter::repeat_n(b'1', MAX_LINE));
        assert_eq!(
            decode_all(&bulk).unwrap_err().to_string(),
            "Protocol error: too big bulk count string"
        );
        assert_eq!(
            decode_all(b"*1\r\n$600000000\r\n").unwrap_err().to_string(),
            "Protocol error: invalid bulk length"
        );
    }
}
