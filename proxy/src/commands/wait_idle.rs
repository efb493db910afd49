//! `cloudtaser-s3proxy wait-idle`: a classic sidecar's preStop hook. The
//! kubelet stops a pod's containers at the same time, each after its own
//! preStop hook; an application that uploads while it shuts down (a last
//! checkpoint, a log flush) would find the proxy gone. Linkerd's answer is a
//! fixed sleep (`config.alpha.linkerd.io/proxy-wait-before-exit-seconds`);
//! this waits instead until no S3 request has been in flight for a quiet
//! period, so the proxy keeps serving as long as the application uses it,
//! and not longer, within a bound below the pod's grace period. Native
//! sidecars need none of this: the kubelet stops them after the
//! application's containers have exited (KEP-753).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use super::CommandError;

/// The gauge of S3 requests being handled, as `/metrics` names it.
const IN_FLIGHT: &str = "cloudtaser_s3proxy_in_flight_requests";

pub async fn run(health: SocketAddr, quiet: Duration, max: Duration) -> Result<(), CommandError> {
    let ip = if health.ip().is_unspecified() { IpAddr::V4(Ipv4Addr::LOCALHOST) } else { health.ip() };
    let url = format!("http://{}/metrics", SocketAddr::new(ip, health.port()));
    let client = reqwest::Client::builder().timeout(Duration::from_secs(1)).build()?;
    let started = Instant::now();
    let mut idle_since: Option<Instant> = None;
    while started.elapsed() < max {
        // An unreadable answer counts as busy: waiting longer is the safe side.
        let busy = match client.get(&url).send().await {
            Ok(resp) => resp.text().await.ok().and_then(|t| in_flight(&t)).is_none_or(|n| n > 0.0),
            Err(_) => true,
        };
        let now = Instant::now();
        match (busy, idle_since) {
            (true, _) => idle_since = None,
            (false, None) => idle_since = Some(now),
            (false, Some(since)) if now - since >= quiet => return Ok(()),
            (false, Some(_)) => {}
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

/// The in-flight gauge's value in an OpenMetrics text.
fn in_flight(metrics: &str) -> Option<f64> {
    metrics.lines().find_map(|line| line.strip_prefix(IN_FLIGHT)?.strip_prefix(' ')?.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_the_gauge_and_nothing_that_only_starts_like_it() {
        let text = "# TYPE cloudtaser_s3proxy_in_flight_requests gauge\n\
                    cloudtaser_s3proxy_in_flight_requests_other 9\n\
                    cloudtaser_s3proxy_in_flight_requests 3\n";
        assert_eq!(super::in_flight(text), Some(3.0));
        assert_eq!(super::in_flight("nothing\n"), None);
    }
}
