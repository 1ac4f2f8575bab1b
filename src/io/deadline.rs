//! Deadlines by closing, not by cancelling: a watchdog task shuts the connection down
//! when an armed deadline passes, so the pending read or write completes (with EOF or an
//! error) and the caller sees [`Deadline::expired`]. tokio-uring does not cancel a
//! dropped read, so abandoning one on a live connection would leave the kernel writing
//! into a buffer nobody reads; closing is the only safe timeout.

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use super::Conn;

/// One connection's deadline, shared between the connection's task and its watchdog.
#[derive(Debug, Default)]
pub struct Deadline {
    at: Cell<Option<Instant>>,
    expired: Cell<bool>,
    done: Cell<bool>,
    wake: Notify,
}

impl Deadline {
    /// A new deadline, disarmed.
    pub fn new() -> Rc<Self> {
        Rc::new(Deadline::default())
    }

    /// Arms the deadline `timeout` from now (replacing any armed one).
    pub fn arm(&self, timeout: Duration) {
        self.arm_at(Instant::now() + timeout);
    }

    /// Arms the deadline at `at`.
    pub fn arm_at(&self, at: Instant) {
        if self.at.replace(Some(at)).is_none() {
            self.wake.notify_one();
        }
    }

    /// Disarms it.
    pub fn disarm(&self) {
        self.at.set(None);
    }

    /// Whether the watchdog closed the connection because the deadline passed.
    pub fn expired(&self) -> bool {
        self.expired.get()
    }

    /// Ends the watchdog (the connection is finished).
    pub fn finish(&self) {
        self.done.set(true);
        self.wake.notify_one();
    }

    /// Runs until [`finish`](Self::finish) or until an armed deadline passes, in which
    /// case it shuts `conn` down. Spawn it beside the connection's task.
    pub async fn watch<C: Conn>(self: Rc<Self>, conn: Rc<C>) {
        loop {
            if self.done.get() {
                return;
            }
            let Some(at) = self.at.get() else {
                self.wake.notified().await;
                continue;
            };
            tokio::select! {
                () = tokio::time::sleep_until(at) => {}
                () = self.wake.notified() => continue,
            }
            // Re-armed later meanwhile? Then sleep again; otherwise it has passed.
            match self.at.get() {
                Some(now_at) if now_at <= Instant::now() && !self.done.get() => {
                    self.expired.set(true);
                    let _ = conn.shutdown();
                    return;
                }
                _ => {}
            }
        }
    }
}

/// How long I/O may wait.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// Longest wait for one read (and for a whole request head); etcd: 5 s.
    pub read: Duration,
    /// Longest wait for one write; etcd: 5 s.
    pub write: Duration,
    /// Longest wait to connect; etcd 3.3+: 1 s + election timeout (2 s by default).
    pub dial: Duration,
    /// How long a keep-alive connection may sit idle between requests.
    pub idle: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            read: Duration::from_secs(5),
            write: Duration::from_secs(5),
            dial: Duration::from_secs(2),
            idle: Duration::from_secs(5),
        }
    }
}
