//! Genesis: the chain's first state and every economic parameter, read from TOML.

use std::path::Path;

use serde::{Deserialize, Serialize};

use peergrid_core::tx::{CHAIN_ID_BYTES_MAX, COUNCIL_MAX, VALIDATORS_MAX};
use peergrid_core::{AccountId, Amount, Hash, Keypair};

pub use peergrid_types::params::{
    Council, EPOCH_BLOCKS_DEFAULT, EPOCH_BLOCKS_MAX, EPOCH_BLOCKS_MIN, IDLE_BLOCK_MS_DEFAULT,
    IDLE_BLOCK_MS_MAX, Params,
};

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
    /// The version of the ledger's rules the chain runs ([`LEDGER_RULES`] when written by
    /// this peergrid; 0 in a genesis written before versions). Part of its identity.
    #[serde(default)]
    pub ledger_rules: u64,
}

/// The newest version of the ledger's rules this peergrid runs, which new chains take.
/// A rule that would replay a chain's blocks to other state roots comes with a new
/// version and applies only to chains of that version on:
///
/// - 0: every step of a bill rounds down to a µUSD;
/// - 1: what a bill rounds off below a µUSD is carried to the contract's next bill, so a
///   contract's bills add up to what its whole life costs (bills every few seconds on a
///   devnet were each under a µUSD for a small reservation, and billed nothing);
/// - 2: a gap between blocks longer than [`peergrid_types::records::STALL_GAP_MS`] is the
///   ledger's outage, not the nodes': a node whose next report shows it ran through it is
///   rewarded for it, and minting waits for reports after it (a minute's stall with two
///   validators stopped had cost every devnet node its period's reward).
pub const LEDGER_RULES: u64 = 2;

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
        let bytes = std::fs::read(path).map_err(|source| GenesisError::Io {
            path: path.display().to_string(),
            source,
        })?;
        let parse = |reason: String| GenesisError::Parse {
            path: path.display().to_string(),
            reason,
        };
        // Not text is the content's fault, not the file system's: say so, and where.
        let text = std::str::from_utf8(&bytes).map_err(|e| {
            parse(format!(
                "not UTF-8 text (the byte at offset {} is not): is it a genesis file?",
                e.valid_up_to()
            ))
        })?;
        let genesis = Genesis::from_toml(text).map_err(parse)?;
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
        // Written only from version 1 on, so a genesis made before versions keeps its hash.
        if self.ledger_rules != 0 {
            hasher.update(&peergrid_core::codec::encode(&self.ledger_rules));
        }
        Hash(*hasher.finalize().as_bytes())
    }

    /// [`Genesis::check`], with the parameters held to what a new chain must meet
    /// ([`Params::check_new_chain`]): for the tools that write a genesis.
    pub fn check_new(&self) -> Result<(), GenesisError> {
        self.check()?;
        self.params.check_new_chain().map_err(GenesisError::Invalid)
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
        if self.ledger_rules > LEDGER_RULES {
            return invalid(format!(
                "this chain runs ledger rules {}, and this peergrid knows them up to {LEDGER_RULES}: \
                 update peergrid to run it",
                self.ledger_rules
            ));
        }
        self.params.check().map_err(GenesisError::Invalid)?;
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
            ledger_rules: LEDGER_RULES,
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

    #[test]
    fn new_chains_run_the_newest_ledger_rules_and_older_genesis_files_keep_their_hash() {
        let devnet = Devnet::generate("t", 1, 0).expect("keys");
        assert_eq!(devnet.genesis.ledger_rules, LEDGER_RULES);
        let text = devnet.genesis.to_toml();
        assert!(
            text.contains(&format!("ledger_rules = {LEDGER_RULES}")),
            "{text}"
        );
        // A genesis written before versions has no such line: it reads as rules 0, and its
        // hash (its chain's identity) is what it was, without the version.
        let older = text
            .lines()
            .filter(|l| !l.starts_with("ledger_rules"))
            .collect::<Vec<_>>()
            .join("\n");
        let older = Genesis::from_toml(&older).expect("parse");
        assert_eq!(older.ledger_rules, 0);
        older.check().expect("valid");
        assert_ne!(
            older.hash(),
            devnet.genesis.hash(),
            "the version is part of the identity"
        );
        // Rules this peergrid does not know are refused, with what to do.
        let mut newer = devnet.genesis.clone();
        newer.ledger_rules = LEDGER_RULES + 1;
        let err = newer.check().expect_err("unknown rules").to_string();
        assert!(err.contains("update peergrid"), "{err}");
    }
}
