//! Format 2's manifest: the part table of a multipart object, sealed with a
//! key only a holder of the object's data key can derive. Parts are
//! encrypted blind (in any order, before anyone knows which is last), so
//! nothing inside them can say how many there are; the manifest, written
//! once the upload is complete, does (docs/FORMAT.md, "Manifest").

use aws_lc_rs::hkdf::{HKDF_SHA256, Salt};
use aws_lc_rs::hmac;

use super::FormatError;
use super::constants::{MANIFEST_CONTEXT, MANIFEST_KEY_INFO, MANIFEST_TAG_LEN, MAX_PARTS};
use super::layout::ObjectLayout;

/// The bytes the tag covers: a context string, the part count (u32), the
/// plaintext total (u64), then each stream's part number (u32) and
/// plaintext length (u64), all big-endian.
pub fn manifest_bytes(layout: &ObjectLayout) -> Vec<u8> {
    let mut out = Vec::with_capacity(MANIFEST_CONTEXT.len() + 12 + 12 * layout.streams().len());
    out.extend_from_slice(MANIFEST_CONTEXT);
    out.extend_from_slice(&(layout.parts as u32).to_be_bytes());
    out.extend_from_slice(&layout.total.to_be_bytes());
    for s in layout.streams() {
        out.extend_from_slice(&s.part_number.to_be_bytes());
        out.extend_from_slice(&s.plaintext_len.to_be_bytes());
    }
    out
}

/// K_m = HKDF-SHA256(salt = empty, IKM = data key, info = MANIFEST_KEY_INFO).
fn manifest_key(data_key: &[u8; 32]) -> hmac::Key {
    let prk = Salt::new(HKDF_SHA256, &[]).extract(data_key);
    let okm = prk.expand(&[MANIFEST_KEY_INFO], hmac::HMAC_SHA256).expect("32 bytes is a valid HKDF-SHA256 output");
    hmac::Key::from(okm)
}

/// HMAC-SHA256 under K_m of [`manifest_bytes`].
pub fn manifest_tag(data_key: &[u8; 32], layout: &ObjectLayout) -> [u8; MANIFEST_TAG_LEN] {
    let tag = hmac::sign(&manifest_key(data_key), &manifest_bytes(layout));
    tag.as_ref().try_into().expect("HMAC-SHA256 is 32 bytes")
}

/// Checks a stored tag in constant time.
pub fn verify_manifest(
    data_key: &[u8; 32],
    layout: &ObjectLayout,
    tag: &[u8; MANIFEST_TAG_LEN],
) -> Result<(), FormatError> {
    hmac::verify(&manifest_key(data_key), &manifest_bytes(layout), tag).map_err(|_| FormatError::Manifest)
}

/// The part table as metadata: runs of consecutive part numbers with the
/// same plaintext length, `first[-last]:length`, comma-separated. An upload
/// of equal parts is two runs whatever its size (`1-127:8388608,128:1048576`).
pub fn encode_part_table(layout: &ObjectLayout) -> String {
    let mut runs: Vec<(u32, u32, u64)> = Vec::new();
    for s in layout.streams() {
        match runs.last_mut() {
            Some((_, last, len)) if *last + 1 == s.part_number && *len == s.plaintext_len => *last = s.part_number,
            _ => runs.push((s.part_number, s.part_number, s.plaintext_len)),
        }
    }
    let run = |(first, last, len): &(u32, u32, u64)| {
        if first == last { format!("{first}:{len}") } else { format!("{first}-{last}:{len}") }
    };
    runs.iter().map(run).collect::<Vec<_>>().join(",")
}

/// Inverse of [`encode_part_table`]; `None` for anything it would not write.
pub fn decode_part_table(text: &str) -> Option<Vec<(u32, u64)>> {
    let number = |s: &str| s.bytes().all(|b| b.is_ascii_digit()).then(|| s.parse::<u64>().ok()).flatten();
    let mut out: Vec<(u32, u64)> = Vec::new();
    for run in text.split(',') {
        let (numbers, len) = run.split_once(':')?;
        let (first, last) = numbers.split_once('-').unwrap_or((numbers, numbers));
        let (first, last, len) = (number(first)?, number(last)?, number(len)?);
        if first > last || last > u64::from(MAX_PARTS) || out.len() as u64 + last - first >= 10_000 {
            return None;
        }
        out.extend((first..=last).map(|n| (n as u32, len)));
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::SEGMENT_LEN;

    #[test]
    fn part_tables_round_trip_compactly() {
        let equal: Vec<(u32, u64)> = (1..=127).map(|n| (n, 128 * SEGMENT_LEN)).chain([(128, 1 << 20)]).collect();
        let layout = ObjectLayout::from_parts(&equal).unwrap();
        assert_eq!(encode_part_table(&layout), "1-127:8388608,128:1048576");
        assert_eq!(decode_part_table(&encode_part_table(&layout)).unwrap(), equal);
        let uneven = [(1, 5_242_881), (2, 5_242_881), (4, 7), (9, 0)];
        let layout = ObjectLayout::from_parts(&uneven).unwrap();
        assert_eq!(encode_part_table(&layout), "1-2:5242881,4:7,9:0");
        assert_eq!(decode_part_table("1-2:5242881,4:7,9:0").unwrap(), uneven);
        for bad in ["", "1", "1:", ":5", "2-1:5", "1-10001:5", "1:+5", "1:-5", "a:1", "1:5,,2:5", "1-2-3:4"] {
            assert!(decode_part_table(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn tags_bind_every_fact_and_the_key() {
        let key = [3u8; 32];
        let layout = ObjectLayout::from_parts(&[(1, 10), (2, 5)]).unwrap();
        let tag = manifest_tag(&key, &layout);
        assert_eq!(verify_manifest(&key, &layout, &tag), Ok(()));
        for other in [vec![(1, 10)], vec![(1, 10), (2, 4)], vec![(1, 10), (3, 5)], vec![(1, 10), (2, 5), (3, 0)]] {
            let other = ObjectLayout::from_parts(&other).unwrap();
            assert_eq!(verify_manifest(&key, &other, &tag), Err(FormatError::Manifest));
        }
        assert_eq!(verify_manifest(&[4u8; 32], &layout, &tag), Err(FormatError::Manifest));
    }
}
