//! The ledger state: typed tables, their commitment, and read access for queries.

use peergrid_core::codec::DecodeError;
use peergrid_core::{AccountId, Amount, ContractId, FarmId, Hash, NodeId, ProposalId};

use crate::commitment::{Commitment, StateProof};
use crate::genesis::{Genesis, Params};
use crate::records::{
    Account, Bill, Config, Contract, Economy, Farm, Globals, Node, NodeUptime, Proposal,
    PrunedBills, RewardReceipt, ValidatorMember, ValidatorSet, VoteRecord,
};
use crate::table::{AnyTable, Change, Table};
pub use peergrid_types::api::Supply;

pub use peergrid_types::proof::tables;

/// Key of the single entry in the config and globals tables.
const SINGLETON: u8 = 0;

/// Number of tables in the state.
const TABLES: usize = 28;

/// The whole ledger state at one height, and the changes of the block being applied.
#[derive(Clone)]
pub struct State {
    pub(crate) config: Table<u8, Config>,
    pub(crate) globals: Table<u8, Globals>,
    pub(crate) accounts: Table<AccountId, Account>,
    pub(crate) farms: Table<FarmId, Farm>,
    pub(crate) farm_names: Table<String, FarmId>,
    pub(crate) nodes: Table<NodeId, Node>,
    pub(crate) node_accounts: Table<AccountId, NodeId>,
    pub(crate) contracts: Table<ContractId, Contract>,
    pub(crate) names: Table<String, ContractId>,
    pub(crate) proposals: Table<ProposalId, Proposal>,
    /// Open proposals by expiry, so end-of-block work is proportional to what expires.
    pub(crate) proposal_expiry: Table<(u64, ProposalId), ()>,
    pub(crate) economy: Table<u8, Economy>,
    /// Live contracts by next bill time: a block bills only what is due, whatever the state's size.
    pub(crate) billing_due: Table<(u64, ContractId), ()>,
    /// Every bill, by contract and the start of the period it covers.
    pub(crate) bills: Table<(ContractId, u64), Bill>,
    /// Contracts in grace by owner, to re-check them when the owner receives funds.
    pub(crate) grace_by_owner: Table<(AccountId, ContractId), ()>,
    /// Owners with contracts in grace that received funds in this block; emptied at its end.
    pub(crate) funded: Table<AccountId, ()>,
    /// Every contract by owner.
    pub(crate) owner_contracts: Table<(AccountId, ContractId), ()>,
    /// Per-node uptime counters of the current and previous minting period.
    pub(crate) node_uptime: Table<NodeId, NodeUptime>,
    /// Reward receipts by period and node.
    pub(crate) receipts: Table<(u64, NodeId), RewardReceipt>,
    /// Reward receipts by farm.
    pub(crate) farm_receipts: Table<(FarmId, u64, NodeId), ()>,
    /// Farms by owner, for farmers' governance weight.
    pub(crate) owner_farms: Table<(AccountId, FarmId), ()>,
    /// Nodes by farm.
    pub(crate) farm_nodes: Table<(FarmId, NodeId), ()>,
    /// Votes by proposal and voter.
    pub(crate) votes: Table<(ProposalId, AccountId), VoteRecord>,
    /// Which farm lists each public IPv4 address: an address belongs to one farm.
    pub(crate) farm_ips: Table<[u8; 4], FarmId>,
    /// Every contract by the node it runs on, so a node reads its own without a scan.
    pub(crate) node_contracts: Table<(NodeId, ContractId), ()>,
    /// Bills by the end of their period, so the oldest are pruned without a scan.
    pub(crate) bills_by_end: Table<(u64, ContractId, u64), ()>,
    /// What each contract's pruned bills added up to.
    pub(crate) pruned_bills: Table<ContractId, PrunedBills>,
    /// Every validator set by the first epoch it governs; one entry per change.
    pub(crate) validator_sets: Table<u64, ValidatorSet>,
    /// The commitment over the state as of the last committed block, settled.
    committed: Commitment,
}

/// A position to roll the state back to.
pub(crate) struct Mark([usize; TABLES]);

impl State {
    fn empty() -> State {
        State {
            config: Table::new(1),
            globals: Table::new(2),
            accounts: Table::new(tables::ACCOUNTS),
            farms: Table::new(tables::FARMS),
            farm_names: Table::new(5),
            nodes: Table::new(tables::NODES),
            node_accounts: Table::new(7),
            contracts: Table::new(tables::CONTRACTS),
            names: Table::new(9),
            proposals: Table::new(10),
            proposal_expiry: Table::new(11),
            economy: Table::new(12),
            billing_due: Table::new(13),
            bills: Table::new(14),
            grace_by_owner: Table::new(15),
            funded: Table::new(16),
            owner_contracts: Table::new(17),
            node_uptime: Table::new(18),
            receipts: Table::new(19),
            farm_receipts: Table::new(20),
            owner_farms: Table::new(21),
            farm_nodes: Table::new(22),
            votes: Table::new(23),
            farm_ips: Table::new(24),
            node_contracts: Table::new(25),
            bills_by_end: Table::new(26),
            pruned_bills: Table::new(27),
            validator_sets: Table::new(28),
            committed: Commitment::default(),
        }
    }

    fn tables(&self) -> [&dyn AnyTable; TABLES] {
        [
            &self.config,
            &self.globals,
            &self.accounts,
            &self.farms,
            &self.farm_names,
            &self.nodes,
            &self.node_accounts,
            &self.contracts,
            &self.names,
            &self.proposals,
            &self.proposal_expiry,
            &self.economy,
            &self.billing_due,
            &self.bills,
            &self.grace_by_owner,
            &self.funded,
            &self.owner_contracts,
            &self.node_uptime,
            &self.receipts,
            &self.farm_receipts,
            &self.owner_farms,
            &self.farm_nodes,
            &self.votes,
            &self.farm_ips,
            &self.node_contracts,
            &self.bills_by_end,
            &self.pruned_bills,
            &self.validator_sets,
        ]
    }

    fn tables_mut(&mut self) -> [&mut dyn AnyTable; TABLES] {
        [
            &mut self.config,
            &mut self.globals,
            &mut self.accounts,
            &mut self.farms,
            &mut self.farm_names,
            &mut self.nodes,
            &mut self.node_accounts,
            &mut self.contracts,
            &mut self.names,
            &mut self.proposals,
            &mut self.proposal_expiry,
            &mut self.economy,
            &mut self.billing_due,
            &mut self.bills,
            &mut self.grace_by_owner,
            &mut self.funded,
            &mut self.owner_contracts,
            &mut self.node_uptime,
            &mut self.receipts,
            &mut self.farm_receipts,
            &mut self.owner_farms,
            &mut self.farm_nodes,
            &mut self.votes,
            &mut self.farm_ips,
            &mut self.node_contracts,
            &mut self.bills_by_end,
            &mut self.pruned_bills,
            &mut self.validator_sets,
        ]
    }

    /// The state described by `genesis`, at height 0, not yet committed.
    pub fn from_genesis(genesis: &Genesis) -> State {
        let mut state = State::empty();
        state.config.insert(
            SINGLETON,
            Config {
                chain_id: genesis.chain_id.clone(),
                genesis_hash: genesis.hash(),
                foundation: genesis.foundation,
                staking_pool: genesis.staking_pool,
                params: genesis.params.clone(),
                council: genesis.council.clone(),
                validators: genesis.validators.iter().map(|v| v.account).collect(),
                pending_validators: None,
                ledger_rules: genesis.ledger_rules,
            },
        );
        state.validator_sets.insert(
            0,
            ValidatorSet {
                epoch: 0,
                first_height: 0,
                members: genesis
                    .validators
                    .iter()
                    .map(|v| ValidatorMember {
                        account: v.account,
                        address: None,
                    })
                    .collect(),
            },
        );
        for b in &genesis.balances {
            state.accounts.insert(
                b.account,
                Account {
                    balance: b.amount,
                    nonce: 0,
                },
            );
        }
        state.globals.insert(
            SINGLETON,
            Globals {
                height: 0,
                time_ms: genesis.genesis_time_ms,
                next_farm: 1,
                next_node: 1,
                next_contract: 1,
                next_proposal: 1,
                genesis_supply: genesis.supply(),
                minted: Amount::ZERO,
                burned: Amount::ZERO,
            },
        );
        state.economy.insert(
            SINGLETON,
            Economy {
                genesis_ms: genesis.genesis_time_ms,
                mint_period: 0,
                mint_cursor: 1,
                farmer_weight_total: 0,
                billed_total: Amount::ZERO,
                outage_ms: 0,
                mint_outage_ms: 0,
            },
        );
        state
    }

    /// Rebuild a state from stored entries, recomputing its commitment from scratch.
    pub(crate) fn from_entries<'a>(
        entries: impl IntoIterator<Item = (u8, &'a [u8], &'a [u8])>,
    ) -> Result<State, DecodeError> {
        let mut state = State::empty();
        for (tag, key, value) in entries {
            let table = state
                .tables_mut()
                .into_iter()
                .find(|t| t.tag() == tag)
                .ok_or_else(|| DecodeError::Malformed {
                    what: "state entry",
                    reason: format!("unknown table {tag}"),
                })?;
            table.load_entry(key, value)?;
        }
        let mut acc = Commitment::default();
        for t in state.tables() {
            t.fold_all(&mut acc);
        }
        acc.settle();
        state.committed = acc;
        if state.config.get(&SINGLETON).is_none()
            || state.globals.get(&SINGLETON).is_none()
            || state.economy.get(&SINGLETON).is_none()
        {
            return Err(DecodeError::Malformed {
                what: "state",
                reason: "config, globals or economy missing".into(),
            });
        }
        Ok(state)
    }

    pub(crate) fn mark(&self) -> Mark {
        let mut m = [0; TABLES];
        for (slot, t) in m.iter_mut().zip(self.tables()) {
            *slot = t.mark();
        }
        Mark(m)
    }

    pub(crate) fn rollback(&mut self, mark: &Mark) {
        for (t, m) in self.tables_mut().into_iter().zip(mark.0) {
            t.rollback(m);
        }
    }

    pub(crate) fn forget_undo(&mut self) {
        for t in self.tables_mut() {
            t.forget_undo();
        }
    }

    /// The state root including the changes of the block being applied.
    pub fn pending_root(&self) -> Hash {
        let mut acc = self.committed.clone();
        for t in self.tables() {
            t.fold_changes(&mut acc);
        }
        acc.settle()
    }

    /// Close the block: fold its changes into the commitment and hand them over for storage.
    pub(crate) fn commit(&mut self) -> (Hash, Vec<Change>) {
        // Taken out and put back, so the tables can be read while it changes.
        let mut acc = std::mem::take(&mut self.committed);
        for t in self.tables() {
            t.fold_changes(&mut acc);
        }
        let root = acc.settle();
        self.committed = acc;
        let mut changes = Vec::new();
        for t in self.tables_mut() {
            t.take_changes(&mut changes);
        }
        (root, changes)
    }

    /// The state root of the last committed block.
    pub fn root(&self) -> Hash {
        self.committed.root()
    }

    /// `key` of `table` as of the last committed block, with its proof against
    /// [`State::root`].
    fn prove<K, V>(&self, table: &Table<K, V>, key: &K) -> StateProof
    where
        K: Ord + Clone + borsh::BorshSerialize + borsh::BorshDeserialize,
        V: Clone + PartialEq + borsh::BorshSerialize + borsh::BorshDeserialize,
    {
        let key_bytes = peergrid_core::codec::encode(key);
        StateProof {
            table: table.tag(),
            key: hex::encode(&key_bytes),
            value: table
                .committed_get(key)
                .map(|v| hex::encode(peergrid_core::codec::encode(v))),
            proof: self.committed.prove(table.tag(), &key_bytes),
        }
    }

    /// An account (or its absence) with its proof against [`State::root`].
    pub fn prove_account(&self, id: &AccountId) -> StateProof {
        self.prove(&self.accounts, id)
    }

    /// A farm (or its absence) with its proof against [`State::root`].
    pub fn prove_farm(&self, id: FarmId) -> StateProof {
        self.prove(&self.farms, &id)
    }

    /// A node (or its absence) with its proof against [`State::root`].
    pub fn prove_node(&self, id: NodeId) -> StateProof {
        self.prove(&self.nodes, &id)
    }

    /// A contract (or its absence) with its proof against [`State::root`].
    pub fn prove_contract(&self, id: ContractId) -> StateProof {
        self.prove(&self.contracts, &id)
    }

    /// Configuration.
    pub fn config(&self) -> &Config {
        // Present from genesis on; from_entries refuses a state without it.
        self.config
            .get(&SINGLETON)
            .expect("config is written at genesis")
    }

    pub(crate) fn config_mut(&mut self) -> &mut Config {
        self.config
            .get_mut(&SINGLETON)
            .expect("config is written at genesis")
    }

    /// Counters and totals.
    pub fn globals(&self) -> &Globals {
        self.globals
            .get(&SINGLETON)
            .expect("globals are written at genesis")
    }

    pub(crate) fn globals_mut(&mut self) -> &mut Globals {
        self.globals
            .get_mut(&SINGLETON)
            .expect("globals are written at genesis")
    }

    /// Economic parameters in force.
    pub fn params(&self) -> &Params {
        &self.config().params
    }

    /// The chain's name.
    pub fn chain_id(&self) -> &str {
        &self.config().chain_id
    }

    /// Height of the last applied block.
    pub fn height(&self) -> u64 {
        self.globals().height
    }

    /// Blocks per epoch.
    pub fn epoch_blocks(&self) -> u64 {
        self.params().epoch_blocks
    }

    /// The epoch of the block at `height`: epoch `e` holds heights `e·len` to `(e+1)·len − 1`,
    /// so epoch 0 holds genesis and its last block is `len − 1`.
    pub fn epoch_of(&self, height: u64) -> u64 {
        height / self.epoch_blocks().max(1)
    }

    /// The epoch of the next block: the one whose validator set decides it.
    pub fn epoch(&self) -> u64 {
        self.epoch_of(self.height().saturating_add(1))
    }

    /// The validator set of `epoch`, if this state already knows it: every epoch up to
    /// [`State::epoch`]. A set is known once the last block of the epoch before is applied.
    pub fn validator_set(&self, epoch: u64) -> Option<&ValidatorSet> {
        if epoch > self.epoch() {
            return None;
        }
        self.validator_sets
            .range(..=epoch)
            .next_back()
            .map(|(_, s)| s)
    }

    /// Every validator set change, oldest first.
    pub fn validator_sets(&self) -> impl DoubleEndedIterator<Item = &ValidatorSet> {
        self.validator_sets.iter().map(|(_, s)| s)
    }

    /// Ledger time of the last applied block, ms.
    pub fn time_ms(&self) -> u64 {
        self.globals().time_ms
    }

    /// An account (empty if never seen).
    pub fn account(&self, id: &AccountId) -> Account {
        self.accounts.get(id).copied().unwrap_or_default()
    }

    /// All accounts, in id order.
    pub fn accounts(&self) -> impl DoubleEndedIterator<Item = (&AccountId, &Account)> {
        self.accounts.iter()
    }

    /// A farm.
    pub fn farm(&self, id: FarmId) -> Option<&Farm> {
        self.farms.get(&id)
    }

    /// A farm by its name, in any letter case.
    pub fn farm_by_name(&self, name: &str) -> Option<&Farm> {
        self.farm_names
            .get(&name.to_lowercase())
            .and_then(|id| self.farms.get(id))
    }

    /// Farms with ids from `from`, in id order.
    pub fn farms(&self, from: FarmId) -> impl Iterator<Item = &Farm> {
        self.farms.range(from..).map(|(_, f)| f)
    }

    /// A node.
    pub fn node(&self, id: NodeId) -> Option<&Node> {
        self.nodes.get(&id)
    }

    /// The node registered with `account` as its key.
    pub fn node_by_account(&self, account: &AccountId) -> Option<&Node> {
        self.node_accounts
            .get(account)
            .and_then(|id| self.nodes.get(id))
    }

    /// Nodes with ids from `from`, in id order.
    pub fn nodes(&self, from: NodeId) -> impl Iterator<Item = &Node> {
        self.nodes.range(from..).map(|(_, n)| n)
    }

    /// A contract.
    pub fn contract(&self, id: ContractId) -> Option<&Contract> {
        self.contracts.get(&id)
    }

    /// The contract holding a gateway name.
    pub fn contract_by_name(&self, name: &str) -> Option<&Contract> {
        self.names
            .get(&name.to_string())
            .and_then(|id| self.contracts.get(id))
    }

    /// Contracts with ids from `from`, in id order.
    pub fn contracts(&self, from: ContractId) -> impl Iterator<Item = &Contract> {
        self.contracts.range(from..).map(|(_, c)| c)
    }

    /// A proposal.
    pub fn proposal(&self, id: ProposalId) -> Option<&Proposal> {
        self.proposals.get(&id)
    }

    /// Proposals with ids from `from`, in id order.
    pub fn proposals(&self, from: ProposalId) -> impl Iterator<Item = &Proposal> {
        self.proposals.range(from..).map(|(_, p)| p)
    }

    /// Minting progress and the farmers' total weight.
    pub fn economy(&self) -> &Economy {
        self.economy
            .get(&SINGLETON)
            .expect("economy is written at genesis")
    }

    pub(crate) fn economy_mut(&mut self) -> &mut Economy {
        self.economy
            .get_mut(&SINGLETON)
            .expect("economy is written at genesis")
    }

    /// Contracts of `owner` with ids from `from`, in id order (deleted ones included).
    pub fn contracts_of(
        &self,
        owner: &AccountId,
        from: ContractId,
    ) -> impl Iterator<Item = &Contract> {
        self.owner_contracts
            .range((*owner, from)..=(*owner, ContractId::MAX))
            .filter_map(|((_, id), _)| self.contracts.get(id))
    }

    /// Contracts on `node` with ids from `from`, in id order (deleted ones included).
    pub fn contracts_on(&self, node: NodeId, from: ContractId) -> impl Iterator<Item = &Contract> {
        self.node_contracts
            .range((node, from)..=(node, ContractId::MAX))
            .filter_map(|((_, id), _)| self.contracts.get(id))
    }

    /// Live contracts whose next bill is due at or before `until_ms`: `(due_ms, id)`, soonest first.
    pub fn contracts_due(&self, until_ms: u64) -> impl Iterator<Item = (u64, ContractId)> + '_ {
        self.billing_due
            .range(..=(until_ms, ContractId::MAX))
            .map(|(k, _)| *k)
    }

    /// Contracts of `owner` in grace.
    pub fn grace_contracts_of(&self, owner: &AccountId) -> impl Iterator<Item = &Contract> {
        self.grace_by_owner
            .range((*owner, 0)..=(*owner, ContractId::MAX))
            .filter_map(|((_, id), _)| self.contracts.get(id))
    }

    /// Bills of `contract` whose period starts at or after `from_ms`, oldest first: page with the
    /// last bill's `to_ms`.
    pub fn bills(&self, contract: ContractId, from_ms: u64) -> impl Iterator<Item = &Bill> {
        self.bills
            .range((contract, from_ms)..=(contract, u64::MAX))
            .map(|(_, b)| b)
    }

    /// What the pruned bills of `contract` added up to, if any were pruned.
    pub fn pruned_bills(&self, contract: ContractId) -> Option<&PrunedBills> {
        self.pruned_bills.get(&contract)
    }

    /// Bills of `contract` whose period starts before `before_ms`, newest first.
    pub fn bills_newest_first(
        &self,
        contract: ContractId,
        before_ms: u64,
    ) -> impl Iterator<Item = &Bill> {
        self.bills
            .range((contract, 0)..(contract, before_ms))
            .rev()
            .map(|(_, b)| b)
    }

    /// Farms owned by `owner`.
    pub fn farms_of(&self, owner: &AccountId) -> impl Iterator<Item = &Farm> {
        self.owner_farms
            .range((*owner, 0)..=(*owner, FarmId::MAX))
            .filter_map(|((_, id), _)| self.farms.get(id))
    }

    /// Nodes of `farm`, in id order.
    pub fn nodes_of(&self, farm: FarmId) -> impl Iterator<Item = &Node> {
        self.farm_nodes
            .range((farm, 0)..=(farm, NodeId::MAX))
            .filter_map(|((_, id), _)| self.nodes.get(id))
    }

    /// A node's uptime counters for its current and previous minting period.
    pub fn node_uptime(&self, node: NodeId) -> Option<&NodeUptime> {
        self.node_uptime.get(&node)
    }

    /// The reward receipt of `node` for `period`.
    pub fn receipt(&self, period: u64, node: NodeId) -> Option<&RewardReceipt> {
        self.receipts.get(&(period, node))
    }

    /// Receipts of one period, nodes from `from_node` in id order.
    pub fn receipts_of_period(
        &self,
        period: u64,
        from_node: NodeId,
    ) -> impl Iterator<Item = &RewardReceipt> {
        self.receipts
            .range((period, from_node)..=(period, NodeId::MAX))
            .map(|(_, r)| r)
    }

    /// Receipts of a farm's nodes, newest period first, starting before `(before_period, before_node)`.
    pub fn receipts_of_farm(
        &self,
        farm: FarmId,
        before: (u64, NodeId),
    ) -> impl Iterator<Item = &RewardReceipt> {
        self.farm_receipts
            .range((farm, 0, 0)..(farm, before.0, before.1))
            .rev()
            .filter_map(|((_, p, n), _)| self.receipts.get(&(*p, *n)))
    }

    /// Receipts of a farm's nodes for one period, nodes from `from_node` in id order.
    pub fn receipts_of_farm_period(
        &self,
        farm: FarmId,
        period: u64,
        from_node: NodeId,
    ) -> impl Iterator<Item = &RewardReceipt> {
        self.farm_receipts
            .range((farm, period, from_node)..=(farm, period, NodeId::MAX))
            .filter_map(move |((_, p, n), _)| self.receipts.get(&(*p, *n)))
    }

    /// Votes cast on a proposal, by voter.
    pub fn votes(&self, proposal: ProposalId) -> impl Iterator<Item = (&AccountId, &VoteRecord)> {
        self.votes
            .range((proposal, AccountId([0; 32]))..=(proposal, AccountId([0xff; 32])))
            .map(|((_, a), v)| (a, v))
    }

    /// Sum of every balance (pools included).
    pub fn total_balances(&self) -> u128 {
        self.accounts.iter().map(|(_, a)| a.balance.0 as u128).sum()
    }

    /// The supply as the ledger counts it: genesis, minted and burned since.
    pub fn supply(&self) -> Supply {
        let g = self.globals();
        Supply {
            genesis: g.genesis_supply,
            minted: g.minted,
            burned: g.burned,
        }
    }

    /// Whether genesis + minted − burned equals the sum of all balances.
    pub fn supply_is_conserved(&self) -> bool {
        self.supply().expected() == Some(self.total_balances())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::genesis::Devnet;

    #[test]
    fn rollback_undoes_changes_across_every_table() {
        let devnet = Devnet::generate("t", 1, 1000).expect("keys");
        let mut state = State::from_genesis(&devnet.genesis);
        state.commit();
        let root = state.pending_root();
        let mark = state.mark();
        state.globals_mut().height = 9;
        state.config_mut().params.token_price_uusd = 1;
        state
            .accounts
            .insert(devnet.demo.account(), Account::default());
        state.farm_names.insert("x".into(), 1);
        state.proposal_expiry.insert((5, 5), ());
        assert_ne!(state.pending_root(), root);
        state.rollback(&mark);
        assert_eq!(state.pending_root(), root);
        let (committed, changes) = state.commit();
        assert_eq!(committed, root);
        assert!(changes.is_empty(), "{changes:?}");
    }

    #[test]
    fn an_account_is_proven_against_the_committed_root_even_mid_block() {
        let devnet = Devnet::generate("t", 1, 1000).expect("keys");
        let mut state = State::from_genesis(&devnet.genesis);
        let (root, _) = state.commit();
        let demo = devnet.demo.account();
        let key = peergrid_core::codec::encode(&demo);
        let check = |state: &State| {
            let value = state
                .prove_account(&demo)
                .check(tables::ACCOUNTS, &key, &root)
                .expect("proof holds");
            let bytes = value.expect("the demo account exists");
            peergrid_core::codec::decode::<Account>("account", &bytes, 1 << 10).expect("an account")
        };
        let funded = check(&state);
        assert_eq!(funded, state.account(&demo));
        assert!(funded.balance > Amount::ZERO);
        // A block under way does not change what is proven until it commits.
        state.accounts.insert(demo, Account::default());
        assert_eq!(check(&state), funded);

        let stranger = AccountId([9; 32]);
        let key = peergrid_core::codec::encode(&stranger);
        let absent = state.prove_account(&stranger);
        assert_eq!(absent.check(tables::ACCOUNTS, &key, &root), Ok(None));
        assert!(
            state
                .prove_account(&demo)
                .check(tables::ACCOUNTS, &key, &root)
                .is_err(),
            "a proof for one account proves nothing of another"
        );
        let other_root = Hash::of(b"elsewhere");
        assert!(absent.check(tables::ACCOUNTS, &key, &other_root).is_err());
    }
}
