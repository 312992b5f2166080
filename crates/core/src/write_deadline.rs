//! A connection whose writes may not stay blocked for longer than a deadline.
//!
//! A client that sends requests but never reads the responses fills the socket's buffers;
//! from then on every write pends. hyper only arms its header-read timeout after the
//! previous response was flushed and the request deadline ends when the handler returns, so
//! without this such a client (pipelining `GET /health`, no token needed) would hold its
//! connection slot for ever. Wrapping the connection's IO below TLS and HTTP makes a write
//! (or flush) that stays pending past the deadline fail with [`io::ErrorKind::TimedOut`],
//! which ends the connection.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// The error message of a write that stayed pending too long; [`is_write_timeout`] finds it
/// again in an error chain.
const WRITE_TIMEOUT_MESSAGE: &str =
    "the peer did not read what was written within the write timeout";

/// `Io` whose writes fail once they have been pending for `timeout` without progress.
pub(crate) struct WriteDeadlineIo<Io> {
    io: Io,
    timeout: Duration,
    /// Armed when a write first pends, disarmed by any write that makes progress.
    deadline: Option<Pin<Box<Sleep>>>,
}

impl<Io> WriteDeadlineIo<Io> {
    pub fn new(io: Io, timeout: Duration) -> Self {
        WriteDeadlineIo {
            io,
            timeout,
            deadline: None,
        }
    }

    /// Passes a ready outcome through (disarming the deadline); on a pending one, arms the
    /// deadline if needed and fails when it passed. Polling the timer registers the task's
    /// waker with it, so a connection nobody reads from is woken up to fail.
    fn within_deadline<T>(
        &mut self,
        context: &mut Context<'_>,
        outcome: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        match outcome {
            Poll::Ready(result) => {
                self.deadline = None;
                Poll::Ready(result)
            }
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
        let mut writer = WriteDeadlineIo::new(writer, Duration::from_millis(200));
        let error = writer
            .write_all(&[0u8; 1024])
            .await
            .expect_err("nobody reads: the write must fail");
        assert!(is_write_timeout(&error), "{error}");

        let (writer, mut drained) = tokio::io::duplex(64);
        let mut writer = WriteDeadlineIo::new(writer, Duration::from_secs(30));
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
}
