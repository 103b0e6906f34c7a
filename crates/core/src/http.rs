//! Serving HTTP to the internet: axum's own `serve` reads a request's headers without a
//! deadline and takes every connection offered, so idle connections opened by anyone
//! pile up until the process runs out of file handles. Here a connection that sends no
//! complete request headers within [`Limits::header_timeout`] (an idle keep-alive one
//! included) is closed, and at most [`Limits::connections`] are served at once; more
//! wait in the listener's backlog. A connection whose client stops reading what it is
//! sent (a response, an event stream) is closed once nothing could be written to it for
//! [`Limits::write_stall`], so it cannot hold its slot for good either.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::connect_info::ConnectInfo;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// How much a server takes from its clients.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Connections served at once.
    pub connections: usize,
    /// How long a connection has to send a request's headers (after opening, or after
    /// its previous response).
    pub header_timeout: Duration,
    /// How long a write to a connection may make no progress before it is closed.
    pub write_stall: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            connections: 1024,
            header_timeout: Duration::from_secs(15),
            write_stall: Duration::from_secs(30),
        }
    }
}

impl Limits {
    /// Limits sized to this process's file handles: their soft limit is raised to the
    /// hard one first (to at most 65,536), and half of them may be connections.
    pub fn for_this_process() -> Limits {
        Limits {
            connections: (raise_file_limit() / 2).clamp(64, 8192) as usize,
            ..Limits::default()
        }
    }
}

/// Raise the soft limit on open files toward the hard one; the soft limit now.
fn raise_file_limit() -> u64 {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    const WANTED: u64 = 65_536;
    let limit = getrlimit(Resource::Nofile);
    let current = limit.current.unwrap_or(WANTED);
    let target = limit.maximum.unwrap_or(WANTED).min(WANTED);
    if current >= target {
        return current;
    }
    let raised = Rlimit {
        current: Some(target),
        maximum: limit.maximum,
    };
    match setrlimit(Resource::Nofile, raised) {
        Ok(()) => target,
        Err(e) => {
            tracing::debug!(error = %e, "cannot raise the open files limit");
            current
        }
    }
}

/// Serve `router` on `listener` within `limits` until the future is dropped. Handlers
/// can extract `ConnectInfo<SocketAddr>`, the client's address.
pub async fn serve(listener: tokio::net::TcpListener, router: Router, limits: Limits) {
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.connections.max(1)));
    // HTTP/1.1 only: the grid's clients speak it, and an HTTP/2 connection is sniffed
    // from its first bytes, which a silent client never sends.
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let (tcp, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file handles, or a connection reset before it was taken:
                // neither ends the server.
                tracing::warn!(error = %e, "cannot accept an HTTP connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let service = TowerToHyperService::new(
            router
                .clone()
                .layer(axum::Extension(ConnectInfo::<SocketAddr>(peer))),
        );
        let builder = builder.clone();
        let tcp = WriteDeadline::new(tcp, limits.write_stall);
        tokio::spawn(async move {
            let _ = builder
                .serve_connection(TokioIo::new(tcp), service)
                .with_upgrades()
                .await;
            drop(slot);
        });
    }
}

/// A connection whose writes fail with `TimedOut` once one made no progress for `stall`:
/// a client that stops reading fills the socket's buffers, and every later write waits.
struct WriteDeadline<T> {
    inner: T,
    stall: Duration,
    /// Armed when a write (or flush) first waits; disarmed when one goes through.
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<T> WriteDeadline<T> {
    fn new(inner: T, stall: Duration) -> Self {
        WriteDeadline {
            inner,
            stall,
            deadline: None,
        }
    }

    /// What a write's poll returned, with the deadline kept: `Pending` past it is an error.
    fn watch<R>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<R>>,
    ) -> Poll<io::Result<R>> {
        if polled.is_ready() {
            self.deadline = None;
            return polled;
        }
        let stall = self.stall;
        let deadline = self
            .deadline
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(stall)));
        match deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("the client read nothing for {stall:?}"),
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for WriteDeadline<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for WriteDeadline<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let me = self.get_mut();
        let polled = Pin::new(&mut me.inner).poll_write(cx, buf);
        me.watch(cx, polled)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let me = self.get_mut();
        let polled = Pin::new(&mut me.inner).poll_write_vectored(cx, bufs);
        me.watch(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let me = self.get_mut();
        let polled = Pin::new(&mut me.inner).poll_flush(cx);
        me.watch(cx, polled)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let me = self.get_mut();
        let polled = Pin::new(&mut me.inner).poll_shutdown(cx);
        me.watch(cx, polled)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn server(limits: Limits) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let router = Router::new()
            .route(
                "/",
                axum::routing::get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move {
                    peer.ip().to_string()
                }),
            )
            .route("/big", axum::routing::get(|| async { vec![7u8; BIG] }));
        tokio::spawn(serve(listener, router, limits));
        addr
    }

    async fn ask(addr: SocketAddr) -> String {
        let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
        tcp.write_all(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .await
            .expect("send");
        let mut answer = String::new();
        tcp.read_to_string(&mut answer).await.expect("read");
        answer
    }

    #[tokio::test]
    async fn a_connection_sending_no_request_is_closed_and_others_are_served() {
        let addr = server(Limits {
            connections: 2,
            header_timeout: Duration::from_millis(300),
            ..Limits::default()
        })
        .await;
        let mut silent = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let mut half = tokio::net::TcpStream::connect(addr).await.expect("connect");
        half.write_all(b"GET / HTTP/1.1\r\nhost:")
            .await
            .expect("send");
        // Both slots are held: a third client waits, and is served once they are closed.
        let asked = std::time::Instant::now();
        let answer = tokio::time::timeout(Duration::from_secs(5), ask(addr))
            .await
            .expect("served once the silent connections were closed");
        assert!(
            asked.elapsed() >= Duration::from_millis(250),
            "served only once a slot was free: {:?}",
            asked.elapsed()
        );
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(
            answer.ends_with("127.0.0.1"),
            "the handler sees the client: {answer}"
        );
        // Closed by the server (an end of file, or a reset): not left open.
        let mut rest = Vec::new();
        for (what, tcp) in [("silent", &mut silent), ("half-sent", &mut half)] {
            let ended = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut rest));
            assert!(ended.await.is_ok(), "the {what} connection was left open");
        }
    }

    /// More than loopback's socket buffers hold, so a client that reads none of it stalls.
    const BIG: usize = 64 << 20;

    #[tokio::test]
    async fn a_client_that_stops_reading_its_answer_loses_its_connection() {
        let addr = server(Limits {
            connections: 1,
            write_stall: Duration::from_millis(300),
            ..Limits::default()
        })
        .await;
        let mut stalled = tokio::net::TcpStream::connect(addr).await.expect("connect");
        stalled
            .write_all(b"GET /big HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .expect("send");
        // The only slot is held until the write stalls for 300 ms; then the next is served.
        let answer = tokio::time::timeout(Duration::from_secs(10), ask(addr))
            .await
            .expect("served once the stalled connection was closed");
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        // The stalled client gets part of its answer, then the end: the server closed it.
        let mut got = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(10), stalled.read_to_end(&mut got));
        let _ = read.await.expect("the stalled connection was closed");
        assert!(got.len() < BIG, "it was cut short: {} bytes", got.len());
    }
}
