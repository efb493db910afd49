//! The watch-backed caches the webhook reads from, so an admission never
//! waits on the API server: `S3ProxyConfig`s, and namespaces' metadata (an
//! AdmissionReview does not carry the namespace's annotations).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Namespace;
use kube::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};

use crate::crd::{S3ProxyConfig, S3ProxyConfigSpec};
use crate::webhook::admission::ConfigLookup;
use crate::webhook::inject::ANNOTATION;

pub struct ConfigCache {
    store: Store<S3ProxyConfig>,
    namespaces: Store<PartialObjectMeta<Namespace>>,
    cluster_default: Option<S3ProxyConfigSpec>,
}

impl ConfigLookup for ConfigCache {
    fn get(&self, namespace: &str, name: &str) -> Option<S3ProxyConfigSpec> {
        self.store.get(&ObjectRef::new(name).within(namespace)).map(|c| c.spec.clone())
    }

    fn cluster_default(&self) -> Option<S3ProxyConfigSpec> {
        self.cluster_default.clone()
    }

    fn namespace_annotation(&self, namespace: &str) -> Option<Option<String>> {
        let ns = self.namespaces.get(&ObjectRef::new(namespace))?;
        Some(ns.metadata.annotations.as_ref().and_then(|a| a.get(ANNOTATION)).cloned())
    }
}

/// Drives a reflector's watch for good, logging its errors.
fn spawn_watch<S>(stream: S, what: &'static str)
where
    S: futures_util::Stream<Item = Result<(), kube::runtime::watcher::Error>> + Send + 'static,
{
    tokio::spawn(async move {
        stream
            .for_each(|event| async move {
                if let Err(e) = event {
                    tracing::warn!(error = %e, what, "watch");
                }
            })
            .await;
    });
}

/// Starts the watches; `ready` turns true once both listed everything.
/// Namespaces are watched metadata-only (a few hundred bytes each).
pub fn start(
    api: Api<S3ProxyConfig>,
    namespaces: Api<PartialObjectMeta<Namespace>>,
    cluster_default: Option<S3ProxyConfigSpec>,
    ready: Arc<AtomicBool>,
) -> Arc<ConfigCache> {
    let (store, writer) = reflector::store();
    let configs = reflector::reflector(writer, watcher(api, watcher::Config::default()))
        .default_backoff()
        .touched_objects()
        .map(|e| e.map(|_| ()));
    let (ns_store, ns_writer) = reflector::store();
    let ns_stream = reflector::reflector(ns_writer, watcher(namespaces, watcher::Config::default()))
        .default_backoff()
        .touched_objects()
        .map(|e| e.map(|_| ()));
    let (waiter, ns_waiter) = (store.clone(), ns_store.clone());
    tokio::spawn(async move {
        if waiter.wait_until_ready().await.is_ok() && ns_waiter.wait_until_ready().await.is_ok() {
            ready.store(true, Ordering::Relaxed);
            tracing::info!("S3ProxyConfig and namespace caches synced");
        }
    });
    spawn_watch(configs, "S3ProxyConfig");
    spawn_watch(ns_stream, "namespaces");
    Arc::new(ConfigCache { store, namespaces: ns_store, cluster_default })
}
