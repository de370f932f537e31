//! Containers for the image harness, started with testcontainers from the image names in
//! `images/matrix.toml`: database servers, the S3 server, and runner jobs (the real image, run
//! to completion). Everything shares one Docker network per test, so containers reach each other
//! by name; the host reaches them through mapped ports.

use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use testcontainers::core::wait::ExitWaitStrategy;
use testcontainers::core::{ExecCommand, Host, IntoContainerPort, Mount, WaitFor};
use testcontainers::runners::AsyncRunner;
use testcontainers::{ContainerAsync, ContainerRequest, GenericImage, ImageExt};

use crate::postgres::psql;
use crate::redis_client::RedisEndpoint;
use crate::s3::S3Api;
use crate::util::random_hex;

/// Set to `1` (CI does) to make a missing Docker engine a failure instead of a loud skip.
pub const REQUIRE_DOCKER_ENV: &str = "HARNESS_REQUIRE_DOCKER";
/// How a job container reaches the test process (the callback receiver).
pub const HOST_ALIAS: &str = "host.docker.internal";
const READY_TIMEOUT: Duration = Duration::from_secs(120);

async fn docker() -> Option<bollard::Docker> {
    let d = bollard::Docker::connect_with_local_defaults().ok()?;
    let d = d.negotiate_version().await.ok()?;
    d.ping().await.ok()?;
    Some(d)
}

/// Whether a Docker engine answers and the images exist. Otherwise the test is skipped with a
/// loud message, or fails when `HARNESS_REQUIRE_DOCKER=1` (CI).
pub async fn ready_or_skip(test: &str, images: &[String]) -> bool {
    let problem = match docker().await {
        None => "no Docker engine answers (start dockerd)".to_string(),
        Some(d) => {
            let mut missing = Vec::new();
            for image in images {
                if d.inspect_image(image).await.is_err() {
                    missing.push(image.as_str());
                }
            }
            if missing.is_empty() {
                return true;
            }
            format!(
                "images {} are missing (cargo xtask bootstrap && cargo xtask build)",
                missing.join(", ")
            )
        }
    };
    if std::env::var(REQUIRE_DOCKER_ENV).as_deref() == Ok("1") {
        panic!("{test}: {problem}, and {REQUIRE_DOCKER_ENV}=1 requires them");
    }
    eprintln!(
        "\n********\n* SKIPPED {test}: {problem}; set {REQUIRE_DOCKER_ENV}=1 to fail instead\n********\n"
    );
    false
}

/// `docker image inspect`, as JSON.
pub async fn inspect_image(image: &str) -> Result<serde_json::Value> {
    let d = docker().await.context("no Docker engine answers")?;
    let info = d
        .inspect_image(image)
        .await
        .with_context(|| format!("inspecting {image}"))?;
    Ok(serde_json::to_value(info)?)
}

/// A name no other test uses, for networks and containers.
pub fn unique(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}-{}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        random_hex(3).unwrap_or_default()
    )
}

/// A temporary directory the images' user (uid 10001) can write, to mount as `/backups`.
pub fn shared_dir() -> Result<tempfile::TempDir> {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir()?;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777))?;
    Ok(dir)
}

/// `postgres:17` → (`postgres`, `17`).
fn split_image(image: &str) -> (&str, &str) {
    match image.rsplit_once(':') {
        Some((name, tag)) if !tag.contains('/') => (name, tag),
        _ => (image, "latest"),
    }
}

fn generic(image: &str) -> GenericImage {
    let (name, tag) = split_image(image);
    GenericImage::new(name, tag)
}

/// A database server in a container.
pub struct DbContainer {
    container: ContainerAsync<GenericImage>,
    /// The container's name: its host name on the test network.
    pub name: String,
    pub password: String,
    /// The port mapped on 127.0.0.1.
    pub port: u16,
}

impl DbContainer {
    /// A PostgreSQL server from an official-compatible image (`POSTGRES_PASSWORD`, port 5432).
    pub async fn postgres(image: &str, network: &str) -> Result<DbContainer> {
        let name = unique("pg");
        let password = format!("pw-{}", random_hex(8)?);
        let container = generic(image)
            .with_exposed_port(5432.tcp())
            .with_wait_for(WaitFor::message_on_stderr(
                "database system is ready to accept connections",
            ))
            .with_network(network)
            .with_container_name(&name)
            .with_env_var("POSTGRES_PASSWORD", &password)
            .with_startup_timeout(READY_TIMEOUT)
            .start()
            .await
            .with_context(|| format!("starting {image} (build it with `cargo xtask bootstrap`)"))?;
        let port = container.get_host_port_ipv4(5432.tcp()).await?;
        let db = DbContainer {
            container,
            name,
            password,
            port,
        };
        // The official image restarts once after its init scripts: wait for a real connection.
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            match db.psql("postgres", "SELECT 1").await {
                Ok(_) => return Ok(db),
                Err(e) if Instant::now() > deadline => return Err(e),
                Err(_) => tokio::time::sleep(Duration::from_millis(300)).await,
            }
        }
    }

    /// Runs SQL as the superuser from the host.
    pub async fn psql(&self, db: &str, sql: &str) -> Result<String> {
        self.psql_as("postgres", &self.password, db, sql).await
    }

    pub async fn psql_as(&self, user: &str, password: &str, db: &str, sql: &str) -> Result<String> {
        psql(
            Path::new("psql"),
            "127.0.0.1",
            self.port,
            user,
            password,
            db,
            sql,
        )
        .await
    }

    pub fn container(&self) -> &ContainerAsync<GenericImage> {
        &self.container
    }
}

/// A MySQL or MariaDB server from an official-compatible image (`MYSQL_ROOT_PASSWORD`,
/// `MYSQL_DATABASE`, `MYSQL_USER`, `MYSQL_PASSWORD`, port 3306), with the managed-service
/// convention: `app_user` holding all privileges on `app_db` only.
pub struct MysqlContainer {
    container: ContainerAsync<GenericImage>,
    pub name: String,
    pub root_password: String,
    pub app_password: String,
    client: &'static str,
}

impl MysqlContainer {
    pub const APP_DB: &'static str = "app_db";
    pub const APP_USER: &'static str = "app_user";

    pub async fn start(image: &str, network: &str) -> Result<MysqlContainer> {
        Self::start_with(image, network, &[]).await
    }

    /// Starts the server with extra server options as the container's command (the official
    /// images pass them to the server: `docker run mariadb:11.8 --max-allowed-packet=64M`).
    pub async fn start_with(image: &str, network: &str, args: &[&str]) -> Result<MysqlContainer> {
        let name = unique("my");
        let root_password = format!("root-{}", random_hex(8)?);
        let app_password = format!("app-{}", random_hex(8)?);
        let request = generic(image)
            .with_exposed_port(3306.tcp())
            .with_wait_for(WaitFor::message_on_either_std("ready for connections"))
            .with_network(network)
            .with_container_name(&name)
            .with_env_var("MYSQL_ROOT_PASSWORD", &root_password)
            .with_env_var("MYSQL_DATABASE", Self::APP_DB)
            .with_env_var("MYSQL_USER", Self::APP_USER)
            .with_env_var("MYSQL_PASSWORD", &app_password)
            .with_startup_timeout(READY_TIMEOUT);
        let request = if args.is_empty() {
            request
        } else {
            request.with_cmd(args.iter().copied())
        };
        let container = request
            .start()
            .await
            .with_context(|| format!("starting {image} (build it with `cargo xtask bootstrap`)"))?;
        let client = if image.starts_with("mariadb") {
            "mariadb"
        } else {
            "mysql"
        };
        let server = MysqlContainer {
            container,
            name,
            root_password,
            app_password,
            client,
        };
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            match server.root("", "SELECT 1").await {
                Ok(_) => return Ok(server),
                Err(e) if Instant::now() > deadline => return Err(e),
                Err(_) => tokio::time::sleep(Duration::from_millis(300)).await,
            }
        }
    }

    /// Runs SQL in the container with its own client; returns tab-separated rows.
    pub async fn sql(&self, user: &str, password: &str, db: &str, sql: &str) -> Result<String> {
        let mut args = vec![
            self.client.to_string(),
            format!("-u{user}"),
            format!("-p{password}"),
            "--batch".into(),
            "--skip-column-names".into(),
            "--default-character-set=utf8mb4".into(),
        ];
        if !db.is_empty() {
            args.push(format!("--database={db}"));
        }
        args.extend(["-e".to_string(), sql.to_string()]);
        let mut result = self.container.exec(ExecCommand::new(args)).await?;
        let stdout = String::from_utf8_lossy(&result.stdout_to_vec().await?).into_owned();
        let stderr = String::from_utf8_lossy(&result.stderr_to_vec().await?).into_owned();
        let code = result.exit_code().await?.unwrap_or(-1);
        if code != 0 {
            bail!(
                "{} as {user} failed ({code}): {stderr}\nSQL: {}",
                self.client,
                sql.chars().take(300).collect::<String>()
            );
        }
        Ok(stdout.trim().to_string())
    }

    pub async fn root(&self, db: &str, sql: &str) -> Result<String> {
        self.sql("root", &self.root_password, db, sql).await
    }

    pub async fn app(&self, sql: &str) -> Result<String> {
        self.sql(Self::APP_USER, &self.app_password, Self::APP_DB, sql)
            .await
    }
}

/// A Redis or Valkey server from an official-compatible image (`redis:<v>`, `valkey/valkey:<v>`:
/// the server's options as the command, port 6379), with `requirepass` for the `default` user,
/// no RDB snapshots (`--save ""`) and an ACL user [`RedisContainer::BACKUP_USER`] with full
/// access and a password of its own.
pub struct RedisContainer {
    container: ContainerAsync<GenericImage>,
    name: String,
    network: String,
    pub password: String,
    pub backup_password: String,
    port: u16,
}

impl RedisContainer {
    pub const BACKUP_USER: &'static str = "backup";

    pub async fn start(image: &str, network: &str, password: &str) -> Result<RedisContainer> {
        Self::start_with(image, network, password, &[]).await
    }

    /// The server's host name on the test network.
    pub fn alias(&self) -> &str {
        &self.name
    }

    /// The Docker network the server is on.
    pub fn network(&self) -> &str {
        &self.network
    }

    /// The port mapped on 127.0.0.1, for the test's own client.
    pub fn host_port(&self) -> u16 {
        self.port
    }

    /// The server as the test process reaches it, as the `default` user.
    pub fn endpoint(&self) -> RedisEndpoint {
        RedisEndpoint::new("127.0.0.1", self.port, None, &self.password)
    }

    /// A connection from the test process to logical database `db`, as the `default` user.
    pub async fn connect(&self, db: u32) -> Result<redis::aio::MultiplexedConnection> {
        self.endpoint().connect(db).await
    }

    pub fn container(&self) -> &ContainerAsync<GenericImage> {
        &self.container
    }
}

/// The S3-compatible server in a container (moto's interface: port 5000, any credentials).
pub struct S3Container {
    container: ContainerAsync<GenericImage>,
    pub name: String,
    api: S3Api,
}

impl S3Container {
    pub async fn start(image: &str, network: &str) -> Result<S3Container> {
        let name = unique("s3");
        let container = generic(image)
            .with_exposed_port(5000.tcp())
            .with_wait_for(WaitFor::message_on_either_std("Running on"))
            .with_network(network)
            .with_container_name(&name)
            .with_startup_timeout(READY_TIMEOUT)
            .start()
            .await
            .with_context(|| format!("starting {image} (build it with `cargo xtask bootstrap`)"))?;
        let port = container.get_host_port_ipv4(5000.tcp()).await?;
        let api = S3Api::new(&format!("http://127.0.0.1:{port}"));
        let deadline = Instant::now() + READY_TIMEOUT;
        while api.list_buckets().await.is_err() {
            if Instant::now() > deadline {
                bail!("{image} does not answer S3 requests on port {port}");
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        Ok(S3Container {
            container,
            name,
            api,
        })
    }

    /// The endpoint as jobs on the test network see it.
    pub fn endpoint_in_network(&self) -> String {
        format!("http://{}:5000", self.name)
    }

    pub fn container(&self) -> &ContainerAsync<GenericImage> {
        &self.container
    }

    /// The storage variables of a job that keeps its backup in `bucket` on this server.
    pub fn job_env(&self, bucket: &str) -> Vec<(String, String)> {
        [
            ("STORAGE_TYPE", "minio".to_string()),
            ("STORAGE_ENDPOINT", self.endpoint_in_network()),
            ("STORAGE_BUCKET", bucket.to_string()),
            ("STORAGE_ACCESS_KEY_ID", "test".into()),
            ("STORAGE_SECRET_ACCESS_KEY", "test-secret".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }
}

impl std::ops::Deref for S3Container {
    type Target = S3Api;

    fn deref(&self) -> &S3Api {
        &self.api
    }
}

/// What a finished job container left behind.
#[derive(Debug)]
pub struct JobOutput {
    pub code: i64,
    pub stdout: String,
    pub stderr: String,
}

impl JobOutput {
    /// Panics with the job's stderr unless it exited 0.
    pub fn assert_ok(&self, what: &str) {
        assert_eq!(self.code, 0, "{what} failed:\n{}", self.stderr);
    }

    /// Panics with the job's stderr unless it exited with `code`.
    pub fn assert_code(&self, code: i64, what: &str) {
        assert_eq!(
            self.code, code,
            "{what}: expected exit {code}:\n{}",
            self.stderr
        );
    }
}

/// A runner job: the image run to completion with these variables.
pub struct Job {
    image: String,
    network: String,
    env: Vec<(String, String)>,
    mounts: Vec<(String, String)>,
    user: Option<String>,
}

impl Job {
    pub fn new(image: &str, network: &str) -> Job {
        Job {
            image: image.to_string(),
            network: network.to_string(),
            env: Vec::new(),
            mounts: Vec::new(),
            user: None,
        }
    }

    pub fn env(mut self, key: &str, value: impl Into<String>) -> Job {
        self.env.push((key.to_string(), value.into()));
        self
    }

    pub fn envs<'a>(mut self, vars: impl IntoIterator<Item = &'a (String, String)>) -> Job {
        self.env.extend(vars.into_iter().cloned());
        self
    }

    /// Bind-mounts a host directory.
    pub fn mount(mut self, host: &Path, container: &str) -> Job {
        self.mounts
            .push((host.display().to_string(), container.to_string()));
        self
    }

    pub fn user(mut self, user: &str) -> Job {
        self.user = Some(user.to_string());
        self
    }

    fn request(&self, wait: WaitFor) -> ContainerRequest<GenericImage> {
        let mut request = generic(&self.image)
            .with_wait_for(wait)
            .with_network(&self.network)
            .with_container_name(unique("job"))
            .with_host(HOST_ALIAS, Host::HostGateway)
            .with_startup_timeout(Duration::from_secs(600));
        for (k, v) in &self.env {
            request = request.with_env_var(k, v);
        }
        for (host, target) in &self.mounts {
            request = request.with_mount(Mount::bind_mount(host, target));
        }
        if let Some(user) = &self.user {
            request = request.with_user(user);
        }
        request
    }

    /// Runs the job and waits for it to exit.
    pub async fn run(self) -> Result<JobOutput> {
        let container = self
            .request(WaitFor::exit(
                ExitWaitStrategy::new().with_poll_interval(Duration::from_millis(200)),
            ))
            .start()
            .await
            .with_context(|| {
                format!("running {} (build it with `cargo xtask build`)", self.image)
            })?;
        RunningJob { container }.wait().await
    }

    /// Starts the job and returns once its log (stderr) shows `line`, for faults injected while
    /// it runs.
    pub async fn start(self, line: &str) -> Result<RunningJob> {
        let container = self
            .request(WaitFor::message_on_stderr(line))
            .start()
            .await
            .with_context(|| {
                format!(
                    "starting {} (build it with `cargo xtask build`)",
                    self.image
                )
            })?;
        Ok(RunningJob { container })
    }
}

/// A job running in the background.
pub struct RunningJob {
    container: ContainerAsync<GenericImage>,
}

impl RunningJob {
    pub fn id(&self) -> &str {
        self.container.id()
    }

    /// Sends a signal (`TERM`, `INT`, `KILL`) to the runner, as `docker stop` or Kubernetes do.
    pub fn signal(&self, signal: &str) -> Result<()> {
        docker_cli(&["kill", "--signal", signal, self.id()])
    }

    /// Runs a shell command inside the job's container; returns its stdout.
    pub async fn sh(&self, script: &str) -> Result<String> {
        let mut result = self
            .container
            .exec(ExecCommand::new(["sh", "-c", script]))
            .await?;
        Ok(String::from_utf8_lossy(&result.stdout_to_vec().await?).into_owned())
    }

    pub async fn is_running(&self) -> Result<bool> {
        Ok(self.container.is_running().await?)
    }

    /// Waits for the job to exit.
    pub async fn wait(self) -> Result<JobOutput> {
        let code = loop {
            if let Some(code) = self.container.exit_code().await? {
                break code;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let stdout = String::from_utf8_lossy(&self.container.stdout_to_vec().await?).into_owned();
        let stderr = String::from_utf8_lossy(&self.container.stderr_to_vec().await?).into_owned();
        Ok(JobOutput {
            code,
            stdout,
            stderr,
        })
    }
}

/// Debian's docker CLI (the engine's version), for what the container API here lacks.
pub fn docker_cli(args: &[&str]) -> Result<()> {
    let out = std::process::Command::new("/usr/bin/docker")
        .args(args)
        .output()
        .context("running /usr/bin/docker")?;
    if !out.status.success() {
        bail!(
            "docker {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

impl RedisContainer {
    /// [`RedisContainer::start`] with more server options after the usual ones (e.g.
    /// `--proto-max-bulk-len 1mb`, `--cluster-enabled yes`).
    pub async fn start_with(
        image: &str,
        network: &str,
        password: &str,
        options: &[&str],
    ) -> Result<RedisContainer> {
        let name = unique("redis");
        let backup_password = format!("bk-{}", random_hex(8)?);
        let mut cmd = vec![
            "--requirepass",
            password,
            "--save",
            "",
            "--appendonly",
            "no",
        ];
        cmd.extend_from_slice(options);
        let container = generic(image)
            .with_exposed_port(6379.tcp())
            .with_wait_for(WaitFor::message_on_stdout("Ready to accept connections"))
            .with_network(network)
            .with_container_name(&name)
            .with_cmd(cmd)
            .with_startup_timeout(READY_TIMEOUT)
            .start()
            .await
            .with_context(|| format!("starting {image} with {options:?}"))?;
        let port = container.get_host_port_ipv4(6379.tcp()).await?;
        let server = RedisContainer {
            container,
            name,
            network: network.to_string(),
            password: password.to_string(),
            backup_password,
            port,
        };
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut conn = loop {
            match server.connect(0).await {
                Ok(conn) => break conn,
                Err(e) if Instant::now() > deadline => return Err(e),
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        };
        redis::cmd("ACL")
            .arg("SETUSER")
            .arg(Self::BACKUP_USER)
            .arg("on")
            .arg(format!(">{}", server.backup_password))
            .arg("~*")
            .arg("&*")
            .arg("+@all")
            .query_async::<()>(&mut conn)
            .await
            .context("creating the ACL user")?;
        Ok(server)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_names_split_into_name_and_tag() {
        assert_eq!(split_image("postgres:17"), ("postgres", "17"));
        assert_eq!(
            split_image("motoserver/moto:5.2.5"),
            ("motoserver/moto", "5.2.5")
        );
        assert_eq!(
            split_image("localhost:5000/img"),
            ("localhost:5000/img", "latest")
        );
    }
}
