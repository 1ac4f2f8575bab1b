//! The message shapes the Go anchor (`shared/anchors/etcd-go`) measures, so that our
//! benchmarks and tests drive the codecs and the transport with the same traffic:
//! contiguous MsgApps (`Index i`, entries `i+1..`, `Term = LogTerm = 1`, `Commit i`),
//! which msgappv2 sends as compact AppEntries frames, and MsgHeartbeats.

use std::sync::Mutex;

use bytes::{Bytes, BytesMut};

use crate::raftpb::{Entry, EntryType, Message, MessageType};

/// The anchor's entry payload: `n` bytes of `a..z` repeated.
///
/// Like the anchor's one `payload` slice that every entry points at, this is one
/// process-wide buffer per size (kept for the life of the process), so cloning it into
/// an entry and dropping it again costs no reference count. A shared refcounted buffer
/// would instead make the sending thread and the writer contend on one counter for
/// every entry, a cost the anchor's harness does not have.
pub fn payload(n: usize) -> Bytes {
    static BY_SIZE: Mutex<Vec<&'static [u8]>> = Mutex::new(Vec::new());
    let mut by_size = BY_SIZE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(&p) = by_size.iter().find(|p| p.len() == n) {
        return Bytes::from_static(p);
    }
    let p: &'static [u8] = (0..n)
        .map(|i| b'a' + (i % 26) as u8)
        .collect::<Vec<u8>>()
        .leak();
    by_size.push(p);
    Bytes::from_static(p)
}

/// Produces the contiguous MsgApps a leader in replicate state sends.
#[derive(Clone, Debug)]
pub struct AppSource {
    from: u64,
    to: u64,
    per_msg: usize,
    payload: Bytes,
    index: u64,
}

impl AppSource {
    /// MsgApps from `from` to `to`, each with `per_msg` entries of `entry_bytes` bytes.
    pub fn new(from: u64, to: u64, per_msg: usize, entry_bytes: usize) -> Self {
        AppSource {
            from,
            to,
            per_msg,
            payload: payload(entry_bytes),
            index: 0,
        }
    }

    /// Overwrites `m` with the next MsgApp, reusing its entry capacity (no allocation
    /// once `m` has held `per_msg` entries).
    pub fn fill(&mut self, m: &mut Message) {
        let i = self.index;
        if self.holds_entries(m) {
            // The previous MsgApp of this source: only the indexes change. (Dropping and
            // rebuilding every entry was a tenth of the sending thread on 1x64B.)
            for (j, e) in (1..).zip(m.entries.iter_mut()) {
                e.index = i + j;
            }
        } else {
            m.entries.clear();
            m.entries.extend((1..=self.per_msg as u64).map(|j| Entry {
                entry_type: EntryType::EntryNormal as i32,
                term: 1,
                index: i + j,
                data: Some(self.payload.clone()),
            }));
        }
        m.msg_type = MessageType::MsgApp as i32;
        m.from = self.from;
        m.to = self.to;
        m.term = 1;
        m.log_term = 1;
        m.index = i;
        m.commit = i;
        self.index = i + self.per_msg as u64;
    }

    /// Whether `m` holds `per_msg` entries as this source builds them (type, term and
    /// payload), so that only their indexes need writing.
    fn holds_entries(&self, m: &Message) -> bool {
        m.entries.len() == self.per_msg
            && m.entries.iter().all(|e| {
                e.entry_type == EntryType::EntryNormal as i32
                    && e.term == 1
                    && e.data.as_ref().is_some_and(|d| {
                        d.as_ptr() == self.payload.as_ptr() && d.len() == self.payload.len()
                    })
            })
    }

    /// The receiver of these MsgApps.
    pub fn to(&self) -> u64 {
        self.to
    }

    /// The last index sent (the next MsgApp's `Index`).
    pub fn index(&self) -> u64 {
        self.index
    }

    /// Continues from `index` (so that a new source extends an earlier one's log).
    pub fn set_index(&mut self, index: u64) {
        self.index = index;
    }

    /// The next MsgApp.
    pub fn next_message(&mut self) -> Message {
        let mut m = Message::default();
        self.fill(&mut m);
        m
    }
}

/// The anchor's heartbeat number `k` from `from` to `to`.
pub fn heartbeat(from: u64, to: u64, k: u64) -> Message {
    Message {
        msg_type: MessageType::MsgHeartbeat as i32,
        from,
        to,
        term: 1,
        commit: k,
        ..Default::default()
    }
}

/// Replays `stream` as a receiver reads it: `read_size` bytes at a time into one
/// reusable read buffer, each read handed on as a [`Bytes`] piece.
pub fn replay_reads(stream: &[u8], read_size: usize, mut piece: impl FnMut(Bytes)) {
    let mut buf = BytesMut::with_capacity(read_size);
    for read in stream.chunks(read_size) {
        buf.reserve(read_size);
        buf.extend_from_slice(read);
        piece(buf.split().freeze());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Filling a message again gives what a fresh one gets, whatever it held before.
    #[test]
    fn refilling_equals_a_fresh_message() {
        for per_msg in [1, 3] {
            let mut reused = AppSource::new(1, 2, per_msg, 64);
            let mut fresh = AppSource::new(1, 2, per_msg, 64);
            let mut m = Message::default();
            for round in 0..4 {
                if round == 2 {
                    // Something else in the entries: they must be rebuilt, not renumbered.
                    m.entries[0].data = Some(Bytes::from_static(b"other"));
                }
                reused.fill(&mut m);
                assert_eq!(m, fresh.next_message(), "{per_msg} entries, round {round}");
            }
            m.entries.push(Entry::default());
            reused.fill(&mut m);
            assert_eq!(m, fresh.next_message(), "{per_msg} entries, one too many");
        }
    }
}
