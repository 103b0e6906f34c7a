//! Stop requests (Ctrl-C and SIGTERM), counted once for the whole process.
//!
//! Tokio takes SIGINT over from the default (end the process) as soon as anything listens
//! for it, and a signal that arrives while nothing waits is lost: a Ctrl-C pressed between
//! two of a command's waits did nothing at all. One watcher, started by the first wait,
//! counts every signal; each wait takes one. A stop that arrives in a gap is seen by the
//! next wait. A second stop ends the process, as the default would have, when nothing
//! waits for it: the first is still untaken, or was taken and the command is tidying up
//! without listening. So a command can always be stopped, twice at worst.
//!
//! Signals closer together than [`COALESCE`] count once: `timeout`, and a terminal's
//! Ctrl-C with a shell's job control, can deliver one stop to the process and again to
//! its group, which must not read as "stop now, leave things behind".

use std::sync::Once;
use std::sync::atomic::{AtomicI32, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::Notify;

/// Signals this close to the one before are the same stop.
const COALESCE: Duration = Duration::from_millis(300);

/// The signals received and taken so far.
pub(crate) struct Stops {
    received: AtomicU64,
    taken: AtomicU64,
    /// Waits in progress.
    waiting: AtomicUsize,
    arrived: Notify,
    /// The exit status the last signal asks for: 130 for SIGINT, 143 for SIGTERM.
    code: AtomicI32,
}

impl Stops {
    /// Take one received, untaken stop, if there is one.
    fn take(&self) -> bool {
        let mut taken = self.taken.load(Ordering::SeqCst);
        while taken < self.received.load(Ordering::SeqCst) {
            match self
                .taken
                .compare_exchange(taken, taken + 1, Ordering::SeqCst, Ordering::SeqCst)
            {
                Ok(_) => return true,
                Err(now) => taken = now,
            }
        }
        false
    }

    /// Count a signal; `true` if nothing will handle it: an earlier one is still untaken,
    /// or one was taken and nothing waits now.
    fn arrive(&self) -> bool {
        let received = self.received.fetch_add(1, Ordering::SeqCst) + 1;
        let taken = self.taken.load(Ordering::SeqCst);
        let unheard =
            received - taken >= 2 || (taken > 0 && self.waiting.load(Ordering::SeqCst) == 0);
        self.arrived.notify_waiters();
        unheard
    }
}

static STOPS: Stops = Stops {
    received: AtomicU64::new(0),
    taken: AtomicU64::new(0),
    waiting: AtomicUsize::new(0),
    arrived: Notify::const_new(),
    code: AtomicI32::new(130),
};

/// The exit status of a process ended by the last stop: 130 after Ctrl-C (SIGINT), 143
/// after SIGTERM, as a shell reports a process those signals killed.
pub(crate) fn exit_code() -> i32 {
    STOPS.code.load(Ordering::SeqCst)
}

static WATCHING: Once = Once::new();

/// The process's stops, with the watcher started (and its handlers installed, for every
/// caller) the first time. A command that runs long before its first wait calls it at its
/// start, so that a stop during that time is kept for the wait rather than ending it.
pub(crate) fn stops() -> &'static Stops {
    WATCHING.call_once(|| watch(&STOPS));
    &STOPS
}

/// Counts a wait in progress while it lives.
struct Waiting;

impl Waiting {
    fn new() -> Waiting {
        STOPS.waiting.fetch_add(1, Ordering::SeqCst);
        Waiting
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        STOPS.waiting.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Listen for SIGINT and SIGTERM on a thread of its own, so that the watcher outlives any
/// one runtime a command makes; returns once the handlers are installed.
fn watch(stops: &'static Stops) {
    let (installed, ready) = std::sync::mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name("stop-signals".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_io()
                .build()
            {
                Ok(runtime) => runtime,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot watch for Ctrl-C; it ends this command at once");
                    let _ = installed.send(());
                    return;
                }
            };
            runtime.block_on(async move {
                let (mut interrupt, mut terminate) =
                    match (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) {
                        (Ok(i), Ok(t)) => (i, t),
                        (Err(e), _) | (_, Err(e)) => {
                            tracing::warn!(error = %e, "cannot watch for Ctrl-C and SIGTERM");
                            let _ = installed.send(());
                            return;
                        }
                    };
                let _ = installed.send(());
                let mut last: Option<Instant> = None;
                loop {
                    let code = tokio::select! {
                        _ = interrupt.recv() => 130,
                        _ = terminate.recv() => 143,
                    };
                    let now = Instant::now();
                    if last.is_some_and(|at| now.duration_since(at) < COALESCE) {
                        continue;
                    }
                    last = Some(now);
                    stops.code.store(code, Ordering::SeqCst);
                    if stops.arrive() {
                        eprintln!("stopped again: exiting now, without finishing what the first stop began");
                        std::process::exit(code);
                    }
                }
            });
        });
    match spawned {
        Ok(_) => {
            let _ = ready.recv();
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch for Ctrl-C; it ends this command at once")
        }
    }
}

/// Resolves when the user or the system asks this process to stop: Ctrl-C (SIGINT) or
/// SIGTERM, which `kill`, `timeout`, systemd and container runtimes send. A command that
/// ran until Ctrl-C only would die on SIGTERM without stopping what it started. Each stop
/// is taken by one wait: a second wait after a stop waits for the next one. The watcher
/// starts when this is called, not when it is first polled, so a future made before a
/// long start-up keeps the stops that come during it.
pub(crate) fn stop_requested() -> impl std::future::Future<Output = ()> + Send + 'static {
    let stops = stops();
    async move {
        let _waiting = Waiting::new();
        loop {
            let arrived = stops.arrived.notified();
            tokio::pin!(arrived);
            // Registered before the check, so a stop counted between the two still wakes it.
            arrived.as_mut().enable();
            if stops.take() {
                return;
            }
            arrived.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_second_stop_ends_the_process_only_when_nothing_will_hear_it() {
        let stops = Stops {
            received: AtomicU64::new(0),
            taken: AtomicU64::new(0),
            waiting: AtomicUsize::new(0),
            arrived: Notify::new(),
            code: AtomicI32::new(130),
        };
        assert!(!stops.arrive(), "the first is kept for the next wait");
        assert!(stops.arrive(), "a second while the first is untaken");
        let stops = Stops {
            received: AtomicU64::new(0),
            taken: AtomicU64::new(0),
            waiting: AtomicUsize::new(1),
            arrived: Notify::new(),
            code: AtomicI32::new(130),
        };
        assert!(!stops.arrive());
        assert!(stops.take());
        assert!(
            !stops.arrive(),
            "a wait (\"Ctrl-C again leaves them\") hears the second"
        );
        assert!(stops.take());
        stops.waiting.store(0, Ordering::SeqCst);
        assert!(
            stops.arrive(),
            "tidying up after a stop, without listening: a second ends it"
        );
    }

    #[test]
    fn a_stop_with_no_one_waiting_is_kept_for_the_next_wait_and_taken_once() {
        // One test, because the signals go to the whole test binary.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            let stops = stops();
            let before = stops.received.load(Ordering::SeqCst);
            // Nothing waits now: before the watcher, this SIGINT would end the test binary,
            // and before the count, it would be lost.
            let sent = std::process::Command::new("kill")
                .args(["-INT", &std::process::id().to_string()])
                .status()
                .expect("kill runs");
            assert!(sent.success());
            tokio::time::timeout(Duration::from_secs(10), async {
                while stops.received.load(Ordering::SeqCst) == before {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            })
            .await
            .expect("the watcher counts the signal");
            tokio::time::timeout(Duration::from_secs(1), stop_requested())
                .await
                .expect("the next wait sees the stop that came before it");
            assert!(
                tokio::time::timeout(Duration::from_millis(200), stop_requested())
                    .await
                    .is_err(),
                "one stop ends one wait"
            );
            // As `timeout` sends it: to the process, then to its group. Counted twice,
            // the second would end this test binary at once.
            tokio::time::sleep(COALESCE).await;
            let before = stops.received.load(Ordering::SeqCst);
            let waiting = tokio::spawn(stop_requested());
            tokio::task::yield_now().await;
            assert_eq!(
                stops.waiting.load(Ordering::SeqCst),
                1,
                "the wait has begun"
            );
            let pid = std::process::id();
            let sent = std::process::Command::new("sh")
                .args(["-c", &format!("kill -TERM {pid}; kill -TERM {pid}")])
                .status()
                .expect("sh runs");
            assert!(sent.success());
            tokio::time::timeout(Duration::from_secs(5), waiting)
                .await
                .expect("the stop is seen")
                .expect("the wait ends");
            tokio::time::sleep(Duration::from_millis(300)).await;
            assert_eq!(stops.received.load(Ordering::SeqCst), before + 1);
        });
    }
}
