//! The webhook's serving certificate, in one of three modes:
//! files mounted from an existing Secret or a cert-manager Certificate
//! (`files`), or a CA and certificate the operator generates, stores in a
//! Secret, rotates and publishes as the webhook's caBundle (`self_managed`).
//! Either way the certificate in use can change without a restart.

pub mod files;
pub mod leader;
pub mod self_managed;

pub use files::ReloadingCert;
