//! The light client: proven answers checked against state certificates, with the validator
//! set of every epoch followed from the genesis set through each epoch's handoff.
//!
//! A proof ties an entry to a state root; a [`StateCertificate`] ties the root to a quorum of
//! the validators of the block's epoch. The client knows the genesis set (its anchor) and
//! learns each later set from the certificate of the epoch before's last block, which names
//! the next set's digest: so one validator's answer is enough, and no validator is trusted.

use std::collections::BTreeMap;
use std::path::PathBuf;

use peergrid_core::{AccountId, Hash};
use peergrid_types::api::routes;
use peergrid_types::certificate::{StateCertificate, set_digest};
use peergrid_types::{AtHeight, Status};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tracing::debug;

use crate::{Client, ClientError, ValidatorSet, api_error, causes};

/// What a light client trusts from the start: the chain and its genesis validator set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Anchor {
    /// The genesis hash, which certificates sign.
    pub chain: Hash,
    /// Blocks per epoch.
    pub epoch_blocks: u64,
    /// The validators of epoch 0.
    pub validators: Vec<AccountId>,
}

/// The sets this client has verified: by the first epoch each governs, and how far.
#[derive(Default)]
pub(crate) struct Trust {
    anchor: Option<Anchor>,
    sets: BTreeMap<u64, Vec<AccountId>>,
    /// The highest epoch whose set is verified.
    known: u64,
    /// Where verified sets are kept between runs, one file per chain.
    cache: Option<PathBuf>,
}

/// What a trust cache file holds: the anchor it was followed from, and the sets.
#[derive(Serialize, Deserialize)]
struct Cached {
    epoch_blocks: u64,
    genesis: Vec<AccountId>,
    known: u64,
    sets: BTreeMap<u64, Vec<AccountId>>,
}

impl Trust {
    /// Trust `anchor`'s genesis set, forgetting any other, and take up the sets this
    /// client verified from the same genesis on an earlier run.
    fn anchored(anchor: Anchor, cache: Option<PathBuf>) -> Trust {
        let mut trust = Trust {
            sets: [(0, anchor.validators.clone())].into(),
            anchor: Some(anchor),
            known: 0,
            cache,
        };
        if let Some(cached) = trust.load() {
            trust.sets = cached.sets;
            trust.known = cached.known;
        }
        trust
    }

    fn cache_file(&self) -> Option<PathBuf> {
        let (dir, anchor) = (self.cache.as_ref()?, self.anchor.as_ref()?);
        Some(dir.join(format!("sets-{}.json", anchor.chain)))
    }

    /// The cached sets, when they were followed from this very anchor.
    fn load(&self) -> Option<Cached> {
        let anchor = self.anchor.as_ref()?;
        let bytes = std::fs::read(self.cache_file()?).ok()?;
        let cached: Cached = serde_json::from_slice(&bytes).ok()?;
        let same = cached.genesis == anchor.validators
            && cached.epoch_blocks == anchor.epoch_blocks
            && cached.sets.get(&0) == Some(&anchor.validators)
            && cached.sets.keys().all(|e| *e <= cached.known);
        same.then_some(cached)
    }

    /// Keep the verified sets for the next run (best effort: a failure only costs the
    /// next run the walk from genesis again).
    fn save(&self) {
        let (Some(file), Some(anchor)) = (self.cache_file(), self.anchor.as_ref()) else {
            return;
        };
        let cached = Cached {
            epoch_blocks: anchor.epoch_blocks,
            genesis: anchor.validators.clone(),
            known: self.known,
            sets: self.sets.clone(),
        };
        let written = serde_json::to_vec(&cached)
            .map_err(std::io::Error::other)
            .and_then(|bytes| {
                if let Some(dir) = file.parent() {
                    std::fs::create_dir_all(dir)?;
                }
                peergrid_core::fs::write_atomic(&file, &bytes)
            });
        if let Err(e) = written {
            debug!(file = %file.display(), error = %e, "cannot keep the verified validator sets");
        }
    }

    fn set(&self, epoch: u64) -> Option<&Vec<AccountId>> {
        if epoch > self.known {
            return None;
        }
        self.sets.range(..=epoch).next_back().map(|(_, s)| s)
    }
}

/// A root a quorum certified, as the light client checked it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Certified {
    /// The epoch whose set signed.
    pub epoch: u64,
    /// Valid signatures.
    pub signatures: usize,
    /// The set's size.
    pub validators: usize,
}

fn unproven(reason: impl Into<String>) -> ClientError {
    ClientError::Unproven {
        reason: reason.into(),
    }
}

impl Client {
    /// The same client, trusting `anchor` (from a genesis file the caller holds) instead of
    /// asking the validators for the genesis set.
    pub fn with_anchor(self, anchor: Anchor) -> Client {
        if let Ok(mut trust) = self.trust.lock() {
            let cache = trust.cache.take();
            *trust = Trust::anchored(anchor, cache);
        }
        self
    }

    /// The same client, keeping the validator sets it verifies in `dir` (a file per
    /// chain), so a later run starts from the newest set it verified instead of following
    /// every handoff from genesis again. Only sets followed from the same genesis set are
    /// taken up.
    pub fn with_trust_cache(self, dir: PathBuf) -> Client {
        if let Ok(mut trust) = self.trust.lock() {
            *trust = match trust.anchor.clone() {
                // Anchored already (with_anchor first): take up the cache for that anchor.
                Some(anchor) => Trust::anchored(anchor, Some(dir)),
                None => Trust {
                    cache: Some(dir),
                    ..Trust::default()
                },
            };
        }
        self
    }

    /// The anchor: given with [`Client::with_anchor`], or else the genesis set every
    /// validator of this client agrees on, asked once. A validator disagreeing with another
    /// is an error: one of them serves another chain.
    pub async fn anchor(&self) -> Result<Anchor, ClientError> {
        let anchored = || self.trust.lock().ok().and_then(|t| t.anchor.clone());
        if let Some(a) = anchored() {
            return Ok(a);
        }
        // Waited for a while only: the future holding it may be left unpolled (behind a
        // timeout, in a stream), and then this one asks too rather than wait for good.
        let _asking =
            tokio::time::timeout(std::time::Duration::from_secs(15), self.anchoring.lock())
                .await
                .ok();
        if let Some(a) = anchored() {
            return Ok(a);
        }
        // Every validator at once: one round trip, not one per validator.
        let answers = futures::future::join_all(self.urls.iter().map(|url| async move {
            let status: AtHeight<Status> = self.get_from(url, routes::STATUS).await?;
            let path = routes::fill(routes::EPOCH_VALIDATORS, &[&0]);
            let set: AtHeight<ValidatorSet> = self.get_from(url, &path).await?;
            Ok::<_, ClientError>(Anchor {
                chain: status.data.genesis_hash,
                epoch_blocks: status.data.epoch_blocks.max(1),
                validators: set.data.members.iter().map(|m| m.account).collect(),
            })
        }))
        .await;
        let mut agreed: Option<(String, Anchor)> = None;
        let mut last = String::from("no validator configured");
        for (url, answer) in self.urls.iter().zip(answers) {
            let anchor = match answer {
                Ok(a) => a,
                Err(e) => {
                    last = e.to_string();
                    continue;
                }
            };
            match &agreed {
                Some((first, a)) if *a != anchor => {
                    return Err(unproven(format!(
                        "validators {first} and {url} disagree on the genesis (hash {} and {}, \
                         or its validators): they serve different chains; pass only one \
                         chain's validators",
                        a.chain, anchor.chain
                    )));
                }
                Some(_) => {}
                None => agreed = Some((url.clone(), anchor)),
            }
        }
        let Some((_, anchor)) = agreed else {
            return Err(ClientError::Unreachable {
                tried: self.urls.join(", "),
                last,
            });
        };
        if let Ok(mut trust) = self.trust.lock()
            && trust.anchor.is_none()
        {
            let cache = trust.cache.take();
            *trust = Trust::anchored(anchor.clone(), cache);
        }
        Ok(anchor)
    }

    /// Check that `certificate` is signed by a quorum of its epoch's set, following the
    /// sets from the anchor to that epoch first.
    pub async fn check_certificate(
        &self,
        certificate: &StateCertificate,
    ) -> Result<Certified, ClientError> {
        let anchor = self.anchor().await?;
        let epoch = certificate.height / anchor.epoch_blocks;
        if certificate.epoch != epoch {
            return Err(unproven(format!(
                "the certificate of height {} says epoch {}, but that height is in epoch {epoch}",
                certificate.height, certificate.epoch
            )));
        }
        let members = self.validators_of(epoch, &anchor).await?;
        certificate
            .verify(anchor.chain, &members)
            .map_err(|e| unproven(e.to_string()))?;
        Ok(Certified {
            epoch,
            signatures: certificate.signatures.len(),
            validators: members.len(),
        })
    }

    /// The certified root of `height`: its certificate from any validator, checked.
    pub async fn certified_root(&self, height: u64) -> Result<(Hash, Certified), ClientError> {
        let (certificate, certified) = self.checked_certificate(height).await?;
        Ok((certificate.root, certified))
    }

    /// The state certificate of `height` from any validator, checked against the sets.
    pub async fn checked_certificate(
        &self,
        height: u64,
    ) -> Result<(StateCertificate, Certified), ClientError> {
        let path = routes::fill(routes::CERTIFICATE, &[&height]);
        let certificate: StateCertificate = self.get_from_any(&path).await?;
        if certificate.height != height {
            return Err(unproven(format!(
                "asked for the certificate of height {height}, got one of {}",
                certificate.height
            )));
        }
        let certified = self.check_certificate(&certificate).await?;
        Ok((certificate, certified))
    }

    /// The verified set of `epoch`, following each handoff from the last epoch known.
    async fn validators_of(
        &self,
        epoch: u64,
        anchor: &Anchor,
    ) -> Result<Vec<AccountId>, ClientError> {
        let mut followed = false;
        loop {
            let (known, current) = {
                let trust = self
                    .trust
                    .lock()
                    .map_err(|_| unproven("a lock is poisoned"))?;
                if let Some(set) = trust.set(epoch) {
                    if followed {
                        trust.save();
                    }
                    return Ok(set.clone());
                }
                let current = trust.set(trust.known).cloned().unwrap_or_default();
                (trust.known, current)
            };
            let last = (known + 1) * anchor.epoch_blocks - 1;
            let path = routes::fill(routes::CERTIFICATE, &[&last]);
            let handoff: StateCertificate = self.get_from_any(&path).await.map_err(|e| {
                unproven(format!(
                    "cannot follow the validator sets past epoch {known}: no validator gave \
                     the certificate of its last block {last} ({e})"
                ))
            })?;
            if handoff.height != last || handoff.epoch != known {
                return Err(unproven(format!(
                    "asked for epoch {known}'s last block {last}, got a certificate of height {} \
                     in epoch {}",
                    handoff.height, handoff.epoch
                )));
            }
            handoff
                .verify(anchor.chain, &current)
                .map_err(|e| unproven(format!("epoch {known}'s handoff: {e}")))?;
            let next = if handoff.next_set == set_digest(&current) {
                None
            } else {
                let path = routes::fill(routes::EPOCH_VALIDATORS, &[&(known + 1)]);
                let set: AtHeight<ValidatorSet> = self.get_from_any(&path).await?;
                let accounts: Vec<AccountId> = set.data.members.iter().map(|m| m.account).collect();
                if set_digest(&accounts) != handoff.next_set {
                    return Err(unproven(format!(
                        "the validator set served for epoch {} is not the one epoch {known}'s \
                         validators signed for: do not trust that validator",
                        known + 1
                    )));
                }
                Some(accounts)
            };
            let mut trust = self
                .trust
                .lock()
                .map_err(|_| unproven("a lock is poisoned"))?;
            if trust.known == known {
                if let Some(set) = next {
                    trust.sets.insert(known + 1, set);
                }
                trust.known = known + 1;
                followed = true;
            }
        }
    }

    /// GET `path` from each validator in turn until one has it: unlike [`Client::get`], a
    /// validator's 404 sends the request on to the next, since another may keep it.
    pub(crate) async fn get_from_any<T: DeserializeOwned>(
        &self,
        path: &str,
    ) -> Result<T, ClientError> {
        let start = self.current.load(std::sync::atomic::Ordering::Relaxed);
        let mut last = None;
        for i in 0..self.urls.len() {
            let url = &self.urls[(start + i) % self.urls.len()];
            match self.get_from(url, path).await {
                Ok(v) => return Ok(v),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| ClientError::Unreachable {
            tried: String::new(),
            last: "no validator configured".into(),
        }))
    }

    /// GET `path` from the validator at `url` alone.
    pub(crate) async fn get_from<T: DeserializeOwned>(
        &self,
        url: &str,
        path: &str,
    ) -> Result<T, ClientError> {
        let response = self
            .http
            .get(format!("{url}{path}"))
            .send()
            .await
            .map_err(|e| ClientError::Unreachable {
                tried: url.to_string(),
                last: causes(&e),
            })?;
        let status = response.status();
        // Bounded as every other answer: a wrong or hostile URL is given no memory.
        let body = crate::read_bounded(response, crate::ANSWER_BYTES_MAX)
            .await
            .map_err(|reason| ClientError::Protocol {
                url: url.to_string(),
                reason,
            })?;
        if !status.is_success() {
            let (kind, message) = api_error(url, status, &body);
            return Err(ClientError::Refused {
                status: status.as_u16(),
                kind,
                message: format!("{url}: {message}"),
            });
        }
        serde_json::from_slice(&body).map_err(|e| ClientError::Protocol {
            url: url.to_string(),
            reason: e.to_string(),
        })
    }
}
