//! How the transport's I/O thread asks the kernel to schedule it.
//!
//! An application thread that sends one message per call wakes our I/O thread for it.
//! With the default policy the woken thread preempts the sender when the kernel has put
//! both on one CPU, takes the single queued message, writes it and sleeps again: a
//! context switch pair per message, and half the throughput (measured: 2.1 M instead of
//! 4 M msgs/s on the bench's 1x64B row with the sender and its writer pinned together,
//! docs/performance.md). `SCHED_BATCH` (sched(7)) keeps the I/O thread from preempting
//! the thread that woke it: it runs on an idle CPU at once if there is one, else when
//! the sender blocks or its time slice ends, and then finds a batch waiting. Go gets
//! the same effect from its scheduler, which queues a readied goroutine without
//! preempting the running one. The receive workers keep the default policy: they are
//! woken by the I/O thread, not by the application.
//!
//! The cost: on a machine whose every CPU is busy, a message may wait for the sender's
//! slice to end before it is written. [`ThreadScheduling::Normal`] keeps the kernel's
//! default for applications that prefer that.

use std::str::FromStr;

/// The scheduling policy for the transport's I/O thread.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ThreadScheduling {
    /// `SCHED_BATCH`: never preempt the thread that woke us (the default).
    #[default]
    Batch,
    /// The kernel's default policy (`SCHED_OTHER`).
    Normal,
}

impl ThreadScheduling {
    /// The name used in flags and logs.
    pub fn name(self) -> &'static str {
        match self {
            ThreadScheduling::Batch => "batch",
            ThreadScheduling::Normal => "normal",
        }
    }

    /// Applies the policy to the calling thread. Needs no privilege: an unprivileged
    /// thread may switch between `SCHED_OTHER` and `SCHED_BATCH` at priority 0.
    pub fn apply_to_current_thread(self) -> std::io::Result<()> {
        let policy = match self {
            ThreadScheduling::Batch => libc::SCHED_BATCH,
            ThreadScheduling::Normal => libc::SCHED_OTHER,
        };
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: `param` is a valid, initialised `sched_param` that outlives the call,
        // and pid 0 names the calling thread (Linux applies the policy per thread). The
        // call reads `param` and changes nothing else in our memory. Tested below.
        let rc = unsafe { libc::sched_setscheduler(0, policy, &param) };
        if rc == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    }

    /// Applies the policy to the calling thread, logging (once per thread) if the kernel
    /// refuses; the thread then runs under the default policy.
    pub fn apply_or_warn(self, thread: &str) {
        if let Err(e) = self.apply_to_current_thread() {
            tracing::warn!(thread, sched = self.name(), error = %e, "cannot set the thread's scheduling policy; keeping the default");
        }
    }
}

impl FromStr for ThreadScheduling {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "batch" => Ok(ThreadScheduling::Batch),
            "normal" | "other" => Ok(ThreadScheduling::Normal),
            other => Err(format!(
                "unknown thread scheduling {other:?} (batch or normal)"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn current_policy() -> i32 {
        // SAFETY: a plain query of the calling thread's policy; no memory is passed.
        unsafe { libc::sched_getscheduler(0) }
    }

    #[test]
    fn policies_apply_to_the_calling_thread_only() {
        let before = current_policy();
        let seen = std::thread::spawn(|| {
            ThreadScheduling::Batch.apply_to_current_thread().unwrap();
            let batch = current_policy();
            ThreadScheduling::Normal.apply_to_current_thread().unwrap();
            (batch, current_policy())
        })
        .join()
        .unwrap();
        assert_eq!(seen, (libc::SCHED_BATCH, libc::SCHED_OTHER));
        assert_eq!(current_policy(), before, "other threads keep theirs");
    }

    #[test]
    fn names_parse_back() {
        for s in [ThreadScheduling::Batch, ThreadScheduling::Normal] {
            assert_eq!(s.name().parse::<ThreadScheduling>(), Ok(s));
        }
        assert!("fifo".parse::<ThreadScheduling>().is_err());
    }
}
