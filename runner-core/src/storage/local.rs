//! A local directory as storage: the embedded default for trying the runner out, and a mounted
//! volume in containers. Objects are written under a `.partial` name and renamed when complete.

use std::path::{Component, Path, PathBuf};

use bytes::Bytes;
use tokio::fs::{self, File};
use tokio::io::{AsyncWriteExt, BufReader};

use super::ObjectReader;
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

    pub(super) async fn put(&self, key: &str, body: Bytes) -> Result<(), Error> {
        let path = self.path(key)?;
        let partial = partial_path(&path);
        let ctx = format!("cannot write {}", path.display());
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)
                .await
                .map_err(io_error(ctx.clone()))?;
        }
        let mut f = File::create(&partial)
            .await
            .map_err(io_error(ctx.clone()))?;
        f.write_all(&body).await.map_err(io_error(ctx.clone()))?;
        f.sync_all().await.map_err(io_error(ctx.clone()))?;
        fs::rename(&partial, &path).await.map_err(io_error(ctx))
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

    pub(super) fn upload(&self, key: &str) -> LocalUpload {
        LocalUpload {
            target: self.path(key),
            file: None,
        }
    }
}

fn partial_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(PARTIAL_SUFFIX);
    PathBuf::from(s)
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
        f.sync_all().await.map_err(io_error(ctx.clone()))?;
        drop(f);
        fs::rename(&partial, &target).await.map_err(io_error(ctx))?;
        Ok(created.or(Some(partial)))
    }
}
