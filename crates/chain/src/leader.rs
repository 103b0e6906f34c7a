//! Who leads each view: round robin, except that the first views of an epoch keep its
//! first leader.
//!
//! simplex skips a leader at once ("Inactivity") when a quorum has been active lately and
//! the leader has not. A new epoch's engine starts with no record of anyone, so the
//! validator that started the epoch last (tens of milliseconds behind) looks inactive
//! to the others when it leads view 2: two of four nullified at once, the other two
//! waited for its proposal, and neither side reached a quorum until the 2 s leader
//! timeout. That was the p99 above 2 s in about one `peergrid bench ledger` run of four.
//! Keeping view 1's leader for [`WARM_VIEWS`] views lets every validator's votes reach
//! the others before round robin gives anyone else a turn. View 1's leader is never
//! judged inactive in view 1 (nobody is active yet, so simplex waits) and has proposed
//! by view 2.

use commonware_consensus::simplex::elector::{
    Config, Elector, RoundRobin, RoundRobinElector, Scheduled, Terms,
};
use commonware_consensus::types::{Participant, Round, View};
use commonware_cryptography::Sha256;
use commonware_cryptography::certificate::Scheme;
use commonware_utils::ordered::Set;

/// Views at the start of an epoch led by the epoch's first leader.
pub const WARM_VIEWS: u64 = 3;

/// Builds a [`WarmStart`] elector: round robin after the first [`WARM_VIEWS`] views.
#[derive(Clone, Default)]
pub struct WarmStartConfig;

/// Round robin, with the first [`WARM_VIEWS`] views of an epoch led by view 1's leader.
#[derive(Clone)]
pub struct WarmStart<S: Scheme> {
    inner: RoundRobinElector<S>,
}

impl<S: Scheme> Config<S> for WarmStartConfig {
    type Elector = WarmStart<S>;

    fn build(self, participants: &Set<S::PublicKey>) -> WarmStart<S> {
        WarmStart {
            inner: Config::<S>::build(RoundRobin::<Sha256>::default(), participants),
        }
    }
}

impl<S: Scheme> Elector<S> for WarmStart<S> {
    type Mode = Scheduled;

    fn terms(&self) -> Terms {
        // One view per term, as round robin: any view may have its own leader.
        Elector::<S>::terms(&self.inner)
    }

    fn elect(&self, round: Round, input: ()) -> Participant {
        let view = round.view().get();
        let round = if (1..=WARM_VIEWS).contains(&view) {
            Round::new(round.epoch(), View::new(1))
        } else {
            round
        };
        self.inner.elect(round, input)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use commonware_consensus::simplex::scheme::ed25519::Scheme as Ed25519;
    use commonware_consensus::types::Epoch;
    use commonware_cryptography::Signer as _;
    use commonware_cryptography::ed25519::PrivateKey;

    fn elector(n: u64) -> WarmStart<Ed25519> {
        let keys: Vec<_> = (0..n)
            .map(|i| PrivateKey::from_seed(i).public_key())
            .collect();
        Config::<Ed25519>::build(WarmStartConfig, &Set::from_iter_dedup(keys))
    }

    fn leader(e: &WarmStart<Ed25519>, epoch: u64, view: u64) -> Participant {
        e.elect(Round::new(Epoch::new(epoch), View::new(view)), ())
    }

    #[test]
    fn an_epochs_first_leader_keeps_the_first_views_then_everyone_takes_turns() {
        let e = elector(4);
        for epoch in 0..8 {
            let first = leader(&e, epoch, 1);
            for view in 2..=WARM_VIEWS {
                assert_eq!(leader(&e, epoch, view), first, "epoch {epoch} view {view}");
            }
            // After the warm views, four consecutive views have four different leaders.
            let turns: std::collections::BTreeSet<_> = (WARM_VIEWS + 1..WARM_VIEWS + 5)
                .map(|v| leader(&e, epoch, v))
                .collect();
            assert_eq!(turns.len(), 4, "epoch {epoch}");
        }
        // Consecutive epochs start with different validators, so no one leads every start.
        let starts: std::collections::BTreeSet<_> = (0..4).map(|ep| leader(&e, ep, 1)).collect();
        assert_eq!(starts.len(), 4);
    }

    #[test]
    fn a_single_validator_leads_every_view() {
        let e = elector(1);
        for view in 1..10 {
            assert_eq!(leader(&e, 3, view), Participant::new(0));
        }
    }
}
