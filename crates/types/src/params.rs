//! The chain's parameters and council, as the genesis sets them and governance changes them.

use serde::{Deserialize, Serialize};

use peergrid_core::policy::{FarmingPolicy, PricingPolicy};
use peergrid_core::{AccountId, Amount};

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
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
    /// period is a violation (see the ledger's `minting` rules); at least twice `uptime_drift_secs`.
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

    /// Whether every parameter is in its range, or what is wrong and what it must be.
    pub fn check(&self) -> Result<(), String> {
        let positive = [
            ("uptime_interval_secs", self.uptime_interval_secs),
            ("billing_interval_secs", self.billing_interval_secs),
            ("minting_period_secs", self.minting_period_secs),
            ("proposal_ttl_secs", self.proposal_ttl_secs),
            ("token_price_uusd", self.token_price_uusd),
        ];
        for (name, value) in positive {
            if value == 0 {
                return Err(format!("params.{name} must be above zero"));
            }
        }
        // Every accepted report's clock is within `uptime_drift_secs` of ledger time, so the
        // boot time two reports imply may differ by twice that with nothing wrong. A smaller
        // tolerance punishes clocks the ledger accepted; zero also makes clock skew
        // unreachable, since any drift at all would be judged a reboot or a lie first.
        if !(EPOCH_BLOCKS_MIN..=EPOCH_BLOCKS_MAX).contains(&self.epoch_blocks) {
            return Err(format!(
                "params.epoch_blocks ({}) must be between {EPOCH_BLOCKS_MIN} and {EPOCH_BLOCKS_MAX}",
                self.epoch_blocks
            ));
        }
        if self.idle_block_ms > IDLE_BLOCK_MS_MAX {
            return Err(format!(
                "params.idle_block_ms ({}) must be at most {IDLE_BLOCK_MS_MAX}: validators wait \
                 that much longer for a silent leader",
                self.idle_block_ms
            ));
        }
        let skew_min = self.uptime_drift_secs.saturating_mul(2).max(1);
        if self.clock_skew_max_secs < skew_min {
            return Err(format!(
                "params.clock_skew_max_secs ({} s) must be at least {skew_min} s: twice \
                 params.uptime_drift_secs ({} s), since each accepted report's clock may be off \
                 that much either way, and above zero",
                self.clock_skew_max_secs, self.uptime_drift_secs
            ));
        }
        self.pricing
            .check()
            .map_err(|e| format!("params.pricing: {e}"))?;
        self.farming
            .check()
            .map_err(|e| format!("params.farming: {e}"))?;
        Ok(())
    }

    /// [`Params::check`], and what a new chain must also meet. Kept apart because a chain
    /// that already runs must open whatever its genesis says.
    pub fn check_new_chain(&self) -> Result<(), String> {
        self.check()?;
        // A period is minted two report intervals after its end, from the counters nodes
        // keep for two periods: shorter periods end before their reports are in.
        let period_min = self.uptime_interval_secs.saturating_mul(3);
        if self.minting_period_secs < period_min {
            return Err(format!(
                "params.minting_period_secs ({} s) must be at least three uptime intervals \
                 ({period_min} s): each period is minted from the reports of the two intervals \
                 after its end",
                self.minting_period_secs
            ));
        }
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
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Council {
    /// Members.
    pub members: Vec<AccountId>,
    /// Approvals needed to pass a proposal.
    pub threshold: u32,
}
