use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::Router;
use tokio::sync::oneshot;

/// One request seen by a [`CallbackReceiver`].
#[derive(Clone, Debug)]
pub struct Recorded {
    /// HTTP method (normally `"POST"`).
    pub method: String,
    /// Request path without the query, e.g. `"/cb/metadata"`.
    pub path: String,
    /// Query string, if any.
    pub query: Option<String>,
    /// The `Authorization` header, if sent.
    pub authorization: Option<String>,
    /// All headers in arrival order; names are lowercase.
    pub headers: Vec<(String, String)>,
    /// The body parsed as JSON, or `Value::Null` if it is not JSON.
    pub body: serde_json::Value,
    /// The body as received.
    pub raw_body: Vec<u8>,
    /// Status code the receiver answered with.
    pub status: u16,
}

impl Recorded {
    /// `"metadata"` for a metadata callback, otherwise the status (`running`, `success`…).
    pub fn kind(&self) -> String {
        if self.path.ends_with("/metadata") {
            "metadata".into()
        } else {
            self.body["status"].as_str().unwrap_or("?").to_string()
        }
    }

    /// Whether `X-Backup-Runner-Signature` is the HMAC-SHA256 of the timestamp header, a `.`
    /// and the body, keyed with `secret`: what a receiver checks.
    pub fn signature_valid(&self, secret: &str) -> bool {
        use hmac::{Hmac, KeyInit, Mac};
        let (Some(ts), Some(sig)) = (
            self.header("x-backup-runner-timestamp"),
            self.header("x-backup-runner-signature"),
        ) else {
            return false;
        };
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("any key");
        mac.update(ts.as_bytes());
        mac.update(b".");
        mac.update(&self.raw_body);
        sig == format!("v1={}", hex::encode(mac.finalize().into_bytes()))
    }

    /// First value of a header (case-insensitive name).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Default)]
struct Shared {
    requests: Mutex<Vec<Recorded>>,
    /// (requests left to fail, status to fail them with)
    fail: Mutex<(usize, u16)>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// An HTTP server on 127.0.0.1 that records every request and answers POSTs
/// on any path with 200 (or the status set by [`CallbackReceiver::fail_next`])
/// and other methods with 405.
///
/// It runs on its own thread and runtime, so it keeps answering while a test
/// blocks its own thread (e.g. waiting for a child process).
pub struct CallbackReceiver {
    port: u16,
    shared: Arc<Shared>,
    shutdown: Option<oneshot::Sender<()>>,
}

impl CallbackReceiver {
    /// Bind a free port on 127.0.0.1 and start serving.
    pub async fn start() -> Result<CallbackReceiver> {
        CallbackReceiver::start_on("127.0.0.1").await
    }

    /// Bind a free port on `ip` (`0.0.0.0` to be reachable from containers) and start serving.
    pub async fn start_on(ip: &str) -> Result<CallbackReceiver> {
        let listener = std::net::TcpListener::bind((ip, 0)).context("bind callback receiver")?;
        listener.set_nonblocking(true)?;
        let port = listener.local_addr()?.port();
        let shared = Arc::new(Shared::default());
        let (tx, rx) = oneshot::channel::<()>();
        let app = Router::new()
            .fallback(handle)
            .layer(DefaultBodyLimit::max(64 << 20))
            .with_state(shared.clone());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("build callback receiver runtime")?;
        std::thread::Builder::new()
            .name(format!("callback-receiver-{port}"))
            .spawn(move || {
                runtime.block_on(async move {
                    let listener = match tokio::net::TcpListener::from_std(listener) {
                        Ok(l) => l,
                        Err(e) => {
                            eprintln!("callback receiver: {e}");
                            return;
                        }
                    };
                    tokio::select! {
                        r = axum::serve(listener, app) => {
                            if let Err(e) = r {
                                eprintln!("callback receiver: {e}");
                            }
                        }
                        _ = rx => {}
                    }
                });
            })
            .context("spawn callback receiver thread")?;
        Ok(CallbackReceiver {
            port,
            shared,
            shutdown: Some(tx),
        })
    }

    /// `http://<host>:<port>/cb`, for a client that reaches this machine as `host`.
    pub fn url_via(&self, host: &str) -> String {
        format!("http://{host}:{}/cb", self.port)
    }

    /// `http://127.0.0.1:<port>/cb`
    pub fn url(&self) -> String {
        format!("{}/cb", self.base_url())
    }

    /// `http://127.0.0.1:<port>`
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// TCP port the receiver listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Everything recorded so far, in arrival order.
    pub fn requests(&self) -> Vec<Recorded> {
        lock(&self.shared.requests).clone()
    }

    /// The kinds of the requests so far, in order: e.g. `["running", "metadata", "success"]`.
    pub fn statuses(&self) -> Vec<String> {
        self.requests().iter().map(Recorded::kind).collect()
    }

    /// Answer the next `n` POSTs with `status` (e.g. 500), then 200 again.
    /// They are still recorded.
    pub fn fail_next(&self, n: usize, status: u16) {
        *lock(&self.shared.fail) = (n, status);
    }

    /// Wait until at least `n` requests were recorded; returns them all.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Result<Vec<Recorded>> {
        let deadline = Instant::now() + timeout;
        loop {
            let got = self.requests();
            if got.len() >= n {
                return Ok(got);
            }
            if Instant::now() > deadline {
                bail!(
                    "callback receiver got {} request(s) within {timeout:?}, wanted {n}: {got:#?}",
                    got.len()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for CallbackReceiver {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let status = if method != Method::POST {
        StatusCode::METHOD_NOT_ALLOWED
    } else {
        let mut fail = lock(&shared.fail);
        if fail.0 > 0 {
            fail.0 -= 1;
            StatusCode::from_u16(fail.1).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
        } else {
            StatusCode::OK
        }
    };
    let header_list: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let authorization = headers
        .get(axum::http::header::AUTHORIZATION)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    lock(&shared.requests).push(Recorded {
        method: method.to_string(),
        path: uri.path().to_owned(),
        query: uri.query().map(str::to_owned),
        authorization,
        headers: header_list,
        body: serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
        raw_body: body.to_vec(),
        status: status.as_u16(),
    });
    status
}
