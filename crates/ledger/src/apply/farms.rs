//! Farms: ids and ownership.

use peergrid_core::{AccountId, FarmId};

use crate::records::Farm;
use crate::state::State;

use super::*;

impl State {
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
