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
        sanitize(parts.database),
        at.format("%Y%m%dT%H%M%SZ"),
        sanitize(parts.job_id),
        parts.extension,
        compression.algorithm.extension()
    ));
    key
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
    fn unsafe_characters_are_replaced() {
        let k = backup_key(None, None, parts("../weird db/ü", "a b"), zstd(), at());
        assert_eq!(k, "postgres/_weird_db__/20261122T090807Z-a_b.pgdump.zst");
    }
}
