//! Messages of an epoch that arrive before its engine listens.
//!
//! Validators apply an epoch's last block at slightly different times (tens of
//! milliseconds apart under load), so the first to start the next epoch's engine vote in
//! it, and the new epoch's first leader proposes, before the others listen on its
//! channels. The muxer hands such messages to the orchestrator instead of a subchannel.
//! Dropped, they cost the new epoch its first view, and the switch waited out a leader
//! timeout: gaps of 1.3–2.3 s between an epoch's last block and the next in
//! `peergrid bench ledger`. Kept here, the engine reads them before anything else.
//!
//! Only the next epoch's messages are kept, at most [`EARLY_MAX`] per channel and
//! [`EARLY_PER_PEER_MAX`] from one peer, each of at most [`EARLY_MESSAGE_BYTES_MAX`], so a
//! peer cannot make us hold more: the network takes messages as large as a block.

use std::collections::{HashMap, VecDeque};
use std::num::NonZeroUsize;

use commonware_cryptography::ed25519::PublicKey;
use commonware_p2p::{Message, Receiver};
use futures::channel::mpsc;
use futures::{FutureExt, StreamExt};

/// Most early messages kept for one channel.
pub const EARLY_MAX: usize = 1024;
/// Most early messages kept for one channel from one peer.
pub const EARLY_PER_PEER_MAX: usize = 256;
/// Largest early message kept: a vote is about a hundred bytes and a certificate of the
/// largest validator set some 70 bytes a signer; anything larger is not one of them.
pub const EARLY_MESSAGE_BYTES_MAX: usize = 1024 + 128 * peergrid_core::tx::VALIDATORS_MAX;

/// One channel's messages for epochs whose engine did not listen when they arrived.
#[derive(Default)]
pub struct Early {
    /// The epoch the kept messages belong to.
    epoch: u64,
    kept: VecDeque<Message<PublicKey>>,
    per_peer: HashMap<PublicKey, usize>,
    /// The running engine's epoch, and where to hand it messages of that epoch that the
    /// muxer set aside before the engine registered.
    running: Option<(u64, mpsc::Sender<Message<PublicKey>>)>,
}

impl Early {
    /// A message of epoch `theirs` that no engine listened for, while the ledger is in
    /// epoch `ours`: handed to the running engine if it is that epoch's, kept if it is the
    /// next epoch's, dropped otherwise.
    pub fn keep(&mut self, ours: u64, theirs: u64, message: Message<PublicKey>) {
        if let Some((running, inbox)) = &mut self.running
            && *running == theirs
        {
            // Full or gone: dropped, as it was before it was kept at all.
            let _ = inbox.try_send(message);
            return;
        }
        if theirs != ours + 1 || message.1.len() > EARLY_MESSAGE_BYTES_MAX {
            return;
        }
        if self.epoch != theirs {
            self.forget(theirs);
        }
        let from = self.per_peer.entry(message.0.clone()).or_default();
        if self.kept.len() >= EARLY_MAX || *from >= EARLY_PER_PEER_MAX {
            return;
        }
        *from += 1;
        self.kept.push_back(message);
    }

    /// Drop what was kept; what is kept from now on belongs to `epoch`.
    fn forget(&mut self, epoch: u64) {
        self.kept.clear();
        self.per_peer.clear();
        self.epoch = epoch;
    }

    /// The receiver `epoch`'s engine reads: what was kept for `epoch` first, then `inner`.
    pub fn receiver<R: Receiver<PublicKey = PublicKey>>(
        &mut self,
        epoch: u64,
        inner: R,
    ) -> Replay<R> {
        let (mut inbox, early) = mpsc::channel(EARLY_MAX);
        if self.epoch == epoch {
            for message in self.kept.drain(..) {
                let _ = inbox.try_send(message);
            }
        }
        self.forget(epoch);
        self.running = Some((epoch, inbox));
        Replay {
            early: Some(early),
            inner,
        }
    }
}

/// A subchannel receiver that yields the messages kept for its epoch before its own.
#[derive(Debug)]
pub struct Replay<R> {
    early: Option<mpsc::Receiver<Message<PublicKey>>>,
    inner: R,
}

impl<R> Replay<R> {
    /// `inner` alone, for a channel whose early messages are not kept.
    pub fn plain(inner: R) -> Self {
        Replay { early: None, inner }
    }
}

impl<R: Receiver<PublicKey = PublicKey>> Receiver for Replay<R> {
    type Error = R::Error;
    type PublicKey = PublicKey;

    async fn recv(&mut self) -> Result<Message<PublicKey>, Self::Error> {
        if let Some(early) = &mut self.early {
            let kept = futures::select_biased! {
                kept = early.next() => kept,
                message = self.inner.recv().fuse() => return message,
            };
            match kept {
                Some(message) => return Ok(message),
                // The next epoch's engine took the inbox over; this one is done with it.
                None => self.early = None,
            }
        }
        self.inner.recv().await
    }

    fn capacity(&self) -> NonZeroUsize {
        self.inner.capacity()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use commonware_cryptography::Signer as _;
    use commonware_cryptography::ed25519::PrivateKey;
    use commonware_runtime::IoBuf;

    fn peer(seed: u64) -> PublicKey {
        PrivateKey::from_seed(seed).public_key()
    }

    fn message(from: u64, body: &'static [u8]) -> Message<PublicKey> {
        (peer(from), IoBuf::from(body))
    }

    #[test]
    fn only_the_next_epoch_is_kept_and_within_bounds() {
        let mut early = Early::default();
        early.keep(3, 5, message(1, b"two ahead"));
        early.keep(3, 3, message(1, b"no engine runs"));
        early.keep(3, 2, message(1, b"behind"));
        let block_sized: &'static [u8] = vec![0u8; EARLY_MESSAGE_BYTES_MAX + 1].leak();
        early.keep(3, 4, message(1, block_sized));
        assert!(early.kept.is_empty());
        for _ in 0..EARLY_PER_PEER_MAX + 10 {
            early.keep(3, 4, message(1, b"flood"));
        }
        assert_eq!(
            early.kept.len(),
            EARLY_PER_PEER_MAX,
            "one peer's share is bounded"
        );
        for seed in 2..20 {
            for _ in 0..EARLY_PER_PEER_MAX {
                early.keep(3, 4, message(seed, b"many peers"));
            }
        }
        assert_eq!(early.kept.len(), EARLY_MAX, "the whole is bounded");
    }

    #[test]
    fn kept_messages_reach_the_engine_first_and_later_ones_too() {
        let mut early = Early::default();
        early.keep(0, 1, message(1, b"first"));
        early.keep(0, 1, message(2, b"second"));
        // A different inner receiver stands in for the subchannel: it never yields.
        let mut replay = early.receiver(1, Never);
        // Set aside by the muxer but read by the orchestrator after the engine started.
        early.keep(1, 1, message(3, b"third"));
        futures::executor::block_on(async {
            for (from, body) in [(1, "first"), (2, "second"), (3, "third")] {
                let (who, got) = replay.recv().await.expect("kept message");
                assert_eq!(who, peer(from));
                assert_eq!(got.as_ref(), body.as_bytes());
            }
        });
        // The next epoch's engine takes the inbox; this receiver goes back to its own.
        let _next = early.receiver(2, Never);
        assert!(replay.recv().now_or_never().is_none());
    }

    /// A receiver with nothing to yield.
    #[derive(Debug)]
    struct Never;

    impl Receiver for Never {
        type Error = std::io::Error;
        type PublicKey = PublicKey;

        async fn recv(&mut self) -> Result<Message<PublicKey>, Self::Error> {
            futures::future::pending().await
        }

        fn capacity(&self) -> NonZeroUsize {
            NonZeroUsize::MIN
        }
    }
}
