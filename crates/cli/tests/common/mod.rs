//! Helpers shared by the tests that run a real devnet and real nodes as processes.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use peergrid_client::Client;
use peergrid_client::types::api::node_routes;
use peergrid_core::Keypair;
use serde_json::Value;

pub fn peergrid(home: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_peergrid"));
    cmd.env("PEERGRID_HOME", home)
        .env_remove("PEERGRID_DEVNET")
        .env_remove("PEERGRID_LEDGER")
        .stdin(Stdio::null());
    cmd
}

pub fn run(home: &Path, args: &[&str]) -> (bool, Value, String) {
    let out = peergrid(home)
        .arg("--json")
        .args(args)
        .output()
        .expect("run peergrid");
    let value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (
        out.status.success(),
        value,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A child process killed when the test ends, pass or fail.
pub struct Proc(pub Child);

impl Proc {
    pub fn interrupt(&mut self) {
        let _ = Command::new("kill")
            .args(["-INT", &self.0.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline && matches!(self.0.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }

    pub fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            self.interrupt();
        }
    }
}

/// A devnet base port in `[first, first + 6000)` whose ports are free now. Kept below
/// the kernel's ephemeral range (32768 and up), where any outgoing connection could take
/// a port the devnet or a node is about to listen on.
pub fn base_port(first: u16) -> u16 {
    assert!(first.checked_add(6_400).is_some_and(|end| end < 32_768));
    let offsets = (0..10)
        .chain(100..110)
        .chain(200..210)
        .chain([250, 300])
        .chain(310..320);
    let offsets: Vec<u16> = offsets.collect();
    let free = |base: u16| {
        offsets.iter().all(|o| {
            let addr = ("127.0.0.1", base + o);
            std::net::TcpListener::bind(addr).is_ok() && std::net::UdpSocket::bind(addr).is_ok()
        })
    };
    let start = (std::process::id() % 15) as u16;
    (0..15)
        .map(|i| first + (start + i) % 15 * 400)
        .find(|&base| free(base))
        .expect("no free devnet ports")
}

/// The pids of the processes whose command-line arguments satisfy `matches`.
pub fn pids_where(matches: impl Fn(&[String]) -> bool) -> Vec<i32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).to_string())
            .collect();
        if matches(&args) {
            pids.push(pid);
        }
    }
    pids
}

pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(300));
    }
}

pub fn node_status(home: &Path, id: u64) -> String {
    let (_, v, _) = run(home, &["node", "show", &id.to_string()]);
    v["node"]["status"].as_str().unwrap_or_default().to_string()
}

/// `peergrid node run` in `farm`, its data in `data`, on loopback, without a disk or a location.
pub fn node_command(home: &Path, farm: u64, data: &Path, health: u16) -> Command {
    let mut cmd = peergrid(home);
    cmd.args(["node", "run", "--farm", &farm.to_string()])
        .arg("--data-dir")
        .arg(data)
        .args(["--health", &format!("127.0.0.1:{health}")])
        .args(["--listen", "/ip4/127.0.0.1/tcp/0"])
        .env("RUST_LOG", "info");
    cmd
}

/// Start a [`node_command`], its output in `data.log`.
pub fn spawn_node(mut cmd: Command, data: &Path) -> Proc {
    let log = std::fs::File::create(data.with_extension("log")).expect("log");
    let child = cmd
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("start node");
    Proc(child)
}

/// A node of `farm` in Ghent, BE, offering 20 GiB of SSD.
pub fn start_node(home: &Path, farm: u64, data: &Path, health: u16) -> Proc {
    let mut cmd = node_command(home, farm, data, health);
    cmd.arg("--disk")
        .arg(format!("{}:ssd:20GiB", data.display()))
        .args(["--country", "BE", "--city", "Ghent"]);
    spawn_node(cmd, data)
}

/// GET `route` of a node's local endpoint at `base` as JSON; `None` unless it answers 200.
pub async fn node_api(base: &str, route: &str) -> Option<Value> {
    let answer = reqwest::get(format!("{base}{route}")).await.ok()?;
    if !answer.status().is_success() {
        return None;
    }
    answer.json().await.ok()
}

pub async fn workloads(health: &str) -> Vec<Value> {
    node_api(health, node_routes::WORKLOADS)
        .await
        .and_then(|v| v["items"].as_array().cloned())
        .unwrap_or_default()
}

pub async fn wait_workloads(health: &str, what: &str, f: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let w = workloads(health).await;
        if f(&w) {
            return w;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {w:?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// A devnet (validators only) started from `home` with genesis parameters `set`; it
/// stops when dropped. Returns it once blocks finalize, with its ledger client and demo key.
pub async fn devnet(home: &Path, base_port: u16, set: &[&str]) -> (Proc, Client, Keypair) {
    let mut cmd = peergrid(home);
    cmd.args([
        "devnet",
        "--nodes",
        "0",
        "--base-port",
        &base_port.to_string(),
    ]);
    for s in set {
        cmd.args(["--set", s]);
    }
    let child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start devnet");
    let proc = Proc(child);
    let h = home.to_path_buf();
    tokio::task::spawn_blocking(move || {
        wait_for("the devnet to finalize", Duration::from_secs(180), || {
            let (ok, _, _) = run(&h, &["devnet", "status"]);
            ok.then_some(())
        })
    })
    .await
    .expect("join");
    let running: Value = serde_json::from_slice(
        &std::fs::read(home.join("devnet/devnet.json")).expect("devnet.json"),
    )
    .expect("json");
    let apis: Vec<String> = serde_json::from_value(running["apis"].clone()).expect("apis");
    let demo = Keypair::load(Path::new(running["demo_key"].as_str().expect("key"))).expect("demo");
    (proc, Client::new(apis), demo)
}

/// Wait, off the async runtime, until `f` (which runs CLI commands) gives a value.
pub async fn eventually<T: Send + 'static>(
    what: &'static str,
    timeout: Duration,
    f: impl FnMut() -> Option<T> + Send + 'static,
) -> T {
    tokio::task::spawn_blocking(move || wait_for(what, timeout, f))
        .await
        .expect("join")
}

/// Wait until the first node of `farm` (its data in `data`, see [`start_node`]) is listed
/// up; returns its id. On a timeout the node's log is printed, since it says why.
pub async fn node_up(home: &Path, farm: u64, data: &Path) -> u64 {
    let h = home.to_path_buf();
    let log = data.with_extension("log");
    tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (_, list, _) = run(&h, &["node", "list", "--farm", &farm.to_string()]);
            let node = list["nodes"].as_array().and_then(|n| n.first()).cloned();
            if let Some(n) = node.filter(|n| n["status"] == "up") {
                return n["id"].as_u64().expect("node id");
            }
            if Instant::now() > deadline {
                let log = std::fs::read_to_string(&log).unwrap_or_default();
                panic!("timed out waiting for the node to be listed up: {list}\nnode log:\n{log}");
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    })
    .await
    .expect("join")
}

/// The URL of the first replica `deploy --json` printed, without its trailing slash.
pub fn first_url(deployed: &Value) -> String {
    deployed["app"]["replicas"][0]["url"]
        .as_str()
        .expect("the replica's url")
        .trim_end_matches('/')
        .to_string()
}

/// GET `url` (`http://127.0.0.1:PORT/path`): the status code and body, or `None` if
/// nothing answers.
pub fn get(url: &str) -> Option<(u16, String)> {
    request("GET", url, b"")
}

/// `method` `url` with `body`: the status code and body, or `None` if nothing answers.
pub fn request(method: &str, url: &str, body: &[u8]) -> Option<(u16, String)> {
    let rest = url.strip_prefix("http://")?;
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let mut stream = std::net::TcpStream::connect(host).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    write!(
        stream,
        "{method} /{path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .ok()?;
    stream.write_all(body).ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let code = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())?;
    Some((code, body))
}

/// `len` pseudo-random bytes from `seed`, written to `path` and returned.
pub fn random_file(path: &Path, len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let bytes: Vec<u8> = (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    std::fs::write(path, &bytes).expect("write");
    bytes
}
