//! The data key a stream is sealed under, as the format code holds it.

use zeroize::Zeroize;

/// A 256-bit data key. The bytes live on the heap, so moving a `DataKey`
/// (into a `Result`, a pool, an `Arc`) moves a pointer and leaves no copy
/// of the key behind on the stack; they are wiped when it drops. Not
/// `Clone`: holders share one key through an `Arc`, never copies of it.
pub struct DataKey(Box<[u8; 32]>);

impl DataKey {
    /// A key holding a copy of `bytes` (which the caller wipes), or `None`
    /// unless they are 32.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != 32 {
            return None;
        }
        let mut key = Self(Box::new([0u8; 32]));
        key.0.copy_from_slice(bytes);
        Some(key)
    }

    /// A new key from aws-lc-rs's CSPRNG, generated in place.
    pub fn random() -> Result<Self, aws_lc_rs::error::Unspecified> {
        let mut key = Self(Box::new([0u8; 32]));
        aws_lc_rs::rand::fill(key.0.as_mut())?;
        Ok(key)
    }

    pub fn bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl Drop for DataKey {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl zeroize::ZeroizeOnDrop for DataKey {}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DataKey(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_32_bytes_make_a_key_and_it_never_prints() {
        assert!(DataKey::from_slice(&[1; 31]).is_none() && DataKey::from_slice(&[1; 33]).is_none());
        let key = DataKey::from_slice(&[7; 32]).unwrap();
        assert_eq!(key.bytes(), &[7; 32]);
        assert_eq!(format!("{key:?}"), "DataKey(<redacted>)");
        assert_ne!(DataKey::random().unwrap().bytes(), DataKey::random().unwrap().bytes());
    }
}
