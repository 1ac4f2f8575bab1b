//! The I/O drivers and how one is chosen. Everything above this module is generic over
//! [`Backend`]; the drivers only move bytes.
//!
//! - [`IoMode::Auto`] (the default) uses io_uring when the kernel allows it, and epoll
//!   when `io_uring_setup` is refused (`ENOSYS` on old kernels, `EPERM` under Docker's
//!   default seccomp profile or `kernel.io_uring_disabled`), with one warning.
//! - [`IoMode::Uring`] and [`IoMode::Epoll`] force one. The `RAFTHTTP_IO` environment
//!   variable (`auto`, `uring`, `epoll`) overrides the configured mode.

mod conn;
pub mod deadline;
mod epoll;
pub mod linger;
pub mod pool;
pub mod sched;
pub mod socket_options;
pub mod thread;
mod uring;

pub use conn::{Backend, Conn, Listener};
pub use deadline::{Deadline, Timeouts};
pub use epoll::{Epoll, EpollConn, EpollListener};
pub use linger::{Looks, DEFAULT_LINGER};
pub use pool::{BufferPool, PoolStats};
pub use sched::ThreadScheduling;
pub use socket_options::{BadCongestionName, CongestionName, SocketOptions};
pub use thread::IoThread;
pub use uring::{Uring, UringConn, UringListener};

use std::fmt;
use std::future::Future;
use std::str::FromStr;

/// Which driver to use, as configured.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum IoMode {
    /// io_uring if the kernel allows it, else epoll.
    #[default]
    Auto,
    /// io_uring, or fail.
    Uring,
    /// epoll.
    Epoll,
}

impl FromStr for IoMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(IoMode::Auto),
            "uring" | "io_uring" | "io-uring" => Ok(IoMode::Uring),
            "epoll" => Ok(IoMode::Epoll),
            other => Err(format!(
                "unknown I/O backend {other:?} (auto, uring or epoll)"
            )),
        }
    }
}

/// The driver in use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IoBackend {
    /// tokio-uring.
    Uring,
    /// plain tokio (epoll).
    Epoll,
}

impl IoBackend {
    /// `uring` or `epoll`, as logs and stats print it.
    pub fn name(self) -> &'static str {
        match self {
            IoBackend::Uring => "uring",
            IoBackend::Epoll => "epoll",
        }
    }
}

impl fmt::Display for IoBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a driver could not be chosen.
#[derive(Debug, thiserror::Error)]
pub enum IoError {
    /// `uring` was forced but the kernel refused io_uring.
    #[error("io_uring is unavailable: {0}")]
    UringUnavailable(std::io::Error),
    /// `RAFTHTTP_IO` holds something else than auto, uring or epoll.
    #[error("RAFTHTTP_IO: {0}")]
    BadEnv(String),
    /// The runtime could not be built.
    #[error("cannot start the {0} runtime: {1}")]
    Runtime(IoBackend, std::io::Error),
}

/// Tries to set up a tiny io_uring, as tokio-uring will: `Ok` if the kernel allows it.
pub fn probe_uring() -> std::io::Result<()> {
    io_uring::IoUring::new(2).map(drop)
}

/// The mode after applying `RAFTHTTP_IO`, if set.
pub fn mode_from_env(configured: IoMode) -> Result<IoMode, IoError> {
    mode_with_override(configured, std::env::var("RAFTHTTP_IO").ok().as_deref())
}

/// `configured`, unless `env` (the value of `RAFTHTTP_IO`) says otherwise.
fn mode_with_override(configured: IoMode, env: Option<&str>) -> Result<IoMode, IoError> {
    match env {
        Some(v) if !v.is_empty() => v.parse().map_err(IoError::BadEnv),
        _ => Ok(configured),
    }
}

/// Chooses the driver for `mode` (after `RAFTHTTP_IO`), probing the kernel for `auto`.
/// Logs the choice, and one warning when `auto` falls back to epoll.
pub fn choose_backend(mode: IoMode) -> Result<IoBackend, IoError> {
    let mode = mode_from_env(mode)?;
    let backend = match mode {
        IoMode::Epoll => IoBackend::Epoll,
        IoMode::Uring => {
            probe_uring().map_err(IoError::UringUnavailable)?;
            IoBackend::Uring
        }
        IoMode::Auto => match probe_uring() {
            Ok(()) => IoBackend::Uring,
            Err(e) => {
                let why = match e.raw_os_error() {
                    Some(libc::ENOSYS) => "the kernel has no io_uring (ENOSYS)",
                    Some(libc::EPERM) => {
                        "io_uring is not permitted (EPERM: seccomp profile or kernel.io_uring_disabled)"
                    }
                    _ => "io_uring setup failed",
                };
                tracing::warn!(error = %e, "{why}; falling back to epoll");
                IoBackend::Epoll
            }
        },
    };
    tracing::info!(io = backend.name(), ?mode, "I/O backend selected");
    Ok(backend)
}

/// A future that can run on either driver: the protocol code, compiled for both.
pub trait IoTask {
    /// What it returns.
    type Output;
    /// The future for driver `B`.
    fn run<B: Backend>(self) -> impl Future<Output = Self::Output>;
}

/// Runs `task` to completion on the current thread with `backend`'s runtime: tokio-uring,
/// or a tokio current-thread runtime with a `LocalSet` (so both allow `spawn_local`).
pub fn block_on<T: IoTask>(backend: IoBackend, task: T) -> Result<T::Output, IoError> {
    match backend {
        IoBackend::Uring => {
            let rt = tokio_uring::Runtime::new(&tokio_uring::builder())
                .map_err(|e| IoError::Runtime(backend, e))?;
            Ok(rt.block_on(task.run::<Uring>()))
        }
        IoBackend::Epoll => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| IoError::Runtime(backend, e))?;
            let local = tokio::task::LocalSet::new();
            Ok(local.block_on(&rt, task.run::<Epoll>()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_environment_overrides_the_configured_mode() {
        assert_eq!(
            mode_with_override(IoMode::Uring, Some("epoll")).unwrap(),
            IoMode::Epoll
        );
        assert_eq!(
            mode_with_override(IoMode::Epoll, Some(" URING ")).unwrap(),
            IoMode::Uring
        );
        assert_eq!(
            mode_with_override(IoMode::Epoll, Some("")).unwrap(),
            IoMode::Epoll
        );
        assert_eq!(
            mode_with_override(IoMode::Auto, None).unwrap(),
            IoMode::Auto
        );
        let e = mode_with_override(IoMode::Auto, Some("kqueue")).unwrap_err();
        assert_eq!(
            e.to_string(),
            r#"RAFTHTTP_IO: unknown I/O backend "kqueue" (auto, uring or epoll)"#
        );
    }

    #[test]
    fn epoll_is_chosen_without_probing() {
        if std::env::var_os("RAFTHTTP_IO").is_none() {
            assert_eq!(choose_backend(IoMode::Epoll).unwrap(), IoBackend::Epoll);
        }
    }
}
