//! The answers to a connection's pipelined requests: handlers that run side by side and
//! whose responses leave in the order the requests came.
//!
//! A client that pipelines (ours does, towards servers that announce it) writes several
//! `POST /raft` requests at once. Answering them one after another would make every
//! request wait for the previous one's `Raft::process` round trip before it is even
//! parsed; here the server parses every buffered request, starts its handler, and only
//! then waits, so the processor thread finds the whole batch queued. Each response is
//! still written after its own handler finished, in request order (RFC 9112 §9.3.2).
//!
//! Sans-IO apart from polling: no sockets, no clocks. The futures are polled with the
//! connection task's waker, so whichever handler finishes wakes the connection.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::task::{Context, Poll};

use super::router::{LocalBoxFuture, Response};

/// Most requests of one connection answered at once; the server reads no further ahead.
/// Our pipeline sender puts at most 16 requests on a connection.
pub const MAX_PIPELINED: usize = 16;

/// A handler still running, or its response once it finished.
// The queue's slots are allocated once per connection and reused; boxing the larger
// variant would allocate for every request instead.
#[allow(clippy::large_enum_variant)]
enum Answer {
    Running(LocalBoxFuture<'static, Response>),
    Done(Response),
}

/// The pipelined requests of one connection whose responses have not been written yet,
/// oldest first.
#[derive(Default)]
pub struct Pipelined {
    answers: VecDeque<Answer>,
}

impl Pipelined {
    /// Whether no response is owed.
    pub fn is_empty(&self) -> bool {
        self.answers.is_empty()
    }

    /// Whether the server should read no further ahead before it writes answers.
    pub fn is_full(&self) -> bool {
        self.answers.len() >= MAX_PIPELINED
    }

    /// Starts `handler` after the requests already queued: it is polled once at once, so
    /// that the work it hands to other threads is queued in request order.
    pub async fn start(&mut self, handler: LocalBoxFuture<'static, Response>) {
        self.answers.push_back(Answer::Running(handler));
        poll_fn(|cx| {
            if let Some(last) = self.answers.back_mut() {
                poll_answer(last, cx);
            }
            Poll::Ready(())
        })
        .await;
    }

    /// The oldest response if its handler has finished, without waiting. A handler that
    /// is still running wakes the connection when it can go on.
    pub async fn ready(&mut self) -> Option<Response> {
        poll_fn(|cx| match self.poll_front(cx) {
            Poll::Ready(r) => Poll::Ready(Some(r)),
            Poll::Pending => Poll::Ready(None),
        })
        .await
    }

    /// The oldest response, waiting for its handler; `None` if none is owed.
    pub async fn next(&mut self) -> Option<Response> {
        if self.answers.is_empty() {
            return None;
        }
        poll_fn(|cx| self.poll_front(cx).map(Some)).await
    }

    /// Polls the oldest handler and pops its answer if it is done. Later handlers are
    /// not polled: each was polled once when it started, which handed its work on, and
    /// it is polled again when it is the oldest; polling them all on every call would
    /// make answering n pipelined requests cost n² polls.
    fn poll_front(&mut self, cx: &mut Context<'_>) -> Poll<Response> {
        if let Some(front) = self.answers.front_mut() {
            poll_answer(front, cx);
        }
        match self.answers.front() {
            Some(Answer::Done(_)) => match self.answers.pop_front() {
                Some(Answer::Done(r)) => Poll::Ready(r),
                _ => Poll::Pending,
            },
            _ => Poll::Pending,
        }
    }
}

fn poll_answer(answer: &mut Answer, cx: &mut Context<'_>) {
    if let Answer::Running(handler) = answer {
        if let Poll::Ready(r) = handler.as_mut().poll(cx) {
            *answer = Answer::Done(r);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::oneshot;

    fn answered_by(rx: oneshot::Receiver<u16>) -> LocalBoxFuture<'static, Response> {
        Box::pin(async move { Response::empty(rx.await.unwrap_or(500)) })
    }

    #[tokio::test]
    async fn responses_leave_in_request_order_whatever_order_handlers_finish_in() {
        let mut p = Pipelined::default();
        let (tx1, rx1) = oneshot::channel();
        let (tx2, rx2) = oneshot::channel();
        p.start(answered_by(rx1)).await;
        p.start(answered_by(rx2)).await;
        assert!(!p.is_empty() && !p.is_full());
        // The second finishes first: nothing may leave before the first.
        tx2.send(202).unwrap();
        assert!(p.ready().await.is_none());
        tx1.send(201).unwrap();
        assert_eq!(p.ready().await.map(|r| r.status), Some(201));
        assert_eq!(p.next().await.map(|r| r.status), Some(202));
        assert!(p.is_empty());
        assert!(p.next().await.is_none());
    }

    #[tokio::test]
    async fn a_handler_is_started_before_start_returns() {
        let started = std::rc::Rc::new(std::cell::Cell::new(false));
        let seen = started.clone();
        let mut p = Pipelined::default();
        p.start(Box::pin(async move {
            seen.set(true);
            std::future::pending::<()>().await;
            Response::empty(204)
        }))
        .await;
        assert!(started.get());
        assert!(p.ready().await.is_none());
    }

    #[tokio::test]
    async fn it_is_full_at_the_limit() {
        let mut p = Pipelined::default();
        for _ in 0..MAX_PIPELINED {
            assert!(!p.is_full());
            p.start(Box::pin(async { Response::empty(204) })).await;
        }
        assert!(p.is_full());
        while p.next().await.is_some() {}
        assert!(p.is_empty());
    }
}
