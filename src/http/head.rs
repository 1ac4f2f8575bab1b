//! HTTP/1.1 request and response heads: parsing with httparse, header look-up that
//! ignores case (Go sends `X-Etcd-Cluster-Id`, `X-Peerurls`), and the body-framing
//! rules of RFC 9112 §6.3 with the request-smuggling cases refused.

use smallvec::SmallVec;

use crate::error::{DecodeError, DecodeErrorKind};

/// Most headers a head may carry.
pub const MAX_HEADERS: usize = 64;

/// Default cap on the size of a head, start line to blank line.
pub const DEFAULT_MAX_HEAD: usize = 16 * 1024;

/// How a message's body is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyFraming {
    /// No body.
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked transfer coding.
    Chunked,
    /// Until the connection closes (responses only).
    UntilClose,
}

/// Where one header's name and value lie in a [`Head`]'s copy of its bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Field {
    name: (u32, u32),
    value: (u32, u32),
}

/// The start line of a head.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StartLine {
    /// `METHOD path HTTP/1.x`
    Request {
        /// e.g. `GET`.
        method: String,
        /// The request target.
        path: String,
    },
    /// `HTTP/1.x status reason`
    Response {
        /// e.g. 200.
        status: u16,
        /// e.g. `OK`.
        reason: String,
    },
}

/// A parsed head.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Head {
    /// Request or status line.
    pub start: StartLine,
    /// The head's bytes, copied once (a read buffer is reused); `fields` point into it.
    raw: Vec<u8>,
    /// The headers in order, as ranges of `raw`: a parsed head is two or three
    /// allocations (this copy, the start line's strings), not two per header.
    fields: SmallVec<[Field; 16]>,
    /// The head's length in bytes, blank line included: the body starts here.
    pub len: usize,
    /// The minor HTTP version: 1 for HTTP/1.1, 0 for HTTP/1.0.
    pub version: u8,
}

fn http_err(offset: u64, what: impl Into<String>) -> DecodeError {
    DecodeError::new(DecodeErrorKind::Http(what.into()), offset)
}

impl Head {
    /// Parses a request head from the start of `buf`; `None` if it is not all there yet.
    pub fn parse_request(buf: &[u8], max_head: usize) -> Result<Option<Head>, DecodeError> {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(buf) {
            Ok(httparse::Status::Complete(len)) if len <= max_head => Ok(Some(Head {
                start: StartLine::Request {
                    method: req.method.unwrap_or_default().to_string(),
                    path: req.path.unwrap_or_default().to_string(),
                },
                raw: buf[..len].to_vec(),
                fields: fields(buf, req.headers),
                len,
                version: req.version.unwrap_or(1),
            })),
            Ok(httparse::Status::Complete(_)) => Err(http_err(0, "head too large")),
            Ok(httparse::Status::Partial) => partial(buf, max_head),
            Err(e) => Err(http_err(0, e.to_string())),
        }
    }

    /// Parses a response head from the start of `buf`; `None` if it is not all there yet.
    pub fn parse_response(buf: &[u8], max_head: usize) -> Result<Option<Head>, DecodeError> {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut res = httparse::Response::new(&mut headers);
        match res.parse(buf) {
            Ok(httparse::Status::Complete(len)) if len <= max_head => Ok(Some(Head {
                start: StartLine::Response {
                    status: res.code.unwrap_or_default(),
                    reason: res.reason.unwrap_or_default().to_string(),
                },
                raw: buf[..len].to_vec(),
                fields: fields(buf, res.headers),
                len,
                version: res.version.unwrap_or(1),
            })),
            Ok(httparse::Status::Complete(_)) => Err(http_err(0, "head too large")),
            Ok(httparse::Status::Partial) => partial(buf, max_head),
            Err(e) => Err(http_err(0, e.to_string())),
        }
    }

    /// The headers in order: name as sent, raw value.
    pub fn headers(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.fields.iter().map(|f| {
            // Names are ASCII tokens (httparse checks them), so this never falls back.
            let name = std::str::from_utf8(self.part(f.name)).unwrap_or("");
            (name, self.part(f.value))
        })
    }

    fn part(&self, (a, b): (u32, u32)) -> &[u8] {
        self.raw.get(a as usize..b as usize).unwrap_or(&[])
    }

    /// The values of header `name`, in order, compared without regard to case.
    fn values<'a, 'n>(&'a self, name: &'n str) -> impl Iterator<Item = &'a [u8]> + use<'a, 'n> {
        self.fields
            .iter()
            .filter(move |f| self.part(f.name).eq_ignore_ascii_case(name.as_bytes()))
            .map(|f| self.part(f.value))
    }

    /// The first value of header `name`, compared without regard to case.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.values(name).next()
    }

    /// The first value of header `name` as text, if it is UTF-8.
    pub fn header_str(&self, name: &str) -> Option<&str> {
        self.header(name).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// Whether the connection must close after this message: `Connection: close`, or
    /// HTTP/1.0 without `Connection: keep-alive`.
    pub fn wants_close(&self) -> bool {
        let has = |token: &str| {
            self.values("connection").any(|v| {
                v.split(|&b| b == b',')
                    .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
            })
        };
        has("close") || (self.version == 0 && !has("keep-alive"))
    }

    /// How the body that follows this head is delimited. Refuses a head that carries
    /// both Content-Length and Transfer-Encoding, more than one Content-Length, a
    /// transfer coding other than a final `chunked`, or a malformed length.
    pub fn body_framing(&self) -> Result<BodyFraming, DecodeError> {
        let at = self.len as u64;
        if let StartLine::Response { status, .. } = self.start {
            if (100..200).contains(&status) || status == 204 || status == 304 {
                return Ok(BodyFraming::Empty);
            }
        }
        // The first value and how many there are, without collecting them.
        let first_and_count = |name: &str| {
            let mut it = self.values(name);
            let first = it.next();
            (first, first.map_or(0, |_| 1 + it.count()))
        };
        let (length, lengths) = first_and_count("content-length");
        let (te, tes) = first_and_count("transfer-encoding");
        if tes > 0 && lengths > 0 {
            return Err(http_err(at, "both Content-Length and Transfer-Encoding"));
        }
        if let Some(only) = te {
            let last_coding = only.rsplit(|&b| b == b',').next().unwrap_or_default();
            if tes == 1
                && last_coding.trim_ascii().eq_ignore_ascii_case(b"chunked")
                && !only.contains(&b',')
            {
                return Ok(BodyFraming::Chunked);
            }
            return Err(http_err(at, "unsupported Transfer-Encoding"));
        }
        match (length, lengths) {
            (_, 0) => Ok(match self.start {
                StartLine::Request { .. } => BodyFraming::Empty,
                StartLine::Response { .. } => BodyFraming::UntilClose,
            }),
            (Some(one), 1) => {
                let text = one.trim_ascii();
                if text.is_empty() || !text.iter().all(u8::is_ascii_digit) {
                    return Err(http_err(at, "malformed Content-Length"));
                }
                std::str::from_utf8(text)
                    .ok()
                    .and_then(|t| t.parse::<u64>().ok())
                    .map(BodyFraming::Length)
                    .ok_or_else(|| http_err(at, "malformed Content-Length"))
            }
            _ => Err(http_err(at, "more than one Content-Length")),
        }
    }
}

/// Where each of `headers` (parsed from `buf`, so their slices lie in it) is, as
/// offsets into `buf`. A slice that did not lie in `buf` would come out empty; httparse
/// never returns one.
fn fields(buf: &[u8], headers: &[httparse::Header<'_>]) -> SmallVec<[Field; 16]> {
    let range = |part: &[u8]| -> (u32, u32) {
        let start = (part.as_ptr() as usize).wrapping_sub(buf.as_ptr() as usize);
        match start.checked_add(part.len()) {
            Some(end) if end <= buf.len() && end <= u32::MAX as usize => (start as u32, end as u32),
            _ => (0, 0),
        }
    };
    headers
        .iter()
        .map(|h| Field {
            name: range(h.name.as_bytes()),
            value: range(h.value),
        })
        .collect()
}

fn partial(buf: &[u8], max_head: usize) -> Result<Option<Head>, DecodeError> {
    if buf.len() >= max_head {
        Err(http_err(0, "head too large"))
    } else {
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(raw: &str) -> Head {
        Head::parse_request(raw.as_bytes(), DEFAULT_MAX_HEAD)
            .unwrap()
            .unwrap()
    }

    #[test]
    fn headers_are_found_in_any_case() {
        let h = req("GET /raft/stream/message/2 HTTP/1.1\r\nX-Etcd-Cluster-Id: 7\r\nX-Peerurls: http://a\r\n\r\n");
        assert_eq!(h.header_str("x-etcd-cluster-id"), Some("7"));
        assert_eq!(h.header_str("X-PeerURLs"), Some("http://a"));
        assert_eq!(h.body_framing().unwrap(), BodyFraming::Empty);
    }

    #[test]
    fn smuggling_pairs_are_refused() {
        for raw in [
            "POST /raft HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST /raft HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n",
            "POST /raft HTTP/1.1\r\nContent-Length: +3\r\n\r\n",
            "POST /raft HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n",
            "POST /raft HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            "POST /raft HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
        ] {
            assert!(req(raw).body_framing().is_err(), "{raw}");
        }
        let ok = req("POST /raft HTTP/1.1\r\nTransfer-Encoding: Chunked\r\n\r\n");
        assert_eq!(ok.body_framing().unwrap(), BodyFraming::Chunked);
    }

    #[test]
    fn partial_and_oversized_heads() {
        assert_eq!(
            Head::parse_request(b"GET / HTTP/1.1\r\nHost:", 1024).unwrap(),
            None
        );
        let big = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(100));
        assert!(Head::parse_request(big.as_bytes(), 64).is_err());
        assert!(Head::parse_request(&big.as_bytes()[..80], 64).is_err());
    }

    #[test]
    fn connection_close_and_http10() {
        assert!(req("GET / HTTP/1.1\r\nConnection: Close\r\n\r\n").wants_close());
        assert!(!req("GET / HTTP/1.1\r\n\r\n").wants_close());
        assert!(req("GET / HTTP/1.0\r\n\r\n").wants_close());
        assert!(!req("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").wants_close());
    }

    #[test]
    fn response_framing() {
        let h = Head::parse_response(b"HTTP/1.1 204 No Content\r\n\r\n", 1024)
            .unwrap()
            .unwrap();
        assert_eq!(h.body_framing().unwrap(), BodyFraming::Empty);
        let h = Head::parse_response(b"HTTP/1.1 200 OK\r\n\r\n", 1024)
            .unwrap()
            .unwrap();
        assert_eq!(h.body_framing().unwrap(), BodyFraming::UntilClose);
    }
}
