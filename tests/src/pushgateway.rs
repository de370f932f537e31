//! A real Prometheus Pushgateway (Debian's `prometheus-pushgateway`), run as a local process on a
//! free port, listening on every interface so job containers reach it through
//! [`crate::containers::HOST_ALIAS`]. Metrics are read back from its own `/metrics` page, the
//! way Prometheus scrapes it.

use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result};

use crate::util::{kill_group, start_http_server};

const BINARY: &str = "prometheus-pushgateway";

pub struct Pushgateway {
    child: Child,
    port: u16,
    _log_dir: tempfile::TempDir,
}

/// One series: its labels and value.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

impl Pushgateway {
    pub async fn start() -> Result<Pushgateway> {
        let log_dir = tempfile::Builder::new()
            .prefix("harness-pushgateway-")
            .tempdir()?;
        let log = log_dir.path().join("pushgateway.log");
        let (child, port) = start_http_server(
            "pushgateway",
            &log,
            "address already in use",
            Duration::from_secs(30),
            spawn,
        )
        .await?;
        Ok(Pushgateway {
            child,
            port,
            _log_dir: log_dir,
        })
    }

    /// The URL a job container pushes to.
    pub fn url_via(&self, host: &str) -> String {
        format!("http://{host}:{}", self.port)
    }

    /// Every series of `name` on the Pushgateway's `/metrics`, as a scrape sees it.
    pub async fn series(&self, name: &str) -> Result<Vec<Series>> {
        let text = reqwest::get(format!("http://127.0.0.1:{}/metrics", self.port))
            .await?
            .error_for_status()?
            .text()
            .await?;
        Ok(parse(&text, name))
    }

    /// The value of `name` in the group whose labels include `labels`, if pushed.
    pub async fn value(&self, name: &str, labels: &[(&str, &str)]) -> Result<Option<f64>> {
        let found: Vec<Series> = self
            .series(name)
            .await?
            .into_iter()
            .filter(|s| {
                labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .collect();
        anyhow::ensure!(
            found.len() <= 1,
            "{name}{labels:?} matches {} series: {found:?}",
            found.len()
        );
        Ok(found.first().map(|s| s.value))
    }
}

impl Drop for Pushgateway {
    fn drop(&mut self) {
        kill_group(&mut self.child);
    }
}

fn spawn(port: u16, log: &Path) -> Result<Child> {
    let out = std::fs::File::create(log)?;
    Command::new(BINARY)
        .arg(format!("--web.listen-address=0.0.0.0:{port}"))
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .process_group(0)
        .spawn()
        .with_context(|| format!("spawn {BINARY} (install it with: bash .ci/install-test-deps.sh)"))
}

/// The series of `name` in a text exposition (label values without escapes, as the runner's
/// are: names of engines, databases, operations and jobs).
pub fn parse(text: &str, name: &str) -> Vec<Series> {
    let mut out = Vec::new();
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let (labels, value) = match rest.strip_prefix('{') {
            Some(r) => match r.split_once("} ") {
                Some((l, v)) => (l, v),
                None => continue,
            },
            None => match rest.strip_prefix(' ') {
                Some(v) => ("", v),
                None => continue,
            },
        };
        let mut map = BTreeMap::new();
        for pair in labels.split("\",").filter(|p| !p.is_empty()) {
            if let Some((k, v)) = pair.split_once("=\"") {
                map.insert(k.to_string(), v.trim_end_matches('"').to_string());
            }
        }
        if let Ok(value) = value.trim().parse() {
            out.push(Series { labels: map, value });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_series_with_and_without_labels() {
        let text = "# HELP x y\n# TYPE x gauge\nx{a=\"1\",b=\"two\"} 3.5\nx 7\nxy{a=\"1\"} 9\n";
        let s = parse(text, "x");
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].labels["b"], "two");
        assert_eq!(s[0].value, 3.5);
        assert!(s[1].labels.is_empty());
    }
}
