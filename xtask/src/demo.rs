//! `cargo xtask demo [cell]`: the main job end to end. Without a cell: the PostgreSQL runner
//! binary against a real PostgreSQL server on this machine, a backup into a local directory (the
//! embedded default storage), a restore, and a comparison. With a cell of any engine: the
//! harness's demo ([`harness::demo`]) with the cell's image and server in containers.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, ensure, Context, Result};
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

/// The image of one cell against its server in containers, through an S3 server: the harness's
/// demo ([`harness::demo`]), after bootstrapping and building whatever image is missing.
fn run_image(name: &str) -> Result<()> {
    let matrix = Matrix::load()?;
    let cell = matrix.select(&[name.to_string()])?[0].clone();
    if !docker::engine_available() {
        bail!("no Docker engine answers: run `bash .ci/install-docker.sh` (as root) first");
    }
    if cell.engine == "postgres" && !has_psql() {
        // The demo reads the PostgreSQL sample with the host's psql.
        install_deps()?;
    }
    let s3_image = matrix.s3_image().to_string();
    let needed = [cell.server.clone(), s3_image.clone(), cell.base.clone()];
    if needed
        .iter()
        .any(|i| !docker::image_exists(i).unwrap_or(false))
    {
        crate::bootstrap::run(&[])?;
    }
    if !docker::image_exists(&cell.image())? {
        crate::images::build(std::slice::from_ref(&cell.name))?;
    }
    tokio::runtime::Runtime::new()?.block_on(harness::demo::run(&cell, &s3_image))
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

fn has_psql() -> bool {
    Command::new("psql")
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

fn has_moto() -> bool {
    Command::new("python3")
        .args(["-c", "import moto"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}
