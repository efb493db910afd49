//! User metadata that some S3 clients fill with a digest of the object's
//! plaintext. User metadata is stored in the clear next to the ciphertext,
//! so such a digest lets the storage provider confirm a guess of the
//! contents (is this the known file? which of these candidates is it?),
//! which the encryption is there to prevent. By default the proxy removes
//! the digests it knows of from every write that carries user metadata.
//!
//! Per field (docs/COMPATIBILITY.md says what each client loses):
//!
//! - `x-amz-meta-md5chksum` (rclone, on multipart uploads): the base64
//!   MD5 of the plaintext and nothing else, so the whole field goes.
//! - `x-amz-meta-s3cmd-attrs` (s3cmd, on every upload):
//!   `atime:…/ctime:…/gid:…/gname:…/md5:<hex>/mode:…/mtime:…/uid:…/uname:…`.
//!   Only the `md5:` component goes; the rest is what `s3cmd --preserve`
//!   restores (mode, times, uid and gid) and is no digest of the contents.
//!   `uname`/`gname` (local account names) are kept as well: like any
//!   other user metadata the workload chooses to store, they are visible
//!   to the provider, and s3cmd never reads them back, so a workload that
//!   minds sets `preserve_attrs_list` without them.
//!
//! Stripping rather than refusing: refusing would fail every s3cmd upload
//! and every large rclone upload, while without the digest both clients
//! still work (they lose a content check, as for SSE-KMS objects).

use http::{HeaderMap, HeaderValue};

/// rclone's base64 MD5 of the plaintext, set on multipart uploads.
pub const RCLONE_MD5: &str = "x-amz-meta-md5chksum";

/// s3cmd's `key:value/…` file attributes, with `md5:<hex of the plaintext>`.
pub const S3CMD_ATTRS: &str = "x-amz-meta-s3cmd-attrs";

/// Whether plaintext digests in user metadata are stored as sent
/// (`CLOUDTASER_S3PROXY_KEEP_PLAINTEXT_DIGESTS`) or removed (the default).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KeepDigests {
    #[default]
    Strip,
    Keep,
}

/// Removes the plaintext digests listed above from the user metadata of a
/// write, unless `keep` says to store them.
pub fn remove_plaintext_digests(headers: &mut HeaderMap, keep: KeepDigests) {
    if keep == KeepDigests::Keep {
        return;
    }
    headers.remove(RCLONE_MD5);
    if !headers.contains_key(S3CMD_ATTRS) {
        return;
    }
    let attrs: Vec<HeaderValue> = headers.get_all(S3CMD_ATTRS).iter().cloned().collect();
    headers.remove(S3CMD_ATTRS);
    for value in attrs {
        if let Some(kept) = without_md5(value.as_bytes()) {
            headers.append(S3CMD_ATTRS, kept);
        }
    }
}

/// The s3cmd attributes without their `md5:` component; `None` when
/// nothing else is left. s3cmd splits on `/` and then on the first `:`.
fn without_md5(attrs: &[u8]) -> Option<HeaderValue> {
    let is_md5 = |part: &&[u8]| {
        let name = part.split(|b| *b == b':').next().unwrap_or_default();
        name.trim_ascii().eq_ignore_ascii_case(b"md5")
    };
    let kept: Vec<&[u8]> = attrs.split(|b| *b == b'/').filter(|p| !p.is_empty() && !is_md5(p)).collect();
    if kept.is_empty() {
        return None;
    }
    // Bytes of a valid header value joined by `/` are a valid header value;
    // were they not, dropping the field is the safe side.
    HeaderValue::from_bytes(&kept.join(&b'/')).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ATTRS: &str = "atime:1700000000/ctime:1700000001/gid:1000/gname:app/md5:5d41402abc4b2a76b9719d911017c592/mode:33188/mtime:1700000002/uid:1000/uname:app";

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(http::HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn digests_are_removed_and_the_rest_kept() {
        let mut h = headers(&[
            (S3CMD_ATTRS, ATTRS),
            (RCLONE_MD5, "XUFAKrxLKna5cZ2REBfFkg=="),
            ("x-amz-meta-mtime", "1700000002.5"),
            ("content-type", "text/plain"),
        ]);
        remove_plaintext_digests(&mut h, KeepDigests::Strip);
        assert_eq!(
            h[S3CMD_ATTRS],
            "atime:1700000000/ctime:1700000001/gid:1000/gname:app/mode:33188/mtime:1700000002/uid:1000/uname:app"
        );
        assert!(!h.contains_key(RCLONE_MD5));
        assert_eq!((h["x-amz-meta-mtime"].to_str().unwrap(), h.len()), ("1700000002.5", 3));
    }

    #[test]
    fn every_value_and_spelling_is_covered() {
        let mut h = headers(&[
            (S3CMD_ATTRS, "MD5:abc/mode:1"),
            (S3CMD_ATTRS, " md5 :abc"),
            (S3CMD_ATTRS, "md5:abc//uid:0/"),
            (RCLONE_MD5, "a"),
            (RCLONE_MD5, "b"),
        ]);
        remove_plaintext_digests(&mut h, KeepDigests::Strip);
        let left: Vec<_> = h.get_all(S3CMD_ATTRS).iter().map(|v| v.to_str().unwrap()).collect();
        assert_eq!(left, ["mode:1", "uid:0"], "an attribute list with only the md5 goes entirely");
        assert!(!h.contains_key(RCLONE_MD5));
    }

    #[test]
    fn keep_stores_them_as_sent() {
        let mut h = headers(&[(S3CMD_ATTRS, ATTRS), (RCLONE_MD5, "XUFAKrxLKna5cZ2REBfFkg==")]);
        let before = h.clone();
        remove_plaintext_digests(&mut h, KeepDigests::Keep);
        assert_eq!(h, before);
    }

    #[test]
    fn other_metadata_is_untouched() {
        let mut h = headers(&[("x-amz-meta-md5", "not ours to judge"), ("x-amz-meta-s3cmd-attrsx", "md5:1")]);
        let before = h.clone();
        remove_plaintext_digests(&mut h, KeepDigests::Strip);
        assert_eq!(h, before);
    }
}
