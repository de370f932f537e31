//! What the catalog operations read: which database's backups (`SOURCE_DB_NAME`, else
//! `DB_NAME`), the retention policy (`KEEP_*`, `RETENTION_DAYS`), how a prune runs
//! (`PRUNE_DRY_RUN`, `PRUNE_GRACE_PERIOD`) and how old the newest backup may be for `check`
//! (`CHECK_MAX_AGE`).

use std::time::Duration;

use super::{parse_age, Operation};
use crate::env::EnvReader;
use crate::retention::Policy;

/// How long an object without a manifest, or an incomplete upload, is left alone by default:
/// longer than any backup runs, so a backup in progress is never touched.
pub const DEFAULT_PRUNE_GRACE: Duration = Duration::from_secs(24 * 3600);

#[derive(Debug, Clone, Default, PartialEq)]
pub struct CatalogConfig {
    /// The database whose backups `list`, `prune`, `check` and `BACKUP_PATH=latest` consider;
    /// `None` means every database (list only; the others need one, or a single candidate).
    pub source_db: Option<String>,
    pub policy: Policy,
    /// `PRUNE_DRY_RUN`: report what a prune would delete, delete nothing.
    pub dry_run: bool,
    /// `PRUNE_GRACE_PERIOD`: how old an object without a manifest or an incomplete upload must be
    /// before a prune removes it.
    pub grace: Duration,
    /// `CHECK_MAX_AGE`: the oldest the newest backup may be for `check` to pass.
    pub check_max_age: Option<Duration>,
}

const KEEP_VARS: [&str; 6] = [
    "KEEP_LAST",
    "KEEP_HOURLY",
    "KEEP_DAILY",
    "KEEP_WEEKLY",
    "KEEP_MONTHLY",
    "KEEP_YEARLY",
];

pub(super) fn read_catalog(
    env: &mut EnvReader<'_>,
    operation: Option<Operation>,
    db_name: Option<&str>,
    retention_days: Option<u32>,
) -> CatalogConfig {
    let source_db = env
        .string("SOURCE_DB_NAME")
        .or_else(|| db_name.filter(|n| !n.is_empty()).map(str::to_string));
    let [last, hourly, daily, weekly, monthly, yearly] =
        KEEP_VARS.map(|var| env.int_in::<u32>(var, 0, 100_000, "backups to keep"));
    let policy = Policy {
        keep_last: last,
        keep_hourly: hourly,
        keep_daily: daily,
        keep_weekly: weekly,
        keep_monthly: monthly,
        keep_yearly: yearly,
        keep_within: retention_days
            .filter(|d| *d > 0)
            .map(|d| chrono::Duration::days(d.into())),
    };
    let dry_run = env.bool("PRUNE_DRY_RUN").unwrap_or(false);
    let grace = age(env, "PRUNE_GRACE_PERIOD").unwrap_or(DEFAULT_PRUNE_GRACE);
    let check_max_age = age(env, "CHECK_MAX_AGE");
    match operation {
        Some(Operation::Prune) if !policy.is_set() && !env.has_problems() => env.problem(
            "KEEP_LAST",
            "OPERATION_TYPE=prune needs a retention policy: set KEEP_LAST, KEEP_HOURLY, KEEP_DAILY, KEEP_WEEKLY, KEEP_MONTHLY, KEEP_YEARLY or RETENTION_DAYS (the newest backup is always kept)",
        ),
        Some(Operation::Check) if check_max_age.is_none() && !env.is_set("CHECK_MAX_AGE") => {
            env.problem(
                "CHECK_MAX_AGE",
                "is required for OPERATION_TYPE=check: how old the newest backup may be, e.g. 26h for a daily backup",
            )
        }
        _ => {}
    }
    if matches!(operation, Some(Operation::Prune | Operation::Check)) && source_db.is_none() {
        env.problem(
            "DB_NAME",
            format!(
                "is required for OPERATION_TYPE={}: the database whose backups to consider (or SOURCE_DB_NAME)",
                operation.map(Operation::as_str).unwrap_or_default()
            ),
        );
    }
    CatalogConfig {
        source_db,
        policy,
        dry_run,
        grace,
        check_max_age,
    }
}

fn age(env: &mut EnvReader<'_>, var: &str) -> Option<Duration> {
    let raw = env.string(var)?;
    match parse_age(&raw) {
        Ok(d) if !d.is_zero() => Some(d),
        Ok(_) => {
            env.problem(var, "0 is not allowed: give a positive age such as 26h");
            None
        }
        Err(e) => {
            env.problem(var, e);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::load;
    use super::*;

    fn problems(vars: &[(&str, &str)]) -> Vec<(String, String)> {
        load(vars)
            .unwrap_err()
            .problems
            .into_iter()
            .map(|p| (p.var, p.message))
            .collect()
    }

    #[test]
    fn catalog_operations_need_no_database_connection() {
        let cfg = load(&[("OPERATION_TYPE", "list")]).unwrap();
        assert_eq!(cfg.operation, Operation::List);
        assert_eq!(cfg.catalog.source_db, None);
        let cfg = load(&[("OPERATION_TYPE", "LIST"), ("DB_NAME", "app")]).unwrap();
        assert_eq!(cfg.catalog.source_db.as_deref(), Some("app"));
    }

    #[test]
    fn prune_needs_a_policy_and_a_database() {
        let p = problems(&[("OPERATION_TYPE", "prune")]);
        let vars: Vec<&str> = p.iter().map(|(v, _)| v.as_str()).collect();
        assert_eq!(vars, ["KEEP_LAST", "DB_NAME"], "{p:?}");
        assert!(p[0].1.contains("RETENTION_DAYS"), "{p:?}");
        // KEEP_LAST=0 is no policy.
        let p = problems(&[
            ("OPERATION_TYPE", "prune"),
            ("DB_NAME", "app"),
            ("KEEP_LAST", "0"),
        ]);
        assert_eq!(p[0].0, "KEEP_LAST");

        let cfg = load(&[
            ("OPERATION_TYPE", "prune"),
            ("SOURCE_DB_NAME", "app"),
            ("KEEP_DAILY", "7"),
            ("RETENTION_DAYS", "30"),
            ("PRUNE_DRY_RUN", "true"),
            ("PRUNE_GRACE_PERIOD", "2h"),
        ])
        .unwrap();
        assert_eq!(cfg.catalog.policy.keep_daily, Some(7));
        assert_eq!(
            cfg.catalog.policy.keep_within,
            Some(chrono::Duration::days(30))
        );
        assert!(cfg.catalog.dry_run);
        assert_eq!(cfg.catalog.grace, Duration::from_secs(7200));
        assert_eq!(cfg.catalog.source_db.as_deref(), Some("app"));
    }

    #[test]
    fn check_needs_a_valid_max_age() {
        let p = problems(&[("OPERATION_TYPE", "check"), ("DB_NAME", "app")]);
        assert_eq!(p[0].0, "CHECK_MAX_AGE");
        let p = problems(&[
            ("OPERATION_TYPE", "check"),
            ("DB_NAME", "app"),
            ("CHECK_MAX_AGE", "1 day"),
        ]);
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].1.contains("is not an age"), "{p:?}");
        let p = problems(&[
            ("OPERATION_TYPE", "check"),
            ("DB_NAME", "app"),
            ("CHECK_MAX_AGE", "0"),
        ]);
        assert_eq!(p[0].0, "CHECK_MAX_AGE");
        let cfg = load(&[
            ("OPERATION_TYPE", "check"),
            ("DB_NAME", "app"),
            ("CHECK_MAX_AGE", "26h"),
        ])
        .unwrap();
        assert_eq!(
            cfg.catalog.check_max_age,
            Some(Duration::from_secs(26 * 3600))
        );
    }

    #[test]
    fn backup_path_latest_is_for_restore_and_verify_only() {
        let cfg = load(&[("OPERATION_TYPE", "verify"), ("BACKUP_PATH", "latest")]).unwrap();
        assert!(cfg.latest);
        assert_eq!(cfg.backup_path, None);
        let p = problems(&[("OPERATION_TYPE", "list"), ("BACKUP_PATH", "latest")]);
        assert_eq!(p[0].0, "BACKUP_PATH");
        assert!(p[0].1.contains("does not take it"), "{p:?}");
    }
}
