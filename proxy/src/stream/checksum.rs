//! Verifies the checksums the client sent (`Content-MD5`,
//! `x-amz-checksum-*`, as headers or trailers) against the plaintext, so
//! nothing corrupted is ever encrypted and stored.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use http::HeaderMap;
use md5::Digest as _;

use super::aws_chunked::header_str;
use crate::error::{DigestMismatch, ProxyError, RequestError};

/// A checksum the client asked S3 to verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChecksumAlgorithm {
    Md5,
    Crc32,
    Crc32c,
    Crc64Nvme,
    Sha1,
    Sha256,
}

impl ChecksumAlgorithm {
    const ALL: [ChecksumAlgorithm; 5] = [Self::Crc32, Self::Crc32c, Self::Crc64Nvme, Self::Sha1, Self::Sha256];

    pub fn header_name(self) -> &'static str {
        match self {
            Self::Md5 => "content-md5",
            Self::Crc32 => "x-amz-checksum-crc32",
            Self::Crc32c => "x-amz-checksum-crc32c",
            Self::Crc64Nvme => "x-amz-checksum-crc64nvme",
            Self::Sha1 => "x-amz-checksum-sha1",
            Self::Sha256 => "x-amz-checksum-sha256",
        }
    }

    fn display(self) -> &'static str {
        match self {
            Self::Md5 => "Content-MD5",
            Self::Crc32 => "CRC32",
            Self::Crc32c => "CRC32C",
            Self::Crc64Nvme => "CRC64NVME",
            Self::Sha1 => "SHA1",
            Self::Sha256 => "SHA256",
        }
    }

    fn digest_len(self) -> usize {
        match self {
            Self::Crc32 | Self::Crc32c => 4,
            Self::Crc64Nvme => 8,
            Self::Md5 => 16,
            Self::Sha1 => 20,
            Self::Sha256 => 32,
        }
    }

    fn from_header_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.header_name().eq_ignore_ascii_case(name))
    }
}

enum Hasher {
    Crc(Box<crc_fast::Digest>, usize),
    Md5(Box<md5::Md5>),
    Aws(aws_lc_rs::digest::Context),
}

impl Hasher {
    fn new(alg: ChecksumAlgorithm) -> Self {
        use crc_fast::CrcAlgorithm::*;
        match alg {
            ChecksumAlgorithm::Crc32 => Hasher::Crc(Box::new(crc_fast::Digest::new(Crc32IsoHdlc)), 4),
            ChecksumAlgorithm::Crc32c => Hasher::Crc(Box::new(crc_fast::Digest::new(Crc32Iscsi)), 4),
            ChecksumAlgorithm::Crc64Nvme => Hasher::Crc(Box::new(crc_fast::Digest::new(Crc64Nvme)), 8),
            ChecksumAlgorithm::Md5 => Hasher::Md5(Box::default()),
            ChecksumAlgorithm::Sha1 => {
                Hasher::Aws(aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY))
            }
            ChecksumAlgorithm::Sha256 => Hasher::Aws(aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256)),
        }
    }

    fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Crc(d, _) => d.update(data),
            Hasher::Md5(d) => d.update(data),
            Hasher::Aws(d) => d.update(data),
        }
    }

    fn finish(self) -> Vec<u8> {
        match self {
            Hasher::Crc(d, width) => d.finalize().to_be_bytes()[8 - width..].to_vec(),
            Hasher::Md5(d) => d.finalize().to_vec(),
            Hasher::Aws(d) => d.finish().as_ref().to_vec(),
        }
    }
}

/// CRC32C of a byte stream, base64 as S3 spells it; used for the ciphertext trailer.
pub struct Crc32c(crc_fast::Digest);

impl Default for Crc32c {
    fn default() -> Self {
        Self(crc_fast::Digest::new(crc_fast::CrcAlgorithm::Crc32Iscsi))
    }
}

impl Crc32c {
    pub fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }

    pub fn base64(&self) -> String {
        STANDARD.encode((self.0.finalize() as u32).to_be_bytes())
    }
}

struct Check {
    algorithm: ChecksumAlgorithm,
    hasher: Hasher,
    /// `None` when the value arrives in a trailer.
    expected: Option<Vec<u8>>,
}

/// Verifies the client's checksums over the plaintext as it streams past.
pub struct ChecksumVerifier {
    checks: Vec<Check>,
}

/// A checksum that matched, to echo back to the client in the response.
#[derive(Debug, Clone)]
pub struct VerifiedChecksum {
    pub header_name: &'static str,
    pub value: String,
}

impl ChecksumVerifier {
    pub fn from_headers(headers: &HeaderMap) -> Result<Self, ProxyError> {
        let mut checks = Vec::new();
        if let Some(v) = header_str(headers, "content-md5") {
            checks.push(Check {
                algorithm: ChecksumAlgorithm::Md5,
                hasher: Hasher::new(ChecksumAlgorithm::Md5),
                expected: Some(decode_digest(ChecksumAlgorithm::Md5, v)?),
            });
        }
        for alg in ChecksumAlgorithm::ALL {
            if let Some(v) = header_str(headers, alg.header_name()) {
                checks.push(Check { algorithm: alg, hasher: Hasher::new(alg), expected: Some(decode_digest(alg, v)?) });
            }
        }
        if let Some(trailer) = header_str(headers, "x-amz-trailer") {
            for name in trailer.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                let alg = ChecksumAlgorithm::from_header_name(name)
                    .ok_or_else(|| RequestError::UnsupportedTrailer { name: name.to_owned() })?;
                if checks.iter().all(|c| c.algorithm != alg) {
                    checks.push(Check { algorithm: alg, hasher: Hasher::new(alg), expected: None });
                }
            }
        }
        if checks.iter().filter(|c| c.algorithm != ChecksumAlgorithm::Md5).count() > 1 {
            return Err(RequestError::MultipleChecksums.into());
        }
        Ok(Self { checks })
    }

    pub fn update(&mut self, data: &[u8]) {
        for c in &mut self.checks {
            c.hasher.update(data);
        }
    }

    /// Compares every digest; `trailers` supplies values not sent as headers.
    pub fn finish(self, trailers: &[(String, String)]) -> Result<Vec<VerifiedChecksum>, ProxyError> {
        let mut verified = Vec::new();
        for c in self.checks {
            let trailer = trailers.iter().find(|(n, _)| n == c.algorithm.header_name()).map(|(_, v)| v.as_str());
            // A value sent both as a header and as a trailer is checked twice:
            // neither may go unverified.
            let from_trailer = trailer.map(|v| decode_digest(c.algorithm, v)).transpose()?;
            let expected: Vec<Vec<u8>> = match (c.expected, from_trailer) {
                (None, None) => {
                    return Err(RequestError::MissingTrailer { header: c.algorithm.header_name() }.into());
                }
                (header, trailer) => header.into_iter().chain(trailer).collect(),
            };
            let actual = c.hasher.finish();
            if expected.iter().any(|e| *e != actual) {
                return Err(match c.algorithm {
                    ChecksumAlgorithm::Md5 => DigestMismatch::ContentMd5,
                    a => DigestMismatch::Checksum { algorithm: a.display() },
                }
                .into());
            }
            if c.algorithm != ChecksumAlgorithm::Md5 {
                verified
                    .push(VerifiedChecksum { header_name: c.algorithm.header_name(), value: STANDARD.encode(&actual) });
            }
        }
        Ok(verified)
    }
}

fn decode_digest(alg: ChecksumAlgorithm, value: &str) -> Result<Vec<u8>, ProxyError> {
    let bytes = STANDARD.decode(value.trim()).ok().filter(|b| b.len() == alg.digest_len());
    match (bytes, alg) {
        (Some(b), _) => Ok(b),
        (None, ChecksumAlgorithm::Md5) => Err(ProxyError::InvalidDigest),
        (None, a) => Err(RequestError::ChecksumValue { header: a.header_name() }.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(http::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
        }
        h
    }

    #[test]
    fn checksums_verify_and_mismatches_are_bad_digest() {
        // CRC32("hello world") = 0x0d4a1185, MD5 = 5eb63bbbe01eeed093cb22bb8f5acdc3
        let good = headers(&[("x-amz-checksum-crc32", "DUoRhQ=="), ("content-md5", "XrY7u+Ae7tCTyyK7j1rNww==")]);
        let mut v = ChecksumVerifier::from_headers(&good).unwrap();
        v.update(b"hello ");
        v.update(b"world");
        let verified = v.finish(&[]).unwrap();
        assert_eq!(verified[0].value, "DUoRhQ==");

        let mut v = ChecksumVerifier::from_headers(&good).unwrap();
        v.update(b"hello there");
        assert_eq!(v.finish(&[]).unwrap_err().code(), "BadDigest");

        let trailer = headers(&[("x-amz-trailer", "x-amz-checksum-crc32")]);
        let mut v = ChecksumVerifier::from_headers(&trailer).unwrap();
        v.update(b"hello world");
        assert!(v.finish(&[("x-amz-checksum-crc32".into(), "DUoRhQ==".into())]).is_ok());
        let v = ChecksumVerifier::from_headers(&trailer).unwrap();
        assert_eq!(v.finish(&[]).unwrap_err().code(), "InvalidRequest");
    }

    #[test]
    fn a_value_sent_as_header_and_trailer_is_checked_both_times() {
        let both = headers(&[("x-amz-checksum-crc32", "DUoRhQ=="), ("x-amz-trailer", "x-amz-checksum-crc32")]);
        let mut v = ChecksumVerifier::from_headers(&both).unwrap();
        v.update(b"hello world");
        let wrong_trailer = [("x-amz-checksum-crc32".to_owned(), "AAAAAA==".to_owned())];
        assert_eq!(v.finish(&wrong_trailer).unwrap_err().code(), "BadDigest");
        let mut v = ChecksumVerifier::from_headers(&both).unwrap();
        v.update(b"hello world");
        assert!(v.finish(&[("x-amz-checksum-crc32".to_owned(), "DUoRhQ==".to_owned())]).is_ok());
    }

    #[test]
    fn malformed_digests_are_rejected_up_front() {
        let e = ChecksumVerifier::from_headers(&headers(&[("content-md5", "nope")])).err().unwrap();
        assert_eq!(e.code(), "InvalidDigest");
        let e = ChecksumVerifier::from_headers(&headers(&[("x-amz-checksum-sha256", "AAAA")])).err().unwrap();
        assert_eq!(e.code(), "InvalidRequest");
    }
}
