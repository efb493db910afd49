//! The upload id the workload sees carries the upload's wrapped data key, so
//! any proxy replica, or the same proxy after a restart, can encrypt later
//! parts with no state store. A wrapped key is safe to show: only Vault can
//! unwrap it. Format-3 ids (`ctu3.`) also carry a tag under a key derived
//! from the data key over the upstream id, bucket and key
//! (`format::upload_id_tag`), so an id cannot be moved to another upload or
//! object, nor minted from a wrapped key read off the store.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

const PREFIX: &str = "ctu1.";
const PREFIX_3: &str = "ctu3.";
/// A format-3 id that also carries the upload's SSE-C customer key, sealed
/// (`format::seal_customer_key`).
const PREFIX_3_SSE_C: &str = "ctu3c.";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadKey {
    pub transit_key: String,
    pub wrapped_key: String,
    /// The format-3 tag; `None` for a format-2 id (`ctu1.`), whose parts
    /// are version-2 streams no format-3 object accepts.
    pub tag: Option<Vec<u8>>,
    /// The SSE-C customer key, sealed under a key derived from the data key.
    pub sse_c: Option<Vec<u8>>,
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
    let (transit, wrapped) = (URL_SAFE_NO_PAD.encode(&key.transit_key), URL_SAFE_NO_PAD.encode(&key.wrapped_key));
    match (&key.tag, &key.sse_c) {
        (Some(tag), Some(sealed)) => format!(
            "{PREFIX_3_SSE_C}{transit}.{wrapped}.{}.{}.{upstream}",
            URL_SAFE_NO_PAD.encode(tag),
            URL_SAFE_NO_PAD.encode(sealed)
        ),
        (Some(tag), None) => format!("{PREFIX_3}{transit}.{wrapped}.{}.{upstream}", URL_SAFE_NO_PAD.encode(tag)),
        (None, _) => format!("{PREFIX}{transit}.{wrapped}.{upstream}"),
    }
}

pub fn decode(id: &str) -> UploadId {
    let text = |s: &str| URL_SAFE_NO_PAD.decode(s).ok().and_then(|b| String::from_utf8(b).ok());
    let v3 = id.strip_prefix(PREFIX_3).and_then(|rest| {
        let mut fields = rest.splitn(4, '.');
        let (transit, wrapped, tag, upstream) = (fields.next()?, fields.next()?, fields.next()?, fields.next()?);
        let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
        Some(UploadId {
            upstream: upstream.to_owned(),
            key: Some(UploadKey {
                transit_key: text(transit)?,
                wrapped_key: text(wrapped)?,
                tag: Some(tag),
                sse_c: None,
            }),
        })
    });
    let v3_sse_c = || {
        id.strip_prefix(PREFIX_3_SSE_C).and_then(|rest| {
            let mut fields = rest.splitn(5, '.');
            let (transit, wrapped, tag, sealed, upstream) =
                (fields.next()?, fields.next()?, fields.next()?, fields.next()?, fields.next()?);
            Some(UploadId {
                upstream: upstream.to_owned(),
                key: Some(UploadKey {
                    transit_key: text(transit)?,
                    wrapped_key: text(wrapped)?,
                    tag: Some(URL_SAFE_NO_PAD.decode(tag).ok()?),
                    sse_c: Some(URL_SAFE_NO_PAD.decode(sealed).ok()?),
                }),
            })
        })
    };
    let v2 = || {
        id.strip_prefix(PREFIX).and_then(|rest| {
            let mut fields = rest.splitn(3, '.');
            let (transit, wrapped, upstream) = (fields.next()?, fields.next()?, fields.next()?);
            Some(UploadId {
                upstream: upstream.to_owned(),
                key: Some(UploadKey {
                    transit_key: text(transit)?,
                    wrapped_key: text(wrapped)?,
                    tag: None,
                    sse_c: None,
                }),
            })
        })
    };
    v3.or_else(v3_sse_c).or_else(v2).unwrap_or_else(|| UploadId { upstream: id.to_owned(), key: None })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_passes_foreign_ids_through() {
        let key =
            UploadKey { transit_key: "eu.key".into(), wrapped_key: "vault:v3:abc+/=".into(), tag: None, sse_c: None };
        let id = encode("2~upstream.id-with.dots", &key);
        assert!(id.starts_with("ctu1."));
        assert_eq!(decode(&id), UploadId { upstream: "2~upstream.id-with.dots".into(), key: Some(key.clone()) });
        let tagged = UploadKey { tag: Some(vec![7; 16]), ..key };
        let id = encode("2~upstream.id-with.dots", &tagged);
        assert!(id.starts_with("ctu3."));
        assert_eq!(decode(&id), UploadId { upstream: "2~upstream.id-with.dots".into(), key: Some(tagged.clone()) });
        let with_sse_c = UploadKey { sse_c: Some(vec![1; 60]), ..tagged };
        let id = encode("2~upstream.id-with.dots", &with_sse_c);
        assert!(id.starts_with("ctu3c."));
        assert_eq!(decode(&id), UploadId { upstream: "2~upstream.id-with.dots".into(), key: Some(with_sse_c) });
        assert_eq!(decode("plain-upstream-id"), UploadId { upstream: "plain-upstream-id".into(), key: None });
    }
}
