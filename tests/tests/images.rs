//! The image harness: for each cell of images/matrix.toml (or those in `HARNESS_CELLS`), start
//! the database server and the S3 server in containers, seed, run the runner *image* to back up,
//! destroy the data, run it to restore, and compare. Plus the failure cases users hit.
//!
//! Run with `cargo xtask test [cell…]` (images must be built first: `cargo xtask build`).

use std::collections::BTreeSet;

use harness::containers::{
    inspect_image, ready_or_skip, shared_dir, unique, DbContainer, Job, JobOutput, S3Container,
    HOST_ALIAS,
};
use harness::matrix::{Cell, Matrix};
use harness::pg_sample::{FINGERPRINT, SEED};
use harness::CallbackReceiver;

const BUCKET: &str = "backups";
const CALLBACK_SECRET: &str = "image-callback-secret-4321";

/// The selected cells, once Docker and every image they need are there.
async fn ready(test: &str) -> Option<Vec<Cell>> {
    let matrix = Matrix::load().unwrap();
    let cells = matrix.cells_from_env(Some("postgres")).unwrap();
    let mut images: Vec<String> = vec![matrix.s3_image().to_string()];
    images.extend(cells.iter().flat_map(|c| [c.image(), c.server.clone()]));
    images.extend(
        matrix
            .servers
            .iter()
            .filter(|s| s.recipe == "postgres")
            .map(|s| s.image.clone()),
    );
    ready_or_skip(test, &images).await.then_some(cells)
}

/// The cell's server and an S3 server with the bucket, on a new network.
async fn servers(cell: &Cell, network: &str) -> (DbContainer, S3Container) {
    let s3_image = Matrix::load().unwrap().s3_image().to_string();
    let (db, s3) = tokio::join!(
        DbContainer::postgres(&cell.server, network),
        S3Container::start(&s3_image, network)
    );
    let (db, s3) = (db.unwrap(), s3.unwrap());
    s3.create_bucket(BUCKET).await.unwrap();
    (db, s3)
}

fn major(image: &str) -> u32 {
    image
        .rsplit(':')
        .next()
        .and_then(|t| t.parse().ok())
        .unwrap_or(0)
}

fn db_env(db: &DbContainer, name: &str) -> Vec<(String, String)> {
    [
        ("DB_HOST", db.name.clone()),
        ("DB_PORT", "5432".into()),
        ("DB_NAME", name.into()),
        ("DB_USERNAME", "postgres".into()),
        ("DB_PASSWORD", db.password.clone()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

fn s3_env(s3: &S3Container) -> Vec<(String, String)> {
    [
        ("STORAGE_TYPE", "minio".to_string()),
        ("STORAGE_ENDPOINT", s3.endpoint_in_network()),
        ("STORAGE_BUCKET", BUCKET.into()),
        ("STORAGE_ACCESS_KEY_ID", "test".into()),
        (
            "STORAGE_SECRET_ACCESS_KEY",
            "image-storage-secret-8765".into(),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

fn assert_ok(what: &str, out: &JobOutput) {
    assert_eq!(out.code, 0, "{what} failed:\n{}", out.stderr);
}

async fn seeded(db: &DbContainer, name: &str) -> String {
    db.psql("postgres", &format!("CREATE DATABASE {name};"))
        .await
        .unwrap();
    db.psql(name, SEED).await.unwrap();
    let fp = db.psql(name, FINGERPRINT).await.unwrap();
    assert!(
        fp.contains("customers 2000 ") && fp.contains("seq invoice_seq 54321"),
        "{fp}"
    );
    fp
}

#[tokio::test(flavor = "multi_thread")]
async fn backup_and_restore_through_s3_with_callbacks() {
    let Some(cells) = ready("backup_and_restore_through_s3_with_callbacks").await else {
        return;
    };
    for cell in cells {
        let network = unique("net");
        let (db, s3) = servers(&cell, &network).await;
        let before = seeded(&db, "shop").await;
        let cb = CallbackReceiver::start_on("0.0.0.0").await.unwrap();

        let backup = Job::new(&cell.image(), &network)
            .envs(&db_env(&db, "shop"))
            .envs(&s3_env(&s3))
            .env("JOB_ID", format!("job-{}", cell.name))
            .env("CALLBACK_URL", cb.url_via(HOST_ALIAS))
            .env("CALLBACK_SECRET", CALLBACK_SECRET)
            .run()
            .await
            .unwrap();
        assert_ok(&format!("{} backup", cell.name), &backup);
        assert_eq!(
            cb.statuses(),
            ["running", "metadata", "success"],
            "{}",
            cell.name
        );
        let calls = cb.requests();
        assert!(calls
            .iter()
            .all(|c| c.authorization.as_deref() == Some(&format!("Bearer {CALLBACK_SECRET}"))));
        let meta = &calls[1].body["metadata"];
        let key = meta["object_key"].as_str().unwrap().to_string();
        let object = s3.get(BUCKET, &key).await.unwrap();
        assert_eq!(meta["bytes"], object.len() as u64);
        let manifest: serde_json::Value = serde_json::from_slice(
            &s3.get(BUCKET, &format!("{key}.manifest.json"))
                .await
                .unwrap(),
        )
        .unwrap();
        assert_eq!(
            manifest["engine_version"],
            cell.version.as_str(),
            "the image knows its version"
        );
        assert!(manifest["client_version"]
            .as_str()
            .unwrap()
            .starts_with(&cell.version));
        assert!(s3.list_multipart_uploads(BUCKET).await.unwrap().is_empty());

        db.psql("postgres", "DROP DATABASE shop;").await.unwrap();
        let restore = Job::new(&cell.image(), &network)
            .envs(&db_env(&db, "shop_restored"))
            .envs(&s3_env(&s3))
            .env("OPERATION_TYPE", "restore")
            .env("BACKUP_PATH", &key)
            .run()
            .await
            .unwrap();
        assert_ok(&format!("{} restore", cell.name), &restore);
        assert_eq!(
            db.psql("shop_restored", FINGERPRINT).await.unwrap(),
            before,
            "{}",
            cell.name
        );
        eprintln!(
            "{}: round trip through S3 verified ({} bytes)",
            cell.name,
            object.len()
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn local_directory_round_trip_through_a_mounted_volume() {
    let Some(cells) = ready("local_directory_round_trip_through_a_mounted_volume").await else {
        return;
    };
    for cell in cells {
        let network = unique("net");
        let db = DbContainer::postgres(&cell.server, &network).await.unwrap();
        let before = seeded(&db, "shop").await;
        let dir = shared_dir().unwrap();

        let backup = Job::new(&cell.image(), &network)
            .envs(&db_env(&db, "shop"))
            .env("BACKUP_PATH", "nightly/shop.pgdump.zst")
            .mount(dir.path(), "/backups")
            .run()
            .await
            .unwrap();
        assert_ok(&format!("{} local backup", cell.name), &backup);
        let object = dir.path().join("nightly/shop.pgdump.zst");
        assert!(
            object.is_file()
                && dir
                    .path()
                    .join("nightly/shop.pgdump.zst.manifest.json")
                    .is_file()
        );

        let restore = Job::new(&cell.image(), &network)
            .envs(&db_env(&db, "shop_copy"))
            .env("OPERATION_TYPE", "restore")
            .env("BACKUP_PATH", "nightly/shop.pgdump.zst")
            .mount(dir.path(), "/backups")
            .run()
            .await
            .unwrap();
        assert_ok(&format!("{} local restore", cell.name), &restore);
        assert_eq!(
            db.psql("shop_copy", FINGERPRINT).await.unwrap(),
            before,
            "{}",
            cell.name
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_password_and_unreachable_storage_fail_cleanly() {
    let Some(cells) = ready("wrong_password_and_unreachable_storage_fail_cleanly").await else {
        return;
    };
    for cell in cells {
        let network = unique("net");
        let (db, s3) = servers(&cell, &network).await;
        db.psql("postgres", "CREATE DATABASE shop;").await.unwrap();
        let cb = CallbackReceiver::start_on("0.0.0.0").await.unwrap();

        let mut env = db_env(&db, "shop");
        env.retain(|(k, _)| k != "DB_PASSWORD");
        let bad = Job::new(&cell.image(), &network)
            .envs(&env)
            .envs(&s3_env(&s3))
            .env("DB_PASSWORD", "not-the-password-777")
            .env("CALLBACK_URL", cb.url_via(HOST_ALIAS))
            .run()
            .await
            .unwrap();
        assert_eq!(bad.code, 3, "{}: {}", cell.name, bad.stderr);
        assert!(
            bad.stderr.contains("password authentication failed"),
            "{}",
            bad.stderr
        );
        assert!(!bad.stderr.contains("not-the-password-777"));
        assert_eq!(cb.statuses(), ["running", "failed"]);
        assert!(s3.list_keys(BUCKET).await.unwrap().is_empty());

        let mut storage = s3_env(&s3);
        storage.retain(|(k, _)| k != "STORAGE_ENDPOINT");
        let unreachable = Job::new(&cell.image(), &network)
            .envs(&db_env(&db, "shop"))
            .envs(&storage)
            .env("STORAGE_ENDPOINT", "http://nowhere.invalid:9000")
            .run()
            .await
            .unwrap();
        assert_eq!(unreachable.code, 6, "{}: {}", cell.name, unreachable.stderr);
        assert!(
            unreachable.stderr.contains("cannot reach bucket"),
            "{}",
            unreachable.stderr
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn server_versions_newer_are_refused_and_older_work() {
    let Some(cells) = ready("server_versions_newer_are_refused_and_older_work").await else {
        return;
    };
    let matrix = Matrix::load().unwrap();
    let servers: BTreeSet<u32> = matrix
        .servers
        .iter()
        .filter(|s| s.recipe == "postgres")
        .map(|s| major(&s.image))
        .collect();
    for cell in cells {
        let ours: u32 = cell.version.parse().unwrap();
        // The next newer server must be refused before anything is dumped.
        if let Some(newer) = servers.iter().find(|v| **v > ours) {
            let network = unique("net");
            let db = DbContainer::postgres(&format!("postgres:{newer}"), &network)
                .await
                .unwrap();
            db.psql("postgres", "CREATE DATABASE shop;").await.unwrap();
            let dir = shared_dir().unwrap();
            let out = Job::new(&cell.image(), &network)
                .envs(&db_env(&db, "shop"))
                .mount(dir.path(), "/backups")
                .run()
                .await
                .unwrap();
            assert_eq!(out.code, 5, "{} against {newer}: {}", cell.name, out.stderr);
            assert!(
                out.stderr
                    .contains(&format!("use the image backup-runner-postgres:{newer}")),
                "{}",
                out.stderr
            );
            assert_eq!(
                std::fs::read_dir(dir.path()).unwrap().count(),
                0,
                "nothing written"
            );
            eprintln!(
                "{}: PostgreSQL {newer} server refused with the right image named",
                cell.name
            );
        }
        // An older server: the backup works, and restores into this image's own version (the
        // upgrade path). Restoring into the older server itself either works or fails with a
        // hint naming the fix: PostgreSQL does not guarantee restores into older servers.
        if let Some(older) = servers.iter().find(|v| **v < ours) {
            let network = unique("net");
            let old_image = format!("postgres:{older}");
            let (old, new) = tokio::join!(
                DbContainer::postgres(&old_image, &network),
                DbContainer::postgres(&cell.server, &network)
            );
            let (old, new) = (old.unwrap(), new.unwrap());
            let before = seeded(&old, "shop").await;
            let dir = shared_dir().unwrap();
            let job = |db: &DbContainer, db_name: &str, op: &str| {
                Job::new(&cell.image(), &network)
                    .envs(&db_env(db, db_name))
                    .env("OPERATION_TYPE", op)
                    .env("BACKUP_PATH", "old/shop.pgdump.zst")
                    .mount(dir.path(), "/backups")
            };
            assert_ok(
                "backup of an older server",
                &job(&old, "shop", "backup").run().await.unwrap(),
            );
            assert_ok(
                "restore into the image's own version",
                &job(&new, "shop_upgraded", "restore").run().await.unwrap(),
            );
            assert_eq!(
                new.psql("shop_upgraded", FINGERPRINT).await.unwrap(),
                before
            );
            let back = job(&old, "shop_copy", "restore").run().await.unwrap();
            if back.code == 0 {
                assert_eq!(old.psql("shop_copy", FINGERPRINT).await.unwrap(), before);
            } else {
                assert_eq!(back.code, 7, "{}", back.stderr);
                assert!(
                    back.stderr
                        .contains("PostgreSQL does not guarantee restores into older servers"),
                    "{}",
                    back.stderr
                );
                assert!(
                    back.stderr
                        .contains("restore with the image matching the target server"),
                    "{}",
                    back.stderr
                );
            }
            eprintln!(
                "{}: PostgreSQL {older} server backed up, restored into {}; restore back into {older}: exit {}",
                cell.name, cell.server, back.code
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn images_are_non_root_labelled_and_explain_a_missing_config() {
    // Every engine's images, not only PostgreSQL's.
    let cells = Matrix::load().unwrap().cells_from_env(None).unwrap();
    let images: Vec<String> = cells.iter().map(Cell::image).collect();
    if !ready_or_skip(
        "images_are_non_root_labelled_and_explain_a_missing_config",
        &images,
    )
    .await
    {
        return;
    }
    for cell in cells {
        let info = inspect_image(&cell.image()).await.unwrap();
        let config = &info["Config"];
        assert_eq!(config["User"], "10001:10001");
        assert_eq!(config["Entrypoint"][0], "/usr/local/bin/backup-runner");
        let labels = &config["Labels"];
        assert_eq!(labels["io.backup-runner.engine"], cell.product());
        assert_eq!(
            labels["io.backup-runner.engine-version"],
            cell.version.as_str()
        );
        for label in ["source", "revision", "version", "created"] {
            let v = labels[format!("org.opencontainers.image.{label}")]
                .as_str()
                .unwrap_or("");
            assert!(!v.is_empty() && v != "unknown", "label {label} is {v:?}");
        }
        let size_mb = info["Size"].as_u64().unwrap() / 1_000_000;
        eprintln!("{}: {size_mb} MB", cell.image());

        let network = unique("net");
        let bare = Job::new(&cell.image(), &network).run().await.unwrap();
        assert_eq!(bare.code, 2, "{}", bare.stderr);
        assert!(
            bare.stderr.contains("invalid configuration"),
            "{}",
            bare.stderr
        );
        assert!(
            bare.stderr.contains("DB_HOST: is required"),
            "{}",
            bare.stderr
        );
        assert!(!bare.stderr.contains("panicked"), "{}", bare.stderr);
        assert!(bare.stderr.lines().count() < 10, "short: {}", bare.stderr);
    }
}
