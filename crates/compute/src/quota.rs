//! `/data`'s quota on every write. WASI has no hook on writes, so the `wasi:filesystem`
//! calls that make a folder grow are linked as ours: each asks the run's folder for the
//! room first ([`DataDir::grant`]) and hands the call to wasmtime-wasi's own
//! implementation. Refused growth answers `quota` to a direct call and "no space" (the
//! one stream error WASI names) to a stream, before a byte reaches the disk.
//!
//! What grows a folder: `write` and `set-size` past a file's end, the write and append
//! streams, and a new entry (`open-at` with `create`, `create-directory-at`,
//! `symlink-at`, `link-at`). Every file opened is tracked, so that one removed while
//! still open keeps counting. Calls that may give room back (`unlink-file-at`,
//! `remove-directory-at`, `rename-at`, `open-at` with `truncate`, `set-size` below the
//! end) are noted once done, so that a refused write measures the folder afresh and
//! tries again; renames and removals also keep a walk they overlap from lowering the
//! figure. A folder's own growth is left to the walk (`data.rs`).

use crate::data::{DataDir, ENTRY_BYTES_MIN, Grant, in_blocks};
use crate::host::Host;
use bytes::Bytes;
use std::sync::Arc;
use wasmtime::StoreContextMut;
use wasmtime::component::{Linker, LinkerInstance, Resource, ResourceTable};
use wasmtime_wasi::filesystem::{Descriptor, WasiFilesystemView};
use wasmtime_wasi::p2::bindings::filesystem::types::{
    DescriptorFlags, ErrorCode, HostDescriptor, OpenFlags, PathFlags,
};
use wasmtime_wasi::p2::{
    DynOutputStream, FsResult, OutputStream, Pollable, StreamError, StreamResult,
};

/// The interface as wasmtime-wasi links it (a component importing any 0.2 version
/// resolves to it). [`add_to_linker`] fails if it is not there, rather than leave the
/// calls unchecked.
const FILESYSTEM_TYPES: &str = "wasi:filesystem/types@0.2.12";

/// `ENOSPC` (Linux), which wasmtime-wasi reports to a stream's reader as
/// `insufficient-space`.
const NO_SPACE: i32 = 28;

/// A call's answer as the component model carries it: a trap, or the guest's result.
type Answer<T> = wasmtime::Result<(Result<T, ErrorCode>,)>;

/// Links our growth-checked filesystem calls over wasmtime-wasi's, which `linker`
/// already has.
pub(crate) fn add_to_linker(linker: &mut Linker<Host>) -> wasmtime::Result<()> {
    probe(linker.instance(FILESYSTEM_TYPES)?)?;
    linker.allow_shadowing(true);
    let mut types = linker.instance(FILESYSTEM_TYPES)?;
    types.func_wrap_async(
        "[method]descriptor.write",
        |mut store: StoreContextMut<'_, Host>,
         (fd, buffer, offset): (Resource<Descriptor>, Vec<u8>, u64)| {
            Box::new(async move {
                let host = store.data_mut();
                let _grant = match host.data.clone() {
                    Some(data) => {
                        let end = offset.saturating_add(buffer.len() as u64);
                        match growth(host.filesystem().table, &fd, end)? {
                            Some(bytes) => match data.grant_after_measure(bytes).await {
                                Some(grant) => Some(grant),
                                None => return Ok((Err(ErrorCode::Quota),)),
                            },
                            None => None,
                        }
                    }
                    None => None,
                };
                answer(host.filesystem().write(fd, buffer, offset).await)
            })
        },
    )?;
    types.func_wrap_async(
        "[method]descriptor.set-size",
        |mut store: StoreContextMut<'_, Host>, (fd, size): (Resource<Descriptor>, u64)| {
            Box::new(async move {
                let host = store.data_mut();
                let mut _grant = None;
                let mut cuts = false;
                if let Some(data) = host.data.clone() {
                    let len = file_len(host.filesystem().table, &fd)?;
                    cuts = len.is_some_and(|len| in_blocks(size) < in_blocks(len));
                    if let Some(bytes) = growth(host.filesystem().table, &fd, size)? {
                        _grant = data.grant_after_measure(bytes).await;
                        if _grant.is_none() {
                            return Ok((Err(ErrorCode::Quota),));
                        }
                    }
                }
                let result = host.filesystem().set_size(fd, size).await;
                if cuts && result.is_ok() {
                    shrank(host);
                }
                answer(result)
            })
        },
    )?;
    types.func_wrap(
        "[method]descriptor.write-via-stream",
        |mut store: StoreContextMut<'_, Host>, (fd, offset): (Resource<Descriptor>, u64)| {
            let host = store.data_mut();
            let data = host.data.clone();
            let mut fs = host.filesystem();
            let file = os_file(fs.table, &fd)?;
            let stream = fs.write_via_stream(fd, offset);
            budgeted(fs.table, stream, data, file, Some(offset))
        },
    )?;
    types.func_wrap(
        "[method]descriptor.append-via-stream",
        |mut store: StoreContextMut<'_, Host>, (fd,): (Resource<Descriptor>,)| {
            let host = store.data_mut();
            let data = host.data.clone();
            let mut fs = host.filesystem();
            let file = os_file(fs.table, &fd)?;
            let stream = fs.append_via_stream(fd);
            budgeted(fs.table, stream, data, file, None)
        },
    )?;
    types.func_wrap_async(
        "[method]descriptor.open-at",
        |mut store: StoreContextMut<'_, Host>,
         (fd, path_flags, path, open_flags, flags): (
            Resource<Descriptor>,
            PathFlags,
            String,
            OpenFlags,
            DescriptorFlags,
        )| {
            Box::new(async move {
                let host = store.data_mut();
                if let Some(data) = host.data.clone()
                    // Opening what is already there takes no room (and wasmtime-wasi
                    // answers an exclusive create of it itself).
                    && open_flags.contains(OpenFlags::CREATE)
                    && !exists(host, &fd, path_flags, &path).await
                    && data.grant_after_measure(ENTRY_BYTES_MIN).await.is_none()
                {
                    return Ok((Err(ErrorCode::Quota),));
                }
                let result = (host.filesystem())
                    .open_at(fd, path_flags, path, open_flags, flags)
                    .await;
                if let (Ok(opened), Some(data)) = (&result, host.data.clone()) {
                    if let Some(file) = os_file(host.filesystem().table, opened)? {
                        data.track(&file);
                    }
                    if open_flags.contains(OpenFlags::TRUNCATE) {
                        data.shrank();
                    }
                }
                answer(result)
            })
        },
    )?;
    types.func_wrap_async(
        "[method]descriptor.create-directory-at",
        |mut store: StoreContextMut<'_, Host>, (fd, path): (Resource<Descriptor>, String)| {
            Box::new(async move {
                let host = store.data_mut();
                if let Some(data) = host.data.clone()
                    && !exists(host, &fd, PathFlags::empty(), &path).await
                    && data.grant_after_measure(ENTRY_BYTES_MIN).await.is_none()
                {
                    return Ok((Err(ErrorCode::Quota),));
                }
                answer(host.filesystem().create_directory_at(fd, path).await)
            })
        },
    )?;
    types.func_wrap_async(
        "[method]descriptor.symlink-at",
        |mut store: StoreContextMut<'_, Host>,
         (fd, target, path): (Resource<Descriptor>, String, String)| {
            Box::new(async move {
                let host = store.data_mut();
                // A long target takes a block of its own.
                let bytes = in_blocks(target.len() as u64).max(ENTRY_BYTES_MIN);
                if let Some(data) = host.data.clone()
                    && data.grant_after_measure(bytes).await.is_none()
                {
                    return Ok((Err(ErrorCode::Quota),));
                }
                answer(host.filesystem().symlink_at(fd, target, path).await)
            })
        },
    )?;
    types.func_wrap_async(
        "[method]descriptor.link-at",
        |mut store: StoreContextMut<'_, Host>,
         (fd, old_flags, old_path, new_fd, new_path): (
            Resource<Descriptor>,
            PathFlags,
            String,
            Resource<Descriptor>,
            String,
        )| {
            Box::new(async move {
                let host = store.data_mut();
                if let Some(data) = host.data.clone()
                    && data.grant_after_measure(ENTRY_BYTES_MIN).await.is_none()
                {
                    return Ok((Err(ErrorCode::Quota),));
                }
                answer(
                    host.filesystem()
                        .link_at(fd, old_flags, old_path, new_fd, new_path)
                        .await,
                )
            })
        },
    )?;
    types.func_wrap_async(
        "[method]descriptor.unlink-file-at",
        |mut store: StoreContextMut<'_, Host>, (fd, path): (Resource<Descriptor>, String)| {
            Box::new(async move {
                let host = store.data_mut();
                moving(host);
                let result = host.filesystem().unlink_file_at(fd, path).await;
                moved(host, &result);
                answer(result)
            })
        },
    )?;
    types.func_wrap_async(
        "[method]descriptor.remove-directory-at",
        |mut store: StoreContextMut<'_, Host>, (fd, path): (Resource<Descriptor>, String)| {
            Box::new(async move {
                let host = store.data_mut();
                moving(host);
                let result = host.filesystem().remove_directory_at(fd, path).await;
                moved(host, &result);
                answer(result)
            })
        },
    )?;
    types.func_wrap_async(
        "[method]descriptor.rename-at",
        |mut store: StoreContextMut<'_, Host>,
         (fd, old_path, new_fd, new_path): (
            Resource<Descriptor>,
            String,
            Resource<Descriptor>,
            String,
        )| {
            Box::new(async move {
                let host = store.data_mut();
                // Renaming over a file removes it.
                moving(host);
                let result = (host.filesystem())
                    .rename_at(fd, old_path, new_fd, new_path)
                    .await;
                moved(host, &result);
                answer(result)
            })
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}

/// Fails unless `types` already has the calls we replace: under another name (a
/// wasmtime-wasi that links a newer interface version) they would go unchecked.
fn probe(mut types: LinkerInstance<'_, Host>) -> wasmtime::Result<()> {
    let defined = types.func_wrap(
        "[method]descriptor.write",
        |_: StoreContextMut<'_, Host>, (): ()| Ok(()),
    );
    match defined {
        Err(_) => Ok(()),
        Ok(()) => Err(wasmtime::format_err!(
            "wasmtime-wasi does not link {FILESYSTEM_TYPES}: /data's quota cannot be kept \
             (update FILESYSTEM_TYPES in quota.rs)"
        )),
    }
}

/// Notes a rename or removal about to happen.
fn moving(host: &Host) {
    if let Some(data) = &host.data {
        data.moving();
    }
}

/// Notes a rename or removal that is over, and whether it may have given room back.
fn moved<T>(host: &Host, result: &FsResult<T>) {
    if let Some(data) = &host.data {
        data.moved(result.is_ok());
    }
}

/// Notes a file cut shorter: room may have come back.
fn shrank(host: &Host) {
    if let Some(data) = &host.data {
        data.shrank();
    }
}

/// Whether `path` names an entry under `fd` already.
async fn exists(host: &mut Host, fd: &Resource<Descriptor>, flags: PathFlags, path: &str) -> bool {
    host.filesystem()
        .stat_at(Resource::new_borrow(fd.rep()), flags, path.to_string())
        .await
        .is_ok()
}

/// wasmtime-wasi's result as the guest gets it: an error code, or a trap when the error
/// is not one.
fn answer<T>(result: FsResult<T>) -> Answer<T> {
    match result {
        Ok(value) => Ok((Ok(value),)),
        Err(e) => Ok((Err(e.downcast()?),)),
    }
}

/// The host file behind `fd`; `None` for a folder, whose write calls wasmtime-wasi
/// refuses itself. A descriptor not in the table traps.
fn os_file(
    table: &ResourceTable,
    fd: &Resource<Descriptor>,
) -> wasmtime::Result<Option<Arc<std::fs::File>>> {
    Ok(match table.get(fd)? {
        Descriptor::File(f) => Some(f.file.clone()),
        Descriptor::Dir(_) => None,
    })
}

/// The length of the file behind `fd` now, `None` for a folder.
fn file_len(table: &ResourceTable, fd: &Resource<Descriptor>) -> wasmtime::Result<Option<u64>> {
    Ok(os_file(table, fd)?.map(|f| f.metadata().map_or(0, |m| m.len())))
}

/// The blocks a write ending at `end` adds to `file`: everything past its end, all it
/// covers if its length cannot be read.
fn grows(file: &std::fs::File, end: u64) -> u64 {
    match file.metadata() {
        Ok(m) => in_blocks(end).saturating_sub(in_blocks(m.len())),
        Err(_) => in_blocks(end),
    }
}

/// The blocks a write ending at `end` adds to the file behind `fd`; `None` for a folder.
fn growth(
    table: &ResourceTable,
    fd: &Resource<Descriptor>,
    end: u64,
) -> wasmtime::Result<Option<u64>> {
    Ok(os_file(table, fd)?.map(|f| grows(&f, end)))
}

/// The stream wasmtime-wasi made, swapped in the table for one that asks `data` before
/// each write: at `at` for a write stream, at the file's end for an append stream.
fn budgeted(
    table: &mut ResourceTable,
    stream: FsResult<Resource<DynOutputStream>>,
    data: Option<Arc<DataDir>>,
    file: Option<Arc<std::fs::File>>,
    at: Option<u64>,
) -> Answer<Resource<DynOutputStream>> {
    let stream = match stream {
        Ok(stream) => stream,
        Err(e) => return Ok((Err(e.downcast()?),)),
    };
    let (Some(data), Some(file)) = (data, file) else {
        return Ok((Ok(stream),));
    };
    let inner = table.delete(stream)?;
    let wrapped: DynOutputStream = Box::new(Budgeted {
        inner,
        data,
        file,
        at,
        pending: Vec::new(),
    });
    Ok((Ok(table.push(wrapped)?),))
}

/// A file's output stream whose growth is granted by its app's folder first.
struct Budgeted {
    inner: DynOutputStream,
    data: Arc<DataDir>,
    file: Arc<std::fs::File>,
    /// Where the next write lands; `None` when appending.
    at: Option<u64>,
    /// Grants of writes the inner stream has not finished.
    pending: Vec<Grant>,
}

impl Budgeted {
    /// Asks for the blocks `len` more bytes add to the file as it is now (another
    /// descriptor may have cut it since the stream was made), and moves on past them.
    fn charge(&mut self, len: usize) -> StreamResult<()> {
        let len = len as u64;
        let end = match self.at {
            Some(at) => at.saturating_add(len),
            None => self
                .file
                .metadata()
                .map_or(0, |m| m.len())
                .saturating_add(len),
        };
        let Some(grant) = self.data.grant(grows(&self.file, end)) else {
            return Err(StreamError::LastOperationFailed(
                std::io::Error::from_raw_os_error(NO_SPACE).into(),
            ));
        };
        self.pending.push(grant);
        if let Some(at) = &mut self.at {
            *at = end;
        }
        Ok(())
    }

    /// Its writes have landed: their grants are settled.
    fn settle(&mut self) {
        self.pending.clear();
    }
}

#[wasmtime_wasi::async_trait]
impl OutputStream for Budgeted {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.charge(bytes.len())?;
        self.inner.write(bytes)
    }

    async fn blocking_write_and_flush(&mut self, bytes: Bytes) -> StreamResult<()> {
        if let Err(refused) = self.charge(bytes.len()) {
            // A removal since the newest walk may have made room: measure and retry.
            if !self.data.remeasure_if_stale().await {
                return Err(refused);
            }
            self.charge(bytes.len())?;
        }
        let done = self.inner.blocking_write_and_flush(bytes).await;
        self.settle();
        done
    }

    fn write_zeroes(&mut self, count: usize) -> StreamResult<()> {
        self.charge(count)?;
        self.inner.write_zeroes(count)
    }

    fn flush(&mut self) -> StreamResult<()> {
        self.inner.flush()
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        // Ready again, or failed: either way the writes before are over.
        let permit = self.inner.check_write();
        if permit.as_ref().map_or(true, |n| *n > 0) {
            self.settle();
        }
        permit
    }

    async fn cancel(&mut self) {
        self.inner.cancel().await;
        self.settle();
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for Budgeted {
    async fn ready(&mut self) {
        self.inner.ready().await
    }
}
