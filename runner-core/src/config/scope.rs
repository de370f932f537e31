//! What a job covers: one database (the default), or the whole server as a set (`DB_NAME=*` or
//! `BACKUP_SCOPE=server`), with the databases chosen by `DB_INCLUDE` / `DB_EXCLUDE` on backup and
//! `RESTORE_DATABASES` on restore.

use super::Operation;
use crate::engine::EngineInfo;
use crate::env::{control_character, EnvReader};
use crate::manifest::SERVER_DATABASE;

/// The most databases dumped at once.
pub const MAX_SERVER_PARALLELISM: usize = 16;

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Scope {
    #[default]
    Database,
    Server(ServerScope),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerScope {
    /// `DB_INCLUDE`: only databases matching one of these (names, or patterns with `*`, `?`);
    /// empty for every database.
    pub include: Vec<String>,
    /// `DB_EXCLUDE`: databases matching one of these are left out.
    pub exclude: Vec<String>,
    /// `SERVER_PARALLELISM`: databases dumped at once (default 1, one after another).
    pub parallelism: usize,
    /// `RESTORE_DATABASES`: the set's databases to restore; `None` for all of them.
    pub restore_databases: Option<Vec<String>>,
    /// `RESTORE_GLOBALS` (default true): replay the set's roles or accounts first.
    pub restore_globals: bool,
}

impl ServerScope {
    /// Whether `database` is in the backup, and if not, why.
    pub fn selects(&self, database: &str) -> Result<(), String> {
        if !self.include.is_empty() && !self.include.iter().any(|p| matches(p, database)) {
            return Err(format!(
                "database {database:?}: not matched by DB_INCLUDE ({})",
                self.include.join(",")
            ));
        }
        if let Some(p) = self.exclude.iter().find(|p| matches(p, database)) {
            return Err(format!(
                "database {database:?}: excluded by DB_EXCLUDE ({p})"
            ));
        }
        Ok(())
    }
}

/// Whether `name` matches `pattern`: `*` any run of characters, `?` one character, anything
/// else itself (case-sensitive, as database names are).
pub fn matches(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    // The classic greedy match with one backtrack point for the last `*`.
    let (mut pi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ni));
            pi += 1;
        } else if let Some((sp, sn)) = star {
            pi = sp + 1;
            ni = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// `BACKUP_SCOPE`, read before the database settings: whether `DB_NAME` may be left out.
pub(super) fn server_requested(env: &mut EnvReader<'_>) -> bool {
    env.choice("BACKUP_SCOPE", &["database", "server"])
        .is_some_and(|s| s == "server")
}

/// A comma-separated list of names or patterns; `None` when unset.
fn list(env: &mut EnvReader<'_>, var: &str) -> Option<Vec<String>> {
    let raw = env.string(var)?;
    let items: Vec<String> = raw
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    if items.is_empty() {
        env.problem(
            var,
            "holds no name: give comma-separated database names (patterns may use * and ?)",
        );
        return None;
    }
    if items.iter().any(|s| control_character(s).is_some()) {
        env.problem(
            var,
            "contains a control character: remove it (the value is not shown)",
        );
        return None;
    }
    Some(items)
}

pub(super) fn read_scope(
    env: &mut EnvReader<'_>,
    engine: &EngineInfo,
    operation: Option<Operation>,
    db_name: Option<&str>,
    backup_path_set: bool,
) -> Scope {
    let requested = env.string("BACKUP_SCOPE").map(|s| s.to_ascii_lowercase());
    let star = db_name == Some(SERVER_DATABASE);
    let server = match requested.as_deref() {
        Some("server") => {
            if let Some(name) = db_name.filter(|n| !n.is_empty() && *n != SERVER_DATABASE) {
                env.problem(
                    "BACKUP_SCOPE",
                    format!(
                        "server covers every database, but DB_NAME names one ({name:?}): unset DB_NAME (or set it to *) and choose databases with DB_INCLUDE / DB_EXCLUDE, or set BACKUP_SCOPE=database"
                    ),
                );
            }
            true
        }
        Some("database") if star => {
            env.problem(
                "BACKUP_SCOPE",
                "database contradicts DB_NAME=*, which means the whole server: set one of them",
            );
            false
        }
        _ => star,
    };
    let only_for_sets = |env: &mut EnvReader<'_>, var: &str, what: &str| {
        if env.is_set(var) {
            env.problem(
                var,
                format!("{what} of a whole-server backup (DB_NAME=* or BACKUP_SCOPE=server): unset it, or set DB_NAME=*"),
            );
        }
    };
    if !server {
        only_for_sets(env, "DB_INCLUDE", "chooses the databases");
        only_for_sets(env, "DB_EXCLUDE", "leaves out databases");
        only_for_sets(
            env,
            "SERVER_PARALLELISM",
            "sets how many databases are dumped at once",
        );
        only_for_sets(env, "RESTORE_DATABASES", "chooses the databases to restore");
        only_for_sets(
            env,
            "RESTORE_GLOBALS",
            "chooses whether roles and accounts are restored",
        );
        return Scope::Database;
    }
    if !engine.server_scope {
        env.problem(
            if star { "DB_NAME" } else { "BACKUP_SCOPE" },
            format!(
                "a {} backup already covers the whole server (every logical database): unset {}",
                engine.display_name,
                if star {
                    "DB_NAME (or set it to a database number)"
                } else {
                    "BACKUP_SCOPE"
                }
            ),
        );
        return Scope::Database;
    }
    let backup = operation == Some(Operation::Backup);
    let restore = matches!(operation, Some(Operation::Restore));
    if backup && backup_path_set {
        env.problem(
            "BACKUP_PATH",
            "cannot name a whole-server backup, which is a folder of objects (one per database and the server's roles): unset it; keys are derived under STORAGE_PREFIX",
        );
    }
    if operation == Some(Operation::Verify) && env.bool("VERIFY_RESTORE") == Some(true) {
        env.problem(
            "VERIFY_RESTORE",
            "restoring a whole-server backup into scratch databases is not supported: unset VERIFY_RESTORE to check every object of the set, or restore it onto a scratch server",
        );
    }
    let include = list(env, "DB_INCLUDE").unwrap_or_default();
    let exclude = list(env, "DB_EXCLUDE").unwrap_or_default();
    let parallelism = env
        .int_in::<usize>(
            "SERVER_PARALLELISM",
            1,
            MAX_SERVER_PARALLELISM,
            "databases dumped at once",
        )
        .unwrap_or(1);
    let restore_databases = list(env, "RESTORE_DATABASES");
    let restore_globals = env.bool("RESTORE_GLOBALS").unwrap_or(true);
    if !backup {
        for var in ["DB_INCLUDE", "DB_EXCLUDE", "SERVER_PARALLELISM"] {
            if env.is_set(var) {
                env.problem(
                    var,
                    "applies to a backup only: to restore some of a set's databases, use RESTORE_DATABASES",
                );
            }
        }
    }
    if !restore {
        for var in ["RESTORE_DATABASES", "RESTORE_GLOBALS"] {
            if env.is_set(var) {
                env.problem(var, "applies to OPERATION_TYPE=restore only: unset it");
            }
        }
    }
    if let Some(names) = &restore_databases {
        if let Some(p) = names.iter().find(|n| n.contains(['*', '?'])) {
            env.problem(
                "RESTORE_DATABASES",
                format!("{p:?} is a pattern: name the databases exactly, comma-separated"),
            );
        }
        if let Some(n) = names.iter().find(|n| n.starts_with('-')) {
            env.problem(
                "RESTORE_DATABASES",
                format!("{n:?} starts with '-', which a tool would read as an option"),
            );
        }
    }
    Scope::Server(ServerScope {
        include,
        exclude,
        parallelism,
        restore_databases,
        restore_globals,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_whole_names() {
        assert!(matches("app", "app"));
        assert!(!matches("app", "app2"));
        assert!(matches("app*", "app2"));
        assert!(matches("*", ""));
        assert!(matches("*_test", "shop_test"));
        assert!(!matches("*_test", "shop_tests"));
        assert!(matches("a?c", "abc"));
        assert!(!matches("a?c", "ac"));
        assert!(matches("*a*b*", "xxaxxbxx"));
        assert!(!matches("*a*b", "xxbxxa"));
        assert!(!matches("App", "app"));
    }

    #[test]
    fn include_then_exclude() {
        let scope = ServerScope {
            include: vec!["shop*".into(), "billing".into()],
            exclude: vec!["*_tmp".into()],
            parallelism: 1,
            restore_databases: None,
            restore_globals: true,
        };
        assert!(scope.selects("shop").is_ok());
        assert!(scope.selects("billing").is_ok());
        let why = scope.selects("other").unwrap_err();
        assert!(why.contains("DB_INCLUDE"), "{why}");
        let why = scope.selects("shop_tmp").unwrap_err();
        assert!(why.contains("DB_EXCLUDE (*_tmp)"), "{why}");
    }
}
