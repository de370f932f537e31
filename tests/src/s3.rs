use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::error::DisplayErrorContext;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::Client;
use tempfile::TempDir;

use crate::util::{kill_group, start_http_server, which};

const HOST: &str = "127.0.0.1";
const ACCESS_KEY: &str = "test";
const SECRET_KEY: &str = "test";
const REGION: &str = "us-east-1";
const READY_TIMEOUT: Duration = Duration::from_secs(60);

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
        let (child, port) =
            start_http_server("moto", &log, "already in use", READY_TIMEOUT, spawn_moto).await?;
        Ok(S3Server {
            child,
            port,
            api: S3Api::new(&format!("http://{HOST}:{port}")),
            log_dir,
        })
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
