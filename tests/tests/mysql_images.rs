//! The image harness for the MySQL and MariaDB cells: the real image against real servers, as
//! the application user of the managed-service convention (all privileges on `app_db` only).

use harness::containers::{
    ready_or_skip, shared_dir, unique, Job, JobOutput, MysqlContainer, S3Container, HOST_ALIAS,
};
use harness::matrix::{Cell, Matrix};
use harness::mysql_sample::{FINGERPRINT, SEED};
use harness::CallbackReceiver;

const BUCKET: &str = "backups";
const APP_DB: &str = MysqlContainer::APP_DB;

async fn ready(test: &str) -> Option<Vec<Cell>> {
    let matrix = Matrix::load().unwrap();
    let cells = matrix.cells_from_env(Some("mysql")).unwrap();
    let mut images = vec![matrix.s3_image().to_string()];
    images.extend(cells.iter().flat_map(|c| [c.image(), c.server.clone()]));
    ready_or_skip(test, &images).await.then_some(cells)
}

fn app_env(db: &MysqlContainer) -> Vec<(String, String)> {
    [
        ("DB_ENGINE", "mysql"),
        ("DB_HOST", db.name.as_str()),
        ("DB_NAME", APP_DB),
        ("DB_USERNAME", MysqlContainer::APP_USER),
        ("DB_PASSWORD", db.app_password.as_str()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

fn assert_ok(what: &str, out: &JobOutput) {
    assert_eq!(out.code, 0, "{what} failed:\n{}", out.stderr);
}

async fn seeded(db: &MysqlContainer) -> String {
    // With binary logging on (MySQL's default), a user without SUPER may create routines and
    // triggers only when the server trusts function creators, as managed services configure.
    db.root("", "SET GLOBAL log_bin_trust_function_creators = 1")
        .await
        .unwrap();
    db.app(SEED).await.unwrap();
    let fp = db.root(APP_DB, FINGERPRINT).await.unwrap();
    assert!(fp.contains("AUTO_INCREMENT=5000"), "{fp}");
    fp
}

#[tokio::test(flavor = "multi_thread")]
async fn app_user_backs_up_and_restores_through_s3() {
    let Some(cells) = ready("app_user_backs_up_and_restores_through_s3").await else {
        return;
    };
    for cell in cells {
        let network = unique("net");
        let s3_image = Matrix::load().unwrap().s3_image().to_string();
        let (db, s3) = tokio::join!(
            MysqlContainer::start(&cell.server, &network),
            S3Container::start(&s3_image, &network)
        );
        let (db, s3) = (db.unwrap(), s3.unwrap());
        s3.create_bucket(BUCKET).await.unwrap();
        let before = seeded(&db).await;
        let cb = CallbackReceiver::start_on("0.0.0.0").await.unwrap();
        let storage: Vec<(String, String)> = [
            ("STORAGE_TYPE", "minio".to_string()),
            ("STORAGE_ENDPOINT", s3.endpoint_in_network()),
            ("STORAGE_BUCKET", BUCKET.into()),
            ("STORAGE_ACCESS_KEY_ID", "test".into()),
            ("STORAGE_SECRET_ACCESS_KEY", "test-secret".into()),
            ("BACKUP_PATH", format!("{}/app_db.sql.zst", cell.name)),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();

        let backup = Job::new(&cell.image(), &network)
            .envs(&app_env(&db))
            .envs(&storage)
            .env("CALLBACK_URL", cb.url_via(HOST_ALIAS))
            .run()
            .await
            .unwrap();
        assert_ok(&format!("{} backup", cell.name), &backup);
        assert!(!backup.stderr.contains(&db.app_password));
        let statuses = cb.statuses();
        assert_eq!(statuses, ["running", "metadata", "success"]);
        let key = format!("{}/app_db.sql.zst", cell.name);
        let manifest: serde_json::Value = serde_json::from_slice(
            &s3.get(BUCKET, &format!("{key}.manifest.json"))
                .await
                .unwrap(),
        )
        .unwrap();
        assert_eq!(manifest["engine"], "mysql");
        assert_eq!(manifest["engine_version"], cell.version.as_str());
        assert_eq!(
            manifest["warnings"],
            serde_json::json!([]),
            "all tables are InnoDB"
        );

        // Destroy the data (as the application user) and restore it.
        db.app(&format!("DROP DATABASE {APP_DB}")).await.unwrap();
        let restore_job = || {
            Job::new(&cell.image(), &network)
                .envs(&app_env(&db))
                .envs(&storage)
                .env("OPERATION_TYPE", "restore")
        };
        let restore = restore_job().run().await.unwrap();
        assert_ok(&format!("{} restore", cell.name), &restore);
        let after = db.root(APP_DB, FINGERPRINT).await.unwrap();
        assert_eq!(after, before, "{}", cell.name);
        // 4-byte characters survived byte for byte (F0 9F 98 80 is 😀).
        assert!(after.contains("F09F9880"), "{after}");

        // A non-empty target needs RESTORE_CLEAN.
        let again = restore_job().run().await.unwrap();
        assert_eq!(again.code, 2, "{}", again.stderr);
        assert!(
            again.stderr.contains("RESTORE_CLEAN=true"),
            "{}",
            again.stderr
        );
        eprintln!("{}: app_user round trip through S3 verified", cell.name);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn refusals_and_warnings() {
    let Some(cells) = ready("refusals_and_warnings").await else {
        return;
    };
    let matrix = Matrix::load().unwrap();
    for cell in &cells {
        let network = unique("net");
        let db = MysqlContainer::start(&cell.server, &network).await.unwrap();
        let dir = shared_dir().unwrap();

        // Wrong password: exit 3, nothing written.
        let mut env = app_env(&db);
        env.retain(|(k, _)| k != "DB_PASSWORD");
        let bad = Job::new(&cell.image(), &network)
            .envs(&env)
            .env("DB_PASSWORD", "wrong-password-123")
            .mount(dir.path(), "/backups")
            .run()
            .await
            .unwrap();
        assert_eq!(bad.code, 3, "{}: {}", cell.name, bad.stderr);
        assert!(bad.stderr.contains("Access denied"), "{}", bad.stderr);
        assert!(!bad.stderr.contains("wrong-password-123"));

        // A MyISAM table: the backup works and says it is not consistent.
        db.app("CREATE TABLE legacy (id INT PRIMARY KEY) ENGINE = MyISAM; INSERT INTO legacy VALUES (1)")
            .await
            .unwrap();
        let warned = Job::new(&cell.image(), &network)
            .envs(&app_env(&db))
            .env("BACKUP_PATH", "legacy.sql.zst")
            .mount(dir.path(), "/backups")
            .run()
            .await
            .unwrap();
        assert_ok("backup with a MyISAM table", &warned);
        assert!(
            warned.stderr.contains("legacy (MyISAM)"),
            "{}",
            warned.stderr
        );
        let manifest: serde_json::Value = serde_json::from_slice(
            &std::fs::read(dir.path().join("legacy.sql.zst.manifest.json")).unwrap(),
        )
        .unwrap();
        assert!(manifest["warnings"][0]
            .as_str()
            .unwrap()
            .contains("legacy (MyISAM)"));

        // This image against every other server in the matrix: a different flavor, or a newer
        // version, is refused before anything is dumped, naming the right image.
        for other in matrix
            .select(&[])
            .unwrap()
            .into_iter()
            .filter(|c| c.engine == "mysql")
        {
            let refused = other.product() != cell.product()
                || version(&other.version) > version(&cell.version);
            if other.name == cell.name || !refused {
                continue;
            }
            let network = unique("net");
            let theirs = MysqlContainer::start(&other.server, &network)
                .await
                .unwrap();
            let out = Job::new(&cell.image(), &network)
                .envs(&app_env(&theirs))
                .mount(dir.path(), "/backups")
                .env("BACKUP_PATH", "refused.sql.zst")
                .run()
                .await
                .unwrap();
            assert_eq!(
                out.code, 5,
                "{} against {}: {}",
                cell.name, other.server, out.stderr
            );
            assert!(
                out.stderr
                    .contains(&format!("use the image {}", other.image())),
                "{} against {}: {}",
                cell.name,
                other.server,
                out.stderr
            );
            assert!(!dir.path().join("refused.sql.zst").exists());
            eprintln!(
                "{} against {}: refused, naming {}",
                cell.name,
                other.server,
                other.image()
            );
        }
    }
}

fn version(v: &str) -> (u32, u32) {
    let mut it = v.split('.').map(|p| p.parse().unwrap_or(0));
    (it.next().unwrap_or(0), it.next().unwrap_or(0))
}
