//! A TCP proxy between the runner and a real server, for faults on the wire: a byte flipped in
//! what the client sends (a part corrupted in transit), the whole link frozen (a store that stops
//! answering while connections stay open), the requests that start a certain way held (one
//! kind of request that never gets an answer), or the HTTP requests of one method and certain
//! paths answered with an error by the proxy itself (one kind of request the store refuses, the
//! others served).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

#[derive(Default)]
struct State {
    frozen: AtomicBool,
    /// Offset, in everything clients sent through the proxy, of the byte to flip (once).
    flip_at: AtomicU64,
    flip_armed: AtomicBool,
    flipped: AtomicBool,
    sent: AtomicU64,
    /// Requests whose first bytes start with `.0` and contain `.1` are held.
    hold: Mutex<Option<(Vec<u8>, Vec<u8>)>>,
    held: AtomicU64,
    /// HTTP requests this rule matches are answered by the proxy with an error.
    fail: Mutex<Vec<FailRule>>,
    failed: AtomicU64,
}

/// Which HTTP requests [`TcpProxy::fail_requests`] answers, and with what status.
struct FailRule {
    method: String,
    path: Box<dyn Fn(&str) -> bool + Send + Sync>,
    status: u16,
}

impl FailRule {
    /// Whether `chunk` starts an HTTP request this rule matches: `<method> <path>[?query] `.
    fn matches(&self, chunk: &[u8]) -> bool {
        let Some(rest) = chunk
            .strip_prefix(self.method.as_bytes())
            .and_then(|r| r.strip_prefix(b" "))
        else {
            return false;
        };
        let end = rest
            .iter()
            .position(|b| *b == b' ' || *b == b'\r')
            .unwrap_or(rest.len());
        let target = String::from_utf8_lossy(&rest[..end]);
        let path = target.split('?').next().unwrap_or_default();
        (self.path)(path)
    }

    /// The whole answer: an S3-style XML error, and the connection closed after it.
    fn response(&self) -> Vec<u8> {
        let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>InternalError</Code>\
                    <Message>refused by the test proxy</Message></Error>";
        format!(
            "HTTP/1.1 {} Injected\r\nContent-Type: application/xml\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n{body}",
            self.status,
            body.len()
        )
        .into_bytes()
    }
}

pub struct TcpProxy {
    addr: SocketAddr,
    state: Arc<State>,
    task: JoinHandle<()>,
}

impl TcpProxy {
    /// Listens on 127.0.0.1 (or `ip`) and forwards every connection to `upstream`.
    pub async fn start(ip: &str, upstream: SocketAddr) -> Result<TcpProxy> {
        let listener = TcpListener::bind((ip, 0))
            .await
            .context("binding the proxy")?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State::default());
        let shared = state.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let state = shared.clone();
                tokio::spawn(async move {
                    if let Ok(server) = TcpStream::connect(upstream).await {
                        relay(client, server, state).await;
                    }
                });
            }
        });
        Ok(TcpProxy { addr, state, task })
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `http://<ip>:<port>` as seen from the host.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops forwarding in both directions, keeping every connection open.
    pub fn freeze(&self) {
        self.state.frozen.store(true, Ordering::SeqCst);
    }

    /// Flips one byte of the client's data at `offset` bytes into everything sent so far.
    pub fn flip_byte_at(&self, offset: u64) {
        self.state.flip_at.store(offset, Ordering::SeqCst);
        self.state.flip_armed.store(true, Ordering::SeqCst);
    }

    /// Whether the armed flip has happened.
    pub fn flipped(&self) -> bool {
        self.state.flipped.load(Ordering::SeqCst)
    }

    /// Holds (never forwards, never answers) requests whose first bytes start with `prefix`
    /// (e.g. `POST `) and contain `needle` (e.g. `uploadId=`).
    pub fn hold_requests(&self, prefix: &str, needle: &str) {
        *self.state.hold.lock().unwrap() = Some((prefix.into(), needle.into()));
    }

    /// How many requests were held.
    pub fn held(&self) -> u64 {
        self.state.held.load(Ordering::SeqCst)
    }

    /// Answers HTTP requests of `method` (e.g. `DELETE`) whose path (without the query) `path`
    /// accepts with `status` and an S3-style error body, and closes their connection; the server
    /// never sees them. Other requests pass as before. Each call adds a rule.
    pub fn fail_requests(
        &self,
        method: &str,
        path: impl Fn(&str) -> bool + Send + Sync + 'static,
        status: u16,
    ) {
        self.state.fail.lock().unwrap().push(FailRule {
            method: method.to_string(),
            path: Box::new(path),
            status,
        });
    }

    /// How many requests were answered by [`TcpProxy::fail_requests`]'s rule.
    pub fn failed(&self) -> u64 {
        self.state.failed.load(Ordering::SeqCst)
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn relay(client: TcpStream, server: TcpStream, state: Arc<State>) {
    let (mut client_read, client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    // Both directions write to the client: the server's answers, and the proxy's own.
    let client_write = Arc::new(tokio::sync::Mutex::new(client_write));
    let up_client = client_write.clone();
    let up_state = state.clone();
    let up = async move {
        let mut buf = vec![0u8; 64 << 10];
        loop {
            let n = match client_read.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            wait_while_frozen(&up_state).await;
            let chunk = &mut buf[..n];
            let held = up_state
                .hold
                .lock()
                .unwrap()
                .as_ref()
                .is_some_and(|(prefix, needle)| {
                    chunk.starts_with(prefix) && chunk.windows(needle.len()).any(|w| w == needle)
                });
            if held {
                up_state.held.fetch_add(1, Ordering::SeqCst);
                std::future::pending::<()>().await;
            }
            let answer = up_state
                .fail
                .lock()
                .unwrap()
                .iter()
                .find(|rule| rule.matches(chunk))
                .map(FailRule::response);
            if let Some(answer) = answer {
                up_state.failed.fetch_add(1, Ordering::SeqCst);
                let mut client = up_client.lock().await;
                let _ = client.write_all(&answer).await;
                let _ = client.shutdown().await;
                break;
            }
            let start = up_state.sent.fetch_add(n as u64, Ordering::SeqCst);
            if up_state.flip_armed.load(Ordering::SeqCst) {
                let at = up_state.flip_at.load(Ordering::SeqCst);
                if (start..start + n as u64).contains(&at)
                    && !up_state.flipped.swap(true, Ordering::SeqCst)
                {
                    chunk[(at - start) as usize] ^= 0x01;
                }
            }
            if server_write.write_all(chunk).await.is_err() {
                break;
            }
        }
        let _ = server_write.shutdown().await;
    };
    let down = async move {
        let mut buf = vec![0u8; 64 << 10];
        loop {
            let n = match server_read.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            wait_while_frozen(&state).await;
            if client_write
                .lock()
                .await
                .write_all(&buf[..n])
                .await
                .is_err()
            {
                break;
            }
        }
        let _ = client_write.lock().await.shutdown().await;
    };
    tokio::join!(up, down);
}

async fn wait_while_frozen(state: &State) {
    while state.frozen.load(Ordering::SeqCst) {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
