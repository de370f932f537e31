//! Small helpers over the `docker` CLI, shared by the xtask commands that make images.
//!
//! Debian's CLI (`/usr/bin/docker`, 20.10) is preferred: a newer CLI without buildx that may sit
//! first on `PATH` fails with BuildKit. Builds use the legacy builder (`DOCKER_BUILDKIT=0`), so
//! Dockerfiles must not rely on BuildKit-only features (`RUN --mount`, `# syntax=` lines).

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// Debian's docker CLI; used when present.
const DEBIAN_CLI: &str = "/usr/bin/docker";

/// How long `docker pull` may take before it counts as failed (no registry reachable).
pub const PULL_TIMEOUT: Duration = Duration::from_secs(20);

/// How long `docker info` may take before the engine counts as unavailable.
const INFO_TIMEOUT: Duration = Duration::from_secs(15);

/// A `docker` command: Debian's CLI when installed, else whatever `docker` is on `PATH`, with the
/// legacy builder selected.
pub fn docker() -> Command {
    let cli = if Path::new(DEBIAN_CLI).exists() {
        DEBIAN_CLI
    } else {
        "docker"
    };
    let mut cmd = Command::new(cli);
    cmd.env("DOCKER_BUILDKIT", "0");
    cmd
}

/// Whether a Docker engine answers (`docker info`, bounded by a timeout).
pub fn engine_available() -> bool {
    let mut cmd = docker();
    cmd.args(["info", "--format", "{{.ServerVersion}}"]);
    matches!(output_with_timeout(cmd, INFO_TIMEOUT), Ok(Some(out)) if out.status.success())
}

/// Whether `name` (e.g. `debian:bookworm-slim`) is present in the local image store. Errors other
/// than "no such image" (engine down, CLI missing) are returned as errors.
pub fn image_exists(name: &str) -> Result<bool> {
    let out = docker()
        .args(["image", "inspect", "--format", "{{.Id}}", name])
        .stdin(Stdio::null())
        .output()
        .context("running docker image inspect (is the docker CLI installed?)")?;
    if out.status.success() {
        return Ok(true);
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    if stderr.contains("No such image") || stderr.contains("No such object") {
        return Ok(false);
    }
    bail!(
        "docker image inspect {name} failed ({}): {}",
        out.status,
        stderr.trim()
    )
}

/// Tries `docker pull name`, giving up after [`PULL_TIMEOUT`]. Returns whether the image is now
/// present. Failure is expected where no registry is reachable; its reason goes to stderr as one
/// line.
pub fn try_pull(name: &str) -> bool {
    let mut cmd = docker();
    cmd.args(["pull", "--quiet", name]);
    match output_with_timeout(cmd, PULL_TIMEOUT) {
        Ok(Some(out)) if out.status.success() => true,
        Ok(Some(out)) => {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let reason = stderr
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("");
            eprintln!("docker pull {name} failed: {}", reason.trim());
            false
        }
        Ok(None) => {
            eprintln!(
                "docker pull {name}: no answer within {}s, giving up",
                PULL_TIMEOUT.as_secs()
            );
            false
        }
        Err(e) => {
            eprintln!("docker pull {name}: {e:#}");
            false
        }
    }
}

/// Builds `tag` from `dockerfile` with `context` as the build context (legacy builder, output
/// streamed to the terminal). Intermediate containers are removed even when the build fails.
pub fn build(
    tag: &str,
    dockerfile: &Path,
    context: &Path,
    build_args: &[(String, String)],
    labels: &[(String, String)],
) -> Result<()> {
    let mut cmd = docker();
    cmd.args(["build", "--force-rm", "--tag", tag, "--file"])
        .arg(dockerfile);
    for (k, v) in build_args {
        cmd.arg("--build-arg").arg(format!("{k}={v}"));
    }
    for (k, v) in labels {
        cmd.arg("--label").arg(format!("{k}={v}"));
    }
    cmd.arg(context).stdin(Stdio::null());
    let status = cmd
        .status()
        .with_context(|| format!("running docker build for image {tag}"))?;
    if !status.success() {
        bail!(
            "building image {tag} from {} failed ({status}); see the build output above",
            dockerfile.display()
        );
    }
    Ok(())
}

/// Runs `cmd` with stdout and stderr captured; `Ok(None)` (after killing it) when it has not
/// finished within `timeout`.
pub fn output_with_timeout(mut cmd: Command, timeout: Duration) -> Result<Option<Output>> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {:?}", cmd.get_program()))?;
    // Drain both pipes on threads so a chatty child cannot block on a full pipe.
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let status = match wait_timeout(&mut child, timeout)? {
        Some(status) => status,
        None => {
            let _ = child.kill();
            let _ = child.wait();
            return Ok(None);
        }
    };
    Ok(Some(Output {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    }))
}

fn drain<R: Read + Send + 'static>(pipe: Option<R>) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut buf);
        }
        buf
    })
}

fn wait_timeout(child: &mut Child, timeout: Duration) -> Result<Option<ExitStatus>> {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().context("waiting for a child process")? {
            return Ok(Some(status));
        }
        if start.elapsed() >= timeout {
            return Ok(None);
        }
        thread::sleep(Duration::from_millis(50));
    }
}
