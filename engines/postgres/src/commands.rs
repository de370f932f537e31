//! Command lines for pg_dump, pg_restore and psql. Connection settings travel in the child's
//! own environment (libpq's PG* variables) and the password in a 0600 passfile: argv holds
//! options only, and a database name is never parsed as a connection string.

use runner_core::{DbConfig, Error, ToolCommand};

use crate::Options;

/// The custom format, uncompressed: the runner compresses.
pub const DUMP_ARGS: &[&str] = &["--format=custom", "--compress=0", "--no-password"];

/// A passfile line matching any host, port, database and user.
fn passfile_line(password: &str) -> String {
    let escaped = password.replace('\\', "\\\\").replace(':', "\\:");
    format!("*:*:*:*:{escaped}\n")
}

/// A tool connected to `database` on the configured server.
pub fn connected(program: &str, db: &DbConfig, database: &str) -> Result<ToolCommand, Error> {
    let mut cmd = ToolCommand::new(program);
    cmd.env("PGHOST", &db.host)
        .env("PGPORT", db.port.to_string())
        .env("PGUSER", &db.user)
        .env("PGDATABASE", database)
        .env("PGCONNECT_TIMEOUT", db.connect_timeout_secs.to_string())
        .env("PGAPPNAME", "backup-runner");
    if let Some(password) = &db.password {
        let path = cmd.private_file("pgpass", passfile_line(password.expose()).as_bytes())?;
        cmd.env("PGPASSFILE", path);
    }
    let tls = &db.tls;
    if let Some(mode) = &tls.mode {
        cmd.env("PGSSLMODE", mode);
    }
    for (var, path) in [
        ("PGSSLROOTCERT", &tls.root_cert),
        ("PGSSLCERT", &tls.cert),
        ("PGSSLKEY", &tls.key),
    ] {
        if let Some(p) = path {
            cmd.env(var, p);
        }
    }
    Ok(cmd)
}

pub fn pg_dump(db: &DbConfig) -> Result<ToolCommand, Error> {
    let mut cmd = connected("pg_dump", db, &db.name)?;
    cmd.args(DUMP_ARGS);
    // Waiting on a table lock (another session's ALTER or LOCK) fails the dump instead of
    // hanging it; the runner's stall timeout covers what pg_dump cannot see.
    if let Some(wait) = db.lock_wait_timeout {
        cmd.arg(format!("--lock-wait-timeout={}", wait.as_millis()));
    }
    Ok(cmd)
}

/// `dbname='…'`: a conninfo string, so pg_restore connects (instead of printing SQL) and the
/// name is taken literally whatever characters it holds.
fn conninfo_dbname(name: &str) -> String {
    format!(
        "dbname='{}'",
        name.replace('\\', "\\\\").replace('\'', "\\'")
    )
}

pub fn pg_restore(db: &DbConfig, options: &Options) -> Result<ToolCommand, Error> {
    let mut cmd = connected("pg_restore", db, &db.name)?;
    cmd.arg("--no-password").arg("--exit-on-error");
    if options.single_transaction {
        cmd.arg("--single-transaction");
    }
    if options.no_owner {
        cmd.arg("--no-owner");
    }
    if options.no_privileges {
        cmd.arg("--no-privileges");
    }
    if options.clean {
        cmd.args(["--clean", "--if-exists"]);
    }
    cmd.arg(format!("--dbname={}", conninfo_dbname(&db.name)));
    Ok(cmd)
}

/// `pg_dumpall --globals-only`: roles, their settings and memberships, tablespaces, read
/// through `database` (the maintenance database). Without `role_passwords` the roles are read
/// from `pg_roles`, which any role may read, instead of `pg_authid`.
pub fn pg_dumpall_globals(
    db: &DbConfig,
    database: &str,
    role_passwords: bool,
) -> Result<ToolCommand, Error> {
    let mut cmd = connected("pg_dumpall", db, database)?;
    cmd.args(["--globals-only", "--no-password"]);
    if !role_passwords {
        cmd.arg("--no-role-passwords");
    }
    // pg_dumpall ignores PGDATABASE and takes its first database with -l, which it expands as a
    // connection string: given as one, the name is taken literally.
    cmd.arg(format!("--database={}", conninfo_dbname(database)));
    Ok(cmd)
}

/// pg_restore of one database of a whole-server set: connected to `maintenance`, it drops the
/// database if it exists (the caller checked it may), creates it as the backup describes it
/// (owner, encoding, locale, settings, grants, comment) and restores into it. Not in one
/// transaction: `CREATE DATABASE` cannot run inside one.
pub fn pg_restore_create(
    db: &DbConfig,
    options: &Options,
    maintenance: &str,
) -> Result<ToolCommand, Error> {
    let mut cmd = connected("pg_restore", db, maintenance)?;
    cmd.args([
        "--no-password",
        "--exit-on-error",
        "--create",
        "--clean",
        "--if-exists",
    ]);
    if options.no_owner {
        cmd.arg("--no-owner");
    }
    if options.no_privileges {
        cmd.arg("--no-privileges");
    }
    cmd.arg(format!("--dbname={}", conninfo_dbname(maintenance)));
    Ok(cmd)
}

/// psql for short queries fed on stdin; `vars` become psql variables (`:'name'`, `:"name"`).
pub fn psql(db: &DbConfig, database: &str, vars: &[(&str, &str)]) -> Result<ToolCommand, Error> {
    let mut cmd = connected("psql", db, database)?;
    cmd.args(["-X", "-q", "-A", "-t", "--no-password", "-F", "|"])
        .args(["-v", "ON_ERROR_STOP=1"]);
    for (name, value) in vars {
        cmd.arg("-v").arg(format!("{name}={value}"));
    }
    Ok(cmd)
}

pub fn version_command(program: &str) -> ToolCommand {
    let mut cmd = ToolCommand::new(program);
    cmd.arg("--version");
    cmd
}

#[cfg(test)]
mod tests {
    use super::*;
    use runner_core::config::TlsConfig;
    use runner_core::Secret;
    use std::ffi::OsString;

    const PASSWORD: &str = "s3cr3t:with\\odd'chars";

    fn db() -> DbConfig {
        DbConfig {
            host: "db.internal".into(),
            port: 5433,
            name: "shop; DROP".into(),
            user: "app".into(),
            password: Some(Secret::new(PASSWORD)),
            tls: TlsConfig {
                mode: Some("verify-full".into()),
                root_cert: Some("/certs/ca.pem".into()),
                cert: None,
                key: None,
            },
            connect_timeout_secs: 30,
            lock_wait_timeout: None,
        }
    }

    fn env_of(cmd: &ToolCommand, key: &str) -> Option<String> {
        cmd.get_env()
            .iter()
            .find(|(k, _)| k == &OsString::from(key))
            .map(|(_, v)| v.to_string_lossy().into_owned())
    }

    fn assert_no_secret_in_argv(cmd: &ToolCommand) {
        for a in cmd.get_args() {
            assert!(
                !a.to_string_lossy().contains("s3cr3t"),
                "password in argv: {a:?}"
            );
        }
        for (k, v) in cmd.get_env() {
            assert_ne!(k, "PGPASSWORD");
            assert!(
                !v.to_string_lossy().contains("s3cr3t"),
                "password in env {k:?}"
            );
        }
    }

    #[test]
    fn pg_dump_uses_custom_uncompressed_and_a_passfile() {
        let cmd = pg_dump(&db()).unwrap();
        assert_eq!(cmd.program(), "pg_dump");
        let args: Vec<_> = cmd.get_args().iter().map(|a| a.to_string_lossy()).collect();
        assert_eq!(args, DUMP_ARGS);
        assert_no_secret_in_argv(&cmd);
        assert_eq!(env_of(&cmd, "PGHOST").as_deref(), Some("db.internal"));
        assert_eq!(env_of(&cmd, "PGPORT").as_deref(), Some("5433"));
        assert_eq!(env_of(&cmd, "PGDATABASE").as_deref(), Some("shop; DROP"));
        assert_eq!(env_of(&cmd, "PGSSLMODE").as_deref(), Some("verify-full"));
        assert_eq!(
            env_of(&cmd, "PGSSLROOTCERT").as_deref(),
            Some("/certs/ca.pem")
        );
        let passfile = env_of(&cmd, "PGPASSFILE").unwrap();
        let contents = std::fs::read_to_string(&passfile).unwrap();
        assert_eq!(contents, "*:*:*:*:s3cr3t\\:with\\\\odd'chars\n");
    }

    #[test]
    fn pg_restore_options() {
        let plain = pg_restore(&db(), &Options::default()).unwrap();
        let args: Vec<_> = plain
            .get_args()
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert!(args.contains(&"--single-transaction".to_string()));
        assert!(args.contains(&"--exit-on-error".to_string()));
        assert!(!args.contains(&"--no-owner".to_string()));
        assert_eq!(args.last().unwrap(), "--dbname=dbname='shop; DROP'");
        assert_no_secret_in_argv(&plain);

        let opts = Options {
            no_owner: true,
            no_privileges: true,
            clean: true,
            single_transaction: false,
            ..Options::default()
        };
        let cmd = pg_restore(&db(), &opts).unwrap();
        let args: Vec<_> = cmd
            .get_args()
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        for a in ["--no-owner", "--no-privileges", "--clean", "--if-exists"] {
            assert!(args.contains(&a.to_string()), "{a} missing: {args:?}");
        }
        assert!(!args.contains(&"--single-transaction".to_string()));
    }

    fn args_of(cmd: &ToolCommand) -> Vec<String> {
        cmd.get_args()
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn pg_dumpall_reads_the_globals_through_the_maintenance_database() {
        let cmd = pg_dumpall_globals(&db(), "main'db", true).unwrap();
        assert_eq!(cmd.program(), "pg_dumpall");
        assert_eq!(
            args_of(&cmd),
            [
                "--globals-only",
                "--no-password",
                "--database=dbname='main\\'db'"
            ]
        );
        assert_eq!(env_of(&cmd, "PGDATABASE").as_deref(), Some("main'db"));
        assert_no_secret_in_argv(&cmd);
        let cmd = pg_dumpall_globals(&db(), "postgres", false).unwrap();
        assert!(args_of(&cmd).contains(&"--no-role-passwords".to_string()));
    }

    #[test]
    fn pg_restore_of_a_set_member_creates_its_database() {
        let cmd = pg_restore_create(&db(), &Options::default(), "postgres").unwrap();
        let args = args_of(&cmd);
        for a in ["--create", "--clean", "--if-exists", "--exit-on-error"] {
            assert!(args.contains(&a.to_string()), "{a} missing: {args:?}");
        }
        assert!(!args.contains(&"--single-transaction".to_string()));
        assert!(!args.contains(&"--no-owner".to_string()));
        assert_eq!(args.last().unwrap(), "--dbname=dbname='postgres'");
        assert_eq!(env_of(&cmd, "PGDATABASE").as_deref(), Some("postgres"));
        assert_no_secret_in_argv(&cmd);
        let opts = Options {
            no_owner: true,
            no_privileges: true,
            ..Options::default()
        };
        let args = args_of(&pg_restore_create(&db(), &opts, "postgres").unwrap());
        assert!(args.contains(&"--no-owner".to_string()));
        assert!(args.contains(&"--no-privileges".to_string()));
    }

    #[test]
    fn dbname_is_quoted_as_conninfo() {
        assert_eq!(conninfo_dbname("a'b\\c"), "dbname='a\\'b\\\\c'");
    }

    #[test]
    fn no_password_means_no_passfile() {
        let mut d = db();
        d.password = None;
        let cmd = psql(&d, "postgres", &[("target", "x")]).unwrap();
        assert!(env_of(&cmd, "PGPASSFILE").is_none());
        assert_eq!(env_of(&cmd, "PGDATABASE").as_deref(), Some("postgres"));
    }
}
