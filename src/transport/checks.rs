//! The admission checks of etcd's peer handlers (spec §3.3), as pure functions of the
//! request head: the exact order, status codes, bodies and response headers, and etcd's
//! warning lines. The handlers in `handlers.rs` run these, then do the work.

use std::sync::Arc;

use crate::http::head::Head;
use crate::http::router::Response;
use crate::http::write::HeaderValue;
use crate::json::id_from_hex;
use crate::version::{Incompatible, LocalVersions, StreamType};

/// Which etcd generation this member behaves as.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Profile {
    /// etcd 3.x: msgappv2 and message streams.
    #[default]
    Etcd3,
    /// etcd 2.1: also serves and dials msgapp v1 at `/raft/stream/<id>` with `X-Raft-Term`.
    Etcd21,
}

/// What the checks need to know about this member.
#[derive(Clone, Debug)]
pub struct Local {
    /// Our member ID.
    pub id: u64,
    /// Our cluster ID.
    pub cluster: u64,
    /// Our cluster ID in etcd's text form (compared as text, as Go does).
    pub cluster_text: Arc<str>,
    /// What we advertise.
    pub versions: LocalVersions,
    /// `X-Server-Version` as sent.
    pub server_version_text: Arc<str>,
    /// The behaviour profile.
    pub profile: Profile,
}

impl Local {
    /// The fields for a member `id` in cluster `cluster`.
    pub fn new(id: u64, cluster: u64, versions: LocalVersions, profile: Profile) -> Self {
        Local {
            id,
            cluster,
            cluster_text: format!("{cluster:x}").into(),
            server_version_text: versions.server.to_string().into(),
            versions,
            profile,
        }
    }

    fn cluster_header(&self) -> HeaderValue {
        HeaderValue::Shared(self.cluster_text.clone())
    }
}

/// A stream request that passed every check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamAccepted {
    /// The stream type asked for.
    pub kind: StreamType,
    /// The dialer's member ID.
    pub from: u64,
    /// `X-Raft-Term` of a v1 request.
    pub term: Option<u64>,
}

/// Go's `path.Dir` (split after the last `/`, then drop trailing slashes) and
/// `path.Base` (drop trailing slashes, then take the last element) for the clean paths
/// the stream handler sees.
fn dir_and_base(path: &str) -> (&str, &str) {
    let dir = match path.rfind('/') {
        Some(i) => path[..=i].trim_end_matches('/'),
        None => ".",
    };
    let dir = if dir.is_empty() { "/" } else { dir };
    let trimmed = path.trim_end_matches('/');
    let base = match trimmed.rfind('/') {
        Some(i) => &trimmed[i + 1..],
        None if trimmed.is_empty() => "/",
        None => trimmed,
    };
    (dir, base)
}

/// Version and cluster checks shared by every handler; `Err` is the 412 to send.
fn check_versions_and_cluster(local: &Local, head: &Head, base: Response) -> Result<(), Rejection> {
    let from = head.header_str("x-server-from").unwrap_or_default();
    let remote_server = head.header_str("x-server-version");
    let remote_min = head.header_str("x-min-cluster-version");
    if let Err(e) = local.versions.check(from, remote_server, remote_min) {
        let error = match &e {
            Incompatible::Unparsable(b) => b.to_string(),
            other => other.to_string(),
        };
        tracing::warn!(
            local_member_id = %format_args!("{:x}", local.id),
            local_member_cluster_id = %local.cluster_text,
            local_member_server_version = %local.server_version_text,
            remote_peer_server_name = from,
            remote_peer_server_version = remote_server.unwrap_or(""),
            error = %error,
            "failed to check version compatibility"
        );
        return Err(reject(with_headers(
            Response::error(412, "incompatible version"),
            base,
        )));
    }
    let gcid = head.header_str("x-etcd-cluster-id").unwrap_or_default();
    if gcid != &*local.cluster_text {
        tracing::warn!(
            local_member_id = %format_args!("{:x}", local.id),
            local_member_cluster_id = %local.cluster_text,
            remote_peer_server_name = from,
            remote_peer_cluster_id = gcid,
            "request cluster ID mismatch"
        );
        return Err(reject(with_headers(
            Response::error(412, "cluster ID mismatch"),
            base,
        )));
    }
    Ok(())
}

/// A refused request: the response to send (boxed, as it is large and rare).
pub type Rejection = Box<Response>;

fn reject(r: Response) -> Rejection {
    Box::new(r)
}

/// Adds `base`'s headers (set before the checks, as etcd does) in front of `r`'s.
fn with_headers(mut r: Response, base: Response) -> Response {
    let mut headers = base.headers;
    headers.extend(r.headers.drain(..));
    r.headers = headers;
    r
}

/// The headers every stream response carries once the method is right.
pub fn stream_base(local: &Local) -> Response {
    Response::empty(200)
        .with_header(
            "X-Server-Version",
            HeaderValue::Shared(local.server_version_text.clone()),
        )
        .with_header("X-Etcd-Cluster-Id", local.cluster_header())
}

/// The stream handler's checks, in etcd's order. `is_removed` is the application's
/// `IsIDRemoved`; `known` says whether the sender is a peer, after `add_remote` was
/// given its `X-PeerURLs`. `Err` is the response to send.
pub fn check_stream(
    local: &Local,
    method: &str,
    path: &str,
    head: &Head,
    is_removed: impl Fn(u64) -> bool,
    mut add_remote: impl FnMut(u64, &str),
    known: impl Fn(u64) -> bool,
) -> Result<StreamAccepted, Rejection> {
    if method != "GET" {
        return Err(reject(
            Response::error(405, "Method Not Allowed").with_header("Allow", "GET"),
        ));
    }
    check_versions_and_cluster(local, head, stream_base(local))?;
    let base = || stream_base(local);
    let (dir, base_name) = dir_and_base(path);
    let kind = match dir {
        "/raft/stream/msgapp" => StreamType::MsgAppV2,
        "/raft/stream/message" => StreamType::Message,
        "/raft/stream" if local.profile == Profile::Etcd21 => StreamType::MsgAppV1,
        _ => {
            tracing::debug!(local_member_id = %format_args!("{:x}", local.id), path, "ignored unexpected streaming request path");
            return Err(reject(with_headers(
                Response::error(404, "invalid path"),
                base(),
            )));
        }
    };
    let Some(from) = id_from_hex_strict(base_name) else {
        tracing::warn!(local_member_id = %format_args!("{:x}", local.id), path = base_name, "failed to parse path into ID");
        return Err(reject(with_headers(
            Response::error(404, "invalid from"),
            base(),
        )));
    };
    if is_removed(from) {
        tracing::warn!(local_member_id = %format_args!("{:x}", local.id), remote_peer_id = %format_args!("{from:x}"), "rejected stream from remote peer because it was removed");
        return Err(reject(with_headers(
            Response::error(410, "removed member"),
            base(),
        )));
    }
    if let Some(urls) = head.header_str("x-peerurls") {
        add_remote(from, urls);
    }
    if !known(from) {
        tracing::warn!(local_member_id = %format_args!("{:x}", local.id), remote_peer_id_from = %format_args!("{from:x}"), "failed to find remote peer in cluster");
        return Err(reject(with_headers(
            Response::error(404, "error sender not found"),
            base(),
        )));
    }
    let to = head.header_str("x-raft-to").unwrap_or_default();
    if to != format!("{:x}", local.id) {
        tracing::warn!(local_member_id = %format_args!("{:x}", local.id), remote_peer_id_header = to, remote_peer_id_from = %format_args!("{from:x}"), "ignored streaming request; ID mismatch");
        return Err(reject(with_headers(
            Response::error(412, "to field mismatch"),
            base(),
        )));
    }
    let term = match kind {
        StreamType::MsgAppV1 => match head.header_str("x-raft-term").map(str::parse::<u64>) {
            Some(Ok(t)) => Some(t),
            // etcd 2.1 panics on a bad term; etcd 2.0 answered 400.
            _ => {
                return Err(reject(with_headers(
                    Response::error(400, "invalid term field"),
                    base(),
                )))
            }
        },
        _ => None,
    };
    Ok(StreamAccepted { kind, from, term })
}

/// Parses an ID the way Go's `types.IDFromString` does (`ParseUint(s, 16, 64)`).
fn id_from_hex_strict(s: &str) -> Option<u64> {
    if s.is_empty() || s.len() > 16 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    id_from_hex(s)
}

/// The headers pipeline and snapshot responses carry once the method is right.
pub fn post_base(local: &Local) -> Response {
    Response::empty(200).with_header("X-Etcd-Cluster-Id", local.cluster_header())
}

/// The pipeline and snapshot handlers' checks: the method, then versions and cluster.
pub fn check_post(local: &Local, method: &str, head: &Head) -> Result<(), Rejection> {
    if method != "POST" {
        return Err(reject(
            Response::error(405, "Method Not Allowed").with_header("Allow", "POST"),
        ));
    }
    check_versions_and_cluster(local, head, post_base(local))
}

/// Puts `base`'s headers on a handler's final response.
pub fn finish(base: Response, r: Response) -> Response {
    with_headers(r, base)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::router::ResponseBody;

    fn local() -> Local {
        Local::new(
            0xb09a17ddc8c72954,
            0x332b4329fb5bbb93,
            LocalVersions::default(),
            Profile::Etcd3,
        )
    }

    fn head(extra: &str) -> Head {
        let raw = format!(
            "GET / HTTP/1.1\r\nX-Server-From: caff9c7f440d9bc5\r\nX-Server-Version: 3.4.23\r\nX-Min-Cluster-Version: 3.0.0\r\n\
             X-Etcd-Cluster-Id: 332b4329fb5bbb93\r\nX-Raft-To: b09a17ddc8c72954\r\n{extra}\r\n"
        );
        Head::parse_request(raw.as_bytes(), 8192).unwrap().unwrap()
    }

    fn status_and_body(r: Rejection) -> (u16, String) {
        let body = match &r.body {
            ResponseBody::Full(b) => String::from_utf8(b.to_vec()).unwrap(),
            _ => String::new(),
        };
        (r.status, body)
    }

    fn stream(
        method: &str,
        path: &str,
        h: &Head,
        removed: bool,
        known: bool,
    ) -> Result<StreamAccepted, (u16, String)> {
        check_stream(&local(), method, path, h, |_| removed, |_, _| {}, |_| known)
            .map_err(status_and_body)
    }

    #[test]
    fn stream_checks_in_etcds_order() {
        let h = head("");
        let ok = stream(
            "GET",
            "/raft/stream/message/caff9c7f440d9bc5",
            &h,
            false,
            true,
        )
        .unwrap();
        assert_eq!(
            (ok.kind, ok.from),
            (StreamType::Message, 0xcaff9c7f440d9bc5)
        );
        let cases: &[(&str, &str, bool, bool, u16, &str)] = &[
            (
                "POST",
                "/raft/stream/message/caff9c7f440d9bc5",
                false,
                true,
                405,
                "Method Not Allowed\n",
            ),
            (
                "GET",
                "/raft/stream/msgappv2/caff9c7f440d9bc5",
                false,
                true,
                404,
                "invalid path\n",
            ),
            (
                "GET",
                "/raft/stream/message",
                false,
                true,
                404,
                "invalid path\n",
            ),
            (
                "GET",
                "/raft/stream/caff9c7f440d9bc5",
                false,
                true,
                404,
                "invalid path\n",
            ),
            (
                "GET",
                "/raft/stream/message/zz-not-hex",
                false,
                true,
                404,
                "invalid from\n",
            ),
            (
                "GET",
                "/raft/stream/msgapp/",
                false,
                true,
                404,
                "invalid from\n",
            ),
            // Removed is checked before the peer lookup.
            (
                "GET",
                "/raft/stream/message/1234",
                true,
                false,
                410,
                "removed member\n",
            ),
            (
                "GET",
                "/raft/stream/message/1234",
                false,
                false,
                404,
                "error sender not found\n",
            ),
        ];
        for (method, path, removed, known, status, body) in cases {
            assert_eq!(
                stream(method, path, &h, *removed, *known).unwrap_err(),
                (*status, body.to_string()),
                "{method} {path}"
            );
        }
        let raw = "GET / HTTP/1.1\r\nX-Server-Version: 3.4.23\r\nX-Min-Cluster-Version: 3.0.0\r\nX-Etcd-Cluster-Id: 332b4329fb5bbb93\r\nX-Raft-To: 5f1298836671828d\r\n\r\n";
        let only_wrong = Head::parse_request(raw.as_bytes(), 8192).unwrap().unwrap();
        assert_eq!(
            stream(
                "GET",
                "/raft/stream/message/caff9c7f440d9bc5",
                &only_wrong,
                false,
                true
            )
            .unwrap_err()
            .0,
            412
        );
    }

    #[test]
    fn versions_are_checked_before_the_cluster_and_the_path() {
        let raw =
            "GET / HTTP/1.1\r\nX-Server-Version: 1.0.0\r\nX-Etcd-Cluster-Id: deadbeef\r\n\r\n";
        let h = Head::parse_request(raw.as_bytes(), 8192).unwrap().unwrap();
        let r = check_stream(
            &local(),
            "GET",
            "/nonsense",
            &h,
            |_| false,
            |_, _| {},
            |_| true,
        )
        .unwrap_err();
        assert_eq!(r.headers[0].0, "X-Server-Version");
        assert_eq!(status_and_body(r), (412, "incompatible version\n".into()));
        let raw = "POST /raft HTTP/1.1\r\nX-Server-Version: 3.4.23\r\nX-Min-Cluster-Version: 3.0.0\r\nX-Etcd-Cluster-Id: deadbeef\r\n\r\n";
        let h = Head::parse_request(raw.as_bytes(), 8192).unwrap().unwrap();
        assert_eq!(
            status_and_body(check_post(&local(), "POST", &h).unwrap_err()),
            (412, "cluster ID mismatch\n".into())
        );
        let raw = "POST /raft HTTP/1.1\r\nX-Server-Version: garbage\r\n\r\n";
        let h = Head::parse_request(raw.as_bytes(), 8192).unwrap().unwrap();
        assert_eq!(
            check_post(&local(), "POST", &h).unwrap_err().status,
            412,
            "etcd drops the connection; we answer"
        );
        assert_eq!(check_post(&local(), "GET", &h).unwrap_err().status, 405);
    }

    #[test]
    fn go_path_semantics() {
        assert_eq!(
            dir_and_base("/raft/stream/msgapp/2"),
            ("/raft/stream/msgapp", "2")
        );
        assert_eq!(
            dir_and_base("/raft/stream/message"),
            ("/raft/stream", "message")
        );
        assert_eq!(
            dir_and_base("/raft/stream/msgapp/"),
            ("/raft/stream/msgapp", "msgapp")
        );
        assert_eq!(dir_and_base("/raft"), ("/", "raft"));
    }
}
