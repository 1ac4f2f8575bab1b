//! Options set on every TCP socket the drivers open: what a deployment may want other
//! than the system's defaults. Today that is the congestion control.
//!
//! Why it is here: with BBR as the system's default and no `fq` qdisc on the interface
//! (the case on loopback, whose qdisc is `noqueue`), the kernel paces each BBR socket
//! itself, with a high-resolution timer for every burst it holds back. On loopback that
//! pacing protects nothing and was the ceiling of a single stream: iperf3 carried
//! 2.4 GB/s under BBR and 7.0 GB/s under CUBIC on the same machine, and one run of the
//! bench's 16 KiB stream row set off about 28,000 pacing timers (docs/performance.md,
//! ninth session). Members on one host, or on a short fast link
//! without `fq`, can ask for CUBIC here instead of changing the whole host's default.
//! The default leaves the system's choice alone, as etcd does.

use std::io;
use std::os::fd::AsFd;

/// Options for the transport's TCP sockets. Set on listeners before they listen (the
/// connections they accept inherit them) and on dialled sockets once connected.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SocketOptions {
    /// The TCP congestion control (`TCP_CONGESTION`: `cubic`, `bbr`, `reno`…), or `None`
    /// for the system's default (`net.ipv4.tcp_congestion_control`).
    pub congestion: Option<CongestionName>,
}

impl SocketOptions {
    /// Sets the options on `socket`.
    pub fn apply(&self, socket: &impl AsFd) -> io::Result<()> {
        if let Some(name) = &self.congestion {
            socket2::SockRef::from(socket)
                .set_tcp_congestion(name.as_str().as_bytes())
                .map_err(|e| congestion_error(name.as_str(), e))?;
        }
        Ok(())
    }

    /// The congestion control these options give a connection: the one set, or the
    /// system's default (`unknown` if it cannot be read). For logs and reports.
    pub fn congestion_in_effect(&self) -> String {
        match self.congestion {
            Some(name) => name.to_string(),
            None => system_congestion().unwrap_or_else(|| "unknown".into()),
        }
    }

    /// Tries the options on a socket of its own, so that a name the kernel does not
    /// have (or does not let this process use) is refused at start-up, with the names it
    /// has, rather than at the first connection.
    pub fn check(&self) -> io::Result<()> {
        if self.congestion.is_none() {
            return Ok(());
        }
        let tcp = |domain| {
            socket2::Socket::new(domain, socket2::Type::STREAM, Some(socket2::Protocol::TCP))
        };
        // An IPv6-only host has no IPv4 sockets to try it on.
        let probe = tcp(socket2::Domain::IPV4).or_else(|_| tcp(socket2::Domain::IPV6))?;
        self.apply(&probe)
    }
}

/// The name of a TCP congestion control, held as the kernel takes it: at most 15 bytes
/// (`TCP_CA_NAME_MAX` is 16 with the NUL), so that options stay `Copy`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct CongestionName {
    bytes: [u8; CongestionName::MAX],
    len: u8,
}

impl CongestionName {
    /// The longest name the kernel knows of.
    pub const MAX: usize = 15;

    /// `name`, if it can be one: 1 to 15 bytes of ASCII letters, digits, `_` or `-`.
    pub fn new(name: &str) -> Result<CongestionName, BadCongestionName> {
        let ok = (1..=Self::MAX).contains(&name.len())
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !ok {
            return Err(BadCongestionName(name.chars().take(64).collect()));
        }
        let mut bytes = [0; Self::MAX];
        bytes[..name.len()].copy_from_slice(name.as_bytes());
        Ok(CongestionName {
            bytes,
            len: name.len() as u8,
        })
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        // `new` took only ASCII.
        std::str::from_utf8(&self.bytes[..self.len as usize]).unwrap_or_default()
    }
}

impl std::str::FromStr for CongestionName {
    type Err = BadCongestionName;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        CongestionName::new(s)
    }
}

impl std::fmt::Display for CongestionName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Debug for CongestionName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}

/// A string that cannot name a TCP congestion control.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a TCP congestion control name (1 to 15 ASCII letters, digits, '_' or '-')")]
pub struct BadCongestionName(pub String);

/// The congestion control `socket` uses.
pub fn congestion_of(socket: &impl AsFd) -> io::Result<String> {
    let name = socket2::SockRef::from(socket).tcp_congestion()?;
    let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
    Ok(String::from_utf8_lossy(&name[..end]).into_owned())
}

/// The system's default congestion control, if it can be read.
pub fn system_congestion() -> Option<String> {
    read_proc("tcp_congestion_control")
}

/// The congestion controls the kernel has loaded (others may load on demand, for root).
pub fn available_congestion() -> Option<String> {
    read_proc("tcp_available_congestion_control")
}

fn read_proc(name: &str) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/sys/net/ipv4/{name}")).ok()?;
    Some(text.trim().to_string())
}

/// The kernel answers an unknown name with `ENOENT` and a name this process may not use
/// with `EPERM`; both are said in words, with the names available.
fn congestion_error(name: &str, e: io::Error) -> io::Error {
    let why = match e.raw_os_error() {
        Some(libc::ENOENT) => "not available".to_string(),
        Some(libc::EPERM) => "not allowed for this process (see \
                              net.ipv4.tcp_allowed_congestion_control)"
            .to_string(),
        _ => e.to_string(),
    };
    let have = available_congestion().unwrap_or_else(|| "unknown".into());
    io::Error::new(
        e.kind(),
        format!("TCP congestion control {name:?}: {why} (available: {have})"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A congestion control other than the system's default, which every Linux kernel
    /// has: `reno` is built in and always allowed; `cubic` when the default is `reno`.
    fn other_than_default() -> CongestionName {
        let name = match system_congestion().as_deref() {
            Some("reno") => "cubic",
            _ => "reno",
        };
        CongestionName::new(name).expect("a valid name")
    }

    #[test]
    fn the_congestion_control_is_set_on_a_socket() {
        let name = other_than_default();
        let socket = socket2::Socket::new(
            socket2::Domain::IPV4,
            socket2::Type::STREAM,
            Some(socket2::Protocol::TCP),
        )
        .expect("socket");
        let before = congestion_of(&socket).expect("getsockopt");
        assert_ne!(
            before,
            name.as_str(),
            "the test needs a name other than the default"
        );
        SocketOptions {
            congestion: Some(name),
        }
        .apply(&socket)
        .expect("setsockopt");
        assert_eq!(congestion_of(&socket).expect("getsockopt"), name.as_str());
        let opts = SocketOptions {
            congestion: Some(name),
        };
        assert_eq!(opts.congestion_in_effect(), name.as_str());
    }

    #[test]
    fn no_option_leaves_the_default() {
        let socket = socket2::Socket::new(
            socket2::Domain::IPV4,
            socket2::Type::STREAM,
            Some(socket2::Protocol::TCP),
        )
        .expect("socket");
        SocketOptions::default().apply(&socket).expect("no-op");
        if let Some(default) = system_congestion() {
            assert_eq!(congestion_of(&socket).expect("getsockopt"), default);
        }
        SocketOptions::default().check().expect("nothing to check");
        if let Some(default) = system_congestion() {
            assert_eq!(SocketOptions::default().congestion_in_effect(), default);
        }
    }

    #[test]
    fn an_unknown_congestion_control_is_refused_in_words() {
        let opts = SocketOptions {
            congestion: Some(CongestionName::new("no-such-cc").expect("well formed")),
        };
        let e = opts.check().expect_err("unknown name");
        let text = e.to_string();
        assert!(
            text.contains("\"no-such-cc\"") && text.contains("not available"),
            "{text}"
        );
        assert!(text.contains("available: "), "{text}");
    }

    /// Binds with `opts`, dials with `opts`, and answers the congestion controls of the
    /// dialled and the accepted socket.
    struct BothEnds(SocketOptions);

    impl crate::io::IoTask for BothEnds {
        type Output = (String, String);

        async fn run<B: crate::io::Backend>(self) -> (String, String) {
            use crate::io::{Conn, Listener};
            let listener = B::bind("127.0.0.1:0".parse().expect("addr"), &self.0).expect("bind");
            let addr = listener.local_addr().expect("addr");
            let (dialled, accepted) = tokio::join!(B::connect(addr, &self.0), listener.accept());
            let (dialled, (accepted, _)) = (dialled.expect("connect"), accepted.expect("accept"));
            (
                congestion_of(&dialled.fd()).expect("dialled"),
                congestion_of(&accepted.fd()).expect("accepted"),
            )
        }
    }

    #[test]
    fn both_drivers_set_it_on_dialled_and_accepted_connections() {
        let name = other_than_default();
        let opts = SocketOptions {
            congestion: Some(name),
        };
        for backend in [crate::io::IoBackend::Epoll, crate::io::IoBackend::Uring] {
            if backend == crate::io::IoBackend::Uring && crate::io::probe_uring().is_err() {
                eprintln!("skipped on io_uring: the kernel does not allow it here");
                continue;
            }
            let (dialled, accepted) =
                crate::io::block_on(backend, BothEnds(opts)).expect("runtime");
            assert_eq!(
                (dialled.as_str(), accepted.as_str()),
                (name.as_str(), name.as_str()),
                "{backend:?}"
            );
            // And without options, the system's default on both ends.
            let (dialled, accepted) =
                crate::io::block_on(backend, BothEnds(SocketOptions::default())).expect("runtime");
            assert_ne!(dialled, name.as_str(), "{backend:?}");
            assert_ne!(accepted, name.as_str(), "{backend:?}");
        }
    }

    #[test]
    fn names_the_kernel_could_not_take_are_refused() {
        for bad in ["", "a-name-of-16-byt", "cu bic", "cubic\0", "bbr/2", "é"] {
            assert!(CongestionName::new(bad).is_err(), "{bad:?} taken");
        }
        for good in ["cubic", "bbr", "reno", "dctcp", "a-name-of-15-by", "h_tcp"] {
            let n: CongestionName = good.parse().expect(good);
            assert_eq!(n.as_str(), good);
            assert_eq!(n.to_string(), good);
        }
    }
}
