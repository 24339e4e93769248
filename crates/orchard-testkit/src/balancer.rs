//! A load balancer in front of several `orchard serve` nodes, as an operator runs one: a TCP proxy on
//! 127.0.0.1:0 that hands each new connection to the next node in turn and skips a node that refuses the
//! connection (a dead one). TLS passes through untouched, so devices see the nodes' own certificates (they all
//! chain to the shared server CA and name 127.0.0.1). Point `--public-url` at [`Balancer::url`] and the
//! enrollment profile's ServerURL and CheckInURL lead through it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use tokio::net::{TcpListener, TcpStream};

/// The proxy; it stops accepting when dropped (connections already open end with their nodes).
pub struct Balancer {
    address: SocketAddr,
    backends: Arc<Mutex<Vec<SocketAddr>>>,
    connections: Arc<AtomicUsize>,
    refused: Arc<AtomicUsize>,
    accept: tokio::task::JoinHandle<()>,
}

impl Drop for Balancer {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

impl Balancer {
    /// Starts listening with no nodes yet (connections are closed until [`Balancer::set_backends`]).
    pub async fn start() -> Result<Balancer> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let backends: Arc<Mutex<Vec<SocketAddr>>> = Arc::default();
        let connections: Arc<AtomicUsize> = Arc::default();
        let refused: Arc<AtomicUsize> = Arc::default();
        let accept = tokio::spawn(accept_loop(
            listener,
            backends.clone(),
            connections.clone(),
            refused.clone(),
        ));
        Ok(Balancer {
            address,
            backends,
            connections,
            refused,
            accept,
        })
    }

    /// `https://127.0.0.1:<port>`: the public URL of the nodes behind it.
    pub fn url(&self) -> String {
        format!("https://{}", self.address)
    }

    /// The nodes, by base URL (`https://127.0.0.1:<port>`); none closes every new connection at once (an
    /// outage).
    pub fn set_backends(&self, base_urls: &[&str]) -> Result<()> {
        let mut addresses = Vec::with_capacity(base_urls.len());
        for url in base_urls {
            let address = url
                .trim_start_matches("https://")
                .trim_end_matches('/')
                .parse()
                .with_context(|| format!("node address {url}"))?;
            addresses.push(address);
        }
        *self.backends.lock().unwrap_or_else(|p| p.into_inner()) = addresses;
        Ok(())
    }

    /// Connections handed to a node so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }

    /// Connections closed at once because no node took them (none set, or all dead).
    pub fn refused(&self) -> usize {
        self.refused.load(Ordering::Relaxed)
    }
}

async fn accept_loop(
    listener: TcpListener,
    backends: Arc<Mutex<Vec<SocketAddr>>>,
    connections: Arc<AtomicUsize>,
    refused: Arc<AtomicUsize>,
) {
    let next = Arc::new(AtomicUsize::new(0));
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        let backends = backends.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let next = next.clone();
        let connections = connections.clone();
        let refused = refused.clone();
        tokio::spawn(async move {
            let Some(node) = connect_next(&backends, &next).await else {
                // No node alive: the client sees the connection closed, as behind a real balancer.
                refused.fetch_add(1, Ordering::Relaxed);
                return;
            };
            connections.fetch_add(1, Ordering::Relaxed);
            let _ = client.set_nodelay(true);
            let (mut client, mut node) = (client, node);
            let _ = tokio::io::copy_bidirectional(&mut client, &mut node).await;
        });
    }
}

/// The next node in turn that accepts a connection.
async fn connect_next(backends: &[SocketAddr], next: &AtomicUsize) -> Option<TcpStream> {
    if backends.is_empty() {
        return None;
    }
    let first = next.fetch_add(1, Ordering::Relaxed);
    for offset in 0..backends.len() {
        let Some(address) = backends.get((first + offset) % backends.len()) else {
            continue;
        };
        if let Ok(stream) = TcpStream::connect(address).await {
            let _ = stream.set_nodelay(true);
            return Some(stream);
        }
    }
    None
}
