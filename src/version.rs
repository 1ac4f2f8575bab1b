//! etcd server versions and the compatibility rules between members (spec §1.3, §3.2).
//! Parsing never panics (Go's `semver.Must` does, and a garbage `X-Server-Version` in a
//! dial response crashes an etcd member); only major.minor is ever compared.

use std::fmt;
use std::str::FromStr;

/// A semantic version, `X.Y.Z[-pre][+build]`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Version {
    /// Major.
    pub major: u64,
    /// Minor.
    pub minor: u64,
    /// Patch.
    pub patch: u64,
    /// Everything after the patch number (`-rc.0+git`), kept as text.
    pub suffix: String,
}

/// A version string that is not `X.Y.Z[-pre][+build]`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid version {0:?} (want X.Y.Z[-pre][+build])")]
pub struct BadVersion(pub String);

impl FromStr for Version {
    type Err = BadVersion;

    fn from_str(s: &str) -> Result<Self, BadVersion> {
        let bad = || BadVersion(s.to_string());
        let core_end = s.find(['-', '+']).unwrap_or(s.len());
        let (core, suffix) = s.split_at(core_end);
        let ident_ok =
            |id: &str| !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if let Some(rest) = suffix.strip_prefix(['-', '+']) {
            let (pre, build) = match (suffix.starts_with('-'), rest.split_once('+')) {
                (true, Some((p, b))) => (p, Some(b)),
                (true, None) => (rest, None),
                (false, _) => ("x", Some(rest)),
            };
            if !pre.split('.').all(ident_ok) || !build.is_none_or(|b| b.split('.').all(ident_ok)) {
                return Err(bad());
            }
        }
        let mut parts = core.split('.');
        let mut num = || -> Result<u64, BadVersion> {
            let p = parts.next().ok_or_else(bad)?;
            if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            p.parse().map_err(|_| bad())
        };
        let (major, minor, patch) = (num()?, num()?, num()?);
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(Version {
            major,
            minor,
            patch,
            suffix: suffix.to_string(),
        })
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}.{}.{}{}",
            self.major, self.minor, self.patch, self.suffix
        )
    }
}

impl Version {
    /// `major.minor.patch` with no suffix.
    pub const fn new(major: u64, minor: u64, patch: u64) -> Version {
        Version {
            major,
            minor,
            patch,
            suffix: String::new(),
        }
    }

    /// The part etcd compares: (major, minor).
    pub fn major_minor(&self) -> (u64, u64) {
        (self.major, self.minor)
    }

    /// What a missing version header counts as.
    pub fn v2_0_0() -> Version {
        Version::new(2, 0, 0)
    }
}

/// Why a peer's versions are not accepted (answered with 412 `incompatible version`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Incompatible {
    /// The peer's server version is below our minimum cluster version.
    #[error("remote version is too low: remote[{from}]={remote}, local={local}")]
    RemoteTooLow {
        /// The peer's `X-Server-From`.
        from: String,
        /// Its `X-Server-Version`.
        remote: String,
        /// Our server version.
        local: String,
    },
    /// The peer's minimum cluster version is above our server version.
    #[error("local version is too low: remote[{from}]={remote}, local={local}")]
    LocalTooLow {
        /// The peer's `X-Server-From`.
        from: String,
        /// Its `X-Server-Version`.
        remote: String,
        /// Our server version.
        local: String,
    },
    /// A version header did not parse (etcd panics and drops the connection here).
    #[error("{0}")]
    Unparsable(BadVersion),
}

/// Our side of the version check: what we advertise.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalVersions {
    /// `X-Server-Version` (default 3.5.0).
    pub server: Version,
    /// `X-Min-Cluster-Version` (default 3.0.0).
    pub min_cluster: Version,
}

impl Default for LocalVersions {
    fn default() -> Self {
        LocalVersions {
            server: Version::new(3, 5, 0),
            min_cluster: Version::new(3, 0, 0),
        }
    }
}

impl LocalVersions {
    /// etcd's `checkVersionCompatibility`: a peer whose server version is below our
    /// minimum cluster version, or whose minimum cluster version is above our server
    /// version, is refused. Missing headers count as 2.0.0; only major.minor counts.
    pub fn check(
        &self,
        from: &str,
        remote_server: Option<&str>,
        remote_min: Option<&str>,
    ) -> Result<(), Incompatible> {
        let parse = |v: Option<&str>| match v {
            None => Ok(Version::v2_0_0()),
            Some(s) => s.parse::<Version>().map_err(Incompatible::Unparsable),
        };
        let server = parse(remote_server)?;
        let min = parse(remote_min)?;
        let details = || {
            (
                from.to_string(),
                server.to_string(),
                self.server.to_string(),
            )
        };
        if server.major_minor() < self.min_cluster.major_minor() {
            let (from, remote, local) = details();
            return Err(Incompatible::RemoteTooLow {
                from,
                remote,
                local,
            });
        }
        if min.major_minor() > self.server.major_minor() {
            let (from, remote, local) = details();
            return Err(Incompatible::LocalTooLow {
                from,
                remote,
                local,
            });
        }
        Ok(())
    }
}

/// The rafthttp stream types (spec §1.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StreamType {
    /// The etcd 2.0 MsgApp stream, `/raft/stream/<id>` (profile `etcd2.1` only).
    MsgAppV1,
    /// `/raft/stream/msgapp/<id>`.
    MsgAppV2,
    /// `/raft/stream/message/<id>`.
    Message,
}

impl StreamType {
    /// The path a dialer with ID `local` requests.
    pub fn endpoint(self, local: u64) -> String {
        match self {
            StreamType::MsgAppV1 => format!("/raft/stream/{local:x}"),
            StreamType::MsgAppV2 => format!("/raft/stream/msgapp/{local:x}"),
            StreamType::Message => format!("/raft/stream/message/{local:x}"),
        }
    }

    /// etcd's name for logs (`stream MsgApp v2`, `stream Message`, `stream MsgApp`).
    pub fn log_name(self) -> &'static str {
        match self {
            StreamType::MsgAppV1 => "stream MsgApp",
            StreamType::MsgAppV2 => "stream MsgApp v2",
            StreamType::Message => "stream Message",
        }
    }

    /// Whether a peer at `remote` version supports this stream type, from the point of
    /// view of a member at `local` (etcd's `supportedStream` table). Only asked when the
    /// remote's major.minor is below ours. `v1` says whether we keep msgapp v1 (profile
    /// `etcd2.1`), which etcd 2.1–2.2 offered to 2.0 peers.
    pub fn supported_by(self, remote: &Version, local: &Version, v1: bool) -> bool {
        match remote.major_minor() {
            (2, 0) => v1 && self == StreamType::MsgAppV1,
            mm if mm >= (2, 1) && mm <= local.major_minor() => self != StreamType::MsgAppV1,
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parsing_is_strict_and_never_panics() {
        for ok in [
            "3.4.23",
            "2.1.0-rc.0+git",
            "3.4.99-rc.1",
            "10.20.30+build.5",
            "0.0.0",
        ] {
            assert_eq!(ok.parse::<Version>().unwrap().to_string(), ok);
        }
        for bad in [
            "",
            "3.4",
            "3.4.23.1",
            "v3.4.23",
            "3.x.0",
            "garbage",
            "3.4.-1",
            "3.4.23-",
            "3.4.23+",
            "3..4",
            "99999999999999999999.0.0",
            "3.4.23-a..b",
        ] {
            assert!(bad.parse::<Version>().is_err(), "{bad:?}");
        }
    }

    /// Spec §5.2's handler table: local 3.5.0 / min 3.0.0.
    #[test]
    fn compatibility_table() {
        let local = LocalVersions::default();
        assert!(local.check("2", Some("3.0.0"), Some("3.0.0")).is_ok());
        assert!(matches!(
            local.check("2", Some("2.3.7"), Some("2.2.0")),
            Err(Incompatible::RemoteTooLow { .. })
        ));
        assert!(matches!(
            local.check("2", Some("4.0.0"), Some("4.0.0")),
            Err(Incompatible::LocalTooLow { .. })
        ));
        assert!(matches!(
            local.check("2", None, None),
            Err(Incompatible::RemoteTooLow { .. })
        ));
        assert!(local.check("2", Some("3.4.99-rc.1"), Some("3.0.0")).is_ok());
        assert!(
            local.check("2", Some("9.9.9"), Some("3.0.0")).is_ok(),
            "only the min version bounds from above"
        );
        assert!(matches!(
            local.check("2", Some("garbage"), Some("3.0.0")),
            Err(Incompatible::Unparsable(_))
        ));
        let e = local
            .check("caff9c7f440d9bc5", Some("2.3.8"), Some("2.2.0"))
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "remote version is too low: remote[caff9c7f440d9bc5]=2.3.8, local=3.5.0"
        );
    }

    #[test]
    fn supported_stream_table() {
        let local = Version::new(3, 4, 23);
        let v = |s: &str| s.parse::<Version>().unwrap();
        assert!(StreamType::MsgAppV2.supported_by(&v("3.3.0"), &local, false));
        assert!(StreamType::Message.supported_by(&v("2.1.0"), &local, false));
        assert!(!StreamType::MsgAppV2.supported_by(&v("2.0.0"), &local, false));
        assert!(
            !StreamType::MsgAppV1.supported_by(&v("2.0.0"), &local, false),
            "v3 has no v1"
        );
        assert!(
            StreamType::MsgAppV1.supported_by(&v("2.0.0"), &local, true),
            "etcd2.1 falls back to v1"
        );
        assert!(!StreamType::Message.supported_by(&v("1.9.0"), &local, true));
        assert_eq!(
            StreamType::MsgAppV2.endpoint(0xcaff9c7f440d9bc5),
            "/raft/stream/msgapp/caff9c7f440d9bc5"
        );
        assert_eq!(StreamType::MsgAppV1.endpoint(2), "/raft/stream/2");
    }
}
