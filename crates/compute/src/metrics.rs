//! Per-workload counters, for the node's metrics and status.

use crate::host::RunMeter;
use std::sync::atomic::{AtomicU64, Ordering};

/// Why a run was stopped before it finished by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum LimitExceeded {
    /// It used its CPU time.
    Cpu,
    /// It tried to grow its memory past the limit (and failed because of it).
    Memory,
    /// It ran past its wall-time limit.
    WallTime,
    /// Its app's data folder went over the disk its contract reserves.
    Disk,
}

/// A point-in-time copy of a workload's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MetricsSnapshot {
    /// HTTP requests handled and jobs run.
    pub requests: u64,
    /// Requests and jobs that failed: a trap, an exhausted limit, no response.
    pub errors: u64,
    /// Runs stopped by the CPU limit.
    pub cpu_limit_exceeded: u64,
    /// Runs stopped by the memory limit.
    pub memory_limit_exceeded: u64,
    /// Runs stopped by the wall-time limit.
    pub wall_time_exceeded: u64,
    /// Runs stopped because their app's `/data` outgrew its disk, or the node's filled.
    pub disk_limit_exceeded: u64,
    /// CPU time spent by all runs, in microseconds.
    pub cpu_us: u64,
    /// The most linear memory any single run had, in bytes.
    pub memory_peak_bytes: u64,
    /// Response body bytes sent to clients.
    pub bytes_served: u64,
}

/// The live counters behind a [`MetricsSnapshot`].
#[derive(Debug, Default)]
pub(crate) struct WorkloadMetrics {
    requests: AtomicU64,
    errors: AtomicU64,
    cpu_limit_exceeded: AtomicU64,
    memory_limit_exceeded: AtomicU64,
    wall_time_exceeded: AtomicU64,
    disk_limit_exceeded: AtomicU64,
    cpu_us: AtomicU64,
    memory_peak_bytes: AtomicU64,
    bytes_served: AtomicU64,
}

impl WorkloadMetrics {
    pub(crate) fn snapshot(&self) -> MetricsSnapshot {
        MetricsSnapshot {
            requests: self.requests.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            cpu_limit_exceeded: self.cpu_limit_exceeded.load(Ordering::Relaxed),
            memory_limit_exceeded: self.memory_limit_exceeded.load(Ordering::Relaxed),
            wall_time_exceeded: self.wall_time_exceeded.load(Ordering::Relaxed),
            disk_limit_exceeded: self.disk_limit_exceeded.load(Ordering::Relaxed),
            cpu_us: self.cpu_us.load(Ordering::Relaxed),
            memory_peak_bytes: self.memory_peak_bytes.load(Ordering::Relaxed),
            bytes_served: self.bytes_served.load(Ordering::Relaxed),
        }
    }

    pub(crate) fn request_started(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn error(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn served(&self, bytes: usize) {
        let bytes = u64::try_from(bytes).unwrap_or(u64::MAX);
        self.bytes_served.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Adds what a finished run used; counts it as an error if it failed.
    pub(crate) fn run_finished(
        &self,
        meter: &RunMeter,
        failed: bool,
        limit: Option<LimitExceeded>,
    ) {
        self.cpu_us
            .fetch_add(meter.cpu_used_ns() / 1_000, Ordering::Relaxed);
        self.memory_peak_bytes.fetch_max(
            meter.memory_peak_bytes.load(Ordering::Relaxed),
            Ordering::Relaxed,
        );
        if failed {
            self.error();
        }
        let counter = match limit {
            Some(LimitExceeded::Cpu) => &self.cpu_limit_exceeded,
            Some(LimitExceeded::Memory) => &self.memory_limit_exceeded,
            Some(LimitExceeded::WallTime) => &self.wall_time_exceeded,
            Some(LimitExceeded::Disk) => &self.disk_limit_exceeded,
            None => return,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}
