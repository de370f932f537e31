//! Pings in the healthchecks.io convention: `<url>/start` when a job starts, `<url>` when it
//! succeeds, `<url>/fail` when it fails, each with a run id (`rid`) so the service pairs a start
//! with its end and measures the run. The body of the end ping is the job's message (redacted,
//! and for a failure prefixed with the exit code), cut to a size every such service accepts.

use url::Url;

use super::send_with_retries;
use crate::config::HealthcheckConfig;
use crate::secret::redact;

/// The longest body sent: healthchecks.io keeps the first 100 kB, others less.
const MAX_BODY_CHARS: usize = 2000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ping {
    Start,
    Success,
    Fail,
}

/// The URL of one ping: the suffix appended to the check URL's path, its query kept, `rid` added.
pub fn ping_url(base: &Url, ping: Ping, rid: &str) -> Url {
    let mut url = base.clone();
    let suffix = match ping {
        Ping::Start => Some("start"),
        Ping::Success => None,
        Ping::Fail => Some("fail"),
    };
    if let Some(suffix) = suffix {
        let path = format!("{}/{suffix}", url.path().trim_end_matches('/'));
        url.set_path(&path);
    }
    url.query_pairs_mut().append_pair("rid", rid);
    url
}

pub(super) struct Healthcheck {
    url: Url,
    rid: String,
    client: reqwest::Client,
}

impl Healthcheck {
    pub(super) fn new(cfg: HealthcheckConfig, client: reqwest::Client) -> Self {
        Healthcheck {
            url: cfg.url,
            rid: uuid_v4(),
            client,
        }
    }

    pub(super) async fn ping(&self, ping: Ping, body: &str) {
        let url = ping_url(&self.url, ping, &self.rid);
        let body: String = redact(body).chars().take(MAX_BODY_CHARS).collect();
        let result = send_with_retries("health ping", || {
            self.client
                .post(url.clone())
                .header(reqwest::header::CONTENT_TYPE, "text/plain; charset=utf-8")
                .body(body.clone())
        })
        .await;
        // The check's URL is its credential (anyone holding it can ping): only the host is logged.
        let host = self.url.host_str().unwrap_or("?");
        match result {
            Ok(()) => tracing::debug!("health ping {ping:?} sent to {host}"),
            Err(reason) => tracing::warn!(
                "health ping {ping:?} to {host} not delivered ({reason}); the job's outcome is unchanged"
            ),
        }
    }
}

/// A random (version 4) UUID, the form healthchecks.io requires for `rid`.
fn uuid_v4() -> String {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ping_urls_follow_the_convention() {
        let base = Url::parse("https://hc-ping.com/5bf6-11").unwrap();
        assert_eq!(
            ping_url(&base, Ping::Start, "r1").as_str(),
            "https://hc-ping.com/5bf6-11/start?rid=r1"
        );
        assert_eq!(
            ping_url(&base, Ping::Success, "r1").as_str(),
            "https://hc-ping.com/5bf6-11?rid=r1"
        );
        assert_eq!(
            ping_url(&base, Ping::Fail, "r1").as_str(),
            "https://hc-ping.com/5bf6-11/fail?rid=r1"
        );
        // A slug URL with its query (auto-provisioning) and a trailing slash.
        let slug = Url::parse("https://hc.example/ping/key/db-backup/?create=1").unwrap();
        assert_eq!(
            ping_url(&slug, Ping::Fail, "r2").as_str(),
            "https://hc.example/ping/key/db-backup/fail?create=1&rid=r2"
        );
    }

    #[test]
    fn run_ids_are_v4_uuids() {
        let a = uuid_v4();
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "4");
        assert!(matches!(&a[19..20], "8" | "9" | "a" | "b"), "{a}");
        assert_ne!(a, uuid_v4());
    }
}
