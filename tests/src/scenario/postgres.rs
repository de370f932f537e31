//! PostgreSQL under the scenarios: the official-compatible server image, the sample of
//! `pg_sample` in database `shop` (restore targets are new databases on the same server), and a
//! 250 MiB table for [`Data::Large`].

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use anyhow::{ensure, Result};

use crate::containers::DbContainer;
use crate::matrix::Cell;
use crate::pg_sample::{FINGERPRINT, SEED};

use super::{line_differences, plain_marker, Data, EngineUnderTest, Variant};

pub struct Postgres;

/// A database on a PostgreSQL server.
pub struct PgDb {
    pub server: Arc<DbContainer>,
    pub name: String,
}

/// Rows of ~640 bytes: a ~250 MiB table.
const LARGE_ROWS: u32 = 400_000;

const LARGE_FINGERPRINT: &str =
    "SELECT count(*) || ' rows, ' || sum(length(t)) || ' bytes, hash ' \
     || sum(hashtext(t)::bigint) || ', ids ' || min(id) || '-' || max(id) FROM big;";

impl EngineUnderTest for Postgres {
    type Db = PgDb;
    type Fingerprint = String;

    const ENGINE: &'static str = "postgres";
    const CLEAN_FLAG: &'static str = "RESTORE_CLEAN";
    const DENIED: &'static str = "password authentication failed";
    /// An email of the seeded customers, in the dump's COPY data (pg_dump runs uncompressed).
    const SAMPLE_TEXT: &'static str = "c1234@example.com";

    async fn start(server_image: &str, network: &str, _data: Data) -> Result<PgDb> {
        let server = DbContainer::postgres(server_image, network).await?;
        server.psql("postgres", "CREATE DATABASE shop;").await?;
        Ok(PgDb {
            server: Arc::new(server),
            name: "shop".into(),
        })
    }

    async fn fresh(near: &PgDb) -> Result<PgDb> {
        static NEXT: AtomicU32 = AtomicU32::new(1);
        let name = format!("restored_{}", NEXT.fetch_add(1, Ordering::Relaxed));
        near.server
            .psql("postgres", &format!("CREATE DATABASE {name};"))
            .await?;
        Ok(PgDb {
            server: near.server.clone(),
            name,
        })
    }

    async fn seed(db: &PgDb, data: Data) -> Result<()> {
        match data {
            Data::Sample => {
                db.server.psql(&db.name, SEED).await?;
                let fp = db.server.psql(&db.name, FINGERPRINT).await?;
                ensure!(
                    fp.contains("customers 2000 ") && fp.contains("seq invoice_seq 54321"),
                    "the sample is not what pg_sample seeds: {fp}"
                );
            }
            Data::Large => {
                db.server
                    .psql(
                        &db.name,
                        &format!(
                            "CREATE TABLE big AS SELECT g AS id, repeat(md5(g::text), 20) AS t \
                             FROM generate_series(1, {LARGE_ROWS}) g;"
                        ),
                    )
                    .await?;
            }
        }
        Ok(())
    }

    async fn fingerprint(db: &PgDb, data: Data) -> Result<String> {
        let query = match data {
            Data::Sample => FINGERPRINT,
            Data::Large => LARGE_FINGERPRINT,
        };
        db.server.psql(&db.name, query).await
    }

    fn differences(expected: &String, actual: &String) -> Vec<String> {
        line_differences(expected, actual)
    }

    async fn tamper(db: &PgDb) -> Result<()> {
        db.server
            .psql(
                &db.name,
                "UPDATE orders SET note = 'tampered' WHERE id = 1;",
            )
            .await?;
        Ok(())
    }

    async fn set_marker(db: &PgDb, value: &str) -> Result<()> {
        ensure!(
            plain_marker(value),
            "a marker is letters, digits and '-': {value:?}"
        );
        db.server
            .psql(
                &db.name,
                &format!(
                    "CREATE TABLE IF NOT EXISTS catalog_marker \
                     (id int PRIMARY KEY, v text NOT NULL); \
                     INSERT INTO catalog_marker VALUES (1, '{value}') \
                     ON CONFLICT (id) DO UPDATE SET v = EXCLUDED.v;"
                ),
            )
            .await?;
        Ok(())
    }

    async fn marker(db: &PgDb) -> Result<String> {
        db.server
            .psql(&db.name, "SELECT v FROM catalog_marker WHERE id = 1;")
            .await
    }

    fn env(_cell: &Cell, db: &PgDb) -> Vec<(String, String)> {
        vec![
            ("DB_HOST".into(), db.server.name.clone()),
            ("DB_PORT".into(), "5432".into()),
            ("DB_NAME".into(), db.name.clone()),
            ("DB_USERNAME".into(), "postgres".into()),
            ("DB_PASSWORD".into(), db.server.password.clone()),
        ]
    }

    fn wrong_password(cell: &Cell, db: &PgDb, password: &str) -> Vec<(String, String)> {
        let mut env = Self::env(cell, db);
        env.retain(|(k, _)| k != "DB_PASSWORD");
        env.push(("DB_PASSWORD".into(), password.into()));
        env
    }

    fn secrets(db: &PgDb) -> Vec<String> {
        vec![db.server.password.clone()]
    }

    fn variants(_cell: &Cell) -> Vec<Variant> {
        vec![Variant {
            name: "pg_dump",
            env: Vec::new(),
            dump_tool: "pg_dump",
            restore_tool: "pg_restore",
        }]
    }

    fn container_name(db: &PgDb) -> &str {
        &db.server.name
    }
}
