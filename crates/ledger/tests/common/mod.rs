//! A ledger with known keys and helpers that track nonces and ledger time.
#![allow(dead_code)]

use peergrid_core::tx::{Payload, sign_invitation};
use peergrid_core::{AccountId, Amount, Capacity, Keypair, Location, SignedTx};
use peergrid_ledger::genesis::{GenesisBalance, GenesisValidator};
use peergrid_ledger::{BlockContext, Council, Event, Genesis, Params, State, TxError};

pub const CHAIN: &str = "test-chain";
pub const GENESIS_MS: u64 = 1_700_000_000_000;

pub fn key(n: u8) -> Keypair {
    Keypair::from_seed([n; 32])
}

/// Genesis with accounts 1..=funded holding 1000 tokens each; the council is keys 1..=3 with threshold 2.
pub fn genesis(funded: u8) -> Genesis {
    Genesis {
        ledger_rules: peergrid_ledger::genesis::LEDGER_RULES,
        mesh_bootstrap: Vec::new(),
        chain_id: CHAIN.into(),
        genesis_time_ms: GENESIS_MS,
        foundation: key(200).account(),
        staking_pool: key(201).account(),
        params: Params::devnet(),
        council: Council {
            members: (1..=3).map(|n| key(n).account()).collect(),
            threshold: 2,
        },
        validators: vec![GenesisValidator {
            account: key(250).account(),
            address: None,
            api: None,
        }],
        balances: (1..=funded)
            .map(|n| GenesisBalance {
                account: key(n).account(),
                amount: Amount::tokens(1000),
            })
            .collect(),
    }
}

pub fn capacity() -> Capacity {
    Capacity {
        cru: 8,
        mru: 32 << 30,
        sru: 1 << 40,
        hru: 4 << 40,
    }
}

pub fn location() -> Location {
    Location {
        country: "BE".into(),
        city: "Ghent".into(),
        latitude_micro: 51_054_342,
        longitude_micro: 3_717_424,
    }
}

/// A state being driven one transaction at a time, each in its own block context.
pub struct Harness {
    pub state: State,
    pub now_ms: u64,
    pub height: u64,
}

impl Harness {
    pub fn new() -> Self {
        Harness {
            state: State::from_genesis(&genesis(9)),
            now_ms: GENESIS_MS,
            height: 0,
        }
    }

    pub fn ctx(&self) -> BlockContext {
        BlockContext {
            height: self.height + 1,
            time_ms: self.now_ms,
        }
    }

    pub fn advance_secs(&mut self, secs: u64) {
        self.now_ms += secs * 1000;
    }

    pub fn tx(&self, signer: &Keypair, payload: Payload) -> SignedTx {
        let nonce = self.state.account(&signer.account()).nonce;
        SignedTx::new(signer, CHAIN, nonce, payload)
    }

    pub fn submit(&mut self, signer: &Keypair, payload: Payload) -> Result<Vec<Event>, TxError> {
        let tx = self.tx(signer, payload);
        let ctx = self.ctx();
        self.state.apply_tx(&tx, &ctx)
    }

    pub fn ok(&mut self, signer: &Keypair, payload: Payload) -> Vec<Event> {
        match self.submit(signer, payload) {
            Ok(events) => events,
            Err(e) => panic!("expected success, got: {e}"),
        }
    }

    /// Submit a transaction that must be rejected, and check it changed nothing at all.
    pub fn rejected_tx(&mut self, tx: SignedTx) -> TxError {
        let root = self.state.pending_root();
        let nonce = self.state.account(&tx.body.signer).nonce;
        let ctx = self.ctx();
        let err = self
            .state
            .apply_tx(&tx, &ctx)
            .expect_err("expected a rejection");
        assert_eq!(
            self.state.pending_root(),
            root,
            "rejected transaction changed the state: {err}"
        );
        assert_eq!(self.state.account(&tx.body.signer).nonce, nonce);
        assert!(!err.to_string().is_empty());
        err
    }

    pub fn rejected(&mut self, signer: &Keypair, payload: Payload) -> TxError {
        let tx = self.tx(signer, payload);
        self.rejected_tx(tx)
    }

    /// Create a farm owned by `owner` with `ips` public IPs, returning its id.
    pub fn farm(&mut self, owner: &Keypair, name: &str, ips: u8) -> u32 {
        let public_ips = (0..ips)
            .map(|i| peergrid_core::PublicIp {
                ip: [185, 0, 0, 10 + i],
                prefix_len: 24,
                gateway: [185, 0, 0, 1],
            })
            .collect();
        let events = self.ok(
            owner,
            Payload::CreateFarm {
                name: name.into(),
                public_ips,
            },
        );
        match events.iter().find_map(|e| match e {
            Event::FarmCreated { farm, .. } => Some(*farm),
            _ => None,
        }) {
            Some(id) => id,
            None => panic!("no FarmCreated event in {events:?}"),
        }
    }

    /// Register `node_key` in `farm` with the owner's consent, funding it first; returns the node id.
    pub fn node(&mut self, owner: &Keypair, farm: u32, node_key: &Keypair) -> u32 {
        self.ok(
            owner,
            Payload::Transfer {
                to: node_key.account(),
                amount: Amount::tokens(1),
            },
        );
        let invitation = sign_invitation(owner, CHAIN, farm, &node_key.account());
        let events = self.ok(
            node_key,
            Payload::RegisterNode {
                farm,
                capacity: capacity(),
                location: location(),
                invitation,
            },
        );
        match events.iter().find_map(|e| match e {
            Event::NodeRegistered { node, .. } => Some(*node),
            _ => None,
        }) {
            Some(id) => id,
            None => panic!("no NodeRegistered event in {events:?}"),
        }
    }

    pub fn balance(&self, a: &AccountId) -> Amount {
        self.state.account(a).balance
    }
}
