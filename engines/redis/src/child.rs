//! The runner's own helper processes: the logical dump and the loader run as a child of the
//! runner (the same binary with a subcommand), so the pipeline treats them like any dump or
//! restore tool. Connection settings reach them in their environment, the password in a 0600
//! file, never on argv.

use std::path::PathBuf;
use std::time::Duration;

use runner_core::config::TlsConfig;
use runner_core::{DbConfig, Error, ToolCommand};

use crate::resp::Target;

/// `backup-runner-redis redis-logical-dump`: writes the logical format to stdout.
pub const DUMP_COMMAND: &str = "redis-logical-dump";
/// `backup-runner-redis redis-load`: reads a backup from stdin into the server.
pub const LOAD_COMMAND: &str = "redis-load";

const HOST: &str = "BACKUP_RUNNER_REDIS_HOST";
const PORT: &str = "BACKUP_RUNNER_REDIS_PORT";
const USER: &str = "BACKUP_RUNNER_REDIS_USER";
const PASSWORD_FILE: &str = "BACKUP_RUNNER_REDIS_PASSWORD_FILE";
const TIMEOUT: &str = "BACKUP_RUNNER_REDIS_TIMEOUT_SECS";
const TLS: [&str; 4] = [
    "BACKUP_RUNNER_REDIS_TLS_MODE",
    "BACKUP_RUNNER_REDIS_TLS_ROOT_CERT",
    "BACKUP_RUNNER_REDIS_TLS_CERT",
    "BACKUP_RUNNER_REDIS_TLS_KEY",
];
pub const FORMAT: &str = "BACKUP_RUNNER_REDIS_FORMAT";
/// Set when the loader should FLUSHALL once the backup's format is known to fit.
pub const FLUSH: &str = "BACKUP_RUNNER_REDIS_FLUSH";

/// The runner's own connection to the configured server.
pub fn target(db: &DbConfig) -> Result<Target, Error> {
    Ok(Target {
        host: db.host.clone(),
        port: db.port,
        user: Some(db.user.clone()),
        password: db.password.as_ref().map(|p| p.expose().to_string()),
        tls: crate::tls::client_config(&db.tls).map_err(Error::DbRefused)?,
        timeout: Duration::from_secs(db.connect_timeout_secs.into()),
    })
}

/// This binary, run with `subcommand`, connected like the runner.
pub fn command(subcommand: &str, db: &DbConfig) -> Result<ToolCommand, Error> {
    let exe = std::env::current_exe()
        .map_err(|e| Error::Internal(format!("cannot find the runner's own binary: {e}")))?;
    let mut cmd = ToolCommand::new(exe.to_string_lossy());
    cmd.arg(subcommand)
        .env(HOST, &db.host)
        .env(PORT, db.port.to_string())
        .env(USER, &db.user)
        .env(TIMEOUT, db.connect_timeout_secs.to_string());
    if let Some(password) = &db.password {
        let path = cmd.private_file("password", password.expose().as_bytes())?;
        cmd.env(PASSWORD_FILE, path);
    }
    let tls = &db.tls;
    let paths = [&tls.root_cert, &tls.cert, &tls.key];
    if let Some(mode) = &tls.mode {
        cmd.env(TLS[0], mode);
    }
    for (var, path) in TLS[1..].iter().zip(paths) {
        if let Some(p) = path {
            cmd.env(var, p);
        }
    }
    Ok(cmd)
}

/// The connection a child was given.
pub fn target_from_env() -> Result<Target, String> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let host = var(HOST)
        .ok_or_else(|| format!("{HOST} is not set: this subcommand is run by the runner itself"))?;
    let port = var(PORT)
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| format!("{PORT} is not a port"))?;
    let password = match var(PASSWORD_FILE) {
        Some(path) => {
            let p = std::fs::read_to_string(&path)
                .map_err(|e| format!("cannot read the password file: {e}"))?;
            runner_core::secret::register(&p);
            Some(p)
        }
        None => None,
    };
    let tls = TlsConfig {
        mode: var(TLS[0]),
        root_cert: var(TLS[1]).map(PathBuf::from),
        cert: var(TLS[2]).map(PathBuf::from),
        key: var(TLS[3]).map(PathBuf::from),
    };
    Ok(Target {
        host,
        port,
        user: var(USER),
        password,
        tls: crate::tls::client_config(&tls)?,
        timeout: Duration::from_secs(var(TIMEOUT).and_then(|t| t.parse().ok()).unwrap_or(30)),
    })
}

/// Runs a subcommand when argv names one; `None` otherwise (the normal job).
pub fn main() -> Option<std::process::ExitCode> {
    let sub = std::env::args().nth(1)?;
    let result = match sub.as_str() {
        DUMP_COMMAND => crate::dump::main(),
        LOAD_COMMAND => crate::load::main(),
        _ => return None,
    };
    Some(match result {
        Ok(summary) => {
            eprintln!("{summary}");
            std::process::ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("{}", runner_core::secret::redact(&message));
            std::process::ExitCode::FAILURE
        }
    })
}
