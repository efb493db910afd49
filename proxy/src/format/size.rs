//! Deterministic size arithmetic between plaintext and ciphertext.

use super::header::HEADER_LEN;
use super::segment::TAG_LEN;

pub(super) const SEGMENT_LEN_LOG2: u8 = 16;
/// Plaintext bytes per segment; only the final segment may be shorter.
pub const SEGMENT_LEN: u64 = 1 << SEGMENT_LEN_LOG2;
const SEALED_SEGMENT_LEN: u64 = SEGMENT_LEN + TAG_LEN as u64;

/// Number of segments for a plaintext length. An empty plaintext still has
/// one (empty, final) segment so that truncation to zero is detectable.
pub fn segment_count(plaintext_len: u64) -> u64 {
    plaintext_len.div_ceil(SEGMENT_LEN).max(1)
}

pub fn ciphertext_len(plaintext_len: u64) -> u64 {
    HEADER_LEN as u64 + plaintext_len + TAG_LEN as u64 * segment_count(plaintext_len)
}

/// Inverse of [`ciphertext_len`]; `None` when no plaintext length maps to it.
pub fn plaintext_len(ciphertext_len: u64) -> Option<u64> {
    let body = ciphertext_len.checked_sub(HEADER_LEN as u64)?;
    let full = body / SEALED_SEGMENT_LEN;
    let rest = body % SEALED_SEGMENT_LEN;
    let tag = TAG_LEN as u64;
    match (full, rest) {
        (0, r) if r == tag => Some(0),
        (f, 0) if f > 0 => Some(f * SEGMENT_LEN),
        (f, r) if r > tag => Some(f * SEGMENT_LEN + r - tag),
        _ => None,
    }
}

/// The ciphertext needed to serve an inclusive plaintext range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentSpan {
    pub first_segment: u64,
    /// Inclusive ciphertext byte range covering the segments.
    pub ciphertext_start: u64,
    pub ciphertext_end: u64,
    /// Plaintext bytes to drop from the first decrypted segment.
    pub skip: u64,
}

/// Segments covering plaintext bytes `first..=last` of an object of
/// `plaintext_len` bytes. The caller guarantees `first <= last < plaintext_len`.
pub fn segment_span(plaintext_len: u64, first: u64, last: u64) -> SegmentSpan {
    debug_assert!(first <= last && last < plaintext_len);
    let first_segment = first / SEGMENT_LEN;
    let last_segment = last / SEGMENT_LEN;
    let last_segment_len = (plaintext_len - last_segment * SEGMENT_LEN).min(SEGMENT_LEN);
    let offset = |segment: u64| HEADER_LEN as u64 + segment * SEALED_SEGMENT_LEN;
    SegmentSpan {
        first_segment,
        ciphertext_start: offset(first_segment),
        ciphertext_end: offset(last_segment) + last_segment_len + TAG_LEN as u64 - 1,
        skip: first - first_segment * SEGMENT_LEN,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_at_boundaries() {
        let h = HEADER_LEN as u64;
        assert_eq!(ciphertext_len(0), h + 16);
        assert_eq!(ciphertext_len(1), h + 1 + 16);
        assert_eq!(ciphertext_len(SEGMENT_LEN), h + SEGMENT_LEN + 16);
        assert_eq!(ciphertext_len(SEGMENT_LEN + 1), h + SEGMENT_LEN + 1 + 32);
    }

    #[test]
    fn inverse_is_exact() {
        for pt in (0..3 * SEGMENT_LEN + 3).step_by(997).chain([
            0,
            1,
            SEGMENT_LEN - 1,
            SEGMENT_LEN,
            SEGMENT_LEN + 1,
            5 << 40,
        ]) {
            assert_eq!(plaintext_len(ciphertext_len(pt)), Some(pt), "pt={pt}");
        }
        // Lengths no plaintext produces.
        assert_eq!(plaintext_len(0), None);
        assert_eq!(plaintext_len(HEADER_LEN as u64 + 15), None);
        assert_eq!(
            plaintext_len(HEADER_LEN as u64 + SEALED_SEGMENT_LEN + 16),
            None
        );
    }

    #[test]
    fn span_covers_only_needed_segments() {
        let len = 10 * SEGMENT_LEN + 5;
        let s = segment_span(len, SEGMENT_LEN + 3, 2 * SEGMENT_LEN + 1);
        assert_eq!(s.first_segment, 1);
        assert_eq!(s.skip, 3);
        assert_eq!(s.ciphertext_start, HEADER_LEN as u64 + SEALED_SEGMENT_LEN);
        assert_eq!(
            s.ciphertext_end,
            HEADER_LEN as u64 + 3 * SEALED_SEGMENT_LEN - 1
        );
        let tail = segment_span(len, len - 1, len - 1);
        assert_eq!(tail.ciphertext_end + 1, ciphertext_len(len));
    }
}
