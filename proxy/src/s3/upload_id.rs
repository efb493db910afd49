//! The upload id the workload sees carries the upload's wrapped data key, so
//! any proxy replica, or the same proxy after a restart, can encrypt later
//! parts with no state store. A wrapped key is safe to show: only Vault can
//! unwrap it.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

const PREFIX: &str = "ctu1.";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadKey {
    pub transit_key: String,
    pub wrapped_key: String,
}

/// An upload id as the workload sent it, split into its parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadId {
    pub upstream: String,
    /// `None` for ids the upstream handed out directly (ListMultipartUploads):
    /// good for Abort and ListParts, not for uploading parts.
    pub key: Option<UploadKey>,
}

pub fn encode(upstream: &str, key: &UploadKey) -> String {
    format!(
        "{PREFIX}{}.{}.{upstream}",
        URL_SAFE_NO_PAD.encode(&key.transit_key),
        URL_SAFE_NO_PAD.encode(&key.wrapped_key)
    )
}

pub fn decode(id: &str) -> UploadId {
    let parsed = id.strip_prefix(PREFIX).and_then(|rest| {
        let mut fields = rest.splitn(3, '.');
        let transit = fields.next()?;
        let wrapped = fields.next()?;
        let upstream = fields.next()?;
        let text = |s: &str| URL_SAFE_NO_PAD.decode(s).ok().and_then(|b| String::from_utf8(b).ok());
        Some(UploadId {
            upstream: upstream.to_owned(),
            key: Some(UploadKey { transit_key: text(transit)?, wrapped_key: text(wrapped)? }),
        })
    });
    parsed.unwrap_or_else(|| UploadId { upstream: id.to_owned(), key: None })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_passes_foreign_ids_through() {
        let key = UploadKey { transit_key: "eu.key".into(), wrapped_key: "vault:v3:abc+/=".into() };
        let id = encode("2~upstream.id-with.dots", &key);
        assert_eq!(decode(&id), UploadId { upstream: "2~upstream.id-with.dots".into(), key: Some(key) });
        assert_eq!(decode("plain-upstream-id"), UploadId { upstream: "plain-upstream-id".into(), key: None });
    }
}
