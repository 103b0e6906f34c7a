//! A state driven one transaction at a time, for the unit tests of each subject's rules.

use peergrid_core::tx::sign_invitation;
use peergrid_core::{Amount, Capacity, FarmId, Keypair, Location, NodeId, Payload, SignedTx};

use crate::genesis::{Council, Genesis, GenesisBalance, GenesisValidator, Params};
use crate::state::State;

use super::*;

pub(super) const CHAIN: &str = "unit";
const GENESIS_MS: u64 = 1_700_000_000_000;

/// Key `n`; keys 1..=9 hold 1,000 tokens, and 1..=3 are the council (threshold 2).
pub(super) fn key(n: u8) -> Keypair {
    Keypair::from_seed([n; 32])
}

pub(super) fn capacity() -> Capacity {
    Capacity {
        cru: 8,
        mru: 32 << 30,
        sru: 1 << 40,
        hru: 4 << 40,
    }
}

/// A state and the block context its next transaction is applied at.
pub(super) struct Kit {
    pub state: State,
    pub ctx: BlockContext,
}

impl Kit {
    pub fn new() -> Kit {
        let genesis = Genesis {
            ledger_rules: crate::genesis::LEDGER_RULES,
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
            balances: (1..=9)
                .map(|n| GenesisBalance {
                    account: key(n).account(),
                    amount: Amount::tokens(1000),
                })
                .collect(),
            mesh_bootstrap: Vec::new(),
        };
        Kit {
            state: State::from_genesis(&genesis),
            ctx: BlockContext {
                height: 1,
                time_ms: GENESIS_MS,
            },
        }
    }

    pub fn tx(&self, signer: &Keypair, payload: Payload) -> SignedTx {
        let nonce = self.state.account(&signer.account()).nonce;
        SignedTx::new(signer, CHAIN, nonce, payload)
    }

    pub fn ok(&mut self, signer: &Keypair, payload: Payload) -> Vec<Event> {
        let tx = self.tx(signer, payload);
        match self.state.apply_tx(&tx, &self.ctx) {
            Ok(events) => events,
            Err(e) => panic!("expected success, got: {e}"),
        }
    }

    /// Apply a transaction that must be refused, checking that it changed nothing.
    pub fn refused(&mut self, signer: &Keypair, payload: Payload) -> TxError {
        let tx = self.tx(signer, payload);
        let root = self.state.pending_root();
        let err = self
            .state
            .apply_tx(&tx, &self.ctx)
            .expect_err("expected a refusal");
        assert_eq!(self.state.pending_root(), root, "{err} changed the state");
        err
    }

    pub fn farm(&mut self, owner: &Keypair, name: &str) -> FarmId {
        let events = self.ok(
            owner,
            Payload::CreateFarm {
                name: name.into(),
                public_ips: vec![],
            },
        );
        events
            .iter()
            .find_map(|e| match e {
                Event::FarmCreated { farm, .. } => Some(*farm),
                _ => None,
            })
            .expect("a FarmCreated event")
    }

    /// Register `node_key` in `farm`, funding it first.
    pub fn node(&mut self, owner: &Keypair, farm: FarmId, node_key: &Keypair) -> NodeId {
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
                location: Location {
                    country: "BE".into(),
                    city: "Ghent".into(),
                    latitude_micro: 51_054_342,
                    longitude_micro: 3_717_424,
                },
                invitation,
            },
        );
        events
            .iter()
            .find_map(|e| match e {
                Event::NodeRegistered { node, .. } => Some(*node),
                _ => None,
            })
            .expect("a NodeRegistered event")
    }
}
