//! Embedding rafthttp in your own raft-rs loop: copy this file.
//!
//! Each node owns a `RawNode` and a rafthttp `Transport`. Received messages arrive
//! through an [`Inbox`] (the transport's `Raft` trait, converted to raft-rs's `eraftpb`
//! by the adapter); messages raft produces go out with `Transport::send_message` after
//! `message_from_raft_rs`. Everything else is the usual raft-rs ready loop.
//!
//! `cargo run --release --example embed_raft_rs` starts three nodes on loopback, elects a
//! leader, commits ten entries on every node and exits.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use raft::prelude::*;
use raft::storage::MemStorage;
use raft::StateRole;
use rafthttp::raft_rs::{logger::logger, message_from_raft_rs, Inbox, Input};
use rafthttp::transport::{Config, Transport};

const CLUSTER_ID: u64 = 0xe8b;

/// One node's raft loop: tick, step what arrived, handle readiness, until every node
/// has applied `want` entries (a node that stopped early would strand the others).
fn run(
    id: u64,
    rx: Receiver<Input>,
    transport: Arc<Transport>,
    want: usize,
    done: Arc<AtomicUsize>,
) -> Vec<String> {
    let storage = MemStorage::new_with_conf_state(ConfState::from((vec![1, 2, 3], vec![])));
    let cfg = raft::Config {
        id,
        election_tick: 10,
        heartbeat_tick: 1,
        check_quorum: true,
        ..Default::default()
    };
    let mut node = RawNode::new(&cfg, storage.clone(), &logger()).expect("raft config");
    let send = |msgs: Vec<Message>| {
        for m in msgs {
            transport.send_message(message_from_raft_rs(m)); // never blocks
        }
    };
    let (mut applied, mut next_tick, mut proposed) = (Vec::new(), Instant::now(), false);
    let mut counted = false;
    while done.load(Ordering::SeqCst) < 3 {
        if applied.len() >= want && !counted {
            counted = true;
            done.fetch_add(1, Ordering::SeqCst);
        }
        match rx.recv_timeout(next_tick.saturating_duration_since(Instant::now())) {
            Ok(Input::Message(m)) => drop(node.step(*m)),
            Ok(Input::Unreachable(peer)) => node.report_unreachable(peer),
            Ok(_) | Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        if Instant::now() >= next_tick {
            node.tick();
            next_tick += Duration::from_millis(100);
        }
        if node.raft.state == StateRole::Leader && !proposed {
            for i in 0..want {
                node.propose(vec![], format!("entry {i} from {id}").into_bytes())
                    .expect("propose");
            }
            proposed = true;
        }
        if !node.has_ready() {
            continue;
        }
        let mut ready = node.ready();
        send(ready.take_messages());
        let mut apply = |entries: Vec<Entry>| {
            for e in entries.into_iter().filter(|e| !e.data.is_empty()) {
                applied.push(String::from_utf8_lossy(&e.data).into_owned());
            }
        };
        apply(ready.take_committed_entries());
        storage.wl().append(ready.entries()).expect("append");
        if let Some(hs) = ready.hs() {
            storage.wl().set_hardstate(hs.clone());
        }
        send(ready.take_persisted_messages());
        let mut light = node.advance(ready);
        if let Some(commit) = light.commit_index() {
            storage.wl().mut_hard_state().commit = commit;
        }
        send(light.take_messages());
        apply(light.take_committed_entries());
        node.advance_apply();
    }
    applied
}

/// A node's ID and the entries it applied.
pub type Applied = (u64, Vec<String>);

/// Starts three members on loopback, runs their raft loops until each has applied
/// `want` entries, and returns what each applied.
pub fn three_nodes(want: usize) -> Result<Vec<Applied>, Box<dyn std::error::Error>> {
    // 1. A transport per member: its ID, the cluster ID, where it listens.
    let mut members = Vec::new();
    for id in 1..=3u64 {
        let (inbox, rx) = Inbox::new(4096);
        let mut cfg = Config::new(id, CLUSTER_ID);
        cfg.listen = vec!["127.0.0.1:0".parse()?];
        let transport = Arc::new(Transport::start(cfg, inbox)?);
        members.push((id, rx, transport));
    }
    // 2. Tell each transport where its peers are.
    let urls: Vec<(u64, String)> = members
        .iter()
        .map(|(id, _, t)| (*id, format!("http://{}", t.local_addrs()[0])))
        .collect();
    for (id, _, t) in &members {
        for (peer, url) in urls.iter().filter(|(p, _)| p != id) {
            t.add_peer(*peer, &[url])?;
        }
    }
    // 3. Run the raft loops.
    let done = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = members
        .into_iter()
        .map(|(id, rx, t)| {
            let done = done.clone();
            std::thread::spawn(move || (id, run(id, rx, t, want, done)))
        })
        .collect();
    Ok(threads
        .into_iter()
        .map(|th| th.join().expect("raft loop"))
        .collect())
}

#[allow(dead_code)] // also compiled into tests/cli_demo.rs, which has its own main
fn main() -> Result<(), Box<dyn std::error::Error>> {
    for (id, applied) in three_nodes(10)? {
        println!(
            "node {id} applied {} entries: {:?} .. {:?}",
            applied.len(),
            applied.first(),
            applied.last()
        );
    }
    Ok(())
}
