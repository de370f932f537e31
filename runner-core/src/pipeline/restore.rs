use std::process::Stdio;

use tokio::io::{AsyncWriteExt, BufReader};

use super::read::Reading;
use super::verify::{check_size, read_manifest, verify_object};
use super::Progress;
use crate::config::Config;
use crate::config::Operation;
use crate::engine::{with_hint, Engine, ServerInfo, StreamFilter};
use crate::error::Error;
use crate::manifest::Manifest;
use crate::storage::Storage;
use crate::tool::ToolCommand;

const DECODED_BUFFER: usize = 256 << 10;

pub struct RestoreOutcome {
    pub manifest: Manifest,
}

/// Streams a backup into the restore tool. The object is hashed as it flows and the tool's
/// input is closed only after the checksum and size match the manifest; on a mismatch the tool
/// is killed before it sees the end of its input.
pub async fn restore<E: Engine>(
    engine: &E,
    cfg: &Config,
    storage: &Storage,
    server: &ServerInfo,
    progress: &Progress,
    verify_first: bool,
) -> Result<RestoreOutcome, Error> {
    let key = cfg
        .backup_path
        .as_deref()
        .ok_or_else(|| Error::Internal("restore without BACKUP_PATH".into()))?;
    let manifest = read_manifest(storage, key).await?;
    super::refuse_set_as_database(&manifest, &storage.describe(key))?;
    crate::checks::check_backup::<E>(&storage.describe(key), &manifest)?;
    restore_object(
        engine,
        cfg,
        storage,
        server,
        progress,
        verify_first,
        (key, &manifest),
    )
    .await?;
    Ok(RestoreOutcome { manifest })
}

/// Restores the object at `key` into `cfg.db`, checked against `manifest`, which the caller
/// read and checked. `key` is where the backup was asked for (`BACKUP_PATH`), never the key the
/// manifest records: a manifest copied next to another object must not restore the original.
pub(super) async fn restore_object<E: Engine>(
    engine: &E,
    cfg: &Config,
    storage: &Storage,
    server: &ServerInfo,
    progress: &Progress,
    verify_first: bool,
    (key, manifest): (&str, &Manifest),
) -> Result<(), Error> {
    tracing::info!(
        phase = "restore",
        object = %storage.describe(key),
        bytes = manifest.bytes,
        server_version = %manifest.server_version,
        taken_at = %manifest.finished_at,
        "restoring a backup of database {:?} into {:?}",
        manifest.database,
        cfg.db.name
    );
    // An engine whose restore is not atomic would be left half-restored by a corrupt object:
    // read it all once before touching the target.
    if verify_first {
        tracing::info!(
            phase = "verify",
            "checking the whole object before restoring (RESTORE_VERIFY_FIRST)"
        );
        verify_object(storage, key, manifest, &cfg.keys, &Progress::default()).await?;
        tracing::info!(phase = "verify", "the object matches its manifest");
    }
    // Everything that can fail without touching the target comes first: the object is open
    // and the engine's checks and rewrites are ready before the target is prepared.
    let (object, size) = storage.open(key).await?;
    check_size(storage, key, size, manifest)?;
    let location = storage.describe(key);
    // For an encrypted object this checks the key against its header.
    let reading = Reading::open(object, manifest, &cfg.keys, &location, progress).await?;
    let command = engine.restore_command(&cfg.db, manifest)?;
    let filter = engine.restore_filter(&cfg.db, manifest)?;
    engine.prepare_restore(&cfg.db, server, manifest).await?;
    load(engine, &location, reading, manifest, command, filter)
        .await
        .map_err(|e| {
            // A set's database is recreated by its restore (PostgreSQL: --create, outside one
            // transaction), so a failure leaves it partial whatever the engine's default.
            if engine.restore_is_atomic() && !manifest.is_set_member() {
                e
            } else {
                e.with_note(&format!(
                    "the restore had started: database {:?} is now partial and should not be used; restore again (RESTORE_CLEAN=true) or drop it",
                    cfg.db.name
                ))
            }
        })
}

/// Streams the object into the restore tool, closing its input only when the object matched.
async fn load<E: Engine>(
    engine: &E,
    location: &str,
    mut reading: Reading,
    manifest: &Manifest,
    command: ToolCommand,
    filter: Option<Box<dyn StreamFilter>>,
) -> Result<(), Error> {
    let info = E::info();
    tracing::info!(phase = "restore", "running {}", command.display());
    let mut tool = command.spawn(Stdio::piped(), Stdio::null())?;
    let mut stdin = tool.take_stdin();

    let copied = {
        let mut reader = BufReader::with_capacity(DECODED_BUFFER, &mut reading.decoded);
        match filter {
            None => tokio::io::copy_buf(&mut reader, &mut stdin).await,
            Some(filter) => copy_filtered(&mut reader, &mut stdin, filter).await,
        }
    };
    // A broken pipe means the tool stopped reading; anything else is our input failing.
    let tool_stopped = matches!(&copied, Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe);
    if let Some(e) = copied.err().filter(|_| !tool_stopped) {
        let storage_failed = reading.storage_failed();
        tool.kill().await;
        return Err(if storage_failed {
            Error::storage(&format!("reading {location} failed"), e)
        } else {
            Error::Integrity(format!(
                "{location} cannot be {} ({e}): the object is corrupt; the restore was stopped before its input ended",
                if manifest.encryption.is_some() { "decrypted and decompressed" } else { "decompressed" }
            ))
        });
    }

    // Hash the rest of the object too (what follows the compressed stream, or what the tool
    // did not read): the checksum covers the whole object and explains a tool that choked.
    if let Err(e) = reading
        .finish(
            manifest,
            location,
            ": the restore was stopped before its input ended",
        )
        .await
    {
        tool.kill().await;
        return Err(e);
    }

    if !tool_stopped {
        stdin
            .shutdown()
            .await
            .map_err(|e| Error::Internal(format!("closing the restore tool's input: {e}")))?;
    }
    drop(stdin);
    tool.wait()
        .await
        .map_err(|e| with_hint(engine, Operation::Restore, e))?;
    if tool_stopped {
        return Err(Error::Internal(format!(
            "{} stopped reading its input but exited successfully",
            info.display_name
        )));
    }
    Ok(())
}

/// `copy_buf` through an engine's rewrite.
async fn copy_filtered<R, W>(
    reader: &mut R,
    writer: &mut W,
    mut filter: Box<dyn StreamFilter>,
) -> std::io::Result<u64>
where
    R: tokio::io::AsyncBufRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::AsyncBufReadExt;
    let mut out = Vec::with_capacity(DECODED_BUFFER);
    let mut written = 0u64;
    loop {
        let chunk = reader.fill_buf().await?;
        let n = chunk.len();
        if n == 0 {
            filter.finish(&mut out);
        } else {
            filter.filter(chunk, &mut out);
        }
        reader.consume(n);
        writer.write_all(&out).await?;
        written += out.len() as u64;
        out.clear();
        if n == 0 {
            return Ok(written);
        }
    }
}
