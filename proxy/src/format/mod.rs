//! The CloudTaser ciphertext format (versions 1, 2 and 3). Pure data transformation:
//! no I/O, no HTTP. `docs/FORMAT.md` is the normative description.

pub(crate) mod buffer;
mod constants;
mod envelope;
mod header;
mod key;
mod layout;
mod manifest;
mod metadata;
mod segment;
mod size;
mod stream;

pub use buffer::SegmentBuf;
pub use constants::{
    ENVELOPE_MAC_LEN, FORMAT_1, FORMAT_2, FORMAT_3, HEADER_LEN, MAGIC, MANIFEST_TAG_LEN, MAX_PART_TABLE_LEN, MAX_PARTS,
    MAX_STREAM_LEN, MULTIPART_VERSION, SALT_LEN, SEGMENT_LEN, TAG_LEN, UPLOAD_ID_TAG_LEN, VERSION, VERSION_3,
};
pub use envelope::{
    ObjectName, derive_object_key, envelope_bytes, object_key, open_customer_key, seal_customer_key, streams_digest,
    upload_id_tag, verify_envelope, verify_upload_id_tag, with_mac,
};
pub use header::Header;
pub use key::DataKey;
pub use layout::{LayoutSpan, ObjectLayout, StreamExtent};
pub use manifest::{decode_part_table, encode_part_table, manifest_bytes, manifest_tag, verify_manifest};
pub use metadata::{
    Authenticated, Binding, EnvelopeMetadata, META_KEY_SALT, META_PREFIX, META_WRAPPED_KEY, MetadataError, SealedParts,
    StoredLayout,
};
pub use segment::SegmentCipher;
pub use size::{ciphertext_len, plaintext_len, segment_count};
pub use stream::{Opener, Room, Sealer};

/// Everything that can go wrong while reading or writing the format.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FormatError {
    #[error("ciphertext header is malformed: {0}")]
    MalformedHeader(&'static str),
    #[error("unsupported ciphertext format version {0}")]
    UnsupportedVersion(u8),
    #[error("segment {0} failed authentication")]
    Authentication(u64),
    #[error("ciphertext is truncated")]
    Truncated,
    #[error("ciphertext has trailing bytes after the final segment")]
    TrailingData,
    #[error("plaintext is {actual} bytes but {declared} were declared")]
    LengthMismatch { declared: u64, actual: u64 },
    #[error("object of {0} bytes exceeds the format's limit")]
    TooLarge(u64),
    #[error("part table is malformed: {0}")]
    MalformedLayout(&'static str),
    #[error("the part table does not match its manifest")]
    Manifest,
    #[error("stream version {0} is not allowed in this object")]
    VersionMismatch(u8),
    #[error("the object's envelope does not verify under its data key and name")]
    Envelope,
    #[error("the upload id was not issued for this upload, bucket and key")]
    UploadId,
    #[error("the stream headers do not match the sealed envelope")]
    Streams,
}
