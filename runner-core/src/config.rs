//! The job's configuration: Plan B's variables unchanged, plus `DATABASE_URL`, `*_FILE` secrets,
//! local storage, compression and S3-compatibility settings. Parsed once, validated before
//! anything connects.

use std::path::PathBuf;
use std::time::Duration;

use url::Url;

use crate::engine::EngineInfo;
use crate::env::EnvReader;
use crate::secret::Secret;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Backup,
    Restore,
    /// Checks a backup end to end (manifest, checksum, decompression) without restoring it, or
    /// also restores it into a scratch database with `VERIFY_RESTORE=true`.
    Verify,
}

impl Operation {
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Backup => "backup",
            Operation::Restore => "restore",
            Operation::Verify => "verify",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub operation: Operation,
    pub job_id: String,
    pub db: DbConfig,
    pub storage: StorageConfig,
    /// `BACKUP_PATH`: the object key (Plan B semantics); derived from `key_prefix` when unset.
    pub backup_path: Option<String>,
    pub key_prefix: Option<String>,
    pub retention_days: Option<u32>,
    pub compression: Compression,
    pub callback: Option<CallbackConfig>,
    pub progress_interval: Option<Duration>,
    /// `VERIFY_RESTORE`: a verify also restores into the configured (scratch) database.
    pub verify_restore: bool,
    /// `RESTORE_VERIFY_FIRST`: check the whole object before touching the target; `None`
    /// leaves it to the engine (on unless its restore is atomic).
    pub verify_first: Option<bool>,
    /// `STRICT_FIDELITY`: a backup that cannot be restored exactly (a loss the engine names
    /// before the dump) fails instead of warning.
    pub strict_fidelity: bool,
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
const S3_FLAVORS: &[&str] = &[
    "s3",
    "s3-compatible",
    "minio",
    "r2",
    "gcs",
    "spaces",
    "wasabi",
    "b2",
    "oci",
    "ceph",
    "garage",
];
const LOCAL_FLAVORS: &[&str] = &["local", "file", "filesystem"];

impl Config {
    /// Reads the whole configuration; problems are recorded in `env`, and `None` is returned when
    /// there is at least one.
    pub fn read(env: &mut EnvReader<'_>, engine: &EngineInfo) -> Option<Config> {
        let operation = read_operation(env);
        check_engine(env, engine);
        let job_id = env.string("JOB_ID").unwrap_or_else(generated_job_id);
        let verify_restore = env.bool("VERIFY_RESTORE").unwrap_or(false);
        let verify_first = env.bool("RESTORE_VERIFY_FIRST");
        let strict_fidelity = env.bool("STRICT_FIDELITY").unwrap_or(false);
        // A plain verify reads storage only: the database settings are optional.
        let db_required = operation != Some(Operation::Verify) || verify_restore;
        let db = read_db(env, engine, db_required);
        let storage = read_storage(env);
        let backup_path = read_backup_path(env);
        if let Some(op @ (Operation::Restore | Operation::Verify)) = operation {
            if backup_path.is_none() {
                env.problem(
                    "BACKUP_PATH",
                    format!(
                        "is required for OPERATION_TYPE={}: the object key of the backup \
                         (the backup logs it and reports it as metadata.object_key)",
                        op.as_str()
                    ),
                );
            }
        }
        let key_prefix = env
            .string("STORAGE_PREFIX")
            .map(|p| p.trim_matches('/').to_string())
            .filter(|p| !p.is_empty());
        let retention_days = env.int_in::<u32>("RETENTION_DAYS", 0, 36500, "days to keep");
        let compression = read_compression(env);
        let callback = read_callback(env);
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
        Some(Config {
            operation: operation?,
            job_id,
            db: db?,
            storage: storage?,
            backup_path,
            key_prefix,
            retention_days,
            compression: compression?,
            callback: callback.ok()?,
            progress_interval,
            verify_restore,
            verify_first,
            strict_fidelity,
        })
    }
}

fn generated_job_id() -> String {
    let now = chrono::Utc::now().format("%Y%m%dT%H%M%SZ");
    format!("local-{now}-{:04x}", rand::random::<u16>())
}

fn read_operation(env: &mut EnvReader<'_>) -> Option<Operation> {
    match env
        .choice("OPERATION_TYPE", &["backup", "restore", "verify"])
        .as_deref()
    {
        Some("restore") => Some(Operation::Restore),
        Some("verify") => Some(Operation::Verify),
        Some(_) => Some(Operation::Backup),
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

/// Connection fields from `DATABASE_URL`, percent-decoded.
#[derive(Default)]
struct UrlParts {
    host: Option<String>,
    port: Option<u16>,
    name: Option<String>,
    user: Option<String>,
    password: Option<Secret>,
    tls: TlsConfig,
}

fn read_database_url(env: &mut EnvReader<'_>, engine: &EngineInfo) -> UrlParts {
    let Some(raw) = env.secret("DATABASE_URL") else {
        return UrlParts::default();
    };
    let what = format!(
        "a URL like {}://user:password@host:{}/dbname",
        engine.url_schemes[0], engine.default_port
    );
    let url = match Url::parse(raw.expose()) {
        Ok(url) => url,
        Err(e) => {
            env.problem(
                "DATABASE_URL",
                format!("is not a valid URL ({e}): expected {what}"),
            );
            return UrlParts::default();
        }
    };
    if !engine.url_schemes.contains(&url.scheme()) {
        env.problem(
            "DATABASE_URL",
            format!(
                "scheme {:?} is not for this engine: use {} ({what})",
                url.scheme(),
                engine.url_schemes.join(" or ")
            ),
        );
        return UrlParts::default();
    }
    let decode = |s: &str| percent_decode(s).unwrap_or_else(|| s.to_string());
    let mut parts = UrlParts {
        host: url
            .host_str()
            .map(|h| h.trim_matches(['[', ']']).to_string()),
        port: url.port(),
        name: Some(decode(url.path().trim_start_matches('/'))).filter(|s| !s.is_empty()),
        user: Some(decode(url.username())).filter(|s| !s.is_empty()),
        password: url.password().map(|p| Secret::new(decode(p))),
        tls: TlsConfig::default(),
    };
    if engine.tls_url_schemes.contains(&url.scheme()) {
        parts.tls.mode = Some("require".into());
    }
    for (k, v) in url.query_pairs() {
        match k.as_ref() {
            "sslmode" | "ssl-mode" | "ssl_mode" => parts.tls.mode = Some(v.to_ascii_lowercase()),
            "sslrootcert" | "ssl-ca" => parts.tls.root_cert = Some(PathBuf::from(v.as_ref())),
            "sslcert" | "ssl-cert" => parts.tls.cert = Some(PathBuf::from(v.as_ref())),
            "sslkey" | "ssl-key" => parts.tls.key = Some(PathBuf::from(v.as_ref())),
            "connect_timeout" => {}
            other => env.problem(
                "DATABASE_URL",
                format!(
                    "query parameter {other:?} is not supported: use sslmode, sslrootcert, \
                     sslcert, sslkey or connect_timeout"
                ),
            ),
        }
    }
    parts
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// A field given both in `DATABASE_URL` and in its own variable is ambiguous.
fn merge<T>(
    env: &mut EnvReader<'_>,
    var: &str,
    from_url: Option<T>,
    direct: Option<T>,
) -> Option<T> {
    match (from_url, direct) {
        (Some(_), Some(d)) => {
            env.problem(
                var,
                "is also given in DATABASE_URL: set it in one place only",
            );
            Some(d)
        }
        (u, d) => d.or(u),
    }
}

fn read_db(env: &mut EnvReader<'_>, engine: &EngineInfo, required: bool) -> Option<DbConfig> {
    let from_url = read_database_url(env, engine);
    let host = env.string("DB_HOST");
    let host = merge(env, "DB_HOST", from_url.host, host);
    let port = env.int_in::<u16>("DB_PORT", 1, 65535, "the database port");
    let port = merge(env, "DB_PORT", from_url.port, port).unwrap_or(engine.default_port);
    let name = env.string("DB_NAME");
    let name = merge(env, "DB_NAME", from_url.name, name)
        .or_else(|| engine.default_database.map(str::to_string));
    let user = env.string("DB_USERNAME");
    let user = merge(env, "DB_USERNAME", from_url.user, user)
        .unwrap_or_else(|| engine.default_user.to_string());
    let password = env.secret("DB_PASSWORD");
    let password = merge(env, "DB_PASSWORD", from_url.password, password);

    let mut tls = from_url.tls;
    if let Some(mode) = env.choice("DB_SSL_MODE", TLS_MODES) {
        tls.mode = Some(mode);
    } else if let Some(mode) = &tls.mode {
        if !TLS_MODES.contains(&mode.as_str()) {
            env.problem(
                "DATABASE_URL",
                format!(
                    "sslmode {mode:?} is not supported: use one of {}",
                    TLS_MODES.join(", ")
                ),
            );
        }
    }
    for (var, slot) in [
        ("DB_SSL_ROOT_CERT", &mut tls.root_cert),
        ("DB_SSL_CERT", &mut tls.cert),
        ("DB_SSL_KEY", &mut tls.key),
    ] {
        if let Some(path) = env.string(var) {
            *slot = Some(PathBuf::from(path));
        }
    }
    let connect_timeout_secs = env
        .int_in::<u32>("DB_CONNECT_TIMEOUT_SECS", 1, 3600, "seconds")
        .unwrap_or(30);

    let (host, name) = match (required, host, name) {
        (false, host, name) => (host.or(Some(String::new())), name.or(Some(String::new()))),
        (true, host, name) => (host, name),
    };
    if host.is_none() {
        env.problem(
            "DB_HOST",
            "is required: set DB_HOST (or DATABASE_URL) to the database server's host name",
        );
    }
    if name.is_none() {
        env.problem(
            "DB_NAME",
            "is required: set DB_NAME (or the path of DATABASE_URL) to the database to back up or restore into",
        );
    }
    Some(DbConfig {
        host: host?,
        port,
        name: name?,
        user,
        password,
        tls,
        connect_timeout_secs,
    })
}

fn read_storage(env: &mut EnvReader<'_>) -> Option<StorageConfig> {
    let mut accepted: Vec<&str> = LOCAL_FLAVORS.to_vec();
    accepted.extend_from_slice(S3_FLAVORS);
    let flavor = match env.choice("STORAGE_TYPE", &accepted) {
        Some(f) => f,
        None if env.is_set("STORAGE_TYPE") => return None,
        // The embedded default: a local directory, unless a bucket says otherwise.
        None if env.is_set("STORAGE_BUCKET") => "s3".to_string(),
        None => "local".to_string(),
    };
    if LOCAL_FLAVORS.contains(&flavor.as_str()) {
        let dir = env
            .string("STORAGE_LOCAL_DIR")
            .unwrap_or_else(|| "./backups".to_string());
        return Some(StorageConfig::Local { dir: dir.into() });
    }

    let endpoint = env
        .string("STORAGE_ENDPOINT")
        .or_else(|| (flavor == "gcs").then(|| "https://storage.googleapis.com".to_string()));
    match &endpoint {
        Some(e) => match Url::parse(e) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
            _ => env.problem(
                "STORAGE_ENDPOINT",
                format!("{e:?} is not an http(s) URL: expected e.g. https://s3.example.com:9000"),
            ),
        },
        None if flavor != "s3" => env.problem(
            "STORAGE_ENDPOINT",
            format!("is required for STORAGE_TYPE={flavor}: set the store's S3 API URL"),
        ),
        None => {}
    }
    let bucket = env.required("STORAGE_BUCKET", "the bucket to store backups in");
    if let Some(b) = &bucket {
        if b.contains('/') || b.len() < 3 || b.len() > 63 {
            env.problem(
                "STORAGE_BUCKET",
                format!("{b:?} is not a bucket name (3–63 characters, no '/'): put path prefixes in STORAGE_PREFIX"),
            );
        }
    }
    let region = env
        .string("STORAGE_REGION")
        .unwrap_or_else(|| if flavor == "r2" { "auto" } else { "us-east-1" }.to_string());
    let key_id = env.secret("STORAGE_ACCESS_KEY_ID");
    let secret = env.secret("STORAGE_SECRET_ACCESS_KEY");
    let credentials = match (key_id, secret) {
        (Some(k), Some(s)) => Some((k, s)),
        (None, None) => None,
        (Some(_), None) => {
            env.problem(
                "STORAGE_SECRET_ACCESS_KEY",
                "is missing while STORAGE_ACCESS_KEY_ID is set: set both, or neither to use the default credential chain",
            );
            None
        }
        (None, Some(_)) => {
            env.problem(
                "STORAGE_ACCESS_KEY_ID",
                "is missing while STORAGE_SECRET_ACCESS_KEY is set: set both, or neither to use the default credential chain",
            );
            None
        }
    };
    let custom_endpoint = endpoint.is_some();
    let force_path_style = env
        .bool("STORAGE_FORCE_PATH_STYLE")
        .unwrap_or(custom_endpoint);
    let checksum = match env
        .choice(
            "STORAGE_CHECKSUM_MODE",
            &["when_required", "when_supported"],
        )
        .as_deref()
    {
        Some("when_required") => ChecksumMode::WhenRequired,
        Some(_) => ChecksumMode::WhenSupported,
        None if custom_endpoint => ChecksumMode::WhenRequired,
        None => ChecksumMode::WhenSupported,
    };
    let part_size = env
        .int_in::<u64>(
            "STORAGE_PART_SIZE_MB",
            MIN_PART_SIZE_MB,
            MAX_PART_SIZE_MB,
            "the multipart part size in MiB",
        )
        .map(|mb| mb * 1024 * 1024);
    let concurrency = env
        .int_in::<usize>(
            "STORAGE_UPLOAD_CONCURRENCY",
            1,
            16,
            "parts uploaded at once",
        )
        .unwrap_or(3);
    let request_timeout = Duration::from_secs(
        env.int_in::<u64>(
            "STORAGE_TIMEOUT_SECS",
            1,
            86400,
            "seconds one storage request may take",
        )
        .unwrap_or(300),
    );
    Some(StorageConfig::S3(S3Config {
        flavor,
        endpoint,
        bucket: bucket?,
        region,
        credentials,
        force_path_style,
        checksum,
        part_size,
        concurrency,
        request_timeout,
    }))
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
mod tests {
    use super::*;
    use crate::engine::EXAMPLE_ENGINE as TEST_ENGINE;
    use std::collections::HashMap;

    fn load(vars: &[(&str, &str)]) -> Result<Config, crate::env::ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut env = EnvReader::new(move |k| map.get(k).cloned());
        let cfg = Config::read(&mut env, &TEST_ENGINE);
        env.finish()?;
        Ok(cfg.expect("no problems means a config"))
    }

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
}
