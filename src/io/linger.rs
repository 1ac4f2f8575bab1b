//! A reader's linger: after a lone message, a stream reader looks for the next one itself
//! (a non-blocking read) between the thread's other tasks for a short while, instead of
//! waiting at once for the driver to report its socket readable.
//!
//! Why: a thread that waits in the driver with nothing else to do sleeps, and leaves its
//! CPU idle. Waking it again takes an inter-processor interrupt and the CPU's way out of
//! idle; on virtual machines the host must also run the halted vCPU again, which took
//! 30–35 µs in the slow samples traced in docs/performance.md. A lone message is often
//! answered, or followed by the application's next one, within a round trip, and a
//! thread that is still looking finds it without either wake-up or the driver's round
//! trip to report it. Go's scheduler does the same before it parks a thread: its
//! spinning threads poll the network without blocking first.
//!
//! Bursts never linger: their next read waits through the driver, which gathers more
//! per read. An idle member lingers once per message it receives.

use std::time::{Duration, Instant};

use super::Backend;

/// How long a stream reader looks for the next message itself after a lone one unless
/// configured: long enough to cover a loopback or LAN round trip through the
/// application (15–20 µs in the bench's latency rows), short enough that a member
/// receiving a heartbeat every 100 ms spends about 0.03% of a CPU on it.
pub const DEFAULT_LINGER: Duration = Duration::from_micros(30);

/// Paces a task that looks at its socket itself until its linger runs out.
///
/// Between two looks the task yields to the thread's other tasks; every other time it
/// takes a whole driver turn ([`Backend::turn`]) instead. A yield is the cheap pass (the
/// reactor is polled without a timeout), but on io_uring it submits nothing that the
/// thread's other tasks queued, so a task that only yielded would hold their operations
/// back for as long as it looks.
#[derive(Debug)]
pub struct Looks {
    deadline: Instant,
    looks: u32,
}

/// What to do after a look that found nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextLook {
    /// Let the thread's other tasks run, then look again.
    Yield,
    /// Take a whole driver turn, then look again.
    Turn,
    /// The linger is over: wait through the driver.
    Wait,
}

impl Looks {
    /// Looks until `linger` after `now`.
    pub fn new(linger: Duration, now: Instant) -> Looks {
        Looks {
            deadline: now + linger,
            looks: 0,
        }
    }

    /// After a look at `now` that found nothing: what next. Plain arithmetic, so it is
    /// tested without a clock or a driver.
    pub fn after_empty_look(&mut self, now: Instant) -> NextLook {
        if now >= self.deadline {
            return NextLook::Wait;
        }
        self.looks = self.looks.wrapping_add(1);
        if self.looks % 2 == 0 {
            NextLook::Turn
        } else {
            NextLook::Yield
        }
    }

    /// After a look that found nothing: `false` once the linger is over (wait through
    /// the driver then); otherwise lets the thread's other tasks run and returns `true`,
    /// to look again.
    pub async fn again<B: Backend>(&mut self) -> bool {
        match self.after_empty_look(Instant::now()) {
            NextLook::Wait => false,
            NextLook::Turn => {
                B::turn().await;
                true
            }
            NextLook::Yield => {
                tokio::task::yield_now().await;
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn looks_alternate_yields_and_turns_until_the_deadline() {
        let t0 = Instant::now();
        let us = |n| t0 + Duration::from_micros(n);
        let mut looks = Looks::new(Duration::from_micros(30), t0);
        assert_eq!(looks.after_empty_look(us(1)), NextLook::Yield);
        assert_eq!(looks.after_empty_look(us(2)), NextLook::Turn);
        assert_eq!(looks.after_empty_look(us(3)), NextLook::Yield);
        assert_eq!(looks.after_empty_look(us(29)), NextLook::Turn);
        assert_eq!(looks.after_empty_look(us(30)), NextLook::Wait);
        assert_eq!(looks.after_empty_look(us(31)), NextLook::Wait);
    }

    #[test]
    fn a_zero_linger_waits_at_once() {
        let t0 = Instant::now();
        let mut looks = Looks::new(Duration::ZERO, t0);
        assert_eq!(looks.after_empty_look(t0), NextLook::Wait);
    }
}
