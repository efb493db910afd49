//! A TCP relay that holds every byte for a fixed time in each direction,
//! so a Vault on loopback behaves like one a round trip away
//! (bench/vault_distance.py: 10 ms each way, a 20 ms round trip).
//! Bandwidth is not limited, and bytes keep their order.
//!
//! Usage: delay-relay <listen port> <target host:port> <one-way delay ms>

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    assert_eq!(args.len(), 4, "usage: delay-relay <listen port> <target host:port> <one-way delay ms>");
    let port: u16 = args[1].parse().expect("listen port");
    let target = args[2].clone();
    let delay = Duration::from_secs_f64(args[3].parse::<f64>().expect("delay in ms") / 1000.0);
    let listener = TcpListener::bind(("127.0.0.1", port)).await.expect("bind");
    loop {
        let Ok((client, _)) = listener.accept().await else { continue };
        let target = target.clone();
        tokio::spawn(async move {
            // A new connection pays the handshake's round trip, as it would far away.
            tokio::time::sleep(delay * 2).await;
            let Ok(server) = TcpStream::connect(&target).await else { return };
            let _ = (client.set_nodelay(true), server.set_nodelay(true));
            let (client_read, client_write) = client.into_split();
            let (server_read, server_write) = server.into_split();
            tokio::spawn(pipe(client_read, server_write, delay));
            pipe(server_read, client_write, delay).await;
        });
    }
}

/// Copies `from` to `to`, each read delivered `delay` after it arrived.
async fn pipe(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, delay: Duration) {
    let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let writer = tokio::spawn(async move {
        while let Some((due, bytes)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if to.write_all(&bytes).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    });
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if tx.send((Instant::now() + delay, buf[..n].to_vec())).is_err() {
                    break;
                }
            }
        }
    }
    drop(tx);
    let _ = writer.await;
}
