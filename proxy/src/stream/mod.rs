//! Body streams: the client's aws-chunked framing undone (`aws_chunked`), its
//! checksums verified (`checksum`), plaintext sealed into or opened from the
//! ciphertext format (`transform`), the upload re-framed for the
//! upstream (`framing`), and a stalled client body cut off (`idle`).
//! Bodies only: no S3 semantics, no HTTP requests.

pub mod aws_chunked;
pub mod checksum;
pub mod framing;
pub mod idle;
pub mod transform;
