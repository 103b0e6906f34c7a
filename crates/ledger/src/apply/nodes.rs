//! Nodes: joining a farm by invitation, capacity and location, power targets, uptime reports, ownership.

use peergrid_core::economics;
use peergrid_core::tx::Signature;
use peergrid_core::tx::{FARM_INVITE_NAMESPACE, PowerTarget, invitation_message};
use peergrid_core::{AccountId, Capacity, FarmId, Location, NodeId};

use crate::minting::PreviousReport;
use crate::records::{Node, Uptime};
use crate::state::State;

use super::*;

impl State {
    pub(super) fn register_node(
        &mut self,
        at: Applying<'_>,
        farm: &FarmId,
        capacity: &Capacity,
        location: &Location,
        invitation: &Signature,
        events: &mut Vec<Event>,
    ) -> Result<(), TxError> {
        let Applying { signer, ctx, .. } = at;
        if let Some(existing) = self.node_accounts.get(&signer) {
            return Err(TxError::NodeAlreadyRegistered {
                account: signer,
                node: *existing,
            });
        }
        let owner = self.farm(*farm).ok_or(TxError::UnknownFarm(*farm))?.owner;
        let message = invitation_message(self.chain_id(), *farm, &signer);
        if !invitation.verify(&owner, FARM_INVITE_NAMESPACE, &message) {
            return Err(TxError::InvalidInvitation {
                farm: *farm,
                node: signer,
            });
        }
        let id = self.next_node_id()?;
        let node = Node {
            id,
            farm: *farm,
            account: signer,
            capacity: *capacity,
            used: Capacity::ZERO,
            location: location.clone(),
            registered_ms: ctx.time_ms,
            certified: false,
            power_target: PowerTarget::Up,
            connection_price_uusd: self.params().token_price_uusd,
            uptime: Uptime::default(),
            contracts: 0,
            rented_by: None,
            down_ms: 0,
            ledger_outage_ms: self.economy().outage_ms,
        };
        self.nodes.insert(id, node);
        self.node_accounts.insert(signer, id);
        self.farm_nodes.insert((*farm, id), ());
        let weight = economics::reward_units(capacity).weight_micro();
        let e = self.economy_mut();
        e.farmer_weight_total = e.farmer_weight_total.saturating_add(weight);
        events.push(Event::NodeRegistered {
            node: id,
            farm: *farm,
            account: signer,
        });
        Ok(())
    }

    pub(super) fn update_node(
        &mut self,
        at: Applying<'_>,
        node: &NodeId,
        capacity: Option<&Capacity>,
        location: Option<&Location>,
        events: &mut Vec<Event>,
    ) -> Result<(), TxError> {
        let Applying { signer, .. } = at;
        let mut n = self.own_node(*node, &signer)?.clone();
        if let Some(c) = capacity {
            if !n.used.fits_within(c) {
                return Err(TxError::CapacityBelowReserved {
                    node: n.id,
                    reserved: n.used,
                    offered: *c,
                });
            }
            let old = economics::reward_units(&n.capacity).weight_micro();
            let new = economics::reward_units(c).weight_micro();
            let e = self.economy_mut();
            e.farmer_weight_total = e
                .farmer_weight_total
                .saturating_sub(old)
                .saturating_add(new);
            n.capacity = *c;
        }
        if let Some(l) = location {
            n.location = l.clone();
        }
        self.nodes.insert(n.id, n);
        events.push(Event::NodeUpdated { node: *node });
        Ok(())
    }

    pub(super) fn set_power_target(
        &mut self,
        at: Applying<'_>,
        node: &NodeId,
        target: &PowerTarget,
        events: &mut Vec<Event>,
    ) -> Result<(), TxError> {
        let Applying { signer, .. } = at;
        let farm = self.node(*node).ok_or(TxError::UnknownNode(*node))?.farm;
        self.owned_farm(farm, &signer)?;
        if let Some(n) = self.nodes.get_mut(node) {
            n.power_target = *target;
        }
        events.push(Event::PowerTargetSet {
            node: *node,
            target: *target,
        });
        Ok(())
    }

    pub(super) fn report_uptime(
        &mut self,
        at: Applying<'_>,
        node: &NodeId,
        uptime_secs: &u64,
        timestamp_secs: &u64,
        events: &mut Vec<Event>,
    ) -> Result<(), TxError> {
        let Applying { signer, ctx, .. } = at;
        let n = self.own_node(*node, &signer)?;
        let params = self.params();
        let now_secs = ctx.time_ms / 1000;
        let drift_secs = now_secs.abs_diff(*timestamp_secs);
        if drift_secs > params.uptime_drift_secs {
            return Err(TxError::UptimeClockDrift {
                timestamp_secs: *timestamp_secs,
                drift_secs,
                max_secs: params.uptime_drift_secs,
            });
        }
        // Ledger time is cut into windows of one interval and a node reports once per
        // window: a strict "once per interval" that block-time jitter cannot game.
        let interval_ms = params.uptime_interval_secs * 1000;
        let window = ctx.time_ms / interval_ms;
        if let Some(last) = n.uptime.last_report_ms
            && last / interval_ms >= window
        {
            return Err(TxError::UptimeTooSoon {
                node: *node,
                next_ms: (window + 1) * interval_ms,
            });
        }
        let previous = n.uptime.last_report_ms.map(|at_ms| PreviousReport {
            at_ms,
            uptime_secs: n.uptime.last_uptime_secs,
            timestamp_secs: n.uptime.last_timestamp_secs,
            boot_secs: n.uptime.boot_secs,
        });
        let boot_secs = self.account_uptime(
            *node,
            previous,
            ctx.time_ms,
            *uptime_secs,
            *timestamp_secs,
            events,
        );
        // The silence this report ends, if it was longer than two intervals, is closed.
        let down_ms = self
            .node(*node)
            .map_or(0, |n| n.down_ms_until(ctx.time_ms, self.params()));
        let outage_ms = self.economy().outage_ms;
        if let Some(n) = self.nodes.get_mut(node) {
            n.down_ms = down_ms;
            n.ledger_outage_ms = outage_ms;
            n.uptime = Uptime {
                last_report_ms: Some(ctx.time_ms),
                last_uptime_secs: *uptime_secs,
                last_timestamp_secs: *timestamp_secs,
                boot_secs,
                reports: n.uptime.reports.saturating_add(1),
            };
        }
        events.push(Event::UptimeReported {
            node: *node,
            uptime_secs: *uptime_secs,
        });
        Ok(())
    }

    pub(crate) fn next_node_id(&mut self) -> Result<NodeId, TxError> {
        let g = self.globals_mut();
        let id = g.next_node;
        g.next_node = id
            .checked_add(1)
            .ok_or_else(|| TxError::Overflow("node id".into()))?;
        Ok(id)
    }

    pub(crate) fn own_node(&self, node: NodeId, signer: &AccountId) -> Result<&Node, TxError> {
        let n = self.node(node).ok_or(TxError::UnknownNode(node))?;
        if n.account != *signer {
            return Err(TxError::NotNodeKey {
                node,
                signer: *signer,
            });
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testkit::{Kit, capacity, key};
    use super::*;
    use peergrid_core::tx::{ContractSpec, sign_invitation};
    use peergrid_core::{Hash, Payload};

    fn resize(node: NodeId, capacity: Capacity) -> Payload {
        Payload::UpdateNode {
            node,
            capacity: Some(capacity),
            location: None,
        }
    }

    #[test]
    fn a_node_never_shrinks_below_what_its_contracts_hold() {
        let mut kit = Kit::new();
        let farm = kit.farm(&key(1), "farm");
        let node = kit.node(&key(1), farm, &key(40));
        let held = Capacity {
            cru: 4,
            ..Capacity::ZERO
        };
        kit.ok(
            &key(5),
            Payload::CreateContract(ContractSpec::Deployment {
                node,
                deployment_hash: Hash::ZERO,
                resources: held,
                public_ips: 0,
            }),
        );
        let small = Capacity {
            cru: 2,
            ..capacity()
        };
        let err = kit.refused(&key(40), resize(node, small));
        assert!(
            matches!(err, TxError::CapacityBelowReserved { .. }),
            "{err}"
        );
        let enough = Capacity {
            cru: 4,
            ..capacity()
        };
        kit.ok(&key(40), resize(node, enough));
        assert_eq!(kit.state.node(node).expect("node").capacity, enough);
    }

    #[test]
    fn the_farmers_weight_follows_a_nodes_capacity() {
        let mut kit = Kit::new();
        let farm = kit.farm(&key(1), "farm");
        let weight = |c: &Capacity| economics::reward_units(c).weight_micro();
        let node = kit.node(&key(1), farm, &key(40));
        assert_eq!(kit.state.economy().farmer_weight_total, weight(&capacity()));
        let bigger = Capacity {
            cru: 16,
            ..capacity()
        };
        kit.ok(&key(40), resize(node, bigger));
        assert_eq!(kit.state.economy().farmer_weight_total, weight(&bigger));
        assert_eq!(kit.state.farmer_weight(&key(1).account()), weight(&bigger));
    }

    #[test]
    fn a_node_joins_only_with_an_invitation_from_that_farm() {
        let mut kit = Kit::new();
        let farm = kit.farm(&key(1), "one");
        let other = kit.farm(&key(2), "two");
        kit.ok(
            &key(1),
            Payload::Transfer {
                to: key(40).account(),
                amount: peergrid_core::Amount::tokens(1),
            },
        );
        let for_other = sign_invitation(
            &key(2),
            super::super::testkit::CHAIN,
            other,
            &key(40).account(),
        );
        let location = Location {
            country: "BE".into(),
            city: "Ghent".into(),
            latitude_micro: 0,
            longitude_micro: 0,
        };
        let err = kit.refused(
            &key(40),
            Payload::RegisterNode {
                farm,
                capacity: capacity(),
                location,
                invitation: for_other,
            },
        );
        assert_eq!(
            err,
            TxError::InvalidInvitation {
                farm,
                node: key(40).account()
            }
        );
    }

    #[test]
    fn only_the_farm_owner_sets_a_power_target() {
        let mut kit = Kit::new();
        let farm = kit.farm(&key(1), "farm");
        let node = kit.node(&key(1), farm, &key(40));
        let down = Payload::SetPowerTarget {
            node,
            target: PowerTarget::Down,
        };
        let err = kit.refused(&key(40), down.clone());
        assert!(matches!(err, TxError::NotFarmOwner { .. }), "{err}");
        kit.ok(&key(1), down);
        assert_eq!(
            kit.state.node(node).expect("node").power_target,
            PowerTarget::Down
        );
    }
}
