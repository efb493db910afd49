//! The CloudTaser ciphertext format (version 1). Pure data transformation:
//! no I/O, no HTTP. `docs/FORMAT.md` is the normative description.

mod header;
mod layout;
mod metadata;
mod segment;
mod size;
mod stream;

pub use header::{HEADER_LEN, Header, MAGIC, SALT_LEN, VERSION};
pub use layout::{LayoutSpan, ObjectLayout};
pub use metadata::{EnvelopeMetadata, META_PREFIX, MetadataError, StoredLayout};
pub use segment::{SegmentCipher, TAG_LEN};
pub use size::{SEGMENT_LEN, ciphertext_len, plaintext_len, segment_count};
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
}
