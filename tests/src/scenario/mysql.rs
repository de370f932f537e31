//! MySQL and MariaDB under the scenarios, with the managed-service convention: jobs work as
//! `app_user`, which holds all privileges on `app_db` only. The sample of `mysql_sample`, a
//! 250 MiB table for [`Data::Large`]. Restore targets are `app_db` dropped and created again on a
//! second server of the same image, started once per source.

use std::sync::Arc;

use anyhow::{ensure, Result};

use crate::containers::MysqlContainer;
use crate::matrix::Cell;
use crate::mysql_sample::{FINGERPRINT, SEED};

use super::{line_differences, plain_marker, Data, EngineUnderTest, Variant};

pub struct Mysql;

/// Runs a future that is not `Send` (the container client's SQL helpers hold a `!Sync` exec
/// result across awaits) to completion on this worker thread.
fn here<F: std::future::Future>(f: F) -> F::Output {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(f))
}

/// A MySQL or MariaDB server and its `app_db`.
pub struct MyDb {
    pub server: Arc<MysqlContainer>,
    image: String,
    network: String,
    data: Data,
    /// The server restore targets are made on, started by the first [`EngineUnderTest::fresh`].
    spare: tokio::sync::OnceCell<Arc<MysqlContainer>>,
}

const APP_DB: &str = MysqlContainer::APP_DB;

/// Rows of ~640 bytes: a ~250 MiB table.
const LARGE_ROWS: u32 = 400_000;

const LARGE_FINGERPRINT: &str = "SELECT COUNT(*), SUM(LENGTH(t)), SUM(CRC32(t)), MIN(id), MAX(id) \
     FROM big; CHECKSUM TABLE big;";

impl EngineUnderTest for Mysql {
    type Db = MyDb;
    type Fingerprint = String;

    const ENGINE: &'static str = "mysql";
    const CLEAN_FLAG: &'static str = "RESTORE_CLEAN";
    const DENIED: &'static str = "Access denied";
    /// An email of the seeded customers, in the dump's INSERT statements.
    const SAMPLE_TEXT: &'static str = "c123@example.com";

    async fn start(server_image: &str, network: &str, data: Data) -> Result<MyDb> {
        // Bulk loads of the large data without the durability a test server does not need.
        let args: &[&str] = match data {
            Data::Sample => &[],
            Data::Large => &[
                "--skip-log-bin",
                "--innodb-flush-log-at-trx-commit=0",
                "--innodb-doublewrite=0",
                "--innodb-buffer-pool-size=512M",
            ],
        };
        let server = here(MysqlContainer::start_with(server_image, network, args))?;
        // With binary logging on (MySQL's default), a user without SUPER may create routines
        // and triggers only when the server trusts function creators, as managed services
        // configure it.
        here(server.root("", "SET GLOBAL log_bin_trust_function_creators = 1"))?;
        Ok(MyDb {
            server: Arc::new(server),
            image: server_image.to_string(),
            network: network.to_string(),
            data,
            spare: tokio::sync::OnceCell::new(),
        })
    }

    async fn fresh(near: &MyDb) -> Result<MyDb> {
        let spare = near
            .spare
            .get_or_try_init(|| async {
                Ok::<_, anyhow::Error>(
                    Self::start(&near.image, &near.network, near.data)
                        .await?
                        .server,
                )
            })
            .await?
            .clone();
        here(spare.root(
            "",
            &format!("DROP DATABASE IF EXISTS {APP_DB}; CREATE DATABASE {APP_DB}"),
        ))?;
        Ok(MyDb {
            server: spare,
            image: near.image.clone(),
            network: near.network.clone(),
            data: near.data,
            spare: tokio::sync::OnceCell::new(),
        })
    }

    async fn seed(db: &MyDb, data: Data) -> Result<()> {
        match data {
            Data::Sample => {
                here(db.server.app(SEED))?;
                let fp = here(db.server.root(APP_DB, FINGERPRINT))?;
                ensure!(
                    fp.contains("AUTO_INCREMENT=5000"),
                    "the sample is not what mysql_sample seeds: {fp}"
                );
            }
            Data::Large => {
                here(db.server.app(&format!(
                    "CREATE TABLE big (id INT PRIMARY KEY, t TEXT NOT NULL) ENGINE = InnoDB; \
                     INSERT INTO big WITH RECURSIVE d (x) AS \
                     (SELECT 0 UNION ALL SELECT x + 1 FROM d WHERE x < 999) \
                     SELECT a.x * 1000 + b.x + 1, REPEAT(SHA2(a.x * 1000 + b.x + 1, 256), 10) \
                     FROM d a JOIN d b WHERE a.x < {};",
                    LARGE_ROWS / 1000
                )))?;
            }
        }
        Ok(())
    }

    async fn fingerprint(db: &MyDb, data: Data) -> Result<String> {
        let query = match data {
            Data::Sample => FINGERPRINT,
            Data::Large => LARGE_FINGERPRINT,
        };
        here(db.server.root(APP_DB, query))
    }

    fn differences(expected: &String, actual: &String) -> Vec<String> {
        line_differences(expected, actual)
    }

    async fn tamper(db: &MyDb) -> Result<()> {
        here(db.server.root(
            APP_DB,
            "UPDATE customers SET balance = balance + 1 WHERE id = 7",
        ))?;
        Ok(())
    }

    async fn set_marker(db: &MyDb, value: &str) -> Result<()> {
        ensure!(
            plain_marker(value),
            "a marker is letters, digits and '-': {value:?}"
        );
        here(db.server.app(&format!(
            "CREATE TABLE IF NOT EXISTS catalog_marker \
             (id INT PRIMARY KEY, v VARCHAR(64) NOT NULL) ENGINE = InnoDB; \
             REPLACE INTO catalog_marker VALUES (1, '{value}');"
        )))?;
        Ok(())
    }

    async fn marker(db: &MyDb) -> Result<String> {
        here(
            db.server
                .root(APP_DB, "SELECT v FROM catalog_marker WHERE id = 1"),
        )
    }

    fn env(_cell: &Cell, db: &MyDb) -> Vec<(String, String)> {
        vec![
            ("DB_ENGINE".into(), "mysql".into()),
            ("DB_HOST".into(), db.server.name.clone()),
            ("DB_NAME".into(), APP_DB.into()),
            ("DB_USERNAME".into(), MysqlContainer::APP_USER.into()),
            ("DB_PASSWORD".into(), db.server.app_password.clone()),
        ]
    }

    fn wrong_password(cell: &Cell, db: &MyDb, password: &str) -> Vec<(String, String)> {
        let mut env = Self::env(cell, db);
        env.retain(|(k, _)| k != "DB_PASSWORD");
        env.push(("DB_PASSWORD".into(), password.into()));
        env
    }

    fn secrets(db: &MyDb) -> Vec<String> {
        vec![
            db.server.root_password.clone(),
            db.server.app_password.clone(),
        ]
    }

    fn variants(cell: &Cell) -> Vec<Variant> {
        let (dump_tool, restore_tool) = if cell.product() == "mariadb" {
            ("mariadb-dump", "mariadb ")
        } else {
            ("mysqldump", "mysql ")
        };
        vec![Variant {
            name: dump_tool,
            env: Vec::new(),
            dump_tool,
            restore_tool,
        }]
    }

    fn container_name(db: &MyDb) -> &str {
        &db.server.name
    }
}
