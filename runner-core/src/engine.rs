//! What an engine provides: which commands to run and what format they produce. An engine never
//! touches storage, compression or callbacks; the pipeline does.

use std::future::Future;

use crate::config::{DbConfig, Operation};
use crate::env::EnvReader;
use crate::error::Error;
use crate::manifest::Manifest;
use crate::tool::ToolCommand;

/// Static facts about an engine binary.
#[derive(Debug)]
pub struct EngineInfo {
    /// Short name used in object keys, manifests and image names: `postgres`.
    pub name: &'static str,
    /// Name for humans: `PostgreSQL`.
    pub display_name: &'static str,
    /// Accepted values of `DB_ENGINE`.
    pub aliases: &'static [&'static str],
    /// Accepted `DATABASE_URL` schemes.
    pub url_schemes: &'static [&'static str],
    /// Schemes among them that imply TLS (`rediss`), as `sslmode=require` would.
    pub tls_url_schemes: &'static [&'static str],
    pub default_port: u16,
    pub default_user: &'static str,
    /// The database when `DB_NAME` is not set; `None` makes `DB_NAME` required.
    pub default_database: Option<&'static str>,
    /// Extension of the uncompressed dump, without the dot: `pgdump`.
    pub file_extension: &'static str,
    /// The dump format recorded in the manifest: `pg_dump-custom`.
    pub format: &'static str,
    /// The server major version this binary's image was built for (`None` for a development
    /// build, which then follows the client tools it finds).
    pub built_for: Option<&'static str>,
}

impl EngineInfo {
    /// The image users should run for a given server major version.
    pub fn image_for(&self, major: &str) -> String {
        format!("backup-runner-{}:{major}", self.name)
    }
}

/// What the preflight learned about the server and the client tools.
#[derive(Debug, Clone, Default)]
pub struct ServerInfo {
    pub server_version: String,
    pub client_version: String,
    /// The database's size, used to choose the multipart part size before uploading.
    pub size_bytes: Option<u64>,
    /// Caveats worth a log line and a place in the manifest.
    pub warnings: Vec<String>,
    /// The dump format chosen for this server, when it differs from the engine's default.
    pub format: Option<DumpFormat>,
}

/// A dump format: its name in the manifest and its file extension (without the dot).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DumpFormat {
    pub name: &'static str,
    pub extension: &'static str,
}

pub trait Engine: Sized + Send + Sync + 'static {
    fn info() -> &'static EngineInfo;

    /// Engine-specific settings, read together with the core config so every problem is
    /// reported at once.
    fn from_env(env: &mut EnvReader<'_>) -> Self;

    /// Connects, checks that the server and the client tools fit together, and measures what
    /// the pipeline needs. Refuses incompatible versions with a message naming the right image.
    fn preflight(
        &self,
        db: &DbConfig,
        operation: Operation,
    ) -> impl Future<Output = Result<ServerInfo, Error>> + Send;

    /// The dump command; it writes the backup to stdout.
    fn backup_command(&self, db: &DbConfig, server: &ServerInfo) -> Result<ToolCommand, Error>;

    /// Runs before the restore tool: checks the backup fits this server and prepares the target
    /// (e.g. creates the database).
    fn prepare_restore(
        &self,
        db: &DbConfig,
        server: &ServerInfo,
        manifest: &Manifest,
    ) -> impl Future<Output = Result<(), Error>> + Send;

    /// The restore command; it reads the backup from stdin.
    fn restore_command(&self, db: &DbConfig, manifest: &Manifest) -> Result<ToolCommand, Error>;

    /// Whether a failed restore leaves the target as it was (e.g. one transaction). When not,
    /// the pipeline verifies the whole object before the restore starts.
    fn restore_is_atomic(&self) -> bool {
        false
    }

    /// How to fix a common tool failure, recognised from its stderr (e.g. which option to set).
    fn failure_hint(&self, _operation: Operation, _stderr: &str) -> Option<&'static str> {
        None
    }
}

/// Appends the engine's hint to a tool failure.
pub fn with_hint<E: Engine>(engine: &E, operation: Operation, err: Error) -> Error {
    match err {
        Error::Tool {
            tool,
            status,
            detail,
        } => {
            let detail = match engine.failure_hint(operation, &detail) {
                Some(hint) => format!("{detail}\nhint: {hint}"),
                None => detail,
            };
            Error::Tool {
                tool,
                status,
                detail,
            }
        }
        other => other,
    }
}

/// A PostgreSQL-like engine description, for tests of code that takes any engine.
#[doc(hidden)]
pub static EXAMPLE_ENGINE: EngineInfo = EngineInfo {
    name: "postgres",
    display_name: "PostgreSQL",
    aliases: &["postgres", "postgresql", "pg"],
    url_schemes: &["postgres", "postgresql"],
    tls_url_schemes: &[],
    default_port: 5432,
    default_user: "postgres",
    default_database: None,
    file_extension: "pgdump",
    format: "pg_dump-custom",
    built_for: Some("17"),
};
