//! Redis and Valkey under the scenarios: each cell's server image, jobs logging in as the ACL
//! user `backup`, the full sample of `redis_sample` (logical databases 0, 3 and 15, every type
//! and encoding, 200,000 small keys, a 50 MiB string), compared key by key with a semantic
//! snapshot; 250 MiB of incompressible 128 KiB values for [`Data::Large`]. Restore targets are
//! new servers.

use anyhow::{ensure, Result};

use crate::containers::{unique, RedisContainer};
use crate::matrix::Cell;
use crate::redis_client::Snapshot;
use crate::redis_sample::{seed, SampleSize, DATABASES};

use super::{Data, EngineUnderTest, Variant};

pub struct Redis;

/// A Redis or Valkey server.
pub struct RedisDb {
    pub server: RedisContainer,
    image: String,
    data: Data,
}

/// The key [`EngineUnderTest::set_marker`] writes, in logical database 0.
const MARKER_KEY: &str = "catalog:marker";

/// 2,000 values of 128 KiB: 250 MiB.
const LARGE_KEYS: usize = 2_000;
const LARGE_VALUE: usize = 128 << 10;

/// Pseudo-random bytes (xorshift), which the server's RDB compression cannot shrink.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

fn password() -> String {
    unique("pw").replace('-', "")
}

impl EngineUnderTest for Redis {
    type Db = RedisDb;
    type Fingerprint = Snapshot;

    const ENGINE: &'static str = "redis";
    const CLEAN_FLAG: &'static str = "RESTORE_FLUSH";
    const DENIED: &'static str = "refused the credentials";
    /// A key name of the sample: short key names are stored as they are in both formats.
    const SAMPLE_TEXT: &'static str = "stream:events";

    async fn start(server_image: &str, network: &str, data: Data) -> Result<RedisDb> {
        let server = RedisContainer::start(server_image, network, &password()).await?;
        // A snapshot starts at once instead of after the server's default 5 s wait for more
        // replicas to join it.
        let mut conn = server.connect(0).await?;
        redis::cmd("CONFIG")
            .arg("SET")
            .arg("repl-diskless-sync-delay")
            .arg(0)
            .query_async::<()>(&mut conn)
            .await?;
        Ok(RedisDb {
            server,
            image: server_image.to_string(),
            data,
        })
    }

    async fn fresh(near: &RedisDb) -> Result<RedisDb> {
        Self::start(&near.image, near.server.network(), near.data).await
    }

    async fn seed(db: &RedisDb, data: Data) -> Result<()> {
        let endpoint = db.server.endpoint();
        match data {
            Data::Sample => {
                seed(&endpoint, SampleSize::full()).await?;
                let dbs: Vec<u32> = endpoint.key_counts().await?.into_keys().collect();
                ensure!(dbs == DATABASES, "the sample fills databases {dbs:?}");
            }
            Data::Large => {
                let mut conn = endpoint.connect(0).await?;
                for start in (0..LARGE_KEYS).step_by(20) {
                    let mut p = redis::pipe();
                    for i in start..(start + 20).min(LARGE_KEYS) {
                        p.cmd("SET")
                            .arg(format!("large:{i:05}"))
                            .arg(noise(LARGE_VALUE, i as u64 + 1))
                            .ignore();
                    }
                    p.query_async::<()>(&mut conn).await?;
                }
            }
        }
        Ok(())
    }

    async fn fingerprint(db: &RedisDb, _data: Data) -> Result<Snapshot> {
        db.server.endpoint().snapshot().await
    }

    fn differences(expected: &Snapshot, actual: &Snapshot) -> Vec<String> {
        expected.diff(actual)
    }

    async fn tamper(db: &RedisDb) -> Result<()> {
        let mut conn = db.server.connect(0).await?;
        redis::cmd("SET")
            .arg("k:00000043")
            .arg("tampered")
            .query_async::<()>(&mut conn)
            .await?;
        Ok(())
    }

    async fn set_marker(db: &RedisDb, value: &str) -> Result<()> {
        let mut conn = db.server.connect(0).await?;
        redis::cmd("SET")
            .arg(MARKER_KEY)
            .arg(value)
            .query_async::<()>(&mut conn)
            .await?;
        Ok(())
    }

    async fn marker(db: &RedisDb) -> Result<String> {
        let mut conn = db.server.connect(0).await?;
        let value: Option<String> = redis::cmd("GET")
            .arg(MARKER_KEY)
            .query_async(&mut conn)
            .await?;
        value.ok_or_else(|| anyhow::anyhow!("no {MARKER_KEY} key in logical database 0"))
    }

    fn env(cell: &Cell, db: &RedisDb) -> Vec<(String, String)> {
        vec![
            ("DB_ENGINE".into(), cell.product().to_string()),
            ("DB_HOST".into(), db.server.alias().to_string()),
            ("DB_PORT".into(), "6379".into()),
            ("DB_USERNAME".into(), RedisContainer::BACKUP_USER.into()),
            ("DB_PASSWORD".into(), db.server.backup_password.clone()),
        ]
    }

    fn wrong_password(cell: &Cell, db: &RedisDb, password: &str) -> Vec<(String, String)> {
        let mut env = Self::env(cell, db);
        env.retain(|(k, _)| k != "DB_PASSWORD");
        env.push(("DB_PASSWORD".into(), password.into()));
        env
    }

    fn secrets(db: &RedisDb) -> Vec<String> {
        vec![
            db.server.password.clone(),
            db.server.backup_password.clone(),
        ]
    }

    fn variants(_cell: &Cell) -> Vec<Variant> {
        let mode = |m: &str| vec![("REDIS_BACKUP_MODE".to_string(), m.to_string())];
        vec![
            Variant {
                name: "rdb",
                env: mode("rdb"),
                dump_tool: "--rdb",
                restore_tool: "redis-load",
            },
            Variant {
                name: "logical",
                env: mode("logical"),
                dump_tool: "redis-logical-dump",
                restore_tool: "redis-load",
            },
        ]
    }

    fn container_name(db: &RedisDb) -> &str {
        db.server.alias()
    }
}
