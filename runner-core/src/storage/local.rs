//! A local directory as storage: the embedded default for trying the runner out, and a mounted
//! volume in containers. Objects are written under a name unique to the job (`.partial`),
//! synced, and renamed into place — without replacing an existing file unless overwriting is
//! allowed — and the directory is synced so the rename survives a crash.

use std::path::{Component, Path, PathBuf};

use bytes::Bytes;
use tokio::fs::{self, File};
use tokio::io::{AsyncWriteExt, BufReader};

use super::{ObjectReader, WriteMode};
use crate::error::Error;

const PARTIAL_SUFFIX: &str = ".partial";

pub(super) struct LocalBackend {
    dir: PathBuf,
}

fn io_error(context: String) -> impl FnOnce(std::io::Error) -> Error {
    move |e| Error::storage(&context, e)
}

impl LocalBackend {
    pub(super) fn new(dir: PathBuf) -> LocalBackend {
        LocalBackend { dir }
    }

    fn path(&self, key: &str) -> Result<PathBuf, Error> {
        let rel = Path::new(key);
        if rel.components().any(|c| !matches!(c, Component::Normal(_))) {
            return Err(Error::Storage(format!(
                "key {key:?} is not a plain relative path"
            )));
        }
        Ok(self.dir.join(rel))
    }

    pub(super) fn describe(&self, key: &str) -> String {
        self.dir.join(key).display().to_string()
    }

    pub(super) async fn preflight(&self) -> Result<(), Error> {
        fs::create_dir_all(&self.dir)
            .await
            .map_err(io_error(format!(
                "cannot create the storage directory {}",
                self.dir.display()
            )))
    }

    /// Writes and removes a file next to where `key` goes.
    pub(super) async fn probe_write(&self, key: &str) -> Result<(), Error> {
        let path = self.path(key)?;
        let dir = path.parent().unwrap_or(&self.dir).to_path_buf();
        let ctx = format!(
            "storage directory {} is not writable; nothing was dumped",
            dir.display()
        );
        fs::create_dir_all(&dir)
            .await
            .map_err(io_error(ctx.clone()))?;
        let probe = dir.join(format!(".write-probe-{}", std::process::id()));
        fs::write(&probe, b"probe").await.map_err(io_error(ctx))?;
        let _ = fs::remove_file(&probe).await;
        Ok(())
    }

    pub(super) async fn put(&self, key: &str, body: Bytes, mode: WriteMode) -> Result<(), Error> {
        let path = self.path(key)?;
        let partial = partial_path(&path);
        let ctx = format!("cannot write {}", path.display());
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)
                .await
                .map_err(io_error(ctx.clone()))?;
        }
        let written = async {
            let mut f = File::create(&partial)
                .await
                .map_err(io_error(ctx.clone()))?;
            f.write_all(&body).await.map_err(io_error(ctx.clone()))?;
            f.sync_all().await.map_err(io_error(ctx.clone()))?;
            drop(f);
            commit(&partial, &path, mode).await
        }
        .await;
        if written.is_err() {
            let _ = fs::remove_file(&partial).await;
        }
        written
    }

    pub(super) async fn get(&self, key: &str) -> Result<Option<Bytes>, Error> {
        let path = self.path(key)?;
        match fs::read(&path).await {
            Ok(data) => Ok(Some(Bytes::from(data))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::storage(
                &format!("cannot read {}", path.display()),
                e,
            )),
        }
    }

    pub(super) fn exists(&self, key: &str) -> bool {
        self.path(key).map(|p| p.is_file()).unwrap_or(false)
    }

    pub(super) async fn delete(&self, key: &str) -> Result<(), Error> {
        let path = self.path(key)?;
        match fs::remove_file(&path).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::storage(
                &format!("cannot delete {}", path.display()),
                e,
            )),
        }
    }

    pub(super) async fn open(&self, key: &str) -> Result<(ObjectReader, Option<u64>), Error> {
        let path = self.path(key)?;
        let file = File::open(&path).await.map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::Integrity(format!("backup object {} does not exist", path.display()))
            } else {
                Error::storage(&format!("cannot read {}", path.display()), e)
            }
        })?;
        let size = file.metadata().await.ok().map(|m| m.len());
        Ok((Box::new(BufReader::with_capacity(1 << 20, file)), size))
    }

    pub(super) fn upload(&self, key: &str, mode: WriteMode) -> LocalUpload {
        LocalUpload {
            target: self.path(key),
            mode,
            file: None,
        }
    }
}

/// A temporary name next to `path`, unique to this write: two jobs writing the same key never
/// share a file.
fn partial_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(
        ".{}-{:016x}{PARTIAL_SUFFIX}",
        std::process::id(),
        rand::random::<u64>()
    ));
    PathBuf::from(s)
}

/// Moves a complete, synced file into place. `WriteMode::Create` never replaces a file that is
/// there (`renameat2(RENAME_NOREPLACE)`, or a hard link where the filesystem lacks it), so of two
/// jobs writing the same key one fails; then the directory is synced.
async fn commit(partial: &Path, target: &Path, mode: WriteMode) -> Result<(), Error> {
    let ctx = format!("cannot write {}", target.display());
    let (from, to) = (partial.to_path_buf(), target.to_path_buf());
    let result = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        match mode {
            WriteMode::Overwrite => std::fs::rename(&from, &to)?,
            WriteMode::Create => rename_noreplace(&from, &to)?,
        }
        if let Some(dir) = to.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    })
    .await
    .map_err(|e| Error::Internal(format!("rename task: {e}")))?;
    match result {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            Err(super::exists_error(&target.display().to_string()))
        }
        Err(e) => Err(Error::storage(&ctx, e)),
    }
}

fn rename_noreplace(from: &Path, to: &Path) -> std::io::Result<()> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let c = |p: &Path| {
        CString::new(p.as_os_str().as_bytes())
            .map_err(|_| std::io::Error::other("path holds a NUL byte"))
    };
    let (f, t) = (c(from)?, c(to)?);
    // SAFETY: two valid NUL-terminated paths, relative to the current directory.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            f.as_ptr(),
            libc::AT_FDCWD,
            t.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let err = std::io::Error::last_os_error();
    match err.raw_os_error() {
        // No RENAME_NOREPLACE on this filesystem: a hard link fails on an existing name too.
        Some(libc::EINVAL | libc::ENOSYS | libc::EOPNOTSUPP) => {
            std::fs::hard_link(from, to)?;
            std::fs::remove_file(from)
        }
        _ => Err(err),
    }
}

pub(super) async fn remove_partial(partial: &Path) -> Result<(), Error> {
    match fs::remove_file(partial).await {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::storage(
            &format!("cannot remove {}", partial.display()),
            e,
        )),
    }
}

pub(super) struct LocalUpload {
    target: Result<PathBuf, Error>,
    mode: WriteMode,
    file: Option<(File, PathBuf)>,
}

impl LocalUpload {
    fn target(&self) -> Result<PathBuf, Error> {
        match &self.target {
            Ok(p) => Ok(p.clone()),
            Err(e) => Err(Error::Storage(e.to_string())),
        }
    }

    /// Appends a part; returns the partial file's path when this call created it.
    pub(super) async fn part(&mut self, data: Bytes) -> Result<Option<PathBuf>, Error> {
        let mut created = None;
        if self.file.is_none() {
            let target = self.target()?;
            let partial = partial_path(&target);
            let ctx = format!("cannot write {}", partial.display());
            if let Some(parent) = target.parent() {
                fs::create_dir_all(parent)
                    .await
                    .map_err(io_error(ctx.clone()))?;
            }
            let f = File::create(&partial).await.map_err(io_error(ctx))?;
            created = Some(partial.clone());
            self.file = Some((f, partial));
        }
        let (f, partial) = self.file.as_mut().expect("opened above");
        f.write_all(&data)
            .await
            .map_err(io_error(format!("cannot write {}", partial.display())))?;
        Ok(created)
    }

    /// Writes the last part, syncs and renames into place. Returns the partial path it retired.
    pub(super) async fn complete(mut self, last: Bytes) -> Result<Option<PathBuf>, Error> {
        let created = self.part(last).await?;
        let target = self.target()?;
        let (mut f, partial) = self.file.take().expect("opened by part");
        let ctx = format!("cannot write {}", target.display());
        f.flush().await.map_err(io_error(ctx.clone()))?;
        f.sync_all().await.map_err(io_error(ctx))?;
        drop(f);
        commit(&partial, &target, self.mode).await?;
        Ok(created.or(Some(partial)))
    }
}
