//! The job's configuration: Plan B's variables unchanged, plus `DATABASE_URL`, `*_FILE` secrets,
//! local storage, compression and S3-compatibility settings. Parsed once, validated before
//! anything connects.
//!
//! The types live here; `url` reads `DATABASE_URL`, `db` the connection settings, `storage`
//! where backups go, and `names` lists the variables read only in some configurations.

use std::path::PathBuf;
use std::time::Duration;

use ::url::Url;

use crate::engine::EngineInfo;
use crate::env::EnvReader;
use crate::secret::Secret;

mod catalog;
mod db;
mod duration;
mod encryption;
mod names;
mod observe;
mod scope;
mod storage;
mod url;

pub use catalog::{CatalogConfig, DEFAULT_PRUNE_GRACE};
pub use duration::parse_age;
pub use names::CONDITIONALLY_READ;
pub use observe::{
    read_observe, HealthcheckConfig, MetricsConfig, ObserveConfig, DEFAULT_METRICS_JOB,
};
pub use scope::{matches, Scope, ServerScope, MAX_SERVER_PARALLELISM};
pub use storage::{HostInfo, DEFAULT_LOCAL_DIR};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Backup,
    Restore,
    /// Checks a backup end to end (manifest, checksum, decompression) without restoring it, or
    /// also restores it into a scratch database with `VERIFY_RESTORE=true`.
    Verify,
    /// Lists the backups under the prefix, newest first, and what is there but is not a backup.
    List,
    /// Applies the retention policy to one database's backups.
    Prune,
    /// Fails when the newest complete backup is older than `CHECK_MAX_AGE`.
    Check,
}

impl Operation {
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Backup => "backup",
            Operation::Restore => "restore",
            Operation::Verify => "verify",
            Operation::List => "list",
            Operation::Prune => "prune",
            Operation::Check => "check",
        }
    }

    pub const ALL: [Operation; 6] = [
        Operation::Backup,
        Operation::Restore,
        Operation::Verify,
        Operation::List,
        Operation::Prune,
        Operation::Check,
    ];

    /// Whether the operation works on the catalog only, never connecting to a database.
    pub fn is_catalog(self) -> bool {
        matches!(self, Operation::List | Operation::Prune | Operation::Check)
    }
}

/// `BACKUP_PATH=latest`: the value that selects the newest complete backup.
pub const LATEST: &str = "latest";

#[derive(Debug, Clone)]
pub struct Config {
    pub operation: Operation,
    pub job_id: String,
    pub db: DbConfig,
    /// One database, or the whole server as a set (`DB_NAME=*`, `BACKUP_SCOPE=server`).
    pub scope: Scope,
    pub storage: StorageConfig,
    /// `BACKUP_PATH`: the object key (Plan B semantics); derived from `key_prefix` when unset.
    pub backup_path: Option<String>,
    /// `BACKUP_PATH=latest`: restore or verify the newest complete backup of
    /// `catalog.source_db` (resolved by the job, which then sets `backup_path`).
    pub latest: bool,
    /// Retention, prune, check and the database the catalog operations consider.
    pub catalog: CatalogConfig,
    /// How a backup is encrypted (`ENCRYPTION_RECIPIENTS` or `ENCRYPTION_PASSPHRASE`).
    pub encryption: Option<crate::crypto::Encryption>,
    /// What restore and verify decrypt with (`ENCRYPTION_IDENTITY_FILE`, the passphrase).
    pub keys: crate::crypto::Keys,
    pub key_prefix: Option<String>,
    pub retention_days: Option<u32>,
    pub compression: Compression,
    pub callback: Option<CallbackConfig>,
    /// `METRICS_PUSHGATEWAY_URL`, `HEALTHCHECK_URL`: who else hears of the job's start and end.
    pub observe: ObserveConfig,
    pub progress_interval: Option<Duration>,
    /// `VERIFY_RESTORE`: a verify also restores into the configured (scratch) database.
    pub verify_restore: bool,
    /// `RESTORE_VERIFY_FIRST`: check the whole object before touching the target; `None`
    /// leaves it to the engine (on unless its restore is atomic).
    pub verify_first: Option<bool>,
    /// `STRICT_FIDELITY`: a backup that cannot be restored exactly (a loss the engine names
    /// before the dump) fails instead of warning.
    pub strict_fidelity: bool,
    /// `BACKUP_OVERWRITE`: a backup may replace an existing backup at the same key. Off by
    /// default: an existing backup is kept and the new one fails.
    pub overwrite: bool,
    /// `DUMP_STALL_TIMEOUT_SECS`: how long the dump (or restore) may make no progress before the
    /// job is stopped as stalled; `None` (`0`) never stops it. Default 10 minutes.
    pub stall_timeout: Option<Duration>,
    /// `STORAGE_LOCAL_ALLOW_EPHEMERAL`: a backup to local storage may go to a directory on a
    /// container's own filesystem (lost with the container). Off by default: refused.
    pub allow_ephemeral_local: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DbConfig {
    pub host: String,
    pub port: u16,
    pub name: String,
    pub user: String,
    pub password: Option<Secret>,
    pub tls: TlsConfig,
    pub connect_timeout_secs: u32,
    /// How long a dump tool may wait for a lock before failing, where the tool can be told
    /// (`pg_dump --lock-wait-timeout`): the stall timeout, `DUMP_STALL_TIMEOUT_SECS`.
    pub lock_wait_timeout: Option<Duration>,
}

/// TLS settings in libpq's vocabulary; engines translate them to their tools' options.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsConfig {
    /// disable | allow | prefer | require | verify-ca | verify-full
    pub mode: Option<String>,
    pub root_cert: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

pub const TLS_MODES: &[&str] = &[
    "disable",
    "allow",
    "prefer",
    "require",
    "verify-ca",
    "verify-full",
];

#[derive(Debug, Clone)]
pub enum StorageConfig {
    Local { dir: PathBuf },
    S3(S3Config),
}

#[derive(Debug, Clone)]
pub struct S3Config {
    /// `STORAGE_TYPE` as given (s3, minio, r2, gcs, …), kept for logs and the manifest.
    pub flavor: String,
    pub endpoint: Option<String>,
    pub bucket: String,
    pub region: String,
    /// `None`: the SDK's default credential chain (IRSA, workload identity, instance profile…).
    pub credentials: Option<(Secret, Secret)>,
    pub force_path_style: bool,
    pub checksum: ChecksumMode,
    pub part_size: Option<u64>,
    pub concurrency: usize,
    /// `STORAGE_TIMEOUT_SECS`: the longest one request attempt (one part, one GET) may take, so
    /// a store that stops answering fails the job instead of hanging it.
    pub request_timeout: Duration,
}

/// When the SDK adds request checksums. Many S3-compatible stores reject the newer default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChecksumMode {
    WhenRequired,
    WhenSupported,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Algorithm {
    Zstd,
    Gzip,
    None,
}

impl Algorithm {
    pub fn extension(self) -> &'static str {
        match self {
            Algorithm::Zstd => ".zst",
            Algorithm::Gzip => ".gz",
            Algorithm::None => "",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Compression {
    pub algorithm: Algorithm,
    pub level: i32,
    /// zstd worker threads; 0 or 1 compresses on the pipeline's own thread.
    pub threads: u32,
}

#[derive(Debug, Clone)]
pub struct CallbackConfig {
    pub url: Url,
    pub secret: Option<Secret>,
    pub timeout: Duration,
    pub max_attempts: u32,
}

pub const MIN_PART_SIZE_MB: u64 = 5;
pub const MAX_PART_SIZE_MB: u64 = 5 * 1024;
/// The longest `DUMP_STALL_TIMEOUT_SECS` accepted, and its default.
pub const MAX_STALL_TIMEOUT_SECS: u64 = 86400;
pub const DEFAULT_STALL_TIMEOUT_SECS: u64 = 600;

impl Config {
    /// Reads the whole configuration; problems are recorded in `env`, and `None` is returned when
    /// there is at least one. The machine is inspected (container, mounts) only when a backup goes
    /// to local storage.
    pub fn read(env: &mut EnvReader<'_>, engine: &EngineInfo) -> Option<Config> {
        Self::read_on(env, engine, &HostInfo::detect)
    }

    /// [`Config::read`] with the machine described by `host` (called at most once, and only when
    /// a backup goes to local storage).
    pub fn read_on(
        env: &mut EnvReader<'_>,
        engine: &EngineInfo,
        host: &dyn Fn(&EnvReader<'_>) -> HostInfo,
    ) -> Option<Config> {
        let operation = read_operation(env);
        check_engine(env, engine);
        let job_id = env.string("JOB_ID").unwrap_or_else(generated_job_id);
        let verify_restore = env.bool("VERIFY_RESTORE").unwrap_or(false);
        let verify_first = env.bool("RESTORE_VERIFY_FIRST");
        let strict_fidelity = env.bool("STRICT_FIDELITY").unwrap_or(false);
        let overwrite = env.bool("BACKUP_OVERWRITE").unwrap_or(false);
        let stall_timeout = read_stall_timeout(env);
        // A plain verify and the catalog operations read storage only: the database settings
        // are optional.
        let db_required = match operation {
            Some(Operation::Verify) => verify_restore,
            Some(op) => !op.is_catalog(),
            None => true,
        };
        let server_requested = scope::server_requested(env);
        let db = db::read_db(env, engine, db_required, server_requested);
        let allow_ephemeral_local = env.bool("STORAGE_LOCAL_ALLOW_EPHEMERAL").unwrap_or(false);
        let check_local =
            (operation == Some(Operation::Backup) && !allow_ephemeral_local).then_some(host);
        let storage = storage::read_storage(env, check_local);
        let mut backup_path = read_backup_path(env);
        let latest = backup_path
            .as_deref()
            .is_some_and(|p| p.eq_ignore_ascii_case(LATEST));
        match operation {
            Some(op @ (Operation::Restore | Operation::Verify)) if backup_path.is_none() => env
                .problem(
                    "BACKUP_PATH",
                    format!(
                        "is required for OPERATION_TYPE={}: the object key of the backup \
                         (the backup logs it and reports it as metadata.object_key), or \
                         latest for the newest complete backup",
                        op.as_str()
                    ),
                ),
            Some(op) if latest && !matches!(op, Operation::Restore | Operation::Verify) => env
                .problem(
                    "BACKUP_PATH",
                    format!(
                        "latest selects a backup to restore or verify; OPERATION_TYPE={} does not take it: unset BACKUP_PATH",
                        op.as_str()
                    ),
                ),
            _ => {}
        }
        let scope = scope::read_scope(
            env,
            engine,
            operation,
            db.as_ref().map(|d| d.name.as_str()),
            backup_path.is_some() && !latest,
        );
        if latest {
            backup_path = None;
        }
        let key_prefix = env
            .string("STORAGE_PREFIX")
            .map(|p| p.trim_matches('/').to_string())
            .filter(|p| !p.is_empty());
        let retention_days = env.int_in::<u32>("RETENTION_DAYS", 0, 36500, "days to keep");
        let catalog = catalog::read_catalog(
            env,
            operation,
            db.as_ref().map(|d| d.name.as_str()),
            retention_days,
        );
        if latest && catalog.source_db.is_none() && operation == Some(Operation::Restore) {
            env.problem(
                "SOURCE_DB_NAME",
                "BACKUP_PATH=latest needs the database whose backups to choose from: set SOURCE_DB_NAME (or DB_NAME)",
            );
        }
        let compression = read_compression(env);
        let (encryption, keys) = encryption::read_encryption(env, operation);
        let callback = read_callback(env);
        let observe = read_observe(env);
        let progress_interval = match env.int_in::<u64>(
            "PROGRESS_INTERVAL_SECS",
            0,
            86400,
            "seconds between progress lines (0 disables them)",
        ) {
            Some(0) => None,
            Some(s) => Some(Duration::from_secs(s)),
            None => Some(Duration::from_secs(10)),
        };
        if env.has_problems() {
            return None;
        }
        let mut db = db?;
        db.lock_wait_timeout = stall_timeout;
        Some(Config {
            operation: operation?,
            job_id,
            db,
            scope,
            storage: storage?,
            backup_path,
            latest,
            catalog,
            encryption,
            keys,
            key_prefix,
            retention_days,
            compression: compression?,
            callback: callback.ok()?,
            observe,
            progress_interval,
            verify_restore,
            verify_first,
            strict_fidelity,
            overwrite,
            stall_timeout,
            allow_ephemeral_local,
        })
    }
}

fn read_stall_timeout(env: &mut EnvReader<'_>) -> Option<Duration> {
    let secs = env
        .int_in::<u64>(
            "DUMP_STALL_TIMEOUT_SECS",
            0,
            MAX_STALL_TIMEOUT_SECS,
            "seconds without progress before a stalled dump or restore is stopped (0 never stops it)",
        )
        .unwrap_or(DEFAULT_STALL_TIMEOUT_SECS);
    (secs > 0).then(|| Duration::from_secs(secs))
}

fn generated_job_id() -> String {
    let now = chrono::Utc::now().format("%Y%m%dT%H%M%SZ");
    format!("local-{now}-{:04x}", rand::random::<u16>())
}

fn read_operation(env: &mut EnvReader<'_>) -> Option<Operation> {
    let names = Operation::ALL.map(Operation::as_str);
    match env.choice("OPERATION_TYPE", &names) {
        Some(op) => Operation::ALL.into_iter().find(|o| o.as_str() == op),
        None if env.is_set("OPERATION_TYPE") => None,
        None => Some(Operation::Backup),
    }
}

fn check_engine(env: &mut EnvReader<'_>, engine: &EngineInfo) {
    if let Some(value) = env.string("DB_ENGINE") {
        if !engine
            .aliases
            .iter()
            .any(|a| a.eq_ignore_ascii_case(&value))
        {
            env.problem(
                "DB_ENGINE",
                format!(
                    "{value:?} is not this image's engine: this is the {} runner \
                     (accepts {}); use the image for {value} instead",
                    engine.display_name,
                    engine.aliases.join(", ")
                ),
            );
        }
    }
}

fn read_backup_path(env: &mut EnvReader<'_>) -> Option<String> {
    let raw = env.string("BACKUP_PATH")?;
    let key = raw.trim_start_matches('/').to_string();
    if key.is_empty() || key.ends_with('/') {
        env.problem(
            "BACKUP_PATH",
            format!("{raw:?} is not an object key: give a full key such as backups/app/2026-11-22.pgdump.zst, or use STORAGE_PREFIX for a folder"),
        );
        return None;
    }
    if key.ends_with(crate::manifest::MANIFEST_SUFFIX) {
        env.problem(
            "BACKUP_PATH",
            "names a manifest: give the backup object's key (without .manifest.json)",
        );
        return None;
    }
    Some(key)
}

fn read_compression(env: &mut EnvReader<'_>) -> Option<Compression> {
    let algorithm = match env
        .choice("COMPRESSION", &["zstd", "gzip", "none"])
        .as_deref()
    {
        Some("gzip") => Algorithm::Gzip,
        Some("none") => Algorithm::None,
        Some(_) => Algorithm::Zstd,
        None if env.is_set("COMPRESSION") => return None,
        None => Algorithm::Zstd,
    };
    let (default, max) = match algorithm {
        Algorithm::Zstd => (3, 19),
        Algorithm::Gzip => (6, 9),
        Algorithm::None => (0, 0),
    };
    let level = if algorithm == Algorithm::None {
        0
    } else {
        env.int_in::<i32>("COMPRESSION_LEVEL", 1, max, "the compression level")
            .unwrap_or(default)
    };
    let cores = std::thread::available_parallelism()
        .map(|n| n.get() as u32)
        .unwrap_or(1);
    let threads = env
        .int_in::<u32>("COMPRESSION_THREADS", 1, 64, "zstd worker threads")
        .unwrap_or(cores.min(4));
    Some(Compression {
        algorithm,
        level,
        threads,
    })
}

/// Parsed on its own so a failure callback can still be sent when the rest of the config is bad.
pub(crate) fn read_callback(env: &mut EnvReader<'_>) -> Result<Option<CallbackConfig>, ()> {
    let secret = env.secret("CALLBACK_SECRET");
    let timeout = env
        .int_in::<u64>("CALLBACK_TIMEOUT_SECS", 1, 300, "seconds per attempt")
        .unwrap_or(10);
    let max_attempts = env
        .int_in::<u32>("CALLBACK_MAX_ATTEMPTS", 1, 20, "attempts per callback")
        .unwrap_or(5);
    let Some(raw) = env.string("CALLBACK_URL") else {
        return Ok(None);
    };
    match Url::parse(&raw) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => {
            Ok(Some(CallbackConfig {
                url,
                secret,
                timeout: Duration::from_secs(timeout),
                max_attempts,
            }))
        }
        _ => {
            env.problem(
                "CALLBACK_URL",
                format!("{raw:?} is not an http(s) URL: expected e.g. https://control-plane/api/jobs/callback"),
            );
            Err(())
        }
    }
}

#[cfg(test)]
pub(super) mod testutil {
    use super::*;
    use crate::engine::EXAMPLE_ENGINE as TEST_ENGINE;
    use crate::env::ConfigError;
    use std::collections::HashMap;

    /// Variables for a test case.
    pub type Vars<'a> = Vec<(&'a str, &'a str)>;
    pub type VarSlice<'a> = &'a [(&'a str, &'a str)];

    /// The configuration for `vars`, read on `host`.
    pub fn load_on(vars: &[(&str, &str)], host: HostInfo) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut env = EnvReader::new(move |k| map.get(k).cloned());
        let cfg = Config::read_on(&mut env, &TEST_ENGINE, &|_| host.clone());
        env.finish()?;
        Ok(cfg.expect("no problems means a config"))
    }

    /// The configuration for `vars`, read outside any container.
    pub fn load(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        load_on(vars, HostInfo::default())
    }

    /// The variables named by the problems `vars` has.
    pub fn problem_vars(vars: &[(&str, &str)]) -> Vec<String> {
        load(vars)
            .unwrap_err()
            .problems
            .into_iter()
            .map(|p| p.var)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::testutil::*;
    use super::*;
    use crate::engine::EXAMPLE_ENGINE as TEST_ENGINE;
    use std::collections::HashMap;

    fn plan_b() -> Vec<(&'static str, &'static str)> {
        vec![
            ("JOB_ID", "job-42"),
            ("DB_ENGINE", "postgresql"),
            ("DB_HOST", "db.internal"),
            ("DB_PORT", "5433"),
            ("DB_NAME", "app"),
            ("DB_USERNAME", "app_user"),
            ("DB_PASSWORD", "plan-b-db-password"),
            ("STORAGE_TYPE", "minio"),
            ("STORAGE_ENDPOINT", "http://minio:9000"),
            ("STORAGE_BUCKET", "backups"),
            ("STORAGE_REGION", "us-east-1"),
            ("STORAGE_ACCESS_KEY_ID", "AKIAEXAMPLE"),
            ("STORAGE_SECRET_ACCESS_KEY", "plan-b-storage-secret"),
            ("BACKUP_PATH", "jobs/job-42.sql.gz"),
            ("RETENTION_DAYS", "30"),
            (
                "CALLBACK_URL",
                "https://cp.example.com/api/jobs/job-42/callback",
            ),
            ("CALLBACK_SECRET", "plan-b-callback-secret"),
            ("OPERATION_TYPE", "backup"),
        ]
    }

    #[test]
    fn plan_b_variables_are_accepted_unchanged() {
        let cfg = load(&plan_b()).unwrap();
        assert_eq!(cfg.operation, Operation::Backup);
        assert_eq!(cfg.job_id, "job-42");
        assert_eq!(cfg.db.host, "db.internal");
        assert_eq!(cfg.db.port, 5433);
        assert_eq!(cfg.db.user, "app_user");
        assert_eq!(
            cfg.db.password.as_ref().unwrap().expose(),
            "plan-b-db-password"
        );
        assert_eq!(cfg.backup_path.as_deref(), Some("jobs/job-42.sql.gz"));
        assert_eq!(cfg.retention_days, Some(30));
        let StorageConfig::S3(s3) = &cfg.storage else {
            panic!("expected S3 storage")
        };
        assert_eq!(s3.flavor, "minio");
        assert!(s3.force_path_style);
        assert_eq!(s3.checksum, ChecksumMode::WhenRequired);
        assert!(s3.credentials.is_some());
        let cb = cfg.callback.unwrap();
        assert_eq!(cb.secret.unwrap().expose(), "plan-b-callback-secret");
        assert_eq!(cfg.compression.algorithm, Algorithm::Zstd);
    }

    #[test]
    fn debug_output_never_shows_secrets() {
        let cfg = load(&plan_b()).unwrap();
        let text = format!("{cfg:?}");
        for secret in [
            "plan-b-db-password",
            "plan-b-storage-secret",
            "plan-b-callback-secret",
        ] {
            assert!(!text.contains(secret), "{secret} leaked in {text}");
        }
    }

    #[test]
    fn aws_defaults_without_endpoint() {
        let cfg = load(&[
            ("DB_HOST", "h"),
            ("DB_NAME", "d"),
            ("STORAGE_BUCKET", "my-bucket"),
        ])
        .unwrap();
        let StorageConfig::S3(s3) = cfg.storage else {
            panic!()
        };
        assert_eq!(s3.flavor, "s3");
        assert!(!s3.force_path_style);
        assert_eq!(s3.checksum, ChecksumMode::WhenSupported);
        assert!(s3.credentials.is_none(), "default chain");
        assert_eq!(cfg.db.port, 5432);
        assert_eq!(cfg.db.user, "postgres");
        assert!(cfg.job_id.starts_with("local-"));
    }

    #[test]
    fn local_storage_is_the_default() {
        let cfg = load(&[("DB_HOST", "h"), ("DB_NAME", "d")]).unwrap();
        assert!(matches!(cfg.storage, StorageConfig::Local { .. }));
    }

    #[test]
    fn database_url_with_encoded_password_and_sslmode() {
        let cfg = load(&[(
            "DATABASE_URL",
            "postgresql://bob:p%40ss%2Fw@db.example:6543/shop?sslmode=verify-full",
        )])
        .unwrap();
        assert_eq!(cfg.db.host, "db.example");
        assert_eq!(cfg.db.port, 6543);
        assert_eq!(cfg.db.name, "shop");
        assert_eq!(cfg.db.user, "bob");
        assert_eq!(cfg.db.password.unwrap().expose(), "p@ss/w");
        assert_eq!(cfg.db.tls.mode.as_deref(), Some("verify-full"));
    }

    #[test]
    fn database_url_and_db_vars_conflict() {
        let err = load(&[("DATABASE_URL", "postgres://u@h/d"), ("DB_HOST", "other")]).unwrap_err();
        assert_eq!(err.problems.len(), 1);
        assert_eq!(err.problems[0].var, "DB_HOST");
    }

    #[test]
    fn the_whole_server_is_db_name_star_or_backup_scope_server() {
        let base = [("DB_HOST", "h"), ("STORAGE_LOCAL_DIR", "/backups")];
        let star =
            load(&[&base[..], &[("DB_NAME", "*"), ("SERVER_PARALLELISM", "4")]].concat()).unwrap();
        let Scope::Server(scope) = &star.scope else {
            panic!("{:?}", star.scope)
        };
        assert_eq!(scope.parallelism, 4);
        assert_eq!(star.db.name, "*");
        assert_eq!(star.catalog.source_db.as_deref(), Some("*"));
        let named = load(
            &[
                &base[..],
                &[("BACKUP_SCOPE", "server"), ("DB_EXCLUDE", "tmp_*, scratch")],
            ]
            .concat(),
        )
        .unwrap();
        let Scope::Server(scope) = &named.scope else {
            panic!("{:?}", named.scope)
        };
        assert_eq!(scope.exclude, ["tmp_*", "scratch"]);
        assert_eq!(named.db.name, "*");
        assert_eq!(
            load(&[&base[..], &[("DB_NAME", "app")]].concat())
                .unwrap()
                .scope,
            Scope::Database
        );
        // Contradictions and options that only apply to a set are refused, naming the variable.
        for (vars, var) in [
            (
                vec![("DB_NAME", "app"), ("BACKUP_SCOPE", "server")],
                "BACKUP_SCOPE",
            ),
            (
                vec![("DB_NAME", "*"), ("BACKUP_SCOPE", "database")],
                "BACKUP_SCOPE",
            ),
            (vec![("DB_NAME", "app"), ("DB_INCLUDE", "a")], "DB_INCLUDE"),
            (
                vec![("DB_NAME", "app"), ("SERVER_PARALLELISM", "2")],
                "SERVER_PARALLELISM",
            ),
            (
                vec![("DB_NAME", "*"), ("SERVER_PARALLELISM", "17")],
                "SERVER_PARALLELISM",
            ),
            (vec![("DB_NAME", "*"), ("DB_INCLUDE", " , ")], "DB_INCLUDE"),
            (
                vec![("DB_NAME", "*"), ("BACKUP_PATH", "x/y.sql")],
                "BACKUP_PATH",
            ),
            (
                vec![("DB_NAME", "*"), ("RESTORE_DATABASES", "a")],
                "RESTORE_DATABASES",
            ),
            (
                vec![
                    ("DB_NAME", "*"),
                    ("OPERATION_TYPE", "restore"),
                    ("BACKUP_PATH", "latest"),
                    ("DB_INCLUDE", "a"),
                ],
                "DB_INCLUDE",
            ),
            (
                vec![
                    ("DB_NAME", "*"),
                    ("OPERATION_TYPE", "restore"),
                    ("BACKUP_PATH", "latest"),
                    ("RESTORE_DATABASES", "a*"),
                ],
                "RESTORE_DATABASES",
            ),
        ] {
            let found = problem_vars(&[&base[..], &vars[..]].concat());
            assert!(found.contains(&var.to_string()), "{vars:?}: {found:?}");
        }
        let restore = load(
            &[
                &base[..],
                &[
                    ("DB_NAME", "*"),
                    ("OPERATION_TYPE", "restore"),
                    ("BACKUP_PATH", "latest"),
                    ("RESTORE_DATABASES", "app, shop"),
                    ("RESTORE_GLOBALS", "false"),
                ],
            ]
            .concat(),
        )
        .unwrap();
        let Scope::Server(scope) = &restore.scope else {
            panic!()
        };
        assert_eq!(
            scope.restore_databases.as_deref(),
            Some(&["app".to_string(), "shop".to_string()][..])
        );
        assert!(!scope.restore_globals);
    }

    #[test]
    fn an_engine_without_sets_refuses_the_whole_server() {
        let mut info = crate::engine::EXAMPLE_ENGINE.clone_for_test();
        info.server_scope = false;
        let map: HashMap<String, String> = [("DB_HOST", "h"), ("DB_NAME", "*")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut env = EnvReader::new(move |k| map.get(k).cloned());
        let _ = Config::read_on(&mut env, &info, &|_| HostInfo::default());
        let err = env.finish().unwrap_err();
        assert_eq!(err.problems[0].var, "DB_NAME");
        assert!(
            err.problems[0]
                .message
                .contains("already covers the whole server"),
            "{err}"
        );
    }

    #[test]
    fn every_error_is_reported_at_once() {
        let err = load(&[
            ("OPERATION_TYPE", "snapshot"),
            ("DB_ENGINE", "mysql"),
            ("DB_PORT", "five"),
            ("DB_PASSWORD", "do-not-print-me"),
            ("STORAGE_TYPE", "s3"),
            ("COMPRESSION", "lzma"),
            ("CALLBACK_URL", "not a url"),
            ("RETENTION_DAYS", "-1"),
        ])
        .unwrap_err();
        let vars: Vec<&str> = err.problems.iter().map(|p| p.var.as_str()).collect();
        for v in [
            "OPERATION_TYPE",
            "DB_ENGINE",
            "DB_PORT",
            "DB_HOST",
            "DB_NAME",
            "STORAGE_BUCKET",
            "COMPRESSION",
            "CALLBACK_URL",
            "RETENTION_DAYS",
        ] {
            assert!(vars.contains(&v), "{v} missing from {vars:?}");
        }
        let text = err.to_string();
        assert!(!text.contains("do-not-print-me"));
        assert!(text.contains("\"five\" is not valid"), "{text}");
        assert!(text.contains("use one of backup, restore"), "{text}");
    }

    #[test]
    fn restore_needs_backup_path() {
        let err = load(&[
            ("OPERATION_TYPE", "RESTORE"),
            ("DB_HOST", "h"),
            ("DB_NAME", "d"),
        ])
        .unwrap_err();
        assert_eq!(err.problems[0].var, "BACKUP_PATH");
    }

    #[test]
    fn compression_levels_are_checked_per_algorithm() {
        let err = load(&[
            ("DB_HOST", "h"),
            ("DB_NAME", "d"),
            ("COMPRESSION", "gzip"),
            ("COMPRESSION_LEVEL", "12"),
        ])
        .unwrap_err();
        assert_eq!(err.problems[0].var, "COMPRESSION_LEVEL");
        let cfg = load(&[("DB_HOST", "h"), ("DB_NAME", "d"), ("COMPRESSION", "none")]).unwrap();
        assert_eq!(cfg.compression.algorithm, Algorithm::None);
    }

    #[test]
    fn half_credentials_and_missing_endpoint() {
        let err = load(&[
            ("DB_HOST", "h"),
            ("DB_NAME", "d"),
            ("STORAGE_TYPE", "r2"),
            ("STORAGE_BUCKET", "b/with/slash"),
            ("STORAGE_ACCESS_KEY_ID", "key"),
            ("STORAGE_PART_SIZE_MB", "2"),
        ])
        .unwrap_err();
        let vars: Vec<&str> = err.problems.iter().map(|p| p.var.as_str()).collect();
        assert_eq!(
            vars,
            [
                "STORAGE_ENDPOINT",
                "STORAGE_BUCKET",
                "STORAGE_SECRET_ACCESS_KEY",
                "STORAGE_PART_SIZE_MB"
            ]
        );
    }

    #[test]
    fn new_job_settings() {
        let base = [("DB_HOST", "h"), ("DB_NAME", "d")];
        let with = |extra: &[(&'static str, &'static str)]| {
            let mut vars = base.to_vec();
            vars.extend_from_slice(extra);
            load(&vars)
        };
        let cfg = with(&[]).unwrap();
        assert!(!cfg.overwrite);
        assert_eq!(cfg.stall_timeout, Some(Duration::from_secs(600)));
        assert!(!cfg.allow_ephemeral_local);

        // (variables, overwrite, stall timeout in seconds, ephemeral local storage allowed)
        let accepted: &[(VarSlice, bool, Option<u64>, bool)] = &[
            (&[("BACKUP_OVERWRITE", "true")], true, Some(600), false),
            (&[("BACKUP_OVERWRITE", "off")], false, Some(600), false),
            (&[("DUMP_STALL_TIMEOUT_SECS", "0")], false, None, false),
            (&[("DUMP_STALL_TIMEOUT_SECS", "1")], false, Some(1), false),
            (
                &[("DUMP_STALL_TIMEOUT_SECS", "86400")],
                false,
                Some(86400),
                false,
            ),
            (
                &[("STORAGE_LOCAL_ALLOW_EPHEMERAL", "yes")],
                false,
                Some(600),
                true,
            ),
        ];
        for (extra, overwrite, stall, ephemeral) in accepted {
            let cfg = with(extra).unwrap_or_else(|e| panic!("{extra:?}: {e}"));
            assert_eq!(cfg.overwrite, *overwrite, "{extra:?}");
            assert_eq!(
                cfg.stall_timeout,
                stall.map(Duration::from_secs),
                "{extra:?}"
            );
            assert_eq!(cfg.allow_ephemeral_local, *ephemeral, "{extra:?}");
        }

        let refused_values: &[(&str, &str, &str)] = &[
            ("BACKUP_OVERWRITE", "sometimes", "is not a boolean"),
            ("DUMP_STALL_TIMEOUT_SECS", "86401", "out of range"),
            ("DUMP_STALL_TIMEOUT_SECS", "-1", "is not valid"),
            ("DUMP_STALL_TIMEOUT_SECS", "10m", "is not valid"),
            ("STORAGE_LOCAL_ALLOW_EPHEMERAL", "maybe", "is not a boolean"),
        ];
        for (var, value, expected) in refused_values {
            let err = with(&[(var, value)]).unwrap_err();
            assert_eq!(err.problems.len(), 1, "{err}");
            assert_eq!(err.problems[0].var, *var);
            assert!(err.problems[0].message.contains(expected), "{err}");
        }
    }

    #[test]
    fn control_characters_in_tool_values_are_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let pw_file = dir.path().join("pw");
        std::fs::write(&pw_file, "file-pw\thidden2\n").unwrap();
        let pw_file = pw_file.to_str().unwrap();
        let base = [("DB_HOST", "h"), ("DB_NAME", "d")];
        // (extra variables, the variable named, a word the message must hold)
        let cases: &[(VarSlice, &str, &str)] = &[
            (&[("DB_HOST", "db\nevil")], "DB_HOST", "line feed"),
            (&[("DB_USERNAME", "app\tuser")], "DB_USERNAME", "tab"),
            (&[("DB_NAME", "app\x7f")], "DB_NAME", "0x7F"),
            (&[("DB_NAME", "app\rdb")], "DB_NAME", "carriage return"),
            (
                &[("DB_SSL_ROOT_CERT", "/ca\n.pem")],
                "DB_SSL_ROOT_CERT",
                "line feed",
            ),
            (&[("DB_SSL_CERT", "/c\x1b.pem")], "DB_SSL_CERT", "escape"),
            (&[("DB_SSL_KEY", "/k\0.pem")], "DB_SSL_KEY", "NUL"),
            (
                &[("DB_PASSWORD", "direct-pw\nhidden1")],
                "DB_PASSWORD",
                "line feed",
            ),
            (&[("DB_PASSWORD_FILE", pw_file)], "DB_PASSWORD_FILE", "tab"),
        ];
        for (extra, var, word) in cases {
            let mut vars = base.to_vec();
            vars.extend_from_slice(extra);
            let err = load(&vars).unwrap_err();
            assert_eq!(err.problems.len(), 1, "{extra:?}: {err}");
            assert_eq!(err.problems[0].var, *var, "{err}");
            let text = err.to_string();
            assert!(text.contains("control character"), "{text}");
            assert!(text.contains(word), "{word}: {text}");
            for value in ["evil", "app\\t", "hidden", ".pem", "direct-pw", "file-pw"] {
                assert!(!text.contains(value), "value shown: {text}");
            }
        }
        // Surrounding blanks of ordinary variables are trimmed, as before.
        let cfg = load(&[("DB_HOST", " h\n"), ("DB_NAME", "\td ")]).unwrap();
        assert_eq!((cfg.db.host.as_str(), cfg.db.name.as_str()), ("h", "d"));
    }

    #[test]
    fn database_names_that_look_like_options_are_refused() {
        for (vars, expected) in [
            (vec![("DB_HOST", "h"), ("DB_NAME", "-x")], "DB_NAME"),
            (vec![("DB_HOST", "h"), ("DB_NAME", "--help")], "DB_NAME"),
            (vec![("DB_HOST", "h"), ("DB_NAME", " -n")], "DB_NAME"),
            (vec![("DATABASE_URL", "postgres://u@h/-x")], "DATABASE_URL"),
            (
                vec![("DATABASE_URL", "postgres://u@h/%2Dx")],
                "DATABASE_URL",
            ),
        ] {
            let err = load(&vars).unwrap_err();
            assert_eq!(err.problems.len(), 1, "{vars:?}: {err}");
            assert_eq!(err.problems[0].var, expected);
            assert!(err.problems[0].message.contains("starts with '-'"), "{err}");
            assert!(err.problems[0].message.contains("option"), "{err}");
        }
        for name in ["a-b", "x-", "app_db"] {
            let cfg = load(&[("DB_HOST", "h"), ("DB_NAME", name)]).unwrap();
            assert_eq!(cfg.db.name, name);
        }
    }

    #[test]
    fn every_variable_read_is_in_the_list() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("s");
        std::fs::write(&secret, "x-secret").unwrap();
        let secret = secret.to_str().unwrap();
        let configs: &[&[(&str, &str)]] = &[
            &[],
            &[("STORAGE_TYPE", "nonsense"), ("COMPRESSION", "none")],
            &[("OPERATION_TYPE", "restore"), ("STORAGE_TYPE", "local")],
            &[
                ("STORAGE_BUCKET", "b"),
                ("STORAGE_ACCESS_KEY_ID_FILE", secret),
                ("STORAGE_SECRET_ACCESS_KEY_FILE", secret),
                ("CALLBACK_URL", "https://cp/cb"),
                ("OPERATION_TYPE", "verify"),
            ],
        ];
        for vars in configs {
            let map: HashMap<String, String> = vars
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            let mut env = EnvReader::new(move |k| map.get(k).cloned());
            Config::read_on(&mut env, &TEST_ENGINE, &|_| HostInfo {
                in_container: true,
                mountinfo: Some(String::new()),
            });
            for name in env.names_read() {
                assert!(
                    CONDITIONALLY_READ.contains(&name.as_str()),
                    "{name} is read but not in CONDITIONALLY_READ"
                );
            }
        }
    }
}
