//! `peergrid wallet`, `peergrid tx`, `peergrid validator` and `peergrid devnet`: the ledger from the command line.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Subcommand;
use peergrid_client::TxStatus;
use peergrid_core::{AccountId, Amount, Hash, Keypair, Payload};
use peergrid_devnet::Options;
use serde_json::json;

use crate::{Globals, output};

/// How long `wallet transfer` waits for finality before giving the user the hash to check later.
const FINALITY_WAIT: Duration = Duration::from_secs(30);

#[derive(Subcommand)]
pub enum WalletCommand {
    /// Show an account's balance (yours by default).
    Balance {
        /// The account; defaults to your key's.
        account: Option<String>,
        /// Check the answer here: the account's Merkle proof against the block's state root,
        /// and that root's certificate against the validator sets followed from genesis.
        #[arg(long)]
        prove: bool,
    },
    /// Send tokens and wait until the transfer is final.
    Transfer {
        /// The receiver's account id.
        #[arg(long)]
        to: AccountId,
        /// How many tokens, like 12 or 0.5.
        #[arg(long)]
        amount: Amount,
        /// Return once a validator accepted it, without waiting for finality.
        #[arg(long)]
        no_wait: bool,
    },
}

#[derive(Subcommand)]
pub enum TxCommand {
    /// Where a transaction is: pending, finalized with its events, or rejected with the reason.
    Status {
        /// The transaction's hash.
        hash: Hash,
    },
}

#[derive(Subcommand)]
pub enum ValidatorCommand {
    /// Run a validator from its configuration file until Ctrl-C or SIGTERM.
    Run {
        /// The validator's TOML configuration.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Ask every validator of --ledger how it is doing: height, epoch, finalizing, and
    /// whether they agree on the state root at the highest height all of them reached.
    Status,
}

#[derive(clap::Args)]
pub struct DevnetArgs {
    #[command(subcommand)]
    command: Option<DevnetCommand>,
    /// The devnet's folder [default: $PEERGRID_DEVNET, else $PEERGRID_HOME/devnet].
    #[arg(long, global = true, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// Forget the old devnet and start from a new genesis.
    #[arg(long)]
    fresh: bool,
    /// Number of validators.
    #[arg(long, default_value_t = 4)]
    validators: usize,
    /// Validator i serves its API on BASE+i and talks to the others on BASE+100+i.
    #[arg(long, default_value_t = 8700)]
    base_port: u16,
    /// Farmer nodes to run, in 2 farms (each serves its health endpoint on BASE+200+i
    /// and its workloads over HTTP on BASE+310+i).
    #[arg(long, default_value_t = 5)]
    nodes: usize,
    /// Set a genesis parameter of a new devnet, like `--set billing_interval_secs=2` (repeatable).
    #[arg(long = "set", value_name = "NAME=VALUE")]
    params: Vec<String>,
}

#[derive(Subcommand)]
enum DevnetCommand {
    /// Show the running devnet; exits 0 only while it is finalizing blocks.
    Status,
}

fn status_line(status: &TxStatus) -> String {
    match status {
        TxStatus::Pending => "pending: waiting in the mempool".into(),
        TxStatus::Finalized { height, events } => {
            format!("finalized at height {height} ({} events)", events.len())
        }
        TxStatus::Rejected { height, reason } => format!("rejected at height {height}: {reason}"),
        TxStatus::Unknown => "unknown to the validator (never received, expired or dropped)".into(),
    }
}

pub fn wallet(globals: &Globals, cmd: WalletCommand) -> anyhow::Result<()> {
    let client = globals.client()?;
    crate::runtime()?.block_on(async {
        match cmd {
            WalletCommand::Balance { account, prove } => {
                let id = match account {
                    Some(a) => a.parse::<AccountId>()?,
                    None => globals.keypair()?.account(),
                };
                if prove {
                    let proven = client.proven_account(&id).await?;
                    let exists = proven.value.is_some();
                    let account = proven.value.unwrap_or_default();
                    if globals.json {
                        return output::json(&json!({
                            "account": id, "balance": account.balance, "nonce": account.nonce,
                            "height": proven.height, "root": proven.root, "exists": exists,
                            "proof": output::proof_json(&proven.certified),
                        }));
                    }
                    output::rows(&[
                        ("account", id.to_string()),
                        ("balance", format!("{} PGT", account.balance)),
                        ("nonce", account.nonce.to_string()),
                        ("at height", proven.height.to_string()),
                        (
                            "proof",
                            format!(
                                "{} checked against state root {}",
                                if exists { "balance" } else { "absence of the account" },
                                proven.root
                            ),
                        ),
                        output::certified_row(&proven.certified),
                    ]);
                    return Ok(());
                }
                let view = client.account(&id).await?;
                if globals.json {
                    return output::json(&json!({
                        "account": id, "balance": view.data.balance, "nonce": view.data.nonce, "height": view.height,
                    }));
                }
                output::rows(&[
                    ("account", id.to_string()),
                    ("balance", format!("{} PGT", view.data.balance)),
                    ("nonce", view.data.nonce.to_string()),
                    ("at height", view.height.to_string()),
                ]);
                Ok(())
            }
            WalletCommand::Transfer { to, amount, no_wait } => {
                let key = globals.keypair()?;
                if key.account() == to {
                    bail!(
                        "{to} is your own account: a transfer to yourself would only cost its \
                         fee (is --to the account you meant?)"
                    );
                }
                let question =
                    format!("Tokens sent to a wrong account are lost. Send {amount} PGT to it?");
                if !confirm_unseen(globals, &client, &to, &question).await? {
                    bail!(
                        "not sent: check the account id (`peergrid key show` on the receiver's \
                         machine prints it)"
                    );
                }
                let tx = client.sign(&key, Payload::Transfer { to, amount }).await?;
                let hash = client.submit(&tx).await?;
                if no_wait {
                    if globals.json {
                        return output::json(
                            &json!({ "hash": hash, "status": TxStatus::Pending }),
                        );
                    }
                    outln!("submitted {hash}\ncheck it with: peergrid tx status {hash}");
                    return Ok(());
                }
                let status = client.wait(&hash, FINALITY_WAIT).await?;
                if globals.json {
                    output::json(&json!({ "hash": hash, "status": status }))?;
                } else {
                    outln!("{amount} PGT to {to}\n{hash}: {}", status_line(&status));
                }
                if let TxStatus::Rejected { reason, .. } = status {
                    bail!("the transfer was rejected: {reason}");
                }
                Ok(())
            }
        }
    })
}

/// At a terminal, ask `question` before paying an account the ledger has never seen: an
/// account id carries no checksum, so a mistyped one is a valid, unowned account, and what
/// is paid to it is lost. Whether to go on; scripts (no terminal, or `--json`) are not
/// asked.
pub(crate) async fn confirm_unseen(
    globals: &Globals,
    client: &peergrid_client::Client,
    to: &AccountId,
    question: &str,
) -> anyhow::Result<bool> {
    use std::io::IsTerminal;
    if globals.json || !std::io::stdin().is_terminal() || !std::io::stderr().is_terminal() {
        return Ok(true);
    }
    let seen = client.account(to).await?.data;
    if seen.balance != Amount::ZERO || seen.nonce > 0 || seen.node.is_some() {
        return Ok(true);
    }
    eprint!(
        "{to} has no tokens and has never sent a transaction: a new account, or a mistyped \
         one. {question} [y/N] "
    );
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    Ok(matches!(answer.trim().to_lowercase().as_str(), "y" | "yes"))
}

pub fn tx(globals: &Globals, cmd: TxCommand) -> anyhow::Result<()> {
    let client = globals.client()?;
    let TxCommand::Status { hash } = cmd;
    crate::runtime()?.block_on(async {
        let status = client.tx_status(&hash).await?;
        if globals.json {
            output::json(&json!({ "hash": hash, "status": status }))?;
        } else if status != TxStatus::Unknown {
            // An unknown one is said once, by the error below.
            outln!("{hash}: {}", status_line(&status));
            if let TxStatus::Finalized { events, .. } = &status {
                for e in events {
                    outln!("  {}", event_text(e));
                }
            }
        }
        // A script waiting on a transaction tells a failed or lost one by the exit status.
        match status {
            TxStatus::Rejected { .. } => bail!("the transaction was rejected: nothing changed"),
            TxStatus::Unknown => {
                bail!(
                    "this validator does not know transaction {hash}: never received, dropped from the mempool, or in a block it pruned; check your balance before sending it again"
                )
            }
            TxStatus::Pending | TxStatus::Finalized { .. } => Ok(()),
        }
    })
}

/// An event in one line for people: its name, then each field and value in the order of
/// their names (`transferred: amount 2.5 PGT, from 12D3…, to 12D3…`), from the JSON `--json` prints.
fn event_text(e: &peergrid_ledger::Event) -> String {
    let value = serde_json::to_value(e).unwrap_or_default();
    let Some(fields) = value.as_object() else {
        return value.to_string();
    };
    let name = fields
        .get("event")
        .and_then(|n| n.as_str())
        .unwrap_or("event")
        .replace('_', " ");
    let rest: Vec<String> = fields
        .iter()
        .filter(|(k, v)| *k != "event" && !v.is_null())
        .map(|(k, v)| {
            // Amounts are strings of tokens in the JSON; in words they carry their unit.
            let unit = if matches!(k.as_str(), "amount" | "tokens" | "fee") {
                " PGT"
            } else {
                ""
            };
            match v {
                serde_json::Value::String(s) => format!("{} {s}{unit}", k.replace('_', " ")),
                other => format!("{} {other}", k.replace('_', " ")),
            }
        })
        .collect();
    format!("{name}: {}", rest.join(", "))
}

pub fn validator(globals: &Globals, cmd: ValidatorCommand) -> anyhow::Result<()> {
    match cmd {
        ValidatorCommand::Run { config } => {
            let cfg = peergrid_chain::validator::ValidatorConfig::load(&config)?;
            crate::snapshot::join(&cfg)?;
            peergrid_chain::validator::run(cfg, crate::stop_requested())?;
            eprintln!(
                "the validator stopped; it resumes from its data directory on the next start"
            );
            Ok(())
        }
        ValidatorCommand::Status => validator_status(globals),
    }
}

pub fn devnet(globals: &Globals, args: DevnetArgs) -> anyhow::Result<()> {
    let dir = args
        .dir
        .clone()
        .unwrap_or_else(peergrid_devnet::default_dir);
    if let Some(DevnetCommand::Status) = args.command {
        return devnet_status(globals, &dir);
    }
    let opts = Options {
        dir: dir.clone(),
        fresh: args.fresh,
        validators: args.validators,
        base_port: args.base_port,
        nodes: args.nodes,
        params: args.params.clone(),
    };
    let genesis = peergrid_devnet::prepare(&opts)?;
    let exe = std::env::current_exe().context("cannot find the peergrid executable")?;
    let mut supervisor = peergrid_devnet::Supervisor::start(&opts, &genesis, &exe)?;
    crate::runtime()?.block_on(async {
        eprintln!("starting {} validators in {} …", genesis.validators.len(), dir.display());
        // One watch for the whole run: a signal arriving between two of the loop's
        // selects must not be lost.
        let stop = crate::stop_requested();
        tokio::pin!(stop);
        let startup = async {
            let height = supervisor.wait_finalizing(Duration::from_secs(60)).await?;
            if args.nodes > 0 {
                eprintln!("starting {} nodes in {} farms …", args.nodes, peergrid_devnet::FARMS);
                let farms = supervisor.ensure_farms().await?;
                supervisor
                    .start_nodes(&exe, &farms, args.nodes, Duration::from_secs(60))
                    .await?;
            }
            anyhow::Ok(height)
        };
        // Ctrl-C or SIGTERM while starting stops everything cleanly too.
        let started = tokio::select! {
            r = startup => Some(r),
            _ = &mut stop => None,
        };
        let Some(started) = started else {
            eprintln!("stopping the devnet …");
            supervisor.stop();
            eprintln!("the devnet stopped; `peergrid devnet` starts it again where it was");
            return Ok(());
        };
        let height = match started {
            Ok(h) => h,
            Err(e) => {
                supervisor.stop();
                return Err(e);
            }
        };
        let demo = Keypair::load(&supervisor.running.demo_key)?;
        let mnemonic = std::fs::read_to_string(dir.join("demo-mnemonic.txt")).unwrap_or_default();
        // Commands name nodes by their ledger id, the devnet's list by its own order; a
        // node registers just after it listens, so the ids may take a moment.
        let mut ids = devnet_node_ids(&dir, &supervisor.running.apis).await;
        let until = std::time::Instant::now() + Duration::from_secs(10);
        while ids.len() < supervisor.running.nodes.len() && std::time::Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(250)).await;
            ids = devnet_node_ids(&dir, &supervisor.running.apis).await;
        }
        let nodes_by_id: Vec<String> = (supervisor.running.nodes.iter().enumerate())
            .map(|(i, health)| match ids.get(&i) {
                Some(id) => format!("node {id} {health}"),
                None => health.clone(),
            })
            .collect();
        if globals.json {
            output::json(&json!({
                "chain_id": genesis.chain_id,
                "apis": supervisor.running.apis,
                "demo_account": demo.account(),
                "demo_mnemonic": mnemonic.trim(),
                "height": height,
                "nodes": supervisor.running.nodes,
                "nodes_http": supervisor.running.nodes_http,
                "node_ids": (0..supervisor.running.nodes.len()).map(|i| ids.get(&i)).collect::<Vec<_>>(),
            }))?;
        } else {
            outln!("peergrid devnet is finalizing blocks (height {height})\n");
            output::rows(&[
                ("chain", genesis.chain_id.clone()),
                ("ledger API", supervisor.running.apis.first().cloned().unwrap_or_default()),
                ("validators", supervisor.running.apis.join(" ")),
                ("demo account", demo.account().to_string()),
                ("demo key", supervisor.running.demo_key.display().to_string()),
                ("nodes", format!("{} (ledger id and health: {})", supervisor.running.nodes.len(), nodes_by_id.join(", "))),
                ("workloads", {
                    let by_id: Vec<String> = (supervisor.running.nodes_http.iter().enumerate())
                        .map(|(i, http)| match ids.get(&i) {
                            Some(id) => format!("node {id} {http}"),
                            None => http.clone(),
                        })
                        .collect();
                    by_id.join(", ")
                }),
                ("logs", dir.join("logs").display().to_string()),
            ]);
            outln!("\ndemo account's 24 words (devnet only):\n{}", output::phrase_lines(mnemonic.trim()));
            // Other commands look for the devnet in the default folder only.
            if dir != peergrid_devnet::default_dir() {
                outln!("this devnet is not in the default folder; in another terminal, first:\n  export PEERGRID_DEVNET={}", dir.display());
            }
            outln!("try, from another terminal:\n  peergrid wallet balance\n  peergrid wallet transfer --to <ACCOUNT> --amount 1\n  peergrid node list\n  peergrid devnet status");
            outln!("\nCtrl-C stops the devnet; its state is kept for next time (--fresh starts over).");
        }
        loop {
            tokio::select! {
                _ = &mut stop => break,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {
                    // A process that dies is started again; the grid keeps finalizing
                    // while up to f validators are gone, which is what BFT is for.
                    match supervisor.tend() {
                        Ok(lines) => {
                            for line in lines {
                                tracing::warn!("{line}");
                            }
                        }
                        Err(e) => {
                            supervisor.stop();
                            return Err(e);
                        }
                    }
                }
            }
        }
        eprintln!("stopping the devnet …");
        supervisor.stop();
        eprintln!("the devnet stopped; `peergrid devnet` starts it again where it was");
        Ok(())
    })
}

fn devnet_status(globals: &Globals, dir: &std::path::Path) -> anyhow::Result<()> {
    let Some(running) = peergrid_devnet::running(dir) else {
        bail!(
            "no devnet is running from {}; start one with `peergrid devnet`",
            dir.display()
        );
    };
    crate::runtime()?.block_on(async {
        // All at once: a stopped node or validator holds the report up by one timeout,
        // not by one per question.
        let (health, ledger_ids, mut follows) = tokio::join!(
            peergrid_devnet::health(dir, &running),
            devnet_node_ids(dir, &running.apis),
            futures::future::join_all(running.nodes.iter().map(|url| node_follows(url)))
        );
        let processes = &health.processes;
        let ledger = peergrid_client::Client::new(running.apis.clone());
        let _ = tokio::time::timeout(Duration::from_secs(3), lags(&ledger, &mut follows)).await;
        // `node 3`'s view, by its process name.
        let follows_of = |name: &str| {
            (name.strip_prefix("node "))
                .and_then(|i| i.parse::<usize>().ok())
                .and_then(|i| follows.get(i))
        };
        // `node 0` is the devnet's first node process; the ledger numbers nodes its own way.
        let ledger_id = |name: &str| {
            (name.strip_prefix("node "))
                .and_then(|i| ledger_ids.get(&i.parse().ok()?))
                .copied()
        };
        if globals.json {
            let mut value = serde_json::to_value(&health)?;
            if let Some(list) = value["processes"].as_array_mut() {
                for p in list {
                    let name = p["name"].as_str().unwrap_or_default().to_string();
                    p["ledger_node"] = json!(ledger_id(&name));
                    if let Some(f) = follows_of(&name) {
                        p["followed_height"] = json!(f.followed_height);
                        p["blocks_behind"] = json!(f.blocks_behind);
                        p["lag_secs"] = json!(f.lag_secs);
                        p["reports_uptime"] = json!(f.reports_uptime);
                        p["last_uptime_report_secs"] = json!(f.last_report_secs);
                        p["following"] = json!(f.following());
                    }
                }
            }
            output::json(&value)?;
        } else {
            print_validators(&health);
            if !processes.is_empty() {
                outln!();
                let table: Vec<Vec<String>> = processes
                    .iter()
                    .map(|p| {
                        let ledger_id = ledger_id(&p.name)
                            .map_or_else(|| "-".into(), |id| format!("node {id}"));
                        // Ports follow the processes, not the ledger's ids: say which is whose.
                        let apps = (p.name.strip_prefix("node "))
                            .and_then(|i| running.nodes_http.get(i.parse::<usize>().ok()?))
                            .cloned()
                            .unwrap_or_else(|| "-".into());
                        vec![
                            p.name.clone(),
                            ledger_id,
                            apps,
                            p.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
                            p.state.clone(),
                            follows_of(&p.name).map_or_else(|| "-".into(), NodeFollows::cell),
                            p.restarts.to_string(),
                            p.last_exit.clone().unwrap_or_else(|| "-".into()),
                        ]
                    })
                    .collect();
                output::table(
                    &[
                        "PROCESS",
                        "ON THE LEDGER",
                        "APPS AT",
                        "PID",
                        "STATE",
                        "FOLLOWS THE LEDGER",
                        "RESTARTS",
                        "LAST EXIT",
                    ],
                    &table,
                );
                // A process given up on: why, from its log's last lines.
                for p in processes.iter().filter(|p| p.state == "failed") {
                    outln!(
                        "\n{} was given up on ({}); its log ({}) ended with:\n{}",
                        p.name,
                        p.last_exit.as_deref().unwrap_or("exited"),
                        p.log.display(),
                        p.last_log.as_deref().unwrap_or("(nothing)").trim_end()
                    );
                }
                // Without blocks no node can follow: the validators are the thing to look
                // at, not each node's log.
                let stalled: Vec<String> = health
                    .validators
                    .iter()
                    .enumerate()
                    .filter(|(_, v)| !v.finalizing)
                    .filter_map(|(i, _)| {
                        let name = format!("validator {i}");
                        let p = processes.iter().find(|p| p.name == name)?;
                        Some(format!("{name} ({}, log {})", p.state, p.log.display()))
                    })
                    .collect();
                if !health.finalizing {
                    outln!(
                        "\nno node can follow a ledger that finalizes no block: consensus needs more \
                         than two thirds of the validators. Not finalizing: {}",
                        if stalled.is_empty() { "?".to_string() } else { stalled.join(", ") }
                    );
                }
                for p in processes.iter().filter(|p| p.state == "running" && health.finalizing) {
                    if let Some(f) = follows_of(&p.name).filter(|f| !f.following()) {
                        outln!(
                            "\n{} runs but does not follow the ledger ({}): without uptime reports \
                             the ledger counts it down, and behind it misses contract changes; see {}",
                            p.name,
                            f.cell(),
                            p.log.display()
                        );
                    }
                }
            }
        }
        if !health.finalizing {
            let all = running.apis.len();
            bail!(
                "the devnet is not finalizing: {} of {all} validators are, and a block needs {} \
                 (more than two thirds)",
                health.finalizing_count(),
                all * 2 / 3 + 1
            );
        }
        Ok(())
    })
}

/// How far behind the ledger's last block, in ledger time, a node may be and still
/// follow: it reconciles each block within moments, whatever the block rate.
const FOLLOW_LAG_MAX_SECS: u64 = 30;

/// A devnet node process as its own health endpoint tells it.
#[derive(Default)]
struct NodeFollows {
    /// The last ledger height it reconciled; none when it did not answer.
    followed_height: Option<u64>,
    /// Whether its uptime reports reach the ledger (`/health`); none when it did not answer.
    reports_uptime: Option<bool>,
    /// Seconds since its last uptime report was final.
    last_report_secs: Option<u64>,
    /// Blocks finalized since the one it followed.
    blocks_behind: Option<u64>,
    /// Ledger time between the block it followed and the last one, seconds.
    lag_secs: Option<u64>,
}

impl NodeFollows {
    /// Following: its reports reach the ledger and it is at most moments behind.
    fn following(&self) -> bool {
        self.reports_uptime == Some(true) && self.lag_secs.is_some_and(|l| l <= FOLLOW_LAG_MAX_SECS)
    }

    /// `yes, at 794`, or what is wrong.
    fn cell(&self) -> String {
        let Some(height) = self.followed_height else {
            return "no answer".into();
        };
        if self.following() {
            return format!("yes, at {height}");
        }
        let mut why = Vec::new();
        match (self.lag_secs, self.blocks_behind) {
            (Some(lag), Some(blocks)) if lag > FOLLOW_LAG_MAX_SECS => {
                why.push(format!("{lag} s ({blocks} blocks) behind"));
            }
            (Some(_), _) => {}
            (None, _) if height == 0 => why.push("no block followed yet".into()),
            (None, _) => why.push("the validators did not say how far behind".into()),
        }
        match (self.reports_uptime, self.last_report_secs) {
            (Some(true), _) => {}
            (Some(false), Some(secs)) => why.push(format!("no uptime report for {secs} s")),
            (Some(false), None) => why.push("no uptime report yet".into()),
            (None, _) => why.push("its /health did not answer".into()),
        }
        format!("no, at {height}: {}", why.join(", "))
    }
}

/// Ask a devnet node's health endpoint at `url` how far it followed and whether its
/// uptime reports reach the ledger.
async fn node_follows(url: &str) -> NodeFollows {
    let mut follows = NodeFollows::default();
    let Ok(http) = reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()
    else {
        return follows;
    };
    use peergrid_client::types::api::node_routes;
    let status = async {
        let answer = http.get(format!("{url}{}", node_routes::STATUS)).send();
        answer.await?.json::<peergrid_node::health::Status>().await
    };
    // `/health` answers 503 with the same body when reports do not reach the ledger.
    let health = async {
        let answer = http.get(format!("{url}{}", node_routes::HEALTH)).send();
        answer.await?.json::<peergrid_node::health::Health>().await
    };
    let (status, health) = tokio::join!(status, health);
    if let Ok(status) = status {
        follows.followed_height = Some(status.report.followed_height);
    }
    if let Ok(health) = health {
        follows.reports_uptime = Some(health.ok);
        follows.last_report_secs = health.last_uptime_report_age_ms.map(|ms| ms / 1000);
    }
    follows
}

/// How far behind the ledger's last block each node's followed block is, in blocks and
/// ledger time (a fast chain makes many blocks a second, an idle one one a second).
async fn lags(ledger: &peergrid_client::Client, follows: &mut [NodeFollows]) {
    let Ok(last) = ledger.status().await else {
        return;
    };
    let heights: std::collections::BTreeSet<u64> = (follows.iter())
        .filter_map(|f| f.followed_height.filter(|h| *h > 0))
        .collect();
    // Each height once, all at once.
    let times: std::collections::HashMap<u64, u64> = futures::future::join_all(
        heights
            .into_iter()
            .map(|h| async move { ledger.block(h).await.ok().map(|b| (h, b.time_ms)) }),
    )
    .await
    .into_iter()
    .flatten()
    .collect();
    for f in follows.iter_mut() {
        if let Some((height, time_ms)) = f
            .followed_height
            .and_then(|h| times.get(&h).map(|t| (h, *t)))
        {
            f.blocks_behind = Some(last.height.saturating_sub(height));
            f.lag_secs = Some(last.data.time_ms.saturating_sub(time_ms) / 1000);
        }
    }
}

/// The ledger's id of each devnet node process (`node 0` is the devnet's first, not the
/// ledger's node 0): found by the account of its key. Empty when the ledger does not answer.
async fn devnet_node_ids(
    dir: &std::path::Path,
    apis: &[String],
) -> std::collections::HashMap<usize, peergrid_core::NodeId> {
    let client = peergrid_client::Client::new(apis.to_vec());
    let listed = tokio::time::timeout(Duration::from_secs(3), client.nodes(None)).await;
    let Ok(Ok((_, nodes))) = listed else {
        return Default::default();
    };
    (0..)
        .map_while(|i| {
            let key = peergrid_devnet::node_dir(dir, i).join("node-key.json");
            key.exists()
                .then(|| (i, peergrid_core::keys::Keypair::load(&key)))
        })
        .filter_map(|(i, key)| {
            let account = key.ok()?.account();
            let node = nodes.iter().find(|n| n.node.account == account)?;
            Some((i, node.node.id))
        })
        .collect()
}

/// The validators' table of a health report, then whether they agree on the state.
fn print_validators(health: &peergrid_devnet::Health) {
    outln!(
        "{:<26} {:>8} {:>6}  {:<10}  state root",
        "validator API",
        "height",
        "epoch",
        "state"
    );
    let number = |v: Option<u64>| v.map_or_else(|| "-".into(), |n| n.to_string());
    for v in &health.validators {
        let state = if v.finalizing {
            "finalizing"
        } else if v.error.is_some() {
            "down"
        } else {
            "stalled"
        };
        let root = v.root.map(|r| r.to_string()).unwrap_or_else(|| "-".into());
        outln!(
            "{:<26} {:>8} {:>6}  {:<10}  {}",
            v.api,
            number(v.height),
            number(v.epoch),
            state,
            &root[..16.min(root.len())],
        );
    }
    match &health.agreement {
        Some(a) if a.agree => outln!(
            "\nevery validator that answered has state root {} at height {}",
            a.roots
                .iter()
                .flatten()
                .next()
                .map(|r| r.to_string())
                .unwrap_or_default(),
            a.height
        ),
        Some(a) => {
            outln!("\nVALIDATORS DISAGREE at height {}:", a.height);
            for (v, root) in health.validators.iter().zip(&a.roots) {
                let root = root.map_or_else(|| "-".to_string(), |r| r.to_string());
                outln!("  {:<26} {root}", v.api);
            }
        }
        None => {}
    }
}

/// `peergrid validator status`: every validator of --ledger (or of the running devnet).
fn validator_status(globals: &Globals) -> anyhow::Result<()> {
    let apis = globals.ledger_urls()?;
    let ca = globals.ledger_ca_pem()?;
    crate::runtime()?.block_on(async {
        let health = peergrid_devnet::network_health(&apis, ca.as_deref())
            .await
            .context("--ledger-ca")?;
        if globals.json {
            output::json(&health)?;
        } else {
            print_validators(&health);
        }
        if !health.finalizing {
            bail!(
                "the chain is not finalizing: {} of {} validators are; `peergrid validator status` \
                 again in a few seconds, or look at the logs of those that are down",
                health.finalizing_count(),
                apis.len()
            );
        }
        if health.agreement.as_ref().is_some_and(|a| !a.agree) {
            bail!("the validators disagree on the state: see above");
        }
        Ok(())
    })
}

/// Run `bench`, a benchmark on its own devnet in `dir`, until it ends or Ctrl-C/SIGTERM;
/// then remove `dir` unless PEERGRID_BENCH_KEEP=1 asks to keep its data and logs, to look
/// into a slow or failed run. Stopped early, the bench's devnet is dropped, which stops it.
fn in_scratch_devnet<T>(
    dir: &std::path::Path,
    bench: impl std::future::Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    let result = crate::runtime()?.block_on(async {
        tokio::select! {
            r = bench => r,
            _ = crate::stop_requested() => Err(anyhow::anyhow!("the benchmark was stopped")),
        }
    });
    if std::env::var_os("PEERGRID_BENCH_KEEP").is_some() {
        eprintln!("kept the devnet's data and logs in {}", dir.display());
    } else {
        let _ = std::fs::remove_dir_all(dir);
    }
    result
}

fn chaos(globals: &Globals, b: &peergrid_devnet::chaos::ChaosBench) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("cannot find the peergrid executable")?;
    let dir = std::env::temp_dir().join(format!("peergrid-chaos-{}", std::process::id()));
    eprintln!(
        "4 validators and {} nodes on loopback, {} senders, faults for {:.1} min, seed {} …",
        b.nodes,
        b.senders,
        b.duration.as_secs_f64() / 60.0,
        b.seed
    );
    let report = in_scratch_devnet(&dir, peergrid_devnet::chaos::chaos(&exe, &dir, b))?;
    let failures = report.failures();
    if globals.json {
        output::json(&serde_json::json!({
            "seed": b.seed,
            "report": report,
            "failures": failures,
        }))?;
    } else {
        let r = &report;
        let mut rows = vec![
            vec!["faults for".into(), format!("{:.0} s", r.secs)],
            vec![
                "transfers sent / finalized".into(),
                format!("{} / {}", r.sent, r.finalized),
            ],
            vec![
                "validators killed (SIGKILL)".into(),
                r.validators_killed.to_string(),
            ],
            vec![
                "validators frozen (SIGSTOP)".into(),
                r.validators_frozen.to_string(),
            ],
            vec!["nodes killed (SIGKILL)".into(), r.nodes_killed.to_string()],
            vec!["restarts by the supervisor".into(), r.restarts.to_string()],
            vec![
                "longest gap between finalized blocks".into(),
                format!("{} ms", r.max_finality_gap_ms),
            ],
            vec![
                "state roots at the end".into(),
                format!(
                    "{} at height {}",
                    if r.roots_agree { "equal" } else { "DIFFERENT" },
                    r.height
                ),
            ],
            vec![
                "finalized transfers missing / twice".into(),
                format!("{} / {}", r.missing, r.duplicated),
            ],
            vec!["transfers refused".into(), r.refused.to_string()],
            vec![
                "supply identity".into(),
                if r.supply_conserved {
                    "holds".into()
                } else {
                    "BROKEN".to_string()
                },
            ],
        ];
        if let Some(a) = &r.app {
            rows.extend([
                vec![
                    format!("app requests answered ({} replicas)", a.replicas),
                    format!("{} ({} by the other replica)", a.answered, a.failed_over),
                ],
                vec![
                    "app requests neither replica answered".into(),
                    a.unanswered.to_string(),
                ],
                vec![
                    "app replicas down after the faults".into(),
                    a.down_after.to_string(),
                ],
            ]);
        }
        if let Some(st) = &r.storage {
            let schemes: Vec<String> = st
                .schemes
                .iter()
                .map(|(scheme, n)| format!("{n} as {scheme}"))
                .collect();
            rows.extend([
                vec![
                    format!("objects stored ({})", schemes.join(", ")),
                    format!("{} ({} puts failed)", st.stored, st.puts_failed),
                ],
                vec![
                    "reads during the faults".into(),
                    format!("{} ({} failed)", st.reads, st.reads_failed),
                ],
                vec![
                    "objects unreadable / different after".into(),
                    format!("{} / {}", st.unreadable, st.differ),
                ],
            ]);
        }
        output::table(&["WHAT", "FIGURE"], &rows);
    }
    if !failures.is_empty() {
        bail!(
            "chaos run (seed {}) failed: {}",
            b.seed,
            failures.join("; ")
        );
    }
    Ok(())
}

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Finality latency and finalized transfers per second of a 4-validator devnet on this machine.
    Ledger {
        /// Transfers to send.
        #[arg(long, default_value_t = 40_000)]
        txs: usize,
        /// Sending accounts.
        #[arg(long, default_value_t = 2_000)]
        accounts: usize,
        /// Offered load, transfers per second.
        #[arg(long, default_value_t = 10_000)]
        rate: usize,
        /// First port of the validators.
        #[arg(long, default_value_t = 9700)]
        base_port: u16,
        /// Seconds to watch the devnet idle first: CPU and disk per validator, blocks per
        /// second, and finality of lone transfers sent while it rests (0 skips).
        #[arg(long, default_value_t = 60)]
        idle_secs: u64,
    },
    /// Put and get of one object on the running devnet's storage, next to the in-memory
    /// pipeline (seal, erasure code, addresses) over the same bytes on one core.
    Storage {
        /// Object size.
        #[arg(long, default_value = "1GiB")]
        size: peergrid_core::capacity::Size,
        /// Erasure code K+M [default: from your storage nodes].
        #[arg(long)]
        scheme: Option<peergrid_storage::Scheme>,
    },
    /// Transfers under load, an app on two nodes answering requests, and with 3 nodes or
    /// more a storage user putting and reading objects, while validators (at most f at a time) and nodes (one at a time) are killed,
    /// frozen and restarted; then every validator's state root, each finalized transfer
    /// exactly once, the supply identity, and every stored object read back identical are
    /// checked. Starts its own devnet.
    Chaos {
        /// Minutes of faults.
        #[arg(long, default_value_t = 10.0)]
        minutes: f64,
        /// Accounts sending transfers, each one at a time.
        #[arg(long, default_value_t = 20)]
        senders: usize,
        /// Nodes to run and kill besides the four validators (3 or more: storage traffic too).
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        /// A `wasi:http` component deployed on two nodes and asked ten times a second
        /// throughout [default: examples/apps/hello/hello.wasm, if there].
        #[arg(long)]
        app: Option<std::path::PathBuf>,
        /// Seed of the fault schedule [default: from the clock; printed, to replay a run].
        #[arg(long)]
        seed: Option<u64>,
        /// First port of the devnet.
        #[arg(long, default_value_t = 9500)]
        base_port: u16,
    },
    /// Requests per second and p99 of the hello app on a running devnet's node, next to
    /// `wasmtime serve` on the same component; and deploy to first 200 OK.
    Compute(crate::bench_compute::ComputeBenchArgs),
}

pub fn bench(globals: &Globals, cmd: BenchCommand) -> anyhow::Result<()> {
    let cmd = match cmd {
        BenchCommand::Storage { size, scheme } => {
            return crate::store::bench(globals, size.bytes(), scheme);
        }
        BenchCommand::Compute(args) => return crate::bench_compute::bench(globals, args),
        BenchCommand::Chaos {
            minutes,
            senders,
            nodes,
            seed,
            base_port,
            app,
        } => {
            if !(minutes > 0.0 && minutes <= 24.0 * 60.0) {
                bail!("--minutes must be above 0 and at most a day, not {minutes}");
            }
            let app = match app {
                Some(path) if path.is_file() => Some(path),
                Some(path) => bail!("--app {}: no such file", path.display()),
                None => {
                    let hello = std::path::PathBuf::from("examples/apps/hello/hello.wasm");
                    if !hello.is_file() {
                        eprintln!(
                            "no app traffic: {} is not here (run from the repository's root or pass --app)",
                            hello.display()
                        );
                    }
                    hello.is_file().then_some(hello)
                }
            };
            let b = peergrid_devnet::chaos::ChaosBench {
                duration: Duration::from_secs_f64(minutes * 60.0),
                senders,
                nodes,
                seed: seed.unwrap_or_else(peergrid_devnet::chaos::clock_seed),
                base_port,
                app,
            };
            return chaos(globals, &b);
        }
        ledger => ledger,
    };
    let BenchCommand::Ledger {
        txs,
        accounts,
        rate,
        base_port,
        idle_secs,
    } = cmd
    else {
        return Ok(());
    };
    let exe = std::env::current_exe().context("cannot find the peergrid executable")?;
    let dir = std::env::temp_dir().join(format!("peergrid-bench-{}", std::process::id()));
    let b = peergrid_devnet::bench::LedgerBench {
        accounts,
        txs,
        rate,
        base_port,
        idle_secs,
        catch_up: true,
    };
    if idle_secs > 0 {
        eprintln!("watching the devnet idle for {idle_secs} s first …");
    }
    eprintln!(
        "4 validators on loopback, {txs} signed transfers from {accounts} accounts offered at {rate}/s …"
    );
    let report = in_scratch_devnet(&dir, peergrid_devnet::bench::ledger(&exe, &dir, &b))?;
    if globals.json {
        return output::json(&report);
    }
    outln!(
        "{:<48} {:>14} {:>30}",
        "benchmark",
        "figure",
        "baseline (same run)"
    );
    outln!(
        "{:<48} {:>11.0} ms {:>30}",
        "ledger::finality/p50 validators=4",
        report.latency_p50_ms,
        "target 300 ms"
    );
    outln!(
        "{:<48} {:>11.0} ms {:>30}",
        "ledger::finality/p99 validators=4",
        report.latency_p99_ms,
        ""
    );
    outln!(
        "{:<48} {:>12.0}/s {:>30}",
        "ledger::finalized_transfers validators=4",
        report.finalized_per_sec,
        format!(
            "apply alone {:.0}/s ({:.2}x)",
            report.apply_per_sec,
            report.finalized_per_sec / report.apply_per_sec
        )
    );
    if let Some(idle) = &report.idle {
        let max = |v: &[f64]| v.iter().copied().fold(f64::NAN, f64::max);
        outln!(
            "{:<48} {:>12.2}/s {:>30}",
            "ledger::idle_blocks validators=4",
            idle.blocks_per_sec,
            "target at most 1/s"
        );
        outln!(
            "{:<48} {:>12.2} % {:>30}",
            "ledger::idle_cpu/validator (max of 4)",
            max(&idle.cpu_percent),
            "target < 2 % of a core"
        );
        outln!(
            "{:<48} {:>14} {:>30}",
            "ledger::idle_disk/validator/day (max of 4)",
            peergrid_core::capacity::human_bytes(max(&idle.disk_bytes_per_day).max(0.0) as u64),
            "target < 50 MB (47.7 MiB)"
        );
        outln!(
            "{:<48} {:>14} {:>30}",
            "ledger::pruned_stores/validator (max of 4)",
            peergrid_core::capacity::human_bytes(
                idle.pruned_store_bytes.iter().copied().max().unwrap_or(0)
            ),
            "bounded: pruned past 256 views"
        );
        let keep = peergrid_chain::validator::ValidatorConfig::KEEP_BLOCKS_DEFAULT;
        outln!(
            "{:<48} {:>14} {:>30}",
            "ledger::kept_blocks/validator (max of 4)",
            peergrid_core::capacity::human_bytes(
                (max(&idle.kept_bytes_per_block).max(0.0) * keep as f64) as u64
            ),
            format!("bound: keep_blocks {keep}")
        );
        outln!(
            "{:<48} {:>11.0} ms {:>30}",
            "ledger::finality_after_rest/p50",
            idle.rested_latency_p50_ms,
            format!("target 300 ms (max {:.0} ms)", idle.rested_latency_max_ms)
        );
    }
    if let Some(c) = &report.catch_up {
        outln!(
            "{:<48} {:>12.0}/s {:>30}",
            "ledger::catch_up_blocks (empty data dir)",
            c.blocks_per_sec,
            format!("{} blocks in {:.1} s", c.blocks, c.secs)
        );
        outln!(
            "{:<48} {:>12.0}/s {:>30}",
            "ledger::catch_up_transfers (empty data dir)",
            c.transfers_per_sec,
            format!(
                "apply alone {:.0}/s ({:.2}x)",
                report.apply_per_sec,
                c.transfers_per_sec / report.apply_per_sec
            )
        );
    }
    outln!(
        "{} of {} transfers finalized",
        report.finalized,
        report.submitted
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_reads_as_words() {
        let a = peergrid_core::Keypair::from_seed([1; 32]).account();
        let text = event_text(&peergrid_ledger::Event::Transferred {
            from: a,
            to: a,
            amount: Amount(25_000_000),
        });
        assert_eq!(
            text,
            format!("transferred: amount 2.5 PGT, from {a}, to {a}")
        );
    }

    #[test]
    fn a_node_follows_while_it_reports_and_keeps_up_with_the_ledger() {
        let node =
            |height: u64, ok: Option<bool>, age: Option<u64>, lag: Option<u64>| NodeFollows {
                followed_height: Some(height),
                reports_uptime: ok,
                last_report_secs: age,
                blocks_behind: lag.map(|l| l * 2),
                lag_secs: lag,
            };
        let up = node(790, Some(true), Some(4), Some(2));
        assert!(up.following());
        assert_eq!(up.cell(), "yes, at 790");
        let behind = node(612, Some(false), Some(95), Some(91));
        assert!(!behind.following());
        assert_eq!(
            behind.cell(),
            "no, at 612: 91 s (182 blocks) behind, no uptime report for 95 s"
        );
        // Reports reach the ledger, but its view of the contracts is stale.
        let stale = node(700, Some(true), Some(2), Some(47));
        assert_eq!(stale.cell(), "no, at 700: 47 s (94 blocks) behind");
        let starting = node(0, Some(false), None, None);
        assert_eq!(
            starting.cell(),
            "no, at 0: no block followed yet, no uptime report yet"
        );
        let half = node(794, None, None, Some(0));
        assert!(!half.following());
        assert_eq!(half.cell(), "no, at 794: its /health did not answer");
        let unknown = node(794, Some(true), Some(1), None);
        assert!(!unknown.following(), "not known to follow");
        assert_eq!(
            unknown.cell(),
            "no, at 794: the validators did not say how far behind"
        );
        assert_eq!(NodeFollows::default().cell(), "no answer");
    }
}
