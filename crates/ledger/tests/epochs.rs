//! Epochs and validator sets: the boundary rule, the history of sets, and the checks on a vote.

use peergrid_core::tx::{GovAction, Payload, VALIDATORS_MAX, ValidatorEntry};
use peergrid_core::{Amount, Keypair, SignedTx};
use peergrid_ledger::genesis::{GenesisBalance, GenesisValidator};
use peergrid_ledger::{
    BlockContext, Council, Event, Genesis, Ledger, MemoryStore, Params, RedbStore, Store,
    check_stateless,
};

const CHAIN: &str = "epochs";
const GENESIS_MS: u64 = 1_700_000_000_000;
/// Short epochs: epoch 0 is heights 0..=9, epoch 1 is 10..=19.
const EPOCH: u64 = 10;

fn key(n: u8) -> Keypair {
    Keypair::from_seed([n; 32])
}

fn genesis() -> Genesis {
    Genesis {
        ledger_rules: peergrid_ledger::genesis::LEDGER_RULES,
        mesh_bootstrap: Vec::new(),
        chain_id: CHAIN.into(),
        genesis_time_ms: GENESIS_MS,
        foundation: key(200).account(),
        staking_pool: key(201).account(),
        params: Params {
            epoch_blocks: EPOCH,
            ..Params::devnet()
        },
        // The proposer's approval counts: the second member's vote passes a proposal.
        council: Council {
            members: vec![key(1).account(), key(2).account()],
            threshold: 2,
        },
        validators: (100..104)
            .map(|n| GenesisValidator {
                account: key(n).account(),
                address: None,
                api: None,
            })
            .collect(),
        balances: (1..=2)
            .map(|n| GenesisBalance {
                account: key(n).account(),
                amount: Amount::tokens(1000),
            })
            .collect(),
    }
}

fn entry(n: u8) -> ValidatorEntry {
    ValidatorEntry {
        account: key(n).account(),
        address: format!("10.0.0.{n}:4000"),
    }
}

struct Chain<S: Store> {
    ledger: Ledger<S>,
}

impl<S: Store> Chain<S> {
    fn height(&self) -> u64 {
        self.ledger.state().height()
    }

    /// Apply the next block with `txs`; returns its end-of-block events and the txs' events.
    fn block(&mut self, txs: Vec<SignedTx>) -> (Vec<Event>, Vec<Event>) {
        let height = self.height() + 1;
        let ctx = BlockContext {
            height,
            time_ms: GENESIS_MS + height * 1000,
        };
        let out = self.ledger.execute_block(ctx, &txs).expect("block applies");
        let tx_events = out
            .receipts
            .into_iter()
            .flat_map(|r| r.result.expect("tx accepted"))
            .collect();
        (out.end_events, tx_events)
    }

    fn until(&mut self, height: u64) -> Vec<Event> {
        let mut events = Vec::new();
        while self.height() < height {
            events.extend(self.block(Vec::new()).0);
        }
        events
    }

    fn tx(&self, signer: &Keypair, payload: Payload) -> SignedTx {
        let nonce = self.ledger.state().account(&signer.account()).nonce;
        SignedTx::new(signer, CHAIN, nonce, payload)
    }

    /// Propose `validators` in one block and approve it in the next.
    fn vote_in(&mut self, validators: Vec<ValidatorEntry>) {
        let propose = self.tx(
            &key(1),
            Payload::Propose {
                action: GovAction::SetValidators { validators },
                description: "rotate".into(),
            },
        );
        let (_, events) = self.block(vec![propose]);
        let proposal = events
            .iter()
            .find_map(|e| match e {
                Event::ProposalCreated { proposal, .. } => Some(*proposal),
                _ => None,
            })
            .expect("proposal created");
        let vote = self.tx(
            &key(2),
            Payload::Vote {
                proposal,
                approve: true,
            },
        );
        self.block(vec![vote]);
    }
}

fn chain() -> Chain<MemoryStore> {
    Chain {
        ledger: Ledger::open(MemoryStore::default(), &genesis()).expect("opens"),
    }
}

fn changes(events: &[Event]) -> Vec<(u64, u64, usize)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::ValidatorSetChanged {
                epoch,
                first_height,
                validators,
            } => Some((*epoch, *first_height, validators.len())),
            _ => None,
        })
        .collect()
}

#[test]
fn a_voted_set_takes_over_exactly_after_the_last_block_of_the_epoch() {
    let mut c = chain();
    let genesis_set: Vec<_> = (100..104).map(|n| key(n).account()).collect();
    let new_set = vec![entry(100), entry(101), entry(102), entry(104)];
    let new_accounts: Vec<_> = new_set.iter().map(|v| v.account).collect();
    c.until(3);
    c.vote_in(new_set.clone());
    let s = c.ledger.state();
    assert_eq!(s.height(), 5);
    assert_eq!(s.config().pending_validators.as_ref(), Some(&new_set));
    assert_eq!(
        s.config().validators,
        genesis_set,
        "not before the boundary"
    );
    assert_eq!(s.epoch(), 0);

    // Block 8 is not the boundary; block 9, the last of epoch 0, is.
    let events = c.until(8);
    assert!(changes(&events).is_empty());
    assert_eq!(
        c.ledger.state().validator_set(1),
        None,
        "epoch 1 not known yet"
    );
    let (end, _) = c.block(Vec::new());
    assert_eq!(changes(&end), vec![(1, 10, 4)]);

    let s = c.ledger.state();
    assert_eq!(s.height(), 9);
    assert_eq!(s.epoch(), 1, "the next block is epoch 1's first");
    assert_eq!(s.config().pending_validators, None);
    assert_eq!(s.config().validators, new_accounts);
    let old = s.validator_set(0).expect("epoch 0");
    assert_eq!(
        old.accounts(),
        genesis_set,
        "the history keeps epoch 0's set"
    );
    assert!(old.members.iter().all(|m| m.address.is_none()));
    let now = s.validator_set(1).expect("epoch 1");
    assert_eq!((now.epoch, now.first_height), (1, 10));
    assert_eq!(now.accounts(), new_accounts);
    assert_eq!(now.members[3].address.as_deref(), Some("10.0.0.104:4000"));
    assert_eq!(s.validator_set(2), None);

    // Without a new vote, the next boundary changes nothing and epoch 2 keeps the set.
    let events = c.until(19);
    assert!(changes(&events).is_empty());
    let s = c.ledger.state();
    assert_eq!(s.validator_set(2).map(|v| v.accounts()), Some(new_accounts));
    assert_eq!(s.validator_sets().count(), 2, "one entry per change");
}

#[test]
fn a_set_voted_in_the_boundary_block_applies_and_one_voted_after_waits_a_whole_epoch() {
    let mut c = chain();
    // Proposed at 8, approved at 9: the boundary block itself.
    c.until(7);
    c.vote_in(vec![entry(104)]);
    assert_eq!(c.height(), 9);
    assert_eq!(
        c.ledger.state().config().validators,
        vec![key(104).account()]
    );

    // Approved at 11, the second block of epoch 1: it waits until 19.
    c.vote_in(vec![entry(100), entry(105)]);
    assert_eq!(c.height(), 11);
    let events = c.until(18);
    assert!(changes(&events).is_empty());
    assert_eq!(
        c.ledger
            .state()
            .validator_set(1)
            .map(|v| v.accounts().len()),
        Some(1)
    );
    let (end, _) = c.block(Vec::new());
    assert_eq!(changes(&end), vec![(2, 20, 2)]);
    let s = c.ledger.state();
    assert_eq!(
        s.validator_set(1).map(|v| v.accounts()),
        Some(vec![key(104).account()])
    );
    assert_eq!(s.validator_set(2).map(|v| v.first_height), Some(20));
}

#[test]
fn a_later_vote_in_the_same_epoch_replaces_the_pending_set() {
    let mut c = chain();
    c.vote_in(vec![entry(105)]);
    c.vote_in(vec![entry(106), entry(107)]);
    let end = c.until(9);
    assert_eq!(changes(&end), vec![(1, 10, 2)]);
}

#[test]
fn unusable_sets_are_refused_with_the_rule() {
    let propose = |validators: Vec<ValidatorEntry>| {
        SignedTx::new(
            &key(1),
            CHAIN,
            0,
            Payload::Propose {
                action: GovAction::SetValidators { validators },
                description: String::new(),
            },
        )
    };
    let refused = |validators: Vec<ValidatorEntry>| {
        check_stateless(&propose(validators), CHAIN)
            .expect_err("refused")
            .to_string()
    };
    assert!(refused(Vec::new()).contains("cannot be empty"));
    let too_many: Vec<_> = (0..=VALIDATORS_MAX)
        .map(|i| ValidatorEntry {
            account: Keypair::from_seed([i as u8; 32]).account(),
            address: format!("10.0.{}.{}:4000", i / 256, i % 256),
        })
        .collect();
    let err = refused(too_many);
    assert!(err.contains("129") && err.contains("128"), "{err}");
    let twice = vec![entry(100), entry(100)];
    assert!(refused(twice).contains("listed twice"));
    let mut same_address = entry(101);
    same_address.address = entry(100).address;
    assert!(refused(vec![entry(100), same_address]).contains("listed twice"));
    for bad in [
        "validator.example.com:4000",
        "10.0.0.1",
        "10.0.0.1:0",
        "10.0.0.1:99999",
        "",
        &format!("[{}]:4000", "1:".repeat(40)),
    ] {
        let mut v = entry(100);
        v.address = bad.to_string();
        let err = refused(vec![v]);
        assert!(err.contains("validator address"), "{bad:?}: {err}");
    }
    let mut ipv6 = entry(100);
    ipv6.address = "[2001:db8::7]:4000".into();
    check_stateless(&propose(vec![ipv6, entry(101)]), CHAIN).expect("a usable set");
}

#[test]
fn epoch_length_is_checked_in_genesis_and_defaults_when_absent() {
    for (len, ok) in [(0, false), (1, false), (2, true), (1 << 41, false)] {
        let mut g = genesis();
        g.params.epoch_blocks = len;
        let r = g.check();
        assert_eq!(r.is_ok(), ok, "{len}: {r:?}");
        if let Err(e) = r {
            assert!(e.to_string().contains("epoch_blocks"), "{e}");
        }
    }
    let text = genesis().to_toml().replace("epoch_blocks = 10\n", "");
    assert!(!text.contains("epoch_blocks"));
    let back = Genesis::from_toml(&text).expect("parses");
    assert_eq!(
        back.params.epoch_blocks,
        peergrid_ledger::genesis::EPOCH_BLOCKS_DEFAULT
    );
    let mut other = genesis();
    other.params.epoch_blocks = 11;
    assert_ne!(
        other.hash(),
        genesis().hash(),
        "the epoch length is consensus data"
    );
}

#[test]
fn the_history_of_sets_survives_reopening_the_ledger() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("ledger.redb");
    let before = {
        let mut c = Chain {
            ledger: Ledger::open(RedbStore::open(&path).expect("redb"), &genesis()).expect("opens"),
        };
        c.vote_in(vec![entry(104), entry(105)]);
        c.until(12);
        (
            c.ledger.state().root(),
            c.ledger
                .state()
                .validator_sets()
                .cloned()
                .collect::<Vec<_>>(),
        )
    };
    let c = Chain {
        ledger: Ledger::open(RedbStore::open(&path).expect("redb"), &genesis()).expect("reopens"),
    };
    let s = c.ledger.state();
    assert_eq!(s.root(), before.0);
    assert_eq!(s.validator_sets().cloned().collect::<Vec<_>>(), before.1);
    assert_eq!(s.epoch(), 1);
    assert_eq!(s.validator_set(1).map(|v| v.accounts().len()), Some(2));
}
