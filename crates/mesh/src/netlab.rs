//! Test support: hosts, a switch and NAT routers made of Linux network namespaces.
//!
//! A [`Lab`] creates uniquely named namespaces (`pg<pid>x<n><name>`), wires hosts to
//! a bridge that lives in the lab's own switch namespace (so nothing touches the
//! machine's own network), and deletes every namespace when dropped, also when the
//! test fails. Addresses (10.77.x.x) exist only inside the lab's namespaces. It needs
//! root and the `ip` command (iproute2), and `iptables` for NAT routers.

use std::net::Ipv4Addr;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

/// The public subnet of the lab's switch.
pub const PUBLIC_SUBNET: [u8; 3] = [10, 77, 0];

/// Why namespaces cannot be used here, or `None` when they can (probed once per process).
pub fn unavailable() -> Option<String> {
    static PROBE: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    PROBE.get_or_init(probe).clone()
}

/// Whether a namespace test should skip: `true`, after printing why, when namespaces cannot
/// be used here. Under CI (`CI` set, as `.ci/run` does) it panics instead: a runner that lost
/// root or iproute2 would otherwise pass with every multi-host test unrun.
pub fn skip_unless_available() -> bool {
    let Some(reason) = unavailable() else {
        return false;
    };
    if in_ci() {
        panic!(
            "network-namespace tests cannot run under CI: {reason}. Run them as root with \
             iproute2 and iptables installed (`apt-get install iproute2 iptables`)"
        );
    }
    println!("skipping: {reason}");
    true
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

fn probe() -> Option<String> {
    let uid = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(str::to_string))
        });
    if uid.as_deref() != Some("0") {
        return Some("network namespaces need root".to_string());
    }
    if Command::new("ip").arg("-V").output().is_err() {
        return Some("the `ip` command (iproute2) is not installed".to_string());
    }
    // The NAT labs put routers behind MASQUERADE: without iptables they would fail half
    // set up instead of saying why.
    if Command::new("iptables").arg("-V").output().is_err() {
        return Some("the `iptables` command is not installed".to_string());
    }
    let probe = format!("pg{}probe", std::process::id());
    match Command::new("ip").args(["netns", "add", &probe]).output() {
        Ok(out) if out.status.success() => {
            let _ = Command::new("ip").args(["netns", "del", &probe]).output();
            None
        }
        Ok(out) => Some(format!(
            "cannot create a network namespace: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(e) => Some(format!("cannot run ip: {e}")),
    }
}

/// A host of the lab: its namespace and its address.
#[derive(Debug, Clone)]
pub struct Host {
    /// Namespace name (for `ip netns exec`).
    pub ns: String,
    /// Its IPv4 address.
    pub ip: Ipv4Addr,
    /// Name of its port on the switch (to cut its link), if on the switch.
    pub switch_port: Option<String>,
}

/// A set of namespaces deleted together on drop.
#[derive(Debug)]
pub struct Lab {
    prefix: String,
    namespaces: Vec<String>,
    switch: Option<String>,
    ports: u32,
}

impl Lab {
    /// A new, empty lab with a unique name prefix.
    pub fn new() -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        Self {
            prefix: format!(
                "pg{}x{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ),
            namespaces: Vec::new(),
            switch: None,
            ports: 0,
        }
    }

    /// Run `ip args…`, panicking with its stderr on failure (lab setup is not under test).
    pub fn ip(&self, args: &[&str]) {
        run("ip", args);
    }

    /// Run a command inside namespace `ns`.
    pub fn exec(&self, ns: &str, program: &str, args: &[&str]) -> Output {
        let mut all = vec!["netns", "exec", ns, program];
        all.extend_from_slice(args);
        Command::new("ip")
            .args(&all)
            .output()
            .unwrap_or_else(|e| panic!("cannot run ip netns exec: {e}"))
    }

    fn namespace(&mut self, name: &str) -> String {
        let ns = format!("{}{name}", self.prefix);
        run("ip", &["netns", "add", &ns]);
        self.namespaces.push(ns.clone());
        run("ip", &["-n", &ns, "link", "set", "lo", "up"]);
        ns
    }

    fn switch(&mut self) -> String {
        if let Some(sw) = &self.switch {
            return sw.clone();
        }
        let sw = self.namespace("sw");
        run("ip", &["-n", &sw, "link", "add", "br0", "type", "bridge"]);
        run("ip", &["-n", &sw, "link", "set", "br0", "up"]);
        self.switch = Some(sw.clone());
        sw
    }

    /// A host on the public switch at 10.77.0.`last`.
    pub fn public_host(&mut self, name: &str, last: u8) -> Host {
        let sw = self.switch();
        let ns = self.namespace(name);
        self.ports += 1;
        let port = format!("p{}", self.ports);
        run(
            "ip",
            &[
                "-n", &sw, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns",
                &ns,
            ],
        );
        run("ip", &["-n", &sw, "link", "set", &port, "master", "br0"]);
        run("ip", &["-n", &sw, "link", "set", &port, "up"]);
        let ip = Ipv4Addr::new(PUBLIC_SUBNET[0], PUBLIC_SUBNET[1], PUBLIC_SUBNET[2], last);
        run(
            "ip",
            &["-n", &ns, "addr", "add", &format!("{ip}/24"), "dev", "eth0"],
        );
        run("ip", &["-n", &ns, "link", "set", "eth0", "up"]);
        Host {
            ns,
            ip,
            switch_port: Some(port),
        }
    }

    /// A host behind a masquerading router: the router sits on the switch at
    /// 10.77.0.`router_last`, the host at 10.77.`subnet`.2 behind it. Returns (router, host).
    pub fn natted_host(&mut self, name: &str, router_last: u8, subnet: u8) -> (Host, Host) {
        let router = self.public_host(&format!("{name}gw"), router_last);
        let ns = self.namespace(name);
        let r = router.ns.as_str();
        run(
            "ip",
            &[
                "-n", r, "link", "add", "eth1", "type", "veth", "peer", "name", "eth0", "netns",
                &ns,
            ],
        );
        let gw = Ipv4Addr::new(10, 77, subnet, 1);
        let ip = Ipv4Addr::new(10, 77, subnet, 2);
        run(
            "ip",
            &["-n", r, "addr", "add", &format!("{gw}/24"), "dev", "eth1"],
        );
        run("ip", &["-n", r, "link", "set", "eth1", "up"]);
        run(
            "ip",
            &["-n", &ns, "addr", "add", &format!("{ip}/24"), "dev", "eth0"],
        );
        run("ip", &["-n", &ns, "link", "set", "eth0", "up"]);
        run(
            "ip",
            &["-n", &ns, "route", "add", "default", "via", &gw.to_string()],
        );
        expect_ok(
            self.exec(r, "sysctl", &["-qw", "net.ipv4.ip_forward=1"]),
            "sysctl",
        );
        // Masquerade what leaves towards the switch, and let nothing unsolicited in:
        // the public side has no route to the private subnet, and the router forwards
        // only replies to connections the private side opened.
        expect_ok(
            self.exec(
                r,
                "iptables",
                &[
                    "-t",
                    "nat",
                    "-A",
                    "POSTROUTING",
                    "-o",
                    "eth0",
                    "-j",
                    "MASQUERADE",
                ],
            ),
            "iptables",
        );
        expect_ok(
            self.exec(
                r,
                "iptables",
                &[
                    "-A",
                    "FORWARD",
                    "-i",
                    "eth0",
                    "-m",
                    "conntrack",
                    "--ctstate",
                    "NEW",
                    "-j",
                    "DROP",
                ],
            ),
            "iptables",
        );
        (
            router,
            Host {
                ns,
                ip,
                switch_port: None,
            },
        )
    }

    /// Take the host's switch port down (`up = false`) or back up.
    pub fn set_link(&self, host: &Host, up: bool) {
        let (Some(sw), Some(port)) = (&self.switch, &host.switch_port) else {
            panic!("{} is not on the switch", host.ns);
        };
        run(
            "ip",
            &[
                "-n",
                sw,
                "link",
                "set",
                port,
                if up { "up" } else { "down" },
            ],
        );
    }
}

impl Default for Lab {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Deleting a namespace deletes its interfaces, and with them the veth peers.
        for ns in self.namespaces.iter().rev() {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

fn run(program: &str, args: &[&str]) {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    expect_ok(out, &format!("{program} {}", args.join(" ")));
}

fn expect_ok(out: Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
}
