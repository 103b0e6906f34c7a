//! The engine, the compile cache, the epoch ticker, and preparing components to run.

use crate::data::{DataDir, RunOnData};
use crate::deployment::{Limits, MEMORY_BYTES_MAX, WorkloadKind};
use crate::error::{ComputeError, one_line};
use crate::host::{Capture, Host, RunMeter};
use crate::metrics::{LimitExceeded, MetricsSnapshot, WorkloadMetrics};
use crate::share::Share;
use http::StatusCode;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;
use wasmtime::component::{Component, Linker};
use wasmtime::{
    Cache, CacheConfig, Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig,
};
use wasmtime_wasi::WasiCtx;
use wasmtime_wasi::p2::bindings::CommandPre;
use wasmtime_wasi_http::p2::bindings::ProxyPre;

/// Most core instances one component may hold (a Rust component has a handful).
pub(crate) const CORE_INSTANCES_PER_COMPONENT: u32 = 16;
/// Most linear memories one component may hold.
pub(crate) const MEMORIES_PER_COMPONENT: u32 = 4;
/// Most tables one component may hold.
pub(crate) const TABLES_PER_COMPONENT: u32 = 8;

/// How a [`Runtime`] is set up; `Default` suits a small node.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Where compiled components are cached (absolute or relative to the working
    /// directory); `None` compiles every time.
    pub cache_dir: Option<PathBuf>,
    /// Instances that may exist at once, across all workloads (the pool's size).
    pub max_instances: u32,
    /// Ceiling on any one instance's linear memory, whatever its limits say.
    pub max_memory_bytes: u64,
    /// How often running guests are interrupted to check their CPU budget and yield.
    pub epoch_tick: Duration,
    /// Largest component accepted, in bytes.
    pub component_bytes_max: usize,
    /// Most bytes of a job's stdout, and of its stderr, that are kept.
    pub output_bytes_max: usize,
    /// Most bytes of a service's log (its stdout and stderr, newest kept) per workload.
    pub log_bytes_max: usize,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            cache_dir: None,
            max_instances: 128,
            max_memory_bytes: MEMORY_BYTES_MAX,
            epoch_tick: Duration::from_millis(10),
            component_bytes_max: 64 * 1024 * 1024,
            output_bytes_max: 1024 * 1024,
            log_bytes_max: 256 * 1024,
        }
    }
}

/// Hits and misses of the on-disk compile cache since this runtime started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Components loaded from the cache instead of compiled.
    pub hits: usize,
    /// Components compiled and written to the cache.
    pub misses: usize,
}

/// Runs WASI 0.2 components with limits; cheap to clone, shared by all workloads.
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<RuntimeInner>,
}

pub(crate) struct RuntimeInner {
    pub(crate) engine: Engine,
    http_linker: Linker<Host>,
    job_linker: Linker<Host>,
    cache: Option<Cache>,
    pub(crate) config: RuntimeConfig,
    /// One permit per instance of the pool, handed out first come, first served: a run
    /// waits for one within its wall time rather than failing the moment the pool is full.
    instances: Arc<tokio::sync::Semaphore>,
    _ticker: Ticker,
}

/// Advances the engine's epoch every tick until dropped.
struct Ticker {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Ticker {
    fn start(engine: Engine, tick: Duration) -> Result<Self, ComputeError> {
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("peergrid-compute-epoch".into())
            .spawn(move || {
                while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(tick) {
                    engine.increment_epoch();
                }
            })
            .map_err(|e| ComputeError::Engine(format!("cannot start the epoch thread: {e}")))?;
        Ok(Ticker {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Runtime {
    /// Starts the engine (pooling allocator, epoch interruption, compile cache) and its ticker.
    pub fn new(config: RuntimeConfig) -> Result<Self, ComputeError> {
        if config.max_instances == 0 {
            return Err(ComputeError::Engine(
                "max_instances must be at least 1".into(),
            ));
        }
        if config.epoch_tick.is_zero() {
            return Err(ComputeError::Engine(
                "epoch_tick must be longer than zero".into(),
            ));
        }
        let max_memory_bytes = config.max_memory_bytes.clamp(64 * 1024, MEMORY_BYTES_MAX);
        let mut wasm = Config::new();
        wasm.wasm_component_model(true)
            .epoch_interruption(true)
            .parallel_compilation(true);

        // Instances come from a pool reserved up front, so a request's instance costs
        // microseconds. A Rust component has a handful of core instances, memories and
        // tables; size the pool for that, and hold each component to its part of it, so
        // one tenant's component cannot take every slot and leave the others none.
        let n = config.max_instances;
        let mut pool = PoolingAllocationConfig::new();
        pool.total_component_instances(n)
            .total_core_instances(n.saturating_mul(CORE_INSTANCES_PER_COMPONENT))
            .total_memories(n.saturating_mul(MEMORIES_PER_COMPONENT))
            .total_tables(n.saturating_mul(TABLES_PER_COMPONENT))
            .max_core_instances_per_component(CORE_INSTANCES_PER_COMPONENT)
            .max_memories_per_component(MEMORIES_PER_COMPONENT)
            .max_tables_per_component(TABLES_PER_COMPONENT)
            .total_stacks(n)
            .max_memory_size(usize::try_from(max_memory_bytes).unwrap_or(usize::MAX));
        wasm.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));

        let cache = match &config.cache_dir {
            None => None,
            Some(dir) => {
                let cache_err = |reason: String| ComputeError::Cache {
                    dir: dir.clone(),
                    reason,
                };
                std::fs::create_dir_all(dir).map_err(|e| cache_err(e.to_string()))?;
                let absolute = std::path::absolute(dir).map_err(|e| cache_err(e.to_string()))?;
                let mut cache_config = CacheConfig::new();
                cache_config.with_directory(absolute);
                let cache = Cache::new(cache_config).map_err(|e| cache_err(one_line(&e)))?;
                wasm.cache(Some(cache.clone()));
                Some(cache)
            }
        };

        let engine = Engine::new(&wasm).map_err(|e| ComputeError::Engine(one_line(&e)))?;

        // Both kinds get all of WASI 0.2. wasi:sockets is linked so that components whose
        // standard library imports it still load, but the context grants no network:
        // every socket operation and name lookup is refused. Only the app's data folder, if it
        // has one, is preopened (as /data), its writes held to its quota (quota.rs).
        let mut job_linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut job_linker)
            .and_then(|()| crate::quota::add_to_linker(&mut job_linker))
            .map_err(|e| ComputeError::Engine(one_line(&e)))?;
        let mut http_linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut http_linker)
            .and_then(|()| crate::quota::add_to_linker(&mut http_linker))
            .map_err(|e| ComputeError::Engine(one_line(&e)))?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut http_linker)
            .map_err(|e| ComputeError::Engine(one_line(&e)))?;

        let ticker = Ticker::start(engine.clone(), config.epoch_tick)?;
        let config = RuntimeConfig {
            max_memory_bytes,
            ..config
        };
        Ok(Runtime {
            inner: Arc::new(RuntimeInner {
                engine,
                http_linker,
                job_linker,
                cache,
                instances: Arc::new(tokio::sync::Semaphore::new(
                    usize::try_from(config.max_instances).unwrap_or(usize::MAX),
                )),
                config,
                _ticker: ticker,
            }),
        })
    }

    /// Runs holding one of the pool's instances now.
    pub fn instances_in_use(&self) -> u32 {
        let free = u32::try_from(self.inner.instances.available_permits()).unwrap_or(u32::MAX);
        self.inner.config.max_instances.saturating_sub(free)
    }

    /// The configuration in force (the memory ceiling clamped to what the engine allows).
    pub fn config(&self) -> &RuntimeConfig {
        &self.inner.config
    }

    /// Compile-cache hits and misses since this runtime started.
    pub fn cache_stats(&self) -> CacheStats {
        match &self.inner.cache {
            Some(cache) => CacheStats {
                hits: cache.cache_hits(),
                misses: cache.cache_misses(),
            },
            None => CacheStats::default(),
        }
    }

    /// Checks, compiles (or loads from the cache) and links a component for `kind`.
    ///
    /// This is CPU-heavy on a cache miss (seconds for a large component): from async
    /// code use [`Runtime::prepare_async`].
    pub fn prepare(
        &self,
        hash: &[u8; 32],
        bytes: &[u8],
        kind: WorkloadKind,
    ) -> Result<Prepared, ComputeError> {
        let rt = &self.inner;
        if bytes.len() > rt.config.component_bytes_max {
            return Err(ComputeError::TooLarge {
                size: bytes.len(),
                max: rt.config.component_bytes_max,
            });
        }
        let actual = blake3::hash(bytes);
        if actual.as_bytes() != hash {
            return Err(ComputeError::HashMismatch {
                expected: hex::encode(hash),
                actual: actual.to_hex().to_string(),
            });
        }
        check_header(bytes)?;
        let component = Component::from_binary(&rt.engine, bytes)
            .map_err(|e| ComputeError::InvalidComponent(one_line(&e)))?;
        check_exports(&rt.engine, &component, kind)?;

        let linker = match kind {
            WorkloadKind::Http => &rt.http_linker,
            WorkloadKind::Job => &rt.job_linker,
        };
        let instance_pre = linker
            .instantiate_pre(&component)
            .map_err(|e| unsupported_import(&rt.engine, &component, kind, &e))?;
        let pre = match kind {
            WorkloadKind::Http => Pre::Http(ProxyPre::new(instance_pre).map_err(|e| {
                ComputeError::InvalidComponent(format!(
                    "its wasi:http/incoming-handler export does not match WASI 0.2: {}",
                    one_line(&e)
                ))
            })?),
            WorkloadKind::Job => Pre::Job(CommandPre::new(instance_pre).map_err(|e| {
                ComputeError::InvalidComponent(format!(
                    "its wasi:cli/run export does not match WASI 0.2: {}",
                    one_line(&e)
                ))
            })?),
        };
        Ok(Prepared {
            inner: Arc::new(PreparedInner {
                runtime: self.inner.clone(),
                hash: *hash,
                kind,
                pre,
                metrics: Arc::new(WorkloadMetrics::default()),
                log: Capture::ring(rt.config.log_bytes_max),
            }),
            share: None,
            data: None,
        })
    }

    /// [`Runtime::prepare`] on a blocking thread, for async callers.
    pub async fn prepare_async(
        &self,
        hash: [u8; 32],
        bytes: Vec<u8>,
        kind: WorkloadKind,
    ) -> Result<Prepared, ComputeError> {
        let rt = self.clone();
        tokio::task::spawn_blocking(move || rt.prepare(&hash, &bytes, kind))
            .await
            .map_err(|e| ComputeError::Engine(format!("the compile task failed: {e}")))?
    }
}

/// The memory a component's memories take together as it starts, in bytes (an
/// instance's limit counts them all): an instance given less can never start, and each
/// request to it would fail.
pub fn memory_at_start(bytes: &[u8]) -> Result<u64, ComputeError> {
    use wasmtime::wasmparser::{Parser, Payload};
    let invalid = |e: wasmtime::wasmparser::BinaryReaderError| {
        ComputeError::InvalidComponent(e.message().to_string())
    };
    let mut total = 0u64;
    for payload in Parser::new(0).parse_all(bytes) {
        // Imported memories are defined by another module of the component, counted there.
        if let Payload::MemorySection(memories) = payload.map_err(invalid)? {
            for memory in memories {
                let memory = memory.map_err(invalid)?;
                let page = 1u64 << memory.page_size_log2.unwrap_or(16).min(16);
                total = total.saturating_add(memory.initial.saturating_mul(page));
            }
        }
    }
    Ok(total)
}

/// Refuses what is not a component before handing bytes to the compiler.
fn check_header(bytes: &[u8]) -> Result<(), ComputeError> {
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return Err(ComputeError::NotWasm);
    }
    // Bytes 4..8 are a version (u16) and a layer (u16): layer 0 is a core module.
    if bytes[6..8] == [0, 0] {
        return Err(ComputeError::CoreModule);
    }
    Ok(())
}

fn exports_interface(engine: &Engine, component: &Component, interface: &str) -> bool {
    component
        .component_type()
        .exports(engine)
        .any(|(name, _)| name.split('@').next() == Some(interface))
}

fn check_exports(
    engine: &Engine,
    component: &Component,
    kind: WorkloadKind,
) -> Result<(), ComputeError> {
    const HANDLER: &str = "wasi:http/incoming-handler";
    const RUN: &str = "wasi:cli/run";
    match kind {
        WorkloadKind::Http if !exports_interface(engine, component, HANDLER) => {
            Err(ComputeError::KindMismatch {
                kind,
                missing: HANDLER,
                hint: if exports_interface(engine, component, RUN) {
                    "it is a wasi:cli/command program: deploy it as a job"
                } else {
                    "build a wasi:http/proxy component (target wasm32-wasip2)"
                },
            })
        }
        WorkloadKind::Job if !exports_interface(engine, component, RUN) => {
            Err(ComputeError::KindMismatch {
                kind,
                missing: RUN,
                hint: if exports_interface(engine, component, HANDLER) {
                    "it is a wasi:http/proxy service: deploy it as http"
                } else {
                    "build a wasi:cli/command component (a program with a main, target wasm32-wasip2)"
                },
            })
        }
        _ => Ok(()),
    }
}

/// Names the import the linker could not satisfy.
fn unsupported_import(
    engine: &Engine,
    component: &Component,
    kind: WorkloadKind,
    err: &wasmtime::Error,
) -> ComputeError {
    let reason = one_line(err);
    // Wasmtime's message names the import between backticks.
    let named = reason
        .split('`')
        .nth(1)
        .filter(|s| !s.is_empty())
        .map(str::to_string);
    let import = named.unwrap_or_else(|| {
        const PROVIDED: [&str; 7] = [
            "wasi:cli/",
            "wasi:clocks/",
            "wasi:random/",
            "wasi:io/",
            "wasi:filesystem/",
            "wasi:sockets/",
            "wasi:http/",
        ];
        component
            .component_type()
            .imports(engine)
            .map(|(name, _)| name.to_string())
            .find(|name| !PROVIDED.iter().any(|p| name.starts_with(p)))
            .unwrap_or_else(|| "(unknown)".to_string())
    });
    ComputeError::UnsupportedImport {
        import,
        kind,
        reason,
    }
}

enum Pre {
    Http(ProxyPre<Host>),
    Job(CommandPre<Host>),
}

/// A compiled, linked component, ready to instantiate in microseconds; cheap to clone.
///
/// Each clone shares one set of counters: prepare a component once per workload.
#[derive(Clone)]
pub struct Prepared {
    pub(crate) inner: Arc<PreparedInner>,
    /// The tenant's share its runs count in; none: only each run's own limits.
    pub(crate) share: Option<Arc<Share>>,
    /// The folder its runs see as `/data`; none: no directory is preopened.
    pub(crate) data: Option<Arc<DataDir>>,
}

pub(crate) struct PreparedInner {
    pub(crate) runtime: Arc<RuntimeInner>,
    hash: [u8; 32],
    kind: WorkloadKind,
    pre: Pre,
    pub(crate) metrics: Arc<WorkloadMetrics>,
    /// A service's stdout and stderr, interleaved, newest kept.
    pub(crate) log: Capture,
}

impl Prepared {
    /// BLAKE3 of the component's bytes.
    pub fn hash(&self) -> [u8; 32] {
        self.inner.hash
    }

    /// The same component, its runs counted in `share` (its contract's) from now on.
    pub fn in_share(mut self, share: Arc<Share>) -> Prepared {
        self.share = Some(share);
        self
    }

    /// The same component, its runs given `data` as `/data` from now on.
    pub fn with_data(mut self, data: Arc<DataDir>) -> Prepared {
        self.data = Some(data);
        self
    }

    /// A run's WASI context: `args` after a program name, `env`, captured output if
    /// given, the data folder if it has one (and the guard that measures it after the
    /// run), no network, empty stdin.
    pub(crate) async fn wasi_ctx(
        &self,
        meter: &Arc<RunMeter>,
        args: &[String],
        env: &[(String, String)],
        output: Option<(Capture, Capture)>,
    ) -> Result<(WasiCtx, Option<RunOnData>), String> {
        let mut builder = WasiCtx::builder();
        builder.arg("main").args(args).envs(env);
        if let Some((stdout, stderr)) = output {
            builder.stdout(stdout).stderr(stderr);
        }
        let data = match &self.data {
            Some(data) => Some(data.open(&mut builder, meter).await?),
            None => None,
        };
        Ok((builder.build(), data))
    }

    /// A run's meter under `limits`, counting in the share if there is one.
    pub(crate) fn meter(&self, limits: &Limits) -> Arc<RunMeter> {
        Arc::new(RunMeter::new(limits.cpu_ms, limits.memory_bytes).in_share(self.share.clone()))
    }

    /// Waits up to `wall` for an instance: one of the share's first (a contract's runs
    /// queue behind each other, not in front of other tenants), then one of the pool's.
    /// `Err` says which was not free in time.
    pub(crate) async fn instance(&self, wall: std::time::Duration) -> Result<Instance, String> {
        let deadline = tokio::time::Instant::now() + wall;
        let share = match &self.share {
            None => None,
            Some(share) => match tokio::time::timeout_at(deadline, share.instance()).await {
                Ok(Some(permit)) => Some(permit),
                Ok(None) => {
                    return Err(format!(
                        "stopped: all {} of the contract's instances on this node are busy and {} more requests wait for them already; retry shortly, or spread the load over more replicas",
                        share.instances_max(),
                        share.instances_max() * crate::share::WAITING_PER_INSTANCE
                    ));
                }
                Err(_) => {
                    return Err(format!(
                        "stopped: the contract's other runs held all {} of its instances on this node for the whole wall-time limit of {} ms; retry, or spread the load over more replicas",
                        share.instances_max(),
                        wall.as_millis()
                    ));
                }
            },
        };
        let pool = self.inner.runtime.instances.clone();
        // The semaphore is never closed: acquiring only ends with a permit or the deadline.
        match tokio::time::timeout_at(deadline, pool.acquire_owned()).await {
            Ok(Ok(pool)) => Ok(Instance {
                _share: share,
                _pool: pool,
            }),
            _ => Err(format!(
                "stopped: the node is running as many instances as it can ({}) and none was free within the wall-time limit of {} ms; retry shortly",
                self.inner.runtime.config.max_instances,
                wall.as_millis()
            )),
        }
    }

    /// The kind it was prepared as.
    pub fn kind(&self) -> WorkloadKind {
        self.inner.kind
    }

    /// The workload's counters now.
    pub fn metrics(&self) -> MetricsSnapshot {
        self.inner.metrics.snapshot()
    }

    /// What a service printed (stdout and stderr as they came), the newest
    /// [`RuntimeConfig::log_bytes_max`] bytes from a line's start; empty for a job,
    /// whose output comes with its [`crate::JobOutcome`].
    pub fn logs(&self) -> Vec<u8> {
        self.inner.log.snapshot()
    }

    /// Bytes ever written to its log: a cheap sign that [`Prepared::logs`] changed.
    pub fn log_written(&self) -> u64 {
        self.inner.log.written()
    }

    pub(crate) fn proxy_pre(&self) -> Option<&ProxyPre<Host>> {
        match &self.inner.pre {
            Pre::Http(p) => Some(p),
            Pre::Job(_) => None,
        }
    }

    pub(crate) fn command_pre(&self) -> Option<&CommandPre<Host>> {
        match &self.inner.pre {
            Pre::Job(p) => Some(p),
            Pre::Http(_) => None,
        }
    }

    /// Limits made safe for this runtime: memory within its ceiling, times at least 1 ms.
    pub(crate) fn effective_limits(&self, limits: &Limits) -> Limits {
        Limits {
            memory_bytes: limits
                .memory_bytes
                .min(self.inner.runtime.config.max_memory_bytes),
            cpu_ms: limits.cpu_ms.max(1),
            wall_ms: limits.wall_ms.max(1),
        }
    }
}

/// The instance a run holds: the pool's and its contract's share's, given back when the
/// run's store is gone.
pub(crate) struct Instance {
    _share: Option<tokio::sync::OwnedSemaphorePermit>,
    _pool: tokio::sync::OwnedSemaphorePermit,
}

/// Why a run did not finish by itself, in words for the builder.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) limit: Option<LimitExceeded>,
    pub(crate) status: StatusCode,
    pub(crate) message: String,
    /// Seconds after which the same request may well succeed: set when others' load,
    /// not the request itself, stopped it.
    pub(crate) retry_after_secs: Option<u64>,
}

/// What a refusal caused by load tells the client to wait, in seconds.
pub(crate) const BUSY_RETRY_AFTER_SECS: u64 = 1;

/// Sorts how a run ended: a limit (checked first, since it shows as a trap), the
/// pool being full, or the guest's own trap.
pub(crate) fn classify<T>(
    meter: &RunMeter,
    limits: &Limits,
    res: Result<wasmtime::Result<T>, tokio::time::error::Elapsed>,
) -> Result<T, Failure> {
    use std::sync::atomic::Ordering;
    let err = match res {
        Ok(Ok(v)) => return Ok(v),
        Err(_) => {
            return Err(Failure {
                limit: Some(LimitExceeded::WallTime),
                status: StatusCode::GATEWAY_TIMEOUT,
                message: format!(
                    "stopped: the workload ran longer than its wall-time limit of {} ms",
                    limits.wall_ms
                ),
                retry_after_secs: None,
            });
        }
        Ok(Err(e)) => e,
    };
    if meter.disk_exhausted.load(Ordering::Relaxed) {
        let why = (meter
            .disk_stop
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone())
        .unwrap_or_else(|| "stopped: the app's /data folder is full".to_string());
        return Err(Failure {
            limit: Some(LimitExceeded::Disk),
            status: StatusCode::INSUFFICIENT_STORAGE,
            message: why,
            retry_after_secs: None,
        });
    }
    if meter.cpu_exhausted.load(Ordering::Relaxed) {
        return Err(Failure {
            limit: Some(LimitExceeded::Cpu),
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: format!(
                "stopped: the workload used its CPU limit of {} ms",
                limits.cpu_ms
            ),
            retry_after_secs: None,
        });
    }
    if let Some(share) = &meter.share
        && meter.share_exhausted.load(Ordering::Relaxed)
    {
        return Err(Failure {
            limit: Some(LimitExceeded::Memory),
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: format!(
                "stopped: the contract's runs on this node together hold all the memory it reserved ({}); retry, or reserve more memory for the contract",
                crate::deployment::readable_bytes(share.memory_bytes_max()),
            ),
            retry_after_secs: Some(BUSY_RETRY_AFTER_SECS),
        });
    }
    if meter.memory_exhausted.load(Ordering::Relaxed) {
        return Err(Failure {
            limit: Some(LimitExceeded::Memory),
            status: StatusCode::SERVICE_UNAVAILABLE,
            // The guest's own words here are a trap from its allocator giving up, which
            // says nothing the limit does not.
            message: format!(
                "stopped: the workload needed more than its memory limit of {}; give it more with --memory",
                crate::deployment::readable_bytes(limits.memory_bytes)
            ),
            retry_after_secs: None,
        });
    }
    if err.is::<wasmtime::PoolConcurrencyLimitError>() {
        return Err(Failure {
            limit: None,
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: "the node is running as many instances as it can; retry shortly".into(),
            retry_after_secs: Some(BUSY_RETRY_AFTER_SECS),
        });
    }
    Err(Failure {
        limit: None,
        status: StatusCode::INTERNAL_SERVER_ERROR,
        message: format!("the workload failed: {}", one_line(&err)),
        retry_after_secs: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_check_names_the_problem() {
        assert!(matches!(check_header(b""), Err(ComputeError::NotWasm)));
        assert!(matches!(
            check_header(b"hello world"),
            Err(ComputeError::NotWasm)
        ));
        assert!(matches!(
            check_header(b"\0asm\x01\0\0\0"),
            Err(ComputeError::CoreModule)
        ));
        assert!(check_header(b"\0asm\x0d\0\x01\0").is_ok());
    }
}
