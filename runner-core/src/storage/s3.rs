//! S3-compatible storage through aws-sdk-s3: multipart uploads with a bounded number of parts
//! in flight, single-request uploads for objects smaller than one part.

use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use aws_config::BehaviorVersion;
use aws_sdk_s3::config::{
    Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, Delete, ObjectIdentifier};
use aws_sdk_s3::Client;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures_util::{stream, StreamExt};
use md5::{Digest, Md5};
use tokio::task::JoinSet;

use super::{
    exists_error, MultipartUpload, ObjectMeta, ObjectReader, ObjectStore, RequestCounter,
    RequestCounts, RequestKind, UploadMeta, WriteMode,
};
use crate::config::{ChecksumMode, S3Config};
use crate::error::Error;

#[derive(Clone)]
pub struct S3Store {
    client: Client,
    bucket: String,
    requests: Arc<RequestCounter>,
    /// Whether to send DeleteObjects (up to 1,000 keys per request). Off for GCS, whose S3 API
    /// has no multi-object delete, and turned off for good when a store refuses one.
    batch_deletes: Arc<AtomicBool>,
}

/// The most keys one DeleteObjects request takes.
const MAX_KEYS_PER_DELETE: usize = 1000;

fn to_utc(t: Option<&aws_sdk_s3::primitives::DateTime>) -> DateTime<Utc> {
    t.and_then(|t| DateTime::from_timestamp(t.secs(), t.subsec_nanos()))
        .unwrap_or(DateTime::<Utc>::UNIX_EPOCH)
}

fn describe_sdk_error<E>(err: &SdkError<E, aws_sdk_s3::config::http::HttpResponse>) -> String
where
    E: std::error::Error + ProvideErrorMetadata + 'static,
{
    if let SdkError::ServiceError(s) = err {
        return match (s.err().code(), s.err().message()) {
            (Some(code), Some(msg)) if !msg.trim().is_empty() => format!("{code}: {}", msg.trim()),
            (Some(code), _) => code.to_string(),
            // No error document (a HEAD, or a store that answers with an empty body): the
            // status says what happened; the SDK's debug dump of the response would not.
            (None, _) => format!("HTTP {} with no error code", s.raw().status().as_u16()),
        };
    }
    DisplayErrorContext(err).to_string()
}

impl S3Store {
    /// One DeleteObjects request (quiet: only failures are listed); the results per key, or why
    /// the request as a whole failed.
    async fn delete_batch(&self, keys: &[String]) -> Result<Vec<Result<(), Error>>, String> {
        self.count(RequestKind::Delete);
        let objects = keys
            .iter()
            .map(|k| ObjectIdentifier::builder().key(k).build())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| e.to_string())?;
        let delete = Delete::builder()
            .set_objects(Some(objects))
            .quiet(true)
            .build()
            .map_err(|e| e.to_string())?;
        let out = self
            .client
            .delete_objects()
            .bucket(&self.bucket)
            .delete(delete)
            .send()
            .await
            .map_err(|e| describe_sdk_error(&e))?;
        let failed: std::collections::HashMap<&str, String> = out
            .errors()
            .iter()
            .map(|e| {
                (
                    e.key().unwrap_or_default(),
                    format!("{} {}", e.code().unwrap_or("?"), e.message().unwrap_or("")),
                )
            })
            .collect();
        Ok(keys
            .iter()
            .map(|k| match failed.get(k.as_str()) {
                None => Ok(()),
                Some(reason) => Err(Error::storage(
                    &format!("cannot delete {}", self.describe(k)),
                    reason.trim().to_string(),
                )),
            })
            .collect())
    }

    pub async fn new(c: &S3Config) -> S3Store {
        let mut loader =
            aws_config::defaults(BehaviorVersion::latest()).region(Region::new(c.region.clone()));
        if let Some((id, secret)) = &c.credentials {
            loader = loader.credentials_provider(Credentials::new(
                id.expose(),
                secret.expose(),
                None,
                None,
                "backup-runner-env",
            ));
        }
        let shared = loader.load().await;
        let (request, response) = match c.checksum {
            ChecksumMode::WhenRequired => (
                RequestChecksumCalculation::WhenRequired,
                ResponseChecksumValidation::WhenRequired,
            ),
            ChecksumMode::WhenSupported => (
                RequestChecksumCalculation::WhenSupported,
                ResponseChecksumValidation::WhenSupported,
            ),
        };
        let timeouts = aws_sdk_s3::config::timeout::TimeoutConfig::builder()
            .connect_timeout(std::time::Duration::from_secs(10))
            .operation_attempt_timeout(c.request_timeout)
            .build();
        let mut builder = aws_sdk_s3::config::Builder::from(&shared)
            .timeout_config(timeouts)
            .force_path_style(c.force_path_style)
            .request_checksum_calculation(request)
            .response_checksum_validation(response);
        if let Some(endpoint) = &c.endpoint {
            builder = builder.endpoint_url(endpoint);
        }
        S3Store {
            client: Client::from_conf(builder.build()),
            bucket: c.bucket.clone(),
            requests: Arc::new(RequestCounter::default()),
            batch_deletes: Arc::new(AtomicBool::new(!c.flavor.eq_ignore_ascii_case("gcs"))),
        }
    }

    fn count(&self, kind: RequestKind) {
        self.requests.count(kind);
    }

    /// Checks what the store holds at `key` after a write: its size, and its ETag against the
    /// one computed from what was sent (the MD5 of a single-request object; for a multipart
    /// object the MD5 of the parts' MD5s, dash, the number of parts). A mismatch means the store
    /// received other bytes than were sent.
    /// Returns the mismatch found, if any (an error is a check that could not be made).
    async fn check_stored(
        &self,
        key: &str,
        sent: u64,
        expected_etag: &str,
    ) -> Result<Option<String>, Error> {
        self.count(RequestKind::Head);
        let head = self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| {
                Error::storage(
                    &format!("cannot check the stored object {}", self.describe(key)),
                    describe_sdk_error(&e),
                )
            })?;
        let size = head.content_length().unwrap_or(-1);
        if size != sent as i64 {
            return Ok(Some(format!(
                "the store holds {size} bytes at {} but {sent} were sent; the object is not kept",
                self.describe(key)
            )));
        }
        let etag = head
            .e_tag()
            .unwrap_or("")
            .trim_matches('"')
            .to_ascii_lowercase();
        if etag == expected_etag {
            return Ok(None);
        }
        let kms = head
            .server_side_encryption()
            .is_some_and(|s| s.as_str().starts_with("aws:kms"));
        if kms || !looks_like_md5_etag(&etag) {
            tracing::info!(
                phase = "upload",
                etag,
                "the store's ETag is not an MD5 (server-side encryption with KMS, or a store that computes ETags its own way): the size was checked, and every part was sent with Content-MD5"
            );
            return Ok(None);
        }
        Ok(Some(format!(
            "the store received other bytes than were sent to {} (ETag {etag}, expected {expected_etag}): a part was corrupted on the way; the object is not kept",
            self.describe(key)
        )))
    }
}

#[async_trait]
impl ObjectStore for S3Store {
    fn describe(&self, key: &str) -> String {
        format!("s3://{}/{key}", self.bucket)
    }

    async fn preflight(&self) -> Result<(), Error> {
        self.count(RequestKind::Head);
        match self.client.head_bucket().bucket(&self.bucket).send().await {
            Ok(_) => Ok(()),
            Err(e) => {
                let status = e.raw_response().map(|r| r.status().as_u16());
                Err(Error::Storage(match status {
                    Some(404) => format!(
                        "bucket {:?} does not exist: create it or fix STORAGE_BUCKET",
                        self.bucket
                    ),
                    Some(403) | Some(401) => format!(
                        "access to bucket {:?} denied: check STORAGE_ACCESS_KEY_ID / STORAGE_SECRET_ACCESS_KEY and the bucket policy",
                        self.bucket
                    ),
                    _ => format!(
                        "cannot reach bucket {:?}: {} (check STORAGE_ENDPOINT and the network)",
                        self.bucket,
                        describe_sdk_error(&e)
                    ),
                }))
            }
        }
    }

    /// Writes a small object in one request; with `WriteMode::Create`, only if nothing is at
    /// `key` yet (`If-None-Match: *`, with a HEAD check first for stores that ignore it).
    async fn put(&self, key: &str, body: Bytes, mode: WriteMode) -> Result<(), Error> {
        if mode == WriteMode::Create && self.head(key).await?.is_some() {
            return Err(exists_error(&self.describe(key)));
        }
        self.count(RequestKind::Put);
        let digest = Md5::digest(&body);
        let mut request = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_length(body.len() as i64)
            .content_md5(base64_md5(&digest));
        if mode == WriteMode::Create {
            request = request.if_none_match("*");
        }
        request
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|e| {
                if is_precondition_failed(&e) {
                    exists_error(&self.describe(key))
                } else {
                    Error::storage(
                        &format!("cannot write {}", self.describe(key)),
                        describe_sdk_error(&e),
                    )
                }
            })?;
        Ok(())
    }

    async fn get(&self, key: &str) -> Result<Option<Bytes>, Error> {
        self.count(RequestKind::Get);
        let out = match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(out) => out,
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => return Ok(None),
            Err(e) => {
                return Err(Error::storage(
                    &format!("cannot read {}", self.describe(key)),
                    describe_sdk_error(&e),
                ))
            }
        };
        let data = out
            .body
            .collect()
            .await
            .map_err(|e| Error::storage(&format!("cannot read {}", self.describe(key)), e))?;
        Ok(Some(data.into_bytes()))
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>, Error> {
        self.count(RequestKind::Head);
        match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(out) => Ok(Some(ObjectMeta {
                key: key.to_string(),
                size: out
                    .content_length()
                    .and_then(|n| u64::try_from(n).ok())
                    .unwrap_or(0),
                last_modified: to_utc(out.last_modified()),
                version: out.e_tag().unwrap_or("").trim_matches('"').to_string(),
            })),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found()) => Ok(None),
            Err(e) => Err(Error::storage(
                &format!("cannot check {}", self.describe(key)),
                describe_sdk_error(&e),
            )),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, Error> {
        let mut found = Vec::new();
        let mut token: Option<String> = None;
        loop {
            self.count(RequestKind::List);
            let out = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(prefix)
                .set_continuation_token(token.take())
                .send()
                .await
                .map_err(|e| {
                    Error::storage(
                        &format!("cannot list {}", self.describe(prefix)),
                        describe_sdk_error(&e),
                    )
                })?;
            for o in out.contents() {
                let Some(key) = o.key() else { continue };
                found.push(ObjectMeta {
                    key: key.to_string(),
                    size: o.size().and_then(|n| u64::try_from(n).ok()).unwrap_or(0),
                    last_modified: to_utc(o.last_modified()),
                    version: o.e_tag().unwrap_or("").trim_matches('"').to_string(),
                });
            }
            // Never assume one page: follow the continuation token while the store says the
            // listing is truncated.
            match (out.is_truncated(), out.next_continuation_token()) {
                (Some(true), Some(next)) if !next.is_empty() => token = Some(next.to_string()),
                (Some(true), _) => {
                    return Err(Error::Storage(format!(
                        "the listing of {} is truncated but the store gave no continuation token",
                        self.describe(prefix)
                    )))
                }
                _ => break,
            }
        }
        found.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(found)
    }

    async fn list_uploads(&self, prefix: &str) -> Result<Vec<UploadMeta>, Error> {
        let mut found = Vec::new();
        let mut markers: (Option<String>, Option<String>) = (None, None);
        loop {
            self.count(RequestKind::List);
            let out = self
                .client
                .list_multipart_uploads()
                .bucket(&self.bucket)
                .prefix(prefix)
                .set_key_marker(markers.0.take())
                .set_upload_id_marker(markers.1.take())
                .send()
                .await
                .map_err(|e| {
                    Error::storage(
                        &format!(
                            "cannot list the incomplete uploads under {}",
                            self.describe(prefix)
                        ),
                        describe_sdk_error(&e),
                    )
                })?;
            for u in out.uploads() {
                let (Some(key), Some(id)) = (u.key(), u.upload_id()) else {
                    continue;
                };
                found.push(UploadMeta {
                    key: key.to_string(),
                    upload_id: id.to_string(),
                    initiated: to_utc(u.initiated()),
                });
            }
            if out.is_truncated() != Some(true) {
                break;
            }
            let next = (
                out.next_key_marker().map(str::to_string),
                out.next_upload_id_marker().map(str::to_string),
            );
            if next.0.is_none() {
                return Err(Error::Storage(format!(
                    "the listing of incomplete uploads under {} is truncated but the store gave no marker",
                    self.describe(prefix)
                )));
            }
            markers = next;
        }
        found.sort_by(|a, b| (&a.key, &a.upload_id).cmp(&(&b.key, &b.upload_id)));
        Ok(found)
    }

    async fn delete(&self, key: &str) -> Result<(), Error> {
        self.count(RequestKind::Delete);
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| {
                Error::storage(
                    &format!("cannot delete {}", self.describe(key)),
                    describe_sdk_error(&e),
                )
            })?;
        Ok(())
    }

    async fn delete_many(&self, keys: &[String]) -> Vec<Result<(), Error>> {
        let mut results = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(MAX_KEYS_PER_DELETE) {
            if self.batch_deletes.load(Ordering::Relaxed) {
                match self.delete_batch(chunk).await {
                    Ok(done) => {
                        results.extend(done);
                        continue;
                    }
                    Err(reason) => {
                        // Whatever the reason (not implemented, denied, unreachable), the single
                        // deletes that follow give each key its own result.
                        tracing::info!(
                            "the store refused a multi-object delete ({reason}); deleting one key per request"
                        );
                        self.batch_deletes.store(false, Ordering::Relaxed);
                    }
                }
            }
            let deletes: Vec<_> = chunk.iter().map(|key| self.delete(key)).collect();
            results.extend(
                stream::iter(deletes)
                    .buffered(super::DELETES_IN_FLIGHT)
                    .collect::<Vec<_>>()
                    .await,
            );
        }
        results
    }

    async fn open(
        &self,
        key: &str,
        range: Option<Range<u64>>,
    ) -> Result<(ObjectReader, Option<u64>), Error> {
        self.count(RequestKind::Get);
        let out = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .set_range(
                range
                    .as_ref()
                    .map(|r| format!("bytes={}-{}", r.start, r.end.saturating_sub(1))),
            )
            .send()
            .await
            .map_err(|e| {
                if e.as_service_error().is_some_and(|s| s.is_no_such_key()) {
                    Error::Integrity(format!(
                        "backup object {} does not exist",
                        self.describe(key)
                    ))
                } else {
                    Error::storage(
                        &format!("cannot read {}", self.describe(key)),
                        describe_sdk_error(&e),
                    )
                }
            })?;
        // The whole object's size: from Content-Range for a ranged read.
        let size = match out.content_range() {
            Some(cr) => cr.rsplit('/').next().and_then(|n| n.parse().ok()),
            None => out.content_length().and_then(|n| u64::try_from(n).ok()),
        };
        Ok((Box::new(out.body.into_async_read()), size))
    }

    fn start_upload(
        &self,
        key: &str,
        concurrency: usize,
        mode: WriteMode,
    ) -> Box<dyn MultipartUpload> {
        Box::new(S3Upload {
            store: self.clone(),
            client: self.client.clone(),
            bucket: self.bucket.clone(),
            key: key.to_string(),
            mode,
            upload_id: None,
            next_part: 1,
            max_in_flight: concurrency.max(1),
            in_flight: JoinSet::new(),
            done: Vec::new(),
            sent: 0,
        })
    }

    /// Proves the credentials may write at `key` without leaving anything behind: starts a
    /// multipart upload there and aborts it.
    async fn probe_write(&self, key: &str) -> Result<(), Error> {
        self.count(RequestKind::Multipart);
        let out = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| {
                let denied = matches!(
                    e.raw_response().map(|r| r.status().as_u16()),
                    Some(401 | 403)
                );
                Error::Storage(format!(
                    "cannot write s3://{}/{key}: {}{}",
                    self.bucket,
                    describe_sdk_error(&e),
                    if denied {
                        " (the credentials may not write there: check the bucket policy or the key's s3:PutObject permission; nothing was dumped)"
                    } else {
                        "; nothing was dumped"
                    }
                ))
            })?;
        match out.upload_id() {
            Some(id) => self.abort_upload(key, id).await,
            None => Err(Error::Storage("the store returned no upload id".into())),
        }
    }

    async fn abort_upload(&self, key: &str, upload_id: &str) -> Result<(), Error> {
        self.count(RequestKind::Multipart);
        match self
            .client
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            // Already gone (aborted by an earlier attempt whose answer was lost, or completed).
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_upload()) => Ok(()),
            Err(e) => Err(Error::storage(
                "abort multipart upload",
                describe_sdk_error(&e),
            )),
        }
    }

    fn requests(&self) -> RequestCounts {
        self.requests.snapshot()
    }
}

struct S3Upload {
    store: S3Store,
    client: Client,
    bucket: String,
    key: String,
    mode: WriteMode,
    upload_id: Option<String>,
    next_part: i32,
    max_in_flight: usize,
    in_flight: JoinSet<Result<SentPart, Error>>,
    done: Vec<SentPart>,
    sent: u64,
}

struct SentPart {
    part: CompletedPart,
    md5: [u8; 16],
}

fn base64_md5(digest: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(digest)
}

/// The multipart ETag S3 computes: the MD5 of the concatenated part MD5s, dash, the part count.
pub(super) fn multipart_etag(part_md5s: &[[u8; 16]]) -> String {
    let mut all = Md5::new();
    for m in part_md5s {
        all.update(m);
    }
    format!("{}-{}", hex::encode(all.finalize()), part_md5s.len())
}

fn looks_like_md5_etag(etag: &str) -> bool {
    let (hash, count) = match etag.split_once('-') {
        Some((h, n)) => (h, Some(n)),
        None => (etag, None),
    };
    hash.len() == 32
        && hash.bytes().all(|b| b.is_ascii_hexdigit())
        && count.is_none_or(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

fn is_precondition_failed<E>(err: &SdkError<E, aws_sdk_s3::config::http::HttpResponse>) -> bool
where
    E: ProvideErrorMetadata,
{
    let code_is = |c: &str| match err {
        SdkError::ServiceError(s) => s.err().code() == Some(c),
        _ => false,
    };
    err.raw_response()
        .is_some_and(|r| r.status().as_u16() == 412)
        || code_is("PreconditionFailed")
        || code_is("ConditionalRequestConflict")
}

/// Removes an object that was committed but does not hold what was sent; returns the error.
async fn remove_bad_object(backend: &S3Store, key: &str, mismatch: String) -> Error {
    match backend.delete(key).await {
        Ok(()) => {
            tracing::warn!(object = %backend.describe(key), "removed the object the store got wrong")
        }
        Err(e) => {
            tracing::error!(object = %backend.describe(key), "could not remove the object the store got wrong ({e}): delete it, it has no manifest")
        }
    }
    Error::Storage(mismatch)
}

impl S3Upload {
    async fn join_one(&mut self) -> Result<(), Error> {
        if let Some(joined) = self.in_flight.join_next().await {
            let part = joined.map_err(|e| Error::Internal(format!("part upload task: {e}")))??;
            self.done.push(part);
        }
        Ok(())
    }
}

#[async_trait]
impl MultipartUpload for S3Upload {
    async fn put_part(&mut self, data: Bytes) -> Result<Option<String>, Error> {
        let mut created = None;
        if self.upload_id.is_none() {
            self.store.count(RequestKind::Multipart);
            let out = self
                .client
                .create_multipart_upload()
                .bucket(&self.bucket)
                .key(&self.key)
                .content_type("application/octet-stream")
                .send()
                .await
                .map_err(|e| {
                    Error::storage(
                        &format!(
                            "cannot start the upload of s3://{}/{}",
                            self.bucket, self.key
                        ),
                        describe_sdk_error(&e),
                    )
                })?;
            let id = out
                .upload_id()
                .ok_or_else(|| Error::Storage("the store returned no upload id".into()))?
                .to_string();
            self.upload_id = Some(id.clone());
            created = Some(id);
        }
        while self.in_flight.len() >= self.max_in_flight {
            self.join_one().await?;
        }
        let number = self.next_part;
        self.store.count(RequestKind::Multipart);
        self.next_part += 1;
        self.sent += data.len() as u64;
        let request = self
            .client
            .upload_part()
            .bucket(&self.bucket)
            .key(&self.key)
            .upload_id(self.upload_id.clone().unwrap_or_default())
            .part_number(number)
            .content_length(data.len() as i64);
        self.in_flight.spawn(async move {
            // The store checks each part against its Content-MD5 and refuses a damaged one.
            let md5: [u8; 16] = Md5::digest(&data).into();
            let out = request
                .content_md5(base64_md5(&md5))
                .body(ByteStream::from(data))
                .send()
                .await
                .map_err(|e| {
                    Error::storage(
                        &format!("upload of part {number} failed"),
                        describe_sdk_error(&e),
                    )
                })?;
            Ok(SentPart {
                part: CompletedPart::builder()
                    .set_e_tag(out.e_tag().map(str::to_string))
                    .part_number(number)
                    .build(),
                md5,
            })
        });
        Ok(created)
    }

    async fn failure(&mut self) -> Error {
        while !self.in_flight.is_empty() {
            if let Err(e) = self.join_one().await {
                return e;
            }
        }
        std::future::pending().await
    }

    /// Sends the last part and completes; an object smaller than one part is sent in a single
    /// request. Then checks what the store holds against what was sent.
    async fn complete(mut self: Box<Self>, last: Bytes) -> Result<Option<String>, Error> {
        let backend = self.store.clone();
        let backend = &backend;
        let location = format!("s3://{}/{}", self.bucket, self.key);
        if self.upload_id.is_none() {
            let len = last.len() as u64;
            let etag = hex::encode(Md5::digest(&last));
            backend.put(&self.key, last, self.mode).await?;
            if let Some(mismatch) = backend.check_stored(&self.key, len, &etag).await? {
                return Err(remove_bad_object(backend, &self.key, mismatch).await);
            }
            return Ok(None);
        }
        if !last.is_empty() {
            self.put_part(last).await?;
        }
        while !self.in_flight.is_empty() {
            self.join_one().await?;
        }
        self.done.sort_by_key(|p| p.part.part_number());
        let expected = multipart_etag(&self.done.iter().map(|p| p.md5).collect::<Vec<_>>());
        let upload_id = self.upload_id.clone().unwrap_or_default();
        if self.mode == WriteMode::Create && backend.head(&self.key).await?.is_some() {
            return Err(exists_error(&location));
        }
        let parts = self.done.drain(..).map(|p| p.part).collect();
        backend.count(RequestKind::Multipart);
        let mut request = self
            .client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(&self.key)
            .upload_id(&upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            );
        if self.mode == WriteMode::Create {
            // Atomic where the store supports it: a job that wrote the key since the check above
            // makes this one fail instead of replacing its backup.
            request = request.if_none_match("*");
        }
        request.send().await.map_err(|e| {
            if is_precondition_failed(&e) {
                exists_error(&location)
            } else {
                Error::storage(
                    &format!("cannot complete the upload of {location}"),
                    describe_sdk_error(&e),
                )
            }
        })?;
        if let Some(mismatch) = backend
            .check_stored(&self.key, self.sent, &expected)
            .await?
        {
            return Err(remove_bad_object(backend, &self.key, mismatch).await);
        }
        Ok(Some(upload_id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multipart_etag_is_the_md5_of_the_part_md5s() {
        // Two parts "a" and "b": md5(md5("a") ‖ md5("b"))-2, as S3 computes it.
        let a: [u8; 16] = Md5::digest(b"a").into();
        let b: [u8; 16] = Md5::digest(b"b").into();
        let mut both = Vec::new();
        both.extend_from_slice(&a);
        both.extend_from_slice(&b);
        assert_eq!(
            multipart_etag(&[a, b]),
            format!("{}-2", hex::encode(Md5::digest(&both)))
        );
        assert!(looks_like_md5_etag(&multipart_etag(&[a, b])));
        assert!(looks_like_md5_etag("0cc175b9c0f1b6a831c399e269772661"));
        assert!(!looks_like_md5_etag("not-an-md5"));
        assert!(!looks_like_md5_etag("0cc175b9c0f1b6a831c399e269772661-"));
    }
}
