//! Leader election on a `coordination.k8s.io` Lease. One replica issues
//! and rotates the self-managed certificate, and one (on its own Lease) runs
//! the controller; every replica serves the webhook. kube-runtime 5 has no
//! elector, and the lease protocol is small enough to own and test here.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Api;
use kube::api::PostParams;
use tokio::sync::watch;

pub struct LeaderLease {
    api: Api<Lease>,
    name: String,
    identity: String,
    duration: Duration,
}

fn now() -> k8s_openapi::jiff::Timestamp {
    k8s_openapi::jiff::Timestamp::now()
}

impl LeaderLease {
    pub fn new(api: Api<Lease>, name: &str, identity: &str, duration: Duration) -> Self {
        Self { api, name: name.to_owned(), identity: identity.to_owned(), duration }
    }

    /// Takes or renews the lease; `false` when another live replica holds it.
    /// Optimistic concurrency (resourceVersion) settles races: a conflict means
    /// someone else won this round.
    pub async fn try_acquire(&self) -> Result<bool, kube::Error> {
        let spec = |transitions: i32, acquired: Option<MicroTime>| LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(self.duration.as_secs() as i32),
            acquire_time: acquired.or(Some(MicroTime(now()))),
            renew_time: Some(MicroTime(now())),
            lease_transitions: Some(transitions),
            ..Default::default()
        };
        let result = match self.api.get_opt(&self.name).await? {
            None => {
                let lease = Lease {
                    metadata: ObjectMeta { name: Some(self.name.clone()), ..Default::default() },
                    spec: Some(spec(0, None)),
                };
                self.api.create(&PostParams::default(), &lease).await.map(|_| ())
            }
            Some(mut lease) => {
                let current = lease.spec.clone().unwrap_or_default();
                let mine = current.holder_identity.as_deref() == Some(self.identity.as_str());
                let expired = current.renew_time.as_ref().is_none_or(|t| {
                    let secs = i64::from(current.lease_duration_seconds.unwrap_or(0));
                    t.0.as_second() + secs < now().as_second()
                });
                if !mine && !expired {
                    return Ok(false);
                }
                let transitions = current.lease_transitions.unwrap_or(0) + i32::from(!mine);
                let acquired = if mine { current.acquire_time } else { None };
                lease.spec = Some(spec(transitions, acquired));
                self.api.replace(&self.name, &PostParams::default(), &lease).await.map(|_| ())
            }
        };
        match result {
            Ok(()) => Ok(true),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }
}

/// Keeps `lease` taken or watched, every `every` (a third of its duration
/// is the usual choice), and publishes whether this replica leads on `tx`.
///
/// A failed renewal steps down at once: two replicas reconciling for a
/// moment is harmless but noisy (double events), none reconciling for a
/// moment is not, and a replica that still holds the Lease takes it back
/// on the next round. Runs until every receiver is gone.
pub async fn campaign(lease: LeaderLease, every: Duration, tx: watch::Sender<bool>) {
    loop {
        let leading = match lease.try_acquire().await {
            Ok(leading) => leading,
            Err(e) => {
                tracing::warn!(error = %e, lease = %lease.name, "leader election: the Lease could not be read or renewed");
                false
            }
        };
        tx.send_if_modified(|current| {
            let changed = *current != leading;
            if changed {
                tracing::info!(lease = %lease.name, leading, "leader election");
            }
            *current = leading;
            changed
        });
        if tx.is_closed() {
            return;
        }
        tokio::time::sleep(every).await;
    }
}
