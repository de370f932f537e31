//! s3s-fs: an S3 server over a local directory (crates.io `s3s-fs`, its `binary` feature;
//! installed by .ci/install-test-deps.sh). It checks request signatures, which moto does not,
//! and has no ListMultipartUploads.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use tempfile::TempDir;

use crate::s3::S3Api;
use crate::util::{kill_group, start_http_server, which};

const HOST: &str = "127.0.0.1";
/// The credentials the server is started with (the same as moto's fixture, so [`S3Api`] fits).
const ACCESS_KEY: &str = "test";
const SECRET_KEY: &str = "test";
const REGION: &str = "us-east-1";
const READY_TIMEOUT: Duration = Duration::from_secs(30);
const BINARY: &str = "s3s-fs";

/// An s3s-fs server on a free port over its own temporary directory; killed on drop (and the
/// directory removed).
///
/// It takes its credentials on the command line (`--access-key`, `--secret-key`; it reads no
/// environment variable for them): fine for these throwaway test credentials only.
pub struct S3sServer {
    child: Child,
    port: u16,
    api: S3Api,
    /// `data/` holds the buckets (one directory each), `s3s-fs.log` the server's output.
    dir: TempDir,
}

impl std::ops::Deref for S3sServer {
    type Target = S3Api;

    fn deref(&self) -> &S3Api {
        &self.api
    }
}

impl S3sServer {
    /// Starts s3s-fs and waits until it answers HTTP.
    pub async fn start() -> Result<S3sServer> {
        let binary = find_binary().ok_or_else(|| {
            anyhow!("{BINARY} not found on PATH or in ~/.cargo/bin (install it with .ci/install-test-deps.sh)")
        })?;
        let dir = tempfile::Builder::new()
            .prefix("harness-s3s-")
            .tempdir()
            .context("create tempdir for s3s-fs")?;
        let data = dir.path().join("data");
        std::fs::create_dir(&data).with_context(|| format!("create {}", data.display()))?;
        let log = dir.path().join("s3s-fs.log");
        let (child, port) =
            start_http_server(BINARY, &log, "in use", READY_TIMEOUT, |port, log| {
                spawn(&binary, port, &data, log)
            })
            .await?;
        Ok(S3sServer {
            child,
            port,
            api: S3Api::new(&format!("http://{HOST}:{port}")),
            dir,
        })
    }

    /// `http://127.0.0.1:<port>`
    pub fn endpoint(&self) -> String {
        format!("http://{HOST}:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Any region is accepted; requests are signed for this one.
    pub fn region(&self) -> &str {
        REGION
    }

    pub fn access_key(&self) -> &str {
        ACCESS_KEY
    }

    pub fn secret_key(&self) -> &str {
        SECRET_KEY
    }

    /// The directory the server stores buckets in (one subdirectory per bucket).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("s3s-fs.log")
    }

    /// The ids of the multipart uploads the server holds (started, neither completed nor
    /// aborted), read from its directory (`.upload-<id>.json`): s3s-fs has no
    /// ListMultipartUploads, so this is the only way to see them.
    pub fn pending_upload_ids(&self) -> Result<Vec<String>> {
        let data = self.data_dir();
        let mut ids = Vec::new();
        for entry in std::fs::read_dir(&data).with_context(|| format!("read {}", data.display()))? {
            let name = entry?.file_name();
            let Some(name) = name.to_str() else { continue };
            if let Some(id) = name
                .strip_prefix(".upload-")
                .and_then(|rest| rest.strip_suffix(".json"))
            {
                ids.push(id.to_string());
            }
        }
        ids.sort();
        Ok(ids)
    }
}

impl Drop for S3sServer {
    fn drop(&mut self) {
        kill_group(&mut self.child);
    }
}

fn find_binary() -> Option<PathBuf> {
    which(BINARY).or_else(|| {
        let cargo_home = std::env::var_os("CARGO_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))?;
        let p = cargo_home.join("bin").join(BINARY);
        p.is_file().then_some(p)
    })
}

fn spawn(binary: &Path, port: u16, data: &Path, log: &Path) -> Result<Child> {
    let out = std::fs::File::create(log).with_context(|| format!("create {}", log.display()))?;
    Command::new(binary)
        .args(["--host", HOST, "--port", &port.to_string()])
        .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
        .arg(data)
        .env("RUST_LOG", "s3s_fs=info,s3s=warn")
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .process_group(0)
        .spawn()
        .with_context(|| format!("spawn {}", binary.display()))
}
