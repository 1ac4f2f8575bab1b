//! The etcd 2.1 profile against a fake etcd 2.0 peer, and the dialer's version decision.

#[path = "common/transport.rs"]
mod tc;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use rafthttp::http::batch::Batch;
use rafthttp::http::router::StreamBody;
use rafthttp::io::IoMode;
use rafthttp::raftpb::{Entry, Message, MessageType};
use rafthttp::transport::peer::{Peer, QueueSizes};
use rafthttp::transport::stream_writer::StreamWriter;
use rafthttp::transport::Profile;
use rafthttp::version::StreamType;
use tc::{start, wait_until, Recorder};

/// One request the fake peer saw: when, the request line, and its X-Raft-Term.
#[derive(Clone, Debug)]
struct Seen {
    at: Instant,
    line: String,
    term: Option<String>,
}

/// A fake etcd 2.0 member: no X-Server-Version anywhere; 404 for the v2.1-era streams;
/// a v1 stream (`/raft/stream/<id>`) is answered 200 and held open; POSTs get 204.
fn fake_v20() -> (String, Arc<Mutex<Vec<Seen>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            let log = log.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut line = String::new();
                if reader.read_line(&mut line).is_err() {
                    return;
                }
                let (mut term, mut length) = (None, 0usize);
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                        break;
                    }
                    let (name, value) = h.split_once(':').unwrap_or(("", ""));
                    if name.eq_ignore_ascii_case("x-raft-term") {
                        term = Some(value.trim().to_string());
                    }
                    if name.eq_ignore_ascii_case("content-length") {
                        length = value.trim().parse().unwrap_or(0);
                    }
                }
                let mut body = vec![0u8; length];
                let _ = std::io::Read::read_exact(&mut reader, &mut body);
                let line = line.trim().to_string();
                log.lock().unwrap().push(Seen {
                    at: Instant::now(),
                    line: line.clone(),
                    term,
                });
                let path = line.split(' ').nth(1).unwrap_or("");
                if line.starts_with("POST") {
                    let _ = conn.write_all(b"HTTP/1.1 204 No Content\r\n\r\n");
                } else if path.matches('/').count() == 3 {
                    // /raft/stream/<id>: the v1 stream; hold it open until the client goes.
                    let _ =
                        conn.write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
                    let mut sink = [0u8; 64];
                    loop {
                        match std::io::Read::read(&mut conn, &mut sink) {
                            Ok(0) => break,
                            Ok(_) => {}
                            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                            Err(_) => break,
                        }
                    }
                } else {
                    let _ = conn.write_all(
                        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    );
                }
            });
        }
    });
    (url, seen)
}

fn lines(seen: &Mutex<Vec<Seen>>, prefix: &str) -> Vec<Seen> {
    seen.lock()
        .unwrap()
        .iter()
        .filter(|s| s.line.starts_with(prefix))
        .cloned()
        .collect()
}

#[test]
fn support_is_decided_from_the_version_header_before_the_status() {
    for io in tc::io_modes() {
        support_is_decided_on(io);
    }
}

fn support_is_decided_on(io: IoMode) {
    // etcd 3: the msgappv2 dial to a peer without X-Server-Version is unsupported: no
    // failure is recorded, and the next try comes a retry interval later, same endpoint.
    let (url, seen) = fake_v20();
    let (t, _r) = start(1, io, |_| {});
    t.add_peer(2, &[url]).unwrap();
    std::thread::sleep(Duration::from_millis(650));
    let v2 = lines(&seen, "GET /raft/stream/msgapp/1 ");
    assert!(v2.len() >= 3, "{v2:?}");
    for pair in v2.windows(2) {
        assert!(
            pair[1].at - pair[0].at >= Duration::from_millis(80),
            "retried too soon: {v2:?}"
        );
    }
    assert!(
        lines(&seen, "GET /raft/stream/1 ").is_empty(),
        "etcd 3 never dials msgapp v1"
    );
    let p = t.stats().peers[0].clone();
    assert!(!p.active);
    assert_eq!(
        p.dial_failures, 0,
        "an unsupported stream type is not a failure"
    );
    drop(t);

    // etcd 2.1: the same answer makes the next request, at once, the v1 endpoint with
    // X-Raft-Term.
    let (url, seen) = fake_v20();
    let (t, _r) = start(1, io, |c| c.profile = Profile::Etcd21);
    t.add_peer(2, &[url]).unwrap();
    wait_until(Duration::from_secs(5), || {
        !lines(&seen, "GET /raft/stream/1 ").is_empty()
    });
    let all = seen.lock().unwrap().clone();
    let first_v2 = all
        .iter()
        .position(|s| s.line.starts_with("GET /raft/stream/msgapp/1 "))
        .unwrap();
    let v1 = all
        .iter()
        .skip(first_v2)
        .find(|s| s.line.starts_with("GET /raft/stream/1 "))
        .unwrap();
    assert!(
        v1.at - all[first_v2].at < Duration::from_millis(80),
        "the fallback waits for nothing"
    );
    assert_eq!(v1.term.as_deref(), Some("0"));
}

#[test]
fn a_higher_term_redials_only_the_v1_stream_once() {
    for io in tc::io_modes() {
        higher_term_on(io);
    }
}

fn higher_term_on(io: IoMode) {
    let (url, seen) = fake_v20();
    let (t, _r) = start(1, io, |c| c.profile = Profile::Etcd21);
    t.add_peer(2, &[url]).unwrap();
    let hb = |term| Message {
        msg_type: MessageType::MsgHeartbeat as i32,
        from: 1,
        to: 2,
        term,
        ..Default::default()
    };
    t.send_message(hb(5));
    wait_until(Duration::from_secs(5), || {
        lines(&seen, "GET /raft/stream/1 ")
            .iter()
            .any(|s| s.term.as_deref() == Some("5"))
    });
    std::thread::sleep(Duration::from_millis(300));
    let before = lines(&seen, "GET /raft/stream/1 ").len();
    t.send_message(hb(6));
    wait_until(Duration::from_secs(5), || {
        lines(&seen, "GET /raft/stream/1 ")
            .iter()
            .any(|s| s.term.as_deref() == Some("6"))
    });
    std::thread::sleep(Duration::from_millis(300));
    let v1 = lines(&seen, "GET /raft/stream/1 ");
    assert_eq!(v1.len(), before + 1, "exactly one re-dial: {v1:?}");
    assert_eq!(v1.last().unwrap().term.as_deref(), Some("6"));
    // MsgProp carries no valid term and changes nothing.
    t.send_message(Message {
        msg_type: MessageType::MsgProp as i32,
        from: 1,
        to: 2,
        term: 9,
        ..Default::default()
    });
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(lines(&seen, "GET /raft/stream/1 ").len(), before + 1);
}

#[test]
fn msgappv2_and_message_streams_keep_their_connections_across_terms() {
    for io in tc::io_modes() {
        keep_connections_on(io);
    }
}

fn keep_connections_on(io: IoMode) {
    let (a, _ra) = start(1, io, |c| c.profile = Profile::Etcd21);
    let (b, rb) = start(2, io, |c| c.profile = Profile::Etcd21);
    tc::link(&a, &b);
    let attaches = || a.stats().peers[0].stream_attaches;
    let before = attaches();
    for term in 1..=5u64 {
        a.send_message(Message {
            msg_type: MessageType::MsgApp as i32,
            from: 1,
            to: 2,
            term,
            log_term: term,
            index: term,
            entries: vec![Entry {
                term,
                index: term + 1,
                ..Default::default()
            }],
            ..Default::default()
        });
        a.send_message(Message {
            msg_type: MessageType::MsgHeartbeat as i32,
            from: 1,
            to: 2,
            term,
            ..Default::default()
        });
    }
    assert_eq!(rb.wait_for(10, Duration::from_secs(5)), 10);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(attaches(), before, "no stream reconnected");
    assert_eq!(before, 2);
}

#[test]
fn the_v1_writer_drops_lower_terms_and_ends_on_a_higher_one() {
    let rec = Arc::new(Recorder::default());
    let (peer, _rx) = Peer::with_profile(
        1,
        2,
        vec!["http://127.0.0.1:1".parse().unwrap()],
        QueueSizes::default(),
        rec.clone(),
        false,
        true,
    );
    let mut w = StreamWriter::attach(
        peer.clone(),
        StreamType::MsgAppV1,
        Some(5),
        Duration::from_secs(60),
    );
    let app = |term| Message {
        msg_type: MessageType::MsgApp as i32,
        from: 1,
        to: 2,
        term,
        log_term: term,
        index: 1,
        entries: vec![Entry {
            term,
            index: 2,
            ..Default::default()
        }],
        ..Default::default()
    };
    let mut cx = Context::from_waker(Waker::noop());
    let mut batch = Batch::with_capacity(1024);
    // An idle writer arms its link heartbeat timer, which needs a runtime's clock.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let _clock = rt.enter();
    peer.send(app(4));
    assert!(matches!(w.poll_batch(&mut cx, &mut batch), Poll::Pending));
    assert!(batch.is_empty(), "a lower-term MsgApp writes nothing");
    assert!(rec.unreachable.lock().unwrap().is_empty());
    peer.send(app(6));
    let ended = matches!(w.poll_batch(&mut cx, &mut batch), Poll::Ready(Ok(false)));
    assert!(ended, "a higher term ends the stream");
    assert!(batch.is_empty());
    assert_eq!(
        *rec.unreachable.lock().unwrap(),
        vec![2],
        "and reports once"
    );
    peer.send(app(5));
    assert!(
        matches!(w.poll_batch(&mut cx, &mut batch), Poll::Ready(Ok(false))),
        "it stays ended"
    );
}
