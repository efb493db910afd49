//! S3 vocabulary, with no I/O: what a request is (`classify`, `operations`),
//! its ranges, conditions, ETags, XML, the DeleteObjects document (`delete`),
//! upload ids, SSE-C key and the headers the proxy rewrites. Depends on
//! nothing in `request`, `stream` or `upstream`.

pub mod classify;
pub mod conditional;
pub mod delete;
pub mod etag;
pub mod headers;
pub mod metadata;
pub mod operations;
pub mod range;
pub mod sse_c;
pub mod upload_id;
pub mod xml;
