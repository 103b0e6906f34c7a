//! One stream between two peers on loopback over QUIC and TCP, next to raw TCP on
//! loopback in the same run, and connection setup time.
//!
//! `cargo bench -p peergrid-mesh --bench stream` (set `MESH_BENCH_MIB` to change the
//! 256 MiB transfer size; set `MESH_BENCH_ONLY` to `raw-tcp`, `quic`, `tcp-tls-yamux`
//! or `tcp-noise-yamux` to run that one stream benchmark alone, e.g. under a profiler).

mod common;

use std::time::{Duration, Instant};

use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use peergrid_mesh::multiaddr::Protocol;
use peergrid_mesh::{Config, Multiaddr, StreamProtocol};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use common::pair_with;

const BENCH: StreamProtocol = StreamProtocol::new("/peergrid/bench/1.0.0");
const CHUNK_BYTES: usize = 256 * 1024;
const SETUP_ROUNDS: usize = 20;

fn transfer_bytes() -> u64 {
    std::env::var("MESH_BENCH_MIB")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(256)
        << 20
}

async fn raw_tcp(bytes: u64) -> Duration {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let reader = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.expect("accept");
        socket.set_nodelay(true).expect("nodelay");
        let mut buf = vec![0u8; CHUNK_BYTES];
        let mut got = 0u64;
        while got < bytes {
            let n = socket.read(&mut buf).await.expect("read");
            assert!(n > 0, "early eof");
            got += n as u64;
        }
        Instant::now()
    });
    let mut socket = tokio::net::TcpStream::connect(addr).await.expect("connect");
    socket.set_nodelay(true).expect("nodelay");
    let chunk = vec![1u8; CHUNK_BYTES];
    let start = Instant::now();
    let mut sent = 0u64;
    while sent < bytes {
        socket.write_all(&chunk).await.expect("write");
        sent += CHUNK_BYTES as u64;
    }
    reader.await.expect("reader") - start
}

/// The mesh transports measured: QUIC, and TCP secured by TLS or by Noise.
#[derive(Clone, Copy, PartialEq)]
enum Transport {
    Quic,
    TcpTls,
    TcpNoise,
}

impl Transport {
    const ALL: [Transport; 3] = [Transport::Quic, Transport::TcpTls, Transport::TcpNoise];

    fn name(self) -> &'static str {
        match self {
            Transport::Quic => "quic",
            Transport::TcpTls => "tcp-tls-yamux",
            Transport::TcpNoise => "tcp-noise-yamux",
        }
    }

    /// Peers that offer only this transport's security on TCP.
    fn config(self) -> Config {
        Config {
            tls: self != Transport::TcpNoise,
            ..Config::loopback()
        }
    }

    fn target(self, addrs: &[Multiaddr]) -> Multiaddr {
        let quic = self == Transport::Quic;
        addrs
            .iter()
            .find(|a| a.iter().any(|p| matches!(p, Protocol::QuicV1)) == quic)
            .expect("address of that transport")
            .clone()
    }
}

/// The one benchmark `MESH_BENCH_ONLY` names, if any.
fn only() -> Option<String> {
    std::env::var("MESH_BENCH_ONLY").ok()
}

async fn mesh_stream(bytes: u64, transport: Transport) -> Duration {
    let seed = 1 + 2 * Transport::ALL
        .iter()
        .position(|t| *t == transport)
        .unwrap_or(0) as u8;
    let (sender, receiver) = pair_with(seed, transport.config()).await;
    let mut incoming = receiver.accept_streams(BENCH).expect("accept");
    let target = transport.target(&receiver.listen_addrs().await.expect("addrs"));
    sender
        .connect(receiver.peer_id(), vec![target])
        .await
        .expect("connect");
    let reader = tokio::spawn(async move {
        let (_, mut stream) = incoming.next().await.expect("stream");
        let mut buf = vec![0u8; CHUNK_BYTES];
        let mut got = 0u64;
        while got < bytes {
            let n = stream.read(&mut buf).await.expect("read");
            assert!(n > 0, "early eof");
            got += n as u64;
        }
        Instant::now()
    });
    let mut stream = sender
        .open_stream(receiver.peer_id(), BENCH)
        .await
        .expect("open");
    let chunk = vec![1u8; CHUNK_BYTES];
    let start = Instant::now();
    let mut sent = 0u64;
    while sent < bytes {
        stream.write_all(&chunk).await.expect("write");
        sent += CHUNK_BYTES as u64;
    }
    stream.flush().await.expect("flush");
    let end = reader.await.expect("reader");
    drop((sender, receiver));
    end - start
}

/// Median time from `connect` to an established, authenticated connection, over fresh peers.
async fn setup(transport: Transport) -> Duration {
    let mut times = Vec::new();
    for round in 0..SETUP_ROUNDS {
        let (a, b) = pair_with(10 + 2 * round as u8, transport.config()).await;
        let target = transport.target(&b.listen_addrs().await.expect("addrs"));
        let start = Instant::now();
        a.connect(b.peer_id(), vec![target]).await.expect("connect");
        times.push(start.elapsed());
    }
    times.sort();
    times[times.len() / 2]
}

async fn raw_tcp_connect() -> Duration {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { while listener.accept().await.is_ok() {} });
    let mut times = Vec::new();
    for _ in 0..SETUP_ROUNDS {
        let start = Instant::now();
        let _socket = tokio::net::TcpStream::connect(addr).await.expect("connect");
        times.push(start.elapsed());
    }
    times.sort();
    times[times.len() / 2]
}

fn main() {
    // Logs only when asked for (e.g. `RUST_LOG=yamux=debug` to watch its windows grow).
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let bytes = transfer_bytes();
        let mib = (bytes >> 20) as f64;
        let rate = |d: Duration| mib / d.as_secs_f64();
        if let Some(only) = only() {
            let transport = Transport::ALL.into_iter().find(|t| t.name() == only);
            if transport.is_none() && only != "raw-tcp" {
                let names: Vec<_> = Transport::ALL.iter().map(|t| t.name()).collect();
                panic!("MESH_BENCH_ONLY={only}: expected raw-tcp or one of {names:?}");
            }
            for _ in 0..3 {
                let d = match transport {
                    Some(t) => mesh_stream(bytes, t).await,
                    None => raw_tcp(bytes).await,
                };
                println!(
                    "mesh::stream/transport={only} bytes={bytes} {:>8.0} MiB/s",
                    rate(d)
                );
            }
            return;
        }
        // Best of three each, interleaved so a busy moment of the machine hits all alike.
        let mut tcp = Duration::MAX;
        let mut best = [Duration::MAX; Transport::ALL.len()];
        for _ in 0..3 {
            tcp = tcp.min(raw_tcp(bytes).await);
            for (i, t) in Transport::ALL.into_iter().enumerate() {
                best[i] = best[i].min(mesh_stream(bytes, t).await);
            }
        }
        println!(
            "mesh::stream/transport={:<16} bytes={bytes} {:>8.0} MiB/s  1.00x",
            "raw-tcp",
            rate(tcp)
        );
        for (t, d) in Transport::ALL.into_iter().zip(best) {
            println!(
                "mesh::stream/transport={:<16} bytes={bytes} {:>8.0} MiB/s  {:.2}x of raw TCP",
                t.name(),
                rate(d),
                tcp.as_secs_f64() / d.as_secs_f64()
            );
        }
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        println!(
            "mesh::connect/transport={:<16} median {:>7.3} ms",
            "raw-tcp",
            ms(raw_tcp_connect().await)
        );
        for t in Transport::ALL {
            println!(
                "mesh::connect/transport={:<16} median {:>7.3} ms",
                t.name(),
                ms(setup(t).await)
            );
        }
    });
}
