//! One QUIC connection as a libp2p stream muxer: every libp2p stream is a QUIC
//! bidirectional stream, so QUIC's own flow control gives each one backpressure.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use futures::{AsyncRead, AsyncWrite, FutureExt};
use libp2p::core::muxing::{StreamMuxer, StreamMuxerEvent};
use quinn::{ConnectionError, RecvStream, SendStream};

type StreamPair = Result<(SendStream, RecvStream), ConnectionError>;

/// An established QUIC connection.
pub struct Connection {
    conn: quinn::Connection,
    inbound: Option<BoxFuture<'static, StreamPair>>,
    outbound: Option<BoxFuture<'static, StreamPair>>,
    closed: Option<BoxFuture<'static, ConnectionError>>,
}

impl Connection {
    pub(super) fn new(conn: quinn::Connection) -> Self {
        Connection {
            conn,
            inbound: None,
            outbound: None,
            closed: None,
        }
    }

    /// Round trip, path MTU, congestion window and loss so far.
    pub fn stats(&self) -> quinn::ConnectionStats {
        self.conn.stats()
    }

    fn closed(&mut self) -> &mut BoxFuture<'static, ConnectionError> {
        let conn = self.conn.clone();
        self.closed
            .get_or_insert_with(|| async move { conn.closed().await }.boxed())
    }
}

/// Polls a stream-opening future, starting it with `start` when none is pending.
fn poll_stream(
    slot: &mut Option<BoxFuture<'static, StreamPair>>,
    start: impl FnOnce() -> BoxFuture<'static, StreamPair>,
    cx: &mut Context<'_>,
) -> Poll<Result<Stream, ConnectionError>> {
    let pending = slot.get_or_insert_with(start);
    let result = futures::ready!(pending.poll_unpin(cx));
    *slot = None;
    Poll::Ready(result.map(|(send, recv)| Stream {
        send,
        recv,
        finished: false,
    }))
}

impl StreamMuxer for Connection {
    type Substream = Stream;
    type Error = ConnectionError;

    fn poll_inbound(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Self::Substream, Self::Error>> {
        let this = self.get_mut();
        let conn = this.conn.clone();
        poll_stream(
            &mut this.inbound,
            || async move { conn.accept_bi().await }.boxed(),
            cx,
        )
    }

    fn poll_outbound(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Self::Substream, Self::Error>> {
        let this = self.get_mut();
        let conn = this.conn.clone();
        poll_stream(
            &mut this.outbound,
            || async move { conn.open_bi().await }.boxed(),
            cx,
        )
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        let this = self.get_mut();
        this.conn.close(0u32.into(), b"");
        // Closed locally is the one ending that is not an error.
        match futures::ready!(this.closed().poll_unpin(cx)) {
            ConnectionError::LocallyClosed => Poll::Ready(Ok(())),
            e => Poll::Ready(Err(e)),
        }
    }

    fn poll(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<StreamMuxerEvent, Self::Error>> {
        // Nothing to report but the connection's end: migration is off.
        let e = futures::ready!(self.get_mut().closed().poll_unpin(cx));
        Poll::Ready(Err(e))
    }
}

/// One bidirectional QUIC stream.
pub struct Stream {
    send: SendStream,
    recv: RecvStream,
    finished: bool,
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        AsyncRead::poll_read(Pin::new(&mut self.get_mut().recv), cx, buf)
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        AsyncWrite::poll_write(Pin::new(&mut self.get_mut().send), cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        AsyncWrite::poll_flush(Pin::new(&mut self.get_mut().send), cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        // quinn refuses to finish a stream twice; closing twice is harmless in libp2p.
        if this.finished {
            return Poll::Ready(Ok(()));
        }
        let result = futures::ready!(AsyncWrite::poll_close(Pin::new(&mut this.send), cx));
        this.finished = true;
        Poll::Ready(result)
    }
}
