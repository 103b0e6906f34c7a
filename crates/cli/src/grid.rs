//! `peergrid farm` and `peergrid node`: what a farmer runs.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Subcommand;
use peergrid_client::NodeView;
use peergrid_core::capacity::human_bytes;
use peergrid_core::tx::{Signature, sign_invitation};
use peergrid_core::{AccountId, FarmId, Location, NodeId, Payload, PublicIp};
use peergrid_node::{DiskSpec, LocationUpdate, NodeConfig, Reservation};
use serde_json::json;

use crate::{Globals, output};

#[derive(Subcommand)]
pub enum FarmCommand {
    /// Create a farm owned by your account.
    Create {
        /// A name unique on the grid (letters, digits, `-` and `_`).
        name: String,
        /// A public IPv4 the farm offers deployments, as IP/PREFIX@GATEWAY (repeatable).
        #[arg(long = "public-ip", value_name = "IP/PREFIX@GW")]
        public_ips: Vec<PublicIp>,
    },
    /// Change a farm you own: its name, where its rewards are paid, its public IPs.
    Update {
        /// The farm's id or name.
        farm: String,
        /// A new name, unique on the grid.
        #[arg(long)]
        name: Option<String>,
        /// The account its rewards and its share of bills are paid to from now on.
        #[arg(long, value_name = "ACCOUNT")]
        payout: Option<AccountId>,
        /// Offer another public IPv4, as IP/PREFIX@GATEWAY (repeatable).
        #[arg(long = "add-ip", value_name = "IP/PREFIX@GW")]
        add_ips: Vec<PublicIp>,
        /// Stop offering a public IPv4, by its address (repeatable; IP/PREFIX as `farm
        /// show` prints it also does); refused while a contract uses it.
        #[arg(long = "remove-ip", value_name = "IP", value_parser = ip_address)]
        remove_ips: Vec<std::net::Ipv4Addr>,
    },
    /// List farms.
    #[command(visible_alias = "ls")]
    List,
    /// Show one farm and its nodes.
    Show {
        /// The farm's id or name.
        farm: String,
    },
    /// A farm's reward receipts: every input and step of each node's reward.
    Rewards {
        /// The farm's id or name (also accepted as `--farm FARM`).
        #[arg(
            value_name = "FARM",
            required_unless_present = "farm_flag",
            conflicts_with = "farm_flag"
        )]
        farm: Option<String>,
        /// The farm, as a flag.
        #[arg(long = "farm", id = "farm_flag", value_name = "FARM", hide = true)]
        farm_flag: Option<String>,
        /// The minting period [default: the latest minted].
        #[arg(long)]
        period: Option<u64>,
    },
    /// What the bills of contracts on a farm's nodes paid the farm (its share), per node.
    Income {
        /// The farm's id or name.
        farm: String,
    },
    /// Sign an invitation letting a node's key join your farm (run it on the node with --invitation).
    Invite {
        /// Your farm's id or name.
        #[arg(long)]
        farm: String,
        /// The node's account id (shown by `peergrid node run` on first start).
        #[arg(long)]
        node: AccountId,
    },
}

#[derive(Subcommand)]
pub enum NodeCommand {
    /// Run this machine as a node of a farm until Ctrl-C or SIGTERM: register, report uptime, run contracts.
    Run(Box<RunArgs>),
    /// List nodes, with status and capacity.
    #[command(visible_alias = "ls")]
    List {
        /// Only the nodes of this farm (its id or name).
        #[arg(long)]
        farm: Option<String>,
    },
    /// Show one node.
    Show {
        /// The node's id or account.
        node: String,
    },
    /// Say whether a node of your farm should be running: `down` before switching it off
    /// on purpose lists it as standby rather than down while its last report is younger
    /// than the ledger's standby window; `up` when it runs again.
    Power {
        /// The node's id or account.
        node: String,
        /// up or down.
        #[arg(value_enum)]
        target: Power,
    },
}

/// A node's power target, as `node power` takes it.
#[derive(Clone, Copy, clap::ValueEnum)]
pub enum Power {
    /// The node should be running.
    Up,
    /// Switched off on purpose.
    Down,
}

/// `peergrid node run`.
#[derive(clap::Args)]
pub struct RunArgs {
    /// The farm to join (you own it, or pass --invitation from its owner).
    #[arg(long)]
    farm: FarmId,
    /// Where the node keeps its key, state and workloads' data.
    #[arg(long, value_name = "DIR")]
    data_dir: PathBuf,
    /// A disk given to the grid, as PATH[:ssd|:hdd][:MAX_SIZE] (repeatable) [default: the data directory's disk].
    #[arg(long = "disk", value_name = "PATH[:ssd|:hdd][:SIZE]")]
    disks: Vec<DiskSpec>,
    /// Bytes kept free on every disk for the node's own state: shards, deployments and components for others are refused beyond it [default: 1 % of the disk, at most 256 MiB].
    #[arg(long, value_name = "SIZE")]
    keep_free: Option<peergrid_core::capacity::Size>,
    /// The farm owner's invitation (from `peergrid farm invite`), when their key is not on this machine.
    #[arg(long, value_name = "HEX")]
    invitation: Option<Signature>,
    /// Country code, like BE [default: as saved in the data directory on a previous run].
    #[arg(long, value_parser = country_code)]
    country: Option<String>,
    /// City [default: as saved in the data directory on a previous run].
    #[arg(long)]
    city: Option<String>,
    /// Latitude in degrees [default: as saved in the data directory on a previous run].
    #[arg(long, allow_negative_numbers = true, value_parser = latitude)]
    latitude: Option<i32>,
    /// Longitude in degrees [default: as saved in the data directory on a previous run].
    #[arg(long, allow_negative_numbers = true, value_parser = longitude)]
    longitude: Option<i32>,
    /// The local health, status and metrics endpoint.
    #[arg(long, default_value = "127.0.0.1:9100")]
    health: SocketAddr,
    /// Serve the workloads over HTTP here: `/<contract>/<workload>/…` (off when not given).
    #[arg(long, value_name = "ADDR")]
    http: Option<SocketAddr>,
    /// A mesh listen address (repeatable) [default: QUIC and TCP on all interfaces, on the
    /// ports of the last start, random the first time].
    #[arg(long = "listen", value_name = "MULTIADDR")]
    listen: Vec<String>,
    /// A mesh bootstrap peer, ending in /p2p/<id> (repeatable).
    #[arg(long = "bootstrap", value_name = "MULTIADDR")]
    bootstrap: Vec<String>,
    /// Find peers on the local network with mDNS (devnet, LANs).
    #[arg(long)]
    mdns: bool,
}

fn degrees_to_micro(text: &str, max: f64) -> Result<i32, String> {
    let degrees: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a number of degrees, like 51.05 or -3.72"))?;
    if !degrees.is_finite() || degrees.abs() > max {
        return Err(format!("{degrees} is out of range (±{max} degrees)"));
    }
    Ok((degrees * 1e6).round() as i32)
}

/// `--latitude`, in millionths of a degree.
fn latitude(text: &str) -> Result<i32, String> {
    degrees_to_micro(text, 90.0)
}

/// `--longitude`, in millionths of a degree.
fn longitude(text: &str) -> Result<i32, String> {
    degrees_to_micro(text, 180.0)
}

/// `--country`: a two-letter ISO 3166 code, kept in capitals, so that every node of one
/// country shows the same.
fn country_code(text: &str) -> Result<String, String> {
    let code = text.trim();
    if code.len() == 2 && code.bytes().all(|b| b.is_ascii_alphabetic()) {
        Ok(code.to_ascii_uppercase())
    } else {
        Err(format!(
            "{text:?} is not a country code; give its two letters (ISO 3166), like BE for Belgium"
        ))
    }
}

/// An IPv4 address, also given as `farm show` prints a farm's: `IP/PREFIX` or
/// `IP/PREFIX@GATEWAY`.
fn ip_address(text: &str) -> Result<std::net::Ipv4Addr, String> {
    let address = text.split(['/', '@']).next().unwrap_or(text).trim();
    address
        .parse()
        .map_err(|_| format!("{text:?} is not an IPv4 address, like 185.1.2.3"))
}

/// The farm `farm` (id or name), if the key in use owns it; else who does and what to do.
async fn your_farm(
    globals: &Globals,
    client: &peergrid_client::Client,
    farm: &str,
) -> anyhow::Result<peergrid_ledger::Farm> {
    let key = globals.keypair()?;
    let f = client.farm(farm).await?.data;
    if f.owner != key.account() {
        bail!(
            "your key {} does not own farm {} (its owner is {}); pass the owner's key with --key",
            key.account(),
            f.id,
            f.owner
        );
    }
    Ok(f)
}

/// A name `farm show` can find: one of digits only reads as a farm id.
fn check_farm_name(name: &str) -> anyhow::Result<()> {
    if !name.is_empty() && name.bytes().all(|b| b.is_ascii_digit()) {
        bail!(
            "a farm name of digits only ({name:?}) would read as a farm id in `farm show`: add \
             a letter"
        );
    }
    Ok(())
}

/// A farm's public IPs with `add` added and `remove` removed, or why not: an IP to add it
/// already offers, one to remove it does not offer, or one a live contract uses.
fn new_ips(
    now: &[peergrid_ledger::records::FarmIp],
    add: &[PublicIp],
    remove: &[std::net::Ipv4Addr],
) -> anyhow::Result<Vec<PublicIp>> {
    let mut ips: Vec<PublicIp> = now.iter().map(|f| f.ip).collect();
    for (i, gone) in remove.iter().enumerate() {
        if remove[..i].contains(gone) {
            bail!("--remove-ip {gone} is given twice");
        }
        let Some(held) = now.iter().find(|f| f.ip.ip == gone.octets()) else {
            bail!("the farm does not offer {gone}; `peergrid farm show` lists its IPs");
        };
        if let Some(contract) = held.contract {
            bail!(
                "{gone} is used by contract {contract}: it can be removed once that contract \
                 ends"
            );
        }
        ips.retain(|ip| ip.ip != gone.octets());
    }
    for (i, ip) in add.iter().enumerate() {
        if add[..i].iter().any(|other| other.ip == ip.ip) {
            bail!(
                "--add-ip {} is given twice",
                std::net::Ipv4Addr::from(ip.ip)
            );
        }
        if ips.iter().any(|have| have.ip == ip.ip) {
            bail!(
                "the farm already offers {}",
                std::net::Ipv4Addr::from(ip.ip)
            );
        }
        ips.push(*ip);
    }
    Ok(ips)
}

pub fn farm(globals: &Globals, cmd: FarmCommand) -> anyhow::Result<()> {
    crate::runtime()?.block_on(async {
        match cmd {
            FarmCommand::Create { name, public_ips } => {
                check_farm_name(&name)?;
                let (hash, events) = globals.send(Payload::CreateFarm { name: name.clone(), public_ips }).await?;
                let id = events.iter().find_map(|e| match e {
                    peergrid_ledger::Event::FarmCreated { farm, .. } => Some(*farm),
                    _ => None,
                });
                let id = id.context("the transaction applied but created no farm")?;
                if globals.json {
                    return output::json(&json!({ "farm": id, "name": name, "hash": hash }));
                }
                outln!("farm {id} ({name}) created");
                outln!("run a node in it with:\n  peergrid node run --farm {id} --data-dir /var/lib/peergrid");
                Ok(())
            }
            FarmCommand::List => {
                let client = globals.client()?;
                let (height, farms) = client.farms().await?;
                if globals.json {
                    return output::json(&json!({ "height": height, "farms": farms }));
                }
                let rows: Vec<Vec<String>> = farms
                    .iter()
                    .map(|f| {
                        vec![
                            f.id.to_string(),
                            f.name.clone(),
                            f.owner.short(),
                            f.public_ips.len().to_string(),
                            if f.certified { "yes" } else { "no" }.into(),
                        ]
                    })
                    .collect();
                output::table(&["ID", "NAME", "OWNER", "PUBLIC IPS", "CERTIFIED"], &rows);
                Ok(())
            }
            FarmCommand::Show { farm } => {
                let client = globals.client()?;
                let f = client.farm(&farm).await?;
                let nodes = nodes(globals, Some(f.data.id)).await?;
                if globals.json {
                    return output::json(&json!({ "height": f.height, "farm": f.data, "nodes": nodes }));
                }
                let f = f.data;
                output::rows(&[
                    ("farm", format!("{} ({})", f.id, f.name)),
                    ("owner", f.owner.to_string()),
                    ("payout", f.payout.to_string()),
                    ("certified", if f.certified { "yes" } else { "no" }.into()),
                    (
                        "public IPs",
                        if f.public_ips.is_empty() {
                            "none".into()
                        } else {
                            f.public_ips
                                .iter()
                                .map(|ip| match ip.contract {
                                    Some(c) => format!("{} (contract {c})", ip.ip),
                                    None => format!("{} (free)", ip.ip),
                                })
                                .collect::<Vec<_>>()
                                .join(", ")
                        },
                    ),
                    ("nodes", nodes_text(&nodes)),
                ]);
                if !nodes.is_empty() {
                    outln!("\ntheir capacity and use: peergrid node list --farm {}", f.id);
                }
                Ok(())
            }
            FarmCommand::Rewards {
                farm,
                farm_flag,
                period,
            } => {
                let farm = farm
                    .or(farm_flag)
                    .context("which farm? `peergrid farm rewards FARM` (its id or name)")?;
                let farm = globals.client()?.farm(&farm).await?.data.id;
                crate::econ::rewards(globals, farm, period).await
            }
            FarmCommand::Update {
                farm,
                name,
                payout,
                add_ips,
                remove_ips,
            } => {
                if name.is_none() && payout.is_none() && add_ips.is_empty() && remove_ips.is_empty()
                {
                    bail!("nothing to change: give --name, --payout, --add-ip or --remove-ip");
                }
                if let Some(name) = &name {
                    check_farm_name(name)?;
                }
                let client = globals.client()?;
                let f = your_farm(globals, &client, &farm).await?;
                // What is already so is left out: an update that changes nothing costs a
                // fee for nothing.
                let name = name.filter(|n| *n != f.name);
                let payout = payout.filter(|p| *p != f.payout);
                let public_ips = if add_ips.is_empty() && remove_ips.is_empty() {
                    None
                } else {
                    Some(new_ips(&f.public_ips, &add_ips, &remove_ips)?)
                };
                if name.is_none() && payout.is_none() && public_ips.is_none() {
                    bail!(
                        "nothing to change: farm {} already has that name and payout (`peergrid \
                         farm show {}`)",
                        f.id,
                        f.id
                    );
                }
                if let Some(to) = &payout {
                    let question = "Rewards and bill shares paid to a wrong account are lost. \
                                    Pay the farm's to it?";
                    if !crate::ledger::confirm_unseen(globals, &client, to, question).await? {
                        bail!(
                            "not changed: check the account id (`peergrid key show` on the \
                             payout account's machine prints it)"
                        );
                    }
                }
                let (hash, events) = globals
                    .send(Payload::UpdateFarm {
                        farm: f.id,
                        name: name.clone(),
                        public_ips,
                        payout,
                    })
                    .await?;
                if globals.json {
                    return output::json(&json!({ "farm": f.id, "hash": hash, "events": events }));
                }
                outln!("farm {} updated", f.id);
                if let Some(name) = name {
                    outln!("  name:   {name}");
                }
                if let Some(payout) = payout {
                    outln!("  payout: {payout} (rewards and bill shares from now on)");
                }
                for ip in &add_ips {
                    outln!("  offers {ip}");
                }
                for ip in &remove_ips {
                    outln!("  no longer offers {ip}");
                }
                outln!("\nsee it: peergrid farm show {}", f.id);
                Ok(())
            }
            FarmCommand::Income { farm } => crate::econ::income(globals, &farm).await,
            FarmCommand::Invite { farm, node } => {
                let client = globals.client()?;
                let key = globals.keypair()?;
                let farm = your_farm(globals, &client, &farm).await?.id;
                let status = client.status().await?;
                let sig = sign_invitation(&key, &status.data.chain_id, farm, &node);
                let hex = hex::encode(sig.0);
                if globals.json {
                    return output::json(&json!({ "farm": farm, "node": node, "invitation": hex }));
                }
                outln!("invitation for node {node} to join farm {farm}:\n{hex}\n");
                outln!("on the node:\n  peergrid node run --farm {farm} --data-dir DIR --invitation {hex}");
                Ok(())
            }
        }
    })
}

async fn nodes(globals: &Globals, farm: Option<FarmId>) -> anyhow::Result<Vec<NodeView>> {
    Ok(globals.client()?.nodes(farm).await?.1)
}

/// A farm's nodes in a line: how many, then each id with its status.
fn nodes_text(nodes: &[NodeView]) -> String {
    if nodes.is_empty() {
        return "none yet (`peergrid node run --farm ID` on a machine adds one)".into();
    }
    let each: Vec<String> = nodes
        .iter()
        .map(|v| format!("{} ({})", v.node.id, v.status))
        .collect();
    format!("{}: {}", nodes.len(), each.join(", "))
}

/// Check that `text` names a node: its id (a number) or its account.
fn node_ref(text: &str) -> anyhow::Result<()> {
    if text.parse::<NodeId>().is_err() && text.parse::<AccountId>().is_err() {
        bail!(
            "{text:?} is not a node id: an id must be a number, like 3 (or give the node's \
             account, 12D3KooW…)"
        );
    }
    Ok(())
}

/// What contracts use of a node, the parts in use only: a storage node's disks, an app
/// node's cores and memory. `-` when nothing is.
fn used_short(used: &peergrid_core::capacity::Capacity) -> String {
    let mut parts = Vec::new();
    if used.cru > 0 {
        parts.push(format!(
            "{} {}",
            used.cru,
            if used.cru == 1 { "core" } else { "cores" }
        ));
    }
    for (bytes, what) in [(used.mru, "RAM"), (used.sru, "SSD"), (used.hru, "HDD")] {
        if bytes > 0 {
            parts.push(format!("{} {what}", human_bytes(bytes)));
        }
    }
    match parts.is_empty() {
        true => "-".into(),
        false => parts.join(", "),
    }
}

fn place(l: &Location) -> String {
    match (l.city.is_empty(), l.country.is_empty()) {
        (true, true) => "-".into(),
        (false, false) => format!("{}, {}", l.city, l.country),
        _ => format!("{}{}", l.city, l.country),
    }
}

pub fn node(globals: &Globals, cmd: NodeCommand) -> anyhow::Result<()> {
    match cmd {
        NodeCommand::Run(args) => node_run(globals, *args),
        NodeCommand::List { farm } => crate::runtime()?.block_on(async {
            // An unknown farm has no nodes; say it does not exist rather than list none.
            let farm = match farm {
                Some(f) => Some(globals.client()?.farm(&f).await?.data.id),
                None => None,
            };
            let items = nodes(globals, farm).await?;
            if globals.json {
                return output::json(&json!({ "nodes": items }));
            }
            let mut rows = Vec::new();
            for v in &items {
                let n = &v.node;
                rows.push(vec![
                    n.id.to_string(),
                    n.farm.to_string(),
                    v.status.to_string(),
                    n.capacity.cru.to_string(),
                    human_bytes(n.capacity.mru),
                    human_bytes(n.capacity.sru),
                    human_bytes(n.capacity.hru),
                    match n.rented_by {
                        Some(c) => format!("rented (contract {c})"),
                        None => used_short(&n.used),
                    },
                    n.contracts.to_string(),
                    place(&n.location),
                    n.account.short(),
                ]);
            }
            output::table(
                &[
                    "ID",
                    "FARM",
                    "STATUS",
                    "CORES",
                    "MEMORY",
                    "SSD",
                    "HDD",
                    "USED",
                    "CONTRACTS",
                    "LOCATION",
                    "ACCOUNT",
                ],
                &rows,
            );
            Ok(())
        }),
        NodeCommand::Power { node, target } => crate::runtime()?.block_on(async {
            node_ref(&node)?;
            let client = globals.client()?;
            let n = client.node_by(&node).await?.data.node;
            let id = n.id;
            // Its farm's owner signs: said before a transaction the ledger would refuse.
            let owner = client.farm(&n.farm.to_string()).await?.data.owner;
            let me = globals.keypair()?.account();
            if owner != me {
                bail!(
                    "node {id} is in farm {}, which {owner} owns, not you ({me}): run it with \
                     the farm owner's key (`--key FILE`)",
                    n.farm
                );
            }
            let target = match target {
                Power::Up => peergrid_core::tx::PowerTarget::Up,
                Power::Down => peergrid_core::tx::PowerTarget::Down,
            };
            let (hash, events) = globals
                .send(Payload::SetPowerTarget { node: id, target })
                .await?;
            if globals.json {
                return output::json(
                    &json!({ "node": id, "target": target, "hash": hash, "events": events }),
                );
            }
            let window = client.status().await?.data.params.standby_max_secs;
            match target {
                peergrid_core::tx::PowerTarget::Down => outln!(
                    "node {id} is to be off: once it stops reporting it is listed standby, not \
                     down, for up to {} after its last report (it earns nothing and its \
                     contracts are not billed meanwhile); `peergrid node power {id} up` when it \
                     runs again",
                    output::human_duration(Duration::from_secs(window))
                ),
                peergrid_core::tx::PowerTarget::Up => {
                    outln!("node {id} is to be running: listed down again when it stops reporting")
                }
            }
            Ok(())
        }),
        NodeCommand::Show { node } => crate::runtime()?.block_on(async {
            node_ref(&node)?;
            let client = globals.client()?;
            let v = client.node_by(&node).await?;
            if globals.json {
                return output::json(&json!({ "height": v.height, "node": v.data }));
            }
            let n = &v.data.node;
            let last = n.uptime.last_report_ms;
            let status = client.status().await?.data;
            let down_ms = n.down_ms_until(status.time_ms, &status.params);
            let down = if v.data.status == peergrid_ledger::NodeStatus::Up {
                (down_ms > 0).then(|| {
                    format!(
                        "{} in all since it registered (not billed to its contracts)",
                        output::human_duration(Duration::from_millis(down_ms))
                    )
                })
            } else if down_ms == 0 {
                // Registered moments ago and not reported yet: nothing counts down so far.
                None
            } else {
                let since = n.up_until_ms(&status.params);
                Some(format!(
                    "since {} (no uptime report for two intervals); {} in all, not billed to \
                     its contracts",
                    output::ago(since),
                    output::human_duration(Duration::from_millis(down_ms))
                ))
            };
            let free = match n.rented_by {
                Some(c) => format!(
                    "{} for its renter only (rented by contract {c})",
                    n.capacity.saturating_sub(&n.used)
                ),
                None => n.capacity.saturating_sub(&n.used).to_string(),
            };
            let mut rows = vec![
                ("node", n.id.to_string()),
                ("farm", n.farm.to_string()),
                ("account", n.account.to_string()),
                ("status", v.data.status.to_string()),
                ("certified", if n.certified { "yes" } else { "no" }.into()),
                ("capacity", n.capacity.to_string()),
                ("used", n.used.to_string()),
                ("free", free),
                ("contracts", n.contracts.to_string()),
                ("location", place(&n.location)),
                (
                    "uptime",
                    format!(
                        "up {} since its last start, {} reports",
                        output::human_duration(Duration::from_secs(n.uptime.last_uptime_secs)),
                        n.uptime.reports
                    ),
                ),
                (
                    "last report",
                    last.map(output::ago).unwrap_or_else(|| "never".into()),
                ),
                ("at height", v.height.to_string()),
            ];
            if let Some(down) = down {
                rows.insert(4, ("down", down));
            }
            output::rows(&rows);
            Ok(())
        }),
    }
}

fn node_run(globals: &Globals, args: RunArgs) -> anyhow::Result<()> {
    let client = globals.client()?;
    let invitation = args.invitation;
    // The owner's key signs the invitation when it is here: --key, your own key, or on
    // a devnet the demo account.
    let owner_key = globals.signing_key_file().ok().filter(|p| p.exists());
    // A registered node needs neither; a new one is refused later, naming what it needs.
    if let Some(given) = &globals.key
        && owner_key.is_none()
        && invitation.is_none()
    {
        eprintln!(
            "warning: no key file at {} (--key): a node not yet in farm {} needs its owner's \
             key there, or the owner's invitation (--invitation)",
            given.display(),
            args.farm
        );
    }
    let mut mesh = peergrid_mesh::Config::default();
    if !args.listen.is_empty() {
        mesh.listen = args
            .listen
            .iter()
            .map(|a| {
                a.parse()
                    .with_context(|| format!("--listen {a:?} is not a multiaddr"))
            })
            .collect::<anyhow::Result<_>>()?;
    }
    mesh.bootstrap = args
        .bootstrap
        .iter()
        .map(|a| {
            a.parse()
                .with_context(|| format!("--bootstrap {a:?} is not a multiaddr"))
        })
        .collect::<anyhow::Result<_>>()?;
    mesh.mdns = args.mdns;
    let config = NodeConfig {
        data_dir: args.data_dir,
        farm: args.farm,
        ledger: client.urls().to_vec(),
        ledger_ca: globals.ledger_ca_pem()?,
        disks: args.disks,
        reserve: Reservation {
            disk_free_min_bytes: args.keep_free.map(|s| s.bytes()),
            ..Reservation::default()
        },
        location: LocationUpdate {
            country: args.country,
            city: args.city,
            latitude_micro: args.latitude,
            longitude_micro: args.longitude,
        },
        health_listen: args.health,
        http_listen: args.http,
        mesh,
        invitation,
        owner_key,
    };
    crate::runtime()?.block_on(async {
        let node = peergrid_node::daemon::start(config).await?;
        let report = node.shared.report().await;
        if globals.json {
            output::json(
                &json!({ "node": node.node, "health": node.health.to_string(), "status": report }),
            )?;
        } else {
            outln!("node {} of farm {} is running", node.node, report.farm);
            let mut rows = vec![
                ("account", report.account.to_string()),
                ("capacity", report.capacity.to_string()),
                ("health", format!("http://{}/health", node.health)),
                ("metrics", format!("http://{}/metrics", node.health)),
            ];
            if let Some(http) = &report.http {
                rows.push(("workloads", format!("{http}/<contract>/<workload>/")));
            }
            output::rows(&rows);
            if let Some(why) = no_cu_warning(&report.capacity) {
                eprintln!("warning: {why}");
            }
            outln!("\nCtrl-C stops the node; its workloads are restored on the next start.");
        }
        crate::stop_requested().await;
        eprintln!("stopping the node …");
        node.stop().await;
        eprintln!("the node stopped; `peergrid node run` with the same options starts it again");
        Ok(())
    })
}

/// Why a node's capacity earns no compute units, if it does not: rewards count
/// `CU = min(2·cores, (RAM − 1 GiB)/4 GiB, SSD/50 GiB)`, so a node without SSD (a disk
/// whose kind the system does not report counts as HDD) earns for its disks only.
fn no_cu_warning(capacity: &peergrid_core::Capacity) -> Option<String> {
    if peergrid_core::economics::reward_units(capacity).cu_micro > 0 {
        return None;
    }
    let limit = if capacity.sru == 0 {
        "it offers no SSD (a disk whose kind the system does not report counts as HDD: \
         mark an SSD with --disk PATH:ssd)"
    } else if capacity.mru <= 1 << 30 {
        "it has 1 GiB of memory or less to offer"
    } else {
        "its cores, memory or SSD are too small"
    };
    Some(format!(
        "this node earns no compute units (CU = min(2·cores, (RAM − 1 GiB)/4 GiB, SSD/50 GiB)), \
         only storage units, because {limit}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_without_ssd_is_told_it_earns_no_compute_units() {
        let mut c = peergrid_core::Capacity {
            cru: 4,
            mru: 16 << 30,
            sru: 0,
            hru: 1 << 40,
        };
        let why = no_cu_warning(&c).expect("no SSD, no CU");
        assert!(why.contains("--disk PATH:ssd"), "{why}");
        c.sru = 100 << 30;
        assert_eq!(no_cu_warning(&c), None);
    }

    #[test]
    fn used_shows_what_contracts_take_of_each_resource() {
        let mut used = peergrid_core::capacity::Capacity::default();
        assert_eq!(used_short(&used), "-");
        used.sru = 10 << 30;
        assert_eq!(
            used_short(&used),
            "10.0 GiB SSD",
            "a storage node's use shows"
        );
        used.cru = 2;
        used.mru = 1 << 30;
        assert_eq!(used_short(&used), "2 cores, 1.0 GiB RAM, 10.0 GiB SSD");
    }

    #[test]
    fn a_node_is_named_by_a_number_or_an_account() {
        node_ref("3").expect("an id");
        node_ref(
            &peergrid_core::Keypair::from_seed([1; 32])
                .account()
                .to_string(),
        )
        .expect("an account");
        let e = node_ref("abc").expect_err("neither");
        assert!(e.to_string().contains("an id must be a number"), "{e}");
    }

    #[test]
    fn coordinates_and_countries_are_checked() {
        assert_eq!(latitude("51.05"), Ok(51_050_000));
        assert_eq!(longitude("-9.14"), Ok(-9_140_000));
        assert!(latitude("91").is_err_and(|e| e.contains("out of range (±90")));
        assert!(longitude("200").is_err_and(|e| e.contains("out of range (±180")));
        assert!(longitude("NaN").is_err());
        assert!(latitude("north").is_err_and(|e| e.contains("not a number of degrees")));
        assert_eq!(country_code("be"), Ok("BE".into()));
        assert!(country_code("Belgium").is_err_and(|e| e.contains("like BE")));
        assert!(country_code("B1").is_err());
    }
}
