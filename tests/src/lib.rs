//! Shared helpers for the integration tests.

use cloudtaser_s3proxy::format::{Header, Sealer};

/// Seals `plaintext` in one go, as the proxy would for a single PUT.
pub fn seal(data_key: &[u8; 32], salt: [u8; 32], part_number: u32, plaintext: &[u8]) -> Vec<u8> {
    let header = Header::new(part_number, plaintext.len() as u64, salt).expect("valid header");
    let mut sealer = Sealer::new(data_key, header);
    let mut out = Vec::new();
    sealer.update(plaintext, &mut out).expect("declared length");
    sealer.finish(&mut out).expect("declared length");
    out.concat()
}

/// The multi-segment vector's plaintext: byte i is i mod 251.
pub fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}
