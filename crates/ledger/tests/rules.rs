//! One test per ledger rule, with each of its rejections.

mod common;

use std::collections::BTreeSet;

use common::*;
use peergrid_core::tx::{
    ContractSpec, GovAction, Payload, PowerTarget, Signature, sign_invitation,
};
use peergrid_core::{Amount, Capacity, Hash, SignedTx};
use peergrid_ledger::{ContractState, DeleteReason, Event, NodeStatus, ProposalStatus, TxError};

fn transfer(to: u8, tokens: u64) -> Payload {
    Payload::Transfer {
        to: key(to).account(),
        amount: Amount::tokens(tokens),
    }
}

#[test]
fn transfer_moves_tokens_burns_the_fee_and_bumps_the_nonce() {
    let mut h = Harness::new();
    let tx = h.tx(&key(1), transfer(20, 10));
    let fee = Amount(h.state.params().fee_per_byte.0 * tx.encode().len() as u64);
    let events = h.state.apply_tx(&tx, &h.ctx()).expect("valid");
    assert_eq!(
        h.balance(&key(1).account()),
        Amount(Amount::tokens(990).0 - fee.0)
    );
    assert_eq!(h.balance(&key(20).account()), Amount::tokens(10));
    assert_eq!(h.state.account(&key(1).account()).nonce, 1);
    assert_eq!(h.state.globals().burned, fee);
    assert!(events.contains(&Event::FeeBurned {
        account: key(1).account(),
        amount: fee
    }));
    assert!(events.contains(&Event::Transferred {
        from: key(1).account(),
        to: key(20).account(),
        amount: Amount::tokens(10)
    }));
    assert!(h.state.supply_is_conserved());
}

#[test]
fn envelope_rules_reject_with_the_reason() {
    let mut h = Harness::new();
    let other_chain = SignedTx::new(&key(1), "other-chain", 0, transfer(20, 1));
    assert!(matches!(
        h.rejected_tx(other_chain),
        TxError::WrongChain { .. }
    ));

    let mut forged = h.tx(&key(1), transfer(20, 1));
    forged.body.signer = key(2).account();
    assert!(matches!(
        h.rejected_tx(forged),
        TxError::BadSignature { .. }
    ));

    let future = SignedTx::new(&key(1), CHAIN, 5, transfer(20, 1));
    let err = h.rejected_tx(future);
    assert_eq!(
        err,
        TxError::FutureNonce {
            signer: key(1).account(),
            expected: 0,
            got: 5
        }
    );

    h.ok(&key(1), transfer(20, 1));
    let replay = SignedTx::new(&key(1), CHAIN, 0, transfer(20, 1));
    assert!(matches!(
        h.rejected_tx(replay),
        TxError::StaleNonce {
            expected: 1,
            got: 0,
            ..
        }
    ));

    let err = h.rejected(
        &key(1),
        Payload::CreateFarm {
            name: "x".repeat(41),
            public_ips: vec![],
        },
    );
    assert!(
        err.to_string().contains("more than the limit of 40"),
        "{err}"
    );
}

#[test]
fn a_transfer_must_leave_room_for_its_fee() {
    let mut h = Harness::new();
    let err = h.rejected(&key(1), transfer(20, 1000));
    let TxError::InsufficientBalance {
        needed,
        fee,
        available,
    } = err
    else {
        panic!("{err}")
    };
    assert_eq!(available, Amount::tokens(1000));
    assert!(fee.0 > 0);
    assert_eq!(needed, Amount(Amount::tokens(1000).0 + fee.0));
    // An empty account cannot pay fees for anything.
    let err = h.rejected(
        &key(30),
        Payload::CreateFarm {
            name: "f".into(),
            public_ips: vec![],
        },
    );
    assert!(matches!(err, TxError::InsufficientBalance { .. }), "{err}");
}

#[test]
fn farms_have_unique_names_and_only_owners_change_them() {
    let mut h = Harness::new();
    let farm = h.farm(&key(1), "alpha", 2);
    assert_eq!(h.state.farm(farm).expect("farm").owner, key(1).account());
    assert_eq!(h.state.farm_by_name("alpha").map(|f| f.id), Some(farm));
    assert_eq!(
        h.rejected(
            &key(2),
            Payload::CreateFarm {
                name: "alpha".into(),
                public_ips: vec![]
            }
        ),
        TxError::FarmNameTaken("alpha".into())
    );
    let rename = Payload::UpdateFarm {
        farm,
        name: Some("beta".into()),
        public_ips: None,
        payout: None,
    };
    assert!(matches!(
        h.rejected(&key(2), rename.clone()),
        TxError::NotFarmOwner { .. }
    ));
    let unknown = Payload::UpdateFarm {
        farm: 99,
        name: None,
        public_ips: None,
        payout: None,
    };
    assert_eq!(h.rejected(&key(1), unknown), TxError::UnknownFarm(99));
    h.ok(&key(1), rename);
    assert!(h.state.farm_by_name("alpha").is_none());
    // The old name is free again.
    h.farm(&key(2), "alpha", 0);
}

#[test]
fn nodes_join_a_farm_only_with_the_owners_consent() {
    let mut h = Harness::new();
    let farm = h.farm(&key(1), "alpha", 0);
    let node_key = key(40);
    h.ok(
        &key(1),
        Payload::Transfer {
            to: node_key.account(),
            amount: Amount::tokens(1),
        },
    );
    let register = |invitation| Payload::RegisterNode {
        farm,
        capacity: capacity(),
        location: location(),
        invitation,
    };

    let by_stranger = sign_invitation(&key(2), CHAIN, farm, &node_key.account());
    assert!(matches!(
        h.rejected(&node_key, register(by_stranger)),
        TxError::InvalidInvitation { .. }
    ));
    let for_other_node = sign_invitation(&key(1), CHAIN, farm, &key(41).account());
    assert!(matches!(
        h.rejected(&node_key, register(for_other_node)),
        TxError::InvalidInvitation { .. }
    ));
    assert!(matches!(
        h.rejected(&node_key, register(Signature([0; 64]))),
        TxError::InvalidInvitation { .. }
    ));
    let unknown_farm = Payload::RegisterNode {
        farm: 7,
        capacity: capacity(),
        location: location(),
        invitation: sign_invitation(&key(1), CHAIN, 7, &node_key.account()),
    };
    assert_eq!(h.rejected(&node_key, unknown_farm), TxError::UnknownFarm(7));

    let good = sign_invitation(&key(1), CHAIN, farm, &node_key.account());
    h.ok(&node_key, register(good));
    let node = h
        .state
        .node_by_account(&node_key.account())
        .expect("registered")
        .clone();
    assert_eq!(
        (node.farm, node.capacity, node.location.clone()),
        (farm, capacity(), location())
    );
    assert!(matches!(
        h.rejected(&node_key, register(good)),
        TxError::NodeAlreadyRegistered { .. }
    ));

    let bad_location = Payload::UpdateNode {
        node: node.id,
        capacity: None,
        location: Some(peergrid_core::Location {
            latitude_micro: 91_000_000,
            ..location()
        }),
    };
    assert!(matches!(
        h.rejected(&node_key, bad_location),
        TxError::Field { .. }
    ));
    let by_farmer = Payload::UpdateNode {
        node: node.id,
        capacity: Some(Capacity::ZERO),
        location: None,
    };
    assert!(matches!(
        h.rejected(&key(1), by_farmer),
        TxError::NotNodeKey { .. }
    ));
}

#[test]
fn uptime_reports_are_free_rate_limited_and_drive_node_status() {
    let mut h = Harness::new();
    let farm = h.farm(&key(1), "alpha", 0);
    let node_key = key(40);
    let node = h.node(&key(1), farm, &node_key);
    let params = h.state.params().clone();
    let interval = params.uptime_interval_secs;
    let report = |h: &Harness, uptime_secs| Payload::ReportUptime {
        node,
        uptime_secs,
        timestamp_secs: h.now_ms / 1000,
    };
    assert_eq!(
        h.state.node(node).expect("node").status(h.now_ms, &params),
        NodeStatus::Down
    );

    let balance = h.balance(&node_key.account());
    h.ok(&node_key, report(&h, 100));
    assert_eq!(
        h.balance(&node_key.account()),
        balance,
        "uptime reports are free"
    );
    assert_eq!(
        h.state.node(node).expect("node").status(h.now_ms, &params),
        NodeStatus::Up
    );

    h.advance_secs(1);
    assert!(matches!(
        h.rejected(&node_key, report(&h, 101)),
        TxError::UptimeTooSoon { .. }
    ));
    h.advance_secs(interval);
    let skewed = Payload::ReportUptime {
        node,
        uptime_secs: 200,
        timestamp_secs: h.now_ms / 1000 - 61,
    };
    assert!(matches!(
        h.rejected(&node_key, skewed),
        TxError::UptimeClockDrift { drift_secs: 61, .. }
    ));
    assert!(matches!(
        h.rejected(&key(1), report(&h, 200)),
        TxError::NotNodeKey { .. }
    ));
    h.ok(&node_key, report(&h, 200));

    let n = h.state.node(node).expect("node").clone();
    assert_eq!(
        n.status(h.now_ms + 2 * interval * 1000 - 1, &params),
        NodeStatus::Up
    );
    assert_eq!(
        n.status(h.now_ms + 2 * interval * 1000, &params),
        NodeStatus::Down
    );

    // Switched off by its farmer, the node is standby for a day, then down.
    assert!(matches!(
        h.rejected(
            &node_key,
            Payload::SetPowerTarget {
                node,
                target: PowerTarget::Down
            }
        ),
        TxError::NotFarmOwner { .. }
    ));
    h.ok(
        &key(1),
        Payload::SetPowerTarget {
            node,
            target: PowerTarget::Down,
        },
    );
    let n = h.state.node(node).expect("node").clone();
    assert_eq!(
        n.status(h.now_ms + 3600 * 1000, &params),
        NodeStatus::Standby
    );
    assert_eq!(
        n.status(h.now_ms + params.standby_max_secs * 1000, &params),
        NodeStatus::Down
    );
}

fn deployment(node: u32, cru: u64, ips: u32) -> Payload {
    Payload::CreateContract(ContractSpec::Deployment {
        node,
        deployment_hash: Hash::of(b"deployment"),
        resources: Capacity {
            cru,
            mru: 1 << 30,
            sru: 10 << 30,
            hru: 0,
        },
        public_ips: ips,
    })
}

fn created(events: &[Event]) -> u64 {
    events
        .iter()
        .find_map(|e| match e {
            Event::ContractCreated { contract, .. } => Some(*contract),
            _ => None,
        })
        .expect("ContractCreated event")
}

#[test]
fn deployments_reserve_capacity_and_public_ips_until_cancelled() {
    let mut h = Harness::new();
    let farm = h.farm(&key(1), "alpha", 2);
    let node = h.node(&key(1), farm, &key(40));
    let c = created(&h.ok(&key(2), deployment(node, 6, 1)));
    let n = h.state.node(node).expect("node").clone();
    assert_eq!((n.used.cru, n.contracts), (6, 1));
    let contract = h.state.contract(c).expect("contract").clone();
    assert_eq!(contract.public_ips.len(), 1);
    assert_eq!(contract.deployment_hash(), Some(Hash::of(b"deployment")));
    let held = h
        .state
        .farm(farm)
        .expect("farm")
        .public_ips
        .iter()
        .filter(|p| p.contract == Some(c))
        .count();
    assert_eq!(held, 1);

    assert!(matches!(
        h.rejected(&key(3), deployment(node, 3, 0)),
        TxError::InsufficientCapacity { .. }
    ));
    // The node cannot shrink below what its contracts reserve; the reason says by how much.
    let shrunk = Capacity {
        cru: 4,
        ..capacity()
    };
    let e = h.rejected(
        &key(40),
        Payload::UpdateNode {
            node,
            capacity: Some(shrunk),
            location: None,
        },
    );
    assert_eq!(
        e,
        TxError::CapacityBelowReserved {
            node,
            reserved: n.used,
            offered: shrunk
        }
    );
    let text = e.to_string();
    assert!(
        text.contains("its contracts reserve 6 cores")
            && text.contains("(cores 6 > 4)")
            && text.contains("wait until those contracts end"),
        "{text}"
    );
    assert!(matches!(
        h.rejected(&key(3), deployment(node, 1, 2)),
        TxError::NotEnoughPublicIps { free: 1, .. }
    ));
    assert_eq!(
        h.rejected(&key(3), deployment(99, 1, 0)),
        TxError::UnknownNode(99)
    );

    // The farm cannot pull an IP out from under a running deployment.
    let ips_gone = Payload::UpdateFarm {
        farm,
        name: None,
        public_ips: Some(vec![]),
        payout: None,
    };
    assert!(matches!(
        h.rejected(&key(1), ips_gone),
        TxError::Field { .. }
    ));

    let update = Payload::UpdateContract {
        contract: c,
        deployment_hash: Hash::of(b"v2"),
        resources: Capacity {
            cru: 8,
            mru: 1 << 30,
            sru: 0,
            hru: 0,
        },
    };
    assert!(matches!(
        h.rejected(&key(3), update.clone()),
        TxError::NotContractOwner { .. }
    ));
    h.ok(&key(2), update);
    assert_eq!(h.state.node(node).expect("node").used.cru, 8);
    assert_eq!(
        h.state.contract(c).expect("c").deployment_hash(),
        Some(Hash::of(b"v2"))
    );

    assert!(matches!(
        h.rejected(&key(3), Payload::CancelContract { contract: c }),
        TxError::NotContractOwner { .. }
    ));
    let events = h.ok(&key(2), Payload::CancelContract { contract: c });
    assert!(events.contains(&Event::ContractDeleted {
        contract: c,
        node: Some(node),
        reason: DeleteReason::CanceledByOwner
    }));
    let n = h.state.node(node).expect("node");
    assert_eq!((n.used, n.contracts), (Capacity::ZERO, 0));
    assert!(
        h.state
            .farm(farm)
            .expect("farm")
            .public_ips
            .iter()
            .all(|p| p.contract.is_none())
    );
    assert!(matches!(
        h.state.contract(c).expect("c").state,
        ContractState::Deleted { .. }
    ));
    assert!(matches!(
        h.rejected(&key(2), Payload::CancelContract { contract: c }),
        TxError::ContractState { .. }
    ));
    assert_eq!(
        h.rejected(&key(2), Payload::CancelContract { contract: 77 }),
        TxError::UnknownContract(77)
    );
}

#[test]
fn gateway_names_are_unique_while_held() {
    let mut h = Harness::new();
    let name = |n: &str| Payload::CreateContract(ContractSpec::Name { name: n.into() });
    let c = created(&h.ok(&key(2), name("my-app")));
    assert_eq!(h.state.contract_by_name("my-app").map(|c| c.id), Some(c));
    assert_eq!(
        h.rejected(&key(3), name("my-app")),
        TxError::NameTaken("my-app".into())
    );
    assert!(matches!(
        h.rejected(&key(3), name("My_App")),
        TxError::Field { .. }
    ));
    h.ok(&key(2), Payload::CancelContract { contract: c });
    assert!(h.state.contract_by_name("my-app").is_none());
    h.ok(&key(3), name("my-app"));
}

#[test]
fn storage_contracts_reserve_disk_on_the_node() {
    let mut h = Harness::new();
    let farm = h.farm(&key(1), "alpha", 0);
    let node = h.node(&key(1), farm, &key(40));
    let storage = |bytes| Payload::CreateContract(ContractSpec::Storage { node, bytes });
    h.ok(&key(2), storage(4 << 40));
    assert_eq!(h.state.node(node).expect("node").used.hru, 4 << 40);
    // With the HDD full, reservations fall back to SSD, and beyond both they are refused.
    h.ok(&key(2), storage(512 << 30));
    assert_eq!(h.state.node(node).expect("node").used.sru, 512 << 30);
    assert!(matches!(
        h.rejected(&key(2), storage(1 << 40)),
        TxError::InsufficientCapacity { .. }
    ));
}

#[test]
fn a_rented_node_is_for_its_renter_alone() {
    let mut h = Harness::new();
    let farm = h.farm(&key(1), "alpha", 0);
    let busy = h.node(&key(1), farm, &key(40));
    let free = h.node(&key(1), farm, &key(41));
    h.ok(&key(2), deployment(busy, 1, 0));
    let rent = |node| Payload::CreateContract(ContractSpec::Rent { node });
    assert!(matches!(
        h.rejected(&key(3), rent(busy)),
        TxError::NodeNotEmpty { contracts: 1, .. }
    ));
    let r = created(&h.ok(&key(3), rent(free)));
    assert!(matches!(
        h.rejected(&key(4), rent(free)),
        TxError::NodeRented { .. }
    ));
    assert!(matches!(
        h.rejected(&key(2), deployment(free, 1, 0)),
        TxError::NodeRented { .. }
    ));
    let d = created(&h.ok(&key(3), deployment(free, 1, 0)));
    assert!(matches!(
        h.rejected(&key(3), Payload::CancelContract { contract: r }),
        TxError::RentInUse { contracts: 1, .. }
    ));
    h.ok(&key(3), Payload::CancelContract { contract: d });
    h.ok(&key(3), Payload::CancelContract { contract: r });
    assert_eq!(h.state.node(free).expect("node").rented_by, None);
    let again = created(&h.ok(&key(2), deployment(free, 1, 0)));

    // Each node lists its own contracts, deleted ones included, from any id on.
    let on = |node, from| -> Vec<u64> { h.state.contracts_on(node, from).map(|c| c.id).collect() };
    assert_eq!(on(free, 0), vec![r, d, again]);
    assert_eq!(on(free, d), vec![d, again]);
    assert_eq!(on(busy, 0).len(), 1);
    assert!(on(busy, 0).iter().all(|c| !on(free, 0).contains(c)));
}

#[test]
fn the_council_changes_parameters_by_threshold_vote() {
    let mut h = Harness::new();
    let propose = |uusd| Payload::Propose {
        action: GovAction::SetTokenPrice { uusd },
        description: "follow the market".into(),
    };
    assert_eq!(
        h.rejected(&key(5), propose(20_000)),
        TxError::NotCouncilMember(key(5).account())
    );
    let events = h.ok(&key(1), propose(20_000));
    let id = events
        .iter()
        .find_map(|e| match e {
            Event::ProposalCreated { proposal, .. } => Some(*proposal),
            _ => None,
        })
        .expect("created");
    assert_eq!(
        h.state.params().token_price_uusd,
        10_000,
        "one approval of two does nothing yet"
    );
    assert!(matches!(
        h.rejected(
            &key(1),
            Payload::Vote {
                proposal: id,
                approve: true
            }
        ),
        TxError::AlreadyVoted { .. }
    ));
    assert_eq!(
        h.rejected(
            &key(5),
            Payload::Vote {
                proposal: id,
                approve: true
            }
        ),
        TxError::NotCouncilMember(key(5).account())
    );
    h.ok(
        &key(2),
        Payload::Vote {
            proposal: id,
            approve: true,
        },
    );
    assert_eq!(h.state.params().token_price_uusd, 20_000);
    assert!(matches!(
        h.state.proposal(id).expect("p").status,
        ProposalStatus::Executed { .. }
    ));
    assert_eq!(
        h.rejected(
            &key(3),
            Payload::Vote {
                proposal: id,
                approve: true
            }
        ),
        TxError::ProposalClosed(id)
    );
    assert_eq!(
        h.rejected(
            &key(3),
            Payload::Vote {
                proposal: 9,
                approve: true
            }
        ),
        TxError::UnknownProposal(9)
    );

    // Two of three against: it can no longer pass.
    h.ok(&key(1), propose(1));
    h.ok(
        &key(2),
        Payload::Vote {
            proposal: id + 1,
            approve: false,
        },
    );
    h.ok(
        &key(3),
        Payload::Vote {
            proposal: id + 1,
            approve: false,
        },
    );
    assert!(matches!(
        h.state.proposal(id + 1).expect("p").status,
        ProposalStatus::Rejected { .. }
    ));

    let cert = Payload::Propose {
        action: GovAction::SetNodeCertified {
            node: 42,
            certified: true,
        },
        description: String::new(),
    };
    assert!(matches!(
        h.rejected(&key(1), cert),
        TxError::InvalidAction(_)
    ));
}

#[test]
fn unanswered_proposals_expire_at_the_end_of_a_block() {
    use peergrid_ledger::{Ledger, MemoryStore};
    let g = genesis(3);
    let mut ledger = Ledger::open(MemoryStore::default(), &g).expect("open");
    let propose = SignedTx::new(
        &key(1),
        CHAIN,
        0,
        Payload::Propose {
            action: GovAction::SetTokenPrice { uusd: 5 },
            description: String::new(),
        },
    );
    let t0 = GENESIS_MS + 1000;
    ledger
        .execute_block(
            peergrid_ledger::BlockContext {
                height: 1,
                time_ms: t0,
            },
            &[propose],
        )
        .expect("block");
    let ttl_ms = g.params.proposal_ttl_secs * 1000;
    let before = ledger
        .execute_block(
            peergrid_ledger::BlockContext {
                height: 2,
                time_ms: t0 + ttl_ms - 1,
            },
            &[],
        )
        .expect("block");
    // Minting periods with no nodes close in these blocks too; only proposals matter here.
    let proposals = |events: &[Event]| -> Vec<Event> {
        events
            .iter()
            .filter(|e| matches!(e, Event::ProposalClosed { .. }))
            .cloned()
            .collect()
    };
    assert!(proposals(&before.end_events).is_empty());
    let after = ledger
        .execute_block(
            peergrid_ledger::BlockContext {
                height: 3,
                time_ms: t0 + ttl_ms,
            },
            &[],
        )
        .expect("block");
    assert!(matches!(
        proposals(&after.end_events).as_slice(),
        [Event::ProposalClosed {
            proposal: 1,
            status: ProposalStatus::Expired { .. }
        }]
    ));
    assert_eq!(
        ledger.state().params().token_price_uusd,
        g.params.token_price_uusd
    );
}

#[test]
fn expired_transactions_never_apply() {
    let mut h = Harness::new();
    let tx = SignedTx::expiring(&key(1), CHAIN, 0, h.now_ms - 1, transfer(20, 1));
    assert_eq!(
        h.rejected_tx(tx),
        TxError::Expired {
            expires_ms: h.now_ms - 1,
            now_ms: h.now_ms
        }
    );
    let tx = SignedTx::expiring(&key(1), CHAIN, 0, h.now_ms, transfer(20, 1));
    h.state
        .apply_tx(&tx, &h.ctx())
        .expect("valid up to and including its expiry");
}

#[test]
fn farm_names_are_unique_in_any_letter_case() {
    let mut h = Harness::new();
    let farm = h.farm(&key(1), "GreenFarm", 0);
    assert_eq!(h.state.farm_by_name("greenfarm").map(|f| f.id), Some(farm));
    assert!(matches!(
        h.rejected(
            &key(2),
            Payload::CreateFarm {
                name: "greenFARM".into(),
                public_ips: vec![]
            }
        ),
        TxError::FarmNameTaken(_)
    ));
    // Its owner may change only the case of the farm's own name.
    h.ok(
        &key(1),
        Payload::UpdateFarm {
            farm,
            name: Some("Greenfarm".into()),
            public_ips: None,
            payout: None,
        },
    );
    assert_eq!(
        h.state.farm(farm).map(|f| f.name.as_str()),
        Some("Greenfarm")
    );
}

#[test]
fn governance_cannot_price_the_ledger_out_of_reach() {
    let mut h = Harness::new();
    let too_high = Payload::Propose {
        action: GovAction::SetFeePerByte {
            fee: Amount(peergrid_core::tx::FEE_PER_BYTE_MAX.0 + 1),
        },
        description: String::new(),
    };
    assert!(matches!(
        h.rejected(&key(1), too_high),
        TxError::Field { .. }
    ));
}

/// One way a transaction is refused: the rejection `run` drives a fresh ledger into, and the
/// variant it must be.
struct Case {
    expected: &'static str,
    matches: fn(&TxError) -> bool,
    run: fn(&mut Harness) -> TxError,
}

macro_rules! case {
    ($pat:pat, $run:expr) => {
        Case {
            expected: stringify!($pat),
            matches: |e| matches!(e, $pat),
            run: $run,
        }
    };
}

/// Farm `alpha` of key 1 with one public IP, and key 40's node in it.
fn farm_with_node(h: &mut Harness) -> u32 {
    let farm = h.farm(&key(1), "alpha", 1);
    h.node(&key(1), farm, &key(40))
}

fn vote(proposal: u64) -> Payload {
    Payload::Vote {
        proposal,
        approve: true,
    }
}

fn propose_price() -> Payload {
    Payload::Propose {
        action: GovAction::SetTokenPrice { uusd: 20_000 },
        description: String::new(),
    }
}

/// Every variant of [`TxError`], by its serde tag, read from serde's own refusal of an
/// unknown tag. `TxError` is `#[non_exhaustive]` and lives in another crate, so an
/// exhaustive `match` cannot be written here; the derived tag list grows with the enum
/// instead, and cannot be forgotten.
fn every_tx_error_tag() -> BTreeSet<String> {
    let err = serde_json::from_str::<TxError>(r#"{"error":"no_such_rejection","detail":null}"#)
        .expect_err("an unknown tag is refused");
    let text = err.to_string();
    let Some((_, list)) = text.split_once("expected one of ") else {
        panic!("serde no longer lists the variants it expects: {text}");
    };
    list.split('`')
        .skip(1)
        .step_by(2)
        .map(String::from)
        .collect()
}

fn tag(e: &TxError) -> String {
    let json = serde_json::to_value(e).expect("serializable");
    match json.get("error").and_then(|t| t.as_str()) {
        Some(tag) => tag.to_string(),
        None => panic!("no error tag in {json}"),
    }
}

/// Every rejection a transaction can meet, each produced by the real state machine, each
/// leaving the state untouched (`rejected` checks the root and the nonce) and each storable
/// in a receipt: one that cannot be serialized stops every validator at that block (a
/// duplicate farm name once did). A new `TxError` variant fails this test until it has a case.
#[test]
fn every_kind_of_rejection_is_reachable_changes_nothing_and_round_trips_through_json() {
    let cases = [
        case!(TxError::Field { .. }, |h| h.rejected(
            &key(1),
            Payload::CreateFarm {
                name: "x".repeat(41),
                public_ips: vec![],
            },
        )),
        case!(TxError::WrongChain { .. }, |h| h.rejected_tx(
            SignedTx::new(&key(1), "other-chain", 0, transfer(20, 1))
        )),
        case!(TxError::BadSignature { .. }, |h| {
            let mut forged = h.tx(&key(1), transfer(20, 1));
            forged.body.signer = key(2).account();
            h.rejected_tx(forged)
        }),
        case!(TxError::Expired { .. }, |h| {
            let tx = SignedTx::expiring(&key(1), CHAIN, 0, h.now_ms - 1, transfer(20, 1));
            h.rejected_tx(tx)
        }),
        case!(
            TxError::StaleNonce {
                expected: 1,
                got: 0,
                ..
            },
            |h| {
                h.ok(&key(1), transfer(20, 1));
                h.rejected_tx(SignedTx::new(&key(1), CHAIN, 0, transfer(20, 1)))
            }
        ),
        case!(
            TxError::FutureNonce {
                expected: 0,
                got: 5,
                ..
            },
            |h| h.rejected_tx(SignedTx::new(&key(1), CHAIN, 5, transfer(20, 1)))
        ),
        case!(TxError::InsufficientBalance { .. }, |h| h
            .rejected(&key(1), transfer(20, 1000))),
        case!(TxError::UnknownFarm(99), |h| h.rejected(
            &key(1),
            Payload::UpdateFarm {
                farm: 99,
                name: None,
                public_ips: None,
                payout: None,
            },
        )),
        case!(TxError::FarmNameTaken(_), |h| {
            h.farm(&key(1), "alpha", 0);
            h.rejected(
                &key(2),
                Payload::CreateFarm {
                    name: "ALPHA".into(),
                    public_ips: vec![],
                },
            )
        }),
        case!(TxError::NotFarmOwner { .. }, |h| {
            let farm = h.farm(&key(1), "alpha", 0);
            let rename = Payload::UpdateFarm {
                farm,
                name: Some("beta".into()),
                public_ips: None,
                payout: None,
            };
            h.rejected(&key(2), rename)
        }),
        case!(
            TxError::NotEnoughPublicIps {
                requested: 2,
                free: 1,
                ..
            },
            |h| {
                let node = farm_with_node(h);
                h.rejected(&key(2), deployment(node, 1, 2))
            }
        ),
        case!(TxError::InvalidInvitation { .. }, |h| {
            let farm = h.farm(&key(1), "alpha", 0);
            h.ok(&key(1), transfer(40, 1));
            let by_stranger = sign_invitation(&key(2), CHAIN, farm, &key(40).account());
            let register = Payload::RegisterNode {
                farm,
                capacity: capacity(),
                location: location(),
                invitation: by_stranger,
            };
            h.rejected(&key(40), register)
        }),
        case!(TxError::UnknownNode(99), |h| h
            .rejected(&key(2), deployment(99, 1, 0))),
        case!(TxError::NodeAlreadyRegistered { .. }, |h| {
            let node = farm_with_node(h);
            let farm = h.state.node(node).expect("node").farm;
            let register = Payload::RegisterNode {
                farm,
                capacity: capacity(),
                location: location(),
                invitation: sign_invitation(&key(1), CHAIN, farm, &key(40).account()),
            };
            h.rejected(&key(40), register)
        }),
        case!(TxError::NotNodeKey { .. }, |h| {
            let node = farm_with_node(h);
            let by_farmer = Payload::UpdateNode {
                node,
                capacity: Some(Capacity::ZERO),
                location: None,
            };
            h.rejected(&key(1), by_farmer)
        }),
        case!(TxError::UptimeTooSoon { .. }, |h| {
            let node = farm_with_node(h);
            let report = |h: &Harness| Payload::ReportUptime {
                node,
                uptime_secs: 100,
                timestamp_secs: h.now_ms / 1000,
            };
            h.ok(&key(40), report(h));
            h.advance_secs(1);
            h.rejected(&key(40), report(h))
        }),
        case!(TxError::UptimeClockDrift { drift_secs: 61, .. }, |h| {
            let node = farm_with_node(h);
            let skewed = Payload::ReportUptime {
                node,
                uptime_secs: 100,
                timestamp_secs: h.now_ms / 1000 - 61,
            };
            h.rejected(&key(40), skewed)
        }),
        case!(TxError::InsufficientCapacity { .. }, |h| {
            let node = farm_with_node(h);
            h.rejected(&key(2), deployment(node, capacity().cru + 1, 0))
        }),
        case!(TxError::CapacityBelowReserved { .. }, |h| {
            let node = farm_with_node(h);
            h.ok(&key(2), deployment(node, 6, 0));
            let shrink = Payload::UpdateNode {
                node,
                capacity: Some(Capacity {
                    cru: 4,
                    ..capacity()
                }),
                location: None,
            };
            h.rejected(&key(40), shrink)
        }),
        case!(TxError::NodeRented { .. }, |h| {
            let node = farm_with_node(h);
            h.ok(
                &key(3),
                Payload::CreateContract(ContractSpec::Rent { node }),
            );
            h.rejected(&key(2), deployment(node, 1, 0))
        }),
        case!(TxError::NodeNotEmpty { contracts: 1, .. }, |h| {
            let node = farm_with_node(h);
            h.ok(&key(2), deployment(node, 1, 0));
            h.rejected(
                &key(3),
                Payload::CreateContract(ContractSpec::Rent { node }),
            )
        }),
        case!(TxError::RentInUse { contracts: 1, .. }, |h| {
            let node = farm_with_node(h);
            let rent = created(&h.ok(
                &key(3),
                Payload::CreateContract(ContractSpec::Rent { node }),
            ));
            h.ok(&key(3), deployment(node, 1, 0));
            h.rejected(&key(3), Payload::CancelContract { contract: rent })
        }),
        case!(TxError::NameTaken(_), |h| {
            let name = || {
                Payload::CreateContract(ContractSpec::Name {
                    name: "my-app".into(),
                })
            };
            h.ok(&key(2), name());
            h.rejected(&key(3), name())
        }),
        case!(TxError::UnknownContract(77), |h| h
            .rejected(&key(2), Payload::CancelContract { contract: 77 })),
        case!(TxError::NotContractOwner { .. }, |h| {
            let node = farm_with_node(h);
            let contract = created(&h.ok(&key(2), deployment(node, 1, 0)));
            h.rejected(&key(3), Payload::CancelContract { contract })
        }),
        case!(TxError::ContractState { .. }, |h| {
            let node = farm_with_node(h);
            let contract = created(&h.ok(&key(2), deployment(node, 1, 0)));
            h.ok(&key(2), Payload::CancelContract { contract });
            h.rejected(&key(2), Payload::CancelContract { contract })
        }),
        case!(TxError::NotCouncilMember(_), |h| h
            .rejected(&key(5), propose_price())),
        case!(TxError::PublicIpTaken { .. }, |h| {
            let farm = h.farm(&key(1), "alpha", 1);
            let held = h.state.farm(farm).expect("farm").public_ips[0].ip;
            let same_ip = Payload::CreateFarm {
                name: "beta".into(),
                public_ips: vec![held],
            };
            h.rejected(&key(2), same_ip)
        }),
        case!(TxError::UnknownProposal(9), |h| h
            .rejected(&key(1), vote(9))),
        case!(TxError::ProposalClosed(1), |h| {
            h.ok(&key(1), propose_price());
            h.ok(&key(2), vote(1));
            h.rejected(&key(3), vote(1))
        }),
        case!(TxError::AlreadyVoted { .. }, |h| {
            h.ok(&key(1), propose_price());
            h.rejected(&key(1), vote(1))
        }),
        case!(TxError::InvalidAction(_), |h| {
            let certify_nothing = Payload::Propose {
                action: GovAction::SetNodeCertified {
                    node: 42,
                    certified: true,
                },
                description: String::new(),
            };
            h.rejected(&key(1), certify_nothing)
        }),
        // A transaction of newer ledger rules than the chain's, whose validators may not
        // know it.
        case!(
            TxError::LedgerRules {
                needs: 2,
                runs: 1,
                ..
            },
            |h| {
                h.state = peergrid_ledger::State::from_genesis(&peergrid_ledger::Genesis {
                    ledger_rules: 1,
                    ..genesis(9)
                });
                h.rejected(
                    &key(1),
                    Payload::ReleaseContract {
                        contract: 1,
                        reason: "no room".into(),
                    },
                )
            }
        ),
        // The amount plus its fee cannot be represented: refused before any balance moves.
        case!(TxError::Overflow(_), |h| h.rejected(
            &key(1),
            Payload::Transfer {
                to: key(20).account(),
                amount: Amount(u64::MAX),
            },
        )),
    ];

    let mut produced = BTreeSet::new();
    for case in &cases {
        let mut h = Harness::new();
        let err = (case.run)(&mut h);
        assert!(
            (case.matches)(&err),
            "expected {}, got {err:?}",
            case.expected
        );
        let json = serde_json::to_string(&err).expect("serializable");
        let back: TxError = serde_json::from_str(&json).expect("deserializable");
        assert_eq!(back, err, "{json}");
        assert!(
            produced.insert(tag(&err)),
            "two cases produce {}",
            tag(&err)
        );
    }
    let every = every_tx_error_tag();
    assert!(
        every.contains("wrong_chain") && every.contains("overflow"),
        "the variant list was misread: {every:?}"
    );
    let missing: Vec<_> = every.difference(&produced).collect();
    assert!(
        missing.is_empty(),
        "no case produces these rejections; add one, or exclude it here with the reason no transaction can: {missing:?}"
    );
    assert_eq!(produced, every);
}
