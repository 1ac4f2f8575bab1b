//! etcd's `peerStatus`: whether a peer is active, since when, with etcd's log lines
//! (`peer became active`, `peer became inactive (message send to peer failed)`,
//! `peer deactivated again`) and IDs in etcd's hex form.

use std::sync::Mutex;
use std::time::SystemTime;

/// A failure that makes a peer inactive, as etcd words it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FailureType {
    /// `pipeline`, `stream MsgApp v2`, `stream Message`, `sendMsgSnap`…
    pub source: &'static str,
    /// `dial`, `read`, `write`, `heartbeat`, `post`.
    pub action: &'static str,
}

#[derive(Debug, Default)]
struct State {
    active: bool,
    since: Option<SystemTime>,
}

/// One peer's activity status.
#[derive(Debug)]
pub struct PeerStatus {
    local: u64,
    id: u64,
    state: Mutex<State>,
}

/// What a status change was, for counters and events.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// Inactive → active.
    BecameActive,
    /// Active → inactive.
    BecameInactive,
    /// No change.
    None,
}

impl PeerStatus {
    /// The status of peer `id` as seen by member `local`; starts inactive.
    pub fn new(local: u64, id: u64) -> Self {
        PeerStatus {
            local,
            id,
            state: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A channel to the peer works.
    pub fn activate(&self) -> Change {
        let mut s = self.lock();
        if s.active {
            return Change::None;
        }
        tracing::info!(local_member_id = %format_args!("{:x}", self.local), remote_peer_id = %format_args!("{:x}", self.id), "peer became active");
        s.active = true;
        s.since = Some(SystemTime::now());
        Change::BecameActive
    }

    /// A channel to the peer failed with `error`.
    pub fn deactivate(&self, failure: FailureType, error: &str) -> Change {
        let mut s = self.lock();
        let msg = format!(
            "failed to {} {:x} on {} ({error})",
            failure.action, self.id, failure.source
        );
        if s.active {
            tracing::warn!(local_member_id = %format_args!("{:x}", self.local), remote_peer_id = %format_args!("{:x}", self.id), error = %msg, "peer became inactive (message send to peer failed)");
            s.active = false;
            s.since = None;
            return Change::BecameInactive;
        }
        tracing::debug!(local_member_id = %format_args!("{:x}", self.local), remote_peer_id = %format_args!("{:x}", self.id), error = %msg, "peer deactivated again");
        Change::None
    }

    /// Whether the peer is active.
    pub fn is_active(&self) -> bool {
        self.lock().active
    }

    /// When it last became active, if it is active.
    pub fn active_since(&self) -> Option<SystemTime> {
        self.lock().since
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn active_since_follows_the_status() {
        let s = PeerStatus::new(1, 2);
        assert_eq!(s.active_since(), None);
        assert_eq!(s.activate(), Change::BecameActive);
        let since = s.active_since().unwrap();
        assert_eq!(s.activate(), Change::None);
        assert_eq!(s.active_since(), Some(since));
        let f = FailureType {
            source: "pipeline",
            action: "post",
        };
        assert_eq!(s.deactivate(f.clone(), "boom"), Change::BecameInactive);
        assert_eq!(s.deactivate(f, "boom"), Change::None);
        assert_eq!((s.is_active(), s.active_since()), (false, None));
    }
}
