//! One identity for the ledger and the mesh: an account id is a peer id.
//!
//! The account key is ed25519 and `AccountId`'s text form is already the libp2p
//! peer-id form of that key, so converting is lossless both ways for ed25519 keys.
//! A peer id of another key type has no account and fails to convert.

use libp2p::PeerId;
use libp2p::identity;
use peergrid_core::{AccountId, Keypair};

use crate::Error;

/// The libp2p identity of an account key; the swarm's peer id then equals the account id.
pub fn libp2p_keypair(key: &Keypair) -> identity::Keypair {
    let mut seed = key.secret_seed();
    // `ed25519_from_bytes` zeroizes the buffer it is given; the original stays in its
    // own `Zeroizing` wrapper and is wiped on drop.
    identity::Keypair::ed25519_from_bytes(seed.as_mut_slice())
        .expect("any 32 bytes are a valid ed25519 secret seed")
}

/// The peer id of an account: the same ed25519 public key.
pub fn peer_id(account: &AccountId) -> Result<PeerId, Error> {
    let key = identity::ed25519::PublicKey::try_from_bytes(account.as_bytes())
        .map_err(|_| Error::NotAnAccount(account.to_string()))?;
    Ok(identity::PublicKey::from(key).to_peer_id())
}

/// The account of a peer id, if the peer's key is an ed25519 key.
pub fn account_id(peer: &PeerId) -> Result<AccountId, Error> {
    let multihash = peer.as_ref();
    // Peer ids of ed25519 keys inline the protobuf-encoded key in an identity
    // multihash (code 0); hashed peer ids (large RSA keys) carry no key to recover.
    if multihash.code() != 0 {
        return Err(Error::NotAnAccount(peer.to_string()));
    }
    let key = identity::PublicKey::try_decode_protobuf(multihash.digest())
        .ok()
        .and_then(|k| k.try_into_ed25519().ok())
        .ok_or_else(|| Error::NotAnAccount(peer.to_string()))?;
    Ok(AccountId(key.to_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_id_string_is_the_account_string() {
        for seed in [[0u8; 32], [7u8; 32], [255u8; 32]] {
            let key = Keypair::from_seed(seed);
            let peer = libp2p_keypair(&key).public().to_peer_id();
            assert_eq!(peer.to_string(), key.account().to_string());
            assert_eq!(peer_id(&key.account()).expect("ed25519"), peer);
            assert_eq!(account_id(&peer).expect("ed25519"), key.account());
        }
    }

    #[test]
    fn a_non_ed25519_peer_has_no_account() {
        // A random peer id is a sha256 multihash, not an inlined ed25519 key.
        let peer = PeerId::random();
        assert!(matches!(account_id(&peer), Err(Error::NotAnAccount(_))));
    }
}
