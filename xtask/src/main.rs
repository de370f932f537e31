//! `cargo xtask <command>`: developer and CI tasks for backup-runner.

mod bench;
mod bootstrap;
mod demo;
mod docker;
mod images;
mod manifests;

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};

const USAGE: &str = "usage: cargo xtask <command>

commands:
  demo [cell]
          without a cell: start a throwaway PostgreSQL server, seed it, back it up into
          ./demo-backups, drop it, restore it and compare (installs what it needs);
          with a cell of any engine (postgres-18, mariadb-11.8, mysql-9.7, valkey-9.1…):
          the cell's server and an S3 server in containers, the engine's sample seeded,
          backed up and restored by the cell's image after the data is dropped or flushed,
          then compared (bootstraps and builds what is missing)
  deps    install what the demo and the tests need (Debian packages, moto)
  bootstrap [--force]
          make the base and server images locally when they cannot be pulled
  build [cell…]
          build the runner binaries and images (all buildable cells of images/matrix.toml)
  test [cell…]
          run the image harness: real servers and the runner image, backup → restore → compare
  push [cell…]
          push the images to $REGISTRY as <version>, <client tools' full version> and
          <version>-<runner version>-<commit> (-dirty-<image id> after a build from a tree
          with uncommitted changes), each prefixed with $TAG_PREFIX, and print the digest;
          skipped without REGISTRY
  bench [postgres] [--sizes 100,1024,2048]
          the runner against pg_dump alone, the gzip | aws s3 cp script and the Plan B way, on
          the same data; writes benchmarks/postgres.md, .json and .png
  bench mysql [--sizes 1024] [--float-rows 1000000]
          the runner against mariadb-dump alone and the client reading a local file, plus the
          cost of the exact-FLOAT repairs; writes benchmarks/mysql.md and .json
  bench list [--backups 10000]
          list, check and prune over that many synthetic backups in moto, cold (every
          manifest read) and warm (the catalog index); writes benchmarks/catalog.md and .json
  bench encryption [--sizes 1024] [--runs 5]
          the runner's backup, verify and restore without and with age encryption, in
          alternating runs on the same data; writes benchmarks/encryption.md and .json
  bench server [--databases 50] [--parallelism 4] [--runs 3]
          a whole-server backup (DB_NAME=*) of that many small databases through the
          postgres-18 image into moto, SERVER_PARALLELISM=1 against the given parallelism in
          alternating rounds: wall time and the runner's peak RSS; writes
          benchmarks/server.md and .json
  manifests [cell…]
          write the deployment manifests under deploy/ (Kubernetes kustomize bases and
          components, Cloud Run jobs, Prometheus alerts) for all buildable cells or the named ones";

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("demo") => demo::run(&args[1..]),
        Some("deps") => install_deps(),
        Some("bootstrap") => bootstrap::run(&args[1..]),
        Some("build") => images::build(&args[1..]),
        Some("test") => images::test(&args[1..]),
        Some("push") => images::push(&args[1..]),
        Some("bench") => bench::run(&args[1..]),
        Some("manifests") => manifests::run(&args[1..]),
        Some("-h" | "--help") | None => {
            println!("{USAGE}");
            Ok(())
        }
        Some(other) => bail!("unknown command {other:?}\n\n{USAGE}"),
    }
}

pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
}

pub fn install_deps() -> Result<()> {
    let status = Command::new("bash")
        .arg(root().join(".ci/install-test-deps.sh"))
        .status()
        .context("running .ci/install-test-deps.sh")?;
    if !status.success() {
        bail!(".ci/install-test-deps.sh failed ({status})");
    }
    Ok(())
}

/// Runs cargo in the workspace root, failing on a non-zero exit.
pub fn cargo(args: &[&str]) -> Result<()> {
    cargo_with_env(args, &[])
}

pub fn cargo_with_env(args: &[&str], env: &[(&str, &str)]) -> Result<()> {
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(args)
        .envs(env.iter().copied())
        .current_dir(root())
        .status()
        .with_context(|| format!("running cargo {}", args.join(" ")))?;
    if !status.success() {
        bail!("cargo {} failed ({status})", args.join(" "));
    }
    Ok(())
}
