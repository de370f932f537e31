//! The job lifecycle: config → callbacks → preflight → pipeline → manifest → callbacks → exit
//! code. Every failure path aborts the pending upload and reports `failed`.

use std::time::Instant;

use serde_json::json;
use tracing::Instrument;

use crate::callback::{Notifier, Status};
use crate::config::{read_callback, Config, Operation};
use crate::engine::Engine;
use crate::env::EnvReader;
use crate::error::{Error, ExitCode};
use crate::manifest::{manifest_key, Manifest};
use crate::pipeline::{self, human, Progress};
use crate::secret::redact;
use crate::storage::Storage;

/// How long an interrupted job spends on its `failed` callback.
const INTERRUPTED_REPORT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// The whole `main` of an engine binary.
pub fn main<E: Engine>() -> std::process::ExitCode {
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
    let code = runtime.block_on(run::<E>(&lookup));
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
         \n  OPERATION_TYPE   backup (default) | restore | verify (BACKUP_PATH; VERIFY_RESTORE=true also restores)\
         \n  DATABASE_URL     {scheme}://user:password@host:{port}/dbname  (or DB_HOST, DB_PORT, DB_NAME, DB_USERNAME, DB_PASSWORD[_FILE])\
         \n  STORAGE_TYPE     local (default, STORAGE_LOCAL_DIR=./backups) | s3 | minio | r2 | gcs | …\
         \n  STORAGE_BUCKET, STORAGE_ENDPOINT, STORAGE_REGION, STORAGE_ACCESS_KEY_ID, STORAGE_SECRET_ACCESS_KEY[_FILE]\
         \n  BACKUP_PATH      object key (required for restore; derived from STORAGE_PREFIX when unset)\
         \n  COMPRESSION      zstd (default) | gzip | none;  COMPRESSION_LEVEL\
         \n  CALLBACK_URL, CALLBACK_SECRET[_FILE], JOB_ID, RETENTION_DAYS, LOG_FORMAT=text|json",
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
    if let Err(problems) = env.finish() {
        let err = Error::Config(problems);
        tracing::error!("{err}");
        report_config_failure(lookup, info.name, &err).await;
        return err.exit_code();
    }
    let Some(cfg) = cfg else {
        return ExitCode::Internal;
    };
    let span = tracing::info_span!(
        "job",
        job_id = %cfg.job_id,
        engine = info.name,
        operation = cfg.operation.as_str()
    );
    execute(engine, cfg).instrument(span).await
}

/// Sends the `failed` callback for a bad config when the callback settings themselves are fine.
async fn report_config_failure(
    lookup: &(dyn Fn(&str) -> Option<String> + Sync),
    engine: &'static str,
    err: &Error,
) {
    let mut env = EnvReader::new(lookup);
    let Ok(Some(callback)) = read_callback(&mut env) else {
        return;
    };
    let job_id = env.string("JOB_ID").unwrap_or_else(|| "unknown".into());
    let operation = match env.string("OPERATION_TYPE").as_deref() {
        Some(op) if op.eq_ignore_ascii_case("restore") => "restore",
        Some(op) if op.eq_ignore_ascii_case("verify") => "verify",
        _ => "backup",
    };
    Notifier::new(Some(callback), &job_id, operation, engine)
        .status(Status::Failed, &err.to_string())
        .await;
}

enum Outcome {
    Backup(Manifest),
    Restore(Manifest),
    /// The manifest, and the scratch database it was restored into (`VERIFY_RESTORE`).
    Verified(Manifest, Option<String>),
}

/// Checks the backup at `BACKUP_PATH` end to end against its manifest.
async fn verify(cfg: &Config, storage: &Storage, progress: &Progress) -> Result<Manifest, Error> {
    let key = cfg
        .backup_path
        .as_deref()
        .ok_or_else(|| Error::Internal("verify without BACKUP_PATH".into()))?;
    let manifest = pipeline::read_manifest(storage, key).await?;
    tracing::info!(
        phase = "verify",
        object = %storage.describe(key),
        bytes = manifest.bytes,
        "checking the backup against its manifest"
    );
    let _ticker = progress.report_every(cfg.progress_interval, "verify");
    pipeline::verify_object(storage, key, &manifest, progress).await?;
    Ok(manifest)
}

async fn execute<E: Engine>(engine: E, cfg: Config) -> ExitCode {
    let info = E::info();
    let op = cfg.operation;
    let notifier = Notifier::new(cfg.callback.clone(), &cfg.job_id, op.as_str(), info.name);
    let started = Instant::now();
    tracing::info!(
        phase = "start",
        "{} {} started",
        info.display_name,
        op.as_str()
    );
    notifier
        .status(
            Status::Running,
            &format!("{} {} started", info.display_name, op.as_str()),
        )
        .await;

    let storage = match Storage::new(&cfg.storage).await {
        Ok(s) => s,
        Err(e) => return fail(&notifier, None, e).await,
    };
    let work = async {
        if op == Operation::Backup {
            storage.preflight().await?;
        }
        let progress = Progress::default();
        let mut verified = None;
        if op == Operation::Verify {
            let manifest = verify(&cfg, &storage, &progress).await?;
            if !cfg.verify_restore {
                return Ok(Outcome::Verified(manifest, None));
            }
            tracing::info!(
                phase = "verify",
                "restoring into database {:?} to check the backup loads (VERIFY_RESTORE)",
                cfg.db.name
            );
            verified = Some(manifest);
        }
        // A verify's restore into the scratch database is a restore.
        let restore_op = if op == Operation::Verify {
            Operation::Restore
        } else {
            op
        };
        let mut server = engine.preflight(&cfg.db, restore_op).await?;
        if op == Operation::Backup && !server.losses.is_empty() {
            if cfg.strict_fidelity {
                return Err(Error::Loss(server.losses.join("; ")));
            }
            server.warnings.extend(server.losses.iter().cloned());
        }
        for w in &server.warnings {
            tracing::warn!(phase = "preflight", "{w}");
        }
        tracing::info!(
            phase = "preflight",
            server_version = %server.server_version,
            client_version = %server.client_version,
            size_bytes = server.size_bytes,
            "server and client tools are compatible"
        );
        let _ticker = progress.report_every(cfg.progress_interval, op.as_str());
        Ok(match op {
            Operation::Backup => Outcome::Backup(
                pipeline::backup(&engine, &cfg, &storage, &server, &progress).await?,
            ),
            Operation::Restore => {
                let verify_first = cfg.verify_first.unwrap_or(!engine.restore_is_atomic());
                Outcome::Restore(
                    pipeline::restore(&engine, &cfg, &storage, &server, &progress, verify_first)
                        .await?
                        .manifest,
                )
            }
            Operation::Verify => {
                pipeline::restore(&engine, &cfg, &storage, &server, &progress, false).await?;
                Outcome::Verified(
                    verified.expect("verified before restoring"),
                    Some(cfg.db.name.clone()),
                )
            }
        })
    };
    let result: Result<Outcome, Error> = tokio::select! {
        r = work => r,
        signal = shutdown_signal() => Err(Error::Interrupted(signal)),
    };

    let elapsed = started.elapsed();
    match result {
        Ok(Outcome::Backup(m)) => {
            let peak_rss = peak_rss_bytes();
            let location = storage.describe(&m.object_key);
            let message = format!(
                "{} backup completed: {} stored ({} dump) at {location} in {:.1}s",
                info.display_name,
                human(m.bytes),
                human(m.raw_bytes),
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
                    "bytes": m.bytes,
                    "object_key": m.object_key,
                    "manifest_key": manifest_key(&m.object_key),
                    "location": location,
                    "sha256": m.sha256,
                    "raw_bytes": m.raw_bytes,
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
                }))
                .await;
            notifier.status(Status::Success, &message).await;
            ExitCode::Success
        }
        Ok(Outcome::Restore(m)) => {
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
            notifier.status(Status::Success, &message).await;
            ExitCode::Success
        }
        Ok(Outcome::Verified(m, scratch)) => {
            let restored = match &scratch {
                Some(db) => format!(", and it restores into database {db:?}"),
                None => String::new(),
            };
            let message = format!(
                "{} backup verified: {} matches its manifest (sha256 {}, {} stored, {} dump, taken {} from {}){restored} in {:.1}s",
                info.display_name,
                storage.describe(&m.object_key),
                m.sha256,
                human(m.bytes),
                human(m.raw_bytes),
                m.finished_at.format("%Y-%m-%dT%H:%M:%SZ"),
                m.server_version,
                elapsed.as_secs_f64()
            );
            tracing::info!(phase = "done", sha256 = %m.sha256, bytes = m.bytes, "{message}");
            notifier
                .metadata(json!({
                    "verified": true,
                    "object_key": m.object_key,
                    "bytes": m.bytes,
                    "raw_bytes": m.raw_bytes,
                    "sha256": m.sha256,
                    "taken_at": m.finished_at,
                    "server_version": m.server_version,
                    "restored_into": scratch,
                }))
                .await;
            notifier.status(Status::Success, &message).await;
            ExitCode::Success
        }
        Err(e) => fail(&notifier, Some(&storage), e).await,
    }
}

async fn fail(notifier: &Notifier, storage: Option<&Storage>, err: Error) -> ExitCode {
    if let Some(storage) = storage {
        storage.abort_pending().await;
    }
    let message = redact(&err.to_string());
    let code = err.exit_code();
    tracing::error!(phase = "failed", exit_code = code as u8, "{message}");
    if matches!(err, Error::Interrupted(_)) {
        // The orchestrator's grace period is short: the report gets a few seconds, not retries.
        let report = notifier.status(Status::Failed, &message);
        if tokio::time::timeout(INTERRUPTED_REPORT_TIMEOUT, report)
            .await
            .is_err()
        {
            tracing::warn!("the failed callback did not complete before the shutdown deadline");
        }
    } else {
        notifier.status(Status::Failed, &message).await;
    }
    code
}

async fn shutdown_signal() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
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

    #[test]
    fn peak_rss_comes_from_vm_hwm() {
        let status =
            "Name:\tbackup-runner\nVmPeak:\t  90000 kB\nVmHWM:\t   41234 kB\nVmRSS:\t 30000 kB\n";
        assert_eq!(parse_vm_hwm(status), Some(41_234 * 1024));
        assert_eq!(parse_vm_hwm("Name:\tx\n"), None);
        assert!(peak_rss_bytes().unwrap() > 0);
    }
}
