use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use tempfile::TempDir;
use tokio::io::AsyncWriteExt;

use crate::util::{free_port, is_root, random_hex, tail_file};

const HOST: &str = "127.0.0.1";
const SUPERUSER: &str = "postgres";
const OS_USER: &str = "postgres";
const PSQL_TIMEOUT: Duration = Duration::from_secs(300);
const START_ATTEMPTS: usize = 5;

/// A throwaway PostgreSQL cluster, run from the installed Debian packages.
///
/// Listens on 127.0.0.1 (scram-sha-256 password auth) and on a unix socket
/// in its temporary directory (trust auth). Stopped with `pg_ctl stop -m fast`
/// and deleted on drop.
pub struct PgServer {
    bin_dir: PathBuf,
    major: u32,
    port: u16,
    password: String,
    /// Run server binaries via `runuser -u postgres --` (we are root).
    as_postgres: bool,
    // Declared last: removed only after `Drop::drop` has stopped the server.
    dir: TempDir,
}

impl PgServer {
    /// Init and start a new cluster.
    ///
    /// The binaries come from `$HARNESS_PG_BIN` (a `bin` directory) or else
    /// the highest `/usr/lib/postgresql/<major>/bin`.
    pub async fn start() -> Result<PgServer> {
        let bin_dir = find_bin_dir()?;
        let major = detect_major(&bin_dir).await?;
        let as_postgres = is_root();

        let dir = tempfile::Builder::new()
            .prefix("harness-pg-")
            .tempdir()
            .context("create tempdir for postgres")?;
        let ids = if as_postgres {
            let ids = ensure_os_user()?;
            std::os::unix::fs::chown(dir.path(), Some(ids.0), Some(ids.1))
                .with_context(|| format!("chown {} to {OS_USER}", dir.path().display()))?;
            Some(ids)
        } else {
            None
        };

        let mut server = PgServer {
            bin_dir,
            major,
            port: 0,
            password: random_hex(16)?,
            as_postgres,
            dir,
        };
        if as_postgres {
            let out = server
                .server_cmd("test")
                .arg("-w")
                .arg(server.dir.path())
                .output()
                .await?;
            if !out.status.success() {
                bail!(
                    "user {OS_USER} cannot write to {} (is TMPDIR under a directory \
                     only root can enter?)",
                    server.dir.path().display()
                );
            }
        }
        server.initdb(ids).await?;

        let mut last_err = None;
        for _ in 0..START_ATTEMPTS {
            server.port = free_port();
            match server.pg_ctl_start().await {
                Ok(()) => return Ok(server),
                Err(e) => {
                    let log = tail_file(&server.log_path(), 8192);
                    if !log.contains("could not bind") && !log.contains("already in use") {
                        return Err(e);
                    }
                    last_err = Some(e);
                }
            }
        }
        Err(last_err.unwrap_or_else(|| anyhow!("postgres did not start")))
    }

    /// Always `"127.0.0.1"`.
    pub fn host(&self) -> &str {
        HOST
    }

    /// TCP port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Name of the superuser role (`"postgres"`).
    pub fn superuser(&self) -> &str {
        SUPERUSER
    }

    /// The superuser's password.
    pub fn password(&self) -> &str {
        &self.password
    }

    /// PostgreSQL major version of the binaries in use (e.g. 15).
    pub fn major(&self) -> u32 {
        self.major
    }

    /// Directory holding `initdb`, `pg_ctl`, `psql`, `pg_dump`, ...
    pub fn bin_dir(&self) -> PathBuf {
        self.bin_dir.clone()
    }

    /// The cluster's data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Directory of the server's unix socket (trust auth).
    pub fn socket_dir(&self) -> &Path {
        self.dir.path()
    }

    /// `postgres://postgres:<password>@127.0.0.1:<port>/<db>`
    pub fn url(&self, db: &str) -> String {
        format!(
            "postgres://{SUPERUSER}:{}@{HOST}:{}/{db}",
            self.password, self.port
        )
    }

    /// Run `sql` with psql as the superuser over TCP; returns trimmed stdout
    /// (unaligned, tuples only).
    pub async fn psql(&self, db: &str, sql: &str) -> Result<String> {
        self.psql_as(SUPERUSER, &self.password, db, sql).await
    }

    /// Like [`PgServer::psql`] but as another role.
    pub async fn psql_as(&self, user: &str, password: &str, db: &str, sql: &str) -> Result<String> {
        psql(
            &self.client_bin("psql"),
            HOST,
            self.port,
            user,
            password,
            db,
            sql,
        )
        .await
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("postgres.log")
    }

    /// A client binary from `bin_dir`, or from PATH if not there.
    fn client_bin(&self, name: &str) -> PathBuf {
        let p = self.bin_dir.join(name);
        if p.exists() {
            p
        } else {
            PathBuf::from(name)
        }
    }

    /// Command for a server-side program, as the `postgres` OS user if root.
    fn server_cmd(&self, program: &str) -> tokio::process::Command {
        self.std_server_cmd(program).into()
    }

    fn std_server_cmd(&self, program: &str) -> std::process::Command {
        let in_bin = self.bin_dir.join(program);
        let path = if in_bin.exists() {
            in_bin
        } else {
            PathBuf::from(program)
        };
        let mut cmd = if self.as_postgres {
            let mut c = std::process::Command::new("runuser");
            c.args(["-u", OS_USER, "--"]).arg(path);
            c
        } else {
            std::process::Command::new(path)
        };
        // Our own cwd (e.g. /root) may not be readable by the postgres user.
        cmd.current_dir(self.dir.path()).stdin(Stdio::null());
        cmd
    }

    async fn initdb(&self, ids: Option<(u32, u32)>) -> Result<()> {
        let pwfile = self.dir.path().join("pwfile");
        {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&pwfile)
                .context("create pwfile")?;
            writeln!(f, "{}", self.password)?;
        }
        if let Some((uid, gid)) = ids {
            std::os::unix::fs::chown(&pwfile, Some(uid), Some(gid))?;
        }
        let out = self
            .server_cmd("initdb")
            .arg("-D")
            .arg(self.data_dir())
            .arg("-U")
            .arg(SUPERUSER)
            .arg(format!("--pwfile={}", pwfile.display()))
            .args([
                "--auth-host=scram-sha-256",
                "--auth-local=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ])
            .output()
            .await
            .context("run initdb")?;
        let _ = std::fs::remove_file(&pwfile);
        check(&out, "initdb")?;

        // Later settings override earlier ones, so appending is enough.
        let conf = format!(
            "\n# added by harness\n\
             listen_addresses = '{HOST}'\n\
             unix_socket_directories = '{}'\n\
             password_encryption = 'scram-sha-256'\n\
             fsync = off\n\
             synchronous_commit = off\n\
             full_page_writes = off\n\
             logging_collector = off\n",
            self.dir.path().display()
        );
        append(&self.data_dir().join("postgresql.conf"), &conf)
    }

    async fn pg_ctl_start(&self) -> Result<()> {
        append(
            &self.data_dir().join("postgresql.conf"),
            &format!("port = {}\n", self.port),
        )?;
        let out = self
            .server_cmd("pg_ctl")
            .arg("-D")
            .arg(self.data_dir())
            .arg("-l")
            .arg(self.log_path())
            .args(["-w", "-t", "60", "start"])
            // With -l, pg_ctl points the server's stdio at /dev/null and the
            // log, so these pipes close when pg_ctl exits.
            .output()
            .await
            .context("run pg_ctl start")?;
        if !out.status.success() {
            bail!(
                "pg_ctl start failed ({}): {}\nserver log:\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim(),
                tail_file(&self.log_path(), 4096)
            );
        }
        Ok(())
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let _ = self
            .std_server_cmd("pg_ctl")
            .arg("-D")
            .arg(self.data_dir())
            .args(["-m", "fast", "-w", "-t", "30", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

fn find_bin_dir() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("HARNESS_PG_BIN") {
        let dir = PathBuf::from(dir);
        if !dir.join("initdb").is_file() {
            bail!("HARNESS_PG_BIN={} has no initdb", dir.display());
        }
        return Ok(dir);
    }
    let root = Path::new("/usr/lib/postgresql");
    let best = std::fs::read_dir(root)
        .ok()
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let major: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((major, bin))
        })
        .max_by_key(|(major, _)| *major);
    match best {
        Some((_, bin)) => Ok(bin),
        None => bail!(
            "no PostgreSQL server found under {} (install it with \
             .ci/install-test-deps.sh, or set HARNESS_PG_BIN)",
            root.display()
        ),
    }
}

async fn detect_major(bin_dir: &Path) -> Result<u32> {
    let out = tokio::process::Command::new(bin_dir.join("pg_ctl"))
        .arg("--version")
        .output()
        .await
        .context("run pg_ctl --version")?;
    check(&out, "pg_ctl --version")?;
    // "pg_ctl (PostgreSQL) 15.14 (Debian 15.14-0+deb12u1)"
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_once(')')
        .and_then(|(_, rest)| {
            rest.trim_start()
                .split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()
        })
        .ok_or_else(|| anyhow!("cannot parse version from {text:?}"))
}

/// uid and gid of the `postgres` OS user, created if missing.
fn ensure_os_user() -> Result<(u32, u32)> {
    static LOCK: Mutex<()> = Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(ids) = lookup_os_user() {
        return Ok(ids);
    }
    let out = std::process::Command::new("useradd")
        .args([
            "--system",
            "--user-group",
            "--no-create-home",
            "--home-dir",
            "/nonexistent",
            "--shell",
            "/usr/sbin/nologin",
            OS_USER,
        ])
        .output()
        .context("run useradd")?;
    // Another process may have created it meanwhile: look again either way.
    lookup_os_user().ok_or_else(|| {
        anyhow!(
            "could not create user {OS_USER}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )
    })
}

fn lookup_os_user() -> Option<(u32, u32)> {
    let id = |flag: &str| -> Option<u32> {
        let out = std::process::Command::new("id")
            .args([flag, OS_USER])
            .stderr(Stdio::null())
            .output()
            .ok()?;
        if !out.status.success() {
            return None;
        }
        String::from_utf8_lossy(&out.stdout).trim().parse().ok()
    };
    Some((id("-u")?, id("-g")?))
}

fn check(out: &Output, what: &str) -> Result<()> {
    if out.status.success() {
        return Ok(());
    }
    bail!(
        "{what} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout).trim(),
        String::from_utf8_lossy(&out.stderr).trim()
    )
}

fn append(path: &Path, text: &str) -> Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .with_context(|| format!("open {}", path.display()))?;
    f.write_all(text.as_bytes())?;
    Ok(())
}

fn abbreviate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

/// Runs SQL (on stdin) with `psql` over TCP as `user`; returns trimmed stdout.
pub async fn psql(
    psql: &Path,
    host: &str,
    port: u16,
    user: &str,
    password: &str,
    db: &str,
    sql: &str,
) -> Result<String> {
    let mut cmd = tokio::process::Command::new(psql);
    cmd.args(["-X", "-q", "-A", "-t", "-w", "-v", "ON_ERROR_STOP=1"])
        .arg("-h")
        .arg(host)
        .arg("-p")
        .arg(port.to_string())
        .arg("-U")
        .arg(user)
        .arg("-d")
        .arg(db);
    for var in [
        "PGSERVICE",
        "PGSERVICEFILE",
        "PGPASSFILE",
        "PGOPTIONS",
        "PGSSLMODE",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("PGPASSWORD", password)
        .env("PGCONNECT_TIMEOUT", "10")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd
        .spawn()
        .with_context(|| format!("spawn {}", psql.display()))?;
    let mut stdin = child.stdin.take().expect("piped stdin");
    let sql_owned = sql.to_owned();
    let writer = tokio::spawn(async move {
        let r = stdin.write_all(sql_owned.as_bytes()).await;
        drop(stdin);
        r
    });
    let out = tokio::time::timeout(PSQL_TIMEOUT, child.wait_with_output())
        .await
        .map_err(|_| anyhow!("psql timed out after {PSQL_TIMEOUT:?}"))??;
    // A write error (EPIPE) only matters if psql itself succeeded.
    let write_res = writer.await?;
    if !out.status.success() {
        bail!(
            "psql as {user} on {db} failed ({}): {}\nSQL: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            abbreviate(sql, 500)
        );
    }
    write_res.context("write SQL to psql's stdin")?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}
