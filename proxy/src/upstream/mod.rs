//! The upstream client: requests signed with the proxy's own credentials
//! (`sign`), addressed exactly and sent through a `Transport` (`forward`:
//! hyper's pool in the proxy, an in-memory S3 in tests), by `UpstreamClient`.

mod client;
pub mod forward;
pub mod headers;
pub mod sign;

pub use client::UpstreamClient;
pub use forward::UpstreamTimeouts;

use crate::stream::framing::UploadIntegrity;

/// The upstream S3 service, resolved from the settings.
#[derive(Debug, Clone)]
pub struct Upstream {
    pub endpoint: http::Uri,
    pub region: String,
    pub is_gcs: bool,
    pub integrity: UploadIntegrity,
}
