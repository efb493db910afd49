//! Format 3's envelope MAC and upload id tag: one HMAC, under keys derived
//! from the data key, over everything a reader trusts (docs/FORMAT.md,
//! "Format 3"). Because the MAC key is derived from the data key, a stored
//! MAC identifies the data key: the envelope commits to it, which AES-GCM
//! alone does not.

use aws_lc_rs::hkdf::{HKDF_SHA256, Salt};
use aws_lc_rs::{digest, hmac};

use super::FormatError;
use super::constants::{
    CUSTOMER_KEY_CONTEXT, CUSTOMER_KEY_INFO, ENVELOPE_CONTEXT, ENVELOPE_DERIVED, ENVELOPE_KEY_INFO, ENVELOPE_MAC_LEN,
    FORMAT_3, HEADER_LEN, OBJECT_KEY_INFO, UPLOAD_ID_CONTEXT, UPLOAD_ID_KEY_INFO, UPLOAD_ID_TAG_LEN,
};
use super::key::DataKey;
use super::metadata::{Binding, EnvelopeMetadata, StoredLayout};

/// The name a request gives the object: what the MAC binds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObjectName<'a> {
    pub bucket: &'a str,
    pub key: &'a str,
}

fn derived_key(data_key: &[u8; 32], info: &'static [u8]) -> hmac::Key {
    let prk = Salt::new(HKDF_SHA256, &[]).extract(data_key);
    let info = [info];
    let okm = prk.expand(&info, hmac::HMAC_SHA256).expect("32 bytes is a valid HKDF-SHA256 output");
    hmac::Key::from(okm)
}

/// `u32(len) || bytes`: no field can run into the next.
fn push_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u32).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// The bytes the envelope MAC covers. `None` for an envelope that is not
/// format 3 or has nothing a reader could be served from (pending), or a
/// multipart one without its table.
pub fn envelope_bytes(envelope: &EnvelopeMetadata, name: ObjectName<'_>) -> Option<Vec<u8>> {
    let auth = envelope.auth?;
    let mut out = Vec::with_capacity(128);
    out.extend_from_slice(ENVELOPE_CONTEXT);
    out.push(FORMAT_3);
    out.push(auth.binding.code());
    push_str(&mut out, if auth.binding == Binding::BucketKey { name.bucket } else { "" });
    push_str(&mut out, if auth.binding == Binding::None { "" } else { name.key });
    push_str(&mut out, &envelope.transit_key);
    match &envelope.layout {
        StoredLayout::Single(len) => {
            out.extend_from_slice(&len.to_be_bytes());
            out.push(1);
            out.extend_from_slice(envelope.salt.as_ref()?);
        }
        StoredLayout::MultipartSealed(sealed) => {
            let table = sealed.table.as_ref()?;
            out.extend_from_slice(&sealed.total.to_be_bytes());
            out.push(2);
            out.extend_from_slice(&(table.len() as u32).to_be_bytes());
            for (part, len) in table {
                out.extend_from_slice(&part.to_be_bytes());
                out.extend_from_slice(&len.to_be_bytes());
            }
            out.extend_from_slice(&sealed.tag);
        }
        // Pending: only the name and key, so that a seal can tell that the
        // parts it finds were uploaded for this name.
        StoredLayout::MultipartPending => {
            out.extend_from_slice(&0u64.to_be_bytes());
            out.push(3);
        }
        StoredLayout::Multipart => return None,
    }
    // A derived data key: its key salt is covered too (it is also bound by
    // the MAC key, which derives from the data key it makes).
    if let Some(key_salt) = &envelope.key_salt {
        out.push(ENVELOPE_DERIVED);
        out.extend_from_slice(key_salt);
    }
    Some(out)
}

/// An object's data key from a bucket key (the intermediate key its
/// envelope wraps) and the object's own key salt:
/// HKDF-SHA256(salt = key salt, IKM = intermediate key, info =
/// "cloudtaser-s3 v3 object key"), 32 bytes. docs/FORMAT.md, "Bucket keys".
pub fn derive_object_key(intermediate: &[u8; 32], key_salt: &[u8; 32]) -> DataKey {
    let prk = Salt::new(HKDF_SHA256, key_salt).extract(intermediate);
    let info = [OBJECT_KEY_INFO];
    let okm = prk.expand(&info, KeyLen32).expect("32 bytes is a valid HKDF-SHA256 output");
    let mut out = zeroize::Zeroizing::new([0u8; 32]);
    okm.fill(out.as_mut()).expect("32 bytes fill a 32-byte key");
    DataKey::from_slice(out.as_ref()).expect("32 bytes make a data key")
}

/// The data key of an object whose envelope was unwrapped to `unwrapped`:
/// itself, or derived from it when the envelope has a key salt.
pub fn object_key(unwrapped: std::sync::Arc<DataKey>, key_salt: Option<&[u8; 32]>) -> std::sync::Arc<DataKey> {
    match key_salt {
        Some(salt) => std::sync::Arc::new(derive_object_key(unwrapped.bytes(), salt)),
        None => unwrapped,
    }
}

struct KeyLen32;

impl aws_lc_rs::hkdf::KeyType for KeyLen32 {
    fn len(&self) -> usize {
        32
    }
}

/// The envelope with its MAC for `name`, or `None` when it cannot carry one
/// (see [`envelope_bytes`]).
pub fn with_mac(data_key: &[u8; 32], mut envelope: EnvelopeMetadata, name: ObjectName<'_>) -> Option<EnvelopeMetadata> {
    let bytes = envelope_bytes(&envelope, name)?;
    let tag = hmac::sign(&derived_key(data_key, ENVELOPE_KEY_INFO), &bytes);
    let mac: [u8; ENVELOPE_MAC_LEN] = tag.as_ref().try_into().expect("HMAC-SHA256 is 32 bytes");
    envelope.auth.as_mut()?.mac = Some(mac);
    Some(envelope)
}

/// Checks a format-3 envelope's MAC for `name`, in constant time. Formats 1
/// and 2 pass (they carry no MAC; their own checks apply).
pub fn verify_envelope(
    data_key: &[u8; 32],
    envelope: &EnvelopeMetadata,
    name: ObjectName<'_>,
) -> Result<(), FormatError> {
    let Some(auth) = envelope.auth else { return Ok(()) };
    let mac = auth.mac.ok_or(FormatError::Envelope)?;
    let bytes = envelope_bytes(envelope, name).ok_or(FormatError::Envelope)?;
    hmac::verify(&derived_key(data_key, ENVELOPE_KEY_INFO), &bytes, &mac).map_err(|_| FormatError::Envelope)
}

/// SHA-256 of stream headers in stored order: format 3's `cloudtaser-streams`.
pub fn streams_digest<'a>(headers: impl IntoIterator<Item = &'a [u8; HEADER_LEN]>) -> [u8; 32] {
    let mut ctx = digest::Context::new(&digest::SHA256);
    for h in headers {
        ctx.update(h);
    }
    ctx.finish().as_ref().try_into().expect("SHA-256 is 32 bytes")
}

/// The tag a format-3 upload id carries: binds the upstream upload id to
/// the bucket and key it was created for, under a key only a holder of the
/// data key can derive.
pub fn upload_id_tag(data_key: &[u8; 32], name: ObjectName<'_>, upstream_id: &str) -> [u8; UPLOAD_ID_TAG_LEN] {
    let mut msg = Vec::with_capacity(64 + upstream_id.len());
    msg.extend_from_slice(UPLOAD_ID_CONTEXT);
    push_str(&mut msg, name.bucket);
    push_str(&mut msg, name.key);
    push_str(&mut msg, upstream_id);
    let tag = hmac::sign(&derived_key(data_key, UPLOAD_ID_KEY_INFO), &msg);
    tag.as_ref()[..UPLOAD_ID_TAG_LEN].try_into().expect("16 of 32 bytes")
}

/// The associated data that binds a sealed customer key to its upload.
fn customer_key_aad(name: ObjectName<'_>, upstream_id: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(64 + upstream_id.len());
    aad.extend_from_slice(CUSTOMER_KEY_CONTEXT);
    push_str(&mut aad, name.bucket);
    push_str(&mut aad, name.key);
    push_str(&mut aad, upstream_id);
    aad
}

fn customer_key_cipher(data_key: &[u8; 32]) -> aws_lc_rs::aead::LessSafeKey {
    use aws_lc_rs::aead::{AES_256_GCM, LessSafeKey, UnboundKey};
    let prk = Salt::new(HKDF_SHA256, &[]).extract(data_key);
    let info = [CUSTOMER_KEY_INFO];
    let okm = prk.expand(&info, &AES_256_GCM).expect("32 bytes is a valid HKDF-SHA256 output");
    LessSafeKey::new(UnboundKey::from(okm))
}

/// An SSE-C customer key sealed for an upload id (nonce ‖ AES-256-GCM
/// ciphertext ‖ tag) under a key derived from the upload's data key, bound
/// to the upload, bucket and key: CompleteMultipartUpload, which clients
/// send without the customer key, can then seal the object. Whoever holds
/// the id already holds the customer key; nobody without the data key can
/// read it back.
pub fn seal_customer_key(
    data_key: &[u8; 32],
    name: ObjectName<'_>,
    upstream_id: &str,
    customer_key: &[u8],
) -> Result<Vec<u8>, FormatError> {
    use aws_lc_rs::aead::{Aad, NONCE_LEN, Nonce};
    let mut nonce = [0u8; NONCE_LEN];
    aws_lc_rs::rand::fill(&mut nonce).map_err(|_| FormatError::MalformedHeader("no randomness"))?;
    let mut sealed = customer_key.to_vec();
    customer_key_cipher(data_key)
        .seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(customer_key_aad(name, upstream_id)),
            &mut sealed,
        )
        .map_err(|_| FormatError::UploadId)?;
    let mut out = nonce.to_vec();
    out.extend_from_slice(&sealed);
    Ok(out)
}

/// The customer key [`seal_customer_key`] sealed, in a wiping buffer.
pub fn open_customer_key(
    data_key: &[u8; 32],
    name: ObjectName<'_>,
    upstream_id: &str,
    sealed: &[u8],
) -> Result<zeroize::Zeroizing<Vec<u8>>, FormatError> {
    use aws_lc_rs::aead::{Aad, NONCE_LEN, Nonce};
    if sealed.len() < NONCE_LEN {
        return Err(FormatError::UploadId);
    }
    let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
    let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| FormatError::UploadId)?;
    let mut buf = zeroize::Zeroizing::new(ciphertext.to_vec());
    let len = customer_key_cipher(data_key)
        .open_in_place(nonce, Aad::from(customer_key_aad(name, upstream_id)), buf.as_mut_slice())
        .map_err(|_| FormatError::UploadId)?
        .len();
    buf.truncate(len);
    Ok(buf)
}

/// Checks an upload id tag in constant time.
pub fn verify_upload_id_tag(
    data_key: &[u8; 32],
    name: ObjectName<'_>,
    upstream_id: &str,
    tag: &[u8],
) -> Result<(), FormatError> {
    let expected = upload_id_tag(data_key, name, upstream_id);
    if tag.len() == UPLOAD_ID_TAG_LEN && aws_lc_rs::constant_time::verify_slices_are_equal(&expected, tag).is_ok() {
        Ok(())
    } else {
        Err(FormatError::UploadId)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::metadata::{Authenticated, SealedParts};

    const KEY: [u8; 32] = [5; 32];
    const NAME: ObjectName<'static> = ObjectName { bucket: "b", key: "dir/a" };

    fn single(binding: Binding) -> EnvelopeMetadata {
        EnvelopeMetadata {
            wrapped_key: "vault:v1:x".into(),
            transit_key: "t".into(),
            layout: StoredLayout::Single(10),
            salt: Some([1; 32]),
            auth: Some(Authenticated { binding, mac: None }),
            key_salt: None,
        }
    }

    #[test]
    fn the_mac_binds_every_fact_and_the_name_its_binding_names() {
        let env = with_mac(&KEY, single(Binding::Key), NAME).unwrap();
        assert_eq!(verify_envelope(&KEY, &env, NAME), Ok(()));
        // Another bucket is fine under `key`, another key is not.
        assert_eq!(verify_envelope(&KEY, &env, ObjectName { bucket: "replica", key: "dir/a" }), Ok(()));
        assert_eq!(verify_envelope(&KEY, &env, ObjectName { bucket: "b", key: "dir/b" }), Err(FormatError::Envelope));
        assert_eq!(verify_envelope(&[6; 32], &env, NAME), Err(FormatError::Envelope));
        let edits: [&dyn Fn(&mut EnvelopeMetadata); 5] = [
            &|e| e.layout = StoredLayout::Single(11),
            &|e| e.salt = Some([2; 32]),
            &|e| e.transit_key = "u".into(),
            &|e| e.auth.as_mut().unwrap().binding = Binding::None,
            &|e| e.auth.as_mut().unwrap().mac = None,
        ];
        for edit in edits {
            let mut changed = env.clone();
            edit(&mut changed);
            assert_eq!(verify_envelope(&KEY, &changed, NAME), Err(FormatError::Envelope));
        }
        // The wrapped key is not covered: `rewrap` replaces it without the DEK.
        let rewrapped = EnvelopeMetadata { wrapped_key: "vault:v2:y".into(), ..env.clone() };
        assert_eq!(verify_envelope(&KEY, &rewrapped, NAME), Ok(()));
        let both = with_mac(&KEY, single(Binding::BucketKey), NAME).unwrap();
        assert_eq!(
            verify_envelope(&KEY, &both, ObjectName { bucket: "replica", key: "dir/a" }),
            Err(FormatError::Envelope)
        );
        let none = with_mac(&KEY, single(Binding::None), NAME).unwrap();
        assert_eq!(verify_envelope(&KEY, &none, ObjectName { bucket: "x", key: "y" }), Ok(()));
    }

    #[test]
    fn multipart_macs_cover_the_table_and_the_headers() {
        let sealed = |table: Vec<(u32, u64)>, tag| EnvelopeMetadata {
            layout: StoredLayout::MultipartSealed(SealedParts {
                total: table.iter().map(|(_, n)| n).sum(),
                table: Some(table),
                tag,
            }),
            salt: None,
            ..single(Binding::Key)
        };
        let env = with_mac(&KEY, sealed(vec![(1, 10), (2, 5)], [3; 32]), NAME).unwrap();
        assert_eq!(verify_envelope(&KEY, &env, NAME), Ok(()));
        let mac = env.auth.unwrap().mac;
        for other in [sealed(vec![(1, 10)], [3; 32]), sealed(vec![(1, 10), (2, 5)], [4; 32])] {
            let other = EnvelopeMetadata { auth: Some(Authenticated { binding: Binding::Key, mac }), ..other };
            assert_eq!(verify_envelope(&KEY, &other, NAME), Err(FormatError::Envelope));
        }
        // A pending envelope is bound to its name, and is no sealed one.
        let pending = EnvelopeMetadata { layout: StoredLayout::MultipartPending, salt: None, ..single(Binding::Key) };
        let pending = with_mac(&KEY, pending, NAME).unwrap();
        assert_eq!(verify_envelope(&KEY, &pending, NAME), Ok(()));
        assert!(verify_envelope(&KEY, &pending, ObjectName { bucket: "b", key: "dir/b" }).is_err());
        let relabelled = EnvelopeMetadata { layout: env.layout.clone(), ..pending };
        assert!(verify_envelope(&KEY, &relabelled, NAME).is_err());
    }

    #[test]
    fn upload_id_tags_bind_upload_bucket_and_key() {
        let tag = upload_id_tag(&KEY, NAME, "u-1");
        assert_eq!(verify_upload_id_tag(&KEY, NAME, "u-1", &tag), Ok(()));
        assert!(verify_upload_id_tag(&KEY, NAME, "u-2", &tag).is_err());
        assert!(verify_upload_id_tag(&KEY, ObjectName { bucket: "b", key: "dir/b" }, "u-1", &tag).is_err());
        assert!(verify_upload_id_tag(&KEY, ObjectName { bucket: "c", key: "dir/a" }, "u-1", &tag).is_err());
        assert!(verify_upload_id_tag(&[6; 32], NAME, "u-1", &tag).is_err());
        assert!(verify_upload_id_tag(&KEY, NAME, "u-1", &tag[..15]).is_err());
    }

    #[test]
    fn a_sealed_customer_key_opens_only_for_its_upload_under_its_data_key() {
        let sealed = seal_customer_key(&KEY, NAME, "u-1", &[9; 32]).unwrap();
        assert_eq!(open_customer_key(&KEY, NAME, "u-1", &sealed).unwrap().as_slice(), &[9; 32]);
        assert!(!sealed.windows(32).any(|w| w == [9; 32]), "the key is not in the id in the clear");
        assert!(open_customer_key(&KEY, NAME, "u-2", &sealed).is_err());
        assert!(open_customer_key(&KEY, ObjectName { bucket: "b", key: "dir/b" }, "u-1", &sealed).is_err());
        assert!(open_customer_key(&[6; 32], NAME, "u-1", &sealed).is_err());
        let mut flipped = sealed.clone();
        flipped[20] ^= 1;
        assert!(open_customer_key(&KEY, NAME, "u-1", &flipped).is_err());
        assert!(open_customer_key(&KEY, NAME, "u-1", &sealed[..5]).is_err());
    }
}
