//! The mesh's yamux muxer on a bare TCP connection: many streams at once arrive
//! intact, it interoperates with libp2p's own yamux, and a peer that opens streams
//! faster than they are taken, or more than the cap, is held to a bounded number.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::task::Poll;
use std::time::Duration;

use futures::channel::{mpsc, oneshot};
use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, StreamExt};
use libp2p::core::muxing::{StreamMuxer, StreamMuxerExt};
use libp2p::core::upgrade::{InboundConnectionUpgrade, OutboundConnectionUpgrade, UpgradeInfo};
use libp2p::tcp::tokio::TcpStream;
use peergrid_mesh::mux::{self, INBOUND_QUEUE_MAX, Muxer, STREAMS_MAX};

const PATIENCE: Duration = Duration::from_secs(20);

enum Command<S> {
    Open(oneshot::Sender<S>),
    Accept(bool),
    Counts(oneshot::Sender<(usize, usize)>),
}

/// One side of a connection, its muxer run by a task as the swarm would run it.
struct Side<S> {
    commands: mpsc::UnboundedSender<Command<S>>,
}

/// The inbound streams a side took.
type Inbound<S> = mpsc::UnboundedReceiver<S>;

impl<S> Side<S> {
    async fn open(&self) -> S {
        let (reply, opened) = oneshot::channel();
        self.commands
            .unbounded_send(Command::Open(reply))
            .expect("muxer task runs");
        tokio::time::timeout(PATIENCE, opened)
            .await
            .expect("opened in time")
            .expect("muxer task runs")
    }

    fn accept(&self, accepting: bool) {
        self.commands
            .unbounded_send(Command::Accept(accepting))
            .expect("muxer task runs");
    }

    /// Live streams and queued inbound streams, for our muxer only.
    async fn counts(&self) -> (usize, usize) {
        let (reply, counts) = oneshot::channel();
        self.commands
            .unbounded_send(Command::Counts(reply))
            .expect("muxer task runs");
        counts.await.expect("muxer task runs")
    }
}

/// Something whose stream counts can be read (ours), or not (libp2p's).
trait Counted {
    fn counts(&self) -> (usize, usize);
}

impl<C: AsyncRead + AsyncWrite + Unpin> Counted for Muxer<C> {
    fn counts(&self) -> (usize, usize) {
        (self.live_streams(), self.queued_inbound())
    }
}

impl<C> Counted for libp2p::yamux::Muxer<C> {
    fn counts(&self) -> (usize, usize) {
        (0, 0)
    }
}

/// Run `muxer` in a task: always `poll`, open streams on request, and take inbound
/// streams only while accepting (the swarm stops taking them when it is saturated).
fn run<M>(mut muxer: M, accepting: bool) -> (Side<M::Substream>, Inbound<M::Substream>)
where
    M: StreamMuxer + Counted + Unpin + Send + 'static,
    M::Substream: Send + 'static,
    M::Error: std::fmt::Debug,
{
    let (commands, mut command_rx) = mpsc::unbounded();
    let (inbound_tx, inbound) = mpsc::unbounded();
    tokio::spawn(async move {
        let mut accepting = accepting;
        let mut opens = VecDeque::new();
        poll_fn(move |cx| {
            loop {
                while let Poll::Ready(Some(command)) = command_rx.poll_next_unpin(cx) {
                    match command {
                        Command::Open(reply) => opens.push_back(reply),
                        Command::Accept(a) => accepting = a,
                        Command::Counts(reply) => {
                            let _ = reply.send(muxer.counts());
                        }
                    }
                }
                if let Poll::Ready(Err(e)) = muxer.poll_unpin(cx) {
                    tracing::debug!("muxer ended: {e:?}");
                    return Poll::Ready(());
                }
                if !opens.is_empty() {
                    match muxer.poll_outbound_unpin(cx) {
                        Poll::Ready(Ok(stream)) => {
                            if let Some(reply) = opens.pop_front() {
                                let _ = reply.send(stream);
                            }
                            continue;
                        }
                        Poll::Ready(Err(e)) => {
                            tracing::debug!("muxer ended: {e:?}");
                            return Poll::Ready(());
                        }
                        Poll::Pending => {}
                    }
                }
                if accepting {
                    match muxer.poll_inbound_unpin(cx) {
                        Poll::Ready(Ok(stream)) => {
                            let _ = inbound_tx.unbounded_send(stream);
                            continue;
                        }
                        Poll::Ready(Err(e)) => {
                            tracing::debug!("muxer ended: {e:?}");
                            return Poll::Ready(());
                        }
                        Poll::Pending => {}
                    }
                }
                return Poll::Pending;
            }
        })
        .await
    });
    (Side { commands }, inbound)
}

async fn tcp_pair() -> (TcpStream, TcpStream) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (dialer, accepted) = tokio::join!(tokio::net::TcpStream::connect(addr), listener.accept());
    let dialer = dialer.expect("connect");
    let (listener_side, _) = accepted.expect("accept");
    dialer.set_nodelay(true).expect("nodelay");
    listener_side.set_nodelay(true).expect("nodelay");
    (TcpStream(dialer), TcpStream(listener_side))
}

async fn ours_both_sides(
    accepting: bool,
) -> (
    Side<mux::Substream>,
    Side<mux::Substream>,
    Inbound<mux::Substream>,
) {
    let (a, b) = tcp_pair().await;
    let client = mux::Config
        .upgrade_outbound(a, mux::PROTOCOL)
        .await
        .expect("upgrade");
    let server = mux::Config
        .upgrade_inbound(b, mux::PROTOCOL)
        .await
        .expect("upgrade");
    let (client, _) = run(client, true);
    let (server, inbound) = run(server, accepting);
    (client, server, inbound)
}

/// Deterministic bytes for stream `i`.
fn payload(i: usize, len: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; len];
    blake3::Hasher::new()
        .update(&(i as u64).to_le_bytes())
        .finalize_xof()
        .fill(&mut bytes);
    bytes
}

/// Server side of the check: read the stream to its end, answer with its BLAKE3.
fn answer_with_hashes<S>(mut inbound: mpsc::UnboundedReceiver<S>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        while let Some(mut stream) = inbound.next().await {
            tokio::spawn(async move {
                let mut got = Vec::new();
                if stream.read_to_end(&mut got).await.is_ok() {
                    let _ = stream.write_all(blake3::hash(&got).as_bytes()).await;
                    let _ = stream.close().await;
                }
            });
        }
    });
}

/// Client side: send `data`, close, and compare the answered hash with our own.
async fn send_and_check<S>(mut stream: S, data: Vec<u8>) -> bool
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    stream.write_all(&data).await.expect("write");
    stream.close().await.expect("close");
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.expect("read");
    answer == blake3::hash(&data).as_bytes()
}

async fn many_streams_intact<C, S>(client: &Side<C>, server: Inbound<S>, streams: usize)
where
    C: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    answer_with_hashes(server);
    let mut transfers = Vec::new();
    for i in 0..streams {
        let stream = client.open().await;
        // Lengths around the 256 KiB frame: less than one frame, several, never aligned.
        let len = 100_000 + i * 40_961;
        transfers.push(tokio::spawn(send_and_check(stream, payload(i, len))));
    }
    for (i, transfer) in transfers.into_iter().enumerate() {
        let intact = tokio::time::timeout(PATIENCE, transfer)
            .await
            .expect("transfer finishes in time")
            .expect("transfer task");
        assert!(intact, "stream {i} arrived altered");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_streams_over_one_connection_deliver_their_bytes_intact() {
    let (client, _server, inbound) = ours_both_sides(true).await;
    many_streams_intact(&client, inbound, 100).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn libp2ps_own_yamux_interoperates_with_ours_both_ways() {
    // libp2p's yamux dials ours.
    let (a, b) = tcp_pair().await;
    let theirs = libp2p::yamux::Config::default();
    let info = theirs.protocol_info().next().expect("a protocol");
    assert_eq!(AsRef::<str>::as_ref(&info), mux::PROTOCOL);
    let client = theirs.upgrade_outbound(a, info).await.expect("upgrade");
    let server = mux::Config
        .upgrade_inbound(b, mux::PROTOCOL)
        .await
        .expect("upgrade");
    let ((client, _), (_server, inbound)) = (run(client, true), run(server, true));
    many_streams_intact(&client, inbound, 16).await;

    // Ours dials libp2p's: our 256 KiB frames must be accepted by it.
    let (a, b) = tcp_pair().await;
    let theirs = libp2p::yamux::Config::default();
    let info = theirs.protocol_info().next().expect("a protocol");
    let client = mux::Config
        .upgrade_outbound(a, mux::PROTOCOL)
        .await
        .expect("upgrade");
    let server = theirs.upgrade_inbound(b, info).await.expect("upgrade");
    let ((client, _), (_server, inbound)) = (run(client, true), run(server, true));
    many_streams_intact(&client, inbound, 16).await;
}

/// Wait until `side`'s counts satisfy `done`, and return them.
async fn counts_when<S>(side: &Side<S>, done: impl Fn((usize, usize)) -> bool) -> (usize, usize) {
    let start = tokio::time::Instant::now();
    loop {
        let counts = side.counts().await;
        if done(counts) || start.elapsed() > PATIENCE {
            return counts;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_opened_faster_than_they_are_accepted_are_reset_beyond_the_queue() {
    const OPENED: usize = 100;
    let (client, server, inbound) = ours_both_sides(false).await;
    let mut streams = Vec::new();
    for i in 0..OPENED {
        let mut stream = client.open().await;
        // A stream reaches the other side with its first frame.
        stream
            .write_all(&payload(i, 1000))
            .await
            .expect("first write is buffered");
        stream.flush().await.expect("flush");
        streams.push(stream);
    }
    // The server takes nothing: it holds the queue's worth and no more.
    let (live, queued) = counts_when(&server, |(live, _)| live >= INBOUND_QUEUE_MAX).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (live_later, queued_later) = server.counts().await;
    assert_eq!(
        (live, queued, live_later, queued_later),
        (
            INBOUND_QUEUE_MAX,
            INBOUND_QUEUE_MAX,
            INBOUND_QUEUE_MAX,
            INBOUND_QUEUE_MAX
        )
    );

    // Now it takes them: the queued ones are intact, the others were reset.
    server.accept(true);
    answer_with_hashes(inbound);
    let mut intact = 0;
    let mut reset = 0;
    for (i, mut stream) in streams.into_iter().enumerate() {
        let closed = stream.close().await;
        let mut answer = Vec::new();
        let read = tokio::time::timeout(PATIENCE, stream.read_to_end(&mut answer))
            .await
            .expect("answer or reset in time");
        if closed.is_ok() && read.is_ok() && answer == blake3::hash(&payload(i, 1000)).as_bytes() {
            intact += 1;
        } else {
            assert!(
                answer.is_empty(),
                "stream {i}: a reset stream has no answer"
            );
            reset += 1;
        }
    }
    assert_eq!(
        (intact, reset),
        (INBOUND_QUEUE_MAX, OPENED - INBOUND_QUEUE_MAX)
    );

    // The connection itself stays up for the next stream.
    let stream = client.open().await;
    assert!(send_and_check(stream, payload(7, 300_000)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opening_beyond_the_stream_cap_waits_until_a_stream_is_dropped() {
    let (client, _server, mut inbound) = ours_both_sides(true).await;
    let mut held = Vec::new();
    for i in 0..STREAMS_MAX as u16 {
        let mut stream = client.open().await;
        stream.write_all(&i.to_le_bytes()).await.expect("write");
        stream.flush().await.expect("flush");
        held.push(stream);
    }
    // The server's application holds every stream, by the index written on it.
    let mut accepted = std::collections::HashMap::new();
    while accepted.len() < STREAMS_MAX {
        let mut stream = tokio::time::timeout(PATIENCE, inbound.next())
            .await
            .expect("accepted in time")
            .expect("a stream");
        let mut index = [0u8; 2];
        stream.read_exact(&mut index).await.expect("index");
        accepted.insert(u16::from_le_bytes(index), stream);
    }

    // One more waits: the connection is not closed and nothing is refused.
    let (reply, opened) = oneshot::channel();
    client
        .commands
        .unbounded_send(Command::Open(reply))
        .expect("muxer task runs");
    let mut opened = Box::pin(opened);
    assert!(
        tokio::time::timeout(Duration::from_millis(500), &mut opened)
            .await
            .is_err(),
        "an open beyond {STREAMS_MAX} live streams waits"
    );
    assert_eq!(client.counts().await.0, STREAMS_MAX);

    // Dropping one (both ends let go of it) lets the waiting one through.
    drop(held.pop());
    drop(accepted.remove(&(STREAMS_MAX as u16 - 1)));
    let mut stream = tokio::time::timeout(PATIENCE, opened)
        .await
        .expect("opened once a stream was dropped")
        .expect("muxer task runs");
    stream.write_all(b"late").await.expect("write");
    stream.flush().await.expect("flush");
    let mut late = tokio::time::timeout(PATIENCE, inbound.next())
        .await
        .expect("accepted in time")
        .expect("a stream");
    let mut bytes = [0u8; 4];
    late.read_exact(&mut bytes).await.expect("read");
    assert_eq!(&bytes, b"late");
    // The held streams still carry data.
    held[0].write_all(b"!").await.expect("write");
    held[0].flush().await.expect("flush");
    let first = accepted.get_mut(&0).expect("stream 0");
    let mut byte = [0u8; 1];
    first.read_exact(&mut byte).await.expect("read");
    assert_eq!(&byte, b"!");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_allowed_more_streams_than_us_is_held_to_our_cap() {
    const OPENED: usize = 300;
    let (a, b) = tcp_pair().await;
    let mut theirs = libp2p::yamux::Config::default();
    theirs.set_max_num_streams(1024);
    let info = theirs.protocol_info().next().expect("a protocol");
    let (hostile, _) = run(
        theirs.upgrade_outbound(a, info).await.expect("upgrade"),
        true,
    );
    let (server, mut inbound) = run(
        mux::Config
            .upgrade_inbound(b, mux::PROTOCOL)
            .await
            .expect("upgrade"),
        true,
    );
    // The server's application holds every stream it is given.
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Some(stream) = inbound.next().await {
            held.push(stream);
        }
        held.len()
    });
    let mut streams = Vec::new();
    for _ in 0..OPENED {
        let mut stream = hostile.open().await;
        // Streams beyond our cap are reset, so their writes may fail; that is the point.
        if stream.write_all(b"x").await.is_ok() {
            let _ = stream.flush().await;
        }
        streams.push(stream);
    }
    let (live, _) = counts_when(&server, |(live, _)| live >= STREAMS_MAX).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!((live, server.counts().await.0), (STREAMS_MAX, STREAMS_MAX));

    // The streams beyond the cap were reset: reading them ends at once.
    let mut reset = 0;
    for mut stream in streams.into_iter().skip(STREAMS_MAX) {
        let mut buf = [0u8; 1];
        if let Ok(Ok(0) | Err(_)) =
            tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await
        {
            reset += 1;
        }
    }
    assert_eq!(reset, OPENED - STREAMS_MAX);
    // The server's application got exactly the streams it could hold, and the
    // connection is still up for them.
    assert_eq!(server.counts().await.0, STREAMS_MAX);
    drop(holder);
}

const FRAME_DATA: u8 = 0;
const FRAME_GO_AWAY: u8 = 3;

/// How many frames of each type `bytes` holds (yamux frames: a 12-byte header, and a
/// body of the header's length after a data frame).
fn frame_types(mut bytes: &[u8]) -> std::collections::BTreeMap<u8, usize> {
    let mut types = std::collections::BTreeMap::new();
    while bytes.len() >= 12 {
        let kind = bytes[1];
        let len = u32::from_be_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize;
        *types.entry(kind).or_default() += 1;
        let body = if kind == FRAME_DATA { len } else { 0 };
        bytes = &bytes[(12 + body).min(bytes.len())..];
    }
    types
}

/// A yamux frame header opening stream `id` (a window update with SYN, no credit).
fn syn(id: u32) -> [u8; 12] {
    let mut frame = [0u8; 12];
    frame[1] = 1; // window update
    frame[2..4].copy_from_slice(&1u16.to_be_bytes()); // SYN
    frame[4..8].copy_from_slice(&id.to_be_bytes());
    frame
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_refused_while_our_writes_wait_do_not_end_the_connection() {
    // Small socket buffers, so that our writes wait on a peer that does not read.
    let listener = tokio::net::TcpSocket::new_v4().expect("socket");
    listener.set_recv_buffer_size(4096).expect("rcvbuf");
    listener
        .bind("127.0.0.1:0".parse().expect("addr"))
        .expect("bind");
    let listener = listener.listen(1).expect("listen");
    let ours = tokio::net::TcpSocket::new_v4().expect("socket");
    ours.set_send_buffer_size(4096).expect("sndbuf");
    let addr = listener.local_addr().expect("addr");
    let (ours, peer) = tokio::join!(ours.connect(addr), listener.accept());
    let (ours, mut peer) = (ours.expect("connect"), peer.expect("accept").0);
    let (side, _inbound) = run(
        mux::Config
            .upgrade_outbound(TcpStream(ours), mux::PROTOCOL)
            .await
            .expect("upgrade"),
        false,
    );
    // Our side sends on a few streams their full first window, which the peer never
    // reads: from here on our writes wait on the socket, resets included.
    const BUSY: usize = 4;
    let mut writers = Vec::new();
    for _ in 0..BUSY {
        let mut busy = side.open().await;
        writers.push(tokio::spawn(async move {
            let _ = busy.write_all(&vec![7u8; 256 * 1024]).await;
            let _ = busy.flush().await;
            busy
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The peer opens as many streams as a yamux peer may before we acknowledge one.
    // Ours queues INBOUND_QUEUE_MAX of them and refuses the rest, whose resets wait.
    use tokio::io::AsyncWriteExt as _;
    for i in 0..256u32 {
        peer.write_all(&syn(2 * (i + 1)))
            .await
            .expect("peer writes");
    }
    peer.flush().await.expect("flush");
    let (live, queued) = counts_when(&side, |(_, queued)| queued >= INBOUND_QUEUE_MAX).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        (live, queued, side.counts().await),
        (
            BUSY + INBOUND_QUEUE_MAX,
            INBOUND_QUEUE_MAX,
            (BUSY + INBOUND_QUEUE_MAX, INBOUND_QUEUE_MAX)
        ),
        "the connection is still up and holds what it held"
    );
    // Once the peer reads, our data and resets go out and the connection carries on:
    // no GoAway among what our side sent (yamux's answer to a stream over its cap).
    let drained = tokio::spawn(async move {
        use tokio::io::AsyncReadExt as _;
        let mut received = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        while let Ok(Ok(n)) =
            tokio::time::timeout(Duration::from_secs(2), peer.read(&mut buf)).await
        {
            if n == 0 {
                break;
            }
            received.extend_from_slice(&buf[..n]);
        }
        // Kept open: the connection must outlive the check below.
        (frame_types(&received), peer)
    });
    let mut busy = Vec::new();
    for writer in writers {
        busy.push(
            tokio::time::timeout(PATIENCE, writer)
                .await
                .expect("our writes complete once the peer reads")
                .expect("writer task"),
        );
    }
    let (types, _peer) = drained.await.expect("reader");
    assert_eq!(
        types.get(&FRAME_GO_AWAY),
        None,
        "our side ended the connection"
    );
    let data = types.get(&FRAME_DATA).copied().unwrap_or(0);
    assert!(data >= BUSY, "every busy stream's data went out: {types:?}");
    assert_eq!(side.counts().await.0, BUSY + INBOUND_QUEUE_MAX);
}

/// Frames a hostile peer might send: any type, flags, stream id and length, with a
/// body for data frames, so that the decoder and the muxer see the odd ones often.
fn frames() -> impl proptest::strategy::Strategy<Value = Vec<(u8, u8, u16, u32, Vec<u8>)>> {
    use proptest::prelude::*;
    prop::collection::vec(
        (
            prop::sample::select(vec![0u8, 0, 0, 1]),
            0u8..6,
            any::<u16>(),
            prop::sample::select(vec![0u32, 1, 2, 3, 5, 7, 1_000, u32::MAX]),
            prop::collection::vec(any::<u8>(), 0..64),
        ),
        1..40,
    )
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 32, ..proptest::prelude::ProptestConfig::default() })]

    /// Whatever frames arrive, our muxer ends the connection or keeps serving it: no panic,
    /// no hang, and a stream it still accepts afterwards works.
    #[test]
    fn whatever_frames_a_peer_sends_the_muxer_survives_or_closes(frames in frames()) {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            let (ours, mut peer) = {
                let (a, b) = tcp_pair().await;
                (a, b.0)
            };
            let (side, mut inbound) = run(
                mux::Config
                    .upgrade_outbound(ours, mux::PROTOCOL)
                    .await
                    .expect("upgrade"),
                true,
            );
            let mut wire = Vec::new();
            for (version, kind, flags, len, body) in &frames {
                // Stream ids of the peer's parity (even: it is the server), small enough to collide.
                let id = 2 * (u32::from(*flags) % 8 + 1);
                wire.push(*version);
                wire.push(*kind);
                wire.extend_from_slice(&flags.to_be_bytes());
                wire.extend_from_slice(&id.to_be_bytes());
                let len = if *kind == 0 { body.len() as u32 } else { *len };
                wire.extend_from_slice(&len.to_be_bytes());
                if *kind == 0 {
                    wire.extend_from_slice(body);
                }
            }
            use tokio::io::AsyncWriteExt as _;
            let _ = peer.write_all(&wire).await;
            let _ = peer.flush().await;
            // Whatever it made of them, the muxer answers (or has ended) in time.
            let answered = tokio::time::timeout(Duration::from_secs(5), async {
                tokio::time::sleep(Duration::from_millis(50)).await;
                let (reply, counts) = oneshot::channel();
                if side.commands.unbounded_send(Command::Counts(reply)).is_err() {
                    return None;
                }
                counts.await.ok()
            })
            .await
            .expect("the muxer task answers or ends in time");
            if let Some((live, queued)) = answered {
                assert!(live <= STREAMS_MAX && queued <= INBOUND_QUEUE_MAX);
            }
            while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(10), inbound.next()).await {}
        });
    }
}
