//! Joining from a state snapshot (`snapshot_from` in `validator.toml`): download the newest
//! snapshot the validators named serve, check it with the light client, and install it in
//! the empty data directory before the validator starts. The chain crate writes, serves and
//! installs snapshots; the fetching and checking over HTTP live here, beside the client.

use std::io::Write as _;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, bail};
use futures::StreamExt as _;
use peergrid_chain::snapshot::{FINALIZATION_BYTES_MAX, Fetched, SNAPSHOT_BYTES_MAX, SnapshotFile};
use peergrid_chain::validator::ValidatorConfig;
use peergrid_client::types::api::{SnapshotInfo, routes};
use peergrid_client::{Anchor, Client};
use peergrid_ledger::Genesis;
use tracing::{info, warn};

/// How many times a validator started with `snapshot_from` asks for a snapshot, 2 s apart.
const SNAPSHOT_ATTEMPTS: u32 = 30;

/// Start `cfg`'s empty data directory from a snapshot, if it names validators to take one
/// from; nothing to do once its ledger holds a state.
pub fn join(cfg: &ValidatorConfig) -> anyhow::Result<()> {
    if cfg.snapshot_from.is_empty() || !peergrid_chain::snapshot::wanted(&cfg.data_dir)? {
        return Ok(());
    }
    let genesis = Genesis::load(&cfg.genesis)?;
    std::fs::create_dir_all(&cfg.data_dir)
        .with_context(|| format!("cannot create {}", cfg.data_dir.display()))?;
    let partial = cfg.data_dir.join("snapshot.partial");
    crate::runtime()?.block_on(async {
        // The validators named may be starting too, or between epochs: ask again for a
        // while before giving up, saying why each time. A source whose snapshot fails its
        // checks is not asked again.
        let mut attempt = 1;
        let mut refused: Vec<String> = Vec::new();
        loop {
            let tried = match fetch(&cfg.snapshot_from, &refused, &genesis, &partial).await {
                Ok(fetched) => {
                    let from = fetched.from.clone();
                    let installed =
                        peergrid_chain::snapshot::install(&cfg.data_dir, &genesis, fetched);
                    // Only a snapshot that failed its checks counts against its source, not
                    // this machine's own trouble (a full disk).
                    if installed.as_ref().is_err_and(|e| {
                        e.downcast_ref::<peergrid_chain::snapshot::Refused>().is_some()
                    }) {
                        refused.push(from);
                    }
                    installed
                }
                Err(e) => Err(e),
            };
            match tried {
                Ok(()) => return Ok(()),
                Err(e) if attempt < SNAPSHOT_ATTEMPTS => {
                    warn!(attempt, error = %format!("{e:#}"), "no usable snapshot yet; asking again in 2 s");
                    attempt += 1;
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
                Err(e) => {
                    return Err(e.context(format!(
                        "no usable state snapshot from {} after {SNAPSHOT_ATTEMPTS} attempts",
                        cfg.snapshot_from.join(", ")
                    )));
                }
            }
        }
    })?;
    let _ = std::fs::remove_file(&partial);
    Ok(())
}

/// Download the newest snapshot the validators at `urls` (but those `refused`) serve, into
/// `partial` first, and check it: its entries against its root when installed, and here its
/// root against the block's state certificate, checked against the validator sets followed
/// from `genesis`. One that fails is said, and the next newest tried: a single source
/// listing a height it cannot back would otherwise keep the validator from joining.
async fn fetch(
    urls: &[String],
    refused: &[String],
    genesis: &Genesis,
    partial: &Path,
) -> anyhow::Result<Fetched> {
    let http = reqwest::Client::builder()
        .connect_timeout(std::time::Duration::from_secs(5))
        .read_timeout(std::time::Duration::from_secs(60))
        .build()?;
    let mut listings: Vec<(String, SnapshotInfo)> = Vec::new();
    for url in urls {
        let url = url.trim_end_matches('/');
        if refused.iter().any(|r| r == url) {
            continue;
        }
        let listed = async {
            let r = http
                .get(format!("{url}{}", routes::SNAPSHOTS))
                .send()
                .await?;
            r.error_for_status()?.json::<Vec<SnapshotInfo>>().await
        };
        match listed.await {
            Ok(list) => {
                if let Some(s) = list.into_iter().max_by_key(|s| s.height) {
                    listings.push((url.to_string(), s));
                }
            }
            Err(e) => warn!(%url, error = %e, "cannot list its snapshots"),
        }
    }
    listings.sort_by_key(|(_, s)| std::cmp::Reverse(s.height));
    let mut last = None;
    for (url, info) in listings {
        match fetch_one(&http, urls, &url, &info, genesis, partial).await {
            Ok(fetched) => return Ok(fetched),
            Err(e) => {
                warn!(%url, height = info.height, error = %format!("{e:#}"), "its snapshot is not usable; trying the next source");
                last = Some(e);
            }
        }
    }
    match last {
        Some(e) => Err(e),
        None if !refused.is_empty() => bail!(
            "no source but those whose snapshot was refused ({}) serves one",
            refused.join(", ")
        ),
        None => bail!(
            "none of {} serves a snapshot yet: validators write one at each epoch's last \
             block; wait for an epoch to end, or leave snapshot_from out to catch up from \
             genesis (which needs a validator with archive = true)",
            urls.join(", ")
        ),
    }
}

/// Download the snapshot `info` that `url` lists, and check it: see [`fetch`].
async fn fetch_one(
    http: &reqwest::Client,
    urls: &[String],
    url: &str,
    info: &SnapshotInfo,
    genesis: &Genesis,
    partial: &Path,
) -> anyhow::Result<Fetched> {
    if info.bytes > SNAPSHOT_BYTES_MAX {
        bail!(
            "the snapshot at height {} is {} bytes, above the {SNAPSHOT_BYTES_MAX} accepted",
            info.height,
            info.bytes
        );
    }
    info!(%url, height = info.height, bytes = info.bytes, "downloading the state snapshot");
    let state = routes::fill(routes::SNAPSHOT, &[&info.height]);
    let response = http
        .get(format!("{url}{state}"))
        .send()
        .await?
        .error_for_status()?;
    let mut out = std::fs::File::create(partial)
        .with_context(|| format!("cannot write {}", partial.display()))?;
    let mut stream = response.bytes_stream();
    let mut got: u64 = 0;
    let mut reported = 0;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        got += chunk.len() as u64;
        if got > info.bytes.min(SNAPSHOT_BYTES_MAX) {
            bail!("{url} sent more than the {} bytes it listed", info.bytes);
        }
        out.write_all(&chunk)?;
        let percent = got * 100 / info.bytes.max(1);
        if percent >= reported + 10 {
            reported = percent;
            info!(percent, bytes = got, "downloading the state snapshot");
        }
    }
    out.sync_all()?;
    drop(out);
    let file = SnapshotFile::decode(&std::fs::read(partial)?).map_err(anyhow::Error::msg)?;
    if (file.height, file.root) != (info.height, info.root) {
        bail!(
            "{url} listed the snapshot of height {} with root {}, but sent height {} with root {}",
            info.height,
            info.root,
            file.height,
            file.root
        );
    }

    let anchor = Anchor {
        chain: genesis.hash(),
        epoch_blocks: genesis.params.epoch_blocks.max(1),
        validators: genesis.validators.iter().map(|v| v.account).collect(),
    };
    let client = Client::new(urls.to_vec()).with_anchor(anchor);
    let (certificate, certified) = client
        .checked_certificate(file.height)
        .await
        .with_context(|| format!("cannot check the snapshot of height {}", file.height))?;
    if certificate.root != file.root {
        bail!(
            "the snapshot from {url} has state root {} at height {}, but epoch {}'s validators \
             certified {}: do not use it, and tell its operator",
            file.root,
            file.height,
            certified.epoch,
            certificate.root
        );
    }
    let path = routes::fill(routes::SNAPSHOT_FINALIZATION, &[&file.height]);
    let finalization = http
        .get(format!("{url}{path}"))
        .send()
        .await?
        .error_for_status()?
        .bytes()
        .await?;
    if finalization.len() > FINALIZATION_BYTES_MAX {
        bail!(
            "{url} sent a finalization certificate of {} bytes",
            finalization.len()
        );
    }
    info!(height = file.height, root = %file.root, signatures = certified.signatures,
        validators = certified.validators, "the snapshot's state root is certified");
    // The handoffs were just followed to check the certificate; keep them.
    let len = genesis.params.epoch_blocks.max(1);
    let mut handoffs = Vec::new();
    for epoch in 0..(file.height + 1) / len {
        let (handoff, _) = client
            .checked_certificate((epoch + 1) * len - 1)
            .await
            .with_context(|| format!("cannot fetch epoch {epoch}'s handoff"))?;
        handoffs.push(handoff);
    }
    Ok(Fetched {
        file,
        block: certificate.block,
        finalization: finalization.to_vec(),
        handoffs,
        from: url.to_string(),
    })
}
