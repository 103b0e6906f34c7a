//! `peergrid genesis`: write a devnet genesis with its keys, and check genesis files.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use clap::Subcommand;
use peergrid_core::Keypair;
use peergrid_core::amount::TICKER;
use peergrid_ledger::{Devnet, Genesis};
use serde_json::json;

use crate::Globals;
use crate::output::{self, human_duration, usd};

#[derive(Subcommand)]
pub enum GenesisCommand {
    /// Write a devnet genesis and the keys of its validators, demo account and faucet.
    New {
        /// Genesis file to write.
        #[arg(long, default_value = "genesis.toml", value_name = "FILE")]
        out: PathBuf,
        /// Name of the chain; transactions for another chain are refused.
        #[arg(long, default_value = "peergrid-devnet")]
        chain_id: String,
        /// Number of validators.
        #[arg(long, default_value_t = 4)]
        validators: usize,
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
            keys_dir,
            force,
        } => {
            let keys_dir = keys_dir.unwrap_or_else(|| beside(&out, "keys"));
            new(globals, &out, &chain_id, validators, &keys_dir, force)
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

fn new(
    globals: &Globals,
    out: &Path,
    chain_id: &str,
    validators: usize,
    keys_dir: &Path,
    force: bool,
) -> anyhow::Result<()> {
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .context("the system clock is before 1970")?
        .as_millis();
    let now_ms = u64::try_from(now_ms).context("the system clock is past the year 500 million")?;
    let devnet = Devnet::generate(chain_id, validators, now_ms)?;
    devnet.genesis.check()?;

    let validator_files: Vec<PathBuf> = (0..validators)
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
    tracing::info!(file = %out.display(), keys = %keys_dir.display(), "wrote devnet genesis");

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
            "validators": devnet.validator_keys.iter().zip(&validator_files)
                .map(|(k, f)| key(k, f)).collect::<Vec<_>>(),
            "demo": demo,
            "faucet": key(&devnet.faucet, &faucet_file),
        }));
    }
    println!("Devnet genesis written.\n");
    output::rows(&[
        ("chain id", genesis.chain_id.clone()),
        ("genesis hash", genesis.hash().to_string()),
        ("file", out.display().to_string()),
        ("keys", keys_dir.display().to_string()),
        ("supply", format!("{} {TICKER}", genesis.supply())),
    ]);
    println!("\nValidators ({})", devnet.validator_keys.len());
    for (i, (key, file)) in devnet
        .validator_keys
        .iter()
        .zip(&validator_files)
        .enumerate()
    {
        println!("  {i:>3}  {}  {}", key.account(), file.display());
    }
    println!("\nDemo account (funded; it alone is the council)");
    output::rows(&[
        ("account", devnet.demo.account().to_string()),
        ("file", demo_file.display().to_string()),
    ]);
    println!("  backup phrase:\n{}", output::phrase_lines(&demo_phrase));
    println!("\nFaucet (funded; tools hand out tokens from it)");
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
    let secs = Duration::from_secs;
    let members = genesis.council.members.len();
    println!("{} is a valid genesis.\n", file.display());
    output::rows(&[
        ("chain id", genesis.chain_id.clone()),
        ("genesis hash", genesis.hash().to_string()),
        (
            "genesis time",
            format!("{} ms since the Unix epoch", genesis.genesis_time_ms),
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
    println!("\nParameters");
    output::rows(&[
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
        (
            "prices",
            format!(
                "CU {}, SU {}, IPv4 {}, name {} per month; traffic {} per GB",
                usd(p.pricing.cu_uusd_month),
                usd(p.pricing.su_uusd_month),
                usd(p.pricing.ipv4_uusd_month),
                usd(p.pricing.unique_name_uusd_month),
                usd(p.pricing.nu_uusd_per_gb)
            ),
        ),
        (
            "rewards",
            format!(
                "CU {}, SU {} per month; uptime at least {} ({} certified)",
                usd(p.farming.cu_uusd_month),
                usd(p.farming.su_uusd_month),
                permille(p.farming.sla_diy_permille),
                permille(p.farming.sla_certified_permille)
            ),
        ),
    ]);
    println!("\nValidators");
    for (i, v) in genesis.validators.iter().enumerate() {
        match &v.address {
            Some(address) => println!("  {i:>3}  {}  {address}", v.account),
            None => println!("  {i:>3}  {}", v.account),
        }
    }
    Ok(())
}

/// Thousandths as a percentage: `95%`, `98.5%`.
fn permille(value: u16) -> String {
    if value.is_multiple_of(10) {
        format!("{}%", value / 10)
    } else {
        format!("{}.{}%", value / 10, value % 10)
    }
}
