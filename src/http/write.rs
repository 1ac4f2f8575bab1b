//! Writing HTTP/1.1 heads into an output buffer, with no allocation per message: header
//! values are static strings, shared strings or numbers formatted in place.

use std::fmt::Write as _;
use std::sync::Arc;

use bytes::{BufMut, BytesMut};

/// A header value that can be written without allocating.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HeaderValue {
    /// A fixed string.
    Static(&'static str),
    /// A string shared with configuration (e.g. the advertised version or peer URLs).
    Shared(Arc<str>),
    /// A number in lower-case hex, as etcd writes IDs.
    Hex(u64),
    /// A number in decimal.
    Dec(u64),
}

impl HeaderValue {
    fn write(&self, dst: &mut BytesMut) {
        match self {
            HeaderValue::Static(s) => dst.put_slice(s.as_bytes()),
            HeaderValue::Shared(s) => dst.put_slice(s.as_bytes()),
            // Writing into a BytesMut cannot fail: it grows as needed.
            HeaderValue::Hex(n) => {
                let _ = write!(dst, "{n:x}");
            }
            HeaderValue::Dec(n) => {
                let _ = write!(dst, "{n}");
            }
        }
    }

    /// The value as text (allocates; for tests and logs).
    pub fn to_text(&self) -> String {
        let mut b = BytesMut::new();
        self.write(&mut b);
        String::from_utf8_lossy(&b).into_owned()
    }
}

impl From<&'static str> for HeaderValue {
    fn from(s: &'static str) -> Self {
        HeaderValue::Static(s)
    }
}

/// Up to eight headers inline, no allocation.
pub type Headers = smallvec::SmallVec<[(&'static str, HeaderValue); 8]>;

/// How the body after a head is framed, as the head must declare it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// `Content-Length: n`.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// No body and no length header (1xx, 204, 304, or a GET).
    None,
}

fn write_headers(dst: &mut BytesMut, headers: &[(&'static str, HeaderValue)], framing: Framing) {
    for (name, value) in headers {
        dst.put_slice(name.as_bytes());
        dst.put_slice(b": ");
        value.write(dst);
        dst.put_slice(b"\r\n");
    }
    match framing {
        Framing::Length(n) => {
            let _ = write!(dst, "Content-Length: {n}\r\n");
        }
        Framing::Chunked => dst.put_slice(b"Transfer-Encoding: chunked\r\n"),
        Framing::None => {}
    }
    dst.put_slice(b"\r\n");
}

/// The reason phrase Go uses for `status`.
pub fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        204 => "No Content",
        301 => "Moved Permanently",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        410 => "Gone",
        412 => "Precondition Failed",
        413 => "Request Entity Too Large",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

/// Appends a response head: status line, `Date`, the given headers, the framing
/// header, and `Connection: close` when `close`.
pub fn write_response_head(
    dst: &mut BytesMut,
    status: u16,
    headers: &[(&'static str, HeaderValue)],
    framing: Framing,
    close: bool,
) {
    let _ = write!(dst, "HTTP/1.1 {status} {}\r\n", reason(status));
    let _ = write!(
        dst,
        "Date: {}\r\n",
        httpdate::HttpDate::from(std::time::SystemTime::now())
    );
    if close {
        dst.put_slice(b"Connection: close\r\n");
    }
    write_headers(dst, headers, framing);
}

/// Appends a request head: request line, `Host`, the given headers and the framing.
pub fn write_request_head(
    dst: &mut BytesMut,
    method: &str,
    path: &str,
    host: &str,
    headers: &[(&'static str, HeaderValue)],
    framing: Framing,
) {
    dst.put_slice(method.as_bytes());
    dst.put_u8(b' ');
    dst.put_slice(path.as_bytes());
    dst.put_slice(b" HTTP/1.1\r\nHost: ");
    dst.put_slice(host.as_bytes());
    dst.put_slice(b"\r\n");
    write_headers(dst, headers, framing);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::head::{BodyFraming, Head, StartLine};

    #[test]
    fn heads_written_parse_back() {
        let mut b = BytesMut::new();
        let headers: Headers = smallvec::smallvec![
            ("X-Etcd-Cluster-ID", HeaderValue::Hex(0x332b4329fb5bbb93)),
            ("X-Server-Version", HeaderValue::Shared("3.4.23".into())),
        ];
        write_response_head(&mut b, 412, &headers, Framing::Length(21), false);
        let h = Head::parse_response(&b, 4096).unwrap().unwrap();
        assert_eq!(
            h.start,
            StartLine::Response {
                status: 412,
                reason: "Precondition Failed".into()
            }
        );
        assert_eq!(h.header_str("x-etcd-cluster-id"), Some("332b4329fb5bbb93"));
        assert_eq!(h.body_framing().unwrap(), BodyFraming::Length(21));
        assert!(h.header_str("date").unwrap().ends_with(" GMT"));

        let mut b = BytesMut::new();
        write_request_head(
            &mut b,
            "POST",
            "/raft",
            "127.0.0.1:2380",
            &[("X-Server-From", HeaderValue::Hex(2))],
            Framing::Chunked,
        );
        let h = Head::parse_request(&b, 4096).unwrap().unwrap();
        assert_eq!(h.header_str("host"), Some("127.0.0.1:2380"));
        assert_eq!(h.body_framing().unwrap(), BodyFraming::Chunked);
    }
}
