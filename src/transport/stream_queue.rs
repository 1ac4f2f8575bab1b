//! A stream writer's send queue, encoded on send (etcd's `streamWriter.msgc` with its
//! `working` flag, holding bytes instead of messages).
//!
//! `send` encodes each message straight into the queue's frame buffer, under a short
//! lock, on the sending thread; the writer takes the whole buffer in one swap and writes
//! it. Only the encoded bytes cross from the sending thread to the I/O thread, not the
//! message: a `Message` is about 300 bytes and its entries live elsewhere, and moving
//! those between two CPUs (then its emptied shell back) cost more than encoding it.
//! The stream's encoder state (msgappv2's `(term, index)`, msgapp v1's term) lives here
//! too, so it always matches the bytes queued for the current connection.
//!
//! The queue is bounded in messages (etcd: 4096), so `send` never blocks: a full queue
//! refuses the message (drop and report). Attaching a new connection or detaching the
//! current one throws away what is queued, encoder state included (spec §5.7: queued
//! messages are outdated once their connection dies).

use std::collections::VecDeque;
use std::sync::Arc;
use std::task::Waker;
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes};

use super::queue::{Generation, Stale};
use super::worker_placement::current_cpu;
use crate::codec::{encode_message_frame, MsgAppV1Encoder, MsgAppV2Encoder, V1Write};
use crate::http::batch::Batch;
use crate::http::chunked::{end_chunk, ChunkSlot, CHUNK_HEADER_ROOM};
use crate::http::direct::SocketSend;
use crate::raftpb::Message;
use crate::version::StreamType;

/// Frame buffer capacity the first segment of a queue starts with (an emptied one is
/// used when there is one).
const INITIAL_FRAMES: usize = 16 * 1024;

/// Frame buffer capacity of a segment started behind another (the queue is at least a
/// full segment deep, so this one will fill too): a full segment plus the largest copied
/// message that can take it past [`SEGMENT_BYTES`] (payloads under
/// [`COPY_LIMIT`](crate::http::batch::COPY_LIMIT), and their framing), so that it is
/// allocated once rather than grown by doubling from [`INITIAL_FRAMES`], five allocations
/// each time a deepening queue needs one more.
const FULL_SEGMENT_FRAMES: usize = SEGMENT_BYTES + 2 * crate::http::batch::COPY_LIMIT;

/// Once a segment holds this many bytes, the next message starts a new one: a take (one
/// write) carries at most about this much, and buffers stay about this large.
const SEGMENT_BYTES: usize = 256 * 1024;

/// Most memory in emptied buffers kept for new segments (the writer's written ones come
/// back here): what a full queue of copied messages (under 16 KiB each) can hold. A deep
/// queue of large payloads (referenced, not copied) holds hundreds of segments whose
/// buffers carry only framing; one of copied payloads holds fewer, of about
/// [`SEGMENT_BYTES`]. Keeping what the queue used at its deepest means that refilling it
/// allocates nothing; an idle stream lets them go (see [`StreamQueue::trim_spares`]).
const SPARE_BYTES: usize = 64 << 20;

/// Looks at the lock before [`StreamQueue::take`] yields its CPU: a `pause` is about
/// 40 ns on recent Intel cores, so this waits out a few microseconds.
const LOCK_SPINS: usize = 100;

/// Emptied buffers an idle stream keeps.
const IDLE_SPARES: usize = 4;

/// How long a connection must have been quiet before a sending thread writes a message
/// on it itself (see [`StreamQueue::set_direct`]): longer than a flowing sender's gap
/// between two messages (well under a µs), shorter than a round trip through the
/// application on loopback (the bench's latency rows send every 8–14 µs).
pub const DIRECT_QUIET: Duration = Duration::from_micros(4);

/// What happened to a pushed message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Push {
    /// Encoded for the current connection (or, on a msgapp v1 stream, skipped as etcd
    /// 2.1 skips what that stream cannot carry).
    Queued,
    /// The queue is full: nothing was encoded (drop and report it).
    Full,
    /// The sending thread was writing the message itself when its connection was
    /// replaced, and it did not go out whole: outdated with the connection, as queued
    /// messages are on an attach (report the peer unreachable; the queue was not full).
    Outdated,
    /// No connection is attached: try the next channel.
    NotWorking,
    /// A msgapp v1 stream (of the term given) saw a message of a higher term: the
    /// message is lost (as in etcd 2.1), and the stream ends once what is queued is
    /// written; report the peer.
    Ended(u64),
}

/// The encoder of one stream type.
#[derive(Debug)]
enum Encoder {
    MsgAppV2(MsgAppV2Encoder),
    Message,
    /// etcd 2.x's msgapp v1, valid for the one term it was dialed with.
    MsgAppV1(MsgAppV1Encoder),
}

impl Encoder {
    fn new(kind: StreamType, term: u64) -> Encoder {
        match kind {
            StreamType::MsgAppV2 => Encoder::MsgAppV2(MsgAppV2Encoder::new()),
            StreamType::Message => Encoder::Message,
            StreamType::MsgAppV1 => Encoder::MsgAppV1(MsgAppV1Encoder::new(term)),
        }
    }

    /// Appends `m`'s frame: `Ok(false)` if nothing was written (a v1 skip), `Err` (the
    /// stream's term) if a v1 stream must end.
    fn encode(&mut self, m: &Message, dst: &mut Batch) -> Result<bool, u64> {
        match self {
            Encoder::MsgAppV2(enc) => {
                enc.encode(m, dst);
                Ok(true)
            }
            Encoder::Message => {
                encode_message_frame(m, dst);
                Ok(true)
            }
            Encoder::MsgAppV1(enc) => match enc.encode(m, dst) {
                V1Write::Written => Ok(true),
                V1Write::Skipped => Ok(false),
                V1Write::TermAdvanced => Err(enc.term()),
            },
        }
    }
}

/// Encoded frames: [`CHUNK_HEADER_ROOM`] bytes, then the frames of `msgs` messages,
/// payloads of 16 KiB and more held by reference (see `http::batch`).
#[derive(Debug)]
struct Segment {
    frames: Batch,
    msgs: usize,
    /// The CPU the sender started it on.
    cpu: Option<usize>,
}

#[derive(Debug)]
struct State {
    working: bool,
    /// Bumped by every attach, so that a replaced connection's writer sees it is stale.
    generation: u64,
    encoder: Encoder,
    /// What is queued, oldest first; messages are encoded into the last one.
    segments: VecDeque<Segment>,
    /// Empty batches (just the room) for new segments.
    spare: Vec<Batch>,
    /// Their buffers' capacity, bounded by [`SPARE_BYTES`].
    spare_bytes: usize,
    /// Messages in `segments`.
    queued: usize,
    /// A v1 stream must end after writing what is queued.
    ending: bool,
    waker: Option<Waker>,
    /// Whether a sending thread may write a lone message on the connection itself, and
    /// how long the connection must have been quiet first ([`StreamQueue::set_direct`]).
    direct: Option<Duration>,
    /// When the connection was last written to: the writer found nothing more to take,
    /// or a sending thread's write ended.
    quiet_from: Option<Instant>,
    /// The current connection's socket, lent by its server ([`StreamQueue::lend_socket`]).
    socket: Option<Arc<dyn SocketSend>>,
    /// The writer found nothing queued at its last take and has nothing in flight.
    writer_idle: bool,
    /// A sending thread is writing on the socket itself: the writer waits until it is
    /// done, so that nothing overtakes its bytes.
    direct_in_flight: bool,
    /// The rest of a chunk a sending thread began and the socket did not take: the
    /// writer writes it before anything else.
    unframed: Option<Bytes>,
    /// Messages sending threads wrote themselves (whole or in part).
    direct_writes: u64,
}

/// A lone message's chunk, which the sending thread writes itself.
struct DirectWrite {
    frames: Batch,
    socket: Arc<dyn SocketSend>,
    generation: u64,
}

/// One stream writer's queue of encoded messages.
#[derive(Debug)]
pub struct StreamQueue {
    capacity: usize,
    /// Counts the frame bytes sending threads write themselves (the writer's are counted
    /// by the stream writer), if set.
    sent_bytes: Option<Arc<std::sync::atomic::AtomicU64>>,
    /// A spin lock, not a `Mutex`: it is held only to encode one message or to swap a
    /// segment out, and its release is a plain store, where a `Mutex`'s is a locked
    /// exchange (to learn whether to wake a sleeper) that waits for the encoded
    /// message's stores to drain, once per message on the sending thread. A thread that
    /// finds it held yields its time slice between looks.
    state: spin::mutex::SpinMutex<State, spin::relax::Yield>,
}

/// What [`StreamQueue::take`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Taken {
    /// This many messages' frames were swapped into the caller's buffer.
    Frames(usize),
    /// Nothing is queued; the waker will be woken by the next push.
    Nothing,
    /// Nothing more will be queued: the stream must end (a v1 stream on a higher term).
    Ended,
}

impl State {
    /// Encodes `m` into the last segment, or a new one once that is full: `Ok(false)`
    /// if nothing was written (a v1 skip), `Err` (the stream's term) if a v1 stream must
    /// end.
    fn encode(&mut self, m: &Message) -> Result<bool, u64> {
        if self
            .segments
            .back()
            .is_none_or(|seg| seg.frames.len() >= SEGMENT_BYTES)
        {
            // The first segment starts small: a lightly used stream never needs more.
            let fresh = if self.segments.is_empty() {
                INITIAL_FRAMES
            } else {
                FULL_SEGMENT_FRAMES
            };
            let frames = self.take_spare(fresh);
            self.segments.push_back(Segment {
                frames,
                msgs: 0,
                cpu: current_cpu(),
            });
        }
        let last = self.segments.len() - 1;
        let seg = &mut self.segments[last];
        let wrote = self.encoder.encode(m, &mut seg.frames)?;
        if wrote {
            seg.msgs += 1;
            self.queued += 1;
        }
        Ok(wrote)
    }

    /// Keeps `frames` (emptied back to its room) for a later segment, if there is room.
    fn keep_spare(&mut self, mut frames: Batch) {
        frames.truncate(0);
        frames.set_evict_after_write(false);
        // Its pieces were written and dropped, so the whole buffer comes back (and is
        // counted whole) rather than only what was left after them.
        let whole = frames.buf().capacity() + 1;
        let _reclaimed = frames.buf().try_reclaim(whole);
        frames.buf().put_bytes(0, CHUNK_HEADER_ROOM);
        let size = frames.buf().capacity();
        if self.spare_bytes + size <= SPARE_BYTES {
            self.spare_bytes += size;
            self.spare.push(frames);
        }
    }

    /// A kept buffer for a new segment, or a new one, with room for `fresh` bytes.
    fn take_spare(&mut self, fresh: usize) -> Batch {
        match self.spare.pop() {
            Some(mut frames) => {
                // The capacity counted when it was kept: nothing touches a spare since.
                let buf = frames.buf();
                self.spare_bytes = self.spare_bytes.saturating_sub(buf.capacity());
                // A spare from segments of large, referenced payloads holds only their
                // framing, in a buffer of 16 KiB or so: give it its full size in one
                // step rather than five doublings, each a copy, while copied messages
                // fill it.
                if buf.capacity() < fresh {
                    buf.reserve(fresh - buf.len());
                }
                frames
            }
            None => fresh_frames(fresh),
        }
    }

    /// Throws away everything queued, the connection's socket with it; returns how many
    /// messages that was (the rest of a chunk a sending thread began counts as one).
    fn clear(&mut self) -> usize {
        while let Some(seg) = self.segments.pop_front() {
            self.keep_spare(seg.frames);
        }
        self.socket = None;
        self.writer_idle = false;
        let unsent = usize::from(self.unframed.take().is_some());
        std::mem::take(&mut self.queued) + unsent
    }

    /// After the message just encoded made the queue non-empty: takes it out again for
    /// the sending thread to write itself, if the writer is idle with nothing to write
    /// before it, a socket is lent, the message references no payload (its chunk is
    /// then one buffer), and the connection has been quiet for the set time.
    ///
    /// Why quiet: a sender whose messages keep coming would otherwise write every one
    /// itself, one system call each (the writer, left idle, never takes over): 1x64B fell
    /// from 12–14 to 0.2–0.3 M messages/s. A message that follows the last write within
    /// the quiet time is queued and wakes the writer, which then carries the flow.
    fn direct_write(&mut self) -> Option<DirectWrite> {
        let (quiet, socket) = (self.direct?, self.socket.as_ref()?);
        if !self.writer_idle
            || self.direct_in_flight
            || self.unframed.is_some()
            || self.segments.len() != 1
            || self.segments[0].frames.referenced_len() > 0
            || self.quiet_from.is_some_and(|from| from.elapsed() < quiet)
        {
            return None;
        }
        let socket = socket.clone();
        let seg = self.segments.pop_front()?;
        self.queued -= seg.msgs;
        self.direct_in_flight = true;
        Some(DirectWrite {
            frames: seg.frames,
            socket,
            generation: self.generation,
        })
    }
}

fn fresh_frames(capacity: usize) -> Batch {
    let mut b = Batch::with_capacity(capacity);
    b.buf().put_bytes(0, CHUNK_HEADER_ROOM);
    b
}

impl StreamQueue {
    /// A queue of at most `capacity` messages (etcd: 4096).
    pub fn new(capacity: usize) -> Self {
        StreamQueue {
            capacity,
            sent_bytes: None,
            state: spin::mutex::SpinMutex::new(State {
                working: false,
                generation: 0,
                encoder: Encoder::Message,
                segments: VecDeque::new(),
                spare: Vec::new(),
                spare_bytes: 0,
                queued: 0,
                ending: false,
                waker: None,
                direct: None,
                quiet_from: None,
                socket: None,
                writer_idle: false,
                direct_in_flight: false,
                unframed: None,
                direct_writes: 0,
            }),
        }
    }

    /// Counts the frame bytes that sending threads write themselves into `counter` (the
    /// peer's sent bytes, to which the stream writer adds what it takes).
    pub fn counting_sent_in(mut self, counter: Arc<std::sync::atomic::AtomicU64>) -> Self {
        self.sent_bytes = Some(counter);
        self
    }

    /// Takes the lock, spinning for a while before it yields the CPU. A sender holds it
    /// while it encodes a message (about 1.5 µs for 100 entries), and the I/O thread
    /// yielding its CPU to the receive worker or to the sender, as the lock's own
    /// strategy does at the first miss, cost it more than waiting that out.
    fn lock(&self) -> spin::mutex::SpinMutexGuard<'_, State> {
        let mut spins = 0;
        loop {
            if let Some(g) = self.state.try_lock() {
                return g;
            }
            // Watch the lock (a read, not a write that takes the line from its holder)
            // until it is free or the spin is spent. A lost race counts as a look too,
            // so that many senders contending cannot keep a thread spinning unbounded.
            loop {
                if spins >= LOCK_SPINS {
                    return self.state.lock();
                }
                spins += 1;
                std::hint::spin_loop();
                if !self.state.is_locked() {
                    break;
                }
            }
        }
    }

    /// Encodes `m` for the current connection if one is attached and there is room.
    /// Wakes the writer only when the queue goes from empty to not empty, and not at all
    /// when the calling thread writes the message itself (an idle writer's lone message,
    /// see [`set_direct`](Self::set_direct)).
    pub fn push(&self, m: &Message) -> Push {
        let (push, waker) = {
            let mut guard = self.lock();
            let s = &mut *guard;
            if !s.working || s.ending {
                return Push::NotWorking;
            }
            if s.queued >= self.capacity {
                return Push::Full;
            }
            match s.encode(m) {
                Ok(true) if s.queued == 1 => {
                    if let Some(direct) = s.direct_write() {
                        drop(guard);
                        return self.write_direct(direct);
                    }
                    (Push::Queued, s.waker.take())
                }
                Ok(true) => (Push::Queued, None),
                Ok(false) => return Push::Queued,
                Err(stream_term) => {
                    s.ending = true;
                    (Push::Ended(stream_term), s.waker.take())
                }
            }
        };
        if let Some(w) = waker {
            w.wake();
        }
        push
    }

    /// Writes a lone message's chunk on the socket from the calling thread, outside the
    /// lock; what the socket does not take (all of it after an error) is left for the
    /// writer to write first, which is woken for it. `Push::Outdated` (lost: report it)
    /// if the connection was replaced meanwhile and the message did not go out whole.
    fn write_direct(&self, mut d: DirectWrite) -> Push {
        let buf = d.frames.buf();
        let frames = buf.len().saturating_sub(CHUNK_HEADER_ROOM);
        let start = end_chunk(ChunkSlot::at(0), buf, 0).unwrap_or(buf.len());
        let chunk = buf.len() - start;
        // A failed write is the writer's to find again, and to end the connection on.
        let sent = d.socket.try_send(&buf[start..]).unwrap_or(0).min(chunk);
        let mut s = self.lock();
        s.direct_in_flight = false;
        s.direct_writes += 1;
        s.quiet_from = Some(Instant::now());
        let current = s.generation == d.generation && s.working;
        let mut push = Push::Queued;
        if let Some(counter) = &self.sent_bytes {
            // As the writer counts what it takes: the rest goes out (or fails) with it.
            counter.fetch_add(frames as u64, std::sync::atomic::Ordering::Relaxed);
        }
        if sent < chunk {
            if current {
                let mut rest = d.frames.buf().split();
                rest.advance(start + sent);
                s.unframed = Some(rest.freeze());
            } else {
                push = Push::Outdated;
            }
        }
        s.keep_spare(d.frames);
        // Pushes while it wrote queued behind it, and their writer waits for it.
        let waker = if s.unframed.is_some() || s.queued > 0 {
            s.waker.take()
        } else {
            None
        };
        drop(s);
        if let Some(w) = waker {
            w.wake();
        }
        push
    }

    /// Lets a sending thread write a message on the connection itself once the
    /// connection has been quiet (nothing written) for `quiet`, while the writer is idle
    /// (`Some`), or never (`None`: every message crosses to the writer). See
    /// `http::direct`.
    pub fn set_direct(&self, quiet: Option<Duration>) {
        let mut s = self.lock();
        s.direct = quiet;
        if quiet.is_none() {
            s.socket = None;
        }
    }

    /// The socket of the connection of `generation`, lent by its server for sending
    /// threads to write on while its writer is idle (if [`set_direct`](Self::set_direct)
    /// allows it). Let go when the connection is detached or replaced.
    pub fn lend_socket(&self, generation: Generation, socket: Arc<dyn SocketSend>) {
        let mut s = self.lock();
        if s.direct.is_some() && s.working && s.generation == generation.get() {
            s.socket = Some(socket);
        }
    }

    /// Whether sending threads may write on the connection themselves (a socket lent
    /// now would be used; see [`set_direct`](Self::set_direct)).
    pub fn is_direct(&self) -> bool {
        self.lock().direct.is_some()
    }

    /// Messages sending threads wrote on the connection themselves, whole or in part
    /// (see [`set_direct`](Self::set_direct)).
    pub fn direct_writes(&self) -> u64 {
        self.lock().direct_writes
    }

    /// Whether a connection is attached (and its stream has not ended).
    pub fn is_working(&self) -> bool {
        let s = self.lock();
        s.working && !s.ending
    }

    /// Attaches a new connection of `kind` (`term`: a v1 stream's `X-Raft-Term`), with
    /// a fresh encoder. Whatever the previous connection left queued is thrown away
    /// (returned as a count, so the caller reports the peer unreachable once), and the
    /// previous connection's writer becomes stale and ends.
    pub fn attach(&self, kind: StreamType, term: u64) -> (Generation, usize) {
        let (discarded, waker, generation) = {
            let mut s = self.lock();
            let discarded = s.clear();
            s.ending = false;
            s.encoder = Encoder::new(kind, term);
            s.generation += 1;
            s.working = true;
            (discarded, s.waker.take(), s.generation)
        };
        if let Some(w) = waker {
            w.wake();
        }
        (Generation::new(generation), discarded)
    }

    /// The connection of `generation` closed: if it is still the current one, the queue
    /// stops taking messages and its contents are thrown away (returned as a count).
    pub fn detach(&self, generation: Generation) -> usize {
        let (n, waker) = {
            let mut s = self.lock();
            if s.generation != generation.get() || !s.working {
                return 0;
            }
            s.working = false;
            (s.clear(), s.waker.take())
        };
        if let Some(w) = waker {
            w.wake();
        }
        n
    }

    /// Ends every connection's claim (transport stop): like [`detach`](Self::detach)
    /// for the current one.
    pub fn close(&self) -> usize {
        let g = Generation::new(self.lock().generation);
        let n = self.detach(g);
        self.lock().generation += 1;
        n
    }

    /// Swaps the oldest queued segment (up to about 256 KiB of frames) into `frames`,
    /// which must hold just the [`CHUNK_HEADER_ROOM`] bytes a chunk header will be
    /// written into: the encoded frames then follow it with no copy, and the batch
    /// given in is kept for a later segment. With nothing queued, registers `waker` to
    /// be woken by the next push. `Err(Stale)` once `generation` has been replaced or
    /// detached: that connection must end.
    pub fn take(
        &self,
        generation: Generation,
        frames: &mut Batch,
        waker: &Waker,
    ) -> Result<Taken, Stale> {
        debug_assert_eq!(frames.len(), CHUNK_HEADER_ROOM);
        let mut s = self.lock();
        if s.generation != generation.get() || !s.working {
            return Err(Stale);
        }
        // A sending thread is writing: whatever is queued goes after it (it wakes us).
        let nothing = s.queued == 0 && s.unframed.is_none();
        if nothing || s.direct_in_flight {
            if nothing && s.ending {
                return Ok(Taken::Ended);
            }
            if !s.waker.as_ref().is_some_and(|w| w.will_wake(waker)) {
                s.waker = Some(waker.clone());
            }
            if nothing && !s.writer_idle {
                s.writer_idle = true;
                // Only with direct writes on: they alone read it.
                if s.direct.is_some() {
                    s.quiet_from = Some(Instant::now());
                }
            }
            return Ok(Taken::Nothing);
        }
        s.writer_idle = false;
        let unframed = s.unframed.take();
        let Some(mut segment) = s.segments.pop_front() else {
            // Only the rest of a sending thread's chunk.
            drop(s);
            if let Some(rest) = unframed {
                frames.set_unframed(rest);
            }
            return Ok(Taken::Frames(0));
        };
        std::mem::swap(&mut segment.frames, frames);
        s.queued -= segment.msgs;
        s.keep_spare(segment.frames);
        drop(s);
        if let Some(rest) = unframed {
            frames.set_unframed(rest);
        }
        // Filled on another CPU, which fills it again: evict it once written (see
        // `cache_lines`), if it is mostly framing and small payloads. Those are written
        // as scattered stores, and each line the I/O thread's CPU still held stalled the
        // sender. Long payload copies waited less, and evicting their lines cost the I/O
        // thread more than it saved the sender (1x1KiB: 0.42–0.49 CPU-µs a message
        // evicted, against 0.36–0.40). Referenced payloads are not ours to evict.
        let mostly_small_stores = crate::cache_lines::can_evict()
            && frames.referenced_len() == 0
            && frames.bulk_copied() * 2 < frames.len();
        frames.set_evict_after_write(
            mostly_small_stores
                && segment.cpu.is_some()
                && current_cpu().is_some_and(|here| segment.cpu != Some(here)),
        );
        Ok(Taken::Frames(segment.msgs))
    }

    /// Frees the emptied buffers kept beyond a few: the writer calls this when its
    /// stream has been idle for a heartbeat interval, so that memory a burst needed is
    /// not held for good.
    pub fn trim_spares(&self) {
        let mut s = self.lock();
        while s.spare.len() > IDLE_SPARES {
            if let Some(mut frames) = s.spare.pop() {
                s.spare_bytes = s.spare_bytes.saturating_sub(frames.buf().capacity());
            }
        }
    }

    /// Encodes a link heartbeat for the connection of `generation` (the writer sends one
    /// when idle), as a queued message that the next [`take`](Self::take) returns.
    pub fn push_link_heartbeat(&self, generation: Generation) -> Result<(), Stale> {
        let mut s = self.lock();
        if s.generation != generation.get() || !s.working {
            return Err(Stale);
        }
        let s = &mut *s;
        // Only a v1 stream's encoder can refuse, and never a link heartbeat.
        let _ = s.encode(&Message::link_heartbeat());
        Ok(())
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
    use crate::codec::MsgAppV2Decoder;
    use crate::raftpb::{Entry, MessageType};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::Wake;

    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn app(term: u64, index: u64) -> Message {
        Message {
            msg_type: MessageType::MsgApp as i32,
            from: 1,
            to: 2,
            term,
            log_term: term,
            index,
            commit: index,
            entries: vec![Entry {
                term,
                index: index + 1,
                data: Some(bytes::Bytes::from_static(b"payload")),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    fn room() -> Batch {
        fresh_frames(64)
    }

    /// The frames of a taken batch, copied out whole (referenced payloads included).
    fn frames_of(batch: &mut Batch) -> bytes::Bytes {
        let mut pieces = Vec::new();
        batch.take_from(CHUNK_HEADER_ROOM, &mut pieces);
        pieces.concat().into()
    }

    /// Pushes `m` from a thread pinned to `push_cpu`, then takes it on one pinned to
    /// `take_cpu`; returns whether the taken batch was marked for eviction.
    fn marked_when_pushed_and_taken_on(m: &Message, push_cpu: usize, take_cpu: usize) -> bool {
        use crate::transport::worker_placement::test_cpus::pin;
        let q = StreamQueue::new(4096);
        let (generation, _) = q.attach(StreamType::MsgAppV2, 0);
        std::thread::scope(|s| {
            s.spawn(|| {
                pin(push_cpu);
                assert_eq!(q.push(m), Push::Queued);
            });
        });
        std::thread::scope(|s| {
            s.spawn(|| {
                pin(take_cpu);
                let mut batch = room();
                let taken = q.take(generation, &mut batch, std::task::Waker::noop());
                assert_eq!(taken, Ok(Taken::Frames(1)));
                batch.take_evict_mark()
            })
            .join()
            .unwrap()
        })
    }

    #[test]
    fn frames_filled_on_another_cpu_are_marked_for_eviction_unless_mostly_bulk_copies() {
        let cpus = crate::transport::worker_placement::test_cpus::allowed();
        let [a, b, ..] = cpus[..] else {
            eprintln!("skipped: needs two CPUs to push and take on (allowed: {cpus:?})");
            return;
        };
        let small = app(1, 1);
        let mut bulk = app(1, 1);
        bulk.entries[0].data = Some(bytes::Bytes::from(vec![7u8; 1024]));
        let mut referenced = app(1, 1);
        referenced.entries[0].data = Some(bytes::Bytes::from(vec![
            7u8;
            crate::http::batch::COPY_LIMIT
        ]));
        let evicts = crate::cache_lines::can_evict();
        assert_eq!(marked_when_pushed_and_taken_on(&small, a, b), evicts);
        assert!(!marked_when_pushed_and_taken_on(&small, b, b), "same CPU");
        assert!(!marked_when_pushed_and_taken_on(&bulk, a, b), "a long copy");
        assert!(
            !marked_when_pushed_and_taken_on(&referenced, a, b),
            "not ours"
        );
    }

    /// A socket that takes at most `room` bytes a write (0: none, `WouldBlock`), or
    /// fails with `fail`; records what it took. With `gate`, a write waits at it twice
    /// (entered, then released) before it returns.
    #[derive(Debug, Default)]
    struct FakeSocket {
        took: std::sync::Mutex<Vec<u8>>,
        room: usize,
        fail: Option<std::io::ErrorKind>,
        gate: Option<std::sync::Barrier>,
    }

    impl SocketSend for FakeSocket {
        fn try_send(&self, buf: &[u8]) -> std::io::Result<usize> {
            if let Some(gate) = &self.gate {
                gate.wait();
                gate.wait();
            }
            if let Some(kind) = self.fail {
                return Err(kind.into());
            }
            let n = buf.len().min(self.room);
            if n == 0 {
                return Err(std::io::ErrorKind::WouldBlock.into());
            }
            self.took.lock().unwrap().extend_from_slice(&buf[..n]);
            Ok(n)
        }
    }

    /// A socket whose writes wait at its gate (see [`FakeSocket`]).
    fn gated_socket(room: usize) -> Arc<FakeSocket> {
        Arc::new(FakeSocket {
            room,
            gate: Some(std::sync::Barrier::new(2)),
            ..Default::default()
        })
    }

    fn socket(room: usize) -> Arc<FakeSocket> {
        Arc::new(FakeSocket {
            room,
            ..Default::default()
        })
    }

    /// A message stream queue whose writer has taken nothing and gone idle, with direct
    /// writes after `quiet` and `sock` lent; its writer's wake-up count.
    fn idle_direct(
        quiet: Duration,
        sock: Arc<FakeSocket>,
    ) -> (StreamQueue, Generation, Arc<Count>) {
        idle_direct_counted(quiet, sock, Arc::default())
    }

    /// [`idle_direct`], counting the bytes senders write in `sent`.
    fn idle_direct_counted(
        quiet: Duration,
        sock: Arc<FakeSocket>,
        sent: Arc<std::sync::atomic::AtomicU64>,
    ) -> (StreamQueue, Generation, Arc<Count>) {
        let q = StreamQueue::new(8).counting_sent_in(sent);
        q.set_direct(Some(quiet));
        let (g, _) = q.attach(StreamType::Message, 0);
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker: Waker = count.clone().into();
        assert_eq!(q.take(g, &mut room(), &waker), Ok(Taken::Nothing));
        q.lend_socket(g, sock);
        (q, g, count)
    }

    /// `m`'s frames, as a queue without direct writes hands them to its writer.
    fn frames_for(m: &Message) -> bytes::Bytes {
        let q = StreamQueue::new(8);
        let (g, _) = q.attach(StreamType::Message, 0);
        q.push(m);
        let mut b = room();
        q.take(g, &mut b, Waker::noop()).unwrap();
        frames_of(&mut b)
    }

    /// `m`'s whole chunk: hex length, CRLF, frames, CRLF.
    fn chunk_for(m: &Message) -> Vec<u8> {
        let frames = frames_for(m);
        let mut c = format!("{:x}\r\n", frames.len()).into_bytes();
        c.extend_from_slice(&frames);
        c.extend_from_slice(b"\r\n");
        c
    }

    fn heartbeat(term: u64) -> Message {
        Message {
            msg_type: MessageType::MsgHeartbeat as i32,
            from: 1,
            to: 2,
            term,
            ..Default::default()
        }
    }

    #[test]
    fn an_idle_writers_lone_message_is_written_by_the_sender_and_wakes_no_one() {
        let sock = socket(usize::MAX);
        let sent = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (q, g, woken) = idle_direct_counted(Duration::ZERO, sock.clone(), sent.clone());
        assert_eq!(q.push(&heartbeat(1)), Push::Queued);
        assert_eq!(*sock.took.lock().unwrap(), chunk_for(&heartbeat(1)));
        let frames = frames_for(&heartbeat(1)).len() as u64;
        assert_eq!(
            sent.load(Ordering::Relaxed),
            frames,
            "counted as the writer would"
        );
        assert_eq!(woken.0.load(Ordering::SeqCst), 0, "the writer sleeps on");
        assert_eq!((q.len(), q.direct_writes()), (0, 1));
        assert_eq!(q.take(g, &mut room(), Waker::noop()), Ok(Taken::Nothing));
        // And the next one too, in order: the stream is one chunk a message.
        assert_eq!(q.push(&heartbeat(2)), Push::Queued);
        let mut both = chunk_for(&heartbeat(1));
        both.extend(chunk_for(&heartbeat(2)));
        assert_eq!(*sock.took.lock().unwrap(), both);
    }

    #[test]
    fn a_message_within_the_quiet_time_or_before_the_writer_idles_goes_to_the_writer() {
        let sock = socket(usize::MAX);
        // The writer went idle just now: the connection has not been quiet for an hour.
        let (q, g, woken) = idle_direct(Duration::from_secs(3600), sock.clone());
        assert_eq!(q.push(&heartbeat(1)), Push::Queued);
        assert!(sock.took.lock().unwrap().is_empty());
        assert_eq!(woken.0.load(Ordering::SeqCst), 1);
        let mut b = room();
        assert_eq!(q.take(g, &mut b, Waker::noop()), Ok(Taken::Frames(1)));
        assert_eq!(frames_of(&mut b), frames_for(&heartbeat(1)));

        // A writer that has not found its queue empty yet may have a write in flight.
        let q = StreamQueue::new(8);
        q.set_direct(Some(Duration::ZERO));
        let (g, _) = q.attach(StreamType::Message, 0);
        q.lend_socket(g, sock.clone());
        assert_eq!(q.push(&heartbeat(1)), Push::Queued);
        assert!(sock.took.lock().unwrap().is_empty());
        assert_eq!(q.len(), 1);

        // Nor without a socket lent, nor with direct writes off.
        let q = StreamQueue::new(8);
        q.set_direct(Some(Duration::ZERO));
        let (g, _) = q.attach(StreamType::Message, 0);
        assert_eq!(q.take(g, &mut room(), Waker::noop()), Ok(Taken::Nothing));
        assert_eq!(q.push(&heartbeat(1)), Push::Queued);
        assert_eq!((q.len(), q.direct_writes()), (1, 0));
        let (q, g, _) = idle_direct(Duration::ZERO, sock.clone());
        q.set_direct(None);
        q.lend_socket(g, sock.clone());
        assert_eq!(q.push(&heartbeat(1)), Push::Queued);
        assert_eq!((q.len(), q.direct_writes()), (1, 0));
        assert!(sock.took.lock().unwrap().is_empty());

        // Nor a message whose payload is referenced (its chunk is not one buffer).
        let (q, _, _) = idle_direct(Duration::ZERO, sock.clone());
        let mut big = app(1, 1);
        big.entries[0].data = Some(bytes::Bytes::from(vec![
            7u8;
            crate::http::batch::COPY_LIMIT
        ]));
        assert_eq!(q.push(&big), Push::Queued);
        assert_eq!(q.len(), 1);
        assert!(sock.took.lock().unwrap().is_empty());
    }

    #[test]
    fn what_the_socket_does_not_take_the_writer_writes_first() {
        for (sock, sent) in [
            (socket(5), 5),
            (socket(0), 0),
            (
                Arc::new(FakeSocket {
                    fail: Some(std::io::ErrorKind::BrokenPipe),
                    ..Default::default()
                }),
                0,
            ),
        ] {
            let (q, g, woken) = idle_direct(Duration::ZERO, sock.clone());
            assert_eq!(q.push(&heartbeat(1)), Push::Queued);
            assert_eq!(woken.0.load(Ordering::SeqCst), 1, "woken for the rest");
            assert_eq!(q.push(&heartbeat(2)), Push::Queued, "queued behind it");
            assert_eq!(q.len(), 1);
            let mut b = room();
            assert_eq!(q.take(g, &mut b, Waker::noop()), Ok(Taken::Frames(1)));
            let rest = b.take_unframed().expect("the rest of the first chunk");
            let mut first = sock.took.lock().unwrap().clone();
            assert_eq!(first.len(), sent);
            first.extend_from_slice(&rest);
            assert_eq!(first, chunk_for(&heartbeat(1)));
            assert_eq!(frames_of(&mut b), frames_for(&heartbeat(2)));
            assert_eq!(q.take(g, &mut room(), Waker::noop()), Ok(Taken::Nothing));
        }
        // The rest alone, with nothing queued behind it; and thrown away (counted as an
        // outdated message) if the connection goes first.
        let (q, g, _) = idle_direct(Duration::ZERO, socket(3));
        q.push(&heartbeat(1));
        let mut b = room();
        assert_eq!(q.take(g, &mut b, Waker::noop()), Ok(Taken::Frames(0)));
        assert!(b.take_unframed().is_some());
        assert_eq!(b.len(), CHUNK_HEADER_ROOM);
        let (q, g, _) = idle_direct(Duration::ZERO, socket(3));
        q.push(&heartbeat(1));
        assert_eq!(q.detach(g), 1);
    }

    #[test]
    fn nothing_overtakes_a_senders_write_in_flight() {
        let sock = gated_socket(usize::MAX);
        let (q, g, woken) = idle_direct(Duration::ZERO, sock.clone());
        let gate = || sock.gate.as_ref().unwrap().wait();
        std::thread::scope(|s| {
            let writing = s.spawn(|| q.push(&heartbeat(1)));
            gate(); // the sender is in its write
            let pushed = q.push(&heartbeat(2));
            let waker: Waker = woken.clone().into();
            let mut b = room();
            let first = q.take(g, &mut b, &waker);
            let before = woken.0.load(Ordering::SeqCst);
            gate(); // let it finish (before any assertion, which would leave it waiting)
            assert_eq!(writing.join().unwrap(), Push::Queued);
            assert_eq!(pushed, Push::Queued);
            assert_eq!(first, Ok(Taken::Nothing), "the writer waits for it");
            assert_eq!(
                woken.0.load(Ordering::SeqCst),
                before + 1,
                "then wakes the writer"
            );
            assert_eq!(q.take(g, &mut b, &waker), Ok(Taken::Frames(1)));
            assert!(b.take_unframed().is_none());
            assert_eq!(frames_of(&mut b), frames_for(&heartbeat(2)));
        });
        assert_eq!(*sock.took.lock().unwrap(), chunk_for(&heartbeat(1)));
    }

    /// `threads` threads that each push `each` heartbeats numbered in `commit` (from:
    /// the thread, from 1), pausing 50 µs after every `pause_every`-th.
    fn spawn_senders(
        q: &Arc<StreamQueue>,
        threads: u64,
        each: u64,
        pause_every: Option<u64>,
    ) -> Vec<std::thread::JoinHandle<()>> {
        (0..threads)
            .map(|t| {
                let q = q.clone();
                std::thread::spawn(move || {
                    for k in 0..each {
                        let m = Message {
                            msg_type: MessageType::MsgHeartbeat as i32,
                            to: 2,
                            from: t + 1,
                            commit: k,
                            ..Default::default()
                        };
                        assert_eq!(q.push(&m), Push::Queued);
                        if pause_every.is_some_and(|n| k % n == 0) {
                            std::thread::sleep(Duration::from_micros(50));
                        }
                    }
                })
            })
            .collect()
    }

    /// The one wire that senders' own writes and the writer's share, in write order; a
    /// sender's write takes a varying part of its chunk (none, some, all).
    #[derive(Debug, Default)]
    struct Wire {
        bytes: std::sync::Mutex<Vec<u8>>,
        turn: AtomicUsize,
    }

    impl SocketSend for Wire {
        fn try_send(&self, buf: &[u8]) -> std::io::Result<usize> {
            let n = match self.turn.fetch_add(1, Ordering::Relaxed) % 4 {
                0 => return Err(std::io::ErrorKind::WouldBlock.into()),
                1 => buf.len() / 2,
                _ => buf.len(),
            };
            self.bytes.lock().unwrap().extend_from_slice(&buf[..n]);
            Ok(n)
        }
    }

    #[test]
    fn senders_writing_themselves_and_a_writer_keep_the_wire_in_order() {
        const THREADS: u64 = 3;
        const EACH: u64 = 3_000;
        let q = Arc::new(StreamQueue::new(1 << 20));
        q.set_direct(Some(Duration::ZERO));
        let (generation, _) = q.attach(StreamType::Message, 0);
        let wire = Arc::new(Wire::default());
        q.lend_socket(generation, wire.clone());
        // Pauses, so that the writer idles and senders write.
        let senders = spawn_senders(&q, THREADS, EACH, Some(8));
        let waker: Waker = Arc::new(Count(AtomicUsize::new(0))).into();
        let mut taken = 0;
        loop {
            let mut frames = room();
            match q.take(generation, &mut frames, &waker) {
                Ok(Taken::Frames(n)) => {
                    taken += n as u64;
                    let rest = frames.take_unframed();
                    let body = frames_of(&mut frames);
                    let mut w = wire.bytes.lock().unwrap();
                    w.extend_from_slice(rest.as_deref().unwrap_or_default());
                    if !body.is_empty() {
                        w.extend_from_slice(format!("{:x}\r\n", body.len()).as_bytes());
                        w.extend_from_slice(&body);
                        w.extend_from_slice(b"\r\n");
                    }
                }
                // Nothing queued, no rest left, no sender writing: all are out.
                Ok(Taken::Nothing) if taken + q.direct_writes() == THREADS * EACH => break,
                Ok(Taken::Nothing) => std::thread::yield_now(),
                other => panic!("{other:?}"),
            }
        }
        for s in senders {
            s.join().unwrap();
        }
        // De-chunk the wire, then decode every message: each thread's in its order.
        let mut chunked = bytes::Bytes::from(std::mem::take(&mut *wire.bytes.lock().unwrap()));
        let mut dechunk = crate::http::chunked::ChunkedDecoder::new(&Default::default());
        let mut body = Vec::new();
        while let Some(ev) = dechunk.decode(&mut chunked).unwrap() {
            match ev {
                crate::http::chunked::ChunkedEvent::Data(d) => body.extend_from_slice(&d),
                crate::http::chunked::ChunkedEvent::End => unreachable!(),
            }
        }
        assert!(
            chunked.is_empty() && dechunk.at_chunk_boundary(),
            "whole chunks only"
        );
        let mut input = bytes::Bytes::from(body);
        let mut dec = crate::codec::MessageStreamDecoder::new(&Default::default());
        let mut m = Message::default();
        let mut next = [0u64; THREADS as usize];
        while dec.decode(&mut input, &mut m).unwrap().is_some() {
            let t = (m.from - 1) as usize;
            assert_eq!(m.commit, next[t], "thread {t}'s order");
            next[t] += 1;
        }
        assert_eq!(next, [EACH; THREADS as usize], "none lost");
        let direct = q.direct_writes();
        assert!(direct > 0, "senders wrote some themselves");
        assert!(direct < THREADS * EACH, "and the writer some");
    }

    #[test]
    fn a_write_cut_short_by_a_new_connection_is_reported_outdated() {
        let sock = gated_socket(4);
        let (q, _, _) = idle_direct(Duration::ZERO, sock.clone());
        let gate = || sock.gate.as_ref().unwrap().wait();
        std::thread::scope(|s| {
            let writing = s.spawn(|| q.push(&heartbeat(1)));
            gate();
            let (g2, outdated) = q.attach(StreamType::Message, 0);
            gate();
            assert_eq!(outdated, 0, "the message in flight is not queued");
            assert_eq!(writing.join().unwrap(), Push::Outdated, "lost: report it");
            let mut b = room();
            assert_eq!(q.take(g2, &mut b, Waker::noop()), Ok(Taken::Nothing));
            assert!(
                b.take_unframed().is_none(),
                "nothing of it reaches the new one"
            );
        });
    }

    #[test]
    fn the_first_segment_starts_small_and_the_ones_behind_it_start_full_size() {
        let q = StreamQueue::new(4096);
        q.attach(StreamType::MsgAppV2, 0);
        let mut m = app(1, 1);
        m.entries[0].data = Some(bytes::Bytes::from(vec![7u8; 1024]));
        let segments = |q: &StreamQueue| q.lock().segments.len();
        q.push(&m);
        let first = q.lock().segments[0].frames.buf().capacity();
        assert!(
            first < FULL_SEGMENT_FRAMES,
            "one message needs a small buffer ({first})"
        );
        while segments(&q) < 3 {
            q.push(&m);
            let mut s = q.lock();
            let n = s.segments.len();
            let newest = &mut s.segments[n - 1];
            if n > 1 && newest.msgs == 1 {
                let cap = newest.frames.buf().capacity();
                assert!(
                    cap >= FULL_SEGMENT_FRAMES,
                    "a segment behind another starts full size, not to be grown ({cap})"
                );
            }
        }
        // A full-size segment takes the message that crosses SEGMENT_BYTES without growing.
        let mut s = q.lock();
        let second = &mut s.segments[1];
        assert!(second.frames.len() >= SEGMENT_BYTES);
        assert!(second.frames.buf().capacity() < 2 * FULL_SEGMENT_FRAMES);
    }

    #[test]
    fn a_small_spare_reused_behind_another_segment_is_made_full_size_at_once() {
        let q = StreamQueue::new(4096);
        let (generation, _) = q.attach(StreamType::MsgAppV2, 0);
        let waker: Waker = Arc::new(Count(AtomicUsize::new(0))).into();
        let mut m = app(1, 1);
        m.entries[0].data = Some(bytes::Bytes::from(vec![7u8; 1024]));
        let segments = |q: &StreamQueue| q.lock().segments.len();
        while segments(&q) < 3 {
            q.push(&m);
        }
        // The writer takes two segments, giving small batches back (as a stream of
        // large, referenced payloads leaves spares that hold only their framing).
        for _ in 0..2 {
            let mut small = room();
            assert!(matches!(
                q.take(generation, &mut small, &waker),
                Ok(Taken::Frames(_))
            ));
        }
        assert_eq!(q.lock().spare.len(), 2);
        let queued = segments(&q);
        loop {
            q.push(&m);
            let mut s = q.lock();
            let n = s.segments.len();
            let newest = &mut s.segments[n - 1];
            if n > queued && newest.msgs == 1 {
                let cap = newest.frames.buf().capacity();
                assert!(
                    cap >= FULL_SEGMENT_FRAMES,
                    "a small spare behind another segment is grown at once ({cap})"
                );
                if s.spare.is_empty() {
                    break;
                }
            }
        }
    }

    #[test]
    fn nothing_is_queued_without_a_connection_and_a_full_queue_drops() {
        let q = StreamQueue::new(2);
        assert_eq!(q.push(&app(1, 1)), Push::NotWorking);
        q.attach(StreamType::MsgAppV2, 0);
        assert_eq!(q.push(&app(1, 1)), Push::Queued);
        assert_eq!(q.push(&app(1, 2)), Push::Queued);
        assert_eq!(q.push(&app(1, 3)), Push::Full);
        assert_eq!(q.len(), 2);
    }

    #[test]
    fn taken_frames_decode_to_what_was_pushed_and_a_new_connection_starts_fresh() {
        let q = StreamQueue::new(16);
        let waker: Waker = Arc::new(Count(AtomicUsize::new(0))).into();
        let (old, _) = q.attach(StreamType::MsgAppV2, 0);
        q.push(&app(3, 10));
        q.push(&app(3, 11));
        let mut frames = room();
        assert_eq!(q.take(old, &mut frames, &waker), Ok(Taken::Frames(2)));
        // The second one went as compact AppEntries, valid only after the first.
        let mut dec = MsgAppV2Decoder::new(2, 1, &Default::default());
        let mut input = frames_of(&mut frames);
        let mut got = Vec::new();
        let mut m = Message::default();
        while dec.decode(&mut input, &mut m).unwrap().is_some() {
            got.push(std::mem::take(&mut m));
        }
        assert_eq!(got, vec![app(3, 10), app(3, 11)]);
        // A new connection: the old writer is stale, and the encoder starts over, so the
        // next MsgApp is whole again (a fresh decoder can read it).
        q.push(&app(3, 12));
        let (new, discarded) = q.attach(StreamType::MsgAppV2, 0);
        assert_eq!(discarded, 1, "the old connection's queue is thrown away");
        assert_eq!(q.take(old, &mut room(), &waker), Err(Stale));
        q.push(&app(3, 12));
        let mut frames = room();
        assert_eq!(q.take(new, &mut frames, &waker), Ok(Taken::Frames(1)));
        let mut dec = MsgAppV2Decoder::new(2, 1, &Default::default());
        let mut input = frames_of(&mut frames);
        assert!(dec.decode(&mut input, &mut m).unwrap().is_some());
        assert_eq!(m, app(3, 12));
        assert_eq!(q.detach(old), 0, "a stale detach changes nothing");
        q.push(&app(3, 13));
        assert_eq!(q.detach(new), 1);
        assert_eq!(q.push(&app(3, 14)), Push::NotWorking);
    }

    #[test]
    fn the_writer_is_woken_once_per_empty_to_non_empty_and_buffers_swap() {
        let q = StreamQueue::new(8);
        let (g, _) = q.attach(StreamType::Message, 0);
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = count.clone().into();
        let mut frames = room();
        assert_eq!(q.take(g, &mut frames, &waker), Ok(Taken::Nothing));
        q.push(&app(1, 1));
        q.push(&app(1, 2));
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        let ours = frames.buf().as_ptr();
        assert_eq!(q.take(g, &mut frames, &waker), Ok(Taken::Frames(2)));
        assert_ne!(frames.buf().as_ptr(), ours, "swapped, not copied");
        assert!(frames.len() > CHUNK_HEADER_ROOM);
        frames.truncate(CHUNK_HEADER_ROOM);
        assert_eq!(q.take(g, &mut frames, &waker), Ok(Taken::Nothing));
        q.push_link_heartbeat(g).unwrap();
        assert_eq!(q.take(g, &mut frames, &waker), Ok(Taken::Frames(1)));
        let heartbeat = 8 + crate::raftpb::wire::message_len(&Message::link_heartbeat());
        assert_eq!(frames.len(), CHUNK_HEADER_ROOM + heartbeat);
    }

    #[test]
    fn a_take_carries_one_segment_of_about_256_kib_and_buffers_are_reused() {
        let q = StreamQueue::new(4096);
        let waker: Waker = Arc::new(Count(AtomicUsize::new(0))).into();
        let (g, _) = q.attach(StreamType::Message, 0);
        let mut big = app(1, 1);
        big.entries[0].data = Some(bytes::Bytes::from(vec![7u8; 100 * 1024]));
        for _ in 0..7 {
            assert_eq!(q.push(&big), Push::Queued);
        }
        let mut frames = room();
        let mut takes = Vec::new();
        while let Ok(Taken::Frames(n)) = q.take(g, &mut frames, &waker) {
            assert!(frames.len() < SEGMENT_BYTES + 101 * 1024);
            takes.push(n);
            frames.truncate(CHUNK_HEADER_ROOM);
        }
        assert_eq!(takes, [3, 3, 1], "a segment closes once it holds 256 KiB");
        assert!(q.is_empty());
        // The writer's buffers went back as spares, and new segments use them.
        for _ in 0..3 {
            q.push(&big);
        }
        let kept = q.lock().spare.len();
        assert!(kept >= 2, "written buffers were kept: {kept}");
        assert_eq!(q.take(g, &mut frames, &waker), Ok(Taken::Frames(3)));
    }

    #[test]
    fn spares_are_counted_whole_bounded_and_let_go_when_idle() {
        let q = StreamQueue::new(4096);
        let waker: Waker = Arc::new(Count(AtomicUsize::new(0))).into();
        let (g, _) = q.attach(StreamType::Message, 0);
        // Copied payloads (under 16 KiB): about 17 segments of 256 KiB each.
        let mut msg = app(1, 1);
        msg.entries[0].data = Some(bytes::Bytes::from(vec![7u8; 8 * 1024]));
        for _ in 0..4096 {
            assert_eq!(q.push(&msg), Push::Queued);
        }
        let mut frames = room();
        let mut pieces = Vec::new();
        while let Ok(Taken::Frames(_)) = q.take(g, &mut frames, &waker) {
            // As the server does: the frames go out as pieces, which are then dropped.
            frames.take_from(0, &mut pieces);
            pieces.clear();
            frames.buf().put_bytes(0, CHUNK_HEADER_ROOM);
        }
        let (kept, bytes) = {
            let mut s = q.lock();
            let counted: usize = s.spare.iter_mut().map(|b| b.buf().capacity()).sum();
            assert_eq!(s.spare_bytes, counted, "the count matches the buffers kept");
            (s.spare.len(), s.spare_bytes)
        };
        assert!(kept >= 16, "a refill would reuse them: {kept} kept");
        assert!(
            bytes >= kept * SEGMENT_BYTES,
            "each counted whole, not as what was left after its pieces: {bytes}"
        );
        assert!(bytes <= SPARE_BYTES);
        q.trim_spares();
        let mut s = q.lock();
        assert_eq!(s.spare.len(), IDLE_SPARES);
        let counted: usize = s.spare.iter_mut().map(|b| b.buf().capacity()).sum();
        assert_eq!(s.spare_bytes, counted);
    }

    /// Several sending threads and a writer at once: every message is taken exactly
    /// once, whole, and each thread's messages stay in its order (the lock excludes).
    #[test]
    fn concurrent_senders_and_a_writer_lose_and_tear_nothing() {
        const THREADS: u64 = 4;
        const EACH: u64 = 20_000;
        let q = Arc::new(StreamQueue::new(1 << 20));
        let (generation, _) = q.attach(StreamType::Message, 0);
        let waker: Waker = Arc::new(Count(AtomicUsize::new(0))).into();
        let senders = spawn_senders(&q, THREADS, EACH, None);
        let mut next = [0u64; THREADS as usize];
        let mut dec = crate::codec::MessageStreamDecoder::new(&Default::default());
        let mut m = Message::default();
        let mut seen = 0;
        while seen < THREADS * EACH {
            let mut frames = room();
            match q.take(generation, &mut frames, &waker) {
                Ok(Taken::Frames(n)) => {
                    let mut input = frames_of(&mut frames);
                    let mut decoded = 0;
                    while dec.decode(&mut input, &mut m).unwrap().is_some() {
                        let t = (m.from - 1) as usize;
                        assert_eq!(m.commit, next[t], "thread {t}'s order");
                        next[t] += 1;
                        decoded += 1;
                    }
                    assert_eq!(decoded, n);
                    seen += n as u64;
                }
                Ok(Taken::Nothing) => std::thread::yield_now(),
                other => panic!("{other:?}"),
            }
        }
        for s in senders {
            s.join().unwrap();
        }
        assert_eq!(next, [EACH; THREADS as usize]);
        assert_eq!(q.len(), 0);
    }

    #[test]
    fn a_v1_stream_ends_on_a_higher_term_and_skips_lower_ones() {
        let q = StreamQueue::new(8);
        let waker: Waker = Arc::new(Count(AtomicUsize::new(0))).into();
        let (g, _) = q.attach(StreamType::MsgAppV1, 5);
        assert_eq!(
            q.push(&app(4, 1)),
            Push::Queued,
            "skipped, as etcd 2.1 does"
        );
        assert_eq!(q.len(), 0);
        assert_eq!(q.push(&app(5, 1)), Push::Queued);
        assert_eq!(q.push(&app(6, 2)), Push::Ended(5));
        assert!(!q.is_working());
        assert_eq!(
            q.push(&app(5, 3)),
            Push::NotWorking,
            "the next channel takes it"
        );
        let mut frames = room();
        assert_eq!(q.take(g, &mut frames, &waker), Ok(Taken::Frames(1)));
        frames.truncate(CHUNK_HEADER_ROOM);
        assert_eq!(q.take(g, &mut frames, &waker), Ok(Taken::Ended));
    }
}
