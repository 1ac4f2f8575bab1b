//! Two transports on loopback exchange messages over the msgappv2 and message streams,
//! on each I/O driver.

#[path = "common/transport.rs"]
mod tc;

use std::time::Duration;

use rafthttp::raftpb::{Message, MessageType};
use rafthttp::workload::{heartbeat, AppSource};
use tc::{io_modes, pair, pair_processing, Recorder};

/// Sends `msgs` from `from` in windows so no queue can overflow, then waits for all.
fn paced_send(t: &rafthttp::transport::Transport, rec: &Recorder, msgs: Vec<Message>) {
    let total = msgs.len();
    let base = rec.got.lock().unwrap().len();
    for (i, m) in msgs.into_iter().enumerate() {
        if i % 1000 == 999 {
            rec.wait_for(base + i - 500, Duration::from_secs(10));
        }
        t.send_message(m);
    }
    assert_eq!(
        rec.wait_for(base + total, Duration::from_secs(20)),
        base + total,
        "not everything arrived"
    );
}

#[test]
fn streams_carry_messages_both_ways_field_for_field_in_order() {
    // Processed on a worker, and inline (where the reader processes each read before it
    // reads ahead in a burst).
    for (io, inline) in io_modes()
        .into_iter()
        .flat_map(|io| [(io, false), (io, true)])
    {
        let (a, ra, b, rb) = pair_processing(io, inline);
        let mut src = AppSource::new(1, 2, 1, 64);
        let mut sent = Vec::new();
        for i in 0..10_000u64 {
            sent.push(src.next_message());
            if i % 100 == 0 {
                sent.push(heartbeat(1, 2, i));
            }
        }
        paced_send(&a, &rb, sent.clone());
        let got = rb.got.lock().unwrap().clone();
        // The two streams are ordered each; compare per type.
        let per_type = |v: &[Message], t: MessageType| {
            v.iter()
                .filter(|m| m.msg_type == t as i32)
                .cloned()
                .collect::<Vec<_>>()
        };
        assert_eq!(
            per_type(&got, MessageType::MsgApp),
            per_type(&sent, MessageType::MsgApp),
            "{io:?}: MsgApps"
        );
        assert_eq!(
            per_type(&got, MessageType::MsgHeartbeat),
            per_type(&sent, MessageType::MsgHeartbeat),
            "{io:?}: heartbeats"
        );

        // And back, with the other message kinds.
        let back: Vec<Message> = (0..2000u64)
            .map(|i| Message {
                msg_type: [
                    MessageType::MsgAppResp,
                    MessageType::MsgVoteResp,
                    MessageType::MsgHeartbeatResp,
                ][i as usize % 3] as i32,
                from: 2,
                to: 1,
                term: 1 + i / 1000,
                index: i,
                reject: i % 7 == 0,
                reject_hint: i % 5,
                context: (i % 11 == 0).then(|| bytes::Bytes::from(vec![i as u8; 8])),
                ..Default::default()
            })
            .collect();
        paced_send(&b, &ra, back.clone());
        assert_eq!(*ra.got.lock().unwrap(), back, "{io:?}: replies");

        let sa = a.stats();
        assert_eq!(
            sa.peers[0].pipeline_messages, 0,
            "{io:?}: everything went by stream"
        );
        assert_eq!(
            (
                sa.peers[0].sent_failures,
                b.stats().peers[0].received_failures
            ),
            (0, 0)
        );
        assert!(
            ra.unreachable.lock().unwrap().is_empty(),
            "{io:?}: no unreachable reports"
        );
        assert!(a.active_since(2).is_some() && b.active_since(1).is_some());
        assert_eq!((a.active_peers(), b.active_peers()), (1, 1));
        assert_eq!(
            sa.io.name(),
            if io == rafthttp::io::IoMode::Epoll {
                "epoll"
            } else {
                "uring"
            }
        );
        a.stop();
        b.stop();
    }
}

/// With a borrowing application the transport decodes into recycled messages: nothing
/// of an earlier message (entries, context, reject) may leak into a later one.
#[test]
fn recycled_messages_carry_nothing_over() {
    for io in io_modes() {
        let (a, _ra) = tc::start(1, io, |_| {});
        let (b, rb) = tc::start(2, io, |_| {});
        rb.borrow.store(true, std::sync::atomic::Ordering::Relaxed);
        tc::link(&a, &b);
        let mut src = AppSource::new(1, 2, 3, 100);
        let mut sent = Vec::new();
        for i in 0..6000u64 {
            let mut m = match i % 4 {
                0 | 1 => src.next_message(),
                2 => heartbeat(1, 2, i),
                _ => Message {
                    msg_type: MessageType::MsgVote as i32,
                    from: 1,
                    to: 2,
                    term: 1,
                    reject: true,
                    reject_hint: i,
                    ..Default::default()
                },
            };
            if i % 3 == 0 {
                m.context = Some(bytes::Bytes::from(vec![i as u8; 8]));
            }
            if i % 5 == 0 && m.msg_type == MessageType::MsgApp as i32 {
                m.entries.truncate(1);
                m.entries[0].data = None;
            }
            sent.push(m);
        }
        paced_send(&a, &rb, sent.clone());
        let got = rb.got.lock().unwrap().clone();
        for t in [
            MessageType::MsgApp,
            MessageType::MsgHeartbeat,
            MessageType::MsgVote,
        ] {
            let pick = |v: &[Message]| {
                v.iter()
                    .filter(|m| m.msg_type == t as i32)
                    .cloned()
                    .collect::<Vec<_>>()
            };
            assert_eq!(pick(&got), pick(&sent), "{io:?}: {t:?}");
        }
    }
}

/// Messages sent on a stream come back through `recycle_into` empty (every field reset)
/// with their entry vectors' capacity, and sending them again works like new ones.
#[test]
fn sent_messages_come_back_empty_for_reuse() {
    for io in io_modes() {
        let (a, _ra, _b, rb) = pair(io);
        let mut shells = Vec::new();
        a.recycle_into(2, &mut shells, 1); // opts in; nothing sent yet
        assert!(shells.is_empty());
        let mut src = AppSource::new(1, 2, 5, 10);
        let mut sent: Vec<Message> = (0..200)
            .map(|i| {
                let mut m = src.next_message();
                m.context = Some(bytes::Bytes::from_static(b"ctx"));
                m.reject = i % 2 == 0;
                m
            })
            .collect();
        paced_send(&a, &rb, sent.clone());
        tc::wait_until(Duration::from_secs(5), || {
            a.recycle_into(2, &mut shells, 1000);
            shells.len() >= 100
        });
        for s in &shells {
            assert!(s.entries.capacity() >= 5, "{io:?}: capacity lost");
            let mut plain = s.clone();
            plain.entries = Vec::new();
            assert_eq!(plain, Message::default(), "{io:?}: a field survived");
        }
        let again: Vec<Message> = shells
            .drain(..100)
            .map(|mut m| {
                src.fill(&mut m);
                m
            })
            .collect();
        let base = rb.got.lock().unwrap().len();
        paced_send(&a, &rb, again.clone());
        let got = rb.got.lock().unwrap()[base..].to_vec();
        assert_eq!(got, again, "{io:?}");
        sent.clear();
    }
}

/// A congestion control other than the system's default that every kernel has.
fn other_congestion() -> rafthttp::io::CongestionName {
    let name = match rafthttp::io::socket_options::system_congestion().as_deref() {
        Some("reno") => "cubic",
        _ => "reno",
    };
    name.parse().unwrap()
}

/// The congestion control of each established TCP connection with an end on `port`, as
/// `ss -tinH` reports them (its second line per connection starts with the name); `None`
/// if `ss` cannot be run here.
fn congestion_on_port(port: u16) -> Option<Vec<String>> {
    let out = std::process::Command::new("ss")
        .args(["-tinH", "state", "established"])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut found = Vec::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        if line.starts_with(char::is_whitespace) {
            continue;
        }
        let ours = line
            .split_whitespace()
            .any(|field| field.ends_with(&format!(":{port}")));
        let info = lines.peek().filter(|l| l.starts_with(char::is_whitespace));
        if let (true, Some(info)) = (ours, info) {
            found.push(info.split_whitespace().next().unwrap_or("").to_string());
        }
    }
    Some(found)
}

#[test]
fn the_configured_congestion_control_is_on_every_connection() {
    let name = other_congestion();
    for io in io_modes() {
        let set = |c: &mut rafthttp::transport::Config| c.socket.congestion = Some(name);
        let (a, _ra) = tc::start(1, io, set);
        let (b, rb) = tc::start(2, io, set);
        tc::link(&a, &b);
        let mut src = AppSource::new(1, 2, 1, 64);
        paced_send(&a, &rb, (0..2000).map(|_| src.next_message()).collect());
        // Both members' listening ports: the streams each dialled, and those it accepted.
        let ports = [a.local_addrs()[0].port(), b.local_addrs()[0].port()];
        match ports.map(congestion_on_port) {
            [Some(on_a), Some(on_b)] => {
                assert!(
                    on_a.len() >= 2 && on_b.len() >= 2,
                    "{io:?}: connections seen: {on_a:?} {on_b:?}"
                );
                for cc in on_a.iter().chain(&on_b) {
                    assert_eq!(cc, name.as_str(), "{io:?}: {on_a:?} {on_b:?}");
                }
            }
            _ => eprintln!("SKIPPED the socket check: `ss` cannot be run here"),
        }
        a.stop();
        b.stop();
    }
}

#[test]
fn a_congestion_control_the_kernel_lacks_stops_the_start() {
    let e = match tc::try_start(1, rafthttp::io::IoMode::Epoll, |c| {
        c.socket.congestion = Some("no-such-cc".parse().unwrap())
    }) {
        Err(e) => e,
        Ok(_) => panic!("started with an unknown congestion control"),
    };
    assert!(
        matches!(e, rafthttp::transport::TransportError::SocketOptions(_)),
        "{e:?}"
    );
    let text = e.to_string();
    assert!(text.contains("\"no-such-cc\": not available"), "{text}");
}

/// An application whose worker waits at a gate until the test opens it, and counts.
#[derive(Default)]
struct Gated {
    open: std::sync::Mutex<bool>,
    cv: std::sync::Condvar,
    got: std::sync::Mutex<Vec<u64>>,
}

impl rafthttp::transport::Raft for Gated {
    fn process(&self, m: Message) -> Result<(), rafthttp::transport::ProcessError> {
        let mut open = self.open.lock().unwrap();
        while !*open {
            open = self.cv.wait(open).unwrap();
        }
        drop(open);
        self.got.lock().unwrap().push(m.index);
        Ok(())
    }
    fn is_id_removed(&self, _id: u64) -> bool {
        false
    }
    fn report_unreachable(&self, _id: u64) {}
    fn report_snapshot(&self, _id: u64, _s: rafthttp::transport::SnapshotStatus) {}
}

/// 600 appends of 8 KiB (4.8 MB) sent to a member whose worker is stuck: the most bytes
/// its receive queue held while stuck, and its peer's figures once all were processed.
fn stuck_worker_backlog(
    io: rafthttp::io::IoMode,
    recv_backlog: usize,
) -> (u64, rafthttp::transport::PeerStats) {
    const N: usize = 600;
    let (a, ra) = tc::start(1, io, |_| {});
    let gated = std::sync::Arc::new(Gated::default());
    let b = tc::start_app(2, io, gated.clone(), |cfg| {
        cfg.queues.recv_backlog = recv_backlog;
    })
    .unwrap();
    tc::link(&a, &b);
    let mut src = AppSource::new(1, 2, 1, 8192);
    let sent: Vec<u64> = (0..N)
        .map(|_| {
            let m = src.next_message();
            let index = m.index;
            a.send_message(m);
            index
        })
        .collect();
    // Until what was sent has settled: the queue no longer grows for 300 ms.
    let queued = || b.stats().peers[0].receive_queued_bytes;
    let (mut most, mut still) = (0, 0);
    while still < 30 {
        std::thread::sleep(Duration::from_millis(10));
        let now = queued();
        still = if now > most { 0 } else { still + 1 };
        most = most.max(now);
    }
    *gated.open.lock().unwrap() = true;
    gated.cv.notify_all();
    tc::wait_until(Duration::from_secs(20), || {
        gated.got.lock().unwrap().len() >= N
    });
    assert_eq!(*gated.got.lock().unwrap(), sent, "{io:?}: all, in order");
    assert!(
        ra.unreachable.lock().unwrap().is_empty(),
        "{io:?}: the sender's queue took the rest"
    );
    assert_eq!(a.stats().peers[0].sent_failures, 0, "{io:?}");
    let stats = b.stats().peers[0].clone();
    a.stop();
    b.stop();
    (most, stats)
}

/// A receiver whose worker is behind stops reading past its backlog of bytes: the rest
/// waits in the socket and the sender's queue, nothing is dropped, and it all arrives
/// in order once the worker goes on. Without a backlog (etcd's way) the same stream
/// sits whole in the receive queue.
#[test]
fn a_stuck_worker_holds_the_streams_back_past_the_backlog() {
    for io in io_modes() {
        let backlog = 256 << 10;
        let (most, stats) = stuck_worker_backlog(io, backlog);
        // One burst of reads may land past the line before the reader looks.
        assert!(
            most <= (backlog + (1 << 20)) as u64,
            "{io:?}: {most} bytes queued, backlog {backlog}"
        );
        assert!(stats.receive_pauses >= 1, "{io:?}: {stats:?}");
        assert_eq!(stats.received_failures, 0, "{io:?}");
        assert_eq!(stats.receive_queued_bytes, 0, "{io:?}: all processed");

        let (most, stats) = stuck_worker_backlog(io, 0);
        assert!(
            most >= 4 << 20,
            "{io:?}: {most} bytes queued with no backlog"
        );
        assert_eq!(stats.receive_pauses, 0, "{io:?}");
    }
}

/// Lone messages on idle streams are written by the sending thread itself (and arrive
/// as any other); with `Config::direct_send` off, none is.
#[test]
fn lone_messages_on_idle_streams_are_written_by_the_sender_unless_turned_off() {
    for io in io_modes() {
        for direct in [true, false] {
            let (a, _ra) = tc::start(1, io, |c| c.direct_send = direct);
            let (b, rb) = tc::start(2, io, |_| {});
            tc::link(&a, &b);
            let mut src = AppSource::new(1, 2, 1, 64);
            let mut sent = Vec::new();
            for i in 0..20u64 {
                let m = if i % 2 == 0 {
                    src.next_message()
                } else {
                    heartbeat(1, 2, i)
                };
                sent.push(m.clone());
                a.send_message(m);
                // One at a time: each finds its stream idle.
                assert_eq!(
                    rb.wait_for(i as usize + 1, Duration::from_secs(10)),
                    i as usize + 1
                );
                std::thread::sleep(Duration::from_millis(2));
            }
            assert_eq!(*rb.got.lock().unwrap(), sent, "{io:?}, direct {direct}");
            let direct_writes: u64 = a.stats().peers.iter().map(|p| p.direct_writes).sum();
            if direct {
                assert!(direct_writes >= 15, "{io:?}: {direct_writes} of 20");
            } else {
                assert_eq!(direct_writes, 0, "{io:?}");
            }
            a.stop();
            b.stop();
        }
    }
}
