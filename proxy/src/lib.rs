//! CloudTaser S3 proxy: client-side envelope encryption for S3 workloads.
//!
//! `format` is the ciphertext format, `keys` the Vault Transit key service,
//! `credentials` the proxy's upstream identity, `s3` the S3 vocabulary,
//! `stream` the body transforms, `upstream` the signed upstream client,
//! `request` the dispatch and handlers, and `server` the listeners.
//! Dependencies point down that list's reverse: `request` uses the rest,
//! nothing uses `request` but `commands`, `app` and `server`. See
//! docs/ARCHITECTURE.md.

pub mod app;
pub mod body;
pub mod bounded_map;
pub mod cli;
pub mod commands;
pub mod config;
pub mod config_error;
pub mod credentials;
pub mod env_names;
pub mod error;
pub mod error_chain;
pub mod format;
pub mod keys;
pub mod logging;
pub mod metrics;
pub mod request;
pub mod s3;
pub mod server;
pub mod settings;
pub mod stream;
#[cfg(test)]
mod testing;
pub mod upstream;
