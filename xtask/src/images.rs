//! `cargo xtask build|test|push [cell…]`: the runner images of images/matrix.toml.

use std::process::Command;

use anyhow::{bail, ensure, Context, Result};
use harness::matrix::{Cell, Matrix};

use crate::{cargo_with_env, docker, root};

fn selected(args: &[String]) -> Result<(Matrix, Vec<String>)> {
    let matrix = Matrix::load()?;
    let names = matrix
        .select(args)?
        .iter()
        .map(|c| c.name.clone())
        .collect();
    Ok((matrix, names))
}

fn require_engine() -> Result<()> {
    ensure!(
        docker::engine_available(),
        "no Docker engine answers: install and start one (bash .ci/install-docker.sh)"
    );
    Ok(())
}

/// Builds the binaries and images of the given cells (all buildable ones by default).
pub fn build(args: &[String]) -> Result<()> {
    require_engine()?;
    let (matrix, names) = selected(args)?;
    for name in names {
        let cell = matrix.cell(&name).expect("selected");
        build_cell(cell)?;
    }
    Ok(())
}

fn git(args: &[&str]) -> String {
    Command::new("git")
        .args(args)
        .current_dir(root())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}

fn build_cell(cell: &Cell) -> Result<()> {
    let started = std::time::Instant::now();
    println!("xtask: building {} ({})", cell.image(), cell.name);
    // The whole workspace, so features (and so artifacts) match the test build. Each engine
    // reads its own variables, so only this cell's engine crate is rebuilt.
    let engine = cell.engine.to_uppercase();
    cargo_with_env(
        &["build", "--release", "--workspace", "--bins"],
        &[
            (&format!("BACKUP_RUNNER_{engine}_VERSION"), &cell.version),
            (&format!("BACKUP_RUNNER_{engine}_FLAVOR"), cell.product()),
        ],
    )?;
    let context = root().join("target/image-context").join(&cell.name);
    std::fs::create_dir_all(&context)?;
    let binary = cell.binary();
    std::fs::copy(
        root().join("target/release").join(&binary),
        context.join(&binary),
    )
    .with_context(|| format!("copying {binary} into the image context"))?;
    // Symbols are half the binary; the image needs none of them.
    let stripped = Command::new("strip").arg(context.join(&binary)).status();
    if !matches!(stripped, Ok(s) if s.success()) {
        println!("xtask: strip is not available; the image carries an unstripped binary");
    }

    let mut dirty = git(&["status", "--porcelain"]);
    if dirty != "unknown" {
        dirty = if dirty.is_empty() {
            String::new()
        } else {
            "-dirty".into()
        };
    }
    let args: Vec<(String, String)> = [
        ("BASE", cell.base.clone()),
        ("BINARY", binary.clone()),
        ("PRODUCT", cell.product().to_string()),
        ("PACKAGES", cell.packages.join(" ")),
        ("APT_REPO", cell.apt_repo.clone().unwrap_or_default()),
        ("DB_VERSION", cell.version.clone()),
        (
            "REVISION",
            format!("{}{dirty}", git(&["rev-parse", "HEAD"])),
        ),
        ("CREATED", git(&["log", "-1", "--format=%cI"])),
        ("RUNNER_VERSION", env!("CARGO_PKG_VERSION").to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let dockerfile = root().join("images/Dockerfile");
    docker::build(&cell.image(), &dockerfile, &context, &args, &[])?;

    // The image must run its binary and know its version.
    let out = docker::docker()
        .args(["run", "--rm", &cell.image(), "--version"])
        .output()?;
    let version = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success() && version.contains(&format!(" {})", cell.version)),
        "{} --version printed {version:?}",
        cell.image()
    );
    // sid moves: keep the package versions each image was built with.
    let packages = docker::docker()
        .args(["run", "--rm", "--entrypoint", "cat", &cell.image()])
        .arg("/usr/share/backup-runner/packages.txt")
        .output()?;
    let packages = String::from_utf8_lossy(&packages.stdout).into_owned();
    std::fs::write(context.join("packages.txt"), &packages)?;
    println!(
        "xtask: built {} in {:.0}s: {} with {}",
        cell.image(),
        started.elapsed().as_secs_f64(),
        version.trim(),
        packages.lines().collect::<Vec<_>>().join(", ")
    );
    Ok(())
}

/// Runs the image harness for the given cells (all buildable ones by default).
pub fn test(args: &[String]) -> Result<()> {
    require_engine()?;
    let (matrix, names) = selected(args)?;
    let missing: Vec<String> = names
        .iter()
        .map(|n| matrix.cell(n).expect("selected").image())
        .filter(|image| !docker::image_exists(image).unwrap_or(false))
        .collect();
    if !missing.is_empty() {
        bail!(
            "missing images {}: run `cargo xtask build {}` first",
            missing.join(", "),
            args.join(" ")
        );
    }
    cargo_with_env(
        &[
            "test",
            "--release",
            "-p",
            "harness",
            "--test",
            "scenarios",
            "--test",
            "postgres_images",
            "--test",
            "mysql_images",
            "--test",
            "mysql_fidelity",
            "--test",
            "redis_images",
        ],
        &[
            ("HARNESS_CELLS", &names.join(",")),
            ("HARNESS_REQUIRE_DOCKER", "1"),
        ],
    )
}

/// Pushes the given cells' images to `$REGISTRY` (with an optional `$TAG_PREFIX`).
pub fn push(args: &[String]) -> Result<()> {
    let Ok(registry) = std::env::var("REGISTRY") else {
        println!("xtask: push skipped: no registry configured (set REGISTRY=registry.example.com/team to push)");
        return Ok(());
    };
    let prefix = std::env::var("TAG_PREFIX").unwrap_or_default();
    let (matrix, names) = selected(args)?;
    for name in names {
        let cell = matrix.cell(&name).expect("selected");
        let (repo, tag) = cell
            .image()
            .split_once(':')
            .map(|(r, t)| (r.to_string(), t.to_string()))
            .expect("name:tag");
        let target = format!("{}/{repo}:{prefix}{tag}", registry.trim_end_matches('/'));
        for step in [vec!["tag", &cell.image(), &target], vec!["push", &target]] {
            let status = docker::docker().args(&step).status()?;
            ensure!(status.success(), "docker {} failed", step.join(" "));
        }
        println!("xtask: pushed {target}");
    }
    Ok(())
}
