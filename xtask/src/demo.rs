//! The main job end to end on this machine: a real PostgreSQL server, a backup into a local
//! directory (the embedded default storage), a restore, and a comparison.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, ensure, Context, Result};
use harness::containers::{unique, DbContainer, Job, S3Container};
use harness::matrix::Matrix;
use harness::pg_sample::{FINGERPRINT, SEED};
use harness::PgServer;

use crate::{cargo, docker, install_deps, root};

const KEY: &str = "demo/shop.pgdump.zst";

pub fn run(args: &[String]) -> Result<()> {
    match args {
        [] => run_local(),
        [cell] => run_image(cell),
        _ => bail!("usage: cargo xtask demo [cell]"),
    }
}

/// The image of one cell against its server in containers, through an S3 server.
fn run_image(name: &str) -> Result<()> {
    let matrix = Matrix::load()?;
    let cell = matrix.select(&[name.to_string()])?[0].clone();
    if cell.engine != "postgres" {
        bail!(
            "the demo runs PostgreSQL cells (e.g. postgres-17); for {} run its harness: cargo xtask test {}",
            cell.name,
            cell.name
        );
    }
    if !docker::engine_available() {
        bail!("no Docker engine answers: run `bash .ci/install-docker.sh` (as root) first");
    }
    let s3_image = matrix.s3_image().to_string();
    let mut needed = vec![cell.server.clone(), s3_image.clone()];
    needed.push(cell.base.clone());
    if needed
        .iter()
        .any(|i| !docker::image_exists(i).unwrap_or(false))
    {
        crate::bootstrap::run(&[])?;
    }
    if !docker::image_exists(&cell.image())? {
        crate::images::build(std::slice::from_ref(&cell.name))?;
    }
    tokio::runtime::Runtime::new()?.block_on(async {
        let network = unique("demo");
        let (db, s3) = tokio::join!(
            DbContainer::postgres(&cell.server, &network),
            S3Container::start(&s3_image, &network)
        );
        let (db, s3) = (db?, s3?);
        println!("demo: {} server in container {}, S3 server in {}", cell.server, db.name, s3.name);
        s3.create_bucket("backups").await?;
        db.psql("postgres", "CREATE DATABASE shop;").await?;
        db.psql("shop", SEED).await?;
        let before = db.psql("shop", FINGERPRINT).await?;
        let env: Vec<(String, String)> = [
            ("DB_HOST", db.name.clone()),
            ("DB_NAME", "shop".into()),
            ("DB_PASSWORD", db.password.clone()),
            ("STORAGE_TYPE", "minio".into()),
            ("STORAGE_ENDPOINT", s3.endpoint_in_network()),
            ("STORAGE_BUCKET", "backups".into()),
            ("STORAGE_ACCESS_KEY_ID", "demo".into()),
            ("STORAGE_SECRET_ACCESS_KEY", "demo-secret".into()),
            ("BACKUP_PATH", KEY.into()),
            ("JOB_ID", "demo".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        for (operation, database) in [("backup", "shop"), ("restore", "shop_restored")] {
            println!("demo: docker run {} with OPERATION_TYPE={operation}", cell.image());
            let out = Job::new(&cell.image(), &network)
                .envs(&env)
                .env("DB_NAME", database)
                .env("OPERATION_TYPE", operation)
                .run()
                .await?;
            eprint!("{}", out.stderr);
            ensure!(out.code == 0, "{operation} exited with {}", out.code);
            if operation == "backup" {
                println!("demo: stored in the bucket: {}", s3.list_keys("backups").await?.join(", "));
                db.psql("postgres", "DROP DATABASE shop;").await?;
                println!("demo: dropped database shop");
            }
        }
        let after = db.psql("shop_restored", FINGERPRINT).await?;
        ensure!(after == before, "the restored database differs:\n--- before\n{before}\n--- after\n{after}");
        println!(
            "demo: shop_restored matches the original ({} fingerprint lines: schema, sequences, per-table checksums)",
            after.lines().count()
        );
        Ok(())
    })
}

/// The binary against a PostgreSQL server run from Debian's packages, into a local directory.
fn run_local() -> Result<()> {
    if !Path::new("/usr/lib/postgresql").is_dir() || !has_moto() {
        install_deps()?;
    }
    cargo(&["build", "--release", "-p", "backup-runner-postgres"])?;
    let runner = root().join("target/release/backup-runner-postgres");
    let storage = root().join("demo-backups");

    tokio::runtime::Runtime::new()?.block_on(async {
        let pg = PgServer::start().await?;
        println!("demo: PostgreSQL {} on {}:{}", pg.major(), pg.host(), pg.port());
        pg.psql("postgres", "CREATE DATABASE shop;").await?;
        pg.psql("shop", SEED).await?;
        let before = pg.psql("shop", FINGERPRINT).await?;

        let base = [
            ("DB_HOST", pg.host().to_string()),
            ("DB_PORT", pg.port().to_string()),
            ("DB_NAME", "shop".to_string()),
            ("DB_USERNAME", pg.superuser().to_string()),
            ("DB_PASSWORD", pg.password().to_string()),
            ("STORAGE_LOCAL_DIR", storage.display().to_string()),
            ("BACKUP_PATH", KEY.to_string()),
            ("JOB_ID", "demo".to_string()),
        ];
        step(&runner, &base, "backup")?;
        pg.psql("postgres", "DROP DATABASE shop;").await?;
        println!("demo: dropped database shop");
        step(&runner, &base, "restore")?;

        let after = pg.psql("shop", FINGERPRINT).await?;
        ensure!(
            after == before,
            "the restored database differs from the original:\n--- before\n{before}\n--- after\n{after}"
        );
        let tables: Vec<&str> = after
            .lines()
            .filter(|l| l.starts_with("customers ") || l.starts_with("orders "))
            .collect();
        println!(
            "demo: restored database matches the original ({} fingerprint lines: schema, sequences, {})",
            after.lines().count(),
            tables.join(", ")
        );
        println!(
            "demo: the backup and its manifest are in {}",
            storage.join("demo").display()
        );
        Ok(())
    })
}

fn step(runner: &Path, vars: &[(&str, String)], operation: &str) -> Result<()> {
    println!("demo: OPERATION_TYPE={operation}");
    let started = Instant::now();
    let status = Command::new(runner)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(vars.iter().map(|(k, v)| (*k, v.as_str())))
        .env("OPERATION_TYPE", operation)
        .status()
        .with_context(|| format!("running {}", runner.display()))?;
    if !status.success() {
        bail!("{operation} failed ({status})");
    }
    println!(
        "demo: {operation} done in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn has_moto() -> bool {
    Command::new("python3")
        .args(["-c", "import moto"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}
