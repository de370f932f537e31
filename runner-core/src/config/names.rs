//! The variables the runner reads in some configuration. Most are asked for on every run and are
//! known from that; this list also covers the ones read only in some configurations (S3 settings
//! when storage is local, `COMPRESSION_LEVEL` when compression is off, everything after an invalid
//! `STORAGE_TYPE`, one engine's options in another engine's image), so that none of them is
//! reported as a misspelling. A variable read anywhere only under some condition belongs here.

/// Every variable the runner reads in some configuration, by any engine.
pub const CONDITIONALLY_READ: &[&str] = &[
    // The job.
    "OPERATION_TYPE",
    "JOB_ID",
    "DB_ENGINE",
    "VERIFY_RESTORE",
    "RESTORE_VERIFY_FIRST",
    "STRICT_FIDELITY",
    "BACKUP_OVERWRITE",
    "DUMP_STALL_TIMEOUT_SECS",
    "BACKUP_PATH",
    "RETENTION_DAYS",
    "PROGRESS_INTERVAL_SECS",
    "LOG_FORMAT",
    "LOG_LEVEL",
    // The database.
    "DATABASE_URL",
    "DATABASE_URL_FILE",
    "DB_HOST",
    "DB_PORT",
    "DB_NAME",
    "DB_USERNAME",
    "DB_PASSWORD",
    "DB_PASSWORD_FILE",
    "DB_SSL_MODE",
    "DB_SSL_ROOT_CERT",
    "DB_SSL_CERT",
    "DB_SSL_KEY",
    "DB_CONNECT_TIMEOUT_SECS",
    // Storage.
    "STORAGE_TYPE",
    "STORAGE_LOCAL_DIR",
    "STORAGE_LOCAL_ALLOW_EPHEMERAL",
    "STORAGE_ENDPOINT",
    "STORAGE_BUCKET",
    "STORAGE_REGION",
    "STORAGE_ACCESS_KEY_ID",
    "STORAGE_ACCESS_KEY_ID_FILE",
    "STORAGE_SECRET_ACCESS_KEY",
    "STORAGE_SECRET_ACCESS_KEY_FILE",
    "STORAGE_FORCE_PATH_STYLE",
    "STORAGE_CHECKSUM_MODE",
    "STORAGE_PART_SIZE_MB",
    "STORAGE_UPLOAD_CONCURRENCY",
    "STORAGE_TIMEOUT_SECS",
    "STORAGE_PREFIX",
    // Compression.
    "COMPRESSION",
    "COMPRESSION_LEVEL",
    "COMPRESSION_THREADS",
    // Callbacks.
    "CALLBACK_URL",
    "CALLBACK_SECRET",
    "CALLBACK_SECRET_FILE",
    "CALLBACK_TIMEOUT_SECS",
    "CALLBACK_MAX_ATTEMPTS",
    // Engine options (each engine reads its own).
    "RESTORE_CLEAN",
    "RESTORE_NO_OWNER",
    "RESTORE_NO_PRIVILEGES",
    "RESTORE_SINGLE_TRANSACTION",
    "PG_MAINTENANCE_DB",
    "RESTORE_DEFINER",
    "RESTORE_ALLOW_CROSS_FLAVOR",
    "REDIS_BACKUP_MODE",
    "RESTORE_FLUSH",
    "RESTORE_REPLACE",
    // The machine (container detection).
    "KUBERNETES_SERVICE_HOST",
];
