//! `/peergrid/data/1` between two real mesh peers: a folder exported and imported back (a
//! GNU-padded archive included); an archive past the app's disk refused with the reason
//! reaching the owner; a stranger, an archive other than the one signed and an upload cut
//! half-way refused; each refusal leaving the folder as it was and nothing staged.

use std::collections::BTreeMap;

use futures::{AsyncReadExt, AsyncWriteExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use peergrid_compute::data::DataDir;
use peergrid_core::Keypair;
use peergrid_core::fs::DiskReserve;
use peergrid_mesh::{Config, Mesh};
use peergrid_node::appdata::{self, Authorize, DataError, DataOp, DataRequest, Target};

const CONTRACT: u64 = 7;

async fn peer(seed: u8) -> Mesh {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    Mesh::start(&Keypair::from_seed([seed; 32]), Config::loopback())
        .await
        .expect("mesh starts")
}

/// A node serving one app's folder (`CONTRACT`, owned by `owner`) of `quota` bytes, and
/// a client connected to it.
struct Grid {
    node: Mesh,
    client: Mesh,
    folder: PathBuf,
    _dir: tempfile::TempDir,
    _serving: tokio::task::JoinHandle<()>,
}

/// The grid the owners' requests are signed for.
const GRID: &str = "peergrid-devnet/0123";

async fn grid(owner: &Keypair, quota: u64) -> Grid {
    let dir = tempfile::tempdir().expect("tempdir");
    let folder = dir.path().join(CONTRACT.to_string()).join("data");
    let data = DataDir::new(&folder, quota, None).expect("the app's folder");
    std::fs::write(folder.join("old.txt"), b"before any import").expect("write");
    data.measure().await;
    let owner = owner.account();
    let authorize: Authorize = Arc::new(move |request: DataRequest| {
        let data = data.clone();
        Box::pin(async move {
            if request.contract != CONTRACT {
                return Err(format!("contract {} is not here", request.contract));
            }
            appdata::check_signed(&request, GRID, &owner)?;
            Ok(Target {
                data,
                reserve: DiskReserve::bytes(0),
                still_live: Box::new(|| true),
            })
        })
    });
    let node = peer(1).await;
    let serving = appdata::serve_with(&node, authorize).expect("serves");
    let client = peer(2).await;
    let addrs = node.listen_addrs().await.expect("addresses");
    client
        .connect(node.peer_id(), addrs)
        .await
        .expect("connects");
    Grid {
        node,
        client,
        folder,
        _dir: dir,
        _serving: serving,
    }
}

/// Every file under `dir` with its bytes.
fn files(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("read").flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let rel = path.strip_prefix(dir).expect("inside").to_path_buf();
                out.insert(rel, std::fs::read(&path).expect("read"));
            }
        }
    }
    out
}

/// Nothing an import staged is left beside the folder (its removal may trail the answer).
async fn nothing_staged(folder: &Path) {
    for _ in 0..100 {
        if appdata::leftovers(folder).is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("left beside the folder: {:?}", appdata::leftovers(folder));
}

/// An archive of a folder holding `files`, written to `at`.
fn archive(at: &Path, files: &[(&str, &[u8])]) {
    let src = tempfile::tempdir().expect("tempdir");
    for (name, bytes) in files {
        let path = src.path().join(name);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, bytes).expect("write");
    }
    let out = std::fs::File::create(at).expect("create");
    peergrid_node::archive::pack(src.path(), out).expect("pack");
}

async fn import(g: &Grid, key: &Keypair, path: &Path) -> Result<appdata::ImportReport, DataError> {
    let (_, bytes, hash) = appdata::scan(path).expect("a valid archive");
    let request = DataRequest::sign(key, GRID, CONTRACT, DataOp::Import { bytes, hash });
    // The node gives an import's place back just after it has tidied up.
    for _ in 0..50 {
        match appdata::import(&g.client, g.node.peer_id(), &request, path, |_| {}).await {
            Err(DataError::Refused(why)) if why.contains("under way") || why.contains("tidied") => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            other => return other,
        }
    }
    panic!("the node stayed busy");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_folder_goes_out_and_comes_back_and_refusals_change_nothing() {
    let owner = Keypair::from_seed([9; 32]);
    let g = grid(&owner, 8 << 20).await;
    std::fs::create_dir_all(g.folder.join("keys/deep")).expect("mkdir");
    std::fs::write(g.folder.join("keys/deep/a"), vec![1u8; 300_000]).expect("write");
    std::fs::write(g.folder.join("keys/b"), b"bee").expect("write");
    let kept = files(&g.folder);

    // Exported: the archive arrives whole, as its length and BLAKE3 say.
    let work = tempfile::tempdir().expect("tempdir");
    let out = work.path().join("backup.tar");
    let request = DataRequest::sign(&owner, GRID, CONTRACT, DataOp::Export);
    let exported = appdata::export(&g.client, g.node.peer_id(), &request, &out, |_, _| {})
        .await
        .expect("export");
    assert_eq!(
        exported.archive_bytes,
        std::fs::metadata(&out).expect("out").len()
    );
    assert_eq!(exported.file_bytes, 300_000 + 3 + 17);
    assert!(!work.path().join("backup.tar.part").exists());

    // Changed, then imported back from the archive as GNU tar pads it: as it was.
    std::fs::remove_file(g.folder.join("keys/b")).expect("rm");
    std::fs::write(g.folder.join("later"), b"after the export").expect("write");
    let mut padded = std::fs::read(&out).expect("read");
    padded.resize(padded.len().div_ceil(10240) * 10240, 0);
    std::fs::write(&out, &padded).expect("write");
    let report = import(&g, &owner, &out).await.expect("import");
    assert_eq!(report.unpacked.files, 3);
    assert_eq!(files(&g.folder), kept);
    nothing_staged(&g.folder).await;

    // Past the app's disk: the node refuses part-way through the upload, and the owner
    // hears why.
    let big = work.path().join("big.tar");
    archive(&big, &[("huge", &vec![7u8; 12 << 20])]);
    match import(&g, &owner, &big).await {
        Err(DataError::Refused(why)) => assert!(why.contains("more than the app's disk"), "{why}"),
        other => panic!("refused for the disk: {other:?}"),
    }
    assert_eq!(files(&g.folder), kept);
    nothing_staged(&g.folder).await;

    // A stranger's request, for either direction.
    let stranger = Keypair::from_seed([10; 32]);
    let request = DataRequest::sign(&stranger, GRID, CONTRACT, DataOp::Export);
    let theirs = work.path().join("theirs.tar");
    match appdata::export(&g.client, g.node.peer_id(), &request, &theirs, |_, _| {}).await {
        Err(DataError::Refused(why)) => assert!(why.contains("owner"), "{why}"),
        other => panic!("a stranger refused: {other:?}"),
    }
    assert!(!theirs.exists());
    match import(&g, &stranger, &out).await {
        Err(DataError::Refused(why)) => assert!(why.contains("owner"), "{why}"),
        other => panic!("a stranger refused: {other:?}"),
    }

    // An archive other than the one signed.
    let small = work.path().join("small.tar");
    archive(&small, &[("other", b"not what was signed")]);
    let (_, bytes, _) = appdata::scan(&small).expect("valid");
    let request = DataRequest::sign(
        &owner,
        GRID,
        CONTRACT,
        DataOp::Import {
            bytes,
            hash: [0; 32],
        },
    );
    match appdata::import(&g.client, g.node.peer_id(), &request, &small, |_| {}).await {
        Err(DataError::Refused(why)) => assert!(why.contains("not the one signed"), "{why}"),
        other => panic!("refused for its hash: {other:?}"),
    }
    assert_eq!(files(&g.folder), kept);
    nothing_staged(&g.folder).await;

    // An upload cut short (the peer leaves half-way): the node gives up on it.
    let mid = work.path().join("mid.tar");
    archive(&mid, &[("fits", &vec![5u8; 4 << 20])]);
    let (_, bytes, hash) = appdata::scan(&mid).expect("valid");
    let request = DataRequest::sign(&owner, GRID, CONTRACT, DataOp::Import { bytes, hash });
    let mut stream = g
        .client
        .open_stream(g.node.peer_id(), appdata::DATA_PROTOCOL)
        .await
        .expect("a stream");
    let body = borsh::to_vec(&request).expect("encode");
    stream
        .write_all(&(body.len() as u32).to_le_bytes())
        .await
        .expect("send");
    stream.write_all(&body).await.expect("send");
    let mut ready = [0u8; 5];
    stream.read_exact(&mut ready).await.expect("READY");
    let half = std::fs::read(&mid).expect("read");
    stream
        .write_all(&half[..half.len() / 2])
        .await
        .expect("send");
    stream.flush().await.expect("send");
    drop(stream);
    assert_eq!(files(&g.folder), kept);
    nothing_staged(&g.folder).await;

    // And the owner's next import goes through.
    let report = import(&g, &owner, &small).await.expect("import");
    assert_eq!(report.unpacked.files, 1);
    assert_eq!(
        files(&g.folder),
        BTreeMap::from([(PathBuf::from("other"), b"not what was signed".to_vec())])
    );
}
