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
    /// Whether the engine backs up a whole server as a set (`DB_NAME=*`): one object per
    /// database plus the server's roles or accounts. `false` for an engine whose one backup
    /// already covers the server (Redis).
    pub server_scope: bool,
}

impl EngineInfo {
    /// A copy to change in a test.
    #[doc(hidden)]
    pub fn clone_for_test(&self) -> EngineInfo {
        EngineInfo { ..*self }
    }

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

/// The databases a whole-server backup covers, as the server lists them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DatabaseList {
    /// User databases, in the server's order; system ones are never listed.
    pub databases: Vec<String>,
    /// What the backing-up account cannot back up and why (a database it may not connect to),
    /// one sentence each: logged and recorded in the set's manifest.
    pub skipped: Vec<String>,
}

/// The server-wide part of a whole-server backup: roles or accounts with their grants
/// (PostgreSQL: also tablespaces), as a script the engine replays first on restore.
pub struct Globals {
    pub dump: Dump,
    pub format: DumpFormat,
    /// What the script leaves out because the backing-up account cannot read it (role
    /// passwords on a managed service, accounts it may not see): logged and recorded in the
    /// manifest, never dropped silently.
    pub skipped: Vec<String>,
}

/// What replaying the globals did.
#[derive(Debug, Clone, Default)]
pub struct GlobalsRestored {
    /// Roles or accounts that already existed on the target and were kept as they were (not
    /// dropped, not altered).
    pub kept: Vec<String>,
    /// Roles or accounts created.
    pub created: Vec<String>,
    /// What could not be restored, named.
    pub warnings: Vec<String>,
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

    // Whole-server backups (`DB_NAME=*`), for engines with `EngineInfo::server_scope`. A set is
    // the globals (roles, accounts, grants) plus one ordinary backup per database, each made
    // and restored by the methods above with `DbConfig::name` set to that database; a member's
    // manifest says it is one (`Manifest::is_set_member`), so that its restore can also
    // recreate what belongs to the database itself (owner, settings, grants).

    /// The connection for server-wide work (listing databases, globals, preflight): `db` with
    /// the database to connect to (PostgreSQL: `PG_MAINTENANCE_DB`).
    fn server_connection(&self, db: &DbConfig) -> DbConfig {
        db.clone()
    }

    /// Every database a whole-server backup covers, system ones left out (templates,
    /// `mysql`, `sys`, the schemas of information): the user's include and exclude patterns are
    /// applied by the runner afterwards.
    fn list_databases(
        &self,
        _db: &DbConfig,
    ) -> impl Future<Output = Result<DatabaseList, Error>> + Send {
        async { Err(server_scope_unsupported(Self::info())) }
    }

    /// Starts the dump of the server's globals: a script the engine's `restore_globals` replays.
    fn dump_globals(
        &self,
        _db: &DbConfig,
        _server: &ServerInfo,
    ) -> impl Future<Output = Result<Globals, Error>> + Send {
        async { Err(server_scope_unsupported(Self::info())) }
    }

    /// Checks, before anything is written, that a set's database can be restored into the
    /// target (`manifest` is that database's part of the set): a database that already holds
    /// objects is refused unless the engine's clean option is set.
    fn check_restore_target(
        &self,
        _db: &DbConfig,
        _manifest: &Manifest,
    ) -> impl Future<Output = Result<(), Error>> + Send {
        async { Ok(()) }
    }

    /// Replays the globals script (held in memory: roles and accounts, not data) before any
    /// database of the set. Roles or accounts that already exist are kept and reported.
    fn restore_globals(
        &self,
        _db: &DbConfig,
        _server: &ServerInfo,
        _manifest: &Manifest,
        _script: Vec<u8>,
    ) -> impl Future<Output = Result<GlobalsRestored, Error>> + Send {
        async { Err(server_scope_unsupported(Self::info())) }
    }
}

fn server_scope_unsupported(info: &EngineInfo) -> Error {
    Error::Internal(format!(
        "{} has no whole-server backups (DB_NAME=*)",
        info.display_name
    ))
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
    server_scope: true,
};
