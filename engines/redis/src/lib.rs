//! The Redis/Valkey engine. Backups are either a replication snapshot (`redis-cli --rdb -`,
//! an exact point-in-time RDB file) or a logical dump over the command protocol (SCAN + DUMP),
//! for servers that refuse SYNC. Both restore into a running server over the network with
//! `RESTORE`, so nothing has to be copied onto the server's disk. A backup is read back as it
//! is stored (`watch`): one this runner could not restore fails, and what a restore needs to
//! know (the largest value, module data it cannot carry) goes to the manifest.

pub mod child;
mod dump;
pub mod flavor;
mod load;
pub mod rdb;
mod resp;
pub mod stream;
mod tls;
mod watch;

use std::io::Read;
use std::sync::{Mutex, OnceLock};

use runner_core::config::Operation;
use runner_core::engine::{spawn_into_pipe, Dump, DumpReport};
use runner_core::env::Problem;
use runner_core::tool::RunningTool;
use runner_core::{
    ConfigError, DbConfig, DumpFormat, Engine, EngineInfo, EnvReader, Error, Manifest, ServerInfo,
    ToolCommand,
};

use crate::flavor::{Flavor, Server, Version};
use crate::resp::{ClientError, Conn, Reply};

pub const RDB: DumpFormat = DumpFormat {
    name: "redis-rdb",
    extension: "rdb",
};
pub const LOGICAL: DumpFormat = DumpFormat {
    name: "redis-logical",
    extension: "rlog",
};

/// `REDIS_BACKUP_MODE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The snapshot when the server allows SYNC, the logical dump otherwise.
    Auto,
    Rdb,
    Logical,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Auto => "auto",
            Mode::Rdb => "rdb",
            Mode::Logical => "logical",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    pub mode: Mode,
    /// `RESTORE_FLUSH`: empty the target (FLUSHALL) before restoring.
    pub flush: bool,
    /// `RESTORE_REPLACE`: restore into a target that holds keys, overwriting same-named ones.
    pub replace: bool,
}

pub struct Redis {
    flavor: Flavor,
    options: Options,
    /// The mode the backup's preflight chose, and why, for the dump that follows.
    plan: Mutex<Option<Plan>>,
}

/// Which mode a backup uses and why, decided by the preflight.
struct Plan {
    format: DumpFormat,
    reason: String,
    /// The replication snapshot, already started by the preflight (`auto`, to see whether the
    /// server sends it at all). Until the dump takes it over, it waits in its pipe while the
    /// pipeline checks the storage.
    started: Option<Box<Started>>,
}

/// A replication snapshot under way: what it has sent so far, and the rest.
struct Started {
    first: Vec<u8>,
    pipe: std::io::PipeReader,
    tool: RunningTool,
}

/// What starting the replication snapshot showed.
enum Probe {
    /// It sends data.
    Started(Box<Started>),
    /// It ended before sending a byte; why.
    Refused(String),
}

/// Bytes read from a starting snapshot to see that it comes.
const PROBE_BYTES: usize = 64 << 10;

/// Starts `command` (the replication snapshot) and waits for its first bytes, or for its end
/// when it sends none.
async fn probe(command: ToolCommand) -> Result<Probe, Error> {
    let (mut pipe, tool) = spawn_into_pipe(command)?;
    let (pipe, first) = tokio::task::spawn_blocking(move || {
        let mut first = vec![0u8; PROBE_BYTES];
        let read = loop {
            match pipe.read(&mut first) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                other => break other,
            }
        };
        (pipe, read.map(|n| first[..n].to_vec()))
    })
    .await
    .map_err(|e| Error::Internal(format!("the snapshot check stopped: {e}")))?;
    let first = first.map_err(|e| Error::Internal(format!("reading the snapshot failed: {e}")))?;
    if !first.is_empty() {
        return Ok(Probe::Started(Box::new(Started { first, pipe, tool })));
    }
    drop(pipe);
    match tool.wait().await {
        Err(Error::Tool { status, detail, .. }) => {
            let why = detail
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("no error output");
            Ok(Probe::Refused(format!("{status}: {why}")))
        }
        Err(e) => Err(e),
        Ok(()) => Ok(Probe::Refused(
            "the client ended without sending a snapshot".into(),
        )),
    }
}

fn info_for(flavor: Flavor) -> EngineInfo {
    EngineInfo {
        name: "redis",
        display_name: flavor.name(),
        aliases: &["redis", "valkey"],
        url_schemes: &["redis", "rediss", "valkey", "valkeys"],
        tls_url_schemes: &["rediss", "valkeys"],
        default_port: 6379,
        default_user: "default",
        default_database: Some("all"),
        file_extension: RDB.extension,
        format: RDB.name,
        built_for: option_env!("BACKUP_RUNNER_REDIS_VERSION"),
        server_scope: false,
    }
}

fn client_error(e: ClientError) -> Error {
    match e {
        ClientError::Unavailable(m) | ClientError::Io(m) => Error::DbUnavailable(m),
        ClientError::Refused(m) => Error::DbRefused(m),
    }
}

/// Runs blocking client work off the async runtime.
async fn connected<T: Send + 'static>(
    db: &DbConfig,
    work: impl FnOnce(&mut Conn) -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    let target = child::target(db)?;
    tokio::task::spawn_blocking(move || {
        let mut conn = Conn::connect(&target).map_err(client_error)?;
        work(&mut conn)
    })
    .await
    .map_err(|e| Error::Internal(format!("the server check stopped: {e}")))?
}

fn text(conn: &mut Conn, args: &[&[u8]]) -> Result<String, Error> {
    conn.text(args).map_err(client_error)
}

/// What the preflight reads from the server.
struct Facts {
    server: Server,
    dataset_bytes: Option<u64>,
    /// Why SYNC cannot be used, when it cannot.
    sync_denied: Option<String>,
    /// `INFO cluster` says `cluster_enabled:1`.
    cluster: bool,
    /// Keys with hash fields that have their own TTLs (Valkey 9+: `keys_with_volatile_items`).
    volatile_item_keys: u64,
}

fn info_field<'a>(info: &'a str, name: &str) -> Option<&'a str> {
    info.lines()
        .find_map(|l| l.trim_end().strip_prefix(name)?.strip_prefix(':'))
}

fn facts(conn: &mut Conn, user: &str, check_sync: bool) -> Result<Facts, Error> {
    let info = text(conn, &[b"INFO", b"server"])?;
    let server = Server::from_info(&info).ok_or_else(|| {
        Error::Incompatible(format!(
            "the server's INFO names no Redis or Valkey version: {:?}",
            info.lines().take(3).collect::<Vec<_>>()
        ))
    })?;
    let memory = text(conn, &[b"INFO", b"memory"])?;
    let dataset_bytes = info_field(&memory, "used_memory_dataset")
        .or_else(|| info_field(&memory, "used_memory"))
        .and_then(|v| v.parse().ok());
    let sync_denied = if check_sync {
        sync_denied(conn, user)?
    } else {
        None
    };
    // Servers built without cluster support answer an empty section.
    let cluster = text(conn, &[b"INFO", b"cluster"])?;
    let cluster = info_field(&cluster, "cluster_enabled") == Some("1");
    let keyspace = text(conn, &[b"INFO", b"keyspace"])?;
    Ok(Facts {
        server,
        dataset_bytes,
        sync_denied,
        cluster,
        volatile_item_keys: volatile_item_keys(&keyspace),
    })
}

/// Keys whose hash fields have TTLs of their own, from `INFO keyspace`
/// (`db0:keys=2,expires=0,avg_ttl=0,keys_with_volatile_items=1`).
fn volatile_item_keys(keyspace: &str) -> u64 {
    keyspace
        .lines()
        .filter_map(|line| {
            line.split_once(':')?
                .1
                .split(',')
                .find_map(|kv| kv.trim().strip_prefix("keys_with_volatile_items="))?
                .parse::<u64>()
                .ok()
        })
        .sum()
}

/// The manifest's `engine_details` and warnings of a backup: its mode and why, and what the
/// stream held.
fn dump_report(mode: &str, reason: String, summary: Option<stream::Summary>) -> DumpReport {
    let mut details = serde_json::Map::new();
    details.insert("mode".into(), mode.into());
    details.insert("mode_reason".into(), reason.into());
    let mut warnings = Vec::new();
    if let Some(summary) = summary {
        details.insert("keys".into(), summary.keys.into());
        let bytes = summary.largest.as_ref().map_or(0, |l| l.bytes);
        details.insert("max_payload_bytes".into(), bytes.into());
        if let Some(largest) = &summary.largest {
            details.insert("max_payload_of".into(), largest.describe().into());
        }
        if !summary.module_aux.is_empty() {
            warnings.push(load::module_aux_loss(&summary.module_aux));
            details.insert("module_aux".into(), summary.module_aux.into());
        }
    }
    DumpReport { details, warnings }
}

/// Why a server in cluster mode is refused.
fn cluster_refusal(server: &Server, operation: Operation) -> Error {
    let what = match operation {
        Operation::Backup => "a backup of one node holds only the hash slots that node serves (one shard of the cluster), and backing up a whole Redis Cluster is not supported: back up a standalone (non-cluster) server",
        _ => "restoring into a cluster node is not supported (it refuses the keys of hash slots other nodes serve): restore into a standalone (non-cluster) server",
    };
    Error::Incompatible(format!(
        "{} runs in cluster mode (INFO cluster: cluster_enabled:1): {what}",
        server.describe()
    ))
}

/// Whether replication (SYNC) is disabled, renamed or denied to `user`. Managed services
/// commonly block it; an answer we cannot get (no right to run ACL DRYRUN) counts as allowed.
fn sync_denied(conn: &mut Conn, user: &str) -> Result<Option<String>, Error> {
    let info = conn
        .call(&[b"COMMAND", b"INFO", b"SYNC"])
        .map_err(client_error)?;
    if matches!(&info, Reply::Array(Some(items)) if items.first() == Some(&Reply::Array(None))) {
        return Ok(Some(
            "the server has no SYNC command (it is disabled or renamed)".into(),
        ));
    }
    match conn
        .call(&[b"ACL", b"DRYRUN", user.as_bytes(), b"SYNC"])
        .map_err(client_error)?
    {
        Reply::Bulk(Some(reason)) => Ok(Some(String::from_utf8_lossy(&reason).into_owned())),
        _ => Ok(None),
    }
}

impl Redis {
    fn cli(&self) -> &'static str {
        self.flavor.cli()
    }

    async fn client_version(&self) -> Result<Option<String>, Error> {
        let mut cmd = ToolCommand::new(self.cli());
        cmd.arg("--version");
        match cmd.output(b"").await {
            Ok(out) => Ok(Some(out.trim().to_string())),
            Err(_) if Self::info().built_for.is_none() => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// The server this image was built for, when pinned.
    fn built_for(&self) -> Option<Server> {
        Some(Server {
            flavor: self.flavor,
            version: Version::parse(Self::info().built_for?)?,
        })
    }

    /// The backup's mode, and why.
    fn choose_format(&self, facts: &Facts, client: &Option<String>) -> Result<Plan, Error> {
        let server = &facts.server;
        let unusable = match (&facts.sync_denied, client) {
            (Some(reason), _) => Some(reason.clone()),
            (None, None) => Some(format!("{} is not installed", self.cli())),
            // Valkey 9 sends clients an older format than its own, which has no place for hash
            // fields with TTLs: it fails the snapshot when it reaches such a hash.
            (None, Some(_))
                if facts.volatile_item_keys > 0
                    && server.snapshot_rdb_version() < server.rdb_version() =>
            {
                Some(format!(
                    "{} keys have hash fields with TTLs of their own, which {}'s replication snapshot to a client (RDB format {}) cannot hold: the server refuses it",
                    facts.volatile_item_keys,
                    server.describe(),
                    server.snapshot_rdb_version()
                ))
            }
            (None, Some(_)) => None,
        };
        let plan = |format, reason: String| Plan {
            format,
            reason,
            started: None,
        };
        match (self.options.mode, unusable) {
            (Mode::Logical, _) => Ok(plan(LOGICAL, "REDIS_BACKUP_MODE=logical".into())),
            (Mode::Rdb, None) => Ok(plan(RDB, "REDIS_BACKUP_MODE=rdb".into())),
            (Mode::Auto, None) => Ok(plan(
                RDB,
                "REDIS_BACKUP_MODE=auto: the server allows a replication snapshot".into(),
            )),
            (Mode::Rdb, Some(reason)) => Err(Error::DbRefused(format!(
                "a replication snapshot is not possible: {reason}; set REDIS_BACKUP_MODE=logical to back up over the normal command protocol"
            ))),
            (Mode::Auto, Some(reason)) => Ok(plan(
                LOGICAL,
                format!("REDIS_BACKUP_MODE=auto: a replication snapshot is not possible: {reason}"),
            )),
        }
    }

    /// In `auto` mode, starts the replication snapshot now: when the server refuses it before
    /// sending anything (nothing can have been stored yet), the backup falls back to the
    /// logical mode; otherwise the dump continues the snapshot already under way.
    async fn try_snapshot(&self, db: &DbConfig, mut plan: Plan) -> Result<Plan, Error> {
        if self.options.mode != Mode::Auto || plan.format != RDB {
            return Ok(plan);
        }
        let server = ServerInfo {
            format: Some(RDB),
            ..ServerInfo::default()
        };
        match probe(self.backup_command(db, &server)?).await? {
            Probe::Started(started) => {
                plan.started = Some(started);
                Ok(plan)
            }
            Probe::Refused(why) => {
                tracing::warn!(
                    phase = "preflight",
                    "the server refused the replication snapshot before sending anything ({why}): backing up in the logical mode instead (REDIS_BACKUP_MODE=auto); nothing was stored"
                );
                Ok(Plan {
                    format: LOGICAL,
                    reason: format!(
                        "REDIS_BACKUP_MODE=auto: the server refused the replication snapshot before sending anything ({why})"
                    ),
                    started: None,
                })
            }
        }
    }
}

impl Engine for Redis {
    fn info() -> &'static EngineInfo {
        static INFO: OnceLock<EngineInfo> = OnceLock::new();
        INFO.get_or_init(|| info_for(Flavor::of_this_build()))
    }

    /// An image is built for a minor release (`7.0`, `9.1`).
    const RELEASE_PARTS: usize = 2;

    /// Both modes' formats: the RDB snapshot and the logical stream.
    fn accepts_format(format: &str) -> bool {
        format == RDB.name || format == LOGICAL.name
    }

    fn from_env(env: &mut EnvReader<'_>) -> Self {
        let mode = match env
            .choice("REDIS_BACKUP_MODE", &["auto", "rdb", "logical"])
            .as_deref()
        {
            Some("rdb") => Mode::Rdb,
            Some("logical") => Mode::Logical,
            _ => Mode::Auto,
        };
        let flush = env.bool("RESTORE_FLUSH").unwrap_or(false);
        let replace = env.bool("RESTORE_REPLACE").unwrap_or(false);
        if flush && replace {
            env.problem(
                "RESTORE_REPLACE",
                "cannot be combined with RESTORE_FLUSH: set RESTORE_FLUSH=true to empty the target first, or RESTORE_REPLACE=true to keep its other keys",
            );
        }
        Redis {
            flavor: Flavor::of_this_build(),
            options: Options {
                mode,
                flush,
                replace,
            },
            plan: Mutex::new(None),
        }
    }

    async fn preflight(&self, db: &DbConfig, operation: Operation) -> Result<ServerInfo, Error> {
        let client = self.client_version().await?;
        if db.name != "all" {
            tracing::info!(
                phase = "preflight",
                "DB_NAME={:?} is recorded only: a Redis backup holds every logical database",
                db.name
            );
        }
        let check_sync = operation == Operation::Backup && self.options.mode != Mode::Logical;
        let user = db.user.clone();
        let facts = connected(db, move |conn| facts(conn, &user, check_sync)).await?;
        let server = facts.server;
        if facts.cluster {
            return Err(cluster_refusal(&server, operation));
        }
        if let Some(image) = self.built_for() {
            if !image.can_load(server.rdb_version()) {
                return Err(Error::Incompatible(format!(
                    "the server is {} but this image is for {} {}.{}, which cannot read its data (RDB format {}): use the image {}",
                    server.describe(),
                    image.flavor,
                    image.version.major,
                    image.version.minor,
                    server.rdb_version(),
                    server.flavor.image_for(&server.version)
                )));
            }
        }
        let mut warnings = Vec::new();
        let format = match operation {
            Operation::Backup => {
                let plan = self.choose_format(&facts, &client)?;
                let plan = self.try_snapshot(db, plan).await?;
                let format = plan.format;
                tracing::info!(
                    phase = "preflight",
                    mode = if format == LOGICAL { "logical" } else { "rdb" },
                    "backup mode: {}",
                    plan.reason
                );
                *self.plan.lock().expect("plan lock") = Some(plan);
                if format == LOGICAL {
                    warnings.push(
                        "the logical mode is not a point-in-time snapshot: keys written during the backup may or may not be included".to_string(),
                    );
                }
                Some(format)
            }
            _ => None,
        };
        Ok(ServerInfo {
            server_version: server.describe(),
            client_version: client.unwrap_or_else(|| "runner's own client".into()),
            size_bytes: facts.dataset_bytes,
            warnings,
            format,
            losses: Vec::new(),
        })
    }

    async fn start_dump(&self, db: &DbConfig, server: &ServerInfo) -> Result<Dump, Error> {
        let planned = self.plan.lock().expect("plan lock").take();
        let format = server.format.unwrap_or(RDB);
        let (reason, started) = match planned {
            Some(plan) if plan.format == format => (plan.reason, plan.started),
            _ => (
                format!("REDIS_BACKUP_MODE={}", self.options.mode.name()),
                None,
            ),
        };
        let (stream, tool): (Box<dyn Read + Send>, RunningTool) = match started {
            Some(s) => (
                Box::new(std::io::Cursor::new(s.first).chain(s.pipe)),
                s.tool,
            ),
            None => {
                let (pipe, tool) = spawn_into_pipe(self.backup_command(db, server)?)?;
                (Box::new(pipe), tool)
            }
        };
        let (stream, summary) = watch::Watched::new(stream, format.name)
            .map_err(|e| Error::Internal(format!("cannot start the backup check: {e}")))?;
        let mode = if format == LOGICAL { "logical" } else { "rdb" };
        let report = move || dump_report(mode, reason, summary.take());
        Ok(Dump {
            stream: Box::new(stream),
            tools: vec![tool],
            report: Box::new(report),
        })
    }

    fn backup_command(&self, db: &DbConfig, server: &ServerInfo) -> Result<ToolCommand, Error> {
        if server.format == Some(LOGICAL) {
            return child::command(child::DUMP_COMMAND, db);
        }
        let mut cmd = ToolCommand::new(self.cli());
        cmd.args(["-h", &db.host, "-p", &db.port.to_string()]);
        if let Some(password) = &db.password {
            cmd.args(["--user", &db.user]);
            cmd.env("REDISCLI_AUTH", password.expose());
        }
        cmd.args(tls::cli_args(&db.tls));
        cmd.args(["--rdb", "-"]);
        Ok(cmd)
    }

    async fn prepare_restore(
        &self,
        db: &DbConfig,
        server: &ServerInfo,
        manifest: &Manifest,
    ) -> Result<(), Error> {
        // Predicted from the source server here, before the target is touched; the loader
        // checks the real format (the snapshot's header, each payload's footer) again.
        let source = Server::from_description(&manifest.server_version);
        let target = Server::from_description(&server.server_version);
        if let (Some(source), Some(target)) = (source, target) {
            let format = if manifest.format == RDB.name {
                source.snapshot_rdb_version()
            } else {
                source.rdb_version()
            };
            if !target.can_load(format) {
                return Err(Error::Incompatible(format!(
                    "the backup comes from {} (RDB format {format}), which {} cannot load: restore it into {}; nothing was written",
                    source.describe(),
                    target.describe(),
                    Server::loaders_of(format)
                )));
            }
        }
        let (keys, bulk_limit) = connected(db, move |conn| {
            let keyspace = text(conn, &[b"INFO", b"keyspace"])?;
            let keys = dump::databases_with_keys(&keyspace)
                .iter()
                .map(|(_, k)| k)
                .sum::<u64>();
            Ok((keys, load::bulk_limit(conn)))
        })
        .await?;
        // Checked before anything is flushed or written: a value over the target's limit would
        // fail the restore halfway.
        let details = &manifest.engine_details;
        if let Some(largest) = details.get("max_payload_bytes").and_then(|v| v.as_u64()) {
            let of = details
                .get("max_payload_of")
                .and_then(|v| v.as_str())
                .unwrap_or("its largest key");
            match bulk_limit {
                Some(limit) if largest > limit => {
                    return Err(Error::Incompatible(format!(
                        "{}; nothing was written",
                        load::too_large(largest, of, limit)
                    )))
                }
                Some(_) => {}
                None => tracing::info!(
                    phase = "restore",
                    "the target's proto-max-bulk-len cannot be read (CONFIG GET is not allowed): the backup's largest value ({largest} bytes, {of}) must fit in it"
                ),
            }
        }
        match keys {
            0 => Ok(()),
            n if self.options.flush => {
                tracing::info!(
                    phase = "restore",
                    "the target holds {n} keys: they will be deleted (FLUSHALL) once the backup's format is known to fit (RESTORE_FLUSH)"
                );
                Ok(())
            }
            n if self.options.replace => {
                tracing::info!(
                    phase = "restore",
                    "the target holds {n} keys: same-named keys will be replaced, the others kept (RESTORE_REPLACE)"
                );
                Ok(())
            }
            n => Err(Error::Config(ConfigError {
                problems: vec![Problem {
                    var: "RESTORE_FLUSH".into(),
                    message: format!(
                        "the target already holds {n} keys: restore into an empty server, set RESTORE_FLUSH=true to delete every key first, or RESTORE_REPLACE=true to overwrite same-named keys and keep the others"
                    ),
                }],
            })),
        }
    }

    fn restore_command(&self, db: &DbConfig, manifest: &Manifest) -> Result<ToolCommand, Error> {
        let mut cmd = child::command(child::LOAD_COMMAND, db)?;
        cmd.env(child::FORMAT, &manifest.format);
        if self.options.flush {
            cmd.env(child::FLUSH, "true");
        }
        Ok(cmd)
    }

    fn failure_hint(&self, operation: Operation, stderr: &str) -> Option<&'static str> {
        let text = stderr.to_ascii_lowercase();
        match operation {
            Operation::Backup
                if ["sync", "noperm", "unknown command", "master"]
                    .iter()
                    .any(|s| text.contains(s)) =>
            {
                Some("the server refused the replication snapshot: set REDIS_BACKUP_MODE=logical")
            }
            Operation::Restore if text.contains("busykey") => {
                Some("a key already exists: set RESTORE_FLUSH=true or RESTORE_REPLACE=true")
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_keys_with_field_ttls() {
        let info = "# Keyspace\r\ndb0:keys=2,expires=0,avg_ttl=0,keys_with_volatile_items=1\r\ndb3:keys=9,expires=1,avg_ttl=0,keys_with_volatile_items=4\r\n";
        assert_eq!(volatile_item_keys(info), 5);
        assert_eq!(
            volatile_item_keys("# Keyspace\r\ndb0:keys=2,expires=0,avg_ttl=0\r\n"),
            0
        );
    }

    #[test]
    fn module_data_outside_keys_is_named_as_a_loss() {
        let summary = stream::Summary {
            keys: 3,
            largest: Some(stream::Largest {
                bytes: 2_097_163,
                key: Some((0, b"big".to_vec())),
            }),
            module_aux: vec!["graphdata".into()],
        };
        let report = dump_report("rdb", "REDIS_BACKUP_MODE=rdb".into(), Some(summary));
        assert_eq!(report.details["mode"], "rdb");
        assert_eq!(report.details["keys"], 3);
        assert_eq!(report.details["max_payload_bytes"], 2_097_163);
        assert_eq!(report.details["max_payload_of"], r#"key "big" in db 0"#);
        assert_eq!(
            report.details["module_aux"],
            serde_json::json!(["graphdata"])
        );
        assert_eq!(report.warnings.len(), 1);
        assert!(
            report.warnings[0].contains("module type graphdata")
                && report.warnings[0].contains("MODULE_AUX"),
            "{:?}",
            report.warnings
        );
        let plain = dump_report("logical", "x".into(), Some(stream::Summary::default()));
        assert!(plain.warnings.is_empty());
        assert_eq!(plain.details["max_payload_bytes"], 0);
    }

    #[test]
    fn too_large_names_the_value_the_limit_and_the_fix() {
        let msg = load::too_large(2_097_163, r#"key "big" in db 0"#, 1_048_576);
        for part in [
            "2097163 bytes",
            r#"key "big" in db 0"#,
            "proto-max-bulk-len of 1048576 bytes",
            "CONFIG SET proto-max-bulk-len 3145728",
        ] {
            assert!(msg.contains(part), "{part}: {msg}");
        }
    }

    #[test]
    fn a_cluster_node_is_refused() {
        let server = Server::from_description("Valkey 9.1.2").unwrap();
        let err = cluster_refusal(&server, Operation::Backup);
        assert_eq!(err.exit_code(), runner_core::ExitCode::Incompatible);
        let msg = err.to_string();
        assert!(
            msg.contains("cluster_enabled:1") && msg.contains("one shard"),
            "{msg}"
        );
    }

    #[tokio::test]
    async fn a_snapshot_refused_before_its_first_byte_is_told_apart() {
        let mut refused = ToolCommand::new("sh");
        refused.args([
            "-c",
            "echo 'sending REPLCONF capa eof' >&2; echo 'Error reading bulk length while SYNCing' >&2; exit 1",
        ]);
        match probe(refused).await.unwrap() {
            Probe::Refused(why) => {
                assert_eq!(why, "exit code 1: Error reading bulk length while SYNCing")
            }
            Probe::Started(_) => panic!("a refused snapshot counted as started"),
        }
        let mut empty = ToolCommand::new("sh");
        empty.args(["-c", "exit 0"]);
        assert!(matches!(probe(empty).await.unwrap(), Probe::Refused(_)));
        // Once bytes come, the snapshot is under way: nothing of it is lost.
        let mut sends = ToolCommand::new("sh");
        sends.args(["-c", "printf REDIS0011; sleep 0.3; printf rest"]);
        let Probe::Started(started) = probe(sends).await.unwrap() else {
            panic!("a snapshot that sends data counted as refused");
        };
        let mut all = started.first.clone();
        let mut pipe = started.pipe;
        tokio::task::spawn_blocking(move || {
            pipe.read_to_end(&mut all).unwrap();
            all
        })
        .await
        .map(|all| assert_eq!(all, b"REDIS0011rest"))
        .unwrap();
        started.tool.wait().await.unwrap();
    }

    #[test]
    fn reads_info_fields() {
        let memory = "# Memory\r\nused_memory:1048576\r\nused_memory_dataset:4096\r\n";
        assert_eq!(info_field(memory, "used_memory"), Some("1048576"));
        assert_eq!(info_field(memory, "used_memory_dataset"), Some("4096"));
        assert_eq!(info_field(memory, "nope"), None);
    }
}
