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

    // The image must run its binary and know its version. Docker 20.10 now and then loses the
    // output of a container that exits at once (seen on a loaded machine): an empty answer is
    // asked again, a wrong one is not.
    let mut attempts = 0;
    let (out, version) = loop {
        attempts += 1;
        let out = docker::docker()
            .args(["run", "--rm", &cell.image(), "--version"])
            .output()?;
        let version = String::from_utf8_lossy(&out.stdout).into_owned();
        if !version.trim().is_empty() || attempts == 3 {
            break (out, version);
        }
    };
    ensure!(
        out.status.success() && version.contains(&format!(" {})", cell.version)),
        "{} --version printed {version:?} ({}; stderr: {})",
        cell.image(),
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
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

/// Pushes the given cells' images to `$REGISTRY` (each tag prefixed with `$TAG_PREFIX`) under
/// the tags of [`push_tags`], and prints the digest the registry holds them under.
pub fn push(args: &[String]) -> Result<()> {
    let registry = std::env::var("REGISTRY").unwrap_or_default();
    let registry = registry.trim().trim_end_matches('/');
    if registry.is_empty() {
        println!("xtask: push skipped: no registry configured (set REGISTRY=registry.example.com/team to push)");
        return Ok(());
    }
    require_engine()?;
    let prefix = std::env::var("TAG_PREFIX").unwrap_or_default();
    let (matrix, names) = selected(args)?;
    for name in names {
        push_cell(matrix.cell(&name).expect("selected"), registry, &prefix)?;
    }
    Ok(())
}

/// What an image says about itself: its labels and the client packages it was built with.
struct ImageFacts {
    /// The image id (`sha256:…`).
    id: String,
    /// `org.opencontainers.image.revision`: the commit, `-dirty` when built from a tree with
    /// uncommitted changes.
    revision: String,
    /// `org.opencontainers.image.version`: the runner's version.
    runner_version: String,
    /// `io.backup-runner.engine-version`: the cell's version the binary was built for.
    engine_version: String,
    /// `/usr/share/backup-runner/packages.txt`: `<package> <Debian version>` lines.
    packages: String,
}

impl ImageFacts {
    fn read(image: &str) -> Result<ImageFacts> {
        let out = docker::docker()
            .args(["image", "inspect", "--format", "{{json .}}", image])
            .output()
            .context("running docker image inspect")?;
        ensure!(
            out.status.success(),
            "docker image inspect {image}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        let info: serde_json::Value = serde_json::from_slice(&out.stdout)
            .with_context(|| format!("parsing docker image inspect {image}"))?;
        let label = |name: &str| {
            info["Config"]["Labels"][name]
                .as_str()
                .unwrap_or_default()
                .to_string()
        };
        let packages = docker::docker()
            .args(["run", "--rm", "--entrypoint", "cat", image])
            .arg("/usr/share/backup-runner/packages.txt")
            .output()
            .context("running docker run")?;
        ensure!(
            packages.status.success(),
            "{image} has no readable /usr/share/backup-runner/packages.txt: {}",
            String::from_utf8_lossy(&packages.stderr).trim()
        );
        Ok(ImageFacts {
            id: info["Id"].as_str().unwrap_or_default().to_string(),
            revision: label("org.opencontainers.image.revision"),
            runner_version: label("org.opencontainers.image.version"),
            engine_version: label("io.backup-runner.engine-version"),
            packages: String::from_utf8_lossy(&packages.stdout).into_owned(),
        })
    }
}

/// The upstream part of a Debian package version, up to the first character that is not a digit
/// or a dot: `1:11.8.9+ds-0+deb13u1` → `11.8.9`, `5:7.0.15-1~deb12u10` → `7.0.15`.
fn upstream_version(debian: &str) -> &str {
    let no_epoch = debian.split_once(':').map_or(debian, |(_, v)| v);
    let upstream = no_epoch.rsplit_once('-').map_or(no_epoch, |(v, _)| v);
    let end = upstream
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(upstream.len());
    upstream[..end].trim_end_matches('.')
}

/// The full version of the cell's client tools (`17.12` for postgres-17), as the image's
/// package record (written by dpkg at build time) gives it: the first of the cell's packages
/// whose version is the cell's version or a release of it.
fn full_version(cell: &Cell, packages: &str) -> Result<String> {
    let installed: Vec<(&str, &str)> = packages.lines().filter_map(|l| l.split_once(' ')).collect();
    cell.packages
        .iter()
        .filter_map(|p| installed.iter().find(|(name, _)| name == p))
        .map(|(_, version)| upstream_version(version))
        .find(|v| *v == cell.version || v.starts_with(&format!("{}.", cell.version)))
        .map(str::to_string)
        .with_context(|| {
            format!(
                "none of the packages of {} ({}) has version {} or a release of it; the image holds:\n{}",
                cell.name,
                cell.packages.join(", "),
                cell.version,
                packages.trim()
            )
        })
}

/// The tags a cell's image is pushed under, each after `prefix`:
///
/// - the cell's version (`17`, `11.8`): the newest build for that server version;
/// - the client tools' full version (`17.12`, `11.8.9`): the newest build with those tools;
/// - `<cell version>-<runner version>-<commit, 7 hex>` (`17-0.1.0-aaf95ba`): one build of one
///   source revision, never moved. An image built from a tree with uncommitted changes gets
///   `-dirty-<image id, 12 hex>` after the commit instead, so the tag still names one image and
///   shows that no commit holds its source.
fn push_tags(cell: &Cell, facts: &ImageFacts, prefix: &str) -> Result<Vec<String>> {
    ensure!(
        facts.engine_version == cell.version,
        "the image was built for version {:?}, not {}: rebuild it with `cargo xtask build {}`",
        facts.engine_version,
        cell.version,
        cell.name
    );
    ensure!(
        !facts.runner_version.is_empty() && facts.runner_version != "unknown",
        "the image has no runner version label: rebuild it with `cargo xtask build {}`",
        cell.name
    );
    let (commit, dirty) = match facts.revision.strip_suffix("-dirty") {
        Some(commit) => (commit, true),
        None => (facts.revision.as_str(), false),
    };
    ensure!(
        commit.len() >= 7 && commit.chars().all(|c| c.is_ascii_hexdigit()),
        "the image records no source revision ({:?}): build it in a git checkout",
        facts.revision
    );
    let mut immutable = format!("{}-{}-{}", cell.version, facts.runner_version, &commit[..7]);
    if dirty {
        let id = facts.id.trim_start_matches("sha256:");
        ensure!(id.len() >= 12, "unreadable image id {:?}", facts.id);
        immutable.push_str(&format!("-dirty-{}", &id[..12]));
    }
    let mut tags = vec![
        cell.version.clone(),
        full_version(cell, &facts.packages)?,
        immutable,
    ];
    tags.dedup();
    Ok(tags.into_iter().map(|t| format!("{prefix}{t}")).collect())
}

fn push_cell(cell: &Cell, registry: &str, prefix: &str) -> Result<()> {
    let image = cell.image();
    ensure!(
        docker::image_exists(&image)?,
        "there is no image {image}: run `cargo xtask build {}` first",
        cell.name
    );
    let facts = ImageFacts::read(&image)?;
    let tags = push_tags(cell, &facts, prefix)?;
    if facts.revision.ends_with("-dirty") {
        println!(
            "xtask: {image} was built from a tree with uncommitted changes ({}): its revision tag {} is marked dirty",
            facts.revision,
            tags.last().expect("three tags")
        );
    }
    let repo = format!("{registry}/backup-runner-{}", cell.product());
    let mut digests = Vec::new();
    for tag in &tags {
        let target = format!("{repo}:{tag}");
        let tagged = docker::docker().args(["tag", &image, &target]).output()?;
        ensure!(
            tagged.status.success(),
            "docker tag {image} {target}: {}",
            String::from_utf8_lossy(&tagged.stderr).trim()
        );
        let out = docker::docker().args(["push", &target]).output()?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        ensure!(
            out.status.success(),
            "docker push {target} failed:\n{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // The last line: `<tag>: digest: sha256:… size: …`.
        let digest = stdout
            .split_whitespace()
            .skip_while(|w| *w != "digest:")
            .nth(1)
            .with_context(|| format!("docker push {target} printed no digest:\n{stdout}"))?;
        println!("xtask: pushed {target}");
        digests.push(digest.to_string());
    }
    digests.dedup();
    ensure!(
        digests.len() == 1,
        "the tags of {image} were pushed as different manifests: {digests:?}"
    );
    println!("xtask: digest {repo}@{}", digests[0]);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cell(version: &str, packages: &[&str]) -> Cell {
        Cell {
            name: format!("x-{version}"),
            engine: "postgres".into(),
            flavor: None,
            version: version.into(),
            base: "debian:trixie-slim".into(),
            packages: packages.iter().map(|p| p.to_string()).collect(),
            apt_repo: None,
            server: "postgres:17".into(),
            buildable: true,
        }
    }

    fn facts(revision: &str, packages: &str) -> ImageFacts {
        ImageFacts {
            id: "sha256:287172afa2520123456789abcdef".into(),
            revision: revision.into(),
            runner_version: "0.1.0".into(),
            engine_version: "17".into(),
            packages: packages.into(),
        }
    }

    #[test]
    fn upstream_versions_drop_epoch_revision_and_repacking_suffixes() {
        for (debian, upstream) in [
            ("17.12-0+deb13u1", "17.12"),
            ("1:11.8.9+ds-0+deb13u1", "11.8.9"),
            ("1:10.11.19-0+deb12u1", "10.11.19"),
            ("9.7.4-2", "9.7.4"),
            ("5:7.0.15-1~deb12u10", "7.0.15"),
            ("8.1.1+dfsg1-3+deb13u3", "8.1.1"),
            ("9.1.2-1", "9.1.2"),
            ("17.6-1.pgdg120+1", "17.6"),
        ] {
            assert_eq!(upstream_version(debian), upstream, "{debian}");
        }
    }

    #[test]
    fn the_full_version_comes_from_the_cell_package_that_matches_its_version() {
        let pkgs = "ca-certificates 20250419+deb13u1\nsystemd-standalone-sysusers 262.1-1\nvalkey-tools 9.1.2-1\n";
        let valkey = cell("9.1", &["systemd-standalone-sysusers", "valkey-tools"]);
        assert_eq!(full_version(&valkey, pkgs).unwrap(), "9.1.2");
        // 10.19 (the client protocol's version) is not a release of 10.11.
        let maria = cell("10.11", &["mariadb-client"]);
        assert_eq!(
            full_version(&maria, "mariadb-client 1:10.11.19-0+deb12u1\n").unwrap(),
            "10.11.19"
        );
        assert!(full_version(&maria, "mariadb-client 1:10.19.2-1\n").is_err());
        assert!(full_version(&maria, "other 10.11.2-1\n").is_err());
    }

    #[test]
    fn tags_are_the_major_the_full_version_and_the_revision() {
        let pg = cell("17", &["postgresql-client-17"]);
        let pkgs = "postgresql-client-17 17.12-0+deb13u1\n";
        let sha = "aaf95ba88187231b8c56e53ff625b6a5cdf30542";
        assert_eq!(
            push_tags(&pg, &facts(sha, pkgs), "").unwrap(),
            ["17", "17.12", "17-0.1.0-aaf95ba"]
        );
        assert_eq!(
            push_tags(&pg, &facts(&format!("{sha}-dirty"), pkgs), "v-").unwrap(),
            ["v-17", "v-17.12", "v-17-0.1.0-aaf95ba-dirty-287172afa252"]
        );
        assert!(push_tags(&pg, &facts("unknown", pkgs), "").is_err());
        let mut other = facts(sha, pkgs);
        other.engine_version = "18".into();
        assert!(push_tags(&pg, &other, "").is_err());
    }
}
