//! The catalog operations: `list`, `prune` (also run after a backup when a policy is set),
//! `check`, and choosing the backup for `BACKUP_PATH=latest`.

use std::io::Write;

use chrono::Utc;
use serde_json::{json, Value};

use super::{plan, Backup, Catalog, Flaw, NotBackup, Plan, Scope};
use crate::config::{CatalogConfig, Config};
use crate::env::{ConfigError, Problem};
use crate::error::Error;
use crate::pipeline::human;
use crate::retention::Policy;
use crate::storage::Storage;

/// What a catalog operation reports: a one-line message and the `/metadata` callback's body.
#[derive(Debug, Clone)]
pub struct Report {
    pub message: String,
    pub metadata: Value,
}

fn where_(cfg: &Config) -> String {
    match &cfg.key_prefix {
        Some(p) => format!("under {p}/"),
        None => "in the whole store".into(),
    }
}

fn scope_name(engine: &str, database: Option<&str>) -> String {
    match database {
        Some(d) => format!("{engine} database {d:?}"),
        None => format!("{engine} databases"),
    }
}

/// Checks the store before a catalog operation. A local directory that does not exist is an
/// error (a mistyped `STORAGE_LOCAL_DIR` would otherwise list nothing, and a check would say
/// backups stopped), and is not created.
pub async fn preflight(storage: &Storage, cfg: &Config) -> Result<(), Error> {
    if let crate::config::StorageConfig::Local { dir } = &cfg.storage {
        if !dir.is_dir() {
            return Err(Error::Storage(format!(
                "STORAGE_LOCAL_DIR {} does not exist or is not a directory: point it at the directory the backups were written to (a mounted volume)",
                dir.display()
            )));
        }
    }
    storage.preflight().await
}

/// `OPERATION_TYPE=list`: one JSON object per line on stdout, the backups newest first, then what
/// is under the prefix but is not a backup (`"kind": "not_a_backup"`).
pub async fn list(storage: &Storage, cfg: &Config, engine: &str) -> Result<Report, Error> {
    let catalog = Catalog::scan(storage, cfg.key_prefix.as_deref()).await?;
    let database = cfg.catalog.source_db.as_deref();
    let backups: Vec<Value> = catalog
        .backups_of(engine, database)
        .map(Backup::to_json)
        .collect();
    let not_backups: Vec<Value> = catalog.not_backups.iter().map(NotBackup::to_json).collect();
    {
        let mut out = std::io::stdout().lock();
        for line in backups.iter().chain(&not_backups) {
            writeln!(out, "{line}")
                .map_err(|e| Error::Internal(format!("cannot write the list to stdout: {e}")))?;
        }
        out.flush()
            .map_err(|e| Error::Internal(format!("cannot write the list to stdout: {e}")))?;
    }
    let requests = storage.requests();
    tracing::info!(
        phase = "list",
        backups = backups.len(),
        not_backups = not_backups.len(),
        manifests_read = catalog.manifests_read,
        manifests_cached = catalog.manifests_cached,
        requests = requests.total(),
        list_requests = requests.list,
        get_requests = requests.get,
        "listed the catalog"
    );
    let message = format!(
        "{} complete backups of {} {}, {} other objects or uploads that are not backups",
        backups.len(),
        scope_name(engine, database),
        where_(cfg),
        not_backups.len()
    );
    Ok(Report {
        message,
        metadata: json!({
            "backups": backups,
            "not_backups": not_backups,
            "requests": requests,
        }),
    })
}

/// `BACKUP_PATH=latest`: the object key of the newest complete backup of this engine and the
/// source database, by the manifest's `taken_at`.
pub async fn resolve_latest(
    storage: &Storage,
    cfg: &Config,
    engine: &str,
) -> Result<String, Error> {
    let catalog = Catalog::scan(storage, cfg.key_prefix.as_deref()).await?;
    let database = cfg.catalog.source_db.as_deref();
    let candidates: Vec<&Backup> = catalog.backups_of(engine, database).collect();
    if database.is_none() {
        let mut names: Vec<&str> = candidates
            .iter()
            .map(|b| b.summary.database.as_str())
            .collect();
        names.sort_unstable();
        names.dedup();
        if names.len() > 1 {
            return Err(Error::Config(ConfigError {
                problems: vec![Problem {
                    var: "SOURCE_DB_NAME".into(),
                    message: format!(
                        "BACKUP_PATH=latest is ambiguous: {} has backups of several databases ({}); set SOURCE_DB_NAME (or DB_NAME) to the one to choose from",
                        where_(cfg),
                        names.join(", ")
                    ),
                }],
            }));
        }
    }
    let Some(chosen) = candidates.first() else {
        return Err(Error::Integrity(format!(
            "BACKUP_PATH=latest: no complete backup of {} {} ({} objects or uploads there are not backups; to restore another database's backup, set SOURCE_DB_NAME to it); nothing was restored",
            scope_name(engine, database),
            where_(cfg),
            catalog.not_backups.len()
        )));
    };
    let skipped: Vec<String> = catalog
        .not_backups
        .iter()
        .filter(|n| n.since > chosen.summary.finished_at)
        .map(|n| format!("{} ({})", n.key, n.flaw))
        .collect();
    tracing::info!(
        phase = "latest",
        object_key = %chosen.object_key,
        taken_at = %chosen.summary.taken_at,
        candidates = candidates.len(),
        skipped = ?skipped,
        "BACKUP_PATH=latest chose {}: the newest of {} complete backups of {} by the manifest's taken_at ({}){}",
        chosen.object_key,
        candidates.len(),
        scope_name(engine, Some(&chosen.summary.database)),
        chosen.summary.taken_at.format("%Y-%m-%dT%H:%M:%SZ"),
        if skipped.is_empty() {
            String::new()
        } else {
            format!("; newer objects that are not complete backups were skipped: {}", skipped.join(", "))
        }
    );
    Ok(chosen.object_key.clone())
}

/// `OPERATION_TYPE=prune`.
pub async fn prune_operation(
    storage: &Storage,
    cfg: &Config,
    engine: &str,
) -> Result<Report, Error> {
    let database = cfg
        .catalog
        .source_db
        .as_deref()
        .ok_or_else(|| Error::Internal("prune without a database".into()))?;
    let (metadata, message) = prune(
        storage,
        cfg.key_prefix.as_deref(),
        &cfg.catalog,
        engine,
        database,
    )
    .await?;
    Ok(Report {
        message,
        metadata: json!({ "prune": metadata }),
    })
}

/// The prune a successful backup runs when a policy is set, scoped to the database it backed up.
/// Returns what to add to the backup's metadata; a failure is logged and reported there, and
/// never fails the backup, which is complete.
pub async fn prune_after_backup(
    storage: &Storage,
    cfg: &Config,
    engine: &str,
    database: &str,
) -> Option<Value> {
    if !cfg.catalog.policy.is_set() {
        return None;
    }
    match prune(
        storage,
        cfg.key_prefix.as_deref(),
        &cfg.catalog,
        engine,
        database,
    )
    .await
    {
        Ok((metadata, _)) => Some(metadata),
        Err(e) => {
            let message = crate::secret::redact(&e.to_string());
            tracing::error!(
                phase = "prune",
                "the backup is complete, but applying the retention policy failed: {message}"
            );
            Some(json!({ "error": message }))
        }
    }
}

async fn prune(
    storage: &Storage,
    prefix: Option<&str>,
    settings: &CatalogConfig,
    engine: &str,
    database: &str,
) -> Result<(Value, String), Error> {
    let catalog = Catalog::scan(storage, prefix).await?;
    let scope = Scope::new(prefix, engine, database);
    let plan = plan(
        &catalog,
        &scope,
        &settings.policy,
        settings.grace,
        Utc::now(),
    );
    describe_policy(&settings.policy);
    for (b, reasons) in &plan.keep {
        let why: Vec<String> = reasons.iter().map(ToString::to_string).collect();
        tracing::info!(phase = "prune", object_key = %b.object_key, taken_at = %b.summary.taken_at, "keep: {}", why.join(", "));
    }
    for b in &plan.delete {
        tracing::info!(phase = "prune", object_key = %b.object_key, taken_at = %b.summary.taken_at, dry_run = settings.dry_run, "delete: no rule keeps it");
    }
    for n in &plan.clean {
        tracing::info!(phase = "prune", key = %n.key, dry_run = settings.dry_run, "clean up: {} since {}", n.flaw, n.since.format("%Y-%m-%dT%H:%M:%SZ"));
    }
    for (n, why) in &plan.leave {
        tracing::warn!(phase = "prune", key = %n.key, "left alone: {} ({why})", n.flaw);
    }
    let mut failures = Vec::new();
    if !settings.dry_run {
        failures = execute(storage, &plan).await;
    }
    let requests = storage.requests();
    let metadata = json!({
        "engine": engine,
        "database": database,
        "dry_run": settings.dry_run,
        "kept": plan.keep.iter().map(|(b, reasons)| json!({
            "object_key": b.object_key,
            "taken_at": b.summary.taken_at,
            "reasons": reasons.iter().map(ToString::to_string).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "deleted": plan.delete.iter().map(|b| json!({
            "object_key": b.object_key,
            "manifest_key": b.manifest_key,
            "taken_at": b.summary.taken_at,
            "bytes": b.summary.bytes,
        })).collect::<Vec<_>>(),
        "cleaned": plan.clean.iter().map(NotBackup::to_json).collect::<Vec<_>>(),
        "left": plan.leave.iter().map(|(n, why)| {
            let mut v = n.to_json();
            v["why"] = (*why).into();
            v
        }).collect::<Vec<_>>(),
        "failures": failures,
        "requests": requests,
    });
    let freed: u64 = plan.delete.iter().map(|b| b.summary.total_bytes()).sum();
    let message = format!(
        "prune of {}: kept {}, {} {} backups ({}), {} {} objects or uploads that were not backups{}",
        scope_name(engine, Some(database)),
        plan.keep.len(),
        if settings.dry_run { "would delete" } else { "deleted" },
        plan.delete.len(),
        human(freed),
        if settings.dry_run { "would clean up" } else { "cleaned up" },
        plan.clean.len(),
        if settings.dry_run { " (PRUNE_DRY_RUN: nothing was deleted)" } else { "" }
    );
    tracing::info!(
        phase = "prune",
        requests = requests.total(),
        list_requests = requests.list,
        get_requests = requests.get,
        delete_requests = requests.delete,
        manifests_read = catalog.manifests_read,
        manifests_cached = catalog.manifests_cached,
        "the prune made {} requests to the store",
        requests.total()
    );
    if !failures.is_empty() {
        return Err(Error::Storage(format!(
            "the prune did not finish: {}; what was deleted is logged above, and what is left is retried by the next prune",
            failures.join("; ")
        )));
    }
    Ok((metadata, message))
}

fn describe_policy(policy: &Policy) {
    tracing::info!(
        phase = "prune",
        keep_last = policy.keep_last,
        keep_hourly = policy.keep_hourly,
        keep_daily = policy.keep_daily,
        keep_weekly = policy.keep_weekly,
        keep_monthly = policy.keep_monthly,
        keep_yearly = policy.keep_yearly,
        keep_within_days = policy.keep_within.map(|d| d.num_days()),
        "retention policy (the newest complete backup is always kept)"
    );
}

/// Deletes what the plan says: every manifest first, then the objects whose manifest is gone,
/// so a prune stopped anywhere leaves objects without a manifest (not backups, cleaned up
/// later), never a manifest pointing at nothing. Each phase is one `delete_many` (S3: 1,000 keys
/// per request). Returns what failed.
async fn execute(storage: &Storage, plan: &Plan) -> Vec<String> {
    let mut failures = Vec::new();
    let manifest_keys: Vec<String> = plan.delete.iter().map(|b| b.manifest_key.clone()).collect();
    let manifests = storage.delete_many(&manifest_keys).await;
    let mut objects = Vec::new();
    for (b, result) in plan.delete.iter().zip(manifests) {
        match result {
            Ok(()) => objects.extend(b.object_keys().map(str::to_string)),
            Err(e) => failures.push(format!("cannot delete {}: {e}", b.manifest_key)),
        }
    }
    for (key, result) in objects.iter().zip(storage.delete_many(&objects).await) {
        if let Err(e) = result {
            failures.push(format!(
                "deleted the manifest of {key} but not the object ({e}): it is no longer a backup, and a later prune removes it once it is older than PRUNE_GRACE_PERIOD"
            ));
        }
    }
    for n in &plan.clean {
        let manifest = crate::manifest::manifest_key(&n.key);
        let result = match &n.flaw {
            Flaw::NoManifest => storage.delete(&n.key).await,
            // The set's manifest goes; its objects are then strays, cleaned by a later prune.
            Flaw::ObjectMissing | Flaw::IncompleteSet { .. } => storage.delete(&manifest).await,
            Flaw::SizeMismatch { .. } => match storage.delete(&manifest).await {
                Ok(()) => storage.delete(&n.key).await,
                Err(e) => Err(e),
            },
            Flaw::IncompleteUpload { upload_id } => storage.abort_upload(&n.key, upload_id).await,
            Flaw::UnreadableManifest(_) => Ok(()),
        };
        if let Err(e) = result {
            failures.push(format!("cannot clean up {} ({}): {e}", n.key, n.flaw));
        }
    }
    failures
}

/// `OPERATION_TYPE=check`: fails with [`Error::Stale`] when the newest complete backup is older
/// than `CHECK_MAX_AGE`, or there is none.
pub async fn check(storage: &Storage, cfg: &Config, engine: &str) -> Result<Report, Error> {
    let catalog = Catalog::scan(storage, cfg.key_prefix.as_deref()).await?;
    let database = cfg.catalog.source_db.as_deref();
    let max_age = cfg
        .catalog
        .check_max_age
        .ok_or_else(|| Error::Internal("check without CHECK_MAX_AGE".into()))?;
    let scope = scope_name(engine, database);
    let Some(newest) = catalog.backups_of(engine, database).next() else {
        return Err(Error::Stale(format!(
            "no complete backup of {scope} {} (CHECK_MAX_AGE={}); {} objects or uploads there are not backups",
            where_(cfg),
            age_text(max_age),
            catalog.not_backups.len()
        )));
    };
    let age = (Utc::now() - newest.summary.taken_at)
        .to_std()
        .unwrap_or_default();
    let detail = format!(
        "the newest complete backup of {scope} is {} old ({}, taken {}); CHECK_MAX_AGE={}",
        age_text(age),
        newest.object_key,
        newest.summary.taken_at.format("%Y-%m-%dT%H:%M:%SZ"),
        age_text(max_age)
    );
    let requests = storage.requests();
    tracing::info!(
        phase = "check",
        requests = requests.total(),
        list_requests = requests.list,
        get_requests = requests.get,
        age_seconds = age.as_secs(),
        max_age_seconds = max_age.as_secs(),
        object_key = %newest.object_key,
        "{detail}"
    );
    if age > max_age {
        return Err(Error::Stale(detail));
    }
    Ok(Report {
        message: format!("fresh: {detail}"),
        metadata: json!({
            "check": {
                "fresh": true,
                "age_seconds": age.as_secs(),
                "max_age_seconds": max_age.as_secs(),
                "newest": newest.to_json(),
            }
        }),
    })
}

fn age_text(d: std::time::Duration) -> String {
    let s = d.as_secs();
    match s {
        0..=119 => format!("{s}s"),
        120..=7199 => format!("{}m", s / 60),
        7200..=172_799 => format!("{:.1}h", s as f64 / 3600.0),
        _ => format!("{:.1}d", s as f64 / 86400.0),
    }
}
