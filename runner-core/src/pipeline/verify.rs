//! Checks a stored backup end to end without restoring it: the manifest, the object's size and
//! sha256, and that it decompresses to the dump size the manifest records.

use tokio::io::BufReader;

use super::Progress;
use crate::codec::{Decoder, Metered};
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

/// Streams the whole object through the checksum and the decompressor.
pub async fn verify_object(
    storage: &Storage,
    key: &str,
    manifest: &Manifest,
    progress: &Progress,
) -> Result<(), Error> {
    let (object, size) = storage.open(key).await?;
    check_size(storage, key, size, manifest)?;
    let metered = Metered::hashing(object, progress.stored.clone());
    let decoder = Decoder::new(BufReader::new(metered), manifest.compression.algorithm);
    let mut decoded = Metered::counting(decoder, progress.raw.clone());
    let decompressed = tokio::io::copy(&mut decoded, &mut tokio::io::sink()).await;
    let storage_failed = decoded.get_ref().get_ref().get_ref().read_failed();
    let mut rest = decoded.into_inner().into_inner();
    if let Err(e) = tokio::io::copy(&mut rest, &mut tokio::io::sink()).await {
        return Err(Error::storage("reading the backup object failed", e));
    }
    let (bytes, sha256) = rest.into_inner().finish();
    if bytes != manifest.bytes || sha256 != manifest.sha256 {
        return Err(Error::Integrity(format!(
            "{} does not match its manifest (read {bytes} bytes with sha256 {sha256}, expected {} bytes with sha256 {})",
            storage.describe(key),
            manifest.bytes,
            manifest.sha256
        )));
    }
    let raw = match decompressed {
        Ok(raw) => raw,
        Err(e) if storage_failed => {
            return Err(Error::storage(
                &format!("reading {} failed", storage.describe(key)),
                e,
            ))
        }
        Err(e) => {
            return Err(Error::Integrity(format!(
                "{} matches its checksum but cannot be decompressed ({e}): it was corrupt when it was stored",
                storage.describe(key)
            )))
        }
    };
    if raw != manifest.raw_bytes {
        return Err(Error::Integrity(format!(
            "{} decompresses to {raw} bytes but its manifest says {}",
            storage.describe(key),
            manifest.raw_bytes
        )));
    }
    Ok(())
}
