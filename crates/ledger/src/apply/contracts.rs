//! Contracts: creating one (capacity, public IPs, names), ownership, and deleting one with its resources.

use peergrid_core::tx::ContractSpec;
use peergrid_core::{AccountId, Capacity, ContractId};

use crate::records::{Contract, ContractState, DeleteReason};
use crate::state::State;

use super::*;

impl State {
    pub(crate) fn owned_contract(
        &self,
        contract: ContractId,
        signer: &AccountId,
    ) -> Result<&Contract, TxError> {
        let c = self
            .contract(contract)
            .ok_or(TxError::UnknownContract(contract))?;
        if c.owner != *signer {
            return Err(TxError::NotContractOwner {
                contract,
                signer: *signer,
            });
        }
        Ok(c)
    }

    pub(crate) fn create_contract(
        &mut self,
        signer: AccountId,
        spec: &ContractSpec,
        ctx: &BlockContext,
        events: &mut Vec<Event>,
    ) -> Result<(), TxError> {
        let id = self.globals().next_contract;
        let (node, reserved, ip_count) = match spec {
            ContractSpec::Deployment {
                node,
                resources,
                public_ips,
                ..
            } => (Some(*node), *resources, *public_ips),
            ContractSpec::Name { name } => {
                if self.names.contains(name) {
                    return Err(TxError::NameTaken(name.clone()));
                }
                self.names.insert(name.clone(), id);
                (None, Capacity::ZERO, 0)
            }
            ContractSpec::Storage { node, bytes } => {
                let n = self.node(*node).ok_or(TxError::UnknownNode(*node))?;
                // HDD first: bulk shards belong on the cheaper disks; SSD when the node has no HDD room.
                let reserved = if n.free().hru >= *bytes {
                    Capacity {
                        hru: *bytes,
                        ..Capacity::ZERO
                    }
                } else {
                    Capacity {
                        sru: *bytes,
                        ..Capacity::ZERO
                    }
                };
                (Some(*node), reserved, 0)
            }
            ContractSpec::Rent { node } => {
                let n = self.node(*node).ok_or(TxError::UnknownNode(*node))?;
                if let Some(by) = n.rented_by {
                    return Err(TxError::NodeRented {
                        node: *node,
                        contract: by,
                    });
                }
                if n.contracts > 0 {
                    return Err(TxError::NodeNotEmpty {
                        node: *node,
                        contracts: n.contracts,
                    });
                }
                (Some(*node), Capacity::ZERO, 0)
            }
        };
        let mut public_ips = Vec::new();
        if let Some(node_id) = node {
            let n = self.node(node_id).ok_or(TxError::UnknownNode(node_id))?;
            if let Some(rent) = n.rented_by
                && self.contract(rent).is_some_and(|r| r.owner != signer)
            {
                return Err(TxError::NodeRented {
                    node: node_id,
                    contract: rent,
                });
            }
            let used = n
                .used
                .checked_add(&reserved)
                .ok_or_else(|| TxError::Overflow("capacity".into()))?;
            if !used.fits_within(&n.capacity) {
                return Err(TxError::InsufficientCapacity {
                    node: node_id,
                    requested: reserved.to_string(),
                    free: n.free().to_string(),
                });
            }
            let farm_id = n.farm;
            let contracts = n
                .contracts
                .checked_add(1)
                .ok_or_else(|| TxError::Overflow("contracts on a node".into()))?;
            if ip_count > 0 {
                let farm = self.farm(farm_id).ok_or(TxError::UnknownFarm(farm_id))?;
                let free: Vec<usize> = farm
                    .public_ips
                    .iter()
                    .enumerate()
                    .filter(|(_, p)| p.contract.is_none())
                    .map(|(i, _)| i)
                    .collect();
                if free.len() < ip_count as usize {
                    return Err(TxError::NotEnoughPublicIps {
                        farm: farm_id,
                        requested: ip_count,
                        free: free.len() as u32,
                    });
                }
                if let Some(f) = self.farms.get_mut(&farm_id) {
                    for &i in free.iter().take(ip_count as usize) {
                        f.public_ips[i].contract = Some(id);
                        public_ips.push(f.public_ips[i].ip);
                    }
                }
            }
            if let Some(n) = self.nodes.get_mut(&node_id) {
                n.used = used;
                n.contracts = contracts;
                if matches!(spec, ContractSpec::Rent { .. }) {
                    n.rented_by = Some(id);
                }
            }
        }
        self.globals_mut().next_contract = id
            .checked_add(1)
            .ok_or_else(|| TxError::Overflow("contract id".into()))?;
        self.contracts.insert(
            id,
            Contract {
                id,
                owner: signer,
                spec: spec.clone(),
                node,
                reserved,
                public_ips,
                state: ContractState::Created,
                created_ms: ctx.time_ms,
                billed_until_ms: ctx.time_ms,
                next_bill_ms: u64::MAX,
                unbilled_nu_bytes: 0,
            },
        );
        self.owner_contracts.insert((signer, id), ());
        if let Some(node) = node {
            self.node_contracts.insert((node, id), ());
        }
        let interval_ms = self.params().billing_interval_secs.saturating_mul(1000);
        self.schedule_bill(id, ctx.time_ms.saturating_add(interval_ms));
        events.push(Event::ContractCreated {
            contract: id,
            owner: signer,
            node,
        });
        Ok(())
    }

    /// Delete a live contract and release everything it holds.
    pub(crate) fn delete_contract(
        &mut self,
        id: ContractId,
        reason: DeleteReason,
        now_ms: u64,
        events: &mut Vec<Event>,
    ) {
        let Some(c) = self.contracts.get(&id).cloned() else {
            return;
        };
        if !c.is_live() {
            return;
        }
        if let Some(node_id) = c.node {
            let farm = self.nodes.get(&node_id).map(|n| n.farm);
            if let Some(n) = self.nodes.get_mut(&node_id) {
                n.used = n.used.saturating_sub(&c.reserved);
                n.contracts = n.contracts.saturating_sub(1);
                if n.rented_by == Some(id) {
                    n.rented_by = None;
                }
            }
            if !c.public_ips.is_empty()
                && let Some(f) = farm.and_then(|f| self.farms.get_mut(&f))
            {
                for ip in f.public_ips.iter_mut().filter(|p| p.contract == Some(id)) {
                    ip.contract = None;
                }
            }
        }
        if let ContractSpec::Name { name } = &c.spec {
            self.names.remove(name);
        }
        self.billing_due.remove(&(c.next_bill_ms, id));
        self.grace_by_owner.remove(&(c.owner, id));
        if let Some(c) = self.contracts.get_mut(&id) {
            c.state = ContractState::Deleted {
                at_ms: now_ms,
                reason,
            };
        }
        events.push(Event::ContractDeleted {
            contract: id,
            node: c.node,
            reason,
        });
    }
}

pub(super) fn state_name(state: &ContractState) -> String {
    match state {
        ContractState::Created => "created".into(),
        ContractState::GracePeriod { since_ms } => format!("in grace since {since_ms} ms"),
        ContractState::Deleted { .. } => "deleted".into(),
    }
}
