//! `peergrid contract`, `peergrid bill`, `peergrid gov` and `peergrid farm rewards`: what
//! builders pay, what farmers earn, and how the council and farmers change the rules.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Subcommand;
use peergrid_client::{AtHeight, NodeStatus};
use peergrid_client::{
    Bill, BillStatus, Bills, Contract, ContractFilter, ContractState, Event, Proposal,
    ProposalStatus, RewardReceipt,
};
use peergrid_core::capacity::{Capacity, Size, human_bytes};
use peergrid_core::economics;
use peergrid_core::policy::{FarmingPolicy, PricingPolicy};
use peergrid_core::tx::{ContractSpec, GovAction};
use peergrid_core::{AccountId, Amount, ContractId, FarmId, Hash, NodeId, Payload};
use serde_json::json;

use crate::{Globals, output};

#[derive(Subcommand)]
pub enum ContractCommand {
    /// List contracts: yours, those on a node (--node), or someone's (--owner).
    #[command(visible_alias = "ls")]
    List {
        /// Whose contracts [default: yours, or anyone's with --node].
        #[arg(long)]
        owner: Option<AccountId>,
        /// Those on this node, whoever owns them (with --owner: only theirs).
        #[arg(long)]
        node: Option<NodeId>,
    },
    /// Show one contract.
    Show {
        /// The contract's id.
        contract: ContractId,
        /// Check the answer here: the contract's Merkle proof against the block's state root,
        /// and that root's certificate against the validator sets followed from genesis.
        #[arg(long)]
        prove: bool,
    },
    /// Create a contract, paid from your account: workloads on a node, a gateway name,
    /// storage on a node, or a whole node.
    Create {
        /// What the contract reserves.
        #[command(subcommand)]
        spec: CreateSpec,
    },
    /// Change a deployment contract you own: its deployment hash and what it reserves.
    /// What is not given stays as it is; the node runs the new deployment once it is
    /// sent (`peergrid app update` does both).
    Update {
        /// The contract's id.
        contract: ContractId,
        /// The new deployment file: its BLAKE3 becomes the contract's hash.
        #[arg(long, conflicts_with = "deployment_hash")]
        deployment: Option<PathBuf>,
        /// The new deployment's BLAKE3, in hex.
        #[arg(long)]
        deployment_hash: Option<Hash>,
        /// Cores reserved.
        #[arg(long)]
        cru: Option<u64>,
        /// Memory reserved, e.g. 2GiB.
        #[arg(long)]
        mru: Option<Size>,
        /// SSD reserved, e.g. 20GiB.
        #[arg(long)]
        sru: Option<Size>,
        /// HDD reserved, e.g. 1TB.
        #[arg(long)]
        hru: Option<Size>,
    },
    /// Cancel a contract you own: it is billed up to now and its resources are released.
    Cancel {
        /// The contract's id.
        contract: ContractId,
        /// Cancel a storage contract although its node holds your shards in it: they are
        /// deleted with it.
        #[arg(long)]
        force: bool,
    },
}

/// What a new contract reserves.
#[derive(Subcommand)]
pub enum CreateSpec {
    /// Workloads on one node; the node runs only the deployment whose BLAKE3 is given.
    Deployment {
        /// The node that runs it (`peergrid node list` shows free capacity).
        #[arg(long)]
        node: NodeId,
        /// The deployment file: its BLAKE3 is what the node will accept.
        #[arg(
            long,
            conflicts_with = "deployment_hash",
            required_unless_present = "deployment_hash"
        )]
        deployment: Option<PathBuf>,
        /// The deployment's BLAKE3, in hex, when the file is elsewhere.
        #[arg(long)]
        deployment_hash: Option<Hash>,
        /// Cores reserved.
        #[arg(long, default_value_t = 1)]
        cru: u64,
        /// Memory reserved, e.g. 2GiB.
        #[arg(long, default_value = "1GiB")]
        mru: Size,
        /// SSD reserved, e.g. 20GiB.
        #[arg(long, default_value = "0")]
        sru: Size,
        /// HDD reserved, e.g. 1TB.
        #[arg(long, default_value = "0")]
        hru: Size,
        /// Public IPv4 addresses reserved from the node's farm.
        #[arg(long, default_value_t = 0)]
        public_ips: u32,
    },
    /// A globally unique gateway name (`[a-z0-9-]{3,63}`).
    Name {
        /// The name.
        name: String,
    },
    /// Storage space on one node.
    Storage {
        /// The node that stores.
        #[arg(long)]
        node: NodeId,
        /// Space reserved, e.g. 100GiB.
        #[arg(long, value_parser = storage_bytes)]
        bytes: Size,
    },
    /// A whole node, for you alone.
    Rent {
        /// The node rented.
        #[arg(long)]
        node: NodeId,
    },
}

impl CreateSpec {
    /// The ledger's form of this contract.
    fn into_spec(self) -> anyhow::Result<ContractSpec> {
        Ok(match self {
            CreateSpec::Deployment {
                node,
                deployment,
                deployment_hash,
                cru,
                mru,
                sru,
                hru,
                public_ips,
            } => {
                let deployment_hash = match (deployment, deployment_hash) {
                    (_, Some(hash)) => hash,
                    (Some(file), None) => deployment_file_hash(&file)?,
                    (None, None) => {
                        anyhow::bail!("give --deployment FILE or --deployment-hash HEX")
                    }
                };
                ContractSpec::Deployment {
                    node,
                    deployment_hash,
                    resources: Capacity {
                        cru,
                        mru: mru.bytes(),
                        sru: sru.bytes(),
                        hru: hru.bytes(),
                    },
                    public_ips,
                }
            }
            CreateSpec::Name { name } => ContractSpec::Name { name },
            CreateSpec::Storage { node, bytes } => ContractSpec::Storage {
                node,
                bytes: bytes.bytes(),
            },
            CreateSpec::Rent { node } => ContractSpec::Rent { node },
        })
    }
}

/// `--bytes` of a storage contract: some space.
fn storage_bytes(text: &str) -> Result<Size, String> {
    let size: Size = text.parse()?;
    if size.bytes() == 0 {
        return Err(format!(
            "{text} reserves nothing; give the space, like 100GiB"
        ));
    }
    Ok(size)
}

/// `--usd` of a token price: a price the ledger can divide by.
fn token_price(text: &str) -> Result<peergrid_core::usd::Usd, String> {
    let usd: peergrid_core::usd::Usd = text.parse()?;
    if usd.0 == 0 {
        return Err(format!(
            "{text}: the token cannot be worth nothing; give its price in USD, like 0.05"
        ));
    }
    Ok(usd)
}

#[derive(Subcommand)]
pub enum BillCommand {
    /// Every bill of a contract, oldest first.
    History {
        /// The contract's id.
        contract: ContractId,
        /// Print every bill line by line, with the formula behind each number.
        #[arg(long)]
        explain: bool,
    },
}

#[derive(Subcommand)]
pub enum GovCommand {
    /// Propose a change (council members).
    Propose {
        #[command(subcommand)]
        action: ProposeAction,
        /// Why, for the voters.
        #[arg(long, default_value = "", global = true)]
        description: String,
    },
    /// Vote on an open proposal (council members, and farmers weighted by their nodes' capacity).
    #[command(group(clap::ArgGroup::new("vote").required(true).args(["approve", "reject"])))]
    Vote {
        /// The proposal.
        proposal: u64,
        /// Vote for it.
        #[arg(long)]
        approve: bool,
        /// Vote against it.
        #[arg(long)]
        reject: bool,
    },
    /// List proposals.
    #[command(visible_alias = "ls")]
    List,
    /// Show a proposal and its votes.
    Show {
        /// The proposal.
        proposal: u64,
    },
    /// Show the current epoch, its validator set and any set voted in for the next one.
    Validators,
    /// Show the parameters in force: fees, periods, token price, prices and reward rates.
    Params,
}

#[derive(Subcommand)]
pub enum ProposeAction {
    /// The token's price in USD, used to convert prices and rewards.
    SetTokenPrice {
        /// USD per token, like 0.05.
        #[arg(long, value_parser = token_price)]
        usd: peergrid_core::usd::Usd,
    },
    /// The fee per transaction byte, in tokens.
    SetFeePerByte {
        /// Tokens per byte, like 0.0000001.
        #[arg(long)]
        fee: Amount,
    },
    /// Replace the pricing policy with the one in a JSON or TOML file.
    SetPricing {
        /// The policy: its fields, or the [params.pricing] section of a genesis file (header included).
        #[arg(long)]
        file: PathBuf,
    },
    /// Replace the farming policy with the one in a JSON or TOML file.
    SetFarming {
        /// The policy: its fields, or the [params.farming] section of a genesis file (header included).
        #[arg(long)]
        file: PathBuf,
    },
    /// Certify (or revoke) a node's hardware.
    CertifyNode {
        /// The node.
        #[arg(long)]
        node: NodeId,
        /// Revoke instead.
        #[arg(long)]
        revoke: bool,
    },
    /// Certify (or revoke) a farm.
    CertifyFarm {
        /// The farm.
        #[arg(long)]
        farm: FarmId,
        /// Revoke instead.
        #[arg(long)]
        revoke: bool,
    },
    /// Replace the council.
    SetCouncil {
        /// A member (repeatable).
        #[arg(long = "member", required = true)]
        members: Vec<AccountId>,
        /// Approvals needed.
        #[arg(long)]
        threshold: u32,
    },
    /// Replace the validator set (takes effect at the next epoch boundary).
    SetValidators {
        /// A validator as ACCOUNT@IP:PORT, its consensus key and where validators reach it
        /// (repeatable; list every member of the new set).
        #[arg(long = "validator", required = true, value_name = "ACCOUNT@IP:PORT")]
        validators: Vec<peergrid_core::tx::ValidatorEntry>,
    },
}

/// A policy file, TOML or (by its extension) JSON, as the council member was handed it:
/// the policy's fields, or a genesis's `[params.SECTION]` copied with its header.
fn load_policy<T: serde::de::DeserializeOwned>(path: &PathBuf, section: &str) -> anyhow::Result<T> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let invalid = || {
        format!(
            "{} is not a valid policy (a policy names every field: `peergrid gov params --json` \
             shows those in force to copy from)",
            path.display()
        )
    };
    // Not text is the content's fault, not the file system's: say so.
    let text = std::str::from_utf8(&bytes)
        .map_err(|e| {
            anyhow::anyhow!(
                "not UTF-8 text (the byte at offset {} is not)",
                e.valid_up_to()
            )
        })
        .with_context(invalid)?;
    if path.extension().is_some_and(|e| e == "json") {
        let value: serde_json::Value = serde_json::from_str(text).with_context(invalid)?;
        let value = match value.get("params").and_then(|p| p.get(section)) {
            Some(inner) => inner.clone(),
            None => value,
        };
        serde_json::from_value(value).with_context(invalid)
    } else {
        let value: toml::Value = toml::from_str(text).with_context(invalid)?;
        let value = match value.get("params").and_then(|p| p.get(section)) {
            Some(inner) => inner.clone(),
            None => value,
        };
        value.try_into().with_context(invalid)
    }
}

/// What a contract in grace owes and when it ends: the unbilled time at today's prices, an
/// upper bound at those prices (the ledger takes off the owner's discount and any time the
/// node was down).
async fn grace_rows(
    client: &peergrid_client::Client,
    c: &Contract,
    since_ms: u64,
) -> anyhow::Result<Vec<(&'static str, String)>> {
    let status = client.status().await?.data;
    let params = &status.params;
    let ends_ms = since_ms.saturating_add(params.grace_period_secs.saturating_mul(1000));
    let node = match c.node {
        Some(id) => client.node(id).await?.map(|n| n.data.node),
        None => None,
    };
    // As the ledger prices it.
    let billable = c.billable(node.as_ref());
    let unbilled_ms = status.time_ms.saturating_sub(c.billed_until_ms);
    let owed_uusd = economics::cost_uusd(&billable, &params.pricing, unbilled_ms).saturating_add(
        economics::nu_cost_uusd(c.unbilled_nu_bytes, &params.pricing),
    );
    let tokens = economics::uusd_to_tokens(owed_uusd, params.token_price_uusd);
    Ok(vec![
        (
            "owes",
            format!(
                "at most {} ({tokens} PGT) at today's prices for {} unpaid so far, and more as \
                 time goes on",
                output::usd(owed_uusd),
                output::human_duration(Duration::from_millis(unbilled_ms))
            ),
        ),
        (
            "deleted",
            format!(
                "{} unless its owner can pay by then: top it up (`peergrid wallet transfer --to \
                 {} --amount …`) and the contract resumes at once",
                output::ago(ends_ms),
                c.owner
            ),
        ),
    ])
}

/// The contract's node, and whether it is down now (a live contract is not billed for
/// that time, and its workload does not run). Just its id when that cannot be asked.
async fn node_words(client: &peergrid_client::Client, c: &Contract) -> String {
    let Some(id) = c.node else {
        return "-".into();
    };
    if !c.is_live() {
        return id.to_string();
    }
    let view = match client.node(id).await {
        Ok(Some(view)) => view,
        Ok(None) => return format!("{id} (no longer on the ledger)"),
        Err(_) => return id.to_string(),
    };
    let what = match view.data.status {
        NodeStatus::Up => return id.to_string(),
        NodeStatus::Standby => "on standby",
        NodeStatus::Down => "down",
    };
    let Ok(status) = client.status().await else {
        return format!("{id} ({what})");
    };
    format!(
        "{id} ({what} since {}: no uptime report for two intervals; this contract is not billed \
         for that time)",
        output::ago(view.data.node.up_until_ms(&status.data.params))
    )
}

fn kind(c: &Contract) -> String {
    match &c.spec {
        ContractSpec::Deployment { .. } => "deployment".into(),
        ContractSpec::Name { name } => format!("name {name}"),
        ContractSpec::Storage { .. } => "storage".into(),
        ContractSpec::Rent { .. } => "rent".into(),
    }
}

fn state(c: &Contract) -> String {
    state_words(&c.state)
}

fn state_words(state: &ContractState) -> String {
    match *state {
        // "live", as `app status` says: "created" read as not started yet.
        ContractState::Created => "live".into(),
        ContractState::GracePeriod { since_ms } => format!("grace since {}", output::ago(since_ms)),
        ContractState::Deleted { reason, .. } => format!("deleted ({reason})"),
    }
}

pub fn contract(globals: &Globals, cmd: ContractCommand) -> anyhow::Result<()> {
    crate::runtime()?.block_on(async {
        let client = globals.client()?;
        match cmd {
            ContractCommand::List { owner, node } => {
                let owner: Option<AccountId> = match (owner, node) {
                    (Some(o), _) => Some(o),
                    (None, Some(_)) => None,
                    (None, None) => Some(globals.keypair()?.account()),
                };
                let (_, items) = client.contracts(ContractFilter { owner, node }).await?;
                if let Some(n) = node
                    && items.is_empty()
                    && client.node(n).await?.is_none()
                {
                    bail!("node {n} does not exist (`peergrid node list` shows the nodes)");
                }
                if globals.json {
                    return output::json(
                        &json!({ "owner": owner, "node": node, "contracts": items }),
                    );
                }
                // A live contract on a node that is not up is not running (nor billed).
                let resting: Vec<(NodeId, NodeStatus)> = match items.iter().any(|c| c.is_live()) {
                    true => (client.nodes(None).await.map(|(_, n)| n).unwrap_or_default())
                        .into_iter()
                        .filter(|n| n.status != NodeStatus::Up)
                        .map(|n| (n.node.id, n.status))
                        .collect(),
                    false => Vec::new(),
                };
                let node_cell = |c: &Contract| {
                    let Some(id) = c.node else {
                        return "-".to_string();
                    };
                    match resting.iter().find(|(n, _)| *n == id) {
                        Some((_, NodeStatus::Standby)) if c.is_live() => format!("{id} (standby)"),
                        Some(_) if c.is_live() => format!("{id} (down)"),
                        _ => id.to_string(),
                    }
                };
                let rows: Vec<Vec<String>> = items
                    .iter()
                    .map(|c| {
                        vec![
                            c.id.to_string(),
                            kind(c),
                            node_cell(c),
                            state(c),
                            c.reserved.to_string(),
                            output::ago(c.billed_until_ms),
                        ]
                    })
                    .collect();
                output::table(
                    &["ID", "KIND", "NODE", "STATE", "RESERVED", "BILLED UNTIL"],
                    &rows,
                );
                Ok(())
            }
            ContractCommand::Show { contract, prove } => {
                let (c, certified) = if prove {
                    let p = client.proven_contract(contract).await?;
                    let Some(data) = p.value else {
                        anyhow::bail!(
                            "there is no contract {contract}: proven absent at height {}",
                            p.height
                        );
                    };
                    let c = AtHeight {
                        height: p.height,
                        root: p.root,
                        data,
                        proof: None,
                    };
                    (c, Some(p.certified))
                } else {
                    let c = client.contract(contract).await?.with_context(|| {
                        format!("contract {contract} does not exist at the finalized height")
                    })?;
                    (c, None)
                };
                if globals.json {
                    return output::json(&json!({
                        "height": c.height, "contract": c.data,
                        "proof": certified.as_ref().map(output::proof_json),
                    }));
                }
                let (height, root) = (c.height, c.root);
                let c = c.data;
                let reserved = match c.spec {
                    ContractSpec::Rent { node } => format!("the whole of node {node} (rent)"),
                    _ => c.reserved.to_string(),
                };
                let mut rows = vec![
                    ("contract", c.id.to_string()),
                    ("kind", kind(&c)),
                    ("owner", c.owner.to_string()),
                    ("node", node_words(&client, &c).await),
                    ("reserved", reserved),
                    ("public IPs", c.public_ips.len().to_string()),
                    ("state", state(&c)),
                    ("created", output::ago(c.created_ms)),
                    ("billed until", output::ago(c.billed_until_ms)),
                ];
                if let ContractState::GracePeriod { since_ms } = c.state {
                    rows.extend(grace_rows(&client, &c, since_ms).await?);
                }
                if c.is_live() {
                    rows.push(("next bill", output::ago(c.next_bill_ms)));
                    rows.push(("unbilled traffic", human_bytes(c.unbilled_nu_bytes)));
                }
                if let Some(h) = c.deployment_hash() {
                    rows.push(("deployment", h.to_string()));
                }
                if let Some(certified) = &certified {
                    rows.push((
                        "proof",
                        format!("checked against state root {root} at height {height}"),
                    ));
                    rows.push(output::certified_row(certified));
                }
                output::rows(&rows);
                outln!("\nits bills: peergrid bill history {}", c.id);
                Ok(())
            }
            ContractCommand::Create { spec } => {
                let (hash, events) = globals
                    .send(Payload::CreateContract(spec.into_spec()?))
                    .await?;
                let id = events.iter().find_map(|e| match e {
                    Event::ContractCreated { contract, .. } => Some(*contract),
                    _ => None,
                });
                let Some(id) = id else {
                    anyhow::bail!(
                        "the ledger accepted the transaction but reported no new contract"
                    );
                };
                if globals.json {
                    return output::json(&json!({ "contract": id, "hash": hash, "events": events }));
                }
                outln!("contract {id} created; it is billed from now on");
                outln!("\nsee it:       peergrid contract show {id}");
                outln!("its bills:    peergrid bill history {id}");
                outln!("end it:       peergrid contract cancel {id}");
                Ok(())
            }
            ContractCommand::Update {
                contract,
                deployment,
                deployment_hash,
                cru,
                mru,
                sru,
                hru,
            } => {
                let current = client
                    .contract(contract)
                    .await?
                    .with_context(|| format!("there is no contract {contract}"))?
                    .data;
                let old_hash = current.deployment_hash().with_context(|| {
                    format!("contract {contract} is not a deployment contract; only those change")
                })?;
                let deployment_hash = match (deployment, deployment_hash) {
                    (_, Some(hash)) => hash,
                    (Some(file), None) => deployment_file_hash(&file)?,
                    (None, None) => old_hash,
                };
                let was = current.reserved;
                let resources = Capacity {
                    cru: cru.unwrap_or(was.cru),
                    mru: mru.map_or(was.mru, Size::bytes),
                    sru: sru.map_or(was.sru, Size::bytes),
                    hru: hru.map_or(was.hru, Size::bytes),
                };
                if deployment_hash == old_hash && resources == was {
                    anyhow::bail!(
                        "nothing to change: give --deployment, --deployment-hash, --cru, --mru, --sru or --hru"
                    );
                }
                let (hash, events) = globals
                    .send(Payload::UpdateContract {
                        contract,
                        deployment_hash,
                        resources,
                    })
                    .await?;
                if globals.json {
                    return output::json(&json!({ "contract": contract, "hash": hash, "events": events }));
                }
                outln!("contract {contract} updated: deployment {deployment_hash}, reserves {resources}");
                if deployment_hash != old_hash {
                    outln!(
                        "its node stops the old deployment; send the new one (`peergrid app update` does it for apps)"
                    );
                }
                Ok(())
            }
            ContractCommand::Cancel { contract, force } => {
                if !force {
                    refuse_to_drop_stored_shards(globals, contract).await?;
                }
                let (hash, events) = globals.send(Payload::CancelContract { contract }).await?;
                if globals.json {
                    return output::json(&json!({ "contract": contract, "hash": hash, "events": events }));
                }
                outln!("contract {contract} cancelled; its last bill and resources are settled");
                Ok(())
            }
        }
    })
}

/// Refuse to cancel a storage contract whose node holds shards of the owner's objects in
/// it: they go with it, and the objects lose a shard each (all of it, past their parity).
/// A node that does not answer (gone for good, the usual reason to cancel) does not stop it.
async fn refuse_to_drop_stored_shards(
    globals: &Globals,
    contract: ContractId,
) -> anyhow::Result<()> {
    let client = globals.client()?;
    let Some(c) = client.contract(contract).await? else {
        return Ok(());
    };
    let owner = globals.keypair()?.account();
    if !matches!(c.data.spec, ContractSpec::Storage { .. })
        || c.data.owner != owner
        || !c.data.is_live()
    {
        return Ok(());
    }
    let storage = crate::store::connect(globals).await?;
    let holding: Vec<_> = storage
        .holdings(owner)
        .await?
        .into_iter()
        .filter(|h| h.contract == contract)
        .collect();
    let held = match holding.first() {
        Some(h) => storage.held_for_objects(h).await,
        None => Ok(None),
    };
    storage.close().await;
    match (holding.first(), held?) {
        (Some(h), Some(bytes)) if bytes > 0 => anyhow::bail!(
            "contract {contract} holds {} of your objects' shards on node {}: cancelling deletes \
             them, and each object with a shard there loses one (more than its parity: the \
             object). Move them first: reserve on another node (`peergrid store reserve --size \
             SIZE --node ID`), cancel with --force, then run `peergrid store repair`, which \
             rebuilds them there; or pass --force if they may go",
            human_bytes(bytes),
            h.node
        ),
        (Some(h), None) => eprintln!(
            "node {} did not say what contract {contract} holds (down?): cancelling; `peergrid \
             store repair` rebuilds its shards on your other nodes",
            h.node
        ),
        _ => {}
    }
    Ok(())
}

pub fn bill(globals: &Globals, cmd: BillCommand) -> anyhow::Result<()> {
    let BillCommand::History { contract, explain } = cmd;
    crate::runtime()?.block_on(async {
        let client = globals.client()?;
        let Bills {
            items: bills,
            pruned,
            ..
        } = client.bills(contract, 0).await?.data;
        if globals.json {
            return output::json(
                &json!({ "contract": contract, "bills": bills, "pruned": pruned }),
            );
        }
        if let Some(p) = pruned {
            outln!(
                "{} older bills, {} PGT paid, until {}, are pruned from the ledger's state \
                 (their ContractBilled events stay in the blocks)\n",
                p.count,
                p.tokens,
                output::ago(p.until_ms)
            );
        }
        if explain && bills.is_empty() {
            outln!(
                "contract {contract} has no bills in the ledger's state yet: it is billed every \
                 billing interval (`peergrid gov params`)"
            );
            return Ok(());
        }
        if explain {
            let pricing = client.status().await.ok().map(|s| s.data.params.pricing);
            for b in &bills {
                outln!("{}", b.render_priced(pricing.as_ref()));
            }
            return Ok(());
        }
        let rows: Vec<Vec<String>> = bills
            .iter()
            .map(|b| {
                vec![
                    output::ago(b.from_ms),
                    period_text(b),
                    output::usd(b.resources_uusd + b.nu_uusd),
                    format!("{} %", b.discount.percent),
                    format!("{} PGT", b.tokens),
                    match b.status {
                        BillStatus::Paid => "paid".into(),
                        BillStatus::WrittenOff => "written off".into(),
                    },
                ]
            })
            .collect();
        output::table(
            &["FROM", "FOR", "PRICE", "DISCOUNT", "PAID", "STATUS"],
            &rows,
        );
        let kept: u64 = bills.iter().map(|b| b.tokens.0).sum();
        let (count, paid) = match pruned {
            Some(p) => (bills.len() as u64 + p.count, kept + p.tokens.0),
            None => (bills.len() as u64, kept),
        };
        outln!(
            "\n{count} bill{}, {} PGT paid in all; --explain shows every step",
            if count == 1 { "" } else { "s" },
            Amount(paid)
        );
        if let Some(c) = client.contract(contract).await?
            && let ContractState::GracePeriod { since_ms } = c.data.state
        {
            outln!(
                "unpaid since {}: the contract is in grace since {} (`peergrid contract show \
                 {contract}` says what it owes and when it ends)",
                output::ago(c.data.billed_until_ms),
                output::ago(since_ms)
            );
        }
        Ok(())
    })
}

/// What a chain's ledger rules mean for its users.
fn ledger_rules_text(rules: u64) -> String {
    match rules {
        0 => "0: every step of a bill rounds down to a µUSD (a chain made before rule \
              versions)"
            .into(),
        1 => "1: what a bill rounds off below a µUSD is carried to the contract's next bill".into(),
        2 => "2: as 1, and a stall of the ledger is not the down time of nodes that ran \
              through it"
            .into(),
        n => format!("{n}: newer than this peergrid knows; update it"),
    }
}

/// A bill's period, and the part of it its node was down (not billed).
fn period_text(b: &Bill) -> String {
    let period = output::human_duration(Duration::from_millis(b.to_ms.saturating_sub(b.from_ms)));
    match b.node_down_ms {
        0 => period,
        down => format!(
            "{period} ({} node down, not billed)",
            output::human_duration(Duration::from_millis(down))
        ),
    }
}

/// `peergrid farm rewards`: the receipts of a farm's nodes, every step written out.
pub async fn rewards(globals: &Globals, farm: FarmId, period: Option<u64>) -> anyhow::Result<()> {
    {
        let client = globals.client()?;
        // The newest receipt names the latest period minted (shown without --period), and
        // the answer the current period.
        let page = client.latest_receipts(farm, 1).await?.data;
        let shown = period.or(page.items.first().map(|r| r.period));
        // Every receipt of that period: a big farm has more than a page.
        let receipts: Vec<RewardReceipt> = match shown {
            Some(p) => client.receipts(farm, p).await?.data.items,
            None => Vec::new(),
        };
        if globals.json {
            return output::json(
                &json!({ "farm": farm, "receipts": receipts, "current_period": page.current_period }),
            );
        }
        if receipts.is_empty() {
            let (current, kept) = (page.current_period, page.kept_from_period);
            if client.nodes(Some(farm)).await?.1.is_empty() {
                outln!(
                    "farm {farm} has no nodes, so nothing is minted for it; a machine joins it with \
                     `peergrid node run --farm {farm}`"
                );
                return Ok(());
            }
            match period {
                Some(p) if p < kept => outln!(
                    "receipts of period {p} are pruned from the ledger's state (it keeps periods from {kept}); \
                     the blocks keep their RewardMinted events, and replaying them recomputes each receipt"
                ),
                Some(p) => outln!(
                    "no receipts for farm {farm} in period {p} (the current period is {current}, minted after it ends)"
                ),
                None if current == 0 => outln!(
                    "no rewards minted for farm {farm} yet; period 0 is running and is minted after it ends"
                ),
                None => outln!(
                    "no rewards minted for farm {farm} yet; period {} ended and is minted once its last \
                     uptime reports are in (two report intervals after its end, more after a stall of \
                     the ledger; a farm with no node in it gets nothing), and period {current} is running",
                    current - 1
                ),
            }
            return Ok(());
        }
        for r in &receipts {
            outln!("{}", r.render());
        }
        let total: u64 = receipts.iter().map(|r| r.tokens.0).sum();
        outln!(
            "farm {farm}, period {}: {} PGT to the payout account",
            receipts[0].period,
            Amount(total)
        );
        Ok(())
    }
}

/// `peergrid farm income`: the farm's share of every bill the ledger still keeps of the
/// contracts on its nodes, per node.
pub async fn income(globals: &Globals, farm: &str) -> anyhow::Result<()> {
    use futures::{StreamExt, TryStreamExt};
    let client = globals.client()?;
    let f = client.farm(farm).await?.data;
    let (_, nodes) = client.nodes(Some(f.id)).await?;
    let mut contracts = Vec::new();
    for n in &nodes {
        let filter = ContractFilter {
            owner: None,
            node: Some(n.node.id),
        };
        contracts.extend(client.contracts(filter).await?.1);
    }
    // A node keeps every contract it ever had: their bills are asked for a few at a time.
    let kept: Vec<(Contract, Bills)> = futures::stream::iter(contracts)
        .map(|c| {
            let client = &client;
            async move {
                let bills = client.bills(c.id, 0).await?.data;
                anyhow::Ok((c, bills))
            }
        })
        .buffer_unordered(8)
        .try_collect()
        .await?;
    let (mut total, mut pruned) = (Amount::ZERO, 0u64);
    // Where the shares went, in the order first paid: a payout changed since is another.
    let mut payouts: Vec<(AccountId, Amount)> = Vec::new();
    let mut rows = Vec::new();
    let mut per_node = Vec::new();
    for n in &nodes {
        let id = n.node.id;
        let on_node = kept.iter().filter(|(c, _)| c.node == Some(id));
        let (mut live, mut bills, mut paid) = (0usize, 0u64, Amount::ZERO);
        for (c, kept) in on_node {
            live += usize::from(c.is_live());
            pruned += kept.pruned.map_or(0, |p| p.count);
            for b in kept.items.iter().filter(|b| b.node == Some(id)) {
                bills += 1;
                if let Some(to) = b.farmer_payout {
                    paid = paid.saturating_add(b.split.farmer);
                    match payouts.iter_mut().find(|(a, _)| *a == to) {
                        Some((_, sum)) => *sum = sum.saturating_add(b.split.farmer),
                        None => payouts.push((to, b.split.farmer)),
                    }
                }
            }
        }
        total = total.saturating_add(paid);
        per_node.push(json!({
            "node": id, "live_contracts": live, "bills": bills, "tokens": paid,
        }));
        rows.push(vec![
            id.to_string(),
            live.to_string(),
            bills.to_string(),
            format!("{paid} PGT"),
        ]);
    }
    if globals.json {
        return output::json(&json!({
            "farm": f.id, "nodes": per_node, "tokens": total, "pruned_bills": pruned,
            "payouts": payouts.iter().map(|(a, t)| json!({ "account": a, "tokens": t })).collect::<Vec<_>>(),
        }));
    }
    if nodes.is_empty() {
        outln!(
            "farm {} has no nodes, so no contract pays it; a machine joins it with `peergrid \
             node run --farm {}`",
            f.id,
            f.id
        );
        return Ok(());
    }
    output::table(
        &["NODE", "LIVE CONTRACTS", "BILLS KEPT", "PAID TO THE FARM"],
        &rows,
    );
    let to = match payouts.as_slice() {
        [] => String::new(),
        [(one, _)] => format!(" to {one}"),
        many => {
            let each: Vec<String> = many
                .iter()
                .map(|(a, t)| format!("{t} PGT to {a}"))
                .collect();
            format!(" ({}: its payout changed)", each.join(", "))
        }
    };
    outln!(
        "\nfarm {} ({}): {total} PGT{to}, its share of the bills the ledger keeps",
        f.id,
        f.name
    );
    if pruned > 0 {
        outln!("{pruned} older bills left the ledger's state after their retention: not counted");
    }
    outln!("its minted rewards: peergrid farm rewards {}", f.id);
    Ok(())
}

fn status_text(p: &Proposal) -> String {
    match p.status {
        ProposalStatus::Open => format!("open, expires {}", output::ago(p.expires_ms)),
        closed => closed_text(closed),
    }
}

fn closed_text(status: ProposalStatus) -> String {
    match status {
        ProposalStatus::Open => "open".into(),
        ProposalStatus::Executed { at_ms } => format!("executed {}", output::ago(at_ms)),
        ProposalStatus::Rejected { at_ms } => format!("rejected {}", output::ago(at_ms)),
        ProposalStatus::Expired { .. } => "expired".into(),
    }
}

/// A proposal's action for a list: policies by name, `gov show` gives their values.
fn action_label(a: &GovAction) -> String {
    match a {
        GovAction::SetPricingPolicy(_) => "new pricing policy".into(),
        GovAction::SetFarmingPolicy(_) => "new farming policy".into(),
        other => action_text(other),
    }
}

fn action_text(a: &GovAction) -> String {
    match a {
        GovAction::SetTokenPrice { uusd } => format!("token price {}", output::usd(*uusd)),
        GovAction::SetFeePerByte { fee } => format!("fee {fee} PGT per byte"),
        GovAction::SetPricingPolicy(p) => {
            format!("pricing: {}", crate::genesis::pricing_text(p))
        }
        GovAction::SetFarmingPolicy(f) => {
            format!("farming: {}", crate::genesis::farming_text(f))
        }
        GovAction::SetNodeCertified { node, certified } => {
            format!("node {node} certified: {certified}")
        }
        GovAction::SetFarmCertified { farm, certified } => {
            format!("farm {farm} certified: {certified}")
        }
        GovAction::SetCouncil { members, threshold } => {
            format!("council of {} (threshold {threshold})", members.len())
        }
        GovAction::SetValidators { validators } => {
            format!(
                "{} validators from the next epoch boundary",
                validators.len()
            )
        }
    }
}

pub fn gov(globals: &Globals, cmd: GovCommand) -> anyhow::Result<()> {
    crate::runtime()?.block_on(async {
        let client = globals.client()?;
        match cmd {
            GovCommand::Propose {
                action,
                description,
            } => {
                let action = match action {
                    ProposeAction::SetTokenPrice { usd } => GovAction::SetTokenPrice {
                        uusd: usd.0,
                    },
                    ProposeAction::SetFeePerByte { fee } => {
                        GovAction::SetFeePerByte { fee }
                    }
                    ProposeAction::SetPricing { file } => {
                        let p: PricingPolicy = load_policy(&file, "pricing")?;
                        p.check()
                            .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
                        GovAction::SetPricingPolicy(p)
                    }
                    ProposeAction::SetFarming { file } => {
                        let p: FarmingPolicy = load_policy(&file, "farming")?;
                        p.check()
                            .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
                        GovAction::SetFarmingPolicy(p)
                    }
                    ProposeAction::CertifyNode { node, revoke } => GovAction::SetNodeCertified {
                        node,
                        certified: !revoke,
                    },
                    ProposeAction::CertifyFarm { farm, revoke } => GovAction::SetFarmCertified {
                        farm,
                        certified: !revoke,
                    },
                    ProposeAction::SetCouncil { members, threshold } => GovAction::SetCouncil {
                        members,
                        threshold,
                    },
                    ProposeAction::SetValidators { validators } => GovAction::SetValidators {
                        validators,
                    },
                };
                // A vote that would change nothing wastes the council's time.
                let params = client.status().await?.data.params;
                let unchanged = match &action {
                    GovAction::SetTokenPrice { uusd } => *uusd == params.token_price_uusd,
                    GovAction::SetFeePerByte { fee } => *fee == params.fee_per_byte,
                    GovAction::SetPricingPolicy(p) => *p == params.pricing,
                    GovAction::SetFarmingPolicy(f) => *f == params.farming,
                    _ => false,
                };
                if unchanged {
                    bail!(
                        "that is already in force (`peergrid gov params` shows the parameters): \
                         nothing to propose"
                    );
                }
                let (hash, events) = globals
                    .send(Payload::Propose {
                        action,
                        description,
                    })
                    .await?;
                let id = events.iter().find_map(|e| match e {
                    peergrid_ledger::Event::ProposalCreated { proposal, .. } => Some(*proposal),
                    _ => None,
                });
                if globals.json {
                    return output::json(&json!({ "proposal": id, "hash": hash, "events": events }));
                }
                let closed = events.iter().find_map(|e| match e {
                    peergrid_ledger::Event::ProposalClosed { status, .. } => Some(*status),
                    _ => None,
                });
                match (id, closed) {
                    (Some(id), Some(status)) => {
                        outln!("proposal {id}: {}", closed_text(status));
                    }
                    (Some(id), None) => outln!(
                        "proposal {id} is open with your approval counted; `peergrid gov show \
                         {id}` says what it still needs. Council members and farmers vote with \
                         `peergrid gov vote {id} --approve` (or --reject)"
                    ),
                    (None, _) => outln!("proposed"),
                }
                Ok(())
            }
            GovCommand::Vote {
                proposal,
                approve,
                reject,
            } => {
                let approve = approve && !reject;
                let (hash, events) = globals.send(Payload::Vote { proposal, approve }).await?;
                if globals.json {
                    return output::json(&json!({ "proposal": proposal, "hash": hash, "events": events }));
                }
                let closed = events.iter().find_map(|e| match e {
                    peergrid_ledger::Event::ProposalClosed { status, .. } => Some(*status),
                    _ => None,
                });
                outln!(
                    "voted {} proposal {proposal}",
                    if approve { "for" } else { "against" }
                );
                if let Some(status) = closed {
                    outln!("the proposal is closed: {}", closed_text(status));
                }
                Ok(())
            }
            GovCommand::Validators => {
                let status = client.status().await?;
                let d = &status.data;
                if globals.json {
                    return output::json(&json!({
                        "height": status.height,
                        "epoch": d.epoch,
                        "epoch_blocks": d.epoch_blocks,
                        "next_epoch_height": d.next_epoch_height,
                        "validator_set": d.validator_set,
                        "pending_validators": d.pending_validators,
                    }));
                }
                outln!(
                    "epoch {} (blocks of {}; the next starts at height {}), at height {}",
                    d.epoch, d.epoch_blocks, d.next_epoch_height, status.height
                );
                let Some(set) = &d.validator_set else {
                    anyhow::bail!(
                        "the validator answered no validator set for epoch {}: is it older than \
                         this peergrid?",
                        d.epoch
                    );
                };
                outln!(
                    "validator set in force since epoch {} (height {}):",
                    set.epoch, set.first_height
                );
                let rows: Vec<Vec<String>> = set
                    .members
                    .iter()
                    .map(|m| {
                        vec![
                            m.account.to_string(),
                            m.address
                                .clone()
                                .unwrap_or_else(|| "(genesis file)".into()),
                        ]
                    })
                    .collect();
                output::table(&["ACCOUNT", "ADDRESS"], &rows);
                match &d.pending_validators {
                    Some(pending) => {
                        outln!("voted in, taking over at the next epoch:");
                        let rows: Vec<Vec<String>> = pending
                            .iter()
                            .map(|m| vec![m.account.to_string(), m.address.clone()])
                            .collect();
                        output::table(&["ACCOUNT", "ADDRESS"], &rows);
                    }
                    None => outln!("no set voted in for the next epoch"),
                }
                Ok(())
            }
            GovCommand::List => {
                let (height, proposals) = client.proposals().await?;
                if globals.json {
                    return output::json(&json!({ "height": height, "proposals": proposals }));
                }
                let rows: Vec<Vec<String>> = proposals
                    .iter()
                    .map(|p| {
                        vec![
                            p.id.to_string(),
                            action_label(&p.action),
                            format!("{}/{}", p.approvals.len(), p.rejections.len()),
                            format!(
                                "{}/{}",
                                units(p.farmer_weight_for),
                                units(p.farmer_weight_against)
                            ),
                            status_text(p),
                        ]
                    })
                    .collect();
                output::table(
                    &[
                        "ID",
                        "ACTION",
                        "COUNCIL FOR/AGAINST",
                        "FARMERS FOR/AGAINST",
                        "STATUS",
                    ],
                    &rows,
                );
                Ok(())
            }
            GovCommand::Params => {
                let status = client.status().await?;
                let council = status.data.council.clone();
                if globals.json {
                    return output::json(&json!({
                        "height": status.height, "params": status.data.params, "council": council,
                        "ledger_rules": status.data.ledger_rules,
                    }));
                }
                let mut rows = crate::genesis::param_rows(&status.data.params);
                rows.push(("ledger rules", ledger_rules_text(status.data.ledger_rules)));
                output::rows(&rows);
                if let Some(c) = &council {
                    let members: Vec<String> = c.members.iter().map(|m| m.to_string()).collect();
                    outln!(
                        "\ncouncil: a proposal passes with {} of these {} members' approvals and \
                         at least as much farmer weight for it as against (`peergrid gov show` \
                         says what one still needs):\n  {}",
                        c.threshold,
                        c.members.len(),
                        members.join("\n  ")
                    );
                }
                outln!(
                    "\nin force at height {}; the council proposes changes (`peergrid gov propose`)",
                    status.height
                );
                Ok(())
            }
            GovCommand::Show { proposal } => {
                let p = client.proposal(proposal).await?;
                let votes = client.votes(proposal).await?;
                if globals.json {
                    return output::json(&json!({ "proposal": p.data, "votes": votes.data }));
                }
                let p = p.data;
                let params = client.status().await?.data.params;
                let now = match &p.action {
                    GovAction::SetTokenPrice { .. } => Some(output::usd(params.token_price_uusd)),
                    GovAction::SetFeePerByte { .. } => {
                        Some(format!("{} PGT per byte", params.fee_per_byte))
                    }
                    GovAction::SetPricingPolicy(_) => {
                        Some(crate::genesis::pricing_text(&params.pricing))
                    }
                    GovAction::SetFarmingPolicy(_) => {
                        Some(crate::genesis::farming_text(&params.farming))
                    }
                    _ => None,
                };
                let mut rows = vec![
                    ("proposal", p.id.to_string()),
                    ("action", action_text(&p.action)),
                ];
                if let Some(now) = now {
                    rows.push(("in force now", now));
                }
                rows.extend([
                    ("description", p.description.clone()),
                    ("proposer", p.proposer.to_string()),
                    ("status", status_text(&p)),
                    (
                        "council",
                        format!("{} for, {} against", p.approvals.len(), p.rejections.len()),
                    ),
                    (
                        "farmers",
                        format!(
                            "{} for, {} against (2·CU + SU of their nodes), {} voted",
                            units(p.farmer_weight_for),
                            units(p.farmer_weight_against),
                            p.farmer_voters
                        ),
                    ),
                ]);
                output::rows(&rows);
                if p.status == ProposalStatus::Open {
                    outln!(
                        "\nit passes once the council's approvals reach the threshold and farmers' weight for is at least\n\
                         their weight against; it closes as soon as votes still to come cannot change that, else at expiry"
                    );
                }
                Ok(())
            }
        }
    })
}

/// Millionths as a decimal.
fn units(micro: u64) -> String {
    let whole = micro / 1_000_000;
    let frac = micro % 1_000_000;
    if frac == 0 {
        whole.to_string()
    } else {
        format!("{whole}.{}", format!("{frac:06}").trim_end_matches('0'))
    }
}

/// The BLAKE3 of a deployment file, once it is known to be one: a contract whose hash no
/// deployment has reserves capacity that no node can ever use.
fn deployment_file_hash(file: &std::path::Path) -> anyhow::Result<Hash> {
    let bytes = std::fs::read(file)
        .with_context(|| format!("cannot read the deployment file {}", file.display()))?;
    if peergrid_compute::Deployment::decode(&bytes).is_err() {
        if bytes.starts_with(b"\0asm") {
            anyhow::bail!(
                "{} is a WebAssembly component, not a deployment: `peergrid deploy {}` makes its deployment and contract",
                file.display(),
                file.display()
            );
        }
        // The decoder's words are about versions a node reads; a file that was never a
        // deployment needs the command that makes one.
        anyhow::bail!(
            "{} is not a deployment: `peergrid deploy APP.wasm` makes one and its contract",
            file.display()
        );
    }
    Ok(Hash::of(&bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_policy_reads_as_its_fields_or_as_a_genesis_section() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fields = "cu_uusd_month = 44000000\nsu_uusd_month = 14000000\n\
                      ipv4_uusd_month = 4000000\nunique_name_uusd_month = 1000000\n\
                      nu_uusd_per_gb = 50000\n";
        let discount = "min_months_milli = 1500\npercent = 20\n";
        let plain = dir.path().join("plain.toml");
        std::fs::write(&plain, format!("{fields}\n[[discounts]]\n{discount}")).expect("write");
        let section = dir.path().join("section.toml");
        std::fs::write(
            &section,
            format!("[params.pricing]\n{fields}\n[[params.pricing.discounts]]\n{discount}"),
        )
        .expect("write");
        let a: PricingPolicy = load_policy(&plain, "pricing").expect("plain");
        let b: PricingPolicy = load_policy(&section, "pricing").expect("section");
        assert_eq!(a, b);
        assert_eq!(a.cu_uusd_month, 44_000_000);
        assert_eq!(a.discounts.len(), 1);
        let json = dir.path().join("policy.json");
        std::fs::write(
            &json,
            serde_json::to_string(&json!({ "params": { "pricing": a } })).expect("json"),
        )
        .expect("write");
        assert_eq!(
            load_policy::<PricingPolicy>(&json, "pricing").expect("json"),
            b
        );
    }

    #[test]
    fn contract_states_print_in_words() {
        use peergrid_ledger::DeleteReason;
        let deleted = |reason| ContractState::Deleted { reason, at_ms: 0 };
        assert_eq!(
            state_words(&deleted(DeleteReason::OutOfFunds)),
            "deleted (out of funds)"
        );
        assert_eq!(
            state_words(&deleted(DeleteReason::CanceledByOwner)),
            "deleted (cancelled by its owner)"
        );
        assert_eq!(state_words(&ContractState::Created), "live");
    }

    #[test]
    fn weights_print_as_decimals() {
        assert_eq!(units(2_500_000), "2.5");
        assert_eq!(units(3_000_000), "3");
        assert_eq!(units(1), "0.000001");
    }
}
