//! How one method is measured: every process under GNU time (wall, CPU, peak RSS, blocks
//! written), plus the CPU that the database server (PostgreSQL or MariaDB) and the S3 server
//! spent meanwhile, since on a small machine they share the cores with the method.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};

pub const BUCKET: &str = "bench";

/// One process's figures, from GNU time.
#[derive(Debug, Clone, Default)]
pub struct Usage {
    pub wall_s: f64,
    pub cpu_s: f64,
    pub max_rss_kib: u64,
    pub written_bytes: u64,
}

/// One method's run: its processes, the servers' CPU, the bytes it produced and its temp files.
#[derive(Debug, Clone, Default)]
pub struct Run {
    pub method: String,
    pub wall_s: f64,
    pub processes: Vec<(String, Usage)>,
    /// The database server's CPU seconds.
    pub db_cpu_s: f64,
    pub s3_cpu_s: f64,
    pub output_bytes: u64,
    pub temp_bytes: u64,
}

impl Run {
    pub fn cpu_s(&self) -> f64 {
        self.processes.iter().map(|(_, u)| u.cpu_s).sum()
    }

    /// The largest process: its name and peak RSS.
    pub fn peak(&self) -> Option<(&str, u64)> {
        self.processes
            .iter()
            .max_by_key(|(_, u)| u.max_rss_kib)
            .map(|(n, u)| (n.as_str(), u.max_rss_kib))
    }

    pub fn written(&self) -> u64 {
        self.processes.iter().map(|(_, u)| u.written_bytes).sum()
    }

    /// Several runs (steps of one method) as one.
    pub fn join(method: &str, steps: Vec<Run>, wall_s: f64) -> Run {
        let mut run = Run {
            method: method.to_string(),
            wall_s,
            ..Run::default()
        };
        for s in steps {
            run.processes.extend(s.processes);
            run.db_cpu_s += s.db_cpu_s;
            run.s3_cpu_s += s.s3_cpu_s;
        }
        run
    }
}

const TIME_FORMAT: &str = "%e %U %S %M %O";

fn parse_usage(path: &Path) -> Result<Usage> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let line = text
        .lines()
        .rev()
        .find(|l| l.split_whitespace().count() == 5)
        .with_context(|| format!("no GNU time line in {}: {text}", path.display()))?;
    let f: Vec<f64> = line
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0.0))
        .collect();
    Ok(Usage {
        wall_s: f[0],
        cpu_s: f[1] + f[2],
        max_rss_kib: f[3] as u64,
        written_bytes: f[4] as u64 * 512,
    })
}

/// CPU seconds (own plus reaped children) of the processes `select` picks from /proc, given
/// each one's pid, parent pid and process group.
fn cpu_of(select: impl Fn(u32, u32, u32) -> bool) -> f64 {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0.0;
    };
    let mut ticks = 0u64;
    for entry in dir.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // The command name may hold spaces: fields are counted after its closing parenthesis.
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let f: Vec<u64> = rest
            .split_whitespace()
            .skip(1)
            .map(|x| x.parse().unwrap_or(0))
            .collect();
        // After the state: ppid, pgrp, …; utime, stime, cutime, cstime are fields 14–17.
        if f.len() > 14 && select(pid, f[0] as u32, f[1] as u32) {
            ticks += f[10] + f[11] + f[12] + f[13];
        }
    }
    // USER_HZ is 100 on Linux.
    ticks as f64 / 100.0
}

pub struct Bench {
    pub work: tempfile::TempDir,
    pub env: Vec<(String, String)>,
    pub runner: PathBuf,
    pub s3_endpoint: String,
    /// The S3 server's process group.
    pub s3_group: u32,
    /// The database server: the PostgreSQL postmaster, whose backends are its children, or
    /// `mariadbd`, whose sessions are its threads.
    pub db_server: u32,
    runs: std::cell::Cell<u32>,
}

impl Bench {
    pub fn new(
        env: Vec<(String, String)>,
        runner: PathBuf,
        s3_endpoint: String,
        s3_group: u32,
        db_server: u32,
    ) -> Result<Bench> {
        Ok(Bench {
            work: tempfile::Builder::new()
                .prefix("bench-")
                .tempdir_in(crate::root().join("target"))?,
            env,
            runner,
            s3_endpoint,
            s3_group,
            db_server,
            runs: std::cell::Cell::new(0),
        })
    }

    fn server_cpu(&self) -> (f64, f64) {
        let server = self.db_server;
        let group = self.s3_group;
        (
            cpu_of(|pid, ppid, _| pid == server || ppid == server),
            cpu_of(|_, _, pgrp| pgrp == group),
        )
    }

    /// Runs `stages` as one shell pipeline, each stage a process under GNU time.
    pub fn pipeline(&self, method: &str, stages: &[(&str, String)]) -> Result<Run> {
        let mut script = String::from("set -o pipefail; ");
        let mut files = Vec::new();
        for (i, (name, cmd)) in stages.iter().enumerate() {
            self.runs.set(self.runs.get() + 1);
            let out = self.work.path().join(format!("{}.time", self.runs.get()));
            if i > 0 {
                script.push_str(" | ");
            }
            script.push_str(&format!(
                "/usr/bin/time -f '{TIME_FORMAT}' -o {} {cmd}",
                out.display()
            ));
            files.push((name.to_string(), out));
        }
        let (db0, s30) = self.server_cpu();
        let started = Instant::now();
        let status = Command::new("bash")
            .arg("-c")
            .arg(&script)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .current_dir(self.work.path())
            .status()
            .context("running bash")?;
        let wall_s = started.elapsed().as_secs_f64();
        let (db1, s31) = self.server_cpu();
        if !status.success() {
            bail!("{method} failed ({status}): {script}");
        }
        let processes = files
            .iter()
            .map(|(n, f)| Ok((n.clone(), parse_usage(f)?)))
            .collect::<Result<Vec<_>>>()?;
        Ok(Run {
            method: method.to_string(),
            wall_s,
            processes,
            db_cpu_s: (db1 - db0).max(0.0),
            s3_cpu_s: (s31 - s30).max(0.0),
            ..Run::default()
        })
    }

    pub fn aws(&self) -> String {
        format!(
            "aws --endpoint-url {} s3 --only-show-errors",
            self.s3_endpoint
        )
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.work.path().join(name)
    }

    pub fn file_size(&self, name: &str) -> u64 {
        std::fs::metadata(self.path(name))
            .map(|m| m.len())
            .unwrap_or(0)
    }

    fn aws_cli(&self, args: &str) -> Result<String> {
        let out = Command::new("bash")
            .arg("-c")
            .arg(format!("aws --endpoint-url {} {args}", self.s3_endpoint))
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .output()?;
        if !out.status.success() {
            bail!(
                "aws {args}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    pub fn object_size(&self, key: &str) -> Result<u64> {
        let size = self.aws_cli(&format!(
            "s3api head-object --bucket {BUCKET} --key {key} --query ContentLength"
        ))?;
        size.parse()
            .with_context(|| format!("size of {key}: {size:?}"))
    }

    /// Removes everything under `prefix`, so the S3 server's memory does not grow run by run.
    pub fn remove(&self, prefix: &str) -> Result<()> {
        self.aws_cli(&format!(
            "s3 rm --only-show-errors --recursive s3://{BUCKET}/{prefix}"
        ))
        .map(drop)
    }
}

/// The median of `v` (0 for none).
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n == 0 {
        0.0
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}
