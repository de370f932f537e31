//! `cargo xtask bench list [--backups 10000]`: the catalog operations (`list`, `check`,
//! `prune`) over many backups of one database, against what a runner without the catalog index
//! does (one GET per manifest).
//!
//! 1. Starts moto on this machine and writes N synthetic backups of the PostgreSQL database
//!    `app` straight through the S3 API, as the runner lays them out: `backups/postgres/app/
//!    <YYYYmmddTHHMMSSZ>-<job>.pgdump.zst` (1 KiB each) with a manifest built from
//!    runner-core's own `Manifest`, taken one per hour backward from now; plus what is not a
//!    backup: objects without a manifest (inside and outside the runner's folder) and an
//!    incomplete multipart upload.
//! 2. Runs the runner binary (`target/release/backup-runner-postgres`) once per operation, no
//!    database needed: `list` cold (no index: every manifest is read), `list` warm (the index
//!    answers), `check` warm, `prune` as a dry run and for real with a typical policy, and
//!    `list` after the prune.
//! 3. Counts each run's requests twice: from moto's access log (every request the server
//!    saw, by kind) and from the runner's own log line (`requests=`, `list_requests=`, …); with
//!    wall time, CPU, peak RSS (GNU time, see `measure`) and the S3 server's CPU.
//!
//! Results go to `benchmarks/catalog.{md,json}`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};
use chrono::{DateTime, SubsecRound, Utc};
use harness::{S3Api, S3Server};
use runner_core::config::{Algorithm, Compression};
use runner_core::keys::{backup_key, KeyParts};
use runner_core::manifest::{manifest_key, CompressionInfo, Manifest, MANIFEST_VERSION};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::measure::{Bench, Run, BUCKET};
use crate::root;

const DEFAULT_BACKUPS: usize = 10_000;
const PREFIX: &str = "backups";
const DATABASE: &str = "app";
const ENGINE: &str = "postgres";
/// The size of each synthetic backup object.
const OBJECT_BYTES: usize = 1024;
/// Concurrent writers during the setup.
const WRITERS: usize = 16;
/// Keys per ListObjectsV2 page (S3's maximum and default).
const LIST_PAGE: u64 = 1000;
const POLICY: &str = "KEEP_DAILY=7 KEEP_WEEKLY=4 KEEP_MONTHLY=12";
const CHECK_MAX_AGE: &str = "26h";

pub fn run(args: &[String]) -> Result<()> {
    let mut backups = DEFAULT_BACKUPS;
    let mut iter = args.iter();
    while let Some(a) = iter.next() {
        match a.as_str() {
            "--backups" => {
                backups = iter
                    .next()
                    .context("--backups needs a number, e.g. 10000")?
                    .replace(['_', ','], "")
                    .parse()
                    .context("--backups is a number of backups")?;
                ensure!(backups > 0, "--backups must be at least 1");
            }
            other => bail!("bench list: unknown argument {other:?} (--backups N)"),
        }
    }
    super::prepare("postgres", "backup-runner-postgres")?;
    let (_copy, runner) = super::runner_copy("backup-runner-postgres")?;
    tokio::runtime::Runtime::new()?.block_on(bench(runner, backups))
}

/// The 1-minute load average: the machine may be shared with other jobs.
pub(super) fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

/// Requests by kind, as the S3 server saw them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Requests {
    list: u64,
    get: u64,
    head: u64,
    put: u64,
    delete: u64,
    multipart: u64,
}

impl Requests {
    fn total(&self) -> u64 {
        self.list + self.get + self.head + self.put + self.delete + self.multipart
    }

    fn to_json(self) -> Value {
        json!({
            "list": self.list,
            "get": self.get,
            "head": self.head,
            "put": self.put,
            "delete": self.delete,
            "multipart": self.multipart,
            "total": self.total(),
        })
    }

    /// Counts the requests in moto's (werkzeug's) access log lines, e.g.
    /// `127.0.0.1 - - [03/Dec/2026 07:45:21] "GET /bench?list-type=2&prefix=x HTTP/1.1" 200 -`.
    fn from_access_log(text: &str) -> Requests {
        let mut r = Requests::default();
        for line in text.lines() {
            let Some(request) = line.split('"').nth(1) else {
                continue;
            };
            let mut words = request.split_whitespace();
            let (Some(method), Some(target), Some(proto)) =
                (words.next(), words.next(), words.next())
            else {
                continue;
            };
            if !proto.starts_with("HTTP/") {
                continue;
            }
            let (path, query) = target.split_once('?').unwrap_or((target, ""));
            let params: Vec<&str> = query
                .split('&')
                .map(|p| p.split_once('=').map_or(p, |(k, _)| k))
                .collect();
            let has = |name: &str| params.contains(&name);
            // "/bench" or "/bench/": the bucket itself; anything longer names an object.
            let bucket_level = path.trim_matches('/').split('/').count() <= 1;
            let counter = match method {
                "GET" if has("uploadId") => &mut r.multipart,
                "GET" if bucket_level || has("uploads") => &mut r.list,
                "GET" => &mut r.get,
                "HEAD" => &mut r.head,
                "PUT" if has("uploadId") => &mut r.multipart,
                "PUT" => &mut r.put,
                "POST" if has("delete") => &mut r.delete,
                "POST" => &mut r.multipart,
                "DELETE" if has("uploadId") => &mut r.multipart,
                "DELETE" => &mut r.delete,
                _ => continue,
            };
            *counter += 1;
        }
        r
    }
}

/// One runner process, measured.
struct Measured {
    operation: String,
    what: String,
    run: Run,
    /// What the S3 server saw.
    seen: Requests,
    /// The runner's own summary log line (`requests=`, `manifests_read=`, …), when it logs one.
    summary: Option<Value>,
    /// Lines of `list`'s stdout: (backups, not backups).
    listed: Option<(usize, usize)>,
    /// For a prune: (kept, deleted or to delete).
    pruned: Option<(usize, usize)>,
    /// What the runner wrote on stdout (`list`'s JSON lines) and on stderr (its log).
    stdout_bytes: u64,
    log_bytes: u64,
    /// The size of the index object after the run (0: none).
    index_bytes: usize,
}

impl Measured {
    fn runner_count(&self, field: &str) -> Option<u64> {
        self.summary.as_ref()?.get(field)?.as_u64()
    }

    fn result_text(&self) -> String {
        let mut parts = Vec::new();
        if let Some((b, n)) = self.listed {
            parts.push(format!(
                "{} backups, {n} not backups listed",
                thousands(b as u64)
            ));
        }
        if let Some((kept, deleted)) = self.pruned {
            parts.push(format!(
                "kept {kept}, {} {}",
                if self.operation.contains("dry run") {
                    "would delete"
                } else {
                    "deleted"
                },
                thousands(deleted as u64)
            ));
        }
        if let (Some(read), Some(cached)) = (
            self.runner_count("manifests_read"),
            self.runner_count("manifests_cached"),
        ) {
            parts.push(format!(
                "manifests read {}, from the index {}",
                thousands(read),
                thousands(cached)
            ));
        }
        if parts.is_empty() {
            parts.push(self.what.clone());
        }
        parts.join("; ")
    }

    fn to_json(&self) -> Value {
        json!({
            "operation": self.operation,
            "what": self.what,
            "wall_s": self.run.wall_s,
            "runner_cpu_s": self.run.cpu_s(),
            "s3_server_cpu_s": self.run.s3_cpu_s,
            "peak_rss_kib": self.run.peak().map(|(_, k)| k).unwrap_or(0),
            "requests_seen_by_s3_server": self.seen.to_json(),
            "runner_log_summary": self.summary,
            "listed": self.listed.map(|(b, n)| json!({"backups": b, "not_backups": n})),
            "pruned": self.pruned.map(|(k, d)| json!({"kept": k, "deleted": d})),
            "stdout_bytes": self.stdout_bytes,
            "log_bytes": self.log_bytes,
            "index_bytes_after": self.index_bytes,
        })
    }
}

/// The synthetic layout written into the bucket.
struct Setup {
    backups: usize,
    objects: usize,
    uploads: usize,
    seconds: f64,
    newest: DateTime<Utc>,
    oldest: DateTime<Utc>,
}

async fn bench(runner: PathBuf, n: usize) -> Result<()> {
    let load_start = load_average();
    let s3 = S3Server::start().await?;
    s3.create_bucket(BUCKET).await?;
    let mut env = super::storage_env(&s3);
    env.extend(
        [
            ("STORAGE_PREFIX", PREFIX),
            ("DB_NAME", DATABASE),
            ("LOG_FORMAT", "json"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string())),
    );
    // No database server: nothing of PostgreSQL is started, so no process matches.
    let bench = Bench::new(env, runner, s3.endpoint(), s3.pid(), u32::MAX)?;
    let machine = format!(
        "{}; moto {} on the same machine",
        super::hardware(),
        super::moto_version()
    );
    println!("bench: {machine}");

    println!("bench: writing {n} backups (and what is not a backup) into moto");
    let setup = write_backups(&s3, n).await?;
    println!(
        "bench: wrote {} objects and {} incomplete upload in {:.1} s",
        thousands(setup.objects as u64),
        setup.uploads,
        setup.seconds
    );
    let list_pages = (setup.objects as u64).div_ceil(LIST_PAGE);
    let naive = list_pages + n as u64;

    let runner = bench.runner.display().to_string();
    let mut ops: Vec<Measured> = Vec::new();
    let steps: [(&str, &str, &str, String); 6] = [
        (
            "list, cold (no index)",
            "list-cold",
            "the baseline: every manifest is read, then the index is written",
            "OPERATION_TYPE=list".into(),
        ),
        (
            "list, warm",
            "list-warm",
            "the index answers",
            "OPERATION_TYPE=list".into(),
        ),
        (
            "check, warm",
            "check-warm",
            "CHECK_MAX_AGE=26h: the newest backup is fresh",
            format!("OPERATION_TYPE=check CHECK_MAX_AGE={CHECK_MAX_AGE}"),
        ),
        (
            "prune, dry run, warm",
            "prune-dry-run",
            POLICY,
            format!("OPERATION_TYPE=prune PRUNE_DRY_RUN=true {POLICY}"),
        ),
        (
            "prune",
            "prune",
            POLICY,
            format!("OPERATION_TYPE=prune {POLICY}"),
        ),
        (
            "list after the prune",
            "list-after-prune",
            "the index drops what the prune deleted",
            "OPERATION_TYPE=list".into(),
        ),
    ];
    for (operation, file, what, vars) in steps {
        println!("bench: {operation}");
        let mut m = measure(&bench, &s3, operation, file, what, &vars, &runner)?;
        m.index_bytes = index_size(&s3).await;
        println!(
            "bench:   {:.2} s, {} requests seen by moto ({}), peak RSS {:.1} MiB; {}",
            m.run.wall_s,
            thousands(m.seen.total()),
            kinds(&m.seen),
            m.run.peak().map_or(0, |(_, k)| k) as f64 / 1024.0,
            m.result_text()
        );
        ops.push(m);
    }
    check_results(&ops, n)?;

    let machine = format!(
        "{machine}; load average {load_start} at the start, {} at the end",
        load_average()
    );
    let table = table(&ops, list_pages, naive);
    println!("\n{table}");
    write(&machine, &setup, &ops, list_pages, naive, &table)
}

/// The size of the catalog index object, 0 when there is none.
async fn index_size(s3: &S3Server) -> usize {
    s3.get(BUCKET, &format!("{PREFIX}/.backup-runner/catalog.json"))
        .await
        .map_or(0, |b| b.len())
}

/// The key the runner derives for a backup of `app` taken at `at` by job `job`.
fn key_at(at: DateTime<Utc>, job: &str) -> String {
    backup_key(
        None,
        Some(PREFIX),
        KeyParts {
            engine: ENGINE,
            database: DATABASE,
            job_id: job,
            extension: "pgdump",
        },
        Compression {
            algorithm: Algorithm::Zstd,
            level: 3,
            threads: 2,
        },
        at,
    )
}

/// A backup object (1 KiB of bytes that do not repeat between backups) and its manifest.
fn backup(i: usize, now: DateTime<Utc>) -> (String, Vec<u8>, Vec<u8>) {
    let started_at = now - chrono::Duration::hours(i as i64);
    let finished_at = started_at + chrono::Duration::seconds(20);
    let job_id = format!("nightly-{i:05}");
    let key = key_at(started_at, &job_id);
    let mut state = (i as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let body: Vec<u8> = (0..OBJECT_BYTES)
        .map(|_| {
            // xorshift64*
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            (state.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 56) as u8
        })
        .collect();
    let manifest = Manifest {
        manifest_version: MANIFEST_VERSION,
        job_id,
        engine: ENGINE.into(),
        engine_version: Some("15".into()),
        server_version: "15.18".into(),
        client_version: "15.18".into(),
        runner_version: env!("CARGO_PKG_VERSION").into(),
        database: DATABASE.into(),
        format: "pg_dump-custom".into(),
        compression: CompressionInfo {
            algorithm: Algorithm::Zstd,
            level: 3,
        },
        object_key: key.clone(),
        bytes: body.len() as u64,
        raw_bytes: 4 * body.len() as u64,
        sha256: hex::encode(Sha256::digest(&body)),
        part_size: 8 << 20,
        parts: 1,
        started_at,
        finished_at,
        duration_ms: 20_000,
        retention_days: None,
        expires_at: None,
        warnings: vec![],
        engine_details: Default::default(),
        encryption: None,
        set: None,
    };
    (key, body, manifest.to_json())
}

async fn write_backups(s3: &S3Server, n: usize) -> Result<Setup> {
    let started = Instant::now();
    let now = Utc::now().trunc_subsecs(0);
    let api = Arc::new(S3Api::new(&s3.endpoint()));
    let mut writers = tokio::task::JoinSet::new();
    for w in 0..WRITERS {
        let api = Arc::clone(&api);
        writers.spawn(async move {
            for i in (w..n).step_by(WRITERS) {
                let (key, body, manifest) = backup(i, now);
                api.put(BUCKET, &key, body).await?;
                api.put(BUCKET, &manifest_key(&key), manifest).await?;
            }
            anyhow::Ok(())
        });
    }
    while let Some(done) = writers.join_next().await {
        done??;
    }
    // What is not a backup: a backup that failed before its manifest, a stray file in the
    // runner's folder, a file outside it, and a backup still uploading.
    let interrupted = key_at(now - chrono::Duration::minutes(30), "interrupted");
    let strays = [
        interrupted.as_str(),
        "backups/postgres/app/README.txt",
        "backups/exports/app-2026-11.csv",
    ];
    for key in strays {
        s3.put(BUCKET, key, vec![b'x'; 100]).await?;
    }
    let running = key_at(now - chrono::Duration::minutes(5), "running");
    s3.client()
        .create_multipart_upload()
        .bucket(BUCKET)
        .key(&running)
        .send()
        .await
        .map_err(|e| anyhow!("starting a multipart upload at {running}: {e}"))?;
    Ok(Setup {
        backups: n,
        objects: 2 * n + strays.len(),
        uploads: 1,
        seconds: started.elapsed().as_secs_f64(),
        newest: now,
        oldest: now - chrono::Duration::hours(n as i64 - 1),
    })
}

/// Runs the runner once with `vars`, its stdout into `<file>.out` and its log into `<file>.log`.
fn measure(
    bench: &Bench,
    s3: &S3Server,
    operation: &str,
    file: &str,
    what: &str,
    vars: &str,
    runner: &str,
) -> Result<Measured> {
    let access_log = s3.log_path();
    let before = std::fs::metadata(&access_log)?.len();
    let run = bench
        .pipeline(
            operation,
            &[(
                "backup-runner",
                format!("env JOB_ID=bench-{file} {vars} {runner} > {file}.out 2> {file}.log"),
            )],
        )
        .map_err(|e| {
            let log =
                std::fs::read_to_string(bench.path(&format!("{file}.log"))).unwrap_or_default();
            let tail: String = log
                .lines()
                .rev()
                .take(10)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("\n");
            e.context(format!("the runner's log ends with:\n{tail}"))
        })?;
    // The server logs a request as it answers it; give its last lines a moment to land.
    std::thread::sleep(Duration::from_millis(300));
    let seen = Requests::from_access_log(&read_from(&access_log, before)?);
    let log = std::fs::read_to_string(bench.path(&format!("{file}.log")))?;
    let stdout_bytes = bench.file_size(&format!("{file}.out"));
    let events: Vec<Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let summary = events
        .iter()
        .rev()
        .find(|e| e.get("list_requests").is_some())
        .cloned();
    let message = |e: &Value| {
        e.get("message")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let mut listed = None;
    let mut pruned = None;
    if vars.contains("OPERATION_TYPE=list") {
        let out = std::fs::read_to_string(bench.path(&format!("{file}.out")))?;
        let lines: Vec<Value> = out
            .lines()
            .map(serde_json::from_str)
            .collect::<Result<_, _>>()
            .context("list's stdout is not JSON lines")?;
        let not = lines
            .iter()
            .filter(|l| l.get("kind").and_then(Value::as_str) == Some("not_a_backup"))
            .count();
        listed = Some((lines.len() - not, not));
    }
    if vars.contains("OPERATION_TYPE=prune") {
        let kept = events
            .iter()
            .filter(|e| message(e).starts_with("keep: "))
            .count();
        let deleted = events
            .iter()
            .filter(|e| message(e).starts_with("delete: "))
            .count();
        pruned = Some((kept, deleted));
    }
    Ok(Measured {
        operation: operation.to_string(),
        what: what.to_string(),
        run,
        seen,
        summary,
        listed,
        pruned,
        stdout_bytes,
        log_bytes: log.len() as u64,
        index_bytes: 0,
    })
}

/// The text appended to `path` after its first `from` bytes.
fn read_from(path: &Path, from: u64) -> Result<String> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let from = (from as usize).min(bytes.len());
    Ok(String::from_utf8_lossy(&bytes[from..]).into_owned())
}

/// That the runs did what they should, so the figures are about working operations.
fn check_results(ops: &[Measured], n: usize) -> Result<()> {
    let by = |name: &str| {
        ops.iter()
            .find(|m| m.operation == name)
            .ok_or_else(|| anyhow!("no {name} run"))
    };
    let cold = by("list, cold (no index)")?;
    ensure!(
        cold.listed.map(|l| l.0) == Some(n),
        "the cold list found {:?} backups, not {n}",
        cold.listed
    );
    ensure!(
        cold.runner_count("manifests_read") == Some(n as u64),
        "the cold list read {:?} manifests, not {n}",
        cold.runner_count("manifests_read")
    );
    let warm = by("list, warm")?;
    ensure!(
        warm.runner_count("manifests_cached") == Some(n as u64),
        "the warm list took {:?} manifests from the index, not {n}",
        warm.runner_count("manifests_cached")
    );
    let dry = by("prune, dry run, warm")?;
    let real = by("prune")?;
    ensure!(
        dry.pruned == real.pruned,
        "the dry run planned {:?}, the prune did {:?}",
        dry.pruned,
        real.pruned
    );
    ensure!(
        dry.seen.delete == 0,
        "the dry run deleted {} objects",
        dry.seen.delete
    );
    let after = by("list after the prune")?;
    let kept = real.pruned.map(|p| p.0);
    ensure!(
        after.listed.map(|l| l.0) == kept,
        "after the prune {:?} backups are listed, the prune kept {kept:?}",
        after.listed
    );
    Ok(())
}

fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn kinds(r: &Requests) -> String {
    let mut parts = vec![
        format!("{} LIST", r.list),
        format!("{} GET", thousands(r.get)),
    ];
    for (n, what) in [
        (r.head, "HEAD"),
        (r.put, "PUT"),
        (r.delete, "DELETE"),
        (r.multipart, "multipart"),
    ] {
        if n > 0 {
            parts.push(format!("{} {what}", thousands(n)));
        }
    }
    parts.join(", ")
}

fn table(ops: &[Measured], list_pages: u64, naive: u64) -> String {
    let mut t = String::from(
        "| Operation | Wall s | LIST | GET | PUT | DELETE | Other | Total requests | Runner's own count | Peak RSS MiB | Runner CPU s | S3 server CPU s | Result |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for m in ops {
        let s = &m.seen;
        t.push_str(&format!(
            "| {} | {:.2} | {} | {} | {} | {} | {} | **{}** | {} | {:.1} | {:.2} | {:.2} | {} |\n",
            m.operation,
            m.run.wall_s,
            s.list,
            thousands(s.get),
            thousands(s.put),
            thousands(s.delete),
            s.head + s.multipart,
            thousands(s.total()),
            m.runner_count("requests")
                .map_or_else(|| "not logged".to_string(), thousands),
            m.run.peak().map_or(0, |(_, k)| k) as f64 / 1024.0,
            m.run.cpu_s(),
            m.run.s3_cpu_s,
            m.result_text()
        ));
    }
    t.push_str(&format!(
        "| naive listing (1 LIST page per 1,000 keys + 1 GET per manifest) | | {list_pages} | {} | | | | **{}** | | | | | computed, not run |\n",
        thousands(naive - list_pages),
        thousands(naive)
    ));
    t
}

fn write(
    machine: &str,
    setup: &Setup,
    ops: &[Measured],
    list_pages: u64,
    naive: u64,
    table: &str,
) -> Result<()> {
    let dir = root().join("benchmarks");
    std::fs::create_dir_all(&dir)?;
    let (cold, warm) = (&ops[0], &ops[1]);
    let prune = ops.iter().find(|m| m.operation == "prune").unwrap_or(cold);
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
    let per_request_ms =
        |m: &Measured, requests: u64| 1000.0 * m.run.wall_s / requests.max(1) as f64;
    let mut notes = vec![
        format!(
            "warm list / cold list: {} / {} requests ({:.4}×), {:.2} s / {:.2} s ({:.2}×); the \
             cold list against the naive listing: {} / {} requests",
            thousands(warm.seen.total()),
            thousands(cold.seen.total()),
            ratio(warm.seen.total() as f64, cold.seen.total() as f64),
            warm.run.wall_s,
            cold.run.wall_s,
            ratio(warm.run.wall_s, cold.run.wall_s),
            thousands(cold.seen.total()),
            thousands(naive)
        ),
        format!(
            "the index object: {} bytes after the cold list ({:.0} bytes per backup), {} bytes \
             after the last run",
            thousands(cold.index_bytes as u64),
            cold.index_bytes as f64 / setup.backups as f64,
            thousands(ops.last().map_or(0, |m| m.index_bytes) as u64)
        ),
        format!(
            "`list` wrote {} bytes of JSON lines on stdout for {} backups; its `/metadata` \
             callback carries the same list",
            thousands(warm.stdout_bytes),
            thousands(setup.backups as u64)
        ),
        format!(
            "the prune: {} DELETE requests in {:.1} s ({:.2} ms of wall time per request; one \
             key per request, 16 in flight, every manifest before any object); {} bytes of \
             log",
            thousands(prune.seen.delete),
            prune.run.wall_s,
            per_request_ms(prune, prune.seen.delete),
            thousands(prune.log_bytes)
        ),
        if prune.seen.multipart > 0 {
            "moto reports every multipart upload as initiated on 2010-11-10, so the prune \
             aborts the incomplete upload (5 minutes old) as older than the grace period (the \
             \"Other\" request of the prune beside the HEAD); a real store reports the real \
             time and the upload would be left alone"
                .to_string()
        } else {
            String::new()
        },
    ];
    notes.retain(|n| !n.is_empty());
    let md = format!(
        "# Listing and pruning {n} backups\n\n\
         Written by `cargo xtask bench list --backups {n_raw}`. Machine: {machine}. \
         Run on {date}.\n\n\
         Setup: {n} backups of one PostgreSQL database (`app`), one per hour from {newest} back \
         to {oldest}, each a {OBJECT_BYTES}-byte object under `{PREFIX}/postgres/app/` with its \
         manifest; plus 3 objects without a manifest (2 in the runner's folder, 1 outside it) \
         and 1 incomplete multipart upload: {objects} objects, {pages} LIST pages. Written \
         through the S3 API with {WRITERS} concurrent writers in {setup_s:.1} s.\n\n\
         Each operation is one runner process against moto (no database), in this order. \
         Requests are counted by the S3 server (moto's access log); \"Other\" is the bucket \
         check (HEAD) every run starts with, plus multipart requests; \"Runner's own count\" \
         is the `requests=` field of the runner's summary log line. Peak \
         RSS and CPU of the runner process from GNU time; the S3 server's CPU from /proc. \
         Policy of the prunes: `{POLICY}`.\n\n\
         {table}\n{notes}\n",
        n = thousands(setup.backups as u64),
        n_raw = setup.backups,
        date = Utc::now().format("%Y-%m-%d"),
        newest = setup.newest.format("%Y-%m-%dT%H:%M:%SZ"),
        oldest = setup.oldest.format("%Y-%m-%dT%H:%M:%SZ"),
        objects = thousands(setup.objects as u64),
        pages = list_pages,
        setup_s = setup.seconds,
        notes = notes.iter().map(|n| format!("- {n}\n")).collect::<String>(),
    );
    std::fs::write(dir.join("catalog.md"), md)?;
    let doc = json!({
        "machine": machine,
        "date": Utc::now().to_rfc3339(),
        "setup": {
            "backups": setup.backups,
            "objects": setup.objects,
            "incomplete_uploads": setup.uploads,
            "object_bytes": OBJECT_BYTES,
            "newest_taken_at": setup.newest,
            "oldest_taken_at": setup.oldest,
            "writers": WRITERS,
            "seconds": setup.seconds,
        },
        "policy": POLICY,
        "naive": { "list": list_pages, "get": naive - list_pages, "total": naive },
        "operations": ops.iter().map(Measured::to_json).collect::<Vec<_>>(),
    });
    std::fs::write(
        dir.join("catalog.json"),
        serde_json::to_string_pretty(&doc)? + "\n",
    )?;
    println!("bench: wrote benchmarks/catalog.md and benchmarks/catalog.json");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_log_lines_are_counted_by_kind() {
        let log = r#"WARNING: This is a development server.
127.0.0.1 - - [03/Dec/2026 07:45:21] "HEAD /bench HTTP/1.1" 200 -
127.0.0.1 - - [03/Dec/2026 07:45:21] "GET /bench?list-type=2&prefix=backups%2F HTTP/1.1" 200 -
127.0.0.1 - - [03/Dec/2026 07:45:21] "GET /bench?uploads&prefix=backups%2F HTTP/1.1" 200 -
127.0.0.1 - - [03/Dec/2026 07:45:21] "GET /bench/backups/.backup-runner/catalog.json HTTP/1.1" 404 -
127.0.0.1 - - [03/Dec/2026 07:45:21] "GET /bench/backups/a.zst.manifest.json?x-id=GetObject HTTP/1.1" 200 -
127.0.0.1 - - [03/Dec/2026 07:45:21] "PUT /bench/backups/.backup-runner/catalog.json?x-id=PutObject HTTP/1.1" 200 -
127.0.0.1 - - [03/Dec/2026 07:45:21] "DELETE /bench/backups/a.zst?x-id=DeleteObject HTTP/1.1" 204 -
127.0.0.1 - - [03/Dec/2026 07:45:21] "POST /bench?delete HTTP/1.1" 200 -
127.0.0.1 - - [03/Dec/2026 07:45:21] "POST /bench/k?uploads HTTP/1.1" 200 -
127.0.0.1 - - [03/Dec/2026 07:45:21] "PUT /bench/k?partNumber=1&uploadId=u HTTP/1.1" 200 -
127.0.0.1 - - [03/Dec/2026 07:45:21] "DELETE /bench/k?uploadId=u HTTP/1.1" 204 -
"#;
        assert_eq!(
            Requests::from_access_log(log),
            Requests {
                list: 2,
                get: 2,
                head: 1,
                put: 1,
                delete: 2,
                multipart: 3,
            }
        );
    }

    #[test]
    fn synthetic_backups_have_the_runners_keys_and_valid_manifests() {
        let now = DateTime::parse_from_rfc3339("2026-12-03T07:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let (key, body, manifest) = backup(25, now);
        assert_eq!(
            key,
            "backups/postgres/app/20261202T060000Z-nightly-00025.pgdump.zst"
        );
        assert_eq!(body.len(), OBJECT_BYTES);
        let m = Manifest::from_json(&manifest).unwrap();
        assert_eq!(m.object_key, key);
        assert_eq!(m.bytes, OBJECT_BYTES as u64);
        assert_eq!(m.started_at, now - chrono::Duration::hours(25));
        assert_ne!(backup(26, now).1, body);
    }

    #[test]
    fn thousands_are_separated() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(10_021), "10,021");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }
}
