//! `cargo bench -p peergrid-ledger --bench economics`: end-of-block billing and minting at
//! 100,000 nodes and 1,000,000 contracts, next to a block of 1,000 signed transfers
//! applied to the same ledger in the same run.
//!
//! The state is built through the public API: real farm invitations, and every other
//! transaction applied as already checked (`Checked::Yes`: no signature to check,
//! as after mempool admission). Contracts are created over one billing interval of
//! one-second blocks, so afterwards every block has 1,000,000 / 3,600 ≈ 278 contracts
//! due, as on a live chain. Each node reports uptime every 600 s while the state is
//! built. Minting period 0 ends right after; its batches run in the blocks that follow,
//! together with that second's billing, which is subtracted using the billing-only
//! blocks measured just before.

use std::time::{Duration, Instant};

use peergrid_core::tx::{ContractSpec, Payload, Signature, sign_invitation};
use peergrid_core::{AccountId, Amount, Capacity, Hash, Keypair, Location, SignedTx};
use peergrid_ledger::genesis::{GenesisBalance, GenesisValidator};
use peergrid_ledger::minting::MINT_NODES_PER_BLOCK;
use peergrid_ledger::{
    BlockContext, Checked, Council, Event, Genesis, KnownTx, Ledger, MemoryStore, Params,
};

const CHAIN: &str = "bench";
const GENESIS_MS: u64 = 1_700_000_000_000;
const BLOCK_MS: u64 = 1_000;
const BILLING_SECS: u64 = 3_600;
const BUILDERS: usize = 10_000;
const FARMS: usize = 1_000;

struct Scale {
    nodes: usize,
    contracts: usize,
}

fn seed_key(kind: u8, i: usize) -> Keypair {
    let mut seed = [0u8; 32];
    seed[0] = kind;
    seed[1..9].copy_from_slice(&(i as u64).to_le_bytes());
    Keypair::from_seed(seed)
}

/// A transaction with no signature: only for a block applied with every transaction [`Checked::Yes`].
fn unsigned(signer: AccountId, nonce: u64, payload: Payload) -> SignedTx {
    SignedTx {
        body: peergrid_core::TxBody {
            chain_id: CHAIN.into(),
            signer,
            nonce,
            expires_ms: u64::MAX,
            payload,
        },
        signature: Signature([0; 64]),
    }
}

struct World {
    ledger: Ledger<MemoryStore>,
    now_ms: u64,
    nonces: std::collections::HashMap<AccountId, u64>,
}

impl World {
    fn tx(&mut self, signer: AccountId, payload: Payload) -> SignedTx {
        let n = self.nonces.entry(signer).or_insert(0);
        *n += 1;
        unsigned(signer, *n - 1, payload)
    }

    fn block(&mut self, txs: &[SignedTx], checked: bool) -> (Duration, Vec<Event>) {
        self.now_ms += BLOCK_MS;
        let ctx = BlockContext {
            height: self.ledger.state().height() + 1,
            time_ms: self.now_ms,
        };
        let start = Instant::now();
        let out = if checked {
            let known: Vec<KnownTx> = txs
                .iter()
                .map(|tx| KnownTx {
                    hash: tx.hash(),
                    len: tx.encode().len(),
                    checked: Checked::Yes,
                })
                .collect();
            self.ledger.execute_block_with(ctx, txs, &known, |_| Ok(()))
        } else {
            self.ledger.execute_block(ctx, txs)
        }
        .expect("block");
        let took = start.elapsed();
        for r in &out.receipts {
            if let Err(e) = &r.result {
                panic!("bench transaction rejected: {e}");
            }
        }
        (took, out.end_events)
    }
}

fn params() -> Params {
    Params {
        billing_interval_secs: BILLING_SECS,
        minting_period_secs: BILLING_SECS,
        // Minting starts two intervals after the period: 120 s here.
        uptime_interval_secs: 60,
        ..Params::production()
    }
}

fn build(scale: &Scale) -> World {
    let rich = seed_key(1, 0);
    let builders: Vec<Keypair> = (0..BUILDERS).map(|i| seed_key(2, i)).collect();
    let mut balances = vec![GenesisBalance {
        account: rich.account(),
        amount: Amount::tokens(1_000_000_000),
    }];
    balances.extend(builders.iter().map(|k| GenesisBalance {
        account: k.account(),
        amount: Amount::tokens(1_000_000),
    }));
    let genesis = Genesis {
        ledger_rules: peergrid_ledger::genesis::LEDGER_RULES,
        mesh_bootstrap: Vec::new(),
        chain_id: CHAIN.into(),
        genesis_time_ms: GENESIS_MS,
        foundation: seed_key(9, 0).account(),
        staking_pool: seed_key(9, 1).account(),
        params: params(),
        council: Council {
            members: vec![rich.account()],
            threshold: 1,
        },
        validators: vec![GenesisValidator {
            account: rich.account(),
            address: None,
            api: None,
        }],
        balances,
    };
    let mut w = World {
        ledger: Ledger::open(MemoryStore::default(), &genesis).expect("open"),
        now_ms: GENESIS_MS,
        nonces: Default::default(),
    };
    let owners: Vec<Keypair> = (0..FARMS).map(|i| seed_key(3, i)).collect();
    let nodes: Vec<AccountId> = (0..scale.nodes).map(|i| seed_key(4, i).account()).collect();
    // Farms, and tokens for every owner and node to pay fees.
    let mut txs = Vec::new();
    for o in &owners {
        txs.push(w.tx(
            rich.account(),
            Payload::Transfer {
                to: o.account(),
                amount: Amount::tokens(100),
            },
        ));
    }
    for n in &nodes {
        txs.push(w.tx(
            rich.account(),
            Payload::Transfer {
                to: *n,
                amount: Amount::tokens(100),
            },
        ));
    }
    for chunk in txs.chunks(20_000) {
        w.block(chunk, true);
    }
    let txs: Vec<_> = owners
        .iter()
        .enumerate()
        .map(|(i, o)| {
            w.tx(
                o.account(),
                Payload::CreateFarm {
                    name: format!("farm-{i}"),
                    public_ips: vec![],
                },
            )
        })
        .collect();
    w.block(&txs, true);
    let capacity = Capacity {
        cru: 32,
        mru: 128 << 30,
        sru: 2 << 40,
        hru: 8 << 40,
    };
    let txs: Vec<_> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let farm = (i % FARMS) as u32 + 1;
            let invitation = sign_invitation(&owners[i % FARMS], CHAIN, farm, n);
            w.tx(
                *n,
                Payload::RegisterNode {
                    farm,
                    capacity,
                    location: Location::default(),
                    invitation,
                },
            )
        })
        .collect();
    for chunk in txs.chunks(20_000) {
        w.block(chunk, true);
    }
    // One billing interval of blocks: contracts spread evenly, uptime every 600 s per node.
    let blocks = (BILLING_SECS * 1000 / BLOCK_MS) as usize;
    let per_block = scale.contracts.div_ceil(blocks);
    let mut created = 0usize;
    let mut uptime_ms = vec![0u64; scale.nodes];
    let slots = (600_000 / BLOCK_MS) as usize;
    for b in 0..blocks {
        let mut txs = Vec::with_capacity(per_block + scale.nodes / slots + 1);
        while created < scale.contracts.min((b + 1) * per_block) {
            let owner = builders[created % BUILDERS].account();
            let node = (created % scale.nodes) as u32 + 1;
            txs.push(w.tx(
                owner,
                Payload::CreateContract(ContractSpec::Deployment {
                    node,
                    deployment_hash: Hash::of(&(created as u64).to_le_bytes()),
                    resources: Capacity {
                        cru: 1,
                        mru: 2 << 30,
                        sru: 50 << 30,
                        hru: 0,
                    },
                    public_ips: 0,
                }),
            ));
            created += 1;
        }
        let now_ms = w.now_ms + BLOCK_MS;
        for (i, n) in nodes.iter().enumerate().skip(b % slots).step_by(slots) {
            uptime_ms[i] = now_ms - GENESIS_MS + 3_600_000;
            txs.push(w.tx(
                *n,
                Payload::ReportUptime {
                    node: i as u32 + 1,
                    uptime_secs: uptime_ms[i] / 1000,
                    timestamp_secs: now_ms / 1000,
                },
            ));
        }
        w.block(&txs, true);
    }
    w
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() {
    // `cargo test --benches` runs this with --bench absent; keep that quick.
    let quick = !std::env::args().any(|a| a == "--bench");
    let scale = if quick {
        Scale {
            nodes: 1_000,
            contracts: 10_000,
        }
    } else {
        Scale {
            nodes: 100_000,
            contracts: 1_000_000,
        }
    };
    let start = Instant::now();
    let mut w = build(&scale);
    let built = start.elapsed();
    let (mint_start, _) = w.ledger.state().period_bounds(1);
    let mint_start = mint_start + 2 * params().uptime_interval_secs * 1000;

    // Billing only: every block until minting starts (transactions: none).
    let mut billing = Vec::new();
    let mut bills = Vec::new();
    let transfer_at = (mint_start - w.now_ms) / BLOCK_MS / 2;
    let mut transfer_block = None;
    let keys: Vec<Keypair> = (0..1_000).map(|i| seed_key(2, i)).collect();
    while w.now_ms + BLOCK_MS < mint_start {
        let (took, events) = if billing.len() as u64 == transfer_at && transfer_block.is_none() {
            let txs: Vec<SignedTx> = keys
                .iter()
                .enumerate()
                .map(|(i, k)| {
                    let nonce = w.ledger.state().account(&k.account()).nonce;
                    SignedTx::new(
                        k,
                        CHAIN,
                        nonce,
                        Payload::Transfer {
                            to: keys[(i + 1) % keys.len()].account(),
                            amount: Amount(1_000 + i as u64),
                        },
                    )
                })
                .collect();
            let (took, events) = w.block(&txs, false);
            let due = events
                .iter()
                .filter(|e| matches!(e, Event::ContractBilled { .. }))
                .count();
            transfer_block = Some((took, due));
            continue;
        } else {
            w.block(&[], true)
        };
        billing.push(took);
        bills.push(
            events
                .iter()
                .filter(|e| matches!(e, Event::ContractBilled { .. }))
                .count(),
        );
    }
    let bill_median = median(billing.clone());
    let bills_per_block = bills.iter().sum::<usize>() / bills.len().max(1);
    let (transfer_raw, transfer_due) = transfer_block.expect("transfer block ran");
    // The transfer block also billed that second's contracts; count only the transfers.
    let transfer_net = transfer_raw.saturating_sub(bill_median);

    // Minting: batches of MINT_NODES_PER_BLOCK with that second's billing, until the period closes.
    let mut minting = Vec::new();
    let mut receipts = 0usize;
    loop {
        let (took, events) = w.block(&[], true);
        receipts += events
            .iter()
            .filter(|e| matches!(e, Event::RewardMinted { .. }))
            .count();
        minting.push(took);
        if events
            .iter()
            .any(|e| matches!(e, Event::MintingPeriodClosed { period: 0 }))
        {
            break;
        }
    }
    let mint_blocks = minting.len();
    let mint_median = median(minting.clone()).saturating_sub(bill_median);
    let mint_total: Duration = minting.iter().map(|d| d.saturating_sub(bill_median)).sum();
    let minted = w.ledger.state().globals().minted;

    println!(
        "{} nodes, {} contracts, {} ms blocks, memory store, one core; state built in {:.0} s",
        scale.nodes,
        scale.contracts,
        BLOCK_MS,
        built.as_secs_f64()
    );
    println!(
        "{:<66} {:>12} {:>18}",
        "benchmark", "ms per block", "vs transfer block"
    );
    println!(
        "{:<66} {:>12.2} {:>18}",
        "ledger::apply/transfers block=1000 (baseline, net)",
        ms(transfer_net),
        "1.00x"
    );
    println!(
        "{:<66} {:>12.2} {:>17.2}x",
        format!("ledger::end_block/billing due={bills_per_block} (median)"),
        ms(bill_median),
        ms(bill_median) / ms(transfer_net)
    );
    println!(
        "{:<66} {:>12.2} {:>17.2}x",
        format!("ledger::end_block/minting batch={MINT_NODES_PER_BLOCK} (median, net)"),
        ms(mint_median),
        ms(mint_median) / ms(transfer_net)
    );
    println!(
        "{:<66} {:>12.2} {:>17.2}x",
        format!(
            "ledger::end_block/minting period nodes={} blocks={mint_blocks} (total)",
            scale.nodes
        ),
        ms(mint_total),
        ms(mint_total) / ms(transfer_net)
    );
    println!(
        "transfer block as measured: {:.2} ms including {transfer_due} bills; {receipts} receipts, {minted:?} minted",
        ms(transfer_raw)
    );
}
