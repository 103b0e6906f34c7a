//! The reconciliation loop: follow the ledger's finalized blocks and keep the local
//! world equal to the ledger, for the contracts on this node.
//!
//! Events are only triggers: for every contract an event names (and that is ours, or
//! was), the loop reads the contract's current record and reconciles to it, so it
//! never depends on interpreting each kind of event, and a missed or reordered event
//! cannot leave the world wrong. A full resync (every contract on this node) runs at
//! start, after the event stream breaks, and every [`RESYNC_EVERY`].

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use peergrid_client::{Client, ClientError, ContractFilter, FinalizedBlock};
use peergrid_client::{Contract, ContractState};
use peergrid_core::{ContractId, NodeId};
use serde_json::Value;
use tracing::{debug, info, warn};

use crate::shared::Shared;
use crate::world::{Action, WorkloadState, plan};

/// How often the whole set of contracts is re-read, in case anything was missed.
pub const RESYNC_EVERY: Duration = Duration::from_secs(300);
/// How soon a contract a block named is read again when it could not be read.
const RETRY_UNREAD: Duration = Duration::from_secs(1);

/// Persist the followed height at least this often (in blocks) when nothing changes.
const SAVE_EVERY_BLOCKS: u64 = 100;

/// Every contract on `node`, and the height they were read at.
async fn contracts_of(client: &Client, node: NodeId) -> Result<(u64, Vec<Contract>), ClientError> {
    client
        .contracts(ContractFilter {
            node: Some(node),
            ..ContractFilter::default()
        })
        .await
}

/// Read one contract as the ledger has it now, proven: its Merkle proof against a state root
/// a quorum of the validators certified. The node acts on what it reads (provisions,
/// pauses, removes), so no single validator may decide that for it.
///
/// A contract said not to exist is asked again of the validator furthest along: a
/// request names a contract its owner just saw finalized, and the validator this node
/// reads from may be behind (catching up after a pause).
pub async fn contract(client: &Client, id: ContractId) -> Result<Option<Contract>, ClientError> {
    if let Some(found) = client.proven_contract(id).await?.value {
        return Ok(Some(found));
    }
    client.choose_again().await;
    Ok(client.proven_contract(id).await?.value)
}

/// Reconcile one contract; returns whether anything changed.
pub async fn reconcile_one(shared: &Shared, contract: &Contract) -> bool {
    let mut world = shared.world.lock().await;
    let Some(me) = world.node else {
        return false;
    };
    if contract.node.is_some_and(|n| n != me) && !world.workloads.contains_key(&contract.id) {
        debug!(contract = contract.id, node = ?contract.node, "contract for another node, ignored");
        return false;
    }
    let action = plan(&world, me, &shared.capacity, contract);
    if action == Action::None {
        return false;
    }
    // One line per change, at info level (a refusal at warn): `node run` shows them by default.
    let id = contract.id;
    match &action {
        Action::Provision(w) => match &w.state {
            WorkloadState::Refused { reason } => warn!(contract = id, %reason, "refused"),
            WorkloadState::Paused => info!(
                contract = id,
                kind = %w.kind,
                reserved = %w.reserved,
                "provisioned, paused: the contract is in its grace period"
            ),
            WorkloadState::Running => {
                info!(contract = id, kind = %w.kind, reserved = %w.reserved, "provisioned")
            }
        },
        Action::Refuse(reason) => warn!(contract = id, %reason, "refused"),
        Action::Pause => info!(
            contract = id,
            "paused: the contract is in its grace period (unpaid); its data is kept"
        ),
        Action::Resume => info!(contract = id, "resumed: the contract is paid again"),
        Action::Remove => {
            let why = match contract.state {
                ContractState::Deleted { reason, .. } => format!("deleted ({reason})"),
                _ => "moved to another node".into(),
            };
            info!(contract = id, reason = %why, "removed with its data")
        }
        Action::Update {
            deployment_hash,
            reserved,
        } => match world.workloads.get(&id) {
            Some(w) if w.deployment_hash != *deployment_hash => info!(
                contract = id,
                hash = ?deployment_hash,
                %reserved,
                "the contract's deployment changed; waiting for the new one"
            ),
            _ => info!(contract = id, %reserved, "the contract's resources changed"),
        },
        Action::None => {}
    }
    let applied = world.apply(contract.id, action);
    // Told even when applying failed part way: a pause or a removal already made in
    // the world (its save, or the folder's removal, failed) must reach the shard store
    // and the workloads now, since the next resync sees nothing left to do.
    shared.sync_storage(&world);
    shared.compute.sync(&world);
    if let Err(e) = applied {
        warn!(contract = contract.id, error = %e, "cannot apply; will retry on the next resync");
        return false;
    }
    true
}

/// Contracts an event names, and whether it names this node.
fn mentioned(event: &Value, me: NodeId) -> (Option<ContractId>, bool) {
    let contract = event.get("contract").and_then(Value::as_u64);
    let ours = event.get("node").and_then(Value::as_u64) == Some(u64::from(me));
    (contract, ours)
}

/// The contracts a block touches that concern this node.
fn relevant(
    block: &FinalizedBlock,
    me: NodeId,
    known: &BTreeSet<ContractId>,
) -> BTreeSet<ContractId> {
    let tx_events = block
        .txs
        .iter()
        .filter_map(|t| t.result.as_ref().ok())
        .flatten();
    let mut out = BTreeSet::new();
    for event in tx_events.chain(block.end_events.iter()) {
        let Ok(value) = serde_json::to_value(event) else {
            continue;
        };
        if let (Some(c), ours) = mentioned(&value, me)
            && (ours || known.contains(&c))
        {
            out.insert(c);
        }
    }
    out
}

/// The contracts this node holds a workload (or a refusal) for.
async fn held(shared: &Shared) -> BTreeSet<ContractId> {
    shared
        .world
        .lock()
        .await
        .workloads
        .keys()
        .copied()
        .collect()
}

/// Re-read every contract on this node and every one the world holds; reconcile each.
/// A read older than the height this node followed (a validator still catching up) is
/// not acted on: it could undo a change the node already made, or remove data that
/// could not be brought back. It goes to `unread`, read again as of that height.
/// Returns the list's height and the contracts it named.
async fn resync(
    shared: &Shared,
    client: &Client,
    me: NodeId,
    unread: &mut Unread,
) -> Result<(u64, BTreeSet<ContractId>), ClientError> {
    // A list has no proof: it only says which contracts to read, each one proven.
    let (height, listed) = contracts_of(client, me).await?;
    let followed = shared.world.lock().await.followed_height;
    let behind = |id: ContractId, read_at: u64| {
        debug!(
            contract = id,
            read_at,
            followed,
            "the ledger's answer is older than this node's view; reading it again"
        );
    };
    let mut seen = BTreeSet::new();
    for id in listed.iter().map(|c| c.id) {
        seen.insert(id);
        let read = client.proven_contract(id).await?;
        if read.height < followed {
            behind(id, read.height);
            unread.again(id, followed, 0);
        } else if let Some(c) = read.value {
            reconcile_one(shared, &c).await;
        }
    }
    for id in held(shared)
        .await
        .into_iter()
        .filter(|id| !seen.contains(id))
    {
        let read = client.proven_contract(id).await?;
        if read.height < followed {
            behind(id, read.height);
            unread.again(id, followed, 0);
        } else if let Some(c) = read.value {
            reconcile_one(shared, &c).await;
        } else {
            warn!(
                contract = id,
                "the ledger does not know this contract; removing it"
            );
            let mut world = shared.world.lock().await;
            let _ = world.apply(id, Action::Remove);
            shared.sync_storage(&world);
            shared.compute.sync(&world);
        }
    }
    debug!(height, contracts = listed.len(), "resynced");
    Ok((height, seen))
}

/// Contracts blocks named that are still to be read as of those blocks: the validator
/// asked may be behind the block the event stream came from (the contract not there yet,
/// or an older state of it), or unreachable. Read again every [`RETRY_UNREAD`], not left
/// to the next resync minutes away.
#[derive(Debug, Default)]
struct Unread {
    /// Per contract, the height of the newest block that named it, and how many reads
    /// failed (the first failure is a warning, the next ones debug lines).
    pending: BTreeMap<ContractId, (u64, u32)>,
    last_retry: Option<tokio::time::Instant>,
}

impl Unread {
    /// What to read now: the contracts `named` at `height` (a block), and those pending
    /// once [`RETRY_UNREAD`] has passed since they were last tried.
    fn due(
        &mut self,
        named: impl IntoIterator<Item = ContractId>,
        height: u64,
        now: tokio::time::Instant,
    ) -> BTreeMap<ContractId, (u64, u32)> {
        let retry = self.last_retry.is_none_or(|t| now >= t + RETRY_UNREAD);
        let mut due = match retry {
            true => {
                self.last_retry = Some(now);
                std::mem::take(&mut self.pending)
            }
            false => BTreeMap::new(),
        };
        for id in named {
            // Named again: read it as of the newer block, with its failures so far.
            let before = self.pending.remove(&id).or(due.get(&id).copied());
            let (at, failed) = before.unwrap_or((0, 0));
            due.insert(id, (at.max(height), failed));
        }
        due
    }

    /// When the pending reads are next due, if any are.
    fn next(&self) -> Option<tokio::time::Instant> {
        match self.pending.is_empty() {
            true => None,
            false => Some(
                self.last_retry
                    .map_or_else(tokio::time::Instant::now, |t| t + RETRY_UNREAD),
            ),
        }
    }

    /// A pass that began at `started` and retried the pending reads ended at `ended`:
    /// the next retry is a full [`RETRY_UNREAD`] after it, however long the reads took.
    fn tried(&mut self, started: tokio::time::Instant, ended: tokio::time::Instant) {
        if self.last_retry == Some(started) {
            self.last_retry = Some(ended);
        }
    }

    /// Read `id` again later, as of the block at `named_at`.
    fn again(&mut self, id: ContractId, named_at: u64, failed: u32) {
        let e = self.pending.entry(id).or_insert((named_at, failed));
        *e = (e.0.max(named_at), e.1.max(failed));
    }
}

/// Follow the ledger forever: resync, then reconcile block by block.
pub async fn follow(shared: Arc<Shared>, client: Arc<Client>) {
    // Kept across resyncs: a resync's list may come from a validator as far behind.
    let mut unread = Unread::default();
    let mut orphans_removed = false;
    loop {
        let Some(me) = shared.world.lock().await.node else {
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        };
        let (height, listed) = match resync(&shared, &client, me, &mut unread).await {
            Ok(read) => read,
            Err(e) => {
                warn!(error = %e, "cannot read the ledger; retrying in 2 s");
                tokio::time::sleep(Duration::from_secs(2)).await;
                continue;
            }
        };
        {
            let mut world = shared.world.lock().await;
            world.followed_height = world.followed_height.max(height);
            // Every contract on the ledger is in the world now: a folder it does not
            // name is an orphan from here on.
            world.synced = true;
            let _ = world.save();
            if !orphans_removed {
                orphans_removed = true;
                let mut keep = listed;
                keep.extend(unread.pending.keys().copied());
                let orphans = world.orphans(&keep);
                drop(world);
                // Off the lock and the runtime: the shards of ended contracts may be many.
                if !orphans.is_empty() {
                    let removed = tokio::task::spawn_blocking(move || {
                        (orphans.iter())
                            .filter(|path| {
                                info!(path = %path.display(), "removing a folder no contract backs");
                                std::fs::remove_dir_all(path).is_ok()
                            })
                            .count()
                    })
                    .await
                    .unwrap_or(0);
                    info!(
                        folders = removed,
                        "removed the folders of contracts that ended while the node was stopped"
                    );
                }
            }
        }
        shared
            .read_all
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let start = shared.world.lock().await.followed_height + 1;
        let mut blocks = client.events(start);
        // The next resync comes on time even when no block does (a chain that was reset,
        // or events asked from a height it has not reached).
        let resync_at = tokio::time::Instant::now() + RESYNC_EVERY;
        loop {
            let wake = unread.next().map_or(resync_at, |t| t.min(resync_at));
            let block = match tokio::time::timeout_at(wake, blocks.next()).await {
                Ok(Some(block)) => Some(block),
                Ok(None) => break,
                Err(_) if tokio::time::Instant::now() >= resync_at => break,
                Err(_) => None,
            };
            let named = match &block {
                Some(block) => {
                    // A contract still to be read counts as held: an update naming no
                    // node would otherwise pass it by, and its older read count.
                    let mut known = held(shared.as_ref()).await;
                    known.extend(unread.pending.keys());
                    relevant(block, me, &known)
                }
                None => BTreeSet::new(),
            };
            let height = block.as_ref().map_or(0, |b| b.height);
            let started = tokio::time::Instant::now();
            let due = unread.due(named, height, started);
            let mut changed = false;
            for (id, (named_at, failed)) in due {
                match client.proven_contract(id).await {
                    Ok(read) if read.height < named_at => {
                        debug!(
                            contract = id,
                            read_at = read.height,
                            named_at,
                            "the validator asked is behind the block that named the contract; reading it again"
                        );
                        unread.again(id, named_at, failed);
                    }
                    Ok(read) => match read.value {
                        Some(c) => changed |= reconcile_one(&shared, &c).await,
                        // Gone from the ledger as of that block: the next resync settles it.
                        None => debug!(
                            contract = id,
                            "a contract a block named is not on the ledger"
                        ),
                    },
                    Err(e) => {
                        if failed == 0 {
                            warn!(contract = id, error = %e, "cannot read contract; reading it again every second");
                        } else {
                            debug!(contract = id, error = %e, "cannot read contract; reading it again");
                        }
                        unread.again(id, named_at, failed + 1);
                    }
                }
            }
            unread.tried(started, tokio::time::Instant::now());
            let mut world = shared.world.lock().await;
            if let Some(block) = &block {
                world.followed_height = block.height;
            }
            if changed || block.is_some_and(|b| b.height % SAVE_EVERY_BLOCKS == 0) {
                let _ = world.save();
            }
            drop(world);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use peergrid_client::TxOutcome;
    use peergrid_client::{DeleteReason, Event};
    use peergrid_core::{Hash, Keypair};

    fn block(events: Vec<Event>, end_events: Vec<Event>) -> FinalizedBlock {
        FinalizedBlock {
            height: 5,
            digest: String::new(),
            time_ms: 0,
            root: Hash::of(b""),
            txs: vec![TxOutcome {
                hash: Hash::of(b"tx"),
                signer: Keypair::from_seed([2; 32]).account(),
                result: Ok(events),
            }],
            end_events,
        }
    }

    #[test]
    fn a_contract_read_behind_its_block_is_read_again_as_of_the_newest_block_naming_it() {
        let t0 = tokio::time::Instant::now();
        let mut unread = Unread::default();
        assert_eq!(unread.next(), None, "nothing pending, nothing to wake for");
        let due = unread.due([7], 10, t0);
        assert_eq!(due, BTreeMap::from([(7, (10, 0))]));
        // Read at height 8 from a validator behind block 10: pending, due a second later.
        unread.again(7, 10, 0);
        assert_eq!(unread.next(), Some(t0 + RETRY_UNREAD));
        assert!(unread.due([], 0, t0 + RETRY_UNREAD / 2).is_empty());
        let due = unread.due([], 0, t0 + RETRY_UNREAD);
        assert_eq!(due, BTreeMap::from([(7, (10, 0))]), "still as of block 10");
        // It failed to read once; a newer block names it before its retry is due: it is
        // read at once, as of that block, its failure remembered.
        unread.again(7, 10, 1);
        let t1 = t0 + RETRY_UNREAD + Duration::from_millis(10);
        let due = unread.due([7, 9], 12, t1);
        assert_eq!(due, BTreeMap::from([(7, (12, 1)), (9, (12, 0))]));
        assert_eq!(unread.next(), None);
        // Reads that take longer than the pause still leave a pause after them.
        unread.again(9, 12, 1);
        let t2 = t1 + RETRY_UNREAD;
        assert_eq!(unread.due([], 0, t2).len(), 1);
        unread.again(9, 12, 2);
        let t3 = t2 + 3 * RETRY_UNREAD;
        unread.tried(t2, t3);
        assert_eq!(unread.next(), Some(t3 + RETRY_UNREAD));
    }

    #[test]
    fn only_contracts_on_this_node_or_held_here_are_relevant() {
        let owner = Keypair::from_seed([3; 32]).account();
        let b = block(
            vec![
                Event::ContractCreated {
                    contract: 1,
                    owner,
                    node: Some(7),
                },
                Event::ContractCreated {
                    contract: 2,
                    owner,
                    node: Some(8),
                },
                Event::ContractCreated {
                    contract: 3,
                    owner,
                    node: None,
                },
            ],
            vec![Event::ContractDeleted {
                contract: 4,
                node: Some(7),
                reason: DeleteReason::OutOfFunds,
            }],
        );
        let known = BTreeSet::from([9]);
        assert_eq!(relevant(&b, 7, &known), BTreeSet::from([1, 4]));
        // A contract held here is followed even by an event that does not name the node.
        let b = block(
            vec![Event::ContractUpdated {
                contract: 9,
                deployment_hash: Hash::of(b"x"),
            }],
            vec![],
        );
        assert_eq!(relevant(&b, 7, &known), BTreeSet::from([9]));
    }
}
