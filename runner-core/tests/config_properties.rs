//! Property tests of the config parser: whatever the environment holds, reading it never
//! panics, never echoes a secret, and reports every malformed variable at once, by name.

use std::collections::HashMap;

use proptest::prelude::*;
use runner_core::engine::EXAMPLE_ENGINE as ENGINE;
use runner_core::{Config, EnvReader};

const SECRET: &str = "s3cr3t-never-printed";

const VARS: &[&str] = &[
    "OPERATION_TYPE",
    "JOB_ID",
    "DB_ENGINE",
    "DATABASE_URL",
    "DB_HOST",
    "DB_PORT",
    "DB_NAME",
    "DB_USERNAME",
    "DB_SSL_MODE",
    "DB_CONNECT_TIMEOUT_SECS",
    "STORAGE_TYPE",
    "STORAGE_LOCAL_DIR",
    "STORAGE_ENDPOINT",
    "STORAGE_BUCKET",
    "STORAGE_REGION",
    "STORAGE_ACCESS_KEY_ID",
    "STORAGE_FORCE_PATH_STYLE",
    "STORAGE_CHECKSUM_MODE",
    "STORAGE_PART_SIZE_MB",
    "STORAGE_UPLOAD_CONCURRENCY",
    "STORAGE_PREFIX",
    "BACKUP_PATH",
    "RETENTION_DAYS",
    "COMPRESSION",
    "COMPRESSION_LEVEL",
    "COMPRESSION_THREADS",
    "CALLBACK_URL",
    "CALLBACK_TIMEOUT_SECS",
    "CALLBACK_MAX_ATTEMPTS",
    "PROGRESS_INTERVAL_SECS",
    "RESTORE_VERIFY_FIRST",
    "VERIFY_RESTORE",
];

/// One malformed value per class: a non-number, out of range, a negative, an unknown choice, a
/// bad boolean, a bad URL, a zero where a positive count is needed. (An unknown `STORAGE_TYPE`
/// or `COMPRESSION` is left out: each decides which other values are valid, so those are not
/// checked beside it; config.rs's unit tests cover them.)
const MALFORMED: &[(&str, &str)] = &[
    ("OPERATION_TYPE", "snapshot"),
    ("DB_ENGINE", "oracle"),
    ("DB_PORT", "five"),
    ("DB_SSL_MODE", "sometimes"),
    ("DB_CONNECT_TIMEOUT_SECS", "-3"),
    ("STORAGE_FORCE_PATH_STYLE", "maybe"),
    ("STORAGE_CHECKSUM_MODE", "always-ish"),
    ("STORAGE_PART_SIZE_MB", "99999999"),
    ("STORAGE_UPLOAD_CONCURRENCY", "0"),
    ("RETENTION_DAYS", "-1"),
    ("COMPRESSION_LEVEL", "42"),
    ("CALLBACK_URL", "not a url"),
    ("CALLBACK_MAX_ATTEMPTS", "many"),
    ("PROGRESS_INTERVAL_SECS", "1e9"),
    ("RESTORE_VERIFY_FIRST", "perhaps"),
];

fn read(vars: HashMap<String, String>) -> Result<Config, runner_core::ConfigError> {
    let mut env = EnvReader::new(move |k: &str| vars.get(k).cloned());
    let cfg = Config::read(&mut env, &ENGINE);
    env.finish()?;
    Ok(cfg.expect("a config when there are no problems"))
}

fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        "[a-z0-9.:/_-]{0,12}",
        "-?[0-9]{1,12}",
        any::<String>(),
        Just("true".to_string()),
        Just("s3".to_string()),
        Just("restore".to_string()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 512,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn any_environment_is_read_without_panicking_or_leaking(
        vars in proptest::collection::hash_map(proptest::sample::select(VARS), value(), 0..20),
        url in proptest::option::of(prop_oneof![
            Just(format!("postgres://u:{SECRET}@h:1/d")),
            Just(format!("postgres://u:{SECRET}@h:99999/d?sslmode=x")),
            Just(format!("mysql://u:{SECRET}@h/d")),
            Just(format!("not a url {SECRET}")),
        ])
    ) {
        let mut vars: HashMap<String, String> =
            vars.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
        // Secrets go in the variables meant for them (a secret put in, say, DB_HOST is echoed
        // like any host name would be).
        match url {
            Some(url) => vars.insert("DATABASE_URL".into(), url),
            None => vars.remove("DATABASE_URL"),
        };
        vars.insert("DB_PASSWORD".into(), SECRET.into());
        vars.insert("STORAGE_SECRET_ACCESS_KEY".into(), SECRET.into());
        vars.insert("CALLBACK_SECRET".into(), SECRET.into());
        if let Err(e) = read(vars) {
            prop_assert!(!e.problems.is_empty());
            for p in &e.problems {
                prop_assert!(!p.var.is_empty() && !p.message.is_empty());
            }
            prop_assert!(!e.to_string().contains(SECRET), "{}", e);
        }
    }

    #[test]
    fn every_malformed_variable_is_reported_at_once(
        picked in proptest::sample::subsequence(MALFORMED, 1..=MALFORMED.len())
    ) {
        let mut vars: HashMap<String, String> = [
            ("DB_HOST", "db"),
            ("DB_NAME", "app"),
            ("DB_PASSWORD", SECRET),
            ("STORAGE_BUCKET", "backups"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        for (k, v) in &picked {
            vars.insert(k.to_string(), v.to_string());
        }
        let err = read(vars).expect_err("malformed values must be refused");
        let named: Vec<&str> = err.problems.iter().map(|p| p.var.as_str()).collect();
        for (k, _) in &picked {
            prop_assert!(named.contains(k), "{} not reported: {:?}", k, named);
        }
        prop_assert!(!err.to_string().contains(SECRET));
    }
}
