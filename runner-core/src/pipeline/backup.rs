use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use chrono::Utc;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt};

use super::{check_part_size, choose_part_size, human, parts_in_flight, Progress};
use crate::codec::{compress_on_thread, Metered};
use crate::config::Operation;
use crate::config::{Config, StorageConfig};
use crate::engine::{with_hint, Dump, DumpFormat, Engine, ServerInfo};
use crate::error::Error;
use crate::keys::{backup_key, KeyParts};
use crate::manifest::{
    manifest_key, CompressionInfo, Manifest, MANIFEST_VERSION, MANIFEST_VERSION_ENCRYPTED,
};
use crate::storage::{exists_error, Storage, Upload, WriteMode};
use crate::tool::RunningTool;

/// Dumps the database into storage and writes the manifest. On error the caller aborts the
/// pending upload; no manifest is written, so the failed backup is never mistaken for one.
pub async fn backup<E: Engine>(
    engine: &E,
    cfg: &Config,
    storage: &Storage,
    server: &ServerInfo,
    progress: &Progress,
) -> Result<Manifest, Error> {
    let info = E::info();
    let started_at = Utc::now();
    let format = server.format.unwrap_or(DumpFormat {
        name: info.format,
        extension: info.file_extension,
    });
    let key = backup_key(
        cfg.backup_path.as_deref(),
        cfg.key_prefix.as_deref(),
        KeyParts {
            engine: info.name,
            database: &cfg.db.name,
            job_id: &cfg.job_id,
            extension: format.extension,
        },
        cfg.compression,
        started_at,
    );
    let manifest_key = manifest_key(&key);
    let mode = claim(storage, &key, &manifest_key, cfg.overwrite).await?;
    let target = Target {
        key,
        mode,
        format,
        database: cfg.db.name.clone(),
        started_at,
        share: 1,
    };
    let manifest = store(engine, cfg, storage, server, progress, target, || {
        engine.start_dump(&cfg.db, server)
    })
    .await?;
    storage
        .put(&manifest_key, Bytes::from(manifest.to_json()), mode)
        .await?;
    Ok(manifest)
}

/// Where and how one dump is stored.
pub(super) struct Target {
    pub key: String,
    pub mode: WriteMode,
    pub format: DumpFormat,
    /// The manifest's `database`.
    pub database: String,
    pub started_at: chrono::DateTime<Utc>,
    /// How many dumps share the parts-in-flight budget at once (a set's `SERVER_PARALLELISM`).
    pub share: usize,
}

/// Streams one dump (started by `start` once the object is claimed and writable) through
/// compression, encryption and the checksum into an upload, and returns its manifest, not yet
/// written.
pub(super) async fn store<E, F, Fut>(
    engine: &E,
    cfg: &Config,
    storage: &Storage,
    server: &ServerInfo,
    progress: &Progress,
    target: Target,
    start: F,
) -> Result<Manifest, Error>
where
    E: Engine,
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<Dump, Error>>,
{
    let info = E::info();
    let Target {
        key,
        mode,
        format,
        database,
        started_at,
        share,
    } = target;
    let (override_size, concurrency) = match &cfg.storage {
        StorageConfig::S3(s3) => (s3.part_size, s3.concurrency),
        StorageConfig::Local { .. } => (None, 1),
    };
    let part_size = choose_part_size(override_size, server.size_bytes);
    check_part_size(part_size, override_size.is_some(), server.size_bytes)?;
    storage.probe_write(&key).await?;
    let in_flight = (parts_in_flight(part_size, concurrency) / share.max(1)).max(1);
    // Set up before the dump starts: a backup that cannot be encrypted dumps nothing.
    let encryptor = cfg.encryption.as_ref().map(|e| e.encryptor()).transpose()?;
    if let Some(e) = &cfg.encryption {
        tracing::info!(
            phase = "dump",
            "encrypting with age for {}",
            e.info().describe()
        );
    }
    tracing::info!(
        phase = "dump",
        object = %storage.describe(&key),
        part_size,
        parts_in_flight = in_flight,
        compression = ?cfg.compression.algorithm,
        compression_level = cfg.compression.level,
        compression_threads = cfg.compression.threads,
        "starting the dump ({} per part)",
        human(part_size)
    );

    let Dump {
        stream: dump,
        tools,
        report,
    } = start().await?;
    let dump = Metered::counting(dump, progress.raw.clone());
    let mut stream = compress_on_thread(dump, cfg.compression, encryptor)
        .map_err(|e| Error::Internal(format!("cannot start the compressor: {e}")))?;

    let mut upload = storage.upload(&key, part_size, in_flight, mode);
    let mut stall = StallWatch::new(progress.raw.clone(), cfg.stall_timeout, info.display_name);
    let mut hasher = Sha256::new();
    let mut stored: u64 = 0;
    // A full part is held back until the next byte shows it is not the last one, then handed
    // over at once, so a held part and a filling part rarely share memory.
    let mut held: Option<Bytes> = None;
    let last = loop {
        let mut part = BytesMut::with_capacity(part_size as usize);
        let mut result = fill_watching(&mut stream, &mut part, 1, &mut upload, &mut stall).await?;
        if result.is_ok() && !part.is_empty() {
            if let Some(previous) = held.take() {
                upload.part(previous).await?;
            }
            result = fill_watching(
                &mut stream,
                &mut part,
                part_size as usize,
                &mut upload,
                &mut stall,
            )
            .await?;
        }
        if let Err(e) = result {
            // A broken stream usually means the tool died: its status explains more.
            drop(stream);
            wait_all(engine, tools).await?;
            return Err(Error::Internal(format!(
                "reading the dump stream failed: {e}"
            )));
        }
        if part.is_empty() {
            break held.take().unwrap_or_default();
        }
        hasher.update(&part);
        stored += part.len() as u64;
        progress
            .stored
            .fetch_add(part.len() as u64, Ordering::Relaxed);
        if part.len() as u64 == part_size {
            held = Some(part.freeze());
        } else {
            break part.freeze();
        }
    };
    drop(stream);

    // The pipe's end says nothing about success: the dump tools' exit statuses do.
    wait_all(engine, tools).await?;
    let report = report();
    for w in &report.warnings {
        tracing::warn!(phase = "dump", "{w}");
    }
    let raw_bytes = progress.raw.load(Ordering::Relaxed);
    if raw_bytes == 0 {
        return Err(Error::Tool {
            tool: info.display_name.to_string() + " dump",
            status: "exit code 0".into(),
            detail: "the dump tool wrote no data; refusing to store an empty backup".into(),
        });
    }

    // A backup being replaced keeps its manifest until the new object is committed: a failure
    // before that point leaves the old backup whole.
    let parts = upload.complete(last).await?;

    let finished_at = Utc::now();
    let manifest = Manifest {
        manifest_version: if cfg.encryption.is_some() {
            MANIFEST_VERSION_ENCRYPTED
        } else {
            MANIFEST_VERSION
        },
        job_id: cfg.job_id.clone(),
        engine: info.name.to_string(),
        engine_version: info.built_for.map(str::to_string),
        server_version: server.server_version.clone(),
        client_version: server.client_version.clone(),
        runner_version: env!("CARGO_PKG_VERSION").to_string(),
        database,
        format: format.name.to_string(),
        compression: CompressionInfo {
            algorithm: cfg.compression.algorithm,
            level: cfg.compression.level,
        },
        object_key: key,
        bytes: stored,
        raw_bytes,
        sha256: hex::encode(hasher.finalize()),
        part_size,
        parts,
        started_at,
        finished_at,
        duration_ms: (finished_at - started_at).num_milliseconds().max(0) as u64,
        retention_days: cfg.retention_days,
        expires_at: cfg
            .retention_days
            .map(|d| finished_at + chrono::Duration::days(d as i64)),
        warnings: server
            .warnings
            .iter()
            .chain(&report.warnings)
            .cloned()
            .collect(),
        engine_details: report.details,
        encryption: cfg.encryption.as_ref().map(|e| e.info()),
        set: None,
    };
    Ok(manifest)
}

/// Decides how the backup may be written at `key`: a backup (or a manifest-less object) already
/// there is kept unless `BACKUP_OVERWRITE` allows replacing it. Checked before the dump, and again
/// atomically when the object and the manifest are committed.
pub(super) async fn claim(
    storage: &Storage,
    key: &str,
    manifest_key: &str,
    overwrite: bool,
) -> Result<WriteMode, Error> {
    let has_manifest = storage.exists(manifest_key).await?;
    let has_object = storage.exists(key).await?;
    if !has_manifest && !has_object {
        return Ok(WriteMode::Create);
    }
    if overwrite {
        tracing::warn!(
            phase = "preflight",
            object = %storage.describe(key),
            "replacing the backup at this key (BACKUP_OVERWRITE=true); the old one stays whole until the new one is committed"
        );
        return Ok(WriteMode::Overwrite);
    }
    if has_object && !has_manifest {
        return Err(Error::Conflict(format!(
            "{} holds an object without a manifest (an unfinished backup, or one being written by another job right now); it is kept. Delete it, choose another BACKUP_PATH, or set BACKUP_OVERWRITE=true",
            storage.describe(key)
        )));
    }
    Err(exists_error(&storage.describe(key)))
}

/// Fails a dump whose tool sends nothing for `timeout` while the pipeline waits for it (a lock
/// held by another session, a server that stopped sending). Time spent waiting on the upload
/// does not count.
struct StallWatch {
    raw: Arc<AtomicU64>,
    timeout: Option<Duration>,
    tool: &'static str,
}

impl StallWatch {
    fn new(raw: Arc<AtomicU64>, timeout: Option<Duration>, tool: &'static str) -> StallWatch {
        StallWatch { raw, timeout, tool }
    }

    /// Resolves once no byte has come for the timeout; never when it is disabled.
    async fn stalled(&mut self) -> Error {
        let Some(timeout) = self.timeout else {
            return std::future::pending().await;
        };
        let tick = (timeout / 10).clamp(Duration::from_millis(100), Duration::from_secs(1));
        let mut seen = self.raw.load(Ordering::Relaxed);
        let mut since = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(tick).await;
            let now = self.raw.load(Ordering::Relaxed);
            if now != seen {
                seen = now;
                since = tokio::time::Instant::now();
            } else if since.elapsed() >= timeout {
                return Error::Stalled(format!(
                    "no data from the {} dump for {} s (DUMP_STALL_TIMEOUT_SECS) after {}: a lock held by another session, or a server that stopped sending; the dump was stopped and nothing was kept",
                    self.tool,
                    timeout.as_secs(),
                    human(now)
                ));
            }
        }
    }
}

/// Waits for every tool behind the stream; the first failure (in stream order) is the error.
async fn wait_all<E: Engine>(engine: &E, tools: Vec<RunningTool>) -> Result<(), Error> {
    let mut first = None;
    for tool in tools {
        if let Err(e) = tool.wait().await {
            first.get_or_insert(with_hint(engine, Operation::Backup, e));
        }
    }
    first.map_or(Ok(()), Err)
}

/// `fill`, ended early by a part upload that fails meanwhile, or by a stalled dump.
async fn fill_watching<R: AsyncRead + Unpin>(
    stream: &mut R,
    buf: &mut BytesMut,
    until: usize,
    upload: &mut Upload<'_>,
    stall: &mut StallWatch,
) -> Result<std::io::Result<()>, Error> {
    tokio::select! {
        read = fill(stream, buf, until) => Ok(read),
        failed = upload.failure() => Err(failed),
        stalled = stall.stalled() => Err(stalled),
    }
}

/// Reads into `buf` until it holds `until` bytes or the stream ends.
async fn fill<R: AsyncRead + Unpin>(
    stream: &mut R,
    buf: &mut BytesMut,
    until: usize,
) -> std::io::Result<()> {
    while buf.len() < until {
        // Limited, so a part never grows past its size whatever the buffer's capacity.
        let room = until - buf.len();
        if stream.read_buf(&mut (&mut *buf).limit(room)).await? == 0 {
            break;
        }
    }
    Ok(())
}
