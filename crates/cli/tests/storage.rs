//! Storage as a new user would use it, on a real devnet (four validators, five node
//! processes in two farms, real mesh connections, real files on the nodes' disks):
//! reserve, put, get back byte-identical with two nodes gone, a corrupted shard caught
//! and its node failing audits, a capability read by another account, a put too large
//! refused before anything moves, an interrupted put that lists nothing and resumes, and
//! every object recovered on a fresh home directory from the 24 words alone.

mod common;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// Nodes in the test's devnet: five for a 3+2 object, two spare for repair.
const NODES: usize = 7;

/// A devnet with [`NODES`] nodes, stopped when dropped; once every node is up.
fn full_devnet(home: &Path, base_port: u16) -> Proc {
    let child = peergrid(home)
        .args(["devnet", "--base-port", &base_port.to_string()])
        .args(["--nodes", &NODES.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start devnet");
    let proc = Proc(child);
    all_up(home);
    proc
}

/// Wait until every node of the devnet is listed up.
fn all_up(home: &Path) {
    wait_for("every node up", Duration::from_secs(240), || {
        let (ok, list, _) = run(home, &["node", "list"]);
        let up = list["nodes"]
            .as_array()
            .map(|n| n.iter().filter(|n| n["status"] == "up").count())
            .unwrap_or(0);
        (ok && up == NODES).then_some(())
    });
}

/// The storage contracts node `i` keeps a folder for:
/// `<its --disk path>/peergrid-shards/<peer>/<contract>`.
fn contracts_on(home: &Path, i: usize) -> Vec<u64> {
    let root = home.join(format!("devnet/nodes/node-{i}/peergrid-shards"));
    std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .flat_map(|p| std::fs::read_dir(p.path()).into_iter().flatten().flatten())
        .filter_map(|c| c.file_name().to_str()?.parse::<u64>().ok())
        .collect()
}

/// Node `i`'s shard files: `<its --disk path>/peergrid-shards/<peer>/<contract>/shards/*`
/// (the devnet's disk path is the node's folder), without those moved aside.
fn node_shards(home: &Path, i: usize) -> Vec<PathBuf> {
    let list = |p: &Path| -> Vec<PathBuf> {
        std::fs::read_dir(p)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .collect()
    };
    let root = home.join(format!("devnet/nodes/node-{i}/peergrid-shards"));
    list(&root)
        .iter()
        .flat_map(|peer| list(peer))
        .flat_map(|contract| list(&contract.join("shards")))
        .filter(|s| {
            !s.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        })
        .collect()
}

/// The devnet nodes (by index) that hold shards now.
fn holders(home: &Path) -> Vec<usize> {
    (0..NODES)
        .filter(|&i| !node_shards(home, i).is_empty())
        .collect()
}

/// The pids of the devnet's node `i`.
fn node_pids(home: &Path, i: usize) -> Vec<i32> {
    let dir = home.join(format!("devnet/nodes/node-{i}"));
    let dir = dir.to_string_lossy().to_string();
    pids_where(|args| args.iter().any(|a| a == "node") && args.iter().any(|a| a == &dir))
}

fn signal(pids: &[i32], sig: &str) {
    for pid in pids {
        let _ = std::process::Command::new("kill")
            .args([sig, &pid.to_string()])
            .status();
    }
}

/// Resumes frozen nodes when the test ends, pass or fail, so the devnet can stop.
struct Frozen(Vec<i32>);

impl Drop for Frozen {
    fn drop(&mut self) {
        signal(&self.0, "-CONT");
    }
}

fn ok(home: &Path, args: &[&str]) -> Value {
    let (ok, v, err) = run(home, args);
    assert!(ok, "peergrid {args:?} failed: {err}");
    v
}

/// `peergrid [BEFORE…] store get NAME OUT` from `home`, and the bytes it wrote to OUT.
fn got(home: &Path, before: &[&str], name: &str, out: &Path) -> Vec<u8> {
    let mut args = before.to_vec();
    args.extend(["store", "get", name, out.to_str().expect("utf8")]);
    ok(home, &args);
    std::fs::read(out).expect("read")
}

fn shard_files(home: &Path) -> Vec<PathBuf> {
    (0..NODES).flat_map(|i| node_shards(home, i)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_survive_lost_and_lying_nodes_are_shared_and_come_back_from_the_words() {
    let dir = tempfile::tempdir().expect("tempdir");
    let home = dir.path().join("alice");
    std::fs::create_dir_all(&home).expect("home");
    let h = home.clone();
    let base = base_port(23_000);
    let _devnet = tokio::task::spawn_blocking(move || full_devnet(&h, base))
        .await
        .expect("join");
    let apis: Vec<String> = serde_json::from_slice::<Value>(
        &std::fs::read(home.join("devnet/devnet.json")).expect("devnet.json"),
    )
    .map(|v| serde_json::from_value(v["apis"].clone()).expect("apis"))
    .expect("json");
    let ledger = apis.join(",");
    let liar = lying_ledger(apis[0].clone()).await;

    let home2 = home.clone();
    let ledger2 = ledger.clone();
    tokio::task::spawn_blocking(move || {
        let home = home2;
        // Alice makes a key, writes down her words, and is funded by the demo account.
        let key = ok(&home, &["key", "new"]);
        let words = key["mnemonic"].as_str().expect("mnemonic").to_string();
        let alice = key["account"].as_str().expect("account").to_string();
        let demo = home.join("devnet/keys/demo.json");
        let demo = demo.to_str().expect("utf8");
        ok(
            &home,
            &[
                "--key", demo, "wallet", "transfer", "--to", &alice, "--amount", "100000",
            ],
        );

        // No reservation yet: a clear error.
        let file = home.join("report.bin");
        let data = random_file(&file, 9 * 1024 * 1024 + 123, 7);
        let (done, _, err) = run(
            &home,
            &[
                "store",
                "put",
                file.to_str().expect("utf8"),
                "docs/report.bin",
            ],
        );
        assert!(!done);
        assert!(err.contains("peergrid store reserve"), "{err}");

        let reserved = ok(
            &home,
            &["store", "reserve", "--size", "256MiB", "--nodes", "5"],
        );
        assert_eq!(
            reserved["contracts"].as_array().map(Vec::len),
            Some(5),
            "{reserved}"
        );

        let put = ok(
            &home,
            &[
                "store",
                "put",
                file.to_str().expect("utf8"),
                "docs/report.bin",
            ],
        );
        assert_eq!(put["scheme"], "3+2", "{put}");
        let cap = put["capability"].as_str().expect("capability").to_string();
        assert!(cap.starts_with("pg1"));
        // A name a folder's get could not write as a path is refused before anything is sent.
        for unsafe_name in ["../up", "docs//x", "/etc/x"] {
            let (stored, _, err) = run(
                &home,
                &["store", "put", file.to_str().expect("utf8"), unsafe_name],
            );
            assert!(!stored && err.contains("an empty part"), "{unsafe_name}: {err}");
        }
        let ls = ok(&home, &["store", "ls"]);
        assert_eq!(ls["objects"][0]["name"], "docs/report.bin", "{ls}");
        assert_eq!(ls["objects"][0]["size"], data.len() as u64);

        let out = home.join("back.bin");
        assert!(
            got(&home, &[], "docs/report.bin", &out) == data,
            "read back differs"
        );
        // Got again into the file that holds it: left as it is, nothing fetched. Got by its
        // capability (another's object, whose keys are not ours to compare): fetched.
        let before = std::fs::metadata(&out).and_then(|m| m.modified()).expect("mtime");
        let again = ok(&home, &["store", "get", "docs/report.bin", out.to_str().expect("utf8")]);
        assert_eq!(again["unchanged"], true, "{again}");
        assert_eq!(again["bytes"], 0, "{again}");
        assert_eq!(again["size"], data.len() as u64, "{again}");
        let after = std::fs::metadata(&out).and_then(|m| m.modified()).expect("mtime");
        assert_eq!(before, after, "an unchanged file is not written");
        let by_cap = ok(&home, &["store", "get", &cap, out.to_str().expect("utf8")]);
        assert_eq!(by_cap["unchanged"], false, "{by_cap}");
        assert_eq!(by_cap["bytes"], data.len() as u64, "{by_cap}");
        // A file of the same size but other bytes is fetched again and put right.
        let mut changed = data.clone();
        changed[data.len() / 2] ^= 1;
        std::fs::write(&out, &changed).expect("write");
        let fixed = ok(&home, &["store", "get", "docs/report.bin", out.to_str().expect("utf8")]);
        assert_eq!(fixed["unchanged"], false, "{fixed}");
        assert!(std::fs::read(&out).expect("read") == data, "put right");

        // With the genesis's three mesh bootstrap peers (nodes 0, 1, 2) stopped, a new
        // command finds no node through the DHT; it dials the others where the last
        // command reached them (storage/peers.json).
        assert!(home.join("storage/peers.json").exists());
        {
            let _bootstraps_stopped = Frozen(
                (0..3)
                    .flat_map(|i| node_pids(&home, i))
                    .inspect(|p| signal(&[*p], "-STOP"))
                    .collect(),
            );
            let ls = ok(&home, &["store", "ls"]);
            assert_eq!(ls["objects"][0]["name"], "docs/report.bin", "{ls}");
        }
        // A validator that names another key for the owner's nodes (to have shards and
        // the index pointer sent to a peer of its choosing) is caught by the proofs.
        let (lied_to, _, err) = run(&home, &["--ledger", &liar, "store", "ls"]);
        assert!(!lied_to, "a storage command trusted a lying validator");
        assert!(
            err.contains("its proof says") && err.contains("--ledger"),
            "{err}"
        );

        // A byte range.
        let part = home.join("part.bin");
        ok(
            &home,
            &[
                "store",
                "get",
                "docs/report.bin",
                part.to_str().expect("utf8"),
                "--range",
                "4194000-4194400",
            ],
        );
        assert!(std::fs::read(&part).expect("read") == data[4_194_000..4_194_400]);

        // Through a link to a file: the file gets the object, the link stays a link.
        let real = home.join("real.bin");
        let link = home.join("link.bin");
        std::fs::write(&real, b"old").expect("write");
        std::os::unix::fs::symlink(&real, &link).expect("symlink");
        assert!(got(&home, &[], "docs/report.bin", &link) == data);
        assert!(
            std::fs::symlink_metadata(&link)
                .expect("link")
                .file_type()
                .is_symlink()
        );
        assert!(std::fs::read(&real).expect("read") == data);

        // Into a pipe, which is written straight (not replaced by a renamed file), and not
        // into a folder.
        let fifo = home.join("pipe");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .expect("mkfifo");
        assert!(made.success());
        let reader = {
            let fifo = fifo.clone();
            std::thread::spawn(move || std::fs::read(fifo).expect("read the pipe"))
        };
        ok(
            &home,
            &[
                "store",
                "get",
                "docs/report.bin",
                fifo.to_str().expect("utf8"),
            ],
        );
        assert!(
            std::os::unix::fs::FileTypeExt::is_fifo(
                &std::fs::metadata(&fifo).expect("pipe").file_type()
            ),
            "the pipe is still a pipe"
        );
        // Only now: had the pipe been replaced, its reader would wait forever.
        assert!(
            reader.join().expect("reader") == data,
            "read through a pipe"
        );
        // To standard output (`-`): the object's bytes only; what the command says goes
        // to stderr.
        let piped = peergrid(&home)
            .args(["--json", "store", "get", "docs/report.bin", "-"])
            .output()
            .expect("run peergrid");
        assert!(piped.status.success());
        assert!(piped.stdout == data, "stdout carries exactly the object");
        assert!(String::from_utf8_lossy(&piped.stderr).contains("\"bytes\""));
        // Standard output open on a file for appending (a shell's `>>`): written where
        // the shell's file stands, not from byte 0 of a reopened /dev/stdout.
        let appended = home.join("appended.bin");
        std::fs::write(&appended, b"HEAD").expect("write");
        let file = std::fs::OpenOptions::new()
            .append(true)
            .open(&appended)
            .expect("open");
        let status = peergrid(&home)
            .args(["store", "get", "docs/report.bin", "-"])
            .stdout(file)
            .stderr(Stdio::null())
            .status()
            .expect("run peergrid");
        assert!(status.success());
        let back = std::fs::read(&appended).expect("read");
        assert!(back[..4] == *b"HEAD" && back[4..] == data[..], "appended");
        // A plain file under /dev (tmpfs in /dev/shm) is a file like any other: an older,
        // longer one there is replaced whole, not written over with its tail left.
        if Path::new("/dev/shm").is_dir() {
            let shm = PathBuf::from(format!("/dev/shm/peergrid-get-{}.bin", std::process::id()));
            std::fs::write(&shm, vec![9u8; data.len() + 4096]).expect("write");
            let back = got(&home, &[], "docs/report.bin", &shm);
            let _ = std::fs::remove_file(&shm);
            assert!(back == data, "a get into /dev/shm kept the old file's tail");
        }
        // Into a folder given, as `cp` does: under the name's last part.
        let into = home.join("into");
        std::fs::create_dir(&into).expect("mkdir");
        ok(
            &home,
            &["store", "get", "docs/report.bin", into.to_str().expect("utf8")],
        );
        assert!(
            std::fs::read(into.join("report.bin")).expect("read") == data,
            "got into a folder differs"
        );

        // A folder goes up file by file under a prefix (links left out, empty files kept),
        // a second put of it sends nothing new, and `get PREFIX/ FOLDER` brings it back.
        let tree = home.join("tree");
        std::fs::create_dir_all(tree.join("sub/deeper")).expect("mkdir");
        let big = random_file(&tree.join("a.bin"), 5 * 1024 * 1024 + 7, 11);
        std::fs::write(tree.join("sub/b.txt"), b"hello tree").expect("write");
        std::fs::write(tree.join("sub/deeper/empty"), b"").expect("write");
        std::os::unix::fs::symlink(home.join("report.bin"), tree.join("link")).expect("symlink");
        let tree_arg = tree.to_str().expect("utf8");
        let first = ok(&home, &["store", "put", tree_arg, "trees/t1/"]);
        let names = |v: &Value, key: &str| -> Vec<String> {
            v[key]
                .as_array()
                .map(|o| o.iter().filter_map(|o| o["name"].as_str().map(String::from)).collect())
                .unwrap_or_default()
        };
        let stored = [
            "trees/t1/a.bin",
            "trees/t1/sub/b.txt",
            "trees/t1/sub/deeper/empty",
        ];
        assert_eq!(names(&first, "objects"), stored, "{first}");
        assert_eq!(first["left_out"][0]["path"], tree.join("link").to_str().expect("utf8"), "{first}");
        let again = ok(&home, &["store", "put", tree_arg, "trees/t1"]);
        assert!(
            again["objects"].as_array().is_some_and(|o| o.len() == 3
                && o.iter().all(|o| o["unchanged"] == true && o["shards_sent"] == 0)),
            "{again}"
        );
        // A name ending in `/` is a folder of objects: the file goes in under its own name;
        // a folder with nothing under it is said to be empty, not fetched as nothing.
        let into_notes = ok(&home, &["store", "put", &format!("{tree_arg}/sub/b.txt"), "notes/"]);
        assert_eq!(into_notes["name"], "notes/b.txt", "{into_notes}");
        ok(&home, &["store", "rm", "notes/b.txt"]);
        let (typo, _, err) = run(&home, &["store", "get", "trees/t9/", home.to_str().expect("utf8")]);
        assert!(!typo && err.contains("no object's name starts with"), "{err}");
        let back = home.join("tree-back");
        let fetched = ok(&home, &["store", "get", "trees/t1", back.to_str().expect("utf8")]);
        assert_eq!(names(&fetched, "objects"), stored, "{fetched}");
        assert!(std::fs::read(back.join("a.bin")).expect("read") == big, "a.bin differs");
        assert_eq!(std::fs::read(back.join("sub/b.txt")).expect("read"), b"hello tree");
        assert_eq!(std::fs::read(back.join("sub/deeper/empty")).expect("read"), b"");
        assert!(!back.join("link").exists());
        assert_eq!(fetched["unchanged"], 0, "{fetched}");
        // Again into the same folder: what it holds already is not fetched again, and a
        // file changed there since is put right.
        let mut changed = big.clone();
        changed[4 << 20] ^= 1;
        std::fs::write(back.join("a.bin"), &changed).expect("write");
        let kept_at = std::fs::metadata(back.join("sub/b.txt")).and_then(|m| m.modified()).expect("mtime");
        std::thread::sleep(Duration::from_millis(20));
        let synced = ok(&home, &["store", "get", "trees/t1/", back.to_str().expect("utf8")]);
        assert_eq!(
            std::fs::metadata(back.join("sub/b.txt")).and_then(|m| m.modified()).expect("mtime"),
            kept_at,
            "a file holding its object already was written again"
        );
        let unchanged: Vec<&str> = synced["objects"]
            .as_array()
            .map(|o| {
                o.iter()
                    .filter(|o| o["unchanged"] == true)
                    .filter_map(|o| o["name"].as_str())
                    .collect()
            })
            .unwrap_or_default();
        assert_eq!(unchanged, ["trees/t1/sub/b.txt", "trees/t1/sub/deeper/empty"], "{synced}");
        assert!(std::fs::read(back.join("a.bin")).expect("read") == big, "a.bin put right");
        // An object named as the folder of others (`trees/t1/sub` beside `trees/t1/sub/b.txt`)
        // cannot be a file there: it is named with how to get it, and the others come.
        ok(&home, &["store", "put", &format!("{tree_arg}/sub/b.txt"), "trees/t1/sub"]);
        let clash = home.join("tree-clash");
        let (all_got, v, err) = run(&home, &["store", "get", "trees/t1/", clash.to_str().expect("utf8")]);
        assert!(!all_got && err.contains("1 of 4 objects under trees/t1/ were not fetched"), "{err}");
        assert_eq!(v["failed"][0]["name"], "trees/t1/sub", "{v}");
        assert!(
            v["failed"][0]["error"].as_str().is_some_and(|e| e.contains("is also the folder of other objects")
                && e.contains("peergrid store get trees/t1/sub FILE")),
            "{v}"
        );
        assert_eq!(std::fs::read(clash.join("sub/b.txt")).expect("read"), b"hello tree");
        ok(&home, &["store", "rm", "trees/t1/sub"]);
        // A file that does not fit stops the folder's put; the files before it are listed.
        let too_big = std::fs::File::create(tree.join("zz-too-big")).expect("create");
        too_big.set_len(2 << 30).expect("sparse file");
        let (put_all, _, err) = run(&home, &["store", "put", tree_arg, "trees/t2"]);
        assert!(!put_all && err.contains("zz-too-big was not stored"), "{err}");
        let t2 = ok(&home, &["store", "ls", "trees/t2/"]);
        assert_eq!(
            names(&t2, "objects"),
            stored.map(|n| n.replace("/t1/", "/t2/")),
            "{t2}"
        );
        // `rm PREFIX/` removes every object under it; without the slash it only says so.
        let removed = ok(&home, &["store", "rm", "trees/t1/"]);
        assert_eq!(names(&removed, "removed"), stored, "{removed}");
        let (rm_folder, _, err) = run(&home, &["store", "rm", "trees/t2"]);
        assert!(!rm_folder && err.contains("store rm trees/t2/` removes the 3 object(s)"), "{err}");
        ok(&home, &["store", "rm", "trees/t2/"]);
        assert!(names(&ok(&home, &["store", "ls", "trees/"]), "objects").is_empty());

        // An interrupted download resumes after the segments it had written and synced:
        // they are not fetched again, the rest is. Bytes changed in the file since (a
        // marker) are found: the download starts over rather than hand them out as the
        // object. A resume state naming another object is not trusted either.
        let manifest = cap
            .parse::<peergrid_storage::Capability>()
            .expect("capability")
            .manifest;
        let seg = peergrid_storage::client::SEGMENT_BYTES as usize;
        let resumed = home.join("resumed.bin");
        let partial = home.join("resumed.bin.partial");
        let state_file = home.join("resumed.bin.partial.json");
        let mut marked = data[..seg].to_vec();
        marked[5000] ^= 0xff;
        let interrupted = |manifest: peergrid_core::Hash, written: &[u8]| {
            std::fs::write(&partial, written).expect("partial");
            let state = serde_json::json!({
                "manifest": manifest, "start": 0, "end": data.len(), "segments_done": 1,
            });
            std::fs::write(&state_file, state.to_string()).expect("state");
        };
        let get = || {
            let said = ok(
                &home,
                &[
                    "store",
                    "get",
                    "docs/report.bin",
                    resumed.to_str().expect("utf8"),
                ],
            );
            (std::fs::read(&resumed).expect("read"), said)
        };
        interrupted(manifest, &data[..seg]);
        let (back, said) = get();
        assert_eq!(said["resumed_bytes"], seg as u64, "{said}");
        assert!(back == data, "resumed after the first segment");
        assert!(
            !partial.exists() && !state_file.exists(),
            "resume state removed"
        );
        interrupted(manifest, &marked);
        let (back, said) = get();
        assert!(back == data, "a changed partial file was completed around its change");
        assert_eq!(said["resumed_bytes"], 0, "{said}");
        interrupted(peergrid_core::Hash::of(b"another object"), &data[..seg]);
        let (back, said) = get();
        assert!(back == data, "started over");
        assert_eq!(said["resumed_bytes"], 0, "{said}");

        // Another account reads with the capability alone.
        let bob = dir_for(&home, "bob");
        ok(&bob, &["key", "new"]);
        let shared = bob.join("shared.bin");
        assert!(
            got(&bob, &["--ledger", &ledger2], &cap, &shared) == data,
            "the shared read differs"
        );
        let (denied, _, err) = run(
            &bob,
            &["--ledger", &ledger2, "store", "get", "docs/report.bin", "x"],
        );
        assert!(
            !denied && err.contains("no object named"),
            "bob has no names of alice's: {err}"
        );
        // Without OUT, a capability's object is written here under its name's last part,
        // and never over a file there.
        let get_here = || {
            peergrid(&bob)
                .current_dir(&bob)
                .args(["--json", "--ledger", &ledger2, "store", "get", &cap])
                .output()
                .expect("run peergrid")
        };
        let here = get_here();
        assert!(
            here.status.success(),
            "{}",
            String::from_utf8_lossy(&here.stderr)
        );
        assert!(std::fs::read(bob.join("report.bin")).expect("report.bin") == data);
        let again = get_here();
        assert!(
            !again.status.success()
                && String::from_utf8_lossy(&again.stderr).contains("exists"),
            "{}",
            String::from_utf8_lossy(&again.stderr)
        );
        // One character mistyped is said to be, not read as another owner's object.
        let at = cap.len() / 2;
        let swap = if &cap[at..=at] == "x" { "y" } else { "x" };
        let typo = format!("{}{swap}{}", &cap[..at], &cap[at + 1..]);
        let (read, said, err) = run(
            &bob,
            &["--ledger", &ledger2, "store", "get", &typo, "typo.bin"],
        );
        assert!(!read && err.contains("mistyped"), "{err}");
        assert!(
            said["error"].as_str().is_some_and(|e| e.contains("mistyped")),
            "--json says the error as JSON: {said}"
        );

        // Two nodes gone (frozen: they hold their connections and answer nothing).
        let holding = holders(&home);
        // Node 0 stays up, so that this part does not also depend on finding nodes
        // without the bootstrap peers (checked on its own above).
        let mortal: Vec<usize> = holding.iter().copied().filter(|i| *i != 0).collect();
        assert_eq!(
            holding.len(),
            5,
            "one shard of each segment on each of 5 nodes: {holding:?}"
        );
        let frozen = Frozen(
            mortal[..2]
                .iter()
                .flat_map(|&i| node_pids(&home, i))
                .collect(),
        );
        assert!(frozen.0.len() >= 2, "node processes found: {:?}", frozen.0);
        signal(&frozen.0, "-STOP");
        let lost = home.join("lost.bin");
        assert!(
            got(&bob, &["--ledger", &ledger2], &cap, &lost) == data,
            "read with two nodes gone differs"
        );
        // An audit meanwhile: the frozen nodes' challenges go unanswered, which is told
        // apart from a failed proof (no farmer is blamed for a link), and still exits 1.
        let (audited, audit, err) = run(&home, &["store", "audit", "--samples", "20"]);
        assert!(!audited && err.contains("left challenges unanswered"), "{err}");
        let nodes = audit["nodes"].as_array().cloned().unwrap_or_default();
        assert!(nodes.iter().all(|n| n["failed"] == 0), "{audit}");
        assert!(
            nodes.iter().any(|n| n["unanswered"].as_u64() > Some(0)),
            "{audit}"
        );
        drop(frozen);
        // Back, and listed up again before the next puts choose their nodes.
        all_up(&home);

        // A node that serves a corrupted shard: caught by hash, the others used, its audit fails.
        let shards = shard_files(&home);
        assert!(
            shards.len() >= 15,
            "3 segments of 5 shards each, plus manifests: {shards:?}"
        );
        let victim = shards
            .iter()
            .filter(|p| !p.to_string_lossy().contains("nodes/node-0/"))
            .max_by_key(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
            .expect("a shard")
            .clone();
        let mut bytes = std::fs::read(&victim).expect("read shard");
        bytes[100] ^= 0xff;
        std::fs::write(&victim, &bytes).expect("corrupt");
        let again = home.join("again.bin");
        assert!(
            got(&home, &[], "docs/report.bin", &again) == data,
            "read with a corrupt shard differs"
        );
        let (audited, audit, err) = run(&home, &["store", "audit", "--samples", "1000"]);
        assert!(!audited, "an audit over a lost shard must fail: {audit}");
        assert!(err.contains("failed their audit"), "{err}");
        let failed: Vec<&Value> = audit["nodes"]
            .as_array()
            .expect("nodes")
            .iter()
            .filter(|n| n["failed"].as_u64() > Some(0))
            .collect();
        assert_eq!(failed.len(), 1, "only the corrupted node fails: {audit}");

        // Two holders die for good: repair rebuilds their shards (and the corrupted one)
        // on the two spare nodes; then two more die and the object still reads.
        let spare = ok(
            &home,
            &["store", "reserve", "--size", "256MiB", "--nodes", "2"],
        );
        assert_eq!(
            spare["contracts"].as_array().map(Vec::len),
            Some(2),
            "{spare}"
        );
        // The spare nodes hold no shard of an object yet, but they keep the owner's index
        // and its pointer already: with the older nodes down, a put must not start from an
        // empty index on their word.
        let spares: Vec<usize> = (0..NODES).filter(|i| !holding.contains(i)).collect();
        for &i in &spares {
            assert_eq!(node_shards(&home, i).len(), 1, "node {i}: the index only");
            let pointers = home.join(format!("devnet/nodes/node-{i}/storage-pointers"));
            let kept = std::fs::read_dir(&pointers).map(|d| d.count()).unwrap_or(0);
            assert_eq!(kept, 1, "node {i} keeps no pointer after the reserve");
        }
        // The node that lost a shard to corruption is one of the two: with it alive, a
        // segment would have lost three of its five shards, more than 3+2 survives.
        let victim_node = (0..NODES)
            .find(|i| {
                victim
                    .to_string_lossy()
                    .contains(&format!("nodes/node-{i}/"))
            })
            .expect("the corrupted shard's node");
        let mut gone = vec![victim_node];
        gone.extend(mortal.iter().copied().filter(|i| *i != victim_node).take(1));
        let then: Vec<usize> = mortal
            .iter()
            .copied()
            .filter(|i| !gone.contains(i))
            .take(2)
            .collect();
        let dead = Frozen(gone.iter().flat_map(|&i| node_pids(&home, i)).collect());
        signal(&dead.0, "-STOP");
        let repaired = ok(&home, &["store", "repair"]);
        let r = &repaired["objects"][0];
        assert_eq!(r["shards_rebuilt"], r["shards_missing"], "{repaired}");
        assert!(
            r["shards_rebuilt"].as_u64() >= Some(6),
            "two lost nodes' shards: {repaired}"
        );
        // The manifest too reaches the spare nodes: once the nodes of the put's day have
        // all gone, the shards repaired elsewhere must still be readable.
        assert_eq!(r["manifest_copies"], 2, "{repaired}");
        let rebuilt: u64 = repaired["objects"]
            .as_array()
            .map(|o| o.iter().filter_map(|o| o["shards_rebuilt"].as_u64()).sum())
            .unwrap_or(0);
        for &i in &spares {
            assert!(
                node_shards(&home, i).len() > 1,
                "spare node {i} holds no rebuilt shard"
            );
        }
        // An audit after the repair challenges each shard where it is now, not on the
        // stopped nodes the manifest still names: nothing fails.
        let (audited, audit, err) = run(&home, &["store", "audit", "--samples", "1000"]);
        assert!(audited, "an audit after the repair failed: {audit} {err}");
        // A put while two of the seven nodes are stopped: the scheme follows the five that
        // answer (4+3 would be the default for seven), and no shard waits on a stopped node.
        let on_stopped = || -> usize { gone.iter().map(|&i| node_shards(&home, i).len()).sum() };
        let stopped_before = on_stopped();
        let down = home.join("down.bin");
        let down_data = random_file(&down, 6 << 20, 12);
        // None of these commands waits on the stopped nodes: the newest index pointer is
        // on a majority of the nodes, and those answer. A dial to a stopped node gives up
        // only after the mesh's 9 s, so each bound below fails if one is waited for.
        let not_held_up = |what: &str, started: Instant| {
            let took = started.elapsed();
            assert!(
                took < Duration::from_millis(8_500),
                "{what} with two nodes stopped took {took:?}"
            );
        };
        let started = Instant::now();
        let put = ok(
            &home,
            &["store", "put", down.to_str().expect("utf8"), "down.bin"],
        );
        not_held_up("store put", started);
        assert_eq!(put["scheme"], "3+2", "{put}");
        assert_eq!(
            on_stopped(),
            stopped_before,
            "a shard went to a stopped node"
        );
        let started = Instant::now();
        let ls = ok(&home, &["store", "ls"]);
        not_held_up("store ls", started);
        assert!(
            ls["objects"]
                .as_array()
                .is_some_and(|o| o.iter().any(|o| o["name"] == "down.bin")),
            "{ls}"
        );
        // A prefix lists exactly the names that start with it.
        let names = |ls: &Value| -> Vec<String> {
            ls["objects"]
                .as_array()
                .map(|o| o.iter().filter_map(|o| o["name"].as_str().map(String::from)).collect())
                .unwrap_or_default()
        };
        let all = names(&ls);
        let down = names(&ok(&home, &["store", "ls", "down"]));
        assert!(all.len() > down.len(), "{all:?}");
        assert_eq!(
            down,
            all.iter().filter(|n| n.starts_with("down")).cloned().collect::<Vec<_>>()
        );
        let none = ok(&home, &["store", "ls", "no-such-prefix/"]);
        assert!(none["objects"].as_array().is_some_and(Vec::is_empty), "{none}");
        // Status names the two as unreachable, and asks them once, not once to connect and
        // once more for what they hold.
        let started = Instant::now();
        let status = ok(&home, &["store", "status"]);
        not_held_up("store status", started);
        assert!(status["unreachable"].as_u64() >= Some(2), "{status}");
        let down_back = home.join("down-back.bin");
        let started = Instant::now();
        assert!(
            got(&home, &[], "down.bin", &down_back) == down_data,
            "the object put while two nodes were stopped reads back different"
        );
        not_held_up("store get", started);
        let gone = home.join("gone.bin");
        random_file(&gone, 1 << 20, 13);
        ok(
            &home,
            &["store", "put", gone.to_str().expect("utf8"), "gone.bin"],
        );
        let started = Instant::now();
        ok(&home, &["store", "rm", "gone.bin"]);
        not_held_up("store rm", started);
        let more = Frozen(then.iter().flat_map(|&i| node_pids(&home, i)).collect());
        signal(&more.0, "-STOP");
        let survived = home.join("survived.bin");
        assert!(
            got(&bob, &["--ledger", &ledger2], &cap, &survived) == data,
            "read after repair and two more losses differs"
        );
        drop((dead, more));
        all_up(&home);

        // down.bin was put as 3+2 while two nodes were stopped. With one stopped a put
        // would give it 4+2: as much parity for a tenth less room, not worth a new
        // capability, so repair does not offer it (and a --widen during an outage does not
        // store it twice, once now and once more when the node is back).
        {
            let _one = Frozen(node_pids(&home, then[0]));
            signal(&_one.0, "-STOP");
            let six = ok(&home, &["store", "repair", "down.bin"]);
            assert_eq!(six["objects"][0]["widen_to"], Value::Null, "{six}");
        }
        all_up(&home);
        // On all seven, a put would give it more parity (4+3): repair says so, and with
        // --widen stores it so.
        let plain = ok(&home, &["store", "repair", "down.bin"]);
        assert_eq!(plain["objects"][0]["scheme"], "3+2", "{plain}");
        assert_eq!(plain["objects"][0]["widen_to"], "4+3", "{plain}");
        assert_eq!(
            plain["widened"].as_array().map(Vec::len),
            Some(0),
            "{plain}"
        );
        let widened = ok(&home, &["store", "repair", "--widen", "down.bin"]);
        assert_eq!(widened["widened"][0]["scheme"], "4+3", "{widened}");
        let ls = ok(&home, &["store", "ls"]);
        let listed = ls["objects"]
            .as_array()
            .and_then(|o| o.iter().find(|o| o["name"] == "down.bin"))
            .cloned()
            .unwrap_or_default();
        assert_eq!(listed["scheme"], "4+3", "{ls}");
        let again = ok(&home, &["store", "repair", "down.bin"]);
        assert_eq!(again["objects"][0]["widen_to"], Value::Null, "{again}");
        // Into a file of its own: the first get's file holds the same bytes, and a get into
        // it would leave it without reading the widened object.
        assert!(
            got(&home, &[], "down.bin", &home.join("widened-back.bin")) == down_data,
            "the widened object reads back different"
        );
        ok(&home, &["store", "rm", "down.bin"]);

        // Too large for the reservation: refused with the numbers, nothing uploaded.
        let big = home.join("big.bin");
        std::fs::File::create(&big)
            .and_then(|f| f.set_len(1 << 30))
            .expect("sparse file");
        let before = shard_files(&home).len();
        let (fit, _, err) = run(
            &home,
            &["store", "put", big.to_str().expect("utf8"), "big.bin"],
        );
        assert!(!fit);
        assert!(
            err.contains("does not fit your reservation") && err.contains("MiB"),
            "{err}"
        );
        assert_eq!(shard_files(&home).len(), before, "nothing was uploaded");

        // An upload cut short lists nothing; the retry resumes and completes it.
        let medium = home.join("medium.bin");
        let medium_data = random_file(&medium, 150 << 20, 11);
        let mut child = peergrid(&home)
            .args([
                "--json",
                "store",
                "put",
                medium.to_str().expect("utf8"),
                "medium.bin",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn put");
        let first = shard_files(&home).len();
        wait_for("the upload to start", Duration::from_secs(60), || {
            (shard_files(&home).len() > first + 5).then_some(())
        });
        assert!(
            matches!(child.try_wait(), Ok(None)),
            "the upload ended before it could be cut short"
        );
        let _ = child.kill();
        let _ = child.wait();
        let ls = ok(&home, &["store", "ls"]);
        assert_eq!(
            ls["objects"].as_array().map(Vec::len),
            Some(1),
            "a cut-short put is not listed: {ls}"
        );
        let retry = ok(
            &home,
            &["store", "put", medium.to_str().expect("utf8"), "medium.bin"],
        );
        assert!(
            retry["shards_resumed"].as_u64() > Some(0),
            "the retry resumed: {retry}"
        );
        // A get stopped with Ctrl-C says what it leaves, and the same get goes on from it.
        let back = home.join("medium-back.bin");
        let partial = home.join("medium-back.bin.partial");
        let child = peergrid(&home)
            .args(["store", "get", "medium.bin", back.to_str().expect("utf8")])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn get");
        let began = Instant::now();
        while std::fs::metadata(&partial).map_or(true, |m| m.len() == 0)
            && began.elapsed() < Duration::from_secs(60)
        {
            std::thread::sleep(Duration::from_millis(20));
        }
        signal(&[child.id() as i32], "-INT");
        let stopped = child.wait_with_output().expect("get");
        let said = String::from_utf8_lossy(&stopped.stderr);
        assert_eq!(stopped.status.code(), Some(130), "{said}");
        assert!(said.contains("store get interrupted"), "{said}");
        assert!(partial.exists(), "the partial download was not kept: {said}");
        ok(&home, &["store", "get", "medium.bin", back.to_str().expect("utf8")]);
        assert!(std::fs::read(&back).expect("read") == medium_data);

        // A fresh machine with only the words gets everything back.
        let fresh = dir_for(&home, "fresh");
        let (imported, _, err) = run(&fresh, &["key", "import", "--mnemonic", &words]);
        assert!(imported, "{err}");
        let ls = ok(&fresh, &["--ledger", &ledger2, "store", "ls"]);
        let names: Vec<&str> = ls["objects"]
            .as_array()
            .expect("objects")
            .iter()
            .filter_map(|o| o["name"].as_str())
            .collect();
        assert_eq!(names, vec!["docs/report.bin", "medium.bin"], "{ls}");
        let restored = fresh.join("medium.bin");
        assert!(
            got(&fresh, &["--ledger", &ledger2], "medium.bin", &restored) == medium_data,
            "the restored object differs"
        );

        // Puts run at once each keep their name, two from this home and two from the
        // fresh one with the same words: those from one home take turns changing the
        // index, those from two find the other's change when they read the pointers back
        // and apply theirs again. Removals the same.
        let names: Vec<String> = (0..4).map(|i| format!("together/{i}.bin")).collect();
        let files: Vec<PathBuf> = (0..4)
            .map(|i| {
                let f = home.join(format!("together-{i}.bin"));
                random_file(&f, 512 << 10, 20 + i);
                f
            })
            .collect();
        let homes = [&home, &fresh, &home, &fresh];
        let ledger2 = ledger2.as_str();
        std::thread::scope(|s| {
            for ((f, n), h) in files.iter().zip(&names).zip(homes) {
                s.spawn(move || {
                    ok(
                        h,
                        &[
                            "--ledger",
                            ledger2,
                            "store",
                            "put",
                            f.to_str().expect("utf8"),
                            n,
                        ],
                    )
                });
            }
        });
        let listed = |h: &Path| -> Vec<String> {
            let ls = ok(h, &["--ledger", ledger2, "store", "ls"]);
            ls["objects"]
                .as_array()
                .map(|o| {
                    o.iter()
                        .filter_map(|o| o["name"].as_str())
                        .filter(|n| n.starts_with("together/"))
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default()
        };
        assert_eq!(listed(&home), names);
        assert_eq!(listed(&fresh), names);
        std::thread::scope(|s| {
            for (n, h) in names.iter().zip(homes) {
                s.spawn(move || ok(h, &["--ledger", ledger2, "store", "rm", n]));
            }
        });
        assert_eq!(listed(&home), Vec::<String>::new());

        // An object removed while one of its nodes is stopped leaves its shards there
        // (with the index it was listed in); `store gc` removes them once the node is
        // back, leaves what was written too recently, and nothing an object still uses.
        let left = orphaned(&home, "orphan.bin", 14);
        let total = |v: &Value, field: &str| -> u64 {
            v["contracts"]
                .as_array()
                .map(|c| c.iter().filter_map(|c| c[field].as_u64()).sum())
                .unwrap_or(0)
        };
        let young = ok(&home, &["store", "gc", "--dry-run"]);
        assert_eq!(total(&young, "garbage"), 0, "nothing is a day old: {young}");
        assert!(total(&young, "young") >= left.len() as u64, "{young}");
        let dry = ok(&home, &["store", "gc", "--older-than", "0s", "--dry-run"]);
        assert!(total(&dry, "garbage") >= left.len() as u64, "{dry}");
        assert_eq!(total(&dry, "removed"), 0, "{dry}");
        assert!(left.iter().all(|f| f.exists()), "a dry run removed shards");
        // The shards the repair rebuilt are also still on the two nodes that were down
        // then (but the corrupted one, which its node moved aside when it was read):
        // those copies are garbage too.
        assert!(!victim.exists(), "the corrupted shard was moved aside");
        assert_eq!(total(&dry, "extra_copies"), rebuilt - 1, "{dry}");
        let gc = ok(&home, &["store", "gc", "--older-than", "0s"]);
        assert_eq!(total(&gc, "removed"), total(&gc, "garbage"), "{gc}");
        let stayed: Vec<&PathBuf> = left.iter().filter(|f| f.exists()).collect();
        assert!(stayed.is_empty(), "gc left {stayed:?}: {gc}");
        let again = ok(&home, &["store", "gc", "--older-than", "0s"]);
        assert_eq!(total(&again, "garbage"), 0, "{again}");
        assert_eq!(
            total(&again, "kept"),
            total(&gc, "kept"),
            "gc removed only garbage: {again}"
        );
        for (name, want) in [("docs/report.bin", &data), ("medium.bin", &medium_data)] {
            assert!(
                got(&home, &[], name, &home.join("after-gc.bin")) == *want,
                "{name} reads back different after gc"
            );
        }

        // Removing frees the space and the name.
        ok(&home, &["store", "rm", "medium.bin"]);
        let ls = ok(&home, &["store", "ls"]);
        assert_eq!(ls["objects"].as_array().map(Vec::len), Some(1), "{ls}");

        // gc removes nothing when an object's manifest cannot be read (here moved aside on
        // every node): its shards could not be told from garbage.
        let left = orphaned(&home, "stray.bin", 15);
        // Nor with more than half of the nodes stopped: the index read could be older than
        // the newest one, and what that lists would look like garbage.
        // (Not nodes 0-2, the devnet's bootstrap peers: with all three stopped a command
        // finds no node at all.)
        let most = Frozen((3..NODES).flat_map(|i| node_pids(&home, i)).collect());
        signal(&most.0, "-STOP");
        let (collected, _, err) = run(&home, &["store", "gc", "--older-than", "0s"]);
        // Nor is the index changed on so few answers: the change would be written over an
        // index perhaps older than the newest.
        let (removed, _, rm_err) = run(&home, &["store", "rm", "docs/report.bin"]);
        drop(most);
        assert!(!collected, "gc ran with four of seven nodes stopped");
        assert!(err.contains("more than half"), "{err}");
        assert!(left.iter().all(|f| f.exists()), "gc removed shards then");
        assert!(
            !removed,
            "rm changed the index with four of seven nodes stopped"
        );
        assert!(rm_err.contains("too few to be sure"), "{rm_err}");
        let shared = ok(&home, &["store", "share", "docs/report.bin"]);
        let manifest = shared["capability"]
            .as_str()
            .and_then(|c| c.parse::<peergrid_storage::Capability>().ok())
            .expect("capability")
            .manifest
            .to_string();
        let copies: Vec<PathBuf> = shard_files(&home)
            .into_iter()
            .filter(|f| {
                f.file_name()
                    .is_some_and(|n| n.to_string_lossy() == manifest)
            })
            .collect();
        assert!(
            copies.len() >= 5,
            "the manifest is on every node: {copies:?}"
        );
        for f in &copies {
            std::fs::rename(f, f.with_file_name(format!(".aside-{manifest}"))).expect("aside");
        }
        let (collected, _, err) = run(&home, &["store", "gc", "--older-than", "0s"]);
        assert!(!collected, "gc ran without an object's manifest");
        assert!(
            err.contains("cannot read the manifest of docs/report.bin")
                && err.contains("nothing was removed"),
            "{err}"
        );
        assert!(
            left.iter().all(|f| f.exists()),
            "gc removed shards while a manifest was unreadable"
        );
        // An audit names the object it cannot open, and says so in its exit status.
        let (audited, audit, err) = run(&home, &["store", "audit"]);
        assert!(!audited, "an audit passed without reading a manifest");
        assert_eq!(audit["unaudited"][0]["name"], "docs/report.bin", "{audit}");
        assert!(err.contains("could not be audited"), "{err}");

        // A second reservation on a node already used: a put writes there to the one
        // with the most room left. On node 0, which no step above stopped (a node just
        // resumed may not be reconnected within the 3 s a put waits for its nodes).
        let on_node_0 = contracts_on(&home, 0);
        let status = ok(&home, &["store", "status"]);
        let node = status["contracts"]
            .as_array()
            .and_then(|cs| {
                cs.iter()
                    .find(|c| c["contract"].as_u64().is_some_and(|id| on_node_0.contains(&id)))
            })
            .and_then(|c| c["node"].as_u64())
            .expect("node 0's ledger id");
        let more = ok(
            &home,
            &[
                "store",
                "reserve",
                "--size",
                "512MiB",
                "--node",
                &node.to_string(),
            ],
        );
        let second = more["contracts"][0].as_u64().expect("contract");
        let small = home.join("second.bin");
        let small_data = random_file(&small, 1 << 20, 16);
        ok(
            &home,
            &["store", "put", small.to_str().expect("utf8"), "second.bin"],
        );
        assert!(
            shard_files(&home)
                .iter()
                .any(|f| f.to_string_lossy().contains(&format!("/{second}/shards/"))),
            "nothing was written to the roomier second reservation {second} on node {node}: {status}"
        );
        assert!(got(&home, &[], "second.bin", &home.join("second-back.bin")) == small_data);

        // A new account's first put, with one of its nodes stopped: no node keeps a
        // pointer yet, and the put does not wait for, or fail on, the stopped one. Then
        // the same bytes put again under the same name, on a reservation too small for
        // two copies: its shards are there already, so the room they take does not
        // refuse it (as it would a retry of a put cut short most of the way).
        let carol_key = home.join("carol.json");
        let carol_key = carol_key.to_str().expect("utf8");
        let carol = ok(&home, &["--key", carol_key, "key", "new"]);
        let carol = carol["account"].as_str().expect("account");
        ok(
            &home,
            &[
                "--key", demo, "wallet", "transfer", "--to", carol, "--amount", "10000",
            ],
        );
        let as_carol = |args: &[&str]| -> Value {
            let mut all = vec!["--key", carol_key];
            all.extend_from_slice(args);
            ok(&home, &all)
        };
        let (done, reserved, err) = run(
            &home,
            &[
                "--key", carol_key, "store", "reserve", "--size", "16MiB", "--nodes", "5",
            ],
        );
        assert!(done && !err.contains("has not learned"), "{err}");
        let carols: Vec<u64> = reserved["contracts"]
            .as_array()
            .map(|cs| cs.iter().filter_map(Value::as_u64).collect())
            .unwrap_or_default();
        // One of hers that is not a bootstrap peer (nodes 0-2), found by its folder.
        let stopped = (3..NODES)
            .find(|&i| contracts_on(&home, i).iter().any(|c| carols.contains(c)))
            .expect("one of carol's nodes past the bootstrap peers");
        let paused = Frozen(node_pids(&home, stopped));
        signal(&paused.0, "-STOP");
        let tight = home.join("tight.bin");
        random_file(&tight, 30 << 20, 17);
        let tight = tight.to_str().expect("utf8");
        let first = as_carol(&["store", "put", tight, "tight.bin", "--scheme", "2+1"]);
        assert_eq!(first["shards_resumed"], 0, "{first}");
        let again = as_carol(&["store", "put", tight, "tight.bin", "--scheme", "2+1"]);
        drop(paused);
        assert_eq!(again["shards_sent"], 0, "{again}");
        assert_eq!(again["shards_resumed"], first["shards_sent"], "{again}");
        // And it is the same object: a capability shared for it still reads.
        assert_eq!(again["replaced"], false, "{again}");
        assert_eq!(again["capability"], first["capability"], "{again}");
        // Other bytes under that name replace it, and say so.
        random_file(Path::new(tight), 1 << 20, 18);
        let other = as_carol(&["store", "put", tight, "tight.bin", "--scheme", "2+1"]);
        assert_eq!(other["replaced"], true, "{other}");
        assert_ne!(other["capability"], first["capability"], "{other}");

        // From standard input, its length known only at its end (and not a whole number
        // of segments): read back byte-identical, and the same bytes again change nothing.
        let piped = home.join("piped.bin");
        // 24 MiB: each of her five nodes keeps about 8 of her 16, so the same bytes piped
        // again fit only because the nodes hold their shards already.
        let piped_data = random_file(&piped, (24 << 20) + 123, 19);
        let (put, first, err) = put_piped(&home, carol_key, "logs/piped.bin", &piped_data);
        assert!(put, "{err}");
        assert_eq!(first["size"], piped_data.len() as u64, "{first}");
        let back = peergrid(&home)
            .args(["--key", carol_key, "store", "get", "logs/piped.bin", "-"])
            .output()
            .expect("run peergrid");
        assert!(back.status.success());
        assert!(back.stdout == piped_data, "the piped object reads back different");
        let (put, again, err) = put_piped(&home, carol_key, "logs/piped.bin", &piped_data);
        assert!(put, "{err}");
        assert_eq!(again["unchanged"], true, "{again}");
        assert_eq!(again["shards_sent"], 0, "{again}");
        assert_eq!(again["capability"], first["capability"], "{again}");
        // More than her 16 MiB on each node holds: refused part way with the numbers,
        // nothing listed, and every shard it sent removed again.
        let before = shard_files(&home).len();
        let flood = random_file(&piped, 100 << 20, 20);
        let (put, _, err) = put_piped(&home, carol_key, "logs/flood.bin", &flood);
        assert!(!put);
        assert!(err.contains("does not fit your reservation"), "{err}");
        let removed: u64 = err
            .split("nothing was named, and the ")
            .nth(1)
            .and_then(|rest| rest.split(' ').next()?.parse().ok())
            .unwrap_or(0);
        assert!(removed > 0 && err.contains("shards this put sent are removed"), "{err}");
        assert_eq!(shard_files(&home).len(), before, "a refused stream left shards");
        let ls = as_carol(&["store", "ls"]);
        let names: Vec<&str> = ls["objects"]
            .as_array()
            .map(|o| o.iter().filter_map(|o| o["name"].as_str()).collect())
            .unwrap_or_default();
        assert_eq!(names, ["logs/piped.bin", "tight.bin"], "{ls}");
        // An empty pipe (the command writing into it failed) stores nothing and leaves
        // the object of that name as it was.
        let (put, _, err) = put_piped(&home, carol_key, "logs/piped.bin", b"");
        assert!(!put && err.contains("the pipe ended before its first byte"), "{err}");
        let ls = as_carol(&["store", "ls", "logs/"]);
        assert_eq!(ls["objects"][0]["size"], piped_data.len() as u64, "{ls}");
        // A pipe needs a name: it has none of its own to keep.
        let (put, _, err) = run(&home, &["--key", carol_key, "store", "put", "-"]);
        assert!(!put && err.contains("give the object's name"), "{err}");

        // A second, larger reservation on her five nodes takes her next put (the roomiest)
        // and lapses: the objects in her first stay listed and readable, and she can put
        // again. The index lived only in the roomiest contracts, and went with them: every
        // later command of hers failed for good, on "no node serves" the index.
        let status = as_carol(&["store", "status"]);
        let mut args = vec!["store", "reserve", "--size", "64MiB"];
        let nodes: Vec<String> = status["contracts"]
            .as_array()
            .map(|cs| cs.iter().filter_map(|c| Some(c["node"].as_u64()?.to_string())).collect())
            .unwrap_or_default();
        assert_eq!(nodes.len(), 5, "{status}");
        for n in &nodes {
            args.extend(["--node", n.as_str()]);
        }
        let larger = as_carol(&args);
        let larger: Vec<u64> = larger["contracts"]
            .as_array()
            .map(|cs| cs.iter().filter_map(Value::as_u64).collect())
            .unwrap_or_default();
        let later = home.join("later.bin");
        random_file(&later, 1 << 20, 21);
        as_carol(&["store", "put", later.to_str().expect("utf8"), "later.bin"]);
        assert!(
            shard_files(&home).iter().any(|f| larger
                .iter()
                .any(|c| f.to_string_lossy().contains(&format!("/{c}/shards/")))),
            "the put went elsewhere than the larger reservation {larger:?}"
        );
        // A storage contract holding shards is not cancelled without --force, which says
        // what goes with it.
        let (done, _, err) = run(
            &home,
            &["--key", carol_key, "contract", "cancel", &larger[0].to_string()],
        );
        assert!(!done && err.contains("of your objects' shards on node"), "{err}");
        assert!(err.contains("--force"), "{err}");
        for c in &larger {
            as_carol(&["contract", "cancel", &c.to_string(), "--force"]);
        }
        // Once her nodes have removed the larger contracts' folders.
        let gone = |f: &PathBuf| {
            !larger
                .iter()
                .any(|c| f.to_string_lossy().contains(&format!("/{c}/shards/")))
        };
        for _ in 0..300 {
            if shard_files(&home).iter().all(gone) {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(shard_files(&home).iter().all(gone), "the cancelled contracts' shards stayed");
        let ls = as_carol(&["store", "ls"]);
        let names: Vec<&str> = ls["objects"]
            .as_array()
            .map(|o| o.iter().filter_map(|o| o["name"].as_str()).collect())
            .unwrap_or_default();
        assert!(names.contains(&"tight.bin") && names.contains(&"later.bin"), "{ls}");
        let back = peergrid(&home)
            .args(["--key", carol_key, "store", "get", "logs/piped.bin", "-"])
            .output()
            .expect("run peergrid");
        assert!(back.status.success(), "{}", String::from_utf8_lossy(&back.stderr));
        assert!(back.stdout == piped_data, "the piped object reads back different");
        // A small spare reservation keeps only a copy of the index (a put writes to the
        // roomier ones): cancelled without --force, as it holds nothing of an object.
        let spare = as_carol(&["store", "reserve", "--size", "2MiB", "--node", &nodes[0]]);
        let spare = spare["contracts"][0].as_u64().expect("spare contract").to_string();
        as_carol(&["store", "rm", "later.bin"]);
        as_carol(&["store", "put", later.to_str().expect("utf8"), "again.bin"]);
        as_carol(&["contract", "cancel", &spare]);
        let ls = as_carol(&["store", "ls"]);
        assert!(ls.to_string().contains("again.bin"), "{ls}");

        // Dave's first nodes, which keep his index, are down when he reserves more: the
        // new nodes answer that they hold no index, and they are a majority. His next
        // put does not start a new, empty index over the one on the silent nodes (whose
        // higher sequence number would win it back once they return, dropping the put's
        // name, and gc its object); it says why, and works once they are back.
        let dave_key = home.join("dave.json");
        let dave_key = dave_key.to_str().expect("utf8");
        let dave = ok(&home, &["--key", dave_key, "key", "new"]);
        let dave = dave["account"].as_str().expect("account");
        ok(
            &home,
            &["--key", demo, "wallet", "transfer", "--to", dave, "--amount", "10000"],
        );
        let as_dave = |args: &[&str]| -> (bool, Value, String) {
            let mut all = vec!["--key", dave_key];
            all.extend_from_slice(args);
            run(&home, &all)
        };
        let (done, first, err) =
            as_dave(&["store", "reserve", "--size", "8MiB", "--nodes", "2"]);
        assert!(done, "{err}");
        let firsts: Vec<u64> = first["contracts"]
            .as_array()
            .map(|cs| cs.iter().filter_map(Value::as_u64).collect())
            .unwrap_or_default();
        let early = home.join("early.bin");
        let early_data = random_file(&early, 1 << 20, 31);
        let (done, _, err) = as_dave(&["store", "put", early.to_str().expect("utf8"), "early.bin"]);
        assert!(done, "{err}");
        let first_nodes: Vec<usize> = (0..NODES)
            .filter(|&i| contracts_on(&home, i).iter().any(|c| firsts.contains(c)))
            .collect();
        assert_eq!(first_nodes.len(), 2, "{first}");
        let away = Frozen(first_nodes.iter().flat_map(|&i| node_pids(&home, i)).collect());
        signal(&away.0, "-STOP");
        let (done, _, err) = as_dave(&["store", "reserve", "--size", "8MiB", "--nodes", "3"]);
        assert!(done, "{err}");
        let late = home.join("late.bin");
        random_file(&late, 1 << 20, 32);
        let (done, _, err) = as_dave(&["store", "put", late.to_str().expect("utf8"), "late.bin"]);
        assert!(
            !done && err.contains("holds your index") && err.contains("did not answer"),
            "{err}"
        );
        drop(away);
        all_up(&home);
        let (done, _, err) = as_dave(&["store", "put", late.to_str().expect("utf8"), "late.bin"]);
        assert!(done, "{err}");
        let (_, ls, _) = as_dave(&["store", "ls"]);
        let names: Vec<&str> = ls["objects"]
            .as_array()
            .map(|o| o.iter().filter_map(|o| o["name"].as_str()).collect())
            .unwrap_or_default();
        assert_eq!(names, ["early.bin", "late.bin"], "{ls}");
        let back = home.join("early-back.bin");
        let (done, _, err) = as_dave(&["store", "get", "early.bin", back.to_str().expect("utf8")]);
        assert!(done, "{err}");
        assert!(std::fs::read(&back).expect("read") == early_data);
    })
    .await
    .expect("the storage walk-through");
}

/// `peergrid --key KEY store put - NAME` with `data` on its standard input.
fn put_piped(home: &Path, key: &str, name: &str, data: &[u8]) -> (bool, Value, String) {
    let mut child = peergrid(home)
        .args(["--json", "--key", key, "store", "put", "-", name])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn peergrid");
    let mut stdin = child.stdin.take().expect("stdin");
    let data = data.to_vec();
    // A put refused part way stops reading: the rest cannot be written, which is fine.
    let writer = std::thread::spawn(move || {
        let _ = std::io::Write::write_all(&mut stdin, &data);
    });
    let out = child.wait_with_output().expect("wait for peergrid");
    writer.join().expect("writer");
    (
        out.status.success(),
        serde_json::from_slice(&out.stdout).unwrap_or(Value::Null),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Put a 2 MiB object as `name` and remove it while the node that took the most of its
/// files is stopped: the files left there (its shards, manifest and the index that listed
/// it), which nothing names any more.
fn orphaned(home: &Path, name: &str, seed: u64) -> Vec<PathBuf> {
    let on_nodes = || -> Vec<HashSet<PathBuf>> {
        (0..NODES)
            .map(|i| node_shards(home, i).into_iter().collect())
            .collect()
    };
    let before = on_nodes();
    let file = home.join(name);
    random_file(&file, 2 << 20, seed);
    ok(home, &["store", "put", file.to_str().expect("utf8"), name]);
    let after = on_nodes();
    let (holder, left): (usize, Vec<PathBuf>) = (0..NODES)
        .map(|i| (i, after[i].difference(&before[i]).cloned().collect()))
        .max_by_key(|(_, new): &(usize, Vec<PathBuf>)| new.len())
        .expect("nodes");
    assert!(left.len() >= 2, "{name} put nothing on node {holder}");
    let stopped = Frozen(node_pids(home, holder));
    signal(&stopped.0, "-STOP");
    ok(home, &["store", "rm", name]);
    drop(stopped);
    assert!(
        left.iter().all(|f| f.exists()),
        "an rm reached a stopped node"
    );
    left
}

/// A ledger API that answers as `upstream` does, except that every node's record names a
/// new key as the node's: a lying validator. Its proofs are `upstream`'s, unchanged.
async fn lying_ledger(upstream: String) -> String {
    let stranger = peergrid_core::Keypair::generate()
        .expect("key")
        .account()
        .to_string();
    let http = reqwest::Client::new();
    let app = axum::Router::new().fallback(move |uri: axum::http::Uri| {
        let (http, upstream, stranger) = (http.clone(), upstream.clone(), stranger.clone());
        async move {
            let answer = http
                .get(format!("{upstream}{uri}"))
                .send()
                .await
                .expect("upstream");
            let status =
                axum::http::StatusCode::from_u16(answer.status().as_u16()).expect("status");
            let mut body = answer.bytes().await.expect("body").to_vec();
            let proven = uri.query().is_some_and(|q| q.contains("proof"));
            if uri.path().starts_with("/v1/nodes/")
                && !proven
                && let Ok(mut v) = serde_json::from_slice::<Value>(&body)
                && v["data"]["account"].is_string()
            {
                v["data"]["account"] = Value::String(stranger);
                body = serde_json::to_vec(&v).expect("json");
            }
            (
                status,
                [(axum::http::header::CONTENT_TYPE, "application/json")],
                body,
            )
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

fn dir_for(home: &Path, name: &str) -> PathBuf {
    let d = home.parent().expect("parent").join(name);
    std::fs::create_dir_all(&d).expect("mkdir");
    d
}
