//! A transport's peers by ID: copied on write, and read on the sending path from a copy
//! each sending thread keeps, with no lock.
//!
//! `send` looks its peer up for every message. Under a read-write lock that was two
//! locked instructions per message (taking and releasing a read share) on the sending
//! thread, each waiting for the stores of the message just encoded to drain: a tenth of
//! that thread's time on small messages. Membership changes are rare, so the map is
//! replaced whole when it changes and a generation number is bumped; a sending thread
//! keeps the map it last used with its generation, and while the generation is the same
//! (one plain load) it reads its copy. A change is seen by each thread's next send.
//!
//! A thread's copy holds its peers (and their worker threads, which end when a peer is
//! dropped) until that thread next sends through this transport or through
//! [`CACHED_TRANSPORTS`] others, or ends.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use rustc_hash::FxHashMap;

use super::peer::Peer;

/// Peers and remotes by ID. Member IDs are random 64-bit numbers, so Fx's multiply does
/// as a hash (SipHash cost a few percent of sending).
pub type PeerMap = FxHashMap<u64, Arc<Peer>>;

/// Transports whose maps one thread keeps copies of (the oldest is let go first).
pub const CACHED_TRANSPORTS: usize = 4;

/// Tells transports apart in a thread's copies: a dropped transport's address can be
/// reused by the next one, its number cannot.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// One transport's map as a thread last read it.
struct Copy {
    transport: u64,
    generation: u64,
    map: Arc<PeerMap>,
}

thread_local! {
    /// This thread's copies, most recently refreshed last.
    static COPIES: RefCell<Vec<Copy>> = const { RefCell::new(Vec::new()) };
}

/// A transport's peers.
pub struct Peers {
    id: u64,
    /// Bumped (under the write lock) every time `map` is replaced.
    generation: AtomicU64,
    map: RwLock<Arc<PeerMap>>,
}

impl Default for Peers {
    fn default() -> Self {
        Peers {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            generation: AtomicU64::new(0),
            map: RwLock::default(),
        }
    }
}

impl Peers {
    /// The current map (for anything but sending: this takes a reference to it).
    pub fn current(&self) -> Arc<PeerMap> {
        self.map.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Runs `f` on the current map, under the read lock (for anything but sending).
    pub fn with<R>(&self, f: impl FnOnce(&PeerMap) -> R) -> R {
        f(&self.map.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// Changes the map: `f` edits a copy, which replaces it, and sending threads see it
    /// from their next send.
    pub fn change<R>(&self, f: impl FnOnce(&mut PeerMap) -> R) -> R {
        let mut map = self.map.write().unwrap_or_else(|p| p.into_inner());
        let mut next = PeerMap::clone(&map);
        let r = f(&mut next);
        *map = Arc::new(next);
        // Under the lock, after the map: whoever sees this number reads this map or a
        // newer one.
        self.generation.fetch_add(1, Ordering::Release);
        r
    }

    /// Runs `f` on this thread's copy of the map, taken again first if the peers
    /// changed since. `f` must not send through this transport (it would read the map
    /// under the lock instead: correct, only slower). Not for a thread-local destructor
    /// that runs after this thread's copies are gone (it would panic there): the send
    /// path is kept free of that check, for a case no raft loop meets.
    pub fn with_copy<R>(&self, f: impl FnOnce(&PeerMap) -> R) -> R {
        let generation = self.generation.load(Ordering::Acquire);
        COPIES.with(|copies| {
            let fresh = copies
                .borrow()
                .iter()
                .any(|c| c.transport == self.id && c.generation == generation);
            if !fresh {
                let Ok(mut held) = copies.try_borrow_mut() else {
                    return self.with(f);
                };
                // The map read now is this generation's or newer; a newer one is taken
                // again at the next send, which is harmless.
                let map = self.map.read().unwrap_or_else(|p| p.into_inner()).clone();
                // At most two copies go: this transport's, replaced, and the oldest if
                // the cache is full. They are dropped once the borrow is released:
                // dropping the last reference to a peer runs its destructors, which must
                // find the copies free (anything that sends from there reads them again).
                let stale = take_copy(&mut held, self.id);
                let evicted = (held.len() >= CACHED_TRANSPORTS).then(|| held.remove(0));
                held.push(Copy {
                    transport: self.id,
                    generation,
                    map,
                });
                drop(held);
                drop((stale, evicted));
            }
            let copies = copies.borrow();
            match copies.iter().rev().find(|c| c.transport == self.id) {
                Some(c) => f(&c.map),
                None => self.with(f),
            }
        })
    }

    /// Lets go of this thread's copy of this transport's map (when the transport
    /// stops, so that a thread that stopped it does not keep its peers).
    pub fn forget_copy(&self) {
        // Nothing to do on a thread whose copies are already gone (a transport dropped
        // by a thread-local destructor). The copy is dropped after the borrow ends, as
        // in `with_copy`.
        let old = COPIES.try_with(|copies| {
            let mut held = copies.try_borrow_mut().ok()?;
            take_copy(&mut held, self.id)
        });
        drop(old);
    }
}

/// Takes transport `id`'s copy out of a thread's copies, for its holder to drop once
/// the borrow has ended.
fn take_copy(held: &mut Vec<Copy>, id: u64) -> Option<Copy> {
    let at = held.iter().position(|c| c.transport == id)?;
    Some(held.remove(at))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raftpb::Message;
    use crate::transport::peer::QueueSizes;
    use crate::transport::raft::{ProcessError, Raft, SnapshotStatus};

    /// An application that does nothing, or that reads `peers` when dropped (storing
    /// what it saw, plus 10, in the counter).
    #[derive(Default)]
    struct TestRaft(Option<(Arc<Peers>, Arc<std::sync::atomic::AtomicUsize>)>);
    impl Raft for TestRaft {
        fn process(&self, _m: Message) -> Result<(), ProcessError> {
            Ok(())
        }
        fn is_id_removed(&self, _id: u64) -> bool {
            false
        }
        fn report_unreachable(&self, _id: u64) {}
        fn report_snapshot(&self, _id: u64, _status: SnapshotStatus) {}
    }
    impl Drop for TestRaft {
        fn drop(&mut self) {
            if let Some((peers, seen)) = &self.0 {
                seen.store(peers.with_copy(|m| m.len()) + 10, Ordering::SeqCst);
            }
        }
    }

    fn peer_with(id: u64, raft: TestRaft) -> Arc<Peer> {
        Peer::new(
            1,
            id,
            Vec::new(),
            QueueSizes::default(),
            Arc::new(raft),
            true,
        )
        .0
    }

    fn peer(id: u64) -> Arc<Peer> {
        peer_with(id, TestRaft::default())
    }

    fn ids(peers: &Peers) -> Vec<u64> {
        let mut v: Vec<u64> = peers.with_copy(|m| m.keys().copied().collect());
        v.sort();
        v
    }

    #[test]
    fn a_thread_sees_every_change_at_its_next_read() {
        let peers = Peers::default();
        assert!(ids(&peers).is_empty());
        peers.change(|m| m.insert(2, peer(2)));
        assert_eq!(ids(&peers), [2]);
        peers.change(|m| m.insert(3, peer(3)));
        assert_eq!(ids(&peers), [2, 3]);
        peers.change(|m| m.remove(&2));
        assert_eq!(ids(&peers), [3]);
        // Another thread, with no copy yet, and a change it makes seen here.
        std::thread::scope(|s| {
            s.spawn(|| {
                assert_eq!(ids(&peers), [3]);
                peers.change(|m| m.insert(4, peer(4)));
            });
        });
        assert_eq!(ids(&peers), [3, 4]);
    }

    #[test]
    fn copies_are_kept_apart_by_transport_and_let_go() {
        let all: Vec<Peers> = (0..CACHED_TRANSPORTS + 2)
            .map(|_| Peers::default())
            .collect();
        for (i, p) in all.iter().enumerate() {
            let id = 10 + i as u64;
            p.change(|m| m.insert(id, peer(id)));
        }
        for (i, p) in all.iter().enumerate() {
            assert_eq!(ids(p), [10 + i as u64]);
        }
        let held = COPIES.with(|c| c.borrow().len());
        assert_eq!(held, CACHED_TRANSPORTS, "bounded");
        // A removed peer is let go by this thread's copy at its next read.
        let p2 = peer(2);
        let weak = Arc::downgrade(&p2);
        all[0].change(|m| m.insert(2, p2));
        assert_eq!(ids(&all[0]), [2, 10]);
        all[0].change(|m| m.remove(&2));
        assert!(weak.upgrade().is_some(), "the copy still holds it");
        assert_eq!(ids(&all[0]), [10]);
        assert!(
            weak.upgrade().is_none(),
            "let go once the copy was taken again"
        );
        all[0].forget_copy();
        let held = COPIES.with(|c| {
            c.borrow()
                .iter()
                .filter(|c| c.transport == all[0].id)
                .count()
        });
        assert_eq!(held, 0);
    }

    /// A transport dropped by a thread-local destructor, after this thread's copies are
    /// gone, stops without panicking (which would abort).
    #[test]
    fn forgetting_after_the_copies_are_gone_is_quiet() {
        use std::sync::atomic::AtomicUsize;
        static SEEN: AtomicUsize = AtomicUsize::new(0);
        struct ReadsOnDrop(Arc<Peers>);
        impl Drop for ReadsOnDrop {
            fn drop(&mut self) {
                self.0.forget_copy();
                SEEN.store(self.0.with(|m| m.len()) + 10, Ordering::SeqCst);
            }
        }
        thread_local! {
            static GUARD: RefCell<Option<ReadsOnDrop>> = const { RefCell::new(None) };
        }
        let peers = Arc::new(Peers::default());
        peers.change(|m| m.insert(2, peer(2)));
        std::thread::spawn(move || {
            // The guard's destructor is registered first, so it runs last, after the
            // copies' (thread-local destructors run in reverse order).
            GUARD.with(|g| *g.borrow_mut() = Some(ReadsOnDrop(peers.clone())));
            assert_eq!(peers.with_copy(|m| m.len()), 1);
        })
        .join()
        .unwrap();
        assert_eq!(SEEN.load(Ordering::SeqCst), 11);
    }

    /// Dropping a thread's old copy can drop a peer's last reference, and the
    /// application's `Raft` with it; a read from there (a send) finds the copies free.
    #[test]
    fn a_read_from_a_dropped_peer_finds_the_copies_free() {
        use std::sync::atomic::AtomicUsize;
        let peers = Arc::new(Peers::default());
        let seen = Arc::new(AtomicUsize::new(0));
        let p2 = peer_with(2, TestRaft(Some((peers.clone(), seen.clone()))));
        peers.change(|m| m.insert(2, p2));
        assert_eq!(ids(&peers), [2]);
        peers.change(|m| m.remove(&2));
        peers.change(|m| m.insert(3, peer(3)));
        assert_eq!(
            seen.load(Ordering::SeqCst),
            0,
            "this thread's copy still holds it"
        );
        assert_eq!(ids(&peers), [3]);
        assert_eq!(
            seen.load(Ordering::SeqCst),
            11,
            "read the new copy while dropped"
        );
    }

    #[test]
    fn a_nested_read_falls_back_to_the_lock() {
        let peers = Peers::default();
        peers.change(|m| m.insert(2, peer(2)));
        let outer = peers.with_copy(|m| {
            // The copy is borrowed; a change and a second read here still work.
            peers.change(|m| m.insert(3, peer(3)));
            (m.len(), ids(&peers))
        });
        assert_eq!(outer, (1, vec![2, 3]));
    }
}
