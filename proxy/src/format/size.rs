//! Deterministic size arithmetic between plaintext and ciphertext.

use super::constants::{HEADER_LEN, SEALED_SEGMENT_LEN, SEGMENT_LEN, TAG_LEN};

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
        for pt in
            (0..3 * SEGMENT_LEN + 3).step_by(997).chain([0, 1, SEGMENT_LEN - 1, SEGMENT_LEN, SEGMENT_LEN + 1, 5 << 40])
        {
            assert_eq!(plaintext_len(ciphertext_len(pt)), Some(pt), "pt={pt}");
        }
        // Lengths no plaintext produces.
        assert_eq!(plaintext_len(0), None);
        assert_eq!(plaintext_len(HEADER_LEN as u64 + 15), None);
        assert_eq!(plaintext_len(HEADER_LEN as u64 + SEALED_SEGMENT_LEN + 16), None);
    }
}
