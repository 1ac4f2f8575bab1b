//! Property tests over every codec:
//! - arbitrary messages round-trip, fed in pieces split at arbitrary points;
//! - msgappv2's deferring decoder, once resolved, gives what the plain one gives, errors
//!   included;
//! - arbitrary bytes never panic any decoder, at any split;
//! - no declared length makes a decoder allocate beyond its cap.

use bytes::{Bytes, BytesMut};
use prop::collection::vec;
use proptest::prelude::*;
use prost::Message as _;
use rafthttp::alloc_count::{reset_thread_largest, thread_largest, CountingAlloc};
use rafthttp::codec::*;
use rafthttp::http::chunked::{write_chunk, ChunkedDecoder, ChunkedEvent, LAST_CHUNK};
use rafthttp::http::head::{Head, DEFAULT_MAX_HEAD};
use rafthttp::raftpb::{ConfState, Entry, Message, MessageType, Snapshot, SnapshotMetadata};
use rafthttp::{DecodeError, Limits};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

const LOCAL: u64 = 0xcaff9c7f440d9bc5;
const REMOTE: u64 = 0xb09a17ddc8c72954;

fn bytes_opt(max: usize) -> impl Strategy<Value = Option<Bytes>> {
    prop::option::of(vec(any::<u8>(), 0..max).prop_map(Bytes::from))
}

fn type_number() -> impl Strategy<Value = i32> {
    prop_oneof![4 => 0..24i32, 1 => any::<i32>()]
}

fn entry() -> impl Strategy<Value = Entry> {
    (type_number(), any::<u64>(), any::<u64>(), bytes_opt(80)).prop_map(
        |(entry_type, term, index, data)| Entry {
            entry_type,
            term,
            index,
            data,
        },
    )
}

fn snapshot() -> impl Strategy<Value = Snapshot> {
    prop_oneof![
        3 => Just(Snapshot::default()),
        1 => (bytes_opt(40), any::<u64>(), any::<u64>(), vec(any::<u64>(), 0..3), vec(any::<u64>(), 0..3), any::<bool>())
            .prop_map(|(data, index, term, voters, learners, auto_leave)| Snapshot {
                data,
                metadata: SnapshotMetadata {
                    conf_state: ConfState { voters, learners, auto_leave, ..Default::default() },
                    index,
                    term,
                },
            }),
    ]
}

prop_compose! {
    fn message()(
        msg_type in type_number(),
        ids in (any::<u64>(), any::<u64>()),
        terms in (any::<u64>(), any::<u64>(), any::<u64>(), any::<u64>()),
        entries in vec(entry(), 0..4),
        snapshot in snapshot(),
        reject in any::<bool>(),
        reject_hint in any::<u64>(),
        context in bytes_opt(16),
        vote in prop::option::of(any::<u64>()),
    ) -> Message {
        let (to, from) = ids;
        let (term, log_term, index, commit) = terms;
        Message { msg_type, to, from, term, log_term, index, entries, commit, snapshot, reject, reject_hint, context, vote, responses: vec![] }
    }
}

/// Splits `data` at the given points (taken modulo its length).
fn pieces(data: &Bytes, cuts: &[usize]) -> Vec<Bytes> {
    let mut points: Vec<usize> = cuts
        .iter()
        .map(|c| if data.is_empty() { 0 } else { c % data.len() })
        .collect();
    points.sort_unstable();
    points.dedup();
    let mut out = Vec::new();
    let mut last = 0;
    for p in points.into_iter().chain([data.len()]) {
        if p > last {
            out.push(data.slice(last..p));
            last = p;
        }
    }
    out
}

/// Runs a frame decoder over the pieces and collects the messages.
fn decode_pieces(
    parts: Vec<Bytes>,
    mut decode: impl FnMut(&mut Bytes, &mut Message) -> Result<Option<FrameInfo>, DecodeError>,
) -> Result<Vec<Message>, DecodeError> {
    let mut got = Vec::new();
    let mut m = Message::default();
    for mut p in parts {
        while decode(&mut p, &mut m)?.is_some() {
            got.push(m.clone());
        }
        assert!(p.is_empty(), "a decoder returned None with input left");
    }
    Ok(got)
}

/// [`decode_pieces`] with msgappv2's deferring decoder, each message's payloads
/// resolved (and then let go of) as the receive worker does.
fn decode_pieces_deferring(
    parts: Vec<Bytes>,
    dec: &mut MsgAppV2Decoder,
) -> Result<Vec<Message>, DecodeError> {
    let mut got = Vec::new();
    let mut m = Message::default();
    let mut d = Deferred::default();
    let mut ranges = PayloadRanges::default();
    for mut p in parts {
        while dec
            .decode_deferring(&mut p, &mut m, &mut d, &mut ranges)?
            .is_some()
        {
            d.resolve(&mut m, &ranges);
            got.push(m.clone());
            d.release(&mut m);
            ranges.clear();
        }
        assert!(p.is_empty(), "a decoder returned None with input left");
    }
    Ok(got)
}

/// `msgs` encoded by one msgappv2 encoder, as one connection carries them.
fn encode_v2(msgs: &[Message]) -> BytesMut {
    let mut enc = MsgAppV2Encoder::new();
    let mut frames = BytesMut::new();
    for m in msgs {
        enc.encode(m, &mut frames);
    }
    frames
}

/// One step of a msgappv2 sequence.
#[derive(Clone, Debug)]
enum Step {
    Heartbeat,
    /// An arbitrary message (a MsgApp gets the stream's from/to, as a writer sends).
    Any(Box<Message>),
    /// A MsgApp continuing where the stream state is: AppEntries material.
    Continue {
        entries: Vec<Option<Bytes>>,
        commit: u64,
    },
}

fn step() -> impl Strategy<Value = Step> {
    step_of(4)
}

/// A step whose AppEntries material has fewer than `most` entries.
fn step_of(most: usize) -> impl Strategy<Value = Step> {
    prop_oneof![
        1 => Just(Step::Heartbeat),
        2 => message().prop_map(|m| Step::Any(Box::new(m))),
        3 => (vec(bytes_opt(70), 0..most), any::<u64>()).prop_map(|(entries, commit)| Step::Continue { entries, commit }),
    ]
}

/// Builds the messages for `steps`, tracking the (term, index) state as spec §2.5 does.
fn build_sequence(steps: Vec<Step>) -> Vec<Message> {
    let (mut term, mut index) = (0u64, 0u64);
    let mut out = Vec::new();
    for s in steps {
        let m = match s {
            Step::Heartbeat => Message::link_heartbeat(),
            Step::Any(m) => {
                let mut m = *m;
                if m.msg_type == MessageType::MsgApp as i32
                    || m.msg_type == MessageType::MsgHeartbeat as i32
                {
                    m.from = REMOTE;
                    m.to = LOCAL;
                }
                m
            }
            Step::Continue { entries, commit } => Message {
                msg_type: MessageType::MsgApp as i32,
                from: REMOTE,
                to: LOCAL,
                term,
                log_term: term,
                index,
                commit,
                entries: entries
                    .into_iter()
                    .enumerate()
                    .map(|(i, data)| Entry {
                        term,
                        index: index.wrapping_add(i as u64 + 1),
                        data,
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            },
        };
        if !m.is_link_heartbeat() {
            let compact = index == m.index && term == m.log_term && m.log_term == m.term;
            let lossless = m.msg_type == MessageType::MsgApp as i32
                && !m.reject
                && m.reject_hint == 0
                && m.context.is_none()
                && m.vote.is_none()
                && m.snapshot == Snapshot::default();
            if compact && lossless {
                index = index.wrapping_add(m.entries.len() as u64);
            } else {
                term = m.term;
                index = m.entries.last().map_or(m.index, |e| e.index);
            }
        }
        out.push(m);
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn protobuf_round_trips(m in message()) {
        let raw = Bytes::from(m.encode_to_vec());
        prop_assert_eq!(Message::decode(raw).unwrap(), m.clone());
    }

    #[test]
    fn message_stream_round_trips(msgs in vec(message(), 0..6), cuts in vec(any::<usize>(), 0..8)) {
        let mut buf = BytesMut::new();
        for m in &msgs {
            encode_message_frame(m, &mut buf);
        }
        let mut dec = MessageStreamDecoder::new(&Limits::default());
        let got = decode_pieces(pieces(&buf.freeze(), &cuts), |p, m| dec.decode(p, m)).unwrap();
        dec.finish().unwrap();
        prop_assert_eq!(got, msgs);
    }

    #[test]
    fn msgappv2_deferring_decodes_what_decode_does(
        steps in vec(step_of(20), 0..10),
        cuts in vec(any::<usize>(), 0..10),
    ) {
        // Up to 19 entries a message, so frames on both sides of DEFER_MIN_ENTRIES.
        let msgs = build_sequence(steps);
        let frames = encode_v2(&msgs).freeze();
        let mut dec = MsgAppV2Decoder::new(LOCAL, REMOTE, &Limits::default());
        let got = decode_pieces_deferring(pieces(&frames, &cuts), &mut dec).unwrap();
        dec.finish().unwrap();
        prop_assert_eq!(got, msgs);
    }

    #[test]
    fn msgappv2_round_trips_through_random_chunking(
        steps in vec(step(), 0..12),
        chunk_sizes in vec(1usize..64, 1..8),
        cuts in vec(any::<usize>(), 0..10),
    ) {
        let msgs = build_sequence(steps);
        let frames = encode_v2(&msgs);
        // Wrap the frames in chunks of assorted sizes, unrelated to frame boundaries.
        let mut wire = BytesMut::new();
        let mut rest = &frames[..];
        for size in chunk_sizes.iter().cycle() {
            if rest.is_empty() { break; }
            let n = (*size).min(rest.len());
            write_chunk(&rest[..n], &mut wire);
            rest = &rest[n..];
        }
        wire.extend_from_slice(LAST_CHUNK);
        let mut chunked = ChunkedDecoder::new(&Limits::default());
        let mut dec = MsgAppV2Decoder::new(LOCAL, REMOTE, &Limits::default());
        let mut got = Vec::new();
        let mut m = Message::default();
        for mut p in pieces(&wire.freeze(), &cuts) {
            while let Some(ev) = chunked.decode(&mut p).unwrap() {
                if let ChunkedEvent::Data(mut d) = ev {
                    while dec.decode(&mut d, &mut m).unwrap().is_some() {
                        got.push(m.clone());
                    }
                }
            }
        }
        chunked.finish().unwrap();
        dec.finish().unwrap();
        prop_assert_eq!(got, msgs);
    }

    #[test]
    fn msgapp_v1_round_trips(
        term in any::<u64>(),
        batches in vec((0u64..1 << 40, vec(bytes_opt(50), 1..4)), 0..5),
        cuts in vec(any::<usize>(), 0..8),
    ) {
        let msgs: Vec<Message> = batches
            .into_iter()
            .map(|(index, datas)| Message {
                msg_type: MessageType::MsgApp as i32,
                from: REMOTE,
                to: LOCAL,
                term,
                log_term: term,
                index,
                entries: datas
                    .into_iter()
                    .enumerate()
                    .map(|(i, data)| Entry { term, index: index + 1 + i as u64, data, ..Default::default() })
                    .collect(),
                ..Default::default()
            })
            .collect();
        let mut enc = MsgAppV1Encoder::new(term);
        let mut buf = BytesMut::new();
        for m in &msgs {
            prop_assert_eq!(enc.encode(m, &mut buf), V1Write::Written);
        }
        let mut dec = MsgAppV1Decoder::new(LOCAL, REMOTE, term, &Limits::default());
        let got = decode_pieces(pieces(&buf.freeze(), &cuts), |p, m| dec.decode(p, m)).unwrap();
        dec.finish().unwrap();
        prop_assert_eq!(got, msgs);
    }

    #[test]
    fn pipeline_and_snapshot_bodies_round_trip(m in message(), data in vec(any::<u8>(), 0..300), cuts in vec(any::<usize>(), 0..8)) {
        let mut body = BytesMut::new();
        encode_pipeline_body(&m, &mut body);
        let body = body.freeze();
        let mut dec = PipelineBodyDecoder::new(Some(body.len() as u64), &Limits::default()).unwrap();
        for p in pieces(&body, &cuts) {
            dec.push(p).unwrap();
        }
        prop_assert_eq!(dec.finish().unwrap(), m.clone());

        let mut snap = BytesMut::new();
        encode_snapshot_envelope(&m, &mut snap);
        snap.extend_from_slice(&data);
        let mut dec = SnapshotDecoder::new(&Limits::default());
        let (mut envelope, mut got) = (None, Vec::new());
        for mut p in pieces(&snap.freeze(), &cuts) {
            while let Some(part) = dec.decode(&mut p).unwrap() {
                match part {
                    SnapshotPart::Envelope(e) => envelope = Some(*e),
                    SnapshotPart::Data(d) => got.extend_from_slice(&d),
                }
            }
        }
        prop_assert_eq!(dec.finish().unwrap(), data.len() as u64);
        prop_assert_eq!(envelope, Some(m));
        prop_assert_eq!(got, data);
    }
}

/// Bytes that are mostly what a decoder expects, with hostile lengths: a tag, then big
/// or small u64s, then noise.
fn hostile_bytes() -> impl Strategy<Value = Vec<u8>> {
    let length = prop_oneof![any::<u64>(), 0u64..64, Just(u64::MAX), Just(1 << 40)];
    (0u8..4, vec(length, 0..4), vec(any::<u8>(), 0..200)).prop_map(|(tag, lens, noise)| {
        let mut v = vec![tag];
        for l in lens {
            v.extend_from_slice(&l.to_be_bytes());
        }
        v.extend_from_slice(&noise);
        v
    })
}

const SMALL_CAP: u64 = 4096;

/// Feeds `data` in pieces to every decoder with a small cap; returns the largest single
/// allocation made. Errors are fine; panics fail the test.
fn run_every_decoder(data: &Bytes, cuts: &[usize]) -> u64 {
    let limits = Limits {
        max_frame: SMALL_CAP,
        max_chunk_line: 256,
        max_trailers: 256,
    };
    reset_thread_largest();
    let parts = pieces(data, cuts);
    let mut v2 = MsgAppV2Decoder::new(LOCAL, REMOTE, &limits);
    let plain = decode_pieces(parts.clone(), |p, m| v2.decode(p, m)).map(|_| v2.finish());
    let mut v2 = MsgAppV2Decoder::new(LOCAL, REMOTE, &limits);
    let deferring = decode_pieces_deferring(parts.clone(), &mut v2).map(|_| v2.finish());
    assert_eq!(
        plain.map_err(|e| e.to_string()),
        deferring.map_err(|e| e.to_string()),
        "the deferring decoder fails where and as the plain one does"
    );
    let mut ms = MessageStreamDecoder::new(&limits);
    let _ = decode_pieces(parts.clone(), |p, m| ms.decode(p, m)).map(|_| ms.finish());
    let mut v1 = MsgAppV1Decoder::new(LOCAL, REMOTE, 3, &limits);
    let _ = decode_pieces(parts.clone(), |p, m| v1.decode(p, m)).map(|_| v1.finish());
    let mut snap = SnapshotDecoder::new(&limits);
    let _ = parts.iter().cloned().try_for_each(|mut p| {
        while snap.decode(&mut p)?.is_some() {}
        Ok::<_, DecodeError>(())
    });
    let _ = snap.finish();
    if let Ok(mut pipe) = PipelineBodyDecoder::new(None, &limits) {
        if parts.iter().cloned().try_for_each(|p| pipe.push(p)).is_ok() {
            let _ = pipe.finish();
        }
    }
    let mut chunked = ChunkedDecoder::new(&limits);
    let _ = parts.iter().cloned().try_for_each(|mut p| {
        while chunked.decode(&mut p)?.is_some() {}
        Ok::<_, DecodeError>(())
    });
    let _ = Head::parse_request(data, DEFAULT_MAX_HEAD).map(|h| h.map(|h| h.body_framing()));
    let _ = Head::parse_response(data, DEFAULT_MAX_HEAD).map(|h| h.map(|h| h.body_framing()));
    thread_largest()
}

/// What a decoder may allocate at most with `SMALL_CAP`: the frame being gathered (with
/// buffer growth) and its entries, all proportional to the cap, never to a declared length.
const ALLOC_BOUND: u64 = 16 * SMALL_CAP;

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic_nor_allocate_past_the_cap(data in vec(any::<u8>(), 0..600), cuts in vec(any::<usize>(), 0..12)) {
        let largest = run_every_decoder(&Bytes::from(data), &cuts);
        prop_assert!(largest <= ALLOC_BOUND, "largest allocation {largest}");
    }

    #[test]
    fn hostile_lengths_never_panic_nor_allocate_past_the_cap(data in hostile_bytes(), cuts in vec(any::<usize>(), 0..12)) {
        let largest = run_every_decoder(&Bytes::from(data), &cuts);
        prop_assert!(largest <= ALLOC_BOUND, "largest allocation {largest}");
    }
}

/// A frame that declares a length just under the default 512 MiB cap, with only a few
/// bytes behind it: the decoder keeps what arrived and reserves nothing for the rest.
#[test]
fn a_declared_length_under_the_cap_reserves_nothing() {
    for tag in [None, Some(2u8)] {
        let mut raw = Vec::new();
        raw.extend(tag);
        raw.extend_from_slice(&(500u64 << 20).to_be_bytes());
        raw.extend_from_slice(&[0x08; 100]);
        reset_thread_largest();
        let mut input = Bytes::from(raw);
        let mut m = Message::default();
        match tag {
            None => assert!(MessageStreamDecoder::new(&Limits::default())
                .decode(&mut input, &mut m)
                .unwrap()
                .is_none()),
            Some(_) => assert!(MsgAppV2Decoder::new(1, 2, &Limits::default())
                .decode(&mut input, &mut m)
                .unwrap()
                .is_none()),
        }
        assert!(thread_largest() < 4096, "allocated {}", thread_largest());
    }
}
