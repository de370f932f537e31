//! The MySQL/MariaDB engine: the flavor's own dump tool (`mysqldump` or `mariadb-dump`) in a
//! consistent snapshot, restored by streaming into the flavor's client.

mod commands;
mod fidelity;
mod flavor;
mod handshake;
mod stream;

use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use runner_core::engine::{spawn_into_pipe, Dump, DumpReport, StreamFilter};

use runner_core::config::Operation;
use runner_core::env::Problem;
use runner_core::tool::ToolFailure;
use runner_core::{
    ConfigError, DbConfig, Engine, EngineInfo, EnvReader, Error, Manifest, ServerInfo, ToolCommand,
};

use crate::commands::{ident, DumpShape};
use crate::fidelity::{literal, rows, Plan};
pub use crate::flavor::Flavor;
use crate::flavor::{major_minor, parse_tool_version};

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Options {
    /// `RESTORE_CLEAN`: drop and recreate a target database that already holds objects.
    pub clean: bool,
    /// `RESTORE_ALLOW_CROSS_FLAVOR`: try restoring a MySQL backup into MariaDB or the reverse.
    pub allow_cross_flavor: bool,
    /// `RESTORE_DEFINER=current_user`: every DEFINER in the backup becomes the restoring account.
    pub definer_current_user: bool,
}

pub struct Mysql {
    flavor: Flavor,
    options: Options,
    /// The backup's repair plan, made by the preflight and used when the dump starts.
    plan: Mutex<Option<Plan>>,
}

/// The database's default character set and collation.
const DEFAULTS_QUERY: &str = "SELECT default_character_set_name, default_collation_name   FROM information_schema.schemata WHERE schema_name = DATABASE();\n";

/// Every account named as DEFINER in the database (`user@host`).
const DEFINERS_QUERY: &str = "SELECT definer FROM information_schema.views WHERE table_schema = DATABASE()   UNION SELECT definer FROM information_schema.routines WHERE routine_schema = DATABASE()   UNION SELECT definer FROM information_schema.triggers WHERE trigger_schema = DATABASE()   UNION SELECT definer FROM information_schema.events WHERE event_schema = DATABASE()   ORDER BY 1;\n";

/// `user@host` (as information_schema prints it) → `'user'@'host'`.
fn account(definer: &str) -> String {
    let (user, host) = definer.rsplit_once('@').unwrap_or((definer, "%"));
    format!("{}@{}", literal(user), literal(host))
}

/// A character set or collation name from a manifest, safe to put in SQL.
fn sql_name(name: &str) -> Option<&str> {
    (!name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
        .then_some(name)
}

/// `CHARACTER SET … COLLATE …` from the manifest's record of the source database.
fn database_defaults(manifest: &Manifest) -> String {
    let get = |k: &str| {
        manifest
            .engine_details
            .get(k)
            .and_then(|v| v.as_str())
            .and_then(sql_name)
    };
    match (get("default_character_set"), get("default_collation")) {
        (Some(cs), Some(coll)) => format!("CHARACTER SET {cs} COLLATE {coll}"),
        // A backup made before the defaults were recorded.
        _ => "CHARACTER SET utf8mb4".to_string(),
    }
}

/// Version, data size, non-InnoDB tables and object count of the current database.
const SERVER_QUERY: &str = "SELECT VERSION(), \
  (SELECT COALESCE(SUM(data_length + index_length), 0) FROM information_schema.tables \
    WHERE table_schema = DATABASE()), \
  (SELECT COALESCE(GROUP_CONCAT(CONCAT(table_name, ' (', COALESCE(engine, '?'), ')') \
      ORDER BY table_name SEPARATOR ', '), '') FROM information_schema.tables \
    WHERE table_schema = DATABASE() AND table_type = 'BASE TABLE' AND engine <> 'InnoDB'), \
  (SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = DATABASE()) \
    + (SELECT COUNT(*) FROM information_schema.routines WHERE routine_schema = DATABASE()) \
    + (SELECT COUNT(*) FROM information_schema.events WHERE event_schema = DATABASE());\n";

struct Server {
    version: String,
    size: u64,
    non_innodb: String,
    objects: u64,
}

fn parse_server_row(out: &str) -> Result<Server, Error> {
    let line = out.lines().next().unwrap_or("");
    let fields: Vec<&str> = line.split('\t').collect();
    let bad = || Error::Internal(format!("unexpected answer from the server: {out:?}"));
    if fields.len() != 4 {
        return Err(bad());
    }
    Ok(Server {
        version: fields[0].to_string(),
        size: fields[1].parse().map_err(|_| bad())?,
        non_innodb: fields[2].to_string(),
        objects: fields[3].parse().map_err(|_| bad())?,
    })
}

/// Turns a failed connection into the error class orchestration acts on.
fn classify(failure: ToolFailure) -> Error {
    let text = failure.stderr.to_ascii_lowercase();
    if [
        "can't connect",
        "unknown mysql server host",
        "unknown server host",
        "lost connection",
        "timed out",
        "connection refused",
        "server has gone away",
    ]
    .iter()
    .any(|s| text.contains(s))
    {
        Error::DbUnavailable(failure.stderr)
    } else if [
        "access denied",
        "unknown database",
        "ssl",
        "tls",
        "authentication plugin",
    ]
    .iter()
    .any(|s| text.contains(s))
    {
        Error::DbRefused(failure.stderr)
    } else {
        failure.into()
    }
}

fn is_unknown_database(err: &Error) -> bool {
    matches!(err, Error::DbRefused(m) if m.contains("Unknown database"))
}

fn info_for(flavor: Flavor) -> EngineInfo {
    EngineInfo {
        name: "mysql",
        display_name: match flavor {
            Flavor::Mysql => "MySQL",
            Flavor::Mariadb => "MariaDB",
        },
        aliases: &["mysql", "mariadb"],
        url_schemes: &["mysql", "mariadb"],
        tls_url_schemes: &[],
        default_port: 3306,
        default_user: "root",
        default_database: None,
        file_extension: "sql",
        format: "mysql-sql",
        built_for: option_env!("BACKUP_RUNNER_MYSQL_VERSION"),
        server_scope: true,
    }
}

impl Mysql {
    async fn query(
        &self,
        db: &DbConfig,
        database: Option<&str>,
        sql: &str,
    ) -> Result<String, Error> {
        commands::client(self.flavor, db, database)?
            .output(sql.as_bytes())
            .await
            .map_err(classify)
    }

    async fn server(&self, db: &DbConfig, database: Option<&str>) -> Result<Server, Error> {
        parse_server_row(&self.query(db, database, SERVER_QUERY).await?)
    }

    /// The dump's options for this server and client.
    fn shape(&self, server: &ServerInfo, skip_triggers: bool) -> DumpShape {
        DumpShape {
            history: self.flavor == Flavor::Mariadb
                && major_minor(&server.client_version).is_some_and(|v| v >= (10, 11)),
            skip_triggers,
        }
    }

    /// Which floating-point columns and sequences need repairs, and what cannot be repaired.
    async fn fidelity_plan(&self, db: &DbConfig) -> Result<Plan, Error> {
        let columns = fidelity::parse_columns(
            &self
                .query(db, Some(&db.name), fidelity::COLUMNS_QUERY)
                .await?,
        );
        let keys = if columns.is_empty() {
            Vec::new()
        } else {
            fidelity::parse_keys(&self.query(db, Some(&db.name), fidelity::KEYS_QUERY).await?)
        };
        let sequences = match self.flavor {
            Flavor::Mariadb => rows(
                &self
                    .query(db, Some(&db.name), fidelity::SEQUENCES_QUERY)
                    .await?,
            )
            .filter_map(|r| r.into_iter().next())
            .collect(),
            Flavor::Mysql => Vec::new(),
        };
        let mut plan = fidelity::plan(self.flavor, &columns, &keys, sequences);
        if self.flavor == Flavor::Mariadb {
            let srids = self.query(db, Some(&db.name), fidelity::SRID_QUERY).await?;
            plan.losses.extend(fidelity::srid_losses(&srids));
        }
        Ok(plan)
    }

    /// Refuses a target whose `max_allowed_packet` is smaller than the backup's largest
    /// statement, before anything is written.
    async fn check_packet_size(&self, db: &DbConfig, manifest: &Manifest) -> Result<(), Error> {
        let Some(largest) = manifest
            .engine_details
            .get("max_statement_bytes")
            .and_then(|v| v.as_u64())
        else {
            return Ok(());
        };
        let out = self
            .query(db, None, "SELECT @@GLOBAL.max_allowed_packet;\n")
            .await?;
        let have: u64 = out.trim().parse().map_err(|_| {
            Error::Internal(format!(
                "unexpected max_allowed_packet from the server: {out:?}"
            ))
        })?;
        // The statement travels in one packet with a few bytes of header.
        let needed = largest + 1024;
        if have >= needed {
            return Ok(());
        }
        if needed > commands::MAX_PACKET {
            return Err(Error::Incompatible(format!(
                "the backup holds a statement of {largest} bytes, more than any server accepts (max_allowed_packet is at most 1 GiB)"
            )));
        }
        let mib = needed.div_ceil(1 << 20);
        Err(Error::Incompatible(format!(
            "the target server's max_allowed_packet is {have} bytes but the backup holds a statement of {largest} bytes: set max_allowed_packet to at least {} ({mib} MiB) on the target server (SET GLOBAL max_allowed_packet = {}; or in its configuration), then restore again; nothing was written",
            mib << 20,
            mib << 20
        )))
    }

    /// Refuses a restore whose DEFINER accounts do not exist on the target, before anything is
    /// written. An account that cannot read the account list gets a warning instead.
    async fn check_definers(&self, db: &DbConfig, manifest: &Manifest) -> Result<(), Error> {
        let definers: Vec<String> = manifest
            .engine_details
            .get("definers")
            .and_then(|v| v.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|d| d.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        if definers.is_empty() {
            return Ok(());
        }
        let me = self.query(db, None, "SELECT CURRENT_USER();\n").await?;
        let me = account(me.trim());
        let accounts = match self
            .query(db, None, "SELECT user, host FROM mysql.user;\n")
            .await
        {
            Ok(out) => out,
            Err(e) => {
                tracing::warn!(
                    phase = "restore",
                    "cannot read the target's accounts to check the backup's DEFINERs ({}): {e}",
                    definers.join(", ")
                );
                return Ok(());
            }
        };
        let existing: Vec<String> = rows(&accounts)
            .filter(|r| r.len() == 2)
            .map(|r| format!("{}@{}", literal(&r[0]), literal(&r[1])))
            .collect();
        let missing: Vec<&String> = definers
            .iter()
            .filter(|d| **d != me && !existing.contains(d))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        Err(Error::Incompatible(format!(
            "the backup's views, routines, triggers or events are defined by accounts that do not exist on the target: {}; create them first (the restore then keeps every DEFINER), or set RESTORE_DEFINER=current_user to make the restoring account their DEFINER; nothing was written",
            missing
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )))
    }

    async fn client_version(&self) -> Result<String, Error> {
        let tool = self.flavor.dump_tool();
        let out = commands::version_command(tool).output(b"").await?;
        parse_tool_version(&out)
            .ok_or_else(|| Error::Internal(format!("cannot read the version of {tool}: {out:?}")))
    }
}

impl Engine for Mysql {
    fn info() -> &'static EngineInfo {
        static INFO: OnceLock<EngineInfo> = OnceLock::new();
        INFO.get_or_init(|| info_for(Flavor::of_this_build()))
    }

    /// An image is built for a minor release (`11.8`, `9.7`).
    const RELEASE_PARTS: usize = 2;

    fn from_env(env: &mut EnvReader<'_>) -> Self {
        Mysql {
            flavor: Flavor::of_this_build(),
            options: Options {
                clean: env.bool("RESTORE_CLEAN").unwrap_or(false),
                allow_cross_flavor: env.bool("RESTORE_ALLOW_CROSS_FLAVOR").unwrap_or(false),
                definer_current_user: env
                    .choice("RESTORE_DEFINER", &["keep", "current_user"])
                    .is_some_and(|v| v == "current_user"),
            },
            plan: Mutex::new(None),
        }
    }

    async fn preflight(&self, db: &DbConfig, operation: Operation) -> Result<ServerInfo, Error> {
        let client = self.client_version().await?;
        let client_mm = major_minor(&client).unwrap_or((0, 0));
        // Flavor and version first, from the handshake: no login needed to tell a wrong image.
        let version = handshake::server_version(
            &db.host,
            db.port,
            std::time::Duration::from_secs(db.connect_timeout_secs.into()),
        )
        .await?;
        let flavor = Flavor::of_server(&version);
        let version_mm = major_minor(&version).unwrap_or((0, 0));
        if flavor != self.flavor {
            return Err(Error::Incompatible(format!(
                "the server is {flavor} {version} but this image's tools are {}'s ({} {client}), which do not work reliably against it: use the image {}",
                self.flavor,
                self.flavor.dump_tool(),
                flavor.image_for(version_mm)
            )));
        }
        if operation == Operation::Backup && version_mm > client_mm {
            return Err(Error::Incompatible(format!(
                "the server runs {flavor} {version} but this image's {} is {client}, older than the server: use the image {}",
                self.flavor.dump_tool(),
                flavor.image_for(version_mm)
            )));
        }
        let server = match self.server(db, Some(&db.name)).await {
            Ok(s) => s,
            Err(e) if operation == Operation::Restore && is_unknown_database(&e) => {
                self.server(db, None).await?
            }
            Err(e) => return Err(e),
        };
        let mut warnings = Vec::new();
        let mut losses = Vec::new();
        if operation == Operation::Backup {
            let plan = self.fidelity_plan(db).await?;
            losses = plan.losses.clone();
            *self.plan.lock().expect("plan lock") = Some(plan);
        }
        if operation == Operation::Backup && !server.non_innodb.is_empty() {
            warnings.push(format!(
                "tables not using InnoDB are not consistent under a single-transaction snapshot (writes during the dump may be partly included): {}",
                server.non_innodb
            ));
        }
        Ok(ServerInfo {
            server_version: server.version,
            client_version: client,
            size_bytes: Some(server.size),
            warnings,
            format: None,
            losses,
        })
    }

    fn backup_command(&self, db: &DbConfig, server: &ServerInfo) -> Result<ToolCommand, Error> {
        commands::dump(self.flavor, db, self.shape(server, false))
    }

    async fn start_dump(&self, db: &DbConfig, server: &ServerInfo) -> Result<Dump, Error> {
        let defaults = self.query(db, Some(&db.name), DEFAULTS_QUERY).await?;
        let defaults = rows(&defaults).next().unwrap_or_default();
        let definers: Vec<String> = rows(&self.query(db, Some(&db.name), DEFINERS_QUERY).await?)
            .filter_map(|r| r.into_iter().next())
            .map(|d| account(&d))
            .collect();
        let planned = self.plan.lock().expect("plan lock").take();
        let plan = match planned {
            Some(plan) => plan,
            None => self.fidelity_plan(db).await?,
        };
        let largest = Arc::new(AtomicU64::new(0));
        let mut tools = Vec::new();
        let stream: Box<dyn Read + Send> = if plan.is_empty() {
            let (pipe, tool) = spawn_into_pipe(self.backup_command(db, server)?)?;
            tools.push(tool);
            Box::new(pipe)
        } else {
            // The repair session opens its snapshot first, as the dump opens its own; triggers
            // come after the repairs so that these fire none.
            let script = fidelity::script(self.flavor, &plan);
            let (repair_pipe, mut repair) =
                spawn_script(commands::script_client(self.flavor, db)?)?;
            let mut stdin = repair.take_stdin();
            let (dump_pipe, dump) = spawn_into_pipe(commands::dump(
                self.flavor,
                db,
                self.shape(server, !plan.repairs.is_empty()),
            )?)?;
            let (trigger_pipe, triggers) =
                spawn_into_pipe(commands::triggers_dump(self.flavor, db)?)?;
            {
                use tokio::io::AsyncWriteExt;
                stdin
                    .write_all(script.as_bytes())
                    .await
                    .map_err(|e| Error::Internal(format!("cannot send the repair queries: {e}")))?;
            }
            drop(stdin);
            tracing::info!(
                phase = "dump",
                sequences = plan.sequences.len(),
                float_tables = plan.repairs.len(),
                "exact values the dump tool does not print are read in the dump's snapshot and appended as statements"
            );
            tools.extend([dump, repair, triggers]);
            Box::new(dump_pipe.chain(repair_pipe).chain(trigger_pipe))
        };
        let stream = Box::new(stream::StatementMeter::new(stream, largest.clone()));
        let repaired = fidelity::describe(&plan);
        let report = move || {
            let mut details = serde_json::Map::new();
            if defaults.len() == 2 {
                details.insert("default_character_set".into(), defaults[0].clone().into());
                details.insert("default_collation".into(), defaults[1].clone().into());
            }
            details.insert("definers".into(), definers.into());
            details.insert(
                "max_statement_bytes".into(),
                largest.load(Ordering::Relaxed).into(),
            );
            details.insert("repaired".into(), repaired);
            DumpReport {
                details,
                warnings: Vec::new(),
            }
        };
        Ok(Dump {
            stream,
            tools,
            report: Box::new(report),
        })
    }

    async fn prepare_restore(
        &self,
        db: &DbConfig,
        server: &ServerInfo,
        manifest: &Manifest,
    ) -> Result<(), Error> {
        let backup_flavor = Flavor::of_server(&manifest.server_version);
        let target_flavor = Flavor::of_server(&server.server_version);
        if backup_flavor != target_flavor {
            let message = format!(
                "this backup was taken from {backup_flavor} {} and the target is {target_flavor} {}: only {backup_flavor} → {backup_flavor} restores are supported",
                manifest.server_version, server.server_version
            );
            if !self.options.allow_cross_flavor {
                return Err(Error::Incompatible(format!(
                    "{message}; restore into {backup_flavor}, or set RESTORE_ALLOW_CROSS_FLAVOR=true to try anyway"
                )));
            }
            tracing::warn!(
                phase = "restore",
                "{message}; trying anyway (RESTORE_ALLOW_CROSS_FLAVOR=true)"
            );
        }
        if major_minor(&manifest.server_version) > major_minor(&server.server_version) {
            tracing::warn!(
                phase = "restore",
                "the backup comes from {} {}, newer than the target's {}: restoring into an older server may fail",
                backup_flavor,
                manifest.server_version,
                server.server_version
            );
        }
        self.check_packet_size(db, manifest).await?;
        if self.options.definer_current_user {
            tracing::info!(
                phase = "restore",
                "every DEFINER in the backup becomes the restoring account (RESTORE_DEFINER=current_user)"
            );
        } else {
            self.check_definers(db, manifest).await?;
        }
        if manifest.database != db.name {
            tracing::info!(
                phase = "restore",
                "references to database {:?} in definitions (defaults, views, routines) are rewritten to {:?}",
                manifest.database,
                db.name
            );
        }
        let name = ident(&db.name);
        let defaults = database_defaults(manifest);
        match self.server(db, Some(&db.name)).await {
            Ok(target) if target.objects > 0 && !self.options.clean => Err(Error::Config(ConfigError {
                problems: vec![Problem {
                    var: "RESTORE_CLEAN".into(),
                    message: format!(
                        "the target database {:?} already holds {} tables, views, routines or events: restore into an empty database (DB_NAME), or set RESTORE_CLEAN=true to drop and recreate it",
                        db.name, target.objects
                    ),
                }],
            })),
            Ok(target) if target.objects > 0 => {
                tracing::info!(phase = "restore", "dropping and recreating database {:?} (RESTORE_CLEAN)", db.name);
                self.query(
                    db,
                    None,
                    &format!("DROP DATABASE {name};\nCREATE DATABASE {name} {defaults};\n"),
                )
                .await
                .map(|_| ())
            }
            Ok(_) => {
                tracing::info!(phase = "restore", "setting database {:?} to {defaults}", db.name);
                self.query(db, None, &format!("ALTER DATABASE {name} {defaults};\n"))
                    .await
                    .map(|_| ())
            }
            Err(e) if is_unknown_database(&e) => {
                tracing::info!(phase = "restore", "creating database {:?} with {defaults}", db.name);
                self.query(db, None, &format!("CREATE DATABASE {name} {defaults};\n"))
                    .await
                    .map(|_| ())
            }
            Err(e) => Err(e),
        }
    }

    fn restore_command(&self, db: &DbConfig, _manifest: &Manifest) -> Result<ToolCommand, Error> {
        commands::client(self.flavor, db, Some(&db.name))
    }

    fn restore_filter(
        &self,
        db: &DbConfig,
        manifest: &Manifest,
    ) -> Result<Option<Box<dyn StreamFilter>>, Error> {
        let rename = (manifest.database != db.name)
            .then_some((manifest.database.as_str(), db.name.as_str()));
        if rename.is_none() && !self.options.definer_current_user {
            return Ok(None);
        }
        Ok(Some(Box::new(stream::DefinitionRewrite::new(
            self.options.definer_current_user,
            rename,
        ))))
    }

    fn failure_hint(&self, operation: Operation, stderr: &str) -> Option<&'static str> {
        match operation {
            Operation::Restore if stderr.contains("SUPER") || stderr.contains("SET_USER_ID") || stderr.contains("SET_ANY_DEFINER") => Some(
                "the backup's views, routines, triggers or events name a DEFINER other than the restoring user, or binary logging requires SUPER for routines: restore as the user that defined them, or enable log_bin_trust_function_creators on the server",
            ),
            Operation::Backup if stderr.contains("Access denied") => Some(
                "DB_USERNAME lacks a privilege the dump needs: grant SELECT, SHOW VIEW, TRIGGER, EVENT and LOCK TABLES on the database (see the README)",
            ),
            _ => None,
        }
    }
}

/// Starts a client with its stdin piped (for a script) and its stdout on a plain pipe.
fn spawn_script(
    command: ToolCommand,
) -> Result<(std::io::PipeReader, runner_core::tool::RunningTool), Error> {
    let (pipe, out) =
        std::io::pipe().map_err(|e| Error::Internal(format!("cannot create a pipe: {e}")))?;
    runner_core::tool::widen_pipe(&pipe);
    tracing::info!(phase = "dump", "running {}", command.display());
    let tool = command.spawn(std::process::Stdio::piped(), std::process::Stdio::from(out))?;
    Ok((pipe, tool))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn definers_and_defaults_from_the_manifest() {
        assert_eq!(account("app_user@%"), "'app_user'@'%'");
        assert_eq!(account("we'ird@user@10.0.0.%"), "'we''ird@user'@'10.0.0.%'");
        assert_eq!(
            sql_name("utf8mb4_unicode_520_ci"),
            Some("utf8mb4_unicode_520_ci")
        );
        assert_eq!(sql_name("x; DROP DATABASE y"), None);
    }

    #[test]
    fn parses_the_server_row() {
        let s =
            parse_server_row("11.8.3-MariaDB-1 from Debian\t49152\tlegacy (MyISAM)\t7\n").unwrap();
        assert_eq!(s.version, "11.8.3-MariaDB-1 from Debian");
        assert_eq!(s.size, 49152);
        assert_eq!(s.non_innodb, "legacy (MyISAM)");
        assert_eq!(s.objects, 7);
        let s = parse_server_row("9.7.0\t0\t\t0\n").unwrap();
        assert_eq!(s.non_innodb, "");
        assert!(parse_server_row("nope").is_err());
    }

    #[test]
    fn connection_failures_are_classified() {
        let f = |s: &str| ToolFailure {
            tool: "mysql".into(),
            status: "exit code 1".into(),
            stderr: s.into(),
        };
        assert!(matches!(
            classify(f(
                "ERROR 1045 (28000): Access denied for user 'app'@'10.0.0.2' (using password: YES)"
            )),
            Error::DbRefused(_)
        ));
        assert!(matches!(
            classify(f(
                "ERROR 2002 (HY000): Can't connect to server on 'db' (115)"
            )),
            Error::DbUnavailable(_)
        ));
        let unknown = classify(f("ERROR 1049 (42000): Unknown database 'shop'"));
        assert!(is_unknown_database(&unknown));
        assert!(matches!(
            classify(f("ERROR 1064: syntax")),
            Error::Tool { .. }
        ));
    }
}
