//! Buffers a put or a get is done with, kept for its next segments: memory the process
//! has not touched yet is zeroed by the kernel on first use, which on a VM cost a put's
//! client more than the erasure coding, and a buffer zeroed only to be read into costs a
//! pass over its bytes.

use std::sync::Mutex;

static SPARE: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());
/// Buffers kept at most: a few segments' worth.
const KEPT: usize = 16;
/// The largest kept.
const BYTES_MAX: usize = 16 << 20;

/// The kept buffer that fits `capacity` most closely, so that a small request does not
/// take a large one's place.
fn closest(capacity: usize) -> Option<Vec<u8>> {
    let mut spare = SPARE.lock().unwrap_or_else(|e| e.into_inner());
    let i = (spare.iter().enumerate())
        .filter(|(_, b)| b.capacity() >= capacity)
        .min_by_key(|(_, b)| b.capacity())
        .map(|(i, _)| i)?;
    Some(spare.swap_remove(i))
}

/// An empty buffer with room for `capacity` bytes.
pub fn take(capacity: usize) -> Vec<u8> {
    match closest(capacity) {
        Some(mut buf) => {
            buf.clear();
            buf
        }
        None => Vec::with_capacity(capacity),
    }
}

/// A buffer of `len` bytes to be overwritten whole (read into): what it held before is
/// left there, not zeroed.
pub fn take_len(len: usize) -> Vec<u8> {
    take_len_with_room(len, len)
}

/// [`take_len`] with room for `capacity` bytes (at least `len`), for a buffer read into
/// and then grown in place.
pub fn take_len_with_room(len: usize, capacity: usize) -> Vec<u8> {
    let mut buf = closest(capacity.max(len)).unwrap_or_else(|| Vec::with_capacity(capacity));
    if buf.len() >= len {
        buf.truncate(len);
    } else {
        buf.resize(len, 0);
    }
    buf
}

/// Keep `buf` for a later [`take`] or [`take_len`].
pub fn give(buf: Vec<u8>) {
    if buf.capacity() == 0 || buf.capacity() > BYTES_MAX {
        return;
    }
    let mut spare = SPARE.lock().unwrap_or_else(|e| e.into_inner());
    if spare.len() < KEPT {
        spare.push(buf);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_come_back_the_size_asked() {
        give(vec![7u8; 100]);
        let b = take_len(40);
        assert_eq!(b.len(), 40);
        give(b);
        let b = take(1000);
        assert!(b.is_empty() && b.capacity() >= 1000);
        let b = take_len(5000);
        assert_eq!(b.len(), 5000);
        give(vec![9u8; 64]);
        let b = take_len_with_room(10, 4096);
        assert!(b.len() == 10 && b.capacity() >= 4096);
        give(Vec::with_capacity(BYTES_MAX + 1));
        assert!(
            SPARE
                .lock()
                .map(|s| s.iter().all(|b| b.capacity() <= BYTES_MAX))
                .unwrap_or(false)
        );
    }
}
