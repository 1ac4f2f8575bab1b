//! The thread that runs `Raft::process` for messages that arrive by `POST` (the
//! pipeline, and a snapshot's MsgSnap), off the I/O thread, since `process` may block.
//!
//! etcd's handler calls `Process` before it answers; so do we, and the answer waits for
//! the result (a removed sender's 403 comes from it). One long-lived thread takes the
//! messages in arrival order, as each stream's messages are processed in etcd. Under
//! load the next message is already queued when one is done, so the thread seldom
//! sleeps; the blocking pool it replaces woke a thread, often a new one, per message.
//! MsgProp, which can block while there is no leader, still goes to the blocking pool so
//! that it never holds up the others.

use std::sync::mpsc;
use std::sync::Arc;

use super::raft::{ProcessError, Raft};
use crate::raftpb::Message;

type Job = (
    Message,
    tokio::sync::oneshot::Sender<Result<(), ProcessError>>,
);

/// A running processor thread; it ends when this is dropped.
pub struct Processor {
    jobs: mpsc::Sender<Job>,
}

impl Processor {
    /// Starts the thread, named `name`, calling `raft.process`.
    pub fn start(name: String, raft: Arc<dyn Raft>) -> std::io::Result<Processor> {
        let (jobs, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new().name(name).spawn(move || loop {
            let job = match spin_recv(&rx) {
                Some(job) => job,
                None => match rx.recv() {
                    Ok(job) => job,
                    Err(_) => return,
                },
            };
            let (m, reply) = job;
            let _ = reply.send(raft.process(m));
        })?;
        Ok(Processor { jobs })
    }

    /// Processes `m` on the thread and waits (asynchronously) for the result.
    pub async fn process(&self, m: Message) -> Result<(), ProcessError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if self.jobs.send((m, tx)).is_err() {
            return Err(ProcessError::Other(
                "the processor thread has stopped".into(),
            ));
        }
        rx.await
            .unwrap_or_else(|_| Err(ProcessError::Other("the processor thread stopped".into())))
    }
}

/// How long the thread looks for the next message before it sleeps: under load the
/// next request comes within microseconds, and on a small VM sleeping and being woken
/// costs more than that. Idle, it costs at most this much CPU per message.
/// Measured on the pipeline row (2 vCPUs): while the server answered a connection's
/// requests one at a time, longer was better (20 µs 57–59 k msgs/s, 50 µs 66–69 k,
/// 100 µs 69–78 k); since it starts every buffered request's handler at once
/// (`http::pipelined`), the processor finds batches queued and the spin hardly matters
/// (interleaved runs: 0 µs 126–132 k, 5 µs 122–135 k, 20 µs 115–139 k, 50 µs
/// 115–132 k). 20 µs keeps a train of one-at-a-time requests (an etcd peer's) from
/// paying a wake-up each, at little CPU.
const SPIN: std::time::Duration = std::time::Duration::from_micros(20);

fn spin_recv(rx: &mpsc::Receiver<Job>) -> Option<Job> {
    let until = std::time::Instant::now() + SPIN;
    loop {
        match rx.try_recv() {
            Ok(job) => return Some(job),
            Err(mpsc::TryRecvError::Disconnected) => return None,
            Err(mpsc::TryRecvError::Empty) => {}
        }
        if std::time::Instant::now() >= until {
            return None;
        }
        std::hint::spin_loop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::raft::SnapshotStatus;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Seen(Mutex<Vec<(u64, String)>>);
    impl Raft for Seen {
        fn process(&self, m: Message) -> Result<(), ProcessError> {
            let thread = std::thread::current().name().unwrap_or("").to_string();
            self.0.lock().unwrap().push((m.index, thread));
            if m.index == 2 {
                return Err(ProcessError::Other("refused".into()));
            }
            Ok(())
        }
        fn is_id_removed(&self, _: u64) -> bool {
            false
        }
        fn report_unreachable(&self, _: u64) {}
        fn report_snapshot(&self, _: u64, _: SnapshotStatus) {}
    }

    #[test]
    fn messages_are_processed_in_order_on_the_thread_with_their_results() {
        let seen = Arc::new(Seen::default());
        let p = Processor::start("proc-test".into(), seen.clone()).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let results: Vec<bool> = rt.block_on(async {
            let mut out = Vec::new();
            for i in 1..=3 {
                let m = Message {
                    index: i,
                    ..Default::default()
                };
                out.push(p.process(m).await.is_ok());
            }
            out
        });
        assert_eq!(
            results,
            [true, false, true],
            "the error comes back with its message"
        );
        let seen = seen.0.lock().unwrap();
        assert_eq!(seen.iter().map(|s| s.0).collect::<Vec<_>>(), [1, 2, 3]);
        assert!(seen.iter().all(|s| s.1 == "proc-test"));
    }
}
