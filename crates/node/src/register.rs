//! Joining the ledger: register this machine in a farm, or update what it registered.
//!
//! Consent: the ledger accepts a node into a farm only with the farm owner's signed
//! invitation for that node's key. The owner signs it with `peergrid farm invite`, or,
//! when the owner's key is on this machine, the node signs it itself with that key.

use std::time::Duration;

use anyhow::{Context, bail};
use peergrid_client::{Client, ClientError, TxStatus};
use peergrid_client::{Farm, Node};
use peergrid_core::tx::{Signature, sign_invitation};
use peergrid_core::{Amount, Capacity, FarmId, Keypair, Location, NodeId, Payload};
use tracing::{info, warn};

use crate::settings::LocationUpdate;

/// What the node's account keeps for its own fees (registration and updates); uptime
/// reports are free.
pub const FEE_FLOAT: Amount = Amount(10_000_000);

/// How long to wait for a registration to be final.
const FINALITY_TIMEOUT: Duration = Duration::from_secs(30);

/// Who consents to the node joining the farm.
#[derive(Clone, Copy)]
pub enum Consent<'a> {
    /// An invitation the owner signed for this node.
    Invitation(Signature),
    /// The owner's key, available here: it signs the invitation and funds the node.
    OwnerKey(&'a Keypair),
    /// None given.
    None,
}

/// Fetch a farm, with a clear error when it does not exist.
pub async fn farm(client: &Client, id: FarmId) -> anyhow::Result<Farm> {
    match client.farm(&id.to_string()).await {
        Ok(f) => Ok(f.data),
        Err(ClientError::Refused { status: 404, .. }) => bail!(
            "farm {id} does not exist on the ledger; create one with `peergrid farm create NAME` \
             and pass its id with --farm"
        ),
        Err(e) => Err(e).context(format!("cannot read farm {id}")),
    }
}

/// Fetch a node record.
pub async fn node(client: &Client, id: NodeId) -> anyhow::Result<Node> {
    match client.node(id).await {
        Ok(Some(n)) => Ok(n.data.node),
        Ok(None) => bail!("node {id} does not exist on the ledger"),
        Err(e) => Err(e).context(format!("cannot read node {id}")),
    }
}

async fn send(client: &Client, key: &Keypair, payload: Payload) -> anyhow::Result<()> {
    let kind = payload.kind();
    let (hash, status) = client
        .send(key, payload, FINALITY_TIMEOUT)
        .await
        .with_context(|| format!("{kind} transaction failed"))?;
    match status {
        TxStatus::Finalized { height, .. } => {
            info!(%hash, height, kind, "finalized");
            Ok(())
        }
        TxStatus::Rejected { reason, .. } => bail!("the ledger rejected {kind}: {reason}"),
        other => bail!("{kind} transaction {hash} ended as {other:?}"),
    }
}

/// Make sure `key` is registered in `farm` with the `probed` capacity (or what the ledger
/// accepts of it, see [`acceptable_capacity`]) and `location` (over what the ledger holds);
/// returns its node id and the location registered. Only what changed is sent.
pub async fn ensure_registered(
    client: &Client,
    key: &Keypair,
    farm_id: FarmId,
    probed: Capacity,
    location: &LocationUpdate,
    consent: Consent<'_>,
) -> anyhow::Result<(NodeId, Location)> {
    let me = key.account();
    let farm = farm(client, farm_id).await?;
    let account = client
        .account(&me)
        .await
        .context("cannot read the node's account")?
        .data;
    if let Some(id) = account.node {
        let record = node(client, id).await?;
        if record.farm != farm_id {
            bail!(
                "this node's key is already node {id} of farm {}, not of farm {farm_id}; \
                 run it with --farm {} or give it another --data-dir (a new key)",
                record.farm,
                record.farm
            );
        }
        let location = location.over(&record.location);
        let capacity = acceptable_capacity(probed, &record.capacity, &record.used);
        if capacity != probed {
            warn!(
                node = id,
                "this machine now offers {probed}, less than the contracts on node {id} reserve \
                 ({}); the ledger keeps {capacity} for it until those contracts end, and the node \
                 refuses new work beyond what the machine offers. Free space on its disks, give \
                 it back its disks or memory, or wait for those contracts to end",
                record.used.excess_over(&probed)
            );
        }
        let capacity = settled(capacity, &record.capacity);
        let capacity_changed = record.capacity != capacity;
        let location_changed = record.location != location;
        if capacity_changed || location_changed {
            info!(
                node = id,
                %capacity,
                country = %location.country,
                city = %location.city,
                "capacity or location changed, updating the ledger"
            );
            fund(client, &consent, &me, account.balance).await?;
            send(
                client,
                key,
                Payload::UpdateNode {
                    node: id,
                    capacity: capacity_changed.then_some(capacity),
                    location: location_changed.then(|| location.clone()),
                },
            )
            .await?;
        }
        return Ok((id, location));
    }
    let location = location.over(&Location::default());
    let capacity = probed;
    let status = client.status().await?;
    let chain_id = status.data.chain_id;
    let invitation = match &consent {
        Consent::Invitation(sig) => *sig,
        Consent::OwnerKey(owner) => {
            if owner.account() != farm.owner {
                bail!(
                    "the key {} does not own farm {farm_id} (its owner is {}); ask the owner for \
                     an invitation (`peergrid farm invite --farm {farm_id} --node {me}`) and pass \
                     it with --invitation",
                    owner.account(),
                    farm.owner
                );
            }
            sign_invitation(owner, &chain_id, farm_id, &me)
        }
        Consent::None => bail!(
            "joining farm {farm_id} needs its owner's consent: run with the owner's key \
             (--key FILE), or ask the owner for an invitation (`peergrid farm invite --farm \
             {farm_id} --node {me}`) and pass it with --invitation"
        ),
    };
    fund(client, &consent, &me, account.balance).await?;
    send(
        client,
        key,
        Payload::RegisterNode {
            farm: farm_id,
            capacity,
            location: location.clone(),
            invitation,
        },
    )
    .await?;
    let id = client
        .account(&me)
        .await?
        .data
        .node
        .context("registration finalized but the ledger shows no node for this key")?;
    info!(node = id, farm = farm_id, %capacity, "registered");
    Ok((id, location))
}

/// The capacity to register when the machine offers `probed`: `probed`, except in the
/// fields where the node's contracts reserve more, which register what they reserve (no
/// more: the machine does not have it, so none of it is free for new contracts). Disk
/// bytes kept that way for one class come out of what the other class offers beyond its
/// `registered` figure: a disk given again without its `--disk` class is probed as the
/// other class, and the same bytes must not count, and earn, twice (a disk that is just
/// gone takes nothing from the others).
/// The ledger refuses a capacity below what contracts reserve, and a node that cannot
/// update its capacity must still start and serve those contracts.
pub fn acceptable_capacity(
    probed: Capacity,
    registered: &Capacity,
    reserved: &Capacity,
) -> Capacity {
    let kept_ssd = reserved.sru.saturating_sub(probed.sru);
    let kept_hdd = reserved.hru.saturating_sub(probed.hru);
    let moved_to_hdd = kept_ssd.min(probed.hru.saturating_sub(registered.hru));
    let moved_to_ssd = kept_hdd.min(probed.sru.saturating_sub(registered.sru));
    Capacity {
        cru: probed.cru.max(reserved.cru),
        mru: probed.mru.max(reserved.mru),
        sru: probed.sru.saturating_sub(moved_to_ssd).max(reserved.sru),
        hru: probed.hru.saturating_sub(moved_to_hdd).max(reserved.hru),
    }
}

/// How far below the probed disk figure the registered one may stay, in parts of the
/// probe: free space moves a little between starts, and each update costs a fee.
const DISK_SETTLE_PARTS: u64 = 20;

/// `capacity` to register, keeping the `registered` disk figures where they are a little
/// below it (never above: a node must not offer space it does not have).
pub fn settled(capacity: Capacity, registered: &Capacity) -> Capacity {
    let keep = |new: u64, old: u64| {
        if old <= new && new - old <= new / DISK_SETTLE_PARTS {
            old
        } else {
            new
        }
    };
    Capacity {
        sru: keep(capacity.sru, registered.sru),
        hru: keep(capacity.hru, registered.hru),
        ..capacity
    }
}

/// Give the node's account enough for its fees, from the owner's key when we have it.
async fn fund(
    client: &Client,
    consent: &Consent<'_>,
    me: &peergrid_core::AccountId,
    balance: Amount,
) -> anyhow::Result<()> {
    if balance >= Amount(FEE_FLOAT.0 / 10) {
        return Ok(());
    }
    match consent {
        Consent::OwnerKey(owner) => {
            info!(amount = %FEE_FLOAT, "funding the node's account for its fees");
            send(
                client,
                owner,
                Payload::Transfer {
                    to: *me,
                    amount: FEE_FLOAT,
                },
            )
            .await
            .context("cannot fund the node's account from the farm owner's key")
        }
        _ => bail!(
            "the node's account {me} has {balance} and needs a little for its transaction fees; \
             send it some: `peergrid wallet transfer --to {me} --amount 1`"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use peergrid_core::capacity::GIB;

    #[test]
    fn a_disk_figure_a_little_above_the_ledgers_keeps_the_ledgers() {
        let at = |sru: u64, hru: u64| Capacity {
            cru: 4,
            mru: 8 * GIB,
            sru,
            hru,
        };
        let registered = at(100 * GIB, 0);
        // Free space grew a little since the last start: no update, no fee.
        assert_eq!(settled(at(103 * GIB, 0), &registered), registered);
        // It grew a lot: offered.
        assert_eq!(settled(at(120 * GIB, 0), &registered), at(120 * GIB, 0));
        // It shrank, even a little: the ledger must not keep space that is gone.
        assert_eq!(settled(at(99 * GIB, 0), &registered), at(99 * GIB, 0));
        // Cores and memory are taken as probed.
        let more_cores = Capacity {
            cru: 8,
            ..at(101 * GIB, 0)
        };
        assert_eq!(
            settled(more_cores, &registered),
            Capacity {
                cru: 8,
                ..registered
            }
        );
    }

    #[test]
    fn capacity_below_what_contracts_reserve_registers_what_they_reserve() {
        let reserved = Capacity {
            cru: 1,
            mru: GIB,
            sru: 20 * GIB,
            hru: 0,
        };
        // A smaller SSD than the contracts reserve, and more memory: the SSD figure is what
        // the contracts hold (none free), the memory grows.
        let probed = Capacity {
            cru: 4,
            mru: 16 * GIB,
            sru: 10 * GIB,
            hru: 0,
        };
        let registered = Capacity {
            sru: 100 * GIB,
            ..probed
        };
        assert_eq!(
            acceptable_capacity(probed, &registered, &reserved),
            Capacity {
                sru: 20 * GIB,
                ..probed
            }
        );
        // Shrinking, but still above what is reserved: the ledger takes it as is.
        let smaller = Capacity {
            sru: 50 * GIB,
            ..probed
        };
        assert_eq!(
            acceptable_capacity(smaller, &registered, &reserved),
            smaller
        );
    }

    #[test]
    fn a_disk_probed_as_the_other_class_is_not_counted_twice() {
        // Registered with its 100 GiB disk as SSD, 20 GiB of it reserved; restarted
        // without `--disk`, the same disk is probed as a 100 GiB HDD.
        let reserved = Capacity {
            cru: 1,
            mru: GIB,
            sru: 20 * GIB,
            hru: 0,
        };
        let probed = Capacity {
            cru: 4,
            mru: 8 * GIB,
            sru: 0,
            hru: 100 * GIB,
        };
        let before = Capacity {
            sru: 100 * GIB,
            hru: 0,
            ..probed
        };
        let registered = acceptable_capacity(probed, &before, &reserved);
        assert_eq!((registered.sru, registered.hru), (20 * GIB, 80 * GIB));
        assert_eq!(
            registered.sru + registered.hru,
            100 * GIB,
            "one disk's bytes, once"
        );
        // A separate SSD that is gone takes nothing from the HDD, which did not grow.
        let two_disks = Capacity {
            hru: 100 * GIB,
            ..before
        };
        let registered = acceptable_capacity(probed, &two_disks, &reserved);
        assert_eq!((registered.sru, registered.hru), (20 * GIB, 100 * GIB));
        // Contracts on both classes, neither offered any more: both kept, nothing else.
        let both = Capacity {
            hru: 30 * GIB,
            ..reserved
        };
        let gone = Capacity {
            sru: 0,
            hru: 0,
            ..probed
        };
        let registered = acceptable_capacity(gone, &before, &both);
        assert_eq!((registered.sru, registered.hru), (20 * GIB, 30 * GIB));
    }
}
