//! Redis replies: the RESP2 reply decoder for what a database's engine answers, the RESP2 encoder
//! for answers the emulator makes itself, and the JSON form of the REST API.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

/// A Redis reply (RESP2).
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// `$-1`: the null bulk string.
    Nil,
    /// `*-1`: the null array (an `EXEC` aborted by `WATCH`, a timed-out `BLPOP`).
    NilArray,
    Int(i64),
    Bulk(Vec<u8>),
    Status(String),
    Array(Vec<Reply>),
    Error(String),
}

impl Reply {
    pub fn ok() -> Self {
        Reply::Status("OK".into())
    }
    pub fn err(msg: impl Into<String>) -> Self {
        Reply::Error(msg.into())
    }
    pub fn is_error(&self) -> bool {
        matches!(self, Reply::Error(_))
    }

    /// JSON form used by the REST API: strings are UTF-8 (lossy), or base64 when `base64` is set
    /// (every string except the status `OK`, as `Upstash-Encoding: base64` does).
    pub fn to_json(&self, base64: bool) -> serde_json::Value {
        use serde_json::Value;
        match self {
            Reply::Nil | Reply::NilArray => Value::Null,
            Reply::Int(i) => Value::from(*i),
            Reply::Bulk(b) => {
                if base64 {
                    Value::String(B64.encode(b))
                } else {
                    Value::String(String::from_utf8_lossy(b).into_owned())
                }
            }
            Reply::Status(s) => {
                if base64 && s != "OK" {
                    Value::String(B64.encode(s.as_bytes()))
                } else {
                    Value::String(s.clone())
                }
            }
            Reply::Array(items) => Value::Array(items.iter().map(|r| r.to_json(base64)).collect()),
            Reply::Error(e) => Value::String(e.clone()),
        }
    }

    /// RESP2 encoding.
    pub fn to_resp2(&self, out: &mut Vec<u8>) {
        match self {
            Reply::Nil => out.extend_from_slice(b"$-1\r\n"),
            Reply::NilArray => out.extend_from_slice(b"*-1\r\n"),
            Reply::Int(i) => out.extend_from_slice(format!(":{i}\r\n").as_bytes()),
            Reply::Bulk(b) => {
                out.extend_from_slice(format!("${}\r\n", b.len()).as_bytes());
                out.extend_from_slice(b);
                out.extend_from_slice(b"\r\n");
            }
            Reply::Status(s) => out.extend_from_slice(format!("+{s}\r\n").as_bytes()),
            Reply::Error(e) => out.extend_from_slice(format!("-{e}\r\n").as_bytes()),
            Reply::Array(items) => {
                out.extend_from_slice(format!("*{}\r\n", items.len()).as_bytes());
                for i in items {
                    i.to_resp2(out);
                }
            }
        }
    }

    /// The reply as text, when it is a bulk or status string.
    pub fn as_text(&self) -> Option<String> {
        match self {
            Reply::Bulk(b) => Some(String::from_utf8_lossy(b).into_owned()),
            Reply::Status(s) => Some(s.clone()),
            _ => None,
        }
    }
}

/// A reply the engine sent that is not RESP2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MalformedReply(pub String);

impl std::fmt::Display for MalformedReply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "malformed reply from the engine: {}", self.0)
    }
}

impl std::error::Error for MalformedReply {}

/// Deepest nesting of arrays accepted (Redis's own replies nest a few levels: `COMMAND`).
const MAX_DEPTH: usize = 64;

/// Decodes one complete reply from the front of `buf`: the reply and the bytes it took, or
/// `Ok(None)` when more bytes are needed.
pub fn decode(buf: &[u8]) -> Result<Option<(Reply, usize)>, MalformedReply> {
    decode_at(buf, 0, 0)
}

fn line(buf: &[u8], at: usize) -> Option<(&[u8], usize)> {
    let rest = buf.get(at..)?;
    let end = rest.windows(2).position(|w| w == b"\r\n")?;
    Some((&rest[..end], at + end + 2))
}

fn number(digits: &[u8]) -> Result<i64, MalformedReply> {
    std::str::from_utf8(digits)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| MalformedReply(format!("bad number {:?}", String::from_utf8_lossy(digits))))
}

fn decode_at(
    buf: &[u8],
    at: usize,
    depth: usize,
) -> Result<Option<(Reply, usize)>, MalformedReply> {
    let Some(&kind) = buf.get(at) else {
        return Ok(None);
    };
    let Some((text, next)) = line(buf, at + 1) else {
        return Ok(None);
    };
    let string = || String::from_utf8_lossy(text).into_owned();
    Ok(Some(match kind {
        b'+' => (Reply::Status(string()), next),
        b'-' => (Reply::Error(string()), next),
        b':' => (Reply::Int(number(text)?), next),
        b'$' => {
            let len = number(text)?;
            if len < 0 {
                return Ok(Some((Reply::Nil, next)));
            }
            let len = len as usize;
            let end = next + len;
            if buf.len() < end + 2 {
                return Ok(None);
            }
            if &buf[end..end + 2] != b"\r\n" {
                return Err(MalformedReply("bulk string without CRLF".into()));
            }
            (Reply::Bulk(buf[next..end].to_vec()), end + 2)
        }
        b'*' => {
            let count = number(text)?;
            if count < 0 {
                return Ok(Some((Reply::NilArray, next)));
            }
            if depth >= MAX_DEPTH {
                return Err(MalformedReply("arrays nested too deep".into()));
            }
            let mut items = Vec::with_capacity((count as usize).min(1024));
            let mut pos = next;
            for _ in 0..count {
                let Some((item, after)) = decode_at(buf, pos, depth + 1)? else {
                    return Ok(None);
                };
                items.push(item);
                pos = after;
            }
            (Reply::Array(items), pos)
        }
        other => {
            return Err(MalformedReply(format!(
                "unexpected type byte {:?}",
                char::from(other)
            )));
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Reply {
        Reply::Bulk(s.as_bytes().to_vec())
    }

    #[test]
    fn decodes_every_type_and_roundtrips() {
        let replies = vec![
            Reply::ok(),
            Reply::err("ERR nope"),
            Reply::Int(-42),
            bulk("a\r\nb"),
            Reply::Bulk(vec![]),
            Reply::Nil,
            Reply::NilArray,
            Reply::Array(vec![]),
            Reply::Array(vec![
                Reply::Int(1),
                Reply::Array(vec![bulk("x"), Reply::Nil]),
                Reply::err("WRONGTYPE x"),
            ]),
        ];
        let mut wire = vec![];
        for r in &replies {
            r.to_resp2(&mut wire);
        }
        let mut at = 0;
        for r in &replies {
            let (got, used) = decode(&wire[at..]).unwrap().unwrap();
            assert_eq!(&got, r);
            at += used;
        }
        assert_eq!(at, wire.len());
    }

    #[test]
    fn incomplete_replies_wait_for_more_bytes() {
        let mut wire = vec![];
        Reply::Array(vec![bulk("0123456789"), Reply::Int(7)]).to_resp2(&mut wire);
        for cut in 0..wire.len() {
            assert_eq!(decode(&wire[..cut]).unwrap(), None, "cut at {cut}");
        }
        assert!(decode(&wire).unwrap().is_some());
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(decode(b"?x\r\n").is_err());
        assert!(decode(b":abc\r\n").is_err());
        assert!(decode(b"$1\r\nab\r\n").is_err());
    }

    #[test]
    fn json_encoding() {
        assert_eq!(Reply::ok().to_json(true), serde_json::json!("OK"));
        assert_eq!(
            Reply::Status("PONG".into()).to_json(true),
            serde_json::json!("UE9ORw==")
        );
        assert_eq!(bulk("OK").to_json(true), serde_json::json!("T0s="));
        assert_eq!(bulk("v").to_json(false), serde_json::json!("v"));
        assert_eq!(Reply::NilArray.to_json(false), serde_json::Value::Null);
    }
}
