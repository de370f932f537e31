//! `cargo xtask bench encryption [--sizes 1024] [--runs 5]`: what age encryption costs the
//! runner, measured against the same runner without it, on the same data in the same run.
//!
//! For each database size (MiB), after seeding PostgreSQL as `cargo xtask bench postgres` does,
//! `--runs` rounds, each of:
//!
//! 1. a backup into moto without encryption and one with `ENCRYPTION_RECIPIENTS` (a key pair
//!    made by `age-keygen` for the run);
//! 2. `verify` of each backup, the encrypted one with `ENCRYPTION_IDENTITY_FILE` (it then also
//!    decrypts and decompresses the object);
//! 3. a restore of each into a fresh database, the encrypted one with the identity file; each
//!    restored database is compared with the source.
//!
//! The two variants alternate within each step, and the order flips from one round to the next
//! (A B, then B A, …), so that a drift of the machine's load over the run (it is shared) falls on
//! both alike. The encrypted object is checked to start with age's header and its manifest to
//! record the recipient. Each figure is the median over the rounds; the table shows the
//! difference, absolute and relative, against the targets (≤ 10% more wall time, ≤ 8 MiB more
//! peak RSS). Results go to `benchmarks/encryption.{md,json}`.

use std::collections::BTreeMap;
use std::process::Command;

use anyhow::{bail, ensure, Context, Result};
use chrono::Utc;
use harness::{PgServer, S3Server};
use serde_json::{json, Value};

use super::measure::{median, Bench, Run, BUCKET};
use crate::root;

const DEFAULT_SIZES: &[u64] = &[1024];
const DEFAULT_RUNS: usize = 5;
/// The targets: encryption adds at most this share of wall time, and this much peak RSS.
const WALL_TARGET: f64 = 0.10;
const RSS_TARGET_MIB: f64 = 8.0;

pub fn run(args: &[String]) -> Result<()> {
    let mut sizes = DEFAULT_SIZES.to_vec();
    let mut runs = DEFAULT_RUNS;
    let mut iter = args.iter();
    while let Some(a) = iter.next() {
        match a.as_str() {
            "--sizes" => sizes = super::parse_sizes(iter.next())?,
            "--runs" => {
                runs = iter
                    .next()
                    .context("--runs needs a number, e.g. 5")?
                    .parse()
                    .context("--runs is a number of rounds")?;
                ensure!(runs > 0, "--runs must be at least 1");
            }
            other => bail!("bench encryption: unknown argument {other:?} (--sizes, --runs)"),
        }
    }
    ensure!(
        Command::new("age-keygen").arg("--version").output().is_ok(),
        "age-keygen is missing (Debian package `age`)"
    );
    super::prepare("postgres", "backup-runner-postgres")?;
    let (_copy, runner) = super::runner_copy("backup-runner-postgres")?;
    tokio::runtime::Runtime::new()?.block_on(bench(runner, &sizes, runs))
}

/// One measured runner process and what it left behind.
struct Sample {
    run: Run,
    /// The runner's own peak RSS (VmHWM), from its last log line.
    runner_rss: Option<u64>,
    /// The stored object's size (backups).
    object_bytes: u64,
}

/// The steps compared, each plain (A) and encrypted (B).
const STEPS: [&str; 3] = ["backup", "verify", "restore"];

/// Per step: the plain samples and the encrypted ones, in round order.
type Samples = BTreeMap<&'static str, (Vec<Sample>, Vec<Sample>)>;

async fn bench(runner: std::path::PathBuf, sizes: &[u64], runs: usize) -> Result<()> {
    let load_start = super::catalog::load_average();
    let (pg, s3) = (PgServer::start().await?, S3Server::start().await?);
    s3.create_bucket(BUCKET).await?;
    let env = super::bench_env(&pg, &s3);
    let postmaster = std::fs::read_to_string(pg.data_dir().join("postmaster.pid"))?
        .lines()
        .next()
        .and_then(|l| l.trim().parse().ok())
        .context("reading postmaster.pid")?;
    let bench = Bench::new(env, runner, s3.endpoint(), s3.pid(), postmaster)?;
    let machine = super::machine(&pg).await?;
    println!("bench: {machine}");

    // The key pair: the identity file stays in the bench's temp directory.
    let key = bench.path("age-key.txt");
    let out = Command::new("age-keygen").arg("-o").arg(&key).output()?;
    ensure!(out.status.success(), "age-keygen failed: {out:?}");
    let out = Command::new("age-keygen").arg("-y").arg(&key).output()?;
    let recipient = String::from_utf8(out.stdout)?.trim().to_string();
    ensure!(
        out.status.success() && recipient.starts_with("age1"),
        "age-keygen -y gave {recipient:?}"
    );
    let age_version = Command::new("age-keygen")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();

    let mut results = Vec::new();
    for &mib in sizes {
        let db = format!("bench_{mib}");
        println!("bench: seeding {db} (~{mib} MiB)");
        let db_bytes = super::seed(&pg, &db, mib).await?;
        let source = fingerprint(&pg, &db).await?;
        let samples = rounds(&bench, &pg, &db, mib, runs, &recipient, &source).await?;
        pg.psql("postgres", &format!("DROP DATABASE IF EXISTS {db};"))
            .await?;
        bench.remove("")?;
        let table = table(&samples);
        println!(
            "\nbench: ~{mib} MiB target, database {:.0} MiB, {runs} rounds\n{table}",
            super::report::mib(db_bytes)
        );
        results.push((mib, db_bytes, samples));
    }
    let machine = format!(
        "{machine}; age-keygen {age_version}; load average {load_start} at the start, {} at the end",
        super::catalog::load_average()
    );
    write(&machine, runs, &results)
}

/// What a restored database must match: row counts and sums over every column.
async fn fingerprint(pg: &PgServer, db: &str) -> Result<String> {
    pg.psql(
        db,
        "SELECT (SELECT count(*) || ' ' || sum(aid) || ' ' || sum(bid) FROM accounts) || ' ' || \
         (SELECT count(*) || ' ' || sum(id) || ' ' || sum(amount) || ' ' || \
                 sum(extract(epoch FROM created)) || ' ' || sum(length(body)) || ' ' || \
                 sum(hashtext(body)::bigint) || ' ' || sum(length(blob)) || ' ' || \
                 sum(hashtext(encode(blob, 'hex'))::bigint) FROM documents);",
    )
    .await
    .map(|s| s.trim().to_string())
}

async fn rounds(
    bench: &Bench,
    pg: &PgServer,
    db: &str,
    mib: u64,
    runs: usize,
    recipient: &str,
    source: &str,
) -> Result<Samples> {
    let runner = bench.runner.display().to_string();
    let mut samples: Samples = STEPS.iter().map(|s| (*s, (vec![], vec![]))).collect();
    for round in 0..runs {
        // A B in even rounds, B A in odd ones.
        let order: &[bool] = if round % 2 == 0 {
            &[false, true]
        } else {
            &[true, false]
        };
        let key_of = |enc: bool| {
            format!(
                "enc/{mib}/{}-{round}.pgdump.zst",
                if enc { "age" } else { "plain" }
            )
        };
        let load = super::catalog::load_average();
        for &enc in order {
            let key = key_of(enc);
            let vars = if enc {
                format!("ENCRYPTION_RECIPIENTS={recipient}")
            } else {
                String::new()
            };
            let log = format!("backup-{}-{round}.log", tag(enc));
            let run = bench.pipeline(
                &format!("runner backup ({})", label(enc)),
                &[(
                    "backup-runner",
                    format!("env DB_NAME={db} BACKUP_PATH={key} {vars} {runner} > {log} 2>&1"),
                )],
            )?;
            let object_bytes = bench.object_size(&key)?;
            check_object(bench, &key, enc, recipient)?;
            push(&mut samples, "backup", enc, bench, run, &log, object_bytes)?;
        }
        for &enc in order {
            let key = key_of(enc);
            let vars = identity(bench, enc);
            let log = format!("verify-{}-{round}.log", tag(enc));
            let run = bench.pipeline(
                &format!("runner verify ({})", label(enc)),
                &[(
                    "backup-runner",
                    format!(
                        "env OPERATION_TYPE=verify BACKUP_PATH={key} {vars} {runner} > {log} 2>&1"
                    ),
                )],
            )?;
            push(&mut samples, "verify", enc, bench, run, &log, 0)?;
        }
        for &enc in order {
            let key = key_of(enc);
            let target = format!("restore_{}", tag(enc));
            pg.psql(
                "postgres",
                &format!("DROP DATABASE IF EXISTS {target}; CREATE DATABASE {target};"),
            )
            .await?;
            let vars = identity(bench, enc);
            let log = format!("restore-{}-{round}.log", tag(enc));
            let run = bench.pipeline(
                &format!("runner restore ({})", label(enc)),
                &[(
                    "backup-runner",
                    format!(
                        "env OPERATION_TYPE=restore DB_NAME={target} BACKUP_PATH={key} {vars} {runner} > {log} 2>&1"
                    ),
                )],
            )?;
            let restored = fingerprint(pg, &target).await?;
            ensure!(
                restored == source,
                "round {round}: the {} restore differs from the source:\n{restored}\n{source}",
                label(enc)
            );
            pg.psql("postgres", &format!("DROP DATABASE {target};"))
                .await?;
            push(&mut samples, "restore", enc, bench, run, &log, 0)?;
        }
        bench.remove(&format!("enc/{mib}/"))?;
        let line = |step: &str| {
            let (a, b) = &samples[step];
            let (a, b) = (a.last().unwrap(), b.last().unwrap());
            format!(
                "{step} {:.2} s / {:.2} s, {:.1} / {:.1} MiB",
                a.run.wall_s,
                b.run.wall_s,
                rss_mib(a),
                rss_mib(b)
            )
        };
        println!(
            "bench: round {}/{runs} (load {load}, plain / encrypted{}): {}; {}; {}",
            round + 1,
            if order[0] { ", encrypted first" } else { "" },
            line("backup"),
            line("verify"),
            line("restore")
        );
    }
    Ok(samples)
}

fn tag(enc: bool) -> &'static str {
    if enc {
        "age"
    } else {
        "plain"
    }
}

fn label(enc: bool) -> &'static str {
    if enc {
        "encrypted"
    } else {
        "unencrypted"
    }
}

fn identity(bench: &Bench, enc: bool) -> String {
    if enc {
        format!(
            "ENCRYPTION_IDENTITY_FILE={}",
            bench.path("age-key.txt").display()
        )
    } else {
        String::new()
    }
}

fn push(
    samples: &mut Samples,
    step: &'static str,
    enc: bool,
    bench: &Bench,
    run: Run,
    log: &str,
    object_bytes: u64,
) -> Result<()> {
    let text = std::fs::read_to_string(bench.path(log))?;
    let runner_rss = super::log_field(&text, "peak_rss_bytes").map(|b| b as u64);
    let (plain, age) = samples.get_mut(step).context("unknown step")?;
    let sample = Sample {
        run,
        runner_rss,
        object_bytes,
    };
    if enc {
        age.push(sample)
    } else {
        plain.push(sample)
    }
    Ok(())
}

/// That the encrypted object is age's format and its manifest names the recipient, and that
/// the plain one is zstd.
fn check_object(bench: &Bench, key: &str, enc: bool, recipient: &str) -> Result<()> {
    let head = bench.path("head.bin");
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "aws --endpoint-url {} s3api get-object --bucket {BUCKET} --key {key} --range bytes=0-63 {} > /dev/null",
            bench.s3_endpoint,
            head.display()
        ))
        .envs(bench.env.iter().map(|(k, v)| (k, v)))
        .output()?;
    ensure!(out.status.success(), "reading the start of {key}: {out:?}");
    let bytes = std::fs::read(&head)?;
    if enc {
        ensure!(
            bytes.starts_with(b"age-encryption.org/v1\n"),
            "{key} is not an age file: {:?}",
            String::from_utf8_lossy(&bytes)
        );
    } else {
        ensure!(
            bytes.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]),
            "{key} is not a zstd frame"
        );
    }
    let manifest = bench.path("manifest.json");
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "aws --endpoint-url {} s3 cp --only-show-errors s3://{BUCKET}/{key}.manifest.json {}",
            bench.s3_endpoint,
            manifest.display()
        ))
        .envs(bench.env.iter().map(|(k, v)| (k, v)))
        .output()?;
    ensure!(
        out.status.success(),
        "reading the manifest of {key}: {out:?}"
    );
    let manifest: Value = serde_json::from_slice(&std::fs::read(&manifest)?)?;
    let recipients = &manifest["encryption"]["recipients"];
    if enc {
        ensure!(
            recipients
                .as_array()
                .is_some_and(|r| r.iter().any(|x| x == recipient)),
            "the manifest of {key} does not record the recipient: {manifest}"
        );
    } else {
        ensure!(
            manifest["encryption"].is_null(),
            "the manifest of {key} records encryption: {manifest}"
        );
    }
    Ok(())
}

fn rss_mib(s: &Sample) -> f64 {
    s.run.peak().map_or(0, |(_, k)| k) as f64 / 1024.0
}

/// The figures compared, with how each sample gives it.
type Metric = (&'static str, fn(&Sample) -> f64);

const METRICS: [Metric; 5] = [
    ("Wall s", |s| s.run.wall_s),
    ("CPU s (runner + its dump/restore tool)", |s| s.run.cpu_s()),
    ("Peak RSS MiB (GNU time)", rss_mib),
    ("Runner's own peak RSS MiB (its log)", |s| {
        s.runner_rss
            .map_or(f64::NAN, |b| b as f64 / (1u64 << 20) as f64)
    }),
    ("S3 server CPU s", |s| s.run.s3_cpu_s),
];

fn medians(samples: &[Sample], f: fn(&Sample) -> f64) -> (f64, f64, f64) {
    // NaN: not logged (verify logs no peak RSS).
    let v: Vec<f64> = samples.iter().map(f).filter(|x| !x.is_nan()).collect();
    if v.is_empty() {
        return (f64::NAN, f64::NAN, f64::NAN);
    }
    let min = v.iter().copied().fold(f64::INFINITY, f64::min);
    let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (median(v), min, max)
}

fn table(samples: &Samples) -> String {
    let mut t = String::from(
        "| Step | Figure (median) | Unencrypted | Encrypted | Δ | Δ % | Unencrypted range | Encrypted range |\n\
         |---|---|---|---|---|---|---|---|\n",
    );
    for step in STEPS {
        let (a, b) = &samples[step];
        for (name, f) in METRICS {
            let ((ma, la, ha), (mb, lb, hb)) = (medians(a, f), medians(b, f));
            if ma.is_nan() || mb.is_nan() {
                t.push_str(&format!(
                    "| {step} | {name} | not logged | not logged | | | | |\n"
                ));
                continue;
            }
            let bold = matches!(name, "Wall s" | "Peak RSS MiB (GNU time)");
            let star = if bold { "**" } else { "" };
            t.push_str(&format!(
                "| {step} | {name} | {ma:.2} | {mb:.2} | {star}{:+.2}{star} | {star}{:+.1}%{star} | {la:.2}–{ha:.2} | {lb:.2}–{hb:.2} |\n",
                mb - ma,
                if ma > 0.0 { 100.0 * (mb - ma) / ma } else { 0.0 }
            ));
        }
    }
    t
}

/// Per step: (wall Δ %, peak RSS Δ MiB) of the medians, and whether both meet the targets.
fn verdicts(samples: &Samples) -> Vec<(&'static str, f64, f64, bool)> {
    STEPS
        .iter()
        .map(|&step| {
            let (a, b) = &samples[step];
            let wall = |s: &[Sample]| medians(s, |x| x.run.wall_s).0;
            let rss = |s: &[Sample]| medians(s, rss_mib).0;
            let dw = (wall(b) - wall(a)) / wall(a);
            let dr = rss(b) - rss(a);
            (step, dw, dr, dw <= WALL_TARGET && dr <= RSS_TARGET_MIB)
        })
        .collect()
}

fn sample_json(s: &Sample) -> Value {
    let mut v = super::report::run_json(&super::report::POSTGRES, &s.run);
    v.insert("runner_peak_rss_bytes".into(), json!(s.runner_rss));
    if s.object_bytes > 0 {
        v.insert("object_bytes".into(), json!(s.object_bytes));
    }
    Value::Object(v)
}

fn write(machine: &str, runs: usize, results: &[(u64, u64, Samples)]) -> Result<()> {
    let dir = root().join("benchmarks");
    std::fs::create_dir_all(&dir)?;
    let mut md = format!(
        "# The cost of encryption\n\n\
         Written by `cargo xtask bench encryption --sizes {sizes} --runs {runs}`. Machine: \
         {machine}. Run on {date}.\n\n\
         The runner (`backup-runner-postgres`, defaults: zstd level 3, 2 threads, 8 MiB parts, \
         3 in flight) against moto, without encryption and with `ENCRYPTION_RECIPIENTS` (one \
         X25519 recipient; restore and verify with `ENCRYPTION_IDENTITY_FILE`), in {runs} \
         rounds. Within each step the two alternate, and the order flips every round (A B, \
         B A, …). Medians over the rounds; the ranges are the lowest and highest run. CPU is \
         the runner's with its children (`pg_dump`, `pg_restore`); peak RSS is the largest \
         process (GNU time); the runner's own peak RSS is the `peak_rss_bytes` of its last log \
         line. Every encrypted object starts with age's header and its manifest names the \
         recipient; every restore, encrypted or not, matches the source (row counts and sums \
         over every column). Targets: encryption adds at most {wall:.0}% wall time and \
         {RSS_TARGET_MIB:.0} MiB peak RSS.\n\n",
        sizes = results
            .iter()
            .map(|r| r.0.to_string())
            .collect::<Vec<_>>()
            .join(","),
        date = Utc::now().format("%Y-%m-%d"),
        wall = WALL_TARGET * 100.0,
    );
    let mut sizes_json = Vec::new();
    for (mib, db_bytes, samples) in results {
        let (plain, age) = &samples["backup"];
        let object = |s: &[Sample]| medians(s, |x| x.object_bytes as f64).0;
        md.push_str(&format!(
            "## ~{mib} MiB target (database {:.0} MiB; object {:.1} MiB unencrypted, {:.1} MiB encrypted)\n\n{}\n",
            super::report::mib(*db_bytes),
            object(plain) / (1u64 << 20) as f64,
            object(age) / (1u64 << 20) as f64,
            table(samples)
        ));
        for (step, dw, dr, ok) in verdicts(samples) {
            md.push_str(&format!(
                "- {step}: wall {:+.1}% (target ≤ +{:.0}%), peak RSS {dr:+.1} MiB (target ≤ +{RSS_TARGET_MIB:.0} MiB): **{}**\n",
                100.0 * dw,
                WALL_TARGET * 100.0,
                if ok { "met" } else { "not met" }
            ));
        }
        md.push_str("\nEvery run, in order (wall s, peak RSS MiB):\n\n| Round | Step | Unencrypted | Encrypted |\n|---|---|---|---|\n");
        for round in 0..runs {
            for step in STEPS {
                let (a, b) = &samples[step];
                let cell = |s: Option<&Sample>| {
                    s.map_or("-".into(), |s| {
                        format!("{:.2} s, {:.1} MiB", s.run.wall_s, rss_mib(s))
                    })
                };
                md.push_str(&format!(
                    "| {}{} | {step} | {} | {} |\n",
                    round + 1,
                    if round % 2 == 1 {
                        " (encrypted first)"
                    } else {
                        ""
                    },
                    cell(a.get(round)),
                    cell(b.get(round))
                ));
            }
        }
        md.push('\n');
        sizes_json.push(json!({
            "size_mib": mib,
            "db_bytes": db_bytes,
            "steps": STEPS.iter().map(|&step| {
                let (a, b) = &samples[step];
                json!({
                    "step": step,
                    "unencrypted": a.iter().map(sample_json).collect::<Vec<_>>(),
                    "encrypted": b.iter().map(sample_json).collect::<Vec<_>>(),
                    "medians": METRICS.iter().map(|(name, f)| json!({
                        "figure": name,
                        "unencrypted": medians(a, *f).0,
                        "encrypted": medians(b, *f).0,
                    })).collect::<Vec<_>>(),
                })
            }).collect::<Vec<_>>(),
            "verdicts": verdicts(samples).iter().map(|(step, dw, dr, ok)| json!({
                "step": step,
                "wall_delta_ratio": dw,
                "peak_rss_delta_mib": dr,
                "targets_met": ok,
            })).collect::<Vec<_>>(),
        }));
    }
    std::fs::write(dir.join("encryption.md"), md)?;
    let doc = json!({
        "machine": machine,
        "date": Utc::now().to_rfc3339(),
        "rounds": runs,
        "targets": { "wall_delta_ratio": WALL_TARGET, "peak_rss_delta_mib": RSS_TARGET_MIB },
        "sizes": sizes_json,
    });
    std::fs::write(
        dir.join("encryption.json"),
        serde_json::to_string_pretty(&doc)? + "\n",
    )?;
    println!("bench: wrote benchmarks/encryption.md and benchmarks/encryption.json");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(vec![]), 0.0);
    }
}
