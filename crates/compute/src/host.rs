//! What one instance's store holds: WASI contexts, the limiter, and the meter of a run.

use crate::data::DataDir;
use crate::share::Share;
use bytes::Bytes;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;
use wasmtime::component::ResourceTable;
use wasmtime::{ResourceLimiter, Store, UpdateDeadline};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView};

/// Most table elements one table may grow to.
const TABLE_ELEMENTS_MAX: usize = 1_000_000;

/// The store data of one instance.
pub(crate) struct Host {
    table: ResourceTable,
    wasi: WasiCtx,
    http: WasiHttpCtx,
    hooks: NoOutgoingHttp,
    limiter: Limiter,
    meter: Arc<RunMeter>,
    /// The app's data folder when the run may write there: every write that makes it
    /// grow asks it first.
    pub(crate) data: Option<Arc<DataDir>>,
}

impl Host {
    pub(crate) fn new(wasi: WasiCtx, meter: Arc<RunMeter>, data: Option<Arc<DataDir>>) -> Self {
        Host {
            table: ResourceTable::new(),
            wasi,
            http: WasiHttpCtx::new(),
            hooks: NoOutgoingHttp,
            limiter: Limiter {
                meter: meter.clone(),
            },
            meter,
            data,
        }
    }
}

impl WasiView for Host {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for Host {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

/// A store with the memory limiter and the CPU budget of `meter` installed, its writes
/// to `/data` granted by `data`.
pub(crate) fn new_store(
    engine: &wasmtime::Engine,
    wasi: WasiCtx,
    meter: Arc<RunMeter>,
    data: Option<Arc<DataDir>>,
) -> Store<Host> {
    let mut store = Store::new(engine, Host::new(wasi, meter, data));
    store.limiter(|host| &mut host.limiter);
    // Every epoch tick the guest is running, check its CPU budget and yield to the
    // executor, so a busy guest never holds a worker thread for more than one tick.
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(|ctx| {
        let meter = &ctx.data().meter;
        if meter.disk_exhausted.load(Ordering::Relaxed) {
            Ok(UpdateDeadline::Interrupt)
        } else if meter.cpu_used_ns() >= meter.cpu_limit_ns {
            meter.cpu_exhausted.store(true, Ordering::Relaxed);
            Ok(UpdateDeadline::Interrupt)
        } else {
            Ok(UpdateDeadline::Yield(1))
        }
    });
    store
}

/// The outgoing-HTTP hook: workloads get no network, so every request is refused.
struct NoOutgoingHttp;

impl WasiHttpHooks for NoOutgoingHttp {
    fn send_request(
        &mut self,
        request: http::Request<wasmtime_wasi_http::WasiBody>,
        _options: Option<wasmtime_wasi_http::RequestOptions>,
        _fut: Box<
            dyn Future<Output = wasmtime_wasi_http::Result<(), wasmtime_wasi_http::Error>> + Send,
        >,
    ) -> Box<
        dyn Future<
                Output = wasmtime_wasi_http::Result<(
                    http::Response<wasmtime_wasi_http::WasiBody>,
                    Box<
                        dyn Future<
                                Output = wasmtime_wasi_http::Result<(), wasmtime_wasi_http::Error>,
                            > + Send,
                    >,
                )>,
            > + Send,
    > {
        tracing::debug!(uri = %request.uri(), "refused outgoing HTTP request from a workload");
        Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) })
    }
}

/// Counts what one run (a request or a job) uses, shared by the store, the limiter,
/// the epoch callback and the [`Metered`] future around the run.
pub(crate) struct RunMeter {
    origin: Instant,
    /// CPU time of finished polls.
    spent_ns: AtomicU64,
    /// `origin`-relative start of the poll in progress plus one; zero when idle.
    running_since_ns: AtomicU64,
    pub(crate) cpu_limit_ns: u64,
    pub(crate) cpu_exhausted: AtomicBool,
    pub(crate) memory_limit_bytes: u64,
    memory_bytes: AtomicU64,
    pub(crate) memory_peak_bytes: AtomicU64,
    pub(crate) memory_exhausted: AtomicBool,
    /// The tenant's share this run's memory counts in, if any.
    pub(crate) share: Option<Arc<Share>>,
    /// The growth refused was the share's, not this run's own limit.
    pub(crate) share_exhausted: AtomicBool,
    /// The app's data folder went over its quota and grew during the run, or the node's
    /// disk filled: the run is stopped at the next epoch tick.
    pub(crate) disk_exhausted: AtomicBool,
    /// Why, in words for the builder.
    pub(crate) disk_stop: Mutex<Option<String>>,
}

impl RunMeter {
    pub(crate) fn new(cpu_limit_ms: u64, memory_limit_bytes: u64) -> Self {
        RunMeter {
            origin: Instant::now(),
            spent_ns: AtomicU64::new(0),
            running_since_ns: AtomicU64::new(0),
            cpu_limit_ns: cpu_limit_ms.saturating_mul(1_000_000),
            cpu_exhausted: AtomicBool::new(false),
            memory_limit_bytes,
            memory_bytes: AtomicU64::new(0),
            memory_peak_bytes: AtomicU64::new(0),
            memory_exhausted: AtomicBool::new(false),
            share: None,
            share_exhausted: AtomicBool::new(false),
            disk_exhausted: AtomicBool::new(false),
            disk_stop: Mutex::new(None),
        }
    }

    /// Stops the run at its next epoch tick, for the disk, saying `why`.
    pub(crate) fn stop_for_disk(&self, why: String) {
        let mut stop = self.disk_stop.lock().unwrap_or_else(|e| e.into_inner());
        stop.get_or_insert(why);
        self.disk_exhausted.store(true, Ordering::Relaxed);
    }

    /// Counts this run's memory in `share` too.
    pub(crate) fn in_share(mut self, share: Option<Arc<Share>>) -> Self {
        self.share = share;
        self
    }

    fn now_ns(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// CPU time used so far, the poll in progress included.
    pub(crate) fn cpu_used_ns(&self) -> u64 {
        let spent = self.spent_ns.load(Ordering::Relaxed);
        match self.running_since_ns.load(Ordering::Relaxed) {
            0 => spent,
            since => spent.saturating_add(self.now_ns().saturating_sub(since - 1)),
        }
    }

    fn poll_started(&self) {
        self.running_since_ns
            .store(self.now_ns().saturating_add(1), Ordering::Relaxed);
    }

    fn poll_ended(&self) {
        let since = self.running_since_ns.swap(0, Ordering::Relaxed);
        if since != 0 {
            let ran = self.now_ns().saturating_sub(since - 1);
            self.spent_ns.fetch_add(ran, Ordering::Relaxed);
        }
    }
}

impl Drop for RunMeter {
    fn drop(&mut self) {
        // The last holder is gone, the store with it: its memory is back in the pool.
        if let Some(share) = &self.share {
            share.release(*self.memory_bytes.get_mut());
        }
    }
}

/// Runs a future and charges the time spent inside its polls to a [`RunMeter`].
///
/// With async wasmtime the guest runs inside `poll`, on a fiber, until it yields (at
/// every epoch tick or when it waits for I/O), so the time spent in polls is the CPU
/// time the run took from the node, host calls included.
pub(crate) struct Metered<F> {
    inner: Pin<Box<F>>,
    meter: Arc<RunMeter>,
}

impl<F> Metered<F> {
    pub(crate) fn new(meter: Arc<RunMeter>, inner: F) -> Self {
        Metered {
            inner: Box::pin(inner),
            meter,
        }
    }
}

impl<F: Future> Future for Metered<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        self.meter.poll_started();
        let out = self.inner.as_mut().poll(cx);
        self.meter.poll_ended();
        out
    }
}

/// Enforces the memory limit over all of a store's memories together, and records the peak.
struct Limiter {
    meter: Arc<RunMeter>,
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // Past the memory's own declared maximum the growth fails anyway: not counted.
        if maximum.is_some_and(|m| desired > m) {
            return Ok(false);
        }
        let grow = u64::try_from(desired.saturating_sub(current)).unwrap_or(u64::MAX);
        let total = self.meter.memory_bytes.load(Ordering::Relaxed);
        let wanted = total.saturating_add(grow);
        if wanted > self.meter.memory_limit_bytes {
            self.meter.memory_exhausted.store(true, Ordering::Relaxed);
            return Ok(false);
        }
        if let Some(share) = &self.meter.share
            && !share.grow(grow)
        {
            self.meter.share_exhausted.store(true, Ordering::Relaxed);
            self.meter.memory_exhausted.store(true, Ordering::Relaxed);
            return Ok(false);
        }
        self.meter.memory_bytes.store(wanted, Ordering::Relaxed);
        self.meter
            .memory_peak_bytes
            .fetch_max(wanted, Ordering::Relaxed);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= TABLE_ELEMENTS_MAX)
    }

    // A store holds one component: the same bounds as the pool's per component.
    fn instances(&self) -> usize {
        crate::runtime::CORE_INSTANCES_PER_COMPONENT as usize
    }

    fn tables(&self) -> usize {
        crate::runtime::TABLES_PER_COMPONENT as usize
    }

    fn memories(&self) -> usize {
        crate::runtime::MEMORIES_PER_COMPONENT as usize
    }
}

/// A guest's stdout or stderr kept in memory, up to a bound; the rest is counted, not kept.
#[derive(Clone)]
pub(crate) struct Capture {
    inner: Arc<Mutex<Captured>>,
}

struct Captured {
    bytes: Vec<u8>,
    max: usize,
    dropped: u64,
    /// Keep the newest bytes (a log) rather than the first (a job's output).
    ring: bool,
    /// Bytes ever pushed: changes whenever the log does.
    written: u64,
    /// The host's own lines in the current second, and those left out past the limit.
    notes: NoteWindow,
}

/// Host lines written in the current second, at most [`HOST_NOTES_PER_SEC`]: a flood of
/// refused requests must not push the app's own output out of its log.
#[derive(Default)]
struct NoteWindow {
    started: Option<std::time::Instant>,
    written: u32,
    left_out: u64,
}

/// Host lines a service's log takes per second; the others are counted.
const HOST_NOTES_PER_SEC: u32 = 10;

/// The line saying how many host lines were counted, not kept.
fn left_out_line(count: u64) -> String {
    format!("[peergrid] {count} more answers like these were not logged\n")
}

impl Captured {
    fn push(&mut self, data: &[u8]) {
        self.written = self.written.saturating_add(data.len() as u64);
        if self.ring {
            // Trimmed only past twice the bound, so a chatty guest costs one copy
            // of the log per `max` bytes written, not one per line.
            self.bytes.extend_from_slice(data);
            if self.bytes.len() > 2 * self.max {
                let cut = self.bytes.len() - self.max;
                self.bytes.drain(..cut);
                self.dropped = self
                    .dropped
                    .saturating_add(u64::try_from(cut).unwrap_or(u64::MAX));
            }
            return;
        }
        let room = self.max.saturating_sub(self.bytes.len());
        let keep = room.min(data.len());
        self.bytes.extend_from_slice(&data[..keep]);
        let dropped = u64::try_from(data.len() - keep).unwrap_or(u64::MAX);
        self.dropped = self.dropped.saturating_add(dropped);
    }
}

impl Capture {
    pub(crate) fn new(max: usize) -> Self {
        Capture {
            inner: Arc::new(Mutex::new(Captured {
                bytes: Vec::new(),
                max,
                dropped: 0,
                ring: false,
                written: 0,
                notes: NoteWindow::default(),
            })),
        }
    }

    /// A capture that keeps the newest `max` bytes, for a service's log.
    pub(crate) fn ring(max: usize) -> Self {
        let capture = Capture::new(max);
        capture.lock().ring = true;
        capture
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Captured> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn push(&self, data: &[u8]) {
        self.lock().push(data);
    }

    /// Adds a line of the host's own (`[peergrid] …`) on a line of its own, so that a
    /// service's log says what the node answered for it; past [`HOST_NOTES_PER_SEC`] in
    /// a second, lines are counted and the count is written with the next one.
    pub(crate) fn note(&self, line: &str) {
        let mut c = self.lock();
        let now = std::time::Instant::now();
        let window = &mut c.notes;
        if window
            .started
            .is_none_or(|at| now.duration_since(at) >= std::time::Duration::from_secs(1))
        {
            window.started = Some(now);
            window.written = 0;
        }
        if window.written >= HOST_NOTES_PER_SEC {
            window.left_out = window.left_out.saturating_add(1);
            return;
        }
        window.written += 1;
        let left_out = std::mem::take(&mut window.left_out);
        let mut text = String::with_capacity(line.len() + 80);
        // Under the same lock as the check: no guest line can come between.
        if c.bytes.last().is_some_and(|b| *b != b'\n') {
            text.push('\n');
        }
        if left_out > 0 {
            text.push_str(&left_out_line(left_out));
        }
        text.push_str("[peergrid] ");
        text.push_str(line);
        text.push('\n');
        c.push(text.as_bytes());
    }

    /// Bytes ever written to it, host lines included: a cheap sign that it changed.
    pub(crate) fn written(&self) -> u64 {
        self.lock().written
    }

    /// A ring's newest `max` bytes, from the first line that starts within them, after
    /// a marker line saying how much came before.
    pub(crate) fn snapshot(&self) -> Vec<u8> {
        let c = self.lock();
        let mut start = c.bytes.len().saturating_sub(c.max);
        let earlier = c.dropped + u64::try_from(start).unwrap_or(u64::MAX);
        if earlier > 0
            && let Some(nl) = c.bytes[start..].iter().position(|b| *b == b'\n')
        {
            start += nl + 1;
        }
        let earlier = c.dropped + u64::try_from(start).unwrap_or(u64::MAX);
        let mut out = Vec::with_capacity(c.bytes.len() - start + 64);
        if earlier > 0 {
            out.extend_from_slice(
                format!("[peergrid: {earlier} earlier bytes of this log dropped]\n").as_bytes(),
            );
        }
        out.extend_from_slice(&c.bytes[start..]);
        if c.notes.left_out > 0 {
            if out.last().is_some_and(|b| *b != b'\n') {
                out.push(b'\n');
            }
            out.extend_from_slice(left_out_line(c.notes.left_out).as_bytes());
        }
        out
    }

    /// What was kept, with a marker line if anything was dropped.
    pub(crate) fn take(&self) -> Vec<u8> {
        let mut c = self.lock();
        let mut out = std::mem::take(&mut c.bytes);
        if c.dropped > 0 {
            if out.last().is_some_and(|b| *b != b'\n') {
                out.push(b'\n');
            }
            out.extend_from_slice(
                format!(
                    "[peergrid: output truncated at {} bytes, {} more bytes dropped]\n",
                    c.max, c.dropped
                )
                .as_bytes(),
            );
        }
        out
    }
}

impl IsTerminal for Capture {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for Capture {
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }

    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for Capture {
    async fn ready(&mut self) {}
}

#[wasmtime_wasi::async_trait]
impl OutputStream for Capture {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.push(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        // Always writable: what is over the bound is dropped, never refused, so a
        // chatty guest is not killed for printing.
        Ok(64 * 1024)
    }
}

impl tokio::io::AsyncWrite for Capture {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.push(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::Capture;

    #[test]
    fn a_log_keeps_its_newest_whole_lines_and_says_what_it_dropped() {
        let log = Capture::ring(100);
        for i in 0..1000 {
            log.push(format!("request {i}\n").as_bytes());
        }
        let text = String::from_utf8(log.snapshot()).expect("utf8");
        let mut lines = text.lines();
        let marker = lines.next().expect("a marker line");
        assert!(
            marker.starts_with("[peergrid: ") && marker.contains("earlier bytes"),
            "{text}"
        );
        let kept: Vec<&str> = lines.collect();
        assert_eq!(kept.last(), Some(&"request 999"), "{text}");
        assert!(kept.iter().all(|l| l.starts_with("request ")), "{text}");
        assert!(text.len() <= 100 + marker.len() + 1, "{}", text.len());
        // Numbers are consecutive: nothing in the middle was lost.
        let numbers: Vec<u32> = kept
            .iter()
            .map(|l| l["request ".len()..].parse().expect("number"))
            .collect();
        assert!(numbers.windows(2).all(|w| w[1] == w[0] + 1), "{numbers:?}");
    }

    #[test]
    fn host_lines_start_their_own_line_and_a_flood_is_counted_not_kept() {
        let log = Capture::ring(64 << 10);
        log.push(b"half a guest line");
        log.note("503 GET /: busy");
        log.push(b"next\n");
        for _ in 0..(super::HOST_NOTES_PER_SEC + 5) {
            log.note("503 GET /: busy");
        }
        let text = String::from_utf8(log.snapshot()).expect("utf8");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[..3],
            ["half a guest line", "[peergrid] 503 GET /: busy", "next"],
            "{text}"
        );
        let host = lines.iter().filter(|l| **l == "[peergrid] 503 GET /: busy");
        assert_eq!(
            host.count(),
            super::HOST_NOTES_PER_SEC as usize,
            "one second's worth: {text}"
        );
        assert_eq!(
            lines.last(),
            Some(&"[peergrid] 6 more answers like these were not logged"),
            "{text}"
        );
    }

    #[test]
    fn a_short_log_is_returned_whole_and_a_job_keeps_its_first_bytes() {
        let log = Capture::ring(100);
        log.push(b"one\ntwo\n");
        assert_eq!(log.snapshot(), b"one\ntwo\n");
        let out = Capture::new(4);
        out.push(b"abcdefgh");
        let kept = out.take();
        assert!(kept.starts_with(b"abcd\n[peergrid: output truncated"));
    }
}
