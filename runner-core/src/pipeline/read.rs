//! Reading a stored backup back: the object's bytes are hashed and counted as they come, then
//! decrypted when the manifest says the object is encrypted, then decompressed. Verify and
//! restore read through the same stack.

use tokio::io::{AsyncBufRead, BufReader};

use super::Progress;
use crate::codec::{detachable, Decoder, Detached, Metered};
use crate::crypto::{decrypting, Keys};
use crate::error::Error;
use crate::manifest::Manifest;
use crate::storage::ObjectReader;

pub(super) type Plain = Box<dyn AsyncBufRead + Send + Unpin>;

/// The layers over one object.
pub(super) struct Reading {
    /// The dump, as the restore tool reads it, counted into `progress.raw`.
    pub decoded: Metered<Decoder<Plain>>,
    /// The stored bytes' hasher, taken back to hash what the layers above did not read.
    pub stored: Detached<Metered<ObjectReader>>,
}

impl Reading {
    /// Builds the stack. For an encrypted object this reads its header and checks the keys, so
    /// a key that does not match fails here, before anything downstream starts.
    pub async fn open(
        object: ObjectReader,
        manifest: &Manifest,
        keys: &Keys,
        location: &str,
        progress: &Progress,
    ) -> Result<Reading, Error> {
        let (bottom, stored) = detachable(Metered::hashing(object, progress.stored.clone()));
        let plain: Plain = match &manifest.encryption {
            None => Box::new(BufReader::new(bottom)),
            Some(info) => Box::new(decrypting(BufReader::new(bottom), info, keys, location).await?),
        };
        let decoder = Decoder::new(plain, manifest.compression.algorithm);
        Ok(Reading {
            decoded: Metered::counting(decoder, progress.raw.clone()),
            stored,
        })
    }

    /// Whether reading from storage failed (rather than the bytes being bad).
    pub fn storage_failed(&self) -> bool {
        self.stored.with(Metered::read_failed).unwrap_or(false)
    }

    /// Reads the rest of the object through the hasher and checks it against the manifest.
    /// `what` ends the mismatch message (what happened to the restore, say).
    pub async fn finish(
        self,
        manifest: &Manifest,
        location: &str,
        what: &str,
    ) -> Result<(), Error> {
        drop(self.decoded);
        let rest = self
            .stored
            .take()
            .ok_or_else(|| Error::Internal("the object's reader was already taken".into()))?;
        check_rest(rest, manifest, location, what).await
    }
}

/// Hashes what is left of `rest` and compares the whole with the manifest.
pub(super) async fn check_rest(
    mut rest: Metered<ObjectReader>,
    manifest: &Manifest,
    location: &str,
    what: &str,
) -> Result<(), Error> {
    if let Err(e) = tokio::io::copy(&mut rest, &mut tokio::io::sink()).await {
        return Err(Error::storage("reading the backup object failed", e));
    }
    let (bytes, sha256) = rest.finish();
    if bytes != manifest.bytes || sha256 != manifest.sha256 {
        return Err(Error::Integrity(format!(
            "{location} does not match its manifest (read {bytes} bytes with sha256 {sha256}, expected {} bytes with sha256 {}){what}",
            manifest.bytes, manifest.sha256
        )));
    }
    Ok(())
}
