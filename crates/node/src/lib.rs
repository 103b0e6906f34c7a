//! The farmer's daemon: probe capacity, register on the ledger, report uptime, and keep
//! the local world equal to what the ledger says.
//!
//! # Status: ALPHA
//!
//! `peergrid node run` calls [`run`]. The node's own key lives in its data directory
//! (`node-key.json`, created on first start); it signs the node's transactions and is
//! its mesh peer id. Joining a farm needs the farm owner's consent: a signed
//! invitation (`peergrid farm invite`), or the owner's key on the same machine, which
//! signs it and also funds the node's account for its registration fee.
//!
//! Three loops run side by side, each surviving the ledger being unreachable:
//! uptime reports on the genesis interval, the reconciliation loop following the
//! ledger's finalized blocks ([`reconcile`]), and the mesh protocols
//! ([`protocol`]). A local HTTP endpoint serves `/health`, `/v1/status`,
//! `/v1/workloads` and Prometheus `/metrics`.
//!
//! A workload is its folder under `workloads/` and its desired state in `world.json`;
//! storage contracts are served by `peergrid-storage`, deployments run on
//! `peergrid-compute` ([`compute`]), their components fetched over `/peergrid/blob/1`
//! ([`blob`]) and their HTTP workloads served by `node run --http` ([`entry`]).

pub mod appdata;
pub mod archive;
pub mod blob;
pub mod compute;
pub mod daemon;
pub mod entry;
pub mod health;
pub mod lock;
pub mod ports;
pub mod probe;
pub mod protocol;
pub mod reconcile;
pub mod register;
pub mod settings;
pub mod shared;
pub mod uptime;
pub mod world;

pub use daemon::{NodeConfig, run};
pub use probe::{DiskClass, DiskSpec, Probe, Reservation};
pub use protocol::{DeployRequest, NodeReport};
pub use settings::{LocationUpdate, Settings};
pub use world::{Workload, WorkloadState, World};

/// The node software's version, reported on the mesh and the health endpoint.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
