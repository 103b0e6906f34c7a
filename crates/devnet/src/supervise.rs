//! Processes the devnet keeps running: each one that dies is started again after a
//! backoff, with why it died and the last lines of its log kept for `devnet status`.

use std::ffi::OsString;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// Waits between a death and the restart, doubling from `first` up to `max`.
#[derive(Clone, Copy, Debug)]
pub struct Backoff {
    /// The first wait.
    pub first: Duration,
    /// The longest wait.
    pub max: Duration,
    /// A process that ran this long before dying starts again at `first`.
    pub stable: Duration,
    /// Deaths in a row, each within `stable` of its start, after which it is given up.
    pub give_up_after: u32,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            first: Duration::from_secs(1),
            max: Duration::from_secs(30),
            stable: Duration::from_secs(30),
            give_up_after: 6,
        }
    }
}

/// What `devnet status` shows of one process.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessStatus {
    /// `validator 0`, `node 2`.
    pub name: String,
    /// Its process id while it runs.
    pub pid: Option<u32>,
    /// `running`, `restarting` or `failed` (given up).
    pub state: String,
    /// Times it was started again.
    pub restarts: u32,
    /// How it last ended, if it ever did.
    pub last_exit: Option<String>,
    /// Its log's last lines when it ended.
    #[serde(default)]
    pub last_log: Option<String>,
    /// Its log.
    pub log: PathBuf,
}

/// `status` as the OS sees its process now. The record is written when the supervisor
/// notices a change, so a process stopped (SIGSTOP) still reads `running` there, and one
/// just killed does until the supervisor's next look.
pub fn as_seen_now(mut status: ProcessStatus) -> ProcessStatus {
    let Some(pid) = status.pid.filter(|_| status.state == "running") else {
        return status;
    };
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command's name, which is in parentheses and may hold any
        // character, `)` included.
        Ok(stat) => match stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
        {
            Some("T" | "t") => status.state = "stopped".into(),
            Some("Z" | "X") => status.state = "exited".into(),
            _ => {}
        },
        // Gone, where the OS lists processes there (not on macOS, which has no /proc).
        Err(e)
            if e.kind() == std::io::ErrorKind::NotFound
                && Path::new("/proc/self/stat").exists() =>
        {
            status.state = "exited".into()
        }
        Err(_) => {}
    }
    status
}

/// One supervised process.
pub struct Managed {
    name: String,
    program: OsString,
    args: Vec<OsString>,
    log: PathBuf,
    child: Option<Child>,
    restarts: u32,
    last_exit: Option<String>,
    last_log: Option<String>,
    restart_at: Option<Instant>,
    wait: Duration,
    quick_deaths: u32,
    started: Instant,
    backoff: Backoff,
    failed: bool,
}

impl Managed {
    /// Start `cmd`, its output in `log` (replaced).
    pub fn start(
        name: impl Into<String>,
        cmd: Command,
        log: &Path,
        backoff: Backoff,
    ) -> anyhow::Result<Managed> {
        let program = cmd.get_program().to_owned();
        let args = cmd.get_args().map(ToOwned::to_owned).collect();
        let child = spawn_logged(cmd, log, false)?;
        Ok(Managed {
            name: name.into(),
            program,
            args,
            log: log.to_path_buf(),
            child: Some(child),
            restarts: 0,
            last_exit: None,
            last_log: None,
            restart_at: None,
            wait: backoff.first,
            quick_deaths: 0,
            started: Instant::now(),
            backoff,
            failed: false,
        })
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its process id, while a process runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Its log file.
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// Whether the process is running now (not exited, not waiting to restart).
    pub fn running(&mut self) -> bool {
        match &mut self.child {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Whether it was given up: it died right after each of its last starts.
    pub fn failed(&self) -> bool {
        self.failed
    }

    /// Notice a death and schedule the restart, or restart when it is due; what
    /// happened, in a line for the supervisor's log.
    pub fn tend(&mut self) -> Option<String> {
        if self.failed {
            return None;
        }
        let Some(child) = &mut self.child else {
            if self.restart_at.is_some_and(|at| Instant::now() >= at) {
                return Some(self.restart());
            }
            return None;
        };
        let status = match child.try_wait() {
            Ok(Some(status)) => status,
            _ => return None,
        };
        self.child = None;
        let ran = self.started.elapsed();
        if ran >= self.backoff.stable {
            self.wait = self.backoff.first;
            self.quick_deaths = 0;
        }
        self.quick_deaths += u32::from(ran < self.backoff.stable);
        self.last_log = Some(last_lines(&self.log, 5));
        self.last_exit = Some(format!("{} after {}", describe(status), human(ran)));
        if self.quick_deaths >= self.backoff.give_up_after {
            self.failed = true;
            return Some(format!(
                "{} {} {} times in a row within {} of starting; not restarting it (see {})",
                self.name,
                describe(status),
                self.quick_deaths,
                human(self.backoff.stable),
                self.log.display()
            ));
        }
        self.restart_at = Some(Instant::now() + self.wait);
        let line = format!(
            "{} {} after {}; restarting it in {} (log: {})",
            self.name,
            describe(status),
            human(ran),
            human(self.wait),
            self.log.display()
        );
        self.wait = (self.wait * 2).min(self.backoff.max);
        Some(line)
    }

    fn restart(&mut self) -> String {
        self.restart_at = None;
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.args);
        match spawn_logged(cmd, &self.log, true) {
            Ok(child) => {
                self.child = Some(child);
                self.restarts += 1;
                self.started = Instant::now();
                format!("{} started again (restart {})", self.name, self.restarts)
            }
            Err(e) => {
                self.restart_at = Some(Instant::now() + self.wait);
                format!(
                    "{} cannot be started again: {e:#}; trying again in {}",
                    self.name,
                    human(self.wait)
                )
            }
        }
    }

    /// What `devnet status` shows.
    pub fn status(&self) -> ProcessStatus {
        let state = if self.failed {
            "failed"
        } else if self.child.is_some() {
            "running"
        } else {
            "restarting"
        };
        ProcessStatus {
            name: self.name.clone(),
            pid: self.child.as_ref().map(Child::id),
            state: state.into(),
            restarts: self.restarts,
            last_exit: self.last_exit.clone(),
            last_log: self.last_log.clone(),
            log: self.log.clone(),
        }
    }

    /// Ask it to stop (SIGINT), so it closes cleanly.
    pub fn interrupt(&self) {
        if let Some(c) = &self.child {
            let _ = Command::new("kill")
                .args(["-INT", &c.id().to_string()])
                .status();
        }
    }

    /// Wait for it to exit until `deadline`, then kill it; no restart follows.
    pub fn finish(&mut self, deadline: Instant) {
        self.restart_at = None;
        if let Some(c) = &mut self.child {
            while Instant::now() < deadline && matches!(c.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        self.child = None;
    }
}

/// Start `cmd` with its stdout and stderr in `log`, replaced or appended to.
pub(crate) fn spawn_logged(mut cmd: Command, log: &Path, append: bool) -> anyhow::Result<Child> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .append(append)
        .truncate(!append)
        .open(log)
        .with_context(|| format!("cannot open {}", log.display()))?;
    cmd.env(
        "RUST_LOG",
        std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
    )
    .stdin(Stdio::null())
    .stdout(file.try_clone()?)
    .stderr(file)
    .spawn()
    .with_context(|| format!("cannot start {:?}", cmd.get_program()))
}

/// How a process ended, in words.
fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with code {code}"),
        (None, Some(9)) => "was killed (SIGKILL)".into(),
        (None, Some(signal)) => format!("was killed by signal {signal}"),
        (None, None) => "ended".into(),
    }
}

fn human(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{} ms", d.as_millis())
    } else {
        format!("{:.0} s", d.as_secs_f64())
    }
}

/// The last `n` lines of a log (its last 8 KiB at most).
fn last_lines(log: &Path, n: usize) -> String {
    let Ok(mut file) = std::fs::File::open(log) else {
        return String::new();
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = file.seek(SeekFrom::Start(len.saturating_sub(8 * 1024)));
    let mut tail = Vec::new();
    let _ = file.read_to_end(&mut tail);
    let text = String::from_utf8_lossy(&tail);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stopped_or_killed_process_is_shown_as_it_is_now() {
        let mut child = Command::new("sleep").arg("30").spawn().expect("sleep");
        let pid = child.id();
        let recorded = ProcessStatus {
            name: "node 0".into(),
            pid: Some(pid),
            state: "running".into(),
            restarts: 0,
            last_exit: None,
            last_log: None,
            log: PathBuf::from("node-0.log"),
        };
        let seen = |want: &str| {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let state = as_seen_now(recorded.clone()).state;
                if state == want || Instant::now() > deadline {
                    return state;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        };
        assert_eq!(seen("running"), "running");
        let signal = |sig: &str| {
            Command::new("kill")
                .args([sig, &pid.to_string()])
                .status()
                .expect("kill");
        };
        signal("-STOP");
        assert_eq!(seen("stopped"), "stopped");
        signal("-CONT");
        assert_eq!(seen("running"), "running");
        signal("-KILL");
        assert_eq!(seen("exited"), "exited", "killed, not yet reaped");
        child.wait().expect("reap");
        assert_eq!(seen("exited"), "exited", "gone");
        let restarting = ProcessStatus {
            state: "restarting".into(),
            ..recorded.clone()
        };
        assert_eq!(
            as_seen_now(restarting).state,
            "restarting",
            "only running is checked"
        );
    }

    fn fast() -> Backoff {
        Backoff {
            first: Duration::from_millis(20),
            max: Duration::from_millis(80),
            stable: Duration::from_secs(5),
            give_up_after: 3,
        }
    }

    /// Wait (polled: a loaded machine may start `sh` late) until the log holds `n`
    /// lines saying `started`, the second start's appended to the first's.
    fn log_says_started(log: &Path, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            let count = text.matches("started").count();
            assert!(count <= n, "appended: {text}");
            if count == n {
                return;
            }
            assert!(Instant::now() < deadline, "the log after 10 s: {text}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn tend_until(m: &mut Managed, what: &str, f: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(line) = m.tend()
                && f(&line)
            {
                return line;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn a_killed_process_is_started_again_with_why_it_died() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("p.log");
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo started; exec sleep 30"]);
        let mut m = Managed::start("validator 1", cmd, &log, fast()).expect("start");
        log_says_started(&log, 1);
        let first = m.status().pid.expect("pid");
        let _ = Command::new("kill")
            .args(["-9", &first.to_string()])
            .status();
        let died = tend_until(&mut m, "the death", |l| l.contains("SIGKILL"));
        assert!(
            died.starts_with("validator 1 was killed (SIGKILL)"),
            "{died}"
        );
        assert_eq!(m.status().state, "restarting");
        let tail = m.status().last_log.expect("last log lines");
        assert!(tail.contains("started"), "the log's last lines: {tail}");
        tend_until(&mut m, "the restart", |l| l.contains("started again"));
        let status = m.status();
        assert_eq!((status.state.as_str(), status.restarts), ("running", 1));
        assert_ne!(status.pid, Some(first));
        log_says_started(&log, 2);
        m.interrupt();
        m.finish(Instant::now() + Duration::from_secs(2));
        assert!(!m.running());
    }

    #[test]
    fn a_process_that_dies_at_every_start_is_given_up() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo bad config >&2; exit 3"]);
        let mut m =
            Managed::start("node 0", cmd, &dir.path().join("n.log"), fast()).expect("start");
        let line = tend_until(&mut m, "giving up", |l| l.contains("not restarting"));
        assert!(
            line.contains("exited with code 3 3 times in a row"),
            "{line}"
        );
        assert!(m.failed());
        let status = m.status();
        assert_eq!((status.state.as_str(), status.restarts), ("failed", 2));
        assert!(
            status.last_log.expect("log").contains("bad config"),
            "the reason from the log"
        );
        assert!(
            status
                .last_exit
                .expect("exit")
                .starts_with("exited with code 3")
        );
        assert_eq!(m.tend(), None, "no more restarts");
    }
}
