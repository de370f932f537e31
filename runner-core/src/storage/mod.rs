//! Where backups live, behind one trait in the manner of `object_store`: [`ObjectStore`] (put,
//! put-if-absent, get, ranged get, head, paginated list, delete, multipart uploads and their
//! listing and abort) with one implementation for S3-compatible stores and one for a local
//! directory. The pipeline sees only [`Storage`], which adds what every backend needs the same
//! way: each upload in progress is registered so that any failure path (error, signal) can abort
//! it, leaving neither a half-written object nor a billed incomplete multipart upload.
//!
//! `tests/tests/storage_conformance.rs` (package `harness`) runs one suite against every backend.

mod local;
mod s3;

/// Single deletes in flight at once, where a store takes one key per request.
pub const DELETES_IN_FLIGHT: usize = 16;

use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use tokio::io::AsyncBufRead;

use crate::config::StorageConfig;
use crate::error::Error;

pub use local::LocalStore;
pub use s3::S3Store;

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

/// An object as a listing or a HEAD shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    pub key: String,
    pub size: u64,
    pub last_modified: DateTime<Utc>,
    /// Changes whenever the object is rewritten: the ETag on S3, size and modification time
    /// on a local directory.
    pub version: String,
}

/// A multipart upload that was started and neither completed nor aborted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadMeta {
    pub key: String,
    pub upload_id: String,
    pub initiated: DateTime<Utc>,
}

/// Requests made to the store, by kind, for reports and benchmarks.
#[derive(Debug, Default)]
pub struct RequestCounter {
    list: AtomicU64,
    get: AtomicU64,
    head: AtomicU64,
    put: AtomicU64,
    delete: AtomicU64,
    multipart: AtomicU64,
}

#[derive(Debug, Clone, Copy)]
pub enum RequestKind {
    List,
    Get,
    Head,
    Put,
    Delete,
    /// Create, part, complete, abort.
    Multipart,
}

/// A snapshot of a [`RequestCounter`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct RequestCounts {
    pub list: u64,
    pub get: u64,
    pub head: u64,
    pub put: u64,
    pub delete: u64,
    pub multipart: u64,
}

impl RequestCounts {
    pub fn total(&self) -> u64 {
        self.list + self.get + self.head + self.put + self.delete + self.multipart
    }
}

impl RequestCounter {
    pub fn count(&self, kind: RequestKind) {
        let c = match kind {
            RequestKind::List => &self.list,
            RequestKind::Get => &self.get,
            RequestKind::Head => &self.head,
            RequestKind::Put => &self.put,
            RequestKind::Delete => &self.delete,
            RequestKind::Multipart => &self.multipart,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> RequestCounts {
        let l = |c: &AtomicU64| c.load(Ordering::Relaxed);
        RequestCounts {
            list: l(&self.list),
            get: l(&self.get),
            head: l(&self.head),
            put: l(&self.put),
            delete: l(&self.delete),
            multipart: l(&self.multipart),
        }
    }
}

/// One storage backend.
#[async_trait]
pub trait ObjectStore: Send + Sync + 'static {
    /// A human-readable location such as `s3://bucket/key` or `/backups/key`.
    fn describe(&self, key: &str) -> String;

    /// Checks the store is reachable and usable (the bucket exists, the directory can be made).
    async fn preflight(&self) -> Result<(), Error>;

    /// Proves that an object can be written at `key`, leaving nothing behind.
    async fn probe_write(&self, key: &str) -> Result<(), Error>;

    /// Writes a small object in one request; with [`WriteMode::Create`] only if nothing is at
    /// `key` (put-if-absent), failing with [`Error::Conflict`] otherwise.
    async fn put(&self, key: &str, body: Bytes, mode: WriteMode) -> Result<(), Error>;

    /// Reads a small object whole; `None` when it does not exist.
    async fn get(&self, key: &str) -> Result<Option<Bytes>, Error>;

    /// Opens an object (or the byte `range` of it) for streaming; returns the reader and the
    /// object's size when known. A missing object is [`Error::Integrity`]: it was expected.
    async fn open(
        &self,
        key: &str,
        range: Option<Range<u64>>,
    ) -> Result<(ObjectReader, Option<u64>), Error>;

    /// The object's size and version; `None` when it does not exist.
    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>, Error>;

    /// Every object whose key starts with `prefix`, in key order, across as many pages as the
    /// store returns. Incomplete uploads are not objects.
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, Error>;

    /// Every incomplete multipart upload whose key starts with `prefix`.
    async fn list_uploads(&self, prefix: &str) -> Result<Vec<UploadMeta>, Error>;

    /// Deletes an object; deleting a missing object succeeds.
    async fn delete(&self, key: &str) -> Result<(), Error>;

    /// Deletes several objects; the results in the order of `keys`. By default one request per
    /// key, [`DELETES_IN_FLIGHT`] at a time (S3 sends up to 1,000 keys per request).
    async fn delete_many(&self, keys: &[String]) -> Vec<Result<(), Error>> {
        use futures_util::{stream, StreamExt};
        // Made first, so the stream holds futures and no closure (the Send bound of the
        // boxed future would not hold across one).
        let deletes: Vec<_> = keys.iter().map(|key| self.delete(key)).collect();
        stream::iter(deletes)
            .buffered(DELETES_IN_FLIGHT)
            .collect()
            .await
    }

    /// Starts an upload at `key` (lazily: nothing is sent before the first part).
    fn start_upload(
        &self,
        key: &str,
        concurrency: usize,
        mode: WriteMode,
    ) -> Box<dyn MultipartUpload>;

    /// Aborts an incomplete upload; one that no longer exists counts as aborted.
    async fn abort_upload(&self, key: &str, upload_id: &str) -> Result<(), Error>;

    /// The requests made so far.
    fn requests(&self) -> RequestCounts;
}

/// An upload in progress on one backend.
#[async_trait]
pub trait MultipartUpload: Send {
    /// Queues a full part; waits only when the in-flight limit is reached. Returns the upload
    /// id when this call started the upload, so it can be aborted on failure.
    async fn put_part(&mut self, data: Bytes) -> Result<Option<String>, Error>;

    /// Resolves with the first failed part; never while the parts in flight succeed.
    /// Cancel-safe, so it can race the dump stream.
    async fn failure(&mut self) -> Error;

    /// Sends the last (possibly short or empty) part, makes the object visible and checks that
    /// the store holds what was sent. Returns the upload id it finished, if one was started.
    async fn complete(self: Box<Self>, last: Bytes) -> Result<Option<String>, Error>;
}

pub(crate) fn exists_error(location: &str) -> Error {
    Error::Conflict(format!(
        "a backup already exists at {location}, or another job wrote one there meanwhile; it is kept. Choose another BACKUP_PATH, or set BACKUP_OVERWRITE=true to replace it"
    ))
}

/// The job's storage: one backend, and the uploads it must abort if the job fails.
pub struct Storage {
    store: Box<dyn ObjectStore>,
    pending: Mutex<Vec<Pending>>,
}

/// An upload that must be aborted if the job does not complete it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Pending {
    key: String,
    upload_id: String,
}

impl Storage {
    pub async fn new(config: &StorageConfig) -> Result<Storage, Error> {
        let store: Box<dyn ObjectStore> = match config {
            StorageConfig::S3(c) => Box::new(S3Store::new(c).await),
            StorageConfig::Local { dir } => Box::new(LocalStore::new(dir.clone())),
        };
        Ok(Storage::with_store(store))
    }

    pub fn with_store(store: Box<dyn ObjectStore>) -> Storage {
        Storage {
            store,
            pending: Mutex::new(Vec::new()),
        }
    }

    pub fn store(&self) -> &dyn ObjectStore {
        &*self.store
    }

    pub fn describe(&self, key: &str) -> String {
        self.store.describe(key)
    }

    pub async fn preflight(&self) -> Result<(), Error> {
        self.store.preflight().await
    }

    pub async fn probe_write(&self, key: &str) -> Result<(), Error> {
        self.store.probe_write(key).await
    }

    pub async fn put(&self, key: &str, body: Bytes, mode: WriteMode) -> Result<(), Error> {
        self.store.put(key, body, mode).await
    }

    pub async fn get(&self, key: &str) -> Result<Option<Bytes>, Error> {
        self.store.get(key).await
    }

    pub async fn exists(&self, key: &str) -> Result<bool, Error> {
        Ok(self.store.head(key).await?.is_some())
    }

    pub async fn head(&self, key: &str) -> Result<Option<ObjectMeta>, Error> {
        self.store.head(key).await
    }

    pub async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, Error> {
        self.store.list(prefix).await
    }

    pub async fn list_uploads(&self, prefix: &str) -> Result<Vec<UploadMeta>, Error> {
        self.store.list_uploads(prefix).await
    }

    pub async fn delete(&self, key: &str) -> Result<(), Error> {
        self.store.delete(key).await
    }

    pub async fn delete_many(&self, keys: &[String]) -> Vec<Result<(), Error>> {
        self.store.delete_many(keys).await
    }

    pub async fn abort_upload(&self, key: &str, upload_id: &str) -> Result<(), Error> {
        self.store.abort_upload(key, upload_id).await
    }

    pub async fn open(&self, key: &str) -> Result<(ObjectReader, Option<u64>), Error> {
        self.store.open(key, None).await
    }

    pub fn requests(&self) -> RequestCounts {
        self.store.requests()
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
        Upload {
            storage: self,
            key: key.to_string(),
            part_size,
            parts: 0,
            inner: self.store.start_upload(key, concurrency, mode),
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
            let Pending { key, upload_id } = &p;
            match aborted {
                Ok(()) => tracing::info!(key, upload_id, "aborted the incomplete upload"),
                Err(e) => tracing::error!(
                    key,
                    upload_id,
                    "could not abort the incomplete upload {upload_id} of {}: {e}; abort it (S3: aws s3api abort-multipart-upload; a directory: delete the .partial file), or let a prune (OPERATION_TYPE=prune) or a bucket lifecycle rule (AbortIncompleteMultipartUpload) remove it",
                    self.describe(key)
                ),
            }
        }
    }

    /// One abort, retried for a while: the failure may be the store itself being briefly
    /// unreachable, and an upload left behind is billed until something removes it.
    async fn abort_one(&self, p: &Pending) -> Result<(), Error> {
        let mut delay = std::time::Duration::from_millis(500);
        let mut attempt = 1;
        loop {
            match self.store.abort_upload(&p.key, &p.upload_id).await {
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

/// Attempts to abort an incomplete upload: 0.5 + 1 + 2 + 4 + 8 + 16 s of waiting at most.
const ABORT_ATTEMPTS: u32 = 7;

/// An upload in progress. Parts are sent as they come (S3: several at once, bounded); nothing
/// is visible under the final key until [`Upload::complete`].
pub struct Upload<'a> {
    storage: &'a Storage,
    key: String,
    part_size: u64,
    parts: u32,
    inner: Box<dyn MultipartUpload>,
}

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
        if let Some(upload_id) = self.inner.put_part(data).await? {
            tracing::info!(phase = "upload", %upload_id, "multipart upload started");
            self.storage.register(Pending {
                key: self.key.clone(),
                upload_id,
            });
        }
        Ok(())
    }

    /// Resolves with the first failed part upload, so a failure ends the job even while the
    /// dump is stalled; never while the upload is healthy.
    pub async fn failure(&mut self) -> Error {
        self.inner.failure().await
    }

    /// Sends the last (possibly short or empty) part, makes the object visible, and checks
    /// that the store holds what was sent.
    pub async fn complete(self, last: Bytes) -> Result<u32, Error> {
        let mut parts = self.parts;
        if !last.is_empty() || parts == 0 {
            parts += 1;
        }
        if let Some(upload_id) = self.inner.complete(last).await? {
            self.storage.unregister(&Pending {
                key: self.key.clone(),
                upload_id,
            });
        }
        Ok(parts)
    }
}
