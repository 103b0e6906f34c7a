//! An app's `/data` folder as a tar archive: packed without ever following a link, and
//! unpacked with limits.
//!
//! The folder is the tenant's: its app can make links and rename entries while the node
//! reads it. [`pack`] therefore walks it by directory handles, opening each entry by its
//! name in its parent's handle with `O_NOFOLLOW`, so an entry swapped for a link
//! meanwhile is skipped, never followed out of the folder.
//!
//! [`unpack`] reads the archive's raw entries and resolves GNU long names and pax headers
//! itself, each held to a few KiB (the tar reader would load them whole, however large).
//! It refuses: anything but files, folders and symbolic links; a name that leaves the
//! folder or passes through a link or file; a name given twice; more disk than the
//! quota, counted as `/data`'s quota counts; with a [`DiskReserve`], a file that would
//! eat into the node's reserve; and an archive without tar's end-of-archive block (one
//! cut between entries). A link's target is kept as it is, wherever it points: nothing
//! on the node follows a link in `/data` (walks use `lstat` or handles opened with
//! `O_NOFOLLOW`, removal does not follow), and the app's sandbox never follows one out
//! of the folder; an app may well have made one itself.
//!
//! Pack and unpack hold paths to the same limits ([`DEPTH_MAX`] names, each at most 255
//! bytes, [`PATH_BYTES_MAX`] in all, no NUL): what a pack writes can be unpacked, and
//! what it refuses could not have been.

use std::cell::Cell;
use std::ffi::{OsStr, OsString};
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::rc::Rc;
use std::time::Duration;

use peergrid_compute::data::{ENTRY_BYTES_MIN, in_blocks, usage};
use peergrid_core::fs::DiskReserve;
use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use serde::{Deserialize, Serialize};

/// Longest path or link target accepted: under Linux's 4096, with room for the node's
/// own folders before it.
pub const PATH_BYTES_MAX: usize = 3840;
/// Most names in a path (a pack holds one handle open per folder level).
pub const DEPTH_MAX: usize = 128;
/// Longest name in a path.
const NAME_BYTES_MAX: usize = 255;
/// Largest GNU long-name or pax header accepted.
const EXTENSION_BYTES_MAX: u64 = 64 * 1024;
/// tar's block.
const BLOCK: u64 = 512;

/// What a pack holds, announced before its bytes.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, borsh::BorshSerialize, borsh::BorshDeserialize,
)]
pub struct Contents {
    /// Files, folders and links.
    pub entries: u64,
    /// The files' bytes.
    pub bytes: u64,
}

/// What an archive holds, as it unpacks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unpacked {
    /// Regular files.
    pub files: u64,
    /// Folders, those made for a path's parents included.
    pub folders: u64,
    /// Symbolic links.
    pub links: u64,
    /// The files' bytes.
    pub file_bytes: u64,
    /// What it takes of an app's disk, counted as `/data`'s quota counts.
    pub disk_bytes: u64,
}

// ---------------------------------------------------------------------------------------
// Packing

/// One entry met by [`walk`].
enum Found {
    Folder,
    /// A regular file, opened (when asked) without following a link, and its length.
    File(Option<std::fs::File>, u64),
    Link(OsString),
}

/// Walks the folder at `root` by handles, a folder before what it holds and names sorted,
/// never following a link; what is neither file, folder nor link (the guest cannot make
/// one), and what vanishes or changes kind meanwhile, is skipped. With `open`, files are
/// handed over open.
fn walk(
    root: &Path,
    open: bool,
    mut visit: impl FnMut(&Path, Found, u64) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let top = rustix::fs::openat(rustix::fs::CWD, root, FOLDER, Mode::empty())?;
    let inner = names(&top)?;
    // One handle per level under way, with the names left to visit there.
    let mut levels: Vec<(OwnedFd, PathBuf, std::vec::IntoIter<OsString>)> =
        vec![(top, PathBuf::new(), inner.into_iter())];
    loop {
        let Some((dir, rel, left)) = levels.last_mut() else {
            return Ok(());
        };
        let Some(name) = left.next() else {
            levels.pop();
            continue;
        };
        let path = rel.join(&name);
        // What an import would refuse is not packed: a backup must come back.
        inside(&path).map_err(std::io::Error::other)?;
        if let Some((sub, inner)) = step(dir, &name, &path, open, &mut visit)? {
            levels.push((sub, path, inner.into_iter()));
        }
    }
}

/// How folders are opened: never through a link.
const FOLDER: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

/// Visits the entry `name` of the folder `dir`; a folder's handle and names are returned
/// for the walk to go into.
fn step(
    dir: &OwnedFd,
    name: &OsStr,
    path: &Path,
    open: bool,
    visit: &mut impl FnMut(&Path, Found, u64) -> std::io::Result<()>,
) -> std::io::Result<Option<(OwnedFd, Vec<OsString>)>> {
    use rustix::io::Errno;
    let stat = match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(stat) => stat,
        Err(Errno::NOENT) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let mtime = u64::try_from(stat.st_mtime).unwrap_or(0);
    match FileType::from_raw_mode(stat.st_mode) {
        FileType::Directory => {
            let sub = match rustix::fs::openat(dir, name, FOLDER, Mode::empty()) {
                Ok(sub) => sub,
                // Gone, or swapped for a link or a file since its stat.
                Err(Errno::NOENT | Errno::LOOP | Errno::NOTDIR) => return Ok(None),
                Err(e) => return Err(e.into()),
            };
            let inner = names(&sub)?;
            visit(path, Found::Folder, mtime)?;
            return Ok(Some((sub, inner)));
        }
        FileType::RegularFile if open => {
            if let Some(file) = open_file_at(dir, name)? {
                let len = file.metadata()?.len();
                visit(path, Found::File(Some(file), len), mtime)?;
            }
        }
        FileType::RegularFile => {
            let len = u64::try_from(stat.st_size).unwrap_or(0);
            visit(path, Found::File(None, len), mtime)?;
        }
        FileType::Symlink => match rustix::fs::readlinkat(dir, name, Vec::new()) {
            Ok(target) => {
                let target = OsStr::from_bytes(target.as_bytes()).to_os_string();
                visit(path, Found::Link(target), mtime)?;
            }
            Err(Errno::NOENT | Errno::INVAL) => {}
            Err(e) => return Err(e.into()),
        },
        _ => {}
    }
    Ok(None)
}

/// The names in the folder `dir`, sorted.
fn names(dir: &OwnedFd) -> std::io::Result<Vec<OsString>> {
    let mut names = Vec::new();
    for entry in rustix::fs::Dir::read_from(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_bytes();
        if name != b"." && name != b".." {
            names.push(OsStr::from_bytes(name).to_os_string());
        }
    }
    names.sort();
    Ok(names)
}

/// The regular file `name` in the folder `dir`, opened without following a link; `None`
/// when it is gone, a link, or no longer a regular file.
fn open_file_at(dir: impl AsFd, name: &OsStr) -> std::io::Result<Option<std::fs::File>> {
    // Non-blocking, so that a FIFO swapped in cannot hold the open.
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK;
    let fd = match rustix::fs::openat(dir, name, flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::NOENT | rustix::io::Errno::LOOP) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let file = std::fs::File::from(fd);
    Ok(file.metadata()?.is_file().then_some(file))
}

/// What the folder at `root` holds now, by the same walk as [`pack`].
pub fn contents(root: &Path) -> std::io::Result<Contents> {
    let mut n = Contents::default();
    walk(root, false, |_, found, _| {
        n.entries += 1;
        if let Found::File(_, len) = found {
            n.bytes = n.bytes.saturating_add(len);
        }
        Ok(())
    })?;
    Ok(n)
}

/// The tar of the folder at `root`, written to `out`: each file as long as it was when
/// opened (cut or padded with zeros if the app changes it meanwhile, so the archive stays
/// whole).
pub fn pack(root: &Path, out: impl Write) -> std::io::Result<()> {
    let mut tar = tar::Builder::new(out);
    walk(root, true, |path, found, mtime| {
        let mut header = tar::Header::new_gnu();
        header.set_mtime(mtime);
        match found {
            Found::Folder => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_mode(0o755);
                header.set_size(0);
                tar.append_data(&mut header, path, std::io::empty())
            }
            Found::Link(target) => {
                header.set_entry_type(tar::EntryType::Symlink);
                header.set_mode(0o777);
                header.set_size(0);
                tar.append_link(&mut header, path, target)
            }
            Found::File(file, len) => {
                header.set_entry_type(tar::EntryType::Regular);
                header.set_mode(0o644);
                header.set_size(len);
                let file = file.ok_or(std::io::ErrorKind::NotFound)?;
                let bytes = file.take(len).chain(std::io::repeat(0)).take(len);
                tar.append_data(&mut header, path, bytes)
            }
        }
    })?;
    tar.into_inner()?.flush()
}

// ---------------------------------------------------------------------------------------
// Unpacking

/// Counts what the tar reader takes from its input.
struct Counting<R> {
    inner: R,
    count: Rc<Cell<u64>>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(out)?;
        self.count.set(self.count.get() + n as u64);
        Ok(n)
    }
}

/// The entry's path inside the folder: relative, nothing but names (`.` dropped); `None`
/// for the folder itself.
fn inside(path: &Path) -> Result<Option<PathBuf>, String> {
    let shown = || path.to_string_lossy().chars().take(60).collect::<String>();
    if path.as_os_str().len() > PATH_BYTES_MAX {
        return Err(format!(
            "a path longer than {PATH_BYTES_MAX} bytes: {}…",
            shown()
        ));
    }
    if path.as_os_str().as_bytes().contains(&0) {
        return Err(format!("a name with a NUL byte: {}…", shown()));
    }
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            Component::Normal(name) if name.len() > NAME_BYTES_MAX => {
                return Err(format!(
                    "a name longer than {NAME_BYTES_MAX} bytes in {}…",
                    shown()
                ));
            }
            Component::Normal(name) => out.push(name),
            Component::CurDir => {}
            _ => {
                return Err(format!(
                    "{path:?} leaves the folder (an absolute path or `..`): only paths inside /data can be imported"
                ));
            }
        }
    }
    if out.components().count() > DEPTH_MAX {
        return Err(format!(
            "a path more than {DEPTH_MAX} names deep: {}…",
            shown()
        ));
    }
    Ok((!out.as_os_str().is_empty()).then_some(out))
}

/// Why an archive cannot be read, after `read` entries: the tar reader's words, which may
/// quote the bytes it choked on, kept to printable text.
fn damaged(read: u64, e: &std::io::Error) -> String {
    if read == 0 {
        return "not a tar archive; make one with `peergrid app data export`, or `tar -cf ARCHIVE -C FOLDER .`".to_string();
    }
    let why: String = e
        .to_string()
        .chars()
        .filter(|c| c.is_ascii_graphic() || *c == ' ')
        .take(120)
        .collect();
    format!("the archive is damaged after {read} entries ({why})")
}

fn human(bytes: u64) -> String {
    peergrid_core::capacity::human_bytes(bytes)
}

/// What an archive's entry is.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    File,
    Folder,
    Link,
}

/// The entries met so far: by name for a scan; for an unpack, the new folder itself
/// (which only the unpack writes), so that memory does not grow with the archive.
enum Seen {
    Names(std::collections::HashMap<PathBuf, Kind>),
    Disk(PathBuf),
}

impl Seen {
    fn get(&self, name: &Path) -> Result<Option<Kind>, String> {
        match self {
            Seen::Names(names) => Ok(names.get(name).copied()),
            Seen::Disk(dest) => match dest.join(name).symlink_metadata() {
                Ok(meta) if meta.is_dir() => Ok(Some(Kind::Folder)),
                Ok(meta) if meta.is_symlink() => Ok(Some(Kind::Link)),
                Ok(_) => Ok(Some(Kind::File)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(format!("cannot check {name:?}: {e}")),
            },
        }
    }

    fn insert(&mut self, name: &Path, kind: Kind) {
        if let Seen::Names(names) = self {
            names.insert(name.to_path_buf(), kind);
        }
    }
}

/// What the extension headers before an entry said.
#[derive(Default)]
struct Extended {
    long_name: Option<Vec<u8>>,
    long_link: Option<Vec<u8>>,
    pax: Option<Vec<u8>>,
}

impl Extended {
    fn any(&self) -> bool {
        self.long_name.is_some() || self.long_link.is_some() || self.pax.is_some()
    }
}

/// A pax record's value, if the header has it.
fn pax_value<'a>(pax: Option<&'a [u8]>, key: &str) -> Result<Option<&'a [u8]>, String> {
    let Some(pax) = pax else {
        return Ok(None);
    };
    for record in tar::PaxExtensions::new(pax) {
        let record = record.map_err(|e| format!("a pax header cannot be read: {e}"))?;
        if record.key_bytes() == key.as_bytes() {
            return Ok(Some(record.value_bytes()));
        }
    }
    Ok(None)
}

fn trim_nul(mut bytes: Vec<u8>) -> Vec<u8> {
    while bytes.last() == Some(&0) {
        bytes.pop();
    }
    bytes
}

/// Reads the tar archive from `input` and, with `dest` (a new, empty folder), unpacks it
/// there; the rules are in the module's description. Nothing is synced to disk: the
/// caller syncs once, before it uses the folder.
pub fn unpack(
    input: impl Read,
    dest: Option<&Path>,
    quota_bytes: u64,
    reserve: Option<&DiskReserve>,
) -> Result<Unpacked, String> {
    let mut seen = match dest {
        Some(dest) => Seen::Disk(dest.to_path_buf()),
        None => Seen::Names(std::collections::HashMap::new()),
    };
    let mut n = Unpacked::default();
    let over = |n: &Unpacked, at: &Path| {
        format!(
            "the archive takes more than the app's disk: {} by {at:?}, past its {}; give it a larger --disk first (`peergrid app update NAME --disk SIZE`)",
            human(n.disk_bytes),
            human(quota_bytes)
        )
    };
    let count = Rc::new(Cell::new(0u64));
    let mut archive = tar::Archive::new(Counting {
        inner: input,
        count: count.clone(),
    });
    let entries = archive.entries().map_err(|e| damaged(0, &e))?.raw(true);
    let mut extended = Extended::default();
    // Where the newest entry's bytes end: tar's end-of-archive block must follow.
    let mut end = 0u64;
    let mut read = 0u64;
    for entry in entries {
        let mut entry = entry.map_err(|e| damaged(read, &e))?;
        read += 1;
        let ty = entry.header().entry_type();
        let size = entry.size();
        end = entry
            .raw_file_position()
            .saturating_add(size.div_ceil(BLOCK).saturating_mul(BLOCK));
        if ty.is_gnu_longname()
            || ty.is_gnu_longlink()
            || ty.is_pax_local_extensions()
            || ty.is_pax_global_extensions()
        {
            if size > EXTENSION_BYTES_MAX {
                return Err(format!(
                    "an extended header of {size} bytes, more than the {EXTENSION_BYTES_MAX} allowed (names and links are at most {PATH_BYTES_MAX} bytes)"
                ));
            }
            let mut bytes = Vec::with_capacity(size as usize);
            (&mut entry)
                .take(size)
                .read_to_end(&mut bytes)
                .map_err(|e| damaged(read, &e))?;
            if bytes.len() as u64 != size {
                return Err("the archive ends inside an extended header".to_string());
            }
            let slot = if ty.is_gnu_longname() {
                Some((&mut extended.long_name, trim_nul(bytes)))
            } else if ty.is_gnu_longlink() {
                Some((&mut extended.long_link, trim_nul(bytes)))
            } else if ty.is_pax_local_extensions() {
                Some((&mut extended.pax, bytes))
            } else {
                // Global pax records (`git archive` writes one) say nothing we keep.
                None
            };
            if let Some((slot, bytes)) = slot {
                if slot.is_some() {
                    return Err(
                        "two extended headers of one kind for one entry: the archive is damaged"
                            .to_string(),
                    );
                }
                *slot = Some(bytes);
            }
            continue;
        }
        let ext = std::mem::take(&mut extended);
        let header_name = entry.header().path_bytes().into_owned();
        let name_bytes = match pax_value(ext.pax.as_deref(), "path")? {
            Some(path) => path.to_vec(),
            None => ext.long_name.unwrap_or(header_name),
        };
        let raw = PathBuf::from(OsStr::from_bytes(&name_bytes));
        if let Some(pax_size) = pax_value(ext.pax.as_deref(), "size")? {
            let same = std::str::from_utf8(pax_size)
                .ok()
                .and_then(|s| s.parse::<u64>().ok())
                == Some(size);
            if !same {
                return Err(format!(
                    "{raw:?} has a pax size apart from its header's (a file over 8 GiB in a POSIX archive): make the archive with `tar --format=gnu`"
                ));
            }
        }
        let kind = match ty {
            tar::EntryType::Regular | tar::EntryType::Continuous => Kind::File,
            tar::EntryType::Directory => Kind::Folder,
            tar::EntryType::Symlink => Kind::Link,
            tar::EntryType::Link => {
                return Err(format!(
                    "{raw:?} is a hard link: archive its files without them (tar --hard-dereference)"
                ));
            }
            other => {
                return Err(format!(
                    "{raw:?} is a {other:?} entry: only files, folders and symbolic links can be imported"
                ));
            }
        };
        let Some(name) = inside(&raw)? else {
            if kind == Kind::Folder {
                continue;
            }
            return Err(format!("{raw:?} has no name"));
        };
        // Each parent a folder of the archive's own (made if the archive did not list it).
        let mut parent = PathBuf::new();
        let parts: Vec<_> = name.components().collect();
        for part in &parts[..parts.len() - 1] {
            parent.push(part);
            match seen.get(&parent)? {
                Some(Kind::Folder) => {}
                Some(_) => {
                    return Err(format!(
                        "{name:?} is under {parent:?}, which the archive holds as a file or link"
                    ));
                }
                None => {
                    if let Some(dest) = dest {
                        std::fs::create_dir(dest.join(&parent))
                            .map_err(|e| format!("cannot make folder {parent:?}: {e}"))?;
                    }
                    seen.insert(&parent, Kind::Folder);
                    n.folders += 1;
                    n.disk_bytes = n.disk_bytes.saturating_add(ENTRY_BYTES_MIN);
                }
            }
        }
        match seen.get(&name)? {
            Some(Kind::Folder) if kind == Kind::Folder => continue,
            Some(_) => return Err(format!("{name:?} is in the archive twice")),
            None => {}
        }
        let took = match kind {
            Kind::File => ENTRY_BYTES_MIN.saturating_add(in_blocks(size)),
            _ => ENTRY_BYTES_MIN,
        };
        n.disk_bytes = n.disk_bytes.saturating_add(took);
        if n.disk_bytes > quota_bytes {
            return Err(over(&n, &name));
        }
        seen.insert(&name, kind);
        let target = if kind == Kind::Link {
            let bytes = match pax_value(ext.pax.as_deref(), "linkpath")? {
                Some(link) => link.to_vec(),
                None => match ext.long_link {
                    Some(link) => link,
                    None => entry
                        .header()
                        .link_name_bytes()
                        .map(|l| l.into_owned())
                        .unwrap_or_default(),
                },
            };
            if bytes.is_empty() || bytes.len() > PATH_BYTES_MAX || bytes.contains(&0) {
                return Err(format!(
                    "{name:?} links to an empty or too long target, or one with a NUL byte"
                ));
            }
            let target = PathBuf::from(OsStr::from_bytes(&bytes));
            Some(target)
        } else {
            None
        };
        match kind {
            Kind::Folder => n.folders += 1,
            Kind::Link => n.links += 1,
            Kind::File => {
                n.files += 1;
                n.file_bytes = n.file_bytes.saturating_add(size);
            }
        }
        let Some(dest) = dest else {
            continue;
        };
        let path = dest.join(&name);
        match (kind, target) {
            (Kind::Folder, _) => std::fs::create_dir(&path)
                .map_err(|e| format!("cannot make folder {name:?}: {e}"))?,
            (Kind::Link, Some(target)) => std::os::unix::fs::symlink(&target, &path)
                .map_err(|e| format!("cannot make link {name:?}: {e}"))?,
            (Kind::Link, None) => {}
            (Kind::File, _) => {
                if let Some(reserve) = reserve {
                    reserve.check(dest, size, 0).map_err(|full| {
                        format!(
                            "the node's disk has no room for {name:?} ({} free, {} kept for the node itself); ask its farmer, or import to another replica",
                            human(full.free_bytes),
                            human(full.reserve_bytes)
                        )
                    })?;
                }
                let mut file = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&path)
                    .map_err(|e| format!("cannot make file {name:?}: {e}"))?;
                let copied = std::io::copy(&mut (&mut entry).take(size), &mut file)
                    .map_err(|e| format!("cannot write {name:?}: {e}"))?;
                if copied != size {
                    return Err(format!(
                        "the archive ends inside {name:?} ({copied} of its {size} bytes)"
                    ));
                }
                let mtime = entry.header().mtime().ok();
                if let Some(at) =
                    mtime.and_then(|s| std::time::UNIX_EPOCH.checked_add(Duration::from_secs(s)))
                {
                    let _ = file.set_modified(at);
                }
            }
        }
    }
    if extended.any() || count.get() < end.saturating_add(BLOCK) {
        return Err(if read == 0 {
            "an empty file, not a tar archive".to_string()
        } else {
            format!(
                "the archive is cut: it ends after {read} entries without tar's end-of-archive block; make it again"
            )
        });
    }
    if let Some(dest) = dest {
        // Folders that hold many names take more than one block: the quota's own walk has
        // the last word.
        let walked = usage(dest).map_err(|e| format!("cannot measure what was unpacked: {e}"))?;
        n.disk_bytes = n.disk_bytes.max(walked);
        if n.disk_bytes > quota_bytes {
            return Err(over(&n, Path::new("its folders")));
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(dir: &Path) {
        std::fs::create_dir_all(dir.join("a/b")).expect("test setup");
        std::fs::create_dir(dir.join("empty")).expect("test setup");
        std::fs::write(dir.join("top.txt"), b"top").expect("test setup");
        std::fs::write(dir.join("a/b/deep.bin"), vec![7u8; 70_000]).expect("test setup");
        std::fs::write(dir.join("a/zero"), b"").expect("test setup");
        let long = "n".repeat(120);
        std::fs::write(dir.join("a").join(&long), b"long name").expect("test setup");
        std::os::unix::fs::symlink("b/deep.bin", dir.join("a/link")).expect("test setup");
    }

    fn packed(dir: &Path) -> Vec<u8> {
        let mut out = Vec::new();
        pack(dir, &mut out).expect("pack");
        out
    }

    /// Every entry under `dir`: name, kind, content or target.
    fn listing(dir: &Path) -> Vec<(PathBuf, String)> {
        let mut out = Vec::new();
        walk(dir, true, |path, found, _| {
            let what = match found {
                Found::Folder => "folder".to_string(),
                Found::Link(target) => format!("link {target:?}"),
                Found::File(Some(mut file), _) => {
                    let mut bytes = Vec::new();
                    file.read_to_end(&mut bytes)?;
                    format!("file {}", blake3::hash(&bytes))
                }
                Found::File(None, _) => "unopened".to_string(),
            };
            out.push((path.to_path_buf(), what));
            Ok(())
        })
        .expect("walk");
        out
    }

    fn fresh(root: &Path) -> PathBuf {
        let dest = root.join("data");
        std::fs::create_dir(&dest).expect("test setup");
        dest
    }

    #[test]
    fn a_folder_comes_back_as_it_was() {
        let from = tempfile::tempdir().expect("test setup");
        tree(from.path());
        let archive = packed(from.path());
        let to = tempfile::tempdir().expect("test setup");
        let dest = fresh(to.path());
        let n = unpack(&archive[..], Some(&dest), 1 << 30, None).expect("unpack");
        assert_eq!(listing(from.path()), listing(&dest));
        assert_eq!((n.files, n.folders, n.links), (4, 3, 1));
        assert_eq!(n.file_bytes, 3 + 70_000 + 9);
        // Counted as the quota's walk counts it.
        assert_eq!(n.disk_bytes, usage(&dest).expect("walk"));
        assert_eq!(n.disk_bytes, usage(from.path()).expect("walk"));
        // A scan without a folder counts the same; the announced contents agree.
        let scanned = unpack(&archive[..], None, u64::MAX, None).expect("scan");
        assert_eq!(scanned, n);
        let c = contents(from.path()).expect("contents");
        assert_eq!((c.entries, c.bytes), (8, n.file_bytes));
        // GNU tar pads an archive to 10 KiB records: the padding is no entry.
        let mut padded = archive.clone();
        padded.resize(archive.len().div_ceil(10240) * 10240 + 10240, 0);
        assert_eq!(unpack(&padded[..], None, u64::MAX, None), Ok(n));
    }

    #[test]
    fn an_archive_past_the_quota_is_refused() {
        let from = tempfile::tempdir().expect("test setup");
        tree(from.path());
        let archive = packed(from.path());
        let need = usage(from.path()).expect("walk");
        let to = tempfile::tempdir().expect("test setup");
        let e = unpack(&archive[..], Some(&fresh(to.path())), need - 1, None)
            .expect_err("past the quota");
        assert!(e.contains("more than the app's disk"), "{e}");
        let again = tempfile::tempdir().expect("test setup");
        unpack(&archive[..], Some(&fresh(again.path())), need, None)
            .expect("exactly the quota fits");
    }

    #[test]
    fn links_are_never_followed_out_of_the_folder() {
        let root = tempfile::tempdir().expect("test setup");
        let outside = root.path().join("outside");
        std::fs::create_dir(&outside).expect("test setup");
        std::fs::write(outside.join("secret"), b"the node's own").expect("test setup");
        let data = fresh(root.path());
        std::fs::write(data.join("mine"), b"the app's").expect("test setup");
        std::os::unix::fs::symlink("../outside", data.join("dir-link")).expect("test setup");
        std::os::unix::fs::symlink("../outside/secret", data.join("file-link"))
            .expect("test setup");
        let archive = packed(&data);
        assert!(
            !archive
                .windows(b"the node's own".len())
                .any(|w| w == b"the node's own"),
            "nothing outside is read"
        );
        // An entry swapped for a link after it was listed: opened by name with
        // O_NOFOLLOW in its folder's handle, it is skipped.
        let dir = rustix::fs::openat(
            rustix::fs::CWD,
            &data,
            OFlags::RDONLY | OFlags::DIRECTORY,
            Mode::empty(),
        )
        .expect("open");
        assert!(
            open_file_at(&dir, OsStr::new("file-link"))
                .expect("open")
                .is_none()
        );
        assert!(
            open_file_at(&dir, OsStr::new("mine"))
                .expect("open")
                .is_some()
        );
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW;
        assert!(rustix::fs::openat(&dir, "dir-link", flags, Mode::empty()).is_err());
        // Such links come back as links (an app may have made them; nothing on the node
        // follows a link in /data, nor does the app's sandbox out of it), and nothing is
        // written through them.
        let to = tempfile::tempdir().expect("test setup");
        let dest = fresh(to.path());
        unpack(&archive[..], Some(&dest), 1 << 30, None).expect("unpack");
        assert_eq!(
            std::fs::read_link(dest.join("dir-link")).expect("a link"),
            Path::new("../outside")
        );
        assert_eq!(std::fs::read_dir(to.path()).expect("read").count(), 1);
    }

    /// A raw archive of `entries` (path, type, body, link), each header written as given.
    fn archive_of(entries: &[(&str, tar::EntryType, &[u8], Option<&str>)]) -> Vec<u8> {
        let mut tar = tar::Builder::new(Vec::new());
        for (path, kind, body, link) in entries {
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(*kind);
            header.set_size(body.len() as u64);
            header.set_mode(0o644);
            // Written raw: the builder itself refuses `..`.
            let name = &mut header.as_old_mut().name;
            name[..path.len()].copy_from_slice(path.as_bytes());
            if let Some(link) = link {
                header.set_link_name(link).expect("test setup");
            }
            header.set_cksum();
            tar.append(&header, *body).expect("test setup");
        }
        tar.into_inner().expect("test setup")
    }

    #[test]
    fn hostile_archives_are_refused_and_write_nothing_outside() {
        use tar::EntryType::{Directory, GNULongName, Link, Regular, Symlink, XHeader};
        let huge = vec![b'n'; 100_000];
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (
                archive_of(&[("../escape", Regular, b"x", None)]),
                "leaves the folder",
            ),
            (
                archive_of(&[("/etc/escape", Regular, b"x", None)]),
                "leaves the folder",
            ),
            (
                archive_of(&[
                    ("out", Symlink, b"", Some("sub")),
                    ("out/escape", Regular, b"x", None),
                ]),
                "as a file or link",
            ),
            (
                archive_of(&[
                    ("out", Symlink, b"", Some("/tmp")),
                    ("out/escape", Regular, b"x", None),
                ]),
                "as a file or link",
            ),
            (
                archive_of(&[("f", Regular, b"x", None), ("f/g", Regular, b"y", None)]),
                "as a file or link",
            ),
            (
                archive_of(&[("f", Regular, b"x", None), ("f", Regular, b"y", None)]),
                "twice",
            ),
            (
                archive_of(&[("f", Regular, b"x", None), ("g", Link, b"", Some("f"))]),
                "hard link",
            ),
            (
                archive_of(&[("d", Directory, b"", None), ("d", Regular, b"x", None)]),
                "twice",
            ),
            (
                archive_of(&[("fifo", tar::EntryType::Fifo, b"", None)]),
                "only files, folders and symbolic links",
            ),
            // A long name far past any path, held to a few KiB rather than loaded.
            (
                archive_of(&[
                    ("././@LongLink", GNULongName, &huge, None),
                    ("x", Regular, b"", None),
                ]),
                "extended header of 100000 bytes",
            ),
            (
                archive_of(&[
                    ("pax", XHeader, b"30 path=../escape-by-pax-path\n", None),
                    ("x", Regular, b"", None),
                ]),
                "leaves the folder",
            ),
            (
                archive_of(&[
                    ("pax", XHeader, b"12 size=999\n", None),
                    ("x", Regular, b"y", None),
                ]),
                "pax size",
            ),
            (
                archive_of(&[("././@LongLink", GNULongName, b"dangling", None)]),
                "cut",
            ),
        ];
        for (archive, want) in cases {
            let root = tempfile::tempdir().expect("test setup");
            let e = unpack(&archive[..], Some(&fresh(root.path())), 1 << 30, None).expect_err(want);
            assert!(e.contains(want), "wanted {want:?}, got {e}");
            assert!(!root.path().join("escape").exists());
            // A scan refuses it too, before anything is sent.
            let e = unpack(&archive[..], None, u64::MAX, None).expect_err(want);
            assert!(e.contains(want), "scan: wanted {want:?}, got {e}");
        }
        // A global pax header (as `git archive` writes) is no entry, and a far-future
        // modification time no panic.
        let mut tar = tar::Builder::new(Vec::new());
        let mut global = tar::Header::new_ustar();
        global.set_entry_type(tar::EntryType::XGlobalHeader);
        global.set_size(20);
        global.set_path("pax_global_header").expect("test setup");
        global.set_cksum();
        tar.append(&global, &b"20 comment=abcdefgh\n"[..])
            .expect("test setup");
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(Regular);
        header.set_size(1);
        header.set_mtime(u64::MAX);
        tar.append_data(&mut header, "late", &b"x"[..])
            .expect("test setup");
        let archive = tar.into_inner().expect("test setup");
        let root = tempfile::tempdir().expect("test setup");
        let n = unpack(&archive[..], Some(&fresh(root.path())), 1 << 30, None).expect("unpack");
        assert_eq!((n.files, n.folders), (1, 0));
    }

    #[test]
    fn pack_and_unpack_hold_paths_to_the_same_limits() {
        let root = tempfile::tempdir().expect("test setup");
        let data = fresh(root.path());
        let mut deep = data.clone();
        for _ in 0..DEPTH_MAX {
            deep.push("d");
        }
        std::fs::create_dir_all(&deep).expect("test setup");
        let archive = packed(&data);
        let to = tempfile::tempdir().expect("test setup");
        unpack(&archive[..], Some(&fresh(to.path())), 1 << 30, None).expect("as deep as allowed");
        std::fs::create_dir(deep.join("d")).expect("test setup");
        let e = pack(&data, Vec::new()).expect_err("one deeper");
        assert!(e.to_string().contains("names deep"), "{e}");
        assert!(inside(Path::new(&"n".repeat(256))).is_err());
        assert!(inside(Path::new(std::ffi::OsStr::from_bytes(b"a\0b"))).is_err());
        assert!(inside(Path::new(&"a/".repeat(PATH_BYTES_MAX / 2 + 1))).is_err());
    }

    #[test]
    fn a_cut_or_empty_archive_is_refused() {
        let from = tempfile::tempdir().expect("test setup");
        tree(from.path());
        let archive = packed(from.path());
        let root = tempfile::tempdir().expect("test setup");
        // Cut inside a file's bytes, between two entries (before the last, top.txt: a
        // header and one block), and before the end block.
        for cut in [
            archive.len() / 2,
            archive.len() - 2048,
            archive.len() - 1024,
        ] {
            let e = unpack(&archive[..cut], None, u64::MAX, None).expect_err("cut");
            assert!(
                e.contains("cut") || e.contains("ends inside") || e.contains("damaged"),
                "{cut}: {e}"
            );
            let dest = root.path().join(format!("at-{cut}"));
            std::fs::create_dir(&dest).expect("test setup");
            assert!(unpack(&archive[..cut], Some(&dest), 1 << 30, None).is_err());
        }
        let e = unpack(&b""[..], None, u64::MAX, None).expect_err("empty");
        assert!(e.contains("empty file"), "{e}");
        let e = unpack(&b"a text file\n"[..], None, u64::MAX, None).expect_err("no tar");
        assert!(e.contains("not a tar archive"), "{e}");
        // An archive with no entry at all is one: it empties the folder.
        let none = vec![0u8; 1024];
        assert_eq!(
            unpack(&none[..], None, u64::MAX, None),
            Ok(Unpacked::default())
        );
    }

    #[test]
    fn arbitrary_headers_never_panic_nor_escape() {
        use proptest::prelude::*;
        let mut runner = proptest::test_runner::TestRunner::new(proptest::test_runner::Config {
            cases: 128,
            ..Default::default()
        });
        let from = tempfile::tempdir().expect("test setup");
        tree(from.path());
        let archive = packed(from.path());
        runner
            .run(
                &(
                    0..archive.len() / 512,
                    0usize..512,
                    proptest::collection::vec(any::<u8>(), 1..16),
                ),
                |(block, at, bytes)| {
                    // Overwrite part of one block and fix its checksum when it is a
                    // header, so the damage reaches the fields rather than the checksum.
                    let mut damaged = archive.clone();
                    let start = block * 512 + at;
                    for (i, b) in bytes.iter().enumerate() {
                        if let Some(slot) = damaged.get_mut(start + i) {
                            *slot = *b;
                        }
                    }
                    let mut header = tar::Header::new_old();
                    header
                        .as_mut_bytes()
                        .copy_from_slice(&damaged[block * 512..block * 512 + 512]);
                    header.set_cksum();
                    damaged[block * 512..block * 512 + 512].copy_from_slice(header.as_bytes());
                    let root = tempfile::tempdir().expect("test setup");
                    let _ = unpack(&damaged[..], Some(&fresh(root.path())), 1 << 30, None);
                    let _ = unpack(&damaged[..], None, u64::MAX, None);
                    let outside: Vec<_> = std::fs::read_dir(root.path())
                        .expect("read")
                        .map(|e| e.expect("entry").file_name())
                        .collect();
                    prop_assert_eq!(outside, vec![std::ffi::OsString::from("data")]);
                    Ok(())
                },
            )
            .expect("no panic, nothing outside");
    }
}
