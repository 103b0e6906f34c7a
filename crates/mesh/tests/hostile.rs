//! Hostile twins: peers that send oversized or malformed frames, flood, or crowd the
//! connection slots get a clear refusal, and the peer they attack stays up.

mod common;

use std::time::Duration;

use common::{addr, peer, peer_with};
use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use peergrid_mesh::rpc::protocol::Status;
use peergrid_mesh::{Config, ConnectionLimits, Error, Mesh, RpcError, RpcProtocol};

const ECHO: RpcProtocol = RpcProtocol::new("/peergrid/test-echo/1.0.0").with_sizes(1024, 1024);

async fn echo_server() -> Mesh {
    let server = peer().await;
    server
        .serve(ECHO, |_, b| async move { Ok(b) })
        .expect("serve");
    server
}

async fn banned_count(mesh: &Mesh) -> usize {
    for _ in 0..50 {
        let banned = mesh.status().await.expect("status").banned_peers;
        if banned > 0 {
            return banned;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_request_frame_is_refused_unread_and_its_sender_banned() {
    let (server, attacker, honest) = (echo_server().await, peer().await, peer().await);
    let server_addr = addr(&server, "tcp").await;
    attacker
        .connect(server.peer_id(), vec![server_addr.clone()])
        .await
        .expect("connects");
    let mut stream = attacker
        .open_stream(server.peer_id(), ECHO.name.clone())
        .await
        .expect("open");
    // Declares 4 GiB: the server must refuse from the header alone.
    stream
        .write_all(&u32::MAX.to_be_bytes())
        .await
        .expect("write");
    stream.flush().await.expect("flush");
    let mut head = [0u8; 5];
    stream.read_exact(&mut head).await.expect("refusal");
    assert_eq!(Status::from_byte(head[0]), Some(Status::RequestTooLarge));

    assert_eq!(banned_count(&server).await, 1, "the attacker is banned");
    let again = attacker.request(server.peer_id(), &ECHO, b"hi").await;
    assert!(again.is_err(), "a banned peer gets no answer: {again:?}");
    honest
        .connect(server.peer_id(), vec![server_addr])
        .await
        .expect("connects");
    assert_eq!(
        honest
            .request(server.peer_id(), &ECHO, b"hi")
            .await
            .expect("served"),
        b"hi"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_cut_short_is_refused_and_its_sender_not_banned() {
    let (server, attacker) = (echo_server().await, peer().await);
    attacker
        .connect(server.peer_id(), vec![addr(&server, "quic-v1").await])
        .await
        .expect("connects");
    let mut stream = attacker
        .open_stream(server.peer_id(), ECHO.name.clone())
        .await
        .expect("open");
    // Promises 100 bytes, sends 3, then ends its half of the stream.
    stream
        .write_all(&100u32.to_be_bytes())
        .await
        .expect("write");
    stream.write_all(b"abc").await.expect("write");
    stream.close().await.expect("close");
    let mut head = [0u8; 5];
    stream.read_exact(&mut head).await.expect("refusal");
    assert_eq!(Status::from_byte(head[0]), Some(Status::Malformed));
    // An interrupted client looks the same, and its peer id is its account.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(server.status().await.expect("status").banned_peers, 0);
    let answer = attacker
        .request(server.peer_id(), &ECHO, b"hi")
        .await
        .expect("still served");
    assert_eq!(answer, b"hi");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_from_one_peer_is_rate_limited_while_others_are_served() {
    let limited = ECHO.with_rate(5.0, 5);
    let server = peer().await;
    server
        .serve(limited.clone(), |_, b| async move { Ok(b) })
        .expect("serve");
    let (flooder, honest) = (peer().await, peer().await);
    let server_addr = addr(&server, "tcp").await;
    flooder
        .connect(server.peer_id(), vec![server_addr.clone()])
        .await
        .expect("connects");
    honest
        .connect(server.peer_id(), vec![server_addr])
        .await
        .expect("connects");

    let requests = (0..100).map(|_| flooder.request(server.peer_id(), &limited, b"x"));
    let started = std::time::Instant::now();
    let results = futures::future::join_all(requests).await;
    // The bucket refills at 5 a second: a loaded machine that takes longer over the
    // hundred requests lets a few more through, never most of them.
    let refilled = (started.elapsed().as_secs_f64() * 5.0).ceil() as usize;
    let served = results.iter().filter(|r| r.is_ok()).count();
    let rate_limited = results
        .iter()
        .filter(|r| {
            matches!(
                r,
                Err(RpcError::Refused {
                    status: Status::RateLimited,
                    ..
                })
            )
        })
        .count();
    assert!(
        served <= 5 + refilled.max(5) && served < 50,
        "at most the burst (plus refill) is served: {served} (refill {refilled})"
    );
    // The flooder's streams beyond its share of the server's inbound queue are reset;
    // every one that got a place in it is answered, and says why when refused.
    let reset: Vec<_> = results
        .iter()
        .filter(|r| {
            !r.is_ok()
                && !matches!(
                    r,
                    Err(RpcError::Refused {
                        status: Status::RateLimited,
                        ..
                    })
                )
        })
        .collect();
    assert!(
        served + rate_limited >= peergrid_mesh::streams::INBOUND_QUEUE_PER_PEER_MAX,
        "every queued request is answered: {served} served, {rate_limited} refused as rate \
         limited, others: {reset:?}"
    );
    assert!(
        reset.iter().all(|r| matches!(r, Err(RpcError::Io { .. }))),
        "the rest are reset, not timed out: {reset:?}"
    );
    assert_eq!(
        honest
            .request(server.peer_id(), &limited, b"hi")
            .await
            .expect("served"),
        b"hi"
    );
    // Flooding is not malformed: the flooder is slowed down, not banned.
    assert_eq!(server.status().await.expect("status").banned_peers, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_response_is_refused_and_its_server_banned() {
    let (liar, client) = (peer().await, peer().await);
    let mut incoming = liar.accept_streams(ECHO.name.clone()).expect("accept");
    tokio::spawn(async move {
        while let Some((_, mut stream)) = incoming.next().await {
            let mut request = [0u8; 6];
            let _ = stream.read_exact(&mut request).await;
            let mut head = [0u8; 5];
            head[1..].copy_from_slice(&u32::MAX.to_be_bytes());
            let _ = stream.write_all(&head).await;
            let _ = stream.flush().await;
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    client
        .connect(liar.peer_id(), vec![addr(&liar, "tcp").await])
        .await
        .expect("connects");
    let result = client.request(liar.peer_id(), &ECHO, b"hi").await;
    assert!(
        matches!(result, Err(RpcError::MalformedResponse { .. })),
        "{result:?}"
    );
    assert_eq!(banned_count(&client).await, 1);
    let again = client.connect(liar.peer_id(), Vec::new()).await;
    assert!(matches!(again, Err(Error::Banned(_))), "{again:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_limit_are_refused() {
    let server = peer_with(Config {
        connections: ConnectionLimits {
            established_max: 1,
            ..ConnectionLimits::default()
        },
        ..Config::loopback()
    })
    .await;
    let server_addr = addr(&server, "tcp").await;
    let (first, second) = (peer().await, peer().await);
    first
        .connect(server.peer_id(), vec![server_addr.clone()])
        .await
        .expect("first connects");
    first.ping(server.peer_id()).await.expect("first is served");
    let refused = async {
        second
            .connect(server.peer_id(), vec![server_addr.clone()])
            .await?;
        // The handshake may complete before the server's limit closes the connection.
        second.ping(server.peer_id()).await
    }
    .await;
    assert!(refused.is_err(), "the second connection must be refused");
    assert_eq!(server.peers().await.expect("peers").len(), 1);
    first
        .ping(server.peer_id())
        .await
        .expect("first is still served");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fresh_peer_ids_from_one_address_get_only_its_share_of_connections() {
    let server = peer_with(Config {
        connections: ConnectionLimits {
            incoming_per_address_max: 2,
            limit_loopback: true,
            ..ConnectionLimits::default()
        },
        ..Config::loopback()
    })
    .await;
    let server_addr = addr(&server, "tcp").await;
    let mut served = Vec::new();
    for _ in 0..2 {
        let p = peer().await;
        p.connect(server.peer_id(), vec![server_addr.clone()])
            .await
            .expect("connects");
        p.ping(server.peer_id()).await.expect("served");
        served.push(p);
    }
    let third = peer().await;
    let refused = async {
        third
            .connect(server.peer_id(), vec![server_addr.clone()])
            .await?;
        third.ping(server.peer_id()).await
    }
    .await;
    assert!(
        refused.is_err(),
        "a third peer id from one address is refused"
    );
    // A peer that leaves frees its place.
    served.remove(0).close().await;
    let mut admitted = false;
    for _ in 0..50 {
        if third
            .connect(server.peer_id(), vec![server_addr.clone()])
            .await
            .is_ok()
            && third.ping(server.peer_id()).await.is_ok()
        {
            admitted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(admitted, "the freed place goes to the next peer");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_transfer_above_the_receivers_limit_is_refused() {
    let (receiver, sender) = (peer().await, peer().await);
    let served = peergrid_mesh::bulk::Receiver::serve(&receiver, 1 << 20).expect("serve");
    sender
        .connect(receiver.peer_id(), vec![addr(&receiver, "quic-v1").await])
        .await
        .expect("connects");
    let refused = peergrid_mesh::bulk::send(&sender, receiver.peer_id(), 2 << 20, |_| {}).await;
    assert!(refused.is_err(), "{refused:?}");
    assert!(served.received().is_empty());
    let fits = peergrid_mesh::bulk::send(&sender, receiver.peer_id(), 1 << 20, |_| {})
        .await
        .expect("a transfer within the limit");
    assert!(fits.confirmed_intact());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_control_endpoint_answers_garbage_with_an_error_and_stays_on_loopback() {
    use peergrid_mesh::control::{self, ControlError, Request};
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

    let mesh = peer().await;
    let not_loopback = control::serve(mesh.clone(), None, "0.0.0.0:0".parse().expect("addr")).await;
    assert!(matches!(not_loopback, Err(ControlError::NotLoopback(_))));
    let addr = control::serve(mesh.clone(), None, "127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("serve");
    let mut socket = tokio::net::TcpStream::connect(addr).await.expect("connect");
    socket
        .write_all(b"{\"cmd\":\"format_disk\"}\n")
        .await
        .expect("write");
    let mut line = String::new();
    BufReader::new(&mut socket)
        .read_line(&mut line)
        .await
        .expect("answer");
    assert!(line.contains("\"error\":\"bad request"), "{line}");
    let status = control::call(addr, &Request::Status)
        .await
        .expect("still serving");
    assert_eq!(status["peer_id"], mesh.peer_id().to_string());
}

/// A dialer that agrees on TLS and then sends garbage instead of a handshake loses
/// its connection at once; the peer stays up and serves the next peer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_instead_of_a_tls_handshake_closes_that_connection_only() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    let server = echo_server().await;
    let target = addr(&server, "tcp").await;
    let port = target
        .iter()
        .find_map(|p| match p {
            peergrid_mesh::multiaddr::Protocol::Tcp(port) => Some(port),
            _ => None,
        })
        .expect("tcp port");
    let mut raw = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    // multistream-select: length-prefixed lines, the header then our proposal.
    let mut hello = Vec::new();
    for line in ["/multistream/1.0.0\n", "/tls/1.0.0\n"] {
        hello.push(line.len() as u8);
        hello.extend_from_slice(line.as_bytes());
    }
    hello.extend_from_slice(&[0x16, 0x03, 0x01, 0xff, 0xff]);
    hello.extend_from_slice(&[0xab; 4096]);
    raw.write_all(&hello).await.expect("send garbage");
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), raw.read_to_end(&mut rest)).await;
    assert!(
        closed.is_ok(),
        "the connection stayed open after a garbage handshake"
    );

    let client = peer().await;
    client
        .connect(server.peer_id(), vec![target])
        .await
        .expect("the next peer connects");
    let reply = client
        .request(server.peer_id(), &ECHO, b"still here")
        .await
        .expect("served");
    assert_eq!(reply, b"still here");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dial_to_a_peer_that_accepts_and_says_nothing_is_given_up() {
    use tokio::io::AsyncReadExt as _;

    // A frozen process: its port accepts, nothing answers.
    let frozen = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = frozen.local_addr().expect("addr").port();
    let accepted = tokio::spawn(async move { frozen.accept().await.map(|(s, _)| s) });
    let client = peer().await;
    let someone = peergrid_mesh::PeerId::random();
    let at: peergrid_mesh::Multiaddr = format!("/ip4/127.0.0.1/tcp/{port}")
        .parse()
        .expect("multiaddr");
    let started = std::time::Instant::now();
    assert!(client.connect(someone, vec![at]).await.is_err());
    let mut socket = accepted.await.expect("join").expect("accepted");
    // The dial itself is given up: its socket closes, so a later dial starts anew
    // instead of waiting on this one for good (libp2p gives a connection being set up
    // no deadline of its own).
    let mut rest = Vec::new();
    let left = Duration::from_secs(30).saturating_sub(started.elapsed());
    let closed = tokio::time::timeout(left, socket.read_to_end(&mut rest)).await;
    assert!(
        closed.is_ok(),
        "the dial to a silent peer was still pending after 30 s"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_streams_waits_for_a_slow_acceptor_and_one_peer_cannot_fill_the_queue() {
    use peergrid_mesh::streams::INBOUND_QUEUE_PER_PEER_MAX;
    let protocol = peergrid_mesh::StreamProtocol::new("/peergrid/test-burst/1");
    let server = peer().await;
    // Nothing takes the streams yet: they must wait in the queue, not be reset.
    let mut incoming = server.accept_streams(protocol.clone()).expect("accept");
    let (flooder, other) = (peer().await, peer().await);
    let server_addr = addr(&server, "tcp").await;
    for p in [&flooder, &other] {
        p.connect(server.peer_id(), vec![server_addr.clone()])
            .await
            .expect("connects");
    }
    let burst = INBOUND_QUEUE_PER_PEER_MAX + 10;
    let opened = futures::future::join_all(
        (0..burst).map(|_| flooder.open_stream(server.peer_id(), protocol.clone())),
    )
    .await;
    let (kept, failed): (Vec<_>, Vec<_>) = opened.into_iter().partition(Result::is_ok);
    let mut kept: Vec<_> = kept.into_iter().filter_map(Result::ok).collect();
    assert_eq!(
        kept.len(),
        burst,
        "every open is negotiated at once; first failure: {:?}",
        failed.into_iter().find_map(Result::err)
    );
    let mut late = other
        .open_stream(server.peer_id(), protocol.clone())
        .await
        .expect("the other peer opens");
    late.write_all(b"x").await.expect("write");
    late.flush().await.expect("flush");
    tokio::time::sleep(Duration::from_millis(500)).await;

    let (mut from_flooder, mut from_other) = (0, 0);
    while let Ok(Some((who, _stream))) =
        tokio::time::timeout(Duration::from_millis(500), incoming.next()).await
    {
        if who == flooder.peer_id() {
            from_flooder += 1;
        } else if who == other.peer_id() {
            from_other += 1;
        }
    }
    assert_eq!(
        from_flooder, INBOUND_QUEUE_PER_PEER_MAX,
        "a burst waits for the acceptor up to one peer's share, the rest is refused"
    );
    assert_eq!(from_other, 1, "another peer still gets in");
    kept.clear();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_sends_slowly_holds_only_its_share_and_others_are_served() {
    let shared = ECHO.with_concurrency(64, 2);
    let server = peer().await;
    server
        .serve(shared.clone(), |_, b| async move { Ok(b) })
        .expect("serve");
    let (slow, honest) = (peer().await, peer().await);
    let server_addr = addr(&server, "tcp").await;
    for p in [&slow, &honest] {
        p.connect(server.peer_id(), vec![server_addr.clone()])
            .await
            .expect("connects");
    }
    // Requests that never finish: two bytes of a four-byte length, then nothing.
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut stream = slow
            .open_stream(server.peer_id(), shared.name.clone())
            .await
            .expect("open");
        stream.write_all(&[0, 0]).await.expect("write");
        stream.flush().await.expect("flush");
        held.push(stream);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // A third is refused at once, with the reason, while the two wait for their deadline.
    let mut third = slow
        .open_stream(server.peer_id(), shared.name.clone())
        .await
        .expect("open");
    third.write_all(&[0, 0]).await.expect("write");
    third.flush().await.expect("flush");
    let mut head = [0u8; 5];
    tokio::time::timeout(Duration::from_secs(2), third.read_exact(&mut head))
        .await
        .expect("refused at once")
        .expect("a refusal");
    assert_eq!(Status::from_byte(head[0]), Some(Status::Busy));
    // Another peer is served at once.
    let answer = tokio::time::timeout(
        Duration::from_secs(2),
        honest.request(server.peer_id(), &shared, b"hi"),
    )
    .await
    .expect("served without waiting")
    .expect("served");
    assert_eq!(answer, b"hi");
    drop(held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_ids_made_up_on_one_machine_share_its_quarter_of_a_servers_slots() {
    // Sixteen requests at once, two per peer: without a share per address, eight made-up
    // peers holding two stalled requests each would leave nothing for anyone else.
    let shared = ECHO.with_concurrency(16, 2);
    let server = peer_with(Config {
        connections: ConnectionLimits {
            limit_loopback: true,
            ..ConnectionLimits::default()
        },
        ..Config::loopback()
    })
    .await;
    server
        .serve(shared.clone(), |_, b| async move { Ok(b) })
        .expect("serve");
    let server_addr = addr(&server, "tcp").await;
    let mut crowd = Vec::new();
    let mut held = Vec::new();
    let mut refusals = Vec::new();
    for _ in 0..5 {
        let made_up = peer().await;
        made_up
            .connect(server.peer_id(), vec![server_addr.clone()])
            .await
            .expect("connects");
        for _ in 0..2 {
            // Two bytes of a four-byte length, then nothing: the request holds its slot.
            let mut stream = made_up
                .open_stream(server.peer_id(), shared.name.clone())
                .await
                .expect("open");
            stream.write_all(&[0, 0]).await.expect("write");
            stream.flush().await.expect("flush");
            held.push(stream);
        }
        crowd.push(made_up);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    for stream in &mut held {
        let mut head = [0u8; 5];
        if let Ok(Ok(())) =
            tokio::time::timeout(Duration::from_millis(200), stream.read_exact(&mut head)).await
        {
            let mut reason =
                vec![0u8; u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize];
            stream.read_exact(&mut reason).await.expect("the reason");
            refusals.push((
                Status::from_byte(head[0]),
                String::from_utf8_lossy(&reason).into_owned(),
            ));
        }
    }
    assert_eq!(
        refusals.len(),
        6,
        "ten stalled requests, four held: {refusals:?}"
    );
    for (status, reason) in &refusals {
        assert_eq!(*status, Some(Status::Busy));
        assert!(reason.contains("from your address"), "{reason}");
    }
    // The machine's share is full, so a sixth made-up peer is refused too...
    let sixth = peer().await;
    sixth
        .connect(server.peer_id(), vec![server_addr.clone()])
        .await
        .expect("connects");
    let refused = sixth.request(server.peer_id(), &shared, b"hi").await;
    assert!(
        refused.is_err(),
        "the address's share is taken: {refused:?}"
    );
    // ...and served once the crowd lets go.
    drop(held);
    drop(crowd);
    let answer = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match sixth.request(server.peer_id(), &shared, b"hi").await {
                Ok(answer) => break answer,
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    })
    .await
    .expect("served once the slots are given back");
    assert_eq!(answer, b"hi");
}

/// One stream of a peer that sends and never waits: bytes until a write stalls for a
/// second; the stream is returned open, so what it made the server hold stays held.
async fn send_until_stalled(
    mesh: &Mesh,
    server: peergrid_mesh::PeerId,
    protocol: peergrid_mesh::StreamProtocol,
) -> (u64, Option<peergrid_mesh::Stream>) {
    let Ok(mut stream) = mesh.open_stream(server, protocol).await else {
        return (0, None);
    };
    let chunk = vec![0x55u8; 64 << 10];
    let mut sent = 0u64;
    while let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(1), stream.write(&chunk)).await {
        if n == 0 {
            break;
        }
        sent += n as u64;
    }
    (sent, Some(stream))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crowd_of_peers_that_send_and_never_wait_is_capped_by_memory_and_pins_a_bounded_queue() {
    use peergrid_mesh::config::CONNECTION_UNREAD_BYTES_MAX;

    // Memory for 20 connections' worth of unread bytes within the share.
    let limits = ConnectionLimits {
        memory_bytes: Some(
            (20.0 * CONNECTION_UNREAD_BYTES_MAX as f64
                / peergrid_mesh::config::CONNECTION_MEMORY_SHARE) as u64,
        ),
        ..ConnectionLimits::default()
    };
    assert_eq!(limits.established_cap(), 20);
    let server = peer_with(Config {
        connections: limits,
        ..Config::loopback()
    })
    .await;
    // Streams the server queues and never reads.
    let hoard = peergrid_mesh::StreamProtocol::new("/peergrid/test-hoard/1");
    let _never_read = server.accept_streams(hoard.clone()).expect("accept");
    let server_addr = addr(&server, "tcp").await;
    let honest = peer().await;
    honest
        .connect(server.peer_id(), vec![server_addr.clone()])
        .await
        .expect("connects");

    let mut hogs = Vec::new();
    for _ in 0..30 {
        let hog = peer().await;
        // The handshake may complete before the cap closes the connection.
        let _ = hog
            .connect(server.peer_id(), vec![server_addr.clone()])
            .await;
        hogs.push(hog);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let connected = server.peers().await.expect("peers").len();
    assert!(
        connected <= 20,
        "{connected} peers connected, beyond the cap of 20 this memory allows"
    );

    let floods = hogs.iter().map(|hog| {
        let (hoard, server) = (hoard.clone(), server.peer_id());
        async move {
            let streams = (0..40).map(|_| send_until_stalled(hog, server, hoard.clone()));
            let sent = futures::future::join_all(streams).await;
            let total: u64 = sent.iter().map(|(n, _)| n).sum();
            (
                total,
                sent.into_iter().filter_map(|(_, s)| s).collect::<Vec<_>>(),
            )
        }
    });
    let pinned = futures::future::join_all(floods).await;
    let credit = yamux::DEFAULT_CREDIT as u64;
    let total: u64 = pinned.iter().map(|(n, _)| n).sum();
    // Each peer's unread streams are its share of the protocol's queue, the queue is
    // bounded for everyone, and each queued stream holds at most its initial window.
    for (n, _) in &pinned {
        let share = peergrid_mesh::streams::INBOUND_QUEUE_PER_PEER_MAX as u64 * credit;
        assert!(*n <= share, "one peer made the server hold {n} bytes");
    }
    // Besides the queue, each connection's streams still in negotiation hold their window
    // until they are queued or reset; bytes sent on a stream reset later were held too.
    let queue = peergrid_mesh::streams::INBOUND_QUEUE_MAX as u64 * credit;
    let negotiating =
        connected as u64 * peergrid_mesh::NEGOTIATING_INBOUND_STREAMS_MAX as u64 * credit;
    assert!(
        total <= queue + negotiating,
        "peers made the server hold {total} bytes, more than its queue of {queue} and \
         {negotiating} in negotiation"
    );
    assert!(
        total >= queue / 2,
        "the flood did not happen: {total} bytes"
    );
    honest
        .ping(server.peer_id())
        .await
        .expect("the server still answers the peer it had");
    drop((pinned, hogs));
}
