//! The Redis/Valkey engine. Backups are either a replication snapshot (`redis-cli --rdb -`,
//! an exact point-in-time RDB file) or a logical dump over the command protocol (SCAN + DUMP),
//! for servers that refuse SYNC. Both restore into a running server over the network with
//! `RESTORE`, so nothing has to be copied onto the server's disk.

pub mod child;
mod dump;
pub mod flavor;
mod load;
pub mod rdb;
mod resp;
pub mod stream;
mod tls;

use std::sync::OnceLock;

use runner_core::config::Operation;
use runner_core::env::Problem;
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
    Ok(Facts {
        server,
        dataset_bytes,
        sync_denied,
    })
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

    fn choose_format(&self, facts: &Facts, client: &Option<String>) -> Result<DumpFormat, Error> {
        let unusable = match (&facts.sync_denied, client) {
            (Some(reason), _) => Some(reason.clone()),
            (None, None) => Some(format!("{} is not installed", self.cli())),
            (None, Some(_)) => None,
        };
        match (self.options.mode, unusable) {
            (Mode::Logical, _) => Ok(LOGICAL),
            (Mode::Rdb, None) | (Mode::Auto, None) => Ok(RDB),
            (Mode::Rdb, Some(reason)) => Err(Error::DbRefused(format!(
                "a replication snapshot is not possible: {reason}; set REDIS_BACKUP_MODE=logical to back up over the normal command protocol"
            ))),
            (Mode::Auto, Some(reason)) => {
                tracing::info!(
                    phase = "preflight",
                    "using the logical mode (SCAN and DUMP): a replication snapshot is not possible: {reason}"
                );
                Ok(LOGICAL)
            }
        }
    }
}

impl Engine for Redis {
    fn info() -> &'static EngineInfo {
        static INFO: OnceLock<EngineInfo> = OnceLock::new();
        INFO.get_or_init(|| info_for(Flavor::of_this_build()))
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
        }
    }

    async fn preflight(&self, db: &DbConfig, operation: Operation) -> Result<ServerInfo, Error> {
        let client = self.client_version().await?;
        if let (Some(built), Some(client)) = (Self::info().built_for, &client) {
            let client_version = client.split_whitespace().nth(1).and_then(Version::parse);
            let built_version = Version::parse(built);
            if client_version.map(|v| (v.major, v.minor))
                != built_version.map(|v| (v.major, v.minor))
            {
                return Err(Error::Incompatible(format!(
                    "this image was built for {} {built} but its client is {client}: rebuild the image",
                    self.flavor
                )));
            }
        }
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
                let format = self.choose_format(&facts, &client)?;
                if format == LOGICAL {
                    warnings.push(
                        "the logical mode is not a point-in-time snapshot: keys written during the backup may or may not be included".to_string(),
                    );
                }
                Some(format)
            }
            Operation::Restore | Operation::Verify => None,
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
        if manifest.format != RDB.name && manifest.format != LOGICAL.name {
            return Err(Error::Incompatible(format!(
                "the backup's format is {:?}, not {} or {}: it was not made by this runner's Redis engine",
                manifest.format, RDB.name, LOGICAL.name
            )));
        }
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
        let keys = connected(db, move |conn| {
            let keyspace = text(conn, &[b"INFO", b"keyspace"])?;
            Ok(dump::databases_with_keys(&keyspace)
                .iter()
                .map(|(_, k)| k)
                .sum::<u64>())
        })
        .await?;
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
    fn reads_info_fields() {
        let memory = "# Memory\r\nused_memory:1048576\r\nused_memory_dataset:4096\r\n";
        assert_eq!(info_field(memory, "used_memory"), Some("1048576"));
        assert_eq!(info_field(memory, "used_memory_dataset"), Some("4096"));
        assert_eq!(info_field(memory, "nope"), None);
    }
}
