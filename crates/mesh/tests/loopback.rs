//! Two or more peers on loopback: connecting, discovery, streams, protocols, gossip, relays.

mod common;

use std::time::Duration;

use common::{addr, peer, peer_with};
use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use peergrid_mesh::bulk::{self, Receiver};
use peergrid_mesh::{Config, Error, RelayLimits, RpcProtocol, StreamProtocol, with_peer};

const ECHO: RpcProtocol = RpcProtocol::new("/peergrid/test-echo/1.0.0");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_connect_over_quic_and_tcp_and_their_ids_are_their_accounts() {
    for transport in ["quic-v1", "tcp"] {
        let (a, b) = (peer().await, peer().await);
        assert_eq!(a.peer_id().to_string(), a.account().to_string());
        a.connect(b.peer_id(), vec![addr(&b, transport).await])
            .await
            .expect("connects");
        let rtt = a.ping(b.peer_id()).await.expect("ping");
        assert!(rtt < Duration::from_secs(1), "{transport}: rtt {rtt:?}");
        let peers = b.peers().await.expect("peers");
        assert_eq!(peers.len(), 1);
        assert_eq!(peers[0].peer_id, a.account().to_string());
        assert!(
            peers[0].connections[0].contains(transport.trim_end_matches("-v1")),
            "{transport}: {:?}",
            peers[0].connections
        );
        // Only the dialer knows where the other listens: b's view of a's connection is
        // a's outgoing port, not an address to dial a at.
        assert!(peers[0].dialed.is_empty(), "{:?}", peers[0].dialed);
        let dialed = a.peers().await.expect("peers")[0].dialed.clone();
        assert_eq!(dialed, vec![addr(&b, transport).await.to_string()]);
    }
}

/// On TCP our peers dial with TLS and accept TLS or Noise: a peer that speaks only
/// Noise (as many libp2p peers do) still reaches us, we reach it (TLS refused, then
/// Noise on a second connection), and data crosses intact every way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn noise_only_peers_reach_tls_peers_over_tcp() {
    let noise_only = Config {
        tls: false,
        ..Config::loopback()
    };
    for (dialer_tls, listener_tls) in [(false, true), (true, true), (false, false), (true, false)] {
        let config = |tls| {
            if tls {
                Config::loopback()
            } else {
                noise_only.clone()
            }
        };
        let receiver = peer_with(config(listener_tls)).await;
        let sender = peer_with(config(dialer_tls)).await;
        let _served = Receiver::serve(&receiver, 1 << 30).expect("serve");
        let connected = sender
            .connect(receiver.peer_id(), vec![addr(&receiver, "tcp").await])
            .await;
        connected.unwrap_or_else(|e| {
            panic!("dialer TLS {dialer_tls}, listener TLS {listener_tls}: {e:?}")
        });
        let transfer = bulk::send(&sender, receiver.peer_id(), 1 << 20, |_| {})
            .await
            .expect("transfer");
        assert!(
            transfer.confirmed_intact(),
            "dialer TLS {dialer_tls}, listener TLS {listener_tls}: {transfer:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_is_found_through_one_bootstrap_peer() {
    let boot = peer().await;
    let boot_addr = addr(&boot, "tcp").await;
    let config = || Config {
        bootstrap: vec![boot_addr.clone()],
        ..Config::loopback()
    };
    let (b, c) = (peer_with(config()).await, peer_with(config()).await);
    // C knows only the bootstrap peer; B's address comes from the DHT.
    let mut found = Vec::new();
    for _ in 0..50 {
        if let Ok(addrs) = c.find_peer(b.peer_id()).await {
            found = addrs;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!found.is_empty(), "B's addresses found through the DHT");
    c.connect(b.peer_id(), Vec::new())
        .await
        .expect("connects by peer id alone");
    c.ping(b.peer_id()).await.expect("ping");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_response_round_trips_and_respects_limits() {
    let (server, client) = (peer().await, peer().await);
    server
        .serve(ECHO, |_, body| async move {
            if body == b"fail" {
                Err("asked to fail".to_string())
            } else {
                Ok(body)
            }
        })
        .expect("serve");
    assert!(matches!(
        server.serve(ECHO, |_, b| async move { Ok(b) }),
        Err(Error::AlreadyRegistered(_))
    ));
    client
        .connect(server.peer_id(), vec![addr(&server, "quic-v1").await])
        .await
        .expect("connects");
    let answer = client
        .request(server.peer_id(), &ECHO, b"hello")
        .await
        .expect("answer");
    assert_eq!(answer, b"hello");

    let refused = client.request(server.peer_id(), &ECHO, b"fail").await;
    assert!(
        matches!(&refused, Err(peergrid_mesh::RpcError::Refused { reason, .. }) if reason == "asked to fail"),
        "{refused:?}"
    );
    let too_big = vec![0u8; ECHO.request_bytes_max + 1];
    assert!(matches!(
        client.request(server.peer_id(), &ECHO, &too_big).await,
        Err(peergrid_mesh::RpcError::RequestTooLarge { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_protocol_is_a_clear_error_and_the_peer_stays_up() {
    let (server, client) = (peer().await, peer().await);
    server
        .serve(ECHO, |_, b| async move { Ok(b) })
        .expect("serve");
    client
        .connect(server.peer_id(), vec![addr(&server, "tcp").await])
        .await
        .expect("connects");
    let unknown = RpcProtocol::new("/peergrid/test-echo/2.0.0");
    let error = client.request(server.peer_id(), &unknown, b"hi").await;
    assert!(
        matches!(
            error,
            Err(peergrid_mesh::RpcError::Mesh(
                Error::UnsupportedProtocol { .. }
            ))
        ),
        "{error:?}"
    );
    assert_eq!(
        client
            .request(server.peer_id(), &ECHO, b"hi")
            .await
            .expect("still served"),
        b"hi"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_transfer_is_confirmed_by_hash_over_both_transports() {
    for transport in ["quic-v1", "tcp"] {
        let (receiver, sender) = (peer().await, peer().await);
        let served = Receiver::serve(&receiver, 1 << 30).expect("serve");
        sender
            .connect(receiver.peer_id(), vec![addr(&receiver, transport).await])
            .await
            .expect("connects");
        let mut last = 0;
        let transfer = bulk::send(&sender, receiver.peer_id(), 8 << 20, |n| last = n)
            .await
            .expect("transfer");
        assert_eq!(last, 8 << 20);
        assert!(transfer.confirmed_intact(), "{transfer:?}");
        let mut received = served.received();
        for _ in 0..20 {
            if !received.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            received = served.received();
        }
        assert_eq!(received.len(), 1);
        assert_eq!(received[0].blake3, transfer.blake3);
        assert_eq!(received[0].peer, sender.peer_id().to_string());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_is_held_back_while_the_reader_does_not_read() {
    const RAW: StreamProtocol = StreamProtocol::new("/peergrid/test-raw/1.0.0");
    for transport in ["quic-v1", "tcp"] {
        let (receiver, sender) = (peer().await, peer().await);
        let mut incoming = receiver.accept_streams(RAW).expect("accept");
        sender
            .connect(receiver.peer_id(), vec![addr(&receiver, transport).await])
            .await
            .expect("connects");
        let mut out = sender
            .open_stream(receiver.peer_id(), RAW)
            .await
            .expect("open");
        let total = 32usize << 20;
        let writer = tokio::spawn(async move {
            let chunk = vec![7u8; 1 << 20];
            for _ in 0..(total >> 20) {
                out.write_all(&chunk).await?;
            }
            out.close().await?;
            Ok::<_, std::io::Error>(())
        });
        // The stream is only registered at the receiver when the writer's first bytes
        // arrive; take it but do not read.
        let (_, mut inbound) = incoming.next().await.expect("inbound stream");
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert!(
            !writer.is_finished(),
            "{transport}: 32 MiB were accepted by a peer that read nothing"
        );
        let mut got = Vec::new();
        inbound.read_to_end(&mut got).await.expect("read");
        assert_eq!(got.len(), total);
        writer
            .await
            .expect("join")
            .expect("writer finishes once read");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gossip_reaches_every_subscriber() {
    let a = peer().await;
    let a_addr = addr(&a, "tcp").await;
    let config = || Config {
        bootstrap: vec![a_addr.clone()],
        ..Config::loopback()
    };
    let (b, c) = (peer_with(config()).await, peer_with(config()).await);
    let mut subs = Vec::new();
    for mesh in [&a, &b, &c] {
        subs.push(mesh.subscribe("grid/announce").await.expect("subscribe"));
    }
    // Meshes form on heartbeats; publish until it is delivered.
    let mut got = None;
    for i in 0..50u32 {
        let _ = b
            .publish("grid/announce", format!("hello {i}").into_bytes())
            .await;
        if let Ok(Ok(message)) =
            tokio::time::timeout(Duration::from_millis(200), subs[2].recv()).await
        {
            got = Some(message);
            break;
        }
    }
    let message = got.expect("C received B's announcement");
    assert_eq!(message.source, Some(b.peer_id()));
    assert!(message.data.starts_with(b"hello"));
}

/// Send 4 MiB through a relay with `limits` to a peer that is reachable only through
/// it, from a peer that cannot be reached at all; returns whether it arrived intact.
async fn relayed_transfer(limits: RelayLimits) -> Result<bulk::Transfer, bulk::BulkError> {
    let relay = peer_with(Config {
        relay_server: true,
        relay: limits,
        ..Config::loopback()
    })
    .await;
    let relay_addr = addr(&relay, "tcp").await;
    // The hidden peer listens on nothing but its relay circuit.
    let hidden = peer_with(Config {
        listen: Vec::new(),
        relays: vec![relay_addr.clone()],
        ..Config::loopback()
    })
    .await;
    Receiver::serve(&hidden, 1 << 30).expect("serve");
    let mut reserved = false;
    for _ in 0..200 {
        if !hidden
            .status()
            .await
            .expect("status")
            .relay_reservations
            .is_empty()
        {
            reserved = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(reserved, "the hidden peer holds a reservation on the relay");
    // The dialer listens on nothing either, so no hole punch can replace the relayed
    // connection: the bytes below must cross the relay.
    let dialer = peer_with(Config {
        listen: Vec::new(),
        ..Config::loopback()
    })
    .await;
    let circuit = with_peer(
        relay_addr.with(peergrid_mesh::multiaddr::Protocol::P2pCircuit),
        hidden.peer_id(),
    );
    dialer
        .connect(hidden.peer_id(), vec![circuit])
        .await
        .expect("connects through the relay");
    // 4 MiB: far above libp2p's default 128 KiB per relayed circuit.
    let transfer = bulk::send(&dialer, hidden.peer_id(), 4 << 20, |_| {}).await?;
    let peers = dialer.peers().await.expect("peers");
    let via = peers
        .iter()
        .find(|p| p.peer_id == hidden.peer_id().to_string())
        .expect("still connected");
    assert!(via.relayed, "{via:?}");
    Ok(transfer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn megabytes_flow_through_a_relay() {
    let transfer = relayed_transfer(RelayLimits::default())
        .await
        .expect("transfer through the relay");
    assert!(transfer.confirmed_intact());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn libp2ps_default_relay_limit_would_cut_the_same_transfer() {
    let result = relayed_transfer(RelayLimits {
        circuit_bytes_max: 128 * 1024,
        ..RelayLimits::default()
    })
    .await;
    assert!(
        !result.as_ref().is_ok_and(bulk::Transfer::confirmed_intact),
        "{result:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_started_before_its_bootstrap_peer_joins_it_once_it_is_up() {
    // The bootstrap peer's key and port are known ahead, as a genesis names them. Its
    // address is one no other peer of these tests listens on: a port found free on
    // 127.0.0.1 may be taken by another test's peer before this one listens on it.
    let boot_key = common::key();
    let port = std::net::TcpListener::bind("127.0.0.2:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let boot_id = peergrid_mesh::identity::peer_id(&boot_key.account()).expect("peer id");
    let boot_addr: peergrid_mesh::Multiaddr = format!("/ip4/127.0.0.2/tcp/{port}/p2p/{boot_id}")
        .parse()
        .expect("multiaddr");
    let early = peer_with(Config {
        bootstrap: vec![boot_addr],
        ..Config::loopback()
    })
    .await;
    // Its first dial found nobody; the bootstrap peer comes up a little later.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let boot = peergrid_mesh::Mesh::start(
        &boot_key,
        Config {
            listen: vec![format!("/ip4/127.0.0.2/tcp/{port}").parse().expect("addr")],
            ..Config::loopback()
        },
    )
    .await
    .expect("bootstrap peer starts");
    let mut joined = false;
    for _ in 0..100 {
        if boot
            .peers()
            .await
            .expect("peers")
            .iter()
            .any(|p| p.peer_id == early.peer_id().to_string())
        {
            joined = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        joined,
        "the early peer dialed its bootstrap peer again and joined"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listen_port_another_peer_holds_is_refused() {
    // libp2p listens with SO_REUSEPORT: unchecked, a second node on the port would start
    // and take a share of the first one's incoming connections.
    let first = peer_with(Config::loopback()).await;
    let taken = first
        .listen_addrs()
        .await
        .expect("listen addresses")
        .into_iter()
        .find(|a| a.to_string().contains("/tcp/"))
        .expect("a tcp address");
    let second = peergrid_mesh::Mesh::start(
        &common::key(),
        Config {
            listen: vec![taken.clone()],
            ..Config::loopback()
        },
    )
    .await;
    let err = second.expect_err("a second peer on the same port must be refused");
    let port = taken
        .iter()
        .find_map(|p| match p {
            peergrid_mesh::multiaddr::Protocol::Tcp(port) => Some(port),
            _ => None,
        })
        .expect("a tcp port");
    assert!(
        err.to_string()
            .contains(&format!("TCP port {port} is in use by another program")),
        "{err}"
    );
    // The first peer keeps its port: a peer on a port of its own still reaches it.
    let other = peer_with(Config::loopback()).await;
    other
        .connect(first.peer_id(), vec![taken])
        .await
        .expect("the first peer still answers on its port");
}

/// A peer whose address has no listener (down, restarting): the dial error says so in a
/// few words, not in libp2p's nesting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dialing_a_stopped_peer_says_the_connection_was_refused() {
    let (a, b) = (peer().await, peer().await);
    // Where nothing listens any more.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let at: peergrid_mesh::Multiaddr = format!("/ip4/127.0.0.1/tcp/{port}")
        .parse()
        .expect("address");
    let err = a
        .connect(b.peer_id(), vec![at.clone()])
        .await
        .expect_err("nothing listens");
    let said = err.to_string();
    assert!(
        said.contains(&format!("connection refused at {at}"))
            && said.contains("down or restarting"),
        "{said}"
    );
}
