//! Callbacks to the control plane, compatible with Plan B: `POST CALLBACK_URL` with
//! `{job_id, status, message, timestamp}` and `Authorization: Bearer CALLBACK_SECRET`, and
//! `POST CALLBACK_URL/metadata` with `{job_id, metadata, timestamp}`. Retried with backoff on
//! network errors, 408, 429 and 5xx; a callback that cannot be delivered is logged and never
//! changes the job's outcome.
//!
//! Beyond Plan B, every callback carries a unique `event_id` (the same on each retry, so receivers
//! can deduplicate) and, with a `CALLBACK_SECRET`, an HMAC-SHA256 signature of
//! `"<timestamp>.<body>"` in `X-Backup-Runner-Signature: v1=<hex>`, the timestamp (Unix seconds)
//! in `X-Backup-Runner-Timestamp`.

use std::time::Duration;

use chrono::{SecondsFormat, Utc};
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use url::Url;

use crate::config::CallbackConfig;
use crate::secret::redact;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Running,
    Success,
    Failed,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Running => "running",
            Status::Success => "success",
            Status::Failed => "failed",
        }
    }
}

pub struct Notifier {
    config: Option<CallbackConfig>,
    client: reqwest::Client,
    job_id: String,
    operation: &'static str,
    engine: &'static str,
}

pub const EVENT_ID_HEADER: &str = "X-Backup-Runner-Event-Id";
pub const TIMESTAMP_HEADER: &str = "X-Backup-Runner-Timestamp";
pub const SIGNATURE_HEADER: &str = "X-Backup-Runner-Signature";

fn timestamp() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn event_id() -> String {
    format!("evt_{:032x}", rand::random::<u128>())
}

/// `v1=<hex HMAC-SHA256(secret, "<unix seconds>.<body>")>`.
pub fn signature(secret: &str, unix_seconds: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
    mac.update(unix_seconds.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// The status payload. Messages are redacted: secrets never leave in a callback.
pub fn status_payload(
    job_id: &str,
    status: Status,
    message: &str,
    operation: &str,
    engine: &str,
) -> Value {
    json!({
        "job_id": job_id,
        "status": status.as_str(),
        "message": redact(message),
        "timestamp": timestamp(),
        "event_id": event_id(),
        "operation": operation,
        "engine": engine,
    })
}

pub fn metadata_payload(job_id: &str, metadata: Value) -> Value {
    json!({
        "job_id": job_id,
        "metadata": metadata,
        "timestamp": timestamp(),
        "event_id": event_id(),
    })
}

/// `CALLBACK_URL/metadata`, keeping any query string on the base URL.
pub fn metadata_url(base: &Url) -> Url {
    let mut url = base.clone();
    let path = format!("{}/metadata", base.path().trim_end_matches('/'));
    url.set_path(&path);
    url
}

impl Notifier {
    pub fn new(
        config: Option<CallbackConfig>,
        job_id: &str,
        operation: &'static str,
        engine: &'static str,
    ) -> Notifier {
        let client = reqwest::Client::builder()
            .user_agent(concat!("backup-runner/", env!("CARGO_PKG_VERSION")))
            .timeout(
                config
                    .as_ref()
                    .map_or(Duration::from_secs(10), |c| c.timeout),
            )
            .build()
            .unwrap_or_default();
        Notifier {
            config,
            client,
            job_id: job_id.to_string(),
            operation,
            engine,
        }
    }

    pub async fn status(&self, status: Status, message: &str) {
        let Some(cfg) = &self.config else { return };
        let body = status_payload(&self.job_id, status, message, self.operation, self.engine);
        self.post(cfg, cfg.url.clone(), &body).await;
    }

    pub async fn metadata(&self, metadata: Value) {
        let Some(cfg) = &self.config else { return };
        let body = metadata_payload(&self.job_id, metadata);
        self.post(cfg, metadata_url(&cfg.url), &body).await;
    }

    async fn post(&self, cfg: &CallbackConfig, url: Url, body: &Value) {
        let bytes = serde_json::to_vec(body).expect("callback payload serializes");
        let event = body["event_id"].as_str().unwrap_or_default().to_string();
        let result = crate::http::send_with_retries("callback", cfg.max_attempts, || {
            let mut request = self
                .client
                .post(url.clone())
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .header(EVENT_ID_HEADER, &event)
                .body(bytes.clone());
            if let Some(secret) = &cfg.secret {
                // Signed at each attempt, so a retry's timestamp is fresh.
                let now = Utc::now().timestamp();
                request = request
                    .bearer_auth(secret.expose())
                    .header(TIMESTAMP_HEADER, now.to_string())
                    .header(SIGNATURE_HEADER, signature(secret.expose(), now, &bytes));
            }
            request
        })
        .await;
        if let Err(reason) = result {
            tracing::warn!(
                url = %redact(url.as_str()),
                "callback not delivered ({reason}); the job's outcome is unchanged"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_payload_is_plan_b_compatible_and_redacted() {
        crate::secret::Secret::new("cb-test-password-123");
        let v = status_payload(
            "job-9",
            Status::Failed,
            "pg_dump: password cb-test-password-123 rejected",
            "backup",
            "postgres",
        );
        assert_eq!(v["job_id"], "job-9");
        assert_eq!(v["status"], "failed");
        assert_eq!(v["message"], "pg_dump: password *** rejected");
        let ts = v["timestamp"].as_str().unwrap();
        assert!(ts.ends_with('Z') && ts.contains('T'), "{ts}");
        assert!(chrono::DateTime::parse_from_rfc3339(ts).is_ok());
    }

    #[test]
    fn signature_is_hmac_sha256_of_timestamp_and_body() {
        // The value a receiver computes, e.g. in Python:
        // hmac.new(b"s3cret", b"1700000000." + body, hashlib.sha256).hexdigest()
        assert_eq!(
            signature("s3cret", 1_700_000_000, br#"{"a":1}"#),
            "v1=1698a50bc74d1ff1db85c4e0a5297c2ad9fdba245d5737cdb789e4cc6e098940"
        );
        assert_ne!(signature("k", 12, b"x"), signature("k", 13, b"x"));
        assert_ne!(signature("k", 12, b"x"), signature("j", 12, b"x"));
        let a = status_payload("j", Status::Running, "m", "backup", "postgres");
        let b = status_payload("j", Status::Running, "m", "backup", "postgres");
        assert_ne!(a["event_id"], b["event_id"]);
    }

    #[test]
    fn metadata_payload_shape() {
        let v = metadata_payload("j", json!({"bytes": 5, "object_key": "k"}));
        assert_eq!(v["metadata"]["bytes"], 5);
        assert_eq!(v["metadata"]["object_key"], "k");
        assert_eq!(v["job_id"], "j");
    }

    #[test]
    fn metadata_url_appends_to_path_and_keeps_query() {
        let u = Url::parse("https://cp/api/jobs/7/callback?token=x").unwrap();
        assert_eq!(
            metadata_url(&u).as_str(),
            "https://cp/api/jobs/7/callback/metadata?token=x"
        );
        let u = Url::parse("http://cp/cb/").unwrap();
        assert_eq!(metadata_url(&u).as_str(), "http://cp/cb/metadata");
    }
}
