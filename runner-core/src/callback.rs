//! Callbacks to the control plane, compatible with Plan B: `POST CALLBACK_URL` with
//! `{job_id, status, message, timestamp}` and `Authorization: Bearer CALLBACK_SECRET`, and
//! `POST CALLBACK_URL/metadata` with `{job_id, metadata, timestamp}`. Retried with backoff on
//! network errors, 408, 429 and 5xx; a callback that cannot be delivered is logged and never
//! changes the job's outcome.

use std::time::Duration;

use chrono::{SecondsFormat, Utc};
use serde_json::{json, Value};
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

fn timestamp() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true)
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
        "operation": operation,
        "engine": engine,
    })
}

pub fn metadata_payload(job_id: &str, metadata: Value) -> Value {
    json!({
        "job_id": job_id,
        "metadata": metadata,
        "timestamp": timestamp(),
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
        let mut delay = Duration::from_millis(500);
        for attempt in 1..=cfg.max_attempts {
            let mut request = self.client.post(url.clone()).json(body);
            if let Some(secret) = &cfg.secret {
                request = request.bearer_auth(secret.expose());
            }
            let outcome = match request.send().await {
                Ok(r) if r.status().is_success() => return,
                Ok(r) => {
                    let s = r.status();
                    let retry = s.is_server_error() || s.as_u16() == 408 || s.as_u16() == 429;
                    (format!("HTTP {s}"), retry)
                }
                Err(e) => (format!("{e}"), true),
            };
            let (reason, retry) = outcome;
            let reason = redact(&reason);
            if !retry || attempt == cfg.max_attempts {
                tracing::warn!(
                    url = %redact(url.as_str()),
                    attempt,
                    "callback not delivered ({reason}); the job's outcome is unchanged"
                );
                return;
            }
            tracing::info!(attempt, "callback failed ({reason}); retrying in {delay:?}");
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(8));
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
