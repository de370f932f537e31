//! Watching a job from outside, beyond the control plane's callbacks: metrics pushed to a
//! Prometheus Pushgateway (`METRICS_PUSHGATEWAY_URL`) and healthchecks.io-style pings
//! (`HEALTHCHECK_URL`), each at the start and at the end of every job. Both are best effort: a
//! push or a ping that fails is logged and never changes the job's outcome, and neither carries
//! a secret (messages are redacted, labels are names).

use std::time::{Duration, SystemTime};

use crate::config::ObserveConfig;
use crate::error::ExitCode;

mod health;
mod metrics;

pub use health::{ping_url, Ping};
pub use metrics::{grouping_path, metrics_text, Sample};

/// Per attempt; a job waits at most about three of these per observer.
const TIMEOUT: Duration = Duration::from_secs(5);
const ATTEMPTS: u32 = 3;

/// What a job is, for the metrics' labels.
#[derive(Debug, Clone)]
pub struct Labels {
    pub engine: String,
    pub database: String,
    pub operation: String,
}

/// How a job ended.
#[derive(Debug, Clone)]
pub struct Finished {
    pub code: ExitCode,
    /// The message of the final callback (already redacted).
    pub message: String,
    pub duration: Duration,
    /// Stored and raw bytes of the backup made or read.
    pub bytes: Option<u64>,
    pub raw_bytes: Option<u64>,
    pub peak_rss: Option<u64>,
}

impl Finished {
    pub fn success(&self) -> bool {
        self.code == ExitCode::Success
    }
}

pub struct Observers {
    metrics: Option<metrics::Pushgateway>,
    health: Option<health::Healthcheck>,
}

impl Observers {
    pub fn new(cfg: &ObserveConfig, labels: Labels) -> Observers {
        let client = reqwest::Client::builder()
            .user_agent(concat!("backup-runner/", env!("CARGO_PKG_VERSION")))
            .timeout(TIMEOUT)
            .build()
            .unwrap_or_default();
        Observers {
            metrics: cfg
                .metrics
                .clone()
                .map(|m| metrics::Pushgateway::new(m, &labels, client.clone())),
            health: cfg
                .healthcheck
                .clone()
                .map(|h| health::Healthcheck::new(h, client)),
        }
    }

    /// The start marker: `job_running 1` and the start time; `/start`.
    pub async fn started(&self) {
        let now = unix_now();
        tokio::join!(
            async {
                if let Some(m) = &self.metrics {
                    m.push(&metrics::started(now)).await;
                }
            },
            async {
                if let Some(h) = &self.health {
                    h.ping(Ping::Start, "").await;
                }
            }
        );
    }

    /// The end: every metric of the run; the bare URL on success, `/fail` otherwise.
    pub async fn finished(&self, run: &Finished) {
        let now = unix_now();
        tokio::join!(
            async {
                if let Some(m) = &self.metrics {
                    m.push(&metrics::finished(run, now)).await;
                }
            },
            async {
                if let Some(h) = &self.health {
                    if run.success() {
                        h.ping(Ping::Success, &run.message).await;
                    } else {
                        let body = format!("exit code {}: {}", run.code as u8, run.message);
                        h.ping(Ping::Fail, &body).await;
                    }
                }
            }
        );
    }
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Sends one request up to [`ATTEMPTS`] times; returns why it was not delivered.
async fn send_with_retries(
    what: &str,
    build: impl Fn() -> reqwest::RequestBuilder,
) -> Result<(), String> {
    crate::http::send_with_retries(what, ATTEMPTS, build).await
}
