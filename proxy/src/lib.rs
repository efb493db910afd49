//! CloudTaser S3 proxy: client-side envelope encryption for S3 workloads.
//!
//! `format` is the ciphertext format, `keys` the Vault Transit key service,
//! `credentials` the proxy's upstream identity, `request` the request path
//! and `server` the listeners. See docs/ARCHITECTURE.md.

pub mod app;
pub mod body;
pub mod bounded_map;
pub mod commands;
pub mod config;
pub mod credentials;
pub mod env_names;
pub mod error;
pub mod format;
pub mod keys;
pub mod logging;
pub mod metrics;
pub mod request;
pub mod server;
