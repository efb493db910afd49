//! In-process tests of the request path: every handler `RequestPath::handle`
//! dispatches, and its error paths, against an in-memory Vault
//! (`testing::vault`) and an in-memory S3 (`testing::s3`).

mod errors;
mod harness;
mod multipart;
mod objects;
mod refusals;
mod table;
