use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::hkdf::{HKDF_SHA256, Salt};

use super::FormatError;
use super::constants::{HEADER_LEN, SEGMENT_KEY_INFO as KEY_INFO, TAG_LEN};
use super::header::Header;

/// AES-256-GCM under a key derived for one stream. The header is the
/// associated data of every segment, so it cannot be altered or swapped.
pub struct SegmentCipher {
    key: LessSafeKey,
    header: [u8; HEADER_LEN],
}

impl SegmentCipher {
    /// `data_key` is the envelope's 32-byte data key from Vault.
    pub fn new(data_key: &[u8; 32], header: &Header) -> Self {
        let prk = Salt::new(HKDF_SHA256, &header.salt).extract(data_key);
        let mut stream_key = zeroize::Zeroizing::new([0u8; 32]);
        prk.expand(&[KEY_INFO], &AES_256_GCM)
            .and_then(|okm| okm.fill(stream_key.as_mut()))
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        let key = UnboundKey::new(&AES_256_GCM, stream_key.as_ref()).expect("32-byte AES-256 key");
        Self { key: LessSafeKey::new(key), header: header.encode() }
    }

    pub fn header_bytes(&self) -> &[u8; HEADER_LEN] {
        &self.header
    }

    /// Encrypts `in_out` in place and returns the tag that follows it.
    pub fn seal_in_place(&self, index: u32, last: bool, in_out: &mut [u8]) -> [u8; TAG_LEN] {
        let tag = self
            .key
            .seal_in_place_separate_tag(nonce(index, last), Aad::from(&self.header[..]), in_out)
            .expect("AES-GCM seal of a bounded segment");
        tag.as_ref().try_into().expect("AES-256-GCM tags are 16 bytes")
    }

    /// Encrypts `plain` into `sealed`: the ciphertext, then the tag
    /// (`plain.len() + TAG_LEN` bytes), every byte of `sealed` written.
    pub fn seal_into(&self, index: u32, last: bool, plain: &[u8], sealed: &mut [u8]) {
        let (ciphertext, tag) = sealed.split_at_mut(plain.len());
        self.key
            .seal_out_of_place_scatter(nonce(index, last), Aad::from(&self.header[..]), plain, ciphertext, &[], tag)
            .expect("AES-GCM seal of a bounded segment into a buffer of its sealed length");
    }

    /// Decrypts a sealed segment into `plain` (`sealed.len() - TAG_LEN`
    /// bytes, every one written), leaving the ciphertext where it is.
    pub fn open_into(&self, index: u32, last: bool, sealed: &[u8], plain: &mut [u8]) -> Result<(), FormatError> {
        let (ciphertext, tag) = sealed.split_at(sealed.len() - TAG_LEN);
        self.key
            .open_separate_gather(nonce(index, last), Aad::from(&self.header[..]), ciphertext, tag, plain)
            .map_err(|_| FormatError::Authentication(u64::from(index)))
    }

    /// Decrypts a sealed segment in place, returning the plaintext length.
    pub fn open(&self, index: u32, last: bool, buf: &mut [u8]) -> Result<usize, FormatError> {
        self.key
            .open_in_place(nonce(index, last), Aad::from(&self.header[..]), buf)
            .map(|plain| plain.len())
            .map_err(|_| FormatError::Authentication(u64::from(index)))
    }
}

/// STREAM nonce: seven zero bytes, the big-endian segment index, a final flag.
/// Keys are unique per stream (random salt), so the prefix carries no entropy.
fn nonce(index: u32, last: bool) -> Nonce {
    let mut n = [0u8; NONCE_LEN];
    n[7..11].copy_from_slice(&index.to_be_bytes());
    n[11] = u8::from(last);
    Nonce::assume_unique_for_key(n)
}
