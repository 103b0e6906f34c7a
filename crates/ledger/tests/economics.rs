//! Billing, grace, network usage, minting with receipts and farmer votes, block by block.

mod common;

use common::*;
use peergrid_core::economics::{self, Billable, MONTH_SECS};
use peergrid_core::policy::{DiscountLevel, FarmingPolicy, PricingPolicy};
use peergrid_core::tx::{ContractSpec, GovAction, Payload, sign_invitation};
use peergrid_core::{Amount, Capacity, Hash, Keypair, PublicIp, SignedTx};
use peergrid_ledger::{
    BillStatus, BlockContext, BlockOutcome, ContractState, DeleteReason, Event, Genesis, Ledger,
    MemoryStore, ProposalStatus, RewardReceipt, TxError, ViolationKind,
};

/// A ledger driven block by block, signing with the current nonces; every block it ran is
/// kept, as a chain's block archive would keep it, so tests can replay history.
struct Chain {
    ledger: Ledger<MemoryStore>,
    now_ms: u64,
    blocks: Vec<(BlockContext, Vec<SignedTx>)>,
    /// Nodes (key seed, id) that report their uptime in every block that opens a new report
    /// window and carries no transaction of theirs: they stay up, so their contracts are billed.
    kept_up: Vec<(u8, u32)>,
    /// The events of the kept-up nodes' reports in the last block.
    report_events: Vec<Event>,
}

impl Chain {
    fn new() -> Self {
        Chain::with_rules(peergrid_ledger::genesis::LEDGER_RULES)
    }

    /// A chain whose genesis runs `ledger_rules`.
    fn with_rules(ledger_rules: u64) -> Self {
        let genesis = Genesis {
            ledger_rules,
            ..genesis(9)
        };
        Chain {
            ledger: Ledger::open(MemoryStore::default(), &genesis).expect("open"),
            now_ms: GENESIS_MS,
            blocks: Vec::new(),
            kept_up: Vec::new(),
            report_events: Vec::new(),
        }
    }

    /// Keep node `id` (key seed `seed`) up from now on; it reports in the next block.
    fn keep_up(&mut self, seed: u8, id: u32) {
        self.kept_up.push((seed, id));
    }

    fn tx(&self, signer: &Keypair, nonce_offset: u64, payload: Payload) -> SignedTx {
        let nonce = self.ledger.state().account(&signer.account()).nonce + nonce_offset;
        SignedTx::new(signer, CHAIN, nonce, payload)
    }

    /// Run one block `secs` after the previous one.
    fn block(&mut self, secs: u64, txs: &[SignedTx]) -> BlockOutcome {
        self.now_ms += secs * 1000;
        let ctx = BlockContext {
            height: self.ledger.state().height() + 1,
            time_ms: self.now_ms,
        };
        let mut txs = txs.to_vec();
        let asked = txs.len();
        let interval_ms = self.ledger.state().params().uptime_interval_secs * 1000;
        for &(seed, id) in &self.kept_up {
            let k = key(seed);
            let reported = self
                .ledger
                .state()
                .node(id)
                .and_then(|n| n.uptime.last_report_ms);
            if txs.iter().any(|t| t.body.signer == k.account())
                || reported.is_some_and(|at| at / interval_ms >= self.now_ms / interval_ms)
            {
                continue;
            }
            // Booted 100,000 s before genesis and never restarted.
            let now_secs = self.now_ms / 1000;
            let report = Payload::ReportUptime {
                node: id,
                uptime_secs: now_secs - GENESIS_MS / 1000 + 100_000,
                timestamp_secs: now_secs,
            };
            txs.push(self.tx(&k, 0, report));
        }
        self.blocks.push((ctx, txs.clone()));
        let mut out = self.ledger.execute_block(ctx, &txs).expect("block applies");
        // The reports added go last; the caller sees the receipts of its own transactions.
        let reports = out.receipts.split_off(asked);
        assert!(reports.iter().all(|r| r.result.is_ok()), "{reports:?}");
        self.report_events = reports
            .into_iter()
            .filter_map(|r| r.result.ok())
            .flatten()
            .collect();
        out
    }

    /// A block with one transaction that must apply; returns all events of the block.
    fn ok(&mut self, secs: u64, signer: &Keypair, payload: Payload) -> Vec<Event> {
        let tx = self.tx(signer, 0, payload);
        let out = self.block(secs, &[tx]);
        let mut events = match &out.receipts[0].result {
            Ok(events) => events.clone(),
            Err(e) => panic!("expected success, got: {e}"),
        };
        events.extend(out.end_events);
        events
    }

    fn err(&mut self, secs: u64, signer: &Keypair, payload: Payload) -> TxError {
        let tx = self.tx(signer, 0, payload);
        let out = self.block(secs, &[tx]);
        out.receipts[0]
            .result
            .clone()
            .expect_err("expected a rejection")
    }

    fn farm(&mut self, owner: &Keypair, name: &str, ips: Vec<PublicIp>) -> u32 {
        let events = self.ok(
            1,
            owner,
            Payload::CreateFarm {
                name: name.into(),
                public_ips: ips,
            },
        );
        events
            .iter()
            .find_map(|e| match e {
                Event::FarmCreated { farm, .. } => Some(*farm),
                _ => None,
            })
            .expect("farm created")
    }

    fn node(&mut self, owner: &Keypair, farm: u32, node: &Keypair) -> u32 {
        let invitation = sign_invitation(owner, CHAIN, farm, &node.account());
        let events = self.ok(
            1,
            node,
            Payload::RegisterNode {
                farm,
                capacity: capacity(),
                location: location(),
                invitation,
            },
        );
        events
            .iter()
            .find_map(|e| match e {
                Event::NodeRegistered { node, .. } => Some(*node),
                _ => None,
            })
            .expect("node registered")
    }

    fn balance(&self, k: &Keypair) -> Amount {
        self.ledger.state().account(&k.account()).balance
    }
}

fn deploy(node: u32, cru: u64, mru_gib: u64, sru_gib: u64, ips: u32) -> Payload {
    Payload::CreateContract(ContractSpec::Deployment {
        node,
        deployment_hash: Hash::of(b"d"),
        resources: Capacity {
            cru,
            mru: mru_gib << 30,
            sru: sru_gib << 30,
            hru: 0,
        },
        public_ips: ips,
    })
}

fn contract_id(events: &[Event]) -> u64 {
    events
        .iter()
        .find_map(|e| match e {
            Event::ContractCreated { contract, .. } => Some(*contract),
            _ => None,
        })
        .expect("contract created")
}

fn transfer(to: &Keypair, amount: Amount) -> Payload {
    Payload::Transfer {
        to: to.account(),
        amount,
    }
}

/// A farm of key 4 with one node (key 40) funded for fees and kept up.
fn grid(chain: &mut Chain) -> (u32, u32) {
    let farm = chain.farm(&key(4), "farm-a", vec![ip(10)]);
    chain.ok(1, &key(4), transfer(&key(40), Amount::tokens(1)));
    let node = chain.node(&key(4), farm, &key(40));
    chain.keep_up(40, node);
    (farm, node)
}

fn ip(last: u8) -> PublicIp {
    PublicIp {
        ip: [185, 0, 0, last],
        prefix_len: 24,
        gateway: [185, 0, 0, 1],
    }
}

#[test]
fn contracts_are_billed_every_interval_for_the_exact_time_elapsed() {
    let mut chain = Chain::new();
    let (_, node) = grid(&mut chain);
    let c = contract_id(&chain.ok(1, &key(5), deploy(node, 2, 4, 100, 1)));
    let created_ms = chain.now_ms;
    let foundation = chain.ledger.state().config().foundation;
    let staking = chain.ledger.state().config().staking_pool;
    let before = (
        chain.balance(&key(5)),
        chain.balance(&key(4)),
        chain.ledger.state().account(&foundation).balance,
        chain.ledger.state().account(&staking).balance,
    );

    // Nothing is due before the interval (devnet: 10 s).
    let out = chain.block(9, &[]);
    assert!(
        !out.end_events
            .iter()
            .any(|e| matches!(e, Event::ContractBilled { .. }))
    );
    // At 10 s it is billed for exactly [created, now).
    let out = chain.block(1, &[]);
    let state = chain.ledger.state();
    let bills: Vec<_> = state.bills(c, 0).collect();
    assert_eq!(bills.len(), 1);
    let bill = bills[0];
    assert_eq!(
        (bill.from_ms, bill.to_ms),
        (created_ms, created_ms + 10_000)
    );
    // 2 cores, 4 GiB, 100 GiB SSD: CU = min(max(1, 1), max(0.5, 2), max(2, 0.5)) = 1,
    // SU = 100/200 = 0.5; one IPv4. Monthly: 22 + 0.5·14 + 4 = 33 USD.
    assert_eq!(
        bill.billable,
        Billable {
            units: economics::Units {
                cu_micro: 1_000_000,
                su_micro: 500_000
            },
            ipv4: 1,
            names: 0
        }
    );
    // Ten seconds: 33e6 · 10 / 2,630,880 = 125.43 → 125 µUSD.
    assert_eq!(bill.resources_uusd, 125);
    // The balance (1000 tokens = 10 USD) covers 10 / 33 = 0.303 months: no discount.
    assert_eq!(bill.discount.months_covered_milli, 303);
    assert_eq!(bill.discount.percent, 0);
    // 125 µUSD at 0.01 USD a token = 0.0125 tokens = 125,000 units, split 62,500 / 50,000 / 12,500.
    assert_eq!(bill.tokens, Amount(125_000));
    assert_eq!(bill.status, BillStatus::Paid);
    assert_eq!(
        (
            bill.split.farmer.0,
            bill.split.foundation.0,
            bill.split.staking.0
        ),
        (62_500, 50_000, 12_500)
    );
    assert_eq!(bill.farmer_payout, Some(key(4).account()));
    assert_eq!(chain.balance(&key(5)).0, before.0.0 - 125_000);
    assert_eq!(chain.balance(&key(4)).0, before.1.0 + 62_500);
    assert_eq!(state.account(&foundation).balance.0, before.2.0 + 50_000);
    assert_eq!(state.account(&staking).balance.0, before.3.0 + 12_500);
    assert_eq!(state.economy().billed_total, Amount(125_000));
    assert!(out.end_events.contains(&Event::ContractBilled {
        contract: c,
        owner: key(5).account(),
        from_ms: created_ms,
        to_ms: created_ms + 10_000,
        uusd: 125,
        tokens: Amount(125_000),
        status: BillStatus::Paid,
    }));
    assert!(state.supply_is_conserved());
    let text = bill.render();
    for line in [
        "period      [",
        "discount    balance covers 0.303 months → 0 %",
        "tokens      125 µUSD · 10^7 / 10000 = 125000 units = 0.0125 PGT",
        "status      paid",
    ] {
        assert!(text.contains(line), "{line} missing from\n{text}");
    }
    // With the prices in force, the resources line is the formula, worked out.
    let pricing = state.params().pricing.clone();
    let priced = bill.render_priced(Some(&pricing));
    assert!(
        priced
            .contains("per month · 10000 ms / 2630880000 ms = 0.000125433315 USD (today's prices)"),
        "{priced}"
    );
    let mut dearer = pricing;
    dearer.cu_uusd_month *= 2;
    dearer.su_uusd_month *= 2;
    let earlier = bill.render_priced(Some(&dearer));
    assert!(
        earlier.contains("under an earlier pricing policy: today's would give 0.000235 USD"),
        "{earlier}"
    );

    // Blocks that do not land on the interval: the next bill covers the exact time since the last.
    chain.block(7, &[]);
    chain.block(7, &[]);
    let bills: Vec<_> = chain.ledger.state().bills(c, 0).collect();
    assert_eq!(bills.len(), 2);
    assert_eq!(
        (bills[1].from_ms, bills[1].to_ms),
        (created_ms + 10_000, created_ms + 24_000)
    );
    // Cancelling bills the rest and the bills add up to the contract's whole life.
    chain.ok(3, &key(5), Payload::CancelContract { contract: c });
    let state = chain.ledger.state();
    let total: u64 = state.bills(c, 0).map(|b| b.to_ms - b.from_ms).sum();
    assert_eq!(total, chain.now_ms - created_ms);
    let paid: u64 = state.bills(c, 0).map(|b| b.tokens.0).sum();
    assert_eq!(state.economy().billed_total.0, paid);
    assert!(state.contracts_due(u64::MAX).next().is_none());
}

#[test]
fn the_time_a_node_is_down_is_not_billed_and_each_bill_says_how_much() {
    let mut chain = Chain::new();
    let (_, node) = grid(&mut chain);
    let farmer_before = chain.balance(&key(4));
    let c = contract_id(&chain.ok(1, &key(5), deploy(node, 2, 4, 100, 1)));
    let created_ms = chain.now_ms;
    chain.block(10, &[]);

    // The node goes silent. It still counts as up for two report intervals (devnet: 20 s)
    // after its last report, then as down: from there its contracts are not billed.
    chain.kept_up.clear();
    let last_report_ms = chain
        .ledger
        .state()
        .node(node)
        .and_then(|n| n.uptime.last_report_ms)
        .expect("the node reported");
    let down_from_ms = last_report_ms + 20_000;
    for _ in 0..6 {
        chain.block(10, &[]);
    }
    // A contract made on the node while it is down is not billed until the node is back.
    let late = contract_id(&chain.ok(1, &key(6), deploy(node, 1, 2, 0, 0)));
    chain.block(9, &[]);
    // The node reports again, and stays up.
    chain.keep_up(40, node);
    chain.block(5, &[]);
    let back_ms = chain.now_ms;
    for _ in 0..3 {
        chain.block(10, &[]);
    }
    chain.ok(1, &key(5), Payload::CancelContract { contract: c });

    let state = chain.ledger.state();
    let pricing = &state.params().pricing;
    let overlap = |from: u64, to: u64| to.min(back_ms).saturating_sub(from.max(down_from_ms));
    for id in [c, late] {
        let bills: Vec<_> = state.bills(id, 0).cloned().collect();
        assert!(bills.len() >= 3, "{bills:?}");
        for b in &bills {
            let down = overlap(b.from_ms, b.to_ms);
            assert_eq!(b.node_down_ms, down, "contract {id}, bill {b:?}");
            assert_eq!(
                b.resources_uusd,
                economics::cost_uusd(&b.billable, pricing, b.to_ms - b.from_ms - down),
                "contract {id}: only the time the node was up is priced"
            );
        }
        // Bills still cover every millisecond of the contract's life.
        let first = bills.first().expect("bills").from_ms;
        let end = bills.last().expect("bills").to_ms;
        let covered: u64 = bills.iter().map(|b| b.to_ms - b.from_ms).sum();
        assert_eq!(covered, end - first);
    }
    let bills: Vec<_> = state.bills(c, 0).cloned().collect();
    assert_eq!(bills[0].from_ms, created_ms);
    assert_eq!(bills[0].node_down_ms, 0, "up at first");
    // The whole silence beyond two intervals is left out, once.
    let down: u64 = bills.iter().map(|b| b.node_down_ms).sum();
    assert_eq!(down, back_ms - down_from_ms);
    // A bill wholly inside the silence costs nothing, and pays the farmer nothing.
    let silent = bills
        .iter()
        .find(|b| b.from_ms >= down_from_ms && b.to_ms <= back_ms)
        .expect("a bill while the node was down");
    assert_eq!((silent.resources_uusd, silent.tokens), (0, Amount::ZERO));
    // The late contract's first bill starts down and ends when the node came back.
    let late_first = state.bills(late, 0).next().expect("bill").clone();
    assert!(late_first.from_ms > down_from_ms && late_first.to_ms >= back_ms);
    assert_eq!(late_first.node_down_ms, back_ms - late_first.from_ms);
    // The farmer earned the farmer's half of what was paid, no more.
    let farmer_share: u64 = state
        .bills(c, 0)
        .chain(state.bills(late, 0))
        .map(|b| b.split.farmer.0)
        .sum();
    assert_eq!(chain.balance(&key(4)).0, farmer_before.0 + farmer_share);
    assert!(state.supply_is_conserved());
    let text = silent.render();
    assert!(
        text.contains("node down   10000 ms of the period: not billed"),
        "{text}"
    );
}

#[test]
fn bills_older_than_the_retention_are_pruned_and_their_sum_stays() {
    let mut chain = Chain::new();
    let (_, node) = grid(&mut chain);
    let c = contract_id(&chain.ok(1, &key(5), deploy(node, 1, 2, 50, 0)));
    let created_ms = chain.now_ms;
    // Devnet minting periods are 10 min, so the retention is its floor: one day.
    let kept_ms = peergrid_ledger::billing::bills_kept_ms(600);
    assert_eq!(kept_ms, 24 * 3600 * 1000);

    // Hourly blocks for 30 hours: one bill each, for the hour since the last.
    let mut billed = Vec::new();
    for _ in 0..30 {
        let out = chain.block(3600, &[]);
        billed.extend(out.end_events.iter().filter_map(|e| match e {
            Event::ContractBilled {
                contract, tokens, ..
            } if *contract == c => Some(*tokens),
            _ => None,
        }));
    }
    assert_eq!(billed.len(), 30);
    let state = chain.ledger.state();
    let kept: Vec<_> = state.bills(c, 0).collect();
    let pruned = *state.pruned_bills(c).expect("some bills pruned");

    // What left the state ended before the retention; what stays did not.
    let cutoff = chain.now_ms - kept_ms;
    assert!(kept.iter().all(|b| b.to_ms >= cutoff));
    assert!(pruned.until_ms < cutoff);
    assert_eq!(
        pruned.count as usize + kept.len(),
        30,
        "no bill lost or kept twice"
    );
    // The kept bills start where the pruned ones end: the contract's life is still covered.
    assert_eq!(kept[0].from_ms, pruned.until_ms);
    assert!(pruned.until_ms > created_ms);
    // And every token the owner paid is still accounted for.
    let kept_tokens: u64 = kept.iter().map(|b| b.tokens.0).sum();
    let all: u64 = billed.iter().map(|t| t.0).sum();
    assert_eq!(pruned.tokens.0 + kept_tokens, all);
}

#[test]
fn receipts_older_than_the_retention_are_pruned_and_their_events_stay() {
    let mut chain = Chain::new();
    let (farm, node) = grid(&mut chain);
    let kept = peergrid_ledger::minting::RECEIPT_PERIODS_KEPT;
    let half_period = chain.ledger.state().params().minting_period_secs / 2;
    // Blocks every half period: each mints the periods that have settled. Each gap is a
    // stall of the ledger (rules 2), which minting waits for, so it trails by a period
    // or so; it still mints every period once, in order.
    let mut minted = Vec::new();
    for _ in 0..3 * (kept + 3) {
        let out = chain.block(half_period, &[]);
        // A report that would roll the node's counters past a period not minted yet mints
        // it first, in the report's own events.
        let events = chain.report_events.iter().chain(&out.end_events);
        minted.extend(events.filter_map(|e| match e {
            Event::RewardMinted {
                period, node: n, ..
            } if *n == node => Some(*period),
            _ => None,
        }));
    }
    let state = chain.ledger.state();
    let next = state.economy().mint_period;
    assert!(next > kept + 1, "{next}");
    // The node's own reports mint its receipts of the periods the batches have not
    // reached yet: each period once, in order, from 0 past the batches' cursor.
    let last = minted.last().copied().unwrap_or(0);
    assert!(last + 1 >= next, "{minted:?}");
    assert_eq!(
        minted,
        (0..=last).collect::<Vec<_>>(),
        "each period minted once"
    );

    // The last `kept` periods keep their receipts; older ones left the state.
    let from = state.receipts_kept_from();
    assert_eq!(from, next - kept);
    for period in 0..next {
        assert_eq!(
            state.receipt(period, node).is_some(),
            period >= from,
            "period {period}"
        );
    }
    let listed: Vec<u64> = state
        .receipts_of_farm(farm, (u64::MAX, 0))
        .map(|r| r.period)
        .collect();
    assert_eq!(listed, (from..=last).rev().collect::<Vec<_>>());
    assert_eq!(state.receipts_of_period(0, 0).count(), 0);
    assert!(state.supply_is_conserved());
}

/// What the state and the README promise for a pruned receipt: replaying the blocks from
/// genesis up to its minting recomputes it whole, equal to the one the state held.
#[test]
fn a_pruned_receipt_is_recomputed_by_replaying_the_blocks() {
    let mut chain = Chain::new();
    let (_, node) = grid(&mut chain);
    // A contract holding the farm's public IP, and usage the node reports, so the receipt
    // carries IP seconds and traffic besides uptime.
    let contract = contract_id(&chain.ok(1, &key(5), deploy(node, 1, 1, 10, 1)));
    chain.ok(
        1,
        &key(40),
        Payload::ReportUsage {
            contract,
            nu_bytes: 5 << 30,
        },
    );
    report_until_minted(&mut chain, &[(&key(40), node)], &[]);
    let recorded = chain
        .ledger
        .state()
        .receipt(0, node)
        .expect("period 0 minted")
        .clone();
    assert!(
        recorded.up_secs > 0
            && recorded.reports > 0
            && recorded.ip_secs > 0
            && recorded.nu_bytes > 0
            && recorded.tokens.0 > 0,
        "a receipt with something to recompute: {recorded:?}"
    );

    // Blocks every half period until period 0 has left the state.
    let half_period = chain.ledger.state().params().minting_period_secs / 2;
    let mut blocks_left = 4 * (peergrid_ledger::minting::RECEIPT_PERIODS_KEPT + 3);
    while chain.ledger.state().receipt(0, node).is_some() {
        assert!(blocks_left > 0, "period 0's receipt was never pruned");
        blocks_left -= 1;
        chain.block(half_period, &[]);
    }
    assert!(chain.ledger.state().receipts_kept_from() > 0);

    // A follower with only the genesis and the blocks.
    let mut replay = Ledger::open(MemoryStore::default(), &genesis(9)).expect("open");
    let mut recomputed = None;
    for (ctx, txs) in &chain.blocks {
        let out = replay
            .execute_block(*ctx, txs)
            .expect("replayed block applies");
        let minted = out.end_events.iter().find_map(|e| match e {
            Event::RewardMinted {
                period: 0,
                node: n,
                farm,
                payout,
                uusd,
                tokens,
            } if *n == node => Some((*farm, *payout, *uusd, *tokens)),
            _ => None,
        });
        if let Some(event) = minted {
            let receipt = replay.state().receipt(0, node).expect("minted").clone();
            assert_eq!(
                event,
                (
                    receipt.farm,
                    receipt.payout,
                    receipt.steps.reward_uusd,
                    receipt.tokens
                ),
                "the block's RewardMinted event agrees with the receipt"
            );
            recomputed = Some(receipt);
            break;
        }
    }
    assert_eq!(recomputed.as_ref(), Some(&recorded));
}

#[test]
fn a_balance_covering_many_months_earns_a_discount() {
    let mut chain = Chain::new();
    let (_, node) = grid(&mut chain);
    // 1000 tokens = 10 USD. A name costs 1 USD a month: 10 months covered → 40 %.
    let c = contract_id(&chain.ok(
        1,
        &key(6),
        Payload::CreateContract(ContractSpec::Name {
            name: "my-app".into(),
        }),
    ));
    chain.block(10, &[]);
    let bill = chain
        .ledger
        .state()
        .bills(c, 0)
        .next()
        .expect("bill")
        .clone();
    assert_eq!(bill.discount.percent, 40);
    // 1e6 · 10 / 2,630,880 = 3.801009 µUSD (3 in whole µUSD); less 40 % = 2.280605 → 2 µUSD
    // = 2,000 units, and 0.280605 µUSD carried to the next bill.
    assert_eq!((bill.resources_uusd, bill.net_uusd), (3, 2));
    assert_eq!((bill.carried_in_pusd, bill.carried_out_pusd), (0, 280_605));
    assert_eq!(bill.tokens, Amount(2_000));
    // No node: the farmer's share goes to the foundation.
    assert_eq!(bill.farmer_payout, None);
    let _ = node;
}

/// A contract billed once, then ended 5 s into its next billing interval, by its owner
/// (`release` false) or by its node giving it back. Returns the owner's tokens spent by
/// the block that ended it, its bills, and the farm's public IP's holder after it.
fn ended_mid_interval(release: bool) -> (u64, Vec<peergrid_ledger::Bill>, Option<u64>) {
    let mut chain = Chain::new();
    let (farm, node) = grid(&mut chain);
    let c = contract_id(&chain.ok(1, &key(5), deploy(node, 2, 4, 50, 1)));
    chain.block(10, &[]);
    assert_eq!(chain.ledger.state().bills(c, 0).count(), 1);
    let before = chain.balance(&key(5));
    if release {
        let events = chain.ok(
            5,
            &key(40),
            Payload::ReleaseContract {
                contract: c,
                reason: "the disk for its data is full".into(),
            },
        );
        assert!(events.iter().any(|e| matches!(
            e,
            Event::ContractDeleted {
                reason: DeleteReason::ReleasedByNode,
                ..
            }
        )));
    } else {
        chain.ok(5, &key(5), Payload::CancelContract { contract: c });
    }
    let spent = before.0 - chain.balance(&key(5)).0;
    let state = chain.ledger.state();
    let bills = state.bills(c, 0).cloned().collect();
    let holder = state.farm(farm).expect("farm").public_ips[0].contract;
    (spent, bills, holder)
}

#[test]
fn a_contract_its_node_gives_back_is_not_billed_for_the_time_since_its_last_bill() {
    let (spent, bills, holder) = ended_mid_interval(true);
    // The last 5 s are in the history, written off: nothing paid for them.
    assert_eq!(bills.len(), 2, "{bills:?}");
    assert_eq!(bills[1].to_ms - bills[1].from_ms, 5_000);
    assert_eq!(bills[1].status, BillStatus::WrittenOff, "{:?}", bills[1]);
    assert_eq!(bills[1].tokens.0, 0);
    assert_eq!(
        spent, 0,
        "the owner paid nothing for the 5 s the node did not serve"
    );
    assert_eq!(holder, None, "the public IP is back with the farm");
    // Cancelled by its owner, the same 5 s are billed (with the cancellation's fee).
    let (spent, bills, holder) = ended_mid_interval(false);
    assert_eq!(bills.len(), 2, "{bills:?}");
    assert_eq!(bills[1].to_ms - bills[1].from_ms, 5_000);
    assert!(spent > bills[1].tokens.0, "{spent} {:?}", bills[1]);
    assert_eq!(bills[1].status, BillStatus::Paid);
    assert_eq!(holder, None);
}

#[test]
fn a_chain_of_older_ledger_rules_refuses_releases_its_validators_may_not_know() {
    let mut chain = Chain::with_rules(1);
    let (_, node) = grid(&mut chain);
    let c = contract_id(&chain.ok(1, &key(5), deploy(node, 1, 1, 10, 0)));
    let err = chain.err(
        1,
        &key(40),
        Payload::ReleaseContract {
            contract: c,
            reason: "no room".into(),
        },
    );
    assert_eq!(
        err,
        TxError::LedgerRules {
            what: "releasing a contract".into(),
            needs: 2,
            runs: 1
        }
    );
    assert!(err.to_string().contains("peergrid gov params"), "{err}");
    assert!(
        chain
            .ledger
            .state()
            .contract(c)
            .expect("contract")
            .is_live()
    );
}

/// A storage contract of 10 GiB (priced as HDD: 14 USD per 1200 GiB a month) costs about
/// 0.44 µUSD per 10 s bill.
/// Returns its bills and the carry it holds after them.
fn small_reservation_billed_for_three_minutes(
    ledger_rules: u64,
) -> (Vec<peergrid_ledger::Bill>, u64) {
    let mut chain = Chain::with_rules(ledger_rules);
    let (_, node) = grid(&mut chain);
    let storage = Payload::CreateContract(ContractSpec::Storage {
        node,
        bytes: 10 << 30,
    });
    let c = contract_id(&chain.ok(1, &key(5), storage));
    for _ in 0..18 {
        chain.block(10, &[]);
    }
    let state = chain.ledger.state();
    let bills: Vec<_> = state.bills(c, 0).cloned().collect();
    (bills, state.contract(c).expect("contract").carry_pusd)
}

#[test]
fn bills_under_a_micro_dollar_carry_what_they_round_off_to_the_next() {
    let (bills, carry) = small_reservation_billed_for_three_minutes(1);
    assert_eq!(bills.len(), 18, "{bills:?}");
    let pricing = peergrid_ledger::Params::devnet().pricing;
    let mut carried = 0;
    let mut net = 0;
    for b in &bills {
        let billed_ms = b.to_ms - b.from_ms - b.node_down_ms;
        let gross = economics::cost_pusd(&b.billable, &pricing, billed_ms);
        assert_eq!(b.resources_uusd, 0, "each period costs under a µUSD: {b:?}");
        // Each bill, by hand: its discounted cost in pUSD plus what the last one carried,
        // split into whole µUSD billed and the rest carried on.
        assert_eq!(b.carried_in_pusd, carried, "{b:?}");
        let exact = gross * (100 - b.discount.percent as u128) / 100 + carried as u128;
        assert_eq!(
            b.net_uusd as u128 * 1_000_000 + b.carried_out_pusd as u128,
            exact,
            "{b:?}"
        );
        assert!(b.carried_out_pusd < 1_000_000);
        carried = b.carried_out_pusd;
        net += b.net_uusd;
    }
    assert_eq!(carry, carried, "the contract holds the last bill's carry");
    // `bill history --explain` shows each step to the pUSD.
    let b = &bills[1];
    let text = b.render_priced(Some(&pricing));
    let gross = economics::cost_pusd(&b.billable, &pricing, b.to_ms - b.from_ms);
    for line in [
        format!("net         (0.{gross:012} USD + 0.000000000000 USD) · (100 − 60) / 100 = "),
        format!(
            "plus 0.{:012} USD that earlier bills rounded off = ",
            b.carried_in_pusd
        ),
        format!(
            ": {}.{:06} USD billed, 0.{:012} USD carried to the next bill",
            b.net_uusd / 1_000_000,
            b.net_uusd % 1_000_000,
            b.carried_out_pusd
        ),
    ] {
        assert!(text.contains(&line), "{line} missing from\n{text}");
    }
    // Three minutes of 10 GiB at 60 % off: 0.1167 USD · 180 s / 2,630,880 s · 0.4 ≈ 3.2 µUSD,
    // billed in whole µUSD and the carry: the whole time is paid, not rounded away.
    let whole = bills.iter().map(|b| b.to_ms - b.from_ms).sum::<u64>();
    let cost = economics::cost_pusd(&bills[0].billable, &pricing, whole);
    let discounted = cost * (100 - bills[0].discount.percent as u128) / 100;
    // Each bill rounds its cost down to a pUSD (10^-12 USD), so 18 may lose a few of those.
    let paid = net as u128 * 1_000_000 + carry as u128;
    assert!(
        paid <= discounted && discounted - paid <= 36,
        "the bills pay what the three minutes cost: {paid} of {discounted} pUSD"
    );
    assert_eq!(
        net, 3,
        "three minutes of 10 GiB were billed 3 µUSD, {carry} pUSD carried"
    );
}

#[test]
fn chains_made_before_ledger_rules_1_still_round_every_bill_down() {
    let (bills, carry) = small_reservation_billed_for_three_minutes(0);
    assert_eq!(bills.len(), 18);
    assert!(
        bills
            .iter()
            .all(|b| b.net_uusd == 0 && b.carried_in_pusd == 0 && b.carried_out_pusd == 0),
        "{bills:?}"
    );
    assert_eq!(carry, 0);
}

#[test]
fn grace_then_top_up_then_deletion_after_the_grace_period() {
    let mut chain = Chain::new();
    let (_, node) = grid(&mut chain);
    let owner = key(30);
    // 8 cores, 32 GiB: CU = min(max(8, 4), max(4, 8), max(16, 2)) = 8 → 176 USD a month;
    // 10 s = 176e6 · 10 / 2,630,880 = 668.98 → 668 µUSD = 668,000 units.
    chain.ok(1, &key(1), transfer(&owner, Amount(2_000_000)));
    let c = contract_id(&chain.ok(1, &owner, deploy(node, 8, 32, 0, 0)));
    assert_eq!(
        chain.ledger.state().node(node).expect("node").used.cru,
        8,
        "reserved"
    );
    let mut grace_at = None;
    for _ in 0..5 {
        let out = chain.block(10, &[]);
        if let Some(since) = out.end_events.iter().find_map(|e| match e {
            Event::ContractGraceStarted {
                contract, since_ms, ..
            } if *contract == c => Some(*since_ms),
            _ => None,
        }) {
            grace_at = Some(since);
            break;
        }
    }
    let since = grace_at.expect("funds run out within five intervals");
    let state = chain.ledger.state();
    assert_eq!(
        state.contract(c).expect("c").state,
        ContractState::GracePeriod { since_ms: since }
    );
    // All or nothing: the balance is less than one bill and none of it was taken.
    let left = chain.balance(&owner);
    assert!(left.0 < 668_000, "{left:?}");
    let billed_until = state.contract(c).expect("c").billed_until_ms;
    assert_eq!(state.grace_contracts_of(&owner.account()).count(), 1);

    // Another interval in grace: still unpaid, the debt grows.
    chain.block(10, &[]);
    assert_eq!(chain.balance(&owner), left);

    // Top up: at the end of that very block the whole debt is billed and the contract resumes.
    let tx = chain.tx(&key(1), 0, transfer(&owner, Amount::tokens(1)));
    let out = chain.block(3, &[tx]);
    let state = chain.ledger.state();
    assert!(out.end_events.iter().any(|e| matches!(
        e,
        Event::ContractGraceEnded { contract, since_ms, .. } if *contract == c && *since_ms == since
    )));
    let debt = state
        .bills(c, billed_until)
        .next()
        .expect("the debt bill")
        .clone();
    assert_eq!((debt.from_ms, debt.to_ms), (billed_until, chain.now_ms));
    assert_eq!(debt.status, BillStatus::Paid);
    assert_eq!(state.contract(c).expect("c").state, ContractState::Created);
    assert_eq!(state.grace_contracts_of(&owner.account()).count(), 0);

    // Run out again, then stay in grace past the grace period (devnet: 300 s).
    let mut second = None;
    for _ in 0..40 {
        let out = chain.block(10, &[]);
        if let Some(s) = out.end_events.iter().find_map(|e| match e {
            Event::ContractGraceStarted { since_ms, .. } => Some(*since_ms),
            _ => None,
        }) {
            second = Some(s);
            break;
        }
    }
    let second = second.expect("runs out again");
    let grace_ms = chain.ledger.state().params().grace_period_secs * 1000;
    let mut deleted = None;
    for _ in 0..40 {
        let out = chain.block(10, &[]);
        if let Some(e) = out.end_events.iter().find(|e| {
            matches!(e, Event::ContractDeleted { contract, reason: DeleteReason::OutOfFunds, .. } if *contract == c)
        }) {
            deleted = Some((e.clone(), chain.now_ms));
            break;
        }
    }
    let (_, deleted_ms) = deleted.expect("deleted after the grace period");
    assert!(deleted_ms >= second + grace_ms && deleted_ms < second + grace_ms + 10_000);
    let state = chain.ledger.state();
    assert!(matches!(
        state.contract(c).expect("c").state,
        ContractState::Deleted {
            reason: DeleteReason::OutOfFunds,
            ..
        }
    ));
    // Capacity released; the unpaid time is a written-off bill; bills cover the whole life.
    let n = state.node(node).expect("node");
    assert!(n.used.is_zero());
    assert_eq!(n.contracts, 0);
    let last = state.bills_newest_first(c, u64::MAX).next().expect("last");
    assert_eq!(last.status, BillStatus::WrittenOff);
    assert_eq!(last.tokens, Amount::ZERO);
    let created = state.contract(c).expect("c").created_ms;
    let covered: u64 = state.bills(c, 0).map(|b| b.to_ms - b.from_ms).sum();
    assert_eq!(covered, deleted_ms - created);
    assert!(state.supply_is_conserved());
    assert!(state.contracts_due(u64::MAX).next().is_none());
}

#[test]
fn network_usage_is_reported_by_the_hosting_node_and_billed_with_the_next_bill() {
    let mut chain = Chain::new();
    let (_, node) = grid(&mut chain);
    let c = contract_id(&chain.ok(1, &key(5), deploy(node, 1, 2, 0, 0)));
    let usage = Payload::ReportUsage {
        contract: c,
        nu_bytes: 4_000_000_000,
    };
    assert!(matches!(
        chain.err(1, &key(5), usage.clone()),
        TxError::NotNodeKey { .. }
    ));
    assert!(matches!(
        chain.err(
            1,
            &key(40),
            Payload::ReportUsage {
                contract: 99,
                nu_bytes: 1
            }
        ),
        TxError::UnknownContract(99)
    ));
    let events = chain.ok(1, &key(40), usage);
    assert!(events.contains(&Event::UsageReported {
        contract: c,
        node,
        nu_bytes: 4_000_000_000
    }));
    chain.block(10, &[]);
    let bill = chain
        .ledger
        .state()
        .bills(c, 0)
        .next()
        .expect("bill")
        .clone();
    // 4 GB at 0.05 USD = 0.2 USD.
    assert_eq!(bill.nu_bytes, 4_000_000_000);
    assert_eq!(bill.nu_uusd, 200_000);
    assert_eq!(
        chain
            .ledger
            .state()
            .contract(c)
            .expect("c")
            .unbilled_nu_bytes,
        0
    );
    // The node's period counters know it too, for its reward.
    let up = chain.ledger.state().node_uptime(node).expect("counters");
    assert_eq!(up.current.nu_bytes, 4_000_000_000);
}

#[test]
fn usage_reported_in_the_block_of_a_bill_waits_for_the_next_bill_and_no_bill_is_lost() {
    let mut chain = Chain::new();
    let (_, node) = grid(&mut chain);
    let c = contract_id(&chain.ok(1, &key(5), deploy(node, 1, 2, 0, 0)));
    // One block, when the contract is due (devnet interval: 10 s): the update bills the time
    // so far, then the node reports usage, then billing finds the contract due with no time
    // elapsed. Billing the usage then would make a bill of no time starting where the next
    // bill starts, and the next would overwrite it.
    let update = chain.tx(
        &key(5),
        0,
        Payload::UpdateContract {
            contract: c,
            deployment_hash: Hash::of(b"d2"),
            resources: Capacity {
                cru: 2,
                mru: 2 << 30,
                sru: 0,
                hru: 0,
            },
        },
    );
    let usage = chain.tx(
        &key(40),
        0,
        Payload::ReportUsage {
            contract: c,
            nu_bytes: 4_000_000_000,
        },
    );
    let out = chain.block(10, &[update, usage]);
    assert!(
        out.receipts.iter().all(|r| r.result.is_ok()),
        "{:?}",
        out.receipts
    );
    chain.block(10, &[]);
    let state = chain.ledger.state();
    let bills: Vec<_> = state.bills(c, 0).cloned().collect();
    assert_eq!(bills.len(), 2, "{bills:#?}");
    assert_eq!(
        bills[0].nu_bytes, 0,
        "the update billed the time before the usage"
    );
    assert_eq!(bills[1].from_ms, bills[0].to_ms);
    assert_eq!(
        bills[1].nu_bytes, 4_000_000_000,
        "billed with the next bill"
    );
    let sum: u64 = bills.iter().map(|b| b.tokens.0).sum();
    assert_eq!(
        state.economy().billed_total.0,
        sum,
        "every paid bill is kept"
    );
}

#[test]
fn nodes_are_rewarded_once_per_period_with_a_receipt() {
    let mut chain = Chain::new();
    let farm = chain.farm(&key(4), "farm-a", vec![]);
    let honest = key(40);
    let liar = key(41);
    let silent = key(42);
    for k in [&honest, &liar, &silent] {
        chain.ok(1, &key(4), transfer(k, Amount::tokens(1)));
    }
    let n_honest = chain.node(&key(4), farm, &honest);
    let n_liar = chain.node(&key(4), farm, &liar);
    let n_silent = chain.node(&key(4), farm, &silent);
    let registered_ms = chain
        .ledger
        .state()
        .node(n_honest)
        .expect("n")
        .registered_ms;
    let (start, end) = chain.ledger.state().period_bounds(0);
    assert_eq!(start, GENESIS_MS);
    // Reports every 10 s, booted long before registration; the liar's uptime jumps once.
    let mut uptime = 100_000u64;
    let mut jumped = false;
    let mut minted = Vec::new();
    while minted.is_empty() {
        chain.now_ms += 10_000;
        uptime += 10;
        let ts = chain.now_ms / 1000;
        let report = |node: u32, up: u64| Payload::ReportUptime {
            node,
            uptime_secs: up,
            timestamp_secs: ts,
        };
        let liar_up = if chain.now_ms > start + 300_000 && !jumped {
            jumped = true;
            uptime + 5_000
        } else if jumped {
            uptime + 5_000
        } else {
            uptime
        };
        let txs = vec![
            chain.tx(&honest, 0, report(n_honest, uptime)),
            chain.tx(&liar, 0, report(n_liar, liar_up)),
        ];
        let out = chain.block(0, &txs);
        assert!(out.receipts.iter().all(|r| r.result.is_ok()));
        minted = out
            .end_events
            .iter()
            .filter(|e| matches!(e, Event::RewardMinted { .. }))
            .cloned()
            .collect();
        assert!(
            chain.now_ms < end + 60_000,
            "minted within the settle delay"
        );
    }
    assert_eq!(minted.len(), 3, "one receipt per node registered");
    let state = chain.ledger.state();

    let r = state.receipt(0, n_honest).expect("receipt");
    assert_eq!(r.counted_from_ms, registered_ms);
    assert_eq!(r.period_secs, (end - registered_ms) / 1000);
    // Reports straddle the period's end: the tail is credited by the first report after it.
    assert_eq!(r.up_secs, r.period_secs);
    assert_eq!(r.steps.uptime_permille, 1000);
    assert!(r.steps.sla_met);
    // 8 cores, 32 GiB, 1 TiB SSD, 4 TiB HDD: 7.75 CU and 7.509333 SU, 26.109333 USD a month.
    assert_eq!(r.steps.units.cu_micro, 7_750_000);
    assert_eq!(
        r.steps.capacity_uusd,
        (26_109_333u128 * r.period_secs as u128 / MONTH_SECS as u128) as u64
    );
    assert_eq!(r.steps.reward_uusd, r.steps.capacity_uusd);
    assert_eq!(
        r.tokens,
        Amount(r.steps.reward_uusd * 10_000_000 / r.connection_price_uusd)
    );
    assert!(r.tokens > Amount::ZERO);
    assert_eq!(r.payout, key(4).account());
    let text = r.render();
    for line in [
        "uptime counted",
        "SLA",
        "violations      none",
        "tokens",
        "CU              min(cru·2",
    ] {
        assert!(text.contains(line), "{line} missing from\n{text}");
    }

    let r = state.receipt(0, n_liar).expect("receipt");
    assert_eq!(r.violation_count, 1);
    assert!(matches!(
        r.violations[0].kind,
        ViolationKind::UptimeBeyondElapsed {
            gained_secs: 5_010,
            elapsed_secs: 10
        }
    ));
    assert_eq!((r.steps.reward_uusd, r.tokens), (0, Amount::ZERO));
    assert!(r.render().contains("uptime grew 5010 s"));
    assert!(
        r.render()
            .contains("reward          0.000000 USD (a violation zeroes the period)")
    );

    let r = state.receipt(0, n_silent).expect("receipt");
    assert_eq!((r.up_secs, r.reports), (0, 0));
    assert!(!r.steps.sla_met);
    assert_eq!(r.tokens, Amount::ZERO);
    // A receipt below the SLA writes no product that would not give what was paid.
    let text = r.render();
    assert!(
        text.contains("reward          0.000000 USD (the SLA was not met)"),
        "{text}"
    );

    // Minted once, into supply; receipts are findable by farm, newest first.
    let honest_tokens = state.receipt(0, n_honest).expect("r").tokens;
    assert_eq!(state.globals().minted, honest_tokens);
    assert!(state.supply_is_conserved());
    assert_eq!(
        state
            .receipts_of_farm(farm, (u64::MAX, u32::MAX))
            .map(|r| r.node)
            .collect::<Vec<_>>(),
        vec![n_silent, n_liar, n_honest]
    );
    assert_eq!(state.economy().mint_period, 1);
    // Nothing more for period 0 in later blocks.
    let out = chain.block(10, &[]);
    assert!(
        !out.end_events
            .iter()
            .any(|e| matches!(e, Event::RewardMinted { .. }))
    );
}

#[test]
fn silence_beyond_two_report_intervals_is_not_rewarded_as_it_is_not_billed() {
    let mut chain = Chain::new();
    let (steady, frozen) = two_nodes(&mut chain);
    // Both booted long before registration and never restart; from the 20th report the
    // frozen node sends none for 60 s (its process stopped, its uptime counter running on),
    // so 70 s pass between two of its reports. The first 20 s after its last report still
    // count as up, for billing as for rewards; the 50 s after do not.
    let mut step = 0u64;
    loop {
        chain.now_ms += 10_000;
        step += 1;
        let ts = chain.now_ms / 1000;
        let uptime = ts - GENESIS_MS / 1000 + 100_000;
        let mut txs = vec![chain.tx(
            &key(40),
            0,
            Payload::ReportUptime {
                node: steady,
                uptime_secs: uptime,
                timestamp_secs: ts,
            },
        )];
        if !(20..26).contains(&step) {
            txs.push(chain.tx(
                &key(41),
                0,
                Payload::ReportUptime {
                    node: frozen,
                    uptime_secs: uptime,
                    timestamp_secs: ts,
                },
            ));
        }
        let out = chain.block(0, &txs);
        assert!(out.receipts.iter().all(|r| r.result.is_ok()), "{out:?}");
        if out
            .end_events
            .iter()
            .any(|e| matches!(e, Event::MintingPeriodClosed { period: 0 }))
        {
            break;
        }
    }
    let state = chain.ledger.state();
    let (s, f) = (
        state.receipt(0, steady).expect("receipt"),
        state.receipt(0, frozen).expect("receipt"),
    );
    assert_eq!(s.up_secs, s.period_secs);
    assert_eq!(f.period_secs - f.up_secs, 50, "{f:?}");
    assert_eq!(
        state.node(frozen).expect("node").down_ms,
        50_000,
        "the same 50 s the bills leave out"
    );
}

/// Boot time (node clock s) of a node booted 100,000 s before genesis.
const BOOTED_LONG_AGO: u64 = GENESIS_MS / 1000 - 100_000;

/// A report at `now_ms` of a node that booted at `boot_secs` and never restarted since.
fn report_since(chain: &Chain, k: &Keypair, node: u32, boot_secs: u64) -> SignedTx {
    let ts = chain.now_ms / 1000;
    let uptime_secs = ts - boot_secs;
    chain.tx(
        k,
        0,
        Payload::ReportUptime {
            node,
            uptime_secs,
            timestamp_secs: ts,
        },
    )
}

/// A report at `now_ms` of a node booted long ago and never restarted.
fn steady_report(chain: &Chain, k: &Keypair, node: u32) -> SignedTx {
    report_since(chain, k, node, BOOTED_LONG_AGO)
}

/// Both nodes (keys 40 and 41, booted at `boots`) report every 10 s until period 0 is
/// minted; returns their receipts.
fn report_every_10_s_until_minted(
    chain: &mut Chain,
    nodes: [u32; 2],
    boots: [u64; 2],
) -> (RewardReceipt, RewardReceipt) {
    loop {
        chain.now_ms += 10_000;
        let txs = [
            report_since(chain, &key(40), nodes[0], boots[0]),
            report_since(chain, &key(41), nodes[1], boots[1]),
        ];
        let out = chain.block(0, &txs);
        assert!(out.receipts.iter().all(|r| r.result.is_ok()), "{out:?}");
        if out
            .end_events
            .iter()
            .any(|e| matches!(e, Event::MintingPeriodClosed { period: 0 }))
        {
            let state = chain.ledger.state();
            let receipt = |n| state.receipt(0, n).expect("receipt").clone();
            return (receipt(nodes[0]), receipt(nodes[1]));
        }
    }
}

/// Nodes (key seed, id) report every 10 s in their own blocks up to 5 s before `end_ms`.
fn report_until_5_s_before(chain: &mut Chain, end_ms: u64, nodes: &[(u8, u32)]) {
    chain.now_ms += (end_ms - 5_000 - chain.now_ms) % 10_000;
    report_every_10_s(chain, nodes, (end_ms - 5_000 - chain.now_ms) / 10_000);
    assert_eq!(chain.now_ms, end_ms - 5_000);
}

/// `blocks` blocks 10 s apart, each with a report of each node (key seed, id).
fn report_every_10_s(chain: &mut Chain, nodes: &[(u8, u32)], blocks: u64) {
    for _ in 0..blocks {
        chain.now_ms += 10_000;
        report_now(chain, nodes);
    }
}

/// One block at `now_ms` with a report of each node (key seed, id), booted long ago.
fn report_now(chain: &mut Chain, nodes: &[(u8, u32)]) -> BlockOutcome {
    let txs: Vec<SignedTx> = nodes
        .iter()
        .map(|&(seed, id)| steady_report(chain, &key(seed), id))
        .collect();
    let out = chain.block(0, &txs);
    assert!(out.receipts.iter().all(|r| r.result.is_ok()), "{out:?}");
    out
}

/// Nodes report from `now_ms` on, every 10 s, until `node`'s receipt of period 0 is
/// minted (ten blocks at most); returns it.
fn report_until_receipt(chain: &mut Chain, nodes: &[(u8, u32)], node: u32) -> RewardReceipt {
    for _ in 0..10 {
        if let Some(r) = chain.ledger.state().receipt(0, node) {
            return r.clone();
        }
        report_now(chain, nodes);
        chain.now_ms += 10_000;
    }
    panic!("period 0 was not minted")
}

/// Two nodes report every 10 s; then the ledger makes no block for 70 s (two of four
/// validators stopped), and the block after it carries both nodes' reports: one ran through
/// the stall, the other rebooted 20 s before that block. Returns period 0's receipts and
/// the first node's time not billed.
fn a_ledger_stalled_for_70_s(ledger_rules: u64) -> (RewardReceipt, RewardReceipt, u64) {
    let mut chain = Chain::with_rules(ledger_rules);
    let (steady, rebooted) = two_nodes(&mut chain);
    report_every_10_s(&mut chain, &[(40, steady), (41, rebooted)], 20);
    chain.now_ms += 70_000;
    let boot = chain.now_ms / 1000 - 20;
    let txs = [
        steady_report(&chain, &key(40), steady),
        report_since(&chain, &key(41), rebooted, boot),
    ];
    let out = chain.block(0, &txs);
    assert!(out.receipts.iter().all(|r| r.result.is_ok()), "{out:?}");
    let down_ms = chain.ledger.state().node(steady).expect("node").down_ms;
    let (s, r) =
        report_every_10_s_until_minted(&mut chain, [steady, rebooted], [BOOTED_LONG_AGO, boot]);
    (s, r, down_ms)
}

#[test]
fn a_stalled_ledger_is_not_the_down_time_of_nodes_that_ran_through_it() {
    let (steady, rebooted, not_billed_ms) = a_ledger_stalled_for_70_s(2);
    // The node whose uptime shows it ran through the stall is up for the whole period.
    assert_eq!(steady.up_secs, steady.period_secs, "{steady:?}");
    assert!(steady.tokens.0 > 0, "{steady:?}");
    // The one that rebooted is up from its boot only: 70 s of gap, 20 s since the boot.
    assert_eq!(rebooted.period_secs - rebooted.up_secs, 50, "{rebooted:?}");
    // Nobody is billed for the time the ledger could not hear the node: 70 s of silence
    // less the two intervals (20 s) still counted up.
    assert_eq!(not_billed_ms, 50_000);
}

#[test]
fn chains_made_before_ledger_rules_2_count_a_stall_as_every_nodes_down_time() {
    let (steady, rebooted, not_billed_ms) = a_ledger_stalled_for_70_s(1);
    // The 50 s past the two intervals counted as down, which takes the period below the SLA.
    assert_eq!(steady.period_secs - steady.up_secs, 50, "{steady:?}");
    assert_eq!(steady.tokens.0, 0, "{steady:?}");
    // The 20 s since the reboot fell after that bound too: the whole 70 s are lost.
    assert_eq!(rebooted.period_secs - rebooted.up_secs, 70, "{rebooted:?}");
    assert_eq!(not_billed_ms, 50_000);
}

/// Two nodes report every 10 s up to 5 s before period 0 ends; the ledger makes no block
/// until 60 s after the end, and that block carries no report (the nodes' reports come in
/// the next one, a second later). Returns whether that first block minted period 0, and
/// the first node's receipt.
fn a_ledger_stalled_across_a_period_end(ledger_rules: u64) -> (bool, RewardReceipt) {
    let mut chain = Chain::with_rules(ledger_rules);
    let (a, b) = two_nodes(&mut chain);
    let (_, end_ms) = chain.ledger.state().period_bounds(0);
    report_until_5_s_before(&mut chain, end_ms, &[(40, a), (41, b)]);
    chain.now_ms = end_ms + 60_000;
    let out = chain.block(0, &[]);
    let minted_at_once = out
        .end_events
        .iter()
        .any(|e| matches!(e, Event::MintingPeriodClosed { period: 0 }));
    chain.now_ms += 1_000;
    report_now(&mut chain, &[(40, a), (41, b)]);
    if minted_at_once {
        let receipt = chain.ledger.state().receipt(0, a).expect("receipt").clone();
        return (true, receipt);
    }
    let (receipt, _) = report_every_10_s_until_minted(&mut chain, [a, b], [BOOTED_LONG_AGO; 2]);
    (false, receipt)
}

/// A node whose reports fall late in their windows: its last report 8 s before the last
/// block, the stall, and its next report 5 s after the first block after it. The heads of
/// the gap (the idle rest and 10 s) and those seconds are within what is allowed.
#[test]
fn a_stall_between_reports_late_in_their_windows_is_credited_whole() {
    let mut chain = Chain::new();
    let (a, b) = two_nodes(&mut chain);
    report_every_10_s(&mut chain, &[(40, a), (41, b)], 20);
    chain.block(8, &[]);
    chain.block(60, &[]);
    chain.now_ms += 5_000;
    report_now(&mut chain, &[(40, a), (41, b)]);
    // 73 s of silence, 49 s of it outage (60 s less the head): 24 s heard, more than the
    // two intervals (20 s), within them and the gap's head.
    assert_eq!(chain.ledger.state().economy().outage_ms, 49_000);
    let (s, _) = report_every_10_s_until_minted(&mut chain, [a, b], [BOOTED_LONG_AGO; 2]);
    assert_eq!(s.up_secs, s.period_secs, "{s:?}");
}

/// A node that fell silent while the ledger ran gets nothing for an outage that came after:
/// its silence before the outage is already past the two intervals.
#[test]
fn an_outage_after_a_node_fell_silent_is_not_credited_to_it() {
    let mut chain = Chain::new();
    let (steady, silent) = two_nodes(&mut chain);
    let report_steady = |chain: &mut Chain, secs: u64| {
        chain.now_ms += secs * 1000;
        let tx = steady_report(chain, &key(40), steady);
        chain.block(0, &[tx]);
    };
    report_every_10_s(&mut chain, &[(40, steady), (41, silent)], 20);
    // 60 s of blocks without the second node's reports, then 70 s without any block.
    for _ in 0..6 {
        report_steady(&mut chain, 10);
    }
    report_steady(&mut chain, 70);
    let (s, f) = report_every_10_s_until_minted(&mut chain, [steady, silent], [BOOTED_LONG_AGO; 2]);
    assert_eq!(s.up_secs, s.period_secs, "{s:?}");
    // 140 s of silence (its next report comes 10 s after the stall), 20 s of it still
    // counted as up, as before rules 2.
    assert_eq!(f.period_secs - f.up_secs, 120, "{f:?}");
}

/// The ledger stalls from a second after period 0 ends until 5 s before period 1 does;
/// the block after the stall carries both nodes' reports. Minting period 0 must not wait
/// into period 2, where a node's next report would roll its counters past period 0.
#[test]
fn a_stall_through_most_of_the_next_period_still_mints_the_period_whole() {
    let mut chain = Chain::new();
    let (a, b) = two_nodes(&mut chain);
    let (start_ms, end_ms) = chain.ledger.state().period_bounds(0);
    let len_ms = end_ms - start_ms;
    report_until_5_s_before(&mut chain, end_ms, &[(40, a), (41, b)]);
    chain.now_ms = end_ms + 1_000;
    chain.block(0, &[]);
    chain.now_ms = end_ms + len_ms - 5_000;
    let receipt = report_until_receipt(&mut chain, &[(40, a), (41, b)], a);
    assert_eq!(receipt.up_secs, receipt.period_secs, "{receipt:?}");
}

/// Both nodes report every 10 s up to 5 s before period 0 ends; the ledger makes no block
/// until 30 s into period 2, and that block carries both reports. Returns the first
/// node's receipt for period 0.
fn a_ledger_stalled_longer_than_a_period(ledger_rules: u64) -> RewardReceipt {
    let mut chain = Chain::with_rules(ledger_rules);
    let (a, b) = two_nodes(&mut chain);
    let (start_ms, end_ms) = chain.ledger.state().period_bounds(0);
    report_until_5_s_before(&mut chain, end_ms, &[(40, a), (41, b)]);
    chain.now_ms = end_ms + (end_ms - start_ms) + 30_000;
    report_until_receipt(&mut chain, &[(40, a), (41, b)], a)
}

#[test]
fn a_stall_longer_than_a_period_still_mints_the_period_whole() {
    // The report after the stall would roll the node's counters past period 0, which is
    // not minted yet: its receipt is minted from them first.
    let receipt = a_ledger_stalled_longer_than_a_period(2);
    assert_eq!(receipt.up_secs, receipt.period_secs, "{receipt:?}");
    assert!(receipt.tokens.0 > 0, "{receipt:?}");
    // Before rules 2 the same report dropped the period's counters before it was minted.
    let receipt = a_ledger_stalled_longer_than_a_period(1);
    assert_eq!(receipt.up_secs, 0, "{receipt:?}");
}

/// A stall through the whole of periods 1 and 2: the node's report after it mints period
/// 1, which no counters held, from the report's credit alone.
#[test]
fn a_stall_through_whole_periods_credits_each_of_them() {
    let mut chain = Chain::new();
    let (a, b) = two_nodes(&mut chain);
    let (start_ms, end_ms) = chain.ledger.state().period_bounds(0);
    let len_ms = end_ms - start_ms;
    report_until_5_s_before(&mut chain, end_ms, &[(40, a), (41, b)]);
    chain.now_ms = end_ms + 2 * len_ms + 30_000;
    report_now(&mut chain, &[(40, a), (41, b)]);
    let state = chain.ledger.state();
    for period in [0, 1] {
        let r = state.receipt(period, a).expect("minted by the report");
        assert_eq!(r.up_secs, r.period_secs, "period {period}: {r:?}");
        assert!(r.tokens.0 > 0, "{r:?}");
    }
}

/// A node's public IP is billed in the first block after a stall longer than a period,
/// before its report: the billing moves its counters on, so period 0 is minted from them
/// then (without the few seconds since its last report, which its report would have added).
#[test]
fn billing_after_a_long_stall_mints_the_period_it_moves_the_counters_past() {
    let mut chain = Chain::new();
    let farm = chain.farm(&key(4), "farm-a", vec![ip(10)]);
    chain.ok(1, &key(4), transfer(&key(40), Amount::tokens(1)));
    let node = chain.node(&key(4), farm, &key(40));
    chain.ok(1, &key(5), deploy(node, 1, 1, 10, 1));
    let (start_ms, end_ms) = chain.ledger.state().period_bounds(0);
    report_until_5_s_before(&mut chain, end_ms, &[(40, node)]);
    chain.now_ms = end_ms + (end_ms - start_ms) + 30_000;
    chain.block(0, &[]);
    let r = chain
        .ledger
        .state()
        .receipt(0, node)
        .expect("minted when the bill moved the counters")
        .clone();
    assert!(r.ip_secs > 0, "{r:?}");
    assert_eq!(r.period_secs - r.up_secs, 5, "{r:?}");
}

#[test]
fn minting_waits_for_reports_after_a_stall_across_the_period_end() {
    let (minted_at_once, receipt) = a_ledger_stalled_across_a_period_end(2);
    assert!(
        !minted_at_once,
        "period 0 minted before any node could report its end"
    );
    assert_eq!(receipt.up_secs, receipt.period_secs, "{receipt:?}");
    // Before rules 2 the first block after the stall minted it, without the period's last 5 s.
    let (minted_at_once, receipt) = a_ledger_stalled_across_a_period_end(1);
    assert!(minted_at_once);
    assert_eq!(receipt.period_secs - receipt.up_secs, 5, "{receipt:?}");
}

#[test]
fn a_clock_drifting_from_the_uptime_counter_over_a_boot_zeroes_the_period() {
    let mut chain = Chain::new();
    let farm = chain.farm(&key(4), "farm-a", vec![]);
    // `steady` counts uptime right, its clock wanders 60 s either side of ledger time (the
    // most a report may be off); `slow`'s clock is right but its uptime counter gains only
    // 5 s every 10 s, so the boot time its reports imply moves 5 s later per report.
    let steady = key(40);
    let slow = key(41);
    for k in [&steady, &slow] {
        chain.ok(1, &key(4), transfer(k, Amount::tokens(1)));
    }
    let n_steady = chain.node(&key(4), farm, &steady);
    let n_slow = chain.node(&key(4), farm, &slow);
    let skew_max = chain.ledger.state().params().clock_skew_max_secs;
    assert_eq!(
        (skew_max, chain.ledger.state().params().uptime_drift_secs),
        (120, 60)
    );
    let (_, end) = chain.ledger.state().period_bounds(0);
    let (mut up_steady, mut up_slow) = (100_000u64, 100_000u64);
    let mut reports = 0u64;
    let mut first_violation = None;
    let mut minted = false;
    while !minted {
        chain.now_ms += 10_000;
        up_steady += 10;
        up_slow += 5;
        reports += 1;
        let now_secs = chain.now_ms / 1000;
        let wander = if reports.is_multiple_of(2) {
            now_secs + 60
        } else {
            now_secs - 60
        };
        let txs = vec![
            chain.tx(
                &steady,
                0,
                Payload::ReportUptime {
                    node: n_steady,
                    uptime_secs: up_steady,
                    timestamp_secs: wander,
                },
            ),
            chain.tx(
                &slow,
                0,
                Payload::ReportUptime {
                    node: n_slow,
                    uptime_secs: up_slow,
                    timestamp_secs: now_secs,
                },
            ),
        ];
        let out = chain.block(0, &txs);
        for r in &out.receipts {
            let events = r.result.as_ref().expect("every report is accepted");
            for e in events {
                if let Event::UptimeViolation { node, .. } = e {
                    assert_eq!(*node, n_slow, "the steady clock is never a violation");
                    first_violation.get_or_insert(reports);
                }
            }
        }
        minted = out
            .end_events
            .iter()
            .any(|e| matches!(e, Event::MintingPeriodClosed { period: 0 }));
        assert!(
            chain.now_ms < end + 60_000,
            "minted within the settle delay"
        );
    }
    // Each report is within 5 s of the one before (the same boot); the 26th, 25 reports
    // after the first, implies a boot 125 s from the first one seen: more than 120 s.
    assert_eq!(first_violation, Some(26));
    let state = chain.ledger.state();

    let r = state.receipt(0, n_slow).expect("receipt");
    assert!(r.violation_count >= 1, "{r:#?}");
    let ViolationKind::ClockSkew {
        first_boot_secs,
        boot_secs,
        skew_secs,
        max_secs,
    } = r.violations[0].kind
    else {
        panic!("expected clock skew: {:?}", r.violations);
    };
    assert_eq!((skew_secs, max_secs), (125, 120));
    assert_eq!(boot_secs - first_boot_secs, 125);
    // It was up the whole period by any count, but the violation zeroes it.
    assert!(r.steps.sla_met, "{r:#?}");
    assert_eq!((r.steps.reward_uusd, r.tokens), (0, Amount::ZERO));
    let text = r.render();
    assert!(
        text.contains("clock skew: implies a boot at") && text.contains("125 s from the boot"),
        "{text}"
    );

    let r = state.receipt(0, n_steady).expect("receipt");
    assert_eq!(r.violation_count, 0, "{r:#?}");
    assert!(r.tokens > Amount::ZERO);
}

#[test]
fn farmers_vote_with_the_weight_of_their_nodes() {
    let mut chain = Chain::new();
    let (_, node) = grid(&mut chain);
    let weight = economics::reward_units(&capacity()).weight_micro();
    assert_eq!(
        chain.ledger.state().farmer_weight(&key(4).account()),
        weight
    );
    assert_eq!(chain.ledger.state().economy().farmer_weight_total, weight);
    let _ = node;
    let propose = |uusd| Payload::Propose {
        action: GovAction::SetTokenPrice { uusd },
        description: String::new(),
    };
    let vote = |proposal, approve| Payload::Vote { proposal, approve };

    // Council approves (2 of 3), but the farmers have not spoken and could still outweigh: open.
    chain.ok(1, &key(1), propose(20_000));
    chain.ok(1, &key(2), vote(1, true));
    assert_eq!(
        chain.ledger.state().proposal(1).expect("p").status,
        ProposalStatus::Open
    );
    // A stranger with no nodes cannot vote.
    assert_eq!(
        chain.err(1, &key(7), vote(1, true)),
        TxError::NotCouncilMember(key(7).account())
    );
    // The only farmer approves: the outcome can no longer change.
    let events = chain.ok(1, &key(4), vote(1, true));
    assert!(events.contains(&Event::Voted {
        proposal: 1,
        voter: key(4).account(),
        approve: true,
        council: false,
        weight_micro: weight
    }));
    let state = chain.ledger.state();
    assert!(matches!(
        state.proposal(1).expect("p").status,
        ProposalStatus::Executed { .. }
    ));
    assert_eq!(state.params().token_price_uusd, 20_000);
    assert_eq!(state.proposal(1).expect("p").farmer_weight_for, weight);
    assert_eq!(state.votes(1).count(), 3);

    // Council approves, farmers against: rejected at once.
    chain.ok(1, &key(1), propose(30_000));
    chain.ok(1, &key(2), vote(2, true));
    chain.ok(1, &key(4), vote(2, false));
    assert!(matches!(
        chain.ledger.state().proposal(2).expect("p").status,
        ProposalStatus::Rejected { .. }
    ));
    assert_eq!(chain.ledger.state().params().token_price_uusd, 20_000);

    // Council approves, farmers silent: passes at expiry (0 for ≥ 0 against).
    chain.ok(1, &key(1), propose(40_000));
    chain.ok(1, &key(2), vote(3, true));
    let ttl = chain.ledger.state().params().proposal_ttl_secs;
    chain.block(ttl, &[]);
    assert!(matches!(
        chain.ledger.state().proposal(3).expect("p").status,
        ProposalStatus::Executed { .. }
    ));
    assert_eq!(chain.ledger.state().params().token_price_uusd, 40_000);
}

/// Pass `action`: council keys 1 and 2 approve, then the only farmer (key 4) does, so no
/// undecided weight is left and it executes at once.
fn pass(chain: &mut Chain, action: GovAction) {
    let events = chain.ok(
        1,
        &key(1),
        Payload::Propose {
            action,
            description: String::new(),
        },
    );
    let proposal = events
        .iter()
        .find_map(|e| match e {
            Event::ProposalCreated { proposal, .. } => Some(*proposal),
            _ => None,
        })
        .expect("proposed");
    chain.ok(
        1,
        &key(2),
        Payload::Vote {
            proposal,
            approve: true,
        },
    );
    chain.ok(
        1,
        &key(4),
        Payload::Vote {
            proposal,
            approve: true,
        },
    );
    assert!(matches!(
        chain.ledger.state().proposal(proposal).expect("p").status,
        ProposalStatus::Executed { .. }
    ));
}

/// Uptime reports every 10 s until period 0 is minted. Each node booted long before
/// registration; `rebooted[i]`, if set, is a step at which node `i` misses its report and,
/// at the next one, says it booted 5 s before: 15 s of its period are not counted.
fn report_until_minted(chain: &mut Chain, nodes: &[(&Keypair, u32)], rebooted: &[Option<u64>]) {
    let mut uptime = vec![100_000u64; nodes.len()];
    let mut step = 0u64;
    loop {
        chain.now_ms += 10_000;
        step += 1;
        let mut txs = Vec::new();
        for (i, (k, node)) in nodes.iter().enumerate() {
            uptime[i] += 10;
            match rebooted.get(i).copied().flatten() {
                Some(at) if step == at => continue,
                Some(at) if step == at + 1 => uptime[i] = 5,
                _ => {}
            }
            txs.push(chain.tx(
                k,
                0,
                Payload::ReportUptime {
                    node: *node,
                    uptime_secs: uptime[i],
                    timestamp_secs: chain.now_ms / 1000,
                },
            ));
        }
        let out = chain.block(0, &txs);
        assert!(out.receipts.iter().all(|r| r.result.is_ok()), "{out:?}");
        if out
            .end_events
            .iter()
            .any(|e| matches!(e, Event::MintingPeriodClosed { period: 0 }))
        {
            return;
        }
    }
}

/// A farm of key 4 with nodes of keys 40 and 41, funded for fees.
fn two_nodes(chain: &mut Chain) -> (u32, u32) {
    let farm = chain.farm(&key(4), "farm-a", vec![]);
    for k in [40, 41] {
        chain.ok(1, &key(4), transfer(&key(k), Amount::tokens(1)));
    }
    (
        chain.node(&key(4), farm, &key(40)),
        chain.node(&key(4), farm, &key(41)),
    )
}

#[test]
fn a_pricing_policy_voted_in_prices_the_next_bill() {
    let mut chain = Chain::new();
    let (_, node) = grid(&mut chain);
    // 1 CU, 0.5 SU, one IPv4: 22 + 7 + 4 = 33 USD a month; 10 s = 125 µUSD (see above).
    let c = contract_id(&chain.ok(1, &key(5), deploy(node, 2, 4, 100, 1)));
    chain.block(10, &[]);
    let first = chain
        .ledger
        .state()
        .bills(c, 0)
        .next()
        .expect("bill")
        .clone();
    assert_eq!(first.resources_uusd, 125);

    // The council and the farmer double the price of a CU.
    let pricing = PricingPolicy {
        cu_uusd_month: 44_000_000,
        ..PricingPolicy::default()
    };
    pass(&mut chain, GovAction::SetPricingPolicy(pricing.clone()));
    assert_eq!(chain.ledger.state().params().pricing, pricing);

    // The next bill: 44 + 7 + 4 = 55 USD a month; 10 s = 55e6 · 10 / 2,630,880 = 209.05 → 209
    // µUSD, at 0.01 USD a token 209,000 units.
    chain.block(7, &[]);
    let bills: Vec<_> = chain.ledger.state().bills(c, 0).cloned().collect();
    assert_eq!(bills.len(), 2);
    assert_eq!(bills[1].from_ms, first.to_ms);
    assert_eq!(bills[1].to_ms - bills[1].from_ms, 10_000);
    assert_eq!(bills[1].resources_uusd, 209);
    assert_eq!(bills[1].tokens, Amount(209_000));
}

#[test]
fn a_farming_policy_voted_in_sets_the_rates_and_sla_of_the_next_receipts() {
    let mut chain = Chain::new();
    let (full, gappy) = two_nodes(&mut chain);
    // Twice the CU rate, and a DIY SLA of 99 % instead of 95 %.
    let farming = FarmingPolicy {
        cu_uusd_month: 4_800_000,
        sla_diy_permille: 990,
        sla_certified_permille: 990,
        ..FarmingPolicy::default()
    };
    pass(&mut chain, GovAction::SetFarmingPolicy(farming.clone()));
    report_until_minted(
        &mut chain,
        &[(&key(40), full), (&key(41), gappy)],
        &[None, Some(20)],
    );
    let state = chain.ledger.state();

    // 7.75 CU · 4.8 + 7.509333 SU · 1.0 = 44.709333 USD a month, for the node's share of it.
    let r = state.receipt(0, full).expect("receipt");
    assert_eq!(r.farming, farming);
    assert_eq!(r.up_secs, r.period_secs);
    assert_eq!(
        r.steps.capacity_uusd,
        (44_709_333u128 * r.period_secs as u128 / MONTH_SECS as u128) as u64
    );
    assert_eq!(r.steps.sla_permille, 990);
    assert_eq!(r.steps.reward_uusd, r.steps.capacity_uusd);
    assert!(r.render().contains("CU 4.800000 USD"), "{}", r.render());

    // Up more than 95 % but less than 99 %: the old SLA would pay, the new one does not.
    let r = state.receipt(0, gappy).expect("receipt");
    assert_eq!(r.up_secs, r.period_secs - 15);
    assert!(r.up_secs * 1000 >= 950 * r.period_secs);
    assert_eq!(r.steps.sla_permille, 990);
    assert!(!r.steps.sla_met);
    assert_eq!(r.tokens, Amount::ZERO);
}

#[test]
fn a_node_certified_by_vote_earns_125_percent_and_is_held_to_98_percent() {
    let mut chain = Chain::new();
    let (full, gappy) = two_nodes(&mut chain);
    for node in [full, gappy] {
        pass(
            &mut chain,
            GovAction::SetNodeCertified {
                node,
                certified: true,
            },
        );
        assert!(chain.ledger.state().node(node).expect("node").certified);
    }
    report_until_minted(
        &mut chain,
        &[(&key(40), full), (&key(41), gappy)],
        &[None, Some(20)],
    );
    let state = chain.ledger.state();

    let r = state.receipt(0, full).expect("receipt");
    assert!(r.certified);
    assert_eq!(r.steps.multiplier_percent, 125);
    assert_eq!(
        r.steps.capacity_multiplied_uusd,
        r.steps.capacity_uusd * 125 / 100
    );
    assert_eq!(r.steps.sla_permille, 980);
    assert_eq!(r.steps.reward_uusd, r.steps.capacity_multiplied_uusd);
    assert!(r.render().contains("certified → ×125 %"), "{}", r.render());

    // Up 97.x %: enough for a DIY node, not for a certified one.
    let r = state.receipt(0, gappy).expect("receipt");
    assert!(r.up_secs * 1000 >= 950 * r.period_secs);
    assert_eq!(r.steps.sla_permille, 980);
    assert!(!r.steps.sla_met);
    assert_eq!(r.tokens, Amount::ZERO);
}

#[test]
fn a_policy_out_of_bounds_is_refused_when_proposed() {
    let mut chain = Chain::new();
    let propose = |action| Payload::Propose {
        action,
        description: String::new(),
    };
    let refused = |e: TxError, what: &str| match e {
        TxError::Field { reason } => assert!(reason.contains(what), "{reason}"),
        other => panic!("expected a field error, got {other:?}"),
    };
    // A tenfold certification bonus.
    let e = chain.err(
        1,
        &key(1),
        propose(GovAction::SetFarmingPolicy(FarmingPolicy {
            certified_multiplier_percent: 1000,
            ..FarmingPolicy::default()
        })),
    );
    refused(e, "certification multiplier of 1000 %");
    // A reward rate in USD typed as µUSD.
    let e = chain.err(
        1,
        &key(1),
        propose(GovAction::SetFarmingPolicy(FarmingPolicy {
            cu_uusd_month: 2_400_000 * 1_000_000,
            ..FarmingPolicy::default()
        })),
    );
    refused(e, "cu_uusd_month of 2400000000000 µUSD is above the limit");
    // Certified nodes held to less than DIY ones.
    let e = chain.err(
        1,
        &key(1),
        propose(GovAction::SetFarmingPolicy(FarmingPolicy {
            sla_certified_permille: 900,
            ..FarmingPolicy::default()
        })),
    );
    refused(
        e,
        "certified uptime threshold of 900 ‰ is below the DIY one",
    );
    // A price too large to be meant.
    let e = chain.err(
        1,
        &key(1),
        propose(GovAction::SetPricingPolicy(PricingPolicy {
            ipv4_uusd_month: u64::MAX,
            ..PricingPolicy::default()
        })),
    );
    refused(e, "ipv4_uusd_month");
    let state = chain.ledger.state();
    assert!(state.proposal(1).is_none(), "nothing was proposed");
    assert_eq!(state.params().farming, FarmingPolicy::default());
}

#[test]
fn a_public_ip_belongs_to_one_farm() {
    let mut chain = Chain::new();
    chain.farm(&key(4), "farm-a", vec![ip(10), ip(11)]);
    assert!(matches!(
        chain.err(
            1,
            &key(5),
            Payload::CreateFarm {
                name: "farm-b".into(),
                public_ips: vec![ip(11)],
            }
        ),
        TxError::PublicIpTaken { farm: 1, .. }
    ));
    let b = chain.farm(&key(5), "farm-b", vec![ip(12)]);
    let update = |ips| Payload::UpdateFarm {
        farm: b,
        name: None,
        public_ips: Some(ips),
        payout: None,
    };
    assert!(matches!(
        chain.err(1, &key(5), update(vec![ip(12), ip(10)])),
        TxError::PublicIpTaken { farm: 1, .. }
    ));
    // Farm A gives up .11; then B may list it, and B's old .12 is free for others.
    chain.ok(
        1,
        &key(4),
        Payload::UpdateFarm {
            farm: 1,
            name: None,
            public_ips: Some(vec![ip(10)]),
            payout: None,
        },
    );
    chain.ok(1, &key(5), update(vec![ip(11)]));
    chain.farm(&key(6), "farm-c", vec![ip(12)]);
}

#[test]
fn discount_levels_must_rise_in_governance_and_genesis() {
    let mut chain = Chain::new();
    let mut pricing = PricingPolicy::default();
    pricing.discounts.push(DiscountLevel {
        min_months_milli: 12_000,
        percent: 70,
    });
    let tx = chain.tx(
        &key(1),
        0,
        Payload::Propose {
            action: GovAction::SetPricingPolicy(pricing.clone()),
            description: String::new(),
        },
    );
    let out = chain.block(1, &[tx]);
    assert!(matches!(
        out.receipts[0].result,
        Err(TxError::Field { ref reason }) if reason.contains("does not rise")
    ));
    let mut g = genesis(1);
    g.params.pricing = pricing;
    assert!(
        g.check()
            .expect_err("refused")
            .to_string()
            .contains("pricing")
    );
}
