//! `peergrid mesh`: run a mesh peer, query it, and move bytes between two peers.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use peergrid_core::Keypair;
use peergrid_core::capacity::Size;
use peergrid_mesh::bulk::{self, Receiver, Transfer};
use peergrid_mesh::control::{self, Request};
use peergrid_mesh::{Config, Mesh, Multiaddr, PeerId, PeerInfo, Status};
use serde_json::{Value, json};

use crate::Globals;
use crate::output;

/// Default control endpoint of `mesh run`.
const DEFAULT_CONTROL: &str = "127.0.0.1:7441";

#[derive(Subcommand)]
pub enum MeshCommand {
    /// Run a mesh peer with your key until interrupted (Ctrl-C or SIGTERM).
    Run(RunArgs),
    /// Show the running peer's addresses, NAT status and counts.
    Status(ControlArgs),
    /// List the running peer's connected peers.
    Peers(ControlArgs),
    /// Measure a round trip from the running peer to PEER.
    Ping {
        /// Peer id (account id) to ping.
        peer: String,
        #[command(flatten)]
        control: ControlArgs,
    },
    /// Send N bytes to PEER (running `mesh run`) and compare BLAKE3 digests end to end.
    Send(SendArgs),
    /// List the bulk transfers the running peer received, with their BLAKE3 digests.
    Received(ControlArgs),
}

#[derive(Args)]
pub struct ControlArgs {
    /// Control endpoint of the running peer (loopback only).
    #[arg(long, value_name = "ADDR", default_value = DEFAULT_CONTROL)]
    control: SocketAddr,
}

#[derive(Args)]
pub struct NetArgs {
    /// Bootstrap peer, /ip4/…/tcp/…/p2p/<id> (repeatable).
    #[arg(long, value_name = "MULTIADDR")]
    bootstrap: Vec<Multiaddr>,
    /// Relay to hold a reservation on, so peers behind NAT can reach us (repeatable).
    #[arg(long, value_name = "MULTIADDR")]
    relay: Vec<Multiaddr>,
}

#[derive(Args)]
pub struct RunArgs {
    /// Address to listen on (repeatable) [default: 0.0.0.0 on UDP/QUIC and TCP port 4001].
    #[arg(long, value_name = "MULTIADDR")]
    listen: Vec<Multiaddr>,
    /// Address others reach us at, when known (repeatable).
    #[arg(long, value_name = "MULTIADDR")]
    external: Vec<Multiaddr>,
    #[command(flatten)]
    net: NetArgs,
    /// Relay circuits for other peers.
    #[arg(long)]
    relay_server: bool,
    /// Discover peers on the local network (devnets).
    #[arg(long)]
    mdns: bool,
    /// Control endpoint to serve on (loopback only).
    #[arg(long, value_name = "ADDR", default_value = DEFAULT_CONTROL)]
    control: SocketAddr,
    /// Largest bulk transfer accepted from one peer.
    #[arg(long, value_name = "SIZE", default_value = "16GiB")]
    bulk_max: Size,
}

#[derive(Args)]
pub struct SendArgs {
    /// Peer id (account id) of the receiver.
    peer: String,
    /// How many bytes: 100MiB, 1GiB, 4096…
    #[arg(long, value_name = "SIZE")]
    bytes: Size,
    /// Receiver's address (repeatable); without one it is found through --bootstrap.
    #[arg(long, value_name = "MULTIADDR")]
    addr: Vec<Multiaddr>,
    #[command(flatten)]
    net: NetArgs,
}

pub fn run(globals: &Globals, cmd: MeshCommand) -> anyhow::Result<()> {
    crate::runtime()?.block_on(async {
        match cmd {
            MeshCommand::Run(args) => run_peer(globals, args).await,
            MeshCommand::Status(c) => status(globals, c.control).await,
            MeshCommand::Peers(c) => peers(globals, c.control).await,
            MeshCommand::Ping { peer, control } => ping(globals, &peer, control.control).await,
            MeshCommand::Send(args) => send(globals, args).await,
            MeshCommand::Received(c) => received(globals, c.control).await,
        }
    })
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1 << 20) as f64)
}

async fn run_peer(globals: &Globals, args: RunArgs) -> anyhow::Result<()> {
    let key = Keypair::load(&globals.key_file()?)?;
    let listen = if args.listen.is_empty() {
        vec![
            "/ip4/0.0.0.0/udp/4001/quic-v1".parse()?,
            "/ip4/0.0.0.0/tcp/4001".parse()?,
        ]
    } else {
        args.listen
    };
    let config = Config {
        listen,
        external: args.external,
        bootstrap: args.net.bootstrap,
        relays: args.net.relay,
        relay_server: args.relay_server,
        mdns: args.mdns,
        ..Config::default()
    };
    let mesh = Mesh::start(&key, config).await?;
    let receiver = Receiver::serve(&mesh, args.bulk_max.bytes())?;
    let control = control::serve(mesh.clone(), Some(receiver), args.control).await?;
    let addrs = mesh.listen_addrs().await?;
    if globals.json {
        output::json(&json!({
            "peer_id": mesh.peer_id().to_string(),
            "listen": addrs.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "control": control.to_string(),
        }))?;
    } else {
        outln!("Mesh peer running; stop with Ctrl-C.\n");
        let mut rows = vec![
            ("peer id", mesh.peer_id().to_string()),
            ("control", control.to_string()),
        ];
        rows.extend(addrs.iter().map(|a| ("listen", a.to_string())));
        output::rows(&rows);
    }
    crate::stop_requested().await;
    tracing::info!("shutting down");
    Ok(())
}

async fn call(addr: SocketAddr, request: Request) -> anyhow::Result<Value> {
    Ok(control::call(addr, &request).await?)
}

async fn status(globals: &Globals, addr: SocketAddr) -> anyhow::Result<()> {
    let value = call(addr, Request::Status).await?;
    if globals.json {
        return output::json(&value);
    }
    let status: Status = serde_json::from_value(value).context("bad status answer")?;
    let mut rows = vec![
        ("peer id", status.peer_id),
        ("nat", status.nat),
        ("connected peers", status.connected_peers.to_string()),
        (
            "routing table",
            format!("{} peers", status.routing_table_peers),
        ),
        (
            "relay server",
            if status.relay_server { "on" } else { "off" }.to_string(),
        ),
        ("banned peers", status.banned_peers.to_string()),
    ];
    rows.extend(status.listen.into_iter().map(|a| ("listen", a)));
    rows.extend(status.external.into_iter().map(|a| ("external", a)));
    rows.extend(
        status
            .relay_reservations
            .into_iter()
            .map(|r| ("relay reservation", r)),
    );
    output::rows(&rows);
    Ok(())
}

async fn peers(globals: &Globals, addr: SocketAddr) -> anyhow::Result<()> {
    let value = call(addr, Request::Peers).await?;
    if globals.json {
        return output::json(&json!({ "peers": value }));
    }
    let peers: Vec<PeerInfo> = serde_json::from_value(value).context("bad peers answer")?;
    if peers.is_empty() {
        outln!("No connected peers.");
        return Ok(());
    }
    for peer in peers {
        outln!("{}", peer.peer_id);
        let mut rows = vec![(
            "path",
            if peer.relayed { "relayed" } else { "direct" }.to_string(),
        )];
        if let Some(rtt) = peer.rtt_ms {
            rows.push(("rtt", format!("{rtt:.2} ms")));
        }
        if let Some(agent) = peer.agent {
            rows.push(("agent", agent));
        }
        if let Some(hole_punch) = peer.hole_punch {
            rows.push(("hole punch", hole_punch));
        }
        rows.extend(peer.connections.into_iter().map(|c| ("connection", c)));
        output::rows(&rows);
    }
    Ok(())
}

async fn ping(globals: &Globals, peer: &str, addr: SocketAddr) -> anyhow::Result<()> {
    let peer: PeerId = peer
        .parse()
        .with_context(|| format!("{peer:?} is not a peer id"))?;
    let value = call(
        addr,
        Request::Ping {
            peer: peer.to_string(),
        },
    )
    .await?;
    if globals.json {
        return output::json(&value);
    }
    let rtt = value
        .get("rtt_ms")
        .and_then(Value::as_f64)
        .unwrap_or(f64::NAN);
    outln!("{peer}: {rtt:.2} ms");
    Ok(())
}

async fn received(globals: &Globals, addr: SocketAddr) -> anyhow::Result<()> {
    let value = call(addr, Request::Received).await?;
    if globals.json {
        return output::json(&json!({ "received": value }));
    }
    let transfers: Vec<Transfer> = serde_json::from_value(value).context("bad answer")?;
    if transfers.is_empty() {
        outln!("No transfers received.");
    }
    for t in transfers {
        outln!(
            "{}  {}  {:.1} MiB/s  blake3 {}",
            t.peer,
            mib(t.bytes),
            t.throughput() / (1 << 20) as f64,
            t.blake3
        );
    }
    Ok(())
}

async fn send(globals: &Globals, args: SendArgs) -> anyhow::Result<()> {
    let key = Keypair::load(&globals.key_file()?)?;
    let peer: PeerId = args
        .peer
        .parse()
        .with_context(|| format!("{:?} is not a peer id", args.peer))?;
    let config = Config {
        bootstrap: args.net.bootstrap,
        relays: args.net.relay,
        ..Config::default()
    };
    let mesh = Mesh::start(&key, config).await?;
    mesh.connect(peer, args.addr).await?;
    let bar = crate::output::bytes_bar(globals, args.bytes.bytes());
    let transfer = bulk::send(&mesh, peer, args.bytes.bytes(), |n| bar.set_position(n)).await?;
    bar.finish_and_clear();
    // The connections held when the transfer ended. A relayed connection may have
    // been upgraded by hole punching while the bytes flowed, so "direct and relayed"
    // means the stream may have used either.
    let connections = mesh
        .peers()
        .await?
        .into_iter()
        .find(|p| p.peer_id == peer.to_string())
        .map(|p| p.connections)
        .unwrap_or_default();
    let relayed = connections
        .iter()
        .filter(|c| c.contains("p2p-circuit"))
        .count();
    let path = match (relayed, connections.len() - relayed) {
        (0, 0) => "closed",
        (_, 0) => "relayed",
        (0, _) => "direct",
        _ => "direct and relayed",
    };
    let (confirmed_bytes, confirmed_hash) = transfer.confirmed.clone().unwrap_or_default();
    let intact = transfer.confirmed_intact();
    if globals.json {
        output::json(&json!({
            "peer": transfer.peer,
            "bytes": transfer.bytes,
            "seconds": transfer.seconds,
            "bytes_per_second": transfer.throughput(),
            "blake3": transfer.blake3,
            "received_bytes": confirmed_bytes,
            "received_blake3": confirmed_hash,
            "intact": intact,
            "path": path,
            "connections": connections,
        }))?;
    } else {
        output::rows(&[
            ("to", transfer.peer.clone()),
            ("sent", mib(transfer.bytes)),
            ("time", format!("{:.2} s", transfer.seconds)),
            (
                "throughput",
                format!("{:.1} MiB/s", transfer.throughput() / (1 << 20) as f64),
            ),
            ("path", path.to_string()),
            ("blake3 sent", transfer.blake3.clone()),
            ("blake3 received", confirmed_hash),
        ]);
    }
    if !intact {
        bail!(
            "the receiver confirmed {confirmed_bytes} bytes with a different BLAKE3: the data did not arrive intact"
        );
    }
    // Let the receiver see our half-close before the connection goes away.
    tokio::time::sleep(Duration::from_millis(100)).await;
    Ok(())
}
