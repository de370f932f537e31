//! The job lifecycle: config → callbacks → preflight → pipeline → manifest → callbacks → exit
//! code. Every failure path aborts the pending upload and reports `failed`.

use std::time::Instant;

use futures_util::FutureExt;
use serde_json::json;
use tracing::Instrument;

use crate::callback::{Notifier, Status};
use crate::catalog;
use crate::config::{read_callback, Config, Operation, Scope};
use crate::engine::Engine;
use crate::env::EnvReader;
use crate::error::{Error, ExitCode};
use crate::manifest::{manifest_key, Manifest};
use crate::observe::{Finished, Labels, Observers};
use crate::pipeline::{self, human, Progress};
use crate::secret::redact;
use crate::storage::Storage;

/// How long a stopping job may take from the signal to its exit: the `failed` callback and the
/// aborts of incomplete uploads run together within it, well inside the usual grace period
/// (Kubernetes 30 s, `docker stop` 10 s).
const SHUTDOWN_BUDGET: std::time::Duration = std::time::Duration::from_secs(8);

/// The whole `main` of an engine binary.
pub fn main<E: Engine>() -> std::process::ExitCode {
    // First, before anything else: hold SIGTERM and SIGINT until the handlers are in place. As
    // PID 1 in a container a signal without a handler is dropped, so one sent this early would
    // otherwise be lost; held, it is delivered the moment the handlers exist.
    let held = signals::hold();
    let info = E::info();
    let binary = format!("backup-runner-{}", info.name);
    match std::env::args().nth(1).as_deref() {
        None => {}
        Some("--version" | "-V") => {
            println!("{binary} {}", version_line(info));
            return ExitCode::Success.into();
        }
        Some("--help" | "-h") => {
            println!("{binary} {}\n\n{}", version_line(info), usage(info));
            return ExitCode::Success.into();
        }
        Some(other) => {
            eprintln!(
                "{binary}: unexpected argument {other:?}: the runner is configured by environment variables only (see --help)"
            );
            return ExitCode::Config.into();
        }
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{binary}: cannot start the async runtime: {e}");
            return ExitCode::Internal.into();
        }
    };
    let lookup = |name: &str| std::env::var(name).ok();
    let code = runtime.block_on(async {
        signals::listen();
        signals::release(held);
        // The job catches its own panics (see `execute`); this is for a panic outside it.
        std::panic::AssertUnwindSafe(run::<E>(&lookup))
            .catch_unwind()
            .await
            .unwrap_or(ExitCode::Internal)
    });
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    code.into()
}

fn version_line(info: &crate::engine::EngineInfo) -> String {
    let target = match info.built_for {
        Some(v) => format!("{} {v}", info.display_name),
        None => format!("{}, client tools found on PATH", info.display_name),
    };
    format!("{} ({target})", env!("CARGO_PKG_VERSION"))
}

fn usage(info: &crate::engine::EngineInfo) -> String {
    format!(
        "Backs up or restores one {db} database, streaming through compression into object storage.\n\
         Configured by environment variables (see the README for all of them):\n\
         \n  OPERATION_TYPE   backup (default) | restore | verify (BACKUP_PATH=<key>|latest; VERIFY_RESTORE=true also restores)\
         \n                   | list | prune (KEEP_LAST, KEEP_DAILY, …, RETENTION_DAYS, PRUNE_DRY_RUN) | check (CHECK_MAX_AGE)\
         \n  DATABASE_URL     {scheme}://user:password@host:{port}/dbname  (or DB_HOST, DB_PORT, DB_NAME, DB_USERNAME, DB_PASSWORD[_FILE])\
         \n  DB_NAME=*        the whole server as one set (roles/accounts + every database): DB_INCLUDE, DB_EXCLUDE, SERVER_PARALLELISM;\
         \n                   restore with RESTORE_DATABASES=a,b to choose, RESTORE_GLOBALS=false to skip roles/accounts\
         \n  STORAGE_TYPE     local (default, STORAGE_LOCAL_DIR=./backups) | s3 | minio | r2 | gcs | …\
         \n  STORAGE_BUCKET, STORAGE_ENDPOINT, STORAGE_REGION, STORAGE_ACCESS_KEY_ID, STORAGE_SECRET_ACCESS_KEY[_FILE]\
         \n  BACKUP_PATH      object key (required for restore; derived from STORAGE_PREFIX when unset)\
         \n  COMPRESSION      zstd (default) | gzip | none;  COMPRESSION_LEVEL\
         \n  ENCRYPTION_RECIPIENTS (age1… public keys) or ENCRYPTION_PASSPHRASE[_FILE]; ENCRYPTION_IDENTITY_FILE to restore\
         \n  CALLBACK_URL, CALLBACK_SECRET[_FILE], JOB_ID, RETENTION_DAYS, LOG_FORMAT=text|json\
         \n  METRICS_PUSHGATEWAY_URL, METRICS_JOB_NAME; HEALTHCHECK_URL (healthchecks.io-style pings)",
        db = info.display_name,
        scheme = info.url_schemes[0],
        port = info.default_port
    )
}

/// Runs one job with variables from `lookup` and returns the exit code.
pub async fn run<E: Engine>(lookup: &(dyn Fn(&str) -> Option<String> + Sync)) -> ExitCode {
    let info = E::info();
    let mut env = EnvReader::new(lookup);
    crate::logging::init(&mut env);
    let cfg = Config::read(&mut env, info);
    let engine = E::from_env(&mut env);
    env.warn_unknown_variables();
    if let Err(problems) = env.finish() {
        let err = Error::Config(problems);
        tracing::error!("{err}");
        report_config_failure(lookup, info, &err).await;
        return err.exit_code();
    }
    let Some(cfg) = cfg else {
        return ExitCode::Internal;
    };
    crate::logging::set_job_fields(&cfg.job_id, info.name, cfg.operation.as_str());
    let span = tracing::info_span!(
        "job",
        job_id = %cfg.job_id,
        engine = info.name,
        operation = cfg.operation.as_str()
    );
    execute(engine, cfg).instrument(span).await
}

/// Reports a bad config as a failure (`failed` callback, metrics, `/fail` ping) to those of the
/// observers whose own settings are fine.
async fn report_config_failure(
    lookup: &(dyn Fn(&str) -> Option<String> + Sync),
    info: &'static crate::engine::EngineInfo,
    err: &Error,
) {
    let engine = info.name;
    let mut env = EnvReader::new(lookup);
    let callback = read_callback(&mut env).ok().flatten();
    let observe = crate::config::read_observe(&mut env);
    let job_id = env.string("JOB_ID").unwrap_or_else(|| "unknown".into());
    let database = env
        .string("SOURCE_DB_NAME")
        .or_else(|| env.string("DB_NAME"))
        .or_else(|| info.default_database.map(str::to_string))
        .unwrap_or_default();
    let operation = env
        .string("OPERATION_TYPE")
        .and_then(|op| {
            Operation::ALL
                .into_iter()
                .find(|o| o.as_str().eq_ignore_ascii_case(&op))
        })
        .unwrap_or(Operation::Backup)
        .as_str();
    let message = redact(&err.to_string());
    let observers = Observers::new(
        &observe,
        Labels {
            engine: engine.into(),
            database,
            operation: operation.into(),
        },
    );
    let finished = Finished {
        code: err.exit_code(),
        message: message.clone(),
        duration: std::time::Duration::ZERO,
        bytes: None,
        raw_bytes: None,
        peak_rss: peak_rss_bytes(),
    };
    let notifier = Notifier::new(callback, &job_id, operation, engine);
    tokio::join!(
        notifier.status(Status::Failed, &message),
        observers.finished(&finished)
    );
}

enum Outcome {
    /// The manifest, and what the prune after it reported (when a policy is set).
    Backup(Manifest, Option<serde_json::Value>),
    /// A catalog operation: list, prune, check.
    Report(catalog::Report),
    Restore(Manifest),
    /// A whole-server set restored.
    SetRestore(pipeline::SetRestored),
    /// The manifest, and the scratch database it was restored into (`VERIFY_RESTORE`).
    Verified(Manifest, pipeline::Checked, Option<String>),
}

async fn execute<E: Engine>(engine: E, cfg: Config) -> ExitCode {
    let info = E::info();
    let op = cfg.operation;
    let notifier = Notifier::new(cfg.callback.clone(), &cfg.job_id, op.as_str(), info.name);
    let database = match (op.is_catalog(), &cfg.catalog.source_db) {
        (true, Some(source)) => source.clone(),
        (true, None) => String::new(),
        (false, _) => cfg.db.name.clone(),
    };
    let observers = Observers::new(
        &cfg.observe,
        Labels {
            engine: info.name.into(),
            database,
            operation: op.as_str().into(),
        },
    );
    let started = Instant::now();
    tracing::info!(
        phase = "start",
        "{} {} started",
        info.display_name,
        op.as_str()
    );
    let running = format!("{} {} started", info.display_name, op.as_str());
    tokio::join!(
        notifier.status(Status::Running, &running),
        observers.started()
    );
    let report = Report {
        notifier: &notifier,
        observers: &observers,
        started,
    };

    let storage = match Storage::new(&cfg.storage).await {
        Ok(s) => s,
        Err(e) => return report.failed(None, e).await,
    };
    let work = async {
        if op == Operation::Backup {
            storage.preflight().await?;
        }
        if op.is_catalog() {
            catalog::preflight(&storage, &cfg).await?;
        }
        match op {
            Operation::List => {
                return Ok(Outcome::Report(
                    catalog::list(&storage, &cfg, info.name).await?,
                ))
            }
            Operation::Prune => {
                return Ok(Outcome::Report(
                    catalog::prune_operation(&storage, &cfg, info.name).await?,
                ))
            }
            Operation::Check => {
                return Ok(Outcome::Report(
                    catalog::check(&storage, &cfg, info.name).await?,
                ))
            }
            _ => {}
        }
        let resolved;
        let cfg = if cfg.latest {
            let key = catalog::resolve_latest(&storage, &cfg, info.name).await?;
            resolved = Config {
                backup_path: Some(key),
                ..cfg.clone()
            };
            &resolved
        } else {
            &cfg
        };
        let progress = Progress::default();
        if let Scope::Server(scope) = &cfg.scope {
            match op {
                Operation::Backup => {
                    let m = pipeline::backup_set(&engine, cfg, scope, &storage).await?;
                    let pruned =
                        catalog::prune_after_backup(&storage, cfg, info.name, &m.database).await;
                    return Ok(Outcome::Backup(m, pruned));
                }
                Operation::Restore => {
                    pipeline::check_keys(cfg, &storage).await?;
                    let _ticker = progress.report_every(cfg.progress_interval, op.as_str());
                    return Ok(Outcome::SetRestore(
                        pipeline::restore_set(&engine, cfg, scope, &storage, &progress).await?,
                    ));
                }
                // A verify reads storage only, and checks a set whole.
                _ => {}
            }
        }
        let mut verified = None;
        if op == Operation::Verify {
            let (manifest, checked) = pipeline::verify(cfg, &storage, &progress).await?;
            if !cfg.verify_restore {
                return Ok(Outcome::Verified(manifest, checked, None));
            }
            tracing::info!(
                phase = "verify",
                "restoring into database {:?} to check the backup loads (VERIFY_RESTORE)",
                cfg.db.name
            );
            verified = Some((manifest, checked));
        }
        if matches!(op, Operation::Restore | Operation::Verify) {
            // An encrypted backup without a key to open it: refused before the database.
            pipeline::check_keys(cfg, &storage).await?;
        }
        // A verify's restore into the scratch database is a restore.
        let restore_op = if op == Operation::Verify {
            Operation::Restore
        } else {
            op
        };
        let mut server = engine.preflight(&cfg.db, restore_op).await?;
        crate::checks::check_built_for::<E>(&server)?;
        if op == Operation::Backup && !server.losses.is_empty() {
            if cfg.strict_fidelity {
                return Err(Error::Loss(server.losses.join("; ")));
            }
            server.warnings.extend(server.losses.iter().cloned());
        }
        pipeline::log_preflight(&server);
        let _ticker = progress.report_every(cfg.progress_interval, op.as_str());
        Ok(match op {
            Operation::Backup => {
                let m = pipeline::backup(&engine, cfg, &storage, &server, &progress).await?;
                drop(_ticker);
                let pruned =
                    catalog::prune_after_backup(&storage, cfg, info.name, &m.database).await;
                Outcome::Backup(m, pruned)
            }
            Operation::Restore => {
                let verify_first = cfg.verify_first.unwrap_or(!engine.restore_is_atomic());
                Outcome::Restore(
                    pipeline::restore(&engine, cfg, &storage, &server, &progress, verify_first)
                        .await?
                        .manifest,
                )
            }
            Operation::Verify => {
                pipeline::restore(&engine, cfg, &storage, &server, &progress, false).await?;
                let (manifest, checked) =
                    verified.ok_or_else(|| Error::Internal("restored before verifying".into()))?;
                Outcome::Verified(manifest, checked, Some(cfg.db.name.clone()))
            }
            Operation::List | Operation::Prune | Operation::Check => {
                return Err(Error::Internal(format!(
                    "{} reached the database",
                    op.as_str()
                )))
            }
        })
    };
    // A panic anywhere in the job is a failed job: the upload is aborted and `failed` is sent,
    // never an exit with the upload left open.
    let work = std::panic::AssertUnwindSafe(work).catch_unwind();
    let result: Result<Outcome, Error> = tokio::select! {
        r = work => r.unwrap_or_else(|panic| Err(Error::Internal(format!(
            "the runner panicked: {}; nothing was kept",
            panic_message(&*panic)
        )))),
        signal = signals::received() => Err(Error::Interrupted(signal)),
    };

    let elapsed = started.elapsed();
    let outcome = match result {
        Ok(outcome) => outcome,
        Err(e) => return report.failed(Some(&storage), e).await,
    };
    let (message, bytes, raw_bytes) = match outcome {
        Outcome::Report(r) => {
            tracing::info!(
                phase = "done",
                duration_ms = elapsed.as_millis() as u64,
                "{}",
                r.message
            );
            notifier.metadata(r.metadata).await;
            (r.message, None, None)
        }
        Outcome::Backup(m, pruned) => {
            let peak_rss = peak_rss_bytes();
            let location = storage.describe(&m.object_key);
            let (bytes, raw_bytes) = set_totals(&m);
            let what = match &m.set {
                Some(set) => format!(
                    "whole-server backup ({} and the server's globals)",
                    pipeline::count(set.members.len(), "database"),
                ),
                None => "backup".to_string(),
            };
            let message = format!(
                "{} {what} completed: {} stored ({} dump) at {location} in {:.1}s",
                info.display_name,
                human(bytes),
                human(raw_bytes),
                elapsed.as_secs_f64()
            );
            tracing::info!(
                phase = "done",
                bytes = m.bytes,
                bytes_raw = m.raw_bytes,
                sha256 = %m.sha256,
                object_key = %m.object_key,
                duration_ms = elapsed.as_millis() as u64,
                peak_rss_bytes = peak_rss,
                "{message}"
            );
            notifier
                .metadata(json!({
                    "bytes": bytes,
                    "object_key": m.object_key,
                    "manifest_key": manifest_key(&m.object_key),
                    "location": location,
                    "sha256": m.sha256,
                    "raw_bytes": raw_bytes,
                    "compression": m.compression.algorithm,
                    "parts": m.parts,
                    "duration_ms": elapsed.as_millis() as u64,
                    "peak_rss_bytes": peak_rss,
                    "engine": m.engine,
                    "server_version": m.server_version,
                    "client_version": m.client_version,
                    "database": m.database,
                    "expires_at": m.expires_at,
                    "warnings": m.warnings,
                    "prune": pruned,
                    "set": set_metadata(&m),
                }))
                .await;
            (message, Some(bytes), Some(raw_bytes))
        }
        Outcome::SetRestore(r) => {
            let m = &r.manifest;
            let (bytes, raw_bytes) = set_totals(m);
            let mut message = format!(
                "{} whole-server restore completed: {} ({}) from {} in {:.1}s",
                info.display_name,
                pipeline::count(r.databases.len(), "database"),
                r.databases.join(", "),
                storage.describe(&m.object_key),
                elapsed.as_secs_f64()
            );
            match &r.globals {
                Some(g) => message.push_str(&format!(
                    "; {} created, {} already there and kept",
                    g.created.len(),
                    g.kept.len()
                )),
                None => {
                    message.push_str("; roles and accounts not restored (RESTORE_GLOBALS=false)")
                }
            }
            tracing::info!(
                phase = "done",
                bytes,
                duration_ms = elapsed.as_millis() as u64,
                peak_rss_bytes = peak_rss_bytes(),
                "{message}"
            );
            notifier
                .metadata(json!({
                    "object_key": m.object_key,
                    "databases": r.databases,
                    "created": r.globals.as_ref().map(|g| &g.created),
                    "kept": r.globals.as_ref().map(|g| &g.kept),
                    "warnings": r.globals.as_ref().map(|g| &g.warnings),
                }))
                .await;
            (message, Some(bytes), Some(raw_bytes))
        }
        Outcome::Restore(m) => {
            let message = format!(
                "{} restore completed: {} ({} dump) from {} into database {:?} in {:.1}s",
                info.display_name,
                human(m.bytes),
                human(m.raw_bytes),
                storage.describe(&m.object_key),
                cfg.db.name,
                elapsed.as_secs_f64()
            );
            tracing::info!(
                phase = "done",
                bytes = m.bytes,
                duration_ms = elapsed.as_millis() as u64,
                peak_rss_bytes = peak_rss_bytes(),
                "{message}"
            );
            (message, Some(m.bytes), Some(m.raw_bytes))
        }
        Outcome::Verified(m, checked, scratch) => {
            let message =
                verified_message(info, &storage, &m, checked, scratch.as_deref(), elapsed);
            tracing::info!(
                phase = "done",
                sha256 = %m.sha256,
                bytes = m.bytes,
                duration_ms = elapsed.as_millis() as u64,
                peak_rss_bytes = peak_rss_bytes(),
                "{message}"
            );
            notifier
                .metadata(json!({
                    "verified": true,
                    "object_key": m.object_key,
                    "bytes": m.bytes,
                    "raw_bytes": m.raw_bytes,
                    "sha256": m.sha256,
                    "taken_at": m.started_at,
                    "server_version": m.server_version,
                    "restored_into": scratch,
                    "encrypted": m.encryption.is_some(),
                    "decrypted": m.encryption.is_some() && checked == pipeline::Checked::Fully,
                }))
                .await;
            (message, Some(m.bytes), Some(m.raw_bytes))
        }
    };
    report
        .succeeded(Finished {
            code: ExitCode::Success,
            message,
            duration: elapsed,
            bytes,
            raw_bytes,
            peak_rss: peak_rss_bytes(),
        })
        .await
}

/// The stored and dump sizes of a backup, a set's summed over its objects.
fn set_totals(m: &Manifest) -> (u64, u64) {
    let members = m.set.iter().flat_map(|s| &s.members);
    (
        m.bytes + members.clone().map(|x| x.bytes).sum::<u64>(),
        m.raw_bytes + members.map(|x| x.raw_bytes).sum::<u64>(),
    )
}

/// A set's databases for the callback: each one's object, checksum, size and snapshot time.
fn set_metadata(m: &Manifest) -> Option<serde_json::Value> {
    let set = m.set.as_ref()?;
    Some(json!({
        "databases": set.members.iter().map(|x| json!({
            "database": x.database,
            "object_key": x.object_key,
            "sha256": x.sha256,
            "bytes": x.bytes,
            "raw_bytes": x.raw_bytes,
            "started_at": x.started_at,
            "finished_at": x.finished_at,
            "warnings": x.warnings,
        })).collect::<Vec<_>>(),
        "skipped": set.skipped,
        "parallelism": set.parallelism,
    }))
}

fn verified_message(
    info: &crate::engine::EngineInfo,
    storage: &Storage,
    m: &Manifest,
    checked: pipeline::Checked,
    scratch: Option<&str>,
    elapsed: std::time::Duration,
) -> String {
    let mut restored = match scratch {
        Some(db) => format!(", and it restores into database {db:?}"),
        None => String::new(),
    };
    match (&m.encryption, checked) {
        (Some(e), pipeline::Checked::StoredBytesOnly) => restored.push_str(&format!(
            "; it is encrypted for {} and no key was given, so the stored bytes were checked but not decrypted (set ENCRYPTION_IDENTITY_FILE to check that too)",
            e.describe()
        )),
        (Some(_), pipeline::Checked::Fully) => {
            restored.push_str("; it decrypts and decompresses to the recorded size")
        }
        (None, _) => {}
    }
    if let Some(set) = &m.set {
        restored.push_str(&format!(
            ", and so do the {} of the set ({})",
            pipeline::count(set.members.len(), "database"),
            set.members
                .iter()
                .map(|x| x.database.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    format!(
        "{} backup verified: {} matches its manifest (sha256 {}, {} stored, {} dump, taken {} from {}){restored} in {:.1}s",
        info.display_name,
        storage.describe(&m.object_key),
        m.sha256,
        human(m.bytes),
        human(m.raw_bytes),
        m.started_at.format("%Y-%m-%dT%H:%M:%SZ"),
        m.server_version,
        elapsed.as_secs_f64()
    )
}

/// The end of a job told to everyone listening: the final callback, the metrics and the health
/// ping, sent together.
struct Report<'a> {
    notifier: &'a Notifier,
    observers: &'a Observers,
    started: Instant,
}

impl Report<'_> {
    async fn succeeded(&self, finished: Finished) -> ExitCode {
        tokio::join!(
            self.notifier.status(Status::Success, &finished.message),
            self.observers.finished(&finished)
        );
        ExitCode::Success
    }

    async fn failed(&self, storage: Option<&Storage>, err: Error) -> ExitCode {
        let message = redact(&err.to_string());
        let code = err.exit_code();
        tracing::error!(phase = "failed", exit_code = code as u8, "{message}");
        let finished = Finished {
            code,
            message: message.clone(),
            duration: self.started.elapsed(),
            bytes: None,
            raw_bytes: None,
            peak_rss: peak_rss_bytes(),
        };
        let tell = async {
            tokio::join!(
                self.notifier.status(Status::Failed, &message),
                self.observers.finished(&finished)
            );
        };
        if matches!(err, Error::Interrupted(_)) {
            // The orchestrator's grace period is short: the reports and the aborts run together
            // within the budget, and whatever is not done by then is logged and left.
            let deadline = tokio::time::Instant::now() + SHUTDOWN_BUDGET;
            let abort = async {
                if let Some(storage) = storage {
                    storage.abort_pending(Some(deadline)).await;
                }
            };
            let report = async {
                if tokio::time::timeout_at(deadline, tell).await.is_err() {
                    tracing::warn!(
                        "the failed callback, metrics or health ping did not complete before the shutdown deadline"
                    );
                }
            };
            tokio::join!(abort, report);
        } else {
            if let Some(storage) = storage {
                storage.abort_pending(None).await;
            }
            tell.await;
        }
        code
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}

/// SIGTERM and SIGINT: held from the first instruction, listened for from the runtime's start,
/// and seen by the job whenever it looks.
mod signals {
    use std::sync::OnceLock;

    use tokio::sync::watch;

    static RECEIVED: OnceLock<watch::Receiver<Option<&'static str>>> = OnceLock::new();

    /// The signal mask before `hold`.
    pub struct Held(Option<libc::sigset_t>);

    fn term_and_int() -> libc::sigset_t {
        // SAFETY: sigset_t is plain data, initialised by sigemptyset before use.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGTERM);
            libc::sigaddset(&mut set, libc::SIGINT);
            set
        }
    }

    /// Blocks SIGTERM and SIGINT on this thread (and the threads it starts); a signal that
    /// arrives meanwhile stays pending.
    pub fn hold() -> Held {
        let set = term_and_int();
        // SAFETY: valid sigset pointers; pthread_sigmask only changes this thread's mask.
        unsafe {
            let mut old: libc::sigset_t = std::mem::zeroed();
            if libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut old) == 0 {
                Held(Some(old))
            } else {
                Held(None)
            }
        }
    }

    /// Unblocks the signals on this thread, where the pending ones are then delivered to the
    /// handlers `listen` installed. (Child processes start with an empty mask either way.)
    pub fn release(held: Held) {
        if held.0.is_some() {
            let set = term_and_int();
            // SAFETY: a valid sigset pointer.
            unsafe {
                libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
            }
        }
    }

    /// Installs the handlers; must run inside the runtime.
    pub fn listen() {
        use tokio::signal::unix::{signal, SignalKind};
        let (tx, rx) = watch::channel(None);
        if RECEIVED.set(rx).is_err() {
            return;
        }
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            return;
        };
        tokio::spawn(async move {
            let name = tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
            };
            let _ = tx.send(Some(name));
        });
    }

    /// Resolves with the first signal received (installing the handlers if `listen` was not
    /// called, as in tests that run a job in-process).
    pub async fn received() -> &'static str {
        if RECEIVED.get().is_none() {
            listen();
        }
        let Some(rx) = RECEIVED.get() else {
            return std::future::pending().await;
        };
        let mut rx = rx.clone();
        let name = match rx.wait_for(Option::is_some).await {
            Ok(name) => name.unwrap_or("SIGTERM"),
            Err(_) => return std::future::pending().await,
        };
        name
    }
}

/// The runner's own peak resident memory (VmHWM; its children not included), reported so a job's
/// memory limit can be sized from real runs. `None` where /proc is not there.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    parse_vm_hwm(&status)
}

fn parse_vm_hwm(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DbConfig;
    use crate::engine::{Dump, DumpReport, EngineInfo, ServerInfo};
    use crate::tool::ToolCommand;

    static PANICKY: EngineInfo = EngineInfo {
        name: "panicky",
        display_name: "Panicky",
        aliases: &["panicky"],
        url_schemes: &["panicky"],
        tls_url_schemes: &[],
        default_port: 1,
        default_user: "user",
        default_database: None,
        file_extension: "bin",
        format: "bytes",
        built_for: None,
        server_scope: false,
    };

    /// An engine whose dump streams 20 MB (so parts are written) and then panics in its report,
    /// after the tool succeeded and before the upload completes.
    struct PanicsAfterTheDump;

    impl Engine for PanicsAfterTheDump {
        fn info() -> &'static EngineInfo {
            &PANICKY
        }

        fn from_env(_: &mut EnvReader<'_>) -> Self {
            PanicsAfterTheDump
        }

        async fn preflight(&self, _: &DbConfig, _: Operation) -> Result<ServerInfo, Error> {
            Ok(ServerInfo {
                server_version: "1".into(),
                client_version: "1".into(),
                ..ServerInfo::default()
            })
        }

        fn backup_command(&self, _: &DbConfig, _: &ServerInfo) -> Result<ToolCommand, Error> {
            let mut cmd = ToolCommand::new("sh");
            cmd.args(["-c", "head -c 20000000 /dev/urandom"]);
            Ok(cmd)
        }

        async fn start_dump(&self, db: &DbConfig, server: &ServerInfo) -> Result<Dump, Error> {
            let mut dump = Dump::of_command(self.backup_command(db, server)?)?;
            dump.report = Box::new(|| -> DumpReport { panic!("a bug in the engine's report") });
            Ok(dump)
        }

        async fn prepare_restore(
            &self,
            _: &DbConfig,
            _: &ServerInfo,
            _: &Manifest,
        ) -> Result<(), Error> {
            Ok(())
        }

        fn restore_command(&self, _: &DbConfig, _: &Manifest) -> Result<ToolCommand, Error> {
            Ok(ToolCommand::new("true"))
        }
    }

    fn files_under(dir: &std::path::Path) -> Vec<String> {
        let mut found = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                found.extend(files_under(&path));
            } else {
                found.push(path.display().to_string());
            }
        }
        found
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_panic_mid_job_fails_the_job_and_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let vars = [
            ("DB_HOST", "localhost".to_string()),
            ("DB_NAME", "app".to_string()),
            ("STORAGE_LOCAL_DIR", dir.path().display().to_string()),
            ("STORAGE_LOCAL_ALLOW_EPHEMERAL", "true".to_string()),
            ("COMPRESSION", "none".to_string()),
        ];
        let lookup = move |name: &str| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.clone())
        };
        let code = run::<PanicsAfterTheDump>(&lookup).await;
        assert_eq!(code, ExitCode::Internal);
        assert_eq!(files_under(dir.path()), Vec::<String>::new());
    }

    #[test]
    fn peak_rss_comes_from_vm_hwm() {
        let status =
            "Name:\tbackup-runner\nVmPeak:\t  90000 kB\nVmHWM:\t   41234 kB\nVmRSS:\t 30000 kB\n";
        assert_eq!(parse_vm_hwm(status), Some(41_234 * 1024));
        assert_eq!(parse_vm_hwm("Name:\tx\n"), None);
        assert!(peak_rss_bytes().unwrap() > 0);
    }
}
