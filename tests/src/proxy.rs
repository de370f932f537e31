//! A TCP proxy between the runner and a real server, for faults on the wire: a byte flipped in
//! what the client sends (a part corrupted in transit), the whole link frozen (a store that stops
//! answering while connections stay open), or the requests that start a certain way held (one
//! kind of request that never gets an answer).

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
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn relay(client: TcpStream, server: TcpStream, state: Arc<State>) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
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
            if client_write.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        let _ = client_write.shutdown().await;
    };
    tokio::join!(up, down);
}

async fn wait_while_frozen(state: &State) {
    while state.frozen.load(Ordering::SeqCst) {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
