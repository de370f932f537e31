//! Whole-server backups (`DB_NAME=*`): a set is the server's globals (roles, accounts, grants)
//! and one ordinary backup per database, each streamed by the same pipeline into its own object
//! with its own sha256, in one folder. The set's manifest, next to the globals object, lists
//! them all and is written last: no set manifest, no backup.
//!
//! Each database is its own consistent snapshot, taken when its dump starts (servers have no
//! snapshot across databases); each member's manifest records that time.

use std::sync::Mutex;

use bytes::Bytes;
use chrono::Utc;
use futures_util::{stream, StreamExt, TryStreamExt};

use super::backup::{claim, store, Target};
use super::restore::restore_object;
use super::verify::{read_manifest, read_verified, verify_object};
use super::Progress;
use crate::config::{Config, DbConfig, Operation, ServerScope};
use crate::engine::{Engine, GlobalsRestored, ServerInfo};
use crate::env::{ConfigError, Problem};
use crate::error::Error;
use crate::keys::SetKeys;
use crate::manifest::{
    manifest_key, Manifest, ServerSet, MANIFEST_VERSION_SET, SERVER_DATABASE, SET_MEMBER_DETAIL,
};
use crate::storage::{Storage, WriteMode};

/// The most a globals script may hold when restored (it is read whole): roles and accounts
/// only, far below this on any real server.
const GLOBALS_LIMIT: u64 = 256 << 20;

/// The server's preflight, shared by backup and restore: the connection for server-wide work
/// and what the engine learned about it.
async fn server_preflight<E: Engine>(
    engine: &E,
    cfg: &Config,
    operation: Operation,
) -> Result<(DbConfig, ServerInfo), Error> {
    let conn = engine.server_connection(&cfg.db);
    let server = engine.preflight(&conn, operation).await?;
    crate::checks::check_built_for::<E>(&server)?;
    super::log_preflight(&server);
    Ok((conn, server))
}

fn member_db(conn: &DbConfig, database: &str) -> DbConfig {
    DbConfig {
        name: database.to_string(),
        ..conn.clone()
    }
}

fn config_error(var: &str, message: String) -> Error {
    Error::Config(ConfigError {
        problems: vec![Problem {
            var: var.into(),
            message,
        }],
    })
}

/// Backs up every selected database of the server, and its globals, as one set.
pub async fn backup_set<E: Engine>(
    engine: &E,
    cfg: &Config,
    scope: &ServerScope,
    storage: &Storage,
) -> Result<Manifest, Error> {
    let info = E::info();
    let (conn, server) = server_preflight(engine, cfg, Operation::Backup).await?;
    let listed = engine.list_databases(&conn).await?;
    let mut skipped = listed.skipped;
    let mut databases = Vec::new();
    for db in &listed.databases {
        match scope.selects(db) {
            Ok(()) => databases.push(db.clone()),
            Err(why) => skipped.push(why),
        }
    }
    if databases.is_empty() {
        let var = if scope.include.is_empty() {
            "DB_EXCLUDE"
        } else {
            "DB_INCLUDE"
        };
        return Err(config_error(
            var,
            format!(
                "leaves no database to back up: the server has {}; nothing was stored",
                if listed.databases.is_empty() {
                    "no user database".to_string()
                } else {
                    listed.databases.join(", ")
                }
            ),
        ));
    }
    for why in &skipped {
        tracing::warn!(phase = "preflight", "not in the backup: {why}");
    }
    let started_at = Utc::now();
    let mut keys = SetKeys::new(
        cfg.key_prefix.as_deref(),
        info.name,
        &cfg.job_id,
        cfg.compression,
        started_at,
    );
    tracing::info!(
        phase = "dump",
        databases = databases.len(),
        parallelism = scope.parallelism,
        "backing up {} of the server ({}), {} at a time, and its globals (roles or accounts and their grants)",
        super::count(databases.len(), "database"),
        databases.join(", "),
        scope.parallelism,
    );

    // Everything uploaded before the set's manifest, removed again if the set fails.
    let uploaded = Mutex::new(Vec::<String>::new());
    let result = async {
        let globals = engine.dump_globals(&conn, &server).await?;
        let globals_key = keys.globals(globals.format.extension);
        let set_manifest_key = manifest_key(&globals_key);
        let mode = claim(storage, &globals_key, &set_manifest_key, cfg.overwrite).await?;
        for why in &globals.skipped {
            tracing::warn!(phase = "dump", "not in the backup: {why}");
        }
        skipped.extend(globals.skipped);
        let dump = globals.dump;
        let mut set = store(
            engine,
            cfg,
            storage,
            &server,
            &Progress::default(),
            Target {
                key: globals_key.clone(),
                mode,
                format: globals.format,
                database: SERVER_DATABASE.to_string(),
                started_at,
                share: 1,
            },
            || async { Ok(dump) },
        )
        .await?;
        uploaded.lock().expect("uploaded").push(globals_key.clone());

        let planned: Vec<(String, String)> = databases
            .iter()
            .map(|db| (db.clone(), keys.member(db, info.file_extension)))
            .collect();
        let members: Vec<Manifest> = stream::iter(planned)
            .map(|(database, key)| {
                let uploaded = &uploaded;
                let conn = &conn;
                async move {
                    let m = backup_member(engine, cfg, storage, conn, &database, key, scope)
                        .await
                        .map_err(|e| {
                            e.with_note(&format!(
                                "this was database {database:?} of a whole-server backup: the set was not kept"
                            ))
                        })?;
                    uploaded.lock().expect("uploaded").push(m.object_key.clone());
                    Ok::<_, Error>(m)
                }
            })
            .buffered(scope.parallelism)
            .try_collect()
            .await?;

        let finished_at = Utc::now();
        set.manifest_version = MANIFEST_VERSION_SET;
        set.started_at = started_at;
        set.finished_at = finished_at;
        set.duration_ms = (finished_at - started_at).num_milliseconds().max(0) as u64;
        set.expires_at = cfg
            .retention_days
            .map(|d| finished_at + chrono::Duration::days(d as i64));
        set.warnings.extend(skipped.iter().cloned());
        set.set = Some(ServerSet {
            members,
            skipped,
            parallelism: scope.parallelism,
        });
        storage
            .put(&set_manifest_key, Bytes::from(set.to_json()), mode)
            .await?;
        Ok(set)
    }
    .await;
    if result.is_err() {
        // Uploads in flight are aborted by the job; what completed is deleted so that nothing
        // of the failed set is left (it would only be a stray without a manifest).
        let keys = std::mem::take(&mut *uploaded.lock().expect("uploaded"));
        for key in keys {
            match storage.delete(&key).await {
                Ok(()) => tracing::info!(
                    object = %storage.describe(&key),
                    "deleted a database already stored for the failed set"
                ),
                Err(e) => tracing::warn!(
                    object = %storage.describe(&key),
                    "cannot delete an object of the failed set ({e}); it has no manifest, so it is not a backup, and a prune removes it after PRUNE_GRACE_PERIOD"
                ),
            }
        }
    }
    result
}

/// One database of a set: its own preflight (size, what cannot be kept exactly), then the
/// ordinary dump into its object.
async fn backup_member<E: Engine>(
    engine: &E,
    cfg: &Config,
    storage: &Storage,
    conn: &DbConfig,
    database: &str,
    key: String,
    scope: &ServerScope,
) -> Result<Manifest, Error> {
    let info = E::info();
    let db = member_db(conn, database);
    let mut server = engine.preflight(&db, Operation::Backup).await?;
    if !server.losses.is_empty() {
        if cfg.strict_fidelity {
            return Err(Error::Loss(server.losses.join("; ")));
        }
        server.warnings.extend(server.losses.iter().cloned());
    }
    for w in &server.warnings {
        tracing::warn!(phase = "preflight", database, "{w}");
    }
    let format = server.format.unwrap_or(crate::engine::DumpFormat {
        name: info.format,
        extension: info.file_extension,
    });
    let progress = Progress::default();
    let _ticker = progress.report_every(cfg.progress_interval, "backup");
    let started_at = Utc::now();
    tracing::info!(phase = "dump", database, "dumping database {database:?}");
    let mut m = store(
        engine,
        cfg,
        storage,
        &server,
        &progress,
        Target {
            key,
            mode: WriteMode::Create,
            format,
            database: database.to_string(),
            started_at,
            share: scope.parallelism,
        },
        || engine.start_dump(&db, &server),
    )
    .await?;
    m.engine_details
        .insert(SET_MEMBER_DETAIL.into(), serde_json::Value::Bool(true));
    tracing::info!(
        phase = "dump",
        database,
        bytes = m.bytes,
        bytes_raw = m.raw_bytes,
        sha256 = %m.sha256,
        "database {database:?} stored: {} ({} dump), snapshot taken at {}",
        super::human(m.bytes),
        super::human(m.raw_bytes),
        m.started_at.format("%Y-%m-%dT%H:%M:%S%.3fZ")
    );
    Ok(m)
}

/// Reads a set's manifest and refuses anything that is not a set of this engine.
async fn read_set<E: Engine>(storage: &Storage, key: &str) -> Result<Manifest, Error> {
    let manifest = read_manifest(storage, key).await?;
    let location = storage.describe(key);
    let Some(set) = &manifest.set else {
        return Err(config_error(
            "DB_NAME",
            format!(
                "is * (a whole-server backup), but {location} is a backup of one database ({:?}): set DB_NAME to the database to restore it into",
                manifest.database
            ),
        ));
    };
    let info = E::info();
    if manifest.engine != info.name {
        return Err(Error::Incompatible(format!(
            "{location} holds a {} backup; use the backup-runner-{} image",
            manifest.engine, manifest.engine
        )));
    }
    for m in &set.members {
        crate::checks::check_backup::<E>(&storage.describe(&m.object_key), m)?;
    }
    Ok(manifest)
}

/// Refuses, before the database, a restore of a set's member as if it were one backup.
pub fn refuse_set_as_database(manifest: &Manifest, location: &str) -> Result<(), Error> {
    match &manifest.set {
        Some(set) => Err(config_error(
            "DB_NAME",
            format!(
                "{location} is a whole-server backup of {} ({}): set DB_NAME=* to restore it, with RESTORE_DATABASES to choose some",
                super::count(set.members.len(), "database"),
                set.members
                    .iter()
                    .map(|m| m.database.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )),
        None => Ok(()),
    }
}

/// What a set's restore did.
pub struct SetRestored {
    pub manifest: Manifest,
    /// The databases restored, in order.
    pub databases: Vec<String>,
    /// `None` when the globals were not restored (`RESTORE_GLOBALS=false`).
    pub globals: Option<GlobalsRestored>,
}

/// Restores a set: every object checked first, then the globals (existing roles and accounts
/// kept), then each database.
pub async fn restore_set<E: Engine>(
    engine: &E,
    cfg: &Config,
    scope: &ServerScope,
    storage: &Storage,
    progress: &Progress,
) -> Result<SetRestored, Error> {
    let key = cfg
        .backup_path
        .as_deref()
        .ok_or_else(|| Error::Internal("restore without BACKUP_PATH".into()))?;
    let manifest = read_set::<E>(storage, key).await?;
    let set = manifest.set.as_ref().expect("read_set checked");
    let selected: Vec<&Manifest> = match &scope.restore_databases {
        None => set.members.iter().collect(),
        Some(names) => {
            let missing: Vec<&String> = names
                .iter()
                .filter(|n| manifest.member(n).is_none())
                .collect();
            if !missing.is_empty() {
                return Err(config_error(
                    "RESTORE_DATABASES",
                    format!(
                        "names databases the set does not hold ({}): it holds {}",
                        missing
                            .iter()
                            .map(|s| s.as_str())
                            .collect::<Vec<_>>()
                            .join(", "),
                        set.members
                            .iter()
                            .map(|m| m.database.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ));
            }
            set.members
                .iter()
                .filter(|m| names.contains(&m.database))
                .collect()
        }
    };
    tracing::info!(
        phase = "restore",
        object = %storage.describe(key),
        taken_at = %manifest.started_at,
        server_version = %manifest.server_version,
        "restoring a whole-server backup: {} of its {} ({}){}",
        selected.len(),
        super::count(set.members.len(), "database"),
        selected
            .iter()
            .map(|m| m.database.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        if scope.restore_globals {
            ", after its roles or accounts"
        } else {
            "; roles and accounts are not restored (RESTORE_GLOBALS=false)"
        }
    );
    for why in &set.skipped {
        tracing::warn!(phase = "restore", "the backup does not hold: {why}");
    }
    let (conn, server) = server_preflight(engine, cfg, Operation::Restore).await?;
    // Nothing is written until every target is known to be free and every object intact.
    for m in &selected {
        engine
            .check_restore_target(&member_db(&conn, &m.database), m)
            .await?;
    }
    if cfg.verify_first.unwrap_or(true) {
        tracing::info!(
            phase = "verify",
            "checking every object of the set before restoring (RESTORE_VERIFY_FIRST)"
        );
        for m in &selected {
            verify_object(storage, &m.object_key, m, &cfg.keys, &Progress::default()).await?;
        }
    }
    let globals = if scope.restore_globals {
        let script = read_verified(storage, key, &manifest, &cfg.keys, GLOBALS_LIMIT).await?;
        let restored = engine
            .restore_globals(&conn, &server, &manifest, script)
            .await?;
        if !restored.created.is_empty() {
            tracing::info!(
                phase = "restore",
                "created: {}",
                restored.created.join(", ")
            );
        }
        if !restored.kept.is_empty() {
            tracing::warn!(
                phase = "restore",
                "already on the target, kept as they are (not dropped or altered): {}",
                restored.kept.join(", ")
            );
        }
        for w in &restored.warnings {
            tracing::warn!(phase = "restore", "{w}");
        }
        Some(restored)
    } else {
        None
    };
    let mut done = Vec::new();
    for m in &selected {
        let member_cfg = Config {
            db: member_db(&conn, &m.database),
            ..cfg.clone()
        };
        // A database's key is the one the set's manifest records (it has no manifest of its
        // own); its sha256 is checked as it streams.
        restore_object(
            engine,
            &member_cfg,
            storage,
            &server,
            progress,
            false,
            (&m.object_key, m),
        )
        .await
        .map_err(|e| {
            e.with_note(&format!(
                "this was database {:?} of the set; restored before it: {}",
                m.database,
                if done.is_empty() {
                    "none".to_string()
                } else {
                    done.join(", ")
                }
            ))
        })?;
        tracing::info!(phase = "restore", "database {:?} restored", m.database);
        done.push(m.database.clone());
    }
    Ok(SetRestored {
        manifest: manifest.clone(),
        databases: done,
        globals,
    })
}
