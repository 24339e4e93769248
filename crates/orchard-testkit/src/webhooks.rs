//! A webhook receiver for tests: a plain HTTP/1.1 server on 127.0.0.1:0 (keep-alive, Content-Length bodies)
//! that records every request and answers with the statuses a test scripts (then 200). It checks nothing
//! itself: tests verify signatures on their own, as a department's receiver would.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The largest request head taken (a receiver bounds what it reads).
const MAX_HEAD_BYTES: usize = 64 * 1024;
/// The largest body taken.
const MAX_BODY_BYTES: usize = 1024 * 1024;

/// One request as received.
#[derive(Debug, Clone)]
pub struct ReceivedRequest {
    pub method: String,
    pub path: String,
    /// Header names lower-cased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The status it was answered with.
    pub answered: u16,
}

impl ReceivedRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

#[derive(Default)]
struct Shared {
    received: Mutex<Vec<ReceivedRequest>>,
    script: Mutex<VecDeque<u16>>,
}

/// The receiver; stops when dropped.
pub struct WebhookReceiver {
    /// `http://127.0.0.1:<port>/hook`.
    pub url: String,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for WebhookReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl WebhookReceiver {
    pub async fn start() -> Result<WebhookReceiver> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}/hook", listener.local_addr()?);
        let shared = Arc::new(Shared::default());
        let accepting = shared.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let shared = accepting.clone();
                tokio::spawn(async move {
                    let _ = serve(stream, shared).await;
                });
            }
        });
        Ok(WebhookReceiver { url, shared, task })
    }

    /// The next requests are answered with these statuses, in order; after them, 200 again.
    pub fn answer_next(&self, statuses: &[u16]) {
        self.shared
            .script
            .lock()
            .expect("script")
            .extend(statuses.iter().copied());
    }

    /// Every request so far, in arrival order.
    pub fn received(&self) -> Vec<ReceivedRequest> {
        self.shared.received.lock().expect("received").clone()
    }

    /// Waits (at most `limit`) until `done` holds for what was received; the requests then.
    pub async fn wait_until(
        &self,
        limit: Duration,
        done: impl Fn(&[ReceivedRequest]) -> bool,
    ) -> Result<Vec<ReceivedRequest>> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let received = self.received();
            if done(&received) {
                return Ok(received);
            }
            if tokio::time::Instant::now() >= deadline {
                bail!(
                    "webhook receiver: condition not met within {limit:?}; received {:?}",
                    received
                        .iter()
                        .map(|r| (
                            r.header("orchard-event-type").map(str::to_owned),
                            r.answered
                        ))
                        .collect::<Vec<_>>()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn serve(mut stream: TcpStream, shared: Arc<Shared>) -> Result<()> {
    let mut buffer: Vec<u8> = Vec::new();
    loop {
        let head_end = loop {
            if let Some(i) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                break i;
            }
            if buffer.len() > MAX_HEAD_BYTES {
                bail!("request head too large");
            }
            let mut chunk = [0u8; 8192];
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            buffer.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buffer[..head_end]).into_owned();
        let mut lines = head.split("\r\n");
        let request_line = lines.next().context("request line")?;
        let mut parts = request_line.split(' ');
        let method = parts.next().unwrap_or_default().to_owned();
        let path = parts.next().unwrap_or_default().to_owned();
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        let length: usize = headers
            .iter()
            .find(|(n, _)| n == "content-length")
            .map(|(_, v)| v.parse())
            .transpose()?
            .unwrap_or(0);
        if length > MAX_BODY_BYTES {
            bail!("body too large");
        }
        let body_start = head_end + 4;
        while buffer.len() < body_start + length {
            let mut chunk = [0u8; 8192];
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            buffer.extend_from_slice(&chunk[..n]);
        }
        let body = buffer[body_start..body_start + length].to_vec();
        buffer.drain(..body_start + length);
        let status = shared
            .script
            .lock()
            .expect("script")
            .pop_front()
            .unwrap_or(200);
        shared
            .received
            .lock()
            .expect("received")
            .push(ReceivedRequest {
                method,
                path,
                headers,
                body,
                answered: status,
            });
        let answer = format!("HTTP/1.1 {status} Scripted\r\ncontent-length: 0\r\n\r\n");
        stream.write_all(answer.as_bytes()).await?;
    }
}
