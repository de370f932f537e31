//! The backups under a prefix, read from one listing: each object paired with its manifest, and
//! everything that is there but is not a backup (an object without a manifest, a manifest without
//! its object or of another size, an incomplete upload). `list`, `BACKUP_PATH=latest`, `prune` and
//! `check` all start here.
//!
//! A listing gives keys, sizes and versions but not what a manifest says. Reading 10,000
//! manifests would be 10,000 GETs, so what was read is kept in an index object,
//! `<prefix>/.backup-runner/catalog.json`, keyed by manifest key and version (the ETag, or the
//! size and modification time of a local file). An entry is used only when the listing shows the
//! manifest at that same version; anything else is read again. The index is a cache: losing it,
//! or two jobs overwriting each other's, costs reads, never a wrong answer.

mod ops;
mod prune;

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures_util::{stream, StreamExt};
use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::manifest::{Manifest, MANIFEST_SUFFIX};
use crate::storage::{ObjectMeta, Storage, WriteMode};

pub use ops::{
    check, list, preflight, prune_after_backup, prune_operation, resolve_latest, Report,
};
pub use prune::{plan, Plan, Scope};

/// Keys under this folder of the prefix are the runner's own, never backups.
pub const INDEX_DIR: &str = ".backup-runner";
const INDEX_NAME: &str = "catalog.json";
/// 2: summaries of whole-server sets list their members (an older runner reads every manifest
/// again instead of taking a set's members for stray objects).
const INDEX_VERSION: u32 = 2;
/// Manifests read at once when the index does not have them.
const READS_IN_FLIGHT: usize = 16;

/// What a catalog needs from a manifest, kept in the index.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub job_id: String,
    pub engine: String,
    pub database: String,
    pub server_version: String,
    pub format: String,
    pub bytes: u64,
    pub raw_bytes: u64,
    pub sha256: String,
    /// When the dump started: the data is as of then.
    pub taken_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    /// A whole-server set's databases, each an object next to the set's own.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<MemberSummary>,
}

/// One database of a whole-server set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemberSummary {
    pub database: String,
    pub key: String,
    pub bytes: u64,
    pub raw_bytes: u64,
    pub taken_at: DateTime<Utc>,
}

impl Summary {
    /// The stored size of the whole backup (a set: its globals and every database).
    pub fn total_bytes(&self) -> u64 {
        self.bytes + self.members.iter().map(|m| m.bytes).sum::<u64>()
    }
}

impl From<&Manifest> for Summary {
    fn from(m: &Manifest) -> Summary {
        Summary {
            job_id: m.job_id.clone(),
            engine: m.engine.clone(),
            database: m.database.clone(),
            server_version: m.server_version.clone(),
            format: m.format.clone(),
            bytes: m.bytes,
            raw_bytes: m.raw_bytes,
            sha256: m.sha256.clone(),
            taken_at: m.started_at,
            finished_at: m.finished_at,
            expires_at: m.expires_at,
            members: m
                .set
                .iter()
                .flat_map(|s| &s.members)
                .map(|member| MemberSummary {
                    database: member.database.clone(),
                    key: member.object_key.clone(),
                    bytes: member.bytes,
                    raw_bytes: member.raw_bytes,
                    taken_at: member.started_at,
                })
                .collect(),
        }
    }
}

/// A complete backup: its object is there, with the size its manifest records.
#[derive(Debug, Clone, PartialEq)]
pub struct Backup {
    pub object_key: String,
    pub manifest_key: String,
    pub summary: Summary,
}

impl Backup {
    /// Every object of the backup: its own, then a set's members.
    pub fn object_keys(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.object_key.as_str())
            .chain(self.summary.members.iter().map(|m| m.key.as_str()))
    }

    /// One line of `list`'s output.
    pub fn to_json(&self) -> serde_json::Value {
        let s = &self.summary;
        let mut v = serde_json::json!({
            "object_key": self.object_key,
            "manifest_key": self.manifest_key,
            "taken_at": s.taken_at,
            "finished_at": s.finished_at,
            "engine": s.engine,
            "database": s.database,
            "bytes": s.bytes,
            "raw_bytes": s.raw_bytes,
            "sha256": s.sha256,
            "server_version": s.server_version,
            "format": s.format,
            "job_id": s.job_id,
            "expires_at": s.expires_at,
        });
        if !s.members.is_empty() {
            v["total_bytes"] = s.total_bytes().into();
            v["databases"] = s
                .members
                .iter()
                .map(|m| {
                    serde_json::json!({
                        "database": m.database,
                        "object_key": m.key,
                        "bytes": m.bytes,
                        "raw_bytes": m.raw_bytes,
                        "taken_at": m.taken_at,
                    })
                })
                .collect();
        }
        v
    }
}

/// Why something under the prefix is not a backup.
#[derive(Debug, Clone, PartialEq)]
pub enum Flaw {
    /// An object with no manifest next to it: a backup in progress, one that failed before its
    /// manifest, or a file that is not a backup at all.
    NoManifest,
    /// A manifest whose object is gone.
    ObjectMissing,
    /// A manifest whose object has another size (replaced or truncated).
    SizeMismatch { recorded: u64, stored: u64 },
    /// A manifest that cannot be read (not JSON, or from a newer runner). Never deleted.
    UnreadableManifest(String),
    /// A multipart upload that was started and neither completed nor aborted.
    IncompleteUpload { upload_id: String },
    /// A whole-server set one of whose databases is missing or of another size.
    IncompleteSet { member: String, detail: String },
}

impl std::fmt::Display for Flaw {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Flaw::NoManifest => f.write_str("object without a manifest"),
            Flaw::ObjectMissing => f.write_str("manifest without its object"),
            Flaw::SizeMismatch { recorded, stored } => write!(
                f,
                "object of {stored} bytes where its manifest records {recorded}"
            ),
            Flaw::UnreadableManifest(why) => write!(f, "unreadable manifest: {why}"),
            Flaw::IncompleteUpload { .. } => f.write_str("incomplete multipart upload"),
            Flaw::IncompleteSet { member, detail } => {
                write!(
                    f,
                    "whole-server set whose database object {member} is {detail}"
                )
            }
        }
    }
}

impl Flaw {
    fn code(&self) -> &'static str {
        match self {
            Flaw::NoManifest => "no_manifest",
            Flaw::ObjectMissing => "object_missing",
            Flaw::SizeMismatch { .. } => "size_mismatch",
            Flaw::UnreadableManifest(_) => "unreadable_manifest",
            Flaw::IncompleteUpload { .. } => "incomplete_upload",
            Flaw::IncompleteSet { .. } => "incomplete_set",
        }
    }
}

/// Something under the prefix that is not a complete backup.
#[derive(Debug, Clone, PartialEq)]
pub struct NotBackup {
    /// The object key (for a manifest without its object, the key the object should have).
    pub key: String,
    pub flaw: Flaw,
    /// When the object or manifest was last written, or the upload started.
    pub since: DateTime<Utc>,
    pub summary: Option<Summary>,
}

impl NotBackup {
    pub fn to_json(&self) -> serde_json::Value {
        let mut v = serde_json::json!({
            "kind": "not_a_backup",
            "key": self.key,
            "reason": self.flaw.code(),
            "detail": self.flaw.to_string(),
            "since": self.since,
        });
        if let Flaw::IncompleteUpload { upload_id } = &self.flaw {
            v["upload_id"] = upload_id.clone().into();
        }
        if let Some(s) = &self.summary {
            v["engine"] = s.engine.clone().into();
            v["database"] = s.database.clone().into();
            v["taken_at"] = serde_json::to_value(s.taken_at).unwrap_or_default();
        }
        v
    }
}

/// The backups under a prefix (newest first) and what is not a backup (in key order).
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    pub backups: Vec<Backup>,
    pub not_backups: Vec<NotBackup>,
    /// Manifests read from the store in this scan (the others came from the index).
    pub manifests_read: usize,
    /// Manifests taken from the index.
    pub manifests_cached: usize,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Index {
    version: u32,
    /// Manifest key → the version it was read at and what it said.
    entries: BTreeMap<String, IndexEntry>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct IndexEntry {
    version: String,
    summary: Summary,
}

/// The folder a listing covers: `prefix/`, or the whole store.
pub fn list_prefix(prefix: Option<&str>) -> String {
    prefix.map(|p| format!("{p}/")).unwrap_or_default()
}

fn index_key(prefix: Option<&str>) -> String {
    format!("{}{INDEX_DIR}/{INDEX_NAME}", list_prefix(prefix))
}

impl Catalog {
    /// Lists `prefix` once and pairs objects with manifests, reading only the manifests the
    /// index does not hold at their listed version; then updates the index if it changed.
    pub async fn scan(storage: &Storage, prefix: Option<&str>) -> Result<Catalog, Error> {
        let root = list_prefix(prefix);
        let own = format!("{root}{INDEX_DIR}/");
        let objects: Vec<ObjectMeta> = storage
            .list(&root)
            .await?
            .into_iter()
            .filter(|o| !o.key.starts_with(&own))
            .collect();
        // Some S3-compatible stores cannot list incomplete uploads: they are then neither
        // reported nor cleaned, and everything else works.
        let uploads = match storage.list_uploads(&root).await {
            Ok(uploads) => uploads,
            Err(e) => {
                tracing::warn!(
                    "cannot list incomplete multipart uploads ({e}); they are not reported or cleaned up: use the store's lifecycle rule to abort incomplete uploads"
                );
                Vec::new()
            }
        };
        let index = read_index(storage, prefix).await;

        let by_key: HashMap<&str, &ObjectMeta> =
            objects.iter().map(|o| (o.key.as_str(), o)).collect();
        let manifests: Vec<&ObjectMeta> = objects
            .iter()
            .filter(|o| o.key.ends_with(MANIFEST_SUFFIX))
            .collect();

        let mut fresh = Index {
            version: INDEX_VERSION,
            entries: BTreeMap::new(),
        };
        let mut to_read = Vec::new();
        for m in &manifests {
            match index.entries.get(&m.key) {
                Some(e) if e.version == m.version && !m.version.is_empty() => {
                    fresh.entries.insert(m.key.clone(), e.clone());
                }
                _ => to_read.push(*m),
            }
        }
        let manifests_cached = fresh.entries.len();
        let manifests_read = to_read.len();
        let read: Vec<(&ObjectMeta, Result<Manifest, String>)> = stream::iter(to_read)
            .map(|m| async move {
                let parsed = match storage.get(&m.key).await {
                    Ok(Some(bytes)) => Manifest::from_json(&bytes),
                    Ok(None) => Err("deleted while listing".into()),
                    Err(e) => return Err(e),
                };
                Ok((m, parsed))
            })
            .buffer_unordered(READS_IN_FLIGHT)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<Result<_, Error>>()?;
        let mut unreadable = HashMap::new();
        for (m, parsed) in read {
            match parsed {
                Ok(manifest) => {
                    fresh.entries.insert(
                        m.key.clone(),
                        IndexEntry {
                            version: m.version.clone(),
                            summary: Summary::from(&manifest),
                        },
                    );
                }
                Err(why) => {
                    unreadable.insert(m.key.clone(), why);
                }
            }
        }

        let mut catalog = Catalog {
            manifests_read,
            manifests_cached,
            ..Catalog::default()
        };
        // A set's databases are objects without a manifest of their own: they belong to the
        // set's manifest, complete or not.
        let claimed: std::collections::HashSet<&str> = fresh
            .entries
            .values()
            .flat_map(|e| e.summary.members.iter().map(|m| m.key.as_str()))
            .collect();
        for m in &manifests {
            let object_key = m.key.trim_end_matches(MANIFEST_SUFFIX).to_string();
            let object = by_key.get(object_key.as_str());
            if let Some(why) = unreadable.remove(&m.key) {
                catalog.not_backups.push(NotBackup {
                    key: object_key,
                    flaw: Flaw::UnreadableManifest(why),
                    since: m.last_modified,
                    summary: None,
                });
                continue;
            }
            let Some(entry) = fresh.entries.get(&m.key) else {
                continue;
            };
            let summary = entry.summary.clone();
            match object {
                None => catalog.not_backups.push(NotBackup {
                    key: object_key,
                    flaw: Flaw::ObjectMissing,
                    since: m.last_modified,
                    summary: Some(summary),
                }),
                Some(o) if o.size != summary.bytes => catalog.not_backups.push(NotBackup {
                    key: object_key,
                    flaw: Flaw::SizeMismatch {
                        recorded: summary.bytes,
                        stored: o.size,
                    },
                    since: o.last_modified.max(m.last_modified),
                    summary: Some(summary),
                }),
                Some(o) => match member_flaw(&summary, &by_key) {
                    Some(flaw) => catalog.not_backups.push(NotBackup {
                        key: object_key,
                        flaw,
                        since: o.last_modified.max(m.last_modified),
                        summary: Some(summary),
                    }),
                    None => catalog.backups.push(Backup {
                        object_key,
                        manifest_key: m.key.clone(),
                        summary,
                    }),
                },
            }
        }
        for o in &objects {
            if o.key.ends_with(MANIFEST_SUFFIX) || claimed.contains(o.key.as_str()) {
                continue;
            }
            if !by_key.contains_key(format!("{}{MANIFEST_SUFFIX}", o.key).as_str()) {
                catalog.not_backups.push(NotBackup {
                    key: o.key.clone(),
                    flaw: Flaw::NoManifest,
                    since: o.last_modified,
                    summary: None,
                });
            }
        }
        for u in uploads {
            // A derived key holds the time its backup started; a store that reports a wrong
            // start time must not make a running backup look old.
            let since = key_time(&u.key).map_or(u.initiated, |t| t.max(u.initiated));
            catalog.not_backups.push(NotBackup {
                key: u.key,
                flaw: Flaw::IncompleteUpload {
                    upload_id: u.upload_id,
                },
                since,
                summary: None,
            });
        }
        catalog.backups.sort_by(|a, b| {
            (b.summary.taken_at, b.summary.finished_at, &b.object_key).cmp(&(
                a.summary.taken_at,
                a.summary.finished_at,
                &a.object_key,
            ))
        });
        catalog.not_backups.sort_by(|a, b| a.key.cmp(&b.key));

        if fresh.entries != index.entries {
            write_index(storage, prefix, &fresh).await;
        }
        Ok(catalog)
    }

    /// The backups of `engine` (and of `database`, when given), newest first.
    pub fn backups_of<'a>(
        &'a self,
        engine: &'a str,
        database: Option<&'a str>,
    ) -> impl Iterator<Item = &'a Backup> + 'a {
        self.backups.iter().filter(move |b| {
            b.summary.engine == engine && database.is_none_or(|d| b.summary.database == d)
        })
    }
}

/// The first database of a set whose object is missing or of another size: the set is then
/// not a backup (reported under that object's key).
fn member_flaw(summary: &Summary, by_key: &HashMap<&str, &ObjectMeta>) -> Option<Flaw> {
    summary.members.iter().find_map(|member| {
        let detail = match by_key.get(member.key.as_str()) {
            None => "missing".to_string(),
            Some(o) if o.size != member.bytes => format!(
                "{} bytes where the set's manifest records {}",
                o.size, member.bytes
            ),
            Some(_) => return None,
        };
        Some(Flaw::IncompleteSet {
            member: member.key.clone(),
            detail,
        })
    })
}

/// The start time in a derived key's file name (`…/20261122T090807Z-job.pgdump.zst`).
fn key_time(key: &str) -> Option<DateTime<Utc>> {
    let name = key.rsplit('/').next()?;
    let stamp = name.get(..16)?;
    chrono::NaiveDateTime::parse_from_str(stamp, "%Y%m%dT%H%M%SZ")
        .ok()
        .map(|t| t.and_utc())
}

async fn read_index(storage: &Storage, prefix: Option<&str>) -> Index {
    let key = index_key(prefix);
    match storage.get(&key).await {
        Ok(Some(bytes)) => match serde_json::from_slice::<Index>(&bytes) {
            Ok(index) if index.version == INDEX_VERSION => index,
            Ok(_) | Err(_) => {
                tracing::warn!(
                    index = %storage.describe(&key),
                    "the catalog index is not one this runner reads; every manifest is read again and the index rewritten"
                );
                Index::default()
            }
        },
        Ok(None) => Index::default(),
        Err(e) => {
            tracing::warn!(index = %storage.describe(&key), "cannot read the catalog index ({e}); every manifest is read instead");
            Index::default()
        }
    }
}

async fn write_index(storage: &Storage, prefix: Option<&str>, index: &Index) {
    let key = index_key(prefix);
    let body = match serde_json::to_vec(index) {
        Ok(b) => Bytes::from(b),
        Err(e) => {
            tracing::warn!("cannot encode the catalog index: {e}");
            return;
        }
    };
    if let Err(e) = storage.put(&key, body, WriteMode::Overwrite).await {
        tracing::warn!(
            index = %storage.describe(&key),
            "cannot write the catalog index ({e}); the next run reads the manifests again"
        );
    }
}

#[cfg(test)]
mod tests;
