//! A sample Redis/Valkey data set: logical databases 0, 3 and 15, each with every core type —
//! strings (integer-encoded, empty, binary-safe keys and values with NUL and non-UTF-8 bytes),
//! lists, hashes, sets (including intsets) and sorted sets both small (listpack) and large,
//! streams with consumer groups, consumers and unacknowledged (pending) entries, an empty stream
//! with a group, HyperLogLogs (sparse and dense), bitmaps, keys with expiry times hours away —
//! plus, in db 0, many small keys and one large string and one large hash.
//!
//! Compare servers with [`crate::redis_client::RedisEndpoint::snapshot`].

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use redis::aio::MultiplexedConnection;
use redis::{cmd, pipe, Pipeline};

use crate::redis_client::RedisEndpoint;

/// The logical databases the sample fills.
pub const DATABASES: [u32; 3] = [0, 3, 15];
/// The large string's key, in db 0.
pub const BIG_STRING: &[u8] = b"big:blob";
/// A key with NUL and non-UTF-8 bytes, in every database.
pub const BINARY_KEY: &[u8] = b"bin:\x00\xff\xfe\x80key\r\n";

/// How much data [`seed`] writes.
#[derive(Debug, Clone, Copy)]
pub struct SampleSize {
    /// Small keys in db 0 (mostly strings, every 25th a small hash, set, list or sorted set).
    pub small_keys: usize,
    /// The large string in db 0.
    pub big_string_bytes: usize,
    /// Fields of the large hash in db 0.
    pub big_hash_fields: usize,
    /// Items of the large list, hash, set and sorted set in every database.
    pub collection: usize,
    /// Entries of the stream in every database.
    pub stream_entries: usize,
}

impl SampleSize {
    /// Overrides [`SampleSize::full`]'s number of small keys.
    pub const SMALL_KEYS_ENV: &'static str = "REDIS_SAMPLE_SMALL_KEYS";
    /// Overrides [`SampleSize::full`]'s large string size, in MiB.
    pub const BIG_STRING_MIB_ENV: &'static str = "REDIS_SAMPLE_BIG_STRING_MIB";

    /// 200,000 small keys and a 50 MiB string (`REDIS_SAMPLE_SMALL_KEYS`,
    /// `REDIS_SAMPLE_BIG_STRING_MIB` override), a 100,000-field hash, collections of 10,000.
    pub fn full() -> SampleSize {
        let env = |name: &str, default: usize| {
            std::env::var(name)
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(default)
        };
        SampleSize {
            small_keys: env(Self::SMALL_KEYS_ENV, 200_000),
            big_string_bytes: env(Self::BIG_STRING_MIB_ENV, 50) << 20,
            big_hash_fields: 100_000,
            collection: 10_000,
            stream_entries: 2_000,
        }
    }

    /// Every type and every encoding, quickly: 20,000 small keys, a 2 MiB string.
    pub fn medium() -> SampleSize {
        SampleSize {
            small_keys: 20_000,
            big_string_bytes: 2 << 20,
            big_hash_fields: 5_000,
            collection: 2_000,
            stream_entries: 500,
        }
    }

    /// Every type, a few hundred keys: for failure cases.
    pub fn small() -> SampleSize {
        SampleSize {
            small_keys: 300,
            big_string_bytes: 64 << 10,
            big_hash_fields: 600,
            collection: 600,
            stream_entries: 50,
        }
    }
}

/// Unix time in ms, `hours` from now.
fn hours_from_now_ms(hours: f64) -> i64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as i64;
    now + (hours * 3_600_000.0) as i64
}

/// Deterministic filler bytes: a quarter pseudo-random (xorshift), the rest a pattern, so the
/// data compresses about as well as real values do.
pub fn filler(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|i| {
            if i % 4 == 0 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            } else {
                b"redis-sample-"[i % 13]
            }
        })
        .collect()
}

/// Sends a pipeline (replies ignored) and empties it.
async fn flush(conn: &mut MultiplexedConnection, p: &mut Pipeline) -> Result<()> {
    if !p.is_empty() {
        p.query_async::<()>(conn).await?;
        p.clear();
    }
    Ok(())
}

/// Writes the sample into `server` (whose databases should be empty).
pub async fn seed(server: &RedisEndpoint, size: SampleSize) -> Result<()> {
    for db in DATABASES {
        let mut conn = server.connect(db).await?;
        seed_types(&mut conn, db, size)
            .await
            .with_context(|| format!("seeding db {db}"))?;
    }
    let mut conn = server.connect(0).await?;
    seed_bulk(&mut conn, size).await.context("seeding db 0")
}

/// Every core type, small and large, in one database.
async fn seed_types(conn: &mut MultiplexedConnection, db: u32, size: SampleSize) -> Result<()> {
    let mut p = pipe();
    // Strings: embstr, raw, integer-encoded, negative, empty, binary.
    p.cmd("SET")
        .arg("str:hello")
        .arg(format!("hello from db {db}"));
    p.cmd("SET").arg("str:raw").arg(filler(1000, u64::from(db)));
    p.cmd("SET").arg("str:int").arg(12_345);
    p.cmd("INCRBY").arg("str:int").arg(db);
    p.cmd("SET").arg("str:negative").arg(-42);
    p.cmd("SET").arg("str:max").arg(i64::MAX);
    p.cmd("SET").arg("str:empty").arg("");
    p.cmd("SET").arg("str:float").arg("3.14159");
    p.cmd("SET")
        .arg(BINARY_KEY)
        .arg(&b"\x00\x01\xff binary \xc3\x28 \r\n\x00"[..]);
    p.cmd("SET").arg("str:utf8 ключ 🦀").arg("значение 😀 𠜎");
    // Lists: small (listpack) and large (quicklist, some long items).
    p.cmd("RPUSH")
        .arg("list:small")
        .arg("a")
        .arg("")
        .arg(&b"\x00\xff"[..])
        .arg(123)
        .arg("b");
    p.cmd("RPUSH")
        .arg("list:ints")
        .arg(&[1, 2, 3, -4, 5_000_000_000i64][..]);
    // Hashes, sets, sorted sets: small.
    p.cmd("HSET")
        .arg("hash:small")
        .arg("name")
        .arg("Ada")
        .arg("age")
        .arg(36)
        .arg(&b"bin\x00field"[..])
        .arg(&b"\xff\xfe"[..])
        .arg("empty")
        .arg("");
    p.cmd("SADD")
        .arg("set:small")
        .arg("red")
        .arg("green")
        .arg(&b"\x00blue"[..])
        .arg("");
    p.cmd("SADD")
        .arg("set:int")
        .arg(&[1i64, 2, 3, 64_000, -7, 1 << 40][..]);
    p.cmd("ZADD")
        .arg("zset:small")
        .arg(0.1)
        .arg("tenth")
        .arg(-1.5)
        .arg("neg")
        .arg("+inf")
        .arg("top")
        .arg("-inf")
        .arg("bottom")
        .arg(1e300)
        .arg("huge")
        .arg(0.1)
        .arg("tenth-too")
        .arg(7)
        .arg(&b"\x00bin"[..]);
    // HyperLogLog: sparse and dense; bitmaps.
    p.cmd("PFADD")
        .arg("hll:sparse")
        .arg(&(0..100).map(|i| format!("visitor-{i}")).collect::<Vec<_>>()[..]);
    p.cmd("SETBIT").arg("bitmap:flags").arg(0).arg(1);
    p.cmd("SETBIT").arg("bitmap:flags").arg(7).arg(1);
    p.cmd("SETBIT").arg("bitmap:flags").arg(1000).arg(1);
    p.cmd("SETBIT").arg("bitmap:flags").arg(100_000).arg(1);
    // Expiry times hours away, on several types.
    p.cmd("SET")
        .arg("ttl:string")
        .arg("expires in 3 hours")
        .arg("EX")
        .arg(3 * 3600);
    p.cmd("HSET").arg("ttl:hash").arg("f").arg("v");
    p.cmd("PEXPIRE").arg("ttl:hash").arg(4 * 3_600_000);
    p.cmd("RPUSH").arg("ttl:list").arg("x").arg("y");
    p.cmd("PEXPIREAT")
        .arg("ttl:list")
        .arg(hours_from_now_ms(5.0));
    p.cmd("ZADD").arg("ttl:zset").arg(1).arg("one");
    p.cmd("EXPIRE").arg("ttl:zset").arg(6 * 3600);
    p.cmd("SET").arg(&b"ttl:bin\xff"[..]).arg(&b"\x00"[..]);
    p.cmd("EXPIRE").arg(&b"ttl:bin\xff"[..]).arg(2 * 3600);
    flush(conn, &mut p).await?;

    // Large collections, in chunks.
    let n = size.collection;
    for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
        let mut list = cmd("RPUSH");
        list.arg("list:large");
        let mut hash = cmd("HSET");
        hash.arg("hash:large");
        let mut set = cmd("SADD");
        set.arg("set:large");
        let mut zset = cmd("ZADD");
        zset.arg("zset:large");
        for &i in chunk {
            if i % 50 == 0 {
                list.arg(filler(300, i as u64));
            } else {
                list.arg(format!("item-{i}"));
            }
            hash.arg(format!("field-{i}"))
                .arg(format!("value-{db}-{i}"));
            set.arg(format!("member-{i}"));
            // Equal scores too (ordered by member then).
            zset.arg((i / 3) as f64 * 0.5).arg(format!("player-{i}"));
        }
        p.add_command(list)
            .add_command(hash)
            .add_command(set)
            .add_command(zset);
        flush(conn, &mut p).await?;
    }
    p.cmd("PFADD")
        .arg("hll:dense")
        .arg(&(0..20_000).map(|i| format!("u{i}")).collect::<Vec<_>>()[..]);
    flush(conn, &mut p).await?;

    // A stream with two consumer groups: g1 read by alice (some acknowledged) and bob, carol
    // created without reading; g2 starting at the end. One entry deleted.
    for i in 0..size.stream_entries {
        p.cmd("XADD")
            .arg("stream:events")
            .arg("*")
            .arg("n")
            .arg(i)
            .arg("kind")
            .arg(if i % 2 == 0 { "click" } else { "view" })
            .arg(&b"bin"[..])
            .arg(&b"\x00\xff"[..]);
    }
    flush(conn, &mut p).await?;
    p.cmd("XGROUP")
        .arg("CREATE")
        .arg("stream:events")
        .arg("g1")
        .arg("0");
    p.cmd("XGROUP")
        .arg("CREATE")
        .arg("stream:events")
        .arg("g2")
        .arg("$");
    p.cmd("XGROUP")
        .arg("CREATECONSUMER")
        .arg("stream:events")
        .arg("g1")
        .arg("carol");
    p.cmd("XGROUP")
        .arg("CREATE")
        .arg("stream:empty")
        .arg("watchers")
        .arg("$")
        .arg("MKSTREAM");
    flush(conn, &mut p).await?;
    let read = |consumer: &str, count: usize| {
        let mut c = cmd("XREADGROUP");
        c.arg("GROUP")
            .arg("g1")
            .arg(consumer)
            .arg("COUNT")
            .arg(count)
            .arg("STREAMS")
            .arg("stream:events")
            .arg(">");
        c
    };
    let alice: redis::Value = read("alice", 10).query_async(conn).await?;
    read("bob", 5).query_async::<()>(conn).await?;
    // Alice acknowledges her first three entries; the others stay pending.
    let ids = first_ids(&alice, 3);
    if !ids.is_empty() {
        cmd("XACK")
            .arg("stream:events")
            .arg("g1")
            .arg(&ids[..])
            .query_async::<()>(conn)
            .await?;
        // One entry deleted (max-deleted-entry-id).
        cmd("XDEL")
            .arg("stream:events")
            .arg(&ids[0])
            .query_async::<()>(conn)
            .await?;
    }
    // Something only this database has.
    cmd("SET")
        .arg(format!("db{db}:marker"))
        .arg(db)
        .query_async::<()>(conn)
        .await?;
    Ok(())
}

/// The ids of the first `n` entries of an XREADGROUP reply.
fn first_ids(reply: &redis::Value, n: usize) -> Vec<Vec<u8>> {
    use redis::Value::{Array, BulkString};
    let Array(streams) = reply else {
        return Vec::new();
    };
    let Some(Array(stream)) = streams.first() else {
        return Vec::new();
    };
    let Some(Array(entries)) = stream.get(1) else {
        return Vec::new();
    };
    entries
        .iter()
        .filter_map(|e| match e {
            Array(parts) => match parts.first() {
                Some(BulkString(id)) => Some(id.clone()),
                _ => None,
            },
            _ => None,
        })
        .take(n)
        .collect()
}

/// db 0's bulk: the many small keys (every 7th with an expiry 2–4 hours away), the large string
/// and the large hash.
async fn seed_bulk(conn: &mut MultiplexedConnection, size: SampleSize) -> Result<()> {
    let mut p = pipe();
    for i in 0..size.small_keys {
        let key = format!("k:{i:08}");
        match i % 100 {
            25 => {
                p.cmd("HSET")
                    .arg(&key)
                    .arg("a")
                    .arg(i)
                    .arg("b")
                    .arg("x")
                    .ignore();
            }
            50 => {
                p.cmd("SADD").arg(&key).arg(i).arg("m").ignore();
            }
            75 => {
                p.cmd("RPUSH").arg(&key).arg(i).arg("tail").ignore();
            }
            99 => {
                p.cmd("ZADD").arg(&key).arg(i).arg("s").ignore();
            }
            _ if i % 10 == 3 => {
                // Integer-encoded.
                p.cmd("SET").arg(&key).arg(i as i64 * 1_000).ignore();
            }
            _ => {
                let value = format!("value-{i}-{}", "x".repeat(i % 48));
                p.cmd("SET").arg(&key).arg(value).ignore();
            }
        }
        if i % 7 == 0 {
            let ms = 2 * 3_600_000 + (i as i64 * 7_919) % 7_200_000;
            p.cmd("PEXPIRE").arg(&key).arg(ms).ignore();
        }
        if i % 2000 == 1999 {
            flush(conn, &mut p).await?;
        }
    }
    flush(conn, &mut p).await?;

    cmd("SET")
        .arg(BIG_STRING)
        .arg(filler(size.big_string_bytes, 0x5eed))
        .query_async::<()>(conn)
        .await?;
    for start in (0..size.big_hash_fields).step_by(1000) {
        let mut c = cmd("HSET");
        c.arg("big:hash");
        for i in start..(start + 1000).min(size.big_hash_fields) {
            c.arg(format!("field:{i:06}"))
                .arg(filler(40 + i % 40, i as u64));
        }
        c.query_async::<()>(conn).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filler_is_deterministic_and_mixed() {
        let a = filler(4096, 1);
        assert_eq!(a, filler(4096, 1));
        assert_ne!(a, filler(4096, 2));
        assert!(a.iter().any(|&b| b >= 0x80));
    }
}
