//! CloudTaser operator: injects the S3 proxy into annotated pods and keeps
//! `S3ProxyConfig` resources reconciled. See docs/OPERATOR.md.

pub mod capabilities;
pub mod check;
pub mod config_cache;
pub mod config_ref;
pub mod controller;
pub mod crd;
pub mod leader;
pub mod metrics;
pub mod offline;
pub mod quantity;
pub mod tls;
pub mod webhook;
pub mod workload;
