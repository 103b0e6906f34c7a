//! Jobs: a `wasi:cli/command` component run once to completion, its output kept.

use crate::deployment::Limits;
use crate::host::{Capture, Metered, new_store};
use crate::metrics::LimitExceeded;
use crate::runtime::{Prepared, classify};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use wasmtime_wasi::I32Exit;

/// How a job run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobOutcome {
    /// The exit code, if the program exited by itself (`None` when it was stopped).
    pub exit_code: Option<i32>,
    /// Its stdout, up to the runtime's bound, then a truncation marker line.
    pub stdout: Vec<u8>,
    /// Its stderr, bounded the same way.
    pub stderr: Vec<u8>,
    /// CPU time it used, in milliseconds (rounded down).
    pub cpu_ms: u64,
    /// Wall time from start to end, in milliseconds.
    pub wall_ms: u64,
    /// The most linear memory it had, in bytes.
    pub memory_peak_bytes: u64,
    /// The limit that stopped it, if one did.
    pub limit_exceeded: Option<LimitExceeded>,
    /// Why it was stopped, in one line, if it did not exit by itself.
    pub error: Option<String>,
    /// It never started: no instance was free within its wall time (others' load, not
    /// the job), so running it again later may well succeed.
    pub refused: bool,
}

impl JobOutcome {
    /// True when the program exited by itself with code 0.
    pub fn success(&self) -> bool {
        self.exit_code == Some(0) && self.error.is_none()
    }
}

impl JobOutcome {
    /// A job that did not run, for `error`.
    fn not_run(
        started: Instant,
        limit: Option<LimitExceeded>,
        error: &str,
        refused: bool,
    ) -> JobOutcome {
        JobOutcome {
            exit_code: None,
            stdout: Vec::new(),
            stderr: Vec::new(),
            cpu_ms: 0,
            wall_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            memory_peak_bytes: 0,
            limit_exceeded: limit,
            error: Some(error.to_string()),
            refused,
        }
    }
}

impl Prepared {
    /// Runs the job once with `args` (after the program name) and `env`, under `limits`.
    ///
    /// The guest yields at every epoch tick, so this future never blocks the executor
    /// for longer than a tick; dropping it stops the job.
    pub async fn run_job(
        &self,
        args: &[String],
        env: &[(String, String)],
        limits: &Limits,
    ) -> JobOutcome {
        let started = Instant::now();
        let metrics = &self.inner.metrics;
        metrics.request_started();
        let Some(pre) = self.command_pre().cloned() else {
            metrics.error();
            return JobOutcome::not_run(
                started,
                None,
                "this workload is an HTTP service, not a job",
                false,
            );
        };
        let limits = self.effective_limits(limits);
        let wall = Duration::from_millis(limits.wall_ms);
        let _instance = match self.instance(wall).await {
            Ok(permit) => permit,
            Err(reason) => {
                metrics.error();
                return JobOutcome::not_run(started, Some(LimitExceeded::WallTime), &reason, true);
            }
        };
        let meter = self.meter(&limits);
        let bound = self.inner.runtime.config.output_bytes_max;
        let (stdout, stderr) = (Capture::new(bound), Capture::new(bound));
        let output = Some((stdout.clone(), stderr.clone()));
        let (wasi, on_data) = match self.wasi_ctx(&meter, args, env, output).await {
            Ok(ctx) => ctx,
            Err(reason) => {
                metrics.error();
                return JobOutcome::not_run(started, None, &reason, false);
            }
        };
        let grants = on_data.as_ref().and_then(|d| d.grants());
        let mut store = new_store(&self.inner.runtime.engine, wasi, meter.clone(), grants);
        let guest = Metered::new(meter.clone(), async move {
            let command = pre.instantiate_async(&mut store).await?;
            command.wasi_cli_run().call_run(&mut store).await
        });
        let res = tokio::time::timeout(wall.saturating_sub(started.elapsed()), guest).await;

        // `exit(n)` arrives as an error carrying the code: it is an ending, not a failure.
        let res = res.map(|r| match r {
            Ok(Ok(())) => Ok(0),
            Ok(Err(())) => Ok(1),
            Err(e) => match e.downcast_ref::<I32Exit>() {
                Some(exit) => Ok(exit.0),
                None => Err(e),
            },
        });
        let (exit_code, limit_exceeded, error) = match classify(&meter, &limits, res) {
            Ok(code) => (Some(code), None, None),
            Err(failure) => (None, failure.limit, Some(failure.message)),
        };
        metrics.run_finished(&meter, error.is_some(), limit_exceeded);
        JobOutcome {
            exit_code,
            stdout: stdout.take(),
            stderr: stderr.take(),
            cpu_ms: meter.cpu_used_ns() / 1_000_000,
            wall_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            memory_peak_bytes: meter.memory_peak_bytes.load(Ordering::Relaxed),
            limit_exceeded,
            error,
            refused: false,
        }
    }
}
