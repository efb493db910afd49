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

    pub fn display_name(self) -> &'static str {
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

    /// The element name in S3's XML documents (`ChecksumCRC32`).
    pub fn element_name(self) -> &'static str {
        match self {
            Self::Md5 => "ContentMD5",
            Self::Crc32 => "ChecksumCRC32",
            Self::Crc32c => "ChecksumCRC32C",
            Self::Crc64Nvme => "ChecksumCRC64NVME",
            Self::Sha1 => "ChecksumSHA1",
            Self::Sha256 => "ChecksumSHA256",
        }
    }

    /// The CRC whose value over concatenated data can be combined from its
    /// parts' values and lengths; `None` for the hashes.
    fn crc(self) -> Option<crc_fast::CrcAlgorithm> {
        match self {
            Self::Crc32 => Some(crc_fast::CrcAlgorithm::Crc32IsoHdlc),
            Self::Crc32c => Some(crc_fast::CrcAlgorithm::Crc32Iscsi),
            Self::Crc64Nvme => Some(crc_fast::CrcAlgorithm::Crc64Nvme),
            _ => None,
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
    /// Computed by the proxy for itself ([`ChecksumVerifier::observing_crc64nvme`]):
    /// nothing to compare, and never echoed to the client.
    observed: bool,
}

/// Verifies the client's checksums over the plaintext as it streams past.
pub struct ChecksumVerifier {
    checks: Vec<Check>,
    len: u64,
}

/// The plaintext digests of one uploaded part: the client's checksums, as
/// verified, and a CRC64NVME the proxy computed itself. A checksum of the
/// whole object at CompleteMultipartUpload is verified from these.
#[derive(Debug, Clone, Default)]
pub struct PartDigests {
    pub len: u64,
    digests: Vec<(ChecksumAlgorithm, Vec<u8>)>,
}

impl PartDigests {
    fn of(&self, algorithm: ChecksumAlgorithm) -> Option<&[u8]> {
        self.digests.iter().find(|(a, _)| *a == algorithm).map(|(_, d)| d.as_slice())
    }
}

/// How a checksum of a multipart object is formed from its parts
/// (`x-amz-checksum-type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MultipartChecksumType {
    /// The checksum of the whole object's bytes (CRCs: combined from the parts').
    FullObject,
    /// The checksum of the parts' checksums, with `-N` (N parts).
    Composite,
}

impl MultipartChecksumType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::FullObject => "FULL_OBJECT",
            Self::Composite => "COMPOSITE",
        }
    }
}

/// A checksum of a whole multipart object the client sent, verified.
#[derive(Debug, Clone)]
pub struct VerifiedObjectChecksum {
    pub algorithm: ChecksumAlgorithm,
    /// The client's value, as it sent it.
    pub value: String,
    pub kind: MultipartChecksumType,
}

/// The checksum of the whole object a CompleteMultipartUpload sends
/// (`x-amz-checksum-*` with `x-amz-checksum-type`), if any.
pub fn requested_object_checksum(
    headers: &HeaderMap,
) -> Result<Option<(ChecksumAlgorithm, String, Option<MultipartChecksumType>)>, ProxyError> {
    let kind = match header_str(headers, "x-amz-checksum-type").map(str::trim) {
        None => None,
        Some(t) if t.eq_ignore_ascii_case("FULL_OBJECT") => Some(MultipartChecksumType::FullObject),
        Some(t) if t.eq_ignore_ascii_case("COMPOSITE") => Some(MultipartChecksumType::Composite),
        Some(_) => return Err(RequestError::ChecksumValue { header: "x-amz-checksum-type" }.into()),
    };
    let mut sent = ChecksumAlgorithm::ALL.into_iter().filter_map(|a| Some((a, header_str(headers, a.header_name())?)));
    let Some((algorithm, value)) = sent.next() else { return Ok(None) };
    if sent.next().is_some() {
        return Err(RequestError::MultipleChecksums.into());
    }
    Ok(Some((algorithm, value.trim().to_owned(), kind)))
}

/// Verifies a checksum of a whole multipart object from its parts' digests:
/// a FULL_OBJECT CRC by combining the parts' CRCs and lengths, a COMPOSITE
/// one as the checksum of the parts' checksums. Without a type, a value
/// with `-N` is composite, a CRC64NVME full-object, and any other value may
/// be either (S3 takes the type the upload was created with, which the
/// proxy does not keep). What cannot be computed from the parts' digests
/// is refused, never accepted unchecked.
pub fn verify_object_checksum(
    algorithm: ChecksumAlgorithm,
    value: &str,
    kind: Option<MultipartChecksumType>,
    parts: &[PartDigests],
) -> Result<VerifiedObjectChecksum, ProxyError> {
    let (digest, count) = match value.rsplit_once('-') {
        Some((d, n)) => (d, Some(n)),
        None => (value, None),
    };
    if count.is_some_and(|n| n.parse::<usize>().ok() != Some(parts.len())) {
        return Err(RequestError::ChecksumValue { header: algorithm.header_name() }.into());
    }
    let expected = decode_digest(algorithm, digest)?;
    let kinds = match (kind, count, algorithm) {
        (Some(k), _, _) => vec![k],
        (None, Some(_), _) => vec![MultipartChecksumType::Composite],
        (None, None, ChecksumAlgorithm::Crc64Nvme) => vec![MultipartChecksumType::FullObject],
        (None, None, _) => vec![MultipartChecksumType::FullObject, MultipartChecksumType::Composite],
    };
    let mut computed_any = false;
    for k in kinds {
        let Some(actual) = object_checksum(algorithm, k, parts) else { continue };
        computed_any = true;
        if actual == expected {
            return Ok(VerifiedObjectChecksum { algorithm, value: value.to_owned(), kind: k });
        }
    }
    if computed_any {
        Err(DigestMismatch::Checksum { algorithm: algorithm.display_name() }.into())
    } else {
        Err(RequestError::UnverifiableChecksum { algorithm: algorithm.display_name() }.into())
    }
}

/// The checksum of the whole object, or `None` when some part's digest is
/// not known (or the combination does not exist: a composite CRC64NVME).
fn object_checksum(
    algorithm: ChecksumAlgorithm,
    kind: MultipartChecksumType,
    parts: &[PartDigests],
) -> Option<Vec<u8>> {
    let digests: Vec<&[u8]> = parts.iter().map(|p| p.of(algorithm)).collect::<Option<_>>()?;
    match kind {
        MultipartChecksumType::FullObject => {
            let crc = algorithm.crc()?;
            let width = algorithm.digest_len();
            let mut combined: Option<u64> = None;
            for (part, digest) in parts.iter().zip(digests) {
                let mut be = [0u8; 8];
                be[8 - width..].copy_from_slice(digest);
                let value = u64::from_be_bytes(be);
                combined = Some(match combined {
                    None => value,
                    Some(acc) => crc_fast::checksum_combine(crc, acc, value, part.len),
                });
            }
            Some(combined?.to_be_bytes()[8 - width..].to_vec())
        }
        MultipartChecksumType::Composite if algorithm != ChecksumAlgorithm::Crc64Nvme => {
            let mut hasher = Hasher::new(algorithm);
            for d in digests {
                hasher.update(d);
            }
            Some(hasher.finish())
        }
        MultipartChecksumType::Composite => None,
    }
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
        let check =
            |algorithm, expected| Check { algorithm, hasher: Hasher::new(algorithm), expected, observed: false };
        if let Some(v) = header_str(headers, "content-md5") {
            checks.push(check(ChecksumAlgorithm::Md5, Some(decode_digest(ChecksumAlgorithm::Md5, v)?)));
        }
        for alg in ChecksumAlgorithm::ALL {
            if let Some(v) = header_str(headers, alg.header_name()) {
                checks.push(check(alg, Some(decode_digest(alg, v)?)));
            }
        }
        // Every x-amz-trailer header, as the decoder reads them: a trailer
        // it accepts is always one checked here.
        let declared = headers.get_all("x-amz-trailer").iter().map(|v| v.to_str().unwrap_or("\u{fffd}"));
        for name in declared.flat_map(|v| v.split(',')).map(str::trim).filter(|n| !n.is_empty()) {
            let alg = ChecksumAlgorithm::from_header_name(name)
                .ok_or_else(|| RequestError::UnsupportedTrailer { name: name.to_owned() })?;
            if checks.iter().all(|c| c.algorithm != alg) {
                checks.push(check(alg, None));
            }
        }
        if checks.iter().filter(|c| c.algorithm != ChecksumAlgorithm::Md5).count() > 1 {
            return Err(RequestError::MultipleChecksums.into());
        }
        Ok(Self { checks, len: 0 })
    }

    /// Also computes the plaintext's CRC64NVME for the proxy itself (an
    /// uploaded part's [`PartDigests`]), unless the client sent one.
    pub fn observing_crc64nvme(mut self, on: bool) -> Self {
        if on && self.checks.iter().all(|c| c.algorithm != ChecksumAlgorithm::Crc64Nvme) {
            let alg = ChecksumAlgorithm::Crc64Nvme;
            self.checks.push(Check { algorithm: alg, hasher: Hasher::new(alg), expected: None, observed: true });
        }
        self
    }

    pub fn update(&mut self, data: &[u8]) {
        self.len += data.len() as u64;
        for c in &mut self.checks {
            c.hasher.update(data);
        }
    }

    /// Compares every digest; `trailers` supplies values not sent as headers.
    pub fn finish(self, trailers: &[(String, String)]) -> Result<Vec<VerifiedChecksum>, ProxyError> {
        self.finish_with_digests(trailers).map(|(verified, _)| verified)
    }

    /// As [`finish`](Self::finish), with every digest of the plaintext.
    pub fn finish_with_digests(
        self,
        trailers: &[(String, String)],
    ) -> Result<(Vec<VerifiedChecksum>, PartDigests), ProxyError> {
        let mut verified = Vec::new();
        let mut digests = PartDigests { len: self.len, digests: Vec::new() };
        for c in self.checks {
            if c.observed {
                digests.digests.push((c.algorithm, c.hasher.finish()));
                continue;
            }
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
                    a => DigestMismatch::Checksum { algorithm: a.display_name() },
                }
                .into());
            }
            if c.algorithm != ChecksumAlgorithm::Md5 {
                verified
                    .push(VerifiedChecksum { header_name: c.algorithm.header_name(), value: STANDARD.encode(&actual) });
            }
            digests.digests.push((c.algorithm, actual));
        }
        Ok((verified, digests))
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

    fn part(data: &[u8], client: &[(&str, &str)]) -> PartDigests {
        let mut v = ChecksumVerifier::from_headers(&headers(client)).unwrap().observing_crc64nvme(true);
        v.update(data);
        v.finish_with_digests(&[]).unwrap().1
    }

    fn digest_b64(alg: ChecksumAlgorithm, data: &[u8]) -> String {
        let mut h = Hasher::new(alg);
        h.update(data);
        STANDARD.encode(h.finish())
    }

    #[test]
    fn a_whole_object_checksum_is_verified_from_the_parts_or_refused() {
        let (a, b) = (vec![1u8; 70_000], b"the last part".to_vec());
        let whole = [a.clone(), b.clone()].concat();
        let crc32 = |d: &[u8]| digest_b64(ChecksumAlgorithm::Crc32, d);
        let parts =
            [part(&a, &[("x-amz-checksum-crc32", &crc32(&a))]), part(&b, &[("x-amz-checksum-crc32", &crc32(&b))])];
        let full = Some(MultipartChecksumType::FullObject);
        // CRC64NVME: the proxy's own per-part CRCs, combined.
        let nvme = digest_b64(ChecksumAlgorithm::Crc64Nvme, &whole);
        let ok = verify_object_checksum(ChecksumAlgorithm::Crc64Nvme, &nvme, full, &parts).unwrap();
        assert_eq!((ok.value.as_str(), ok.kind), (nvme.as_str(), MultipartChecksumType::FullObject));
        assert!(verify_object_checksum(ChecksumAlgorithm::Crc64Nvme, &nvme, None, &parts).is_ok());
        let wrong = digest_b64(ChecksumAlgorithm::Crc64Nvme, b"other");
        let e = verify_object_checksum(ChecksumAlgorithm::Crc64Nvme, &wrong, full, &parts).unwrap_err();
        assert_eq!((e.status().as_u16(), e.code()), (400, "BadDigest"));
        // CRC32 full-object from the client's verified part CRC32s; composite too.
        assert!(verify_object_checksum(ChecksumAlgorithm::Crc32, &crc32(&whole), full, &parts).is_ok());
        let mut raw = STANDARD.decode(crc32(&a)).unwrap();
        raw.extend(STANDARD.decode(crc32(&b)).unwrap());
        let composite = format!("{}-2", crc32(&raw));
        let ok = verify_object_checksum(ChecksumAlgorithm::Crc32, &composite, None, &parts).unwrap();
        assert_eq!(ok.kind, MultipartChecksumType::Composite);
        let e = verify_object_checksum(ChecksumAlgorithm::Crc32, &crc32(&raw), full, &parts).unwrap_err();
        assert_eq!(e.code(), "BadDigest");
        // No CRC32C of the parts is known: refused, never accepted unchecked.
        let c = digest_b64(ChecksumAlgorithm::Crc32c, &whole);
        let e = verify_object_checksum(ChecksumAlgorithm::Crc32c, &c, full, &parts).unwrap_err();
        assert_eq!((e.status().as_u16(), e.code()), (400, "InvalidRequest"));
        let e = verify_object_checksum(
            ChecksumAlgorithm::Sha256,
            &digest_b64(ChecksumAlgorithm::Sha256, &whole),
            None,
            &parts,
        );
        assert_eq!(e.unwrap_err().code(), "InvalidRequest");
    }
}
