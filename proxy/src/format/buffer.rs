//! Reused output buffers for sealed and opened segments.
//!
//! Every segment the proxy seals or opens needs a fresh 64 KiB buffer. Taken
//! from the allocator, each one was zeroed before the cipher overwrote it
//! (`memset`, about 3% of a large transfer's CPU) and, whenever the
//! allocator had handed the pages back, faulted in and zeroed again by the
//! kernel (`clear_page_erms`, about 3%). A [`SegmentBuf`] is filled by
//! copying the input into it and running the cipher in place, so nothing is
//! written twice; and once the last `Bytes` made from it is dropped (hyper
//! wrote it to the socket, or the client read it), its memory goes back to
//! a small pool for the next segment instead of to the allocator.
//!
//! The pool keeps at most [`POOL_LIMIT`] idle buffers (about 4 MiB), so the
//! memory it holds is bounded and the per-stream memory is what it was.
//! Idle buffers may still hold a segment's plaintext, as freed heap memory
//! did before; nothing reads a buffer before writing it (`clear` first).

use std::sync::Mutex;

use bytes::Bytes;

use super::constants::{SEGMENT_LEN, TAG_LEN};

/// Capacity of every pooled buffer: a sealed segment plus room for the
/// transport framing around it (a chunk-size line and a CRLF, 10 bytes
/// today), rounded up so a framing change does not fall out of the pool.
pub(crate) const POOLED_CAPACITY: usize = SEGMENT_LEN as usize + TAG_LEN + 64;

/// Idle buffers kept for reuse: enough for the segments in flight on a few
/// dozen concurrent streams, at most 4.1 MiB.
pub(crate) const POOL_LIMIT: usize = 64;

static POOL: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

/// A segment buffer taken from the pool (or allocated when the pool is
/// empty or the length does not fit), written in place, then frozen into
/// `Bytes` whose drop hands the memory back.
///
/// The memory behind it is always initialised: zeroed once when it is first
/// allocated, and afterwards holding whatever the previous segment left.
/// [`Self::append_for_overwrite`] hands out such bytes for a cipher to write
/// its output into, which is what saves the zeroing; every other method
/// writes the bytes it appends. Only the first `len` bytes are ever read.
#[derive(Debug)]
pub struct SegmentBuf {
    vec: Vec<u8>,
    len: usize,
}

impl SegmentBuf {
    /// An empty buffer that can take `capacity` bytes. Segment-sized
    /// requests share the pool; a small one (a stream header, the short last
    /// segment of an object) gets its own small allocation, so a 4 KiB
    /// object does not hold 64 KiB.
    pub fn with_capacity(capacity: usize) -> Self {
        let vec = if pooled_size_class(capacity) {
            let reused = POOL.lock().map(|mut pool| pool.pop()).unwrap_or(None);
            reused.unwrap_or_else(|| vec![0; POOLED_CAPACITY])
        } else {
            vec![0; capacity]
        };
        Self { vec, len: 0 }
    }

    /// Appends `bytes`.
    ///
    /// # Panics
    /// If the buffer's capacity is exceeded: every caller sizes it for one segment.
    pub fn extend_from_slice(&mut self, bytes: &[u8]) {
        self.append_for_overwrite(bytes.len()).copy_from_slice(bytes);
    }

    /// Appends `n` zero bytes (room a framing fills in later).
    pub fn extend_zeros(&mut self, n: usize) {
        self.append_for_overwrite(n).fill(0);
    }

    /// Appends `n` bytes and returns them for the caller to overwrite, every
    /// one of them: they hold what an earlier segment left (a cipher writes
    /// its whole output there, so zeroing them first would be wasted work).
    ///
    /// # Panics
    /// If the buffer's capacity is exceeded.
    pub fn append_for_overwrite(&mut self, n: usize) -> &mut [u8] {
        let start = self.len;
        assert!(start + n <= self.vec.len(), "a segment buffer is sized for one segment");
        self.len += n;
        &mut self.vec[start..self.len]
    }

    /// Shortens the buffer to `len` bytes.
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    /// Read-only bytes that return the memory to the pool when the last
    /// clone of them is dropped.
    pub fn freeze(self) -> Bytes {
        Bytes::from_owner(self)
    }

    /// The number of idle buffers in the pool.
    #[cfg(test)]
    pub fn pooled() -> usize {
        POOL.lock().map(|pool| pool.len()).unwrap_or(0)
    }
}

impl std::ops::Deref for SegmentBuf {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.vec[..self.len]
    }
}

impl std::ops::DerefMut for SegmentBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        &mut self.vec[..self.len]
    }
}

impl AsRef<[u8]> for SegmentBuf {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl std::borrow::Borrow<[u8]> for SegmentBuf {
    fn borrow(&self) -> &[u8] {
        self
    }
}

impl Drop for SegmentBuf {
    fn drop(&mut self) {
        if !returns_to_pool(self.vec.len()) {
            return;
        }
        let vec = std::mem::take(&mut self.vec);
        if let Ok(mut pool) = POOL.lock()
            && pool.len() < POOL_LIMIT
        {
            pool.push(vec);
        }
    }
}

/// Requests of at least half a segment take a pooled buffer.
fn pooled_size_class(capacity: usize) -> bool {
    (POOLED_CAPACITY / 2..=POOLED_CAPACITY).contains(&capacity)
}

/// Only buffers of the pooled size class come back, so the pool's memory is
/// bounded by [`POOL_LIMIT`] × [`POOLED_CAPACITY`].
fn returns_to_pool(initialised: usize) -> bool {
    initialised == POOLED_CAPACITY
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_buffer_reads_only_what_was_written_and_returns_when_its_bytes_drop() {
        let mut first = SegmentBuf::with_capacity(POOLED_CAPACITY - 1);
        first.extend_from_slice(b"secret");
        first.extend_zeros(2);
        assert_eq!(&first[..], b"secret\0\0");
        first.truncate(3);
        let bytes = first.freeze();
        assert_eq!(&bytes[..], b"sec");
        let clone = bytes.slice(1..3);
        drop(bytes);
        assert_eq!(&clone[..], b"ec", "a slice keeps the buffer alive");
        drop(clone);
        // Other tests share the pool, so only what any buffer shows is
        // certain: it starts empty whatever it held before.
        let again = SegmentBuf::with_capacity(POOLED_CAPACITY / 2);
        assert!(again.is_empty());
        assert_eq!(again.vec.len(), POOLED_CAPACITY);
    }

    #[test]
    #[should_panic(expected = "sized for one segment")]
    fn writing_past_the_capacity_panics_rather_than_growing() {
        let mut buf = SegmentBuf::with_capacity(POOLED_CAPACITY);
        buf.extend_zeros(POOLED_CAPACITY + 1);
    }

    #[test]
    fn only_segment_sized_buffers_are_pooled() {
        let big = SegmentBuf::with_capacity(POOLED_CAPACITY + 1);
        assert!(!returns_to_pool(big.vec.len()));
        let small = SegmentBuf::with_capacity(4096 + 16);
        assert_eq!(small.vec.len(), 4096 + 16, "a small object gets a small buffer");
        assert!(!returns_to_pool(small.vec.len()));
        assert!(returns_to_pool(SegmentBuf::with_capacity(POOLED_CAPACITY).vec.len()));
    }

    #[test]
    fn the_pool_is_bounded() {
        let bufs: Vec<_> = (0..POOL_LIMIT * 2).map(|_| SegmentBuf::with_capacity(POOLED_CAPACITY)).collect();
        drop(bufs);
        assert!(SegmentBuf::pooled() <= POOL_LIMIT);
    }
}
