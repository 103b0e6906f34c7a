//! Keep freed memory in the process instead of handing it back to the kernel at once.
//!
//! glibc returns the top of an arena to the kernel as soon as more than 128 KiB of it
//! is free. A stream moving gigabytes allocates and frees its buffers at that scale
//! all the time (quinn copies every datagram and every write into a buffer of its
//! own), so the same pages were given back and faulted in again, zeroed, by the next
//! buffer: the most common page fault in the QUIC benchmark (BENCHMARKS.md).
//!
//! The cost is memory: each glibc arena (a few per core) may keep up to 32 MiB free,
//! and blocks up to 16 MiB come from the arenas rather than mappings of their own.

/// Raise glibc's trim threshold to 32 MiB, once at start.
///
/// mallopt(3): when a block that glibc had mapped on its own is freed, the mapping
/// threshold rises to that block's size and the trim threshold to twice it. Freeing
/// one 16 MiB block does that without calling into libc. Other allocators ignore it.
pub fn keep_freed_memory() {
    // Below glibc's 32 MiB ceiling for the adjustment, headers included.
    let block = vec![0u8; 16 << 20];
    drop(std::hint::black_box(block));
}
