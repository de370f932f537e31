//! `cargo xtask bootstrap [--force]`: makes every image the runner images and the harness start
//! from, when they cannot be pulled.
//!
//! 1. Base images (the `base` of every buildable cell and of every server, e.g.
//!    `debian:bookworm-slim`): kept when present, else pulled, else made locally with
//!    `debootstrap --variant=minbase` and `docker import`ed under the same name, so the Dockerfiles
//!    are the same online and offline. The local rootfs is set up like the official Debian images
//!    (deb822 sources with updates and security, the docker apt/dpkg snippets, and for `-slim` the
//!    same path excludes). Several suites are bootstrapped concurrently: it is network-bound.
//! 2. Server images (`[[server]]` in `images/matrix.toml`): kept when present, else pulled, else
//!    built from `images/servers/<recipe>/Dockerfile` as stand-ins with the official images'
//!    names and interfaces.
//!
//! `--force` remakes everything. Needs root for debootstrap (only when a base must be made).

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use harness::matrix::Matrix;

use crate::{docker, root};

const USAGE: &str = "usage: cargo xtask bootstrap [--force]

Makes the base images (debian:<suite>[-slim]) and the server images listed in images/matrix.toml:
kept when present, else pulled, else made locally (debootstrap + docker import for bases,
images/servers/<recipe>/Dockerfile for servers).

  --force   remake every image even when it exists";

const MIRROR: &str = "http://deb.debian.org/debian";
const SECURITY_MIRROR: &str = "http://deb.debian.org/debian-security";
/// Where the rootfs trees are made (a disk-backed file system that allows device nodes).
const WORK_DIR: &str = "/var/tmp/xtask-bootstrap";

pub fn run(args: &[String]) -> Result<()> {
    let mut force = false;
    for arg in args {
        match arg.as_str() {
            "--force" => force = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            other => bail!("unknown argument {other:?}\n\n{USAGE}"),
        }
    }
    let total = Instant::now();
    ensure!(
        docker::engine_available(),
        "no Docker engine answers `docker info` (install and start one with .ci/install-docker.sh)"
    );
    let matrix = Matrix::load()?;
    let mut report = Report::default();
    clean_stale_work_dirs();

    let bases: BTreeSet<&str> = matrix
        .cells
        .iter()
        .filter(|c| c.buildable)
        .map(|c| c.base.as_str())
        .chain(matrix.servers.iter().map(|s| s.base.as_str()))
        .collect();
    make_bases(&bases, force, &mut report)?;

    for server in &matrix.servers {
        let step = format!("server {}", server.image);
        let start = Instant::now();
        if !force && docker::image_exists(&server.image)? {
            report.add(&step, "present, skipped", start);
            continue;
        }
        if docker::try_pull(&server.image) {
            report.add(&step, "pulled", start);
            continue;
        }
        let dir = root().join("images/servers").join(&server.recipe);
        let dockerfile = dir.join("Dockerfile");
        ensure!(
            dockerfile.is_file(),
            "{} cannot be pulled and there is no recipe {} to build it",
            server.image,
            dockerfile.display()
        );
        let mut build_args = vec![
            ("BASE".to_string(), server.base.clone()),
            ("PACKAGES".to_string(), server.packages.join(" ")),
        ];
        build_args.extend(server.args.iter().map(|(k, v)| (k.clone(), v.clone())));
        let labels = vec![
            (
                "backup-runner.stand-in-for".to_string(),
                server.image.clone(),
            ),
            ("backup-runner.recipe".to_string(), server.recipe.clone()),
            ("backup-runner.base".to_string(), server.base.clone()),
        ];
        println!(
            "bootstrap: building {} from {}",
            server.image,
            dockerfile.display()
        );
        let context = build_context(&dir, &server.recipe)?;
        docker::build(
            &server.image,
            &dockerfile,
            &context.path,
            &build_args,
            &labels,
        )?;
        drop(context);
        let versions = package_versions(&server.image, &server.packages);
        report.add(&step, &format!("built ({versions})"), start);
    }

    report.print(total.elapsed());
    Ok(())
}

/// The recipe's directory plus `host-ca-certificates.crt`, the host's trust store: builds that
/// fetch over HTTPS (pip) trust what the host trusts, which matters behind an intercepting proxy.
/// Recipes use it in a build stage of its own, so the final image does not contain it.
fn build_context(recipe_dir: &Path, recipe: &str) -> Result<WorkDir> {
    let ctx = WorkDir::create(&format!("context-{recipe}"))?;
    for entry in
        fs::read_dir(recipe_dir).with_context(|| format!("reading {}", recipe_dir.display()))?
    {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            fs::copy(entry.path(), ctx.path.join(entry.file_name()))
                .with_context(|| format!("copying {}", entry.path().display()))?;
        }
    }
    let host_ca = std::env::var_os("SSL_CERT_FILE")
        .map(PathBuf::from)
        .filter(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("/etc/ssl/certs/ca-certificates.crt"));
    if host_ca.is_file() {
        fs::copy(&host_ca, ctx.path.join("host-ca-certificates.crt"))
            .with_context(|| format!("copying {}", host_ca.display()))?;
    }
    Ok(ctx)
}

/// The installed versions of `packages` in `image`, for the record (sid moves).
fn package_versions(image: &str, packages: &[String]) -> String {
    let out = docker::docker()
        .args([
            "run",
            "--rm",
            "--entrypoint",
            "dpkg-query",
            image,
            "-W",
            "-f",
            "${Package} ${Version}, ",
        ])
        .args(packages)
        .stdin(Stdio::null())
        .output();
    match out {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout)
            .trim()
            .trim_end_matches(',')
            .to_string(),
        _ => "package versions unknown".to_string(),
    }
}

#[derive(Default)]
struct Report {
    rows: Vec<(String, String, Duration)>,
}

impl Report {
    fn add(&mut self, step: &str, outcome: &str, start: Instant) {
        self.add_duration(step, outcome, start.elapsed());
    }

    fn add_duration(&mut self, step: &str, outcome: &str, took: Duration) {
        println!("bootstrap: {step}: {outcome} [{}]", secs(took));
        self.rows
            .push((step.to_string(), outcome.to_string(), took));
    }

    fn print(&self, total: Duration) {
        let width = self.rows.iter().map(|r| r.0.len()).max().unwrap_or(0);
        let mut s = String::from("\nbootstrap summary:\n");
        for (step, outcome, took) in &self.rows {
            let _ = writeln!(s, "  {step:width$}  {:>7}  {outcome}", secs(*took));
        }
        let _ = writeln!(s, "  {:width$}  {:>7}", "total", secs(total));
        print!("{s}");
    }
}

fn secs(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

// --- base images ----------------------------------------------------------------------------

/// A Debian base image name taken apart: `debian:bookworm-slim` → suite `bookworm`, slim.
struct BaseSpec {
    name: String,
    suite: String,
    slim: bool,
}

impl BaseSpec {
    fn parse(name: &str) -> Result<BaseSpec> {
        let (repo, tag) = name.rsplit_once(':').unwrap_or((name, "latest"));
        ensure!(
            matches!(repo, "debian" | "library/debian" | "docker.io/library/debian"),
            "base image {name} cannot be pulled, and only debian:<suite>[-slim] can be made locally"
        );
        let (release, slim) = match tag.strip_suffix("-slim") {
            Some(release) => (release, true),
            None => (tag, false),
        };
        let suite = match release {
            "11" => "bullseye",
            "12" => "bookworm",
            "13" => "trixie",
            "latest" => "stable",
            other => other,
        };
        ensure!(
            !suite.is_empty() && suite.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'),
            "base image {name}: cannot tell the Debian suite from tag {tag:?}"
        );
        Ok(BaseSpec {
            name: name.to_string(),
            suite: suite.to_string(),
            slim,
        })
    }
}

fn make_bases(bases: &BTreeSet<&str>, force: bool, report: &mut Report) -> Result<()> {
    let mut todo = Vec::new();
    for &name in bases {
        let start = Instant::now();
        let step = format!("base {name}");
        if !force && docker::image_exists(name)? {
            report.add(&step, "present, skipped", start);
        } else if docker::try_pull(name) {
            report.add(&step, "pulled", start);
        } else {
            todo.push(BaseSpec::parse(name)?);
        }
    }
    if todo.is_empty() {
        return Ok(());
    }
    check_can_debootstrap()?;

    // All suites at once: debootstrap is mostly waiting (mirror, dpkg). Measured on 2 cores:
    // bookworm alone 80 s; bullseye + bookworm + trixie + sid in parallel 80 s in all.
    println!(
        "bootstrap: making {} locally with debootstrap ({} in parallel)",
        todo.iter()
            .map(|b| b.name.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        todo.len()
    );
    let wall = Instant::now();
    let results: Vec<(String, Result<Timings>)> = thread::scope(|scope| {
        let handles: Vec<_> = todo
            .iter()
            .map(|spec| (spec.name.clone(), scope.spawn(move || make_base(spec))))
            .collect();
        handles
            .into_iter()
            .map(|(name, h)| {
                let result = h
                    .join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("making {name} panicked")));
                (name, result)
            })
            .collect()
    });
    let mut failed = Vec::new();
    for (name, result) in results {
        match result {
            Ok(t) => report.add_duration(
                &format!("base {name}"),
                &format!(
                    "made locally (debootstrap {}, setup {}, import {}, {})",
                    secs(t.debootstrap),
                    secs(t.setup),
                    secs(t.import),
                    t.size
                ),
                t.debootstrap + t.setup + t.import,
            ),
            Err(e) => {
                eprintln!("bootstrap: base {name} failed: {e:#}");
                failed.push(name);
            }
        }
    }
    report.add(
        &format!("bases ({} in parallel)", todo.len()),
        "wall-clock time",
        wall,
    );
    ensure!(
        failed.is_empty(),
        "could not make base images {}",
        failed.join(", ")
    );
    Ok(())
}

fn check_can_debootstrap() -> Result<()> {
    let uid = Command::new("id")
        .arg("-u")
        .output()
        .context("running id -u")?;
    ensure!(
        String::from_utf8_lossy(&uid.stdout).trim() == "0",
        "base images must be made with debootstrap, which needs root: run `cargo xtask bootstrap` \
         as root (CI does), or pull the images"
    );
    let found = Command::new("debootstrap")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    ensure!(
        found,
        "debootstrap is not installed (.ci/install-docker.sh installs it)"
    );
    Ok(())
}

struct Timings {
    debootstrap: Duration,
    setup: Duration,
    import: Duration,
    size: String,
}

fn make_base(spec: &BaseSpec) -> Result<Timings> {
    let work = WorkDir::create(&spec.suite)?;
    let rootfs = work.path.join("rootfs");
    let log_path = work.path.join("debootstrap.log");
    let tag = &spec.name;

    println!("bootstrap: {tag}: debootstrap {} started", spec.suite);
    let start = Instant::now();
    let log =
        fs::File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?;
    let mut cmd = Command::new("debootstrap");
    cmd.args(["--variant=minbase", &spec.suite])
        .arg(&rootfs)
        .arg(MIRROR);
    // A suite newer than this debootstrap knows (the next testing) works with sid's script.
    if !Path::new("/usr/share/debootstrap/scripts")
        .join(&spec.suite)
        .exists()
    {
        cmd.arg("sid");
    }
    let status = cmd
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .status()
        .context("running debootstrap")?;
    if !status.success() {
        let text = fs::read_to_string(&log_path).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(25).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        bail!(
            "debootstrap {} failed ({status}); last lines of its log:\n{}",
            spec.suite,
            tail.join("\n")
        );
    }
    let debootstrap = start.elapsed();
    println!("bootstrap: {tag}: debootstrap done [{}]", secs(debootstrap));

    let start = Instant::now();
    setup_rootfs(&rootfs, spec)?;
    let size = du(&rootfs);
    let setup = start.elapsed();

    let start = Instant::now();
    import(&rootfs, spec)?;
    let import = start.elapsed();
    drop(work);
    Ok(Timings {
        debootstrap,
        setup,
        import,
        size: format!("rootfs {size}"),
    })
}

/// Makes the debootstrapped tree look like the official image: apt sources with updates and
/// security, the docker snippets for apt and dpkg, the slim excludes, and no caches.
fn setup_rootfs(rootfs: &Path, spec: &BaseSpec) -> Result<()> {
    let write = |rel: &str, text: &str, mode: u32| -> Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let path = rootfs.join(rel);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)?;
        }
        fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        fs::set_permissions(&path, fs::Permissions::from_mode(mode))?;
        Ok(())
    };

    // apt sources, deb822 style like the official images (apt >= 1.1 reads it: all suites here).
    let keyring = ["debian-archive-keyring.pgp", "debian-archive-keyring.gpg"]
        .iter()
        .map(|k| format!("/usr/share/keyrings/{k}"))
        .find(|k| rootfs.join(k.trim_start_matches('/')).exists());
    let signed_by = keyring
        .map(|k| format!("Signed-By: {k}\n"))
        .unwrap_or_default();
    let suite = &spec.suite;
    let rolling = matches!(suite.as_str(), "sid" | "unstable" | "experimental");
    let mut sources = String::new();
    if rolling {
        let _ = write!(
            sources,
            "Types: deb\nURIs: {MIRROR}\nSuites: {suite}\nComponents: main\n{signed_by}"
        );
    } else {
        let _ = write!(
            sources,
            "Types: deb\nURIs: {MIRROR}\nSuites: {suite} {suite}-updates\nComponents: main\n{signed_by}\n\
             Types: deb\nURIs: {SECURITY_MIRROR}\nSuites: {suite}-security\nComponents: main\n{signed_by}"
        );
    }
    write("etc/apt/sources.list.d/debian.sources", &sources, 0o644)?;
    let legacy = rootfs.join("etc/apt/sources.list");
    if legacy.exists() {
        fs::remove_file(&legacy)?;
    }

    // What the official images add for life in containers (debuerreotype-minimizing-config).
    write(
        "usr/sbin/policy-rc.d",
        "#!/bin/sh\n# Services are not started during image builds.\nexit 101\n",
        0o755,
    )?;
    write(
        "etc/dpkg/dpkg.cfg.d/docker-apt-speedup",
        "force-unsafe-io\n",
        0o644,
    )?;
    let clean = "\"rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true\";";
    write(
        "etc/apt/apt.conf.d/docker-clean",
        &format!(
            "DPkg::Post-Invoke {{ {clean} }};\nAPT::Update::Post-Invoke {{ {clean} }};\n\
             Dir::Cache::pkgcache \"\";\nDir::Cache::srcpkgcache \"\";\n"
        ),
        0o644,
    )?;
    write(
        "etc/apt/apt.conf.d/docker-autoremove-suggests",
        "Apt::AutoRemove::SuggestsImportant \"false\";\n",
        0o644,
    )?;
    write(
        "etc/apt/apt.conf.d/docker-gzip-indexes",
        "Acquire::GzipIndexes \"true\";\n",
        0o644,
    )?;
    write(
        "etc/apt/apt.conf.d/docker-no-languages",
        "Acquire::Languages \"none\";\n",
        0o644,
    )?;

    if spec.slim {
        let mut cfg =
            String::from("# The \"slim\" variant: files unneeded in containers are excluded.\n");
        for p in SLIM_EXCLUDES {
            let _ = writeln!(cfg, "path-exclude {p}/*");
        }
        for p in SLIM_INCLUDES {
            let _ = writeln!(cfg, "path-include {p}");
        }
        write("etc/dpkg/dpkg.cfg.d/docker", &cfg, 0o644)?;
        let status = Command::new("chroot")
            .arg(rootfs)
            .args(["/bin/sh", "-c", &slimify_script()])
            .stdin(Stdio::null())
            .status()
            .context("running chroot")?;
        if !status.success() {
            eprintln!(
                "bootstrap: {}: removing docs and locales failed ({status}); continuing",
                spec.name
            );
        }
    }

    // Caches and state that do not belong in an image; the engine provides resolv.conf and
    // hostname (debootstrap copied the host's).
    for dir in [
        "var/cache/apt/archives",
        "var/cache/apt/archives/partial",
        "var/cache/apt",
        "var/lib/apt/lists",
    ] {
        remove_files_in(&rootfs.join(dir))?;
    }
    for file in ["etc/resolv.conf", "etc/hostname"] {
        let path = rootfs.join(file);
        if path.symlink_metadata().is_ok() {
            fs::remove_file(&path)?;
        }
    }

    ensure!(
        rootfs
            .join("etc/apt/sources.list.d/debian.sources")
            .is_file()
            && rootfs.join("usr/bin/apt-get").exists(),
        "{}: the rootfs has no apt-get or no apt sources after setup",
        spec.name
    );
    Ok(())
}

/// The official slim images' excludes (debuerreotype's .slimify-excludes / -includes).
const SLIM_EXCLUDES: &[&str] = &[
    "/usr/share/doc",
    "/usr/share/groff",
    "/usr/share/info",
    "/usr/share/linda",
    "/usr/share/lintian/overrides",
    "/usr/share/locale",
    "/usr/share/man",
];
const SLIM_INCLUDES: &[&str] = &[
    "/usr/share/doc/*/copyright",
    "/usr/share/locale/all_languages",
    "/usr/share/locale/currency/*",
    "/usr/share/locale/l10n/*",
    "/usr/share/locale/languages",
    "/usr/share/locale/locale.alias",
];

/// Deletes what dpkg would now exclude, in the chroot (so absolute symlinks resolve inside it):
/// files not matching an include, then empty directories and dangling symlinks.
fn slimify_script() -> String {
    let keep: Vec<String> = SLIM_INCLUDES
        .iter()
        .map(|p| format!("-path '{p}'"))
        .collect();
    let mut s = String::from("set -e\n");
    for dir in SLIM_EXCLUDES {
        let _ = write!(
            s,
            "if [ -d {dir} ]; then\n\
             find {dir} -depth -mindepth 1 -not \\( {} \\) -not \\( -type d -o -type l \\) -exec rm -f {{}} +\n\
             while [ -n \"$(find {dir} -depth -mindepth 1 \\( -empty -o -xtype l \\) -delete -print)\" ]; do :; done\n\
             fi\n",
            keep.join(" -o ")
        );
    }
    s
}

/// Removes the regular files and symlinks directly in `dir` (not recursing), if it exists.
fn remove_files_in(dir: &Path) -> Result<()> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Ok(());
    };
    for entry in entries {
        let entry = entry?;
        if !entry.file_type()?.is_dir() {
            fs::remove_file(entry.path())
                .with_context(|| format!("removing {}", entry.path().display()))?;
        }
    }
    Ok(())
}

fn du(path: &Path) -> String {
    Command::new("du")
        .args(["-sh", "--one-file-system"])
        .arg(path)
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .next()
                .map(str::to_string)
        })
        .unwrap_or_else(|| "?".into())
}

/// `tar -C rootfs -c . | docker import - <name>`, with the official images' `CMD ["bash"]`.
fn import(rootfs: &Path, spec: &BaseSpec) -> Result<()> {
    let mut tar = Command::new("tar")
        .args(["--numeric-owner", "-C"])
        .arg(rootfs)
        .args(["-c", "."])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .context("running tar")?;
    let tar_out = tar.stdout.take().context("tar has no stdout")?;
    let import = docker::docker()
        .args(["import", "--change", "CMD [\"bash\"]", "--change"])
        .arg(format!(
            "LABEL backup-runner.made-by=\"cargo xtask bootstrap: debootstrap --variant=minbase {} {MIRROR}\"",
            spec.suite
        ))
        .args(["--message", "made by cargo xtask bootstrap (debootstrap)", "-", &spec.name])
        .stdin(tar_out)
        .stdout(Stdio::null())
        .status()
        .context("running docker import")?;
    let tar_status = tar.wait()?;
    ensure!(
        tar_status.success(),
        "tar of {} failed ({tar_status})",
        rootfs.display()
    );
    ensure!(
        import.success(),
        "docker import of {} failed ({import})",
        spec.name
    );
    Ok(())
}

/// A directory under [`WORK_DIR`] for one debootstrap run, removed on drop (after unmounting
/// whatever debootstrap may have left mounted inside, e.g. after an interrupted run).
struct WorkDir {
    path: PathBuf,
}

impl WorkDir {
    fn create(name: &str) -> Result<WorkDir> {
        let path = Path::new(WORK_DIR).join(format!("{}-{name}", std::process::id()));
        if path.exists() {
            remove_tree(&path)?;
        }
        fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(WorkDir { path })
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if let Err(e) = remove_tree(&self.path) {
            eprintln!("bootstrap: could not remove {}: {e:#}", self.path.display());
        }
    }
}

/// Removes the work directories of earlier runs whose process is gone.
fn clean_stale_work_dirs() {
    let Ok(entries) = fs::read_dir(WORK_DIR) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let pid = name.split('-').next().unwrap_or("");
        if !pid.is_empty() && !Path::new("/proc").join(pid).exists() {
            if let Err(e) = remove_tree(&entry.path()) {
                eprintln!(
                    "bootstrap: could not remove {}: {e:#}",
                    entry.path().display()
                );
            }
        }
    }
}

/// `rm -rf`, but first unmounts anything mounted below `path` and refuses to go on if that fails
/// (never delete through a mounted /proc or /sys).
fn remove_tree(path: &Path) -> Result<()> {
    let mounts = || -> Vec<String> {
        let prefix = format!("{}/", path.display());
        let text = fs::read_to_string("/proc/self/mounts").unwrap_or_default();
        let mut found: Vec<String> = text
            .lines()
            .filter_map(|l| l.split_whitespace().nth(1))
            .filter(|m| m.starts_with(&prefix))
            .map(str::to_string)
            .collect();
        // Deepest first.
        found.sort_by_key(|m| std::cmp::Reverse(m.len()));
        found
    };
    for m in mounts() {
        let _ = Command::new("umount").arg("-l").arg(&m).status();
    }
    let left = mounts();
    ensure!(
        left.is_empty(),
        "still mounted below {}: {}",
        path.display(),
        left.join(", ")
    );
    fs::remove_dir_all(path).with_context(|| format!("removing {}", path.display()))
}
