//! The Redis protocol listener: RESP2 over TLS for every database, routed by password, the way
//! clients reach Upstash at `rediss://default:<password>@<endpoint>:<port>`.
//!
//! Connection commands (`AUTH`, `HELLO`, `SELECT`, `CLIENT`, `MULTI`/`EXEC`/`DISCARD`, `QUIT`,
//! `RESET`) are answered here; every other command runs through [`data_plane::execute`], the
//! path the REST API uses, so the commands, stats, plan limits, allow-list, database state and
//! call log are the same for both. A connection's password is checked against the database's
//! current one on every batch: after a password reset the next command gets `WRONGPASS` and the
//! connection is closed.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use bytes::{Buf as _, BytesMut};
use http::StatusCode;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::Shared;
use crate::calllog::Call;
use crate::data_plane::{self, Caller, Parsed, Refused, WRONGPASS};
use crate::server;
use crate::store::Reply;

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

/// The version `HELLO` reports (the one `INFO` reports too).
const SERVER_VERSION: &str = "6.2.6";
const NOAUTH: &str = "NOAUTH Authentication required.";
const NOAUTH_HELLO: &str = "NOAUTH HELLO must be called with the client already authenticated, \
     otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client \
     and select the RESP protocol version at the same time";
const EXECABORT: &str = "EXECABORT Transaction discarded because of previous errors.";

/// Connection ids (`CLIENT ID`, `HELLO`), unique within the process.
static NEXT_CLIENT_ID: AtomicU64 = AtomicU64::new(1);

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

/// Whether the connection goes on after a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    Continue,
    Close,
}

/// The credentials a connection authenticated with. Never logged.
struct Login {
    database_id: String,
    password: String,
}

/// Commands queued by `MULTI`.
#[derive(Default)]
struct Transaction {
    queued: Vec<Vec<Vec<u8>>>,
    size: usize,
    /// A command failed its check while queueing: `EXEC` answers `EXECABORT`.
    failed: bool,
}

/// One connection's state.
struct Session {
    id: u64,
    peer: SocketAddr,
    login: Option<Login>,
    name: Option<Vec<u8>>,
    lib_name: Option<Vec<u8>>,
    lib_ver: Option<Vec<u8>>,
    transaction: Option<Transaction>,
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

fn bulk(s: &str) -> Reply {
    Reply::Bulk(s.as_bytes().to_vec())
}

/// Client names are printable ASCII without spaces (Redis's rule).
fn valid_client_name(name: &[u8]) -> bool {
    name.iter().all(|b| (b'!'..=b'~').contains(b))
}

/// The reply to a refused batch.
fn refusal_reply(refused: &Refused) -> Reply {
    match refused {
        Refused::UnknownDatabase => Reply::err("ERR database not found"),
        other => Reply::err(other.message()),
    }
}

impl Session {
    fn new(peer: SocketAddr) -> Self {
        Session {
            id: NEXT_CLIENT_ID.fetch_add(1, Ordering::Relaxed),
            peer,
            login: None,
            name: None,
            lib_name: None,
            lib_ver: None,
            transaction: None,
        }
    }

    /// Answers one command.
    fn handle(&mut self, shared: &Shared, frame: Frame) -> (Reply, Flow) {
        let Some(first) = frame.args.first() else {
            return (Reply::err("ERR empty command"), Flow::Continue);
        };
        let name = upper(first);
        let args = &frame.args[1..];
        let reply = match name.as_str() {
            "QUIT" => return (Reply::ok(), Flow::Close),
            "RESET" => self.reset(),
            "AUTH" => self.auth(shared, args),
            "HELLO" => self.hello(shared, args),
            _ if self.login.is_none() => Reply::err(NOAUTH),
            _ if self.transaction.is_some() => return self.in_transaction(shared, &name, frame),
            "MULTI" => self.multi(args),
            "EXEC" => Reply::err("ERR EXEC without MULTI"),
            "DISCARD" => Reply::err("ERR DISCARD without MULTI"),
            "SELECT" => select(args),
            "CLIENT" => self.client(args),
            _ => return self.run(shared, Parsed::Single(frame.args), frame.size),
        };
        (reply, Flow::Continue)
    }

    /// `RESET`: back to a fresh, unauthenticated connection.
    fn reset(&mut self) -> Reply {
        self.login = None;
        self.name = None;
        self.transaction = None;
        Reply::Status("RESET".into())
    }

    /// `AUTH <password>` / `AUTH default <password>`.
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

    /// Looks the password up; a failed attempt keeps an earlier login (as Redis does).
    fn log_in(&mut self, shared: &Shared, user: &[u8], password: &[u8]) -> Result<(), Reply> {
        let found = std::str::from_utf8(password)
            .ok()
            .filter(|_| user == b"default")
            .and_then(|p| Some((shared.lock().find_password(p)?, p)));
        match found {
            Some((database_id, password)) => {
                self.login = Some(Login {
                    database_id,
                    password: password.to_string(),
                });
                Ok(())
            }
            None => Err(Reply::err(WRONGPASS)),
        }
    }

    /// `HELLO [2 [AUTH user pass] [SETNAME name]]`: RESP2 only.
    fn hello(&mut self, shared: &Shared, args: &[Vec<u8>]) -> Reply {
        let mut options = args;
        if let Some((version, rest)) = args.split_first() {
            match parse_len(version) {
                Some(2) => {}
                Some(_) => return Reply::err("NOPROTO unsupported protocol version"),
                None => {
                    return Reply::err("ERR Protocol version is not an integer or out of range");
                }
            }
            options = rest;
        }
        let mut setname = None;
        while let Some((option, rest)) = options.split_first() {
            match (upper(option).as_str(), rest) {
                ("AUTH", [user, password, tail @ ..]) => {
                    if let Err(e) = self.log_in(shared, user, password) {
                        return e;
                    }
                    options = tail;
                }
                ("SETNAME", [name, tail @ ..]) => {
                    setname = Some(name.clone());
                    options = tail;
                }
                (other, _) => {
                    return Reply::err(format!("ERR Syntax error in HELLO option '{other}'"));
                }
            }
        }
        if self.login.is_none() {
            return Reply::err(NOAUTH_HELLO);
        }
        if let Some(name) = setname
            && let Err(e) = self.set_name(name)
        {
            return e;
        }
        Reply::Array(vec![
            bulk("server"),
            bulk("redis"),
            bulk("version"),
            bulk(SERVER_VERSION),
            bulk("proto"),
            Reply::Int(2),
            bulk("id"),
            Reply::Int(i64::try_from(self.id).unwrap_or(i64::MAX)),
            bulk("mode"),
            bulk("standalone"),
            bulk("role"),
            bulk("master"),
            bulk("modules"),
            Reply::Array(vec![]),
        ])
    }

    fn set_name(&mut self, name: Vec<u8>) -> Result<(), Reply> {
        if !valid_client_name(&name) {
            return Err(Reply::err(
                "ERR Client names cannot contain spaces, newlines or special characters.",
            ));
        }
        self.name = (!name.is_empty()).then_some(name);
        Ok(())
    }

    /// `CLIENT SETNAME|GETNAME|ID|INFO|SETINFO`.
    fn client(&mut self, args: &[Vec<u8>]) -> Reply {
        let Some((sub, rest)) = args.split_first() else {
            return wrong_args("CLIENT");
        };
        let sub = upper(sub);
        match (sub.as_str(), rest) {
            ("SETNAME", [name]) => match self.set_name(name.clone()) {
                Ok(()) => Reply::ok(),
                Err(e) => e,
            },
            ("GETNAME", []) => self.name.clone().map_or(Reply::Nil, Reply::Bulk),
            ("ID", []) => Reply::Int(i64::try_from(self.id).unwrap_or(i64::MAX)),
            ("INFO", []) => Reply::Bulk(self.info_line().into_bytes()),
            ("SETINFO", [attr, value]) => match upper(attr).as_str() {
                "LIB-NAME" => {
                    self.lib_name = Some(value.clone());
                    Reply::ok()
                }
                "LIB-VER" => {
                    self.lib_ver = Some(value.clone());
                    Reply::ok()
                }
                other => Reply::err(format!("ERR Unrecognized option '{other}'")),
            },
            ("SETNAME" | "GETNAME" | "ID" | "INFO" | "SETINFO", _) => Reply::err(format!(
                "ERR wrong number of arguments for 'client|{}' command",
                sub.to_ascii_lowercase()
            )),
            _ => Reply::err(format!(
                "ERR unknown subcommand '{}'. Try CLIENT HELP.",
                sub.to_ascii_lowercase()
            )),
        }
    }

    /// The `CLIENT INFO` line.
    fn info_line(&self) -> String {
        let text = |v: &Option<Vec<u8>>| {
            v.as_deref()
                .map(String::from_utf8_lossy)
                .unwrap_or_default()
                .into_owned()
        };
        let multi = self
            .transaction
            .as_ref()
            .map_or(-1, |t| i64::try_from(t.queued.len()).unwrap_or(i64::MAX));
        format!(
            "id={} addr={} name={} db=0 multi={multi} resp=2 lib-name={} lib-ver={}\n",
            self.id,
            self.peer,
            text(&self.name),
            text(&self.lib_name),
            text(&self.lib_ver),
        )
    }

    fn multi(&mut self, args: &[Vec<u8>]) -> Reply {
        if !args.is_empty() {
            return wrong_args("MULTI");
        }
        self.transaction = Some(Transaction::default());
        Reply::ok()
    }

    /// Inside `MULTI`: queue commands until `EXEC` or `DISCARD`.
    fn in_transaction(&mut self, shared: &Shared, name: &str, frame: Frame) -> (Reply, Flow) {
        let Some(tx) = self.transaction.as_mut() else {
            return (Reply::err("ERR EXEC without MULTI"), Flow::Continue);
        };
        let reply = match name {
            "EXEC" => return self.exec(shared),
            "DISCARD" => {
                self.transaction = None;
                Reply::ok()
            }
            "MULTI" => Reply::err("ERR MULTI calls can not be nested"),
            "WATCH" => Reply::err("ERR WATCH inside MULTI is not allowed"),
            "SELECT" | "CLIENT" => {
                tx.failed = true;
                Reply::err("ERR Command not allowed inside a transaction")
            }
            _ if tx.size + frame.size > MAX_FRAME => {
                tx.failed = true;
                Reply::err(Refused::TooLarge.message())
            }
            _ => match data_plane::precheck(&frame.args, false) {
                Ok(_) => {
                    tx.size += frame.size;
                    tx.queued.push(frame.args);
                    Reply::Status("QUEUED".into())
                }
                Err(e) => {
                    tx.failed = true;
                    e
                }
            },
        };
        (reply, Flow::Continue)
    }

    fn exec(&mut self, shared: &Shared) -> (Reply, Flow) {
        let Some(tx) = self.transaction.take() else {
            return (Reply::err("ERR EXEC without MULTI"), Flow::Continue);
        };
        if tx.failed {
            return (Reply::err(EXECABORT), Flow::Continue);
        }
        self.run(shared, Parsed::Multi(tx.queued), tx.size)
    }

    /// Runs data commands through the data plane's shared path and logs the call.
    fn run(&mut self, shared: &Shared, parsed: Parsed, size: usize) -> (Reply, Flow) {
        let Some(login) = self.login.as_ref() else {
            return (Reply::err(NOAUTH), Flow::Continue);
        };
        let started = Instant::now();
        let caller = Caller {
            database_id: &login.database_id,
            read_only: false,
            password: Some(&login.password),
            peer: self.peer.ip(),
        };
        let result = data_plane::execute(shared, &caller, size, &parsed);
        let (reply, status) = match result {
            Ok(ex) => match parsed {
                Parsed::Single(_) => {
                    let reply = ex.replies.into_iter().next().unwrap_or(Reply::Nil);
                    let status = if reply.is_error() {
                        StatusCode::BAD_REQUEST
                    } else {
                        StatusCode::OK
                    };
                    (reply, status)
                }
                _ => (Reply::Array(ex.replies), StatusCode::OK),
            },
            Err(refused) => (refusal_reply(&refused), refused.status()),
        };
        let database_id = login.database_id.clone();
        record_call(shared, &parsed, status, database_id, started);
        // The credentials stopped working (password reset, database deleted): end the session.
        if status == StatusCode::UNAUTHORIZED {
            self.login = None;
            return (reply, Flow::Close);
        }
        (reply, Flow::Continue)
    }
}

/// `SELECT 0` is the only database.
fn select(args: &[Vec<u8>]) -> Reply {
    let [index] = args else {
        return wrong_args("SELECT");
    };
    match parse_len(index) {
        Some(0) => Reply::ok(),
        Some(_) => Reply::err("ERR DB index is out of range"),
        None => Reply::err("ERR value is not an integer or out of range"),
    }
}

/// Adds a data-plane entry to the call log: method `RESP`, no path, endpoint `data:<command>` or
/// `data:multi-exec`. Arguments (and so passwords) are never recorded.
fn record_call(
    shared: &Shared,
    parsed: &Parsed,
    status: StatusCode,
    database_id: String,
    started: Instant,
) {
    let endpoint = parsed.endpoint();
    tracing::debug!(
        plane = "data",
        method = "RESP",
        endpoint = %endpoint,
        status = status.as_u16(),
        "request"
    );
    shared.calls_lock().push(Call {
        seq: 0,
        time: jiff::Timestamp::now().to_string(),
        plane: "data".into(),
        account: None,
        method: "RESP".into(),
        path: String::new(),
        endpoint,
        status: status.as_u16(),
        database_id: Some(database_id),
        fault: None,
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

/// Reads frames, answers each (pipelined replies are written together), until EOF or close.
async fn run_session<S>(mut io: S, peer: SocketAddr, shared: &Shared) -> std::io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut session = Session::new(peer);
    let mut decoder = Decoder::new(MAX_FRAME);
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    let mut out = Vec::new();
    loop {
        let flow = answer_frames(&mut decoder, &mut buf, &mut session, shared, &mut out);
        if !out.is_empty() {
            io.write_all(&out).await?;
            io.flush().await?;
            out.clear();
        }
        if flow == Flow::Close {
            let _ = io.shutdown().await;
            return Ok(());
        }
        if buf.capacity() - buf.len() < READ_CHUNK / 4 {
            buf.reserve(READ_CHUNK);
        }
        if io.read_buf(&mut buf).await? == 0 {
            return Ok(());
        }
    }
}

/// Answers every complete frame in `buf`, appending the replies to `out`.
fn answer_frames(
    decoder: &mut Decoder,
    buf: &mut BytesMut,
    session: &mut Session,
    shared: &Shared,
    out: &mut Vec<u8>,
) -> Flow {
    loop {
        match decoder.decode(buf) {
            Ok(Some(frame)) => {
                let (reply, flow) = session.handle(shared, frame);
                reply.to_resp2(out);
                if flow == Flow::Close {
                    return Flow::Close;
                }
            }
            Ok(None) => return Flow::Continue,
            Err(e) => {
                Reply::err(format!("ERR {e}")).to_resp2(out);
                return Flow::Close;
            }
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

    #[test]
    fn client_names_and_select() {
        assert!(valid_client_name(b"worker-1"));
        assert!(!valid_client_name(b"has space"));
        assert!(!valid_client_name(b"new\nline"));
        assert_eq!(select(&args(&["0"])), Reply::ok());
        assert_eq!(
            select(&args(&["1"])),
            Reply::err("ERR DB index is out of range")
        );
        assert_eq!(
            select(&args(&["x"])),
            Reply::err("ERR value is not an integer or out of range")
        );
        assert_eq!(select(&[]), wrong_args("SELECT"));
    }
}
