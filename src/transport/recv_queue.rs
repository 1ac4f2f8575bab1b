//! A peer's receive queue (etcd's `recvc`/`propc`): bounded, filled by the I/O thread a
//! read's worth of messages at a time, drained by one worker thread.
//!
//! Messages travel in [`Page`]s and are never moved: the stream reader decodes each one
//! in place into the next slot of its page, hands the whole page over under one lock,
//! and the worker processes the slots where they are and gives the page back. Only page
//! headers change hands; a `Message` is about 300 bytes, and moving each one through a
//! queue, a worker's batch and a recycling pool had cost more than decoding it.
//!
//! The reader, not the worker, empties a page it gets back, before decoding into it:
//! each entry's payload is a slice of a receive buffer, with its reference count, and the
//! reader takes those references as it decodes. When the worker let go of them, the two
//! threads bumped the same counter once per entry from two CPUs, and that cache line's
//! trips were a fifth of the reader's time on 100-entry messages. The exception is a
//! message whose payloads the reader left unsliced (`codec::Deferred`, for many-entry
//! messages): the worker slices them and lets go of them, so their counts too are
//! bumped from one CPU. Steady state allocates nothing.
//!
//! A full queue refuses what does not fit, as etcd drops on a full `recvc`. Before it
//! is full, a reader that finds at its hand-over that the queue holds more than its
//! backlog of bytes read ([`ReaderPages::backlogged`]) stops reading until the worker
//! has taken half of them ([`RecvQueue::drained`]): the rest waits in the kernel's socket buffer and, behind it,
//! in the sender's queue, instead of in receive buffers and decoded pages here, which
//! would otherwise grow (and allocate) to hold whatever depth a slow worker lets build up.
//!
//! While messages come one at a time, the worker is kept on the CPU of the thread that
//! wakes it (`worker_placement`), and, with a linger set ([`RecvQueue::set_linger`]), a
//! worker that runs on another CPU than that thread looks for the next message itself for
//! a while before it sleeps. While they flow, a worker that finds the queue empty
//! gives up its CPU a few times ([`FLOW_YIELDS`]) before it sleeps: the reader that
//! feeds it often runs on that same CPU and hands the next page over in the meantime.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Condvar, Mutex};
use std::time::Instant;

use super::worker_placement::{self, Placement};
use crate::codec::{Deferred, PayloadRanges};
use crate::raftpb::Message;

/// Most messages in one page. A reader hands a full page over and decodes on into the
/// next, so a page never grows past this: the shells kept for reuse are bounded by
/// messages, not by the largest read (a sparse page of a large read's size used to carry
/// hundreds of idle shells through the queue, and more pages than the spares could keep
/// came back, to be freed and allocated again).
pub const PAGE_SLOTS: usize = 128;

/// Times a worker that just took a page of a flow (more than one message, or more pages
/// behind it) gives up its CPU and looks again, finding the queue empty, before it
/// sleeps.
///
/// Why: asleep, it costs its reader a wake-up call for the next page, and itself two
/// context switches; on two vCPUs the worker and the I/O thread that feeds it often
/// share a CPU, and a yield lets that thread hand the next page over at once. On the
/// AMD VM of docs/performance.md (fourteenth session), by default on io_uring: 1x64B
/// 10.9–13.3 against 8.6–10.4 M msgs/s, heartbeat 13.6–14.6 against 9.8–10.8 M, the
/// rest within the spread. A lone message (the latency rows, an idle cluster's
/// heartbeats) is not a flow: the worker sleeps at once, or after its linger
/// ([`RecvQueue::set_linger`]), so an idle member spins at most that long per message.
pub const FLOW_YIELDS: u32 = 4;

/// Messages decoded in place: the first `len` slots hold messages, the rest are emptied
/// shells that keep their entry vectors' capacity. Beside each slot, the payloads its
/// decoder left unsliced (see `codec::Deferred`): whoever hands the messages to the
/// application slices them first ([`for_each_resolved`](Page::for_each_resolved),
/// [`take_each`](Page::take_each)) and lets go of them after, on its own thread.
#[derive(Debug, Default)]
pub struct Page {
    slots: Vec<Message>,
    /// As long as `slots`; entry `i` belongs to slot `i`.
    deferred: Vec<Deferred>,
    /// The deferred payloads' ranges, for all the page's messages: one vector per page
    /// rather than one per slot, so a page's first use of a slot allocates no more than
    /// its entries.
    ranges: PayloadRanges,
    len: usize,
    /// Bytes read from the wire into the messages (what they pin in receive buffers, about;
    /// see [`add_bytes`](Self::add_bytes)).
    bytes: usize,
}

impl Page {
    /// An empty page with room for [`PAGE_SLOTS`] slots: a new page's slots are then one
    /// allocation, not a vector's eight doubling steps.
    fn with_slots() -> Page {
        Page {
            slots: Vec::with_capacity(PAGE_SLOTS),
            deferred: Vec::with_capacity(PAGE_SLOTS),
            ranges: PayloadRanges::default(),
            len: 0,
            bytes: 0,
        }
    }

    /// The slot the next message is decoded into (an emptied shell). It counts only once
    /// [`commit`](Self::commit)ted.
    pub fn next_slot(&mut self) -> &mut Message {
        self.next_slot_deferring().0
    }

    /// [`next_slot`](Self::next_slot), with the record of the payloads a decoder may leave
    /// unsliced in it (a decoder's `decode_deferring`).
    #[inline]
    pub fn next_slot_deferring(&mut self) -> (&mut Message, &mut Deferred, &mut PayloadRanges) {
        if self.len >= self.slots.len() {
            self.add_slot();
        }
        (
            &mut self.slots[self.len],
            &mut self.deferred[self.len],
            &mut self.ranges,
        )
    }

    /// A new shell, for a page used past its slots so far (a page's first uses only).
    #[cold]
    #[inline(never)]
    fn add_slot(&mut self) {
        self.slots.push(Message::default());
        self.deferred.push(Deferred::default());
    }

    /// Counts `n` more bytes read from the wire into this page's messages, for the queue's
    /// backlog. A reader adds what each decode consumed (a frame split across reads counts
    /// in the page where each part was read).
    pub fn add_bytes(&mut self, n: usize) {
        self.bytes += n;
    }

    /// Counts the message just decoded into [`next_slot`](Self::next_slot).
    pub fn commit(&mut self) {
        self.len = (self.len + 1).min(self.slots.len());
    }

    /// The messages.
    pub fn messages(&self) -> &[Message] {
        &self.slots[..self.len]
    }

    /// Calls `f` with each message, its payloads sliced, and lets go of the payloads that
    /// were sliced here right after (so that their references are taken and dropped on
    /// this thread; the rest are let go of by whoever empties the page).
    pub fn for_each_resolved(&mut self, mut f: impl FnMut(&Message)) {
        for (m, d) in self.slots[..self.len].iter_mut().zip(&mut self.deferred) {
            if d.is_deferred() {
                d.resolve(m, &self.ranges);
                f(m);
                d.release(m);
            } else {
                f(m);
            }
        }
    }

    /// Moves the messages out, one by one, payloads sliced, for an application that takes
    /// ownership (the slots are left as new, empty messages).
    pub fn take_each(&mut self, mut f: impl FnMut(Message)) {
        for (m, d) in self.slots[..self.len].iter_mut().zip(&mut self.deferred) {
            d.resolve(m, &self.ranges);
            f(std::mem::take(m));
            d.forget();
        }
        self.ranges.clear();
        self.len = 0;
        self.bytes = 0;
    }

    /// Moves out the messages `pick` selects, in order, and closes the gaps they leave.
    pub fn take_where(&mut self, pick: impl Fn(&Message) -> bool, mut f: impl FnMut(Message)) {
        let mut kept = 0;
        for i in 0..self.len {
            if pick(&self.slots[i]) {
                self.deferred[i].resolve(&mut self.slots[i], &self.ranges);
                f(std::mem::take(&mut self.slots[i]));
                self.deferred[i].forget();
            } else {
                self.slots.swap(kept, i);
                self.deferred.swap(kept, i);
                kept += 1;
            }
        }
        self.len = kept;
    }

    /// Whether it holds [`PAGE_SLOTS`] messages: time to hand it over.
    pub fn is_full(&self) -> bool {
        self.len >= PAGE_SLOTS
    }

    /// Whether `n` more messages fit in its idle shells (within [`PAGE_SLOTS`]).
    fn has_room_for(&self, n: usize) -> bool {
        self.len + n <= self.slots.len().min(PAGE_SLOTS)
    }

    /// How many messages it holds.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Forgets every message, letting go in place of the buffers they point into, and
    /// keeps the slots.
    pub fn clear(&mut self) {
        self.truncate(0);
    }

    /// Forgets the messages from `from` on, as [`clear`](Self::clear) does.
    fn truncate(&mut self, from: usize) {
        let range = from.min(self.len)..self.len;
        for (m, d) in self.slots[range.clone()]
            .iter_mut()
            .zip(&mut self.deferred[range])
        {
            release(m);
            d.forget();
        }
        // What the messages kept pin, in proportion (a drop of a full queue's excess).
        if let Some(kept) = (self.bytes * from.min(self.len)).checked_div(self.len) {
            self.bytes = kept;
        }
        self.len = self.len.min(from);
        if self.len == 0 {
            self.ranges.clear();
            self.bytes = 0;
        }
    }
}

/// Lets go of whatever in `m` may point into a receive buffer (entries, context,
/// snapshot data, responses), keeping its vectors' capacity. The rest of the message is
/// left as it was: a slot past a page's length is only ever decoded into (decoding
/// clears the message first) or overwritten whole, so resetting every field here as
/// well, as `message_pool::empty` does, was a second reset of 300 bytes per message.
fn release(m: &mut Message) {
    m.entries.clear();
    m.responses.clear();
    m.context = None;
    m.snapshot.data = None;
}

/// A stream reader's end of a [`RecvQueue`]: the page it decodes into, and room to
/// empty the pages the worker gave back.
#[derive(Debug, Default)]
pub struct ReaderPages {
    /// The page being decoded into.
    pub page: Page,
    returned: Vec<Page>,
    /// Whether the queue held more than its backlog after this reader's last hand-over.
    backlogged: bool,
}

impl ReaderPages {
    /// Whether the queue held more than its backlog of bytes read after this reader's
    /// last hand-over ([`RecvQueue::push_page`]): it should stop reading until the queue
    /// has [`drained`](RecvQueue::drained). Learnt under the hand-over's lock, so the
    /// reader's check costs nothing more.
    pub fn backlogged(&self) -> bool {
        self.backlogged
    }
}

#[derive(Default)]
struct State {
    pages: VecDeque<Page>,
    /// Messages in `pages`.
    queued: usize,
    /// Bytes read into the messages in `pages` (their pages' [`Page::bytes`]).
    queued_bytes: usize,
    /// A reader waits in [`RecvQueue::drained`].
    reader_waits: bool,
    /// Emptied pages for the readers, holding at most `capacity` slots in all (as many
    /// shells as the queue holds messages: enough for a full queue's worth again).
    spare: Vec<Page>,
    /// Pages the worker processed, for a reader to empty and add to `spare`.
    returned: Vec<Page>,
    /// Slots in `spare` and `returned`.
    spare_slots: usize,
    closed: bool,
    waiting: bool,
    /// The page the worker took last was part of a flow (see [`FLOW_YIELDS`]).
    flowing: bool,
    /// When the worker should check it runs beside its waker.
    placement: Placement,
}

impl State {
    fn spare_page(&mut self) -> Page {
        let page = self.spare.pop().unwrap_or_else(Page::with_slots);
        self.spare_slots -= page.slots.len();
        page
    }

    /// Keeps `page` (processed, not yet emptied: a reader empties it) for a reader.
    fn keep_returned(&mut self, page: Page, capacity: usize) {
        if self.spare_slots + page.slots.len() <= 2 * capacity {
            self.spare_slots += page.slots.len();
            self.returned.push(page);
        }
    }
}

/// A bounded multi-producer, single-consumer queue of received messages.
pub struct RecvQueue {
    state: Mutex<State>,
    cv: Condvar,
    /// The CPU of the thread that last woke the worker (−1: unknown).
    waker_cpu: AtomicI64,
    /// Times the worker moved to its waker's CPU.
    moves: AtomicU64,
    /// Times the worker gave up its CPU to look again ([`FLOW_YIELDS`]).
    yields: AtomicU64,
    /// Times the worker slept for want of a page.
    sleeps: AtomicU64,
    /// How long the worker looks for a page itself after a lone message, in ns
    /// ([`set_linger`](Self::set_linger)).
    linger_ns: AtomicU64,
    capacity: usize,
    /// Bytes queued past which readers stop reading (0: never).
    backlog: usize,
    /// Wakes readers waiting for the backlog to drain.
    drained: tokio::sync::Notify,
}

/// The calling thread's CPU as [`RecvQueue`]'s `waker_cpu` holds it: −1 when unknown.
fn cpu_number() -> i64 {
    worker_placement::current_cpu().map_or(-1, |c| c as i64)
}

impl RecvQueue {
    /// A queue holding at most `capacity` messages, whose readers never stop reading (a
    /// full queue drops, as etcd's does).
    pub fn new(capacity: usize) -> RecvQueue {
        RecvQueue::with_backlog(capacity, 0)
    }

    /// A queue holding at most `capacity` messages, whose readers stop reading while it
    /// holds more than `backlog` bytes read (0: never).
    pub fn with_backlog(capacity: usize, backlog: usize) -> RecvQueue {
        RecvQueue {
            state: Mutex::new(State::default()),
            cv: Condvar::new(),
            waker_cpu: AtomicI64::new(-1),
            moves: AtomicU64::new(0),
            yields: AtomicU64::new(0),
            sleeps: AtomicU64::new(0),
            linger_ns: AtomicU64::new(0),
            capacity,
            backlog,
            drained: tokio::sync::Notify::new(),
        }
    }

    /// After a lone message, the worker looks for the next page itself for `linger`
    /// (yielding its CPU between looks) before it sleeps, if it runs on another CPU than
    /// the thread that last woke it (0, the default: it sleeps at once).
    ///
    /// Why: the answer to a lone message, or the application's next one, often comes
    /// within a round trip, and a worker still looking takes it without a wake-up call
    /// from the I/O thread or a switch onto its CPU. Why only apart from that thread:
    /// beside it, the worker's looks would wait for the I/O thread, which lingers too
    /// ([`Config::linger`](super::Config::linger)) and does not give up its CPU while it
    /// does; there, a sleeping worker is woken by it and runs at once. On the AMD VM of
    /// docs/performance.md (sixteenth session), by default: msgapp latency p50 10.3–13.7
    /// against 13.8–14.0 µs, p99 15.0–41.2 against 28.4–48.8.
    pub fn set_linger(&self, linger: std::time::Duration) {
        let ns = u64::try_from(linger.as_nanos()).unwrap_or(u64::MAX);
        self.linger_ns.store(ns, Relaxed);
    }

    /// Until when the worker, about to wait after a lone message, looks for the next one
    /// itself (`None`: it sleeps at once). See [`set_linger`](Self::set_linger).
    fn linger_deadline(&self) -> Option<Instant> {
        let ns = self.linger_ns.load(Relaxed);
        if ns == 0 {
            return None;
        }
        let here = cpu_number();
        if here >= 0 && here == self.waker_cpu.load(Relaxed) {
            return None;
        }
        Instant::now().checked_add(std::time::Duration::from_nanos(ns))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues `m`, or gives it back (`Some`) when the queue is full or closed.
    pub fn push(&self, m: Message) -> Option<Message> {
        let mut st = self.lock();
        if st.closed || st.queued >= self.capacity {
            return Some(m);
        }
        if st.pages.back().is_none_or(Page::is_full) {
            let page = st.spare_page();
            st.pages.push_back(page);
        }
        if let Some(page) = st.pages.back_mut() {
            *page.next_slot() = m;
            page.commit();
        }
        st.queued += 1;
        self.queued_more(st);
        None
    }

    /// Queues as many of the reader's page's messages as fit, in order, and calls
    /// `dropped` for the rest (they are emptied). The page is left empty: when anything
    /// was queued, it is swapped for an emptied one, with no message moved. The pages
    /// the worker gave back are emptied first, here on the reader's thread, so that one
    /// of them is that page.
    ///
    /// Records in `reader` whether the queue is then past its backlog
    /// ([`ReaderPages::backlogged`]).
    pub fn push_page(&self, reader: &mut ReaderPages, dropped: impl FnMut(&Message)) {
        self.empty_returned(&mut reader.returned);
        reader.backlogged = self.push_page_only(&mut reader.page, dropped);
    }

    /// Whether the queue is past its backlog once the page is in. An empty page (a burst
    /// that decoded no whole message, or whose last page was handed over full) still
    /// asks, so that the answer of an earlier hand-over is neither kept nor lost.
    fn push_page_only(&self, page: &mut Page, mut dropped: impl FnMut(&Message)) -> bool {
        if page.is_empty() {
            return self.backlogged();
        }
        let mut st = self.lock();
        let room = if st.closed {
            0
        } else {
            self.capacity.saturating_sub(st.queued)
        };
        let take = room.min(page.len());
        for m in &page.messages()[take..] {
            dropped(m);
        }
        page.truncate(take);
        if take == 0 {
            return self.is_backlogged(&st);
        }
        match st.pages.back_mut() {
            // A small handover joins the last queued page when its idle shells can take
            // the messages (swapped for them: nothing moves to the heap), so pages in
            // the queue stay dense and the shells they carry stay near what it holds.
            Some(last) if last.has_room_for(take) => {
                for i in 0..take {
                    std::mem::swap(&mut page.slots[i], &mut last.slots[last.len]);
                    std::mem::swap(&mut page.deferred[i], &mut last.deferred[last.len]);
                    // Its payload ranges go along (a copy of a few words per entry).
                    last.ranges
                        .adopt(&page.ranges, &mut last.deferred[last.len]);
                    last.len += 1;
                }
                last.bytes += page.bytes;
                st.queued_bytes += page.bytes;
                page.len = 0;
                page.ranges.clear();
                page.bytes = 0;
            }
            _ => {
                st.queued_bytes += page.bytes;
                let fresh = st.spare_page();
                st.pages.push_back(std::mem::replace(page, fresh));
            }
        }
        st.queued += take;
        let backlogged = self.is_backlogged(&st);
        self.queued_more(st);
        backlogged
    }

    /// Wakes the worker, after releasing the lock, if it sleeps for want of messages.
    /// One wake-up per sleep: the flag is cleared here, and the worker takes every queued
    /// page once it runs, so pushes before it does need not wake it again.
    fn queued_more(&self, mut st: std::sync::MutexGuard<'_, State>) {
        let wake = std::mem::take(&mut st.waiting);
        drop(st);
        if wake {
            self.waker_cpu.store(cpu_number(), Relaxed);
            self.cv.notify_one();
        }
    }

    /// Takes the pages the worker gave back (swapping `scratch`, an empty vector, in for
    /// them), empties them outside the lock, and adds them to the spares.
    fn empty_returned(&self, scratch: &mut Vec<Page>) {
        {
            let mut st = self.lock();
            if st.returned.is_empty() {
                return;
            }
            std::mem::swap(&mut st.returned, scratch);
        }
        for page in scratch.iter_mut() {
            page.clear();
        }
        self.lock().spare.append(scratch);
    }

    /// Waits for messages and swaps the oldest page of them into `out`, whose messages
    /// must have been processed: it goes back to the reader, which empties it. `false`
    /// once the queue is closed and drained.
    pub fn pop_page(&self, out: &mut Page) -> bool {
        let mut st = self.lock();
        let mut slept_at = None;
        let mut looks = 0;
        let linger_until = if st.flowing {
            None
        } else {
            self.linger_deadline()
        };
        loop {
            if let Some(page) = st.pages.pop_front() {
                st.queued -= page.len();
                st.queued_bytes = st.queued_bytes.saturating_sub(page.bytes);
                let drained = st.reader_waits && st.queued_bytes <= self.backlog / 2;
                if drained {
                    st.reader_waits = false;
                }
                let lone = page.len() == 1 && st.pages.is_empty();
                st.flowing = !lone;
                let done = std::mem::replace(out, page);
                st.keep_returned(done, self.capacity);
                let check = st
                    .placement
                    .took(slept_at.map(|t: Instant| t.elapsed()), lone);
                drop(st);
                if drained {
                    self.drained.notify_waiters();
                }
                if check {
                    self.follow_waker();
                }
                return true;
            }
            if st.closed {
                return false;
            }
            // Look again, yielding the CPU first: a few times after a page of a flow, or
            // for the linger after a lone message.
            let flow_look = st.flowing && looks < FLOW_YIELDS;
            if flow_look || linger_until.is_some_and(|until| Instant::now() < until) {
                looks += u32::from(flow_look);
                self.yields.fetch_add(1, Relaxed);
                drop(st);
                std::thread::yield_now();
                st = self.lock();
                continue;
            }
            self.sleeps.fetch_add(1, Relaxed);
            st.waiting = true;
            slept_at = Some(Instant::now());
            st = self.cv.wait(st).unwrap_or_else(|p| p.into_inner());
            st.waiting = false;
        }
    }

    /// Moves the calling worker to the CPU of the thread that last woke it, if it runs
    /// elsewhere (see [`worker_placement`]).
    fn follow_waker(&self) {
        let waker = usize::try_from(self.waker_cpu.load(Relaxed)).ok();
        let here = worker_placement::current_cpu();
        if let (Some(waker), Some(here)) = (waker, here) {
            if waker != here && worker_placement::move_to(waker) {
                self.moves.fetch_add(1, Relaxed);
            }
        }
    }

    /// Times the worker moved to its waker's CPU (see [`worker_placement`]).
    pub fn worker_moves(&self) -> u64 {
        self.moves.load(Relaxed)
    }

    /// Times the worker gave up its CPU to look for a page again ([`FLOW_YIELDS`], and
    /// its linger after a lone message).
    pub fn worker_looks(&self) -> u64 {
        self.yields.load(Relaxed)
    }

    /// Times the worker slept for want of a page.
    pub fn worker_sleeps(&self) -> u64 {
        self.sleeps.load(Relaxed)
    }

    /// A stream reader's end of the queue: an emptied page to decode into.
    pub fn reader_pages(&self) -> ReaderPages {
        ReaderPages {
            page: self.lock().spare_page(),
            returned: Vec::new(),
            backlogged: false,
        }
    }

    /// Refuses further messages; the worker ends after draining what is queued. Readers
    /// waiting for the backlog to drain go on (to find their messages refused).
    pub fn close(&self) {
        self.lock().closed = true;
        self.cv.notify_all();
        self.drained.notify_waiters();
    }

    /// Whether the queue holds more than its backlog of bytes read: a reader should stop
    /// reading until it has [`drained`](Self::drained).
    pub fn backlogged(&self) -> bool {
        self.backlog > 0 && self.is_backlogged(&self.lock())
    }

    fn is_backlogged(&self, st: &State) -> bool {
        self.backlog > 0 && st.queued_bytes > self.backlog
    }

    /// Waits until the queue holds at most half its backlog of bytes read, or is closed.
    /// Half, so that a reader that stopped reads a while before stopping again, and the
    /// worker has that half to process while the reader is woken and reads.
    pub async fn drained(&self) {
        loop {
            let woken = self.drained.notified();
            tokio::pin!(woken);
            // Registered before the check, so a wake between the two is not lost.
            woken.as_mut().enable();
            {
                let mut st = self.lock();
                if st.closed || st.queued_bytes <= self.backlog / 2 {
                    return;
                }
                st.reader_waits = true;
            }
            woken.await;
        }
    }

    /// Bytes read into the queued messages.
    pub fn queued_bytes(&self) -> usize {
        self.lock().queued_bytes
    }

    /// Messages queued now.
    pub fn len(&self) -> usize {
        self.lock().queued
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raftpb::{Entry, MessageType};
    use bytes::Bytes;
    use std::sync::Arc;

    fn msg(i: u64) -> Message {
        Message {
            index: i,
            ..Default::default()
        }
    }

    fn page_of(q: &RecvQueue, ids: impl IntoIterator<Item = u64>) -> ReaderPages {
        let mut r = q.reader_pages();
        for i in ids {
            *r.page.next_slot() = msg(i);
            r.page.commit();
        }
        r
    }

    fn indexes(page: &Page) -> Vec<u64> {
        page.messages().iter().map(|m| m.index).collect()
    }

    /// A MsgApp of `n` entries at `index`, continuing the stream (so msgappv2 sends it as
    /// AppEntries after the first).
    fn app(index: u64, n: u64) -> Message {
        Message {
            msg_type: MessageType::MsgApp as i32,
            from: 2,
            to: 1,
            term: 1,
            log_term: 1,
            index,
            entries: (1..=n)
                .map(|k| Entry {
                    term: 1,
                    index: index + k,
                    // Lengths that differ from entry to entry and message to message, so
                    // that one message's ranges cannot pass for another's.
                    data: Some(Bytes::from(format!(
                        "{}{}",
                        index + k,
                        "x".repeat(k as usize)
                    ))),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn deferred_payloads_travel_with_their_messages_and_are_resolved_by_the_worker() {
        use crate::codec::{MsgAppV2Decoder, MsgAppV2Encoder};
        // Three 10-entry messages and a 1-entry one. The first goes as a whole MsgApp
        // frame and the 1-entry one is short: both are sliced at once; the other two
        // are AppEntries frames whose payloads wait for the worker.
        let sent = vec![app(0, 10), app(10, 10), app(20, 1), app(21, 12)];
        let mut enc = MsgAppV2Encoder::new();
        let mut wire = bytes::BytesMut::new();
        for m in &sent {
            enc.encode(m, &mut wire);
        }
        let mut wire = wire.freeze();
        let mut dec = MsgAppV2Decoder::new(1, 2, &Default::default());
        let q = RecvQueue::new(64);
        // A page with idle shells, so that the second handover can join it.
        let mut r = page_of(&q, 0..10);
        r.page.clear();
        let mut deferred = 0;
        // Two handovers: the second joins the first's page (its ranges copied over).
        for batch in [2, 2] {
            for _ in 0..batch {
                let (slot, d, ranges) = r.page.next_slot_deferring();
                assert!(dec
                    .decode_deferring(&mut wire, slot, d, ranges)
                    .unwrap()
                    .is_some());
                deferred += usize::from(d.is_deferred());
                r.page.commit();
            }
            q.push_page(&mut r, |_| panic!("room"));
        }
        assert_eq!(
            deferred, 2,
            "only many-entry AppEntries wait for the worker"
        );
        let mut out = Page::default();
        assert!(q.pop_page(&mut out));
        assert!(q.is_empty(), "one page");
        let mut got = Vec::new();
        out.for_each_resolved(|m| got.push(m.clone()));
        assert_eq!(got, sent);
        assert!(
            out.deferred.iter().all(|d| !d.is_deferred()),
            "the worker let go of what it resolved"
        );
    }

    #[test]
    fn a_new_page_has_room_for_all_its_slots_at_once() {
        let q = RecvQueue::new(1024);
        let mut reader = q.reader_pages();
        let cap = reader.page.slots.capacity();
        assert!(cap >= PAGE_SLOTS, "{cap}");
        for i in 0..PAGE_SLOTS as u64 {
            *reader.page.next_slot() = msg(i);
            reader.page.commit();
        }
        assert!(reader.page.is_full());
        assert_eq!(
            reader.page.slots.capacity(),
            cap,
            "filling the page did not grow its slots"
        );
    }

    #[test]
    fn pages_fill_to_capacity_and_drop_the_rest_in_order() {
        let q = RecvQueue::new(3);
        assert!(q.push(msg(0)).is_none());
        let mut r = page_of(&q, 1..5);
        let mut dropped = Vec::new();
        q.push_page(&mut r, |m| dropped.push(m.index));
        assert!(r.page.is_empty());
        assert_eq!(dropped, vec![3, 4]);
        assert_eq!(q.push(msg(9)).map(|m| m.index), Some(9));
        let mut out = Page::default();
        assert!(q.pop_page(&mut out));
        assert_eq!(indexes(&out), vec![0]);
        assert!(q.pop_page(&mut out));
        assert_eq!(indexes(&out), vec![1, 2]);
        assert!(q.push(msg(5)).is_none());
        q.close();
        assert!(q.push(msg(6)).is_some());
        assert!(q.pop_page(&mut out), "queued messages survive close");
        assert!(!q.pop_page(&mut out));
    }

    #[test]
    fn messages_are_decoded_and_processed_in_place_and_pages_come_back() {
        let q = RecvQueue::new(16);
        let data = Bytes::from(vec![1u8; 64]);
        let mut r = q.reader_pages();
        let slot = r.page.next_slot();
        slot.entries.push(Entry {
            data: Some(data.clone()),
            ..Default::default()
        });
        r.page.commit();
        let slot_addr = r.page.messages().as_ptr();
        q.push_page(&mut r, |_| panic!("room"));
        let mut out = Page::default();
        assert!(q.pop_page(&mut out));
        assert_eq!(out.messages().as_ptr(), slot_addr, "not moved");
        // The next pop gives the processed page back, still holding its message: the
        // reader empties it at its next push, and decodes into it later.
        assert!(q.push(msg(1)).is_none());
        assert!(q.pop_page(&mut out));
        assert!(!data.is_unique());
        *r.page.next_slot() = msg(2);
        r.page.commit();
        q.push_page(&mut r, |_| panic!("room"));
        assert!(data.is_unique(), "emptying let go of the entry's buffer");
        // And the reader decodes into that page again, its shell's capacity kept.
        assert_eq!(r.page.slots.as_ptr(), slot_addr);
        assert!(r.page.is_empty());
        assert!(r.page.slots[0].entries.capacity() >= 1);
    }

    #[test]
    fn a_small_handover_joins_the_last_queued_page_in_its_idle_shells() {
        let q = RecvQueue::new(64);
        // A page with ten shells that carries three messages into the queue.
        let mut r = page_of(&q, 0..10);
        r.page.clear();
        for i in 0..3 {
            *r.page.next_slot() = msg(i);
            r.page.commit();
        }
        q.push_page(&mut r, |_| panic!("room"));
        // Four more: they are swapped into that page's idle shells, and the reader keeps
        // its own page (and gets the idle shells in exchange).
        for i in 3..7 {
            *r.page.next_slot() = msg(i);
            r.page.commit();
        }
        let reader_slots = r.page.slots.as_ptr();
        q.push_page(&mut r, |_| panic!("room"));
        assert!(r.page.is_empty());
        assert_eq!(
            r.page.slots.as_ptr(),
            reader_slots,
            "the reader kept its page"
        );
        assert_eq!(q.len(), 7);
        let mut out = Page::default();
        assert!(q.pop_page(&mut out));
        assert_eq!(
            indexes(&out),
            (0..7).collect::<Vec<_>>(),
            "one page, in order"
        );
        assert!(q.is_empty());
        // Eight more do not fit in the three idle shells left: a page of their own.
        let mut r2 = page_of(&q, 10..12);
        q.push_page(&mut r2, |_| panic!("room"));
        for i in 12..20 {
            *r.page.next_slot() = msg(i);
            r.page.commit();
        }
        q.push_page(&mut r, |_| panic!("room"));
        assert!(q.pop_page(&mut out));
        assert_eq!(indexes(&out), vec![10, 11]);
        assert!(q.pop_page(&mut out));
        assert_eq!(indexes(&out), (12..20).collect::<Vec<_>>());
    }

    #[test]
    fn single_pushes_start_a_new_page_once_the_last_is_full() {
        let q = RecvQueue::new(4 * PAGE_SLOTS);
        for i in 0..(PAGE_SLOTS as u64 + 1) {
            assert!(q.push(msg(i)).is_none());
        }
        let mut out = Page::default();
        assert!(q.pop_page(&mut out));
        assert!(out.is_full());
        assert_eq!(out.len(), PAGE_SLOTS);
        assert!(q.pop_page(&mut out));
        assert_eq!(indexes(&out), vec![PAGE_SLOTS as u64]);
    }

    #[test]
    fn take_where_moves_the_picked_messages_out_and_keeps_order() {
        let q = RecvQueue::new(16);
        let mut page = page_of(&q, 0..6).page;
        for i in [1usize, 4] {
            page.slots[i].msg_type = MessageType::MsgProp as i32;
        }
        let mut props = Vec::new();
        page.take_where(
            |m| m.msg_type == MessageType::MsgProp as i32,
            |m| props.push(m.index),
        );
        assert_eq!(props, vec![1, 4]);
        assert_eq!(indexes(&page), vec![0, 2, 3, 5]);
        let mut owned = Vec::new();
        page.take_each(|m| owned.push(m.index));
        assert_eq!(owned, vec![0, 2, 3, 5]);
        assert!(page.is_empty());
    }

    #[test]
    fn a_sleeping_worker_is_woken_and_sees_everything_once() {
        let q = Arc::new(RecvQueue::new(4096));
        let w = {
            let q = q.clone();
            std::thread::spawn(move || {
                let (mut out, mut seen) = (Page::default(), Vec::new());
                while q.pop_page(&mut out) {
                    seen.extend(indexes(&out));
                }
                seen
            })
        };
        let mut r = q.reader_pages();
        for i in 0..10_000u64 {
            if i % 7 == 0 {
                assert!(q.push(msg(i)).is_none(), "full");
            } else {
                *r.page.next_slot() = msg(i);
                r.page.commit();
                if r.page.len() == 50 {
                    q.push_page(&mut r, |_| panic!("full"));
                }
            }
            while q.len() > 2000 {
                std::thread::yield_now();
            }
        }
        q.push_page(&mut r, |_| panic!("full"));
        q.close();
        let seen = w.join().unwrap();
        let mut sorted = seen.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..10_000).collect::<Vec<_>>());
    }

    /// Hands the reader's page over holding `n` messages counted as `bytes` read.
    fn push_sized(q: &RecvQueue, r: &mut ReaderPages, first: u64, n: u64, bytes: usize) {
        for i in first..first + n {
            *r.page.next_slot() = msg(i);
            r.page.commit();
        }
        r.page.add_bytes(bytes);
        q.push_page(r, |_| panic!("room"));
    }

    /// Polls `f` once with a waker that does nothing: whether it is ready.
    fn ready(f: std::pin::Pin<&mut impl std::future::Future<Output = ()>>) -> bool {
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        f.poll(&mut cx).is_ready()
    }

    #[test]
    fn a_backlog_of_bytes_holds_readers_back_until_half_is_processed() {
        let q = RecvQueue::with_backlog(4096, 1000);
        let mut r = q.reader_pages();
        // Pages of 300, 300 and 300 bytes: 900 is within the backlog.
        for k in 0..3 {
            push_sized(&q, &mut r, k * 10, 10, 300);
        }
        assert_eq!(q.queued_bytes(), 900);
        assert!(!q.backlogged() && !r.backlogged());
        push_sized(&q, &mut r, 30, 10, 300);
        assert!(q.backlogged(), "1200 bytes queued, backlog 1000");
        assert!(r.backlogged(), "the reader learnt it as it handed over");
        q.push_page(&mut r, |_| panic!("nothing to drop"));
        assert!(
            r.backlogged(),
            "an empty hand-over asks again, and still learns it"
        );
        let mut wait = std::pin::pin!(q.drained());
        assert!(!ready(wait.as_mut()), "nothing processed yet");
        let mut out = Page::default();
        assert!(q.pop_page(&mut out));
        assert_eq!(q.queued_bytes(), 900);
        assert!(
            !ready(wait.as_mut()),
            "900 bytes left: more than half the backlog"
        );
        assert!(q.pop_page(&mut out));
        assert_eq!(q.queued_bytes(), 600);
        assert!(!ready(wait.as_mut()), "600 left");
        assert!(q.pop_page(&mut out));
        assert!(ready(wait.as_mut()), "300 left: the reader goes on");
        assert!(!q.backlogged());
        q.push_page(&mut r, |_| panic!("nothing to drop"));
        assert!(!r.backlogged(), "nor does it keep an old answer");
        // Nothing was lost on the way.
        assert!(q.pop_page(&mut out));
        assert_eq!(indexes(&out), (30..40).collect::<Vec<_>>());
        assert_eq!(q.queued_bytes(), 0);
    }

    #[test]
    fn a_handover_that_joins_a_page_and_a_partial_drop_keep_the_bytes_right() {
        let q = RecvQueue::with_backlog(25, 1 << 20);
        let mut r = page_of(&q, 0..10);
        r.page.clear();
        push_sized(&q, &mut r, 0, 2, 200);
        // Joins the last page's idle shells: its bytes go along.
        push_sized(&q, &mut r, 2, 3, 300);
        assert_eq!((q.len(), q.queued_bytes()), (5, 500));
        // 40 more, 20 fit: half the page's bytes are counted.
        for i in 5..45 {
            *r.page.next_slot() = msg(i);
            r.page.commit();
        }
        r.page.add_bytes(4000);
        let mut dropped = 0;
        q.push_page(&mut r, |_| dropped += 1);
        assert_eq!(dropped, 20);
        assert_eq!((q.len(), q.queued_bytes()), (25, 2500));
        let mut out = Page::default();
        while !q.is_empty() {
            assert!(q.pop_page(&mut out));
        }
        assert_eq!(q.queued_bytes(), 0);
    }

    #[test]
    fn closing_the_queue_lets_a_held_back_reader_go_and_no_backlog_never_holds_back() {
        let q = RecvQueue::with_backlog(4096, 100);
        let mut r = q.reader_pages();
        push_sized(&q, &mut r, 0, 1, 500);
        assert!(q.backlogged());
        let mut wait = std::pin::pin!(q.drained());
        assert!(!ready(wait.as_mut()));
        q.close();
        assert!(
            ready(wait.as_mut()),
            "closed: the reader goes on, to be refused"
        );

        let q = RecvQueue::new(4096);
        let mut r = q.reader_pages();
        push_sized(&q, &mut r, 0, 100, 1 << 30);
        assert!(!q.backlogged(), "a backlog of 0 is none");
    }

    #[test]
    fn a_worker_ends_once_a_queue_with_a_backlog_is_closed_and_drained() {
        // The worker takes what was queued, then learns the queue is done; on another
        // thread, so that a worker stuck on its own lock fails the test, not hangs it.
        let q = std::sync::Arc::new(RecvQueue::with_backlog(4096, 100));
        let mut r = q.reader_pages();
        push_sized(&q, &mut r, 0, 3, 500);
        q.close();
        let (tx, rx) = std::sync::mpsc::channel();
        let worker = q.clone();
        std::thread::spawn(move || {
            let mut out = Page::default();
            let first = worker.pop_page(&mut out);
            let then = worker.pop_page(&mut out);
            let _ = tx.send((first, then));
        });
        let got = rx.recv_timeout(std::time::Duration::from_secs(10));
        assert_eq!(got, Ok((true, false)), "the queued page, then the end");
    }

    #[test]
    fn a_worker_looks_again_before_it_sleeps_only_after_a_flow() {
        let q = Arc::new(RecvQueue::new(64));
        let (tx, rx) = std::sync::mpsc::channel();
        let worker = {
            let q = q.clone();
            std::thread::spawn(move || {
                let mut out = Page::default();
                while q.pop_page(&mut out) {
                    let _ = tx.send(indexes(&out));
                }
            })
        };
        let ten_s = std::time::Duration::from_secs(10);
        let sleeps_reach = |n: u64| {
            let end = Instant::now() + ten_s;
            while q.worker_sleeps() < n {
                assert!(Instant::now() < end, "the worker never slept");
                std::thread::yield_now();
            }
        };
        // A page of two messages is a flow: with nothing after it, the worker looks
        // again FLOW_YIELDS times, then sleeps.
        let mut r = page_of(&q, 0..2);
        q.push_page(&mut r, |_| panic!("room"));
        assert_eq!(rx.recv_timeout(ten_s), Ok(vec![0, 1]));
        sleeps_reach(1);
        assert_eq!(q.worker_looks(), u64::from(FLOW_YIELDS));
        // A lone message is not: it sleeps at once.
        let mut r = page_of(&q, [2]);
        q.push_page(&mut r, |_| panic!("room"));
        assert_eq!(rx.recv_timeout(ten_s), Ok(vec![2]));
        sleeps_reach(2);
        assert_eq!(
            q.worker_looks(),
            u64::from(FLOW_YIELDS),
            "no look after a lone one"
        );
        // Woken by the close, it ends without looking again.
        q.close();
        worker.join().unwrap();
        assert_eq!(q.worker_looks(), u64::from(FLOW_YIELDS));
        assert_eq!(q.worker_sleeps(), 2);
    }

    /// What a worker should do between lone messages.
    #[derive(Clone, Copy, PartialEq)]
    enum Between {
        /// Sleep (each next message is sent once it has).
        Sleep,
        /// Look for the next one itself (each next message is sent once it does).
        Look,
    }

    /// Sends `n` lone messages, one at a time, to a worker with `linger`, each once the
    /// worker does what `between` says (failing if it does not within a second, half
    /// the longest linger used), and returns the worker's sleeps and yields. With
    /// `beside`, the worker and the sending thread are pinned to one CPU.
    fn lone_messages_to(
        linger: std::time::Duration,
        beside: bool,
        between: Between,
        n: u64,
    ) -> (u64, u64) {
        let q = Arc::new(RecvQueue::new(64));
        q.set_linger(linger);
        let cpu = worker_placement::test_cpus::allowed()[0];
        if beside {
            worker_placement::test_cpus::pin(cpu);
        }
        let (tx, rx) = std::sync::mpsc::channel();
        let worker = {
            let q = q.clone();
            std::thread::spawn(move || {
                if beside {
                    worker_placement::test_cpus::pin(cpu);
                    q.waker_cpu.store(cpu as i64, Relaxed);
                }
                let mut out = Page::default();
                while q.pop_page(&mut out) {
                    let _ = tx.send(indexes(&out));
                }
            })
        };
        let second = std::time::Duration::from_secs(1);
        for i in 0..n {
            let yields = q.worker_looks();
            let end = Instant::now() + second;
            loop {
                let ready = match between {
                    Between::Sleep => q.worker_sleeps() > i,
                    Between::Look => q.worker_looks() > yields,
                };
                if ready {
                    break;
                }
                assert!(
                    Instant::now() < end,
                    "message {i}: the worker did not {}",
                    match between {
                        Between::Sleep => "sleep",
                        Between::Look => "look",
                    }
                );
                std::thread::yield_now();
            }
            let mut r = page_of(&q, [i]);
            q.push_page(&mut r, |_| panic!("room"));
            assert_eq!(rx.recv_timeout(10 * second), Ok(vec![i]));
        }
        q.close();
        worker.join().unwrap();
        (q.worker_sleeps(), q.worker_looks())
    }

    #[test]
    fn a_worker_apart_from_its_waker_lingers_after_a_lone_message() {
        let long = std::time::Duration::from_secs(2);
        // Apart from its waker (whose CPU it has not learnt: no wake-up yet), it looks for
        // each next message itself and takes it without ever sleeping.
        let (sleeps, _) = lone_messages_to(long, false, Between::Look, 20);
        assert_eq!(sleeps, 0);
        // With no linger it sleeps before each one, and never looks.
        let (_, yields) = lone_messages_to(std::time::Duration::ZERO, false, Between::Sleep, 20);
        assert_eq!(yields, 0);
    }

    #[test]
    fn a_worker_beside_its_waker_sleeps_at_once_after_a_lone_message() {
        // On its waker's CPU its looks would wait for the waker: it sleeps before each
        // message, and never looks, however long its linger.
        let long = std::time::Duration::from_secs(2);
        let (_, yields) = lone_messages_to(long, true, Between::Sleep, 20);
        assert_eq!(yields, 0);
    }

    #[test]
    fn a_worker_follows_its_waker_after_a_streak_of_lone_messages() {
        let cpus = worker_placement::test_cpus::allowed();
        if cpus.len() < 2 {
            eprintln!("SKIPPED: one CPU allowed here, nowhere to move");
            return;
        }
        let (waker_cpu, worker_cpu) = (cpus[0], cpus[1]);
        let q = Arc::new(RecvQueue::new(64));
        let worker = {
            let q = q.clone();
            std::thread::spawn(move || {
                // Start away from the waker.
                assert!(worker_placement::move_to(worker_cpu));
                let mut out = Page::with_slots();
                for _ in 0..worker_placement::STREAK {
                    assert!(q.pop_page(&mut out));
                }
                // The last pop moved the worker, if the kernel had not put it there.
                (worker_placement::current_cpu(), q.worker_moves())
            })
        };
        std::thread::spawn(move || {
            worker_placement::test_cpus::pin(waker_cpu);
            for i in 0..worker_placement::STREAK as u64 {
                // Let the worker fall asleep, for longer than LONG_WAIT.
                while !q.lock().waiting {
                    std::thread::yield_now();
                }
                std::thread::sleep(worker_placement::LONG_WAIT * 5);
                assert!(q.push(msg(i)).is_none());
            }
        })
        .join()
        .unwrap();
        let (cpu, moves) = worker.join().unwrap();
        assert_eq!(cpu, Some(waker_cpu), "moves: {moves}");
        assert!(moves <= 1, "one streak, at most one move: {moves}");
    }

    #[test]
    fn a_worker_that_keeps_up_with_a_flow_stays_put() {
        let q = Arc::new(RecvQueue::new(4096));
        // Many messages queued at once: no lone wake-ups, no check, no move.
        for round in 0..4 * worker_placement::STREAK as u64 {
            let mut r = page_of(&q, (0..8).map(|i| round * 8 + i));
            q.push_page(&mut r, |_| panic!("dropped"));
        }
        let mut out = Page::with_slots();
        for _ in 0..4 * worker_placement::STREAK {
            assert!(q.pop_page(&mut out));
            assert_eq!(out.len(), 8);
        }
        assert_eq!(q.lock().placement, Placement::default());
        assert_eq!(q.worker_moves(), 0);
    }
}
