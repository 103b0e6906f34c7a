//! `peergrid app data export|import`: a replica's `/data` folder copied out as a tar
//! archive, or replaced by one, over `/peergrid/data/1` (crates/node/src/appdata.rs).
//!
//! Each replica has its own folder on its own node: nothing copies it elsewhere, so a
//! replica that `app repair` moves starts empty. An export is the builder's backup, and
//! an import seeds a new replica (or rolls one back) from it.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Subcommand;
use peergrid_client::Client;
use peergrid_core::capacity::human_bytes;
use peergrid_core::{Keypair, NodeId};
use peergrid_mesh::Mesh;
use peergrid_node::appdata::{self, DataError, DataOp, DataRequest, Unpacked};
use serde_json::json;

use crate::app::{App, Apps, Replica, contract_disks, mesh_peer, node_peer};
use crate::{Globals, output};

/// `peergrid app data`.
#[derive(Subcommand)]
pub enum DataCommand {
    /// Copy a replica's /data out as a tar archive (a backup; the seed of another replica).
    ///
    /// Files are read as the app runs: pause its writes for a consistent copy.
    Export {
        /// The app's name.
        name: String,
        /// Where to write the archive [default: NAME-data.tar].
        out: Option<PathBuf>,
        /// The replica on this node [default: the first replica that answers].
        #[arg(long = "node", value_name = "ID")]
        node: Option<NodeId>,
        /// Overwrite the archive if it exists.
        #[arg(long)]
        force: bool,
    },
    /// Replace the /data of the app's replicas with a tar archive's files.
    ///
    /// The archive: one `export` wrote, or `tar -cf ARCHIVE -C FOLDER .`; files, folders
    /// and symbolic links only. All or nothing per replica: a refused or cut import leaves
    /// /data as it was.
    Import {
        /// The app's name.
        name: String,
        /// The tar archive.
        archive: PathBuf,
        /// Only the replica on this node (repeatable) [default: every replica].
        #[arg(long = "node", value_name = "ID")]
        nodes: Vec<NodeId>,
        /// Replace without asking (needed where nobody can be asked: a script, --json).
        #[arg(long)]
        yes: bool,
        /// Import an archive that holds nothing, emptying /data (an export of an empty one).
        #[arg(long)]
        empty: bool,
    },
}

/// Run `peergrid app data …`.
pub(crate) fn data(globals: &Globals, apps: &Apps, cmd: DataCommand) -> anyhow::Result<()> {
    match cmd {
        DataCommand::Export {
            name,
            out,
            node,
            force,
        } => {
            let app = apps.find(&name)?;
            let out = out.unwrap_or_else(|| PathBuf::from(format!("{}-data.tar", app.name)));
            if out.exists() && !force {
                bail!(
                    "{} exists: give another path, or --force to overwrite it",
                    out.display()
                );
            }
            // Before any node is asked: where the archive goes must take a file.
            let part = appdata::part_path(&out);
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&part)
            {
                Ok(_) => std::fs::remove_file(&part)
                    .with_context(|| format!("cannot remove {}", part.display()))?,
                // A leftover of an export cut short; the export replaces it.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => bail!("cannot write {}: {e}", part.display()),
            }
            export(globals, &app, &out, node)
        }
        DataCommand::Import {
            name,
            archive,
            nodes,
            yes,
            empty,
        } => {
            let app = apps.find(&name)?;
            import(globals, &app, &archive, &nodes, (yes, empty))
        }
    }
}

/// The replicas `nodes` names (all without), or why one is not the app's.
fn chosen<'a>(app: &'a App, nodes: &[NodeId]) -> anyhow::Result<Vec<&'a Replica>> {
    if let Some(stray) = nodes
        .iter()
        .find(|n| !app.replicas.iter().any(|r| r.node == **n))
    {
        let on: Vec<String> = app.replicas.iter().map(|r| r.node.to_string()).collect();
        bail!(
            "app {} has no replica on node {stray}; its replicas are on node {}",
            app.name,
            on.join(", ")
        );
    }
    Ok(app
        .replicas
        .iter()
        .filter(|r| nodes.is_empty() || nodes.contains(&r.node))
        .collect())
}

fn export(globals: &Globals, app: &App, out: &Path, node: Option<NodeId>) -> anyhow::Result<()> {
    let client = globals.client()?;
    let key = globals.keypair()?;
    app.check_owner(&key)?;
    let replicas = chosen(app, node.as_slice())?;
    crate::runtime()?.block_on(async {
        let mesh = mesh_peer(&client, &key).await?;
        let mut tried = Vec::new();
        let mut done = None;
        for r in &replicas {
            let bar = output::bytes_bar(globals, 0);
            let attempt = async {
                let (peer, _) = node_peer(&client, r.node).await?;
                let grid = crate::app::grid(&client).await?;
                let request = DataRequest::sign(&key, grid, r.contract, DataOp::Export);
                appdata::export(&mesh, peer, &request, out, |at, files| {
                    bar.set_length(files.max(at));
                    bar.set_position(at);
                })
                .await
                .map_err(|e| explain(r.node, e))
            };
            let result = tokio::select! {
                result = attempt => result,
                _ = crate::stop_requested() => {
                    bar.finish_and_clear();
                    let _ = std::fs::remove_file(appdata::part_path(out));
                    mesh.close().await;
                    bail!("stopped; {} was not written", out.display());
                }
            };
            bar.finish_and_clear();
            match result {
                Ok(exported) => {
                    done = Some((r, exported));
                    break;
                }
                Err(e) => {
                    if replicas.len() > 1 {
                        eprintln!("{e:#}");
                    }
                    tried.push(format!("{e:#}"));
                }
            }
        }
        mesh.close().await;
        let Some((r, exported)) = done else {
            bail!(
                "cannot export app {}'s /data: {}",
                app.name,
                tried.join("; ")
            );
        };
        if globals.json {
            return output::json(&json!({
                "app": app.name,
                "node": r.node,
                "contract": r.contract,
                "path": out,
                "entries": exported.entries,
                "file_bytes": exported.file_bytes,
                "archive_bytes": exported.archive_bytes,
                "blake3": exported.blake3,
            }));
        }
        outln!(
            "exported app {}'s /data from node {} (contract {}) to {}: {} entries, {} of files ({} archive, BLAKE3 {})",
            app.name,
            r.node,
            r.contract,
            out.display(),
            exported.entries,
            human_bytes(exported.file_bytes),
            human_bytes(exported.archive_bytes),
            &exported.blake3[..16]
        );
        Ok(())
    })
}

/// A node's refusal in its own words; the mesh's said in ours first.
fn explain(node: NodeId, e: DataError) -> anyhow::Error {
    match e {
        DataError::Refused(why) => anyhow::anyhow!("node {node} refused: {why}"),
        DataError::Mesh { .. } => anyhow::anyhow!(
            "node {node} cannot be reached (see `peergrid node list` for its state): {e}"
        ),
        other => anyhow::anyhow!("node {node}: {other}"),
    }
}

fn import(
    globals: &Globals,
    app: &App,
    archive: &Path,
    nodes: &[NodeId],
    (yes, empty): (bool, bool),
) -> anyhow::Result<()> {
    let replicas = chosen(app, nodes)?;
    let key = globals.keypair()?;
    app.check_owner(&key)?;
    // Checked here as the nodes check it, so that a bad archive is refused before a byte
    // is sent.
    let (unpacked, bytes, hash) = appdata::scan(archive).map_err(anyhow::Error::msg)?;
    // A tar made of nothing by mistake would wipe the folder like any other import.
    if unpacked.files + unpacked.folders + unpacked.links == 0 && !empty {
        bail!(
            "{} holds no files or folders: importing it would empty {}'s /data; give --empty if that is what you want",
            archive.display(),
            app.name
        );
    }
    let client = globals.client()?;
    crate::runtime()?.block_on(async {
        let owned: Vec<Replica> = replicas.iter().map(|r| (*r).clone()).collect();
        let disks = contract_disks(&client, &owned).await;
        let mut results: Vec<(&Replica, Outcome)> = Vec::new();
        let mut sendable = Vec::new();
        for r in &replicas {
            match disks.get(&r.contract) {
                None => results.push((
                    r,
                    Outcome::Kept(format!(
                        "contract {} is ended or in its grace period (`peergrid app status {}`)",
                        r.contract, app.name
                    )),
                )),
                Some(&disk) if unpacked.disk_bytes > disk => results.push((
                    r,
                    Outcome::Kept(format!(
                        "the archive takes {} of disk as /data counts it, more than this replica's {}; first `peergrid app update {} --disk {}`",
                        human_bytes(unpacked.disk_bytes),
                        human_bytes(disk),
                        app.name,
                        crate::app::disk_flag(unpacked.disk_bytes)
                    )),
                )),
                Some(_) => sendable.push(*r),
            }
        }
        if sendable.is_empty() {
            let why: Vec<String> = results
                .iter()
                .map(|(r, e)| format!("node {}: {}", r.node, e.text()))
                .collect();
            bail!("no replica of {} can take the archive: {}", app.name, why.join("; "));
        }
        if !yes {
            let asked = !globals.json && std::io::stdin().is_terminal() && std::io::stderr().is_terminal();
            if !asked {
                bail!(
                    "an import replaces every file in /data: give --yes to do it where nobody can be asked"
                );
            }
            if !confirm(app, &sendable, &unpacked)? {
                bail!("nothing imported");
            }
        }
        let mesh = mesh_peer(&client, &key).await?;
        let sendable: Vec<Replica> = sendable.into_iter().cloned().collect();
        let (sent, stopped) =
            send_to(globals, (&client, &mesh, &key), archive, (bytes, hash), &sendable).await;
        mesh.close().await;
        let mut results: Vec<(Replica, Outcome)> = (results.into_iter())
            .map(|(r, o)| (r.clone(), o))
            .chain(sent)
            .collect();
        results.sort_by_key(|(r, _)| r.node);
        let kept = results.iter().filter(|(_, r)| matches!(r, Outcome::Kept(_))).count();
        let unsure = results.iter().filter(|(_, r)| matches!(r, Outcome::Unsure(_))).count();
        if globals.json {
            let rows: Vec<_> = results.iter().map(|(r, result)| result.json(r)).collect();
            output::json(&json!({
                "app": app.name,
                "archive": archive,
                "archive_bytes": bytes,
                "blake3": hex::encode(hash),
                "unpacked": unpacked,
                "replicas": rows,
            }))?;
        } else {
            let rows: Vec<Vec<String>> = results
                .iter()
                .map(|(r, result)| {
                    vec![
                        r.node.to_string(),
                        r.contract.to_string(),
                        match result {
                            Outcome::Replaced(done) => done.clone(),
                            Outcome::Unsure(e) => format!("UNKNOWN: {e}"),
                            Outcome::Kept(e) => format!("NOT imported: {e}"),
                        },
                    ]
                })
                .collect();
            output::table(&["NODE", "CONTRACT", "/DATA"], &rows);
        }
        if stopped {
            bail!("stopped (see above)");
        }
        match (kept, unsure) {
            (0, 0) => Ok(()),
            (kept, 0) => bail!(
                "{kept} of {} replicas kept their /data as it was (see above)",
                results.len()
            ),
            (kept, unsure) => bail!(
                "{unsure} of {} replicas may or may not have taken the archive, and {kept} kept their /data (see above)",
                results.len()
            ),
        }
    })
}

/// Sends the archive (`bytes` long, its BLAKE3 `hash`) to each of `replicas` in turn,
/// with a bar of bytes each: what it did to each, and whether Ctrl-C (or SIGTERM)
/// stopped it (the replica under way is then not known, those after it not sent to).
pub(crate) async fn send_to(
    globals: &Globals,
    (client, mesh, key): (&Client, &Mesh, &Keypair),
    archive: &Path,
    (bytes, hash): (u64, [u8; 32]),
    replicas: &[Replica],
) -> (Vec<(Replica, Outcome)>, bool) {
    let mut results = Vec::new();
    let mut left = replicas.iter();
    while let Some(r) = left.next() {
        let bar = output::bytes_bar(globals, bytes);
        let attempt = async {
            let (peer, _) = match node_peer(client, r.node).await {
                Ok(found) => found,
                Err(e) => return Outcome::Kept(format!("{e:#}")),
            };
            let grid = match crate::app::grid(client).await {
                Ok(grid) => grid,
                Err(e) => return Outcome::Kept(format!("{e:#}")),
            };
            let request = DataRequest::sign(key, grid, r.contract, DataOp::Import { bytes, hash });
            match appdata::import(mesh, peer, &request, archive, |sent| bar.set_position(sent))
                .await
            {
                Ok(report) => Outcome::Replaced(format!(
                    "replaced: {} files, {} of its {} disk",
                    report.unpacked.files,
                    human_bytes(report.unpacked.disk_bytes),
                    human_bytes(report.quota_bytes)
                )),
                Err(e @ DataError::Unsure(_)) => {
                    Outcome::Unsure(format!("{:#}", explain(r.node, e)))
                }
                Err(e) => Outcome::Kept(format!("{:#}", explain(r.node, e))),
            }
        };
        let stopped = tokio::select! {
            result = attempt => {
                bar.finish_and_clear();
                results.push((r.clone(), result));
                false
            }
            _ = crate::stop_requested() => true,
        };
        if stopped {
            bar.finish_and_clear();
            results.push((
                r.clone(),
                Outcome::Unsure(
                    "stopped while sending: unchanged unless the archive had arrived whole (`app data export` shows it)"
                        .to_string(),
                ),
            ));
            for r in left {
                results.push((r.clone(), Outcome::Kept("not sent: stopped".to_string())));
            }
            return (results, true);
        }
    }
    (results, false)
}

/// What an import did to one replica.
pub(crate) enum Outcome {
    /// Its /data is the archive's.
    Replaced(String),
    /// Its /data is as it was, and why.
    Kept(String),
    /// Sent whole, and no answer: it may be either.
    Unsure(String),
}

impl Outcome {
    /// What it says.
    pub(crate) fn text(&self) -> &str {
        match self {
            Outcome::Replaced(t) | Outcome::Kept(t) | Outcome::Unsure(t) => t,
        }
    }

    /// As `--json` shows it for `replica`: `imported` true, false, or null (not known).
    pub(crate) fn json(&self, replica: &Replica) -> serde_json::Value {
        let (node, contract) = (replica.node, replica.contract);
        match self {
            Outcome::Replaced(_) => json!({ "node": node, "contract": contract, "imported": true }),
            Outcome::Unsure(e) => {
                json!({ "node": node, "contract": contract, "imported": null, "error": e })
            }
            Outcome::Kept(e) => {
                json!({ "node": node, "contract": contract, "imported": false, "error": e })
            }
        }
    }
}

/// Asks on the terminal before files are replaced.
fn confirm(app: &App, replicas: &[&Replica], unpacked: &Unpacked) -> anyhow::Result<bool> {
    let on: Vec<String> = replicas.iter().map(|r| r.node.to_string()).collect();
    eprint!(
        "Replace every file in app {}'s /data on node {} with the archive's {} files ({})? \
         What is there now is lost unless exported first. [y/N] ",
        app.name,
        on.join(", "),
        unpacked.files,
        human_bytes(unpacked.file_bytes)
    );
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    Ok(matches!(answer.trim().to_lowercase().as_str(), "y" | "yes"))
}
