//! What only the MySQL and MariaDB cells have, through the runner images, as the application
//! user of the managed-service convention (all privileges on `app_db` only): a table a
//! single-transaction snapshot does not cover is named in a warning, and a server of the other
//! flavor is refused naming the image to use. Round trips, refusals every engine shares and
//! faults are in scenarios.rs; the hard cases in mysql_fidelity.rs.

use std::collections::BTreeMap;

use harness::containers::{ready_or_skip, shared_dir, unique, Job, MysqlContainer};
use harness::matrix::{Cell, Matrix};

const APP_DB: &str = MysqlContainer::APP_DB;

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

/// Per selected cell, on its own server: a MyISAM table is backed up with a warning naming it,
/// in the log and in the manifest. And the cell's image against the server of every cell of the
/// other flavor in the matrix is refused before anything is dumped (exit 5), naming that cell's
/// image. Each server is started once.
#[tokio::test(flavor = "multi_thread")]
async fn myisam_is_named_and_the_other_flavor_is_refused() {
    let matrix = Matrix::load().unwrap();
    let cells = matrix.cells_from_env(Some("mysql")).unwrap();
    let family: Vec<Cell> = matrix
        .select(&[])
        .unwrap()
        .into_iter()
        .filter(|c| c.engine == "mysql")
        .cloned()
        .collect();
    let mut images: Vec<String> = cells.iter().map(Cell::image).collect();
    images.extend(family.iter().map(|c| c.server.clone()));
    if !ready_or_skip("myisam_is_named_and_the_other_flavor_is_refused", &images).await {
        return;
    }
    let network = unique("net");
    let mut servers: BTreeMap<String, MysqlContainer> = BTreeMap::new();
    for cell in &cells {
        if !servers.contains_key(&cell.server) {
            let server = MysqlContainer::start(&cell.server, &network).await.unwrap();
            servers.insert(cell.server.clone(), server);
        }
        let db = &servers[&cell.server];
        let dir = shared_dir().unwrap();
        db.app(
            "CREATE TABLE IF NOT EXISTS legacy (id INT PRIMARY KEY) ENGINE = MyISAM; \
             REPLACE INTO legacy VALUES (1)",
        )
        .await
        .unwrap();
        let warned = Job::new(&cell.image(), &network)
            .envs(&app_env(db))
            .env("BACKUP_PATH", "legacy.sql.zst")
            .mount(dir.path(), "/backups")
            .run()
            .await
            .unwrap();
        warned.assert_ok(&format!("{} backup with a MyISAM table", cell.name));
        assert!(
            warned.stderr.contains("legacy (MyISAM)"),
            "{}",
            warned.stderr
        );
        let manifest: serde_json::Value = serde_json::from_slice(
            &std::fs::read(dir.path().join("legacy.sql.zst.manifest.json")).unwrap(),
        )
        .unwrap();
        assert!(
            manifest["warnings"][0]
                .as_str()
                .unwrap()
                .contains("legacy (MyISAM)"),
            "{manifest}"
        );

        for other in family.iter().filter(|c| c.product() != cell.product()) {
            if !servers.contains_key(&other.server) {
                let server = MysqlContainer::start(&other.server, &network)
                    .await
                    .unwrap();
                servers.insert(other.server.clone(), server);
            }
            let theirs = &servers[&other.server];
            let dir = shared_dir().unwrap();
            let out = Job::new(&cell.image(), &network)
                .envs(&app_env(theirs))
                .mount(dir.path(), "/backups")
                .env("BACKUP_PATH", "refused.sql.zst")
                .run()
                .await
                .unwrap();
            let what = format!("{} against {}", cell.name, other.server);
            out.assert_code(5, &what);
            assert!(
                out.stderr
                    .contains(&format!("use the image {}", other.image())),
                "{what}: {}",
                out.stderr
            );
            assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "{what}");
            eprintln!("{what}: refused, naming {}", other.image());
        }
    }
}
