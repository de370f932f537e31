//! The MySQL/MariaDB engine: the flavor's own dump tool (`mysqldump` or `mariadb-dump`) in a
//! consistent snapshot, restored by streaming into the flavor's client.

mod accounts;
mod commands;
mod fidelity;
mod flavor;
mod handshake;
mod stream;

use std::collections::HashMap;
use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use runner_core::engine::{
    spawn_into_pipe, DatabaseList, Dump, DumpFormat, DumpReport, Globals, GlobalsRestored,
    StreamFilter,
};

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
    /// Each database's repair plan, made by its preflight and taken when its dump starts (the
    /// databases of a whole-server backup may be dumped at once).
    plans: Mutex<HashMap<String, Plan>>,
    /// A whole-server restore's grants on tables and routines, by database: replayed after
    /// the database's own restore, once their objects exist (restores run one at a time).
    later: Mutex<LaterGrants>,
}

#[derive(Default)]
struct LaterGrants {
    /// The databases the restore of a set writes (each was checked first).
    targets: Vec<String>,
    /// The grants waiting for each of them.
    grants: HashMap<String, Vec<accounts::Statement>>,
}

/// Passes the restore stream through (or through another rewrite) and appends statements.
struct ThenStatements {
    inner: Option<Box<dyn StreamFilter>>,
    tail: Vec<u8>,
}

impl StreamFilter for ThenStatements {
    fn filter(&mut self, input: &[u8], out: &mut Vec<u8>) {
        match &mut self.inner {
            Some(f) => f.filter(input, out),
            None => out.extend_from_slice(input),
        }
    }

    fn finish(&mut self, out: &mut Vec<u8>) {
        if let Some(f) = &mut self.inner {
            f.finish(out);
        }
        out.append(&mut self.tail);
    }
}

/// The grants a database's restore ends with.
fn grants_after(statements: &[accounts::Statement]) -> Vec<u8> {
    let mut tail = String::from(
        "\n-- backup-runner: the set's grants on this database's tables and routines, now that they exist\nSET SESSION sql_mode = '';\n",
    );
    for s in statements {
        tail.push_str(&format!("-- grants {}\n{};\n", s.account.sql(), s.sql));
    }
    tail.into_bytes()
}

/// The globals of a whole-server backup: the accounts script.
pub const ACCOUNTS_FORMAT: DumpFormat = DumpFormat {
    name: "mysql-accounts",
    extension: "sql",
};

/// Schemas of the server itself, never part of a whole-server backup: the information and
/// performance schemas, the system schema and `sys`; MySQL's NDB information schema, InnoDB
/// Cluster's metadata and the option tracker's schema.
const SYSTEM_SCHEMAS: &[&str] = &[
    "information_schema",
    "performance_schema",
    "mysql",
    "sys",
    "ndbinfo",
    "mysql_innodb_cluster_metadata",
    "mysql_option",
];

/// The database a connection works in: none for the server connection (an empty name).
fn database(db: &DbConfig) -> Option<&str> {
    (!db.name.is_empty()).then_some(db.name.as_str())
}

/// Whether a query failed for want of a privilege (not of a connection).
fn is_denied(err: &Error) -> bool {
    let text = match err {
        Error::DbRefused(m) => m,
        Error::Tool { detail, .. } => detail,
        _ => return false,
    };
    text.contains("denied")
}

/// The server's error line of a failed query, without the client's statement echo.
fn error_line(err: &Error) -> String {
    let text = match err {
        Error::DbRefused(m) | Error::DbUnavailable(m) => m.as_str(),
        Error::Tool { detail, .. } => detail.as_str(),
        other => return other.to_string(),
    };
    let line = text
        .lines()
        .find(|l| l.starts_with("ERROR"))
        .unwrap_or(text);
    // `ERROR 1142 (42000) at line 4: …`: the line is of the runner's own script.
    match line.split_once(" at line ") {
        Some((head, rest)) if line.starts_with("ERROR") => {
            let rest = rest.trim_start_matches(|c: char| c.is_ascii_digit());
            format!("{head}{rest}")
        }
        _ => line.to_string(),
    }
}

/// Refuses a target database that already holds objects, unless RESTORE_CLEAN allows
/// dropping it.
fn non_empty_target(name: &str, objects: u64) -> Error {
    Error::Config(ConfigError {
        problems: vec![Problem {
            var: "RESTORE_CLEAN".into(),
            message: format!(
                "the target database {name:?} already holds {objects} tables, views, routines or events: restore into an empty database (DB_NAME), or set RESTORE_CLEAN=true to drop and recreate it"
            ),
        }],
    })
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

    /// Each account's definition, read in one session; when that is denied, account by
    /// account, leaving out (and naming) those whose definition DB_USERNAME may not read.
    async fn definitions(
        &self,
        db: &DbConfig,
        listed: Vec<accounts::Listed>,
        skipped: &mut Vec<String>,
    ) -> Result<(Vec<accounts::Listed>, Vec<accounts::Definition>), Error> {
        if listed.is_empty() {
            return Ok((listed, Vec::new()));
        }
        let unreadable = |m: String| {
            Error::Internal(format!("cannot read the server's account definitions: {m}"))
        };
        match self
            .query(db, None, &accounts::show_script(self.flavor, &listed))
            .await
        {
            Ok(out) => {
                let defs =
                    accounts::parse_definitions(self.flavor, &listed, &out).map_err(unreadable)?;
                return Ok((listed, defs));
            }
            Err(e) if is_denied(&e) => {}
            Err(e) => return Err(e),
        }
        let mut kept = Vec::new();
        let mut defs = Vec::new();
        for account in listed {
            let one = std::slice::from_ref(&account);
            match self
                .query(db, None, &accounts::show_script(self.flavor, one))
                .await
            {
                Ok(out) => {
                    let mut d =
                        accounts::parse_definitions(self.flavor, one, &out).map_err(unreadable)?;
                    defs.append(&mut d);
                    kept.push(account);
                }
                Err(e) if is_denied(&e) => skipped.push(format!(
                    "accounts and grants: {} is not in the backup: DB_USERNAME may not read its definition ({})",
                    account.account.sql(),
                    error_line(&e)
                )),
                Err(e) => return Err(e),
            }
        }
        Ok((kept, defs))
    }

    /// Refuses a backup of the other flavor unless RESTORE_ALLOW_CROSS_FLAVOR is set; an
    /// allowed mismatch is returned, to be logged.
    fn cross_flavor(
        &self,
        backup_version: &str,
        target_version: &str,
    ) -> Result<Option<String>, Error> {
        let backup_flavor = Flavor::of_server(backup_version);
        let target_flavor = Flavor::of_server(target_version);
        if backup_flavor == target_flavor {
            return Ok(None);
        }
        let message = format!(
            "this backup was taken from {backup_flavor} {backup_version} and the target is {target_flavor} {target_version}: only {backup_flavor} → {backup_flavor} restores are supported"
        );
        if !self.options.allow_cross_flavor {
            return Err(Error::Incompatible(format!(
                "{message}; restore into {backup_flavor}, or set RESTORE_ALLOW_CROSS_FLAVOR=true to try anyway"
            )));
        }
        Ok(Some(message))
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
            plans: Mutex::new(HashMap::new()),
            later: Mutex::new(LaterGrants::default()),
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
        let server = match self.server(db, database(db)).await {
            Ok(s) => s,
            Err(e) if operation == Operation::Restore && is_unknown_database(&e) => {
                self.server(db, None).await?
            }
            Err(e) => return Err(e),
        };
        // The server connection of a whole-server backup (no database): the version checks
        // only; each database gets its own preflight.
        let one_database = database(db).is_some();
        let mut warnings = Vec::new();
        let mut losses = Vec::new();
        if operation == Operation::Backup && one_database {
            let plan = self.fidelity_plan(db).await?;
            losses = plan.losses.clone();
            self.plans
                .lock()
                .expect("plan lock")
                .insert(db.name.clone(), plan);
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
            size_bytes: one_database.then_some(server.size),
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
        let planned = self.plans.lock().expect("plan lock").remove(&db.name);
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
        if let Some(message) =
            self.cross_flavor(&manifest.server_version, &server.server_version)?
        {
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
            Ok(target) if target.objects > 0 && !self.options.clean => {
                Err(non_empty_target(&db.name, target.objects))
            }
            Ok(target) if target.objects > 0 => {
                tracing::info!(
                    phase = "restore",
                    "dropping and recreating database {:?} (RESTORE_CLEAN)",
                    db.name
                );
                self.query(
                    db,
                    None,
                    &format!("DROP DATABASE {name};\nCREATE DATABASE {name} {defaults};\n"),
                )
                .await
                .map(|_| ())
            }
            Ok(_) => {
                tracing::info!(
                    phase = "restore",
                    "setting database {:?} to {defaults}",
                    db.name
                );
                self.query(db, None, &format!("ALTER DATABASE {name} {defaults};\n"))
                    .await
                    .map(|_| ())
            }
            Err(e) if is_unknown_database(&e) => {
                tracing::info!(
                    phase = "restore",
                    "creating database {:?} with {defaults}",
                    db.name
                );
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
        let rewrite: Option<Box<dyn StreamFilter>> =
            if rename.is_none() && !self.options.definer_current_user {
                None
            } else {
                Some(Box::new(stream::DefinitionRewrite::new(
                    self.options.definer_current_user,
                    rename,
                )))
            };
        let grants = if manifest.is_set_member() {
            self.later
                .lock()
                .expect("grants lock")
                .grants
                .remove(&db.name)
        } else {
            None
        };
        Ok(match grants {
            Some(grants) => Some(Box::new(ThenStatements {
                inner: rewrite,
                tail: grants_after(&grants),
            })),
            None => rewrite,
        })
    }

    fn server_connection(&self, db: &DbConfig) -> DbConfig {
        DbConfig {
            name: String::new(),
            ..db.clone()
        }
    }

    async fn list_databases(&self, db: &DbConfig) -> Result<DatabaseList, Error> {
        let out = self
            .query(
                db,
                None,
                "SELECT schema_name FROM information_schema.schemata ORDER BY schema_name;\n",
            )
            .await?;
        let mut list = DatabaseList::default();
        for name in rows(&out).map(|r| r.join("\t")) {
            if SYSTEM_SCHEMAS.contains(&name.as_str()) {
                continue;
            }
            if name.starts_with("#mysql50#") {
                list.skipped.push(format!(
                    "{name:?}: a directory in the server's data directory whose name is not a valid database name, not a database"
                ));
                continue;
            }
            list.databases.push(name);
        }
        match self.query(db, None, "SHOW GRANTS;\n").await {
            Ok(grants) if accounts::sees_every_database(&grants) => {}
            Ok(_) => list.skipped.push(
                "only the databases DB_USERNAME has privileges on are listed: it lacks the global SHOW DATABASES privilege, so databases it cannot see are not in the backup (GRANT SHOW DATABASES ON *.* to it to list every database)".into(),
            ),
            Err(e @ Error::DbUnavailable(_)) => return Err(e),
            Err(e) => list.skipped.push(format!(
                "only the databases DB_USERNAME has privileges on may be listed: its privileges cannot be read (SHOW GRANTS: {}), so databases it cannot see would not be in the backup",
                error_line(&e)
            )),
        }
        Ok(list)
    }

    async fn dump_globals(&self, db: &DbConfig, server: &ServerInfo) -> Result<Globals, Error> {
        let mut skipped = Vec::new();
        let listed = match self
            .query(db, None, accounts::accounts_query(self.flavor))
            .await
        {
            Ok(out) => accounts::parse_accounts(&out),
            Err(e) if is_denied(&e) => {
                skipped.push(format!(
                    "accounts and grants: DB_USERNAME cannot read mysql.user ({}), so no account is in the backup; back up as an account with SELECT on the mysql schema to include them",
                    error_line(&e)
                ));
                Vec::new()
            }
            Err(e) => return Err(e),
        };
        let (listed, mut definitions) = self.definitions(db, listed, &mut skipped).await?;
        if !listed.is_empty() {
            match self.query(db, None, accounts::ORPHANS_QUERY).await {
                Ok(out) => {
                    let dropped = accounts::drop_orphans(&listed, &mut definitions, &out);
                    if !dropped.is_empty() {
                        skipped.push(format!(
                            "accounts and grants: grants on tables or columns that no longer exist (a DROP leaves them on the server, and a restore would refuse them) are not in the backup: {}",
                            dropped.join(", ")
                        ));
                    }
                }
                Err(e @ Error::DbUnavailable(_)) => return Err(e),
                // Without mysql.tables_priv the grants stay; a grant on a dropped table then
                // fails its database's restore, naming it.
                Err(e) => tracing::warn!(
                    phase = "dump",
                    "cannot look for grants on dropped tables ({})",
                    error_line(&e)
                ),
            }
        }
        let accounts = listed.len();
        let roles = listed
            .iter()
            .filter(|a| a.role && !a.account.is_public())
            .count();
        let counted = match self.flavor {
            Flavor::Mariadb => format!(
                "{} users, {roles} roles",
                listed.iter().filter(|a| !a.role).count()
            ),
            // A MySQL role is an account (locked, without a password) and is recreated as one.
            Flavor::Mysql => format!("{accounts} accounts (roles included)"),
        };
        let mut header = format!(
            "backup-runner: accounts and grants of {} {}: {counted}\n\
             A restore of the set creates the accounts the target lacks; existing ones are kept as they are and gain the grants below.",
            self.flavor, server.server_version
        );
        for s in &skipped {
            header.push_str(&format!("\nleft out: {s}"));
        }
        let script = accounts::script(&header, &listed, &definitions);
        tracing::info!(
            phase = "dump",
            accounts,
            "accounts and grants read: {counted} (the server's own accounts left out)"
        );
        let flavor = self.flavor;
        let report = move || {
            let mut details = serde_json::Map::new();
            details.insert("accounts".into(), accounts.into());
            if flavor == Flavor::Mariadb {
                details.insert("roles".into(), roles.into());
            }
            DumpReport {
                details,
                warnings: Vec::new(),
            }
        };
        Ok(Globals {
            dump: Dump {
                stream: Box::new(std::io::Cursor::new(script.into_bytes())),
                tools: Vec::new(),
                report: Box::new(report),
            },
            format: ACCOUNTS_FORMAT,
            skipped,
        })
    }

    async fn check_restore_target(&self, db: &DbConfig, manifest: &Manifest) -> Result<(), Error> {
        let target = match self.server(db, Some(&db.name)).await {
            Ok(t) => Some(t),
            Err(e) if is_unknown_database(&e) => None,
            Err(e) => return Err(e),
        };
        let version = match &target {
            Some(t) => t.version.clone(),
            None => self.server(db, None).await?.version,
        };
        self.cross_flavor(&manifest.server_version, &version)?;
        self.check_packet_size(db, manifest).await?;
        {
            let mut later = self.later.lock().expect("grants lock");
            if !later.targets.contains(&db.name) {
                later.targets.push(db.name.clone());
            }
        }
        match target {
            Some(t) if t.objects > 0 && !self.options.clean => {
                Err(non_empty_target(&db.name, t.objects))
            }
            _ => Ok(()),
        }
    }

    async fn restore_globals(
        &self,
        db: &DbConfig,
        server: &ServerInfo,
        manifest: &Manifest,
        script: Vec<u8>,
    ) -> Result<GlobalsRestored, Error> {
        if let Some(message) =
            self.cross_flavor(&manifest.server_version, &server.server_version)?
        {
            tracing::warn!(
                phase = "restore",
                "{message}; trying anyway (RESTORE_ALLOW_CROSS_FLAVOR=true)"
            );
        }
        let text = String::from_utf8(script).map_err(|_| {
            Error::Integrity("the backup's accounts script is not UTF-8 text".into())
        })?;
        let statements = accounts::parse_script(&text).map_err(|m| {
            Error::Integrity(format!("the backup's accounts script cannot be read: {m}"))
        })?;
        drop(text);
        let existing: Vec<(String, String)> = match self
            .query(db, None, "SELECT user, host FROM mysql.user;\n")
            .await
        {
            Ok(out) => rows(&out)
                .filter(|r| r.len() == 2)
                .map(|r| (r[0].clone(), r[1].clone()))
                .collect(),
            Err(e) if is_denied(&e) => {
                return Err(Error::DbRefused(format!(
                    "DB_USERNAME cannot read the target's accounts in mysql.user ({}), so the backup's accounts and grants cannot be restored: restore as an account that can (SELECT on the mysql schema, CREATE USER, and WITH GRANT OPTION the privileges it grants), or set RESTORE_GLOBALS=false to restore the databases only; nothing was written",
                    error_line(&e)
                )))
            }
            Err(e) => return Err(e),
        };
        let me = self.query(db, None, "SELECT CURRENT_USER();\n").await?;
        let me = me.trim();
        let (user, host) = me.rsplit_once('@').unwrap_or((me, "%"));
        let me = accounts::Account::user(user, host);
        let mut plan = accounts::replay(statements, &existing, &me);
        let mut restored = GlobalsRestored {
            created: plan.created.iter().map(|a| a.sql()).collect(),
            kept: plan.kept.iter().map(|a| a.sql()).collect(),
            warnings: Vec::new(),
        };
        // Grants on the tables and routines of the set's databases wait for their restore.
        let members: Vec<&str> = manifest
            .set
            .iter()
            .flat_map(|s| s.members.iter().map(|m| m.database.as_str()))
            .collect();
        let mut waiting = 0;
        let mut not_restored: Vec<String> = Vec::new();
        {
            let mut later = self.later.lock().expect("grants lock");
            let mut now = Vec::with_capacity(plan.statements.len());
            for s in std::mem::take(&mut plan.statements) {
                match accounts::object_database(&s.sql) {
                    Some(d) if members.contains(&d.as_str()) => {
                        if later.targets.contains(&d) {
                            waiting += 1;
                            later.grants.entry(d).or_default().push(s);
                        } else {
                            let what = format!("{} on {}", s.account.sql(), ident(&d));
                            if !not_restored.contains(&what) {
                                not_restored.push(what);
                            }
                        }
                    }
                    _ => now.push(s),
                }
            }
            plan.statements = now;
        }
        if !not_restored.is_empty() {
            restored.warnings.push(format!(
                "grants on tables and routines of databases of the set that are not restored were not applied: {}",
                not_restored.join(", ")
            ));
        }
        if waiting > 0 {
            tracing::info!(
                phase = "restore",
                grants = waiting,
                "grants on tables and routines are applied at the end of their database's restore, once these exist"
            );
        }
        if let Some(me) = &plan.myself {
            restored.kept.push(me.sql());
            restored.warnings.push(format!(
                "{}: the restoring account (DB_USERNAME) is in the backup; it was left as it is and the backup's grants for it were not applied",
                me.sql()
            ));
        }
        tracing::info!(
            phase = "restore",
            create = restored.created.len(),
            keep = restored.kept.len(),
            statements = plan.statements.len(),
            "restoring accounts and grants: accounts the target already has are kept as they are and gain the backup's grants"
        );
        if plan.statements.is_empty() {
            return Ok(restored);
        }
        let (sql, lines) = accounts::replay_sql(self.flavor, &plan.statements);
        let client = commands::client(self.flavor, db, None)?;
        if let Err(failure) = client.output(sql.as_bytes()).await {
            let (message, failed) =
                accounts::replay_failure(&failure.stderr, &plan.statements, &lines);
            return Err(match failed {
                Some(i) => {
                    let created: Vec<String> = plan.statements[..i]
                        .iter()
                        .filter(|s| {
                            matches!(
                                s.section,
                                accounts::Section::CreateUser | accounts::Section::CreateRole
                            )
                        })
                        .map(|s| s.account.sql())
                        .collect();
                    let hint = if message.contains("denied") {
                        " (DB_USERNAME needs CREATE USER, and the privileges it grants WITH GRANT OPTION and the roles WITH ADMIN OPTION)"
                    } else {
                        ""
                    };
                    Error::Tool {
                        tool: failure.tool,
                        status: failure.status,
                        detail: format!(
                            "restoring the accounts and grants stopped at {} (statement {} of {}): {message}{hint}; {}",
                            accounts::describe(&plan.statements[i]),
                            i + 1,
                            plan.statements.len(),
                            if created.is_empty() {
                                "no account was created".to_string()
                            } else {
                                format!("created before it: {}", created.join(", "))
                            }
                        ),
                    }
                }
                None => classify(ToolFailure {
                    stderr: message,
                    ..failure
                }),
            });
        }
        Ok(restored)
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
    fn query_failures_are_told_by_their_error_line() {
        let denied = classify(ToolFailure {
            tool: "mariadb".into(),
            status: "exit code 1".into(),
            stderr: "--------------\nSHOW GRANTS FOR 'a'@'%'\n--------------\n\nERROR 1044 (42000) at line 4: Access denied for user 'app'@'%' to database 'mysql'".into(),
        });
        assert!(is_denied(&denied));
        assert_eq!(
            error_line(&denied),
            "ERROR 1044 (42000): Access denied for user 'app'@'%' to database 'mysql'"
        );
        let select = Error::Tool {
            tool: "mysql".into(),
            status: "exit code 1".into(),
            detail: "ERROR 1142 (42000) at line 1: SELECT command denied to user 'app'@'10.0.0.2' for table 'user'".into(),
        };
        assert!(is_denied(&select));
        assert!(!is_denied(&Error::DbUnavailable("denied".into())));
        assert_eq!(
            error_line(&select),
            "ERROR 1142 (42000): SELECT command denied to user 'app'@'10.0.0.2' for table 'user'"
        );
    }

    #[test]
    fn grants_after_a_database_follow_its_stream() {
        let statements =
            accounts::parse_script("-- grants 'a'@'%'\nGRANT SELECT ON `shop`.`t` TO `a`@`%`;\n")
                .unwrap();
        let mut f = ThenStatements {
            inner: None,
            tail: grants_after(&statements),
        };
        let mut out = Vec::new();
        f.filter(b"INSERT INTO t VALUES (1);\n-- Dump completed", &mut out);
        f.finish(&mut out);
        let out = String::from_utf8(out).unwrap();
        assert!(
            out.starts_with("INSERT INTO t VALUES (1);\n-- Dump completed\n-- backup-runner:"),
            "{out}"
        );
        assert!(out.ends_with("SET SESSION sql_mode = '';\n-- grants 'a'@'%'\nGRANT SELECT ON `shop`.`t` TO `a`@`%`;\n"), "{out}");
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
