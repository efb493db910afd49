//! Every number and label of the format, in one place (as minio/sio keeps
//! its own): the modules that encode, size and open streams all take them
//! from here, so none depends on another for a constant.

/// The first bytes of every stream.
pub const MAGIC: [u8; 4] = *b"CTS3";
/// The version of single-PUT streams, and of multipart parts written
/// before format 2.
pub const VERSION: u8 = 1;
/// The version of the parts of a format-2 multipart upload, whose part table
/// is sealed by a manifest (docs/FORMAT.md). The version is in the header,
/// the associated data of every segment, so a part cannot be passed off as
/// format 1, where no manifest is required.
pub const MULTIPART_VERSION: u8 = 2;
/// The version of every stream of a format-3 object, single PUT or part:
/// such a body cannot be relabelled as format 1 or 2, and no older stream
/// can be passed off as one (docs/FORMAT.md, "Format 3").
pub const VERSION_3: u8 = 3;
pub const SALT_LEN: usize = 32;
/// magic(4) version(1) segment_log2(1) reserved(2) part(4) plaintext_len(8) salt(32)
pub const HEADER_LEN: usize = 52;

/// AES-256-GCM's tag, after every segment.
pub const TAG_LEN: usize = 16;
pub(super) const SEGMENT_LEN_LOG2: u8 = 16;
/// Plaintext bytes per segment; only the final segment may be shorter.
pub const SEGMENT_LEN: u64 = 1 << SEGMENT_LEN_LOG2;
pub(super) const SEALED_SEGMENT_LEN: u64 = SEGMENT_LEN + TAG_LEN as u64;
/// The longest stream: segment indexes are 32 bits in the nonce.
pub const MAX_STREAM_LEN: u64 = (u32::MAX as u64) * SEGMENT_LEN;
/// HKDF info of a stream's segment key.
pub(super) const SEGMENT_KEY_INFO: &[u8] = b"cloudtaser-s3 v1 segment key";

/// S3's largest part number, and so the most streams an object can have.
pub const MAX_PARTS: u32 = 10_000;
pub const MANIFEST_TAG_LEN: usize = 32;
/// HKDF info of the manifest key, and the manifest's leading context.
pub(super) const MANIFEST_KEY_INFO: &[u8] = b"cloudtaser-s3 v2 manifest key";
pub(super) const MANIFEST_CONTEXT: &[u8] = b"cloudtaser-s3 v2 manifest";

/// Single-PUT objects and format-1 multipart objects.
pub const FORMAT_1: u8 = 1;
/// Multipart objects whose part table is sealed by a manifest.
pub const FORMAT_2: u8 = 2;
/// Objects whose envelope is authenticated as a whole by a MAC.
pub const FORMAT_3: u8 = 3;
pub const ENVELOPE_MAC_LEN: usize = 32;
/// HKDF info of the envelope MAC key, and the MAC input's leading context.
pub(super) const ENVELOPE_KEY_INFO: &[u8] = b"cloudtaser-s3 v3 envelope key";
pub(super) const ENVELOPE_CONTEXT: &[u8] = b"cloudtaser-s3 v3 envelope";
/// HKDF info of an object's data key derived from a bucket key (an
/// intermediate key shared by the objects of one window).
pub(super) const OBJECT_KEY_INFO: &[u8] = b"cloudtaser-s3 v3 object key";
/// The envelope MAC input's marker for a derived data key; the key salt follows.
pub(super) const ENVELOPE_DERIVED: u8 = 1;
/// HKDF info of the upload id key, and the upload id tag's context.
pub(super) const UPLOAD_ID_KEY_INFO: &[u8] = b"cloudtaser-s3 v3 upload id key";
pub(super) const UPLOAD_ID_CONTEXT: &[u8] = b"cloudtaser-s3 v3 upload id";
/// HKDF info of the key that seals an SSE-C customer key into an upload
/// id, and the associated data's context.
pub(super) const CUSTOMER_KEY_INFO: &[u8] = b"cloudtaser-s3 v3 sse-c key";
pub(super) const CUSTOMER_KEY_CONTEXT: &[u8] = b"cloudtaser-s3 v3 sse-c";
/// The upload id tag: HMAC-SHA256 truncated to 128 bits.
pub const UPLOAD_ID_TAG_LEN: usize = 16;
/// A longer part table is not stored: readers learn it from the stream
/// headers instead, and the manifest still seals it. S3 allows 2 KiB of
/// user metadata per object; the rest of the envelope takes about 200
/// bytes, leaving room for the workload's own. Equal-sized parts take two
/// runs whatever their number (`format::encode_part_table`).
pub const MAX_PART_TABLE_LEN: usize = 1024;
