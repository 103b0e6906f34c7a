//! The node's protocols on the mesh: `/peergrid/status/1`, `/peergrid/deploy/1` and
//! `/peergrid/logs/1`.
//!
//! A node never acts on a request the ledger does not back: a deployment is accepted
//! only for a live contract on this node, signed by the contract's owner, whose bytes
//! hash to the contract's deployment hash; a workload's output goes only to a request
//! its contract's owner signed.

use peergrid_core::now_ms;
use std::time::Duration;

use borsh::{BorshDeserialize, BorshSerialize};
use peergrid_core::tx::Signature;
use peergrid_core::{AccountId, Capacity, ContractId, FarmId, Hash, Keypair, NodeId};
use peergrid_mesh::{Mesh, PeerId, RpcError, RpcProtocol};
use serde::{Deserialize, Serialize};

/// Largest deployment a node accepts over the mesh (the workloads' description; their
/// code is fetched by hash, never carried here).
pub const DEPLOYMENT_BYTES_MAX: usize = 1 << 20;

/// What owners sign a deployment under.
pub const DEPLOY_NAMESPACE: &[u8] = b"_PEERGRID_NODE_DEPLOY";

/// Node statistics: version, capacity, use, workloads, uptime.
pub const STATUS: RpcProtocol = RpcProtocol::new("/peergrid/status/1")
    .with_sizes(64, 64 * 1024)
    .with_timeout(Duration::from_secs(5));

/// Signed deployments sent to the node that runs them.
pub const DEPLOY: RpcProtocol = RpcProtocol::new("/peergrid/deploy/1")
    .with_sizes(DEPLOYMENT_BYTES_MAX + 1024, 4 * 1024)
    .with_timeout(Duration::from_secs(30))
    .with_rate(2.0, 10);

/// What owners sign a request for a workload's output under.
pub const LOGS_NAMESPACE: &[u8] = b"_PEERGRID_NODE_LOGS";

/// How far a logs request's signing time may be from the node's clock, ms.
pub const LOGS_CLOCK_SKEW_MS: u64 = 5 * 60 * 1000;

/// A workload's output (a job's stdout and stderr, a service's log), for its owner.
pub const LOGS: RpcProtocol = RpcProtocol::new("/peergrid/logs/1")
    .with_sizes(1024, 3 << 20)
    .with_timeout(Duration::from_secs(10))
    .with_rate(5.0, 20);

/// What `/peergrid/status/1` answers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeReport {
    /// The node software's version.
    pub version: String,
    /// The node's id on the ledger, once registered.
    pub node: Option<NodeId>,
    /// Its farm.
    pub farm: FarmId,
    /// Its account (= mesh peer id).
    pub account: AccountId,
    /// What it offers.
    pub capacity: Capacity,
    /// What its workloads hold.
    pub used: Capacity,
    /// What is left.
    pub free: Capacity,
    /// Workloads by state.
    pub workloads: WorkloadCounts,
    /// Seconds since the node's service started (or the machine woke).
    pub uptime_secs: u64,
    /// The last ledger height reconciled.
    pub followed_height: u64,
    /// Where the node's HTTP entry for workloads listens (`http://host:port`), if it has one.
    #[serde(default)]
    pub http: Option<String>,
    /// The deployment asked about (a status request may name one contract).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment: Option<DeploymentStatus>,
    /// The file systems the node writes to, with their free space now.
    #[serde(default)]
    pub disks: Vec<DiskReport>,
}

/// One folder the node writes to (its data directory, each `--disk`), as its file
/// system is now.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskReport {
    /// The folder.
    pub path: String,
    /// Bytes free on its file system.
    pub free_bytes: u64,
    /// The file system's size.
    pub total_bytes: u64,
    /// Bytes the node keeps free there for itself.
    pub reserve_bytes: u64,
    /// Free space is at or below the reserve: new data for others is refused.
    pub full: bool,
}

/// What a deployment is doing on a node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeploymentStatus {
    /// Its contract.
    pub contract: ContractId,
    /// `absent`, `init`, `running`, `error`, `paused`, or `outdated` (serving the
    /// deployment it ran while its contract holds one the node has not received).
    pub state: String,
    /// Why, for `error`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Its workloads.
    #[serde(default)]
    pub workloads: Vec<WorkloadStatus>,
    /// What its `/data` folder uses, bytes, as its writes are counted: the newest measure
    /// and what was granted since (absent before a first measure, and from older nodes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_used_bytes: Option<u64>,
    /// What its `/data` folder may use: the disk (`sru`) its contract reserves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_quota_bytes: Option<u64>,
    /// Its `/data` is read-only: well past its quota, or the node's disk full.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub data_read_only: bool,
}

/// What one workload of a deployment is doing on a node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkloadStatus {
    /// Its name in the deployment.
    pub name: String,
    /// `http` or `job`.
    pub kind: String,
    /// `init`, `running`, `error` or `paused`.
    pub state: String,
    /// Why, for `error`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Requests (or job runs) served since the node started.
    #[serde(default)]
    pub requests: u64,
    /// CPU time used, µs.
    #[serde(default)]
    pub cpu_us: u64,
    /// Bytes of responses served.
    #[serde(default)]
    pub bytes_served: u64,
    /// Runs that failed: a trap, an exhausted limit, no response.
    #[serde(default)]
    pub errors: u64,
    /// Runs stopped by each limit.
    #[serde(default)]
    pub stopped: LimitStops,
    /// A job's exit code, once it `exited` by itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
}

/// How many runs of a workload each limit stopped.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LimitStops {
    /// By its CPU time.
    #[serde(default)]
    pub cpu: u64,
    /// By its memory.
    #[serde(default)]
    pub memory: u64,
    /// By its wall time.
    #[serde(default)]
    pub wall_time: u64,
    /// By its app's `/data` outgrowing the disk, or the node's disk filling.
    #[serde(default)]
    pub disk: u64,
}

/// How many workloads are in each state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkloadCounts {
    /// Running.
    pub running: usize,
    /// Paused (contract in grace).
    pub paused: usize,
    /// Refused here.
    pub refused: usize,
    /// Deployments whose components are being fetched and compiled.
    #[serde(default)]
    pub starting: usize,
    /// Deployments that failed to start (bad component, unreachable owner, ...).
    #[serde(default)]
    pub failed: usize,
}

/// A deployment for a contract, signed by the contract's owner.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct DeployRequest {
    /// The contract it is for.
    pub contract: ContractId,
    /// The deployment's bytes; their BLAKE3 must equal the contract's hash.
    pub deployment: Vec<u8>,
    /// The owner's signature over [`deploy_message`].
    pub signature: Signature,
}

/// What the owner signs: the grid ([`peergrid_storage::format::grid_id`]: a request
/// signed on one grid is refused on any other the same key is used on), the contract and
/// the deployment's hash.
pub fn deploy_message(grid: &str, contract: ContractId, hash: &Hash) -> Vec<u8> {
    peergrid_core::codec::encode(&(grid.to_string(), contract, hash))
}

impl DeployRequest {
    /// Sign `deployment` for `contract` on `grid` with the owner's key.
    pub fn sign(
        owner: &Keypair,
        grid: &str,
        contract: ContractId,
        deployment: Vec<u8>,
    ) -> DeployRequest {
        let hash = Hash::of(&deployment);
        let message = deploy_message(grid, contract, &hash);
        let signature = Signature(owner.sign(DEPLOY_NAMESPACE, &message));
        DeployRequest {
            contract,
            deployment,
            signature,
        }
    }
}

/// A request for one workload's output, signed by its contract's owner.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct LogsRequest {
    /// The contract.
    pub contract: ContractId,
    /// The workload's name in the deployment.
    pub workload: String,
    /// When it was signed, ms since the Unix epoch: a node refuses one far from its clock.
    pub at_ms: u64,
    /// The owner's signature over [`logs_message`].
    pub signature: Signature,
}

/// What the owner signs to read a workload's output (the grid as in [`deploy_message`]).
pub fn logs_message(grid: &str, contract: ContractId, workload: &str, at_ms: u64) -> Vec<u8> {
    peergrid_core::codec::encode(&(grid.to_string(), contract, workload.to_string(), at_ms))
}

impl LogsRequest {
    /// Sign a request for `contract`'s `workload` on `grid` with the owner's key, now.
    pub fn sign(owner: &Keypair, grid: &str, contract: ContractId, workload: &str) -> LogsRequest {
        let at_ms = now_ms();
        let message = logs_message(grid, contract, workload, at_ms);
        LogsRequest {
            contract,
            workload: workload.to_string(),
            at_ms,
            signature: Signature(owner.sign(LOGS_NAMESPACE, &message)),
        }
    }
}

/// What `/peergrid/logs/1` answers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkloadLogs {
    /// The contract.
    pub contract: ContractId,
    /// The workload.
    pub workload: String,
    /// `http` or `job`.
    pub kind: String,
    /// `init`, `running`, `exited`, `error` or `paused`.
    pub state: String,
    /// A job's exit code, once it exited by itself.
    pub exit_code: Option<i32>,
    /// Why a job was stopped or a workload failed, if it was.
    pub error: Option<String>,
    /// A job's stdout; a service's log (stdout and stderr as they came, newest kept).
    pub stdout: String,
    /// A job's stderr (empty for a service).
    pub stderr: String,
    /// A job's CPU time, ms.
    pub cpu_ms: u64,
    /// A job's wall time, ms.
    pub wall_ms: u64,
}

/// Ask `node` for a workload's output with a request its owner signed.
pub async fn logs(
    mesh: &Mesh,
    node: PeerId,
    request: &LogsRequest,
) -> Result<WorkloadLogs, RpcError> {
    let body = mesh
        .request(node, &LOGS, &peergrid_core::codec::encode(request))
        .await?;
    serde_json::from_slice(&body).map_err(|e| RpcError::MalformedResponse {
        peer: node,
        protocol: LOGS.name.clone(),
        reason: e.to_string(),
    })
}

/// Ask `node` for its status.
pub async fn status(mesh: &Mesh, node: PeerId) -> Result<NodeReport, RpcError> {
    status_of(mesh, node, None).await
}

/// Ask `node` for its status and, with `contract`, that deployment's
/// ([`NodeReport::deployment`]); the request is then the contract id, u64 little-endian.
pub async fn status_of(
    mesh: &Mesh,
    node: PeerId,
    contract: Option<ContractId>,
) -> Result<NodeReport, RpcError> {
    let request = contract.map(u64::to_le_bytes);
    let request: &[u8] = match &request {
        Some(b) => b,
        None => b"",
    };
    let body = mesh.request(node, &STATUS, request).await?;
    serde_json::from_slice(&body).map_err(|e| RpcError::MalformedResponse {
        peer: node,
        protocol: STATUS.name.clone(),
        reason: e.to_string(),
    })
}

/// Send a signed deployment to the node that holds its contract.
pub async fn deploy(mesh: &Mesh, node: PeerId, request: &DeployRequest) -> Result<(), RpcError> {
    mesh.request(node, &DEPLOY, &peergrid_core::codec::encode(request))
        .await
        .map(|_| ())
}
