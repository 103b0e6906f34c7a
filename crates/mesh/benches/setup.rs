//! Connection setup in round trips: two peers on loopback talk through a relay of our
//! own that holds every packet (UDP) or chunk (TCP) for a fixed one-way delay, so each
//! round trip costs a known time and setup time divided by it counts the round trips.
//! Raw TCP `connect` through the same relay is the baseline (one round trip).
//!
//! `cargo bench -p peergrid-mesh --bench setup` (`MESH_BENCH_DELAY_MS` sets the one-way
//! delay, 20 ms by default). The kernel here has no `netem`, hence the relay.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use peergrid_mesh::multiaddr::Protocol;
use peergrid_mesh::{Config, Multiaddr};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc;

const ROUNDS: usize = 9;

fn delay() -> Duration {
    let ms = std::env::var("MESH_BENCH_DELAY_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    Duration::from_millis(ms)
}

/// A queue that hands each item, stamped with when it was put in, to `deliver` `delay`
/// after that, in order.
fn delayed<T: Send + 'static>(
    delay: Duration,
    mut deliver: impl FnMut(T) + Send + 'static,
) -> mpsc::UnboundedSender<(Instant, T)> {
    let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, T)>();
    tokio::spawn(async move {
        while let Some((at, item)) = rx.recv().await {
            tokio::time::sleep_until((at + delay).into()).await;
            deliver(item);
        }
    });
    tx
}

/// A UDP relay to `server` that delays every datagram, each way; returns its address.
async fn udp_relay(server: SocketAddr, delay: Duration) -> SocketAddr {
    let front = Arc::new(UdpSocket::bind("127.0.0.1:0").await.expect("bind"));
    let addr = front.local_addr().expect("addr");
    tokio::spawn(async move {
        // One upstream socket per client, so the server's answers find their way back.
        let mut clients: HashMap<SocketAddr, mpsc::UnboundedSender<(Instant, Vec<u8>)>> =
            HashMap::new();
        let mut buf = vec![0u8; 65_536];
        while let Ok((n, client)) = front.recv_from(&mut buf).await {
            let to_server = clients.entry(client).or_insert_with(|| {
                let back = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
                back.connect(server).expect("connect");
                back.set_nonblocking(true).expect("nonblocking");
                let back = Arc::new(UdpSocket::from_std(back).expect("tokio socket"));
                let reply = front.clone();
                let to_client = delayed(delay, move |d: Vec<u8>| {
                    let _ = reply.try_send_to(&d, client);
                });
                let from_server = back.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 65_536];
                    while let Ok(n) = from_server.recv(&mut buf).await {
                        if to_client.send((Instant::now(), buf[..n].to_vec())).is_err() {
                            break;
                        }
                    }
                });
                delayed(delay, move |d: Vec<u8>| {
                    let _ = back.try_send(&d);
                })
            });
            let _ = to_server.send((Instant::now(), buf[..n].to_vec()));
        }
    });
    addr
}

/// Copy `from` into `to`, each chunk `delay` after it was read, in order.
fn delayed_pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    delay: Duration,
) {
    let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    tokio::spawn(async move {
        while let Some((at, chunk)) = rx.recv().await {
            tokio::time::sleep_until((at + delay).into()).await;
            if to.write_all(&chunk).await.is_err() {
                break;
            }
        }
    });
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65_536];
        while let Ok(n) = from.read(&mut buf).await {
            if n == 0 || tx.send((Instant::now(), buf[..n].to_vec())).is_err() {
                break;
            }
        }
    });
}

/// A TCP relay to `server` that delays every chunk, each way; returns its address.
async fn tcp_relay(server: SocketAddr, delay: Duration) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            tokio::spawn(async move {
                // The client's connect completes at once on loopback; TCP's own handshake
                // is one round trip, after which the client's first bytes take one more
                // one-way trip. Not reading for that round trip puts them where they
                // would be on a real link: at the server three one-way delays in.
                tokio::time::sleep(delay * 2).await;
                let Ok(upstream) = TcpStream::connect(server).await else {
                    return;
                };
                let _ = client.set_nodelay(true);
                let _ = upstream.set_nodelay(true);
                let (cr, cw) = client.into_split();
                let (ur, uw) = upstream.into_split();
                delayed_pipe(cr, uw, delay);
                delayed_pipe(ur, cw, delay);
            });
        }
    });
    addr
}

fn port_of(addr: &Multiaddr, quic: bool) -> Option<u16> {
    addr.iter().find_map(|p| match p {
        Protocol::Udp(port) if quic => Some(port),
        Protocol::Tcp(port) if !quic => Some(port),
        _ => None,
    })
}

fn relayed(port: u16, quic: bool) -> Multiaddr {
    let text = if quic {
        format!("/ip4/127.0.0.1/udp/{port}/quic-v1")
    } else {
        format!("/ip4/127.0.0.1/tcp/{port}")
    };
    text.parse().expect("multiaddr")
}

/// Median time for a fresh peer to connect to another through the delaying relay, until
/// the connection is established and authenticated.
/// `tls` chooses TCP's security: TLS, or Noise alone.
async fn mesh_setup(quic: bool, tls: bool, delay: Duration) -> Duration {
    let mut times = Vec::new();
    for round in 0..ROUNDS {
        let seed = 100 + 2 * round as u8 + if quic { 50 } else { 0 };
        let config = Config {
            tls,
            ..Config::loopback()
        };
        let (a, b) = common::pair_with(seed, config).await;
        let port = b
            .listen_addrs()
            .await
            .expect("addrs")
            .iter()
            .find_map(|a| port_of(a, quic))
            .expect("a listen address of that transport");
        let server = SocketAddr::from(([127, 0, 0, 1], port));
        let relay = if quic {
            udp_relay(server, delay).await
        } else {
            tcp_relay(server, delay).await
        };
        let start = Instant::now();
        a.connect(b.peer_id(), vec![relayed(relay.port(), quic)])
            .await
            .expect("connect");
        times.push(start.elapsed());
    }
    times.sort();
    times[times.len() / 2]
}

/// Median time to connect with raw TCP through the relay and get one byte echoed: two
/// round trips on a real link (the handshake, then the echo), so it checks the relay.
async fn raw_setup(delay: Duration) -> Duration {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let server = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut byte = [0u8; 1];
                if s.read_exact(&mut byte).await.is_ok() {
                    let _ = s.write_all(&byte).await;
                }
            });
        }
    });
    let relay = tcp_relay(server, delay).await;
    let mut times = Vec::new();
    for _ in 0..ROUNDS {
        let start = Instant::now();
        let mut s = TcpStream::connect(relay).await.expect("connect");
        s.set_nodelay(true).expect("nodelay");
        s.write_all(b"x").await.expect("write");
        let mut byte = [0u8; 1];
        s.read_exact(&mut byte).await.expect("echo");
        times.push(start.elapsed());
    }
    times.sort();
    times[times.len() / 2]
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let delay = delay();
        let rtt = delay * 2;
        let raw = raw_setup(delay).await;
        let quic = mesh_setup(true, true, delay).await;
        let tls = mesh_setup(false, true, delay).await;
        let noise = mesh_setup(false, false, delay).await;
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let trips = |d: Duration| d.as_secs_f64() / rtt.as_secs_f64();
        println!("one-way delay {} ms, round trip {} ms", ms(delay), ms(rtt));
        println!(
            "mesh::setup/transport=raw-tcp+echo     median {:>7.1} ms  {:.2} round trips",
            ms(raw),
            trips(raw)
        );
        println!(
            "mesh::setup/transport=quic             median {:>7.1} ms  {:.2} round trips",
            ms(quic),
            trips(quic)
        );
        println!(
            "mesh::setup/transport=tcp-tls-yamux    median {:>7.1} ms  {:.2} round trips",
            ms(tls),
            trips(tls)
        );
        println!(
            "mesh::setup/transport=tcp-noise-yamux  median {:>7.1} ms  {:.2} round trips",
            ms(noise),
            trips(noise)
        );
    });
}
