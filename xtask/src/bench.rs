//! `cargo xtask bench [postgres] [--sizes 100,1024]`: the runner against what users run today,
//! on the same data in the same run. For each database size (MiB):
//!
//! 1. the limit: `pg_dump` alone into /dev/null, uncompressed and with its default compression;
//! 2. the runner: backup into the S3 server with default settings, and restore;
//! 3. the script users write: `pg_dump | gzip | aws s3 cp - s3://…`;
//! 4. the Plan B way: `pg_dump` into a temp file, `gzip` it into a second file, upload that;
//! 5. the S3 server's own ceiling: `aws s3 cp` of a file of the runner's output size;
//! 6. restore: the runner against `pg_restore` from a local file;
//! 7. the runner's knobs one at a time (compression level and threads, part size, parts in
//!    flight), for the trade-offs.
//!
//! Every process runs under GNU time, which gives its wall time, CPU time, peak RSS and blocks
//! written. PostgreSQL and moto run on this machine, as the tests' fixtures do. Results go to
//! `benchmarks/postgres.json` and `benchmarks/postgres.md`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use harness::{PgServer, S3Server};

use crate::root;

const BUCKET: &str = "bench";
const DEFAULT_SIZES: &[u64] = &[100, 1024];

/// Runner settings measured beside the defaults (zstd 3, its default threads, 8 MiB parts, 3 in
/// flight).
const TUNING: &[(&str, &str)] = &[
    ("zstd 1", "COMPRESSION_LEVEL=1"),
    ("zstd 6", "COMPRESSION_LEVEL=6"),
    ("zstd 3, 1 thread", "COMPRESSION_THREADS=1"),
    ("gzip 6", "COMPRESSION=gzip"),
    ("no compression", "COMPRESSION=none"),
    (
        "16 MiB parts, 2 in flight",
        "STORAGE_PART_SIZE_MB=16 STORAGE_UPLOAD_CONCURRENCY=2",
    ),
    ("8 MiB parts, 1 in flight", "STORAGE_UPLOAD_CONCURRENCY=1"),
];

/// One process's figures, from GNU time.
#[derive(Debug, Clone, Default)]
struct Usage {
    wall_s: f64,
    cpu_s: f64,
    max_rss_kib: u64,
    written_bytes: u64,
}

/// One method's run: its processes, the bytes it produced and its temp files.
#[derive(Debug, Clone, Default)]
struct Run {
    method: String,
    wall_s: f64,
    processes: Vec<(String, Usage)>,
    output_bytes: u64,
    temp_bytes: u64,
}

impl Run {
    fn cpu_s(&self) -> f64 {
        self.processes.iter().map(|(_, u)| u.cpu_s).sum()
    }

    fn peak_rss_kib(&self) -> u64 {
        self.processes
            .iter()
            .map(|(_, u)| u.max_rss_kib)
            .max()
            .unwrap_or(0)
    }

    fn written(&self) -> u64 {
        self.processes.iter().map(|(_, u)| u.written_bytes).sum()
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

struct Bench {
    work: tempfile::TempDir,
    runs: std::cell::Cell<u32>,
    env: Vec<(String, String)>,
    runner: PathBuf,
    s3_endpoint: String,
}

impl Bench {
    /// Runs `stages` (one shell pipeline: each stage a process under GNU time).
    fn pipeline(&self, method: &str, stages: &[(&str, String)]) -> Result<Run> {
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
        let started = Instant::now();
        let status = Command::new("bash")
            .arg("-c")
            .arg(&script)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .current_dir(self.work.path())
            .status()
            .context("running bash")?;
        let wall_s = started.elapsed().as_secs_f64();
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
            ..Run::default()
        })
    }

    fn aws(&self) -> String {
        format!(
            "aws --endpoint-url {} s3 --only-show-errors",
            self.s3_endpoint
        )
    }

    fn file_size(&self, name: &str) -> u64 {
        std::fs::metadata(self.work.path().join(name))
            .map(|m| m.len())
            .unwrap_or(0)
    }

    fn object_size(&self, key: &str) -> Result<u64> {
        let out = Command::new("bash")
            .arg("-c")
            .arg(format!(
                "aws --endpoint-url {} s3api head-object --bucket {BUCKET} --key {key} --query ContentLength",
                self.s3_endpoint
            ))
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .output()?;
        Ok(String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or(0))
    }
}

async fn seed(pg: &PgServer, db: &str, mib: u64) -> Result<u64> {
    pg.psql(
        "postgres",
        &format!("DROP DATABASE IF EXISTS {db}; CREATE DATABASE {db};"),
    )
    .await?;
    // A pgbench-like accounts table (narrow rows, an index) plus wide rows of hex text (which
    // compresses about 2:1) and random bytea (which does not).
    let accounts = mib * 2_000;
    let wide = mib * 300;
    pg.psql(
        db,
        &format!(
            "CREATE TABLE accounts (aid int PRIMARY KEY, bid int, abalance int, filler char(84));
             INSERT INTO accounts SELECT g, g % 100, 0, '' FROM generate_series(1, {accounts}) g;
             CREATE TABLE documents (id bigint PRIMARY KEY, title text, body text, blob bytea);
             INSERT INTO documents SELECT g, 'document ' || g,
                 (SELECT string_agg(md5((g * 40 + i)::text), ' ') FROM generate_series(1, 40) i),
                 (SELECT decode(string_agg(md5(random()::text), ''), 'hex')
                    FROM generate_series(1, 16 + g % 2) i)
               FROM generate_series(1, {wide}) g;
             VACUUM ANALYZE;"
        ),
    )
    .await?;
    let size = pg
        .psql(db, "SELECT pg_database_size(current_database());")
        .await?;
    Ok(size.trim().parse().unwrap_or(0))
}

pub fn run(args: &[String]) -> Result<()> {
    let mut sizes = DEFAULT_SIZES.to_vec();
    let mut iter = args.iter();
    while let Some(a) = iter.next() {
        match a.as_str() {
            "postgres" => {}
            "--sizes" => {
                let list = iter.next().context("--sizes needs a list, e.g. 100,1024")?;
                sizes = list
                    .split(',')
                    .map(|s| s.trim().parse().context("sizes are MiB"))
                    .collect::<Result<_>>()?;
            }
            other => bail!("bench: unknown argument {other:?} (engines: postgres)"),
        }
    }
    crate::install_deps()?;
    let status = Command::new("bash")
        .arg(root().join(".ci/install-bench-deps.sh"))
        .status()?;
    if !status.success() {
        bail!("installing the benchmark tools failed");
    }
    let status = Command::new("cargo")
        .args(["build", "--release", "-p", "backup-runner-postgres"])
        .current_dir(root())
        .status()?;
    if !status.success() {
        bail!("building the runner failed");
    }
    tokio::runtime::Runtime::new()?.block_on(bench(&sizes))
}

async fn bench(sizes: &[u64]) -> Result<()> {
    let (pg, s3) = (PgServer::start().await?, S3Server::start().await?);
    s3.create_bucket(BUCKET).await?;
    let bin = pg.bin_dir();
    let env: Vec<(String, String)> = [
        (
            "PATH",
            format!(
                "{}:{}",
                bin.display(),
                std::env::var("PATH").unwrap_or_default()
            ),
        ),
        ("PGHOST", pg.host().to_string()),
        ("PGPORT", pg.port().to_string()),
        ("PGUSER", pg.superuser().to_string()),
        ("PGPASSWORD", pg.password().to_string()),
        ("AWS_ACCESS_KEY_ID", s3.access_key().to_string()),
        ("AWS_SECRET_ACCESS_KEY", s3.secret_key().to_string()),
        ("AWS_DEFAULT_REGION", s3.region().to_string()),
        ("DB_HOST", pg.host().to_string()),
        ("DB_PORT", pg.port().to_string()),
        ("DB_USERNAME", pg.superuser().to_string()),
        ("DB_PASSWORD", pg.password().to_string()),
        ("STORAGE_TYPE", "minio".into()),
        ("STORAGE_ENDPOINT", s3.endpoint()),
        ("STORAGE_BUCKET", BUCKET.into()),
        ("STORAGE_ACCESS_KEY_ID", s3.access_key().to_string()),
        ("STORAGE_SECRET_ACCESS_KEY", s3.secret_key().to_string()),
        ("PROGRESS_INTERVAL_SECS", "0".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let bench = Bench {
        work: tempfile::Builder::new()
            .prefix("bench-")
            .tempdir_in(root().join("target"))?,
        runs: std::cell::Cell::new(0),
        env,
        runner: root().join("target/release/backup-runner-postgres"),
        s3_endpoint: s3.endpoint(),
    };
    let runner = bench.runner.display().to_string();
    let mut results: BTreeMap<u64, (u64, Vec<Run>)> = BTreeMap::new();
    for &mib in sizes {
        let db = format!("bench_{mib}");
        println!("bench: seeding {db} (~{mib} MiB)");
        let db_bytes = seed(&pg, &db, mib).await?;
        let mut runs = Vec::new();
        let dump = |opts: &str| format!("pg_dump {opts} {db}");

        let mut r = bench.pipeline(
            "pg_dump to /dev/null (-Fc -Z0)",
            &[("pg_dump", format!("{} > /dev/null", dump("-Fc -Z0")))],
        )?;
        runs.push(r.clone());
        r = bench.pipeline(
            "pg_dump to /dev/null (-Fc, its gzip)",
            &[("pg_dump", format!("{} > /dev/null", dump("-Fc")))],
        )?;
        runs.push(r);

        let key = format!("runner/{mib}");
        let mut r = bench.pipeline(
            "runner backup (zstd, multipart)",
            &[(
                "backup-runner",
                format!("env DB_NAME={db} BACKUP_PATH={key} {runner}"),
            )],
        )?;
        r.output_bytes = bench.object_size(&key)?;
        let runner_output = r.output_bytes;
        runs.push(r);

        // The runner's knobs, for the trade-offs: compression, threads, part size, in flight.
        for (label, vars) in TUNING {
            let key = format!("tuning/{mib}/{}", label.replace(' ', "-"));
            let mut r = bench.pipeline(
                &format!("runner backup ({label})"),
                &[(
                    "backup-runner",
                    format!("env DB_NAME={db} BACKUP_PATH={key} {vars} {runner}"),
                )],
            )?;
            r.output_bytes = bench.object_size(&key)?;
            runs.push(r);
        }

        let mut r = bench.pipeline(
            "script: pg_dump | gzip | aws s3 cp -",
            &[
                ("pg_dump", dump("")),
                ("gzip", "gzip".into()),
                (
                    "aws s3 cp",
                    format!("{} cp - s3://{BUCKET}/script/{mib}.sql.gz", bench.aws()),
                ),
            ],
        )?;
        r.output_bytes = bench.object_size(&format!("script/{mib}.sql.gz"))?;
        runs.push(r);

        let started = Instant::now();
        let a = bench.pipeline(
            "plan-b dump",
            &[("pg_dump", format!("{} -f planb.sql", dump("")))],
        )?;
        let b = bench.pipeline(
            "plan-b gzip",
            &[("gzip", "gzip -c planb.sql > planb.sql.gz".into())],
        )?;
        let temp = bench.file_size("planb.sql") + bench.file_size("planb.sql.gz");
        let c = bench.pipeline(
            "plan-b upload",
            &[(
                "aws s3 cp",
                format!(
                    "{} cp planb.sql.gz s3://{BUCKET}/planb/{mib}.sql.gz",
                    bench.aws()
                ),
            )],
        )?;
        let mut processes = a.processes;
        processes.extend(b.processes);
        processes.extend(c.processes);
        runs.push(Run {
            method: "Plan B: dump file → gzip file → upload".into(),
            wall_s: started.elapsed().as_secs_f64(),
            processes,
            output_bytes: bench.file_size("planb.sql.gz"),
            temp_bytes: temp,
        });
        let _ = std::fs::remove_file(bench.work.path().join("planb.sql"));

        // The S3 server's own ceiling: the same number of bytes, uploaded by the CLI.
        std::fs::write(
            bench.work.path().join("ceiling.bin"),
            vec![0x5a_u8; runner_output as usize],
        )?;
        let mut r = bench.pipeline(
            "S3 ceiling: aws s3 cp of the runner's output size",
            &[(
                "aws s3 cp",
                format!("{} cp ceiling.bin s3://{BUCKET}/ceiling/{mib}", bench.aws()),
            )],
        )?;
        r.output_bytes = runner_output;
        runs.push(r);
        let _ = std::fs::remove_file(bench.work.path().join("ceiling.bin"));

        // Restore: the runner from S3 against pg_restore from a local file.
        bench.pipeline(
            "prepare",
            &[("pg_dump", format!("{} -f restore.dump", dump("-Fc -Z0")))],
        )?;
        for target in ["restore_runner", "restore_local"] {
            pg.psql(
                "postgres",
                &format!("DROP DATABASE IF EXISTS {target}; CREATE DATABASE {target};"),
            )
            .await?;
        }
        let r = bench.pipeline(
            "runner restore (from S3)",
            &[(
                "backup-runner",
                format!(
                    "env OPERATION_TYPE=restore DB_NAME=restore_runner BACKUP_PATH={key} {runner}"
                ),
            )],
        )?;
        runs.push(r);
        let r = bench.pipeline(
            "pg_restore from a local file",
            &[(
                "pg_restore",
                "pg_restore --single-transaction --exit-on-error -d restore_local restore.dump"
                    .into(),
            )],
        )?;
        runs.push(r);
        let _ = std::fs::remove_file(bench.work.path().join("restore.dump"));
        for target in ["restore_runner", "restore_local", db.as_str()] {
            pg.psql("postgres", &format!("DROP DATABASE IF EXISTS {target};"))
                .await?;
        }
        print_runs(mib, db_bytes, &runs);
        results.insert(mib, (db_bytes, runs));
    }
    write_results(&results)
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1u64 << 20) as f64
}

fn table(db_bytes: u64, runs: &[Run]) -> String {
    let mut t = String::from(
        "| Method | Wall s | CPU s | Peak RSS MiB (largest process) | Local disk written MiB | Temp files MiB | Output MiB | DB MiB/s |\n|---|---|---|---|---|---|---|---|\n",
    );
    for r in runs {
        t.push_str(&format!(
            "| {} | {:.2} | {:.2} | {:.1} ({}) | {:.1} | {:.1} | {} | {:.0} |\n",
            r.method.replace('|', "\\|"),
            r.wall_s,
            r.cpu_s(),
            r.peak_rss_kib() as f64 / 1024.0,
            r.processes
                .iter()
                .max_by_key(|(_, u)| u.max_rss_kib)
                .map(|(n, _)| n.as_str())
                .unwrap_or("-"),
            mib(r.written()),
            mib(r.temp_bytes),
            if r.output_bytes > 0 {
                format!("{:.1}", mib(r.output_bytes))
            } else {
                "-".into()
            },
            mib(db_bytes) / r.wall_s.max(0.001)
        ));
    }
    t
}

fn print_runs(size: u64, db_bytes: u64, runs: &[Run]) {
    println!(
        "\nbench: ~{size} MiB target, database {:.0} MiB\n{}",
        mib(db_bytes),
        table(db_bytes, runs)
    );
}

fn ratio(runs: &[Run], a: &str, b: &str) -> Option<f64> {
    let find = |m: &str| {
        runs.iter()
            .find(|r| r.method.starts_with(m))
            .map(|r| r.wall_s)
    };
    Some(find(a)? / find(b)?)
}

fn write_results(results: &BTreeMap<u64, (u64, Vec<Run>)>) -> Result<()> {
    let dir = root().join("benchmarks");
    std::fs::create_dir_all(&dir)?;
    let mut md = String::new();
    let mut json = Vec::new();
    for (size, (db_bytes, runs)) in results {
        md.push_str(&format!(
            "### ~{size} MiB target (database {:.0} MiB)\n\n{}\n",
            mib(*db_bytes),
            table(*db_bytes, runs)
        ));
        let ratios = [
            (
                "runner backup / pg_dump -Z0 alone",
                ratio(runs, "runner backup", "pg_dump to /dev/null (-Fc -Z0)"),
            ),
            (
                "runner restore / pg_restore from a local file",
                ratio(runs, "runner restore", "pg_restore from"),
            ),
            (
                "Plan B / runner backup",
                ratio(runs, "Plan B", "runner backup"),
            ),
            (
                "script / runner backup",
                ratio(runs, "script", "runner backup"),
            ),
        ];
        for (what, r) in ratios {
            if let Some(r) = r {
                md.push_str(&format!("- {what}: **{r:.2}×**\n"));
            }
        }
        md.push('\n');
        for r in runs {
            json.push(format!(
                "{{\"size_mib\":{size},\"db_bytes\":{db_bytes},\"method\":{:?},\"wall_s\":{:.3},\"cpu_s\":{:.3},\"peak_rss_kib\":{},\"written_bytes\":{},\"temp_bytes\":{},\"output_bytes\":{},\"processes\":[{}]}}",
                r.method,
                r.wall_s,
                r.cpu_s(),
                r.peak_rss_kib(),
                r.written(),
                r.temp_bytes,
                r.output_bytes,
                r.processes
                    .iter()
                    .map(|(n, u)| format!(
                        "{{\"name\":{n:?},\"wall_s\":{:.3},\"cpu_s\":{:.3},\"max_rss_kib\":{},\"written_bytes\":{}}}",
                        u.wall_s, u.cpu_s, u.max_rss_kib, u.written_bytes
                    ))
                    .collect::<Vec<_>>()
                    .join(",")
            ));
        }
    }
    std::fs::write(dir.join("postgres.md"), &md)?;
    std::fs::write(
        dir.join("postgres.json"),
        format!("[\n{}\n]\n", json.join(",\n")),
    )?;
    println!("bench: wrote benchmarks/postgres.md and benchmarks/postgres.json");
    Ok(())
}
