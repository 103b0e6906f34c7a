//! Properties over random histories of valid and invalid transactions.
//!
//! For every transaction: a rejection leaves the state root and the nonce unchanged,
//! nonces only grow, and genesis + minted − burned equals the sum of all balances.
//! For every history: replaying the same blocks on a fresh store, in memory or on
//! disk, and reopening the disk store, all give the same state root at every height.

mod common;

use common::*;
use peergrid_core::tx::{ContractSpec, GovAction, Payload, sign_invitation};
use peergrid_core::{Amount, Capacity, Hash, SignedTx};
use peergrid_ledger::{BlockContext, Ledger, MemoryStore, RedbStore};
use proptest::prelude::*;

/// Accounts 1..=5 are funded; 6..=8 start empty.
const ACCOUNTS: u8 = 8;

#[derive(Clone, Debug)]
enum Op {
    Transfer {
        from: u8,
        to: u8,
        tokens: u64,
    },
    CreateFarm {
        owner: u8,
        name: u8,
    },
    RegisterNode {
        owner: u8,
        farm: u32,
        node: u8,
    },
    Deploy {
        owner: u8,
        node: u32,
        cru: u64,
    },
    Name {
        owner: u8,
        name: u8,
    },
    Cancel {
        owner: u8,
        contract: u64,
    },
    Propose {
        owner: u8,
        uusd: u64,
    },
    Vote {
        owner: u8,
        proposal: u64,
        approve: bool,
    },
    BadSignature {
        from: u8,
    },
    NonceOff {
        from: u8,
        delta: i8,
    },
    WrongChain {
        from: u8,
    },
    EndBlock {
        secs: u64,
    },
}

fn account() -> impl Strategy<Value = u8> {
    1..=ACCOUNTS
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (account(), prop_oneof![account(), 20u8..24], 0u64..1500).prop_map(|(from, to, tokens)| Op::Transfer { from, to, tokens }),
        2 => (account(), 0u8..4).prop_map(|(owner, name)| Op::CreateFarm { owner, name }),
        2 => (account(), 1u32..4, 20u8..24).prop_map(|(owner, farm, node)| Op::RegisterNode { owner, farm, node }),
        2 => (account(), 1u32..4, 0u64..10).prop_map(|(owner, node, cru)| Op::Deploy { owner, node, cru }),
        1 => (account(), 0u8..3).prop_map(|(owner, name)| Op::Name { owner, name }),
        2 => (account(), 1u64..6).prop_map(|(owner, contract)| Op::Cancel { owner, contract }),
        1 => (account(), 1u64..100).prop_map(|(owner, uusd)| Op::Propose { owner, uusd }),
        1 => (account(), 1u64..4, any::<bool>()).prop_map(|(owner, proposal, approve)| Op::Vote { owner, proposal, approve }),
        1 => account().prop_map(|from| Op::BadSignature { from }),
        1 => (account(), prop_oneof![Just(-1i8), Just(1), Just(2)]).prop_map(|(from, delta)| Op::NonceOff { from, delta }),
        1 => account().prop_map(|from| Op::WrongChain { from }),
        2 => (1u64..4000).prop_map(|secs| Op::EndBlock { secs }),
    ]
}

/// Turn an op into a signed transaction against the current nonces.
fn to_tx(state: &peergrid_ledger::State, op: &Op) -> Option<SignedTx> {
    let nonce = |n: u8| state.account(&key(n).account()).nonce;
    let signed = |n: u8, payload| SignedTx::new(&key(n), CHAIN, nonce(n), payload);
    Some(match *op {
        Op::Transfer { from, to, tokens } => signed(
            from,
            Payload::Transfer {
                to: key(to).account(),
                amount: Amount::tokens(tokens),
            },
        ),
        Op::CreateFarm { owner, name } => signed(
            owner,
            Payload::CreateFarm {
                name: format!("farm-{name}"),
                public_ips: vec![],
            },
        ),
        Op::RegisterNode { owner, farm, node } => {
            // Mostly the real owner's consent; otherwise a stranger's, which must be refused.
            let real_owner = (1..=ACCOUNTS).find(|n| {
                state
                    .farm(farm)
                    .is_some_and(|f| f.owner == key(*n).account())
            });
            let inviter = if owner % 4 == 0 {
                owner
            } else {
                real_owner.unwrap_or(owner)
            };
            signed(
                node,
                Payload::RegisterNode {
                    farm,
                    capacity: capacity(),
                    location: location(),
                    invitation: sign_invitation(&key(inviter), CHAIN, farm, &key(node).account()),
                },
            )
        }
        Op::Deploy { owner, node, cru } => signed(
            owner,
            Payload::CreateContract(ContractSpec::Deployment {
                node,
                deployment_hash: Hash::of(&cru.to_le_bytes()),
                resources: Capacity {
                    cru,
                    mru: 1 << 30,
                    sru: 0,
                    hru: 0,
                },
                public_ips: 0,
            }),
        ),
        Op::Name { owner, name } => signed(
            owner,
            Payload::CreateContract(ContractSpec::Name {
                name: format!("app-{name}"),
            }),
        ),
        Op::Cancel { owner, contract } => signed(owner, Payload::CancelContract { contract }),
        Op::Propose { owner, uusd } => signed(
            owner,
            Payload::Propose {
                action: GovAction::SetTokenPrice { uusd },
                description: String::new(),
            },
        ),
        Op::Vote {
            owner,
            proposal,
            approve,
        } => signed(owner, Payload::Vote { proposal, approve }),
        Op::BadSignature { from } => {
            let mut tx = signed(
                from,
                Payload::Transfer {
                    to: key(1).account(),
                    amount: Amount(1),
                },
            );
            tx.signature.0[0] ^= 0x55;
            tx
        }
        Op::NonceOff { from, delta } => {
            let n = nonce(from).checked_add_signed(delta as i64)?;
            SignedTx::new(
                &key(from),
                CHAIN,
                n,
                Payload::Transfer {
                    to: key(1).account(),
                    amount: Amount(1),
                },
            )
        }
        Op::WrongChain { from } => SignedTx::new(
            &key(from),
            "another-chain",
            nonce(from),
            Payload::Transfer {
                to: key(1).account(),
                amount: Amount(1),
            },
        ),
        Op::EndBlock { .. } => return None,
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn random_histories_keep_every_invariant(ops in proptest::collection::vec(op(), 1..120)) {
        let genesis = genesis(5);
        let mut ledger = Ledger::open(MemoryStore::default(), &genesis).expect("open");
        let mut blocks: Vec<(BlockContext, Vec<SignedTx>)> = Vec::new();
        let mut roots = Vec::new();
        // The time of the block being filled; transactions are tried at it before the block runs.
        let mut time_ms = GENESIS_MS + 1000;
        let mut pending: Vec<SignedTx> = Vec::new();
        // Transactions are tried on a scratch copy first, so each one's effect can be checked alone.
        let mut scratch = ledger.state().clone();
        let mut accepted = 0usize;

        let mut ops = ops;
        ops.push(Op::EndBlock { secs: 1 });
        for op in &ops {
            if let Op::EndBlock { secs } = op {
                let ctx = BlockContext { height: ledger.state().height() + 1, time_ms };
                let outcome = ledger.execute_block(ctx, &pending).expect("block applies");
                // The block outcome agrees with the one-at-a-time run.
                let ok = outcome.receipts.iter().filter(|r| r.result.is_ok()).count();
                prop_assert_eq!(ok, accepted);
                prop_assert!(ledger.state().supply_is_conserved());
                roots.push(outcome.root);
                blocks.push((ctx, std::mem::take(&mut pending)));
                scratch = ledger.state().clone();
                accepted = 0;
                time_ms += secs * 1000;
                continue;
            }
            let Some(tx) = to_tx(&scratch, op) else { continue };
            let signer = tx.body.signer;
            let nonce_before = scratch.account(&signer).nonce;
            let root_before = scratch.pending_root();
            let ctx = BlockContext { height: scratch.height() + 1, time_ms };
            match scratch.apply_tx(&tx, &ctx) {
                Ok(_) => {
                    accepted += 1;
                    prop_assert_eq!(scratch.account(&signer).nonce, nonce_before + 1);
                }
                Err(e) => {
                    prop_assert_eq!(scratch.pending_root(), root_before, "rejected ({}) but changed state", e);
                    prop_assert_eq!(scratch.account(&signer).nonce, nonce_before);
                }
            }
            prop_assert!(scratch.supply_is_conserved());
            pending.push(tx);
        }

        // Replay the same blocks on a fresh in-memory store and on disk: same roots at every height.
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("ledger.redb");
        let mut memory = Ledger::open(MemoryStore::default(), &genesis).expect("open");
        let mut disk = Ledger::open(RedbStore::open(&path).expect("redb"), &genesis).expect("open");
        for ((ctx, txs), root) in blocks.iter().zip(&roots) {
            prop_assert_eq!(memory.execute_block(*ctx, txs).expect("replay").root, *root);
            prop_assert_eq!(disk.execute_block(*ctx, txs).expect("replay").root, *root);
        }
        drop(disk);
        let reopened = Ledger::open(RedbStore::open(&path).expect("redb"), &genesis).expect("reopen");
        prop_assert_eq!(reopened.state().root(), *roots.last().expect("one block"));
        prop_assert_eq!(reopened.state().height(), blocks.len() as u64);
    }
}
