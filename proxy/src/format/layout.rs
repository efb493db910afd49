//! Where an object's plaintext lives in its stored ciphertext. A single PUT
//! is one stream; a multipart object is one stream per part, every part but
//! the last holding the same plaintext length (the proxy enforces this at
//! CompleteMultipartUpload, see docs/FORMAT.md).

use super::header::HEADER_LEN;
use super::segment::TAG_LEN;
use super::size::{SEALED_SEGMENT_LEN, SEGMENT_LEN, ciphertext_len, plaintext_len};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObjectLayout {
    /// Plaintext bytes in every stream but the last.
    pub part_len: u64,
    pub parts: u64,
    pub total: u64,
    /// Part number in the first stream's header: 0 for a single PUT, 1 for multipart.
    pub first_part_number: u32,
}

/// The ciphertext to fetch for an inclusive plaintext range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayoutSpan {
    /// Part number in the header of the stream the range starts in.
    pub part_number: u32,
    /// Offset of that stream's header.
    pub header_start: u64,
    /// Inclusive ciphertext range of the covering segments (and any headers between).
    pub ciphertext_start: u64,
    pub ciphertext_end: u64,
    pub first_segment: u64,
    /// Plaintext bytes to drop from the first decrypted segment.
    pub skip: u64,
}

impl ObjectLayout {
    pub fn single(len: u64) -> Self {
        Self { part_len: len, parts: 1, total: len, first_part_number: 0 }
    }

    /// A multipart object whose parts hold `part_len` plaintext bytes each
    /// (the last one at most that), stored in `stored_len` bytes. `None`
    /// when no such layout has that stored length.
    pub fn multipart(part_len: u64, stored_len: u64) -> Option<Self> {
        let part_ct = ciphertext_len(part_len);
        let parts = stored_len.div_ceil(part_ct).max(1);
        let last = plaintext_len(stored_len - (parts - 1) * part_ct)?;
        if last > part_len {
            return None;
        }
        Some(Self { part_len, parts, total: (parts - 1) * part_len + last, first_part_number: 1 })
    }

    /// Plaintext length of the stream at `index` (0-based).
    pub fn stream_len(&self, index: u64) -> u64 {
        if index + 1 < self.parts { self.part_len } else { self.total - (self.parts - 1) * self.part_len }
    }

    pub fn stored_len(&self) -> u64 {
        (self.parts - 1) * ciphertext_len(self.part_len) + ciphertext_len(self.stream_len(self.parts - 1))
    }

    fn locate(&self, offset: u64) -> (u64, u64) {
        let index = offset.checked_div(self.part_len).unwrap_or(0).min(self.parts - 1);
        (index, offset - index * self.part_len)
    }

    /// The caller guarantees `first <= last < total`.
    pub fn span(&self, first: u64, last: u64) -> LayoutSpan {
        debug_assert!(first <= last && last < self.total);
        let part_ct = ciphertext_len(self.part_len);
        let (first_index, first_offset) = self.locate(first);
        let (last_index, last_offset) = self.locate(last);
        let first_segment = first_offset / SEGMENT_LEN;
        let last_segment = last_offset / SEGMENT_LEN;
        let last_segment_len = (self.stream_len(last_index) - last_segment * SEGMENT_LEN).min(SEGMENT_LEN);
        let header_start = first_index * part_ct;
        LayoutSpan {
            part_number: self.first_part_number + first_index as u32,
            header_start,
            ciphertext_start: header_start + HEADER_LEN as u64 + first_segment * SEALED_SEGMENT_LEN,
            ciphertext_end: last_index * part_ct
                + HEADER_LEN as u64
                + last_segment * SEALED_SEGMENT_LEN
                + last_segment_len
                + TAG_LEN as u64
                - 1,
            first_segment,
            skip: first_offset - first_segment * SEGMENT_LEN,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_stream_span() {
        let l = ObjectLayout::single(10 * SEGMENT_LEN + 5);
        let s = l.span(SEGMENT_LEN + 3, 2 * SEGMENT_LEN + 1);
        assert_eq!((s.first_segment, s.skip, s.part_number), (1, 3, 0));
        assert_eq!(s.ciphertext_start, HEADER_LEN as u64 + SEALED_SEGMENT_LEN);
        assert_eq!(s.ciphertext_end, HEADER_LEN as u64 + 3 * SEALED_SEGMENT_LEN - 1);
        assert_eq!(l.span(l.total - 1, l.total - 1).ciphertext_end + 1, l.stored_len());
    }

    #[test]
    fn multipart_layout_from_stored_length() {
        let p = 8 * SEGMENT_LEN;
        for last in [0, 1, SEGMENT_LEN, p - 1, p] {
            let parts = 4;
            let stored = (parts - 1) * ciphertext_len(p) + ciphertext_len(last);
            let l = ObjectLayout::multipart(p, stored).unwrap();
            assert_eq!((l.parts, l.total), (parts, 3 * p + last), "last={last}");
            assert_eq!(l.stored_len(), stored);
        }
        assert!(ObjectLayout::multipart(p, 3 * ciphertext_len(p) + 10).is_none());
    }

    #[test]
    fn multipart_span_crosses_parts() {
        let p = 2 * SEGMENT_LEN;
        let l = ObjectLayout::multipart(p, 2 * ciphertext_len(p) + ciphertext_len(100)).unwrap();
        let s = l.span(p + 5, 2 * p + 10);
        assert_eq!((s.part_number, s.first_segment, s.skip), (2, 0, 5));
        assert_eq!(s.header_start, ciphertext_len(p));
        assert_eq!(s.ciphertext_start, ciphertext_len(p) + HEADER_LEN as u64);
        // The whole covering segment is fetched: the last part holds 100 bytes.
        assert_eq!(s.ciphertext_end, 2 * ciphertext_len(p) + HEADER_LEN as u64 + 100 + TAG_LEN as u64 - 1);
    }
}
