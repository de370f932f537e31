//! What a prune deletes, decided as pure logic over a catalog: the retention policy over one
//! database's complete backups only, and the clean-up of what is not a backup inside that
//! database's own folder once it is older than the grace period.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::{Backup, Catalog, Flaw, NotBackup};
use crate::keys::database_folder;
use crate::retention::{self, Policy, Reason};

/// One engine's backups of one database, and the folder the runner derives its keys in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    pub engine: String,
    pub database: String,
    /// `prefix/engine/database/`: only here are objects without a manifest and incomplete
    /// uploads cleaned up; elsewhere they may be anything, and are reported only.
    pub folder: String,
}

impl Scope {
    pub fn new(prefix: Option<&str>, engine: &str, database: &str) -> Scope {
        Scope {
            engine: engine.to_string(),
            database: database.to_string(),
            folder: format!(
                "{}{engine}/{}/",
                super::list_prefix(prefix),
                database_folder(database)
            ),
        }
    }

    fn holds(&self, b: &Backup) -> bool {
        b.summary.engine == self.engine && b.summary.database == self.database
    }
}

/// What a prune does.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    /// Kept backups, newest first, with every rule that keeps each.
    pub keep: Vec<(Backup, Vec<Reason>)>,
    /// Backups the policy does not keep, newest first.
    pub delete: Vec<Backup>,
    /// Not-backups to remove: in the scope's folder and older than the grace period.
    pub clean: Vec<NotBackup>,
    /// Not-backups of this scope left alone, and why.
    pub leave: Vec<(NotBackup, &'static str)>,
}

/// Decides a prune. Only complete backups of the scope count toward the policy, and the newest
/// of them is always kept.
pub fn plan(
    catalog: &Catalog,
    scope: &Scope,
    policy: &Policy,
    grace: Duration,
    now: DateTime<Utc>,
) -> Plan {
    let backups: Vec<(Backup, DateTime<Utc>)> = catalog
        .backups
        .iter()
        .filter(|b| scope.holds(b))
        .map(|b| (b.clone(), b.summary.taken_at))
        .collect();
    let mut out = Plan::default();
    for verdict in retention::apply(policy, backups) {
        if verdict.keep() {
            out.keep.push((verdict.item, verdict.reasons));
        } else {
            out.delete.push(verdict.item);
        }
    }
    let cutoff = now - chrono::Duration::from_std(grace).unwrap_or(chrono::Duration::MAX);
    for nb in &catalog.not_backups {
        let in_folder = nb.key.starts_with(&scope.folder);
        let of_scope = nb
            .summary
            .as_ref()
            .is_some_and(|s| s.engine == scope.engine && s.database == scope.database);
        if !in_folder {
            if of_scope {
                out.leave.push((
                    nb.clone(),
                    "outside the runner's folder for this database: remove it by hand if it is not needed",
                ));
            }
            continue;
        }
        if let Flaw::UnreadableManifest(_) = nb.flaw {
            out.leave.push((
                nb.clone(),
                "its manifest cannot be read (it may be from a newer runner): never deleted",
            ));
        } else if nb.since > cutoff {
            out.leave.push((
                nb.clone(),
                "younger than the grace period (PRUNE_GRACE_PERIOD): it may be a backup in progress",
            ));
        } else {
            out.clean.push(nb.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::tests::{backup, catalog_of, not_backup, t};

    fn scope() -> Scope {
        Scope::new(Some("p"), "postgres", "app")
    }

    fn keep_last(n: u32) -> Policy {
        Policy {
            keep_last: Some(n),
            ..Policy::default()
        }
    }

    fn keys(backups: &[Backup]) -> Vec<&str> {
        backups.iter().map(|b| b.object_key.as_str()).collect()
    }

    #[test]
    fn only_complete_backups_of_the_scope_count() {
        let catalog = catalog_of(
            vec![
                backup("p/postgres/app/3", "postgres", "app", t(3)),
                backup("p/postgres/other/9", "postgres", "other", t(9)),
                backup("p/mysql/app/8", "mysql", "app", t(8)),
                backup("p/postgres/app/2", "postgres", "app", t(2)),
                backup("p/postgres/app/1", "postgres", "app", t(1)),
            ],
            // Newer than every backup, but not backups: they push nothing out.
            vec![
                not_backup("p/postgres/app/5", Flaw::NoManifest, t(5)),
                not_backup("p/postgres/app/6", Flaw::ObjectMissing, t(6)),
            ],
        );
        let p = plan(&catalog, &scope(), &keep_last(2), Duration::ZERO, t(10));
        let kept: Vec<&str> = p.keep.iter().map(|(b, _)| b.object_key.as_str()).collect();
        assert_eq!(kept, ["p/postgres/app/3", "p/postgres/app/2"]);
        assert_eq!(keys(&p.delete), ["p/postgres/app/1"]);
    }

    #[test]
    fn the_newest_backup_is_kept_whatever_the_policy() {
        let catalog = catalog_of(
            vec![
                backup("p/postgres/app/2", "postgres", "app", t(2)),
                backup("p/postgres/app/1", "postgres", "app", t(1)),
            ],
            vec![],
        );
        // A policy that keeps nothing by its own rules: only within one second of the newest
        // is still the newest.
        let policy = Policy {
            keep_last: Some(0),
            keep_within: Some(chrono::Duration::seconds(1)),
            ..Policy::default()
        };
        let p = plan(&catalog, &scope(), &policy, Duration::ZERO, t(10));
        assert_eq!(p.keep.len(), 1);
        assert_eq!(p.keep[0].0.object_key, "p/postgres/app/2");
        assert_eq!(keys(&p.delete), ["p/postgres/app/1"]);
    }

    #[test]
    fn not_backups_are_cleaned_only_in_the_folder_and_after_the_grace_period() {
        let hour = Duration::from_secs(3600);
        let catalog = catalog_of(
            vec![backup("p/postgres/app/1", "postgres", "app", t(1))],
            vec![
                not_backup("p/postgres/app/old", Flaw::NoManifest, t(0)),
                not_backup(
                    "p/postgres/app/up",
                    Flaw::IncompleteUpload {
                        upload_id: "u".into(),
                    },
                    t(0),
                ),
                not_backup("p/postgres/app/young", Flaw::NoManifest, t(10)),
                not_backup(
                    "p/postgres/app/newer-runner",
                    Flaw::UnreadableManifest("too new".into()),
                    t(0),
                ),
                not_backup("p/postgres/other/x", Flaw::NoManifest, t(0)),
                not_backup("elsewhere/x", Flaw::NoManifest, t(0)),
            ],
        );
        let now = t(10) + chrono::Duration::minutes(30);
        let p = plan(&catalog, &scope(), &keep_last(1), hour, now);
        let cleaned: Vec<&str> = p.clean.iter().map(|n| n.key.as_str()).collect();
        assert_eq!(cleaned, ["p/postgres/app/old", "p/postgres/app/up"]);
        let left: Vec<&str> = p.leave.iter().map(|(n, _)| n.key.as_str()).collect();
        assert_eq!(
            left,
            ["p/postgres/app/young", "p/postgres/app/newer-runner"]
        );
        assert!(p.delete.is_empty());
    }
}
