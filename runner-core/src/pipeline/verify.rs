//! Checks a stored backup end to end without restoring it: the manifest, the object's size and
//! sha256, and that it decompresses to the dump size the manifest records.

use super::read::{check_rest, Reading};
use super::Progress;
use crate::codec::Metered;
use crate::config::Config;
use crate::crypto::{missing_key, Keys};
use crate::error::Error;
use crate::manifest::{manifest_key, Manifest};
use crate::storage::Storage;

/// Reads the manifest of the backup at `key`; a missing manifest means there is no backup.
pub async fn read_manifest(storage: &Storage, key: &str) -> Result<Manifest, Error> {
    let mkey = manifest_key(key);
    let Some(bytes) = storage.get(&mkey).await? else {
        let object_exists = storage.exists(key).await?;
        return Err(Error::Integrity(if object_exists {
            format!(
                "{} has no manifest ({} is missing): the backup never completed, so it is not a backup",
                storage.describe(key),
                storage.describe(&mkey)
            )
        } else {
            format!(
                "no backup at {}: check BACKUP_PATH (the object key reported by the backup)",
                storage.describe(key)
            )
        }));
    };
    Manifest::from_json(&bytes)
        .map_err(|e| Error::Integrity(format!("{}: {e}", storage.describe(&mkey))))
}

/// Refuses an object whose size differs from its manifest, before anything reads it.
pub fn check_size(
    storage: &Storage,
    key: &str,
    size: Option<u64>,
    manifest: &Manifest,
) -> Result<(), Error> {
    match size {
        Some(size) if size != manifest.bytes => Err(Error::Integrity(format!(
            "{} is {size} bytes but its manifest says {}: the object is truncated or was replaced; nothing was restored",
            storage.describe(key),
            manifest.bytes
        ))),
        _ => Ok(()),
    }
}

/// `OPERATION_TYPE=verify`: checks the backup at `BACKUP_PATH` end to end against its manifest.
pub async fn verify(
    cfg: &Config,
    storage: &Storage,
    progress: &Progress,
) -> Result<(Manifest, Checked), Error> {
    let key = backup_path(cfg)?;
    let manifest = read_manifest(storage, key).await?;
    tracing::info!(
        phase = "verify",
        object = %storage.describe(key),
        bytes = manifest.bytes,
        encrypted = manifest.encryption.is_some(),
        "checking the backup against its manifest"
    );
    let _ticker = progress.report_every(cfg.progress_interval, "verify");
    let mut checked = verify_object(storage, key, &manifest, &cfg.keys, progress).await?;
    // A whole-server set: every database's object too, against the set's manifest.
    for m in manifest.set.iter().flat_map(|s| &s.members) {
        tracing::info!(
            phase = "verify",
            object = %storage.describe(&m.object_key),
            database = %m.database,
            "checking a database of the set against the set's manifest"
        );
        if verify_object(storage, &m.object_key, m, &cfg.keys, progress).await?
            == Checked::StoredBytesOnly
        {
            checked = Checked::StoredBytesOnly;
        }
    }
    Ok((manifest, checked))
}

/// Refuses, before the database is contacted, a restore of an encrypted backup with no key.
/// A manifest that cannot be read here is left to the restore, which reads it again after the
/// database's checks and reports it in the usual order.
pub async fn check_keys(cfg: &Config, storage: &Storage) -> Result<(), Error> {
    let key = backup_path(cfg)?;
    let manifest = match read_manifest(storage, key).await {
        Ok(m) => m,
        Err(_) => return Ok(()),
    };
    if cfg.scope == crate::config::Scope::Database {
        super::refuse_set_as_database(&manifest, &storage.describe(key))?;
    }
    match manifest.encryption {
        Some(info) if cfg.keys.is_empty() => Err(missing_key(&info, &storage.describe(key))),
        _ => Ok(()),
    }
}

fn backup_path(cfg: &Config) -> Result<&str, Error> {
    cfg.backup_path
        .as_deref()
        .ok_or_else(|| Error::Internal("no BACKUP_PATH to read".into()))
}

/// How far a verify could check an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checked {
    /// Checksum and size, decryption (when encrypted) and decompression to the recorded size.
    Fully,
    /// Encrypted, and no key was given: the stored bytes' checksum and size only.
    StoredBytesOnly,
}

/// Reads a small object (a set's globals script) whole, decrypted and decompressed, and checks
/// it against its manifest before returning it: nothing unverified is ever replayed.
pub async fn read_verified(
    storage: &Storage,
    key: &str,
    manifest: &Manifest,
    keys: &Keys,
    limit: u64,
) -> Result<Vec<u8>, Error> {
    use tokio::io::AsyncReadExt;
    let location = storage.describe(key);
    if manifest.raw_bytes > limit {
        return Err(Error::Integrity(format!(
            "{location} records {} bytes, more than the {limit} a globals script may hold",
            manifest.raw_bytes
        )));
    }
    if let (Some(info), true) = (&manifest.encryption, keys.is_empty()) {
        return Err(missing_key(info, &location));
    }
    let (object, size) = storage.open(key).await?;
    check_size(storage, key, size, manifest)?;
    let mut reading =
        Reading::open(object, manifest, keys, &location, &Progress::default()).await?;
    let mut out = Vec::with_capacity(manifest.raw_bytes as usize);
    let read = (&mut reading.decoded)
        .take(limit + 1)
        .read_to_end(&mut out)
        .await;
    let storage_failed = reading.storage_failed();
    if let Err(e) = read {
        return Err(if storage_failed {
            Error::storage(&format!("reading {location} failed"), e)
        } else {
            Error::Integrity(format!("{location} cannot be decoded ({e}): it is corrupt"))
        });
    }
    reading.finish(manifest, &location, "").await?;
    if out.len() as u64 != manifest.raw_bytes {
        return Err(Error::Integrity(format!(
            "{location} decompresses to {} bytes but its manifest says {}",
            out.len(),
            manifest.raw_bytes
        )));
    }
    Ok(out)
}

/// Streams the whole object through the checksum, the decryption (when the object is encrypted
/// and a key is given) and the decompressor.
pub async fn verify_object(
    storage: &Storage,
    key: &str,
    manifest: &Manifest,
    keys: &Keys,
    progress: &Progress,
) -> Result<Checked, Error> {
    let location = storage.describe(key);
    let (object, size) = storage.open(key).await?;
    check_size(storage, key, size, manifest)?;
    if manifest.encryption.is_some() && keys.is_empty() {
        let metered = Metered::hashing(object, progress.stored.clone());
        check_rest(metered, manifest, &location, "").await?;
        return Ok(Checked::StoredBytesOnly);
    }
    let mut reading = Reading::open(object, manifest, keys, &location, progress).await?;
    let decompressed = tokio::io::copy(&mut reading.decoded, &mut tokio::io::sink()).await;
    let storage_failed = reading.storage_failed();
    reading.finish(manifest, &location, "").await?;
    let raw = match decompressed {
        Ok(raw) => raw,
        Err(e) if storage_failed => {
            return Err(Error::storage(&format!("reading {location} failed"), e))
        }
        Err(e) => {
            return Err(Error::Integrity(format!(
                "{location} matches its checksum but cannot be {} ({e}): it was corrupt when it was stored",
                if manifest.encryption.is_some() { "decrypted and decompressed" } else { "decompressed" }
            )))
        }
    };
    if raw != manifest.raw_bytes {
        return Err(Error::Integrity(format!(
            "{location} decompresses to {raw} bytes but its manifest says {}",
            manifest.raw_bytes
        )));
    }
    Ok(Checked::Fully)
}
