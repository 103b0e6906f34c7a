//! Genesis: the chain's first state and every economic parameter, read from TOML.

use std::path::Path;

use serde::{Deserialize, Serialize};

use peergrid_core::policy::{FarmingPolicy, PricingPolicy};
use peergrid_core::tx::{CHAIN_ID_BYTES_MAX, COUNCIL_MAX, VALIDATORS_MAX};
use peergrid_core::{AccountId, Amount, Hash, Keypair};

/// Economic and timing parameters; every one is set at genesis and some can be changed by governance.
#[derive(
    Clone,
    PartialEq,
    Eq,
    Debug,
    Serialize,
    Deserialize,
    borsh::BorshSerialize,
    borsh::BorshDeserialize,
)]
pub struct Params {
    /// Fee per byte of encoded transaction, burned.
    pub fee_per_byte: Amount,
    /// How often nodes report uptime.
    pub uptime_interval_secs: u64,
    /// How far an uptime report's timestamp may be from ledger time.
    pub uptime_drift_secs: u64,
    /// How long a node switched off by its farmer stays "standby" rather than "down".
    pub standby_max_secs: u64,
    /// How often contracts are billed.
    pub billing_interval_secs: u64,
    /// How long an unpaid contract stays in grace before deletion.
    pub grace_period_secs: u64,
    /// Length of a minting period.
    pub minting_period_secs: u64,
    /// How far a node's clock and uptime counter may drift apart over one boot before its
    /// period is a violation (see [`crate::minting`]); at least twice `uptime_drift_secs`.
    pub clock_skew_max_secs: u64,
    /// How long a governance proposal stays open.
    pub proposal_ttl_secs: u64,
    /// The token's price in µUSD, for converting USD prices and rewards.
    pub token_price_uusd: u64,
    /// What builders pay.
    pub pricing: PricingPolicy,
    /// What farmers earn.
    pub farming: FarmingPolicy,
    /// Blocks per epoch: a validator set voted in takes over at the next epoch's first block.
    /// Fixed for the chain's life, since every validator derives epochs from heights with it.
    #[serde(default = "default_epoch_blocks")]
    pub epoch_blocks: u64,
    /// Longest rest between blocks while no transaction waits, in ms: an idle chain makes
    /// one empty block this often instead of as many as consensus allows, and a leader waits
    /// this much longer for a proposal. Zero never rests.
    #[serde(default = "default_idle_block_ms")]
    pub idle_block_ms: u64,
}

/// Shortest epoch: an epoch must hold a block besides the boundary its engine starts from.
pub const EPOCH_BLOCKS_MIN: u64 = 2;
/// Longest epoch: far beyond any chain's life at a block a second, and small enough that
/// every epoch's first and last heights fit in a `u64`.
pub const EPOCH_BLOCKS_MAX: u64 = 1 << 40;
/// Blocks per epoch in production: under three hours at an idle chain's block a second, less
/// under load, so a vote takes effect within hours without engines restarting often.
pub const EPOCH_BLOCKS_DEFAULT: u64 = 10_000;

fn default_epoch_blocks() -> u64 {
    EPOCH_BLOCKS_DEFAULT
}

/// An idle chain's block interval unless the genesis says otherwise: what a follower's
/// ledger time lags behind at rest, against a few dozen empty blocks a second without it.
pub const IDLE_BLOCK_MS_DEFAULT: u64 = 1_000;
/// Longest rest: each ms is also added to how long validators wait for a silent leader.
pub const IDLE_BLOCK_MS_MAX: u64 = 10_000;

fn default_idle_block_ms() -> u64 {
    IDLE_BLOCK_MS_DEFAULT
}

impl Params {
    /// The production defaults (ThreeFold Grid v3 figures).
    pub fn production() -> Self {
        Params {
            fee_per_byte: Amount(10),
            uptime_interval_secs: 40 * 60,
            uptime_drift_secs: 60,
            standby_max_secs: 24 * 3600,
            billing_interval_secs: 3600,
            grace_period_secs: 14 * 24 * 3600,
            minting_period_secs: 2_630_880,
            clock_skew_max_secs: 120,
            proposal_ttl_secs: 7 * 24 * 3600,
            token_price_uusd: 10_000,
            pricing: PricingPolicy::default(),
            farming: FarmingPolicy::default(),
            epoch_blocks: EPOCH_BLOCKS_DEFAULT,
            idle_block_ms: IDLE_BLOCK_MS_DEFAULT,
        }
    }

    /// Devnet timing: everything that takes hours or months in production takes seconds or minutes.
    pub fn devnet() -> Self {
        Params {
            uptime_interval_secs: 10,
            billing_interval_secs: 10,
            grace_period_secs: 5 * 60,
            minting_period_secs: 10 * 60,
            proposal_ttl_secs: 3600,
            epoch_blocks: 100,
            ..Params::production()
        }
    }

    fn check(&self) -> Result<(), GenesisError> {
        let positive = [
            ("uptime_interval_secs", self.uptime_interval_secs),
            ("billing_interval_secs", self.billing_interval_secs),
            ("minting_period_secs", self.minting_period_secs),
            ("proposal_ttl_secs", self.proposal_ttl_secs),
            ("token_price_uusd", self.token_price_uusd),
        ];
        for (name, value) in positive {
            if value == 0 {
                return Err(GenesisError::Invalid(format!(
                    "params.{name} must be above zero"
                )));
            }
        }
        // Every accepted report's clock is within `uptime_drift_secs` of ledger time, so the
        // boot time two reports imply may differ by twice that with nothing wrong. A smaller
        // tolerance punishes clocks the ledger accepted; zero also makes clock skew
        // unreachable, since any drift at all would be judged a reboot or a lie first.
        if !(EPOCH_BLOCKS_MIN..=EPOCH_BLOCKS_MAX).contains(&self.epoch_blocks) {
            return Err(GenesisError::Invalid(format!(
                "params.epoch_blocks ({}) must be between {EPOCH_BLOCKS_MIN} and {EPOCH_BLOCKS_MAX}",
                self.epoch_blocks
            )));
        }
        if self.idle_block_ms > IDLE_BLOCK_MS_MAX {
            return Err(GenesisError::Invalid(format!(
                "params.idle_block_ms ({}) must be at most {IDLE_BLOCK_MS_MAX}: validators wait \
                 that much longer for a silent leader",
                self.idle_block_ms
            )));
        }
        let skew_min = self.uptime_drift_secs.saturating_mul(2).max(1);
        if self.clock_skew_max_secs < skew_min {
            return Err(GenesisError::Invalid(format!(
                "params.clock_skew_max_secs ({} s) must be at least {skew_min} s: twice \
                 params.uptime_drift_secs ({} s), since each accepted report's clock may be off \
                 that much either way, and above zero",
                self.clock_skew_max_secs, self.uptime_drift_secs
            )));
        }
        self.pricing
            .check()
            .map_err(|e| GenesisError::Invalid(format!("params.pricing: {e}")))?;
        self.farming
            .check()
            .map_err(|e| GenesisError::Invalid(format!("params.farming: {e}")))?;
        Ok(())
    }
}

/// The council: accounts that propose and approve governance actions.
#[derive(
    Clone,
    PartialEq,
    Eq,
    Debug,
    Serialize,
    Deserialize,
    borsh::BorshSerialize,
    borsh::BorshDeserialize,
)]
pub struct Council {
    /// Members.
    pub members: Vec<AccountId>,
    /// Approvals needed to pass a proposal.
    pub threshold: u32,
}

/// A validator known at genesis.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct GenesisValidator {
    /// Its consensus key.
    pub account: AccountId,
    /// Where its peers reach it (`host:port`), if fixed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// Where its ledger API listens (`http://host:port`), if fixed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api: Option<String>,
}

/// An account funded at genesis.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct GenesisBalance {
    /// The account.
    pub account: AccountId,
    /// Its balance.
    pub amount: Amount,
}

/// Everything the chain starts from.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Genesis {
    /// The chain's name; transactions for another chain are refused.
    pub chain_id: String,
    /// Ledger time of the genesis state, ms since the Unix epoch.
    pub genesis_time_ms: u64,
    /// Receives 40 % of contract payments.
    pub foundation: AccountId,
    /// Receives 10 % of contract payments.
    pub staking_pool: AccountId,
    /// Parameters.
    pub params: Params,
    /// The council.
    pub council: Council,
    /// The first validator set.
    pub validators: Vec<GenesisValidator>,
    /// Initial balances.
    #[serde(default)]
    pub balances: Vec<GenesisBalance>,
    /// Mesh peers a newcomer dials first (multiaddrs ending in `/p2p/<peer id>`), so
    /// nodes and clients find each other through Kademlia. Like validators' addresses,
    /// not part of the chain's identity: they may change without a new chain.
    #[serde(default)]
    pub mesh_bootstrap: Vec<String>,
}

/// Most bootstrap peers in a genesis.
pub const MESH_BOOTSTRAP_MAX: usize = 64;

/// Why a genesis file cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GenesisError {
    /// The file could not be read or written.
    #[error("cannot access genesis file {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// Not valid TOML or missing fields.
    #[error("genesis file {path} is not valid: {reason}")]
    Parse {
        /// The file.
        path: String,
        /// The parser's complaint, with the line.
        reason: String,
    },
    /// Parsed but breaks a rule.
    #[error("genesis is not usable: {0}")]
    Invalid(String),
}

impl Genesis {
    /// Read and check a genesis file.
    pub fn load(path: &Path) -> Result<Genesis, GenesisError> {
        let text = std::fs::read_to_string(path).map_err(|source| GenesisError::Io {
            path: path.display().to_string(),
            source,
        })?;
        let genesis = Genesis::from_toml(&text).map_err(|reason| GenesisError::Parse {
            path: path.display().to_string(),
            reason,
        })?;
        genesis.check()?;
        Ok(genesis)
    }

    /// Parse TOML without checking the rules.
    pub fn from_toml(text: &str) -> Result<Genesis, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    /// The TOML form.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_default()
    }

    /// A digest of everything in the genesis that consensus depends on.
    ///
    /// Computed over the canonical binary encoding, not the TOML text, so that a formatting
    /// change or a validator's network address never changes the chain's identity.
    pub fn hash(&self) -> Hash {
        let validators: Vec<&AccountId> = self.validators.iter().map(|v| &v.account).collect();
        let balances: Vec<(&AccountId, &Amount)> = self
            .balances
            .iter()
            .map(|b| (&b.account, &b.amount))
            .collect();
        let mut hasher = blake3::Hasher::new();
        hasher.update(b"_PEERGRID_LEDGER_GENESIS");
        hasher.update(&peergrid_core::codec::encode(&(
            &self.chain_id,
            self.genesis_time_ms,
            &self.foundation,
            &self.staking_pool,
            &self.params,
            &self.council,
            validators,
            balances,
        )));
        Hash(*hasher.finalize().as_bytes())
    }

    /// Check every rule: chain id, unique accounts, sums that fit, a usable council and validator set.
    pub fn check(&self) -> Result<(), GenesisError> {
        let invalid = |m: String| Err(GenesisError::Invalid(m));
        if self.mesh_bootstrap.len() > MESH_BOOTSTRAP_MAX {
            return invalid(format!("at most {MESH_BOOTSTRAP_MAX} mesh_bootstrap peers"));
        }
        if let Some(bad) = self
            .mesh_bootstrap
            .iter()
            .find(|a| !a.starts_with('/') || !a.contains("/p2p/") || a.len() > 512)
        {
            return invalid(format!(
                "mesh_bootstrap entry {bad:?} is not a multiaddr ending in /p2p/<peer id>"
            ));
        }
        if self.chain_id.is_empty() || self.chain_id.len() > CHAIN_ID_BYTES_MAX {
            return invalid(format!("chain_id must be 1 to {CHAIN_ID_BYTES_MAX} bytes"));
        }
        if !self
            .chain_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return invalid(format!(
                "chain_id {:?} may hold only letters, digits, '-' and '_'",
                self.chain_id
            ));
        }
        self.params.check()?;
        let mut total = Amount::ZERO;
        for (i, b) in self.balances.iter().enumerate() {
            if self.balances[..i].iter().any(|o| o.account == b.account) {
                return invalid(format!("account {} is funded twice", b.account));
            }
            total = match total.checked_add(b.amount) {
                Some(t) => t,
                None => {
                    return invalid(
                        "the initial balances add up to more than the largest amount".into(),
                    );
                }
            };
        }
        let c = &self.council;
        if c.members.is_empty() || c.members.len() > COUNCIL_MAX {
            return invalid(format!("the council needs 1 to {COUNCIL_MAX} members"));
        }
        for (i, m) in c.members.iter().enumerate() {
            if c.members[..i].contains(m) {
                return invalid(format!("council member {m} is listed twice"));
            }
        }
        if c.threshold == 0 || c.threshold as usize > c.members.len() {
            return invalid(format!(
                "council threshold {} must be between 1 and {}",
                c.threshold,
                c.members.len()
            ));
        }
        if self.validators.is_empty() || self.validators.len() > VALIDATORS_MAX {
            return invalid(format!("genesis needs 1 to {VALIDATORS_MAX} validators"));
        }
        for (i, v) in self.validators.iter().enumerate() {
            if self.validators[..i].iter().any(|o| o.account == v.account) {
                return invalid(format!("validator {} is listed twice", v.account));
            }
        }
        Ok(())
    }

    /// The total of the initial balances.
    pub fn supply(&self) -> Amount {
        Amount(self.balances.iter().map(|b| b.amount.0).sum())
    }
}

/// Keys and genesis of a local development network, so a newcomer has funds and a council at once.
pub struct Devnet {
    /// The genesis.
    pub genesis: Genesis,
    /// The validators' keys, in genesis order.
    pub validator_keys: Vec<Keypair>,
    /// A funded account that is also the council, for trying everything.
    pub demo: Keypair,
    /// A funded account that tools use to hand out tokens.
    pub faucet: Keypair,
}

impl Devnet {
    /// Fresh random keys for `validators` validators, a demo account and a faucet.
    pub fn generate(
        chain_id: &str,
        validators: usize,
        genesis_time_ms: u64,
    ) -> Result<Devnet, peergrid_core::KeyError> {
        let validator_keys = (0..validators)
            .map(|_| Keypair::generate())
            .collect::<Result<Vec<_>, _>>()?;
        let demo = Keypair::generate()?;
        let faucet = Keypair::generate()?;
        let foundation = Keypair::generate()?.account();
        let staking_pool = Keypair::generate()?.account();
        let genesis = Genesis {
            mesh_bootstrap: Vec::new(),
            chain_id: chain_id.to_string(),
            genesis_time_ms,
            foundation,
            staking_pool,
            params: Params::devnet(),
            council: Council {
                members: vec![demo.account()],
                threshold: 1,
            },
            validators: validator_keys
                .iter()
                .map(|k| GenesisValidator {
                    account: k.account(),
                    address: None,
                    api: None,
                })
                .collect(),
            balances: vec![
                GenesisBalance {
                    account: demo.account(),
                    amount: Amount::tokens(1_000_000),
                },
                GenesisBalance {
                    account: faucet.account(),
                    amount: Amount::tokens(100_000_000),
                },
            ],
        };
        Ok(Devnet {
            genesis,
            validator_keys,
            demo,
            faucet,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devnet_genesis_round_trips_through_toml() {
        let devnet = Devnet::generate("peergrid-devnet", 4, 1_700_000_000_000).expect("keys");
        let text = devnet.genesis.to_toml();
        let back = Genesis::from_toml(&text).expect("parse");
        assert_eq!(back, devnet.genesis);
        back.check().expect("valid");
        assert_eq!(back.hash(), devnet.genesis.hash());
    }

    #[test]
    fn broken_genesis_is_refused_with_the_rule() {
        let devnet = Devnet::generate("t", 1, 0).expect("keys");
        let mut g = devnet.genesis.clone();
        g.balances.push(g.balances[0].clone());
        assert!(
            g.check()
                .expect_err("dup")
                .to_string()
                .contains("funded twice")
        );
        let mut g = devnet.genesis.clone();
        g.council.members.push(g.council.members[0]);
        g.council.threshold = 2;
        assert!(
            g.check()
                .expect_err("dup member")
                .to_string()
                .contains("listed twice")
        );
        let mut g = devnet.genesis.clone();
        g.council.threshold = 2;
        assert!(
            g.check()
                .expect_err("threshold")
                .to_string()
                .contains("threshold")
        );
        let mut g = devnet.genesis.clone();
        g.chain_id = "has space".into();
        assert!(g.check().is_err());
        let mut g = devnet.genesis.clone();
        g.params.billing_interval_secs = 0;
        assert!(
            g.check()
                .expect_err("zero")
                .to_string()
                .contains("billing_interval_secs")
        );
        // A tolerance under twice the accepted clock drift punishes clocks the ledger
        // accepted; zero makes clock skew unreachable.
        for (drift, skew) in [(60, 119), (0, 0)] {
            let mut g = devnet.genesis.clone();
            g.params.uptime_drift_secs = drift;
            g.params.clock_skew_max_secs = skew;
            assert!(
                g.check()
                    .expect_err("skew")
                    .to_string()
                    .contains("clock_skew_max_secs"),
                "{drift} {skew}"
            );
        }
        let mut g = devnet.genesis.clone();
        g.params.clock_skew_max_secs = 120;
        g.check().expect("twice the drift is enough");
        let mut g = devnet.genesis.clone();
        g.validators[0].address = Some("10.0.0.1:4000".into());
        assert_eq!(
            g.hash(),
            devnet.genesis.hash(),
            "network addresses are not consensus data"
        );
        g.params.fee_per_byte = Amount(11);
        assert_ne!(g.hash(), devnet.genesis.hash());
        let err = Genesis::from_toml("chain_id = 5").expect_err("type");
        assert!(!err.is_empty());
    }
}
