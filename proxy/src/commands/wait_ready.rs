//! `cloudtaser-s3proxy wait-ready`: blocks until `/readyz` answers 200.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use super::CommandError;

pub async fn run(health: SocketAddr, timeout: Duration) -> Result<(), CommandError> {
    // A wildcard listen address is reached on loopback.
    let ip = if health.ip().is_unspecified() { IpAddr::V4(Ipv4Addr::LOCALHOST) } else { health.ip() };
    let url = format!("http://{}/readyz", SocketAddr::new(ip, health.port()));
    let client = reqwest::Client::builder().timeout(Duration::from_secs(2)).build()?;
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(resp) = client.get(&url).send().await
            && resp.status().is_success()
        {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(CommandError::NotReady { url, timeout });
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
