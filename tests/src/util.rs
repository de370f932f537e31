use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// A TCP port on 127.0.0.1 that was free a moment ago.
///
/// The port is released before returning, so another process may grab it;
/// the fixtures retry with a new port when binding fails.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local_addr").port()
}

/// The directory holding the workspace's top-level `Cargo.toml`.
pub fn workspace_root() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    for dir in manifest_dir.ancestors() {
        let toml = dir.join("Cargo.toml");
        if let Ok(text) = std::fs::read_to_string(&toml) {
            if text.lines().any(|l| l.trim() == "[workspace]") {
                return dir.to_path_buf();
            }
        }
    }
    manifest_dir.parent().unwrap_or(manifest_dir).to_path_buf()
}

/// Random lowercase hex string of `2 * bytes` characters.
pub(crate) fn random_hex(bytes: usize) -> Result<String> {
    let mut buf = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .context("read /dev/urandom")?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

pub(crate) fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Find an executable called `name` on PATH.
pub(crate) fn which(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| {
            p.metadata()
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
}

/// Last `max` bytes of a file, lossily decoded; empty if unreadable.
pub(crate) fn tail_file(path: &Path, max: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let start = bytes.len().saturating_sub(max);
            String::from_utf8_lossy(&bytes[start..]).into_owned()
        }
        Err(_) => String::new(),
    }
}

/// Starts a local HTTP server process on a free port and waits until it answers: `spawn` starts
/// it on the given port with its output in `log`; a start that fails because the port was taken
/// meanwhile (the log contains `in_use`) is retried on another port. Returns the process, which
/// leads its own process group ([`kill_group`] stops it), and the port.
pub async fn start_http_server(
    name: &str,
    log: &Path,
    in_use: &str,
    timeout: std::time::Duration,
    spawn: impl Fn(u16, &Path) -> Result<std::process::Child>,
) -> Result<(std::process::Child, u16)> {
    const ATTEMPTS: usize = 5;
    let mut last_err = None;
    for _ in 0..ATTEMPTS {
        let port = free_port();
        let mut child = spawn(port, log)?;
        match wait_http(name, &mut child, port, log, timeout).await {
            Ok(()) => return Ok((child, port)),
            Err(e) => {
                kill_group(&mut child);
                if !tail_file(log, 8192).contains(in_use) {
                    return Err(e);
                }
                last_err = Some(e);
            }
        }
    }
    Err(last_err.unwrap_or_else(|| anyhow::anyhow!("{name} did not start")))
}

/// Waits until `child` answers HTTP on `port` (any answer), failing if it exits first.
async fn wait_http(
    name: &str,
    child: &mut std::process::Child,
    port: u16,
    log: &Path,
    timeout: std::time::Duration,
) -> Result<()> {
    let http = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(2))
        .build()?;
    let url = format!("http://127.0.0.1:{port}/");
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait()? {
            anyhow::bail!("{name} exited ({status}):\n{}", tail_file(log, 4096));
        }
        if http.get(&url).send().await.is_ok() {
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            anyhow::bail!(
                "{name} did not answer on {url} within {timeout:?}:\n{}",
                tail_file(log, 4096)
            );
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Kills a process that leads its own process group, with everything it started (a pyenv shim's
/// interpreter, say), and reaps it.
pub fn kill_group(child: &mut std::process::Child) {
    if let Ok(pid) = i32::try_from(child.id()) {
        // SAFETY: plain syscall. The child leads its own process group; the group id stays
        // reserved while any member is alive, even if the leader has already been reaped.
        unsafe {
            libc::kill(-pid, libc::SIGKILL);
        }
    }
    let _ = child.wait();
}
