//! Files written and read around the page cache (`O_DIRECT`) where the file system
//! allows it: the node's shards, and the file a get writes.
//!
//! A node writes each shard once and reads it rarely, and a get syncs its file as it
//! goes. Through the page cache every byte is first copied into a fresh cache page: on
//! a devnet put that copy was 45 % of all the CPU time on the machine, because the kernel
//! must find, fault in and fill a new page per 4 KiB (dear on a virtual machine that
//! hands freed memory back to its host); and the cache then fills with bytes that push
//! out what the machine does read. Direct I/O moves them between reused buffers and
//! the device.
//!
//! Direct I/O wants the buffer, the file offset and the length aligned to the device's
//! block. Buffers are aligned to [`ALIGN`] (4 KiB, the largest logical block in common
//! use), every write but a file's last is whole blocks, and the last is padded with
//! zeros to the block and the file cut back to its length. A file system that refuses
//! direct I/O (FUSE, some network file systems) at open, or a write or read it refuses
//! as misaligned, is used through the page cache for the rest of that file.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};

/// Alignment of buffers, offsets and lengths for direct I/O.
pub const ALIGN: usize = 4096;

/// A zeroed byte buffer whose first byte is aligned to [`ALIGN`].
///
/// It over-allocates by one block and starts where the allocation is aligned, which
/// needs no `unsafe`: a `Vec`'s heap block does not move when the `Vec` does.
pub struct AlignedBuf {
    vec: Vec<u8>,
    start: usize,
    len: usize,
}

impl AlignedBuf {
    /// A buffer of `len` zero bytes, with room to pad its contents to the next block.
    pub fn zeroed(len: usize) -> AlignedBuf {
        let vec = vec![0u8; len.next_multiple_of(ALIGN) + ALIGN];
        let start = vec.as_ptr().align_offset(ALIGN);
        AlignedBuf { vec, start, len }
    }

    /// The `n` bytes from `from` (a block boundary) and zeros after them up to the next
    /// one; `None` when `from` is not on a boundary.
    fn padded(&mut self, from: usize, n: usize) -> Option<&[u8]> {
        if !from.is_multiple_of(ALIGN) {
            return None;
        }
        let (at, end) = (
            self.start + from,
            self.start + from + n.next_multiple_of(ALIGN),
        );
        // zeroed() leaves a block of room past the end, so this holds for any n it allows.
        self.vec.get_mut(at + n..end)?.fill(0);
        Some(&self.vec[at..end])
    }

    /// Room to read `n` bytes rounded up to the next block boundary.
    fn padded_mut(&mut self, n: usize) -> &mut [u8] {
        let end = self.start + n.next_multiple_of(ALIGN);
        &mut self.vec[self.start..end]
    }
}

/// Buffers given back once written, to be filled again: fresh memory costs more to
/// fault in and zero than the bytes cost to copy.
#[derive(Clone, Default)]
pub struct BufferPool(std::sync::Arc<std::sync::Mutex<Vec<AlignedBuf>>>);

impl BufferPool {
    /// Buffers kept at most: a get holds one per segment in flight (six), eight queued
    /// to its writer, one being written and one being handed over; with fewer kept, every
    /// few segments one was dropped and a fresh one faulted in.
    const KEPT: usize = 16;

    /// A kept buffer of at least `len` bytes, or a new one.
    pub fn take(&self, len: usize) -> AlignedBuf {
        let mut kept = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match kept.iter().position(|b| b.len() >= len) {
            Some(i) => kept.swap_remove(i),
            None => AlignedBuf::zeroed(len),
        }
    }

    /// Keep `buf` for a later `take`.
    pub fn give(&self, buf: AlignedBuf) {
        let mut kept = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if kept.len() < Self::KEPT && !buf.is_empty() {
            kept.push(buf);
        }
    }
}

/// An empty buffer, a placeholder while a real one is lent out.
impl Default for AlignedBuf {
    fn default() -> AlignedBuf {
        AlignedBuf {
            vec: Vec::new(),
            start: 0,
            len: 0,
        }
    }
}

impl Deref for AlignedBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.vec[self.start..self.start + self.len]
    }
}

impl DerefMut for AlignedBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        &mut self.vec[self.start..self.start + self.len]
    }
}

#[cfg(target_os = "linux")]
fn open_direct(options: &mut OpenOptions) -> &mut OpenOptions {
    use std::os::unix::fs::OpenOptionsExt;
    options.custom_flags(rustix::fs::OFlags::DIRECT.bits() as i32)
}

#[cfg(not(target_os = "linux"))]
fn open_direct(options: &mut OpenOptions) -> &mut OpenOptions {
    options
}

fn refused_direct(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::InvalidInput
}

/// A file opened with direct I/O if its file system takes it, through the cache if not.
fn open(path: &Path, options: impl Fn() -> OpenOptions) -> std::io::Result<(File, bool)> {
    if cfg!(target_os = "linux") {
        match open_direct(&mut options()).open(path) {
            Ok(file) => return Ok((file, true)),
            Err(e) if refused_direct(&e) => {}
            Err(e) => return Err(e),
        }
    }
    Ok((options().open(path)?, false))
}

/// A file being written from [`AlignedBuf`]s, around the page cache where it can be.
pub struct DirectWriter {
    file: File,
    path: PathBuf,
    direct: bool,
    written: u64,
}

impl DirectWriter {
    /// Create `path`, which must not exist.
    pub fn create(path: &Path) -> std::io::Result<DirectWriter> {
        // Made first without O_DIRECT: a file system that refuses O_DIRECT refuses it only
        // after an O_CREAT open has made the file, and the open through the cache would
        // then find it made.
        OpenOptions::new().write(true).create_new(true).open(path)?;
        let (file, direct) = open(path, || {
            let mut o = OpenOptions::new();
            o.write(true);
            o
        })?;
        Ok(DirectWriter {
            file,
            path: path.to_path_buf(),
            direct,
            written: 0,
        })
    }

    /// Open `path` (created if missing) to write from byte `at` on, dropping what
    /// follows it: `at` 0 starts afresh, a larger one resumes an interrupted write.
    pub fn resume(path: &Path, at: u64) -> std::io::Result<DirectWriter> {
        let (mut file, direct) = open(path, || {
            let mut o = OpenOptions::new();
            o.write(true).create(true).truncate(false);
            o
        })?;
        file.set_len(at)?;
        file.seek(SeekFrom::Start(at))?;
        Ok(DirectWriter {
            file,
            path: path.to_path_buf(),
            direct,
            written: at,
        })
    }

    /// Flush what was written to the device, keeping the file open.
    pub fn sync_data(&self) -> std::io::Result<()> {
        self.file.sync_data()
    }

    /// Whether writes go around the page cache.
    pub fn is_direct(&self) -> bool {
        self.direct
    }

    /// Append `buf[..n]`. Only a file's last write may be shorter than a whole block.
    pub fn write(&mut self, buf: &mut AlignedBuf, n: usize) -> std::io::Result<()> {
        self.write_from(buf, 0, n)
    }

    /// Append `buf[from..from + n]`. Direct only from a block boundary: anything else
    /// goes on through the cache.
    pub fn write_from(
        &mut self,
        buf: &mut AlignedBuf,
        from: usize,
        n: usize,
    ) -> std::io::Result<()> {
        if self.direct {
            let Some(padded) = buf.padded(from, n) else {
                self.buffered()?;
                return self.write_from(buf, from, n);
            };
            match self.file.write_all(padded) {
                Ok(()) => {
                    self.written += n as u64;
                    if !n.is_multiple_of(ALIGN) {
                        self.file.set_len(self.written)?;
                        self.file.seek(SeekFrom::Start(self.written))?;
                    }
                    return Ok(());
                }
                Err(e) if refused_direct(&e) => self.buffered()?,
                Err(e) => return Err(e),
            }
        }
        self.file.write_all(&buf[from..from + n])?;
        self.written += n as u64;
        Ok(())
    }

    /// The same file through the page cache, cut back to what was written whole.
    fn buffered(&mut self) -> std::io::Result<()> {
        self.file = OpenOptions::new().write(true).open(&self.path)?;
        self.file.set_len(self.written)?;
        self.file.seek(SeekFrom::Start(self.written))?;
        self.direct = false;
        Ok(())
    }

    /// Flush the file's bytes and length to the device, and give the file back.
    pub fn sync(self) -> std::io::Result<File> {
        self.file.sync_all()?;
        Ok(self.file)
    }
}

/// A file being read from the start, batch by batch, into [`AlignedBuf`]s, around the
/// page cache where it can be.
pub struct DirectReader {
    file: File,
    path: PathBuf,
    direct: bool,
    read: u64,
}

impl DirectReader {
    /// Open `path` for reading.
    pub fn open(path: &Path) -> std::io::Result<DirectReader> {
        let (file, direct) = open(path, || {
            let mut o = OpenOptions::new();
            o.read(true);
            o
        })?;
        Ok(DirectReader {
            file,
            path: path.to_path_buf(),
            direct,
            read: 0,
        })
    }

    /// The file's length now.
    pub fn file_len(&self) -> std::io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    /// Read the next `n` bytes into `buf[..n]`; fewer left in the file is an error. Only
    /// a file's last read may be shorter than a whole block.
    pub fn read(&mut self, buf: &mut AlignedBuf, n: usize) -> std::io::Result<()> {
        if self.direct {
            match self.read_direct(buf, n) {
                Ok(()) => return Ok(()),
                Err(e) if refused_direct(&e) => {
                    self.file = File::open(&self.path)?;
                    self.file.seek(SeekFrom::Start(self.read))?;
                    self.direct = false;
                }
                Err(e) => return Err(e),
            }
        }
        self.file.read_exact(&mut buf[..n])?;
        self.read += n as u64;
        Ok(())
    }

    /// Whole blocks until `n` bytes are in, or the end of the file comes first; the
    /// file's last block comes back short, so a short read ends the loop.
    fn read_direct(&mut self, buf: &mut AlignedBuf, n: usize) -> std::io::Result<()> {
        let room = buf.padded_mut(n);
        let mut got = 0;
        while got < n {
            match self.file.read(&mut room[got..]) {
                Ok(0) => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "the shard file is shorter than it was",
                    ));
                }
                Ok(k) if got + k < n && !(got + k).is_multiple_of(ALIGN) => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "the shard file is shorter than it was",
                    ));
                }
                Ok(k) => got += k,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // Nothing of this call counts: the buffered retry starts where it did.
                    self.file.seek(SeekFrom::Start(self.read))?;
                    return Err(e);
                }
            }
        }
        self.read += n as u64;
        if got != n {
            // The file grew since its length was read: go on from where the caller is.
            self.file.seek(SeekFrom::Start(self.read))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Write `len` bytes in batches of `batch` and read them back the same way.
    fn round_trip(dir: &Path, len: usize, batch: usize) -> bool {
        let data: Vec<u8> = (0..len).map(|i| (i * 7 + i / 4096) as u8).collect();
        let path = dir.join(format!("shard-{len}-{batch}"));
        let mut w = DirectWriter::create(&path).expect("create");
        let direct = w.is_direct();
        let mut buf = AlignedBuf::zeroed(batch);
        for chunk in data.chunks(batch) {
            buf[..chunk.len()].copy_from_slice(chunk);
            w.write(&mut buf, chunk.len()).expect("write");
        }
        w.sync().expect("sync");
        assert_eq!(std::fs::read(&path).expect("read back"), data, "len {len}");

        let mut r = DirectReader::open(&path).expect("open");
        assert_eq!(r.file_len().expect("len"), len as u64);
        let mut back = Vec::new();
        let mut left = len;
        while left > 0 {
            let n = left.min(batch);
            r.read(&mut buf, n).expect("read");
            back.extend_from_slice(&buf[..n]);
            left -= n;
        }
        assert_eq!(back, data, "len {len} read in batches");
        // Asking past the end is an error, not a short answer.
        assert!(r.read(&mut buf, 1).is_err());
        direct
    }

    /// The type of the file system `path` is on, from the longest mount point above it.
    fn fs_type(path: &Path) -> Option<String> {
        let mounts = std::fs::read_to_string("/proc/mounts").ok()?;
        let path = path.canonicalize().ok()?;
        mounts
            .lines()
            .filter_map(|line| {
                let mut fields = line.split(' ');
                let (_, point, kind) = (fields.next()?, fields.next()?, fields.next()?);
                path.starts_with(point)
                    .then(|| (point.len(), kind.to_string()))
            })
            .max_by_key(|(len, _)| *len)
            .map(|(_, kind)| kind)
    }

    #[test]
    fn shards_of_every_length_round_trip_on_disk_and_in_memory() {
        let lens = [
            0,
            1,
            511,
            4095,
            4096,
            4097,
            65_536 + 3,
            1 << 20,
            (3 << 20) + 12_345,
        ];
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut direct = false;
        for len in lens {
            direct |= round_trip(tmp.path(), len, 1 << 20);
        }
        if cfg!(target_os = "linux")
            && matches!(fs_type(tmp.path()).as_deref(), Some("ext4" | "xfs"))
        {
            assert!(
                direct,
                "ext4 and xfs take O_DIRECT: the writes should bypass the cache"
            );
        }
        if Path::new("/dev/shm").is_dir() {
            let shm = tempfile::tempdir_in("/dev/shm").expect("tempdir");
            for len in lens {
                round_trip(shm.path(), len, 1 << 20);
            }
        }
    }

    /// A file system that refuses O_DIRECT only after an O_CREAT open made the file:
    /// ramfs, mounted for the test where it may be (as root; CI runs as root).
    #[test]
    fn a_file_system_refusing_direct_io_is_written_through_the_cache() {
        let dir = tempfile::tempdir().expect("tempdir");
        // The system call, not the `mount` program: a child process would hold copies
        // of other tests' open files until it ran its program.
        let mounted = rustix::mount::mount(
            "none",
            dir.path(),
            "ramfs",
            rustix::mount::MountFlags::empty(),
            None,
        );
        if let Err(e) = mounted {
            eprintln!("not run: cannot mount a ramfs here (not root): {e}");
            return;
        }
        struct Unmount<'a>(&'a Path);
        impl Drop for Unmount<'_> {
            fn drop(&mut self) {
                let _ = rustix::mount::unmount(self.0, rustix::mount::UnmountFlags::DETACH);
            }
        }
        let _unmount = Unmount(dir.path());
        for len in [0, 4097, (1 << 20) + 5] {
            assert!(!round_trip(dir.path(), len, 1 << 20), "ramfs took O_DIRECT");
        }
    }

    #[test]
    fn a_resumed_write_keeps_what_came_before_and_drops_what_came_after() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("out");
        std::fs::write(&path, vec![1u8; 3 * ALIGN + 5]).expect("write");
        let mut w = DirectWriter::resume(&path, 2 * ALIGN as u64).expect("resume");
        let mut buf = AlignedBuf::zeroed(ALIGN + 1);
        buf.fill(2);
        w.write(&mut buf, ALIGN + 1).expect("write");
        w.sync().expect("sync");
        let back = std::fs::read(&path).expect("read back");
        assert_eq!(back.len(), 3 * ALIGN + 1);
        assert!(back[..2 * ALIGN].iter().all(|&b| b == 1));
        assert!(back[2 * ALIGN..].iter().all(|&b| b == 2));
    }

    #[test]
    fn writes_from_inside_a_buffer_land_whole_aligned_or_not() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("out");
        let mut w = DirectWriter::create(&path).expect("create");
        let mut buf = AlignedBuf::zeroed(4 * ALIGN);
        for (i, b) in buf.iter_mut().enumerate() {
            *b = (i % 251) as u8;
        }
        let expected = buf[ALIGN..3 * ALIGN].to_vec();
        w.write_from(&mut buf, ALIGN, 2 * ALIGN).expect("aligned");
        // A write from inside a block goes through the cache, and so does what follows.
        let mut more = AlignedBuf::zeroed(ALIGN);
        more.fill(9);
        w.write_from(&mut more, 3, 100).expect("misaligned");
        assert!(!w.is_direct());
        w.sync().expect("sync");
        let back = std::fs::read(&path).expect("read back");
        assert_eq!(&back[..2 * ALIGN], &expected[..]);
        assert_eq!(&back[2 * ALIGN..], &[9u8; 100][..]);
        let pool = BufferPool::default();
        pool.give(buf);
        assert!(
            pool.take(ALIGN).len() >= ALIGN,
            "a kept buffer is taken again"
        );
        assert!(
            pool.take(ALIGN).len() == ALIGN,
            "then a new one of the size asked"
        );
    }

    #[test]
    fn a_write_the_device_refuses_goes_on_through_the_cache() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("shard");
        let mut w = DirectWriter::create(&path).expect("create");
        let started_direct = w.is_direct();
        let mut buf = AlignedBuf::zeroed(1 << 20);
        buf.fill(7);
        w.write(&mut buf, 1 << 20).expect("write");
        // A short write in the middle leaves the file misaligned for direct I/O: the
        // next write is refused by the kernel and must be redone through the cache.
        w.write(&mut buf, 100).expect("short write");
        // The short write padded its last block with zeros in the buffer.
        buf.fill(7);
        w.write(&mut buf, 1 << 20).expect("write after a short one");
        if started_direct {
            assert!(
                !w.is_direct(),
                "the misaligned write went on through the cache"
            );
        }
        w.sync().expect("sync");
        let back = std::fs::read(&path).expect("read back");
        assert_eq!(back.len(), (2 << 20) + 100);
        assert!(back.iter().all(|&b| b == 7));
    }
}
