//! A local directory as storage: the embedded default for trying the runner out, and a mounted
//! volume in containers. Objects are written under a name unique to the write
//! (`<key>.<upload id>.partial`), synced, and renamed into place — without replacing an existing
//! file unless overwriting is allowed — and the directory is synced so the rename survives a
//! crash. A `.partial` file is an incomplete upload: listed by `list_uploads`, removed by abort.

use std::ops::Range;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use tokio::fs::{self, File};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt, BufReader};

use super::{
    MultipartUpload, ObjectMeta, ObjectReader, ObjectStore, RequestCounter, RequestCounts,
    RequestKind, UploadMeta, WriteMode,
};
use crate::error::Error;

const PARTIAL_SUFFIX: &str = ".partial";
/// The probe file `probe_write` writes and removes.
const PROBE_PREFIX: &str = ".write-probe-";

pub struct LocalStore {
    dir: PathBuf,
    requests: Arc<RequestCounter>,
}

fn io_error(context: String) -> impl FnOnce(std::io::Error) -> Error {
    move |e| Error::storage(&context, e)
}

/// Whether an error means no object is at the path: nothing is there, a directory is (the key is
/// only a prefix of other keys), or the path runs through a file (a key under an object's key).
fn is_absent(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::{IsADirectory, NotADirectory, NotFound};
    matches!(e.kind(), NotFound | IsADirectory | NotADirectory)
}

fn modified(meta: &std::fs::Metadata) -> DateTime<Utc> {
    meta.modified()
        .map(DateTime::<Utc>::from)
        .unwrap_or(DateTime::<Utc>::UNIX_EPOCH)
}

fn object_meta(key: String, meta: &std::fs::Metadata) -> ObjectMeta {
    let at = modified(meta);
    ObjectMeta {
        version: format!(
            "{}-{}",
            meta.len(),
            at.timestamp_nanos_opt().unwrap_or_default()
        ),
        key,
        size: meta.len(),
        last_modified: at,
    }
}

impl LocalStore {
    pub fn new(dir: PathBuf) -> LocalStore {
        LocalStore {
            dir,
            requests: Arc::default(),
        }
    }

    fn path(&self, key: &str) -> Result<PathBuf, Error> {
        let rel = Path::new(key);
        if key.is_empty() || rel.components().any(|c| !matches!(c, Component::Normal(_))) {
            return Err(Error::Storage(format!(
                "key {key:?} is not a plain relative path"
            )));
        }
        Ok(self.dir.join(rel))
    }

    /// Every file under `prefix`'s directory whose key starts with `prefix`: the objects and,
    /// separately, the incomplete uploads (`.partial` files). Keys use `/` and sort.
    async fn walk(&self, prefix: &str) -> Result<(Vec<ObjectMeta>, Vec<UploadMeta>), Error> {
        let dir = self.dir.clone();
        let prefix = prefix.to_string();
        let found = tokio::task::spawn_blocking(move || walk_blocking(&dir, &prefix))
            .await
            .map_err(|e| Error::Internal(format!("listing task: {e}")))?;
        found.map_err(|e| Error::storage(&format!("cannot list {}", self.dir.display()), e))
    }
}

fn walk_blocking(root: &Path, prefix: &str) -> std::io::Result<(Vec<ObjectMeta>, Vec<UploadMeta>)> {
    // Start at the deepest directory the prefix names, then filter by the whole prefix.
    let start_rel = match prefix.rfind('/') {
        Some(i) => &prefix[..i],
        None => "",
    };
    let mut objects = Vec::new();
    let mut uploads = Vec::new();
    let mut stack = vec![(root.join(start_rel), start_rel.to_string())];
    while let Some((dir, rel)) = stack.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => continue,
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                continue;
            };
            let key = if rel.is_empty() {
                name.clone()
            } else {
                format!("{rel}/{name}")
            };
            let meta = match entry.metadata() {
                Ok(m) => m,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            if meta.is_dir() {
                // Descend only where keys can still match.
                let dir_key = format!("{key}/");
                if dir_key.starts_with(prefix) || prefix.starts_with(&dir_key) {
                    stack.push((entry.path(), key));
                }
                continue;
            }
            if !meta.is_file() || !key.starts_with(prefix) || name.starts_with(PROBE_PREFIX) {
                continue;
            }
            match parse_partial(&key) {
                Some((target, upload_id)) => uploads.push(UploadMeta {
                    key: target.to_string(),
                    upload_id: upload_id.to_string(),
                    initiated: modified(&meta),
                }),
                None => objects.push(object_meta(key, &meta)),
            }
        }
    }
    objects.sort_by(|a, b| a.key.cmp(&b.key));
    uploads.sort_by(|a, b| (&a.key, &a.upload_id).cmp(&(&b.key, &b.upload_id)));
    Ok((objects, uploads))
}

/// `<key>.<upload id>.partial` → (key, upload id).
fn parse_partial(name: &str) -> Option<(&str, &str)> {
    let stem = name.strip_suffix(PARTIAL_SUFFIX)?;
    let (key, id) = stem.rsplit_once('.')?;
    valid_upload_id(id).then_some((key, id))
}

/// An upload id is `<pid>-<16 hex digits>`.
fn valid_upload_id(id: &str) -> bool {
    match id.split_once('-') {
        Some((pid, rand)) => {
            !pid.is_empty()
                && pid.bytes().all(|b| b.is_ascii_digit())
                && rand.len() == 16
                && rand.bytes().all(|b| b.is_ascii_hexdigit())
        }
        None => false,
    }
}

fn new_upload_id() -> String {
    format!("{}-{:016x}", std::process::id(), rand::random::<u64>())
}

/// The temporary file of upload `upload_id` of `path`: two jobs writing the same key never
/// share a file.
fn partial_path(path: &Path, upload_id: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{upload_id}{PARTIAL_SUFFIX}"));
    PathBuf::from(s)
}

#[async_trait]
impl ObjectStore for LocalStore {
    fn describe(&self, key: &str) -> String {
        self.dir.join(key).display().to_string()
    }

    async fn preflight(&self) -> Result<(), Error> {
        fs::create_dir_all(&self.dir)
            .await
            .map_err(io_error(format!(
                "cannot create the storage directory {}",
                self.dir.display()
            )))
    }

    /// Writes and removes a file next to where `key` goes.
    async fn probe_write(&self, key: &str) -> Result<(), Error> {
        let path = self.path(key)?;
        let dir = path.parent().unwrap_or(&self.dir).to_path_buf();
        let ctx = format!(
            "storage directory {} is not writable; nothing was dumped",
            dir.display()
        );
        fs::create_dir_all(&dir)
            .await
            .map_err(io_error(ctx.clone()))?;
        let probe = dir.join(format!("{PROBE_PREFIX}{}", std::process::id()));
        fs::write(&probe, b"probe").await.map_err(io_error(ctx))?;
        let _ = fs::remove_file(&probe).await;
        Ok(())
    }

    async fn put(&self, key: &str, body: Bytes, mode: WriteMode) -> Result<(), Error> {
        self.requests.count(RequestKind::Put);
        let path = self.path(key)?;
        let partial = partial_path(&path, &new_upload_id());
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

    async fn get(&self, key: &str) -> Result<Option<Bytes>, Error> {
        self.requests.count(RequestKind::Get);
        let path = self.path(key)?;
        match fs::read(&path).await {
            Ok(data) => Ok(Some(Bytes::from(data))),
            Err(e) if is_absent(&e) => Ok(None),
            Err(e) => Err(Error::storage(
                &format!("cannot read {}", path.display()),
                e,
            )),
        }
    }

    async fn open(
        &self,
        key: &str,
        range: Option<Range<u64>>,
    ) -> Result<(ObjectReader, Option<u64>), Error> {
        self.requests.count(RequestKind::Get);
        let path = self.path(key)?;
        let ctx = format!("cannot read {}", path.display());
        let missing =
            || Error::Integrity(format!("backup object {} does not exist", path.display()));
        let mut file = File::open(&path).await.map_err(|e| {
            if is_absent(&e) {
                missing()
            } else {
                Error::storage(&ctx, e)
            }
        })?;
        let meta = file.metadata().await.ok();
        if meta.as_ref().is_some_and(|m| m.is_dir()) {
            return Err(missing());
        }
        let size = meta.map(|m| m.len());
        match range {
            None => Ok((Box::new(BufReader::with_capacity(1 << 20, file)), size)),
            Some(r) => {
                file.seek(std::io::SeekFrom::Start(r.start))
                    .await
                    .map_err(io_error(ctx))?;
                let limited = file.take(r.end.saturating_sub(r.start));
                Ok((Box::new(BufReader::with_capacity(1 << 20, limited)), size))
            }
        }
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>, Error> {
        self.requests.count(RequestKind::Head);
        let path = self.path(key)?;
        match fs::metadata(&path).await {
            Ok(m) if m.is_file() => Ok(Some(object_meta(key.to_string(), &m))),
            Ok(_) => Ok(None),
            Err(e) if is_absent(&e) => Ok(None),
            Err(e) => Err(Error::storage(
                &format!("cannot check {}", path.display()),
                e,
            )),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, Error> {
        self.requests.count(RequestKind::List);
        Ok(self.walk(prefix).await?.0)
    }

    async fn list_uploads(&self, prefix: &str) -> Result<Vec<UploadMeta>, Error> {
        self.requests.count(RequestKind::List);
        Ok(self.walk(prefix).await?.1)
    }

    async fn delete(&self, key: &str) -> Result<(), Error> {
        self.requests.count(RequestKind::Delete);
        let path = self.path(key)?;
        match fs::remove_file(&path).await {
            Ok(()) => Ok(()),
            Err(e) if is_absent(&e) => Ok(()),
            Err(e) => Err(Error::storage(
                &format!("cannot delete {}", path.display()),
                e,
            )),
        }
    }

    fn start_upload(
        &self,
        key: &str,
        _concurrency: usize,
        mode: WriteMode,
    ) -> Box<dyn MultipartUpload> {
        Box::new(LocalUpload {
            requests: Arc::clone(&self.requests),
            target: self.path(key),
            mode,
            file: None,
        })
    }

    async fn abort_upload(&self, key: &str, upload_id: &str) -> Result<(), Error> {
        self.requests.count(RequestKind::Multipart);
        if !valid_upload_id(upload_id) {
            return Err(Error::Storage(format!(
                "{upload_id:?} is not an upload id of this directory"
            )));
        }
        let partial = partial_path(&self.path(key)?, upload_id);
        match fs::remove_file(&partial).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::storage(
                &format!("cannot remove {}", partial.display()),
                e,
            )),
        }
    }

    fn requests(&self) -> RequestCounts {
        self.requests.snapshot()
    }
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

struct LocalUpload {
    /// The store's counter: creating the file, each part and the commit count as multipart
    /// requests, as on S3.
    requests: Arc<RequestCounter>,
    target: Result<PathBuf, Error>,
    mode: WriteMode,
    /// The open temporary file, its path and its upload id.
    file: Option<(File, PathBuf, String)>,
}

impl LocalUpload {
    fn target(&self) -> Result<PathBuf, Error> {
        match &self.target {
            Ok(p) => Ok(p.clone()),
            Err(e) => Err(Error::Storage(e.to_string())),
        }
    }
}

#[async_trait]
impl MultipartUpload for LocalUpload {
    /// Appends a part to the temporary file; local writes fail here, never later.
    async fn put_part(&mut self, data: Bytes) -> Result<Option<String>, Error> {
        let mut created = None;
        if self.file.is_none() {
            self.requests.count(RequestKind::Multipart);
            let target = self.target()?;
            let upload_id = new_upload_id();
            let partial = partial_path(&target, &upload_id);
            let ctx = format!("cannot write {}", partial.display());
            if let Some(parent) = target.parent() {
                fs::create_dir_all(parent)
                    .await
                    .map_err(io_error(ctx.clone()))?;
            }
            let f = File::create(&partial).await.map_err(io_error(ctx))?;
            created = Some(upload_id.clone());
            self.file = Some((f, partial, upload_id));
        }
        self.requests.count(RequestKind::Multipart);
        let (f, partial, _) = self.file.as_mut().expect("opened above");
        f.write_all(&data)
            .await
            .map_err(io_error(format!("cannot write {}", partial.display())))?;
        Ok(created)
    }

    async fn failure(&mut self) -> Error {
        std::future::pending().await
    }

    /// Writes the last part, syncs and renames into place.
    async fn complete(mut self: Box<Self>, last: Bytes) -> Result<Option<String>, Error> {
        let created_here = self.file.is_none();
        self.put_part(last).await?;
        let target = self.target()?;
        let (mut f, partial, upload_id) = self.file.take().expect("opened by put_part");
        self.requests.count(RequestKind::Multipart);
        let ctx = format!("cannot write {}", target.display());
        let done = async {
            f.flush().await.map_err(io_error(ctx.clone()))?;
            f.sync_all().await.map_err(io_error(ctx))?;
            drop(f);
            commit(&partial, &target, self.mode).await
        }
        .await;
        if done.is_err() && created_here {
            // Never registered for abort: remove it here.
            let _ = fs::remove_file(&partial).await;
        }
        done.map(|()| Some(upload_id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_names_parse_back() {
        let id = new_upload_id();
        let p = partial_path(Path::new("a/b.zst"), &id);
        let name = p.to_str().unwrap();
        assert_eq!(parse_partial(name), Some(("a/b.zst", id.as_str())));
        assert_eq!(parse_partial("a/b.zst"), None);
        assert_eq!(parse_partial("a/b.notanid.partial"), None);
    }
}
