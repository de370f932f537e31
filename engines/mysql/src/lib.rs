//! The MySQL/MariaDB engine: the flavor's own dump tool (`mysqldump` or `mariadb-dump`) in a
//! consistent snapshot, restored by streaming into the flavor's client.

mod commands;
mod flavor;
mod handshake;

use std::sync::OnceLock;

use runner_core::config::Operation;
use runner_core::env::Problem;
use runner_core::tool::ToolFailure;
use runner_core::{
    ConfigError, DbConfig, Engine, EngineInfo, EnvReader, Error, Manifest, ServerInfo, ToolCommand,
};

use crate::commands::ident;
pub use crate::flavor::Flavor;
use crate::flavor::{major_minor, parse_tool_version};

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Options {
    /// `RESTORE_CLEAN`: drop and recreate a target database that already holds objects.
    pub clean: bool,
    /// `RESTORE_ALLOW_CROSS_FLAVOR`: try restoring a MySQL backup into MariaDB or the reverse.
    pub allow_cross_flavor: bool,
}

pub struct Mysql {
    flavor: Flavor,
    options: Options,
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

    fn from_env(env: &mut EnvReader<'_>) -> Self {
        Mysql {
            flavor: Flavor::of_this_build(),
            options: Options {
                clean: env.bool("RESTORE_CLEAN").unwrap_or(false),
                allow_cross_flavor: env.bool("RESTORE_ALLOW_CROSS_FLAVOR").unwrap_or(false),
            },
        }
    }

    async fn preflight(&self, db: &DbConfig, operation: Operation) -> Result<ServerInfo, Error> {
        let client = self.client_version().await?;
        let client_mm = major_minor(&client).unwrap_or((0, 0));
        if let Some(built) = Self::info().built_for {
            if major_minor(built) != Some(client_mm) {
                return Err(Error::Incompatible(format!(
                    "this image was built for {} {built} but its {} is {client}: rebuild the image",
                    self.flavor,
                    self.flavor.dump_tool()
                )));
            }
        }
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
        })
    }

    fn backup_command(&self, db: &DbConfig, _server: &ServerInfo) -> Result<ToolCommand, Error> {
        commands::dump(self.flavor, db)
    }

    async fn prepare_restore(
        &self,
        db: &DbConfig,
        server: &ServerInfo,
        manifest: &Manifest,
    ) -> Result<(), Error> {
        let info = Self::info();
        if manifest.format != info.format {
            return Err(Error::Incompatible(format!(
                "the backup's format is {:?}, not {:?}: it was not made by this runner's MySQL engine",
                manifest.format, info.format
            )));
        }
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
        let name = ident(&db.name);
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
                    &format!("DROP DATABASE {name};\nCREATE DATABASE {name} CHARACTER SET utf8mb4;\n"),
                )
                .await
                .map(|_| ())
            }
            Ok(_) => Ok(()),
            Err(e) if is_unknown_database(&e) => {
                tracing::info!(phase = "restore", "creating database {:?}", db.name);
                self.query(db, None, &format!("CREATE DATABASE {name} CHARACTER SET utf8mb4;\n"))
                    .await
                    .map(|_| ())
            }
            Err(e) => Err(e),
        }
    }

    fn restore_command(&self, db: &DbConfig, _manifest: &Manifest) -> Result<ToolCommand, Error> {
        commands::client(self.flavor, db, Some(&db.name))
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

#[cfg(test)]
mod tests {
    use super::*;

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
