//! S3-compatible storage through aws-sdk-s3: multipart uploads with a bounded number of parts
//! in flight, single-request uploads for objects smaller than one part.

use aws_config::BehaviorVersion;
use aws_sdk_s3::config::{
    Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use aws_sdk_s3::Client;
use bytes::Bytes;
use tokio::task::JoinSet;

use super::ObjectReader;
use crate::config::{ChecksumMode, S3Config};
use crate::error::Error;

pub(super) struct S3Backend {
    client: Client,
    bucket: String,
}

fn describe_sdk_error<E, R>(err: &SdkError<E, R>) -> String
where
    E: std::error::Error + ProvideErrorMetadata + 'static,
    R: std::fmt::Debug,
{
    if let SdkError::ServiceError(s) = err {
        if let (Some(code), msg) = (s.err().code(), s.err().message()) {
            return format!("{code}: {}", msg.unwrap_or("")).trim().to_string();
        }
    }
    DisplayErrorContext(err).to_string()
}

impl S3Backend {
    pub(super) async fn new(c: &S3Config) -> S3Backend {
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
        S3Backend {
            client: Client::from_conf(builder.build()),
            bucket: c.bucket.clone(),
        }
    }

    pub(super) fn describe(&self, key: &str) -> String {
        format!("s3://{}/{key}", self.bucket)
    }

    pub(super) async fn preflight(&self) -> Result<(), Error> {
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

    pub(super) async fn put(&self, key: &str, body: Bytes) -> Result<(), Error> {
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_length(body.len() as i64)
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|e| {
                Error::storage(
                    &format!("cannot write {}", self.describe(key)),
                    describe_sdk_error(&e),
                )
            })?;
        Ok(())
    }

    pub(super) async fn get(&self, key: &str) -> Result<Option<Bytes>, Error> {
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

    pub(super) async fn exists(&self, key: &str) -> Result<bool, Error> {
        match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found()) => Ok(false),
            Err(e) => Err(Error::storage(
                &format!("cannot check {}", self.describe(key)),
                describe_sdk_error(&e),
            )),
        }
    }

    pub(super) async fn delete(&self, key: &str) -> Result<(), Error> {
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

    pub(super) async fn open(&self, key: &str) -> Result<(ObjectReader, Option<u64>), Error> {
        let out = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
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
        let size = out.content_length().and_then(|n| u64::try_from(n).ok());
        Ok((Box::new(out.body.into_async_read()), size))
    }

    pub(super) fn upload(&self, key: &str, concurrency: usize) -> MultipartUpload {
        MultipartUpload {
            client: self.client.clone(),
            bucket: self.bucket.clone(),
            key: key.to_string(),
            upload_id: None,
            next_part: 1,
            max_in_flight: concurrency.max(1),
            in_flight: JoinSet::new(),
            done: Vec::new(),
        }
    }

    /// Proves the credentials may write at `key` without leaving anything behind: starts a
    /// multipart upload there and aborts it.
    pub(super) async fn probe_write(&self, key: &str) -> Result<(), Error> {
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
            Some(id) => self.abort(key, id).await,
            None => Err(Error::Storage("the store returned no upload id".into())),
        }
    }

    pub(super) async fn abort(&self, key: &str, upload_id: &str) -> Result<(), Error> {
        self.client
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .send()
            .await
            .map_err(|e| Error::storage("abort multipart upload", describe_sdk_error(&e)))?;
        Ok(())
    }
}

pub(super) struct MultipartUpload {
    client: Client,
    bucket: String,
    key: String,
    upload_id: Option<String>,
    next_part: i32,
    max_in_flight: usize,
    in_flight: JoinSet<Result<CompletedPart, Error>>,
    done: Vec<CompletedPart>,
}

impl MultipartUpload {
    /// Queues a part. Returns the upload id when this call created the multipart upload, so the
    /// caller can register it for abort.
    pub(super) async fn part(&mut self, data: Bytes) -> Result<Option<String>, Error> {
        let mut created = None;
        if self.upload_id.is_none() {
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
        self.next_part += 1;
        let request = self
            .client
            .upload_part()
            .bucket(&self.bucket)
            .key(&self.key)
            .upload_id(self.upload_id.clone().unwrap_or_default())
            .part_number(number)
            .content_length(data.len() as i64)
            .body(ByteStream::from(data));
        self.in_flight.spawn(async move {
            let out = request.send().await.map_err(|e| {
                Error::storage(
                    &format!("upload of part {number} failed"),
                    describe_sdk_error(&e),
                )
            })?;
            Ok(CompletedPart::builder()
                .set_e_tag(out.e_tag().map(str::to_string))
                .part_number(number)
                .build())
        });
        Ok(created)
    }

    /// Resolves with the first failed part upload; never while the parts in flight succeed.
    /// Cancel-safe, so it can race the dump stream.
    pub(super) async fn failure(&mut self) -> Error {
        while !self.in_flight.is_empty() {
            if let Err(e) = self.join_one().await {
                return e;
            }
        }
        std::future::pending().await
    }

    async fn join_one(&mut self) -> Result<(), Error> {
        if let Some(joined) = self.in_flight.join_next().await {
            let part = joined.map_err(|e| Error::Internal(format!("part upload task: {e}")))??;
            self.done.push(part);
        }
        Ok(())
    }

    /// Sends the last part and completes; an object smaller than one part is sent in a single
    /// request. Returns the upload id that is now finished, if any.
    pub(super) async fn complete(mut self, last: Bytes) -> Result<Option<String>, Error> {
        if self.upload_id.is_none() {
            let len = last.len() as i64;
            self.client
                .put_object()
                .bucket(&self.bucket)
                .key(&self.key)
                .content_type("application/octet-stream")
                .content_length(len)
                .body(ByteStream::from(last))
                .send()
                .await
                .map_err(|e| {
                    Error::storage(
                        &format!("cannot write s3://{}/{}", self.bucket, self.key),
                        describe_sdk_error(&e),
                    )
                })?;
            return Ok(None);
        }
        if !last.is_empty() {
            self.part(last).await?;
        }
        while !self.in_flight.is_empty() {
            self.join_one().await?;
        }
        self.done.sort_by_key(|p| p.part_number());
        let upload_id = self.upload_id.clone().unwrap_or_default();
        self.client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(&self.key)
            .upload_id(&upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(std::mem::take(&mut self.done)))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| {
                Error::storage(
                    &format!(
                        "cannot complete the upload of s3://{}/{}",
                        self.bucket, self.key
                    ),
                    describe_sdk_error(&e),
                )
            })?;
        Ok(Some(upload_id))
    }
}
