//! Where an object's plaintext lives in its stored ciphertext. A single PUT
//! is one stream; a multipart object is one stream per part, in ascending
//! part-number order, each of any length (docs/FORMAT.md).

use std::sync::Arc;

use super::FormatError;
use super::constants::{HEADER_LEN, MAX_PARTS, MAX_STREAM_LEN, SEALED_SEGMENT_LEN, SEGMENT_LEN, TAG_LEN};
use super::size::{ciphertext_len, plaintext_len};

/// One stream of an object: its header's part number and plaintext length,
/// and where it starts in the plaintext and in the stored ciphertext.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamExtent {
    pub part_number: u32,
    pub plaintext_len: u64,
    pub plaintext_start: u64,
    pub stored_start: u64,
}

impl StreamExtent {
    pub fn stored_len(&self) -> u64 {
        ciphertext_len(self.plaintext_len)
    }
}

/// The streams of one object. Cheap to clone (the table is shared).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectLayout {
    /// Plaintext bytes in the whole object.
    pub total: u64,
    /// Number of streams.
    pub parts: u64,
    streams: Arc<[StreamExtent]>,
}

/// The ciphertext to fetch for an inclusive plaintext range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayoutSpan {
    /// Index of the stream the range starts in.
    pub stream: u64,
    /// Part number in the header of that stream.
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
        Self::build(&[(0, len)])
    }

    /// A multipart object's streams from its part table: (part number,
    /// plaintext length) in stored order. Part numbers are 1..=10000 and
    /// strictly ascending, as S3 requires of CompleteMultipartUpload.
    pub fn from_parts(parts: &[(u32, u64)]) -> Result<Self, FormatError> {
        if parts.is_empty() || parts.len() > MAX_PARTS as usize {
            return Err(FormatError::MalformedLayout("a multipart object has 1 to 10000 parts"));
        }
        let mut previous = 0;
        for (number, _) in parts {
            if *number <= previous || *number > MAX_PARTS {
                return Err(FormatError::MalformedLayout("part numbers must ascend within 1..=10000"));
            }
            previous = *number;
        }
        // Each stream is bounded (2^48 bytes), so 10,000 of them cannot
        // overflow the offsets.
        match parts.iter().find(|(_, len)| *len > MAX_STREAM_LEN) {
            Some((_, len)) => Err(FormatError::TooLarge(*len)),
            None => Ok(Self::build(parts)),
        }
    }

    /// Format 1: a multipart object whose parts hold `part_len` plaintext
    /// bytes each (the last one at most that), numbered 1..=N, stored in
    /// `stored_len` bytes. `None` when no such layout has that stored length.
    pub fn multipart(part_len: u64, stored_len: u64) -> Option<Self> {
        let part_ct = ciphertext_len(part_len);
        let parts = stored_len.div_ceil(part_ct).max(1);
        let last = plaintext_len(stored_len - (parts - 1) * part_ct)?;
        if last > part_len || parts > u64::from(MAX_PARTS) {
            return None;
        }
        let table: Vec<(u32, u64)> =
            (1..=parts as u32).map(|n| (n, if u64::from(n) == parts { last } else { part_len })).collect();
        Some(Self::build(&table))
    }

    fn build(parts: &[(u32, u64)]) -> Self {
        let mut streams = Vec::with_capacity(parts.len());
        let (mut plaintext_start, mut stored_start) = (0u64, 0u64);
        for &(part_number, plaintext_len) in parts {
            streams.push(StreamExtent { part_number, plaintext_len, plaintext_start, stored_start });
            plaintext_start += plaintext_len;
            stored_start += ciphertext_len(plaintext_len);
        }
        Self { total: plaintext_start, parts: streams.len() as u64, streams: streams.into() }
    }

    /// The stream at `index` (0-based, `index < parts`).
    pub fn stream(&self, index: u64) -> &StreamExtent {
        &self.streams[index as usize]
    }

    pub fn streams(&self) -> &[StreamExtent] {
        &self.streams
    }

    /// Plaintext length of the stream at `index` (0-based).
    pub fn stream_len(&self, index: u64) -> u64 {
        self.stream(index).plaintext_len
    }

    pub fn stored_len(&self) -> u64 {
        let last = self.stream(self.parts - 1);
        last.stored_start + last.stored_len()
    }

    /// Whether every stream but the last holds the same multiple of the
    /// segment length, numbered 1..=N: the layouts format 1 can express,
    /// and the only ones whose plaintext size a listing can compute exactly
    /// from the stored size and the part count.
    pub fn is_aligned(&self) -> bool {
        let Some((_, rest)) = self.streams.split_last() else { return true };
        let first = rest.first().map_or(0, |s| s.plaintext_len);
        self.streams.iter().enumerate().all(|(i, s)| s.part_number as usize == i + 1)
            && rest.iter().all(|s| s.plaintext_len == first && first % SEGMENT_LEN == 0)
            && self.streams.last().is_some_and(|s| rest.is_empty() || s.plaintext_len <= first)
    }

    /// The stream holding plaintext `offset` and the offset inside it.
    fn locate(&self, offset: u64) -> (u64, u64) {
        // The last stream whose start is at or before the offset; empty
        // streams are skipped because the next one starts at the same offset.
        let index = self.streams.partition_point(|s| s.plaintext_start <= offset).saturating_sub(1);
        (index as u64, offset - self.streams[index].plaintext_start)
    }

    /// The caller guarantees `first <= last < total`.
    pub fn span(&self, first: u64, last: u64) -> LayoutSpan {
        debug_assert!(first <= last && last < self.total);
        let (first_index, first_offset) = self.locate(first);
        let (last_index, last_offset) = self.locate(last);
        let first_segment = first_offset / SEGMENT_LEN;
        let last_segment = last_offset / SEGMENT_LEN;
        let last_segment_len = (self.stream_len(last_index) - last_segment * SEGMENT_LEN).min(SEGMENT_LEN);
        let start = self.stream(first_index);
        let end = self.stream(last_index);
        LayoutSpan {
            stream: first_index,
            part_number: start.part_number,
            header_start: start.stored_start,
            ciphertext_start: start.stored_start + HEADER_LEN as u64 + first_segment * SEALED_SEGMENT_LEN,
            ciphertext_end: end.stored_start
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
            assert!(l.is_aligned());
        }
        assert!(ObjectLayout::multipart(p, 3 * ciphertext_len(p) + 10).is_none());
    }

    #[test]
    fn multipart_span_crosses_parts() {
        let p = 2 * SEGMENT_LEN;
        let l = ObjectLayout::multipart(p, 2 * ciphertext_len(p) + ciphertext_len(100)).unwrap();
        let s = l.span(p + 5, 2 * p + 10);
        assert_eq!((s.part_number, s.stream, s.first_segment, s.skip), (2, 1, 0, 5));
        assert_eq!(s.header_start, ciphertext_len(p));
        assert_eq!(s.ciphertext_start, ciphertext_len(p) + HEADER_LEN as u64);
        // The whole covering segment is fetched: the last part holds 100 bytes.
        assert_eq!(s.ciphertext_end, 2 * ciphertext_len(p) + HEADER_LEN as u64 + 100 + TAG_LEN as u64 - 1);
    }

    #[test]
    fn uneven_parts_with_gaps_locate_exactly() {
        let table = [(2, 5 * SEGMENT_LEN + 1), (5, 3), (9, 7 * SEGMENT_LEN - 9), (10, 0)];
        let l = ObjectLayout::from_parts(&table).unwrap();
        assert!(!l.is_aligned());
        assert_eq!(l.total, 12 * SEGMENT_LEN - 5);
        assert_eq!(l.stored_len(), table.iter().map(|(_, p)| ciphertext_len(*p)).sum::<u64>());
        // The first byte of each non-empty stream starts at its first segment.
        for (i, (number, _)) in table.iter().enumerate().take(3) {
            let start = l.stream(i as u64).plaintext_start;
            let s = l.span(start, start);
            assert_eq!((s.stream, s.part_number, s.first_segment, s.skip), (i as u64, *number, 0, 0));
            assert_eq!(s.ciphertext_start, l.stream(i as u64).stored_start + HEADER_LEN as u64);
        }
        let s = l.span(5 * SEGMENT_LEN, 5 * SEGMENT_LEN + 2);
        assert_eq!((s.stream, s.first_segment, s.skip), (0, 5, 0));
        assert_eq!(s.ciphertext_end, l.stream(1).stored_start + HEADER_LEN as u64 + 3 + TAG_LEN as u64 - 1);
    }

    #[test]
    fn part_tables_must_ascend_and_fit() {
        assert!(ObjectLayout::from_parts(&[]).is_err());
        assert!(ObjectLayout::from_parts(&[(0, 5)]).is_err());
        assert!(ObjectLayout::from_parts(&[(2, 5), (2, 5)]).is_err());
        assert!(ObjectLayout::from_parts(&[(3, 5), (2, 5)]).is_err());
        assert!(ObjectLayout::from_parts(&[(10_001, 5)]).is_err());
        assert!(ObjectLayout::from_parts(&[(1, u64::MAX), (2, 1)]).is_err());
        assert!(ObjectLayout::from_parts(&[(1, 5), (10_000, 5)]).is_ok());
    }
}
