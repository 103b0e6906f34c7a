//! Farms: creating and updating one (unique names in any letter case, public IPs held by one farm), ownership.

use peergrid_core::{AccountId, FarmId, PublicIp};

use crate::records::{Farm, FarmIp};
use crate::state::State;

use super::*;

impl State {
    pub(super) fn create_farm(
        &mut self,
        at: Applying<'_>,
        name: &str,
        public_ips: &[PublicIp],
        events: &mut Vec<Event>,
    ) -> Result<(), TxError> {
        let Applying { signer, ctx, .. } = at;
        if self.farm_names.contains(&name.to_lowercase()) {
            return Err(TxError::FarmNameTaken(name.to_string()));
        }
        let id = self.next_farm_id()?;
        for ip in public_ips {
            if let Some(other) = self.farm_ips.get(&ip.ip) {
                return Err(TxError::PublicIpTaken {
                    ip: ip.to_string(),
                    farm: *other,
                });
            }
            self.farm_ips.insert(ip.ip, id);
        }
        self.owner_farms.insert((signer, id), ());
        self.farms.insert(
            id,
            Farm {
                id,
                name: name.to_string(),
                owner: signer,
                payout: signer,
                public_ips: public_ips
                    .iter()
                    .map(|ip| FarmIp {
                        ip: *ip,
                        contract: None,
                    })
                    .collect(),
                certified: false,
                created_ms: ctx.time_ms,
            },
        );
        self.farm_names.insert(name.to_lowercase(), id);
        events.push(Event::FarmCreated {
            farm: id,
            owner: signer,
            name: name.to_string(),
        });
        Ok(())
    }

    pub(super) fn update_farm(
        &mut self,
        at: Applying<'_>,
        farm: &FarmId,
        name: Option<&str>,
        public_ips: Option<&[PublicIp]>,
        payout: &Option<AccountId>,
        events: &mut Vec<Event>,
    ) -> Result<(), TxError> {
        let Applying { signer, .. } = at;
        let mut f = self.owned_farm(*farm, &signer)?.clone();
        if let Some(name) = name
            && name != f.name
        {
            let key = name.to_lowercase();
            if self.farm_names.get(&key).is_some_and(|id| *id != f.id) {
                return Err(TxError::FarmNameTaken(name.to_string()));
            }
            self.farm_names.remove(&f.name.to_lowercase());
            self.farm_names.insert(key, f.id);
            f.name = name.to_string();
        }
        if let Some(ips) = public_ips {
            // IPs held by live contracts must stay: removing them would strand the deployments.
            for held in f.public_ips.iter().filter(|p| p.contract.is_some()) {
                if !ips.iter().any(|ip| ip.ip == held.ip.ip) {
                    return Err(TxError::Field {
                        reason: format!(
                            "public IP {} is used by contract {}; it cannot be removed",
                            held.ip,
                            held.contract.unwrap_or_default()
                        ),
                    });
                }
            }
            for ip in ips {
                if let Some(other) = self.farm_ips.get(&ip.ip)
                    && *other != f.id
                {
                    return Err(TxError::PublicIpTaken {
                        ip: ip.to_string(),
                        farm: *other,
                    });
                }
            }
            for old in &f.public_ips {
                self.farm_ips.remove(&old.ip.ip);
            }
            for ip in ips {
                self.farm_ips.insert(ip.ip, f.id);
            }
            f.public_ips = ips
                .iter()
                .map(|ip| FarmIp {
                    ip: *ip,
                    contract: f
                        .public_ips
                        .iter()
                        .find(|p| p.ip.ip == ip.ip)
                        .and_then(|p| p.contract),
                })
                .collect();
        }
        if let Some(p) = payout {
            f.payout = *p;
        }
        self.farms.insert(f.id, f);
        events.push(Event::FarmUpdated { farm: *farm });
        Ok(())
    }

    pub(crate) fn next_farm_id(&mut self) -> Result<FarmId, TxError> {
        let g = self.globals_mut();
        let id = g.next_farm;
        g.next_farm = id
            .checked_add(1)
            .ok_or_else(|| TxError::Overflow("farm id".into()))?;
        Ok(id)
    }

    pub(crate) fn owned_farm(&self, farm: FarmId, signer: &AccountId) -> Result<&Farm, TxError> {
        let f = self.farm(farm).ok_or(TxError::UnknownFarm(farm))?;
        if f.owner != *signer {
            return Err(TxError::NotFarmOwner {
                farm,
                signer: *signer,
            });
        }
        Ok(f)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testkit::{Kit, key};
    use super::*;
    use peergrid_core::Payload;

    fn ip(last: u8) -> PublicIp {
        PublicIp {
            ip: [185, 0, 0, last],
            prefix_len: 24,
            gateway: [185, 0, 0, 1],
        }
    }

    fn rename(farm: FarmId, name: &str) -> Payload {
        Payload::UpdateFarm {
            farm,
            name: Some(name.into()),
            public_ips: None,
            payout: None,
        }
    }

    #[test]
    fn a_renamed_farm_frees_its_old_name_and_keeps_a_change_of_case() {
        let mut kit = Kit::new();
        let first = kit.farm(&key(1), "alpha");
        kit.ok(&key(1), rename(first, "Alpha"));
        assert_eq!(kit.state.farm_by_name("alpha").map(|f| f.id), Some(first));
        kit.ok(&key(1), rename(first, "beta"));
        assert!(kit.state.farm_by_name("alpha").is_none());
        let second = kit.farm(&key(2), "ALPHA");
        assert_ne!(first, second);
        let err = kit.refused(&key(2), rename(second, "Beta"));
        assert_eq!(err, TxError::FarmNameTaken("Beta".into()));
    }

    #[test]
    fn a_public_ip_belongs_to_one_farm_until_it_lets_it_go() {
        let mut kit = Kit::new();
        let first = kit.farm(&key(1), "first");
        let second = kit.farm(&key(2), "second");
        let set = |farm, ips: Vec<PublicIp>| Payload::UpdateFarm {
            farm,
            name: None,
            public_ips: Some(ips),
            payout: None,
        };
        kit.ok(&key(1), set(first, vec![ip(10), ip(11)]));
        let err = kit.refused(&key(2), set(second, vec![ip(11)]));
        assert_eq!(
            err,
            TxError::PublicIpTaken {
                ip: ip(11).to_string(),
                farm: first
            }
        );
        kit.ok(&key(1), set(first, vec![ip(10)]));
        kit.ok(&key(2), set(second, vec![ip(11)]));
        let held = |kit: &Kit, farm| -> Vec<PublicIp> {
            let f = kit.state.farm(farm).expect("farm");
            f.public_ips.iter().map(|p| p.ip).collect()
        };
        assert_eq!(held(&kit, first), vec![ip(10)]);
        assert_eq!(held(&kit, second), vec![ip(11)]);
    }

    #[test]
    fn only_the_owner_changes_a_farm() {
        let mut kit = Kit::new();
        let farm = kit.farm(&key(1), "mine");
        let err = kit.refused(&key(2), rename(farm, "theirs"));
        assert_eq!(
            err,
            TxError::NotFarmOwner {
                farm,
                signer: key(2).account()
            }
        );
    }
}
