//! PostgreSQL's version matrix through the runner images: each selected PostgreSQL cell's image
//! against an older server of the matrix (backed up, restored into the image's own version,
//! and restored back into the older server, which works or fails with a hint). The tests every
//! engine shares (round trips, refusals, faults) are in scenarios.rs.
//!
//! Run with `cargo xtask test [cell…]` (images must be built first: `cargo xtask build`).

use std::collections::BTreeSet;

use harness::containers::{ready_or_skip, shared_dir, unique, DbContainer, Job, JobOutput};
use harness::matrix::{Cell, Matrix};
use harness::pg_sample::{FINGERPRINT, SEED};

/// The selected cells, once Docker and every image they need are there.
async fn ready(test: &str) -> Option<Vec<Cell>> {
    let matrix = Matrix::load().unwrap();
    let cells = matrix.cells_from_env(Some("postgres")).unwrap();
    let mut images: Vec<String> = cells
        .iter()
        .flat_map(|c| [c.image(), c.server.clone()])
        .collect();
    images.extend(
        matrix
            .servers
            .iter()
            .filter(|s| s.recipe == "postgres")
            .map(|s| s.image.clone()),
    );
    ready_or_skip(test, &images).await.then_some(cells)
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

/// An older server: the backup works, and restores into this image's own version (the upgrade
/// path). Restoring into the older server itself either works or fails with a hint naming the
/// fix: PostgreSQL does not guarantee restores into older servers.
#[tokio::test(flavor = "multi_thread")]
async fn older_servers_are_backed_up_and_restored_into_the_images_version() {
    let Some(cells) =
        ready("older_servers_are_backed_up_and_restored_into_the_images_version").await
    else {
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
