//! `EquivocatingValidator`: a Byzantine validator that signs two different proposals for every view.
//!
//! It follows the certificates the honest validators broadcast to learn the current
//! view, then signs notarize votes for two random payloads in the next view and
//! sends both to every other validator: evidence of equivocation in each of their hands.

use commonware_codec::{Decode, Encode};
use commonware_consensus::Viewable;
use commonware_consensus::simplex::scheme::ed25519::Scheme;
use commonware_consensus::simplex::types::{Certificate, Notarize, Proposal, Vote};
use commonware_consensus::types::{Epoch, Round};
use commonware_cryptography::certificate::Verifier as _;
use commonware_cryptography::sha256::Digest;
use commonware_cryptography::{Hasher, Sha256};
use commonware_p2p::{Receiver, Recipients, Sender};
use commonware_runtime::{Spawner, deterministic};
use rand::RngExt as _;

/// Run the equivocator until the runtime stops.
pub fn start(
    context: deterministic::Context,
    scheme: Scheme,
    votes: (
        impl Sender<PublicKey = commonware_cryptography::ed25519::PublicKey>,
        impl Receiver,
    ),
    certificates: (impl Sender, impl Receiver),
) {
    context.spawn(move |mut context| async move {
        let (mut vote_sender, _) = votes;
        let (_, mut certificate_receiver) = certificates;
        let mut last = None;
        while let Ok((_, message)) = certificate_receiver.recv().await {
            let Ok(certificate) = Certificate::<Scheme, Digest>::decode_cfg(
                message,
                &scheme.certificate_codec_config(),
            ) else {
                continue;
            };
            let view = match &certificate {
                Certificate::Notarization(n) => n.view(),
                Certificate::Finalization(f) => f.view(),
                Certificate::Nullification(n) => n.view(),
            };
            if last.is_some_and(|l| l >= view) {
                continue;
            }
            last = Some(view);
            let round = Round::new(Epoch::zero(), view.next());
            for _ in 0..2 {
                let payload = Sha256::hash(&[&context.random::<u64>().to_be_bytes()]);
                let proposal = Proposal::new(round, view, payload);
                if let Some(vote) = Notarize::<Scheme, Digest>::sign(&scheme, proposal) {
                    vote_sender.send(Recipients::All, Vote::Notarize(vote).encode(), true);
                }
            }
        }
    });
}
