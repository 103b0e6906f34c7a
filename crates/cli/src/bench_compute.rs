//! `peergrid bench compute`: the hello service served by a devnet node, next to
//! `wasmtime serve` on the same component, under the same load generator in the same
//! run; and the time from `peergrid deploy` to the first 200 OK.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use serde::Serialize;

use crate::{Globals, output};

/// The wasmtime release the nodes embed: the baseline must be the same engine.
const WASMTIME_VERSION: &str = "48.0.8";

/// `peergrid bench compute`.
#[derive(Args)]
pub struct ComputeBenchArgs {
    /// The `wasi:http` component to serve.
    #[arg(long, default_value = "examples/apps/hello/hello.wasm")]
    component: PathBuf,
    /// Seconds of load on each server.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Concurrent keep-alive connections.
    #[arg(long, default_value_t = 16)]
    connections: usize,
    /// The `wasmtime` binary [default: on PATH or in ~/.cargo/bin, else installed with
    /// `cargo install --locked wasmtime-cli --version 48.0.8`].
    #[arg(long)]
    wasmtime: Option<PathBuf>,
    /// Port for `wasmtime serve`.
    #[arg(long, default_value_t = 9390)]
    port: u16,
}

/// One server under load.
#[derive(Debug, Serialize)]
pub struct Load {
    /// What served.
    pub server: String,
    /// 200 answers per second.
    pub requests_per_sec: f64,
    /// Median latency, ms.
    pub p50_ms: f64,
    /// 99th percentile latency, ms.
    pub p99_ms: f64,
    /// Answers other than 200, and failed requests.
    pub errors: u64,
}

/// What `peergrid bench compute` prints with `--json`.
#[derive(Debug, Serialize)]
pub struct ComputeBench {
    /// From `peergrid deploy` starting to the app's first 200 OK, ms.
    pub deploy_to_first_ok_ms: u64,
    /// The devnet node's HTTP entry.
    pub node: Load,
    /// `wasmtime serve` on the same component (the baseline).
    pub wasmtime: Load,
    /// `node.requests_per_sec / wasmtime.requests_per_sec`.
    pub ratio: f64,
}

/// Kills a child process when dropped.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `peergrid bench compute`.
pub fn bench(globals: &Globals, args: ComputeBenchArgs) -> anyhow::Result<()> {
    if !args.component.is_file() {
        bail!(
            "{} not found; run from the repository's root or pass --component",
            args.component.display()
        );
    }
    let wasmtime = find_or_install_wasmtime(args.wasmtime.clone())?;
    let me = std::env::current_exe().context("cannot find the peergrid binary")?;
    let name = format!("bench-{}", std::process::id());

    eprintln!("deploying {} to the devnet …", args.component.display());
    let started = Instant::now();
    let forwarded = forwarded(globals);
    let out = Command::new(&me)
        .args(&forwarded)
        .arg("--json")
        .arg("deploy")
        .arg(&args.component)
        .args(["--name", &name])
        .stderr(Stdio::inherit())
        .output()
        .context("cannot run peergrid deploy")?;
    if !out.status.success() {
        bail!("peergrid deploy failed (see above); is `peergrid devnet` running?");
    }
    #[derive(serde::Deserialize)]
    struct Deployed {
        app: crate::app::App,
    }
    let deployed: Deployed = serde_json::from_slice(&out.stdout)
        .context("peergrid deploy --json printed something other than the app")?;
    let url = deployed
        .app
        .replicas
        .first()
        .and_then(|r| r.url.clone())
        .context("the deployed app has no URL: its node has no HTTP entry")?;
    let remove = RemoveApp {
        me: me.clone(),
        forwarded,
        name: name.clone(),
    };

    let runtime = crate::runtime()?;
    let result = runtime.block_on(async {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(args.connections)
            .timeout(Duration::from_secs(10))
            .build()?;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = http.get(&url).send().await
                && r.status() == reqwest::StatusCode::OK
            {
                break;
            }
            if Instant::now() > deadline {
                bail!("{url} did not answer 200 within 60 s of the deploy");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let deploy_ms = started.elapsed().as_millis() as u64;
        eprintln!("deployed and answering in {deploy_ms} ms; {url}");

        eprintln!("starting wasmtime serve on 127.0.0.1:{} …", args.port);
        let _serve = Reaped(
            Command::new(&wasmtime)
                .args(["serve", "-S", "cli", "--addr"])
                .arg(format!("127.0.0.1:{}", args.port))
                .arg(&args.component)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .with_context(|| format!("cannot start {}", wasmtime.display()))?,
        );
        let baseline_url = format!("http://127.0.0.1:{}/", args.port);
        let deadline = Instant::now() + Duration::from_secs(30);
        while http.get(&baseline_url).send().await.is_err() {
            if Instant::now() > deadline {
                bail!("wasmtime serve did not answer on {baseline_url} within 30 s");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }

        let time = Duration::from_secs(args.seconds);
        eprintln!(
            "{} s of load with {} connections on each …",
            args.seconds, args.connections
        );
        let wasmtime_load = load(&http, &baseline_url, args.connections, time).await;
        let node_load = load(&http, &url, args.connections, time).await;
        Ok(ComputeBench {
            deploy_to_first_ok_ms: deploy_ms,
            ratio: node_load.requests_per_sec
                / wasmtime_load.requests_per_sec.max(f64::MIN_POSITIVE),
            node: Load {
                server: format!("peergrid node ({url})"),
                ..node_load
            },
            wasmtime: Load {
                server: format!("wasmtime serve {WASMTIME_VERSION} (baseline)"),
                ..wasmtime_load
            },
        })
    });
    drop(remove);
    let r = result?;
    if globals.json {
        return output::json(&r);
    }
    let row = |l: &Load, ratio: &str| {
        vec![
            l.server.clone(),
            format!("{:.0}", l.requests_per_sec),
            format!("{:.2} ms", l.p50_ms),
            format!("{:.2} ms", l.p99_ms),
            l.errors.to_string(),
            ratio.to_string(),
        ]
    };
    output::table(
        &["SERVER", "REQ/S", "P50", "P99", "ERRORS", "VS WASMTIME"],
        &[
            row(&r.wasmtime, "1.00×"),
            row(&r.node, &format!("{:.2}×", r.ratio)),
        ],
    );
    outln!(
        "deploy to first 200 OK: {:.2} s",
        r.deploy_to_first_ok_ms as f64 / 1000.0
    );
    Ok(())
}

/// The global options this command was given, for the `peergrid` it runs.
fn forwarded(globals: &Globals) -> Vec<std::ffi::OsString> {
    let mut args: Vec<std::ffi::OsString> = Vec::new();
    if let Some(ledger) = &globals.ledger {
        args.extend(["--ledger".into(), ledger.into()]);
    }
    if let Some(key) = &globals.key {
        args.extend(["--key".into(), key.into()]);
    }
    if !globals.mesh_bootstrap.is_empty() {
        args.extend([
            "--mesh-bootstrap".into(),
            globals.mesh_bootstrap.join(",").into(),
        ]);
    }
    args
}

/// Removes the benchmark's app when dropped, whatever happened.
struct RemoveApp {
    me: PathBuf,
    forwarded: Vec<std::ffi::OsString>,
    name: String,
}

impl Drop for RemoveApp {
    fn drop(&mut self) {
        let removed = Command::new(&self.me)
            .args(&self.forwarded)
            .args(["app", "rm", &self.name])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if !removed.is_ok_and(|s| s.success()) {
            eprintln!(
                "warning: the benchmark's app is still deployed; remove it with `peergrid app rm {}`",
                self.name
            );
        }
    }
}

/// `connections` loops of GET `url` for `time`; latencies of the 200s.
async fn load(http: &reqwest::Client, url: &str, connections: usize, time: Duration) -> Load {
    let end = Instant::now() + time;
    let started = Instant::now();
    let url: Arc<str> = Arc::from(url);
    let workers: Vec<_> = (0..connections)
        .map(|_| {
            let http = http.clone();
            let url = url.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut errors = 0u64;
                while Instant::now() < end {
                    let t = Instant::now();
                    match http.get(&*url).send().await {
                        Ok(r) if r.status() == reqwest::StatusCode::OK => {
                            if r.bytes().await.is_ok() {
                                latencies.push(t.elapsed());
                            } else {
                                errors += 1;
                            }
                        }
                        _ => errors += 1,
                    }
                }
                (latencies, errors)
            })
        })
        .collect();
    let mut latencies = Vec::new();
    let mut errors = 0;
    for w in workers {
        if let Ok((l, e)) = w.await {
            latencies.extend(l);
            errors += e;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .map(|d| d.as_secs_f64() * 1000.0)
            .unwrap_or(0.0)
    };
    Load {
        server: String::new(),
        requests_per_sec: latencies.len() as f64 / elapsed,
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
        errors,
    }
}

/// The given wasmtime, one on PATH or in ~/.cargo/bin at the nodes' version, or one
/// installed now with cargo (a release build of wasmtime-cli: several minutes).
fn find_or_install_wasmtime(given: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    if let Some(path) = given {
        check_version(&path)?;
        return Ok(path);
    }
    let cargo_bin = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .map(|c| c.join("bin").join("wasmtime"));
    let candidates = [Some(PathBuf::from("wasmtime")), cargo_bin];
    for c in candidates.iter().flatten() {
        if check_version(c).is_ok() {
            return Ok(c.clone());
        }
    }
    eprintln!(
        "installing wasmtime-cli {WASMTIME_VERSION} (the nodes' engine) with cargo; this takes several minutes …"
    );
    let status = Command::new("cargo")
        .args([
            "install",
            "--locked",
            "wasmtime-cli",
            "--version",
            WASMTIME_VERSION,
        ])
        .status()
        .context("cannot run cargo to install wasmtime-cli")?;
    if !status.success() {
        bail!("cargo install wasmtime-cli {WASMTIME_VERSION} failed (see above)");
    }
    let installed = candidates
        .into_iter()
        .flatten()
        .find(|c| check_version(c).is_ok())
        .context("wasmtime-cli was installed but is not on PATH nor in ~/.cargo/bin")?;
    Ok(installed)
}

fn check_version(path: &Path) -> anyhow::Result<()> {
    let out = Command::new(path)
        .arg("--version")
        .output()
        .with_context(|| format!("cannot run {}", path.display()))?;
    let version = String::from_utf8_lossy(&out.stdout);
    if !version.contains(WASMTIME_VERSION) {
        bail!(
            "{} is {}, not wasmtime {WASMTIME_VERSION}",
            path.display(),
            version.trim()
        );
    }
    Ok(())
}
