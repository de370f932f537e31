//! Where backups live: an S3-compatible bucket or a local directory. Uploads are written in
//! parts; every upload in progress is registered so that any failure path (error, signal) can
//! abort it, leaving neither a half-written object nor a billed incomplete multipart upload.

mod local;
mod s3;

use std::sync::Mutex;

use bytes::Bytes;
use tokio::io::AsyncBufRead;

use crate::config::StorageConfig;
use crate::error::Error;

pub type ObjectReader = Box<dyn AsyncBufRead + Send + Unpin>;

/// Whether a write may replace an object already at its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteMode {
    /// Only if nothing is there: an existing backup, or one another job commits meanwhile, is
    /// never replaced (the write fails with [`Error::Conflict`]).
    Create,
    /// Replace whatever is there (`BACKUP_OVERWRITE=true`).
    Overwrite,
}

/// What completing an upload retired: the S3 upload id, when it was a multipart upload.
pub(crate) struct Committed {
    finished: Option<String>,
}

pub(crate) fn exists_error(location: &str) -> Error {
    Error::Conflict(format!(
        "a backup already exists at {location}, or another job wrote one there meanwhile; it is kept. Choose another BACKUP_PATH, or set BACKUP_OVERWRITE=true to replace it"
    ))
}

pub struct Storage {
    backend: Backend,
    pending: Mutex<Vec<Pending>>,
}

enum Backend {
    S3(s3::S3Backend),
    Local(local::LocalBackend),
}

/// An upload that must be aborted if the job does not complete it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Pending {
    S3 { key: String, upload_id: String },
    Local { partial: std::path::PathBuf },
}

impl Storage {
    pub async fn new(config: &StorageConfig) -> Result<Storage, Error> {
        let backend = match config {
            StorageConfig::S3(c) => Backend::S3(s3::S3Backend::new(c).await),
            StorageConfig::Local { dir } => Backend::Local(local::LocalBackend::new(dir.clone())),
        };
        Ok(Storage {
            backend,
            pending: Mutex::new(Vec::new()),
        })
    }

    /// A human-readable location such as `s3://bucket/key` or `/backups/key`.
    pub fn describe(&self, key: &str) -> String {
        match &self.backend {
            Backend::S3(b) => b.describe(key),
            Backend::Local(b) => b.describe(key),
        }
    }

    /// Checks the store is reachable and usable before any dump starts.
    pub async fn preflight(&self) -> Result<(), Error> {
        match &self.backend {
            Backend::S3(b) => b.preflight().await,
            Backend::Local(b) => b.preflight().await,
        }
    }

    /// Proves that an object can be written at `key`, leaving nothing behind; run before the
    /// dump so a long dump is never wasted on a store that will refuse it.
    pub async fn probe_write(&self, key: &str) -> Result<(), Error> {
        match &self.backend {
            Backend::S3(b) => b.probe_write(key).await,
            Backend::Local(b) => b.probe_write(key).await,
        }
    }

    /// Writes a small object in one request (manifests).
    pub async fn put(&self, key: &str, body: Bytes, mode: WriteMode) -> Result<(), Error> {
        match &self.backend {
            Backend::S3(b) => b.put(key, body, mode).await,
            Backend::Local(b) => b.put(key, body, mode).await,
        }
    }

    /// Reads a small object; `None` when it does not exist.
    pub async fn get(&self, key: &str) -> Result<Option<Bytes>, Error> {
        match &self.backend {
            Backend::S3(b) => b.get(key).await,
            Backend::Local(b) => b.get(key).await,
        }
    }

    pub async fn exists(&self, key: &str) -> Result<bool, Error> {
        match &self.backend {
            Backend::S3(b) => b.exists(key).await,
            Backend::Local(b) => Ok(b.exists(key)),
        }
    }

    pub async fn delete(&self, key: &str) -> Result<(), Error> {
        match &self.backend {
            Backend::S3(b) => b.delete(key).await,
            Backend::Local(b) => b.delete(key).await,
        }
    }

    /// Opens an object for streaming; returns the reader and the object's size when known.
    pub async fn open(&self, key: &str) -> Result<(ObjectReader, Option<u64>), Error> {
        match &self.backend {
            Backend::S3(b) => b.open(key).await,
            Backend::Local(b) => b.open(key).await,
        }
    }

    /// Starts an upload whose parts (all `part_size` bytes but the last) follow. Nothing is
    /// visible at `key` until it completes; with `WriteMode::Create` it completes only if
    /// nothing is there by then.
    pub fn upload(
        &self,
        key: &str,
        part_size: u64,
        concurrency: usize,
        mode: WriteMode,
    ) -> Upload<'_> {
        let state = match &self.backend {
            Backend::S3(b) => UploadState::S3(b.upload(key, concurrency, mode)),
            Backend::Local(b) => UploadState::Local(b.upload(key, mode)),
        };
        Upload {
            storage: self,
            key: key.to_string(),
            part_size,
            parts: 0,
            state,
        }
    }

    /// Aborts every upload still in progress. Called on every failure path; gives up at
    /// `deadline` (a stopping job has a grace period), logging what it could not abort.
    pub async fn abort_pending(&self, deadline: Option<tokio::time::Instant>) {
        let pending: Vec<Pending> = std::mem::take(&mut *self.pending.lock().unwrap());
        for p in pending {
            let aborted = match deadline {
                Some(d) => tokio::time::timeout_at(d, self.abort_one(&p))
                    .await
                    .unwrap_or_else(|_| {
                        Err(Error::Storage(
                            "no time left before the shutdown deadline".into(),
                        ))
                    }),
                None => self.abort_one(&p).await,
            };
            match (aborted, &p) {
                (Ok(()), _) => tracing::info!(upload = ?p, "aborted the incomplete upload"),
                (Err(e), Pending::S3 { key, upload_id }) => tracing::error!(
                    key,
                    upload_id,
                    "could not abort the incomplete multipart upload {upload_id} of {key}: {e}; abort it (aws s3api abort-multipart-upload), or let a bucket lifecycle rule (AbortIncompleteMultipartUpload) remove it"
                ),
                (Err(e), Pending::Local { partial }) => tracing::error!(
                    partial = %partial.display(),
                    "could not remove the incomplete file {}: {e}; delete it",
                    partial.display()
                ),
            }
        }
    }

    /// One abort, retried for a while: the failure may be the store itself being briefly
    /// unreachable, and an upload left behind is billed until a lifecycle rule removes it.
    async fn abort_one(&self, p: &Pending) -> Result<(), Error> {
        let mut delay = std::time::Duration::from_millis(500);
        let mut attempt = 1;
        loop {
            let result = match (&self.backend, p) {
                (Backend::S3(b), Pending::S3 { key, upload_id }) => b.abort(key, upload_id).await,
                (Backend::Local(_), Pending::Local { partial }) => {
                    local::remove_partial(partial).await
                }
                _ => Ok(()),
            };
            match result {
                Ok(()) => return Ok(()),
                Err(e) if attempt == ABORT_ATTEMPTS => return Err(e),
                Err(e) => {
                    tracing::warn!(upload = ?p, attempt, "aborting the incomplete upload failed ({e}); retrying in {delay:?}");
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                    attempt += 1;
                }
            }
        }
    }

    fn register(&self, p: Pending) {
        self.pending.lock().unwrap().push(p);
    }

    fn unregister(&self, p: &Pending) {
        self.pending.lock().unwrap().retain(|x| x != p);
    }
}

/// An upload in progress. Parts are sent as they come (S3: several at once, bounded); nothing
/// is visible under the final key until [`Upload::complete`].
pub struct Upload<'a> {
    storage: &'a Storage,
    key: String,
    part_size: u64,
    parts: u32,
    state: UploadState,
}

enum UploadState {
    S3(s3::MultipartUpload),
    Local(local::LocalUpload),
}

/// Attempts to abort an incomplete upload: 0.5 + 1 + 2 + 4 + 8 + 16 s of waiting at most.
const ABORT_ATTEMPTS: u32 = 7;

impl Upload<'_> {
    pub fn part_size(&self) -> u64 {
        self.part_size
    }

    pub fn parts(&self) -> u32 {
        self.parts
    }

    /// Sends a full part (exactly `part_size` bytes). Waits only when the in-flight limit is
    /// reached, which bounds memory whatever the stream's length.
    pub async fn part(&mut self, data: Bytes) -> Result<(), Error> {
        debug_assert_eq!(data.len() as u64, self.part_size);
        self.parts += 1;
        match &mut self.state {
            UploadState::S3(u) => {
                if let Some(upload_id) = u.part(data).await? {
                    tracing::info!(phase = "upload", %upload_id, "multipart upload started");
                    self.storage.register(Pending::S3 {
                        key: self.key.clone(),
                        upload_id,
                    });
                }
                Ok(())
            }
            UploadState::Local(u) => {
                if let Some(partial) = u.part(data).await? {
                    self.storage.register(Pending::Local { partial });
                }
                Ok(())
            }
        }
    }

    /// Resolves with the first failed part upload, so a failure ends the job even while the
    /// dump is stalled; never while the upload is healthy (local writes fail in `part`).
    pub async fn failure(&mut self) -> Error {
        match &mut self.state {
            UploadState::S3(u) => u.failure().await,
            UploadState::Local(_) => std::future::pending().await,
        }
    }

    /// Sends the last (possibly short or empty) part, makes the object visible, and checks
    /// that the store holds what was sent.
    pub async fn complete(mut self, last: Bytes) -> Result<u32, Error> {
        if !last.is_empty() || self.parts == 0 {
            self.parts += 1;
        }
        let finished = match self.state {
            UploadState::S3(u) => {
                let backend = match &self.storage.backend {
                    Backend::S3(b) => b,
                    Backend::Local(_) => unreachable!("an S3 upload on an S3 backend"),
                };
                u.complete(backend, last)
                    .await?
                    .finished
                    .map(|upload_id| Pending::S3 {
                        key: self.key.clone(),
                        upload_id,
                    })
            }
            UploadState::Local(u) => u
                .complete(last)
                .await?
                .map(|partial| Pending::Local { partial }),
        };
        if let Some(p) = finished {
            self.storage.unregister(&p);
        }
        Ok(self.parts)
    }
}
