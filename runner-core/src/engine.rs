//! What an engine provides: which commands to run and what format they produce. An engine never
//! touches storage, compression or callbacks; the pipeline does.

use std::future::Future;
use std::process::Stdio;

use crate::config::{DbConfig, Operation};
use crate::env::EnvReader;
use crate::error::Error;
use crate::manifest::Manifest;
use crate::tool::{widen_pipe, RunningTool, ToolCommand};

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
        crate::checks::image_name(self.name, major)
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
    /// What the backup cannot carry over exactly, named before the dump starts (also recorded as
    /// warnings; `STRICT_FIDELITY=true` turns any of them into a failed backup).
    pub losses: Vec<String>,
}

/// A dump in progress: the byte stream the pipeline stores, and the tools behind it.
pub struct Dump {
    /// Read on the compressor's thread until it ends.
    pub stream: Box<dyn std::io::Read + Send>,
    /// Every tool feeding the stream, in stream order. Each one's exit status is checked after
    /// the stream has ended; the first failure fails the backup.
    pub tools: Vec<RunningTool>,
    /// Called once the stream ended and every tool succeeded: what the engine learned on the
    /// way, for the manifest.
    pub report: Box<dyn FnOnce() -> DumpReport + Send>,
}

impl Dump {
    /// The dump of one command writing to stdout, with nothing to report.
    pub fn of_command(command: ToolCommand) -> Result<Dump, Error> {
        let (pipe, tool) = spawn_into_pipe(command)?;
        Ok(Dump {
            stream: Box::new(pipe),
            tools: vec![tool],
            report: Box::new(DumpReport::default),
        })
    }
}

/// Starts `command` with its stdout on a plain (blocking) pipe, for the compressor's thread.
pub fn spawn_into_pipe(command: ToolCommand) -> Result<(std::io::PipeReader, RunningTool), Error> {
    let (pipe, tool_stdout) = std::io::pipe()
        .map_err(|e| Error::Internal(format!("cannot create the dump pipe: {e}")))?;
    widen_pipe(&pipe);
    tracing::info!(phase = "dump", "running {}", command.display());
    let tool = command.spawn(Stdio::null(), Stdio::from(tool_stdout))?;
    Ok((pipe, tool))
}

/// What an engine learned while its dump streamed past.
#[derive(Debug, Clone, Default)]
pub struct DumpReport {
    /// Engine-specific facts for the manifest's `engine_details` (e.g. what a restore needs).
    pub details: serde_json::Map<String, serde_json::Value>,
    /// Caveats found during the dump, added to the manifest's warnings.
    pub warnings: Vec<String>,
}

/// Rewrites the decoded backup on its way into the restore tool (e.g. names that must change).
/// Fed the stream in arbitrary chunks; appends what the tool should read to `out`.
pub trait StreamFilter: Send {
    fn filter(&mut self, input: &[u8], out: &mut Vec<u8>);
    /// The end of the stream: flush what is held back.
    fn finish(&mut self, out: &mut Vec<u8>);
}

/// A dump format: its name in the manifest and its file extension (without the dot).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DumpFormat {
    pub name: &'static str,
    pub extension: &'static str,
}

pub trait Engine: Sized + Send + Sync + 'static {
    fn info() -> &'static EngineInfo;

    /// How many numbers of a version make the release an image is built for: 1 for
    /// PostgreSQL (`17`), 2 for MySQL and Redis (`11.8`). Used by [`crate::checks`].
    const RELEASE_PARTS: usize = 1;

    /// Whether this engine restores backups in `format` (a manifest's `format`); by default
    /// only its own [`EngineInfo::format`].
    fn accepts_format(format: &str) -> bool {
        format == Self::info().format
    }

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

    /// Starts the dump. By default the stream is `backup_command`'s stdout; an engine may add
    /// to it (statements of its own after the tool's output) or watch it.
    fn start_dump(
        &self,
        db: &DbConfig,
        server: &ServerInfo,
    ) -> impl Future<Output = Result<Dump, Error>> + Send {
        let dump = self.backup_command(db, server).and_then(Dump::of_command);
        async move { dump }
    }

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

    /// A rewrite of the decoded stream before the restore tool reads it; `None` (the default)
    /// passes it through untouched.
    fn restore_filter(
        &self,
        _db: &DbConfig,
        _manifest: &Manifest,
    ) -> Result<Option<Box<dyn StreamFilter>>, Error> {
        Ok(None)
    }

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
