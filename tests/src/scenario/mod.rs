//! The scenario suite, the way object_store runs one integration suite against every backend:
//! one list of scenarios (`tests/tests/scenarios.rs`), each a generic async function over
//! [`EngineUnderTest`], run against the selected cells of every engine through the real runner
//! images, real servers and a real S3 server.
//!
//! An engine supplies only what differs between engines: how to start its server (and an empty
//! restore target), how to seed and fingerprint its sample, and the runner's environment to
//! reach it. Everything a scenario asserts that does not depend on the engine — exit codes,
//! callbacks and their signatures, the manifest's fields, what storage holds afterwards — is
//! here, once ([`check`], [`Store`]).
//!
//! [`suite`] selects the cells of each scenario (data, printed at start) and runs them.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use aws_sdk_s3::error::DisplayErrorContext;
use testcontainers::core::IntoContainerPort;

use crate::containers::{shared_dir, Job, S3Container, HOST_ALIAS};
use crate::matrix::Cell;
use crate::s3::S3Api;
use crate::CallbackReceiver;

pub mod mysql;
pub mod postgres;
pub mod redis;
pub mod suite;

pub use mysql::Mysql;
pub use postgres::Postgres;
pub use redis::Redis;
pub use suite::{Cells, Scenario, Suite};

/// The exit codes of the README's table.
pub mod exit {
    pub const OK: i64 = 0;
    pub const CONFIG: i64 = 2;
    pub const DB_REFUSED: i64 = 3;
    pub const INCOMPATIBLE: i64 = 5;
    pub const STORAGE: i64 = 6;
    pub const TOOL: i64 = 7;
    pub const INTEGRITY: i64 = 8;
    /// `check`: the newest complete backup is older than `CHECK_MAX_AGE`, or there is none.
    pub const STALE: i64 = 10;
    pub const SIGTERM: i64 = 143;
}

/// The S3 secret key every scenario's jobs use: the secret scan looks for it everywhere.
pub const STORAGE_SECRET: &str = "scenario-storage-secret-5150";
/// The callback secret: it may travel only in the `Authorization` header.
pub const CALLBACK_SECRET: &str = "scenario-callback-secret-2112";
/// What the runner logs once the first part of a backup is on its way to S3.
pub const UPLOAD_STARTED: &str = "multipart upload started";

/// Which data a scenario needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Data {
    /// The engine's realistic sample (`pg_sample`, `mysql_sample`, `redis_sample`): every type
    /// and kind of object the engine has.
    Sample,
    /// About 250 MiB: a dump that runs long enough to be interrupted mid-upload, and that a
    /// runner holding the dump in memory could not back up under the memory bound.
    Large,
}

/// A way of backing up whose processes differ (Redis: `rdb` runs `redis-cli --rdb`, `logical`
/// the runner's own helper). The first one is what a job without the variant's variables does.
#[derive(Debug, Clone)]
pub struct Variant {
    pub name: &'static str,
    pub env: Vec<(String, String)>,
    /// A part of the dump tool's argv, as `/proc/<pid>/cmdline` shows it.
    pub dump_tool: &'static str,
    /// A part of the restore tool's argv.
    pub restore_tool: &'static str,
}

/// What a scenario needs from an engine, and nothing else.
pub trait EngineUnderTest: Send + Sync + Sized + 'static {
    /// A database jobs back up from or restore into: a running server and, for engines with
    /// named databases, which one.
    type Db: Send + Sync + 'static;
    /// What [`EngineUnderTest::fingerprint`] reads, compared with
    /// [`EngineUnderTest::differences`].
    type Fingerprint: Send + Sync + 'static;

    /// The engine's name in images/matrix.toml.
    const ENGINE: &'static str;
    /// The variable that lets a restore replace what a non-empty target holds.
    const CLEAN_FLAG: &'static str;
    /// What the runner's error says when the database refuses the password.
    const DENIED: &'static str;
    /// A string the seeded [`Data::Sample`] holds that its dump carries as it is (not
    /// compressed by the dump tool), for showing that an encrypted backup does not.
    const SAMPLE_TEXT: &'static str;

    /// Starts `server_image` on `network` with the empty database jobs use, for `data` (an
    /// engine may tune the server for bulk loads).
    fn start(
        server_image: &str,
        network: &str,
        data: Data,
    ) -> impl Future<Output = Result<Self::Db>> + Send;

    /// An empty database to restore into, of the same server image as `near`: a new database
    /// on `near`'s server where that is a clean target, else on another server (which a later
    /// call for the same `near` may empty again: a scenario uses one at a time).
    fn fresh(near: &Self::Db) -> impl Future<Output = Result<Self::Db>> + Send;

    /// Writes `data` into the (empty) database.
    fn seed(db: &Self::Db, data: Data) -> impl Future<Output = Result<()>> + Send;

    /// Reads `data` back from the database, strictly enough that any change to it shows.
    fn fingerprint(
        db: &Self::Db,
        data: Data,
    ) -> impl Future<Output = Result<Self::Fingerprint>> + Send;

    /// Every difference between two fingerprints, each naming its class (table, object, key…);
    /// empty when they are the same.
    fn differences(expected: &Self::Fingerprint, actual: &Self::Fingerprint) -> Vec<String>;

    /// Changes one value of the seeded [`Data::Sample`], for showing that the comparison fails.
    fn tamper(db: &Self::Db) -> impl Future<Output = Result<()>> + Send;

    /// Sets the marker of `db` to `value` (letters, digits and `-`): one value kept apart from
    /// any sample data (a table or key of its own, created when missing), which a scenario
    /// changes between backups to tell which backup a restore loaded.
    fn set_marker(db: &Self::Db, value: &str) -> impl Future<Output = Result<()>> + Send;

    /// The marker [`EngineUnderTest::set_marker`] wrote, as restored into `db`; an error when
    /// `db` has none.
    fn marker(db: &Self::Db) -> impl Future<Output = Result<String>> + Send;

    /// The runner's variables to reach the database (`DB_*`), for `cell`'s image.
    fn env(cell: &Cell, db: &Self::Db) -> Vec<(String, String)>;

    /// [`EngineUnderTest::env`] with `password` instead of the right one.
    fn wrong_password(cell: &Cell, db: &Self::Db, password: &str) -> Vec<(String, String)>;

    /// The database's passwords: none may appear in argv, logs, callbacks or manifests.
    fn secrets(db: &Self::Db) -> Vec<String>;

    /// The engine's ways of backing up, the default first.
    fn variants(cell: &Cell) -> Vec<Variant>;

    /// The server's container name (also its host name on the test network).
    fn container_name(db: &Self::Db) -> &str;
}

/// A database with data in it, and its fingerprint read right after seeding.
pub struct Seeded<E: EngineUnderTest> {
    pub db: E::Db,
    pub fingerprint: E::Fingerprint,
    pub data: Data,
}

/// What the scenarios of one cell share: the cell, its network, its S3 server and the seeded
/// databases, started when a scenario first needs them. A cell's scenarios run one at a time.
pub struct CellState<E: EngineUnderTest> {
    pub cell: Cell,
    /// Every selected cell (of every engine).
    pub selected: Vec<Cell>,
    s3_image: String,
    network: String,
    s3: tokio::sync::OnceCell<S3Container>,
    sample: tokio::sync::OnceCell<Seeded<E>>,
    large: tokio::sync::Mutex<Option<Arc<Seeded<E>>>>,
    buckets: AtomicU32,
}

impl<E: EngineUnderTest> CellState<E> {
    pub fn new(cell: Cell, selected: Vec<Cell>, s3_image: String) -> CellState<E> {
        CellState {
            cell,
            selected,
            s3_image,
            network: crate::containers::unique("net"),
            s3: tokio::sync::OnceCell::new(),
            sample: tokio::sync::OnceCell::new(),
            large: tokio::sync::Mutex::new(None),
            buckets: AtomicU32::new(0),
        }
    }
}

/// One scenario's view of its cell.
pub struct Ctx<E: EngineUnderTest> {
    state: Arc<CellState<E>>,
    scenario: &'static str,
    skipped: Mutex<Option<String>>,
}

impl<E: EngineUnderTest> Ctx<E> {
    pub(crate) fn new(state: Arc<CellState<E>>, scenario: &'static str) -> Ctx<E> {
        Ctx {
            state,
            scenario,
            skipped: Mutex::new(None),
        }
    }

    pub fn cell(&self) -> &Cell {
        &self.state.cell
    }

    /// The cell's runner image.
    pub fn image(&self) -> String {
        self.state.cell.image()
    }

    pub fn network(&self) -> &str {
        &self.state.network
    }

    /// Every selected cell, of every engine.
    pub fn selected(&self) -> &[Cell] {
        &self.state.selected
    }

    /// Prints a line prefixed with the scenario and the cell.
    pub fn log(&self, line: impl std::fmt::Display) {
        println!("[{} {}] {line}", self.state.cell.name, self.scenario);
    }

    /// Ends the scenario as skipped for this cell, with the reason printed.
    pub fn skip(&self, reason: impl Into<String>) -> Result<()> {
        let reason = reason.into();
        self.log(format!("SKIPPED: {reason}"));
        *self.skipped.lock().unwrap_or_else(|e| e.into_inner()) = Some(reason);
        Ok(())
    }

    pub(crate) fn skipped(&self) -> Option<String> {
        self.skipped
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The cell's S3 server.
    pub async fn s3(&self) -> Result<&S3Container> {
        self.state
            .s3
            .get_or_try_init(|| S3Container::start(&self.state.s3_image, &self.state.network))
            .await
    }

    /// A new, empty bucket on the cell's S3 server.
    pub async fn s3_store(&self) -> Result<Store> {
        let s3 = self.s3().await?;
        let bucket = format!(
            "b{:03}-{}",
            self.state.buckets.fetch_add(1, Ordering::Relaxed),
            self.scenario
                .replace('_', "-")
                .chars()
                .take(40)
                .collect::<String>()
                .trim_end_matches('-')
        );
        s3.create_bucket(&bucket).await?;
        Store::s3(s3, &bucket).await
    }

    /// A new, empty host directory, mounted into jobs as a volume at `/backups`.
    pub fn local_store(&self) -> Result<Store> {
        Ok(Store::Local { dir: shared_dir()? })
    }

    /// The cell's server with [`Data::Sample`] seeded; the same one for all of the cell's
    /// scenarios, which must leave its data as they found it.
    pub async fn sample(&self) -> Result<&Seeded<E>> {
        self.state
            .sample
            .get_or_try_init(|| self.seeded(Data::Sample))
            .await
    }

    /// A server with [`Data::Large`] seeded, shared like [`Ctx::sample`].
    pub async fn large(&self) -> Result<Arc<Seeded<E>>> {
        let mut large = self.state.large.lock().await;
        if let Some(seeded) = &*large {
            return Ok(seeded.clone());
        }
        let seeded = Arc::new(self.seeded(Data::Large).await?);
        *large = Some(seeded.clone());
        Ok(seeded)
    }

    /// A server with [`Data::Large`] seeded that no other scenario uses afterwards, for a
    /// scenario that destroys it: the shared one when it exists (later scenarios get a new one).
    pub async fn own_large(&self) -> Result<Arc<Seeded<E>>> {
        if let Some(seeded) = self.state.large.lock().await.take() {
            return Ok(seeded);
        }
        Ok(Arc::new(self.seeded(Data::Large).await?))
    }

    async fn seeded(&self, data: Data) -> Result<Seeded<E>> {
        let started = Instant::now();
        let db = E::start(&self.state.cell.server, &self.state.network, data).await?;
        let after_start = started.elapsed();
        E::seed(&db, data)
            .await
            .with_context(|| format!("seeding {data:?} on {}", self.state.cell.server))?;
        let fingerprint = E::fingerprint(&db, data).await?;
        self.log(format!(
            "{data:?} seeded on {} (server up in {:.1}s, seeded and read in {:.1}s)",
            self.state.cell.server,
            after_start.as_secs_f64(),
            (started.elapsed() - after_start).as_secs_f64()
        ));
        Ok(Seeded {
            db,
            fingerprint,
            data,
        })
    }

    /// An empty restore target like `near` (see [`EngineUnderTest::fresh`]).
    pub async fn fresh(&self, near: &E::Db) -> Result<E::Db> {
        E::fresh(near).await
    }

    /// A callback receiver the job containers reach.
    pub async fn callbacks(&self) -> Result<CallbackReceiver> {
        CallbackReceiver::start_on("0.0.0.0").await
    }

    /// A job of the cell's image.
    pub fn job(&self) -> Job {
        Job::new(&self.image(), self.network())
    }

    /// A backup of `db` into `store` at `key`.
    pub fn backup(&self, db: &E::Db, store: &Store, key: &str) -> Job {
        store
            .attach(self.job())
            .envs(&E::env(self.cell(), db))
            .env("BACKUP_PATH", key)
    }

    /// A restore of `key` from `store` into `db`.
    pub fn restore(&self, db: &E::Db, store: &Store, key: &str) -> Job {
        store
            .attach(self.job())
            .envs(&E::env(self.cell(), db))
            .env("OPERATION_TYPE", "restore")
            .env("BACKUP_PATH", key)
    }

    /// Panics listing the differences unless `db` holds what `seeded` held when it was seeded.
    pub async fn assert_same(&self, seeded: &Seeded<E>, db: &E::Db, what: &str) -> Result<()> {
        let actual = E::fingerprint(db, seeded.data).await?;
        let differences = E::differences(&seeded.fingerprint, &actual);
        assert!(
            differences.is_empty(),
            "{} {what}: {} differences:\n  {}",
            self.cell().name,
            differences.len(),
            differences
                .iter()
                .take(25)
                .cloned()
                .collect::<Vec<_>>()
                .join("\n  ")
        );
        Ok(())
    }
}

/// Adds the callback variables (URL, signing secret, job id) to a job.
pub fn with_callbacks(job: Job, cb: &CallbackReceiver, job_id: &str) -> Job {
    job.env("JOB_ID", job_id)
        .env("CALLBACK_URL", cb.url_via(HOST_ALIAS))
        .env("CALLBACK_SECRET", CALLBACK_SECRET)
}

/// Where a scenario's jobs keep backups: a bucket of its own, or a host directory mounted as a
/// volume.
pub enum Store {
    S3 {
        api: S3Api,
        bucket: String,
        env: Vec<(String, String)>,
    },
    Local {
        dir: tempfile::TempDir,
    },
}

impl Store {
    async fn s3(s3: &S3Container, bucket: &str) -> Result<Store> {
        let port = s3
            .container()
            .get_host_port_ipv4(5000.tcp())
            .await
            .context("the S3 server's mapped port")?;
        let mut env = s3.job_env(bucket);
        for (k, v) in &mut env {
            if k == "STORAGE_SECRET_ACCESS_KEY" {
                *v = STORAGE_SECRET.into();
            }
        }
        Ok(Store::S3 {
            api: S3Api::new(&format!("http://127.0.0.1:{port}")),
            bucket: bucket.to_string(),
            env,
        })
    }

    /// The storage variables, and the volume for a local store.
    pub fn attach(&self, job: Job) -> Job {
        match self {
            Store::S3 { env, .. } => job.envs(env),
            Store::Local { dir } => job
                .mount(dir.path(), "/backups")
                .env("STORAGE_TYPE", "local")
                .env("STORAGE_LOCAL_DIR", "/backups"),
        }
    }

    /// The host directory of a local store.
    pub fn dir(&self) -> Option<&Path> {
        match self {
            Store::Local { dir } => Some(dir.path()),
            Store::S3 { .. } => None,
        }
    }

    pub fn s3_api(&self) -> Option<(&S3Api, &str)> {
        match self {
            Store::S3 { api, bucket, .. } => Some((api, bucket)),
            Store::Local { .. } => None,
        }
    }

    /// Every key stored, sorted (files under the directory, with `/` separators).
    pub async fn keys(&self) -> Result<Vec<String>> {
        let mut keys = match self {
            Store::S3 { api, bucket, .. } => api.list_keys(bucket).await?,
            Store::Local { dir } => {
                let mut keys = Vec::new();
                walk(dir.path(), dir.path(), &mut keys)?;
                keys
            }
        };
        keys.sort();
        Ok(keys)
    }

    /// Multipart uploads begun and neither completed nor aborted (none for a local store).
    pub async fn uploads(&self) -> Result<Vec<(String, String)>> {
        match self {
            Store::S3 { api, bucket, .. } => api.list_multipart_uploads(bucket).await,
            Store::Local { .. } => Ok(Vec::new()),
        }
    }

    pub async fn get(&self, key: &str) -> Result<Vec<u8>> {
        match self {
            Store::S3 { api, bucket, .. } => api.get(bucket, key).await,
            Store::Local { dir } => {
                std::fs::read(dir.path().join(key)).with_context(|| format!("reading {key}"))
            }
        }
    }

    pub async fn put(&self, key: &str, bytes: Vec<u8>) -> Result<()> {
        match self {
            Store::S3 { api, bucket, .. } => api.put(bucket, key, bytes).await,
            Store::Local { dir } => {
                let path = dir.path().join(key);
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent)?;
                }
                std::fs::write(&path, bytes).with_context(|| format!("writing {key}"))
            }
        }
    }

    /// Deletes the object at `key` (a missing one is no error on S3).
    pub async fn delete(&self, key: &str) -> Result<()> {
        match self {
            Store::S3 { api, bucket, .. } => {
                api.client()
                    .delete_object()
                    .bucket(bucket)
                    .key(key)
                    .send()
                    .await
                    .map_err(|e| anyhow!("delete {bucket}/{key}: {}", DisplayErrorContext(&e)))?;
                Ok(())
            }
            Store::Local { dir } => std::fs::remove_file(dir.path().join(key))
                .with_context(|| format!("deleting {key}")),
        }
    }

    /// The manifest of the backup at `key`, parsed.
    pub async fn manifest(&self, key: &str) -> Result<serde_json::Value> {
        let bytes = self.get(&format!("{key}.manifest.json")).await?;
        serde_json::from_slice(&bytes).context("the manifest is not JSON")
    }

    /// Panics unless the store holds nothing: no object, no manifest, no partial file, no
    /// multipart upload.
    pub async fn assert_empty(&self, what: &str) -> Result<()> {
        let keys = self.keys().await?;
        assert!(keys.is_empty(), "{what}: left behind in storage: {keys:?}");
        let uploads = self.uploads().await?;
        assert!(
            uploads.is_empty(),
            "{what}: incomplete multipart uploads left: {uploads:?}"
        );
        Ok(())
    }

    /// Panics unless the store holds exactly these backups (each object and its manifest) and
    /// no multipart upload.
    pub async fn assert_holds(&self, backups: &[&str], what: &str) -> Result<()> {
        let mut expected: Vec<String> = backups
            .iter()
            .flat_map(|k| [k.to_string(), format!("{k}.manifest.json")])
            .collect();
        expected.sort();
        assert_eq!(self.keys().await?, expected, "{what}: what storage holds");
        let uploads = self.uploads().await?;
        assert!(
            uploads.is_empty(),
            "{what}: incomplete multipart uploads left: {uploads:?}"
        );
        Ok(())
    }

    /// Removes every object (large backups are held in the S3 server's memory).
    pub async fn clear(&self) -> Result<()> {
        if let Store::S3 { api, bucket, .. } = self {
            let client = api.client();
            for key in api.list_keys(bucket).await? {
                client
                    .delete_object()
                    .bucket(bucket)
                    .key(&key)
                    .send()
                    .await
                    .map_err(|e| anyhow!("delete {bucket}/{key}: {}", DisplayErrorContext(&e)))?;
            }
        }
        Ok(())
    }
}

fn walk(root: &Path, dir: &Path, keys: &mut Vec<String>) -> Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let path: PathBuf = entry?.path();
        if path.is_dir() {
            walk(root, &path, keys)?;
        } else {
            let rel = path.strip_prefix(root).expect("under the root");
            keys.push(rel.to_string_lossy().into_owned());
        }
    }
    Ok(())
}

/// `docker logs` of a container (stdout and stderr), for a job still running.
pub fn docker_logs(id: &str) -> Result<String> {
    let out = std::process::Command::new("/usr/bin/docker")
        .args(["logs", id])
        .output()
        .context("running /usr/bin/docker logs")?;
    if !out.status.success() {
        bail!(
            "docker logs {id}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    ))
}

/// Waits until a running container's log holds `line`.
pub async fn wait_for_log(id: &str, line: &str, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if docker_logs(id)?.contains(line) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the log of {id} did not show {line:?} within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A container paused with `docker pause` (it accepts connections and never answers), unpaused
/// when dropped, also when the scenario fails.
pub struct Paused(String);

impl Paused {
    pub fn pause(id: &str) -> Result<Paused> {
        crate::containers::docker_cli(&["pause", id])?;
        Ok(Paused(id.to_string()))
    }
}

impl Drop for Paused {
    fn drop(&mut self) {
        let _ = crate::containers::docker_cli(&["unpause", &self.0]);
    }
}

/// The engine-independent assertions.
pub mod check {
    use sha2::{Digest, Sha256};

    use crate::containers::JobOutput;
    use crate::matrix::Cell;
    use crate::CallbackReceiver;

    use super::CALLBACK_SECRET;

    /// Panics unless the job exited with `code`, its last status callback is `failed` and that
    /// callback's message says `reason`.
    pub fn failed(out: &JobOutput, code: i64, cb: &CallbackReceiver, reason: &str, what: &str) {
        out.assert_code(code, what);
        let calls = cb.requests();
        let last = calls
            .iter()
            .rev()
            .find(|r| !r.path.ends_with("/metadata"))
            .unwrap_or_else(|| panic!("{what}: no status callback"));
        assert_eq!(last.body["status"], "failed", "{what}: {:?}", last.body);
        let message = last.body["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(reason),
            "{what}: the failed callback should say {reason:?}: {message}"
        );
        signed(cb, what);
    }

    /// Panics unless every callback carries the bearer secret and a valid signature.
    pub fn signed(cb: &CallbackReceiver, what: &str) {
        for r in cb.requests() {
            assert_eq!(
                r.authorization.as_deref(),
                Some(format!("Bearer {CALLBACK_SECRET}").as_str()),
                "{what}: {} callback without the bearer secret",
                r.kind()
            );
            assert!(
                r.signature_valid(CALLBACK_SECRET),
                "{what}: {} callback with a bad signature: {:?}",
                r.kind(),
                r.headers
            );
        }
    }

    /// The callbacks of a successful backup: `running`, `metadata`, `success`, signed, with the
    /// job id; the metadata matches the manifest.
    pub fn backup_callbacks(
        cb: &CallbackReceiver,
        job_id: &str,
        manifest: &serde_json::Value,
        what: &str,
    ) {
        assert_eq!(cb.statuses(), ["running", "metadata", "success"], "{what}");
        signed(cb, what);
        let calls = cb.requests();
        for r in &calls {
            assert_eq!(r.body["job_id"], job_id, "{what}: {:?}", r.body);
            assert!(r.body["timestamp"].is_string(), "{what}: {:?}", r.body);
        }
        let meta = &calls[1].body["metadata"];
        for field in ["bytes", "raw_bytes", "object_key", "sha256", "parts"] {
            assert_eq!(meta[field], manifest[field], "{what}: metadata {field}");
        }
        assert_eq!(
            meta["manifest_key"],
            format!(
                "{}.manifest.json",
                manifest["object_key"].as_str().unwrap_or("")
            ),
            "{what}"
        );
        assert!(
            meta["peak_rss_bytes"].as_u64().unwrap_or(0) > 0,
            "{what}: {meta}"
        );
    }

    /// The manifest of a backup made by `cell`'s image of `key` (the stored `object`) for job
    /// `job_id`, compressed with the default (zstd), not encrypted.
    pub fn manifest(
        cell: &Cell,
        manifest: &serde_json::Value,
        key: &str,
        object: &[u8],
        job_id: &str,
        what: &str,
    ) {
        let m = manifest;
        assert_eq!(m["manifest_version"], 1, "{what}: {m}");
        assert!(m.get("encryption").is_none(), "{what}: not encrypted: {m}");
        manifest_fields(cell, m, key, object, job_id, "zstd", what);
    }

    /// The manifest of a backup encrypted with age, `kind` `x25519` to `recipients` or `scrypt`
    /// (a passphrase, no recipients), compressed with `compression`: version 2, the encryption
    /// recorded exactly, and `bytes` and `sha256` those of the stored (encrypted) `object`.
    #[allow(clippy::too_many_arguments)]
    pub fn encrypted_manifest(
        cell: &Cell,
        manifest: &serde_json::Value,
        key: &str,
        object: &[u8],
        job_id: &str,
        compression: &str,
        kind: &str,
        recipients: &[&str],
        what: &str,
    ) {
        let m = manifest;
        assert_eq!(m["manifest_version"], 2, "{what}: {m}");
        assert_eq!(
            m["encryption"],
            serde_json::json!({"scheme": "age", "kind": kind, "recipients": recipients}),
            "{what}: the manifest's encryption"
        );
        manifest_fields(cell, m, key, object, job_id, compression, what);
    }

    fn manifest_fields(
        cell: &Cell,
        m: &serde_json::Value,
        key: &str,
        object: &[u8],
        job_id: &str,
        compression: &str,
        what: &str,
    ) {
        assert_eq!(m["job_id"], job_id, "{what}: {m}");
        assert!(
            m["engine"] == cell.engine.as_str() || m["engine"] == cell.product(),
            "{what}: engine {}",
            m["engine"]
        );
        assert_eq!(
            m["engine_version"],
            cell.version.as_str(),
            "{what}: the image knows its version"
        );
        for field in ["server_version", "client_version"] {
            let v = m[field].as_str().unwrap_or_default();
            assert!(
                v.contains(&cell.version),
                "{what}: {field} {v:?} should name {}",
                cell.version
            );
        }
        for field in ["runner_version", "format"] {
            assert!(
                !m[field].as_str().unwrap_or_default().is_empty(),
                "{what}: {field} is empty: {m}"
            );
        }
        assert_eq!(m["object_key"], key, "{what}");
        assert_eq!(m["bytes"], object.len() as u64, "{what}: bytes");
        assert_eq!(
            m["sha256"],
            hex::encode(Sha256::digest(object)),
            "{what}: sha256 of the stored object"
        );
        let raw = m["raw_bytes"].as_u64().unwrap_or(0);
        assert!(raw > 0, "{what}: raw_bytes {raw}");
        assert_eq!(m["compression"]["algorithm"], compression, "{what}: {m}");
        assert!(
            m["parts"].as_u64().unwrap_or(0) >= 1 && m["part_size"].as_u64().unwrap_or(0) > 0,
            "{what}: {m}"
        );
        let (started, finished) = (
            m["started_at"].as_str().unwrap_or_default(),
            m["finished_at"].as_str().unwrap_or_default(),
        );
        assert!(
            !started.is_empty() && started <= finished,
            "{what}: started {started:?}, finished {finished:?}"
        );
        assert_eq!(
            m["warnings"],
            serde_json::json!([]),
            "{what}: the sample needs no warning"
        );
    }

    /// The runner's peak RSS, from the `peak_rss_bytes` field of its last log line.
    pub fn peak_rss(out: &JobOutput, what: &str) -> u64 {
        let at = out
            .stderr
            .rfind("peak_rss_bytes=")
            .unwrap_or_else(|| panic!("{what}: no peak_rss_bytes in the log:\n{}", out.stderr));
        out.stderr[at + "peak_rss_bytes=".len()..]
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{what}: unreadable peak_rss_bytes"))
    }

    /// Panics unless `object` is an age file (the format of the `age` tool) whose header holds
    /// `count` recipient stanzas of `kind` (`X25519`, `scrypt`) and never `plaintext`.
    pub fn age_object(object: &[u8], kind: &str, count: usize, plaintext: &str, what: &str) {
        const MAGIC: &[u8] = b"age-encryption.org/v1\n";
        assert!(
            object.starts_with(MAGIC),
            "{what}: the stored object is not an age file: {:?}",
            String::from_utf8_lossy(&object[..object.len().min(40)])
        );
        let end = super::find(object, b"\n--- ")
            .unwrap_or_else(|| panic!("{what}: the age header has no MAC line"));
        let header = String::from_utf8_lossy(&object[..end]);
        let stanzas = header.matches(&format!("\n-> {kind} ")).count();
        assert_eq!(
            stanzas, count,
            "{what}: {kind} stanzas in the header:\n{header}"
        );
        assert!(
            super::find(object, plaintext.as_bytes()).is_none(),
            "{what}: the stored bytes hold the plaintext {plaintext:?}"
        );
    }

    /// Panics if any of `secrets` occurs in any of `texts`.
    pub fn no_secret(texts: &[String], secrets: &[String], what: &str) {
        for text in texts {
            for secret in secrets {
                assert!(
                    !text.contains(secret.as_str()),
                    "{what}: a secret leaked into:\n{text}"
                );
            }
        }
    }
}

/// The differences between two multi-line fingerprints, line by line: each line is one fact
/// (an object's definition, a table's checksum), so a difference names its class.
pub fn line_differences(expected: &str, actual: &str) -> Vec<String> {
    let mut want: Vec<&str> = expected.lines().collect();
    let mut got: Vec<&str> = actual.lines().collect();
    want.sort_unstable();
    got.sort_unstable();
    let (mut i, mut j) = (0, 0);
    let mut out = Vec::new();
    while i < want.len() || j < got.len() {
        match (want.get(i), got.get(j)) {
            (Some(w), Some(g)) if w == g => {
                i += 1;
                j += 1;
            }
            (Some(w), Some(g)) if w < g => {
                out.push(format!("missing: {}", clip(w)));
                i += 1;
            }
            (Some(_), Some(g)) => {
                out.push(format!("unexpected: {}", clip(g)));
                j += 1;
            }
            (Some(w), None) => {
                out.push(format!("missing: {}", clip(w)));
                i += 1;
            }
            (None, Some(g)) => {
                out.push(format!("unexpected: {}", clip(g)));
                j += 1;
            }
            (None, None) => unreachable!(),
        }
    }
    out
}

/// Where `needle` first occurs in `haystack`.
pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    let first = needle[0];
    let mut at = 0;
    while let Some(i) = haystack[at..].iter().position(|&b| b == first) {
        let start = at + i;
        if haystack[start..].starts_with(needle) {
            return Some(start);
        }
        at = start + 1;
    }
    None
}

/// Whether a marker (see [`EngineUnderTest::set_marker`]) can go into SQL as a literal as it is.
pub fn plain_marker(value: &str) -> bool {
    !value.is_empty() && value.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
}

fn clip(line: &str) -> String {
    if line.len() <= 300 {
        return line.to_string();
    }
    let mut end = 300;
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &line[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_differences_name_each_changed_line() {
        assert!(line_differences("a\nb\nc", "c\nb\na").is_empty());
        assert_eq!(
            line_differences("rel t r\ncustomers 2 x\n", "rel t r\ncustomers 2 y\n"),
            ["missing: customers 2 x", "unexpected: customers 2 y"]
        );
        assert_eq!(line_differences("a\na", "a"), ["missing: a"]);
        assert_eq!(line_differences("", "z"), ["unexpected: z"]);
    }

    #[test]
    fn find_locates_a_byte_string() {
        assert_eq!(find(b"abcabd", b"abd"), Some(3));
        assert_eq!(find(b"aaab", b"aab"), Some(1));
        assert_eq!(find(b"abc", b"abcd"), None);
        assert_eq!(find(b"", b"a"), None);
    }
}
