//! Known answers for a genesis and the state it grows into.
//!
//! The hex literals marked FROZEN were computed once by this code. A genesis hash is a chain's
//! identity (nodes refuse peers and ledger files of another genesis), and a state root is what
//! validators sign and light clients check proofs against; both are stored on disk and sent on
//! the wire. Changing them breaks existing chains: a change that fails these tests needs a
//! versioned format and a migration, not new literals. (Fields added to a frozen record are
//! written after its original ones and only when not zero, so old records keep their bytes:
//! blocks 4 and 5 were added with such fields and froze them in turn. A rule that changes
//! what the same blocks replay to comes with a new ledger rules version, which a genesis
//! names: the fixture, written before versions, runs rules 0, and each newer version's
//! roots are frozen for the same blocks beside it.)

use peergrid_core::tx::{ContractSpec, Payload, sign_invitation};
use peergrid_core::{Amount, Capacity, Hash, Keypair, Location, PublicIp, SignedTx};
use peergrid_ledger::{BlockContext, Genesis, Ledger, MemoryStore};

/// A genesis file as written by `Genesis::to_toml` when these values were frozen.
const GENESIS: &str = include_str!("fixtures/genesis-kat.toml");
const CHAIN: &str = "kat-chain";
const GENESIS_MS: u64 = 1_700_000_000_000;

fn key(n: u8) -> Keypair {
    Keypair::from_seed([n; 32])
}

fn genesis() -> Genesis {
    let g = Genesis::from_toml(GENESIS).expect("the frozen genesis still parses");
    g.check().expect("the frozen genesis is still valid");
    g
}

#[test]
fn a_fixed_genesis_has_a_frozen_hash() {
    let g = genesis();
    assert_eq!(g.chain_id, CHAIN);
    // FROZEN: the chain's identity.
    assert_eq!(
        g.hash().to_string(),
        "ff9a048684d92aab7adaac8b9d2d523a7bb87d33c382e6f4e8e4856f7593946e"
    );
    // Addresses are not part of the identity, so operators can move validators.
    let mut moved = g.clone();
    moved.validators[0].address = Some("10.0.0.1:7000".into());
    moved.mesh_bootstrap = vec!["/ip4/10.0.0.1/tcp/7001".into()];
    assert_eq!(moved.hash(), g.hash());
}

/// Three blocks touching accounts, farms, nodes, contracts and end-of-block billing.
fn blocks() -> Vec<(BlockContext, Vec<SignedTx>)> {
    let farmer = key(1);
    let node_key = key(40);
    let builder = key(2);
    let at = |height, secs: u64| BlockContext {
        height,
        time_ms: GENESIS_MS + secs * 1000,
    };
    vec![
        (
            at(1, 1),
            vec![
                SignedTx::new(
                    &farmer,
                    CHAIN,
                    0,
                    Payload::Transfer {
                        to: node_key.account(),
                        amount: Amount::tokens(10),
                    },
                ),
                SignedTx::new(
                    &farmer,
                    CHAIN,
                    1,
                    Payload::CreateFarm {
                        name: "kat-farm".into(),
                        public_ips: vec![PublicIp {
                            ip: [185, 0, 0, 10],
                            prefix_len: 24,
                            gateway: [185, 0, 0, 1],
                        }],
                    },
                ),
            ],
        ),
        (
            at(2, 2),
            vec![
                SignedTx::new(
                    &node_key,
                    CHAIN,
                    0,
                    Payload::RegisterNode {
                        farm: 1,
                        capacity: Capacity {
                            cru: 8,
                            mru: 32 << 30,
                            sru: 1 << 40,
                            hru: 4 << 40,
                        },
                        location: Location {
                            country: "BE".into(),
                            city: "Ghent".into(),
                            latitude_micro: 51_054_342,
                            longitude_micro: 3_717_424,
                        },
                        invitation: sign_invitation(&farmer, CHAIN, 1, &node_key.account()),
                    },
                ),
                SignedTx::new(
                    &builder,
                    CHAIN,
                    0,
                    Payload::CreateContract(ContractSpec::Deployment {
                        node: 1,
                        deployment_hash: Hash::of(b"kat deployment"),
                        resources: Capacity {
                            cru: 2,
                            mru: 4 << 30,
                            sru: 50 << 30,
                            hru: 0,
                        },
                        public_ips: 1,
                    }),
                ),
            ],
        ),
        // Past a billing interval: the deployment is billed at the end of this block.
        (at(3, 15), vec![]),
        // The node never reported: down since 22 s (registered at 2 s, two 10 s intervals).
        // The next bill, [15 s, 40 s), leaves out the 18 s since then.
        (at(4, 40), vec![]),
        // The node reports: its 23 s down are closed in its record, and its uptime counts
        // only the 20 s before them.
        (
            at(5, 45),
            vec![SignedTx::new(
                &node_key,
                CHAIN,
                1,
                Payload::ReportUptime {
                    node: 1,
                    uptime_secs: 300,
                    timestamp_secs: GENESIS_MS / 1000 + 45,
                },
            )],
        ),
    ]
}

#[test]
fn a_fixed_chain_has_frozen_state_roots() {
    let g = genesis();
    let mut ledger = Ledger::open(MemoryStore::default(), &g).expect("open");
    // FROZEN: the genesis state root, then the root after each block.
    assert_eq!(
        ledger.state().root().to_string(),
        "75a811de4770475a8f54dc72abc26b9dc8bacf3e13e656d980b512db24620a55"
    );
    let roots = [
        "382e4ad37794df815c2ec9aee8b3b35bfe112a9d6fa9a58b660eb112777d96bb",
        "c73e0906bab77560957737f3031fd13c67c5d6f0be975e66affe805e74ba82ac",
        "b657edb7853c200c65748946cb5c9738b3c44b97ca46b4da0aabb6e31ac05aba",
        "5abbf68304a1d535fd5418df3a64e46dfe464029a899c236912547588a3960ab",
        "666158bf9349c71fa97d74f9bda568800348a9feefce84a07b12b0c6d455c9fd",
    ];
    for ((ctx, txs), root) in blocks().into_iter().zip(roots) {
        let outcome = ledger.execute_block(ctx, &txs).expect("block");
        for receipt in &outcome.receipts {
            if let Err(e) = &receipt.result {
                panic!("block {}: a transaction was rejected: {e}", ctx.height);
            }
        }
        assert_eq!(outcome.root.to_string(), root, "block {}", ctx.height);
        assert_eq!(ledger.state().root(), outcome.root);
    }
    let state = ledger.state();
    assert!(
        state.bills(1, 0).next().is_some(),
        "a block billed the deployment, so billing is covered by the root"
    );
    // The fields added after the format was frozen are covered too.
    let second = state.bills(1, 0).nth(1).expect("the second bill");
    assert_eq!(second.node_down_ms, 18_000);
    assert_eq!(
        state.contract(1).expect("contract").node_down_counter_ms,
        18_000
    );
    assert_eq!(state.node(1).expect("node").down_ms, 23_000);
}

#[test]
fn a_fixed_chain_of_ledger_rules_1_has_frozen_state_roots() {
    let g = Genesis {
        ledger_rules: 1,
        ..genesis()
    };
    // FROZEN: the same genesis under rules 1 (a chain of its own), then the roots it grows to.
    assert_eq!(
        g.hash().to_string(),
        "13b3e10d6e95a8c5788b8f68c89d0d590e39ace000d8838e7a5d4e6a28e770e4"
    );
    let mut ledger = Ledger::open(MemoryStore::default(), &g).expect("open");
    let roots = [
        "59ff57c7e9e739c3a68abddc678ed804b30e4045d0f25ba5dd657a6aef06e50e",
        "a77d59e6cbdffbcb0efa86b1416c66b157187c46357d2e25ab5ee93633c89e37",
        "c889d98039fa17dfdf250bebbf3801ad37795f318ac812dae2e46d254861895a",
        "73be2ee6a54162a65fb166f1ef6417047b6ea31aeee085e3d81d8a5556065e39",
        "858c36156612c2f4e4f319dc686cb50852ba789b9cd271aa9b9b4cfeb7c807e8",
    ];
    for ((ctx, txs), root) in blocks().into_iter().zip(roots) {
        let outcome = ledger.execute_block(ctx, &txs).expect("block");
        assert_eq!(outcome.root.to_string(), root, "block {}", ctx.height);
    }
    // The carry is covered by the roots: 145.768716 µUSD billed 145, 0.768716 carried into
    // the next bill, whose 78.490847 µUSD it lifts to 79.
    let state = ledger.state();
    let bills: Vec<_> = state.bills(1, 0).collect();
    assert_eq!(
        bills
            .iter()
            .map(|b| (
                b.resources_uusd,
                b.net_uusd,
                b.carried_in_pusd,
                b.carried_out_pusd
            ))
            .collect::<Vec<_>>(),
        [(145, 145, 0, 768_716), (78, 79, 768_716, 259_563)]
    );
    assert_eq!(state.contract(1).expect("contract").carry_pusd, 259_563);
    assert_eq!(state.config().ledger_rules, 1);
    // The gaps between blocks are no outage before rules 2.
    assert_eq!(state.economy().outage_ms, 0);
    assert_eq!(
        state.node_uptime(1).expect("counters").current.up_ms,
        20_000
    );
}

#[test]
fn a_fixed_chain_of_ledger_rules_2_has_frozen_state_roots() {
    let g = Genesis {
        ledger_rules: 2,
        ..genesis()
    };
    // FROZEN: the same genesis under rules 2 (a chain of its own), then the roots it grows to.
    assert_eq!(
        g.hash().to_string(),
        "a2e76afed524e2320725dea29382456a6f5608d69d3fdf6b4aa05b5049699742"
    );
    let mut ledger = Ledger::open(MemoryStore::default(), &g).expect("open");
    let roots = [
        "561bece678d757e71d2d13783b9c0a0765f7f3d3ac9c1a580b49120d2391658f",
        "b8cfaf273d6e5b4fa2bc7c1cd7ed9bd0652a4f3f72b84fbeb6cb71bb1fcc9a75",
        "a7f0a931359b3e91bca1af22733b475c2164a7791edaf86d6f01addeb67e88cf",
        "98318eabaad43e3772cec23af0e14921f8328e1960f4ce520913eb043fe476aa",
        "a886bf8126931ed5c0f0b2e9872c73fa25f8236649e68abff3c83097760bb352",
    ];
    for ((ctx, txs), root) in blocks().into_iter().zip(roots) {
        let outcome = ledger.execute_block(ctx, &txs).expect("block");
        assert_eq!(outcome.root.to_string(), root, "block {}", ctx.height);
    }
    // The outage is covered by the roots: of the gaps between blocks, what is past the
    // idle rest (1 s) and the 10 s allowed: 2 s of the 13 s from 2 s to 15 s, and 14 s of
    // the 25 s from 15 s to 40 s. The node's first report, at 45 s, comes 43 s after its
    // registration (2 s): 27 s of it while the ledger ran, within the two intervals (20 s)
    // and a gap's head (11 s), so it counts all 43 s up (20 s under rules 1).
    let state = ledger.state();
    assert_eq!(state.economy().outage_ms, 16_000);
    assert_eq!(state.node(1).expect("node").ledger_outage_ms, 16_000);
    let uptime = state.node_uptime(1).expect("counters");
    assert_eq!(uptime.current.up_ms, 43_000);
    // Billing is as under rules 1: the outage is nobody's to pay.
    assert_eq!(state.node(1).expect("node").down_ms, 23_000);
    assert_eq!(state.config().ledger_rules, 2);
}
