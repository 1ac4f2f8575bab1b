//! An I/O thread: an OS thread that owns one runtime of the chosen driver. Other threads
//! reach it only through a bounded command queue whose send is the one wake-up; no lock
//! is ever held across I/O. Work is handed over as an [`IoTask`], which the thread runs
//! on its own driver, so callers never name the driver.

use std::sync::mpsc as std_mpsc;
use std::thread::JoinHandle;

use tokio::sync::mpsc;

use super::{block_on, Backend, IoBackend, IoError, IoTask, ThreadScheduling};

/// Commands queued for an I/O thread.
const COMMAND_QUEUE: usize = 1024;

type Command = Box<dyn FnOnce(IoBackend) + Send>;

/// A running I/O thread.
#[derive(Debug)]
pub struct IoThread {
    backend: IoBackend,
    commands: mpsc::Sender<Command>,
    join: Option<JoinHandle<()>>,
}

/// Why work could not be handed to the I/O thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Stopped {
    /// The thread has stopped.
    #[error("the I/O thread has stopped")]
    Gone,
    /// Its command queue is full (commands are control-plane work: this means churn).
    #[error("the I/O thread's command queue is full")]
    Full,
    /// Waiting for a task of the I/O thread on that very thread (a task or an inline
    /// callback of its own): it would wait for itself for ever.
    #[error("cannot wait on the I/O thread for a task of its own")]
    OnItself,
}

/// Runs a command's task on the thread's driver.
struct Spawn<T>(T);

impl<T: IoTask + 'static> IoTask for Spawn<T> {
    type Output = ();
    async fn run<B: Backend>(self) {
        tokio::task::spawn_local(self.0.run::<B>());
    }
}

impl IoThread {
    /// Starts a thread named `name` with `backend`'s runtime, scheduled by `sched`.
    pub fn spawn(
        name: &str,
        backend: IoBackend,
        sched: ThreadScheduling,
    ) -> Result<IoThread, IoError> {
        let (commands, rx) = mpsc::channel::<Command>(COMMAND_QUEUE);
        let (ready_tx, ready_rx) = std_mpsc::channel();
        let thread_name = name.to_string();
        let join = std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || {
                sched.apply_or_warn(&thread_name);
                struct Loop(
                    mpsc::Receiver<Command>,
                    std_mpsc::Sender<Result<(), IoError>>,
                );
                impl IoTask for Loop {
                    type Output = ();
                    async fn run<B: Backend>(self) {
                        let Loop(mut rx, ready) = self;
                        let _ = ready.send(Ok(()));
                        while let Some(cmd) = rx.recv().await {
                            cmd(B::KIND);
                        }
                    }
                }
                let ready = ready_tx.clone();
                if let Err(e) = block_on(backend, Loop(rx, ready_tx)) {
                    let _ = ready.send(Err(e));
                }
            })
            .map_err(|e| IoError::Runtime(backend, e))?;
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => {
                return Err(IoError::Runtime(
                    backend,
                    std::io::Error::other("I/O thread died at start"),
                ))
            }
        }
        tracing::info!(
            io = backend.name(),
            thread = name,
            sched = sched.name(),
            "I/O thread started"
        );
        Ok(IoThread {
            backend,
            commands,
            join: Some(join),
        })
    }

    /// The driver this thread runs.
    pub fn backend(&self) -> IoBackend {
        self.backend
    }

    /// Whether the calling thread is this I/O thread (which must not wait for itself).
    pub fn is_current(&self) -> bool {
        self.join
            .as_ref()
            .is_some_and(|j| j.thread().id() == std::thread::current().id())
    }

    /// Runs `task` on the thread as a task of its own; returns once it is queued. Never
    /// blocks, so it may be called from any thread, the I/O thread itself included
    /// (a handler adding a remote) or an application's own async runtime.
    pub fn spawn_task<T: IoTask + Send + 'static>(&self, task: T) -> Result<(), Stopped> {
        let cmd: Command = Box::new(move |backend| {
            // Re-enter the driver-generic world on the I/O thread.
            let spawn = Spawn(task);
            match backend {
                IoBackend::Uring => drop(tokio::task::spawn_local(spawn.run::<super::Uring>())),
                IoBackend::Epoll => drop(tokio::task::spawn_local(spawn.run::<super::Epoll>())),
            }
        });
        self.commands.try_send(cmd).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => Stopped::Full,
            mpsc::error::TrySendError::Closed(_) => Stopped::Gone,
        })
    }

    /// Runs `task` on the thread and waits for its result; refused on the thread itself.
    pub fn call<T>(&self, task: T) -> Result<T::Output, Stopped>
    where
        T: IoTask + Send + 'static,
        T::Output: Send + 'static,
    {
        if self.is_current() {
            return Err(Stopped::OnItself);
        }
        struct Reply<T: IoTask>(T, std_mpsc::Sender<T::Output>);
        impl<T: IoTask> IoTask for Reply<T> {
            type Output = ();
            async fn run<B: Backend>(self) {
                let out = self.0.run::<B>().await;
                let _ = self.1.send(out);
            }
        }
        let (tx, rx) = std_mpsc::channel();
        self.spawn_task(Reply(task, tx))?;
        rx.recv().map_err(|_| Stopped::Gone)
    }

    /// Stops the thread once queued commands have run, and waits for it. Tasks still
    /// running on it are dropped with its runtime.
    pub fn stop(mut self) {
        self.shutdown();
    }

    /// Lets the thread end on its own once queued commands have run, without waiting
    /// for it: for an owner dropped on a thread that must not block (an I/O thread),
    /// while a task there may still be waiting on the application (a snapshot reader).
    pub fn detach(mut self) {
        self.join = None;
        self.shutdown();
    }

    fn shutdown(&mut self) {
        let (closed, _) = mpsc::channel(1);
        drop(std::mem::replace(&mut self.commands, closed));
        // Let go of on the thread itself (the last holder was one of its tasks): the
        // closed queue ends it, and it cannot wait for itself.
        if self.is_current() {
            return;
        }
        if let Some(join) = self.join.take() {
            let _ = join.join();
        }
    }
}

impl Drop for IoThread {
    fn drop(&mut self) {
        self.shutdown();
    }
}
