//! Metrics pushed to a Prometheus Pushgateway, in the text exposition format (the `prometheus`
//! crate's encoder). The grouping key is `job` (`METRICS_JOB_NAME`), `engine`, `database` and
//! `operation`: each run replaces its group's series instead of adding new ones. Pushes are
//! `POST`s, which replace only the metrics they carry, so `last_success_timestamp_seconds` (and
//! the last good backup's sizes) survive a failed run for the "no successful backup in N hours"
//! alert.

use base64::Engine as _;
use prometheus::{Encoder, Gauge, Opts, Registry, TextEncoder};
use url::Url;

use super::{send_with_retries, Finished, Labels};
use crate::config::MetricsConfig;

/// One gauge's value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: &'static str,
    pub help: &'static str,
    pub value: f64,
}

fn sample(name: &'static str, help: &'static str, value: f64) -> Sample {
    Sample { name, help, value }
}

/// The start marker.
pub(super) fn started(now: f64) -> Vec<Sample> {
    vec![
        sample(
            "backup_runner_job_running",
            "1 while a job of this group runs (from its start marker), 0 once it ended.",
            1.0,
        ),
        sample(
            "backup_runner_last_start_timestamp_seconds",
            "When the last job of this group started (Unix time).",
            now,
        ),
    ]
}

/// The end of a run: what every run reports, and what only a success does.
pub(super) fn finished(run: &Finished, now: f64) -> Vec<Sample> {
    let mut samples = vec![
        sample(
            "backup_runner_job_running",
            "1 while a job of this group runs (from its start marker), 0 once it ended.",
            0.0,
        ),
        sample(
            "backup_runner_last_run_timestamp_seconds",
            "When the last job of this group ended, successful or not (Unix time).",
            now,
        ),
        sample(
            "backup_runner_last_exit_code",
            "The last job's exit code (0 success; the README lists the others).",
            f64::from(run.code as u8),
        ),
        sample(
            "backup_runner_last_duration_seconds",
            "How long the last job ran.",
            run.duration.as_secs_f64(),
        ),
    ];
    if let Some(rss) = run.peak_rss {
        samples.push(sample(
            "backup_runner_last_peak_rss_bytes",
            "The runner's peak resident memory in the last job (its child tools not included).",
            rss as f64,
        ));
    }
    if run.success() {
        samples.push(sample(
            "backup_runner_last_success_timestamp_seconds",
            "When the last successful job of this group ended (Unix time).",
            now,
        ));
        if let Some(bytes) = run.bytes {
            samples.push(sample(
                "backup_runner_last_bytes",
                "Bytes stored by (or read back in) the last successful job: compressed, encrypted.",
                bytes as f64,
            ));
        }
        if let Some(raw) = run.raw_bytes {
            samples.push(sample(
                "backup_runner_last_raw_bytes",
                "Bytes of the dump itself in the last successful job, before compression.",
                raw as f64,
            ));
        }
    }
    samples
}

/// The samples in the text exposition format.
pub fn metrics_text(samples: &[Sample]) -> String {
    let registry = Registry::new();
    for s in samples {
        let gauge = Gauge::with_opts(Opts::new(s.name, s.help)).expect("a valid metric name");
        gauge.set(s.value);
        registry
            .register(Box::new(gauge))
            .expect("each metric once");
    }
    let mut out = Vec::new();
    TextEncoder::new()
        .encode(&registry.gather(), &mut out)
        .expect("gauges encode");
    String::from_utf8(out).expect("the text format is UTF-8")
}

/// `metrics/job@base64/…/engine/…/database@base64/…/operation/…`: label values that may hold
/// any character are base64url-encoded, as the Pushgateway accepts them (`=` for empty).
pub fn grouping_path(job: &str, labels: &Labels) -> String {
    fn b64(value: &str) -> String {
        if value.is_empty() {
            "=".into()
        } else {
            base64::engine::general_purpose::URL_SAFE.encode(value)
        }
    }
    format!(
        "metrics/job@base64/{}/engine@base64/{}/database@base64/{}/operation@base64/{}",
        b64(job),
        b64(&labels.engine),
        b64(&labels.database),
        b64(&labels.operation)
    )
}

pub(super) struct Pushgateway {
    cfg: MetricsConfig,
    url: Url,
    client: reqwest::Client,
}

impl Pushgateway {
    pub(super) fn new(cfg: MetricsConfig, labels: &Labels, client: reqwest::Client) -> Self {
        let mut url = cfg.url.clone();
        let base = url.path().trim_end_matches('/').to_string();
        url.set_path(&format!("{base}/{}", grouping_path(&cfg.job_name, labels)));
        Pushgateway { cfg, url, client }
    }

    pub(super) async fn push(&self, samples: &[Sample]) {
        let body = metrics_text(samples);
        let result = send_with_retries("metrics push", || {
            let mut request = self
                .client
                .post(self.url.clone())
                .header(
                    reqwest::header::CONTENT_TYPE,
                    "text/plain; version=0.0.4; charset=utf-8",
                )
                .body(body.clone());
            if let Some(user) = &self.cfg.username {
                request = request.basic_auth(user, self.cfg.password.as_ref().map(|p| p.expose()));
            }
            request
        })
        .await;
        match result {
            Ok(()) => tracing::debug!("metrics pushed to {}", self.cfg.url),
            Err(reason) => tracing::warn!(
                "metrics not pushed to the Pushgateway at {} ({reason}); the job's outcome is unchanged",
                self.cfg.url
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::error::ExitCode;

    fn run(code: ExitCode) -> Finished {
        Finished {
            code,
            message: "m".into(),
            duration: Duration::from_millis(2500),
            bytes: Some(1000),
            raw_bytes: Some(4000),
            peak_rss: Some(45 << 20),
        }
    }

    fn names(samples: &[Sample]) -> Vec<&str> {
        samples.iter().map(|s| s.name).collect()
    }

    #[test]
    fn a_failure_leaves_the_last_success_alone() {
        let failed = finished(&run(ExitCode::Storage), 1e9);
        assert!(!names(&failed).contains(&"backup_runner_last_success_timestamp_seconds"));
        assert!(!names(&failed).contains(&"backup_runner_last_bytes"));
        let code = failed
            .iter()
            .find(|s| s.name == "backup_runner_last_exit_code")
            .unwrap();
        assert_eq!(code.value, 6.0);
        let ok = finished(&run(ExitCode::Success), 1e9);
        for name in [
            "backup_runner_last_success_timestamp_seconds",
            "backup_runner_last_bytes",
            "backup_runner_last_raw_bytes",
            "backup_runner_last_peak_rss_bytes",
            "backup_runner_last_duration_seconds",
            "backup_runner_job_running",
        ] {
            assert!(names(&ok).contains(&name), "{name}");
        }
    }

    #[test]
    fn text_format_has_help_type_and_values() {
        let text = metrics_text(&finished(&run(ExitCode::Success), 1_700_000_000.5));
        assert!(
            text.contains("# TYPE backup_runner_last_exit_code gauge\n"),
            "{text}"
        );
        assert!(
            text.contains("\nbackup_runner_last_exit_code 0\n"),
            "{text}"
        );
        assert!(
            text.contains("\nbackup_runner_last_duration_seconds 2.5\n"),
            "{text}"
        );
        assert!(
            text.contains("\nbackup_runner_last_raw_bytes 4000\n"),
            "{text}"
        );
        assert!(text.contains("\nbackup_runner_job_running 0\n"), "{text}");
    }

    #[test]
    fn grouping_key_encodes_any_database_name() {
        let labels = Labels {
            engine: "postgres".into(),
            database: "sales/eu ü".into(),
            operation: "backup".into(),
        };
        assert_eq!(
            grouping_path("nightly", &labels),
            "metrics/job@base64/bmlnaHRseQ==/engine@base64/cG9zdGdyZXM=/database@base64/c2FsZXMvZXUgw7w=/operation@base64/YmFja3Vw"
        );
        let empty = Labels {
            database: String::new(),
            ..labels
        };
        assert!(grouping_path("j", &empty).contains("/database@base64/=/"));
    }
}
