//! In-process doubles for the two services the proxy talks to, for unit
//! tests only: an in-memory Vault Transit (`vault`) and an in-memory S3
//! (`s3`). The end-to-end suite runs against OpenBao and s3s-fs/Garage;
//! these exist so that every handler and error path also has a fast test,
//! and so that faults the real servers cannot be made to produce on cue
//! (a token revoked between two calls) can be.

pub mod s3;
pub mod vault;
