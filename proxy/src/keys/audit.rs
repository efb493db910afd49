//! Why a Transit call is made and for which request: every call carries the
//! proxy's request id and a reason as HTTP headers, so Vault's audit log can
//! tie an unwrap to one object read (the analogue of AWS XKS's request
//! metadata and Google's Key Access Justifications). Vault records request
//! headers only when told to (`sys/config/auditing/request-headers`, with
//! `hmac=false` to keep them readable; docs/OPERATIONS.md).
//!
//! The context travels as a task-local set where the work starts (the
//! request path, each tool, the pool's refills), so the key layer needs no
//! extra argument on every call. A call made outside any scope carries none.

use std::future::Future;

/// Header with the proxy's request id (the one in its request log and the
/// client's `x-amz-request-id`).
pub const ID_HEADER: &str = "x-cloudtaser-request-id";
/// Header with the [`Reason`].
pub const REASON_HEADER: &str = "x-cloudtaser-reason";

/// What the key is needed for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// A workload reads an object (GET, HEAD, attributes, a copy's source).
    Read,
    /// A workload writes an object or opens or continues an upload.
    Write,
    /// CompleteMultipartUpload seals an upload.
    Complete,
    /// Background: the pool wraps keys ahead of writes, or checks the version.
    Pool,
    /// The admin tools.
    Rewrap,
    Migrate,
    Seal,
    Scan,
    DecryptTool,
    Doctor,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Read => "read",
            Reason::Write => "write",
            Reason::Complete => "complete",
            Reason::Pool => "pool",
            Reason::Rewrap => "rewrap",
            Reason::Migrate => "migrate",
            Reason::Seal => "seal",
            Reason::Scan => "scan",
            Reason::DecryptTool => "decrypt-tool",
            Reason::Doctor => "doctor",
        }
    }
}

/// One unit of work's audit context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Audit {
    /// Hex, made by the proxy: never anything a client sent.
    pub id: String,
    pub reason: Reason,
}

impl Audit {
    pub fn new(id: impl Into<String>, reason: Reason) -> Self {
        Self { id: id.into(), reason }
    }

    /// A fresh random id (tools and background work have no request id).
    pub fn fresh(reason: Reason) -> Self {
        let mut id = [0u8; 8];
        let _ = aws_lc_rs::rand::fill(&mut id);
        Self { id: hex::encode_upper(id), reason }
    }
}

tokio::task_local! {
    static AUDIT: Audit;
}

/// Runs `work` with `audit` as the context of every Transit call it makes.
pub async fn scope<F: Future>(audit: Audit, work: F) -> F::Output {
    AUDIT.scope(audit, work).await
}

/// The context of the running task, if it has one.
pub fn current() -> Option<Audit> {
    AUDIT.try_with(Clone::clone).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_context_is_seen_inside_its_scope_only() {
        assert_eq!(current(), None);
        let audit = Audit::new("ABC", Reason::Read);
        let seen = scope(audit.clone(), async { current() }).await;
        assert_eq!(seen, Some(audit));
        assert_eq!(current(), None);
        let fresh = Audit::fresh(Reason::Pool);
        assert_eq!(fresh.id.len(), 16);
        assert_ne!(fresh.id, Audit::fresh(Reason::Pool).id);
    }
}
