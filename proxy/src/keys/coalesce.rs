//! Cold reads of different objects that arrive while a Transit `decrypt` is
//! in flight go to Transit together, as one `batch_input` call, when it
//! returns (group commit). A lone read is sent at once, so coalescing adds
//! no latency; under load, N concurrent cold reads cost about log N round
//! trips' worth of calls instead of N, which is what bounds reads from a
//! distant Vault (docs/PERFORMANCE.md, "Coalesced decrypts").
//!
//! Reads of the same wrapped key are already shared one level up
//! (`single_flight`); this joins different ones. A batch Transit refuses as
//! a whole (one bad item makes Vault answer 400) is retried item by item,
//! so one tampered object never fails its neighbours.

use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use super::DataKey;
use super::audit::{self, Audit};
use super::transit::TransitClient;
use super::vault::VaultError;

/// Most wrapped keys in one `decrypt` call.
pub const MAX_BATCH: usize = 128;

struct Waiting {
    wrapped: String,
    audit: Option<Audit>,
    reply: oneshot::Sender<Result<DataKey, VaultError>>,
}

#[derive(Default)]
struct State {
    /// A call is in flight: newcomers wait for the next batch.
    busy: bool,
    queue: Vec<Waiting>,
}

/// The coalescer of one Transit key.
#[derive(Default)]
pub struct Coalescer {
    state: Mutex<State>,
}

impl Coalescer {
    /// The data key inside `wrapped`, from a call of its own when none is in
    /// flight, else from the next batch.
    pub async fn decrypt(self: &Arc<Self>, transit: &Arc<TransitClient>, wrapped: &str) -> Result<DataKey, VaultError> {
        let waiting = {
            let mut state = self.state.lock().expect("coalescer lock");
            if state.busy {
                let (reply, answer) = oneshot::channel();
                state.queue.push(Waiting { wrapped: wrapped.to_owned(), audit: audit::current(), reply });
                Some(answer)
            } else {
                state.busy = true;
                None
            }
        };
        if let Some(answer) = waiting {
            return answer.await.unwrap_or(Err(VaultError::BadResponse("the batch was dropped")));
        }
        let own = transit.decrypt_data_key(transit.key_name(), wrapped).await;
        // Whoever queued meanwhile goes next, in the background: this read
        // has its answer and returns now.
        let this = self.clone();
        let transit = transit.clone();
        tokio::spawn(async move { this.drain(transit).await });
        own
    }

    /// Sends what queued while a call was in flight, batch after batch,
    /// until nothing waits; then the next reader calls on its own again.
    async fn drain(self: Arc<Self>, transit: Arc<TransitClient>) {
        loop {
            let batch: Vec<Waiting> = {
                let mut state = self.state.lock().expect("coalescer lock");
                if state.queue.is_empty() {
                    state.busy = false;
                    return;
                }
                let n = state.queue.len().min(MAX_BATCH);
                state.queue.drain(..n).collect()
            };
            crate::metrics::metrics().decrypt_batch(transit.key_name(), batch.len());
            // The batch's calls carry the first reader's audit context.
            let context = batch.iter().find_map(|w| w.audit.clone());
            let wrapped: Vec<&str> = batch.iter().map(|w| w.wrapped.as_str()).collect();
            let call = transit.decrypt_data_keys(transit.key_name(), &wrapped);
            let answers = match &context {
                Some(a) => audit::scope(a.clone(), call).await,
                None => call.await,
            };
            match answers {
                Ok(keys) => {
                    for (waiting, key) in batch.into_iter().zip(keys) {
                        let _ = waiting.reply.send(key);
                    }
                }
                // Refused as a whole: each item on its own, so one bad
                // wrapped key fails only its own read.
                Err(e) if e.is_permanent() => {
                    for waiting in batch {
                        let single = transit.decrypt_data_key(transit.key_name(), &waiting.wrapped);
                        let key = match &waiting.audit {
                            Some(a) => audit::scope(a.clone(), single).await,
                            None => single.await,
                        };
                        let _ = waiting.reply.send(key);
                    }
                }
                Err(e) => {
                    for waiting in batch {
                        let _ = waiting.reply.send(Err(e.clone()));
                    }
                }
            }
        }
    }
}
