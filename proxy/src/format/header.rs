use super::FormatError;
use super::constants::{
    HEADER_LEN, MAGIC, MAX_STREAM_LEN, MULTIPART_VERSION, SALT_LEN, SEGMENT_LEN_LOG2, VERSION, VERSION_3,
};

/// The per-stream header. It is written in clear at the start of every
/// stream and authenticated as associated data of every segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// [`VERSION`], [`MULTIPART_VERSION`] or [`VERSION_3`].
    pub version: u8,
    /// Multipart part number, 0 for a single-PUT object.
    pub part_number: u32,
    pub plaintext_len: u64,
    pub salt: [u8; SALT_LEN],
}

impl Header {
    pub fn new(part_number: u32, plaintext_len: u64, salt: [u8; SALT_LEN]) -> Result<Self, FormatError> {
        if plaintext_len > MAX_STREAM_LEN {
            return Err(FormatError::TooLarge(plaintext_len));
        }
        Ok(Self { version: VERSION, part_number, plaintext_len, salt })
    }

    /// The same header marked as a part of a format-2 multipart upload.
    pub fn multipart_v2(self) -> Self {
        Self { version: MULTIPART_VERSION, ..self }
    }

    /// The same header as a stream of a format-3 object.
    pub fn format_3(self) -> Self {
        Self { version: VERSION_3, ..self }
    }

    /// A header with a fresh random salt.
    pub fn random(part_number: u32, plaintext_len: u64) -> Result<Self, FormatError> {
        let mut salt = [0u8; SALT_LEN];
        aws_lc_rs::rand::fill(&mut salt).map_err(|_| FormatError::MalformedHeader("no randomness"))?;
        Self::new(part_number, plaintext_len, salt)
    }

    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[0..4].copy_from_slice(&MAGIC);
        out[4] = self.version;
        out[5] = SEGMENT_LEN_LOG2;
        // out[6..8] reserved, zero
        out[8..12].copy_from_slice(&self.part_number.to_be_bytes());
        out[12..20].copy_from_slice(&self.plaintext_len.to_be_bytes());
        out[20..52].copy_from_slice(&self.salt);
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, FormatError> {
        if bytes.len() < HEADER_LEN {
            return Err(FormatError::Truncated);
        }
        if bytes[0..4] != MAGIC {
            return Err(FormatError::MalformedHeader("bad magic"));
        }
        let version = bytes[4];
        if ![VERSION, MULTIPART_VERSION, VERSION_3].contains(&version) {
            return Err(FormatError::UnsupportedVersion(version));
        }
        if bytes[5] != SEGMENT_LEN_LOG2 {
            return Err(FormatError::MalformedHeader("unsupported segment size"));
        }
        if bytes[6..8] != [0, 0] {
            return Err(FormatError::MalformedHeader("reserved bytes set"));
        }
        let part_number = u32::from_be_bytes(bytes[8..12].try_into().expect("4 bytes"));
        let plaintext_len = u64::from_be_bytes(bytes[12..20].try_into().expect("8 bytes"));
        let salt: [u8; SALT_LEN] = bytes[20..52].try_into().expect("32 bytes");
        Ok(Self { version, ..Self::new(part_number, plaintext_len, salt)? })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let h = Header::new(7, 123_456, [9u8; SALT_LEN]).unwrap();
        assert_eq!(Header::decode(&h.encode()).unwrap(), h);
    }

    #[test]
    fn rejects_bad_magic_version_and_reserved() {
        let good = Header::new(0, 1, [0u8; SALT_LEN]).unwrap().encode();
        let mut b = good;
        b[0] = b'X';
        assert_eq!(Header::decode(&b), Err(FormatError::MalformedHeader("bad magic")));
        let mut b = good;
        b[4] = 4;
        assert_eq!(Header::decode(&b), Err(FormatError::UnsupportedVersion(4)));
        let v2 = Header::new(4, 1, [0u8; SALT_LEN]).unwrap().multipart_v2();
        assert_eq!(Header::decode(&v2.encode()).unwrap().version, MULTIPART_VERSION);
        let mut b = good;
        b[7] = 1;
        assert_eq!(Header::decode(&b), Err(FormatError::MalformedHeader("reserved bytes set")));
        assert_eq!(Header::decode(&good[..51]), Err(FormatError::Truncated));
    }
}
