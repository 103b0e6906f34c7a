//! A local control endpoint so that other commands can query a running peer.
//!
//! One JSON request per line on a TCP connection to 127.0.0.1, one JSON answer per
//! line: `{"ok": …}` or `{"error": "…"}`. It has no authentication, so it only ever
//! binds to a loopback address.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use libp2p::{Multiaddr, PeerId};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use crate::Mesh;
use crate::bulk::Receiver;

/// Default control port on 127.0.0.1.
pub const DEFAULT_PORT: u16 = 7441;
/// Longest request line.
const REQUEST_BYTES_MAX: u64 = 64 * 1024;
/// Control connections served at once.
const CONNECTIONS_MAX: usize = 16;
/// Time allowed for one request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// A control request.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Request {
    /// [`crate::Status`] of the peer.
    Status,
    /// Connected peers.
    Peers,
    /// Round trip to a peer.
    Ping {
        /// The peer id.
        peer: String,
    },
    /// Connect to a peer, at the given addresses or through the DHT.
    Connect {
        /// The peer id.
        peer: String,
        /// Addresses to try.
        #[serde(default)]
        addrs: Vec<String>,
    },
    /// Bulk transfers received.
    Received,
}

/// Why a control call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ControlError {
    /// The endpoint would not be on loopback.
    #[error("the control endpoint must be on a loopback address, not {0}")]
    NotLoopback(SocketAddr),
    /// No peer is running there.
    #[error("no mesh peer answers on {addr} (is `peergrid mesh run` running?): {source}")]
    Unreachable {
        /// The endpoint.
        addr: SocketAddr,
        /// The connection error.
        source: std::io::Error,
    },
    /// The peer answered with an error.
    #[error("{0}")]
    Remote(String),
    /// The exchange failed.
    #[error("control exchange failed: {0}")]
    Io(#[from] std::io::Error),
    /// The answer did not parse.
    #[error("bad control answer: {0}")]
    BadAnswer(String),
}

/// Serve the control endpoint on `addr` (loopback only); returns the bound address.
pub async fn serve(
    mesh: Mesh,
    bulk: Option<Receiver>,
    addr: SocketAddr,
) -> Result<SocketAddr, ControlError> {
    if !addr.ip().is_loopback() {
        return Err(ControlError::NotLoopback(addr));
    }
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let permits = Arc::new(Semaphore::new(CONNECTIONS_MAX));
    tokio::spawn(async move {
        loop {
            let Ok((socket, _)) = listener.accept().await else {
                continue;
            };
            let Ok(permit) = permits.clone().try_acquire_owned() else {
                continue; // dropping the socket closes it
            };
            let (mesh, bulk) = (mesh.clone(), bulk.clone());
            tokio::spawn(async move {
                let _ = tokio::time::timeout(REQUEST_TIMEOUT, handle(socket, mesh, bulk)).await;
                drop(permit);
            });
        }
    });
    Ok(bound)
}

async fn handle(socket: TcpStream, mesh: Mesh, bulk: Option<Receiver>) -> std::io::Result<()> {
    let (read, mut write) = socket.into_split();
    let mut lines = BufReader::new(read.take(REQUEST_BYTES_MAX));
    let mut line = String::new();
    lines.read_line(&mut line).await?;
    let answer = match serde_json::from_str::<Request>(&line) {
        Ok(request) => match answer(&mesh, bulk.as_ref(), request).await {
            Ok(value) => json!({ "ok": value }),
            Err(e) => json!({ "error": e }),
        },
        Err(e) => json!({ "error": format!("bad request: {e}") }),
    };
    let mut text = answer.to_string();
    text.push('\n');
    write.write_all(text.as_bytes()).await?;
    write.shutdown().await
}

fn parse_peer(text: &str) -> Result<PeerId, String> {
    text.parse()
        .map_err(|e| format!("bad peer id {text:?}: {e}"))
}

async fn answer(mesh: &Mesh, bulk: Option<&Receiver>, request: Request) -> Result<Value, String> {
    let to_value = |v: Result<Value, serde_json::Error>| v.map_err(|e| e.to_string());
    match request {
        Request::Status => to_value(serde_json::to_value(
            mesh.status().await.map_err(|e| e.to_string())?,
        )),
        Request::Peers => to_value(serde_json::to_value(
            mesh.peers().await.map_err(|e| e.to_string())?,
        )),
        Request::Ping { peer } => {
            let peer = parse_peer(&peer)?;
            let rtt = mesh.ping(peer).await.map_err(|e| e.to_string())?;
            Ok(json!({ "peer": peer.to_string(), "rtt_ms": rtt.as_secs_f64() * 1000.0 }))
        }
        Request::Connect { peer, addrs } => {
            let peer = parse_peer(&peer)?;
            let addrs = addrs
                .iter()
                .map(|a| {
                    a.parse::<Multiaddr>()
                        .map_err(|e| format!("bad address {a:?}: {e}"))
                })
                .collect::<Result<Vec<_>, _>>()?;
            mesh.connect(peer, addrs).await.map_err(|e| e.to_string())?;
            Ok(json!({ "peer": peer.to_string(), "connected": true }))
        }
        Request::Received => to_value(serde_json::to_value(
            bulk.map(Receiver::received).unwrap_or_default(),
        )),
    }
}

/// Send one request to the control endpoint at `addr` and return its `ok` value.
pub async fn call(addr: SocketAddr, request: &Request) -> Result<Value, ControlError> {
    let socket = TcpStream::connect(addr)
        .await
        .map_err(|source| ControlError::Unreachable { addr, source })?;
    let (read, mut write) = socket.into_split();
    let mut text =
        serde_json::to_string(request).map_err(|e| ControlError::BadAnswer(e.to_string()))?;
    text.push('\n');
    write.write_all(text.as_bytes()).await?;
    let mut reader = BufReader::new(read.take(16 * 1024 * 1024));
    let mut line = String::new();
    reader.read_line(&mut line).await?;
    let mut answer: Value =
        serde_json::from_str(&line).map_err(|e| ControlError::BadAnswer(e.to_string()))?;
    if let Some(error) = answer.get("error") {
        return Err(ControlError::Remote(
            error.as_str().unwrap_or("unknown error").to_string(),
        ));
    }
    answer
        .get_mut("ok")
        .map(Value::take)
        .ok_or_else(|| ControlError::BadAnswer(line.trim().to_string()))
}
