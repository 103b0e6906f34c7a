//! Several hosts in network namespaces: discovery through one bootstrap peer, a host
//! behind NAT reached through a relay and then directly by hole punching, and a cut
//! link that recovers. Needs root and iproute2 (and iptables for NAT); skips with a
//! printed reason elsewhere, and fails under CI.

mod common;

use std::time::Duration;

use common::key;
use common::ns::{NsPeer, spawn_in};
use peergrid_mesh::bulk;
use peergrid_mesh::multiaddr::Protocol;
use peergrid_mesh::netlab::{Host, Lab, skip_unless_available};
use peergrid_mesh::{Config, Mesh, Multiaddr, with_peer};

const PORT: u16 = 4001;

fn listen_all() -> Vec<Multiaddr> {
    vec![
        format!("/ip4/0.0.0.0/udp/{PORT}/quic-v1")
            .parse()
            .expect("addr"),
        format!("/ip4/0.0.0.0/tcp/{PORT}").parse().expect("addr"),
    ]
}

fn tcp_addr(host: &Host, mesh: &Mesh) -> Multiaddr {
    with_peer(
        format!("/ip4/{}/tcp/{PORT}", host.ip)
            .parse()
            .expect("addr"),
        mesh.peer_id(),
    )
}

fn quic_addr(host: &Host, mesh: &Mesh) -> Multiaddr {
    with_peer(
        format!("/ip4/{}/udp/{PORT}/quic-v1", host.ip)
            .parse()
            .expect("addr"),
        mesh.peer_id(),
    )
}

fn public_peer(host: &Host, config: Config) -> NsPeer {
    common::init_logging();
    spawn_in(
        &host.ns,
        key(),
        Config {
            listen: listen_all(),
            ..config
        },
    )
}

async fn send_and_check(from: &Mesh, to: &NsPeer, bytes: u64) -> bulk::Transfer {
    let transfer = bulk::send(from, to.mesh.peer_id(), bytes, |_| {})
        .await
        .expect("transfer");
    assert!(transfer.confirmed_intact(), "{transfer:?}");
    transfer
}

async fn eventually<T, F: std::future::Future<Output = Option<T>>>(
    seconds: u64,
    mut probe: impl FnMut() -> F,
) -> Option<T> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(seconds);
    while tokio::time::Instant::now() < deadline {
        if let Some(value) = probe().await {
            return Some(value);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hosts_find_each_other_through_one_bootstrap_peer() {
    if skip_unless_available() {
        return;
    }
    let mut lab = Lab::new();
    let (h1, h2, h3) = (
        lab.public_host("h1", 11),
        lab.public_host("h2", 12),
        lab.public_host("h3", 13),
    );
    let boot = public_peer(&h1, Config::default());
    let config = || Config {
        bootstrap: vec![tcp_addr(&h1, &boot.mesh)],
        ..Config::default()
    };
    let (b, c) = (public_peer(&h2, config()), public_peer(&h3, config()));
    for (from, to, to_host) in [(&c, &b, &h2), (&b, &c, &h3)] {
        let found = eventually(20, || async {
            from.mesh.find_peer(to.mesh.peer_id()).await.ok()
        })
        .await
        .expect("found through the DHT");
        assert!(
            found
                .iter()
                .any(|a| a.to_string().contains(&to_host.ip.to_string())),
            "{found:?}"
        );
        from.mesh
            .connect(to.mesh.peer_id(), Vec::new())
            .await
            .expect("connects by peer id");
        send_and_check(&from.mesh, to, 4 << 20).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_behind_nat_is_reached_through_a_relay() {
    if skip_unless_available() {
        return;
    }
    let mut lab = Lab::new();
    let relay_host = lab.public_host("relay", 11);
    let dialer_host = lab.public_host("dial", 12);
    let (router, hidden_host) = lab.natted_host("nat", 254, 1);
    let relay = public_peer(
        &relay_host,
        Config {
            relay_server: true,
            ..Config::default()
        },
    );
    let relay_addr = quic_addr(&relay_host, &relay.mesh);
    // Reservations over QUIC and TCP: each connection to the relay teaches the hidden
    // host its public (mapped) address for that transport, and QUIC (UDP) is what
    // hole punching through a NAT succeeds with most often.
    let hidden = public_peer(
        &hidden_host,
        Config {
            relays: vec![relay_addr.clone(), tcp_addr(&relay_host, &relay.mesh)],
            ..Config::default()
        },
    );
    let dialer = public_peer(&dialer_host, Config::default());

    let reserved = eventually(20, || async {
        let status = hidden.mesh.status().await.ok()?;
        (!status.relay_reservations.is_empty()).then_some(())
    })
    .await;
    assert!(
        reserved.is_some(),
        "the hidden host holds a relay reservation"
    );

    // The NAT is real: the hidden host's own address cannot be dialed.
    let direct = tokio::time::timeout(
        Duration::from_secs(5),
        dialer.mesh.connect(
            hidden.mesh.peer_id(),
            vec![tcp_addr(&hidden_host, &hidden.mesh)],
        ),
    )
    .await;
    assert!(
        !matches!(direct, Ok(Ok(()))),
        "dialed a host behind NAT directly"
    );

    dialer
        .mesh
        .connect(relay.mesh.peer_id(), vec![relay_addr.clone()])
        .await
        .expect("dialer reaches the relay");
    let circuit = with_peer(relay_addr.with(Protocol::P2pCircuit), hidden.mesh.peer_id());
    dialer
        .mesh
        .connect(hidden.mesh.peer_id(), vec![circuit])
        .await
        .expect("connects through the relay");
    // 8 MiB: far beyond libp2p's default 128 KiB per relayed circuit.
    send_and_check(&dialer.mesh, &hidden, 8 << 20).await;

    // DCUtR starts on its own once the relayed connection is up. The router drops every
    // connection the private side did not open, so a direct connection to its public address
    // exists only if the hidden host punched the hole itself.
    let router_prefix = format!("/ip4/{}/", router.ip);
    let direct = eventually(20, || async {
        let peers = dialer.mesh.peers().await.ok()?;
        let info = peers
            .into_iter()
            .find(|p| p.peer_id == hidden.mesh.peer_id().to_string())?;
        info.connections
            .iter()
            .any(|a| a.starts_with(&router_prefix) && !a.contains("/p2p-circuit"))
            .then_some(info)
    })
    .await;
    let Some(info) = direct else {
        let dialer_view = dialer.mesh.peers().await.expect("peers");
        let hidden_view = hidden.mesh.peers().await.expect("peers");
        panic!(
            "the relayed connection never upgraded to a direct one through the NAT \
             ({router_prefix}…); dialer sees {dialer_view:?}, hidden host sees {hidden_view:?}"
        );
    };
    assert!(!info.relayed, "{info:?}");
    let punched = eventually(10, || async {
        let peers = hidden.mesh.peers().await.ok()?;
        peers
            .into_iter()
            .find(|p| p.peer_id == dialer.mesh.peer_id().to_string())?
            .hole_punch
    })
    .await;
    assert_eq!(
        punched.as_deref(),
        Some("direct connection established"),
        "the hidden host's DCUtR outcome"
    );
    send_and_check(&dialer.mesh, &hidden, 8 << 20).await;

    // AutoNAT: peers that tried to dial back tell each host what it is.
    for (mesh, expected) in [(&hidden.mesh, "private"), (&relay.mesh, "public")] {
        let verdict = eventually(30, || async {
            let nat = mesh.status().await.ok()?.nat;
            (nat == expected).then_some(nat)
        })
        .await;
        assert_eq!(verdict.as_deref(), Some(expected));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_link_recovers_without_restarting() {
    if skip_unless_available() {
        return;
    }
    let mut lab = Lab::new();
    let (h1, h2) = (lab.public_host("h1", 11), lab.public_host("h2", 12));
    let (a, b) = (
        public_peer(&h1, Config::default()),
        public_peer(&h2, Config::default()),
    );
    a.mesh
        .connect(
            b.mesh.peer_id(),
            vec![quic_addr(&h2, &b.mesh), tcp_addr(&h2, &b.mesh)],
        )
        .await
        .expect("connects");
    send_and_check(&a.mesh, &b, 1 << 20).await;

    lab.set_link(&h2, false);
    let cut = tokio::time::timeout(Duration::from_secs(2), a.mesh.ping(b.mesh.peer_id())).await;
    assert!(!matches!(cut, Ok(Ok(_))), "a ping crossed a cut link");
    tokio::time::sleep(Duration::from_secs(2)).await;
    lab.set_link(&h2, true);

    // Same processes, same swarms: either the connection survived the cut or the
    // next attempt dials again.
    let recovered = eventually(45, || async {
        let attempt = async {
            a.mesh
                .connect(
                    b.mesh.peer_id(),
                    vec![quic_addr(&h2, &b.mesh), tcp_addr(&h2, &b.mesh)],
                )
                .await
                .ok()?;
            a.mesh.ping(b.mesh.peer_id()).await.ok()
        };
        tokio::time::timeout(Duration::from_secs(3), attempt)
            .await
            .ok()
            .flatten()
    })
    .await;
    assert!(recovered.is_some(), "the link never recovered");
    send_and_check(&a.mesh, &b, 1 << 20).await;
}
