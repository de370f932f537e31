//! Command lines for the dump tool and the client. Connection settings and the password go in a
//! private 0600 option file passed with `--defaults-extra-file` (which must come first), so
//! argv holds options only and `ps` shows no password.

use runner_core::config::TlsConfig;
use runner_core::{DbConfig, Error, ToolCommand};

use crate::flavor::Flavor;

/// The largest packet the tools send or accept (the protocol's limit): a row of up to 1 GiB
/// backs up and restores. The server's own `max_allowed_packet` is checked separately.
pub const MAX_PACKET: u64 = 1 << 30;

/// What the dump covers beyond the defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DumpShape {
    /// MariaDB 10.11+: system-versioned tables with their history rows and period columns.
    pub history: bool,
    /// Leave triggers out (they are dumped after the runner's own statements).
    pub skip_triggers: bool,
}

/// A consistent snapshot without locking InnoDB writers, everything in the schema, binary safe,
/// utf8mb4, and nothing that needs PROCESS, SUPER or RELOAD (tablespaces, GTID, LOCK TABLES).
pub fn dump_args(flavor: Flavor, shape: DumpShape) -> Vec<&'static str> {
    let mut args = vec![
        "--single-transaction",
        "--quick",
        "--routines",
        "--triggers",
        "--events",
        "--hex-blob",
        "--default-character-set=utf8mb4",
        "--no-tablespaces",
        "--skip-add-locks",
        "--skip-dump-date",
    ];
    if flavor == Flavor::Mysql {
        args.push("--set-gtid-purged=OFF");
    }
    if shape.history {
        args.push("--dump-history");
    }
    if shape.skip_triggers {
        args.retain(|a| *a != "--triggers");
        args.push("--skip-triggers");
    }
    args
}

/// Only the triggers of the database (no tables, data, routines or events).
pub fn triggers_dump(flavor: Flavor, db: &DbConfig) -> Result<ToolCommand, Error> {
    let mut cmd = with_options(flavor.dump_tool(), flavor, db)?;
    cmd.args([
        "--no-create-info",
        "--no-data",
        "--skip-routines",
        "--skip-events",
        "--triggers",
        "--default-character-set=utf8mb4",
        "--no-tablespaces",
        "--skip-add-locks",
        "--skip-dump-date",
    ]);
    if flavor == Flavor::Mysql {
        cmd.arg("--set-gtid-purged=OFF");
    }
    cmd.arg(&db.name);
    Ok(cmd)
}

/// The client printing a script's results as they are (no escaping, no headers), row by row.
pub fn script_client(flavor: Flavor, db: &DbConfig) -> Result<ToolCommand, Error> {
    let mut cmd = with_options(flavor.client_tool(), flavor, db)?;
    cmd.arg(format!("--connect-timeout={}", db.connect_timeout_secs))
        .args(["--batch", "--raw", "--skip-column-names", "--quick"])
        .arg(format!("--database={}", db.name));
    Ok(cmd)
}

/// An option file value, quoted: `"` and `\` escaped.
fn quoted(value: &str) -> String {
    format!("\"{}\"", value.replace('\\', "\\\\").replace('"', "\\\""))
}

fn tls_options(flavor: Flavor, tls: &TlsConfig) -> Vec<String> {
    let mut lines = Vec::new();
    if let Some(mode) = tls.mode.as_deref() {
        match flavor {
            Flavor::Mysql => {
                let m = match mode {
                    "disable" => "DISABLED",
                    "allow" | "prefer" => "PREFERRED",
                    "require" => "REQUIRED",
                    "verify-ca" => "VERIFY_CA",
                    _ => "VERIFY_IDENTITY",
                };
                lines.push(format!("ssl-mode={m}"));
            }
            Flavor::Mariadb => match mode {
                "disable" => lines.push("skip-ssl".into()),
                "allow" | "prefer" => {}
                "require" => {
                    lines.push("ssl".into());
                    lines.push("skip-ssl-verify-server-cert".into());
                }
                _ => {
                    lines.push("ssl".into());
                    lines.push("ssl-verify-server-cert".into());
                }
            },
        }
    }
    for (key, path) in [
        ("ssl-ca", &tls.root_cert),
        ("ssl-cert", &tls.cert),
        ("ssl-key", &tls.key),
    ] {
        if let Some(p) = path {
            lines.push(format!("{key}={}", quoted(&p.display().to_string())));
        }
    }
    lines
}

/// The `[client]` option file: read by the dump tool and the client alike.
pub fn option_file(flavor: Flavor, db: &DbConfig) -> String {
    let mut lines = vec![
        "[client]".to_string(),
        format!("host={}", quoted(&db.host)),
        format!("port={}", db.port),
        format!("user={}", quoted(&db.user)),
        "default-character-set=utf8mb4".to_string(),
        format!("max-allowed-packet={MAX_PACKET}"),
    ];
    if let Some(p) = &db.password {
        lines.push(format!("password={}", quoted(p.expose())));
    }
    lines.extend(tls_options(flavor, &db.tls));
    lines.push(String::new());
    lines.join("\n")
}

fn with_options(program: &str, flavor: Flavor, db: &DbConfig) -> Result<ToolCommand, Error> {
    let mut cmd = ToolCommand::new(program);
    let path = cmd.private_file("client.cnf", option_file(flavor, db).as_bytes())?;
    let mut arg = std::ffi::OsString::from("--defaults-extra-file=");
    arg.push(path);
    cmd.arg(arg);
    Ok(cmd)
}

pub fn dump(flavor: Flavor, db: &DbConfig, shape: DumpShape) -> Result<ToolCommand, Error> {
    let mut cmd = with_options(flavor.dump_tool(), flavor, db)?;
    cmd.args(dump_args(flavor, shape)).arg(&db.name);
    Ok(cmd)
}

/// The client reading SQL from stdin into `database` (none: no default database).
pub fn client(flavor: Flavor, db: &DbConfig, database: Option<&str>) -> Result<ToolCommand, Error> {
    let mut cmd = with_options(flavor.client_tool(), flavor, db)?;
    // Only the client knows this option; in the shared [client] group it would stop the dump tool.
    cmd.arg(format!("--connect-timeout={}", db.connect_timeout_secs))
        .args(["--batch", "--skip-column-names", "--binary-mode"]);
    if let Some(d) = database {
        cmd.arg(format!("--database={d}"));
    }
    Ok(cmd)
}

pub fn version_command(program: &str) -> ToolCommand {
    let mut cmd = ToolCommand::new(program);
    cmd.arg("--version");
    cmd
}

/// A quoted identifier for SQL.
pub fn ident(s: &str) -> String {
    format!("`{}`", s.replace('`', "``"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use runner_core::Secret;

    fn db() -> DbConfig {
        DbConfig {
            host: "db".into(),
            port: 3306,
            name: "app_db".into(),
            user: "app_user".into(),
            password: Some(Secret::new("my\"sql\\pw secret")),
            tls: TlsConfig {
                mode: Some("require".into()),
                ..TlsConfig::default()
            },
            connect_timeout_secs: 30,
            lock_wait_timeout: None,
        }
    }

    #[test]
    fn the_password_goes_in_the_option_file_not_argv() {
        for flavor in [Flavor::Mysql, Flavor::Mariadb] {
            let cmd = dump(flavor, &db(), DumpShape::default()).unwrap();
            assert_eq!(cmd.program(), flavor.dump_tool());
            let args: Vec<String> = cmd
                .get_args()
                .iter()
                .map(|a| a.to_string_lossy().into_owned())
                .collect();
            assert!(
                args[0].starts_with("--defaults-extra-file="),
                "must be first: {args:?}"
            );
            assert!(args.iter().all(|a| !a.contains("secret")), "{args:?}");
            assert!(cmd.get_env().is_empty(), "nothing in the environment");
            assert_eq!(args.last().unwrap(), "app_db");
            let file =
                std::fs::read_to_string(args[0].trim_start_matches("--defaults-extra-file="))
                    .unwrap();
            assert!(
                file.contains("password=\"my\\\"sql\\\\pw secret\""),
                "{file}"
            );
            assert!(file.contains("user=\"app_user\""));
            assert!(file.contains("max-allowed-packet=1073741824"), "{file}");
        }
    }

    #[test]
    fn dump_options_per_flavor() {
        let plain = DumpShape::default();
        assert!(dump_args(Flavor::Mysql, plain).contains(&"--set-gtid-purged=OFF"));
        assert!(!dump_args(Flavor::Mariadb, plain).contains(&"--set-gtid-purged=OFF"));
        let shaped = dump_args(
            Flavor::Mariadb,
            DumpShape {
                history: true,
                skip_triggers: true,
            },
        );
        assert!(shaped.contains(&"--dump-history") && shaped.contains(&"--skip-triggers"));
        assert!(!shaped.contains(&"--triggers"));
        for a in [
            "--single-transaction",
            "--routines",
            "--triggers",
            "--events",
            "--hex-blob",
            "--no-tablespaces",
        ] {
            assert!(dump_args(Flavor::Mariadb, plain).contains(&a));
        }
    }

    #[test]
    fn tls_modes_per_flavor() {
        let mysql = option_file(Flavor::Mysql, &db());
        assert!(mysql.contains("ssl-mode=REQUIRED"), "{mysql}");
        let maria = option_file(Flavor::Mariadb, &db());
        assert!(
            maria.contains("\nssl\n") && maria.contains("skip-ssl-verify-server-cert"),
            "{maria}"
        );
    }

    #[test]
    fn sql_quoting() {
        assert_eq!(ident("we`ird"), "`we``ird`");
    }
}
