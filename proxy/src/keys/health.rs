//! Whether Vault is reachable, learned from real calls and a background
//! probe, so `/readyz` reads a cached answer instead of calling Vault per
//! probe (1,000 pods probing every 10 s would be 100 Vault calls a second).

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::vault::VaultError;

#[derive(Debug, Default)]
pub struct VaultHealth {
    reachable: AtomicBool,
    ever_reached: AtomicBool,
    /// When Vault last answered or last failed to (either changes `reachable`).
    last_answer: Mutex<Option<Instant>>,
}

impl VaultHealth {
    /// Records what a Vault call says about Vault, and passes it on.
    pub fn observe<T>(&self, result: Result<T, VaultError>) -> Result<T, VaultError> {
        match &result {
            Ok(_) => self.record(true),
            // Refusals of one request (a bad or foreign wrapped key, a rate
            // limit) say nothing about whether Vault can serve the proxy.
            Err(e) if e.is_permanent() || e.is_rate_limit() => {}
            Err(_) => self.record(false),
        }
        result
    }

    fn record(&self, reachable: bool) {
        self.reachable.store(reachable, Ordering::Relaxed);
        crate::metrics::metrics().vault_reachable(reachable);
        if reachable {
            self.ever_reached.store(true, Ordering::Relaxed);
        }
        *self.last_answer.lock().expect("health lock") = Some(Instant::now());
    }

    /// Vault answered the last call or probe with the proxy's token.
    pub fn is_reachable(&self) -> bool {
        self.reachable.load(Ordering::Relaxed)
    }

    /// Vault has answered at least once since the process started.
    pub fn ever_reached(&self) -> bool {
        self.ever_reached.load(Ordering::Relaxed)
    }

    pub fn last_answer_age(&self) -> Option<Duration> {
        self.last_answer.lock().expect("health lock").map(|t| t.elapsed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_outages_but_not_refusals_of_one_key() {
        let h = VaultHealth::default();
        assert!(!h.ever_reached() && !h.is_reachable() && h.last_answer_age().is_none());
        let _ = h.observe(Ok::<_, VaultError>(()));
        assert!(h.is_reachable() && h.ever_reached());
        let _ = h.observe::<()>(Err(VaultError::Refused { status: 400, message: "bad ciphertext".into() }));
        assert!(h.is_reachable(), "one bad wrapped key is not an outage");
        let _ = h.observe::<()>(Err(VaultError::KeyNotAllowed));
        assert!(h.is_reachable());
        let _ = h.observe::<()>(Err(VaultError::Unreachable("connection refused".into())));
        assert!(!h.is_reachable() && h.ever_reached());
        let _ = h.observe::<()>(Err(VaultError::Refused { status: 503, message: "sealed".into() }));
        assert!(!h.is_reachable());
        assert!(h.last_answer_age().is_some());
    }
}
