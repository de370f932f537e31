//! `cargo xtask <command>`: developer and CI tasks for backup-runner.

mod demo;

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};

const USAGE: &str = "usage: cargo xtask <command>

commands:
  demo    start a throwaway PostgreSQL server, seed it, back it up into ./demo-backups,
          drop it, restore it and compare (installs the test dependencies when missing)
  deps    install what the demo and the tests need (Debian packages, moto)";

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("demo") => demo::run(),
        Some("deps") => install_deps(),
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

/// Runs a command in the workspace root, failing on a non-zero exit.
pub fn cargo(args: &[&str]) -> Result<()> {
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(args)
        .current_dir(root())
        .status()
        .with_context(|| format!("running cargo {}", args.join(" ")))?;
    if !status.success() {
        bail!("cargo {} failed ({status})", args.join(" "));
    }
    Ok(())
}
