//! Run WebAssembly workloads (WASI 0.2 components) under limits, and meter them.
//!
//! # Status: ALPHA
//!
//! A [`Deployment`] names workloads by the BLAKE3 of their component, with limits,
//! environment and arguments; its [`Deployment::hash`] is what a deployment contract
//! holds. This crate knows nothing of the ledger: the node checks the contract and
//! hands the runtime verified bytes.
//!
//! A [`Runtime`] holds one wasmtime engine for the whole node: instances come from a
//! pooling allocator (instantiation in microseconds), a background thread advances the
//! epoch every tick so running guests are checked against their CPU budget and yield,
//! and compiled components are cached on disk by hash so a restart does not
//! recompile. [`Runtime::prepare`] checks a component and links it against WASI 0.2
//! (and `wasi:http` for services) once; the [`Prepared`] result then serves HTTP
//! requests ([`Prepared::handle`], one fresh instance per request) or runs jobs
//! ([`Prepared::run_job`]), and counts what they use ([`Prepared::metrics`]). A node
//! hosting several tenants gives each contract's components one [`Share`]
//! ([`Prepared::in_share`]): their runs together stay within the memory the contract
//! reserved and a bounded number of the pool's instances.
//!
//! Workloads get no network (outgoing HTTP is refused, sockets are denied) and no
//! filesystem but, if given one ([`Prepared::with_data`]), their app's [`DataDir`] as
//! `/data`, kept within its quota. A guest that traps, loops or allocates
//! without bound is stopped by its limits; the runtime goes on serving the others.
//!
//! ```no_run
//! # async fn demo(bytes: Vec<u8>) -> Result<(), peergrid_compute::ComputeError> {
//! use peergrid_compute::{Limits, Runtime, RuntimeConfig, WorkloadKind};
//! let runtime = Runtime::new(RuntimeConfig {
//!     cache_dir: Some("/var/lib/peergrid/compiled".into()),
//!     ..RuntimeConfig::default()
//! })?;
//! let hash = *blake3::hash(&bytes).as_bytes();
//! let job = runtime.prepare_async(hash, bytes, WorkloadKind::Job).await?;
//! let outcome = job.run_job(&["primes".into(), "100".into()], &[], &Limits::default()).await;
//! println!("exit {:?}: {}", outcome.exit_code, String::from_utf8_lossy(&outcome.stdout));
//! # Ok(()) }
//! ```

pub mod data;
pub mod deployment;
mod error;
mod host;
mod http;
mod job;
mod metrics;
mod quota;
mod runtime;
mod share;

pub use data::DataDir;
pub use deployment::{Deployment, DeploymentError, Limits, WorkloadKind, WorkloadSpec};
pub use error::ComputeError;
pub use http::{RequestBodyError, ResponseBody, ResponseBodyError};
pub use job::JobOutcome;
pub use metrics::{LimitExceeded, MetricsSnapshot};
pub use runtime::{CacheStats, Prepared, Runtime, RuntimeConfig, memory_at_start};
pub use share::Share;
