//! `peergrid genesis`: write a devnet genesis with its keys, and check genesis files.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use clap::Subcommand;
use peergrid_core::Keypair;
use peergrid_core::amount::TICKER;
use peergrid_core::tx::ValidatorEntry;
use peergrid_ledger::genesis::{GenesisBalance, GenesisValidator};
use peergrid_ledger::{Devnet, Genesis};
use serde_json::json;

use crate::Globals;
use crate::output::{self, human_duration, usd};

#[derive(Subcommand)]
pub enum GenesisCommand {
    /// Write a genesis and the keys of its demo account and faucet. Without --validator it
    /// also makes the validators' keys (one machine); with it, the validators are the
    /// operators' own keys at their addresses (a network of machines: docs/network.md).
    New {
        /// Genesis file to write.
        #[arg(long, default_value = "genesis.toml", value_name = "FILE")]
        out: PathBuf,
        /// Name of the chain; transactions for another chain are refused.
        #[arg(long, default_value = "peergrid-devnet")]
        chain_id: String,
        /// Number of validators whose keys are made here, when --validator is not given.
        #[arg(long, default_value_t = 4, conflicts_with = "validator")]
        validators: usize,
        /// A validator as ACCOUNT@IP:PORT: its key's account (`peergrid key new`) and the
        /// address other validators reach it at (repeatable, in order).
        #[arg(long, value_name = "ACCOUNT@IP:PORT")]
        validator: Vec<ValidatorEntry>,
        /// The port of each --validator's ledger API, on the same IP.
        #[arg(long, default_value_t = 8700, requires = "validator")]
        api_port: u16,
        /// A mesh bootstrap peer for nodes and clients, /ip4/…/tcp/…/p2p/<id> (repeatable).
        #[arg(long, value_name = "MULTIADDR")]
        mesh_bootstrap: Vec<String>,
        /// Fund an account at genesis, ACCOUNT=TOKENS (repeatable).
        #[arg(long, value_name = "ACCOUNT=TOKENS", value_parser = parse_fund)]
        fund: Vec<GenesisBalance>,
        /// Set a parameter under [params], NAME=VALUE (repeatable), like
        /// minting_period_secs=2630880; every value is checked as any genesis is.
        #[arg(long, value_name = "NAME=VALUE")]
        param: Vec<String>,
        /// Where to write the keys [default: keys/ beside the genesis file].
        #[arg(long, value_name = "DIR")]
        keys_dir: Option<PathBuf>,
        /// Replace existing genesis and key files.
        #[arg(long)]
        force: bool,
    },
    /// Check a genesis file against every rule and summarise it.
    Check {
        /// Genesis file to check.
        file: PathBuf,
    },
}

pub fn run(globals: &Globals, cmd: GenesisCommand) -> anyhow::Result<()> {
    match cmd {
        GenesisCommand::New {
            out,
            chain_id,
            validators,
            validator,
            api_port,
            mesh_bootstrap,
            fund,
            param,
            keys_dir,
            force,
        } => {
            let keys_dir = keys_dir.unwrap_or_else(|| beside(&out, "keys"));
            let network = Network {
                validators: validator,
                api_port,
                mesh_bootstrap,
                fund,
                params: param,
            };
            new(
                globals, &out, &chain_id, validators, network, &keys_dir, force,
            )
        }
        GenesisCommand::Check { file } => check(globals, &file),
    }
}

/// `name` in the directory that holds `file`.
fn beside(file: &Path, name: &str) -> PathBuf {
    match file.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.join(name),
        _ => PathBuf::from(name),
    }
}

/// What a genesis for a network of machines names beyond a devnet's.
struct Network {
    /// The operators' validators; none: make the keys here.
    validators: Vec<ValidatorEntry>,
    /// Their ledger APIs' port.
    api_port: u16,
    /// Mesh bootstrap peers.
    mesh_bootstrap: Vec<String>,
    /// Accounts funded besides the demo account and the faucet.
    fund: Vec<GenesisBalance>,
    /// `NAME=VALUE` parameters.
    params: Vec<String>,
}

/// `ACCOUNT=TOKENS`, whole or decimal tokens.
fn parse_fund(text: &str) -> Result<GenesisBalance, String> {
    let (account, tokens) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?}: expected ACCOUNT=TOKENS, like 12D3KooW…=1000"))?;
    Ok(GenesisBalance {
        account: account
            .parse()
            .map_err(|e| format!("{account:?} is not an account: {e}"))?,
        amount: tokens
            .parse()
            .map_err(|e| format!("{tokens:?} is not an amount of tokens: {e}"))?,
    })
}

fn new(
    globals: &Globals,
    out: &Path,
    chain_id: &str,
    validators: usize,
    network: Network,
    keys_dir: &Path,
    force: bool,
) -> anyhow::Result<()> {
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .context("the system clock is before 1970")?
        .as_millis();
    let now_ms = u64::try_from(now_ms).context("the system clock is past the year 500 million")?;
    let count = if network.validators.is_empty() {
        validators
    } else {
        network.validators.len()
    };
    let mut devnet = Devnet::generate(chain_id, count, now_ms)?;
    if !network.validators.is_empty() {
        // The operators keep their own keys: none is made here.
        devnet.validator_keys.clear();
        devnet.genesis.validators = network
            .validators
            .iter()
            .map(|v| {
                let host = v
                    .address
                    .rsplit_once(':')
                    .map_or(v.address.as_str(), |(host, _)| host);
                GenesisValidator {
                    account: v.account,
                    address: Some(v.address.clone()),
                    api: Some(format!("http://{host}:{}", network.api_port)),
                }
            })
            .collect();
    }
    devnet.genesis.mesh_bootstrap = network.mesh_bootstrap;
    devnet.genesis.balances.extend(network.fund);
    if !network.params.is_empty() {
        devnet.genesis = peergrid_devnet::with_params(&devnet.genesis, &network.params)?;
    }
    devnet.genesis.check_new()?;

    let validator_files: Vec<PathBuf> = (0..devnet.validator_keys.len())
        .map(|i| keys_dir.join(format!("validator-{i}.json")))
        .collect();
    let demo_file = keys_dir.join("demo.json");
    let faucet_file = keys_dir.join("faucet.json");
    if !force {
        // Check everything before writing anything, so a refusal leaves no half-written devnet.
        let targets = validator_files
            .iter()
            .chain([&demo_file, &faucet_file])
            .map(PathBuf::as_path)
            .chain([out]);
        let existing: Vec<String> = targets
            .filter(|p| p.exists())
            .map(|p| p.display().to_string())
            .collect();
        if !existing.is_empty() {
            bail!(
                "{} already exist{} (use --force to replace, after backing up any keys you need)",
                existing.join(", "),
                if existing.len() == 1 { "s" } else { "" }
            );
        }
    }
    let keys = devnet
        .validator_keys
        .iter()
        .zip(&validator_files)
        .chain([(&devnet.demo, &demo_file), (&devnet.faucet, &faucet_file)]);
    for (key, file) in keys {
        key.save(file, force)?;
    }
    // The genesis goes last: if it exists, so do the keys it names.
    write_public_atomically(out, devnet.genesis.to_toml().as_bytes(), force)?;
    tracing::info!(file = %out.display(), keys = %keys_dir.display(), "wrote genesis");

    let genesis = &devnet.genesis;
    let demo_phrase = devnet.demo.mnemonic();
    if globals.json {
        let key = |k: &Keypair, f: &Path| json!({ "account": k.account(), "file": f });
        let mut demo = key(&devnet.demo, &demo_file);
        demo["mnemonic"] = json!(demo_phrase.as_str());
        return output::json(&json!({
            "file": out,
            "chain_id": genesis.chain_id,
            "genesis_hash": genesis.hash(),
            "genesis_time_ms": genesis.genesis_time_ms,
            "supply": genesis.supply(),
            "keys_dir": keys_dir,
            "validators": genesis.validators.iter().enumerate().map(|(i, v)| json!({
                "account": v.account,
                "address": v.address,
                "api": v.api,
                "file": validator_files.get(i),
            })).collect::<Vec<_>>(),
            "mesh_bootstrap": genesis.mesh_bootstrap,
            "demo": demo,
            "faucet": key(&devnet.faucet, &faucet_file),
        }));
    }
    outln!("Genesis written.\n");
    output::rows(&[
        ("chain id", genesis.chain_id.clone()),
        ("genesis hash", genesis.hash().to_string()),
        ("file", out.display().to_string()),
        ("keys", keys_dir.display().to_string()),
        ("supply", format!("{} {TICKER}", genesis.supply())),
    ]);
    outln!("\nValidators ({})", genesis.validators.len());
    for (i, v) in genesis.validators.iter().enumerate() {
        match (validator_files.get(i), &v.address) {
            (Some(file), _) => outln!("  {i:>3}  {}  {}", v.account, file.display()),
            (None, Some(address)) => outln!(
                "  {i:>3}  {}  {address}  {}",
                v.account,
                v.api.as_deref().unwrap_or("-")
            ),
            (None, None) => outln!("  {i:>3}  {}", v.account),
        }
    }
    if !genesis.mesh_bootstrap.is_empty() {
        outln!("\nMesh bootstrap peers");
        for peer in &genesis.mesh_bootstrap {
            outln!("  {peer}");
        }
    }
    outln!("\nDemo account (funded; it alone is the council)");
    output::rows(&[
        ("account", devnet.demo.account().to_string()),
        ("file", demo_file.display().to_string()),
    ]);
    outln!("  backup phrase:\n{}", output::phrase_lines(&demo_phrase));
    outln!("\nFaucet (funded; tools hand out tokens from it)");
    output::rows(&[
        ("account", devnet.faucet.account().to_string()),
        ("file", faucet_file.display().to_string()),
    ]);
    Ok(())
}

/// Write a file others may read (0644), atomically; refuses to replace one unless `force`.
fn write_public_atomically(path: &Path, data: &[u8], force: bool) -> anyhow::Result<()> {
    let written = if force {
        peergrid_core::fs::write_atomic(path, data)
    } else {
        peergrid_core::fs::write_new_atomic(path, data)
    };
    match written {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => bail!(
            "{} already exists (use --force to replace it)",
            path.display()
        ),
        other => other.with_context(|| format!("cannot write {}", path.display()))?,
    }
    // Readable by everyone whatever the umask: a genesis is public.
    fs::set_permissions(path, fs::Permissions::from_mode(0o644))
        .with_context(|| format!("cannot make {} readable", path.display()))
}

fn check(globals: &Globals, file: &Path) -> anyhow::Result<()> {
    let genesis = Genesis::load(file)?;
    let p = &genesis.params;
    if globals.json {
        return output::json(&json!({
            "file": file,
            "chain_id": genesis.chain_id,
            "genesis_hash": genesis.hash(),
            "genesis_time_ms": genesis.genesis_time_ms,
            "supply": genesis.supply(),
            "accounts_funded": genesis.balances.len(),
            "validators": genesis.validators,
            "council": genesis.council,
            "foundation": genesis.foundation,
            "staking_pool": genesis.staking_pool,
            "params": p,
        }));
    }
    let members = genesis.council.members.len();
    outln!("{} is a valid genesis.\n", file.display());
    output::rows(&[
        ("chain id", genesis.chain_id.clone()),
        ("genesis hash", genesis.hash().to_string()),
        (
            "genesis time",
            format!(
                "{} ({} ms since the Unix epoch)",
                peergrid_core::utc(genesis.genesis_time_ms),
                genesis.genesis_time_ms
            ),
        ),
        (
            "supply",
            format!(
                "{} {TICKER} in {} accounts",
                genesis.supply(),
                genesis.balances.len()
            ),
        ),
        ("validators", genesis.validators.len().to_string()),
        (
            "epochs",
            format!(
                "{} blocks each; a validator set voted in takes over at the next",
                p.epoch_blocks
            ),
        ),
        (
            "council",
            format!(
                "{members} member{}, {} needed to pass a proposal",
                if members == 1 { "" } else { "s" },
                genesis.council.threshold
            ),
        ),
        ("foundation", genesis.foundation.to_string()),
        ("staking pool", genesis.staking_pool.to_string()),
    ]);
    outln!("\nParameters");
    output::rows(&param_rows(p));
    outln!("\nValidators");
    for (i, v) in genesis.validators.iter().enumerate() {
        match &v.address {
            Some(address) => outln!("  {i:>3}  {}  {address}", v.account),
            None => outln!("  {i:>3}  {}", v.account),
        }
    }
    Ok(())
}

/// A ledger's parameters as rows a person reads: fees, periods, the token price, prices and rates.
pub fn param_rows(p: &peergrid_ledger::Params) -> Vec<(&'static str, String)> {
    let secs = Duration::from_secs;
    vec![
        ("fee", format!("{} {TICKER} per byte", p.fee_per_byte)),
        (
            "uptime",
            format!(
                "every {}, timestamps within {} of ledger time",
                human_duration(secs(p.uptime_interval_secs)),
                human_duration(secs(p.uptime_drift_secs))
            ),
        ),
        (
            "standby",
            format!("up to {}", human_duration(secs(p.standby_max_secs))),
        ),
        (
            "billing",
            format!(
                "every {}, grace period {}",
                human_duration(secs(p.billing_interval_secs)),
                human_duration(secs(p.grace_period_secs))
            ),
        ),
        (
            "minting",
            format!(
                "every {}, clock skew up to {}",
                human_duration(secs(p.minting_period_secs)),
                human_duration(secs(p.clock_skew_max_secs))
            ),
        ),
        (
            "proposals",
            format!("open for {}", human_duration(secs(p.proposal_ttl_secs))),
        ),
        ("token price", usd(p.token_price_uusd)),
        ("prices", pricing_text(&p.pricing)),
        ("rewards", farming_text(&p.farming)),
    ]
}

/// A pricing policy in one line: monthly prices, traffic, and the discount levels.
pub fn pricing_text(p: &peergrid_core::policy::PricingPolicy) -> String {
    let discounts: Vec<String> = p
        .discounts
        .iter()
        .map(|d| {
            format!(
                "{} % from {}.{:03} months covered",
                d.percent,
                d.min_months_milli / 1000,
                d.min_months_milli % 1000
            )
        })
        .collect();
    format!(
        "CU {}, SU {}, IPv4 {}, name {} per month; traffic {} per GB; discounts {}",
        usd(p.cu_uusd_month),
        usd(p.su_uusd_month),
        usd(p.ipv4_uusd_month),
        usd(p.unique_name_uusd_month),
        usd(p.nu_uusd_per_gb),
        if discounts.is_empty() {
            "none".into()
        } else {
            discounts.join(", ")
        }
    )
}

/// A farming policy in one line: reward rates and the uptime they need.
pub fn farming_text(f: &peergrid_core::policy::FarmingPolicy) -> String {
    format!(
        "CU {}, SU {} per month, traffic {} per GB, public IP {} per hour, certified ×{} %; \
         uptime at least {} ({} certified)",
        usd(f.cu_uusd_month),
        usd(f.su_uusd_month),
        usd(f.nu_uusd_per_gb),
        usd(f.ip_uusd_hour),
        f.certified_multiplier_percent,
        permille(f.sla_diy_permille),
        permille(f.sla_certified_permille)
    )
}

/// Thousandths as a percentage: `95%`, `98.5%`.
fn permille(value: u16) -> String {
    if value.is_multiple_of(10) {
        format!("{}%", value / 10)
    } else {
        format!("{}.{}%", value / 10, value % 10)
    }
}
