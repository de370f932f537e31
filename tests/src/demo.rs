//! The demo of `cargo xtask demo <cell>`, for every engine: the cell's server and an S3 server
//! in containers, the engine's sample seeded, a backup by the cell's runner image into a bucket,
//! the data dropped (PostgreSQL, MySQL/MariaDB) or flushed (Redis/Valkey), a restore by the same
//! image into the emptied database, and the two compared.
//!
//! Starting the server, the sample, its fingerprint, the comparison and the runner's variables
//! are the scenario suite's ([`EngineUnderTest`]); an engine adds here only how to empty its
//! database and how to name what its fingerprint holds ([`DemoEngine`]).

use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};

use crate::containers::{unique, Job, JobOutput, S3Container};
use crate::matrix::Cell;
use crate::redis_client::Snapshot;
use crate::scenario::{Data, EngineUnderTest, Mysql, Postgres, Redis};

/// The bucket the demo's backups go to.
pub const BUCKET: &str = "demo";
/// The key prefix of the demo's backups (the runner derives the rest of the key).
pub const PREFIX: &str = "demo";

/// What the demo did, with the data it compared.
#[derive(Debug)]
pub struct Demo<F> {
    pub cell: Cell,
    /// The backup's object key, as the runner derived it.
    pub key: String,
    /// What the bucket held after the backup.
    pub stored: Vec<String>,
    /// The backup's manifest.
    pub manifest: serde_json::Value,
    /// What emptying the database did, in a few words.
    pub emptied: String,
    /// The fingerprint of the seeded data, read before the backup.
    pub before: F,
    /// The fingerprint of the restored data.
    pub after: F,
    /// The whole demo, containers included.
    pub took: Duration,
}

/// What the demo needs from an engine beyond the scenario suite's [`EngineUnderTest`].
pub trait DemoEngine: EngineUnderTest {
    /// What the runner restores into, in a few words (`database shop`).
    fn target(db: &Self::Db) -> String;

    /// Removes every object of `db`, leaving it empty for a restore; says what it did.
    fn empty(db: &Self::Db) -> impl Future<Output = Result<String>> + Send;

    /// What a fingerprint holds, in a few words.
    fn summary(fingerprint: &Self::Fingerprint) -> String;
}

impl DemoEngine for Postgres {
    fn target(db: &Self::Db) -> String {
        format!("database {}", db.name)
    }

    async fn empty(db: &Self::Db) -> Result<String> {
        db.server
            .psql(
                "postgres",
                &format!("DROP DATABASE {} WITH (FORCE);", db.name),
            )
            .await?;
        db.server
            .psql("postgres", &format!("CREATE DATABASE {};", db.name))
            .await?;
        Ok(format!(
            "dropped database {0} and created it empty",
            db.name
        ))
    }

    fn summary(fingerprint: &String) -> String {
        sql_summary(
            fingerprint,
            "schema objects, sequence values, per-table checksums",
            |line| {
                line.strip_prefix("customers ")
                    .map(|rest| ("customers", rest))
                    .or_else(|| line.strip_prefix("orders ").map(|rest| ("orders", rest)))
                    .and_then(|(table, rest)| {
                        Some(format!("{table}: {} rows", rest.split(' ').next()?))
                    })
            },
        )
    }
}

impl DemoEngine for Mysql {
    fn target(_db: &Self::Db) -> String {
        format!("database {}", crate::containers::MysqlContainer::APP_DB)
    }

    async fn empty(db: &Self::Db) -> Result<String> {
        let app_db = crate::containers::MysqlContainer::APP_DB;
        // The SQL helpers' futures are not `Send`: run them to completion on this thread.
        tokio::task::block_in_place(|| {
            tokio::runtime::Handle::current().block_on(db.server.root(
                "",
                &format!("DROP DATABASE {app_db}; CREATE DATABASE {app_db}"),
            ))
        })?;
        Ok(format!(
            "dropped database {app_db} and created it empty (app_user keeps its grants on it)"
        ))
    }

    fn summary(fingerprint: &String) -> String {
        sql_summary(
            fingerprint,
            "definitions, AUTO_INCREMENT counters, table checksums",
            |line| {
                let mut cols = line.split('\t');
                let table = cols.next()?.strip_prefix("app_db.")?;
                let checksum = cols.next()?;
                Some(format!("{table}: checksum {checksum}"))
            },
        )
    }
}

impl DemoEngine for Redis {
    fn target(db: &Self::Db) -> String {
        format!("server {}", db.server.alias())
    }

    async fn empty(db: &Self::Db) -> Result<String> {
        let endpoint = db.server.endpoint();
        endpoint.flush_all().await?;
        let left: u64 = endpoint.key_counts().await?.values().sum();
        ensure!(left == 0, "{left} keys left after FLUSHALL");
        Ok("flushed every logical database (FLUSHALL): 0 keys left".into())
    }

    fn summary(snapshot: &Snapshot) -> String {
        let per_db: Vec<String> = snapshot
            .key_counts()
            .iter()
            .map(|(db, n)| format!("db {db}: {n}"))
            .collect();
        format!(
            "{} keys ({}), compared key by key: type, value, expiry",
            snapshot.total_keys(),
            per_db.join(", ")
        )
    }
}

/// `n fingerprint lines (what): highlights`.
fn sql_summary(
    fingerprint: &str,
    what: &str,
    highlight: impl Fn(&str) -> Option<String>,
) -> String {
    let lines: Vec<&str> = fingerprint.lines().collect();
    let highlights: Vec<String> = lines.iter().filter_map(|l| highlight(l)).collect();
    format!(
        "{} fingerprint lines ({what}){}",
        lines.len(),
        if highlights.is_empty() {
            String::new()
        } else {
            format!("; {}", highlights.join(", "))
        }
    )
}

/// Runs the demo for `cell` with the engine its `engine` names, through the S3 server image
/// `s3_image`, printing what happens.
pub async fn run(cell: &Cell, s3_image: &str) -> Result<()> {
    let (cell, s3_image) = (cell.clone(), s3_image.to_string());
    // On a task of its own: the MySQL helpers block in place, which needs a worker thread.
    let done = match cell.engine.as_str() {
        Postgres::ENGINE => {
            tokio::spawn(async move { run_engine::<Postgres>(cell, s3_image).await.map(|_| ()) })
        }
        Mysql::ENGINE => {
            tokio::spawn(async move { run_engine::<Mysql>(cell, s3_image).await.map(|_| ()) })
        }
        Redis::ENGINE => {
            tokio::spawn(async move { run_engine::<Redis>(cell, s3_image).await.map(|_| ()) })
        }
        other => bail!("the demo has no engine {other:?} (cell {})", cell.name),
    };
    done.await.context("the demo's task")?
}

/// The demo for one cell of engine `E`: fails unless the restored data is the seeded data.
/// Call it from a multi-threaded runtime.
pub async fn run_engine<E: DemoEngine>(
    cell: Cell,
    s3_image: String,
) -> Result<Demo<E::Fingerprint>> {
    let started = Instant::now();
    let say = |line: String| println!("demo: {line}");
    let network = unique("demo");
    let s3 = tokio::spawn({
        let (image, network) = (s3_image.clone(), network.clone());
        async move { S3Container::start(&image, &network).await }
    });
    let db = E::start(&cell.server, &network, Data::Sample).await?;
    let s3 = s3.await.context("starting the S3 server")??;
    say(format!(
        "{}: {} server in container {}, S3 server ({s3_image}) in {}, {:.1}s",
        cell.name,
        cell.server,
        E::container_name(&db),
        s3.name,
        started.elapsed().as_secs_f64()
    ));

    let at = Instant::now();
    E::seed(&db, Data::Sample).await?;
    let before = E::fingerprint(&db, Data::Sample).await?;
    say(format!(
        "seeded the sample into {} in {:.1}s: {}",
        E::target(&db),
        at.elapsed().as_secs_f64(),
        E::summary(&before)
    ));

    s3.create_bucket(BUCKET).await?;
    let env: Vec<(String, String)> = E::env(&cell, &db)
        .into_iter()
        .chain(s3.job_env(BUCKET))
        .chain([("JOB_ID".to_string(), format!("demo-{}", cell.name))])
        .collect();
    let backup = Job::new(&cell.image(), &network)
        .envs(&env)
        .env("OPERATION_TYPE", "backup")
        .env("STORAGE_PREFIX", PREFIX);
    job(&cell, "backup", backup).await?;

    let stored = s3.list_keys(BUCKET).await?;
    let key = match stored
        .iter()
        .filter(|k| !k.ends_with(".manifest.json"))
        .collect::<Vec<_>>()[..]
    {
        [key] => key.clone(),
        _ => bail!("the bucket should hold one backup and its manifest: {stored:?}"),
    };
    let manifest_key = format!("{key}.manifest.json");
    ensure!(
        stored.contains(&manifest_key),
        "the backup {key} has no manifest: {stored:?}"
    );
    let manifest: serde_json::Value = serde_json::from_slice(&s3.get(BUCKET, &manifest_key).await?)
        .with_context(|| format!("parsing {manifest_key}"))?;
    say(format!(
        "stored s3://{BUCKET}/{key}: {} bytes ({} before compression), sha256 {}…, and its manifest \
         (server {}, client {})",
        manifest["bytes"],
        manifest["raw_bytes"],
        manifest["sha256"].as_str().unwrap_or("?").get(..12).unwrap_or("?"),
        manifest["server_version"].as_str().unwrap_or("?"),
        manifest["client_version"].as_str().unwrap_or("?"),
    ));

    let emptied = E::empty(&db).await?;
    say(emptied.clone());

    let restore = Job::new(&cell.image(), &network)
        .envs(&env)
        .env("OPERATION_TYPE", "restore")
        .env("BACKUP_PATH", &key);
    job(&cell, "restore", restore).await?;

    let after = E::fingerprint(&db, Data::Sample)
        .await
        .context("reading the restored data")?;
    let differences = E::differences(&before, &after);
    ensure!(
        differences.is_empty(),
        "the restored data differs from the seeded data in {} ways:\n  {}",
        differences.len(),
        differences
            .iter()
            .take(25)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n  ")
    );
    let took = started.elapsed();
    say(format!(
        "restored {} matches the seeded data: {}",
        E::target(&db),
        E::summary(&after)
    ));
    say(format!(
        "{} done in {:.1}s; removing the containers",
        cell.name,
        took.as_secs_f64()
    ));
    Ok(Demo {
        cell,
        key,
        stored,
        manifest,
        emptied,
        before,
        after,
        took,
    })
}

/// Runs a job of the cell's image, printing the command and the runner's log.
async fn job(cell: &Cell, operation: &str, job: Job) -> Result<JobOutput> {
    println!(
        "demo: docker run {} with OPERATION_TYPE={operation}",
        cell.image()
    );
    let at = Instant::now();
    let out = job.run().await?;
    for line in out.stderr.lines() {
        println!("  | {line}");
    }
    ensure!(
        out.code == 0,
        "the {operation} exited with {}:\n{}",
        out.code,
        out.stderr
    );
    println!(
        "demo: {operation} done in {:.1}s",
        at.elapsed().as_secs_f64()
    );
    Ok(out)
}
