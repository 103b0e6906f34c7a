//! Contracts: creating one (capacity, public IPs, names), changing or cancelling it, usage reports, ownership, and deleting one with its resources.

use peergrid_core::tx::ContractSpec;
use peergrid_core::{AccountId, Capacity, ContractId, Hash};

use crate::records::{Contract, ContractState, DeleteReason, RULES_RELEASE};
use crate::state::State;

use super::*;

impl State {
    pub(super) fn report_usage(
        &mut self,
        at: Applying<'_>,
        contract: &ContractId,
        nu_bytes: &u64,
        events: &mut Vec<Event>,
    ) -> Result<(), TxError> {
        let Applying { signer, ctx, .. } = at;
        let c = self
            .contract(*contract)
            .ok_or(TxError::UnknownContract(*contract))?;
        let node_id = c.node.ok_or_else(|| TxError::ContractState {
            contract: *contract,
            state: "not on a node".into(),
            action: "reporting network usage".into(),
        })?;
        if !c.is_live() {
            return Err(TxError::ContractState {
                contract: *contract,
                state: state_name(&c.state),
                action: "reporting network usage".into(),
            });
        }
        self.own_node(node_id, &signer)?;
        if let Some(c) = self.contracts.get_mut(contract) {
            c.unbilled_nu_bytes = c.unbilled_nu_bytes.saturating_add(*nu_bytes);
        }
        self.add_nu_bytes(node_id, ctx.time_ms, *nu_bytes, events);
        events.push(Event::UsageReported {
            contract: *contract,
            node: node_id,
            nu_bytes: *nu_bytes,
        });
        Ok(())
    }

    pub(super) fn update_contract(
        &mut self,
        at: Applying<'_>,
        contract: &ContractId,
        deployment_hash: &Hash,
        resources: &Capacity,
        events: &mut Vec<Event>,
    ) -> Result<(), TxError> {
        let Applying { signer, fee, ctx } = at;
        let c = self.owned_contract(*contract, &signer)?.clone();
        let ContractSpec::Deployment {
            node, public_ips, ..
        } = c.spec
        else {
            return Err(TxError::ContractState {
                contract: c.id,
                state: "not a deployment contract".into(),
                action: "changing its deployment".into(),
            });
        };
        if c.state != ContractState::Created {
            return Err(TxError::ContractState {
                contract: c.id,
                state: state_name(&c.state),
                action: "updating it".into(),
            });
        }
        // Bill the time so far at the old reservation, so the new one is billed only from now.
        self.try_bill(c.id, ctx.time_ms, fee, false, events)
            .map_err(|u| TxError::InsufficientBalance {
                needed: u.needed,
                fee,
                available: u.available,
            })?;
        let n = self.node(node).ok_or(TxError::UnknownNode(node))?;
        let used_without = n.used.saturating_sub(&c.reserved);
        let needed = used_without
            .checked_add(resources)
            .ok_or_else(|| TxError::Overflow("capacity".into()))?;
        if !needed.fits_within(&n.capacity) {
            return Err(TxError::InsufficientCapacity {
                node,
                requested: resources.to_string(),
                free: n.capacity.saturating_sub(&used_without).to_string(),
            });
        }
        if let Some(n) = self.nodes.get_mut(&node) {
            n.used = needed;
        }
        if let Some(c) = self.contracts.get_mut(contract) {
            c.spec = ContractSpec::Deployment {
                node,
                deployment_hash: *deployment_hash,
                resources: *resources,
                public_ips,
            };
            c.reserved = *resources;
        }
        events.push(Event::ContractUpdated {
            contract: *contract,
            deployment_hash: *deployment_hash,
        });
        Ok(())
    }

    pub(super) fn cancel_contract(
        &mut self,
        at: Applying<'_>,
        contract: &ContractId,
        events: &mut Vec<Event>,
    ) -> Result<(), TxError> {
        let Applying { signer, fee, ctx } = at;
        let c = self.owned_contract(*contract, &signer)?.clone();
        if !c.is_live() {
            return Err(TxError::ContractState {
                contract: c.id,
                state: state_name(&c.state),
                action: "cancelling it".into(),
            });
        }
        if let (ContractSpec::Rent { node }, Some(n)) =
            (&c.spec, c.node.and_then(|id| self.node(id)))
            && n.contracts > 1
        {
            return Err(TxError::RentInUse {
                contract: c.id,
                node: *node,
                contracts: n.contracts - 1,
            });
        }
        self.close_contract(
            c.id,
            DeleteReason::CanceledByOwner,
            ctx.time_ms,
            fee,
            events,
        );
        Ok(())
    }

    /// A node gives back a contract it cannot serve: deleted, its last bill written off,
    /// since the owner got nothing for the time since the previous one.
    pub(super) fn release_contract(
        &mut self,
        at: Applying<'_>,
        contract: &ContractId,
        reason: &str,
        events: &mut Vec<Event>,
    ) -> Result<(), TxError> {
        let Applying { signer, ctx, .. } = at;
        let rules = self.config().ledger_rules;
        if rules < RULES_RELEASE {
            return Err(TxError::LedgerRules {
                what: "releasing a contract".into(),
                needs: RULES_RELEASE,
                runs: rules,
            });
        }
        let c = self
            .contract(*contract)
            .ok_or(TxError::UnknownContract(*contract))?;
        let action = || "releasing it".to_string();
        let node = match (&c.spec, c.node) {
            (ContractSpec::Deployment { .. } | ContractSpec::Storage { .. }, Some(node)) => node,
            (ContractSpec::Rent { .. }, _) => {
                return Err(TxError::ContractState {
                    contract: c.id,
                    state: "a rent of the whole node, which only its owner ends".into(),
                    action: action(),
                });
            }
            _ => {
                return Err(TxError::ContractState {
                    contract: c.id,
                    state: "not on a node".into(),
                    action: action(),
                });
            }
        };
        if !c.is_live() {
            return Err(TxError::ContractState {
                contract: c.id,
                state: state_name(&c.state),
                action: action(),
            });
        }
        self.own_node(node, &signer)?;
        events.push(Event::ContractReleased {
            contract: *contract,
            node,
            reason: reason.to_string(),
        });
        // Nothing is billed for what the node did not serve, and the history says so.
        self.write_off(*contract, ctx.time_ms, events);
        self.delete_contract(*contract, DeleteReason::ReleasedByNode, ctx.time_ms, events);
        Ok(())
    }

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

    pub(super) fn create_contract(
        &mut self,
        at: Applying<'_>,
        spec: &ContractSpec,
        events: &mut Vec<Event>,
    ) -> Result<(), TxError> {
        let Applying { signer, ctx, .. } = at;
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
        let node_down_counter_ms = node
            .and_then(|n| self.node(n))
            .map_or(0, |n| n.down_ms_until(ctx.time_ms, self.params()));
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
                node_down_counter_ms,
                carry_pusd: 0,
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

#[cfg(test)]
mod tests {
    use super::super::testkit::{Kit, key};
    use super::*;
    use peergrid_core::{NodeId, Payload};

    fn cores(cru: u64) -> Capacity {
        Capacity {
            cru,
            ..Capacity::ZERO
        }
    }

    fn deploy(kit: &mut Kit, node: NodeId, cru: u64) -> ContractId {
        let events = kit.ok(
            &key(5),
            Payload::CreateContract(ContractSpec::Deployment {
                node,
                deployment_hash: Hash::ZERO,
                resources: cores(cru),
                public_ips: 0,
            }),
        );
        events
            .iter()
            .find_map(|e| match e {
                Event::ContractCreated { contract, .. } => Some(*contract),
                _ => None,
            })
            .expect("a ContractCreated event")
    }

    fn resize(contract: ContractId, cru: u64) -> Payload {
        Payload::UpdateContract {
            contract,
            deployment_hash: Hash([1; 32]),
            resources: cores(cru),
        }
    }

    #[test]
    fn an_update_that_does_not_fit_keeps_the_old_reservation() {
        let mut kit = Kit::new();
        let farm = kit.farm(&key(1), "farm");
        let node = kit.node(&key(1), farm, &key(40));
        let grown = deploy(&mut kit, node, 4);
        deploy(&mut kit, node, 3);
        let err = kit.refused(&key(5), resize(grown, 6));
        assert!(matches!(err, TxError::InsufficientCapacity { .. }), "{err}");
        assert_eq!(kit.state.node(node).expect("node").used.cru, 7);
        kit.ok(&key(5), resize(grown, 5));
        assert_eq!(kit.state.node(node).expect("node").used.cru, 8);
        let c = kit.state.contract(grown).expect("contract");
        assert_eq!(c.reserved, cores(5));
        assert!(matches!(
            c.spec,
            ContractSpec::Deployment { deployment_hash, .. } if deployment_hash == Hash([1; 32])
        ));
    }

    #[test]
    fn usage_is_reported_only_by_the_node_holding_the_contract() {
        let mut kit = Kit::new();
        let farm = kit.farm(&key(1), "farm");
        let node = kit.node(&key(1), farm, &key(40));
        let contract = deploy(&mut kit, node, 1);
        let usage = Payload::ReportUsage {
            contract,
            nu_bytes: 1 << 20,
        };
        let err = kit.refused(&key(5), usage.clone());
        assert_eq!(
            err,
            TxError::NotNodeKey {
                node,
                signer: key(5).account()
            }
        );
        kit.ok(&key(40), usage.clone());
        kit.ok(&key(40), usage);
        let c = kit.state.contract(contract).expect("contract");
        assert_eq!(c.unbilled_nu_bytes, 2 << 20);
    }

    #[test]
    fn only_the_node_holding_a_contract_releases_it_and_its_capacity_comes_back() {
        let mut kit = Kit::new();
        let farm = kit.farm(&key(1), "farm");
        let node = kit.node(&key(1), farm, &key(40));
        let other = kit.node(&key(1), farm, &key(41));
        let contract = deploy(&mut kit, node, 2);
        let release = Payload::ReleaseContract {
            contract,
            reason: "needs 2 cores but this node has 0 free".into(),
        };
        for signer in [5, 41, 1] {
            let err = kit.refused(&key(signer), release.clone());
            assert!(matches!(err, TxError::NotNodeKey { .. }), "{signer}: {err}");
        }
        let events = kit.ok(&key(40), release.clone());
        assert!(events.iter().any(|e| matches!(
            e,
            Event::ContractReleased { contract: c, node: n, reason }
                if *c == contract && *n == node && reason.contains("0 free")
        )));
        let c = kit.state.contract(contract).expect("contract");
        assert!(matches!(
            c.state,
            ContractState::Deleted {
                reason: DeleteReason::ReleasedByNode,
                ..
            }
        ));
        assert_eq!(kit.state.node(node).expect("node").used, Capacity::ZERO);
        assert_eq!(kit.state.node(node).expect("node").contracts, 0);
        let err = kit.refused(&key(40), release);
        assert_eq!(
            err,
            TxError::ContractState {
                contract,
                state: "deleted".into(),
                action: "releasing it".into()
            }
        );
        // A rent holds the whole node for its owner: the node cannot end it.
        let events = kit.ok(
            &key(5),
            Payload::CreateContract(ContractSpec::Rent { node: other }),
        );
        let rent = events
            .iter()
            .find_map(|e| match e {
                Event::ContractCreated { contract, .. } => Some(*contract),
                _ => None,
            })
            .expect("a rent");
        let err = kit.refused(
            &key(41),
            Payload::ReleaseContract {
                contract: rent,
                reason: "no".into(),
            },
        );
        assert!(matches!(err, TxError::ContractState { .. }), "{err}");
    }

    #[test]
    fn a_cancelled_contract_stays_cancelled_and_gives_its_capacity_back() {
        let mut kit = Kit::new();
        let farm = kit.farm(&key(1), "farm");
        let node = kit.node(&key(1), farm, &key(40));
        let contract = deploy(&mut kit, node, 2);
        let cancel = Payload::CancelContract { contract };
        let err = kit.refused(&key(6), cancel.clone());
        assert!(matches!(err, TxError::NotContractOwner { .. }), "{err}");
        kit.ok(&key(5), cancel.clone());
        assert_eq!(kit.state.node(node).expect("node").used, Capacity::ZERO);
        let err = kit.refused(&key(5), cancel);
        assert_eq!(
            err,
            TxError::ContractState {
                contract,
                state: "deleted".into(),
                action: "cancelling it".into()
            }
        );
    }
}
