//! One stream between two peers on loopback over QUIC and TCP, next to raw TCP on
//! loopback in the same run, and connection setup time.
//!
//! The receiving end of every stream (raw TCP included) runs in a process of its own,
//! as a peer on another machine would: two peers sharing one runtime take turns on
//! its threads instead of running side by side. Each process runs tokio on half the
//! cores (`MESH_BENCH_WORKERS` overrides). The time runs from the first byte written
//! to the receiver's acknowledgement that it has read them all.
//!
//! `cargo bench -p peergrid-mesh --bench stream` (set `MESH_BENCH_MIB` to change the
//! 256 MiB transfer size; set `MESH_BENCH_ONLY` to `raw-tcp`, `quic`, `tcp-tls-yamux`
//! or `tcp-noise-yamux` to run that one stream benchmark alone, e.g. under a profiler).

mod common;

use std::time::{Duration, Instant};

use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use peergrid_core::Keypair;
use peergrid_mesh::multiaddr::Protocol;
use peergrid_mesh::{Config, Mesh, Multiaddr, PeerId, StreamProtocol};
use std::io::BufRead;

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

/// Set in the receiving child process: what it receives ("raw-tcp" or a transport).
const RECEIVER_ENV: &str = "MESH_BENCH_RECEIVER";
/// The one-byte acknowledgement a receiver sends once it has read everything.
const ACK: u8 = 0xac;

/// Starts this bench again as the receiving process; returns it and the first line it
/// prints (where to reach it).
fn spawn_receiver(role: &str, bytes: u64, seed: u8) -> (Receiver, String) {
    let mut child = std::process::Command::new(std::env::current_exe().expect("own path"))
        .env(RECEIVER_ENV, role)
        .env("MESH_BENCH_BYTES", bytes.to_string())
        .env("MESH_BENCH_SEED", seed.to_string())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start the receiving process");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    std::io::BufReader::new(stdout)
        .read_line(&mut line)
        .expect("the receiver says where it listens");
    (Receiver(child), line.trim().to_string())
}

/// The receiving process, killed if the bench ends early.
struct Receiver(std::process::Child);

impl Receiver {
    async fn wait(mut self) {
        let status = tokio::task::block_in_place(|| self.0.wait()).expect("wait");
        assert!(status.success(), "the receiving process failed: {status}");
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Reads `bytes` from `reader`, then acknowledges them on `writer`.
async fn receive<R, W>(reader: &mut R, writer: &mut W, bytes: u64)
where
    R: futures::AsyncRead + Unpin,
    W: futures::AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; CHUNK_BYTES];
    let mut got = 0u64;
    while got < bytes {
        let n = reader.read(&mut buf).await.expect("read");
        assert!(n > 0, "early eof");
        got += n as u64;
    }
    writer.write_all(&[ACK]).await.expect("ack");
    writer.flush().await.expect("flush ack");
}

/// Writes `bytes` on `writer` and waits for the receiver's acknowledgement.
async fn send<R, W>(reader: &mut R, writer: &mut W, bytes: u64) -> Duration
where
    R: futures::AsyncRead + Unpin,
    W: futures::AsyncWrite + Unpin,
{
    let chunk = vec![1u8; CHUNK_BYTES];
    let start = Instant::now();
    let mut sent = 0u64;
    while sent < bytes {
        writer.write_all(&chunk).await.expect("write");
        sent += CHUNK_BYTES as u64;
    }
    writer.flush().await.expect("flush");
    let mut ack = [0u8; 1];
    reader.read_exact(&mut ack).await.expect("ack");
    assert_eq!(ack[0], ACK);
    start.elapsed()
}

/// The receiving process: serve one transfer, then exit.
async fn receiver(role: &str, bytes: u64, seed: u8) {
    if role == "raw-tcp" {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        println!("{}", listener.local_addr().expect("addr"));
        let (socket, _) = listener.accept().await.expect("accept");
        socket.set_nodelay(true).expect("nodelay");
        let (mut r, mut w) = futures_halves(socket);
        receive(&mut r, &mut w, bytes).await;
        let _ = r.read(&mut [0u8; 1]).await;
        return;
    }
    let transport = Transport::named(role).expect("a transport");
    let mesh = Mesh::start(&Keypair::from_seed([seed; 32]), transport.config())
        .await
        .expect("start");
    let mut incoming = mesh.accept_streams(BENCH).expect("accept");
    let target = transport.target(&mesh.listen_addrs().await.expect("addrs"));
    println!("{} {target}", mesh.peer_id());
    let (_, stream) = incoming.next().await.expect("stream");
    let (mut r, mut w) = stream.split();
    receive(&mut r, &mut w, bytes).await;
    // Until the sender closes, so the acknowledgement is not cut off.
    let _ = r.read(&mut [0u8; 1]).await;
}

/// Raw TCP to the receiving process.
async fn raw_tcp(bytes: u64) -> Duration {
    let (child, addr) = spawn_receiver("raw-tcp", bytes, 0);
    let socket = tokio::net::TcpStream::connect(addr.as_str())
        .await
        .expect("connect");
    socket.set_nodelay(true).expect("nodelay");
    let (mut r, mut w) = futures_halves(socket);
    let took = send(&mut r, &mut w, bytes).await;
    drop((r, w));
    child.wait().await;
    took
}

/// Splits a tokio socket into futures-io halves, so both benchmarks share one loop.
fn futures_halves(
    socket: tokio::net::TcpStream,
) -> (
    futures::io::ReadHalf<libp2p::tcp::tokio::TcpStream>,
    futures::io::WriteHalf<libp2p::tcp::tokio::TcpStream>,
) {
    libp2p::tcp::tokio::TcpStream(socket).split()
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

    fn named(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.name() == name)
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

/// One mesh stream to the receiving process.
async fn mesh_stream(bytes: u64, transport: Transport) -> Duration {
    let seed = 1 + 2 * Transport::ALL
        .iter()
        .position(|t| *t == transport)
        .unwrap_or(0) as u8;
    let (child, reach) = spawn_receiver(transport.name(), bytes, seed + 1);
    let (peer, addr) = reach.split_once(' ').expect("peer id and address");
    let peer: PeerId = peer.parse().expect("peer id");
    let sender = Mesh::start(&Keypair::from_seed([seed; 32]), transport.config())
        .await
        .expect("start");
    sender
        .connect(peer, vec![addr.parse().expect("address")])
        .await
        .expect("connect");
    let stream = sender.open_stream(peer, BENCH).await.expect("open");
    let (mut r, mut w) = stream.split();
    let took = send(&mut r, &mut w, bytes).await;
    w.close().await.expect("close");
    child.wait().await;
    took
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
    // As the peergrid binary does (crates/mesh/src/memory.rs).
    peergrid_mesh::memory::keep_freed_memory();
    // Logs only when asked for (e.g. `RUST_LOG=yamux=debug` to watch its windows grow).
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    // Each of the two processes gets half the machine, as a peer on a machine of its
    // own would have it to itself: with a thread per core in both, the peers' threads
    // chased each other across the cores (TCP + TLS: 0.8-2.5 GiB/s, run to run).
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let workers = std::env::var("MESH_BENCH_WORKERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or((cores / 2).max(1));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        if let Ok(role) = std::env::var(RECEIVER_ENV) {
            let number = |name: &str| std::env::var(name).ok().and_then(|v| v.parse().ok());
            let bytes = number("MESH_BENCH_BYTES").expect("MESH_BENCH_BYTES");
            let seed = number("MESH_BENCH_SEED").expect("MESH_BENCH_SEED") as u8;
            return receiver(&role, bytes, seed).await;
        }
        let bytes = transfer_bytes();
        let mib = (bytes >> 20) as f64;
        let rate = |d: Duration| mib / d.as_secs_f64();
        if let Some(only) = only() {
            let transport = Transport::named(&only);
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
