//! Object keys: `BACKUP_PATH` when given (Plan B), otherwise derived from the prefix, engine,
//! database, UTC time and job id so keys sort by time and never collide between jobs.

use chrono::{DateTime, Utc};

use crate::config::Compression;

/// What a derived key is made of.
#[derive(Debug, Clone, Copy)]
pub struct KeyParts<'a> {
    pub engine: &'a str,
    pub database: &'a str,
    pub job_id: &'a str,
    /// The dump's file extension, without the dot: `pgdump`.
    pub extension: &'a str,
}

pub fn backup_key(
    backup_path: Option<&str>,
    prefix: Option<&str>,
    parts: KeyParts<'_>,
    compression: Compression,
    at: DateTime<Utc>,
) -> String {
    if let Some(path) = backup_path {
        return path.to_string();
    }
    let mut key = String::new();
    if let Some(p) = prefix {
        key.push_str(p);
        key.push('/');
    }
    key.push_str(&format!(
        "{}/{}/{}-{}.{}{}",
        parts.engine,
        database_folder(parts.database),
        at.format("%Y%m%dT%H%M%SZ"),
        sanitize(parts.job_id),
        parts.extension,
        compression.algorithm.extension()
    ));
    key
}

/// The folder of a database's backups under `prefix/engine/`; whole-server sets (`*`) go in
/// `_server`.
pub fn database_folder(database: &str) -> String {
    if database == crate::manifest::SERVER_DATABASE {
        SERVER_FOLDER.to_string()
    } else {
        sanitize(database)
    }
}

const SERVER_FOLDER: &str = "_server";

/// The keys of a whole-server set: a folder per set, `prefix/engine/_server/<time>-<job>/`,
/// holding `globals.<ext>` (whose manifest is the set's) and one object per database.
#[derive(Debug, Clone)]
pub struct SetKeys {
    folder: String,
    suffix: String,
    taken: std::collections::HashSet<String>,
}

impl SetKeys {
    pub fn new(
        prefix: Option<&str>,
        engine: &str,
        job_id: &str,
        compression: Compression,
        at: DateTime<Utc>,
    ) -> SetKeys {
        let mut folder = String::new();
        if let Some(p) = prefix {
            folder.push_str(p);
            folder.push('/');
        }
        folder.push_str(&format!(
            "{engine}/{SERVER_FOLDER}/{}-{}/",
            at.format("%Y%m%dT%H%M%SZ"),
            sanitize(job_id)
        ));
        SetKeys {
            folder,
            suffix: compression.algorithm.extension().to_string(),
            taken: Default::default(),
        }
    }

    /// The globals object: `globals.<extension>`.
    pub fn globals(&mut self, extension: &str) -> String {
        self.claim("globals", extension)
    }

    /// A database's object: its name made portable, numbered when two names end up alike
    /// (`a b` and `a_b`, or a database called `globals`).
    pub fn member(&mut self, database: &str, extension: &str) -> String {
        self.claim(&sanitize(database), extension)
    }

    fn claim(&mut self, stem: &str, extension: &str) -> String {
        let mut n = 1;
        loop {
            let name = if n == 1 {
                format!("{stem}.{extension}{}", self.suffix)
            } else {
                format!("{stem}-{n}.{extension}{}", self.suffix)
            };
            if self.taken.insert(name.clone()) {
                return format!("{}{name}", self.folder);
            }
            n += 1;
        }
    }
}

/// Keeps keys portable across stores: letters, digits, `.`, `_`, `-`; anything else becomes `_`.
pub fn sanitize(s: &str) -> String {
    let cleaned: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    match cleaned.trim_matches('.') {
        "" => "_".to_string(),
        s => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Algorithm;

    fn parts<'a>(database: &'a str, job_id: &'a str) -> KeyParts<'a> {
        KeyParts {
            engine: "postgres",
            database,
            job_id,
            extension: "pgdump",
        }
    }

    fn at() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-22T09:08:07Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    fn zstd() -> Compression {
        Compression {
            algorithm: Algorithm::Zstd,
            level: 3,
            threads: 1,
        }
    }

    #[test]
    fn derived_key() {
        let k = backup_key(None, Some("team/prod"), parts("app", "job-1"), zstd(), at());
        assert_eq!(
            k,
            "team/prod/postgres/app/20261122T090807Z-job-1.pgdump.zst"
        );
        let gz = Compression {
            algorithm: Algorithm::Gzip,
            ..zstd()
        };
        let k = backup_key(None, None, parts("app", "j"), gz, at());
        assert_eq!(k, "postgres/app/20261122T090807Z-j.pgdump.gz");
    }

    #[test]
    fn backup_path_wins() {
        let k = backup_key(
            Some("x/y.sql.gz"),
            Some("p"),
            parts("app", "j"),
            zstd(),
            at(),
        );
        assert_eq!(k, "x/y.sql.gz");
    }

    #[test]
    fn a_set_is_a_folder_with_distinct_names() {
        let mut keys = SetKeys::new(Some("team"), "mysql", "job 1", zstd(), at());
        assert_eq!(
            keys.globals("sql"),
            "team/mysql/_server/20261122T090807Z-job_1/globals.sql.zst"
        );
        assert_eq!(
            keys.member("shop", "sql"),
            "team/mysql/_server/20261122T090807Z-job_1/shop.sql.zst"
        );
        assert_eq!(
            keys.member("globals", "sql"),
            "team/mysql/_server/20261122T090807Z-job_1/globals-2.sql.zst"
        );
        assert_eq!(
            keys.member("a b", "sql"),
            "team/mysql/_server/20261122T090807Z-job_1/a_b.sql.zst"
        );
        assert_eq!(
            keys.member("a_b", "sql"),
            "team/mysql/_server/20261122T090807Z-job_1/a_b-2.sql.zst"
        );
        assert_eq!(
            backup_key(None, None, parts("*", "j"), zstd(), at()),
            "postgres/_server/20261122T090807Z-j.pgdump.zst"
        );
    }

    #[test]
    fn unsafe_characters_are_replaced() {
        let k = backup_key(None, None, parts("../weird db/ü", "a b"), zstd(), at());
        assert_eq!(k, "postgres/_weird_db__/20261122T090807Z-a_b.pgdump.zst");
    }
}
