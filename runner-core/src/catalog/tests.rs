//! The catalog over a real local directory: pairing, what is not a backup, and the index.

use bytes::Bytes;
use chrono::{DateTime, Duration, Utc};

use super::*;
use crate::manifest::manifest_key;
use crate::storage::LocalStore;

/// Hour `h` of a fixed day.
pub(crate) fn t(h: i64) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-01T00:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
        + Duration::hours(h)
}

fn summary(engine: &str, database: &str, at: DateTime<Utc>) -> Summary {
    Summary {
        job_id: "j".into(),
        engine: engine.into(),
        database: database.into(),
        server_version: "17.6".into(),
        format: "pg_dump-custom".into(),
        bytes: 3,
        raw_bytes: 9,
        sha256: "ab".repeat(32),
        taken_at: at,
        finished_at: at,
        expires_at: None,
        members: Vec::new(),
    }
}

pub(crate) fn backup(key: &str, engine: &str, database: &str, at: DateTime<Utc>) -> Backup {
    Backup {
        object_key: key.into(),
        manifest_key: manifest_key(key),
        summary: summary(engine, database, at),
    }
}

pub(crate) fn not_backup(key: &str, flaw: Flaw, since: DateTime<Utc>) -> NotBackup {
    NotBackup {
        key: key.into(),
        flaw,
        since,
        summary: None,
    }
}

pub(crate) fn catalog_of(backups: Vec<Backup>, not_backups: Vec<NotBackup>) -> Catalog {
    Catalog {
        backups,
        not_backups,
        ..Catalog::default()
    }
}

async fn write_backup(
    storage: &Storage,
    key: &str,
    database: &str,
    at: DateTime<Utc>,
    body: &[u8],
) {
    let mut m = crate::manifest::tests::sample();
    m.object_key = key.into();
    m.database = database.into();
    m.started_at = at;
    m.finished_at = at + Duration::minutes(1);
    m.bytes = body.len() as u64;
    storage
        .put(key, Bytes::copy_from_slice(body), WriteMode::Overwrite)
        .await
        .unwrap();
    storage
        .put(
            &manifest_key(key),
            Bytes::from(m.to_json()),
            WriteMode::Overwrite,
        )
        .await
        .unwrap();
}

fn storage(dir: &std::path::Path) -> Storage {
    Storage::with_store(Box::new(LocalStore::new(dir.to_path_buf())))
}

#[tokio::test]
async fn pairs_objects_with_manifests_newest_first_by_taken_at() {
    let dir = tempfile::tempdir().unwrap();
    let s = storage(dir.path());
    // Key order and time order disagree: the manifest's time decides.
    write_backup(&s, "p/postgres/app/b", "app", t(1), b"one").await;
    write_backup(&s, "p/postgres/app/a", "app", t(2), b"two").await;
    write_backup(&s, "p/postgres/other/c", "other", t(3), b"three").await;
    // Not backups: an object without a manifest, a manifest without its object, a manifest
    // whose object has another size, an unreadable manifest.
    s.put(
        "p/postgres/app/orphan",
        Bytes::from_static(b"x"),
        WriteMode::Create,
    )
    .await
    .unwrap();
    write_backup(&s, "p/postgres/app/gone", "app", t(5), b"gone").await;
    s.delete("p/postgres/app/gone").await.unwrap();
    write_backup(&s, "p/postgres/app/resized", "app", t(6), b"size").await;
    s.put(
        "p/postgres/app/resized",
        Bytes::from_static(b"longer"),
        WriteMode::Overwrite,
    )
    .await
    .unwrap();
    s.put(
        "p/postgres/app/bad",
        Bytes::from_static(b"b"),
        WriteMode::Create,
    )
    .await
    .unwrap();
    s.put(
        &manifest_key("p/postgres/app/bad"),
        Bytes::from_static(b"{not json"),
        WriteMode::Create,
    )
    .await
    .unwrap();
    // Outside the prefix: not seen at all.
    write_backup(&s, "q/postgres/app/z", "app", t(9), b"zz").await;

    let c = Catalog::scan(&s, Some("p")).await.unwrap();
    let keys: Vec<&str> = c.backups.iter().map(|b| b.object_key.as_str()).collect();
    assert_eq!(
        keys,
        ["p/postgres/other/c", "p/postgres/app/a", "p/postgres/app/b"]
    );
    let of_app: Vec<&str> = c
        .backups_of("postgres", Some("app"))
        .map(|b| b.object_key.as_str())
        .collect();
    assert_eq!(of_app, ["p/postgres/app/a", "p/postgres/app/b"]);
    assert_eq!(c.backups_of("mysql", None).count(), 0);
    let flaws: Vec<(&str, &str)> = c
        .not_backups
        .iter()
        .map(|n| (n.key.as_str(), n.flaw.code()))
        .collect();
    assert_eq!(
        flaws,
        [
            ("p/postgres/app/bad", "unreadable_manifest"),
            ("p/postgres/app/gone", "object_missing"),
            ("p/postgres/app/orphan", "no_manifest"),
            ("p/postgres/app/resized", "size_mismatch"),
        ]
    );
    assert_eq!(c.backups[1].summary.bytes, 3);
}

#[tokio::test]
async fn the_index_saves_reads_and_is_never_trusted_over_the_listing() {
    let dir = tempfile::tempdir().unwrap();
    let s = storage(dir.path());
    for i in 0..5 {
        write_backup(&s, &format!("p/postgres/app/{i}"), "app", t(i), b"data").await;
    }
    let cold = Catalog::scan(&s, Some("p")).await.unwrap();
    assert_eq!((cold.manifests_read, cold.manifests_cached), (5, 0));
    assert!(s
        .get("p/.backup-runner/catalog.json")
        .await
        .unwrap()
        .is_some());

    let warm = Catalog::scan(&s, Some("p")).await.unwrap();
    assert_eq!((warm.manifests_read, warm.manifests_cached), (0, 5));
    assert_eq!(warm.backups, cold.backups);

    // A manifest rewritten with other content is read again, not taken from the index.
    std::thread::sleep(std::time::Duration::from_millis(20));
    write_backup(&s, "p/postgres/app/2", "moved", t(2), b"data").await;
    let after = Catalog::scan(&s, Some("p")).await.unwrap();
    assert_eq!((after.manifests_read, after.manifests_cached), (1, 4));
    assert_eq!(after.backups_of("postgres", Some("moved")).count(), 1);

    // A deleted manifest is gone from the catalog even though the index still names it.
    s.delete(&manifest_key("p/postgres/app/4")).await.unwrap();
    let c = Catalog::scan(&s, Some("p")).await.unwrap();
    assert_eq!(c.backups[0].object_key, "p/postgres/app/3");
    assert_eq!(c.not_backups[0].flaw, Flaw::NoManifest);

    // A damaged index is ignored.
    s.put(
        "p/.backup-runner/catalog.json",
        Bytes::from_static(b"garbage"),
        WriteMode::Overwrite,
    )
    .await
    .unwrap();
    let c = Catalog::scan(&s, Some("p")).await.unwrap();
    assert_eq!((c.manifests_read, c.backups.len()), (4, 4));
}

/// A whole-server set under `folder`: the globals object with the set's manifest, and one
/// object per database without a manifest of its own.
async fn write_set(storage: &Storage, folder: &str, at: DateTime<Utc>, databases: &[&str]) {
    let mut set = crate::manifest::tests::sample();
    set.manifest_version = crate::manifest::MANIFEST_VERSION_SET;
    set.database = crate::manifest::SERVER_DATABASE.into();
    set.object_key = format!("{folder}/globals.sql.zst");
    set.started_at = at;
    set.finished_at = at + Duration::minutes(1);
    set.bytes = 1;
    let mut members = Vec::new();
    for db in databases {
        let mut m = crate::manifest::tests::sample();
        m.database = db.to_string();
        m.object_key = format!("{folder}/{db}.pgdump.zst");
        m.bytes = db.len() as u64;
        storage
            .put(
                &m.object_key,
                Bytes::copy_from_slice(db.as_bytes()),
                WriteMode::Create,
            )
            .await
            .unwrap();
        members.push(m);
    }
    set.set = Some(crate::manifest::ServerSet {
        members,
        skipped: vec![],
        parallelism: 1,
    });
    storage
        .put(&set.object_key, Bytes::from_static(b"g"), WriteMode::Create)
        .await
        .unwrap();
    storage
        .put(
            &manifest_key(&set.object_key),
            Bytes::from(set.to_json()),
            WriteMode::Create,
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn a_set_is_one_backup_and_incomplete_without_any_of_its_databases() {
    let dir = tempfile::tempdir().unwrap();
    let s = storage(dir.path());
    write_set(&s, "p/postgres/_server/a", t(1), &["app", "shop"]).await;
    write_set(&s, "p/postgres/_server/b", t(2), &["app", "shop"]).await;
    let c = Catalog::scan(&s, Some("p")).await.unwrap();
    let keys: Vec<&str> = c.backups.iter().map(|b| b.object_key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "p/postgres/_server/b/globals.sql.zst",
            "p/postgres/_server/a/globals.sql.zst"
        ]
    );
    // The databases belong to their sets: not strays.
    assert_eq!(c.not_backups, vec![]);
    let b = &c.backups[0];
    assert_eq!(b.summary.database, "*");
    assert_eq!(b.summary.total_bytes(), 1 + 3 + 4);
    assert_eq!(
        b.object_keys().collect::<Vec<_>>(),
        [
            "p/postgres/_server/b/globals.sql.zst",
            "p/postgres/_server/b/app.pgdump.zst",
            "p/postgres/_server/b/shop.pgdump.zst"
        ]
    );
    let line = b.to_json();
    assert_eq!(line["databases"][1]["database"], "shop");
    assert_eq!(line["total_bytes"], 8);

    // One database gone, another resized: neither set is a backup any more, and each is
    // reported once under its own key, naming the database's object.
    s.delete("p/postgres/_server/b/shop.pgdump.zst")
        .await
        .unwrap();
    s.put(
        "p/postgres/_server/a/app.pgdump.zst",
        Bytes::from_static(b"longer"),
        WriteMode::Overwrite,
    )
    .await
    .unwrap();
    let c = Catalog::scan(&s, Some("p")).await.unwrap();
    assert_eq!(c.backups, vec![]);
    let flaws: Vec<(&str, String)> = c
        .not_backups
        .iter()
        .map(|n| (n.key.as_str(), n.flaw.to_string()))
        .collect();
    assert_eq!(flaws.len(), 2, "{flaws:?}");
    assert_eq!(flaws[0].0, "p/postgres/_server/a/globals.sql.zst");
    assert!(
        flaws[0].1.contains("app.pgdump.zst is 6 bytes"),
        "{flaws:?}"
    );
    assert_eq!(flaws[1].0, "p/postgres/_server/b/globals.sql.zst");
    assert!(
        flaws[1].1.contains("shop.pgdump.zst is missing"),
        "{flaws:?}"
    );
    assert_eq!(c.not_backups[0].flaw.code(), "incomplete_set");
}

#[test]
fn a_derived_key_tells_when_its_backup_started() {
    assert_eq!(
        key_time("p/postgres/app/20261101T030000Z-job.pgdump.zst"),
        Some(t(3))
    );
    assert_eq!(key_time("p/postgres/app/nightly.pgdump.zst"), None);
    assert_eq!(key_time("20261101T030000Z"), Some(t(3)));
}
