//! Properties of billing and minting over long random histories.
//!
//! Histories mix contracts (deployments with public IPs, names, updates, cancels),
//! transfers that top up poor owners, network usage, uptime reports (honest, rebooting,
//! claiming more uptime than elapsed, hiding a reboot, from an uptime counter running
//! fast or slow, all from clocks that wander within the accepted drift), and block gaps
//! from one second to past a grace period or a minting period. After every block:
//! - genesis + minted − burned = the sum of all balances;
//! - every contract's bills are contiguous from its creation to `billed_until_ms`
//!   (no interval billed twice, none skipped), a deleted contract is billed up to its
//!   deletion, and a live one has its next bill in the future;
//! - every balance equals a model replayed from the block's events (fees, transfers,
//!   bills with their split, rewards): owners paid exactly their bills, and payees got
//!   exactly the splits;
//! - the ledger's total billed equals the sum of paid bills;
//! - every accepted uptime report was judged as a model of the rules in
//!   `peergrid_ledger::minting` says: the same violation, or none.
//!
//! Replaying the same blocks on a fresh store gives the same root at every height and
//! the same receipts: minting is a pure function of the history.

mod common;

use std::collections::BTreeMap;

use common::*;
use peergrid_core::tx::{ContractSpec, Payload, sign_invitation};
use peergrid_core::{AccountId, Amount, Capacity, Hash, PublicIp, SignedTx};
use peergrid_ledger::genesis::GenesisBalance;
use peergrid_ledger::{
    BillStatus, BlockContext, ContractState, Event, Genesis, Ledger, MemoryStore, State,
    ViolationKind,
};
use proptest::prelude::*;

/// Rich accounts 1..=2, poor owners 3..=5 (0.05 tokens: a few bills), nodes 20..=22.
fn econ_genesis() -> Genesis {
    let mut g = genesis(2);
    for n in 3..=5u8 {
        g.balances.push(GenesisBalance {
            account: key(n).account(),
            amount: Amount(500_000),
        });
    }
    g
}

const NODES: [u8; 3] = [20, 21, 22];

#[derive(Clone, Debug)]
enum Op {
    TopUp {
        to: u8,
        units: u64,
    },
    Deploy {
        owner: u8,
        node: u32,
        cru: u64,
        ips: u32,
    },
    Name {
        owner: u8,
        name: u8,
    },
    Update {
        owner: u8,
        contract: u64,
        cru: u64,
    },
    Cancel {
        owner: u8,
        contract: u64,
    },
    Usage {
        node: u8,
        contract: u64,
        bytes: u64,
    },
    Uptime {
        node: u8,
        kind: u8,
        /// The node's clock against ledger time, s: within the accepted drift.
        wander: i64,
    },
    EndBlock {
        secs: u64,
    },
}

fn owner() -> impl Strategy<Value = u8> {
    1u8..=5
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => (3u8..=5, 1u64..3_000_000).prop_map(|(to, units)| Op::TopUp { to, units }),
        3 => (owner(), 1u32..=3, 1u64..4, 0u32..2).prop_map(|(owner, node, cru, ips)| Op::Deploy { owner, node, cru, ips }),
        1 => (owner(), 0u8..3).prop_map(|(owner, name)| Op::Name { owner, name }),
        1 => (owner(), 1u64..12, 1u64..4).prop_map(|(owner, contract, cru)| Op::Update { owner, contract, cru }),
        1 => (owner(), 1u64..12).prop_map(|(owner, contract)| Op::Cancel { owner, contract }),
        2 => (0u8..3, 1u64..12, 1u64..5_000_000_000).prop_map(|(node, contract, bytes)| Op::Usage { node: NODES[node as usize], contract, bytes }),
        4 => (0u8..3, 0u8..20, -60i64..=60).prop_map(|(node, kind, wander)| Op::Uptime { node: NODES[node as usize], kind, wander }),
        4 => prop_oneof![4 => 1u64..15, 2 => 15u64..120, 1 => 120u64..700].prop_map(|secs| Op::EndBlock { secs }),
    ]
}

/// Each node's boot time in the test's world, ledger seconds, as its uptime counter tells it.
type Boots = BTreeMap<u8, u64>;

/// How an uptime report must be judged.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Judged {
    /// Not an uptime report.
    NotUptime,
    /// No violation.
    Fine,
    /// This violation.
    Violation(&'static str),
}

fn violation_name(v: &ViolationKind) -> &'static str {
    match v {
        ViolationKind::UptimeBeyondElapsed { .. } => "uptime beyond elapsed",
        ViolationKind::HiddenReboot { .. } => "hidden reboot",
        ViolationKind::ClockSkew { .. } => "clock skew",
    }
}

/// The rules of `peergrid_ledger::minting`, written again from its docs: a report of
/// `uptime` at node clock `ts` and ledger time `now_ms`, after the node's last accepted
/// report in `state`.
fn model(state: &State, node: u32, now_ms: u64, uptime: u64, ts: u64) -> Judged {
    let Some(last) = state.node(node).map(|n| n.uptime) else {
        return Judged::Fine;
    };
    let Some(last_ms) = last.last_report_ms else {
        return Judged::Fine;
    };
    let s = state.params().clock_skew_max_secs as i128;
    let boot = ts as i128 - uptime as i128;
    let previous = last.last_timestamp_secs as i128 - last.last_uptime_secs as i128;
    // Started after the previous report was applied: a restart, whatever `boot` says.
    let restarted = now_ms.saturating_sub(uptime.saturating_mul(1000)) > last_ms;
    if boot < previous - s {
        Judged::Violation("uptime beyond elapsed")
    } else if boot <= previous + s && !restarted {
        if (boot - last.boot_secs as i128).abs() > s {
            Judged::Violation("clock skew")
        } else {
            Judged::Fine
        }
    } else if boot < last.last_timestamp_secs as i128 - s {
        Judged::Violation("hidden reboot")
    } else {
        Judged::Fine
    }
}

fn to_tx(state: &State, op: &Op, now_ms: u64, boots: &mut Boots) -> Option<(SignedTx, Judged)> {
    let nonce = |n: u8| state.account(&key(n).account()).nonce;
    let signed = |n: u8, payload| SignedTx::new(&key(n), CHAIN, nonce(n), payload);
    let tx = match *op {
        Op::TopUp { to, units } => signed(
            1,
            Payload::Transfer {
                to: key(to).account(),
                amount: Amount(units),
            },
        ),
        Op::Deploy {
            owner,
            node,
            cru,
            ips,
        } => signed(
            owner,
            Payload::CreateContract(ContractSpec::Deployment {
                node,
                deployment_hash: Hash::of(&cru.to_le_bytes()),
                resources: Capacity {
                    cru,
                    mru: cru << 30,
                    sru: 10 << 30,
                    hru: 0,
                },
                public_ips: ips,
            }),
        ),
        Op::Name { owner, name } => signed(
            owner,
            Payload::CreateContract(ContractSpec::Name {
                name: format!("app-{name}"),
            }),
        ),
        Op::Update {
            owner,
            contract,
            cru,
        } => signed(
            owner,
            Payload::UpdateContract {
                contract,
                deployment_hash: Hash::of(b"u"),
                resources: Capacity {
                    cru,
                    mru: 1 << 30,
                    sru: 0,
                    hru: 0,
                },
            },
        ),
        Op::Cancel { owner, contract } => signed(owner, Payload::CancelContract { contract }),
        Op::Usage {
            node,
            contract,
            bytes,
        } => signed(
            node,
            Payload::ReportUsage {
                contract,
                nu_bytes: bytes,
            },
        ),
        Op::Uptime { node, kind, wander } => {
            let now_secs = now_ms / 1000;
            let n = state.node_by_account(&key(node).account())?;
            let (id, last) = (n.id, n.uptime);
            let boot = boots.entry(node).or_insert(now_secs - 50_000);
            let ts = now_secs.saturating_add_signed(wander);
            let mut lie = 0;
            match kind {
                // A reboot a few seconds ago.
                0 => *boot = now_secs - 3,
                // A lie: more uptime than the boot allows.
                1 => lie = 1_000,
                // A reboot hidden from the previous report: booted (on the node's clock) more
                // than the tolerance before it, though it showed an older boot (possible only
                // if that boot was more than twice the tolerance before it).
                2 if last.last_report_ms.is_some() && last.last_uptime_secs > 300 => {
                    *boot = (last.last_timestamp_secs - 130).saturating_add_signed(-wander);
                }
                // An uptime counter running slow (more often, so drift adds up past the
                // tolerance) or fast: the boot it implies moves 50 s.
                3..=5 => *boot += 50,
                6 => *boot -= 50,
                _ => {}
            }
            let uptime = (now_secs + lie).saturating_sub(*boot);
            let judged = model(state, id, now_ms, uptime, ts);
            if kind == 2 && last.last_report_ms.is_some() && last.last_uptime_secs > 300 {
                assert_eq!(
                    judged,
                    Judged::Violation("hidden reboot"),
                    "the generator hides a reboot"
                );
            }
            let tx = signed(
                node,
                Payload::ReportUptime {
                    node: id,
                    uptime_secs: uptime,
                    timestamp_secs: ts,
                },
            );
            return Some((tx, judged));
        }
        Op::EndBlock { .. } => return None,
    };
    Some((tx, Judged::NotUptime))
}

/// Check each accepted report of a block was judged as the model said.
fn check_judged(
    receipts: &[peergrid_ledger::TxReceipt],
    judged: &[Judged],
) -> Result<(), TestCaseError> {
    prop_assert_eq!(receipts.len(), judged.len());
    for (r, expected) in receipts.iter().zip(judged) {
        let Ok(events) = &r.result else { continue };
        if *expected == Judged::NotUptime {
            continue;
        }
        let seen: Vec<&'static str> = events
            .iter()
            .filter_map(|e| match e {
                Event::UptimeViolation { violation, .. } => Some(violation_name(violation)),
                _ => None,
            })
            .collect();
        let want: Vec<&'static str> = match expected {
            Judged::Violation(v) => vec![*v],
            _ => vec![],
        };
        prop_assert_eq!(seen, want);
    }
    Ok(())
}

/// Farm of key 1 with three public IPs and nodes 20..=22, each funded for fees.
fn setup(
    ledger: &mut Ledger<MemoryStore>,
    time_ms: &mut u64,
) -> Vec<(BlockContext, Vec<SignedTx>)> {
    let mut blocks = Vec::new();
    let mut run = |ledger: &mut Ledger<MemoryStore>, txs: Vec<SignedTx>, time_ms: &mut u64| {
        *time_ms += 1000;
        let ctx = BlockContext {
            height: ledger.state().height() + 1,
            time_ms: *time_ms,
        };
        let out = ledger.execute_block(ctx, &txs).expect("block");
        assert!(out.receipts.iter().all(|r| r.result.is_ok()), "{out:?}");
        blocks.push((ctx, txs));
    };
    let ips = (0..3)
        .map(|i| PublicIp {
            ip: [185, 0, 0, 10 + i],
            prefix_len: 24,
            gateway: [185, 0, 0, 1],
        })
        .collect();
    let mut txs = vec![SignedTx::new(
        &key(1),
        CHAIN,
        0,
        Payload::CreateFarm {
            name: "farm".into(),
            public_ips: ips,
        },
    )];
    for (i, n) in NODES.iter().enumerate() {
        txs.push(SignedTx::new(
            &key(1),
            CHAIN,
            1 + i as u64,
            Payload::Transfer {
                to: key(*n).account(),
                amount: Amount::tokens(5),
            },
        ));
    }
    run(ledger, txs, time_ms);
    let txs = NODES
        .iter()
        .map(|n| {
            SignedTx::new(
                &key(*n),
                CHAIN,
                0,
                Payload::RegisterNode {
                    farm: 1,
                    capacity: capacity(),
                    location: location(),
                    invitation: sign_invitation(&key(1), CHAIN, 1, &key(*n).account()),
                },
            )
        })
        .collect();
    run(ledger, txs, time_ms);
    blocks
}

/// Every account's balance as the block's events say it should be.
fn apply_events(model: &mut BTreeMap<AccountId, i128>, state: &State, events: &[Event]) {
    let config = state.config();
    for e in events {
        match e {
            Event::FeeBurned { account, amount } => {
                *model.entry(*account).or_default() -= amount.0 as i128
            }
            Event::Transferred { from, to, amount } => {
                *model.entry(*from).or_default() -= amount.0 as i128;
                *model.entry(*to).or_default() += amount.0 as i128;
            }
            Event::ContractBilled {
                contract,
                owner,
                from_ms,
                tokens,
                status,
                ..
            } => {
                let bill = state
                    .bills(*contract, *from_ms)
                    .next()
                    .expect("bill record");
                assert_eq!(bill.tokens, *tokens);
                assert_eq!(bill.status, *status);
                assert_eq!(bill.split.total(), *tokens);
                *model.entry(*owner).or_default() -= tokens.0 as i128;
                let farmer = bill.farmer_payout.unwrap_or(config.foundation);
                *model.entry(farmer).or_default() += bill.split.farmer.0 as i128;
                *model.entry(config.foundation).or_default() += bill.split.foundation.0 as i128;
                *model.entry(config.staking_pool).or_default() += bill.split.staking.0 as i128;
            }
            Event::RewardMinted { payout, tokens, .. } => {
                *model.entry(*payout).or_default() += tokens.0 as i128
            }
            _ => {}
        }
    }
}

fn check_block(state: &State, model: &BTreeMap<AccountId, i128>) -> Result<(), TestCaseError> {
    prop_assert!(state.supply_is_conserved());
    for (account, balance) in model {
        prop_assert_eq!(
            state.account(account).balance.0 as i128,
            *balance,
            "{}",
            account
        );
    }
    let now = state.time_ms();
    let interval_ms = state.params().billing_interval_secs * 1000;
    let mut paid = 0u64;
    for c in state.contracts(1) {
        // Bills past the retention are pruned; their sum stays, and the rest follow on.
        let pruned = state.pruned_bills(c.id).copied().unwrap_or_default();
        paid += pruned.tokens.0;
        let mut cursor = if pruned.count > 0 {
            pruned.until_ms
        } else {
            c.created_ms
        };
        let node = c.node.and_then(|n| state.node(n));
        // What the bills round off below a µUSD passes from each to the next.
        let mut carry = (pruned.count == 0).then_some(0);
        for b in state.bills(c.id, 0) {
            if let Some(carried) = carry {
                prop_assert_eq!(b.carried_in_pusd, carried, "contract {}", c.id);
            }
            prop_assert!(b.carried_out_pusd < 1_000_000, "{:?}", b);
            carry = Some(b.carried_out_pusd);
            prop_assert_eq!(
                b.from_ms,
                cursor,
                "contract {} billed twice or skipped",
                c.id
            );
            prop_assert!(b.to_ms > b.from_ms || b.nu_bytes > 0);
            // Time its node was down is part of the period, and only of a node's contracts.
            prop_assert!(b.node_down_ms <= b.to_ms - b.from_ms, "{:?}", b);
            prop_assert!(node.is_some() || b.node_down_ms == 0);
            if b.status == BillStatus::Paid {
                paid += b.tokens.0;
            } else {
                prop_assert_eq!(b.tokens, Amount::ZERO);
            }
            cursor = b.to_ms;
        }
        prop_assert_eq!(cursor, c.billed_until_ms);
        if let Some(carried) = carry {
            prop_assert_eq!(c.carry_pusd, carried, "contract {}", c.id);
        }
        // The node's down-time counter at the end of the last bill is what the contract
        // holds, so the next bill leaves out exactly the silence since. (The counter reads
        // a time only from the node's last report on: a report closes the silence before.)
        if let Some(n) = node
            && n.uptime
                .last_report_ms
                .is_none_or(|at| at <= c.billed_until_ms)
        {
            prop_assert_eq!(
                c.node_down_counter_ms,
                n.down_ms_until(c.billed_until_ms, state.params()),
                "contract {}",
                c.id
            );
        }
        match c.state {
            ContractState::Deleted { at_ms, .. } => prop_assert_eq!(c.billed_until_ms, at_ms),
            ContractState::Created => {
                prop_assert!(c.next_bill_ms > now);
                prop_assert!(c.next_bill_ms <= c.billed_until_ms.max(now - 1) + interval_ms);
            }
            ContractState::GracePeriod { since_ms } => {
                prop_assert!(c.next_bill_ms > now);
                prop_assert!(c.next_bill_ms <= since_ms + state.params().grace_period_secs * 1000);
            }
        }
    }
    prop_assert_eq!(state.economy().billed_total.0, paid);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    #[test]
    fn billing_and_minting_keep_every_invariant(ops in proptest::collection::vec(op(), 1..160)) {
        let genesis = econ_genesis();
        let mut ledger = Ledger::open(MemoryStore::default(), &genesis).expect("open");
        let mut time_ms = GENESIS_MS;
        let mut blocks = setup(&mut ledger, &mut time_ms);
        let mut model: BTreeMap<AccountId, i128> = ledger
            .state()
            .accounts()
            .map(|(a, acc)| (*a, acc.balance.0 as i128))
            .collect();
        let mut roots: Vec<_> = Vec::new();
        let mut boots = Boots::new();
        let mut pending: Vec<SignedTx> = Vec::new();
        let mut judged: Vec<Judged> = Vec::new();
        let mut scratch = ledger.state().clone();
        time_ms += 1000;

        let mut ops = ops;
        ops.push(Op::EndBlock { secs: 1 });
        for op in &ops {
            if let Op::EndBlock { secs } = op {
                let ctx = BlockContext { height: ledger.state().height() + 1, time_ms };
                let out = ledger.execute_block(ctx, &pending).expect("block applies");
                check_judged(&out.receipts, &std::mem::take(&mut judged))?;
                for r in &out.receipts {
                    if let Ok(events) = &r.result {
                        apply_events(&mut model, ledger.state(), events);
                    }
                }
                apply_events(&mut model, ledger.state(), &out.end_events);
                check_block(ledger.state(), &model)?;
                roots.push(out.root);
                blocks.push((ctx, std::mem::take(&mut pending)));
                scratch = ledger.state().clone();
                time_ms += secs * 1000;
                continue;
            }
            let Some((tx, j)) = to_tx(&scratch, op, time_ms, &mut boots) else { continue };
            let ctx = BlockContext { height: scratch.height() + 1, time_ms };
            let _ = scratch.apply_tx(&tx, &ctx);
            pending.push(tx);
            judged.push(j);
        }

        // Same blocks, fresh store: the same root at every height, the same receipts.
        let mut replay = Ledger::open(MemoryStore::default(), &genesis).expect("open");
        let setup_blocks = blocks.len() - roots.len();
        for (i, (ctx, txs)) in blocks.iter().enumerate() {
            let root = replay.execute_block(*ctx, txs).expect("replay").root;
            if i >= setup_blocks {
                prop_assert_eq!(root, roots[i - setup_blocks]);
            }
        }
        let (a, b) = (ledger.state(), replay.state());
        for period in 0..=a.economy().mint_period {
            let ra: Vec<_> = a.receipts_of_period(period, 0).collect();
            let rb: Vec<_> = b.receipts_of_period(period, 0).collect();
            prop_assert_eq!(ra, rb);
        }
    }
}
