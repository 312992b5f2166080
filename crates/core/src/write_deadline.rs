//! A connection whose responses must be taken by the client within a deadline.
//!
//! A client that sends requests but never reads the responses fills the socket's buffers;
//! from then on every write pends. hyper only arms its header-read timeout after the
//! previous response was flushed and the request deadline ends when the handler returns
//! (before the body is streamed), so without this such a client (pipelining `GET /health`,
//! no token needed) would hold its connection slot for ever. Wrapping the connection's IO
//! below TLS and HTTP makes writing fail with [`io::ErrorKind::TimedOut`], which ends the
//! connection, once `api.write_timeout` has passed since the current response first had to
//! wait for the client.
//!
//! Progress does not extend the deadline: a client reading one packet every 29 s would
//! otherwise keep an 8 MiB page (and its slot) for hours. Only the start of the next
//! request ([`ResponseStarts::response_started`], called by the HTTP service) gives a
//! fresh allowance; within one response the client has `api.write_timeout` from its first
//! blocked write to take the rest.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// The error message of a write that stayed pending too long; [`is_write_timeout`] finds it
/// again in an error chain.
const WRITE_TIMEOUT_MESSAGE: &str =
    "the peer did not read what was written within the write timeout";

/// Tells a [`WriteDeadlineIo`] that a new response began (a request reached the service),
/// so the next blocked write gets a fresh deadline. Cheap to clone; shared with the IO.
#[derive(Clone, Default)]
pub(crate) struct ResponseStarts(Arc<AtomicBool>);

impl ResponseStarts {
    pub fn response_started(&self) {
        self.0.store(true, Ordering::Release);
    }

    fn take(&self) -> bool {
        self.0.swap(false, Ordering::AcqRel)
    }
}

/// `Io` whose writes fail once `timeout` passed since the current response first had to
/// wait for the client (whatever progress was made since).
pub(crate) struct WriteDeadlineIo<Io> {
    io: Io,
    timeout: Duration,
    /// Armed when a write first pends; disarmed only when a new response starts.
    deadline: Option<Pin<Box<Sleep>>>,
    response_starts: ResponseStarts,
}

impl<Io> WriteDeadlineIo<Io> {
    pub fn new(io: Io, timeout: Duration, response_starts: ResponseStarts) -> Self {
        WriteDeadlineIo {
            io,
            timeout,
            deadline: None,
            response_starts,
        }
    }

    /// Passes a ready outcome through (the deadline stays armed: progress does not extend
    /// it); on a pending one, arms the deadline if needed and fails when it passed. Polling
    /// the timer registers the task's waker with it, so a connection nobody reads from is
    /// woken up to fail. A new response disarms it first.
    fn within_deadline<T>(
        &mut self,
        context: &mut Context<'_>,
        outcome: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if self.response_starts.take() {
            self.deadline = None;
        }
        match outcome {
            Poll::Ready(result) => Poll::Ready(result),
            Poll::Pending => {
                let timeout = self.timeout;
                let deadline = self.deadline.get_or_insert_with(|| {
                    Box::pin(tokio::time::sleep_until(Instant::now() + timeout))
                });
                match deadline.as_mut().poll(context) {
                    Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        WRITE_TIMEOUT_MESSAGE,
                    ))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

impl<Io: AsyncRead + Unpin> AsyncRead for WriteDeadlineIo<Io> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffer: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(context, buffer)
    }
}

impl<Io: AsyncWrite + Unpin> AsyncWrite for WriteDeadlineIo<Io> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffer: &[u8],
    ) -> Poll<io::Result<usize>> {
        let outcome = Pin::new(&mut self.io).poll_write(context, buffer);
        self.within_deadline(context, outcome)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffers: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let outcome = Pin::new(&mut self.io).poll_write_vectored(context, buffers);
        self.within_deadline(context, outcome)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        let outcome = Pin::new(&mut self.io).poll_flush(context);
        self.within_deadline(context, outcome)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        let outcome = Pin::new(&mut self.io).poll_shutdown(context);
        self.within_deadline(context, outcome)
    }
}

/// Whether `error` (or one of its sources) is a write that timed out in a [`WriteDeadlineIo`].
pub(crate) fn is_write_timeout(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(error) = current {
        if let Some(io_error) = error.downcast_ref::<io::Error>() {
            if io_error.kind() == io::ErrorKind::TimedOut
                && io_error.to_string() == WRITE_TIMEOUT_MESSAGE
            {
                return true;
            }
        }
        current = error.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn a_write_nobody_reads_fails_after_the_deadline_and_a_read_one_does_not() {
        // A pipe with room for 64 bytes: the reader side decides whether writes progress.
        let (writer, _unread) = tokio::io::duplex(64);
        let mut writer = WriteDeadlineIo::new(
            writer,
            Duration::from_millis(200),
            ResponseStarts::default(),
        );
        let error = writer
            .write_all(&[0u8; 1024])
            .await
            .expect_err("nobody reads: the write must fail");
        assert!(is_write_timeout(&error), "{error}");

        let (writer, mut drained) = tokio::io::duplex(64);
        let mut writer =
            WriteDeadlineIo::new(writer, Duration::from_secs(30), ResponseStarts::default());
        let reading = tokio::spawn(async move {
            let mut sink = Vec::new();
            tokio::io::AsyncReadExt::read_to_end(&mut drained, &mut sink)
                .await
                .map(|_| sink.len())
        });
        writer.write_all(&[0u8; 4096]).await.unwrap();
        writer.shutdown().await.unwrap();
        drop(writer);
        assert_eq!(reading.await.unwrap().unwrap(), 4096);
    }

    #[tokio::test]
    async fn progress_does_not_extend_the_deadline_but_a_new_response_does() {
        // A reader taking 64 bytes at a time, forever: every write progresses, slowly.
        let (writer, mut slow) = tokio::io::duplex(64);
        let starts = ResponseStarts::default();
        let mut writer = WriteDeadlineIo::new(writer, Duration::from_millis(300), starts.clone());
        let reading = tokio::spawn(async move {
            let mut chunk = [0u8; 64];
            let mut interval = tokio::time::interval(Duration::from_millis(20));
            loop {
                interval.tick().await;
                match tokio::io::AsyncReadExt::read(&mut slow, &mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        });
        // 1 MiB at 64 bytes per 20 ms would take minutes: the deadline ends it.
        let error = tokio::time::timeout(
            Duration::from_secs(20),
            writer.write_all(&vec![0u8; 1 << 20]),
        )
        .await
        .expect("the slow reader was still being served after 20 s")
        .expect_err("a slow reader must not keep the response going");
        assert!(is_write_timeout(&error), "{error}");
        // A new response gets a fresh allowance.
        starts.response_started();
        writer.write_all(&[0u8; 64]).await.unwrap();
        drop(writer);
        reading.await.unwrap();
    }
}
