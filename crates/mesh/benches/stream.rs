//! One stream between two peers on loopback over QUIC and TCP, next to raw TCP on
//! loopback in the same run, and connection setup time.
//!
//! `cargo bench -p peergrid-mesh --bench stream` (set `MESH_BENCH_MIB` to change the
//! 256 MiB transfer size; set `MESH_BENCH_ONLY` to `raw-tcp`, `quic` or
//! `tcp-noise-yamux` to run that one stream benchmark alone, e.g. under a profiler).

mod common;

use std::time::{Duration, Instant};

use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use peergrid_mesh::multiaddr::Protocol;
use peergrid_mesh::{Multiaddr, StreamProtocol};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use common::pair;

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

/// The one transport `MESH_BENCH_ONLY` names, if any.
fn only() -> Option<String> {
    std::env::var("MESH_BENCH_ONLY").ok()
}

fn addr_of(addrs: &[Multiaddr], quic: bool) -> Multiaddr {
    addrs
        .iter()
        .find(|a| a.iter().any(|p| matches!(p, Protocol::QuicV1)) == quic)
        .expect("address of that transport")
        .clone()
}

async fn mesh_stream(bytes: u64, quic: bool) -> Duration {
    let (sender, receiver) = pair(if quic { 1 } else { 3 }).await;
    let mut incoming = receiver.accept_streams(BENCH).expect("accept");
    let target = addr_of(&receiver.listen_addrs().await.expect("addrs"), quic);
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
async fn setup(quic: bool) -> Duration {
    let mut times = Vec::new();
    for round in 0..SETUP_ROUNDS {
        let (a, b) = pair(10 + 2 * round as u8).await;
        let target = addr_of(&b.listen_addrs().await.expect("addrs"), quic);
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
            for _ in 0..3 {
                let d = match only.as_str() {
                    "raw-tcp" => raw_tcp(bytes).await,
                    "quic" => mesh_stream(bytes, true).await,
                    "tcp-noise-yamux" => mesh_stream(bytes, false).await,
                    other => {
                        panic!("MESH_BENCH_ONLY={other}: expected raw-tcp, quic or tcp-noise-yamux")
                    }
                };
                println!(
                    "mesh::stream/transport={only} bytes={bytes} {:>8.0} MiB/s",
                    rate(d)
                );
            }
            return;
        }
        // Best of three each, interleaved so a busy moment of the machine hits all alike.
        let (mut tcp, mut quic, mut ytcp) = (Duration::MAX, Duration::MAX, Duration::MAX);
        for _ in 0..3 {
            tcp = tcp.min(raw_tcp(bytes).await);
            quic = quic.min(mesh_stream(bytes, true).await);
            ytcp = ytcp.min(mesh_stream(bytes, false).await);
        }
        println!(
            "mesh::stream/transport=raw-tcp bytes={bytes}      {:>8.0} MiB/s  1.00x",
            rate(tcp)
        );
        println!(
            "mesh::stream/transport=quic bytes={bytes}         {:>8.0} MiB/s  {:.2}x of raw TCP",
            rate(quic),
            tcp.as_secs_f64() / quic.as_secs_f64()
        );
        println!(
            "mesh::stream/transport=tcp-noise-yamux bytes={bytes} {:>8.0} MiB/s  {:.2}x of raw TCP",
            rate(ytcp),
            tcp.as_secs_f64() / ytcp.as_secs_f64()
        );
        let raw = raw_tcp_connect().await;
        let q = setup(true).await;
        let t = setup(false).await;
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        println!(
            "mesh::connect/transport=raw-tcp        median {:>7.3} ms",
            ms(raw)
        );
        println!(
            "mesh::connect/transport=quic           median {:>7.3} ms",
            ms(q)
        );
        println!(
            "mesh::connect/transport=tcp-noise-yamux median {:>7.3} ms",
            ms(t)
        );
    });
}
