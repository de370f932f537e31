//! What watches a job from outside: `METRICS_PUSHGATEWAY_URL` (and `METRICS_JOB_NAME`) for a
//! Prometheus Pushgateway, `HEALTHCHECK_URL` for healthchecks.io-style pings. Both are optional
//! and neither can fail a job once it runs; a malformed URL is a configuration error, found
//! before anything connects.

use ::url::Url;

use crate::env::EnvReader;
use crate::secret::Secret;

/// The job name when `METRICS_JOB_NAME` is unset.
pub const DEFAULT_METRICS_JOB: &str = "backup-runner";

#[derive(Debug, Clone, Default)]
pub struct ObserveConfig {
    pub metrics: Option<MetricsConfig>,
    pub healthcheck: Option<HealthcheckConfig>,
}

#[derive(Debug, Clone)]
pub struct MetricsConfig {
    /// The Pushgateway's base URL, without credentials.
    pub url: Url,
    /// Basic auth from the URL's user info (the password is registered for redaction).
    pub username: Option<String>,
    pub password: Option<Secret>,
    /// The `job` label and the first part of the grouping key.
    pub job_name: String,
}

#[derive(Debug, Clone)]
pub struct HealthcheckConfig {
    /// The check's ping URL: `/start` and `/fail` are appended to its path.
    pub url: Url,
}

/// Reads the observers' settings; problems are recorded in `env`.
pub fn read_observe(env: &mut EnvReader<'_>) -> ObserveConfig {
    let job_name = env
        .string("METRICS_JOB_NAME")
        .filter(|j| !j.is_empty())
        .unwrap_or_else(|| DEFAULT_METRICS_JOB.into());
    let metrics = http_url(
        env,
        "METRICS_PUSHGATEWAY_URL",
        "http://pushgateway.monitoring:9091",
    )
    .map(|mut url| {
        let username = (!url.username().is_empty()).then(|| decoded(url.username()));
        let password = url.password().map(|p| Secret::new(decoded(p)));
        let _ = url.set_username("");
        let _ = url.set_password(None);
        MetricsConfig {
            url,
            username,
            password,
            job_name: job_name.clone(),
        }
    });
    let healthcheck = http_url(
        env,
        "HEALTHCHECK_URL",
        "https://hc-ping.com/<uuid> or https://hc-ping.com/<ping-key>/<slug>",
    )
    .map(|url| HealthcheckConfig { url });
    ObserveConfig {
        metrics,
        healthcheck,
    }
}

fn http_url(env: &mut EnvReader<'_>, name: &str, example: &str) -> Option<Url> {
    let raw = env.string(name).filter(|v| !v.trim().is_empty())?;
    match Url::parse(raw.trim()) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => {
            if let Some(password) = url.password() {
                crate::secret::register(&decoded(password));
                crate::secret::register(password);
            }
            Some(url)
        }
        _ => {
            // The value is not echoed: it may hold credentials.
            env.problem(
                name,
                format!("is not an http(s) URL: expected e.g. {example}"),
            );
            None
        }
    }
}

fn decoded(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(vars: &[(&str, &str)]) -> (ObserveConfig, Vec<String>) {
        let owned: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let lookup = move |n: &str| owned.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
        let mut env = EnvReader::new(lookup);
        let cfg = read_observe(&mut env);
        let problems = match env.finish() {
            Ok(()) => Vec::new(),
            Err(e) => e
                .problems
                .iter()
                .map(|p| format!("{}: {}", p.var, p.message))
                .collect(),
        };
        (cfg, problems)
    }

    #[test]
    fn nothing_set_observes_nothing() {
        let (cfg, problems) = read(&[]);
        assert!(cfg.metrics.is_none() && cfg.healthcheck.is_none());
        assert!(problems.is_empty());
    }

    #[test]
    fn pushgateway_credentials_move_out_of_the_url() {
        let (cfg, problems) = read(&[
            (
                "METRICS_PUSHGATEWAY_URL",
                "https://ops:pg%40ss-observe-77@push.example:9091/base",
            ),
            ("METRICS_JOB_NAME", "nightly"),
        ]);
        assert!(problems.is_empty(), "{problems:?}");
        let m = cfg.metrics.unwrap();
        assert_eq!(m.url.as_str(), "https://push.example:9091/base");
        assert_eq!(m.username.as_deref(), Some("ops"));
        assert_eq!(m.password.unwrap().expose(), "pg@ss-observe-77");
        assert_eq!(m.job_name, "nightly");
        assert_eq!(
            crate::secret::redact("pg@ss-observe-77 pg%40ss-observe-77"),
            "*** ***"
        );
    }

    #[test]
    fn bad_urls_are_named_without_their_value() {
        let (_, problems) = read(&[
            ("METRICS_PUSHGATEWAY_URL", "pushgateway:9091"),
            ("HEALTHCHECK_URL", "ftp://user:hc-secret-9@x/y"),
        ]);
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(
            problems[0].contains("METRICS_PUSHGATEWAY_URL"),
            "{problems:?}"
        );
        assert!(problems[1].contains("HEALTHCHECK_URL"), "{problems:?}");
        assert!(problems.iter().all(|p| !p.contains("hc-secret-9")));
    }

    #[test]
    fn healthcheck_url_is_kept_as_given() {
        let (cfg, problems) = read(&[("HEALTHCHECK_URL", "https://hc-ping.com/abc-123")]);
        assert!(problems.is_empty());
        assert_eq!(
            cfg.healthcheck.unwrap().url.as_str(),
            "https://hc-ping.com/abc-123"
        );
    }
}
