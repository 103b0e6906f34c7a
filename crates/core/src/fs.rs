//! Files written so that a crash at any moment leaves the old content or the new, never
//! half of either.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Write `bytes` to `path` atomically: a temporary file beside it, synced, renamed over it,
/// and the folder synced so the rename survives a power loss. Creates the folder.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write(path, bytes, None, true)
}

/// Like [`write_atomic`], but only where no file is: an existing one is left as it is and
/// the error's kind is [`std::io::ErrorKind::AlreadyExists`].
pub fn write_new_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write(path, bytes, None, false)
}

/// Like [`write_atomic`], readable and writable by the owner only (mode 0600): for keys.
pub fn write_private_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write(path, bytes, Some(0o600), true)
}

fn write(path: &Path, bytes: &[u8], mode: Option<u32>, replace: bool) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&dir)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // Unique per process and call: two writers of one file never share a temporary.
    let mut salt = [0u8; 8];
    let _ = getrandom::fill(&mut salt);
    let tmp = dir.join(format!(
        ".{name}.tmp.{}.{:016x}",
        std::process::id(),
        u64::from_le_bytes(salt)
    ));
    let result = (|| {
        let mut options = fs::OpenOptions::new();
        options.write(true).create_new(true);
        if let Some(mode) = mode {
            options.mode(mode);
        }
        let mut f = options.open(&tmp)?;
        if let Some(mode) = mode {
            // The mode above is masked by the umask; set it explicitly as well.
            f.set_permissions(fs::Permissions::from_mode(mode))?;
        }
        f.write_all(bytes)?;
        f.sync_all()?;
        if replace {
            fs::rename(&tmp, path)?;
        } else {
            // A link fails where a file already is, so nothing is ever replaced.
            fs::hard_link(&tmp, path)?;
            fs::remove_file(&tmp)?;
        }
        fs::File::open(&dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_replaces_the_file_whole_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let path = dir.path().join("sub/file.json");
        write_atomic(&path, b"old").expect("first write");
        write_atomic(&path, b"new content").expect("second write");
        assert_eq!(fs::read(&path).expect("read"), b"new content");
        let names: Vec<_> = fs::read_dir(dir.path().join("sub"))
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, ["file.json"], "only the file, no temporary");
    }

    #[test]
    fn a_new_file_never_replaces_one() {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let path = dir.path().join("genesis.toml");
        write_new_atomic(&path, b"first").expect("no file yet");
        let again = write_new_atomic(&path, b"second").expect_err("a file is there");
        assert_eq!(again.kind(), std::io::ErrorKind::AlreadyExists);
        assert_eq!(fs::read(&path).expect("read"), b"first");
        assert_eq!(
            fs::read_dir(dir.path()).expect("list").count(),
            1,
            "no temporary"
        );
    }

    #[test]
    fn a_private_file_is_the_owners_alone() {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let path = dir.path().join("key.json");
        write_private_atomic(&path, b"secret").expect("write");
        let mode = fs::metadata(&path).expect("metadata").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn a_failed_write_leaves_the_old_content() {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let path = dir.path().join("file");
        write_atomic(&path, b"old").expect("write");
        // A folder where the file's folder should be: the write fails, the old file stays.
        let blocked = path.join("inside");
        assert!(write_atomic(&blocked, b"x").is_err());
        assert_eq!(fs::read(&path).expect("read"), b"old");
    }
}
