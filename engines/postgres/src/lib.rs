//! The PostgreSQL engine: pg_dump in custom format (uncompressed; the runner compresses), and
//! pg_restore into the target database, created when missing. A whole server (`DB_NAME=*`) is
//! its globals from `pg_dumpall --globals-only` plus one such backup per database (`set.rs`).

mod commands;
mod globals;
mod set;
mod version;

use runner_core::config::Operation;
use runner_core::engine::{DatabaseList, Globals, GlobalsRestored};
use runner_core::env::Problem;
use runner_core::tool::ToolFailure;
use runner_core::{
    ConfigError, DbConfig, Engine, EngineInfo, EnvReader, Error, Manifest, ServerInfo,
};

use crate::version::{major_from_num, major_of, parse_tool_version};

pub static INFO: EngineInfo = EngineInfo {
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
    built_for: option_env!("BACKUP_RUNNER_POSTGRES_VERSION"),
    server_scope: true,
};

/// Restore settings, from `RESTORE_*` and `PG_*` variables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// `RESTORE_NO_OWNER`: objects are owned by the restoring user (no ALTER OWNER), for
    /// restoring as a different user than the one that owned them.
    pub no_owner: bool,
    /// `RESTORE_NO_PRIVILEGES` (default: same as `RESTORE_NO_OWNER`): skip GRANT/REVOKE.
    pub no_privileges: bool,
    /// `RESTORE_CLEAN`: drop the backup's objects in the target before recreating them.
    pub clean: bool,
    /// `RESTORE_SINGLE_TRANSACTION` (default true): all or nothing.
    pub single_transaction: bool,
    /// `PG_MAINTENANCE_DB` (default `postgres`): where to connect to create a missing target,
    /// and for a whole-server backup's server-wide work.
    pub maintenance_db: String,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            no_owner: false,
            no_privileges: false,
            clean: false,
            single_transaction: true,
            maintenance_db: "postgres".into(),
        }
    }
}

pub struct Postgres {
    options: Options,
    /// Client tool versions already asked (`pg_dump`, `pg_restore`): a whole-server set runs a
    /// preflight per database, and asking the tool each time cost about 0.1 s per database.
    client_versions: std::sync::Mutex<std::collections::HashMap<String, String>>,
}

/// Preflight query: version, size, and how many user objects the database already holds.
const SERVER_QUERY: &str = "SELECT current_setting('server_version_num'), \
    current_setting('server_version'), pg_database_size(current_database()), \
    (SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
      WHERE c.relkind IN ('r','p','v','m','S','f') \
        AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
        AND n.nspname NOT LIKE 'pg_toast%' AND n.nspname NOT LIKE 'pg_temp%');\n";

struct Server {
    version: String,
    major: u32,
    size: u64,
    objects: u64,
}

fn parse_server_row(out: &str) -> Result<Server, Error> {
    let fields: Vec<&str> = out.trim().split('|').collect();
    let bad = || Error::Internal(format!("unexpected answer from the server: {out:?}"));
    if fields.len() != 4 {
        return Err(bad());
    }
    let num: u32 = fields[0].parse().map_err(|_| bad())?;
    Ok(Server {
        version: fields[1]
            .split_whitespace()
            .next()
            .unwrap_or(fields[1])
            .to_string(),
        major: major_from_num(num),
        size: fields[2].parse().map_err(|_| bad())?,
        objects: fields[3].parse().map_err(|_| bad())?,
    })
}

/// Turns a failed connection into the error class orchestration acts on.
fn classify(failure: ToolFailure) -> Error {
    let text = failure.stderr.to_ascii_lowercase();
    let refused = [
        "password authentication failed",
        "no password supplied",
        "authentication failed",
        "pg_hba.conf",
        "does not exist",
        "permission denied",
        "ssl",
    ];
    let unavailable = [
        "could not connect",
        "connection refused",
        "could not translate host name",
        "timeout expired",
        "network is unreachable",
        "no route to host",
        "server closed the connection",
        "the database system is starting up",
        "the database system is shutting down",
    ];
    if unavailable.iter().any(|s| text.contains(s)) && !text.contains("ssl") {
        Error::DbUnavailable(failure.stderr)
    } else if refused.iter().any(|s| text.contains(s)) {
        Error::DbRefused(failure.stderr)
    } else {
        failure.into()
    }
}

fn is_missing_database(err: &Error, name: &str) -> bool {
    matches!(err, Error::DbRefused(m) if m.contains(&format!("database \"{name}\" does not exist")))
}

/// Refuses a backup written by a newer pg_dump than this image's pg_restore (`client`).
fn check_reader(manifest: &Manifest, client: &str) -> Result<(), Error> {
    let written_by = major_of(&manifest.client_version).unwrap_or(0);
    let ours = major_of(client).unwrap_or(0);
    if written_by > ours {
        return Err(Error::Incompatible(format!(
            "the backup was written by pg_dump {} but this image's pg_restore is {client}, which cannot read it: restore with the image {}",
            manifest.client_version,
            INFO.image_for(&written_by.to_string())
        )));
    }
    Ok(())
}

impl Postgres {
    /// A database of a whole-server set: checked again (nothing is written), and what the
    /// restore will do said. pg_restore --create makes the database, so nothing is created here.
    async fn prepare_member(&self, db: &DbConfig) -> Result<(), Error> {
        let target = self.member_target(db).await?;
        let described = match (self.options.no_owner, self.options.no_privileges) {
            (false, false) => "owner, encoding, locale, settings, grants",
            (false, true) => "owner, encoding, locale, settings; no grants (RESTORE_NO_PRIVILEGES)",
            (true, false) => {
                "encoding, locale, settings, grants; owned by DB_USERNAME (RESTORE_NO_OWNER)"
            }
            (true, true) => {
                "encoding, locale, settings; owned by DB_USERNAME, no grants (RESTORE_NO_OWNER)"
            }
        };
        match target {
            set::MemberTarget::Maintenance { .. } => tracing::warn!(
                phase = "restore",
                "database {:?} is PG_MAINTENANCE_DB, which the runner is connected to and cannot drop: the backup's objects are restored into it, but its owner, settings and grants stay the target's",
                db.name
            ),
            set::MemberTarget::Missing => tracing::info!(
                phase = "restore",
                "creating database {:?} as the backup describes it ({described})",
                db.name
            ),
            set::MemberTarget::Replaced { objects: 0 } => tracing::info!(
                phase = "restore",
                "database {:?} exists on the target and holds no objects: it is dropped and created again as the backup describes it ({described})",
                db.name
            ),
            set::MemberTarget::Replaced { objects } => tracing::warn!(
                phase = "restore",
                "RESTORE_CLEAN=true: database {:?} holds {}; it is dropped and created again from the backup ({described})",
                db.name,
                set::objects_text(objects)
            ),
        }
        Ok(())
    }

    async fn query_server(&self, db: &DbConfig, database: &str) -> Result<Server, Error> {
        let out = commands::psql(db, database, &[])?
            .output(SERVER_QUERY.as_bytes())
            .await
            .map_err(classify)?;
        parse_server_row(&out)
    }

    async fn client_version(&self, program: &str) -> Result<String, Error> {
        if let Some(v) = self.client_versions.lock().expect("versions").get(program) {
            return Ok(v.clone());
        }
        let out = commands::version_command(program).output(b"").await?;
        let version = parse_tool_version(&out).ok_or_else(|| {
            Error::Internal(format!("cannot read the version of {program}: {out:?}"))
        })?;
        self.client_versions
            .lock()
            .expect("versions")
            .insert(program.to_string(), version.clone());
        Ok(version)
    }
}

impl Engine for Postgres {
    fn info() -> &'static EngineInfo {
        &INFO
    }

    fn from_env(env: &mut EnvReader<'_>) -> Self {
        let defaults = Options::default();
        let no_owner = env.bool("RESTORE_NO_OWNER").unwrap_or(defaults.no_owner);
        Postgres {
            options: Options {
                no_owner,
                no_privileges: env.bool("RESTORE_NO_PRIVILEGES").unwrap_or(no_owner),
                clean: env.bool("RESTORE_CLEAN").unwrap_or(defaults.clean),
                single_transaction: env
                    .bool("RESTORE_SINGLE_TRANSACTION")
                    .unwrap_or(defaults.single_transaction),
                maintenance_db: env
                    .string("PG_MAINTENANCE_DB")
                    .unwrap_or(defaults.maintenance_db),
            },
            client_versions: Default::default(),
        }
    }

    async fn preflight(&self, db: &DbConfig, operation: Operation) -> Result<ServerInfo, Error> {
        let program = match operation {
            Operation::Backup => "pg_dump",
            _ => "pg_restore",
        };
        let client = self.client_version(program).await?;
        let server = match self.query_server(db, &db.name).await {
            Ok(s) => s,
            // A restore may target a database that does not exist yet.
            Err(e) if operation == Operation::Restore && is_missing_database(&e, &db.name) => {
                let mut s = self.query_server(db, &self.options.maintenance_db).await?;
                s.size = 0;
                s
            }
            Err(e) => return Err(e),
        };
        let client_major = major_of(&client).unwrap_or(0);
        if operation == Operation::Backup && server.major > client_major {
            return Err(Error::Incompatible(format!(
                "the server runs PostgreSQL {} but this image's pg_dump is {client}, and pg_dump cannot dump a newer server: use the image {}",
                server.version,
                INFO.image_for(&server.major.to_string())
            )));
        }
        let mut warnings = Vec::new();
        if operation == Operation::Restore && server.major < client_major {
            warnings.push(format!(
                "restoring into PostgreSQL {} with pg_restore {client}: PostgreSQL does not guarantee restores into older servers; if this one fails, use the image {}",
                server.version,
                INFO.image_for(&server.major.to_string())
            ));
        }
        Ok(ServerInfo {
            server_version: server.version,
            client_version: client,
            size_bytes: Some(server.size),
            warnings,
            format: None,
            losses: Vec::new(),
        })
    }

    fn backup_command(
        &self,
        db: &DbConfig,
        _server: &ServerInfo,
    ) -> Result<runner_core::ToolCommand, Error> {
        commands::pg_dump(db)
    }

    async fn prepare_restore(
        &self,
        db: &DbConfig,
        server: &ServerInfo,
        manifest: &Manifest,
    ) -> Result<(), Error> {
        check_reader(manifest, &server.client_version)?;
        if manifest.is_set_member() {
            return self.prepare_member(db).await;
        }
        match self.query_server(db, &db.name).await {
            Ok(target) if target.objects > 0 && !self.options.clean => {
                Err(Error::Config(ConfigError {
                    problems: vec![Problem {
                        var: "RESTORE_CLEAN".into(),
                        message: format!(
                            "the target database {:?} already holds {} tables, views or sequences: restore into an empty database (DB_NAME), or set RESTORE_CLEAN=true to drop and replace the backup's objects",
                            db.name, target.objects
                        ),
                    }],
                }))
            }
            Ok(_) => Ok(()),
            Err(e) if is_missing_database(&e, &db.name) => {
                tracing::info!(phase = "restore", "creating database {:?}", db.name);
                commands::psql(db, &self.options.maintenance_db, &[("target", &db.name)])?
                    .output(b"CREATE DATABASE :\"target\";\n")
                    .await
                    .map_err(classify)?;
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    fn restore_command(
        &self,
        db: &DbConfig,
        manifest: &Manifest,
    ) -> Result<runner_core::ToolCommand, Error> {
        if manifest.is_set_member() && !self.is_maintenance(db) {
            commands::pg_restore_create(db, &self.options, &self.options.maintenance_db)
        } else {
            commands::pg_restore(db, &self.options)
        }
    }

    fn restore_is_atomic(&self) -> bool {
        self.options.single_transaction
    }

    fn server_connection(&self, db: &DbConfig) -> DbConfig {
        DbConfig {
            name: self.options.maintenance_db.clone(),
            ..db.clone()
        }
    }

    async fn list_databases(&self, db: &DbConfig) -> Result<DatabaseList, Error> {
        self.list_databases_of(db).await
    }

    async fn dump_globals(&self, db: &DbConfig, _server: &ServerInfo) -> Result<Globals, Error> {
        self.dump_globals_of(db).await
    }

    async fn check_restore_target(&self, db: &DbConfig, manifest: &Manifest) -> Result<(), Error> {
        let client = self.client_version("pg_restore").await?;
        check_reader(manifest, &client)?;
        self.member_target(db).await.map(|_| ())
    }

    async fn restore_globals(
        &self,
        db: &DbConfig,
        server: &ServerInfo,
        manifest: &Manifest,
        script: Vec<u8>,
    ) -> Result<GlobalsRestored, Error> {
        self.restore_globals_of(db, server, manifest, script).await
    }

    fn failure_hint(&self, operation: Operation, stderr: &str) -> Option<&'static str> {
        let owner_problem = ["must be owner of", "must be member of role", "role \""]
            .iter()
            .any(|s| stderr.contains(s));
        match operation {
            Operation::Restore if owner_problem && !self.options.no_owner => Some(
                "the backup's objects belong to roles this user cannot act as: set RESTORE_NO_OWNER=true to restore them owned by DB_USERNAME (GRANTs are skipped too unless RESTORE_NO_PRIVILEGES=false)",
            ),
            Operation::Restore if stderr.contains("unrecognized configuration parameter") => Some(
                "the target server is older than this image's pg_restore and does not know a setting it sends: restore with the image matching the target server's major version",
            ),
            Operation::Restore if stderr.contains("already exists") && !self.options.clean => Some(
                "the target already holds some of these objects: restore into an empty database or set RESTORE_CLEAN=true",
            ),
            Operation::Backup if stderr.contains("permission denied") => Some(
                "DB_USERNAME cannot read every object: back up as the owner, or grant it pg_read_all_data (PostgreSQL 14+)",
            ),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(stderr: &str) -> ToolFailure {
        ToolFailure {
            tool: "psql".into(),
            status: "exit code 2".into(),
            stderr: stderr.into(),
        }
    }

    #[test]
    fn connection_failures_are_classified() {
        let e = classify(failure(
            "psql: error: connection to server at \"127.0.0.1\", port 5432 failed: FATAL:  password authentication failed for user \"app\"",
        ));
        assert!(matches!(e, Error::DbRefused(_)), "{e:?}");
        let e = classify(failure(
            "psql: error: connection to server at \"10.0.0.1\", port 5432 failed: Connection refused",
        ));
        assert!(matches!(e, Error::DbUnavailable(_)), "{e:?}");
        let e = classify(failure(
            "psql: error: could not translate host name \"nope\" to address",
        ));
        assert!(matches!(e, Error::DbUnavailable(_)), "{e:?}");
        let e = classify(failure("ERROR: syntax error"));
        assert!(matches!(e, Error::Tool { .. }), "{e:?}");
        let missing = classify(failure(
            "psql: error: connection to server failed: FATAL:  database \"shop\" does not exist",
        ));
        assert!(is_missing_database(&missing, "shop"));
        assert!(!is_missing_database(&missing, "other"));
    }

    #[test]
    fn parses_the_server_row() {
        let s = parse_server_row("170006|17.6 (Debian 17.6-1)|7893475|12\n").unwrap();
        assert_eq!(s.major, 17);
        assert_eq!(s.version, "17.6");
        assert_eq!(s.size, 7893475);
        assert_eq!(s.objects, 12);
        assert!(parse_server_row("garbage").is_err());
    }

    #[test]
    fn options_from_env() {
        let vars = std::collections::HashMap::from([
            ("RESTORE_NO_OWNER", "true"),
            ("RESTORE_CLEAN", "yes"),
        ]);
        let mut env = EnvReader::new(move |k| vars.get(k).map(|v| v.to_string()));
        let pg = Postgres::from_env(&mut env);
        assert!(env.finish().is_ok());
        assert!(pg.options.no_owner && pg.options.no_privileges && pg.options.clean);
        assert!(pg.options.single_transaction);
    }
}
