//! The mesh's stream muxer: `/yamux/1.0.0` with large data frames and bounded windows.
//!
//! # Why not `libp2p::yamux`
//!
//! libp2p-yamux 0.48 sends 16 KiB data frames and has no setting to change it. On the
//! TCP + Noise path every yamux frame becomes at least one Noise frame, one `send`,
//! 2–3 `recv`s and about three cross-thread wake-ups: 162 k context switches and
//! 2.86 CPU s per GiB moved on loopback, where raw TCP needs 2 k and 0.29 s
//! (`BENCHMARKS.md`, issue 4). This module wraps the same `yamux` crate with the
//! frame size and limits chosen below. The wire protocol is unchanged, so any
//! libp2p peer that speaks `/yamux/1.0.0` still interoperates: yamux sets no upper
//! bound on a data frame, a sender never sends more than the receiver's window
//! (256 KiB at first), and the `yamux` crate's decoder accepts bodies up to 1 MiB.
//!
//! # Design
//!
//! A [`Muxer`] owns one `yamux::Connection`. The connection only makes progress while
//! its inbound side is polled, and the swarm calls [`StreamMuxer::poll`] on every turn
//! of the connection task, so `poll` drives it and parks new inbound streams in a
//! queue of [`INBOUND_QUEUE_MAX`] until the swarm asks for them through `poll_inbound`
//! (it stops asking while 16 of its inbound streams are negotiating). The connection
//! must keep reading meanwhile, since those negotiations need its bytes, so a stream
//! that arrives while the queue is full (and the swarm has had a turn to take from
//! it), or while [`STREAMS_MAX`] streams are alive, is dropped at once, which makes
//! yamux reset it: the opener sees its stream reset, this peer holds nothing for it. Outbound streams are opened on demand; at
//! [`STREAMS_MAX`] live streams `poll_outbound` waits until one is dropped (the
//! swarm's stream timeout then tells the caller) instead of failing, because the
//! swarm closes the whole connection on any muxer error.
//!
//! Every stream handed out or queued holds a slot in a shared counter that its drop
//! gives back, so the muxer knows how many streams are alive without asking yamux.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::{Ready, ready};
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use futures::task::AtomicWaker;
use futures::{AsyncRead, AsyncWrite};
use libp2p::core::muxing::{StreamMuxer, StreamMuxerEvent};
use libp2p::core::upgrade::{InboundConnectionUpgrade, OutboundConnectionUpgrade, UpgradeInfo};

/// The protocol name negotiated by multistream-select, the same as every libp2p yamux.
pub const PROTOCOL: &str = "/yamux/1.0.0";

/// Largest data frame we send, in bytes.
///
/// 256 KiB is yamux's initial stream window, so a fresh stream's first frame can
/// already be a full one, and it is the size of our own bulk writes (`bulk.rs`, the
/// bench). Each frame is four whole Noise frames (65,535 bytes each) and one `send`.
/// On loopback, against 16 KiB frames, it cut context switches per GiB from 186 k to
/// 22 k and CPU per GiB from 3.4 s to 2.3 s; 64 KiB got nearly as far (25 k, 2.3 s),
/// 1 MiB no further (`BENCHMARKS.md`). Latency for small messages on the same
/// connection barely changes: yamux takes frames from the streams in turn, so a ping
/// or an RPC waits behind at most one frame per busy stream, 2 ms at 1 Gbit/s
/// (21 ms at 100 Mbit/s), and the kernel's send buffer in front of it is megabytes
/// anyway.
pub const FRAME_BYTES_MAX: usize = 256 * 1024;

/// Bound on the sum of all stream receive windows of one connection, in bytes.
///
/// yamux guarantees every stream it counts its initial 256 KiB window, so
/// [`STREAMS_MAX_YAMUX`] × 256 KiB = 96 MiB of this is reserved; the other 32 MiB
/// is what windows may grow into when yamux auto-tunes them towards twice the
/// bandwidth-delay product: one busy stream may grow to about 32 MiB, the BDP of
/// 1 Gbit/s at 250 ms; on loopback windows stop at about 8 MiB. libp2p-yamux
/// allows 1 GiB, which a few peers could make us hold in full.
pub const CONNECTION_WINDOW_BYTES_MAX: usize = 128 << 20;

/// yamux's own cap on the streams it counts per connection. Past it yamux sends
/// `GoAway` and ends the whole connection, on either side, so it sits far above
/// [`STREAMS_MAX`]: see there.
pub const STREAMS_MAX_YAMUX: usize = STREAMS_MAX + YAMUX_ACK_BACKLOG_MAX;

/// Streams a yamux peer opens before we acknowledge one (yamux's `MAX_ACK_BACKLOG`).
const YAMUX_ACK_BACKLOG_MAX: usize = 256;

/// Live streams per connection we allow, inbound and outbound together.
///
/// yamux forgets a dropped stream only when the connection next gets to write its
/// reset, so while our writes wait on the socket (a peer that is slow to read) the
/// streams we refuse pile up in its count. Those are streams we have not
/// acknowledged, and a yamux peer opens at most [`YAMUX_ACK_BACKLOG_MAX`] of them, so
/// with that margin above our own cap an honest peer can never trip yamux's; one that
/// ignores the backlog loses its connection, which is what it asked for.
pub const STREAMS_MAX: usize = 128;

/// Inbound streams held while the swarm is not asking for more.
pub const INBOUND_QUEUE_MAX: usize = 32;

/// New inbound streams taken per call before yielding to the rest of the connection
/// task (local work first, then remote work).
const INBOUND_PER_POLL_MAX: usize = 32;

// yamux asserts this at run time; a wrong constant should not build.
const _: () =
    assert!(CONNECTION_WINDOW_BYTES_MAX >= STREAMS_MAX_YAMUX * yamux::DEFAULT_CREDIT as usize);

/// A muxer's failure: the yamux connection ended or broke.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MuxError {
    /// The remote closed the connection, or it was closed here.
    #[error("the yamux connection is closed")]
    Closed,
    /// yamux reported an I/O, framing or protocol error.
    #[error("yamux: {0}")]
    Yamux(yamux::ConnectionError),
}

impl From<yamux::ConnectionError> for MuxError {
    fn from(e: yamux::ConnectionError) -> Self {
        match e {
            yamux::ConnectionError::Closed => MuxError::Closed,
            other => MuxError::Yamux(other),
        }
    }
}

/// The connection upgrade that puts a [`Muxer`] on an authenticated connection.
#[derive(Debug, Clone, Copy, Default)]
pub struct Config;

impl Config {
    fn yamux(self) -> yamux::Config {
        let mut config = yamux::Config::default();
        // Order matters: yamux checks window ≥ streams × 256 KiB on each call.
        config.set_max_num_streams(STREAMS_MAX_YAMUX);
        config.set_max_connection_receive_window(Some(CONNECTION_WINDOW_BYTES_MAX));
        config.set_split_send_size(FRAME_BYTES_MAX);
        config
    }
}

impl UpgradeInfo for Config {
    type Info = &'static str;
    type InfoIter = std::iter::Once<Self::Info>;

    fn protocol_info(&self) -> Self::InfoIter {
        std::iter::once(PROTOCOL)
    }
}

impl<C> InboundConnectionUpgrade<C> for Config
where
    C: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Output = Muxer<C>;
    type Error = Infallible;
    type Future = Ready<Result<Muxer<C>, Infallible>>;

    fn upgrade_inbound(self, socket: C, _: Self::Info) -> Self::Future {
        ready(Ok(Muxer::new(socket, self, yamux::Mode::Server)))
    }
}

impl<C> OutboundConnectionUpgrade<C> for Config
where
    C: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Output = Muxer<C>;
    type Error = Infallible;
    type Future = Ready<Result<Muxer<C>, Infallible>>;

    fn upgrade_outbound(self, socket: C, _: Self::Info) -> Self::Future {
        ready(Ok(Muxer::new(socket, self, yamux::Mode::Client)))
    }
}

/// What a muxer shares with the streams it handed out.
#[derive(Debug, Default)]
struct Slots {
    /// Streams alive: queued, handed out and not yet dropped.
    live: AtomicUsize,
    /// Woken when a stream is dropped, for an outbound open waiting on [`STREAMS_MAX`].
    freed: AtomicWaker,
}

/// One stream's place in [`Slots::live`], given back on drop.
#[derive(Debug)]
struct Slot(Arc<Slots>);

impl Slot {
    fn take(slots: &Arc<Slots>) -> Self {
        slots.live.fetch_add(1, Ordering::AcqRel);
        Slot(slots.clone())
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.live.fetch_sub(1, Ordering::AcqRel);
        self.0.freed.wake();
    }
}

/// One yamux stream of a [`Muxer`]. Dropping it without closing resets it.
#[derive(Debug)]
pub struct Substream {
    stream: yamux::Stream,
    _slot: Slot,
}

impl AsyncRead for Substream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Substream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_close(cx)
    }
}

/// A yamux connection as a libp2p [`StreamMuxer`].
#[derive(Debug)]
pub struct Muxer<C> {
    connection: yamux::Connection<C>,
    inbound: VecDeque<Substream>,
    /// The queue is full and the swarm has had a turn to take from it since: streams
    /// arriving now are refused.
    full_queue_offered: bool,
    slots: Arc<Slots>,
}

impl<C> Muxer<C>
where
    C: AsyncRead + AsyncWrite + Unpin,
{
    fn new(socket: C, config: Config, mode: yamux::Mode) -> Self {
        Muxer {
            connection: yamux::Connection::new(socket, config.yamux(), mode),
            inbound: VecDeque::with_capacity(INBOUND_QUEUE_MAX),
            full_queue_offered: false,
            slots: Arc::new(Slots::default()),
        }
    }

    /// Streams alive on this connection: queued, handed out and not yet dropped.
    pub fn live_streams(&self) -> usize {
        self.slots.live.load(Ordering::Acquire)
    }

    /// Inbound streams waiting for the swarm to take them.
    pub fn queued_inbound(&self) -> usize {
        self.inbound.len()
    }

    /// Let the connection read and write, queueing or refusing the inbound streams it
    /// yields. Returns once yamux has nothing more to do (its wakers are registered),
    /// or, with the task woken to go on, after [`INBOUND_PER_POLL_MAX`] new streams or
    /// when the queue has just filled.
    fn drive(&mut self, cx: &mut Context<'_>) -> Result<(), MuxError> {
        for _ in 0..INBOUND_PER_POLL_MAX {
            if self.inbound.len() >= INBOUND_QUEUE_MAX && !self.full_queue_offered {
                // A burst can fill the queue within one call; give the swarm a turn to
                // take from it before refusing anything.
                self.full_queue_offered = true;
                cx.waker().wake_by_ref();
                return Ok(());
            }
            let stream = match self.connection.poll_next_inbound(cx) {
                Poll::Pending => return Ok(()),
                Poll::Ready(None) => return Err(MuxError::Closed),
                Poll::Ready(Some(Err(e))) => return Err(e.into()),
                Poll::Ready(Some(Ok(stream))) => stream,
            };
            let (live, queued) = (self.live_streams(), self.inbound.len());
            if queued >= INBOUND_QUEUE_MAX || live >= STREAMS_MAX {
                // Dropping an unanswered stream makes yamux reset it.
                tracing::debug!(
                    stream = %stream.id(),
                    queued,
                    live,
                    "refusing an inbound stream: too many waiting or alive"
                );
                continue;
            }
            let _slot = Slot::take(&self.slots);
            self.inbound.push_back(Substream { stream, _slot });
        }
        cx.waker().wake_by_ref();
        Ok(())
    }

    fn take_inbound(&mut self) -> Option<Substream> {
        let stream = self.inbound.pop_front()?;
        self.full_queue_offered = false;
        Some(stream)
    }
}

impl<C> StreamMuxer for Muxer<C>
where
    C: AsyncRead + AsyncWrite + Unpin,
{
    type Substream = Substream;
    type Error = MuxError;

    fn poll_inbound(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Substream, MuxError>> {
        let this = self.get_mut();
        if let Some(stream) = this.take_inbound() {
            return Poll::Ready(Ok(stream));
        }
        this.drive(cx)?;
        match this.take_inbound() {
            Some(stream) => Poll::Ready(Ok(stream)),
            None => Poll::Pending,
        }
    }

    fn poll_outbound(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Substream, MuxError>> {
        let this = self.get_mut();
        if this.live_streams() >= STREAMS_MAX {
            this.slots.freed.register(cx.waker());
            // A stream dropped between the check and the registration woke nobody.
            if this.live_streams() >= STREAMS_MAX {
                return Poll::Pending;
            }
        }
        // Pending only while 256 of our streams wait for the remote's acknowledgement;
        // yamux wakes us when one arrives.
        let stream = futures::ready!(this.connection.poll_new_outbound(cx))?;
        let _slot = Slot::take(&this.slots);
        Poll::Ready(Ok(Substream { stream, _slot }))
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), MuxError>> {
        let this = self.get_mut();
        // Streams nobody took are reset rather than left to the remote's timeouts.
        this.inbound.clear();
        match futures::ready!(this.connection.poll_close(cx)) {
            Ok(()) | Err(yamux::ConnectionError::Closed) => Poll::Ready(Ok(())),
            Err(e) => Poll::Ready(Err(e.into())),
        }
    }

    fn poll(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<StreamMuxerEvent, MuxError>> {
        // The swarm calls this on every turn; it is what keeps the connection moving
        // while the swarm is not taking inbound streams. It has no events to report.
        self.get_mut().drive(cx)?;
        Poll::Pending
    }
}
