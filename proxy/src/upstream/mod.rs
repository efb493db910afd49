//! The upstream client: requests signed with the proxy's own credentials
//! (`sign`), sent over its connection pool (`forward`), by `UpstreamClient`.

mod client;
pub mod forward;
pub mod sign;

pub use client::UpstreamClient;

use crate::stream::framing::UploadIntegrity;

/// The upstream S3 service, resolved from the settings.
#[derive(Debug, Clone)]
pub struct Upstream {
    pub endpoint: http::Uri,
    pub region: String,
    pub is_gcs: bool,
    pub integrity: UploadIntegrity,
}
