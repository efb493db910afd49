//! The watch-backed cache of `S3ProxyConfig`s the webhook reads from, so an
//! admission never waits on the API server.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures_util::StreamExt;
use kube::Api;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};

use crate::crd::{S3ProxyConfig, S3ProxyConfigSpec};
use crate::webhook::admission::ConfigLookup;

pub struct ConfigCache {
    store: Store<S3ProxyConfig>,
    cluster_default: Option<S3ProxyConfigSpec>,
}

impl ConfigLookup for ConfigCache {
    fn get(&self, namespace: &str, name: &str) -> Option<S3ProxyConfigSpec> {
        self.store.get(&ObjectRef::new(name).within(namespace)).map(|c| c.spec.clone())
    }

    fn cluster_default(&self) -> Option<S3ProxyConfigSpec> {
        self.cluster_default.clone()
    }
}

/// Starts the watch; `ready` turns true once the first full list arrived.
pub fn start(
    api: Api<S3ProxyConfig>,
    cluster_default: Option<S3ProxyConfigSpec>,
    ready: Arc<AtomicBool>,
) -> Arc<ConfigCache> {
    let (store, writer) = reflector::store();
    let stream =
        reflector::reflector(writer, watcher(api, watcher::Config::default())).default_backoff().touched_objects();
    let waiter = store.clone();
    tokio::spawn(async move {
        if waiter.wait_until_ready().await.is_ok() {
            ready.store(true, Ordering::Relaxed);
            tracing::info!("S3ProxyConfig cache synced");
        }
    });
    tokio::spawn(async move {
        stream
            .for_each(|event| async move {
                if let Err(e) = event {
                    tracing::warn!(error = %e, "S3ProxyConfig watch");
                }
            })
            .await;
    });
    Arc::new(ConfigCache { store, cluster_default })
}
