//! Signed transactions: the envelope, every payload kind, their limits and their hash.
//!
//! A transaction is `SignedTx { body, signature }` where `body = TxBody { chain_id,
//! signer, nonce, payload }` and the signature is ed25519 over
//! [`TX_NAMESPACE`] ‖ borsh(body), checked under the ZIP-215 rules so that checking one
//! alone or many in a batch ([`verify_batch`]) always agrees. Its hash is BLAKE3 of the
//! whole encoded envelope.
//! Every field has a limit checked by [`SignedTx::check`] before any state is read.

use borsh::{BorshDeserialize, BorshSerialize};
use serde::{Deserialize, Serialize};

use crate::codec::{self, DecodeError};
use crate::policy::{FarmingPolicy, PricingPolicy};
use crate::{
    AccountId, Amount, Capacity, ContractId, FarmId, Hash, Keypair, Location, NodeId, ProposalId,
    PublicIp,
};

/// Domain separation for transaction signatures.
pub const TX_NAMESPACE: &[u8] = b"_PEERGRID_CORE_TX";
/// Domain separation for a farm owner's consent to a node joining the farm.
pub const FARM_INVITE_NAMESPACE: &[u8] = b"_PEERGRID_CORE_FARM_INVITE";

/// Largest encoded transaction accepted anywhere.
pub const TX_BYTES_MAX: usize = 16 * 1024;
/// Longest chain id.
pub const CHAIN_ID_BYTES_MAX: usize = 32;
/// Longest farm name (ThreeFold uses the same).
pub const FARM_NAME_BYTES_MAX: usize = 40;
/// Most public IPs one farm may list.
pub const FARM_PUBLIC_IPS_MAX: usize = 256;
/// Longest country or city name.
pub const LOCATION_FIELD_BYTES_MAX: usize = 64;
/// Shortest gateway name.
pub const GATEWAY_NAME_BYTES_MIN: usize = 3;
/// Longest gateway name (a DNS label).
pub const GATEWAY_NAME_BYTES_MAX: usize = 63;
/// Longest proposal description.
pub const DESCRIPTION_BYTES_MAX: usize = 2048;
/// Largest council.
pub const COUNCIL_MAX: usize = 64;
/// Largest validator set.
pub const VALIDATORS_MAX: usize = 128;
/// Highest fee per byte governance may set: 1,000 times the default, so a typo cannot price
/// everyone, the council included, out of the ledger.
pub const FEE_PER_BYTE_MAX: Amount = Amount(10_000);
/// Most network traffic one usage report may claim: 1 PiB, far above what one contract
/// moves between two reports, so a typo or an overflow cannot bill a builder's whole balance.
pub const USAGE_BYTES_PER_REPORT_MAX: u64 = 1 << 50;
/// Most public IPs one deployment may reserve.
pub const CONTRACT_PUBLIC_IPS_MAX: u32 = 16;
/// Longest reason a node gives for releasing a contract, bytes.
pub const RELEASE_REASON_BYTES_MAX: usize = 256;

/// A transaction's hash.
pub type TxHash = Hash;

/// What a node's power target is: farmers may switch idle nodes off to save energy.
#[derive(
    Clone,
    Copy,
    PartialEq,
    Eq,
    Debug,
    Default,
    Serialize,
    Deserialize,
    BorshSerialize,
    BorshDeserialize,
)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum PowerTarget {
    /// The node should be running.
    #[default]
    Up,
    /// The farmer switched the node off on purpose (standby, not down).
    Down,
}

/// What a contract reserves.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize, BorshSerialize, BorshDeserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum ContractSpec {
    /// Workloads on one node, identified by the hash of the signed deployment.
    Deployment {
        /// The node that runs it.
        node: NodeId,
        /// BLAKE3 of the signed deployment the node will be sent.
        deployment_hash: Hash,
        /// Resources reserved on the node.
        resources: Capacity,
        /// Public IPv4 addresses reserved from the node's farm.
        public_ips: u32,
    },
    /// A globally unique gateway name.
    Name {
        /// `[a-z0-9-]{3,63}`, not starting or ending with `-`.
        name: String,
    },
    /// Storage space on one node for shards.
    Storage {
        /// The node that stores.
        node: NodeId,
        /// Bytes reserved.
        bytes: u64,
    },
    /// A whole node for the renter alone.
    Rent {
        /// The node rented.
        node: NodeId,
    },
}

/// Longest validator network address, `host:port` text: an IPv6 address with a port fits.
pub const VALIDATOR_ADDRESS_BYTES_MAX: usize = 64;

/// One member of a validator set voted in by governance.
///
/// The address travels with the key in the vote, so the set that takes over an epoch is
/// complete the moment it is applied: every validator can admit and dial every member without
/// waiting for a further transaction from each of them.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize, BorshSerialize, BorshDeserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ValidatorEntry {
    /// The validator's consensus key.
    pub account: AccountId,
    /// Where other validators reach it: an IP address and port, such as `203.0.113.7:4000`.
    pub address: String,
}

impl std::str::FromStr for ValidatorEntry {
    type Err = String;

    /// `ACCOUNT@IP:PORT`: a validator's key and the address validators reach it at.
    fn from_str(text: &str) -> Result<Self, String> {
        let (account, address) = text.split_once('@').ok_or_else(|| {
            format!("{text:?} is not ACCOUNT@IP:PORT (a validator's key and p2p address)")
        })?;
        let account = account
            .parse()
            .map_err(|e| format!("{account:?} is not an account: {e}"))?;
        check_validator_address(address).map_err(|e| e.to_string())?;
        Ok(ValidatorEntry {
            account,
            address: address.to_string(),
        })
    }
}

/// Check a validator address: a literal `ip:port` (no host name, which would make the ledger
/// depend on DNS), with a port other than zero.
pub fn check_validator_address(address: &str) -> Result<(), FieldError> {
    check_len(
        "validator address",
        address.len(),
        VALIDATOR_ADDRESS_BYTES_MAX,
    )?;
    match address.parse::<std::net::SocketAddr>() {
        Ok(a) if a.port() != 0 => Ok(()),
        Ok(_) => Err(invalid(
            "validator address",
            format!("{address:?} has port 0"),
        )),
        Err(_) => Err(invalid(
            "validator address",
            format!("{address:?} is not ip:port (such as 203.0.113.7:4000 or [2001:db8::7]:4000)"),
        )),
    }
}

/// A change the council can make by vote.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize, BorshSerialize, BorshDeserialize)]
#[serde(rename_all = "snake_case", tag = "action")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum GovAction {
    /// Set the token's price in µUSD, used for billing and minting conversions.
    SetTokenPrice {
        /// µUSD per whole token.
        uusd: u64,
    },
    /// Set the fee per transaction byte.
    SetFeePerByte {
        /// The new fee.
        fee: Amount,
    },
    /// Replace the pricing policy.
    SetPricingPolicy(PricingPolicy),
    /// Replace the farming policy.
    SetFarmingPolicy(FarmingPolicy),
    /// Mark a node's hardware as certified or not.
    SetNodeCertified {
        /// The node.
        node: NodeId,
        /// Certified or not.
        certified: bool,
    },
    /// Mark a farm as certified or not.
    SetFarmCertified {
        /// The farm.
        farm: FarmId,
        /// Certified or not.
        certified: bool,
    },
    /// Replace the council and its threshold.
    SetCouncil {
        /// The members.
        members: Vec<AccountId>,
        /// Approvals a proposal needs.
        threshold: u32,
    },
    /// Replace the validator set, taking effect at the next epoch boundary.
    SetValidators {
        /// Each validator's consensus key and the address validators reach it at.
        validators: Vec<ValidatorEntry>,
    },
}

/// What a transaction does.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize, BorshSerialize, BorshDeserialize)]
#[serde(rename_all = "snake_case", tag = "type")]
pub enum Payload {
    /// Move tokens to another account.
    Transfer {
        /// The receiver.
        to: AccountId,
        /// How much.
        amount: Amount,
    },
    /// Create a farm owned by the signer.
    CreateFarm {
        /// A name unique on the grid.
        name: String,
        /// Public IPs the farm offers to deployments.
        public_ips: Vec<PublicIp>,
    },
    /// Change a farm the signer owns.
    UpdateFarm {
        /// The farm.
        farm: FarmId,
        /// A new name, if any.
        name: Option<String>,
        /// A new list of public IPs, if any.
        public_ips: Option<Vec<PublicIp>>,
        /// Where the farm's rewards are paid, if changing.
        payout: Option<AccountId>,
    },
    /// Register the signer's machine as a node of a farm, with the farm owner's consent.
    RegisterNode {
        /// The farm joined.
        farm: FarmId,
        /// Capacity the node offers.
        capacity: Capacity,
        /// Where the node is.
        location: Location,
        /// The farm owner's signature over [`invitation_message`] for this farm and this node.
        invitation: Signature,
    },
    /// Change a node's capacity or location (signed by the node).
    UpdateNode {
        /// The node.
        node: NodeId,
        /// New capacity, if any.
        capacity: Option<Capacity>,
        /// New location, if any.
        location: Option<Location>,
    },
    /// Set a node's power target (signed by the farm owner).
    SetPowerTarget {
        /// The node.
        node: NodeId,
        /// Up or down.
        target: PowerTarget,
    },
    /// Report a node's uptime (signed by the node; free).
    ReportUptime {
        /// The node.
        node: NodeId,
        /// Seconds the node's service has been running without a stop (since its
        /// process started, the machine booted or woke from sleep).
        uptime_secs: u64,
        /// The node's clock, seconds since the Unix epoch.
        timestamp_secs: u64,
    },
    /// Report network traffic of a contract, billed to its owner with the next bill and
    /// counted in the node's reward (signed by the node hosting it; pays the usual fee).
    ReportUsage {
        /// The contract.
        contract: ContractId,
        /// Bytes moved since the last report.
        nu_bytes: u64,
    },
    /// Open a contract.
    CreateContract(ContractSpec),
    /// Point a deployment contract at a new deployment.
    UpdateContract {
        /// The contract.
        contract: ContractId,
        /// The new deployment's hash.
        deployment_hash: Hash,
        /// The new reservation.
        resources: Capacity,
    },
    /// Cancel a contract the signer owns.
    CancelContract {
        /// The contract.
        contract: ContractId,
    },
    /// Propose a governance action (council members only).
    Propose {
        /// What would change.
        action: GovAction,
        /// Why, for the voters.
        description: String,
    },
    /// Vote on an open proposal.
    Vote {
        /// The proposal.
        proposal: ProposalId,
        /// For or against.
        approve: bool,
    },
    /// Give back a contract the node cannot serve (signed by the node holding it): the
    /// contract is deleted, and the time since its last bill is not billed.
    ReleaseContract {
        /// The contract.
        contract: ContractId,
        /// Why, for its owner (the node's own words, such as what it lacks).
        reason: String,
    },
}

impl Payload {
    /// A short name of the payload kind, for logs and tables.
    pub fn kind(&self) -> &'static str {
        match self {
            Payload::Transfer { .. } => "transfer",
            Payload::CreateFarm { .. } => "create_farm",
            Payload::UpdateFarm { .. } => "update_farm",
            Payload::RegisterNode { .. } => "register_node",
            Payload::UpdateNode { .. } => "update_node",
            Payload::SetPowerTarget { .. } => "set_power_target",
            Payload::ReportUptime { .. } => "report_uptime",
            Payload::ReportUsage { .. } => "report_usage",
            Payload::CreateContract(_) => "create_contract",
            Payload::UpdateContract { .. } => "update_contract",
            Payload::CancelContract { .. } => "cancel_contract",
            Payload::Propose { .. } => "propose",
            Payload::Vote { .. } => "vote",
            Payload::ReleaseContract { .. } => "release_contract",
        }
    }
}

/// A 64-byte ed25519 signature.
#[derive(Clone, Copy, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct Signature(pub [u8; 64]);

impl std::str::FromStr for Signature {
    type Err = String;

    /// 128 hex characters, as `peergrid farm invite` prints an invitation.
    fn from_str(text: &str) -> Result<Self, String> {
        let mut out = [0u8; 64];
        hex::decode_to_slice(text.trim(), &mut out).map_err(|_| {
            "a signature (an invitation) is 128 hex characters, as `peergrid farm invite` \
             prints it"
                .to_string()
        })?;
        Ok(Signature(out))
    }
}

impl std::fmt::Debug for Signature {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Signature({}…)", hex::encode(&self.0[..8]))
    }
}

impl Serialize for Signature {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(self.0))
    }
}

impl<'de> Deserialize<'de> for Signature {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <String as Deserialize>::deserialize(d)?;
        let mut out = [0u8; 64];
        hex::decode_to_slice(&s, &mut out)
            .map_err(|_| serde::de::Error::custom("a signature is 128 hex characters"))?;
        Ok(Signature(out))
    }
}

impl Signature {
    /// Check this signature by `signer` over `namespace` ‖ `message`: the signer must be a
    /// valid account key (no weak keys) and the signature must pass the ZIP-215 rules, the
    /// same rules [`verify_batch`] applies, so checking alone or in a batch never disagrees.
    pub fn verify(&self, signer: &AccountId, namespace: &[u8], message: &[u8]) -> bool {
        SignatureCheck::new(signer, self, &crate::keys::signed_bytes(namespace, message))
            .is_some_and(SignatureCheck::verify_alone)
    }
}

/// Most signatures checked in one batch equation. A failed batch is checked again one
/// signature at a time to find the bad ones, so one forged signature costs the honest ones
/// beside it at most a chunk of this size of single checks.
pub const SIGNATURE_BATCH_MAX: usize = 256;

/// One signature ready to check, refused at once when the signer is not a usable account key.
#[derive(Clone)]
struct SignatureCheck(crate::sig::Check);

impl SignatureCheck {
    /// `None` when `signer` is not a usable account key: such a signature is never valid.
    fn new(signer: &AccountId, signature: &Signature, signed: &[u8]) -> Option<SignatureCheck> {
        // The account rules come first and are the same on both paths: a weak (small-order)
        // key is refused even though ZIP-215 itself would accept it.
        signer.check_key().ok()?;
        Some(SignatureCheck(crate::sig::Check::new(
            &signer.0,
            &signature.0,
            signed,
        )))
    }

    fn verify_alone(self) -> bool {
        self.0.verify_alone()
    }
}

/// Check many signatures, each `(signer, signature, namespace, message)`, and say which are
/// valid, in order. The answer is exactly what [`Signature::verify`] gives for each one.
///
/// They are checked in batches of up to [`SIGNATURE_BATCH_MAX`]: one multi-scalar
/// multiplication per batch instead of one scalar multiplication per signature. ZIP-215's
/// batch equation is the cofactored single equation summed with random weights, so a batch of
/// valid signatures always passes, and a batch holding an invalid one fails except with
/// probability 2^-128; a failed batch is then checked one signature at a time.
pub fn verify_batch<'a>(
    items: impl IntoIterator<Item = (&'a AccountId, &'a Signature, &'a [u8], &'a [u8])>,
) -> Vec<bool> {
    let checks: Vec<Option<SignatureCheck>> = items
        .into_iter()
        .map(|(signer, sig, namespace, message)| {
            SignatureCheck::new(signer, sig, &crate::keys::signed_bytes(namespace, message))
        })
        .collect();
    let mut valid = vec![false; checks.len()];
    // Chunk over the usable checks only, remembering where each one came from.
    let usable: Vec<(usize, &SignatureCheck)> = checks
        .iter()
        .enumerate()
        .filter_map(|(i, c)| c.as_ref().map(|c| (i, c)))
        .collect();
    for chunk in usable.chunks(SIGNATURE_BATCH_MAX) {
        if let [(i, check)] = chunk {
            valid[*i] = check.0.verify_alone();
            continue;
        }
        let batch: Vec<&crate::sig::Check> = chunk.iter().map(|(_, check)| &check.0).collect();
        if crate::sig::verify_all(&batch) {
            for (i, _) in chunk {
                valid[*i] = true;
            }
        } else {
            for (i, check) in chunk {
                valid[*i] = check.0.verify_alone();
            }
        }
    }
    valid
}

/// The bytes a farm owner signs to let `node` join `farm` on `chain_id`.
pub fn invitation_message(chain_id: &str, farm: FarmId, node: &AccountId) -> Vec<u8> {
    codec::encode(&(chain_id, farm, node))
}

/// A farm owner's consent for `node` to register in `farm`.
pub fn sign_invitation(
    owner: &Keypair,
    chain_id: &str,
    farm: FarmId,
    node: &AccountId,
) -> Signature {
    Signature(owner.sign(
        FARM_INVITE_NAMESPACE,
        &invitation_message(chain_id, farm, node),
    ))
}

/// The signed part of a transaction.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize, BorshSerialize, BorshDeserialize)]
pub struct TxBody {
    /// The chain this transaction is for, so it cannot be replayed on another.
    pub chain_id: String,
    /// The account that signs and pays.
    pub signer: AccountId,
    /// The signer's next nonce: each account's transactions apply in nonce order, once.
    pub nonce: u64,
    /// Ledger time after which the transaction can no longer apply, ms: a transaction that was
    /// rejected, or never included, cannot be replayed months later.
    pub expires_ms: u64,
    /// What to do.
    pub payload: Payload,
}

/// A transaction with its signature.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize, BorshSerialize, BorshDeserialize)]
pub struct SignedTx {
    /// What is signed.
    pub body: TxBody,
    /// ed25519 over [`TX_NAMESPACE`] ‖ borsh(body).
    pub signature: Signature,
}

/// A field that breaks a limit or a format rule; found without looking at state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FieldError {
    /// A text or list is longer than allowed.
    #[error("{field}: {len}{unit}, more than the limit of {max}")]
    TooLong {
        /// Which field.
        field: &'static str,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
        /// What the length counts, with its leading space (` bytes`, ` entries`), or empty.
        unit: &'static str,
    },
    /// A field has a value outside its rules.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// Which field.
        field: &'static str,
        /// The rule broken.
        reason: String,
    },
}

/// A text of at most `max` bytes.
fn check_len(field: &'static str, len: usize, max: usize) -> Result<(), FieldError> {
    check_size(field, len, max, " bytes")
}

/// A list of at most `max` entries.
fn check_count(field: &'static str, len: usize, max: usize) -> Result<(), FieldError> {
    check_size(field, len, max, " entries")
}

fn check_size(
    field: &'static str,
    len: usize,
    max: usize,
    unit: &'static str,
) -> Result<(), FieldError> {
    if len > max {
        Err(FieldError::TooLong {
            field,
            len,
            max,
            unit,
        })
    } else {
        Ok(())
    }
}

/// Whether `c` could change how the text around it shows on a terminal: a control
/// character, or an invisible one that reorders or hides text (bidi overrides, zero-width).
pub fn hides_text(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061C}'
                | '\u{200B}'..='\u{200F}'
                | '\u{2028}'..='\u{202E}'
                | '\u{2060}'..='\u{2069}'
                | '\u{FEFF}'
                | '\u{E0000}'..='\u{E007F}'
        )
}

fn invalid(field: &'static str, reason: impl Into<String>) -> FieldError {
    FieldError::Invalid {
        field,
        reason: reason.into(),
    }
}

/// Check a farm name: 1–40 bytes of letters, digits, `-`, `_` or `.`.
pub fn check_farm_name(name: &str) -> Result<(), FieldError> {
    check_len("farm name", name.len(), FARM_NAME_BYTES_MAX)?;
    if name.is_empty() {
        return Err(invalid("farm name", "must not be empty"));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(invalid(
            "farm name",
            format!("{name:?} may only hold letters, digits, '-', '_' and '.'"),
        ));
    }
    Ok(())
}

/// Check a gateway name: `[a-z0-9-]{3,63}`, not starting or ending with `-` (a DNS label).
pub fn check_gateway_name(name: &str) -> Result<(), FieldError> {
    check_len("gateway name", name.len(), GATEWAY_NAME_BYTES_MAX)?;
    if name.len() < GATEWAY_NAME_BYTES_MIN {
        return Err(invalid(
            "gateway name",
            format!("{name:?} is shorter than {GATEWAY_NAME_BYTES_MIN}"),
        ));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        || name.starts_with('-')
        || name.ends_with('-')
    {
        return Err(invalid(
            "gateway name",
            format!(
                "{name:?} must be lowercase letters, digits and '-', not starting or ending with '-'"
            ),
        ));
    }
    Ok(())
}

fn check_location(loc: &Location) -> Result<(), FieldError> {
    check_len("country", loc.country.len(), LOCATION_FIELD_BYTES_MAX)?;
    check_len("city", loc.city.len(), LOCATION_FIELD_BYTES_MAX)?;
    for (field, text) in [("country", &loc.country), ("city", &loc.city)] {
        if text.chars().any(char::is_control) {
            return Err(invalid(field, "control characters are not allowed"));
        }
    }
    if !(-90_000_000..=90_000_000).contains(&loc.latitude_micro) {
        return Err(invalid(
            "latitude",
            format!("{} µ° is outside ±90°", loc.latitude_micro),
        ));
    }
    if !(-180_000_000..=180_000_000).contains(&loc.longitude_micro) {
        return Err(invalid(
            "longitude",
            format!("{} µ° is outside ±180°", loc.longitude_micro),
        ));
    }
    Ok(())
}

fn check_public_ips(ips: &[PublicIp]) -> Result<(), FieldError> {
    check_count("public IP list", ips.len(), FARM_PUBLIC_IPS_MAX)?;
    for (i, ip) in ips.iter().enumerate() {
        if ip.prefix_len > 32 {
            return Err(invalid(
                "public IP",
                format!("{ip}: prefix length above 32"),
            ));
        }
        if ips[..i].iter().any(|other| other.ip == ip.ip) {
            return Err(invalid("public IP", format!("{ip} is listed twice")));
        }
    }
    Ok(())
}

fn check_capacity(field: &'static str, c: &Capacity) -> Result<(), FieldError> {
    // Guards sums against overflow: no machine has 2^48 cores or bytes of 2^62.
    if c.cru > 1 << 20 || c.mru > 1 << 60 || c.sru > 1 << 60 || c.hru > 1 << 60 {
        return Err(invalid(field, format!("{c} is beyond any real machine")));
    }
    Ok(())
}

fn check_accounts(field: &'static str, list: &[AccountId], max: usize) -> Result<(), FieldError> {
    check_count(field, list.len(), max)?;
    for (i, a) in list.iter().enumerate() {
        if a.check_key().is_err() {
            return Err(invalid(field, format!("{a} is not a valid ed25519 key")));
        }
        if list[..i].contains(a) {
            return Err(invalid(field, format!("{a} is listed twice")));
        }
    }
    Ok(())
}

impl Payload {
    /// Check every field's limits and formats; no state is consulted.
    pub fn check(&self) -> Result<(), FieldError> {
        match self {
            Payload::Transfer { to, amount } => {
                if amount.0 == 0 {
                    return Err(invalid("amount", "a transfer must move more than zero"));
                }
                if to.check_key().is_err() {
                    return Err(invalid("to", format!("{to} is not a valid ed25519 key")));
                }
            }
            Payload::CreateFarm { name, public_ips } => {
                check_farm_name(name)?;
                check_public_ips(public_ips)?;
            }
            Payload::UpdateFarm {
                name,
                public_ips,
                payout,
                ..
            } => {
                if let Some(name) = name {
                    check_farm_name(name)?;
                }
                if let Some(ips) = public_ips {
                    check_public_ips(ips)?;
                }
                if let Some(p) = payout
                    && p.check_key().is_err()
                {
                    return Err(invalid("payout", format!("{p} is not a valid ed25519 key")));
                }
            }
            Payload::RegisterNode {
                capacity, location, ..
            } => {
                check_capacity("capacity", capacity)?;
                if capacity.cru == 0 || capacity.mru == 0 {
                    return Err(invalid(
                        "capacity",
                        "a node needs at least one core and some memory",
                    ));
                }
                check_location(location)?;
            }
            Payload::UpdateNode {
                capacity, location, ..
            } => {
                if let Some(c) = capacity {
                    check_capacity("capacity", c)?;
                }
                if let Some(l) = location {
                    check_location(l)?;
                }
            }
            Payload::SetPowerTarget { .. } | Payload::ReportUptime { .. } => {}
            Payload::ReportUsage { nu_bytes, .. } => {
                if *nu_bytes == 0 || *nu_bytes > USAGE_BYTES_PER_REPORT_MAX {
                    return Err(invalid(
                        "network usage",
                        format!(
                            "{nu_bytes} bytes is not between 1 and {USAGE_BYTES_PER_REPORT_MAX}"
                        ),
                    ));
                }
            }
            Payload::CreateContract(spec) => match spec {
                ContractSpec::Deployment {
                    resources,
                    public_ips,
                    ..
                } => {
                    check_capacity("resources", resources)?;
                    if resources.is_zero() && *public_ips == 0 {
                        return Err(invalid("resources", "a deployment must reserve something"));
                    }
                    if *public_ips > CONTRACT_PUBLIC_IPS_MAX {
                        return Err(FieldError::TooLong {
                            field: "public IPs",
                            len: *public_ips as usize,
                            max: CONTRACT_PUBLIC_IPS_MAX as usize,
                            unit: " addresses",
                        });
                    }
                }
                ContractSpec::Name { name } => check_gateway_name(name)?,
                ContractSpec::Storage { bytes, .. } => {
                    if *bytes == 0 || *bytes > 1 << 60 {
                        return Err(invalid(
                            "bytes",
                            format!("{bytes} is not a usable reservation"),
                        ));
                    }
                }
                ContractSpec::Rent { .. } => {}
            },
            Payload::UpdateContract { resources, .. } => {
                check_capacity("resources", resources)?;
                if resources.is_zero() {
                    return Err(invalid(
                        "resources",
                        "a deployment must reserve something; cancel it instead",
                    ));
                }
            }
            Payload::CancelContract { .. } | Payload::Vote { .. } => {}
            Payload::ReleaseContract { reason, .. } => {
                check_len("reason", reason.len(), RELEASE_REASON_BYTES_MAX)?;
                if reason.trim().is_empty() {
                    return Err(invalid("reason", "say why the node cannot serve it"));
                }
                if reason.chars().any(hides_text) {
                    return Err(invalid(
                        "reason",
                        "must be one line of text, without control or direction characters",
                    ));
                }
            }
            Payload::Propose {
                action,
                description,
            } => {
                check_len("description", description.len(), DESCRIPTION_BYTES_MAX)?;
                match action {
                    GovAction::SetTokenPrice { uusd } if *uusd == 0 => {
                        return Err(invalid("token price", "must be above zero"));
                    }
                    GovAction::SetFeePerByte { fee } if *fee > FEE_PER_BYTE_MAX => {
                        return Err(invalid(
                            "fee per byte",
                            format!("{fee} PGT is above the cap of {FEE_PER_BYTE_MAX} PGT"),
                        ));
                    }
                    GovAction::SetCouncil { members, threshold } => {
                        check_accounts("council", members, COUNCIL_MAX)?;
                        if *threshold == 0 || *threshold as usize > members.len() {
                            return Err(invalid(
                                "threshold",
                                format!(
                                    "{threshold} must be at least 1 and at most the number of members ({})",
                                    members.len()
                                ),
                            ));
                        }
                    }
                    GovAction::SetValidators { validators } => {
                        if validators.is_empty() {
                            return Err(invalid("validators", "the set cannot be empty"));
                        }
                        let accounts: Vec<AccountId> =
                            validators.iter().map(|v| v.account).collect();
                        check_accounts("validators", &accounts, VALIDATORS_MAX)?;
                        for (i, v) in validators.iter().enumerate() {
                            check_validator_address(&v.address)?;
                            if validators[..i].iter().any(|o| o.address == v.address) {
                                return Err(invalid(
                                    "validators",
                                    format!("address {} is listed twice", v.address),
                                ));
                            }
                        }
                    }
                    GovAction::SetPricingPolicy(p) => {
                        p.check()
                            .map_err(|e| invalid("pricing policy", e.to_string()))?;
                    }
                    GovAction::SetFarmingPolicy(f) => {
                        f.check()
                            .map_err(|e| invalid("farming policy", e.to_string()))?;
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    }
}

impl TxBody {
    /// Sign this body with `key`; the body's signer must be the key's account.
    pub fn sign(self, key: &Keypair) -> SignedTx {
        let signature = Signature(key.sign(TX_NAMESPACE, &codec::encode(&self)));
        SignedTx {
            body: self,
            signature,
        }
    }
}

impl SignedTx {
    /// Build and sign a transaction that never expires; for tests and tools that replay history.
    pub fn new(key: &Keypair, chain_id: &str, nonce: u64, payload: Payload) -> SignedTx {
        Self::expiring(key, chain_id, nonce, u64::MAX, payload)
    }

    /// Build and sign a transaction valid until ledger time `expires_ms`.
    pub fn expiring(
        key: &Keypair,
        chain_id: &str,
        nonce: u64,
        expires_ms: u64,
        payload: Payload,
    ) -> SignedTx {
        TxBody {
            chain_id: chain_id.to_string(),
            signer: key.account(),
            nonce,
            expires_ms,
            payload,
        }
        .sign(key)
    }

    /// The canonical encoding.
    pub fn encode(&self) -> Vec<u8> {
        codec::encode(self)
    }

    /// Decode from the canonical encoding, refusing more than [`TX_BYTES_MAX`] bytes.
    pub fn decode(bytes: &[u8]) -> Result<SignedTx, DecodeError> {
        codec::decode("transaction", bytes, TX_BYTES_MAX)
    }

    /// Decode like [`SignedTx::decode`], with the hash of `bytes` themselves: the encoding is
    /// canonical (one encoding per value, see [`crate::codec`]), so it equals
    /// [`SignedTx::hash`] without encoding the transaction again.
    pub fn decode_hashed(bytes: &[u8]) -> Result<(SignedTx, TxHash), DecodeError> {
        let tx = Self::decode(bytes)?;
        Ok((tx, Hash::of(bytes)))
    }

    /// BLAKE3 of the canonical encoding.
    pub fn hash(&self) -> TxHash {
        Hash::of(&self.encode())
    }

    /// Whether the signature is the signer's over this body.
    pub fn verify_signature(&self) -> bool {
        self.signature
            .verify(&self.body.signer, TX_NAMESPACE, &codec::encode(&self.body))
    }

    /// Which of `txs` carry a valid signature, in order: for each, what
    /// [`SignedTx::verify_signature`] says, checked in batches (see [`verify_batch`]).
    pub fn verify_signatures(txs: &[&SignedTx]) -> Vec<bool> {
        let bodies: Vec<Vec<u8>> = txs.iter().map(|tx| codec::encode(&tx.body)).collect();
        verify_batch(txs.iter().zip(&bodies).map(|(tx, body)| {
            (
                &tx.body.signer,
                &tx.signature,
                TX_NAMESPACE,
                body.as_slice(),
            )
        }))
    }

    /// Check limits and formats: chain id length and every payload field; no state, no signature.
    pub fn check_fields(&self) -> Result<(), FieldError> {
        check_len("chain id", self.body.chain_id.len(), CHAIN_ID_BYTES_MAX)?;
        // Counted without building the encoding; writing to a counter cannot fail.
        let len = borsh::object_length(self).unwrap_or(usize::MAX);
        check_len("transaction", len, TX_BYTES_MAX)?;
        self.body.payload.check()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> Keypair {
        Keypair::from_seed([n; 32])
    }

    #[test]
    fn encoding_round_trips_and_hash_is_stable() {
        let tx = SignedTx::new(
            &key(1),
            "test",
            0,
            Payload::Transfer {
                to: key(2).account(),
                amount: Amount(5),
            },
        );
        let bytes = tx.encode();
        assert_eq!(SignedTx::decode(&bytes), Ok(tx.clone()));
        assert_eq!(tx.hash(), Hash::of(&bytes));
        assert!(tx.verify_signature());
    }

    #[test]
    fn any_change_breaks_the_signature() {
        let tx = SignedTx::new(
            &key(1),
            "test",
            0,
            Payload::Transfer {
                to: key(2).account(),
                amount: Amount(5),
            },
        );
        let mut other_chain = tx.clone();
        other_chain.body.chain_id = "other".into();
        assert!(!other_chain.verify_signature());
        let mut other_nonce = tx.clone();
        other_nonce.body.nonce = 1;
        assert!(!other_nonce.verify_signature());
        let mut other_signer = tx.clone();
        other_signer.body.signer = key(3).account();
        assert!(!other_signer.verify_signature());
        let mut flipped = tx;
        flipped.signature.0[10] ^= 1;
        assert!(!flipped.verify_signature());
    }

    #[test]
    fn oversized_and_malformed_bytes_are_refused() {
        let big = vec![0u8; TX_BYTES_MAX + 1];
        assert!(matches!(
            SignedTx::decode(&big),
            Err(DecodeError::TooLarge { .. })
        ));
        let tx = SignedTx::new(
            &key(1),
            "t",
            0,
            Payload::Vote {
                proposal: 1,
                approve: true,
            },
        );
        let mut bytes = tx.encode();
        bytes.push(0);
        assert!(matches!(
            SignedTx::decode(&bytes),
            Err(DecodeError::Malformed { .. })
        ));
        assert!(matches!(
            SignedTx::decode(&bytes[..10]),
            Err(DecodeError::Malformed { .. })
        ));
    }

    #[test]
    fn field_limits_are_enforced() {
        let farm = |name: &str| Payload::CreateFarm {
            name: name.into(),
            public_ips: vec![],
        };
        assert!(farm("alpha-farm_1").check().is_ok());
        assert!(matches!(
            farm(&"x".repeat(41)).check(),
            Err(FieldError::TooLong { .. })
        ));
        assert!(matches!(farm("").check(), Err(FieldError::Invalid { .. })));
        assert!(matches!(
            farm("bad name").check(),
            Err(FieldError::Invalid { .. })
        ));
        let name = |n: &str| Payload::CreateContract(ContractSpec::Name { name: n.into() });
        assert!(name("my-app").check().is_ok());
        for bad in ["ab", "-app", "app-", "App", "a.b"] {
            assert!(name(bad).check().is_err(), "{bad}");
        }
        assert!(name(&"a".repeat(64)).check().is_err());
        let zero = Payload::Transfer {
            to: key(2).account(),
            amount: Amount::ZERO,
        };
        assert!(zero.check().is_err());
        let council = Payload::Propose {
            action: GovAction::SetCouncil {
                members: vec![key(1).account()],
                threshold: 2,
            },
            description: String::new(),
        };
        assert!(council.check().is_err());
        let release = |reason: &str| Payload::ReleaseContract {
            contract: 7,
            reason: reason.into(),
        };
        assert!(
            release("needs 1 GiB but this node has 512 MiB free")
                .check()
                .is_ok()
        );
        assert!(release(&"é".repeat(128)).check().is_ok());
        assert!(matches!(
            release(&"x".repeat(RELEASE_REASON_BYTES_MAX + 1)).check(),
            Err(FieldError::TooLong { .. })
        ));
        for bad in [
            "",
            "  ",
            "full\n\x1b[31mdisk",
            "disk \u{202E}lluf",
            "a\u{2028}b",
        ] {
            assert!(
                matches!(release(bad).check(), Err(FieldError::Invalid { .. })),
                "{bad:?}"
            );
        }
        let tx = SignedTx::new(
            &key(1),
            &"c".repeat(33),
            0,
            Payload::Vote {
                proposal: 1,
                approve: true,
            },
        );
        assert!(matches!(
            tx.check_fields(),
            Err(FieldError::TooLong {
                field: "chain id",
                ..
            })
        ));
    }

    fn transfer(n: u8, nonce: u64) -> SignedTx {
        SignedTx::new(
            &key(n),
            "test",
            nonce,
            Payload::Transfer {
                to: key(200).account(),
                amount: Amount(1 + nonce),
            },
        )
    }

    #[test]
    fn a_batch_with_one_forged_signature_rejects_only_that_one() {
        // More than one chunk, the forgery in the second.
        let mut txs: Vec<SignedTx> = (0..SIGNATURE_BATCH_MAX as u64 + 10)
            .map(|i| transfer((i % 7) as u8 + 1, i))
            .collect();
        let forged = SIGNATURE_BATCH_MAX + 3;
        txs[forged].signature.0[5] ^= 1;
        // A signer that is not a usable key: never valid, and not queued in the batch.
        let mut weak = transfer(1, 0);
        weak.body.signer = AccountId([0; 32]);
        weak.body.signer.0[0] = 1;
        txs.push(weak);
        let refs: Vec<&SignedTx> = txs.iter().collect();
        let batch = SignedTx::verify_signatures(&refs);
        let alone: Vec<bool> = txs.iter().map(SignedTx::verify_signature).collect();
        assert_eq!(batch, alone, "batch and single checks agree");
        let bad: Vec<usize> = (0..txs.len()).filter(|i| !batch[*i]).collect();
        assert_eq!(bad, vec![forged, txs.len() - 1]);
        assert!(SignedTx::verify_signatures(&[]).is_empty());
    }

    /// A signature under a key with a small-order component (`a·B + T`, `T` of order 8): valid
    /// under ZIP-215's cofactored equation, while the cofactorless one (what a strict single
    /// check uses) fails for most messages. This is where single and batch checks of other
    /// rules disagree.
    fn mixed_order_signature(message: &[u8]) -> (AccountId, Signature) {
        use curve25519_dalek::constants::{ED25519_BASEPOINT_POINT, EIGHT_TORSION};
        use curve25519_dalek::scalar::Scalar;
        use sha2::{Digest, Sha512};
        let a = Scalar::from_bytes_mod_order([9; 32]);
        let r = Scalar::from_bytes_mod_order([11; 32]);
        let public = (a * ED25519_BASEPOINT_POINT + EIGHT_TORSION[1]).compress();
        let big_r = (r * ED25519_BASEPOINT_POINT).compress();
        let signed = crate::keys::signed_bytes(TX_NAMESPACE, message);
        let mut h = Sha512::new();
        h.update(big_r.as_bytes());
        h.update(public.as_bytes());
        h.update(&signed);
        let mut wide = [0u8; 64];
        wide.copy_from_slice(&h.finalize());
        let k = Scalar::from_bytes_mod_order_wide(&wide);
        let s = r + k * a;
        let mut sig = [0u8; 64];
        sig[..32].copy_from_slice(big_r.as_bytes());
        sig[32..].copy_from_slice(s.as_bytes());
        (AccountId(public.to_bytes()), Signature(sig))
    }

    #[test]
    fn single_and_batch_checks_agree_on_small_order_components() {
        let messages: Vec<Vec<u8>> = (0u8..16).map(|i| vec![i; 40]).collect();
        let sigs: Vec<_> = messages.iter().map(|m| mixed_order_signature(m)).collect();
        for ((signer, sig), m) in sigs.iter().zip(&messages) {
            assert!(signer.verifying_key().is_ok(), "not a weak key");
            assert!(sig.verify(signer, TX_NAMESPACE, m), "valid under ZIP-215");
        }
        let strict_fails = sigs
            .iter()
            .zip(&messages)
            .filter(|((signer, sig), m)| {
                let key = signer.verifying_key().expect("key");
                let sig = ed25519_dalek::Signature::from_bytes(&sig.0);
                key.verify_strict(&crate::keys::signed_bytes(TX_NAMESPACE, m), &sig)
                    .is_err()
            })
            .count();
        assert!(
            strict_fails > 0,
            "the case where the rules differ is covered"
        );
        let good = key(3);
        let good_sig = Signature(good.sign(TX_NAMESPACE, b"plain"));
        let good_account = good.account();
        let mut items: Vec<(&AccountId, &Signature, &[u8], &[u8])> = sigs
            .iter()
            .zip(&messages)
            .map(|((a, s), m)| (a, s, TX_NAMESPACE, m.as_slice()))
            .collect();
        items.push((&good_account, &good_sig, TX_NAMESPACE, b"plain"));
        assert!(verify_batch(items).into_iter().all(|ok| ok));
    }

    #[test]
    fn invitations_bind_farm_node_and_chain() {
        let owner = key(1);
        let node = key(2).account();
        let sig = sign_invitation(&owner, "c", 7, &node);
        let ok = |chain: &str, farm, n: &AccountId| {
            sig.verify(
                &owner.account(),
                FARM_INVITE_NAMESPACE,
                &invitation_message(chain, farm, n),
            )
        };
        assert!(ok("c", 7, &node));
        assert!(!ok("c", 8, &node));
        assert!(!ok("d", 7, &node));
        assert!(!ok("c", 7, &key(3).account()));
    }
}
