use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::error::DisplayErrorContext;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::Client;
use tempfile::TempDir;

use crate::util::{free_port, tail_file, which};

const HOST: &str = "127.0.0.1";
const ACCESS_KEY: &str = "test";
const SECRET_KEY: &str = "test";
const REGION: &str = "us-east-1";
const READY_TIMEOUT: Duration = Duration::from_secs(60);
const START_ATTEMPTS: usize = 5;

/// A real S3-compatible server: moto's server, in memory, one per fixture.
///
/// Runs `moto_server` from PATH, or else `python3 -m moto.server`; killed
/// on drop.
pub struct S3Server {
    child: Child,
    port: u16,
    api: S3Api,
    log_dir: TempDir,
}

/// Bucket operations for checking what a job left in storage.
pub struct S3Api {
    client: Client,
}

impl S3Api {
    /// A client for a moto endpoint (any credentials, path style).
    pub fn new(endpoint: &str) -> S3Api {
        S3Api {
            client: make_client(endpoint),
        }
    }

    /// An S3 client for this server (path style, static credentials, checksums only when
    /// required).
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// The bucket names (also a readiness probe).
    pub async fn list_buckets(&self) -> Result<Vec<String>> {
        let out = self
            .client
            .list_buckets()
            .send()
            .await
            .map_err(|e| anyhow!("list buckets: {}", DisplayErrorContext(&e)))?;
        Ok(out
            .buckets()
            .iter()
            .filter_map(|b| b.name().map(str::to_string))
            .collect())
    }

    /// Create a bucket.
    pub async fn create_bucket(&self, name: &str) -> Result<()> {
        self.client
            .create_bucket()
            .bucket(name)
            .send()
            .await
            .map_err(|e| anyhow!("create bucket {name}: {}", DisplayErrorContext(&e)))?;
        Ok(())
    }

    /// All object keys in a bucket, in S3's (lexicographic) order.
    pub async fn list_keys(&self, bucket: &str) -> Result<Vec<String>> {
        let mut keys = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let out = self
                .client
                .list_objects_v2()
                .bucket(bucket)
                .set_continuation_token(token.take())
                .send()
                .await
                .map_err(|e| anyhow!("list objects in {bucket}: {}", DisplayErrorContext(&e)))?;
            keys.extend(
                out.contents()
                    .iter()
                    .filter_map(|o| o.key().map(str::to_owned)),
            );
            match out.next_continuation_token() {
                Some(t) if out.is_truncated() == Some(true) => token = Some(t.to_owned()),
                _ => return Ok(keys),
            }
        }
    }

    /// An object's whole body.
    pub async fn get(&self, bucket: &str, key: &str) -> Result<Vec<u8>> {
        let out = self
            .client
            .get_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| anyhow!("get {bucket}/{key}: {}", DisplayErrorContext(&e)))?;
        let body = out
            .body
            .collect()
            .await
            .with_context(|| format!("read body of {bucket}/{key}"))?;
        Ok(body.into_bytes().to_vec())
    }

    /// Put an object in one request.
    pub async fn put(&self, bucket: &str, key: &str, bytes: impl Into<Vec<u8>>) -> Result<()> {
        self.client
            .put_object()
            .bucket(bucket)
            .key(key)
            .body(ByteStream::from(bytes.into()))
            .send()
            .await
            .map_err(|e| anyhow!("put {bucket}/{key}: {}", DisplayErrorContext(&e)))?;
        Ok(())
    }

    /// Multipart uploads begun and neither completed nor aborted, as
    /// `(key, upload_id)`.
    pub async fn list_multipart_uploads(&self, bucket: &str) -> Result<Vec<(String, String)>> {
        let mut uploads = Vec::new();
        let mut key_marker: Option<String> = None;
        let mut id_marker: Option<String> = None;
        loop {
            let out = self
                .client
                .list_multipart_uploads()
                .bucket(bucket)
                .set_key_marker(key_marker.take())
                .set_upload_id_marker(id_marker.take())
                .send()
                .await
                .map_err(|e| {
                    anyhow!(
                        "list multipart uploads in {bucket}: {}",
                        DisplayErrorContext(&e)
                    )
                })?;
            uploads.extend(out.uploads().iter().map(|u| {
                (
                    u.key().unwrap_or_default().to_owned(),
                    u.upload_id().unwrap_or_default().to_owned(),
                )
            }));
            if out.is_truncated() != Some(true) {
                return Ok(uploads);
            }
            key_marker = out.next_key_marker().map(str::to_owned);
            id_marker = out.next_upload_id_marker().map(str::to_owned);
            if key_marker.is_none() && id_marker.is_none() {
                return Ok(uploads);
            }
        }
    }
}

impl std::ops::Deref for S3Server {
    type Target = S3Api;

    fn deref(&self) -> &S3Api {
        &self.api
    }
}

impl S3Server {
    /// Start moto on a free port and wait until it answers HTTP.
    pub async fn start() -> Result<S3Server> {
        let log_dir = tempfile::Builder::new()
            .prefix("harness-moto-")
            .tempdir()
            .context("create tempdir for moto")?;
        let log = log_dir.path().join("moto.log");
        let mut last_err = None;
        for _ in 0..START_ATTEMPTS {
            let port = free_port();
            let mut child = spawn_moto(port, &log)?;
            match wait_ready(&mut child, port, &log).await {
                Ok(()) => {
                    let endpoint = format!("http://{HOST}:{port}");
                    return Ok(S3Server {
                        child,
                        port,
                        api: S3Api::new(&endpoint),
                        log_dir,
                    });
                }
                Err(e) => {
                    kill_group(&mut child);
                    if !tail_file(&log, 8192).contains("already in use") {
                        return Err(e);
                    }
                    last_err = Some(e);
                }
            }
        }
        Err(last_err.unwrap_or_else(|| anyhow!("moto did not start")))
    }

    /// `http://127.0.0.1:<port>`
    pub fn endpoint(&self) -> String {
        format!("http://{HOST}:{}", self.port)
    }

    /// TCP port moto listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Always `"us-east-1"`.
    pub fn region(&self) -> &str {
        REGION
    }

    /// Access key id accepted by the server (`"test"`).
    pub fn access_key(&self) -> &str {
        ACCESS_KEY
    }

    /// Secret access key accepted by the server (`"test"`).
    pub fn secret_key(&self) -> &str {
        SECRET_KEY
    }

    /// Path to moto's combined stdout/stderr log.
    /// The server's process id; it leads its own process group.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_path(&self) -> PathBuf {
        self.log_dir.path().join("moto.log")
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        kill_group(&mut self.child);
    }
}

fn spawn_moto(port: u16, log: &std::path::Path) -> Result<Child> {
    let mut cmd = match which("moto_server") {
        Some(path) => Command::new(path),
        None => {
            let mut c = Command::new("python3");
            c.args(["-m", "moto.server"]);
            c
        }
    };
    let out = std::fs::File::create(log).with_context(|| format!("create {}", log.display()))?;
    cmd.args(["-H", HOST, "-p", &port.to_string()])
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        // Own process group, so that drop also kills whatever a wrapper
        // (e.g. a pyenv shim) started.
        .process_group(0);
    cmd.spawn()
        .context("spawn moto_server (install it with .ci/install-test-deps.sh)")
}

async fn wait_ready(child: &mut Child, port: u16, log: &std::path::Path) -> Result<()> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()?;
    let url = format!("http://{HOST}:{port}/");
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if let Some(status) = child.try_wait()? {
            bail!("moto exited ({status}):\n{}", tail_file(log, 4096));
        }
        if http.get(&url).send().await.is_ok() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "moto did not answer on {url} within {READY_TIMEOUT:?}:\n{}",
                tail_file(log, 4096)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn kill_group(child: &mut Child) {
    if let Ok(pid) = i32::try_from(child.id()) {
        // SAFETY: plain syscall. The child leads its own process group; the
        // group id stays reserved while any member is alive, even if the
        // leader has already been reaped.
        unsafe {
            libc::kill(-pid, libc::SIGKILL);
        }
    }
    let _ = child.wait();
}

fn make_client(endpoint: &str) -> Client {
    let conf = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(REGION))
        .endpoint_url(endpoint)
        .credentials_provider(Credentials::new(
            ACCESS_KEY, SECRET_KEY, None, None, "harness",
        ))
        .force_path_style(true)
        .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
        .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
        .build();
    Client::from_conf(conf)
}
