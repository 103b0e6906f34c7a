//! `/data`'s quota on every write. WASI has no hook on writes, so the `wasi:filesystem`
//! calls that make files grow are linked as ours: each asks the run's folder for the
//! room first ([`DataDir::grant`]) and hands the call to wasmtime-wasi's own
//! implementation. Refused growth answers `quota` to a direct call and "no space" (the
//! one stream error WASI names) to a stream, before a byte reaches the disk.
//!
//! What grows a folder: `write` and `set-size` past a file's end, the write and append
//! streams, and a new entry (`open-at` with `create`, `create-directory-at`). Links, and
//! a folder's own growth, are left to the measuring walk (`data.rs`).

use crate::data::{DataDir, ENTRY_BYTES_MIN, in_blocks};
use crate::host::Host;
use bytes::Bytes;
use std::sync::Arc;
use wasmtime::StoreContextMut;
use wasmtime::component::{Linker, Resource, ResourceTable};
use wasmtime_wasi::filesystem::{Descriptor, WasiFilesystemView};
use wasmtime_wasi::p2::bindings::filesystem::types::{
    DescriptorFlags, ErrorCode, HostDescriptor, OpenFlags, PathFlags,
};
use wasmtime_wasi::p2::{
    DynOutputStream, FsResult, OutputStream, Pollable, StreamError, StreamResult,
};

/// The interface as wasmtime-wasi 48 links it (a component importing any 0.2 version
/// resolves to it). A wrong name fails every `/data` test: the calls would not be ours.
const FILESYSTEM_TYPES: &str = "wasi:filesystem/types@0.2.12";

/// `ENOSPC` (Linux), which wasmtime-wasi reports to a stream's reader as
/// `insufficient-space`.
const NO_SPACE: i32 = 28;

/// A call's answer as the component model carries it: a trap, or the guest's result.
type Answer<T> = wasmtime::Result<(Result<T, ErrorCode>,)>;

/// Links our growth-checked filesystem calls over wasmtime-wasi's, which `linker`
/// already has.
pub(crate) fn add_to_linker(linker: &mut Linker<Host>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let mut types = linker.instance(FILESYSTEM_TYPES)?;
    types.func_wrap_async(
        "[method]descriptor.write",
        |mut store: StoreContextMut<'_, Host>,
         (fd, buffer, offset): (Resource<Descriptor>, Vec<u8>, u64)| {
            Box::new(async move {
                let host = store.data_mut();
                if let Some(data) = host.data.clone() {
                    let end = offset.saturating_add(buffer.len() as u64);
                    if !data.grant(growth(host.filesystem().table, &fd, end)?) {
                        return Ok((Err(ErrorCode::Quota),));
                    }
                }
                answer(host.filesystem().write(fd, buffer, offset).await)
            })
        },
    )?;
    types.func_wrap_async(
        "[method]descriptor.set-size",
        |mut store: StoreContextMut<'_, Host>, (fd, size): (Resource<Descriptor>, u64)| {
            Box::new(async move {
                let host = store.data_mut();
                if let Some(data) = host.data.clone()
                    && !data.grant(growth(host.filesystem().table, &fd, size)?)
                {
                    return Ok((Err(ErrorCode::Quota),));
                }
                answer(host.filesystem().set_size(fd, size).await)
            })
        },
    )?;
    types.func_wrap(
        "[method]descriptor.write-via-stream",
        |mut store: StoreContextMut<'_, Host>, (fd, offset): (Resource<Descriptor>, u64)| {
            let host = store.data_mut();
            let data = host.data.clone();
            let mut fs = host.filesystem();
            let end = file_len(fs.table, &fd)?;
            let stream = fs.write_via_stream(fd, offset);
            budgeted(fs.table, stream, data, end, Some(offset))
        },
    )?;
    types.func_wrap(
        "[method]descriptor.append-via-stream",
        |mut store: StoreContextMut<'_, Host>, (fd,): (Resource<Descriptor>,)| {
            let host = store.data_mut();
            let data = host.data.clone();
            let mut fs = host.filesystem();
            let end = file_len(fs.table, &fd)?;
            let stream = fs.append_via_stream(fd);
            budgeted(fs.table, stream, data, end, None)
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
                    && open_flags.contains(OpenFlags::CREATE)
                    && !data.grant(ENTRY_BYTES_MIN)
                    && !exists(host, &fd, path_flags, &path).await
                {
                    return Ok((Err(ErrorCode::Quota),));
                }
                answer(
                    host.filesystem()
                        .open_at(fd, path_flags, path, open_flags, flags)
                        .await,
                )
            })
        },
    )?;
    types.func_wrap_async(
        "[method]descriptor.create-directory-at",
        |mut store: StoreContextMut<'_, Host>, (fd, path): (Resource<Descriptor>, String)| {
            Box::new(async move {
                let host = store.data_mut();
                if let Some(data) = host.data.clone()
                    && !data.grant(ENTRY_BYTES_MIN)
                    && !exists(host, &fd, PathFlags::empty(), &path).await
                {
                    return Ok((Err(ErrorCode::Quota),));
                }
                answer(host.filesystem().create_directory_at(fd, path).await)
            })
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}

/// Whether `path` names an entry under `fd` already: creating it again takes no room,
/// and wasmtime-wasi answers the call as it would with room (open it, or `exist`).
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

/// The length of the file behind `fd` (0 if it cannot be read: then all a write covers
/// counts as growth); `None` for a folder, whose calls wasmtime-wasi refuses itself. A
/// descriptor not in the table traps.
fn file_len(table: &ResourceTable, fd: &Resource<Descriptor>) -> wasmtime::Result<Option<u64>> {
    Ok(match table.get(fd)? {
        Descriptor::File(f) => Some(f.file.metadata().map_or(0, |m| m.len())),
        Descriptor::Dir(_) => None,
    })
}

/// The blocks a write ending at `end` adds to the file behind `fd`.
fn growth(table: &ResourceTable, fd: &Resource<Descriptor>, end: u64) -> wasmtime::Result<u64> {
    Ok(match file_len(table, fd)? {
        Some(len) => in_blocks(end).saturating_sub(in_blocks(len)),
        None => 0,
    })
}

/// The stream wasmtime-wasi made, swapped in the table for one that asks `data` before
/// each write: at `at` for a write stream, at the end (`len`) for an append stream.
fn budgeted(
    table: &mut ResourceTable,
    stream: FsResult<Resource<DynOutputStream>>,
    data: Option<Arc<DataDir>>,
    len: Option<u64>,
    at: Option<u64>,
) -> Answer<Resource<DynOutputStream>> {
    let stream = match stream {
        Ok(stream) => stream,
        Err(e) => return Ok((Err(e.downcast()?),)),
    };
    let (Some(data), Some(len)) = (data, len) else {
        return Ok((Ok(stream),));
    };
    let inner = table.delete(stream)?;
    let wrapped: DynOutputStream = Box::new(Budgeted {
        inner,
        data,
        end: len,
        at,
    });
    Ok((Ok(table.push(wrapped)?),))
}

/// A file's output stream whose growth is granted by its app's folder first.
struct Budgeted {
    inner: DynOutputStream,
    data: Arc<DataDir>,
    /// The file's end as far as this stream knows: its length when opened, then
    /// whatever this stream wrote past it.
    end: u64,
    /// Where the next write lands; `None` when appending.
    at: Option<u64>,
}

impl Budgeted {
    /// Asks for the blocks `len` more bytes add, and moves on past them.
    fn charge(&mut self, len: usize) -> StreamResult<()> {
        let from = self.at.unwrap_or(self.end);
        let to = from.saturating_add(len as u64);
        if !self
            .data
            .grant(in_blocks(to).saturating_sub(in_blocks(self.end)))
        {
            return Err(StreamError::LastOperationFailed(
                std::io::Error::from_raw_os_error(NO_SPACE).into(),
            ));
        }
        self.end = self.end.max(to);
        if let Some(at) = &mut self.at {
            *at = to;
        }
        Ok(())
    }
}

#[wasmtime_wasi::async_trait]
impl OutputStream for Budgeted {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.charge(bytes.len())?;
        self.inner.write(bytes)
    }

    async fn blocking_write_and_flush(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.charge(bytes.len())?;
        self.inner.blocking_write_and_flush(bytes).await
    }

    fn write_zeroes(&mut self, count: usize) -> StreamResult<()> {
        self.charge(count)?;
        self.inner.write_zeroes(count)
    }

    fn flush(&mut self) -> StreamResult<()> {
        self.inner.flush()
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        self.inner.check_write()
    }

    async fn cancel(&mut self) {
        self.inner.cancel().await
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for Budgeted {
    async fn ready(&mut self) {
        self.inner.ready().await
    }
}
