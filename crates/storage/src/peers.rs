//! The addresses the owner's nodes were last reached at, kept in the owner's home.
//!
//! A storage command finds its nodes through the mesh: the genesis's bootstrap peers,
//! then the DHT. With every bootstrap peer down, a new command found none of the
//! owner's nodes even when they were up. So each command now dials first the addresses
//! a node was last reached at, falls back to the DHT when they fail, and writes down
//! where it reached each node. The file is a cache: unreadable, it is ignored.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use peergrid_mesh::{Multiaddr, PeerId};
use serde::{Deserialize, Serialize};
use tracing::debug;

/// Nodes remembered at most; the longest unseen are forgotten first.
const PEERS_MAX: usize = 1024;
/// Addresses remembered per node.
const ADDRS_MAX: usize = 8;
/// How long a node seen again at the same addresses keeps its entry's time unwritten.
const SEEN_AGAIN_MS: u64 = 3_600_000;
/// A larger file is not read: it was not written by us.
const FILE_BYTES_MAX: u64 = 1 << 20;

/// The cache file's contents.
#[derive(Serialize, Deserialize, Default)]
struct Book {
    version: u32,
    peers: BTreeMap<String, Seen>,
}

/// Where one node was reached, and when.
#[derive(Serialize, Deserialize)]
struct Seen {
    addrs: Vec<String>,
    at_ms: u64,
}

/// The node address cache at one path (`$PEERGRID_HOME/storage/peers.json`).
#[derive(Clone, Debug)]
pub struct PeerBook {
    path: PathBuf,
}

impl PeerBook {
    /// The cache kept at `path`.
    pub fn new(path: PathBuf) -> PeerBook {
        PeerBook { path }
    }

    fn read(&self) -> Book {
        let read = || -> Result<Book, String> {
            let len = std::fs::metadata(&self.path)
                .map_err(|e| e.to_string())?
                .len();
            if len > FILE_BYTES_MAX {
                return Err(format!("{len} bytes, more than {FILE_BYTES_MAX}"));
            }
            let bytes = std::fs::read(&self.path).map_err(|e| e.to_string())?;
            serde_json::from_slice(&bytes).map_err(|e| e.to_string())
        };
        read().unwrap_or_else(|reason| {
            if self.path.exists() {
                debug!(path = %self.path.display(), %reason, "node address cache ignored");
            }
            Book::default()
        })
    }

    /// Every node's remembered addresses (those that still parse).
    pub fn load(&self) -> HashMap<PeerId, Vec<Multiaddr>> {
        self.read()
            .peers
            .into_iter()
            .filter_map(|(peer, seen)| {
                let peer = peer.parse::<PeerId>().ok()?;
                let addrs: Vec<Multiaddr> =
                    seen.addrs.iter().filter_map(|a| a.parse().ok()).collect();
                (!addrs.is_empty()).then_some((peer, addrs))
            })
            .collect()
    }

    /// Write down where each of `reached` was reached now, keeping the others.
    pub fn remember(
        &self,
        reached: impl IntoIterator<Item = (PeerId, Vec<Multiaddr>)>,
    ) -> std::io::Result<()> {
        let mut book = self.read();
        let now = peergrid_core::now_ms();
        let mut changed = false;
        for (peer, addrs) in reached {
            if addrs.is_empty() {
                continue;
            }
            let addrs: Vec<String> = addrs
                .iter()
                .take(ADDRS_MAX)
                .map(|a| a.to_string())
                .collect();
            let peer = peer.to_string();
            // A command connects several times; the same addresses seen lately need no write.
            if book.peers.get(&peer).is_some_and(|seen| {
                seen.addrs == addrs && now.saturating_sub(seen.at_ms) < SEEN_AGAIN_MS
            }) {
                continue;
            }
            book.peers.insert(peer, Seen { addrs, at_ms: now });
            changed = true;
        }
        if !changed {
            return Ok(());
        }
        if book.peers.len() > PEERS_MAX {
            let mut ages: Vec<(u64, String)> = book
                .peers
                .iter()
                .map(|(p, s)| (s.at_ms, p.clone()))
                .collect();
            ages.sort();
            for (_, p) in ages.iter().take(book.peers.len() - PEERS_MAX) {
                book.peers.remove(p);
            }
        }
        book.version = 1;
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let bytes = serde_json::to_vec_pretty(&book).map_err(std::io::Error::other)?;
        peergrid_core::fs::write_atomic(&self.path, &bytes)
    }

    /// Where the cache lives.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer() -> PeerId {
        PeerId::random()
    }

    #[test]
    fn addresses_come_back_and_bad_files_are_ignored() {
        let dir = tempfile::tempdir().expect("tempdir");
        let book = PeerBook::new(dir.path().join("storage/peers.json"));
        assert!(book.load().is_empty(), "no file yet");
        let (a, b) = (peer(), peer());
        let addr: Multiaddr = "/ip4/127.0.0.1/tcp/30300".parse().expect("addr");
        book.remember([(a, vec![addr.clone()]), (b, vec![])])
            .expect("remember");
        let loaded = book.load();
        assert_eq!(loaded.get(&a), Some(&vec![addr.clone()]));
        assert!(!loaded.contains_key(&b), "no address, nothing to remember");

        // Another node later: the first is kept.
        let c = peer();
        book.remember([(c, vec![addr.clone()])]).expect("remember");
        assert_eq!(book.load().len(), 2);

        // A file we did not write (garbage, an address that does not parse, too large)
        // is ignored, and the next command writes a good one over it.
        std::fs::write(book.path(), b"{not json").expect("write");
        assert!(book.load().is_empty());
        let junk = format!(
            r#"{{"version":1,"peers":{{"{a}":{{"addrs":["not an address"],"at_ms":1}}}}}}"#
        );
        std::fs::write(book.path(), junk).expect("write");
        assert!(book.load().is_empty());
        std::fs::write(book.path(), vec![b' '; FILE_BYTES_MAX as usize + 1]).expect("write");
        assert!(book.load().is_empty());
        book.remember([(a, vec![addr.clone()])]).expect("remember");
        assert_eq!(book.load().get(&a), Some(&vec![addr]));
    }

    #[test]
    fn the_longest_unseen_are_forgotten_first() {
        let dir = tempfile::tempdir().expect("tempdir");
        let book = PeerBook::new(dir.path().join("peers.json"));
        let addr: Multiaddr = "/ip4/127.0.0.1/tcp/1".parse().expect("addr");
        let old = peer();
        book.remember([(old, vec![addr.clone()])])
            .expect("remember");
        // Make the first one older than any written next.
        let mut written: Book =
            serde_json::from_slice(&std::fs::read(book.path()).expect("read")).expect("json");
        written.peers.values_mut().for_each(|s| s.at_ms = 1);
        std::fs::write(book.path(), serde_json::to_vec(&written).expect("json")).expect("write");
        let many: Vec<_> = (0..PEERS_MAX)
            .map(|_| (peer(), vec![addr.clone()]))
            .collect();
        book.remember(many).expect("remember");
        let loaded = book.load();
        assert_eq!(loaded.len(), PEERS_MAX);
        assert!(!loaded.contains_key(&old));
    }
}
