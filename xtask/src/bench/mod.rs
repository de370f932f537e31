//! `cargo xtask bench [postgres] [--sizes 100,1024,2048]`: the runner against what users run
//! today, on the same data in the same run (`cargo xtask bench mysql`: see `mysql`). For each
//! database size (MiB):
//!
//! 1. the limit: `pg_dump` alone into /dev/null, uncompressed and with its default compression,
//!    and uncompressed piped into the `zstd` CLI at the runner's level and threads (the dump plus
//!    the same compression, without storage);
//! 2. the runner: backup into the S3 server with default settings, into a local directory (the
//!    pipeline without an S3 server), and restore;
//! 3. the script users write: `pg_dump | gzip | aws s3 cp - s3://…`;
//! 4. the Plan B way: `pg_dump` into a temp file, `gzip` it into a second file, upload that;
//! 5. the S3 server's own ceiling: `aws s3 cp` of a file of the runner's output size;
//! 6. restore: the runner against `pg_restore` from a local file;
//! 7. the runner's knobs one at a time (compression level and threads, part size, parts in
//!    flight), for the trade-offs.
//!
//! PostgreSQL and moto run on this machine, as the tests' fixtures do; see `measure` for what is
//! measured. Results go to `benchmarks/postgres.{md,json,png}`.
//!
//! `cargo xtask bench list [--backups 10000]`: the catalog operations over many backups; see
//! `catalog`.
//!
//! `cargo xtask bench encryption [--sizes 1024] [--runs 5]`: the runner with and without age
//! encryption, in alternating runs; see `encryption`.
//!
//! `cargo xtask bench server [--databases 50] [--parallelism 4] [--runs 3]`: a whole-server
//! backup of many small databases through the PostgreSQL 18 image, one database at a time
//! against several at once; see `server`.

mod catalog;
mod encryption;
mod measure;
mod mysql;
mod report;
mod server;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use harness::{PgServer, S3Server};

use crate::root;
use measure::{Bench, Run, BUCKET};

const DEFAULT_SIZES: &[u64] = &[100, 1024, 2048];

/// Runner settings measured beside the defaults, one at a time.
const TUNING: &[(&str, &str)] = &[
    ("zstd 1", "COMPRESSION_LEVEL=1"),
    ("zstd 3", "COMPRESSION_LEVEL=3"),
    ("zstd 6", "COMPRESSION_LEVEL=6"),
    ("1 thread", "COMPRESSION_THREADS=1"),
    ("2 threads", "COMPRESSION_THREADS=2"),
    ("gzip 6", "COMPRESSION=gzip"),
    ("no compression", "COMPRESSION=none"),
    (
        "16 MiB parts, 2 in flight",
        "STORAGE_PART_SIZE_MB=16 STORAGE_UPLOAD_CONCURRENCY=2",
    ),
    ("8 MiB parts, 1 in flight", "STORAGE_UPLOAD_CONCURRENCY=1"),
];

/// Words for the text columns: random words from a small vocabulary compress about like prose
/// (3–4:1), unlike hex digests (2:1) or random bytes (1:1).
const WORDS: &str =
    "the of and to in a is that for it as was with be by on not he this are or his \
    from at which but have an had they you were their one all we can her has there been if more \
    when will would who so no order customer invoice shipped pending payment account balance \
    address street city postal country product quantity price discount total status delivered \
    returned warehouse supplier category description review rating comment support ticket \
    priority resolved opened closed user email phone network server backup restore database \
    table index query update insert delete select transaction commit rollback";

async fn seed(pg: &PgServer, db: &str, mib: u64) -> Result<u64> {
    pg.psql(
        "postgres",
        &format!("DROP DATABASE IF EXISTS {db}; CREATE DATABASE {db};"),
    )
    .await?;
    // A pgbench-like accounts table (narrow rows, an index), and documents: a timestamp, an
    // amount, a body of words and a small random bytea (which does not compress).
    let accounts = mib * 2_500;
    let documents = mib * 650;
    let words: Vec<String> = WORDS.split_whitespace().map(|w| format!("'{w}'")).collect();
    pg.psql(
        db,
        &format!(
            "CREATE TABLE accounts (aid int PRIMARY KEY, bid int, abalance int, filler char(84));
             INSERT INTO accounts SELECT g, g % 100, 0, '' FROM generate_series(1, {accounts}) g;
             CREATE TABLE documents (id bigint PRIMARY KEY, created timestamptz,
                 amount numeric(12,2), body text, blob bytea);
             INSERT INTO documents SELECT g, '2026-01-01'::timestamptz + g * interval '1 minute',
                 (g * 7919) % 100000 / 100.0,
                 (SELECT string_agg((ARRAY[{words}])[1 + floor(random() * {n})::int], ' ')
                    FROM generate_series(1, 80 + g % 40)),
                 (SELECT decode(string_agg(md5(random()::text), ''), 'hex')
                    FROM generate_series(1, 8 + g % 2))
               FROM generate_series(1, {documents}::bigint) g;",
            words = words.join(","),
            n = words.len()
        ),
    )
    .await?;
    pg.psql(db, "VACUUM ANALYZE;").await?;
    let size = pg
        .psql(db, "SELECT pg_database_size(current_database());")
        .await?;
    Ok(size.trim().parse().unwrap_or(0))
}

pub fn run(args: &[String]) -> Result<()> {
    match args.first().map(String::as_str) {
        Some("mysql") => return mysql::run(&args[1..]),
        Some("list") => return catalog::run(&args[1..]),
        Some("encryption") => return encryption::run(&args[1..]),
        Some("server") => return server::run(&args[1..]),
        _ => {}
    }
    let mut sizes = DEFAULT_SIZES.to_vec();
    let mut iter = args.iter();
    while let Some(a) = iter.next() {
        match a.as_str() {
            "postgres" => {}
            "--sizes" => sizes = parse_sizes(iter.next())?,
            other => bail!(
                "bench: unknown argument {other:?} (postgres, mysql, list, encryption, server)"
            ),
        }
    }
    prepare("postgres", "backup-runner-postgres")?;
    tokio::runtime::Runtime::new()?.block_on(bench(&sizes))
}

/// The value of `--sizes`: MiB, comma-separated.
fn parse_sizes(list: Option<&String>) -> Result<Vec<u64>> {
    list.context("--sizes needs a list, e.g. 100,1024")?
        .split(',')
        .map(|s| s.trim().parse().context("sizes are MiB"))
        .collect()
}

/// Installs what the tests and the benchmark of `engine` need, and builds the runner `package`.
fn prepare(engine: &str, package: &str) -> Result<()> {
    crate::install_deps()?;
    let status = Command::new("bash")
        .arg(root().join(".ci/install-bench-deps.sh"))
        .arg(engine)
        .status()?;
    if !status.success() {
        bail!("installing the benchmark tools failed");
    }
    let status = Command::new("cargo")
        .args(["build", "--release", "-p", package])
        .current_dir(root())
        .status()?;
    if !status.success() {
        bail!("building the runner failed");
    }
    Ok(())
}

/// A copy of the release binary `name` in a directory of its own under target/: other builds in
/// the shared target directory (the images' binaries, built for a given flavor and version) may
/// replace the binary while a bench runs. The directory goes with the returned guard.
fn runner_copy(name: &str) -> Result<(tempfile::TempDir, std::path::PathBuf)> {
    let copy = tempfile::Builder::new()
        .prefix("bench-runner-")
        .tempdir_in(root().join("target"))?;
    let runner = copy.path().join(name);
    std::fs::copy(root().join("target/release").join(name), &runner)
        .context("copying the runner")?;
    Ok((copy, runner))
}

async fn bench(sizes: &[u64]) -> Result<()> {
    let (pg, s3) = (PgServer::start().await?, S3Server::start().await?);
    s3.create_bucket(BUCKET).await?;
    let env = bench_env(&pg, &s3);
    let postmaster = std::fs::read_to_string(pg.data_dir().join("postmaster.pid"))?
        .lines()
        .next()
        .and_then(|l| l.trim().parse().ok())
        .context("reading postmaster.pid")?;
    let bench = Bench::new(
        env,
        root().join("target/release/backup-runner-postgres"),
        s3.endpoint(),
        s3.pid(),
        postmaster,
    )?;
    let machine = machine(&pg).await?;
    println!("bench: {machine}");
    let mut results: report::Results = BTreeMap::new();
    for &mib in sizes {
        let db = format!("bench_{mib}");
        println!("bench: seeding {db} (~{mib} MiB)");
        let db_bytes = seed(&pg, &db, mib).await?;
        let runs = bench_size(&bench, &pg, &db, mib).await?;
        for target in ["restore_runner", "restore_local", db.as_str()] {
            pg.psql("postgres", &format!("DROP DATABASE IF EXISTS {target};"))
                .await?;
        }
        bench.remove("")?;
        report::print_runs(
            &report::POSTGRES,
            &format!(
                "~{mib} MiB target, database {:.0} MiB",
                report::mib(db_bytes)
            ),
            db_bytes,
            &runs,
        );
        results.insert(mib, (db_bytes, runs));
    }
    report::write(&results, &machine)
}

fn bench_env(pg: &PgServer, s3: &S3Server) -> Vec<(String, String)> {
    let path = format!(
        "{}:{}",
        pg.bin_dir().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    [
        ("PATH", path),
        ("PGHOST", pg.host().to_string()),
        ("PGPORT", pg.port().to_string()),
        ("PGUSER", pg.superuser().to_string()),
        ("PGPASSWORD", pg.password().to_string()),
        ("DB_HOST", pg.host().to_string()),
        ("DB_PORT", pg.port().to_string()),
        ("DB_USERNAME", pg.superuser().to_string()),
        ("DB_PASSWORD", pg.password().to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .chain(storage_env(s3))
    .collect()
}

/// The S3 server for the AWS CLI and for the runner, shared by every engine's bench.
pub(crate) fn storage_env(s3: &S3Server) -> Vec<(String, String)> {
    [
        ("AWS_ACCESS_KEY_ID", s3.access_key().to_string()),
        ("AWS_SECRET_ACCESS_KEY", s3.secret_key().to_string()),
        ("AWS_DEFAULT_REGION", s3.region().to_string()),
        ("STORAGE_TYPE", "minio".into()),
        ("STORAGE_ENDPOINT", s3.endpoint()),
        ("STORAGE_BUCKET", BUCKET.into()),
        ("STORAGE_ACCESS_KEY_ID", s3.access_key().to_string()),
        ("STORAGE_SECRET_ACCESS_KEY", s3.secret_key().to_string()),
        ("PROGRESS_INTERVAL_SECS", "0".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// What the figures were measured on.
async fn machine(pg: &PgServer) -> Result<String> {
    let version = pg.psql("postgres", "SHOW server_version;").await?;
    Ok(format!(
        "{}; PostgreSQL {}, moto {} and the tools on the same machine; zstd CLI {}",
        hardware(),
        version.trim(),
        moto_version(),
        zstd_version()
    ))
}

/// Cores, CPU model and memory of this machine.
fn hardware() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, m)| m.trim().to_string())
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_gib = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|l| l.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0 / 1024.0);
    format!("{cores} × {model}, {mem_gib:.0} GiB RAM")
}

fn moto_version() -> String {
    Command::new("python3")
        .args(["-c", "import moto; print(moto.__version__)"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// "*** Zstandard CLI (64-bit) v1.5.4, by Yann Collet ***" → "v1.5.4"
fn zstd_version() -> String {
    Command::new("zstd")
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| {
            let text = String::from_utf8_lossy(&o.stdout).to_string();
            let v = text.split_whitespace().find(|w| w.starts_with('v'))?;
            Some(v.trim_end_matches(',').to_string())
        })
        .unwrap_or_default()
}

/// The first number logged as `name=…` by the runner.
fn log_field(log: &str, name: &str) -> Option<i64> {
    let at = log.find(&format!("{name}="))? + name.len() + 1;
    log[at..]
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// The runner's compression level and threads, from its "starting the dump" log line.
fn runner_compression(log: &str) -> Option<(i64, i64)> {
    Some((
        log_field(log, "compression_level")?,
        log_field(log, "compression_threads")?,
    ))
}

async fn bench_size(bench: &Bench, pg: &PgServer, db: &str, mib: u64) -> Result<Vec<Run>> {
    let runner = bench.runner.display().to_string();
    let dump = |opts: &str| format!("pg_dump {opts} {db}");
    let mut runs = Vec::new();
    runs.push(bench.pipeline(
        "pg_dump to /dev/null (-Fc -Z0)",
        &[("pg_dump", format!("{} > /dev/null", dump("-Fc -Z0")))],
    )?);
    runs.push(bench.pipeline(
        "pg_dump to /dev/null (-Fc, its gzip)",
        &[("pg_dump", format!("{} > /dev/null", dump("-Fc")))],
    )?);

    let key = format!("runner/{mib}");
    let mut backup = bench.pipeline(
        "runner backup (defaults)",
        &[(
            "backup-runner",
            format!("env DB_NAME={db} BACKUP_PATH={key} {runner} > runner.log 2>&1"),
        )],
    )?;
    backup.output_bytes = bench.object_size(&key)?;
    let log = std::fs::read_to_string(bench.path("runner.log"))?;
    let (level, threads) = runner_compression(&log)
        .with_context(|| format!("no compression settings in the runner's log:\n{log}"))?;
    runs.push(bench.pipeline(
        &format!("pg_dump -Fc -Z0 | zstd -{level} -T{threads} to /dev/null"),
        &[
            ("pg_dump", dump("-Fc -Z0")),
            ("zstd", format!("zstd -q -{level} -T{threads} > /dev/null")),
        ],
    )?);
    let runner_output = backup.output_bytes;
    runs.push(backup);

    let mut local = bench.pipeline(
        "runner backup to a local directory (no S3 server)",
        &[(
            "backup-runner",
            format!(
                "env STORAGE_TYPE=local STORAGE_LOCAL_DIR=local DB_NAME={db} BACKUP_PATH={key} {runner}"
            ),
        )],
    )?;
    local.output_bytes = bench.file_size(&format!("local/{key}"));
    let _ = std::fs::remove_dir_all(bench.path("local"));
    runs.push(local);

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
        bench.remove(&key)?;
        runs.push(r);
    }

    let script_key = format!("script/{mib}.sql.gz");
    let mut r = bench.pipeline(
        "script: pg_dump | gzip | aws s3 cp -",
        &[
            ("pg_dump", dump("")),
            ("gzip", "gzip".into()),
            (
                "aws s3 cp",
                format!("{} cp - s3://{BUCKET}/{script_key}", bench.aws()),
            ),
        ],
    )?;
    r.output_bytes = bench.object_size(&script_key)?;
    bench.remove(&script_key)?;
    runs.push(r);

    let started = Instant::now();
    let mut steps = vec![
        bench.pipeline(
            "plan-b dump",
            &[("pg_dump", format!("{} -f planb.sql", dump("")))],
        )?,
        bench.pipeline(
            "plan-b gzip",
            &[("gzip", "gzip -c planb.sql > planb.sql.gz".into())],
        )?,
    ];
    let temp = bench.file_size("planb.sql") + bench.file_size("planb.sql.gz");
    steps.push(bench.pipeline(
        "plan-b upload",
        &[(
            "aws s3 cp",
            format!(
                "{} cp planb.sql.gz s3://{BUCKET}/planb/{mib}.sql.gz",
                bench.aws()
            ),
        )],
    )?);
    let mut planb = Run::join(
        "Plan B: dump file → gzip file → upload",
        steps,
        started.elapsed().as_secs_f64(),
    );
    planb.output_bytes = bench.file_size("planb.sql.gz");
    planb.temp_bytes = temp;
    runs.push(planb);
    let _ = std::fs::remove_file(bench.path("planb.sql"));
    let _ = std::fs::remove_file(bench.path("planb.sql.gz"));
    bench.remove("planb/")?;

    // The S3 server's own ceiling: the same number of bytes, uploaded by the CLI.
    std::fs::write(
        bench.path("ceiling.bin"),
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
    let _ = std::fs::remove_file(bench.path("ceiling.bin"));
    bench.remove("ceiling/")?;

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
    runs.push(bench.pipeline(
        "runner restore (from S3)",
        &[(
            "backup-runner",
            format!("env OPERATION_TYPE=restore DB_NAME=restore_runner BACKUP_PATH={key} {runner}"),
        )],
    )?);
    runs.push(bench.pipeline(
        "pg_restore from a local file",
        &[(
            "pg_restore",
            "pg_restore --single-transaction --exit-on-error -d restore_local restore.dump".into(),
        )],
    )?);
    let _ = std::fs::remove_file(bench.path("restore.dump"));
    Ok(runs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compression_settings_come_from_the_log_line() {
        let line = "INFO job: starting the dump (8.0 MiB per part) phase=\"dump\" part_size=8388608 \
                    parts_in_flight=3 compression=Zstd compression_level=1 compression_threads=2 job_id=x";
        assert_eq!(runner_compression(line), Some((1, 2)));
        assert_eq!(runner_compression("no settings"), None);
    }
}
