//! `cargo xtask bench server [--databases 50] [--parallelism 4] [--runs 3]`: a whole-server
//! backup (`DB_NAME=*`) of many small databases, one database at a time
//! (`SERVER_PARALLELISM=1`, the default) against several at once, through the real image.
//!
//! The PostgreSQL 18 cell's image (`backup-runner-postgres:18`) backs up a `postgres:18` server
//! into moto, both in containers on one Docker network, as the image harness runs them. The
//! server holds `--databases` copies of one small database (a few tables with indexes, a foreign
//! key, a view and a sequence; made once and copied with `CREATE DATABASE … TEMPLATE`), and only
//! those are selected (`DB_INCLUDE=bench_*`). Each round runs both variants, and the order flips
//! from one round to the next (A B, then B A), so that a drift of the shared machine's load falls
//! on both alike.
//!
//! Per run: the wall time of the job (`docker run` to exit, container start included), the
//! runner's own duration and peak RSS (`duration_ms`, `peak_rss_bytes` from its last log line:
//! its own memory, `pg_dump` not included), the bytes stored, and from the set's manifest how
//! long the databases' dumps took added up and how many ran at once at most. Each set's manifest
//! is checked to list every database with the parallelism asked for. Results go to
//! `benchmarks/server.{md,json}`.

use std::time::Instant;

use anyhow::{bail, ensure, Context, Result};
use chrono::{DateTime, Utc};
use harness::containers::{unique, DbContainer, Job, S3Container};
use harness::matrix::Matrix;

use super::measure::median;
use serde_json::{json, Value};

use crate::{docker, root};

const CELL: &str = "postgres-18";
const BUCKET: &str = "bench";
const DEFAULT_DATABASES: usize = 50;
const DEFAULT_PARALLELISM: usize = 4;
const DEFAULT_RUNS: usize = 3;

/// One small database: customers, orders with a foreign key and an index, events with jsonb,
/// a view and a sequence; about 1.5 MiB on disk.
const SEED: &str = r#"
CREATE SEQUENCE invoice_seq START 1000;
CREATE TABLE customers (id int PRIMARY KEY, name text NOT NULL, email text UNIQUE,
    created timestamptz NOT NULL);
INSERT INTO customers SELECT g, 'customer ' || g, 'c' || g || '@example.com',
    timestamptz '2026-01-01 00:00:00+00' + g * interval '1 minute' FROM generate_series(1, 2000) g;
CREATE TABLE orders (id bigint PRIMARY KEY, customer_id int NOT NULL REFERENCES customers,
    total numeric(10, 2), note text, invoice int DEFAULT nextval('invoice_seq'));
INSERT INTO orders (id, customer_id, total, note) SELECT g, 1 + g % 2000, (g * 1.37)::numeric(10, 2),
    'order ' || g || ' of ' || md5(g::text) FROM generate_series(1, 5000) g;
CREATE INDEX orders_customer ON orders (customer_id);
CREATE TABLE events (id bigserial PRIMARY KEY, at timestamptz NOT NULL, kind text,
    payload jsonb);
INSERT INTO events (at, kind, payload) SELECT timestamptz '2026-01-01 00:00:00+00' + g * interval '1 hour',
    (ARRAY['login', 'logout', 'error'])[1 + g % 3], jsonb_build_object('n', g, 'tag', md5(g::text))
    FROM generate_series(1, 1000) g;
CREATE VIEW big_customers AS SELECT c.id, sum(o.total) AS total FROM customers c
    JOIN orders o ON o.customer_id = c.id GROUP BY c.id HAVING sum(o.total) > 100;
"#;

pub fn run(args: &[String]) -> Result<()> {
    let mut databases = DEFAULT_DATABASES;
    let mut parallelism = DEFAULT_PARALLELISM;
    let mut runs = DEFAULT_RUNS;
    let mut iter = args.iter();
    let number = |v: Option<&String>, what: &str| -> Result<usize> {
        v.with_context(|| format!("{what} needs a number"))?
            .parse()
            .with_context(|| format!("{what} is a number"))
    };
    while let Some(a) = iter.next() {
        match a.as_str() {
            "--databases" => databases = number(iter.next(), "--databases")?,
            "--parallelism" => parallelism = number(iter.next(), "--parallelism")?,
            "--runs" => runs = number(iter.next(), "--runs")?,
            other => {
                bail!(
                    "bench server: unknown argument {other:?} (--databases, --parallelism, --runs)"
                )
            }
        }
    }
    ensure!(
        databases > 0 && runs > 0,
        "--databases and --runs must be at least 1"
    );
    ensure!(
        (2..=16).contains(&parallelism),
        "--parallelism is 2 to 16 (SERVER_PARALLELISM's range; 1 is the baseline)"
    );
    if !docker::engine_available() {
        bail!("no Docker engine answers: run `bash .ci/install-docker.sh` (as root) first");
    }
    let matrix = Matrix::load()?;
    let cell = matrix.select(&[CELL.to_string()])?[0].clone();
    let s3_image = matrix.s3_image().to_string();
    if [cell.server.as_str(), s3_image.as_str(), cell.base.as_str()]
        .iter()
        .any(|i| !docker::image_exists(i).unwrap_or(false))
    {
        crate::bootstrap::run(&[])?;
    }
    if !docker::image_exists(&cell.image())? {
        crate::images::build(std::slice::from_ref(&cell.name))?;
    }
    if std::process::Command::new("psql")
        .arg("--version")
        .output()
        .is_err()
    {
        // The seeding runs the host's psql against the server's mapped port.
        crate::install_deps()?;
    }
    let settings = Settings {
        image: cell.image(),
        server_image: cell.server.clone(),
        s3_image,
        databases,
        parallelism,
        runs,
    };
    tokio::runtime::Runtime::new()?.block_on(bench(&settings))
}

struct Settings {
    image: String,
    server_image: String,
    s3_image: String,
    databases: usize,
    parallelism: usize,
    runs: usize,
}

/// One backup of the set.
#[derive(Debug, Clone)]
struct Sample {
    parallelism: usize,
    /// `docker run` to exit.
    wall_s: f64,
    /// The runner's own `duration_ms`.
    runner_s: f64,
    peak_rss: u64,
    stored_bytes: u64,
    dump_bytes: u64,
    /// The databases' dump times (each member's started_at to finished_at), added up.
    member_s: f64,
    /// The most members whose dumps overlapped at one moment.
    most_at_once: usize,
}

async fn bench(s: &Settings) -> Result<()> {
    let load_start = super::catalog::load_average();
    let network = unique("bench-net");
    let (server, s3) = tokio::join!(
        DbContainer::postgres(&s.server_image, &network),
        S3Container::start(&s.s3_image, &network)
    );
    let (server, s3) = (server?, s3?);
    s3.create_bucket(BUCKET).await?;
    let version = server.psql("postgres", "SHOW server_version;").await?;
    let machine = format!(
        "{}; {} (PostgreSQL {}) and {} in containers on the same machine, runner image {}",
        super::hardware(),
        s.server_image,
        version.trim(),
        s.s3_image,
        s.image
    );
    println!("bench: {machine}");

    let t = Instant::now();
    server
        .psql("postgres", "CREATE DATABASE bench_template;")
        .await?;
    server.psql("bench_template", SEED).await?;
    server.psql("bench_template", "VACUUM ANALYZE;").await?;
    let names: Vec<String> = (1..=s.databases).map(|i| format!("bench_{i:03}")).collect();
    let create: String = names
        .iter()
        .map(|n| format!("CREATE DATABASE {n} TEMPLATE bench_template;\n"))
        .collect();
    server.psql("postgres", &create).await?;
    server
        .psql("postgres", "DROP DATABASE bench_template;")
        .await?;
    let db_bytes: u64 = server
        .psql(
            "postgres",
            "SELECT sum(pg_database_size(datname)) FROM pg_database WHERE datname LIKE 'bench\\_%';",
        )
        .await?
        .trim()
        .parse()
        .context("the databases' size")?;
    println!(
        "bench: {} databases, {:.1} MiB in all, made in {:.1}s",
        s.databases,
        super::report::mib(db_bytes),
        t.elapsed().as_secs_f64()
    );

    let mut samples = Vec::new();
    for round in 0..s.runs {
        let order = if round % 2 == 0 {
            [1, s.parallelism]
        } else {
            [s.parallelism, 1]
        };
        for parallelism in order {
            let job_id = format!("bench-p{parallelism}-r{round}");
            let sample = backup(s, &network, &server, &s3, &job_id, parallelism).await?;
            println!(
                "bench: round {}, SERVER_PARALLELISM={parallelism}: {:.2}s (runner {:.2}s), peak RSS {:.1} MiB, dumps {:.2}s added up, {} at once at most",
                round + 1,
                sample.wall_s,
                sample.runner_s,
                super::report::mib(sample.peak_rss),
                sample.member_s,
                sample.most_at_once
            );
            samples.push(sample);
        }
    }
    let load_end = super::catalog::load_average();
    let table = table(s, &samples);
    println!("\n{table}");
    write(
        s,
        &machine,
        db_bytes,
        &load_start,
        &load_end,
        &samples,
        &table,
    )
}

/// One backup of every `bench_*` database as a set, and what its log and manifest say.
async fn backup(
    s: &Settings,
    network: &str,
    server: &DbContainer,
    s3: &S3Container,
    job_id: &str,
    parallelism: usize,
) -> Result<Sample> {
    let started = Instant::now();
    let out = Job::new(&s.image, network)
        .env("DB_HOST", &server.name)
        .env("DB_PORT", "5432")
        .env("DB_NAME", "*")
        .env("DB_INCLUDE", "bench_*")
        .env("DB_USERNAME", "postgres")
        .env("DB_PASSWORD", &server.password)
        .env("SERVER_PARALLELISM", parallelism.to_string())
        .env("JOB_ID", job_id)
        .env("PROGRESS_INTERVAL_SECS", "0")
        .envs(&s3.job_env(BUCKET))
        .run()
        .await?;
    let wall_s = started.elapsed().as_secs_f64();
    ensure!(
        out.code == 0,
        "the backup with SERVER_PARALLELISM={parallelism} failed (exit {}):\n{}",
        out.code,
        out.stderr
    );
    let field = |name: &str| {
        super::log_field(&out.stderr, name)
            .with_context(|| format!("no {name}= in the runner's log:\n{}", out.stderr))
    };
    let runner_s = field("duration_ms")? as f64 / 1000.0;
    let peak_rss = field("peak_rss_bytes")? as u64;

    let keys = s3.list_keys(BUCKET).await?;
    let manifest_key = keys
        .iter()
        .find(|k| k.contains(&format!("-{job_id}/")) && k.ends_with(".manifest.json"))
        .with_context(|| format!("no set manifest of {job_id} in the bucket: {keys:?}"))?;
    let m: Value = serde_json::from_slice(&s3.get(BUCKET, manifest_key).await?)?;
    let set = &m["set"];
    let members = set["members"]
        .as_array()
        .context("the manifest has no set.members")?;
    ensure!(
        members.len() == s.databases && set["parallelism"] == parallelism,
        "the set of {job_id} lists {} databases at parallelism {} (expected {} at {parallelism})",
        members.len(),
        set["parallelism"],
        s.databases
    );
    let mut spans = Vec::new();
    let (mut stored_bytes, mut dump_bytes) = (m["bytes"].as_u64().unwrap_or(0), 0);
    for member in members {
        let time = |f: &str| -> Result<DateTime<Utc>> {
            Ok(member[f]
                .as_str()
                .with_context(|| format!("member without {f}"))?
                .parse()?)
        };
        spans.push((time("started_at")?, time("finished_at")?));
        stored_bytes += member["bytes"].as_u64().unwrap_or(0);
        dump_bytes += member["raw_bytes"].as_u64().unwrap_or(0);
    }
    let member_s = spans
        .iter()
        .map(|(a, b)| (*b - *a).num_milliseconds() as f64 / 1000.0)
        .sum();
    Ok(Sample {
        parallelism,
        wall_s,
        runner_s,
        peak_rss,
        stored_bytes,
        dump_bytes,
        member_s,
        most_at_once: most_at_once(&spans),
    })
}

/// The largest number of intervals that overlap at one moment.
fn most_at_once<T: Ord + Copy>(spans: &[(T, T)]) -> usize {
    // Ends sort before starts at the same moment: touching intervals do not overlap.
    let mut events: Vec<(T, i32)> = spans.iter().flat_map(|&(a, b)| [(a, 1), (b, -1)]).collect();
    events.sort();
    let (mut now, mut most) = (0i32, 0i32);
    for (_, delta) in events {
        now += delta;
        most = most.max(now);
    }
    most as usize
}

fn of(samples: &[Sample], parallelism: usize) -> Vec<&Sample> {
    samples
        .iter()
        .filter(|x| x.parallelism == parallelism)
        .collect()
}

/// The medians side by side, and every run's figures.
fn table(s: &Settings, samples: &[Sample]) -> String {
    let mut t = format!(
        "| {} databases, median of {} | Wall s (docker run) | Runner s | Peak RSS MiB | Dumps added up s | At once (most) | Stored MiB |\n|---|---|---|---|---|---|---|\n",
        s.databases, s.runs
    );
    for p in [1, s.parallelism] {
        let runs = of(samples, p);
        let med = |f: fn(&Sample) -> f64| median(runs.iter().map(|x| f(x)).collect());
        t.push_str(&format!(
            "| SERVER_PARALLELISM={p} | {:.2} | {:.2} | {:.1} | {:.2} | {} | {:.2} |\n",
            med(|x| x.wall_s),
            med(|x| x.runner_s),
            med(|x| super::report::mib(x.peak_rss)),
            med(|x| x.member_s),
            runs.iter().map(|x| x.most_at_once).max().unwrap_or(0),
            med(|x| super::report::mib(x.stored_bytes)),
        ));
    }
    let wall = |p| median(of(samples, p).iter().map(|x| x.wall_s).collect());
    let rss = |p| median(of(samples, p).iter().map(|x| x.peak_rss as f64).collect());
    t.push_str(&format!(
        "\nSERVER_PARALLELISM={} against 1: wall {:.2}× ({:+.2} s), peak RSS {:+.1} MiB.\n\nEvery run, in order:\n\n| Run | SERVER_PARALLELISM | Wall s | Runner s | Peak RSS MiB | Dumps added up s | At once |\n|---|---|---|---|---|---|---|\n",
        s.parallelism,
        wall(s.parallelism) / wall(1),
        wall(s.parallelism) - wall(1),
        (rss(s.parallelism) - rss(1)) / (1u64 << 20) as f64,
    ));
    for (i, x) in samples.iter().enumerate() {
        t.push_str(&format!(
            "| {} | {} | {:.2} | {:.2} | {:.1} | {:.2} | {} |\n",
            i + 1,
            x.parallelism,
            x.wall_s,
            x.runner_s,
            super::report::mib(x.peak_rss),
            x.member_s,
            x.most_at_once
        ));
    }
    t
}

fn write(
    s: &Settings,
    machine: &str,
    db_bytes: u64,
    load_start: &str,
    load_end: &str,
    samples: &[Sample],
    table: &str,
) -> Result<()> {
    let dir = root().join("benchmarks");
    std::fs::create_dir_all(&dir)?;
    let dump_mib = samples
        .first()
        .map_or(0.0, |x| super::report::mib(x.dump_bytes));
    let md = format!(
        "Machine: {machine}\n\n{} databases of {:.1} MiB on disk in all (`pg_database_size`, \
         the system catalogs every database has included; {dump_mib:.1} MiB of dumps), backed \
         up as one set into moto; {} rounds, the order of the two variants flipped each round. \
         Load average at the start: {load_start}; at the end: {load_end}. Taken {}.\n\n{table}",
        s.databases,
        super::report::mib(db_bytes),
        s.runs,
        Utc::now().format("%Y-%m-%d")
    );
    std::fs::write(dir.join("server.md"), &md)?;
    let runs: Vec<Value> = samples
        .iter()
        .map(|x| {
            json!({
                "parallelism": x.parallelism,
                "wall_s": (x.wall_s * 1000.0).round() / 1000.0,
                "runner_s": x.runner_s,
                "peak_rss_bytes": x.peak_rss,
                "stored_bytes": x.stored_bytes,
                "dump_bytes": x.dump_bytes,
                "member_dumps_s": (x.member_s * 1000.0).round() / 1000.0,
                "most_at_once": x.most_at_once,
            })
        })
        .collect();
    std::fs::write(
        dir.join("server.json"),
        serde_json::to_string_pretty(&json!({
            "machine": machine,
            "image": s.image,
            "databases": s.databases,
            "database_bytes": db_bytes,
            "load_average": { "start": load_start, "end": load_end },
            "runs": runs,
        }))? + "\n",
    )?;
    println!("bench: wrote benchmarks/server.md and benchmarks/server.json");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlapping_dumps_are_counted() {
        assert_eq!(most_at_once::<u32>(&[]), 0);
        assert_eq!(most_at_once(&[(0, 2), (2, 4), (4, 6)]), 1);
        assert_eq!(most_at_once(&[(0, 5), (1, 2), (1, 3), (4, 6)]), 3);
    }
}
