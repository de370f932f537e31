//! The database connection settings: `DATABASE_URL` and the `DB_*` variables, merged, with every
//! value that reaches a dump or restore tool checked first.

use std::path::PathBuf;

use super::url::read_database_url;
use super::{DbConfig, TLS_MODES};
use crate::engine::EngineInfo;
use crate::env::{control_character, describe_control, EnvReader};

/// A field given both in `DATABASE_URL` and in its own variable is ambiguous.
fn merge<T>(
    env: &mut EnvReader<'_>,
    var: &str,
    from_url: Option<T>,
    direct: Option<T>,
) -> Option<T> {
    match (from_url, direct) {
        (Some(_), Some(d)) => {
            env.problem(
                var,
                "is also given in DATABASE_URL: set it in one place only",
            );
            Some(d)
        }
        (u, d) => d.or(u),
    }
}

/// Refuses a value with a control character (below 0x20, or 0x7f): a tool would receive a
/// different host, name or path than the one meant, or a line break inside a connection file.
/// `part` says which part of `var` holds it (`DATABASE_URL`'s password, …). The value is never
/// shown. Returns whether the value is clean.
pub(super) fn check_tool_value(
    env: &mut EnvReader<'_>,
    var: &str,
    part: &str,
    value: &str,
) -> bool {
    let Some(c) = control_character(value) else {
        return true;
    };
    let subject = if part.is_empty() {
        String::new()
    } else {
        format!("{part} ")
    };
    let encoded = if var == "DATABASE_URL" {
        format!(", written %{:02X} in the URL", c as u32)
    } else {
        String::new()
    };
    env.problem(
        var,
        format!(
            "{subject}contains a control character ({}{encoded}): remove it (the value is not shown)",
            describe_control(c)
        ),
    );
    false
}

/// Refuses a database name a tool would take for an option.
pub(super) fn check_database_name(env: &mut EnvReader<'_>, var: &str, part: &str, name: &str) {
    if name.starts_with('-') {
        let subject = if part.is_empty() {
            format!("{name:?}")
        } else {
            format!("{part} {name:?}")
        };
        env.problem(
            var,
            format!(
                "{subject} starts with '-', so the dump and restore tools would read it as an \
                 option: give the database's real name (a database whose name starts with '-' \
                 must be renamed to be backed up)"
            ),
        );
    }
}

/// A `DB_*` variable that reaches a tool, checked.
fn tool_string(env: &mut EnvReader<'_>, var: &str) -> Option<String> {
    let value = env.string(var)?;
    check_tool_value(env, var, "", &value);
    Some(value)
}

pub(super) fn read_db(
    env: &mut EnvReader<'_>,
    engine: &EngineInfo,
    required: bool,
    server_scope: bool,
) -> Option<DbConfig> {
    let from_url = read_database_url(env, engine);
    let host = tool_string(env, "DB_HOST");
    let host = merge(env, "DB_HOST", from_url.host, host);
    let port = env.int_in::<u16>("DB_PORT", 1, 65535, "the database port");
    let port = merge(env, "DB_PORT", from_url.port, port).unwrap_or(engine.default_port);
    let name = env.string("DB_NAME");
    if let Some(name) = &name {
        if check_tool_value(env, "DB_NAME", "", name) {
            check_database_name(env, "DB_NAME", "", name);
        }
    }
    let name = merge(env, "DB_NAME", from_url.name, name)
        .or_else(|| server_scope.then(|| crate::manifest::SERVER_DATABASE.to_string()))
        .or_else(|| engine.default_database.map(str::to_string));
    let user = tool_string(env, "DB_USERNAME");
    let user = merge(env, "DB_USERNAME", from_url.user, user)
        .unwrap_or_else(|| engine.default_user.to_string());
    // Control characters in a secret are refused where it is read (`DB_PASSWORD[_FILE]`).
    let password = env.secret("DB_PASSWORD");
    let password = merge(env, "DB_PASSWORD", from_url.password, password);

    let mut tls = from_url.tls;
    if let Some(mode) = env.choice("DB_SSL_MODE", TLS_MODES) {
        tls.mode = Some(mode);
    } else if let Some(mode) = &tls.mode {
        if !TLS_MODES.contains(&mode.as_str()) {
            env.problem(
                "DATABASE_URL",
                format!(
                    "sslmode {mode:?} is not supported: use one of {}",
                    TLS_MODES.join(", ")
                ),
            );
        }
    }
    for (var, slot) in [
        ("DB_SSL_ROOT_CERT", &mut tls.root_cert),
        ("DB_SSL_CERT", &mut tls.cert),
        ("DB_SSL_KEY", &mut tls.key),
    ] {
        if let Some(path) = tool_string(env, var) {
            *slot = Some(PathBuf::from(path));
        }
    }
    let connect_timeout_secs = env
        .int_in::<u32>("DB_CONNECT_TIMEOUT_SECS", 1, 3600, "seconds")
        .unwrap_or(30);

    let (host, name) = match (required, host, name) {
        (false, host, name) => (host.or(Some(String::new())), name.or(Some(String::new()))),
        (true, host, name) => (host, name),
    };
    if host.is_none() {
        env.problem(
            "DB_HOST",
            "is required: set DB_HOST (or DATABASE_URL) to the database server's host name",
        );
    }
    if name.is_none() {
        env.problem(
            "DB_NAME",
            "is required: set DB_NAME (or the path of DATABASE_URL) to the database to back up or restore into",
        );
    }
    Some(DbConfig {
        host: host?,
        port,
        name: name?,
        user,
        password,
        tls,
        connect_timeout_secs,
        lock_wait_timeout: None,
    })
}
