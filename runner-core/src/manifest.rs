//! The manifest written next to each backup object, only after the object is complete: no
//! manifest means no backup. Restore reads it first and verifies the object against it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::config::Algorithm;

pub const MANIFEST_SUFFIX: &str = ".manifest.json";
/// The version of a manifest of an unencrypted backup. Readers of version 1 know nothing of
/// encryption, so an encrypted backup's manifest is version 2: an older runner refuses it
/// ("use a newer image") instead of decompressing ciphertext.
pub const MANIFEST_VERSION: u32 = 1;
pub const MANIFEST_VERSION_ENCRYPTED: u32 = 2;
/// The version of a whole-server set's manifest: an older runner would restore only its
/// globals object, so it refuses the set instead.
pub const MANIFEST_VERSION_SET: u32 = 3;
/// The newest version this runner reads.
pub const MANIFEST_VERSION_MAX: u32 = MANIFEST_VERSION_SET;
/// The `database` of a whole-server set.
pub const SERVER_DATABASE: &str = "*";
/// The `engine_details` entry (`true`) that marks a backup made as part of a set.
pub const SET_MEMBER_DETAIL: &str = "set_member";

pub fn manifest_key(object_key: &str) -> String {
    format!("{object_key}{MANIFEST_SUFFIX}")
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub manifest_version: u32,
    pub job_id: String,
    pub engine: String,
    /// The server major version the image was built for, when pinned.
    pub engine_version: Option<String>,
    pub server_version: String,
    /// Version of the dump tool that wrote the backup.
    pub client_version: String,
    pub runner_version: String,
    pub database: String,
    pub format: String,
    pub compression: CompressionInfo,
    pub object_key: String,
    /// Size of the stored object.
    pub bytes: u64,
    /// Size of the dump before compression.
    pub raw_bytes: u64,
    /// sha256 of the stored object, hex.
    pub sha256: String,
    pub part_size: u64,
    pub parts: u32,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub duration_ms: u64,
    pub retention_days: Option<u32>,
    pub expires_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub warnings: Vec<String>,
    /// What the engine recorded for its restore (e.g. the database's defaults, the largest
    /// statement); an object, empty for engines that record nothing.
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub engine_details: serde_json::Map<String, serde_json::Value>,
    /// How the object is encrypted (public information: the scheme and the recipients' public
    /// keys); `None` for a plain object. `sha256` and `bytes` are of the stored, encrypted bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<crate::crypto::EncryptionInfo>,
    /// A whole-server backup (`DB_NAME=*`): this manifest's object is the server's globals
    /// (roles, accounts, grants) and the set lists one backup per database. Written last: no
    /// set manifest, no backup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set: Option<ServerSet>,
}

/// The databases of a whole-server backup, each an ordinary backup (object, sha256, sizes,
/// its own start time) without a manifest of its own.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServerSet {
    /// In the order they were listed by the server.
    pub members: Vec<Manifest>,
    /// What the backup left out and why (system databases are never part of a set): databases
    /// excluded by `DB_INCLUDE` / `DB_EXCLUDE`, what the account could not read.
    #[serde(default)]
    pub skipped: Vec<String>,
    /// Databases dumped at once (`SERVER_PARALLELISM`).
    pub parallelism: usize,
}

impl Manifest {
    /// Every object the backup is made of: its own, then the set's members.
    pub fn object_keys(&self) -> impl Iterator<Item = (&str, u64)> {
        std::iter::once((self.object_key.as_str(), self.bytes)).chain(
            self.set
                .iter()
                .flat_map(|s| s.members.iter().map(|m| (m.object_key.as_str(), m.bytes))),
        )
    }

    /// Whether this backup is one database of a whole-server set.
    pub fn is_set_member(&self) -> bool {
        self.engine_details
            .get(SET_MEMBER_DETAIL)
            .and_then(|v| v.as_bool())
            .unwrap_or(false)
    }

    /// The set's member for `database`.
    pub fn member(&self, database: &str) -> Option<&Manifest> {
        self.set
            .as_ref()?
            .members
            .iter()
            .find(|m| m.database == database)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompressionInfo {
    pub algorithm: Algorithm,
    pub level: i32,
}

impl Manifest {
    pub fn to_json(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).expect("manifest serializes");
        v.push(b'\n');
        v
    }

    /// Parses a manifest, rejecting versions this runner does not understand.
    pub fn from_json(bytes: &[u8]) -> Result<Manifest, String> {
        let value: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| format!("manifest is not JSON: {e}"))?;
        let version = value
            .get("manifest_version")
            .and_then(|v| v.as_u64())
            .ok_or("manifest has no manifest_version")?;
        if version > MANIFEST_VERSION_MAX as u64 {
            return Err(format!(
                "manifest version {version} is newer than this runner understands ({MANIFEST_VERSION_MAX}): use a newer image"
            ));
        }
        serde_json::from_value(value).map_err(|e| format!("manifest is malformed: {e}"))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn sample() -> Manifest {
        let t = DateTime::parse_from_rfc3339("2026-11-22T01:02:03Z")
            .unwrap()
            .with_timezone(&Utc);
        Manifest {
            manifest_version: MANIFEST_VERSION,
            job_id: "job-1".into(),
            engine: "postgres".into(),
            engine_version: Some("17".into()),
            server_version: "17.6".into(),
            client_version: "17.6".into(),
            runner_version: "0.1.0".into(),
            database: "app".into(),
            format: "pg_dump-custom".into(),
            compression: CompressionInfo {
                algorithm: Algorithm::Zstd,
                level: 3,
            },
            object_key: "postgres/app/x.pgdump.zst".into(),
            bytes: 10,
            raw_bytes: 20,
            sha256: "ab".repeat(32),
            part_size: 8 << 20,
            parts: 1,
            started_at: t,
            finished_at: t,
            duration_ms: 0,
            retention_days: Some(7),
            expires_at: Some(t + chrono::Duration::days(7)),
            warnings: vec![],
            engine_details: Default::default(),
            encryption: None,
            set: None,
        }
    }

    #[test]
    fn a_set_lists_every_object_and_finds_its_members() {
        let mut member = sample();
        member.object_key = "postgres/_server/x/app.pgdump.zst".into();
        member.bytes = 5;
        let mut set = sample();
        set.manifest_version = MANIFEST_VERSION_SET;
        set.database = SERVER_DATABASE.into();
        set.set = Some(ServerSet {
            members: vec![member.clone()],
            skipped: vec!["role passwords".into()],
            parallelism: 1,
        });
        let keys: Vec<_> = set.object_keys().collect();
        assert_eq!(
            keys,
            [
                ("postgres/app/x.pgdump.zst", 10),
                ("postgres/_server/x/app.pgdump.zst", 5)
            ]
        );
        assert_eq!(set.member("app"), Some(&member));
        assert_eq!(set.member("other"), None);
        assert_eq!(Manifest::from_json(&set.to_json()).unwrap(), set);
        assert_eq!(sample().object_keys().count(), 1);
    }

    #[test]
    fn round_trips_through_json() {
        let m = sample();
        let json = m.to_json();
        let text = String::from_utf8(json.clone()).unwrap();
        assert!(text.contains("\"algorithm\": \"zstd\""), "{text}");
        assert_eq!(Manifest::from_json(&json).unwrap(), m);
    }

    #[test]
    fn rejects_newer_versions_and_garbage() {
        let mut v: serde_json::Value = serde_json::from_slice(&sample().to_json()).unwrap();
        v["manifest_version"] = 99.into();
        let err = Manifest::from_json(&serde_json::to_vec(&v).unwrap()).unwrap_err();
        assert!(err.contains("newer"), "{err}");
        assert!(Manifest::from_json(b"{not json").is_err());
    }

    #[test]
    fn manifest_key_sits_next_to_the_object() {
        assert_eq!(manifest_key("a/b.zst"), "a/b.zst.manifest.json");
    }
}
