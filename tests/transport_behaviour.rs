//! The transport's behaviours, each named, each on both I/O drivers where it involves I/O.

#[path = "common/transport.rs"]
mod tc;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rafthttp::raftpb::{Entry, Message, MessageType};
use rafthttp::transport::peer::{Peer, QueueSizes};
use rafthttp::transport::stream_writer::StreamWriter;
use rafthttp::transport::{FatalError, SnapshotStatus};
use rafthttp::version::{LocalVersions, StreamType, Version};
use rafthttp::workload::AppSource;
use tc::{io_modes, pair, start, url, wait_until, Recorder};

#[test]
fn removed_member_learns_it_from_the_stream_dial_within_one_dial() {
    for io in io_modes() {
        let (b, rb) = start(2, io, |_| {});
        rb.removed.lock().unwrap().insert(1);
        let (a, ra) = start(1, io, |_| {});
        let errors = a.take_errors().unwrap();
        let t0 = Instant::now();
        a.add_peer(2, &[url(&b)]).unwrap();
        let e = errors
            .recv_timeout(Duration::from_secs(2))
            .expect("a fatal error");
        assert_eq!(e, FatalError::MemberRemoved);
        assert!(
            t0.elapsed() < Duration::from_secs(1),
            "{io:?}: took {:?}",
            t0.elapsed()
        );
        assert!(
            rb.got.lock().unwrap().is_empty(),
            "no message was needed to learn it"
        );
        assert_eq!(
            a.stats().peers[0].pipeline_messages,
            0,
            "no pipeline POST was sent"
        );
        drop(ra);
    }
}

#[test]
fn pipeline_carries_messages_while_no_stream_is_up() {
    for io in io_modes() {
        let (a, _ra) = start(1, io, |_| {});
        // B does not know A: A's stream dials get 404, so A falls back to the pipeline,
        // whose handler needs no peer.
        let (b, rb) = start(2, io, |_| {});
        a.add_peer(2, &[url(&b)]).unwrap();
        let msgs: Vec<Message> = (0..200u64)
            .map(|i| Message {
                msg_type: MessageType::MsgHeartbeat as i32,
                from: 1,
                to: 2,
                term: 3,
                commit: i,
                ..Default::default()
            })
            .collect();
        for chunk in msgs.chunks(20) {
            a.send(chunk);
            let n = rb.got.lock().unwrap().len();
            rb.wait_for(n + chunk.len(), Duration::from_secs(5));
        }
        let n = rb.wait_for(200, Duration::from_secs(5));
        assert_eq!(
            n,
            200,
            "{io:?}: stats {:?}, unreachable {:?}",
            a.stats(),
            _ra.unreachable.lock().unwrap()
        );
        let mut got = rb.got.lock().unwrap().clone();
        got.sort_by_key(|m| m.commit); // up to 4 POSTs in flight: order is not kept
        assert_eq!(got, msgs);
        // The sender counts a message when its 204 arrives, just after the receiver has it.
        wait_until(Duration::from_secs(5), || {
            a.stats().peers[0].pipeline_messages == 200
        });
        assert_eq!(a.stats().peers[0].streams_attached, (false, false));
        assert!(_ra.unreachable.lock().unwrap().is_empty());
    }
}

#[test]
fn versions_are_refused_both_ways() {
    for io in io_modes() {
        // A speaks like etcd 2.3: B (3.5) answers its dials and posts with 412.
        let (old, rold) = start(1, io, |c| {
            c.versions = LocalVersions {
                server: Version::new(2, 3, 0),
                min_cluster: Version::new(2, 2, 0),
            }
        });
        let (b, rb) = start(2, io, |_| {});
        old.add_peer(2, &[url(&b)]).unwrap();
        b.add_peer(1, &[url(&old)]).unwrap();
        old.send_message(Message {
            msg_type: MessageType::MsgHeartbeat as i32,
            from: 1,
            to: 2,
            ..Default::default()
        });
        std::thread::sleep(Duration::from_millis(500));
        assert!(
            rb.got.lock().unwrap().is_empty(),
            "{io:?}: nothing from a 2.3 member gets through"
        );
        assert!(
            !b.stats().peers[0].streams_attached.0,
            "{io:?}: its dials were refused"
        );
        // A member whose minimum cluster version is above ours is refused as well.
        let (new, _rnew) = start(3, io, |c| {
            c.versions = LocalVersions {
                server: Version::new(4, 1, 0),
                min_cluster: Version::new(4, 0, 0),
            }
        });
        new.add_peer(2, &[url(&b)]).unwrap();
        b.add_peer(3, &[url(&new)]).unwrap();
        std::thread::sleep(Duration::from_millis(500));
        let s = b.stats();
        let three = s.peers.iter().find(|p| p.id == 3).unwrap();
        assert_eq!(three.streams_attached, (false, false), "{io:?}");
        drop(rold);
    }
}

fn peer_with(
    rec: &Arc<Recorder>,
    sizes: QueueSizes,
) -> (Arc<Peer>, rafthttp::transport::peer::PeerReceivers) {
    Peer::new(
        1,
        2,
        vec!["http://127.0.0.1:1".parse().unwrap()],
        sizes,
        rec.clone(),
        false,
    )
}

#[test]
fn a_full_stream_queue_drops_and_reports_unreachable() {
    let rec = Arc::new(Recorder::default());
    let (peer, _rx) = peer_with(
        &rec,
        QueueSizes {
            stream: 8,
            pipeline: 2,
            recv: 8,
            ..QueueSizes::default()
        },
    );
    let _writer = StreamWriter::attach(
        peer.clone(),
        StreamType::MsgAppV2,
        None,
        Duration::from_secs(60),
    );
    let mut src = AppSource::new(1, 2, 1, 8);
    for _ in 0..8 {
        peer.send(src.next_message());
    }
    assert!(rec.unreachable.lock().unwrap().is_empty());
    peer.send(src.next_message());
    assert_eq!(
        *rec.unreachable.lock().unwrap(),
        vec![2],
        "the ninth is dropped and reported"
    );
    assert_eq!(
        peer.counters
            .sent_failures
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    // A MsgSnap goes by pipeline; when that is full it is reported as a failed snapshot.
    for _ in 0..3 {
        peer.send(Message {
            msg_type: MessageType::MsgSnap as i32,
            to: 2,
            ..Default::default()
        });
    }
    assert_eq!(
        *rec.snapshots.lock().unwrap(),
        vec![(2, SnapshotStatus::Failure)]
    );
}

#[test]
fn queued_messages_are_outdated_by_a_new_connection_with_one_report() {
    let rec = Arc::new(Recorder::default());
    let (peer, _rx) = peer_with(&rec, QueueSizes::default());
    let first = StreamWriter::attach(
        peer.clone(),
        StreamType::Message,
        None,
        Duration::from_secs(60),
    );
    for i in 0..5 {
        peer.send(Message {
            msg_type: MessageType::MsgHeartbeat as i32,
            to: 2,
            from: 1,
            commit: i,
            ..Default::default()
        });
    }
    assert_eq!(peer.message.len(), 5);
    let second = StreamWriter::attach(
        peer.clone(),
        StreamType::Message,
        None,
        Duration::from_secs(60),
    );
    assert_eq!(
        peer.message.len(),
        0,
        "nothing queued for the old connection survives"
    );
    assert_eq!(
        *rec.unreachable.lock().unwrap(),
        vec![2],
        "reported exactly once"
    );
    drop((first, second));
    // With nothing queued, a replacement reports nothing.
    let _third = StreamWriter::attach(
        peer.clone(),
        StreamType::Message,
        None,
        Duration::from_secs(60),
    );
    assert_eq!(rec.unreachable.lock().unwrap().len(), 1);
}

/// Collects log output for the duration of a closure.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);
impl std::io::Write for Logs {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn receive_drops_are_logged_with_hex_ids_at_warn_while_active() {
    for (from, hex) in [(2u64, "2"), (0x8e9e05c52164694d, "8e9e05c52164694d")] {
        let logs = Logs::default();
        let w = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || w.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::DEBUG)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let rec = Arc::new(Recorder::default());
            let (peer, _rx) = Peer::new(
                1,
                from,
                vec!["http://127.0.0.1:1".parse().unwrap()],
                QueueSizes {
                    recv: 4,
                    ..QueueSizes::default()
                },
                rec,
                false,
            );
            peer.status.activate();
            let prop = || Message {
                msg_type: MessageType::MsgProp as i32,
                from,
                to: 1,
                ..Default::default()
            };
            for _ in 0..4 {
                peer.deliver(prop());
            }
            peer.deliver(prop());
        });
        let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
        let line = text
            .lines()
            .find(|l| l.contains("since receiving buffer is full"))
            .expect("a drop line");
        assert!(
            line.contains(&format!(
                "dropped MsgProp from {hex} since receiving buffer is full"
            )),
            "{line}"
        );
        assert!(line.contains("WARN"), "{line}");
        assert!(!text.contains("%!"), "{text}");
    }
}

#[test]
fn msgappv2_round_trips_across_term_changes_and_reconnects() {
    for io in io_modes() {
        let (a, _ra, b, rb) = pair(io);
        let mut sent = Vec::new();
        let mut index = 0u64;
        let mut msg = |term: u64, log_term: u64, n: u64| {
            let m = Message {
                msg_type: MessageType::MsgApp as i32,
                from: 1,
                to: 2,
                term,
                log_term,
                index,
                commit: index,
                entries: (1..=n)
                    .map(|k| Entry {
                        term,
                        index: index + k,
                        data: Some(vec![k as u8; 10].into()),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            };
            index += n;
            m
        };
        for (term, log_term) in [(1, 1), (1, 1), (2, 1), (2, 2), (2, 2), (5, 2), (5, 5)] {
            sent.push(msg(term, log_term, 3));
        }
        for m in &sent {
            a.send_message(m.clone());
        }
        assert_eq!(
            rb.wait_for(sent.len(), Duration::from_secs(5)),
            sent.len(),
            "{io:?}"
        );
        // Reconnect: both ends start a fresh (term, index) state.
        a.remove_peer(2);
        b.remove_peer(1);
        tc::link(&a, &b);
        let more = vec![msg(5, 5, 2), msg(5, 5, 2), msg(6, 5, 1)];
        for m in &more {
            a.send_message(m.clone());
        }
        sent.extend(more);
        assert_eq!(
            rb.wait_for(sent.len(), Duration::from_secs(5)),
            sent.len(),
            "{io:?}"
        );
        assert_eq!(*rb.got.lock().unwrap(), sent, "{io:?}");
    }
}

#[test]
fn snapshots_stream_to_the_receivers_hook_and_report_their_outcome() {
    for io in io_modes() {
        let (a, ra, _b, rb) = pair(io);
        let size = 16u64 << 20;
        let data: Vec<u8> = (0..size).map(|i| (i * 7 % 251) as u8).collect();
        let sum = data
            .iter()
            .fold(0u64, |s, &b| s.wrapping_mul(31).wrapping_add(b as u64));
        let mut envelope = Message {
            msg_type: MessageType::MsgSnap as i32,
            from: 1,
            to: 2,
            term: 4,
            ..Default::default()
        };
        envelope.snapshot.metadata.index = 77;
        envelope.snapshot.metadata.term = 3;
        envelope.snapshot.metadata.conf_state.voters = vec![1, 2];
        a.send_snapshot(envelope.clone(), std::io::Cursor::new(data.clone()), size);
        assert_eq!(
            ra.wait_snapshots(1, Duration::from_secs(20)),
            vec![(2, SnapshotStatus::Finish)],
            "{io:?}"
        );
        assert_eq!(
            *rb.snapshot_data.lock().unwrap(),
            vec![(77, size, sum)],
            "{io:?}: all bytes, in order"
        );
        assert_eq!(
            rb.got.lock().unwrap().last(),
            Some(&envelope),
            "{io:?}: process saw the envelope"
        );

        // The same database from memory, written by reference (and read by the hook
        // with `read` this time: index 78 is even).
        let mut from_memory = envelope.clone();
        from_memory.snapshot.metadata.index = 78;
        a.send_snapshot_bytes(from_memory, bytes::Bytes::from(data.clone()));
        assert_eq!(
            ra.wait_snapshots(2, Duration::from_secs(20))[1],
            (2, SnapshotStatus::Finish),
            "{io:?}"
        );
        assert_eq!(
            rb.snapshot_data.lock().unwrap()[1],
            (78, size, sum),
            "{io:?}: all bytes from memory, in order"
        );

        // A reader shorter or longer than the size it was sent with fails the send.
        a.send_snapshot(envelope.clone(), std::io::Cursor::new(vec![1u8; 500]), 1000);
        a.send_snapshot(
            envelope.clone(),
            std::io::Cursor::new(vec![1u8; 1500]),
            1000,
        );
        let reports = ra.wait_snapshots(4, Duration::from_secs(10));
        assert_eq!(
            &reports[2..],
            &[(2, SnapshotStatus::Failure), (2, SnapshotStatus::Failure)],
            "{io:?}"
        );
        assert_eq!(
            rb.snapshot_data.lock().unwrap().len(),
            2,
            "{io:?}: no partial snapshot was processed"
        );
    }
}

#[test]
fn metrics_use_etcds_names_and_the_prober_records_round_trips() {
    let io = io_modes()[0];
    let (a, _ra) = start(1, io, |c| c.probe_interval = Duration::from_millis(20));
    let (b, rb) = start(2, io, |c| c.probe_interval = Duration::from_millis(20));
    tc::link(&a, &b);
    let mut src = AppSource::new(1, 2, 1, 64);
    for _ in 0..100 {
        a.send_message(src.next_message());
    }
    rb.wait_for(100, Duration::from_secs(5));
    let mut envelope = Message {
        msg_type: MessageType::MsgSnap as i32,
        from: 1,
        to: 2,
        ..Default::default()
    };
    envelope.snapshot.metadata.index = 5;
    a.send_snapshot(envelope, std::io::Cursor::new(vec![0u8; 1000]), 1000);
    _ra.wait_snapshots(1, Duration::from_secs(5));
    wait_until(Duration::from_secs(5), || {
        a.metrics_text()
            .contains("etcd_network_peer_round_trip_time_seconds_count{To=\"2\"} 3")
    });
    let text = a.metrics_text();
    let value = |line_start: &str| -> u64 {
        let line = text
            .lines()
            .find(|l| l.starts_with(line_start))
            .unwrap_or_else(|| panic!("no {line_start} in\n{text}"));
        line.rsplit(' ').next().unwrap().parse::<f64>().unwrap() as u64
    };
    assert!(value("etcd_network_peer_sent_bytes_total{To=\"2\"}") > 100 * 64);
    assert_eq!(value("etcd_network_peer_sent_failures_total{To=\"2\"}"), 0);
    assert_eq!(
        value("etcd_network_active_peers{Local=\"1\",Remote=\"2\"}"),
        1
    );
    assert_eq!(value("etcd_network_snapshot_send_success{To=\"2\"}"), 1);
    assert_eq!(
        value("etcd_network_snapshot_send_inflights_total{To=\"2\"}"),
        0
    );
    assert!(text.contains("# TYPE etcd_network_peer_round_trip_time_seconds histogram"));
    assert!(
        text.contains("etcd_network_peer_round_trip_time_seconds_bucket{To=\"2\",le=\"0.0001\"}")
    );
    assert!(
        b.metrics_text()
            .contains("etcd_network_snapshot_receive_success{From=\"1\"} 1"),
        "{}",
        b.metrics_text()
    );
    b.send_message(Message {
        msg_type: MessageType::MsgAppResp as i32,
        from: 2,
        to: 1,
        index: 100,
        ..Default::default()
    });
    assert_eq!(_ra.wait_for(1, Duration::from_secs(5)), 1);
    let text = a.metrics_text();
    let line = text
        .lines()
        .find(|l| l.starts_with("etcd_network_peer_received_bytes_total{From=\"2\"}"))
        .unwrap();
    assert_ne!(line.rsplit(' ').next(), Some("0"), "{line}");
}

#[test]
fn a_remote_reaches_a_member_not_in_our_membership_by_pipeline() {
    for io in io_modes() {
        let (a, _ra) = start(1, io, |_| {});
        let (b, rb) = start(2, io, |_| {});
        a.add_remote(2, &[url(&b)]).unwrap();
        a.send_message(Message {
            msg_type: MessageType::MsgHeartbeat as i32,
            from: 1,
            to: 2,
            term: 1,
            ..Default::default()
        });
        assert_eq!(rb.wait_for(1, Duration::from_secs(5)), 1, "{io:?}");
        // A remote has no streams, and a peer with the same ID replaces it.
        assert_eq!(a.stats().peers[0].streams_attached, (false, false));
        a.add_peer(2, &[url(&b)]).unwrap();
        b.add_peer(1, &[url(&a)]).unwrap();
        wait_until(Duration::from_secs(10), || tc::streams_up(&a));
        // update_peer points the peer elsewhere: nothing listens there, so it goes inactive.
        a.update_peer(2, &["http://127.0.0.1:1"]).unwrap();
        drop(b);
        wait_until(Duration::from_secs(10), || !a.stats().peers[0].active);
    }
}

/// An unknown member that posts to us with `X-PeerURLs` becomes a remote, added from the
/// handler on the I/O thread itself (this once panicked that thread), and we can then
/// reach it by pipeline.
#[test]
fn an_unknown_sender_with_peer_urls_becomes_a_reachable_remote() {
    use std::io::{Read, Write};
    for io in io_modes() {
        let (b, rb) = start(0x1234, io, |_| {});
        let (a, _ra) = start(1, io, |_| {});
        let mut s = std::net::TcpStream::connect(a.local_addrs()[0]).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        write!(
            s,
            "POST /raft HTTP/1.1\r\nHost: x\r\nX-Server-From: 1234\r\nX-Server-Version: 3.5.0\r\nX-Min-Cluster-Version: 3.0.0\r\n\
             X-Etcd-Cluster-Id: c1a5\r\nX-Peerurls: {}\r\nContent-Length: 2\r\nConnection: close\r\n\r\n\x08\x08",
            url(&b)
        )
        .unwrap();
        let mut resp = String::new();
        s.read_to_string(&mut resp).unwrap();
        assert!(resp.starts_with("HTTP/1.1 204 "), "{io:?}: {resp}");
        wait_until(Duration::from_secs(5), || {
            a.stats().peers.iter().any(|p| p.id == 0x1234)
        });
        a.send_message(Message {
            msg_type: MessageType::MsgHeartbeat as i32,
            from: 1,
            to: 0x1234,
            term: 1,
            ..Default::default()
        });
        assert_eq!(
            rb.wait_for(1, Duration::from_secs(5)),
            1,
            "{io:?}: the remote is reachable"
        );
        // The I/O thread is still alive: it keeps serving.
        let mut s = std::net::TcpStream::connect(a.local_addrs()[0]).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(b"GET /raft/probing HTTP/1.1\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut resp = String::new();
        s.read_to_string(&mut resp).unwrap();
        assert!(resp.starts_with("HTTP/1.1 200 "), "{io:?}: {resp}");
    }
}

/// A message from `from` to `to`, told apart by `index`.
fn app(from: u64, to: u64, index: u64) -> Message {
    Message {
        msg_type: MessageType::MsgApp as i32,
        from,
        to,
        term: 1,
        index,
        ..Default::default()
    }
}

/// An I/O thread for transports to share, with `io`'s driver.
fn shared_io_thread(io: rafthttp::io::IoMode) -> Arc<rafthttp::io::IoThread> {
    use rafthttp::io::{choose_backend, IoThread, ThreadScheduling};
    let backend = choose_backend(io).unwrap();
    Arc::new(IoThread::spawn("test-shared-io", backend, ThreadScheduling::Normal).unwrap())
}

#[test]
fn transports_sharing_an_io_thread_talk_and_stop_one_at_a_time() {
    for io in io_modes() {
        let thread = shared_io_thread(io);
        let on_it = |c: &mut rafthttp::transport::Config| c.io_thread = Some(thread.clone());
        let (a, ra) = start(1, io, on_it);
        let (b, rb) = start(2, io, on_it);
        let (c, rc) = start(3, io, on_it);
        assert_eq!(a.backend(), thread.backend(), "{io:?}: the thread's driver");
        a.add_peer(2, &[url(&b)]).unwrap();
        a.add_peer(3, &[url(&c)]).unwrap();
        b.add_peer(1, &[url(&a)]).unwrap();
        c.add_peer(1, &[url(&a)]).unwrap();
        wait_until(Duration::from_secs(10), || {
            tc::streams_up(&a) && tc::streams_up(&b) && tc::streams_up(&c)
        });
        a.send(&[app(1, 2, 10), app(1, 3, 20)]);
        b.send(&[app(2, 1, 30)]);
        assert_eq!(rb.wait_for(1, Duration::from_secs(5)), 1, "{io:?}");
        assert_eq!(rc.wait_for(1, Duration::from_secs(5)), 1, "{io:?}");
        assert_eq!(ra.wait_for(1, Duration::from_secs(5)), 1, "{io:?}");

        // Stopping one ends its tasks (the prober's sleep, its streams, its server)
        // at once, not at their next timer, while the thread runs on for the others.
        let t0 = Instant::now();
        let b_port = b.local_addrs()[0];
        b.stop();
        assert!(
            t0.elapsed() < Duration::from_secs(2),
            "{io:?}: stop took {:?}",
            t0.elapsed()
        );
        a.send(&[app(1, 3, 21)]);
        assert_eq!(rc.wait_for(2, Duration::from_secs(5)), 2, "{io:?}");
        assert_eq!(rc.got.lock().unwrap()[1].index, 21, "{io:?}");
        // A stopped transport's port is free at once, though its thread runs on (a
        // pending accept on io_uring is not cancelled by dropping it).
        let port = b_port;
        let (d, _rd) = start(4, io, |cfg| {
            on_it(cfg);
            cfg.listen = vec![port];
        });
        assert_eq!(d.local_addrs()[0], port, "{io:?}");
        drop((a, c, d));
        assert_eq!(
            Arc::strong_count(&thread),
            1,
            "{io:?}: stopped transports let go of the thread"
        );
        drop((ra, rb, rc));
    }
}

/// A database that trickles out, a KiB every 5 ms, so that a send is still running
/// when its peer goes.
struct Trickle(u64);

impl std::io::Read for Trickle {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        std::thread::sleep(Duration::from_millis(5));
        let n = buf.len().min(1024).min(self.0 as usize);
        buf[..n].fill(7);
        self.0 -= n as u64;
        Ok(n)
    }
}

#[test]
fn a_snapshot_send_cut_short_by_its_peers_removal_reports_a_failure() {
    for io in io_modes() {
        let (a, ra, _b, rb) = pair(io);
        let envelope = Message {
            msg_type: MessageType::MsgSnap as i32,
            from: 1,
            to: 2,
            term: 4,
            ..Default::default()
        };
        let size = 1 << 30;
        a.send_snapshot(envelope, Trickle(size), size);
        // Under way (200 KiB a second of a GiB), then its peer goes.
        std::thread::sleep(Duration::from_millis(200));
        assert!(
            ra.snapshots.lock().unwrap().is_empty(),
            "{io:?}: still sending"
        );
        a.remove_peer(2);
        assert_eq!(
            ra.wait_snapshots(1, Duration::from_secs(5)),
            vec![(2, SnapshotStatus::Failure)],
            "{io:?}: reported once, as a failure"
        );
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(
            ra.snapshots.lock().unwrap().len(),
            1,
            "{io:?}: and only once"
        );
        assert!(
            rb.snapshot_data.lock().unwrap().is_empty(),
            "{io:?}: nothing partial was saved"
        );
    }
}

#[test]
fn a_stop_on_a_shared_io_thread_ends_dials_awaiting_their_answer() {
    for io in io_modes() {
        let thread = shared_io_thread(io);
        // A peer that takes connections (the kernel's backlog) and never answers.
        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let (a, _ra) = start(1, io, |c| c.io_thread = Some(thread.clone()));
        a.add_peer(9, &[format!("http://{}", silent.local_addr().unwrap())])
            .unwrap();
        std::thread::sleep(Duration::from_millis(300));
        let t0 = Instant::now();
        a.stop();
        assert!(
            t0.elapsed() < Duration::from_secs(2),
            "{io:?}: stop waited {:?} for the dials' read timeout",
            t0.elapsed()
        );
        assert_eq!(Arc::strong_count(&thread), 1, "{io:?}");
    }
}

/// Runs a closure as a task of an I/O thread.
struct OnThread<F>(F);

impl<F: FnOnce() -> R, R> rafthttp::io::IoTask for OnThread<F> {
    type Output = R;
    async fn run<B: rafthttp::io::Backend>(self) -> R {
        (self.0)()
    }
}

#[test]
fn on_its_own_io_thread_a_transport_is_refused_a_start_and_stops_without_waiting() {
    for io in io_modes() {
        let thread = shared_io_thread(io);
        let (a, _ra) = start(1, io, |c| c.io_thread = Some(thread.clone()));
        let port = a.local_addrs()[0];
        // Started from a task (an inline callback, say) of the thread it is to run on:
        // refused at once, where waiting for the thread would wait for ever.
        let same = thread.clone();
        let started = thread
            .call(OnThread(move || {
                tc::try_start(2, io, |c| c.io_thread = Some(same))
                    .err()
                    .map(|e| e.to_string())
            }))
            .unwrap();
        assert_eq!(
            started.as_deref(),
            Some("a transport cannot be started on its own I/O thread"),
            "{io:?}"
        );
        // Stopped by a task of its own thread: returns, and its server stops after.
        thread.call(OnThread(move || drop(a))).unwrap();
        let mut rebound = None;
        wait_until(Duration::from_secs(5), || {
            rebound = tc::try_start(3, io, |c| {
                c.io_thread = Some(thread.clone());
                c.listen = vec![port];
            })
            .ok();
            rebound.is_some()
        });
        drop(rebound);
        assert_eq!(Arc::strong_count(&thread), 1, "{io:?}");
    }
}

#[test]
fn after_a_lone_message_a_reader_lingers_and_finds_the_next_one_itself() {
    for io in io_modes() {
        for linger in [Duration::from_secs(2), Duration::ZERO] {
            let (a, ra) = start(1, io, |_| {});
            let (b, rb) = start(2, io, |c| c.linger = linger);
            tc::link(&a, &b);
            // One at a time, each well within the linger of the one before.
            for k in 1..=20 {
                a.send(&[app(1, 2, k as u64)]);
                assert_eq!(rb.wait_for(k, Duration::from_secs(5)), k, "{io:?}");
            }
            // The lingering reader's thread still serves everything else meanwhile.
            b.send(&[app(2, 1, 100)]);
            assert_eq!(ra.wait_for(1, Duration::from_secs(1)), 1, "{io:?}");
            let stats = b.stats().peers[0].clone();
            let (hits, misses) = (stats.linger_hits, stats.linger_misses);
            if linger.is_zero() {
                assert_eq!((hits, misses), (0, 0), "{io:?}: no linger, none counted");
            } else {
                assert!(
                    hits >= 19 && misses == 0,
                    "{io:?}: {hits} messages found lingering, {misses} lingers ran out"
                );
            }
            a.stop();
            b.stop();
        }
    }
}
