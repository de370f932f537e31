//! Object keys: `BACKUP_PATH` when given (Plan B), otherwise derived from the prefix, engine,
//! database, UTC time and job id so keys sort by time and never collide between jobs.

use chrono::{DateTime, Utc};

use crate::config::Compression;
use crate::engine::EngineInfo;

pub fn backup_key(
    backup_path: Option<&str>,
    prefix: Option<&str>,
    engine: &EngineInfo,
    database: &str,
    job_id: &str,
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
        engine.name,
        sanitize(database),
        at.format("%Y%m%dT%H%M%SZ"),
        sanitize(job_id),
        engine.file_extension,
        compression.algorithm.extension()
    ));
    key
}

/// Keeps keys portable across stores: letters, digits, `.`, `_`, `-`; anything else becomes `_`.
fn sanitize(s: &str) -> String {
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
    use crate::engine::tests::TEST_ENGINE;

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
        let k = backup_key(
            None,
            Some("team/prod"),
            &TEST_ENGINE,
            "app",
            "job-1",
            zstd(),
            at(),
        );
        assert_eq!(
            k,
            "team/prod/postgres/app/20261122T090807Z-job-1.pgdump.zst"
        );
        let gz = Compression {
            algorithm: Algorithm::Gzip,
            ..zstd()
        };
        let k = backup_key(None, None, &TEST_ENGINE, "app", "j", gz, at());
        assert_eq!(k, "postgres/app/20261122T090807Z-j.pgdump.gz");
    }

    #[test]
    fn backup_path_wins() {
        let k = backup_key(
            Some("x/y.sql.gz"),
            Some("p"),
            &TEST_ENGINE,
            "app",
            "j",
            zstd(),
            at(),
        );
        assert_eq!(k, "x/y.sql.gz");
    }

    #[test]
    fn unsafe_characters_are_replaced() {
        let k = backup_key(
            None,
            None,
            &TEST_ENGINE,
            "../weird db/ü",
            "a b",
            zstd(),
            at(),
        );
        assert_eq!(k, "postgres/_weird_db__/20261122T090807Z-a_b.pgdump.zst");
    }
}
