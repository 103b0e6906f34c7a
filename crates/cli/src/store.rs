//! `peergrid store …`: reserve space, put, get, list, share, remove and audit objects.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, bail};
use clap::Subcommand;
use peergrid_core::capacity::Size;
use peergrid_storage::client::{Got, human_bytes};
use peergrid_storage::{AuditResult, Capability, NodeChoice, Scheme, Storage};
use serde_json::{Value, json};

use crate::Globals;
use crate::output;

/// Storage commands.
#[derive(Subcommand)]
pub enum StoreCommand {
    /// Reserve space on nodes: one storage contract per node, billed by the hour.
    Reserve {
        /// Space on each node, e.g. 10GiB (shard bytes: an object of S bytes in a K+M
        /// scheme takes about S/K on each node).
        #[arg(long)]
        size: Size,
        /// How many nodes (up, with room; distinct farms first).
        #[arg(long, default_value_t = 5, conflicts_with = "node", value_parser = clap::value_parser!(u16).range(1..))]
        nodes: u16,
        /// These nodes instead (repeat).
        #[arg(long)]
        node: Vec<u32>,
    },
    /// Store a file under a name (default: the file's name), or every file in a folder
    /// under NAME/ and its path there (default NAME: the folder's name).
    Put {
        /// The file, a folder, or `-` for standard input (`tar c photos | peergrid store
        /// put - photos.tar`).
        file: PathBuf,
        /// The name, like photos/cat.jpg (`photos/` keeps the file's own name under it);
        /// for a folder, the prefix its files are named under, like photos.
        name: Option<String>,
        /// Erasure code K+M (any K of K+M shards rebuild the data) [default: from your nodes: 3+2 on 5].
        #[arg(long)]
        scheme: Option<Scheme>,
    },
    /// Fetch an object by name or capability into a file, or every object under a
    /// prefix (`photos/`) into a folder.
    Get {
        /// A name from `store ls`, a capability (pg1…), or a prefix ending in `/`.
        object: String,
        /// Where to write it [default: the name's last part]: a file, a folder to write
        /// it in, or `-` for standard output.
        out: Option<PathBuf>,
        /// Only bytes START-END (end exclusive), e.g. 0-1048576; START- reads to the end.
        #[arg(long)]
        range: Option<String>,
    },
    /// List your objects, or those whose names start with PREFIX (e.g. `photos/`).
    Ls {
        /// Only names that start with this.
        prefix: Option<String>,
    },
    /// Print the capability of an object: whoever has it can read the object.
    Share {
        /// The name.
        name: String,
    },
    /// Remove an object and free its space; `PREFIX/` removes every object under it.
    Rm {
        /// The name, or a prefix ending in `/` (e.g. photos/).
        name: String,
    },
    /// Your storage contracts, their nodes and how full they are.
    Status,
    /// Rebuild the shards that no reachable node serves any more, onto your other nodes.
    Repair {
        /// Only this object [default: all].
        name: Option<String>,
        /// Keep repairing every this many seconds until stopped.
        #[arg(long, value_name = "SECONDS")]
        watch: Option<u64>,
        /// Also store again, with the scheme a put would give them now, objects put
        /// narrower (while nodes were down, or before you reserved more) when that adds
        /// parity or saves at least 15 % of their room. Each gets a new capability: one
        /// you shared reads no more.
        #[arg(long)]
        widen: bool,
    },
    /// Remove the shards none of your objects uses any more (from a `store rm` while a node
    /// was down, or a put cut short and never run again): they count in your contracts'
    /// usage until removed.
    Gc {
        /// Leave shards written less than this long ago (30s, 15m, 24h, 7d): a put from
        /// another machine with your words may still be under way. Use 0s when none is.
        #[arg(long, default_value = "24h", value_parser = parse_age)]
        older_than: std::time::Duration,
        /// Only show what would be removed.
        #[arg(long)]
        dry_run: bool,
    },
    /// Challenge the nodes that hold your objects to prove they still have them.
    Audit {
        /// Only this object [default: all].
        name: Option<String>,
        /// Shards challenged per object.
        #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..))]
        samples: u16,
    },
}

/// A range START-END in bytes; `END` is `None` for START- (to the object's end).
fn parse_range(s: &str) -> anyhow::Result<(u64, Option<u64>)> {
    let what = || {
        format!(
            "{s:?} is not a range: write START-END in bytes, e.g. 0-1048576, or START- to read to the end"
        )
    };
    let (a, b) = s.split_once('-').with_context(what)?;
    let start = a.trim().parse().with_context(what)?;
    let end = match b.trim() {
        "" => None,
        b => Some(b.parse().with_context(what)?),
    };
    if end.is_some_and(|end| end < start) {
        bail!("range {s}: the end comes before the start");
    }
    Ok((start, end))
}

/// An age like 30s, 15m, 24h or 7d.
fn parse_age(s: &str) -> anyhow::Result<std::time::Duration> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u64 = n
        .parse()
        .with_context(|| format!("{s:?} is not an age: write a number and a unit, e.g. 24h"))?;
    let secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => bail!("{s:?}: the unit must be s, m, h or d, e.g. 24h"),
    };
    n.checked_mul(secs)
        .map(std::time::Duration::from_secs)
        .with_context(|| format!("{s:?} is too long"))
}

/// An age as the user would write it (a day and a half as 36h, the default as 24h).
fn human_age(d: std::time::Duration) -> String {
    let s = d.as_secs();
    match s {
        _ if s >= 2 * 86_400 && s.is_multiple_of(86_400) => format!("{}d", s / 86_400),
        _ if s >= 3600 && s.is_multiple_of(3600) => format!("{}h", s / 3600),
        _ if s >= 60 && s.is_multiple_of(60) => format!("{}m", s / 60),
        _ => format!("{s}s"),
    }
}

/// Where this home keeps its storage files: `$PEERGRID_HOME/storage`.
fn storage_dir(globals: &Globals) -> anyhow::Result<PathBuf> {
    let key = globals.home_key_file()?;
    Ok(key.parent().unwrap_or(Path::new(".")).join("storage"))
}

/// Where audit results are kept: `$PEERGRID_HOME/storage/audits.json`.
fn audits_file(globals: &Globals) -> anyhow::Result<PathBuf> {
    Ok(storage_dir(globals)?.join("audits.json"))
}

/// Storage for this home's account, its index changes taking turns with the other
/// commands run from the same home (`storage/index-ACCOUNT.lock`), its nodes dialed
/// where they were last reached (`storage/peers.json`).
pub(crate) async fn connect(globals: &Globals) -> anyhow::Result<Storage> {
    let key = globals.keypair()?;
    let lock = storage_dir(globals)?.join(format!("index-{}.lock", key.account()));
    let peers = storage_dir(globals)?.join("peers.json");
    Ok(Storage::connect(globals.client()?, key)
        .await?
        .with_index_lock(lock)
        .with_peer_book(peers))
}

/// Wait `secs` seconds (at least one); whether a stop was asked for meanwhile.
async fn stopped_waiting(secs: u64) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(std::time::Duration::from_secs(secs.max(1))) => false,
        _ = crate::stop_requested() => true,
    }
}

/// The object `name` with its index entry, or every object when no name is given.
async fn objects(
    storage: &Storage,
    name: Option<&str>,
) -> anyhow::Result<Vec<(String, peergrid_storage::IndexEntry)>> {
    let (_, index) = storage.index().await?;
    Ok(match name {
        Some(n) => {
            let entry = index
                .objects
                .get(n)
                .cloned()
                .with_context(|| format!("you have no object named {n:?}"))?;
            vec![(n.to_string(), entry)]
        }
        None => index.objects.into_iter().collect(),
    })
}

/// Run a storage command.
pub fn run(globals: &Globals, cmd: StoreCommand) -> anyhow::Result<()> {
    crate::runtime()?.block_on(async {
        // What an interrupted put or get leaves, said when Ctrl-C or SIGTERM stops it:
        // both go on from there when run again.
        let interrupted = match &cmd {
            StoreCommand::Put { .. } => Some(
                "store put interrupted: objects not yet named are not listed; the shards sent \
                 stay on your nodes, and the same put again sends only the rest (`peergrid \
                 store gc` removes them if you do not)",
            ),
            StoreCommand::Get { .. } => Some(
                "store get interrupted: the same get again goes on after what it wrote into \
                 its file (kept as NAME.partial beside it); into a pipe it starts over",
            ),
            _ => None,
        };
        let storage = connect(globals).await?;
        // A reader gone from stdout unwinds out of the command (see `output::write_out`):
        // the connections are closed first all the same, so nodes see a clean end.
        let work = futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(command(
            globals, &storage, cmd,
        )));
        let result = match interrupted {
            // Only these wait for a stop: another command's Ctrl-C ends it as it always did.
            Some(said) => tokio::select! {
                r = work => r,
                _ = crate::stop_requested() => {
                    storage.close().await;
                    eprintln!("{said}");
                    std::process::exit(crate::stop::exit_code());
                }
            },
            None => work.await,
        };
        storage.close().await;
        result.unwrap_or_else(|unwound| std::panic::resume_unwind(unwound))
    })
}

async fn command(globals: &Globals, storage: &Storage, cmd: StoreCommand) -> anyhow::Result<()> {
    match cmd {
        StoreCommand::Reserve { size, nodes, node } => {
            let size = size.bytes();
            if size == 0 {
                bail!(
                    "--size 0 reserves nothing: give the space each node keeps for you, e.g. --size 10GiB"
                );
            }
            let choice = if node.is_empty() {
                NodeChoice::Count(usize::from(nodes))
            } else {
                NodeChoice::Ids(node)
            };
            let contracts = storage.reserve(size, choice).await?;
            if globals.json {
                return output::json(&json!({ "contracts": contracts, "bytes": size }));
            }
            outln!(
                "reserved {} on {} node{}: contract{} {}",
                human_bytes(size),
                contracts.len(),
                if contracts.len() == 1 { "" } else { "s" },
                if contracts.len() == 1 { "" } else { "s" },
                contracts
                    .iter()
                    .map(u64::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            Ok(())
        }
        StoreCommand::Put { file, name, scheme } if file.is_dir() && file != Path::new("-") => {
            put_folder(globals, storage, &file, name, scheme).await
        }
        StoreCommand::Put { file, name, scheme } => {
            // A pipe (`-` for standard input, or one the shell made): its length is known
            // only at its end, so it is put as it is read.
            let stdin = file == Path::new("-");
            let piped = stdin
                || std::fs::metadata(&file)
                    .is_ok_and(|m| std::os::unix::fs::FileTypeExt::is_fifo(&m.file_type()));
            let name = match name {
                Some(n) if n.ends_with('/') && piped => bail!(
                    "{n} names a folder of objects and a pipe's name is not kept: give the object's whole name, like {n}backup.tar"
                ),
                // Into a folder of objects, as `cp` does: under the file's own name.
                Some(n) if n.ends_with('/') => match file.file_name().and_then(|f| f.to_str()) {
                    Some(f) => format!("{n}{f}"),
                    None => bail!(
                        "{n} names a folder of objects and the file has no usable name: give the object's whole name, like {n}cat.jpg"
                    ),
                },
                Some(n) => n,
                None if piped => bail!(
                    "a pipe's name is not kept: give the object's name, like `tar c photos | peergrid store put - photos.tar`"
                ),
                None => file
                    .file_name()
                    .and_then(|n| n.to_str())
                    .map(str::to_string)
                    .context(
                        "the file has no usable name; give one: peergrid store put FILE NAME",
                    )?,
            };
            let started = std::time::Instant::now();
            let report = if piped {
                let input: Box<dyn std::io::Read + Send> = if stdin {
                    if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
                        bail!(
                            "standard input is a terminal: pipe the bytes in, like `tar c photos | peergrid store put - {name}`, or give a file"
                        );
                    }
                    Box::new(std::io::stdin())
                } else {
                    Box::new(
                        std::fs::File::open(&file)
                            .with_context(|| format!("cannot open {}", file.display()))?,
                    )
                };
                let bar = output::bytes_flowing(globals);
                let report = storage
                    .put_stream(input, &name, scheme, &|n| bar.set_position(n))
                    .await;
                bar.finish_and_clear();
                report?
            } else {
                let size = std::fs::metadata(&file)
                    .with_context(|| format!("cannot read {}", file.display()))?
                    .len();
                let bar = output::bytes_bar(globals, size);
                let report = storage
                    .put(&file, &name, scheme, &|n| bar.set_position(n))
                    .await;
                bar.finish_and_clear();
                report?
            };
            let secs = started.elapsed().as_secs_f64();
            if report.scheme.m == 0 {
                eprintln!(
                    "warning: {} is stored as {}, with no parity: any one of its nodes lost loses it; reserve on more nodes, then `peergrid store repair --widen` adds parity",
                    report.name, report.scheme
                );
            }
            if globals.json {
                return output::json(&json!({
                    "name": report.name,
                    "capability": report.capability.to_string(),
                    "size": report.size,
                    "scheme": report.scheme.to_string(),
                    "shards_sent": report.shards_sent,
                    "shards_resumed": report.shards_resumed,
                    "replaced": report.replaced,
                    "unchanged": report.unchanged,
                    "seconds": secs,
                }));
            }
            if report.replaced {
                eprintln!(
                    "{} named another object before: that one is removed, and capabilities shared for it no longer read",
                    report.name
                );
            }
            output::rows(&[
                ("stored", report.name.clone()),
                ("size", human_bytes(report.size)),
                (
                    "scheme",
                    format!(
                        "{} (any {} of {} shards rebuild it)",
                        report.scheme,
                        report.scheme.k,
                        report.scheme.n()
                    ),
                ),
                (
                    "shards",
                    format!(
                        "{} sent, {} already there",
                        report.shards_sent, report.shards_resumed
                    ),
                ),
                (
                    "time",
                    format!(
                        "{secs:.1} s ({}/s)",
                        human_bytes((report.size as f64 / secs.max(1e-3)) as u64)
                    ),
                ),
                ("capability", report.capability.to_string()),
            ]);
            Ok(())
        }
        StoreCommand::Get { object, out, range } => {
            let asked = std::time::Instant::now();
            let range = range.as_deref().map(parse_range).transpose()?;
            // A name may start like a capability (`pg1-notes.txt`): only one that parses
            // as a capability is read as one.
            let (cap, default_out, by_capability) = match object.parse::<Capability>() {
                Ok(cap) => (cap, None, true),
                Err(not_cap) => {
                    let (_, index) = storage.index().await?;
                    if let Some(prefix) = folder_named(&index, &object) {
                        if range.is_some() {
                            bail!(
                                "--range reads part of one object, and {object} is a folder: name one of its objects (`peergrid store ls {prefix}/`)"
                            );
                        }
                        return get_folder(globals, storage, &index, prefix, out).await;
                    }
                    let entry = index.objects.get(&object).with_context(|| {
                        // Base58 is read as written: `PG1…` is a capability upper-cased.
                        if object.get(..3).is_some_and(|p| p.eq_ignore_ascii_case("pg1")) {
                            format!("{object:?} is neither a capability ({not_cap}) nor one of your objects (see `peergrid store ls`)")
                        } else {
                            format!("you have no object named {object:?} (see `peergrid store ls`)")
                        }
                    })?;
                    (
                        entry.capability,
                        last_part(&object).map(PathBuf::from),
                        false,
                    )
                }
            };
            // A capability without OUT is written as into this folder given: under its
            // name's last part, never over a file there.
            let (out, given) = match (out, default_out) {
                (Some(out), _) => (out, true),
                (None, Some(default)) => (default, false),
                (None, None) => (PathBuf::from("."), true),
            };
            // With the object on standard output, what the command says goes to stderr.
            let to_stdout = peergrid_storage::client::writes_to_stdout(&out);
            if to_stdout {
                output::claim_stdout();
            }
            let (manifest, holdings) = storage.open(&cap).await?;
            // Into a folder given, as `cp` does: under the last part of the object's name.
            // A folder in the way of the default name is refused by the get.
            let out = match given && !to_stdout && out.is_dir() {
                true => {
                    let file = out.join(last_part(&manifest.name).with_context(|| {
                        format!(
                            "{} is a folder, and the object's name {:?} ends in no file name: give the file to write, e.g. {}",
                            out.display(),
                            manifest.name,
                            out.join("NAME").display()
                        )
                    })?);
                    // A capability's name is chosen by whoever made it: it does not get
                    // to replace a file of yours by naming it.
                    if by_capability && file.exists() {
                        bail!(
                            "{} exists, and a capability's object is not written over a file by the name its maker gave it: give the file to write",
                            file.display()
                        );
                    }
                    file
                }
                false => out,
            };
            let range = range.map(|(a, b)| (a, b.unwrap_or(manifest.size.max(a))));
            let total = range
                .map(|(a, b)| b.saturating_sub(a))
                .unwrap_or(manifest.size);
            let started = std::time::Instant::now();
            // One of your objects got again into a file that holds it already (a script
            // run twice) is not fetched again. Its segments' keys come from your secret, so
            // a shared object's cannot be compared: it is fetched.
            let unchanged = !by_capability && range.is_none() && !to_stdout && {
                // A large file of the object's size is read whole to compare: say so.
                let same_size =
                    std::fs::metadata(&out).is_ok_and(|m| m.is_file() && m.len() == manifest.size);
                let reading = (same_size && manifest.size >= 64 << 20)
                    .then(|| output::busy(globals, "comparing the file there with the object"));
                let same = storage.holds_already(&manifest, &out).await;
                if let Some(bar) = reading {
                    bar.finish_and_clear();
                }
                same
            };
            let got = if unchanged {
                Got {
                    written: 0,
                    resumed: 0,
                }
            } else {
                let bar = output::bytes_bar(globals, total);
                let got = storage
                    .get_opened(&cap, &manifest, &holdings, &out, range, &|n| {
                        bar.set_position(n)
                    })
                    .await?;
                bar.finish_and_clear();
                got
            };
            let written = got.written;
            let secs = started.elapsed().as_secs_f64();
            // Finding the manifest and its nodes (a node down is waited for a few seconds)
            // comes before the transfer: the time given is the transfer's, and the whole
            // command's too when they differ enough to tell.
            let all_secs = asked.elapsed().as_secs_f64();
            let finding = match all_secs - secs >= 0.5 {
                true => format!(", {all_secs:.1} s with finding it"),
                false => String::new(),
            };
            let said = if globals.json {
                json!({
                    "name": manifest.name,
                    "out": out.display().to_string(),
                    "size": manifest.size,
                    "bytes": written,
                    "resumed_bytes": got.resumed,
                    "unchanged": unchanged,
                    "seconds": secs,
                    "seconds_total": all_secs,
                })
                .to_string()
            } else if unchanged {
                format!(
                    "{} → {}: unchanged, the file holds it already ({})",
                    manifest.name,
                    out.display(),
                    human_bytes(manifest.size)
                )
            } else {
                let to = if to_stdout {
                    "standard output".to_string()
                } else {
                    out.display().to_string()
                };
                // A get that went on after an interrupted one says so: its time and
                // size are not the whole object's transfer.
                let resumed = match got.resumed {
                    0 => String::new(),
                    r => format!(", going on after the {} written before", human_bytes(r)),
                };
                format!(
                    "{} → {to} ({} in {secs:.1} s{finding}{resumed})",
                    manifest.name,
                    human_bytes(written)
                )
            };
            if to_stdout {
                eprintln!("{said}");
            } else {
                outln!("{said}");
            }
            Ok(())
        }
        StoreCommand::Ls { prefix } => {
            let (pointer, index) = storage.index().await?;
            let prefix = prefix.unwrap_or_default();
            let listed = index.starting_with(&prefix);
            if globals.json {
                let objects: Vec<_> = listed
                    .map(|(n, e)| json!({"name": n, "size": e.size, "created_ms": e.created_ms, "scheme": e.scheme.to_string()}))
                    .collect();
                return output::json(&json!({
                    "objects": objects,
                    "index_version": pointer.map(|p| p.pointer.seq),
                }));
            }
            let rows: Vec<Vec<String>> = listed
                .map(|(n, e)| {
                    vec![
                        n.clone(),
                        human_bytes(e.size),
                        e.scheme.to_string(),
                        output::ago(e.created_ms),
                    ]
                })
                .collect();
            if index.objects.is_empty() {
                eprintln!("you have no objects yet: `peergrid store put FILE` stores one");
            } else if rows.is_empty() {
                eprintln!(
                    "none of your {} objects has a name starting with {prefix:?}",
                    index.objects.len()
                );
            }
            output::table(&["NAME", "SIZE", "SCHEME", "STORED"], &rows);
            Ok(())
        }
        StoreCommand::Share { name } => {
            let (_, index) = storage.index().await?;
            let entry = index.objects.get(&name).with_context(|| {
                format!("you have no object named {name:?} (see `peergrid store ls`)")
            })?;
            if globals.json {
                return output::json(
                    &json!({ "name": name, "capability": entry.capability.to_string() }),
                );
            }
            outln!("{}", entry.capability);
            eprintln!("whoever has this can read {name}: peergrid store get CAPABILITY OUT");
            Ok(())
        }
        StoreCommand::Rm { name } if name.ends_with('/') => {
            let spinner = output::busy(globals, "removing the names from your index");
            let removed = storage
                .remove_under(&name, &|n| {
                    spinner.set_message(format!("{n} object(s) removed from your nodes"))
                })
                .await;
            spinner.finish_and_clear();
            let removed = removed?;
            let bytes: u64 = removed.iter().map(|(_, e)| e.size).sum();
            if globals.json {
                let objects: Vec<Value> = removed
                    .iter()
                    .map(|(n, e)| json!({ "name": n, "size": e.size }))
                    .collect();
                return output::json(&json!({ "removed": objects, "bytes": bytes }));
            }
            let rows: Vec<Vec<String>> = removed
                .iter()
                .map(|(n, e)| vec![n.clone(), human_bytes(e.size)])
                .collect();
            output::table(&["REMOVED", "SIZE"], &rows);
            outln!("{} object(s), {}", removed.len(), human_bytes(bytes));
            Ok(())
        }
        StoreCommand::Rm { name } => {
            let entry = match storage.remove(&name).await {
                Ok(entry) => entry,
                Err(e) => {
                    // `rm photos` for the folder: said, not done, since it removes many.
                    let under = match storage.index().await {
                        Ok((_, index)) => folder_named(&index, &name)
                            .map(|prefix| index.starting_with(&format!("{prefix}/")).count()),
                        Err(_) => None,
                    };
                    match under {
                        Some(count) => bail!(
                            "{e}; `peergrid store rm {name}/` removes the {count} object(s) under {name}/"
                        ),
                        None => return Err(e.into()),
                    }
                }
            };
            if globals.json {
                return output::json(&json!({ "removed": name, "size": entry.size }));
            }
            outln!("removed {name} ({})", human_bytes(entry.size));
            Ok(())
        }
        StoreCommand::Status => {
            let holdings = storage.holdings(storage.owner()).await?;
            let usage = storage.usage_reached(&holdings).await;
            let unreachable = usage.iter().filter(|u| u.is_none()).count();
            // A monitor runs this: every node silent is a failure, not a table of blanks.
            let none_answered = (unreachable > 0 && unreachable == holdings.len()).then(|| {
                anyhow::anyhow!(
                    "none of the {} node(s) of your storage answered: check `peergrid node list`, and that this machine reaches the mesh",
                    holdings.len()
                )
            });
            if globals.json {
                let rows: Vec<_> = holdings
                    .iter()
                    .zip(&usage)
                    .map(|(h, u)| {
                        json!({
                            "contract": h.contract, "node": h.node, "farm": h.farm,
                            "status": h.status, "in_grace": h.in_grace,
                            "reserved": h.quota, "used": u,
                        })
                    })
                    .collect();
                output::json(&json!({ "contracts": rows, "unreachable": unreachable }))?;
                return none_answered.map_or(Ok(()), Err);
            }
            let rows: Vec<Vec<String>> = holdings
                .iter()
                .zip(&usage)
                .map(|(h, u)| {
                    vec![
                        h.contract.to_string(),
                        h.node.to_string(),
                        h.farm.to_string(),
                        if h.in_grace {
                            "grace: top up".into()
                        } else {
                            h.status.to_string()
                        },
                        human_bytes(h.quota),
                        u.map(human_bytes).unwrap_or_else(|| "unreachable".into()),
                    ]
                })
                .collect();
            output::table(
                &["CONTRACT", "NODE", "FARM", "STATE", "RESERVED", "USED"],
                &rows,
            );
            if let Some(e) = none_answered {
                return Err(e);
            }
            if unreachable > 0 {
                outln!(
                    "\n{unreachable} of {} node(s) did not answer; their shards are read from the others (`peergrid store repair` restores redundancy if they stay away)",
                    holdings.len()
                );
            }
            Ok(())
        }
        StoreCommand::Repair { name, watch, widen } => {
            if watch.is_some() {
                // Stops during a pass are kept for the wait after it, the first pass's too.
                crate::stop::stops();
            }
            loop {
                // A watch outlives a grid that is down for a while: it tries again next round.
                let objects = match (objects(storage, name.as_deref()).await, watch) {
                    (Ok(objects), _) => objects,
                    (Err(e), Some(secs)) => {
                        tracing::warn!("cannot read your index ({e:#}); trying again in {secs} s");
                        if stopped_waiting(secs).await {
                            return Ok(());
                        }
                        continue;
                    }
                    (Err(e), None) => return Err(e),
                };
                let mut reports = Vec::new();
                let mut widened = Vec::new();
                // An object that cannot be repaired (or widened) is named; the others still are.
                let mut failed: Vec<(String, String)> = Vec::new();
                // A widening shows its own bar, by bytes.
                let progress = match widen {
                    true => indicatif::ProgressBar::hidden(),
                    false => output::objects_bar(globals, objects.len(), "checking"),
                };
                for (n, entry) in &objects {
                    progress.set_message(n.clone());
                    progress.inc(1);
                    let report = match storage.repair(n, entry).await {
                        Ok(report) => report,
                        Err(e) => {
                            failed.push((n.clone(), e.to_string()));
                            continue;
                        }
                    };
                    if let Some(wider) = report.widen_to.filter(|_| widen) {
                        let bar = output::bytes_bar(globals, entry.size);
                        let put = storage
                            .widen(n, entry, wider, &|done| bar.set_position(done))
                            .await;
                        bar.finish_and_clear();
                        match put {
                            Ok(put) => widened.push(put),
                            Err(e) => failed.push((n.clone(), format!("cannot widen it: {e}"))),
                        }
                    }
                    reports.push(report);
                }
                progress.finish_and_clear();
                let failed_json: Vec<Value> = failed
                    .iter()
                    .map(|(name, error)| json!({ "name": name, "error": error }))
                    .collect();
                let narrow = reports.iter().filter(|r| r.widen_to.is_some()).count();
                if globals.json {
                    let widened: Vec<_> = widened
                        .iter()
                        .map(|w| {
                            json!({
                                "name": w.name,
                                "scheme": w.scheme.to_string(),
                                "capability": w.capability.to_string(),
                            })
                        })
                        .collect();
                    output::json(&json!({
                        "objects": reports,
                        "widened": widened,
                        "failed": failed_json,
                    }))?;
                } else {
                    let rows: Vec<Vec<String>> = reports
                        .iter()
                        .map(|r| {
                            let scheme = match r.widen_to {
                                Some(w) if widen => format!("{} -> {w}", r.scheme),
                                Some(w) => format!("{} ({w} possible)", r.scheme),
                                None => r.scheme.to_string(),
                            };
                            vec![
                                r.name.clone(),
                                scheme,
                                r.segments.to_string(),
                                r.shards_missing.to_string(),
                                r.shards_rebuilt.to_string(),
                                r.manifest_copies.to_string(),
                            ]
                        })
                        .collect();
                    output::table(
                        &[
                            "NAME",
                            "SCHEME",
                            "SEGMENTS",
                            "SHARDS MISSING",
                            "REBUILT",
                            "MANIFEST COPIED TO",
                        ],
                        &rows,
                    );
                    for w in &widened {
                        eprintln!(
                            "{} is stored as {} now, under a new capability: `peergrid store share {}` prints it",
                            w.name, w.scheme, w.name
                        );
                    }
                    if !widen && narrow > 0 {
                        eprintln!(
                            "{narrow} object(s) are stored narrower than a put would store them now: `peergrid store repair --widen` stores them again (each gets a new capability; share it again)"
                        );
                    }
                    for (name, error) in &failed {
                        eprintln!("{name}: not repaired: {error}");
                    }
                }
                let short: u64 = reports
                    .iter()
                    .map(|r| r.shards_missing - r.shards_rebuilt)
                    .sum();
                match watch {
                    Some(secs) => {
                        if stopped_waiting(secs).await {
                            return Ok(());
                        }
                    }
                    None if !failed.is_empty() => bail!(
                        "{} of {} objects could not be repaired (see above): if their nodes are down, run it again once they are back; if the contracts that held their shards were deleted (`peergrid contract list` shows them), more than their parity is gone and they cannot be read: `peergrid store rm NAME` removes a name",
                        failed.len(),
                        objects.len()
                    ),
                    None if short > 0 => bail!(
                        "{short} shards could not be rebuilt: a segment's shards go to distinct nodes, and no reachable node of yours without one of theirs took them (each holds one already, or refused: see the warnings). Run the repair again once their nodes are back, or reserve on more nodes: `peergrid store reserve` takes up nodes that hold none of your data first (`peergrid node list` shows which are up)"
                    ),
                    None => return Ok(()),
                }
            }
        }
        StoreCommand::Gc {
            older_than,
            dry_run,
        } => {
            let spinner = output::busy(
                globals,
                "reading your index and manifests, listing and auditing your nodes' shards",
            );
            let reports = storage.collect_garbage(older_than, dry_run).await;
            spinner.finish_and_clear();
            let reports = reports?;
            let unreached = reports.iter().filter(|r| r.error.is_some()).count();
            if globals.json {
                output::json(&json!({ "dry_run": dry_run, "contracts": reports }))?;
            } else {
                let rows: Vec<Vec<String>> = reports
                    .iter()
                    .map(|r| {
                        vec![
                            r.contract.to_string(),
                            r.node.to_string(),
                            r.kept.to_string(),
                            format!("{} ({})", r.garbage, human_bytes(r.garbage_bytes)),
                            r.young.to_string(),
                            match &r.error {
                                Some(e) => e.clone(),
                                None if dry_run => "dry run".into(),
                                None => format!("removed {}", r.removed),
                            },
                        ]
                    })
                    .collect();
                output::table(
                    &["CONTRACT", "NODE", "IN USE", "GARBAGE", "YOUNG", "RESULT"],
                    &rows,
                );
                let garbage: u64 = reports.iter().map(|r| r.garbage_bytes).sum();
                let young: u64 = reports.iter().map(|r| r.young).sum();
                let extra: u64 = reports.iter().map(|r| r.extra_copies).sum();
                if extra > 0 {
                    eprintln!(
                        "{extra} of the garbage shard(s) are extra copies: a repair rebuilt them on another node while theirs was down, and that node keeps them"
                    );
                }
                if dry_run && garbage > 0 {
                    eprintln!(
                        "{} can be freed: run it again without --dry-run",
                        human_bytes(garbage)
                    );
                }
                if young > 0 {
                    eprintln!(
                        "{young} unused shard(s) were written less than {} ago and were left: a put may be under way; `--older-than 0s` takes them too when none is",
                        human_age(older_than)
                    );
                }
            }
            if unreached > 0 {
                bail!(
                    "{unreached} of your storage contracts' nodes could not be collected (see above); run `peergrid store gc` again when they are up"
                );
            }
            Ok(())
        }
        StoreCommand::Audit { name, samples } => {
            let objects = objects(storage, name.as_deref()).await?;
            let mut per_node: std::collections::BTreeMap<u32, AuditResult> = Default::default();
            // An object that cannot be audited at all (its manifest unreadable) is named,
            // and the others are still audited and kept.
            let mut unaudited: Vec<(String, String)> = Vec::new();
            let progress = output::objects_bar(globals, objects.len(), "auditing");
            for (name, entry) in &objects {
                progress.set_message(name.clone());
                progress.inc(1);
                let audited = match storage.audit(&entry.capability, usize::from(samples)).await {
                    Ok(r) => r,
                    Err(e) => {
                        unaudited.push((name.clone(), e.to_string()));
                        continue;
                    }
                };
                for r in audited {
                    let e = per_node.entry(r.node).or_insert(AuditResult {
                        passed: 0,
                        failed: 0,
                        unanswered: 0,
                        ..r.clone()
                    });
                    e.passed += r.passed;
                    e.failed += r.failed;
                    e.unanswered += r.unanswered;
                    if r.last_error.is_some() {
                        e.last_error = r.last_error;
                    }
                }
            }
            progress.finish_and_clear();
            let results: Vec<AuditResult> = per_node.into_values().collect();
            let file = audits_file(globals)?;
            if let Some(dir) = file.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let mut history: Vec<AuditResult> = std::fs::read(&file)
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
                .unwrap_or_default();
            history.extend(results.iter().cloned());
            let keep = history.len().saturating_sub(10_000);
            history.drain(..keep);
            peergrid_storage::store::write_atomic(&file, &serde_json::to_vec_pretty(&history)?)
                .with_context(|| format!("cannot write {}", file.display()))?;
            let failed = results.iter().any(|r| r.failed > 0);
            let unanswered: Vec<String> = results
                .iter()
                .filter(|r| r.unanswered > 0)
                .map(|r| r.node.to_string())
                .collect();
            let unaudited_json: Vec<Value> = unaudited
                .iter()
                .map(|(name, error)| json!({ "name": name, "error": error }))
                .collect();
            if globals.json {
                output::json(&json!({
                    "objects": objects.len(),
                    "nodes": results,
                    "unaudited": unaudited_json,
                }))?;
            } else {
                let rows: Vec<Vec<String>> = results
                    .iter()
                    .map(|r| {
                        vec![
                            r.node.to_string(),
                            r.passed.to_string(),
                            r.failed.to_string(),
                            r.unanswered.to_string(),
                            r.last_error.clone().unwrap_or_default(),
                        ]
                    })
                    .collect();
                output::table(
                    &["NODE", "PASSED", "FAILED", "UNANSWERED", "LAST ERROR"],
                    &rows,
                );
                outln!("kept in {}", file.display());
                for (name, error) in &unaudited {
                    outln!("{name}: not audited: {error}");
                }
            }
            if !unaudited.is_empty() {
                bail!(
                    "{} of {} objects could not be audited (their manifests cannot be read: are their nodes up?); `peergrid store repair` restores what can be rebuilt",
                    unaudited.len(),
                    objects.len()
                );
            }
            if failed {
                bail!(
                    "some nodes failed their audit; `peergrid store repair` rebuilds their shards on your other nodes"
                );
            }
            if !unanswered.is_empty() {
                bail!(
                    "node(s) {} left challenges unanswered (not reached, the connection broke, or \
                     your contract there is in grace: see LAST ERROR): no evidence about their \
                     shards either way; run the audit again, and `peergrid node list` shows \
                     whether they are up",
                    unanswered.join(", ")
                );
            }
            Ok(())
        }
    }
}

/// The last part of an object's name, to name a file after: `None` for `photos/` or `..`.
fn last_part(name: &str) -> Option<&str> {
    name.rsplit('/')
        .next()
        .filter(|l| !l.is_empty() && *l != "." && *l != "..")
}

/// The prefix `object` names as a folder: `photos/`, or `photos` when no object has that
/// exact name and some are under `photos/`.
fn folder_named<'a>(index: &peergrid_storage::Index, object: &'a str) -> Option<&'a str> {
    let prefix = object.trim_end_matches('/');
    let has_under = || {
        let under = format!("{prefix}/");
        index
            .starting_with(&under)
            .any(|(n, _)| n.len() > under.len())
    };
    // An exact name wins unless objects are under it too and the slash asks for them
    // (names ending in `/` were refused for new puts, not for old ones).
    let folder = match object.ends_with('/') {
        true => !index.objects.contains_key(object) || has_under(),
        false => !index.objects.contains_key(object) && has_under(),
    };
    (folder && !prefix.is_empty()).then_some(prefix)
}

/// Where object `name` under `prefix/` goes inside a folder: its path after the prefix.
/// `None` for a name that would lead out of the folder or names no file (`a//b`, `..`).
fn path_in_folder(prefix: &str, name: &str) -> Option<PathBuf> {
    let rel = name.strip_prefix(prefix)?.strip_prefix('/')?;
    let mut path = PathBuf::new();
    for part in rel.split('/') {
        if part.is_empty() || part == "." || part == ".." || part.contains('\0') {
            return None;
        }
        path.push(part);
    }
    Some(path)
}

/// A folder's put names the files stored so far in the index after this many…
const NAME_EVERY_FILES: usize = 256;

/// …or after this long, whichever comes first.
const NAME_EVERY: std::time::Duration = std::time::Duration::from_secs(30);

/// A folder's put sends up to this many files at once…
const FILES_AT_ONCE: usize = 8;

/// …while they hold at most this many bytes together (a larger file goes alone).
const FILE_BYTES_AT_ONCE: u64 = 32 << 20;

/// One file of a folder to put: where it is, the name it is stored under, its size.
struct FolderFile {
    path: PathBuf,
    name: String,
    size: u64,
}

/// What a folder's walk left out, and why.
type LeftOut = Vec<(PathBuf, &'static str)>;

/// The regular files under `dir`, each named `prefix/` and its path there, by name; and
/// what is left out (links, devices, names that are not UTF-8 or not an object's).
fn files_under(dir: &Path, prefix: &str) -> anyhow::Result<(Vec<FolderFile>, LeftOut)> {
    let mut files = Vec::new();
    let mut left = Vec::new();
    let mut folders = vec![(dir.to_path_buf(), prefix.to_string())];
    while let Some((folder, named)) = folders.pop() {
        let entries = std::fs::read_dir(&folder)
            .with_context(|| format!("cannot read the folder {}", folder.display()))?;
        for entry in entries {
            let entry =
                entry.with_context(|| format!("cannot read the folder {}", folder.display()))?;
            let path = entry.path();
            let Some(part) = entry.file_name().to_str().map(str::to_string) else {
                left.push((path, "its name is not UTF-8"));
                continue;
            };
            let name = format!("{named}/{part}");
            // Not followed: a link may lead out of the folder, or round in a loop.
            let kind = entry
                .file_type()
                .with_context(|| format!("cannot read {}", path.display()))?;
            if kind.is_dir() {
                folders.push((path, name));
            } else if kind.is_file() {
                let size = entry
                    .metadata()
                    .with_context(|| format!("cannot read {}", path.display()))?
                    .len();
                files.push(FolderFile { path, name, size });
            } else if kind.is_symlink() {
                left.push((path, "a symbolic link (not followed)"));
            } else {
                left.push((path, "not a regular file"));
            }
        }
    }
    // Every name is checked before anything is sent.
    files.retain(|f| match peergrid_storage::format::check_name(&f.name) {
        Ok(()) => true,
        Err(_) => {
            left.push((
                f.path.clone(),
                "its name cannot be an object's (a control character, or too long)",
            ));
            false
        }
    });
    files.sort_by(|a, b| a.name.cmp(&b.name));
    Ok((files, left))
}

/// `store put FOLDER [PREFIX]`: each file in turn, stopping at the first that fails.
async fn put_folder(
    globals: &Globals,
    storage: &Storage,
    dir: &Path,
    prefix: Option<String>,
    scheme: Option<Scheme>,
) -> anyhow::Result<()> {
    // The folder's name as given (a link keeps its own name); `.` or `..` by where it is.
    let named = |d: &Path| d.file_name().and_then(|n| n.to_str()).map(str::to_string);
    let prefix = match prefix {
        Some(p) => p.trim_end_matches('/').to_string(),
        None => named(dir)
            .or_else(|| std::fs::canonicalize(dir).ok().as_deref().and_then(named))
            .unwrap_or_default(),
    };
    if prefix.is_empty() {
        bail!(
            "give the name the folder's files are stored under: peergrid store put {} NAME",
            dir.display()
        );
    }
    // A prefix no name may start with (`./photos`, `a//b`) is said once, not per file.
    if let Err(e) = peergrid_storage::format::check_name(&format!("{prefix}/f")) {
        bail!("the folder's files cannot be named under {prefix:?}: {e}");
    }
    let (files, left) = files_under(dir, &prefix)?;
    for (path, why) in &left {
        // Escaped: a file name may hold control characters a terminal would act on.
        let shown = path.display().to_string();
        eprintln!("left out {}: {why}", shown.escape_debug());
    }
    if files.is_empty() {
        bail!("{} holds no file to store", dir.display());
    }
    let total: u64 = files.iter().map(|f| f.size).sum();
    let bar = output::files_bar(globals, total);
    let started = std::time::Instant::now();
    let session = storage.put_session().await?;
    // Files go up several at once.
    let through = FilesThrough::new(&bar, files.len());
    let put_one = |i: usize| {
        let (f, session, through) = (&files[i], &session, &through);
        async move {
            let put = storage
                .put_unnamed(session, &f.path, &f.name, scheme, &|n| through.at(i, n))
                .await;
            through.at(i, f.size);
            (i, put)
        }
    };
    let mut reports = Vec::new();
    let mut unnamed: Vec<peergrid_storage::client::Unnamed> = Vec::new();
    let mut named_at = std::time::Instant::now();
    let mut failed: Option<(usize, peergrid_storage::StorageError)> = None;
    let mut in_flight = futures::stream::FuturesUnordered::new();
    let (mut next, mut in_flight_bytes) = (0, 0u64);
    loop {
        // The index is read and written once for many files, not once each (it holds
        // every name: once each, a folder of n files would move it n times), and often
        // enough that a put cut short leaves little stored but unlisted. Files under way
        // finish first: a stream left unread while the index changes would time out.
        let due = !unnamed.is_empty()
            && (unnamed.len() >= NAME_EVERY_FILES || named_at.elapsed() >= NAME_EVERY);
        let ending = failed.is_some() || next == files.len();
        if in_flight.is_empty() && !unnamed.is_empty() && (due || ending) {
            let batch = std::mem::take(&mut unnamed);
            let count = batch.iter().filter(|u| !u.report.unchanged).count();
            if let Err(e) = storage
                .name_puts(&session, batch)
                .await
                .map(|r| reports.extend(r))
            {
                bar.finish_and_clear();
                if let Some((i, failed)) = &failed {
                    eprintln!("{} was not stored: {failed}", files[*i].path.display());
                }
                bail!(
                    "the last {count} file(s) stored were not listed in your index: {e}; {} other file(s) of {} are. Run the same command again: what is on your nodes already is not sent again",
                    reports.len(),
                    files.len()
                );
            }
            named_at = std::time::Instant::now();
            continue;
        }
        // Small files several at once (each is a few round trips more than bytes), a
        // large one alone: its segments already keep every node busy. Each file checks
        // its room without the others under way, so near a full reservation a node may
        // refuse a shard part way (its quota holds): that file fails and the put stops.
        while !due
            && failed.is_none()
            && next < files.len()
            && may_start(in_flight.len(), in_flight_bytes, files[next].size)
        {
            bar.set_message(files[next].name.clone());
            in_flight_bytes += files[next].size;
            in_flight.push(put_one(next));
            next += 1;
        }
        let Some((i, put)) = futures::StreamExt::next(&mut in_flight).await else {
            break;
        };
        in_flight_bytes -= files[i].size;
        match put {
            Ok(up) => unnamed.push(up),
            Err(e) if failed.is_some() => {
                eprintln!("{} was not stored either: {e}", files[i].path.display());
            }
            Err(e) => failed = Some((i, e)),
        }
    }
    if let Some((i, e)) = failed {
        bar.finish_and_clear();
        bail!(
            "{} was not stored: {e}; {} other file(s) of {} are. Run the same command again: what is stored already is not sent again",
            files[i].path.display(),
            reports.len(),
            files.len()
        );
    }
    // Named in batches as they finished: listed by name.
    reports.sort_by(|a, b| a.name.cmp(&b.name));
    bar.finish_and_clear();
    let secs = started.elapsed().as_secs_f64();
    if globals.json {
        let objects: Vec<Value> = reports
            .iter()
            .map(|r| {
                json!({
                    "name": r.name,
                    "capability": r.capability.to_string(),
                    "size": r.size,
                    "scheme": r.scheme.to_string(),
                    "unchanged": r.unchanged,
                    "replaced": r.replaced,
                    "shards_sent": r.shards_sent,
                })
            })
            .collect();
        let left: Vec<Value> = left
            .iter()
            .map(|(p, why)| json!({ "path": p.display().to_string(), "reason": why }))
            .collect();
        return output::json(&json!({
            "prefix": prefix,
            "objects": objects,
            "left_out": left,
            "bytes": total,
            "seconds": secs,
        }));
    }
    let rows: Vec<Vec<String>> = reports
        .iter()
        .map(|r| {
            let result = match (r.unchanged, r.replaced) {
                (true, _) => "unchanged",
                (false, true) => "stored, replacing the object of that name",
                (false, false) => "stored",
            };
            vec![r.name.clone(), human_bytes(r.size), result.to_string()]
        })
        .collect();
    output::table(&["NAME", "SIZE", "RESULT"], &rows);
    let unchanged = reports.iter().filter(|r| r.unchanged).count();
    outln!(
        "{} file(s), {} in {secs:.1} s; {unchanged} unchanged. `peergrid store get {prefix}/ FOLDER` fetches them all",
        reports.len(),
        human_bytes(total),
    );
    Ok(())
}

/// `store get PREFIX/ [FOLDER]`: every object under `prefix/` into `FOLDER` (default:
/// the prefix's last part), at its path after the prefix. An object that cannot be read
/// is named, and the others are still fetched.
async fn get_folder(
    globals: &Globals,
    storage: &Storage,
    index: &peergrid_storage::Index,
    prefix: &str,
    out: Option<PathBuf>,
) -> anyhow::Result<()> {
    let folder = match out {
        Some(out) => out,
        None => PathBuf::from(last_part(prefix).with_context(|| {
            format!("{prefix:?} ends in no folder name: give the folder to write into")
        })?),
    };
    if peergrid_storage::client::writes_to_stdout(&folder) {
        bail!(
            "{prefix}/ is a folder of objects: give a folder to write them into, not standard output"
        );
    }
    if folder.exists() && !folder.is_dir() {
        bail!(
            "{} is a file: give a folder to write the objects under {prefix}/ into",
            folder.display()
        );
    }
    let under = format!("{prefix}/");
    let mut wanted = Vec::new();
    let mut failed: Vec<(String, String)> = Vec::new();
    for (name, entry) in index.starting_with(&under) {
        match path_in_folder(prefix, name) {
            Some(rel) => wanted.push((name, entry, folder.join(rel))),
            None => failed.push((
                name.clone(),
                "its name cannot be a path in a folder (an empty part, `.` or `..`): get it alone by its capability, `peergrid store share NAME` then `peergrid store get CAPABILITY FILE`".into(),
            )),
        }
    }
    // `p/a` and `p/a/b` cannot both be on disk: `a` would be a file and a folder. The
    // folder wins (it holds more), and the file is named, with how to get it.
    let folders: std::collections::HashSet<PathBuf> = (wanted.iter())
        .flat_map(|(_, _, path)| path.ancestors().skip(1).map(Path::to_path_buf))
        .collect();
    wanted.retain(|(name, _, path)| {
        let clash = folders.contains(path);
        if clash {
            failed.push((
                (*name).clone(),
                format!(
                    "{} is also the folder of other objects under {name}/: get it alone, `peergrid store get {name} FILE`",
                    path.display()
                ),
            ));
        }
        !clash
    });
    if wanted.is_empty() && failed.is_empty() {
        bail!("no object's name starts with {under:?} (see `peergrid store ls`)");
    }
    let total: u64 = wanted.iter().map(|(_, e, _)| e.size).sum();
    // Every object here is the owner's: their nodes are read from the ledger once.
    let holdings = storage.reached_holdings(storage.owner()).await?;
    let holdings = &holdings;
    let bar = output::files_bar(globals, total);
    let started = std::time::Instant::now();
    let through = FilesThrough::new(&bar, wanted.len());
    let get_one = |i: usize| {
        let ((_, entry, path), through) = (&wanted[i], &through);
        async move {
            let fetched = async {
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent)
                        .with_context(|| format!("cannot make the folder {}", parent.display()))?;
                }
                let manifest = storage.open_among(&entry.capability, holdings).await?;
                // A folder fetched before: what it holds already is not fetched again.
                if storage.holds_already(&manifest, path).await {
                    return anyhow::Ok(None);
                }
                let written = storage
                    .get_opened(&entry.capability, &manifest, holdings, path, None, &|n| {
                        through.at(i, n)
                    })
                    .await?;
                anyhow::Ok(Some(written))
            }
            .await;
            through.at(i, entry.size);
            (i, fetched)
        }
    };
    // Like a folder's put: small objects several at once, a large one alone. A get
    // writes into FILE.partial until it is whole: with an object of such a name among
    // them, one at a time, so that no two share one.
    let together = !wanted.iter().any(|(name, _, _)| name.contains(".partial"));
    let mut got: Vec<(String, PathBuf, Option<Got>)> = Vec::new();
    let mut in_flight = futures::stream::FuturesUnordered::new();
    let (mut next, mut in_flight_bytes) = (0, 0u64);
    loop {
        while next < wanted.len()
            && (together || in_flight.is_empty())
            && may_start(in_flight.len(), in_flight_bytes, wanted[next].1.size)
        {
            bar.set_message(wanted[next].0.clone());
            in_flight_bytes += wanted[next].1.size;
            in_flight.push(get_one(next));
            next += 1;
        }
        let Some((i, fetched)) = futures::StreamExt::next(&mut in_flight).await else {
            break;
        };
        let (name, entry, path) = &wanted[i];
        in_flight_bytes -= entry.size;
        match fetched {
            Ok(written) => got.push((name.to_string(), path.clone(), written)),
            Err(e) => failed.push((name.to_string(), format!("{e:#}"))),
        }
    }
    got.sort_by(|a, b| a.0.cmp(&b.0));
    failed.sort();
    bar.finish_and_clear();
    let secs = started.elapsed().as_secs_f64();
    let unchanged = got.iter().filter(|(_, _, w)| w.is_none()).count();
    let sizes: std::collections::HashMap<&str, u64> = wanted
        .iter()
        .map(|(n, e, _)| (n.as_str(), e.size))
        .collect();
    if globals.json {
        let objects: Vec<Value> = got
            .iter()
            .map(|(name, path, written)| {
                json!({
                    "name": name,
                    "out": path.display().to_string(),
                    "size": sizes.get(name.as_str()).copied().unwrap_or(0),
                    "bytes": written.map_or(0, |g| g.written),
                    "resumed_bytes": written.map_or(0, |g| g.resumed),
                    "unchanged": written.is_none(),
                })
            })
            .collect();
        let failed_json: Vec<Value> = failed
            .iter()
            .map(|(name, error)| json!({ "name": name, "error": error }))
            .collect();
        output::json(&json!({
            "prefix": prefix,
            "folder": folder.display().to_string(),
            "objects": objects,
            "unchanged": unchanged,
            "failed": failed_json,
            "seconds": secs,
        }))?;
    } else {
        let rows: Vec<Vec<String>> = got
            .iter()
            .map(|(name, path, written)| {
                vec![
                    name.clone(),
                    path.display().to_string(),
                    human_bytes(sizes.get(name.as_str()).copied().unwrap_or(0)),
                    if written.is_some() {
                        "fetched"
                    } else {
                        "unchanged"
                    }
                    .to_string(),
                ]
            })
            .collect();
        output::table(&["NAME", "WRITTEN TO", "SIZE", "RESULT"], &rows);
        // Bytes an interrupted get had written already were not fetched in this time.
        let (bytes, resumed) = got
            .iter()
            .filter_map(|(_, _, w)| *w)
            .fold((0u64, 0u64), |(b, r), g| {
                (b + g.written - g.resumed, r + g.resumed)
            });
        let resumed = match resumed {
            0 => String::new(),
            r => format!(", going on after the {} written before", human_bytes(r)),
        };
        outln!(
            "{} object(s), {} fetched in {secs:.1} s{resumed}; {unchanged} unchanged (the file there holds them already)",
            got.len(),
            human_bytes(bytes)
        );
        for (name, error) in &failed {
            eprintln!("{name}: not fetched: {error}");
        }
    }
    if !failed.is_empty() {
        bail!(
            "{} of {} objects under {prefix}/ were not fetched (see above)",
            failed.len(),
            failed.len() + got.len()
        );
    }
    Ok(())
}

/// A bar over files under way together: each one's bytes so far, added up.
struct FilesThrough<'a> {
    /// The bar, over the bytes of all the files.
    bar: &'a indicatif::ProgressBar,
    /// Each file's bytes so far.
    seen: Vec<AtomicU64>,
    /// All of them.
    moved: AtomicU64,
}

impl<'a> FilesThrough<'a> {
    /// For `files` files, none begun.
    fn new(bar: &'a indicatif::ProgressBar, files: usize) -> Self {
        FilesThrough {
            bar,
            seen: (0..files).map(|_| AtomicU64::new(0)).collect(),
            moved: AtomicU64::new(0),
        }
    }

    /// File `i` is `n` bytes through.
    fn at(&self, i: usize, n: u64) {
        let more = n.saturating_sub(self.seen[i].swap(n, Ordering::Relaxed));
        let moved = self.moved.fetch_add(more, Ordering::Relaxed) + more;
        self.bar.set_position(moved);
    }
}

/// Whether a file of `size` bytes may start beside `count` files of `bytes` together
/// under way: up to [`FILES_AT_ONCE`] within [`FILE_BYTES_AT_ONCE`], a larger one alone.
fn may_start(count: usize, bytes: u64, size: u64) -> bool {
    count < FILES_AT_ONCE && (count == 0 || bytes + size <= FILE_BYTES_AT_ONCE)
}

/// `peergrid bench storage`: reserves what it needs on the running grid, puts and gets
/// one object, and prints both rates next to the in-memory pipeline's.
pub fn bench(globals: &Globals, size: u64, scheme: Option<Scheme>) -> anyhow::Result<()> {
    crate::runtime()?.block_on(async {
        let storage = connect(globals).await?;
        let holdings = storage.holdings(storage.owner()).await?;
        let nodes = holdings
            .iter()
            .map(|h| h.node)
            .collect::<std::collections::HashSet<_>>()
            .len();
        let k = u64::from(scheme.unwrap_or_else(|| Scheme::for_nodes(nodes.max(1))).k);
        // Room for the object and one put's overhead on every node, unless already there.
        let need = size / k.max(1) + (size / 8) + (64 << 20);
        let used: u64 = storage
            .usage(&holdings)
            .await
            .into_iter()
            .flatten()
            .max()
            .unwrap_or(0);
        if holdings.iter().all(|h| h.quota < need + used) {
            eprintln!(
                "reserving {} on 5 nodes for the benchmark …",
                human_bytes(need)
            );
            storage.reserve(need, NodeChoice::Count(5)).await?;
        }
        eprintln!("putting and getting {} …", human_bytes(size));
        let bar = output::bytes_bar(globals, size);
        let r = storage.bench(size, scheme, &|n| bar.set_position(n)).await;
        storage.close().await;
        let r = r?;
        bar.finish_and_clear();
        if globals.json {
            return output::json(&r);
        }
        let mb = |v: f64| format!("{:.1} MB/s", v / 1e6);
        let cpu = |secs: Option<f64>| match secs {
            // The system counts CPU time in hundredths of a second.
            Some(s) if s < 0.01 => "under 0.01 s".into(),
            Some(s) => format!("{s:.2} s ({:.2}×)", r.ceiling_aes_secs / s),
            None => "unknown".into(),
        };
        // The client's CPU time says what the client alone costs per byte: on one
        // machine it shares the cores with the nodes it sends to, on a grid it does not.
        output::table(
            &[
                "WHAT",
                "RATE",
                "VS PIPELINE (AES-GCM)",
                "CLIENT CPU (PIPELINE'S / IT)",
            ],
            &[
                vec![
                    "pipeline alone, AES-256-GCM, 1 core (baseline)".into(),
                    mb(r.ceiling_aes_per_sec),
                    "1.00×".into(),
                    cpu(Some(r.ceiling_aes_secs)),
                ],
                vec![
                    "pipeline alone, ChaCha20-Poly1305, 1 core".into(),
                    mb(r.ceiling_chacha_per_sec),
                    format!("{:.2}×", r.ceiling_chacha_per_sec / r.ceiling_aes_per_sec),
                    String::new(),
                ],
                vec![
                    format!("put {} ({})", human_bytes(r.bytes), r.scheme),
                    mb(r.put_per_sec),
                    format!("{:.2}×", r.put_per_sec / r.ceiling_aes_per_sec),
                    cpu(r.put_cpu_secs),
                ],
                vec![
                    format!("get {} ({})", human_bytes(r.bytes), r.scheme),
                    mb(r.get_per_sec),
                    format!("{:.2}×", r.get_per_sec / r.ceiling_aes_per_sec),
                    cpu(r.get_cpu_secs),
                ],
            ],
        );
        if let Some(kind) = &r.files_on {
            outln!(
                "The object was read from and written to {kind} ({}).",
                std::env::temp_dir().display()
            );
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_have_both_ends_or_run_to_the_end() {
        assert_eq!(
            parse_range("0-1048576").expect("both"),
            (0, Some(1_048_576))
        );
        assert_eq!(parse_range("100-").expect("open"), (100, None));
        for bad in ["-5", "a-b", "100", "5-1"] {
            let e = parse_range(bad).expect_err(bad).to_string();
            assert!(
                e.contains("START-END") || e.contains("before the start"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn instance_memory_is_what_a_node_gives_one_instance() {
        assert_eq!(
            crate::app::instance_memory("256MiB").expect("fits").bytes(),
            256 << 20
        );
        let e = crate::app::instance_memory("5GiB").expect_err("too much");
        assert!(e.contains("1.0 GiB or less"), "{e}");
        let e = crate::app::instance_memory("1KiB").expect_err("too little");
        assert!(e.contains("64.0 KiB or more"), "{e}");
    }

    #[test]
    fn ages_parse_in_the_units_the_help_names_and_print_back_alike() {
        for (text, secs, shown) in [
            ("0s", 0, "0s"),
            ("30s", 30, "30s"),
            ("15m", 900, "15m"),
            ("24h", 86_400, "24h"),
            ("48h", 172_800, "2d"),
            ("36h", 129_600, "36h"),
            ("7d", 604_800, "7d"),
        ] {
            let age = parse_age(text).expect(text);
            assert_eq!(age.as_secs(), secs, "{text}");
            assert_eq!(human_age(age), shown, "{text}");
        }
        assert_eq!(human_age(std::time::Duration::from_secs(90)), "90s");
        for bad in ["", "24", "h", "5x", "-1h", "1.5h", "99999999999999999999d"] {
            assert!(parse_age(bad).is_err(), "{bad:?} was taken");
        }
        let overflow = format!("{}d", u64::MAX / 2);
        assert!(parse_age(&overflow).is_err());
    }

    fn index_of(names: &[&str]) -> peergrid_storage::Index {
        let entry = peergrid_storage::IndexEntry {
            capability: Capability {
                owner: peergrid_core::AccountId([1; 32]),
                manifest: peergrid_core::hash::Hash([2; 32]),
                key: [3; 32],
                cipher: peergrid_storage::Cipher::Aes256Gcm,
            },
            size: 1,
            created_ms: 0,
            scheme: Scheme { k: 3, m: 2 },
        };
        peergrid_storage::Index {
            objects: names
                .iter()
                .map(|n| (n.to_string(), entry.clone()))
                .collect(),
        }
    }

    #[test]
    fn a_prefix_names_a_folder_only_when_no_object_has_that_exact_name() {
        let index = index_of(&[
            "photos/a.jpg",
            "photos/b/c.jpg",
            "photosx",
            "notes",
            "notes/1",
        ]);
        assert_eq!(folder_named(&index, "photos"), Some("photos"));
        assert_eq!(folder_named(&index, "photos/"), Some("photos"));
        assert_eq!(folder_named(&index, "photos/b"), Some("photos/b"));
        // An object of that exact name is the object; its folder needs the slash.
        assert_eq!(folder_named(&index, "notes"), None);
        assert_eq!(folder_named(&index, "notes/"), Some("notes"));
        // `photosx` is not under `photos/`, nor `photo` a folder.
        assert_eq!(folder_named(&index, "photo"), None);
        assert_eq!(folder_named(&index, "photosx"), None);
        assert_eq!(folder_named(&index, "/"), None);
        // An object named with a slash at the end before such names were refused is
        // still read by its name, unless objects are under it too.
        let old = index_of(&["old/", "both/", "both/x"]);
        assert_eq!(folder_named(&old, "old/"), None);
        assert_eq!(folder_named(&old, "both/"), Some("both"));
    }

    #[test]
    fn an_object_lands_at_its_path_under_the_prefix_and_never_outside_the_folder() {
        assert_eq!(
            path_in_folder("photos", "photos/2026/cat.jpg"),
            Some(PathBuf::from("2026").join("cat.jpg"))
        );
        for escaping in [
            "photos/../etc/passwd",
            "photos/a/../../b",
            "photos//abs",
            "photos/./a",
            "photos/",
            "photos/a/",
            "photosx/a",
            "photos",
            "photos/a\0b",
        ] {
            assert_eq!(path_in_folder("photos", escaping), None, "{escaping:?}");
        }
        assert_eq!(last_part("photos/cat.jpg"), Some("cat.jpg"));
        assert_eq!(last_part("photos/"), None);
        assert_eq!(last_part("photos/.."), None);
    }

    #[test]
    fn a_folder_is_walked_into_names_under_its_prefix_leaving_links_and_odd_names_out() {
        use std::os::unix::ffi::OsStrExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        std::fs::create_dir_all(root.join("b/c")).expect("mkdir");
        std::fs::create_dir(root.join("empty")).expect("mkdir");
        std::fs::write(root.join("a.txt"), b"12345").expect("write");
        std::fs::write(root.join("b/c/d.bin"), b"xy").expect("write");
        std::os::unix::fs::symlink("/etc", root.join("link")).expect("symlink");
        let not_utf8 = std::ffi::OsStr::from_bytes(b"bad\xff");
        std::fs::write(root.join(not_utf8), b"?").expect("write");
        std::fs::write(root.join("Icon\r"), b"?").expect("write");
        let (files, mut left) = files_under(root, "up").expect("walk");
        let named: Vec<(&str, u64)> = files.iter().map(|f| (f.name.as_str(), f.size)).collect();
        assert_eq!(named, [("up/a.txt", 5), ("up/b/c/d.bin", 2)]);
        assert_eq!(files[1].path, root.join("b/c/d.bin"));
        left.sort();
        let left: Vec<&Path> = left.iter().map(|(p, _)| p.as_path()).collect();
        assert_eq!(
            left,
            [root.join("Icon\r"), root.join(not_utf8), root.join("link")]
        );
        // What a put names, a get writes back to the same place.
        for f in &files {
            let rel = path_in_folder("up", &f.name).expect("a path");
            assert_eq!(root.join(rel), f.path);
        }
    }
}
