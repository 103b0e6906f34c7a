//! The node's local HTTP endpoint, for its farmer and their monitoring: `/health`,
//! `/v1/status`, `/v1/workloads` and Prometheus `/metrics`.

use peergrid_client::types::api::node_routes;
use std::fmt::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::protocol::NodeReport;
use crate::shared::Shared;
use peergrid_core::now_ms;

/// Listen on `addr` for the endpoint, before the node registers (see
/// [`crate::entry::listen`]).
pub async fn listen(addr: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        anyhow::anyhow!(
            "cannot listen on {addr} for the health endpoint: {e}; pick another with --health"
        )
    })
}

/// Serve the endpoint on `listener`; returns the bound address and the serving task.
pub async fn serve(
    listener: tokio::net::TcpListener,
    shared: Arc<Shared>,
) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let bound = listener.local_addr()?;
    let app = Router::new()
        .route(node_routes::HEALTH, get(health))
        .route(node_routes::STATUS, get(status))
        .route(node_routes::WORKLOADS, get(workloads))
        .route(node_routes::METRICS, get(metrics))
        .with_state(shared);
    // A local endpoint for the farmer's monitoring: a few connections are plenty, and
    // the node's files are for shards, the mesh and the workloads' entry.
    let limits = peergrid_core::http::Limits {
        connections: 64,
        ..peergrid_core::http::Limits::default()
    };
    let task = tokio::spawn(peergrid_core::http::serve(listener, app, limits));
    Ok((bound, task))
}

/// What `/health` answers.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Health {
    /// Whether uptime reports reach the ledger.
    pub ok: bool,
    /// The node's id, once registered.
    pub node: Option<peergrid_core::NodeId>,
    /// How long ago the last uptime report was finalized, ms; none before the first.
    pub last_uptime_report_age_ms: Option<u64>,
}

/// What `/v1/status` answers: the node's report and how it sits on the mesh.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Status {
    /// What the node tells its peers about itself.
    #[serde(flatten)]
    pub report: NodeReport,
    /// The mesh addresses it listens on.
    pub mesh_listen: Vec<String>,
    /// Peers connected now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mesh_connected_peers: Option<usize>,
    /// Peers in its routing table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mesh_routing_table_peers: Option<usize>,
    /// Its reachability as the mesh sees it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mesh_nat: Option<String>,
}

/// Healthy while uptime reports reach the ledger: the last one is younger than two
/// intervals, past which the ledger counts the node down (unpaid, its contracts unbilled).
async fn health(State(s): State<Arc<Shared>>) -> Response {
    let last = s.last_report_ms.load(Ordering::Relaxed);
    let age_ms = now_ms().saturating_sub(last);
    let ok = last > 0 && age_ms < 2 * s.interval_secs * 1000;
    let body = Json(Health {
        ok,
        node: s.world.lock().await.node,
        last_uptime_report_age_ms: (last > 0).then_some(age_ms),
    });
    let code = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, body).into_response()
}

async fn status(State(s): State<Arc<Shared>>) -> Response {
    let mesh = s.mesh.status().await.ok();
    Json(Status {
        report: s.report().await,
        mesh_listen: s.listen.clone(),
        mesh_connected_peers: mesh.as_ref().map(|m| m.connected_peers),
        mesh_routing_table_peers: mesh.as_ref().map(|m| m.routing_table_peers),
        mesh_nat: mesh.map(|m| m.nat),
    })
    .into_response()
}

async fn workloads(State(s): State<Arc<Shared>>) -> Response {
    let world = s.world.lock().await;
    Json(json!({
        "items": world.workloads.values().collect::<Vec<_>>(),
        "deployments": s.compute.list(),
    }))
    .into_response()
}

async fn metrics(State(s): State<Arc<Shared>>) -> Response {
    let report = s.report().await;
    let mut out = String::new();
    let mut gauge = |name: &str, help: &str, value: u64| {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
        );
    };
    gauge(
        "peergrid_node_uptime_seconds",
        "Seconds since the node's service started (or the machine woke).",
        report.uptime_secs,
    );
    gauge(
        "peergrid_node_followed_height",
        "Last ledger height reconciled.",
        report.followed_height,
    );
    let balance = s.fee_balance.load(std::sync::atomic::Ordering::Relaxed);
    if balance != u64::MAX {
        gauge(
            "peergrid_node_fee_balance_units",
            "The node's account balance for its fees, token units: its usage reports, capacity updates and releases fail once it is empty.",
            balance,
        );
    }
    gauge(
        "peergrid_node_capacity_cores",
        "Cores offered.",
        report.capacity.cru,
    );
    gauge(
        "peergrid_node_capacity_memory_bytes",
        "Memory offered.",
        report.capacity.mru,
    );
    gauge(
        "peergrid_node_capacity_ssd_bytes",
        "SSD offered.",
        report.capacity.sru,
    );
    gauge(
        "peergrid_node_capacity_hdd_bytes",
        "HDD offered.",
        report.capacity.hru,
    );
    gauge(
        "peergrid_node_used_cores",
        "Cores reserved by workloads.",
        report.used.cru,
    );
    gauge(
        "peergrid_node_used_memory_bytes",
        "Memory reserved by workloads.",
        report.used.mru,
    );
    gauge(
        "peergrid_node_used_ssd_bytes",
        "SSD reserved by workloads.",
        report.used.sru,
    );
    gauge(
        "peergrid_node_used_hdd_bytes",
        "HDD reserved by workloads.",
        report.used.hru,
    );
    let store = s.storage.stats();
    let stored: u64 = s.storage.used().values().sum();
    gauge(
        "peergrid_node_shards_stored_bytes",
        "Bytes of shards held for storage contracts.",
        stored,
    );
    for (name, help, value) in [
        (
            "peergrid_node_shard_puts_total",
            "Shards stored since start.",
            store.puts,
        ),
        (
            "peergrid_node_shard_gets_total",
            "Shards served since start.",
            store.gets,
        ),
        (
            "peergrid_node_shard_audits_total",
            "Storage audits answered since start.",
            store.audits,
        ),
        (
            "peergrid_node_shard_refused_total",
            "Shard requests refused since start.",
            store.refused,
        ),
        (
            "peergrid_node_shards_corrupt_total",
            "Shards found corrupt (on read, audit or scrub) and moved aside.",
            store.corrupt,
        ),
        (
            "peergrid_node_shards_scrubbed_total",
            "Shards a scrub read whole and found as written.",
            store.scrubbed,
        ),
        (
            "peergrid_node_shard_disk_full_total",
            "Shard and pointer writes refused because the disk was full.",
            store.full,
        ),
    ] {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
        );
    }
    for (name, help, pick) in [
        (
            "peergrid_node_disk_free_bytes",
            "Bytes free on the file system of each folder the node writes to.",
            (|d: &crate::protocol::DiskReport| d.free_bytes) as fn(&_) -> u64,
        ),
        (
            "peergrid_node_disk_reserve_bytes",
            "Bytes the node keeps free there; data for others is refused below it.",
            |d| d.reserve_bytes,
        ),
    ] {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
        for d in &report.disks {
            // Prometheus label values escape backslashes, quotes and newlines.
            let path = d
                .path
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n");
            let _ = writeln!(out, "{name}{{path=\"{path}\"}} {}", pick(d));
        }
    }
    let counters = [
        (
            "peergrid_node_uptime_reports_total",
            "Uptime reports finalized.",
            &s.reports_ok,
        ),
        (
            "peergrid_node_uptime_reports_failed_total",
            "Uptime reports that failed.",
            &s.reports_failed,
        ),
        (
            "peergrid_node_deployments_accepted_total",
            "Deployments accepted.",
            &s.deploys_ok,
        ),
        (
            "peergrid_node_deployments_refused_total",
            "Deployments refused.",
            &s.deploys_refused,
        ),
    ];
    for (name, help, value) in counters {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
            value.load(Ordering::Relaxed)
        );
    }
    let _ = writeln!(
        out,
        "# HELP peergrid_node_workloads Workloads by state.\n# TYPE peergrid_node_workloads gauge"
    );
    for (state, n) in [
        ("running", report.workloads.running),
        ("paused", report.workloads.paused),
        ("refused", report.workloads.refused),
    ] {
        let _ = writeln!(out, "peergrid_node_workloads{{state=\"{state}\"}} {n}");
    }
    let (in_use, max) = s.compute.instances();
    let _ = writeln!(
        out,
        "# HELP peergrid_node_instances Wasm instances held by runs now, and the pool's size.\n# TYPE peergrid_node_instances gauge\npeergrid_node_instances{{of=\"in_use\"}} {in_use}\npeergrid_node_instances{{of=\"max\"}} {max}"
    );
    compute_metrics(&mut out, &s.compute.list());
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        out,
    )
        .into_response()
}

/// Deployments by state and each workload's counters, labelled by contract and workload.
fn compute_metrics(out: &mut String, deployments: &[crate::protocol::DeploymentStatus]) {
    let _ = writeln!(
        out,
        "# HELP peergrid_node_deployments Deployments on this node by state.\n# TYPE peergrid_node_deployments gauge"
    );
    for state in ["init", "running", "exited", "error", "paused"] {
        let n = deployments.iter().filter(|d| d.state == state).count();
        let _ = writeln!(out, "peergrid_node_deployments{{state=\"{state}\"}} {n}");
    }
    type Sample = fn(&crate::protocol::WorkloadStatus) -> String;
    let series: [(&str, &str, Sample); 4] = [
        (
            "peergrid_node_app_requests_total",
            "Requests served (or job runs) per workload since its deployment started on this node (a restart or an update starts again from 0).",
            |w| w.requests.to_string(),
        ),
        (
            "peergrid_node_app_cpu_seconds_total",
            "CPU time used per workload since its deployment started on this node.",
            |w| format!("{:.6}", w.cpu_us as f64 / 1e6),
        ),
        (
            "peergrid_node_app_served_bytes_total",
            "Response bytes served per workload since its deployment started on this node.",
            |w| w.bytes_served.to_string(),
        ),
        (
            "peergrid_node_app_errors_total",
            "Requests per running workload that failed: a trap, an exhausted limit, no response (a finished job's outcome is in its app logs).",
            |w| w.errors.to_string(),
        ),
    ];
    for (name, help, sample) in series {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        for d in deployments {
            for w in &d.workloads {
                let _ = writeln!(
                    out,
                    "{name}{{contract=\"{}\",workload=\"{}\"}} {}",
                    d.contract,
                    w.name,
                    sample(w)
                );
            }
        }
    }
    let _ = writeln!(
        out,
        "# HELP peergrid_node_app_limit_stops_total Runs per running workload stopped by a limit (cpu, memory, wall_time, disk) since its deployment started on this node.\n# TYPE peergrid_node_app_limit_stops_total counter"
    );
    for d in deployments {
        for w in &d.workloads {
            let s = &w.stopped;
            for (limit, n) in [
                ("cpu", s.cpu),
                ("memory", s.memory),
                ("wall_time", s.wall_time),
                ("disk", s.disk),
            ] {
                let _ = writeln!(
                    out,
                    "peergrid_node_app_limit_stops_total{{contract=\"{}\",workload=\"{}\",limit=\"{limit}\"}} {n}",
                    d.contract, w.name
                );
            }
        }
    }
    type Gauge = fn(&crate::protocol::DeploymentStatus) -> Option<u64>;
    let gauges: [(&str, &str, Gauge); 3] = [
        (
            "peergrid_node_app_data_used_bytes",
            "What each app's /data folder uses on this node, as its writes are counted (the newest measure and the writes since).",
            |d| d.data_used_bytes,
        ),
        (
            "peergrid_node_app_data_quota_bytes",
            "The disk each app's contract reserves for its /data folder.",
            |d| d.data_quota_bytes,
        ),
        (
            "peergrid_node_app_data_read_only",
            "1 while an app's /data is read-only (well past its disk, or the node's disk full).",
            |d| d.data_quota_bytes.map(|_| u64::from(d.data_read_only)),
        ),
    ];
    for (name, help, pick) in gauges {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
        for d in deployments {
            if let Some(value) = pick(d) {
                let _ = writeln!(out, "{name}{{contract=\"{}\"}} {value}", d.contract);
            }
        }
    }
}
