//! The harness's own Redis/Valkey client: connections from the test process, a semantic
//! [`Snapshot`] of every logical database to compare two servers with (whatever their versions:
//! values, not DUMP bytes), and a key-by-key DUMP/RESTORE copy that proves the comparison.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use redis::aio::MultiplexedConnection;
use redis::{cmd, pipe, AsyncConnectionConfig, IntoConnectionInfo, Value};
use sha2::{Digest, Sha256};

/// Keys read per SCAN step and per pipelined batch.
const BATCH: usize = 1000;
/// Canonical values up to this size are kept as they are (and shown in differences); larger ones
/// as their length and SHA-256.
const INLINE_MAX: usize = 256;
/// How far two absolute expiry times may be apart and still count as the same.
pub const EXPIRY_TOLERANCE_MS: i64 = 2_000;

/// Where a server is and how to log in.
#[derive(Debug, Clone)]
pub struct RedisEndpoint {
    host: String,
    port: u16,
    username: Option<String>,
    password: String,
}

impl RedisEndpoint {
    pub fn new(host: &str, port: u16, username: Option<&str>, password: &str) -> RedisEndpoint {
        RedisEndpoint {
            host: host.to_string(),
            port,
            username: username.map(str::to_string),
            password: password.to_string(),
        }
    }

    /// A connection to logical database `db` (no response timeout: a 50 MB value or a large
    /// pipeline takes longer than the client's default of 500 ms).
    pub async fn connect(&self, db: u32) -> Result<MultiplexedConnection> {
        let info = (self.host.as_str(), self.port).into_connection_info()?;
        let mut settings = info
            .redis_settings()
            .clone()
            .set_password(&self.password)
            .set_db(i64::from(db))
            // CLIENT SETINFO is 7.2+.
            .set_skip_set_lib_name();
        if let Some(user) = &self.username {
            settings = settings.set_username(user);
        }
        let client = redis::Client::open(info.set_redis_settings(settings))?;
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(5)))
            .set_response_timeout(None);
        client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .with_context(|| format!("connecting to {}:{} db {db}", self.host, self.port))
    }

    /// The number of keys of every non-empty logical database (INFO keyspace).
    pub async fn key_counts(&self) -> Result<BTreeMap<u32, u64>> {
        let mut conn = self.connect(0).await?;
        let info: String = cmd("INFO").arg("keyspace").query_async(&mut conn).await?;
        let mut counts = BTreeMap::new();
        for line in info.lines() {
            let Some((db, fields)) = line.trim().split_once(':') else {
                continue;
            };
            let Some(db) = db.strip_prefix("db").and_then(|n| n.parse().ok()) else {
                continue;
            };
            let keys = fields
                .split(',')
                .find_map(|f| f.strip_prefix("keys="))
                .and_then(|n| n.parse().ok())
                .with_context(|| format!("INFO keyspace line {line:?}"))?;
            counts.insert(db, keys);
        }
        Ok(counts)
    }

    /// Whether every logical database is empty.
    pub async fn is_empty(&self) -> Result<bool> {
        Ok(self.key_counts().await?.values().all(|&n| n == 0))
    }

    /// FLUSHALL.
    pub async fn flush_all(&self) -> Result<()> {
        let mut conn = self.connect(0).await?;
        cmd("FLUSHALL").query_async::<()>(&mut conn).await?;
        Ok(())
    }

    /// Every key of every logical database, read back into a comparable form.
    pub async fn snapshot(&self) -> Result<Snapshot> {
        let mut dbs = BTreeMap::new();
        for (db, size) in self.key_counts().await? {
            let mut conn = self.connect(db).await?;
            let mut keys = BTreeMap::new();
            for batch in scan_batches(&mut conn).await? {
                read_batch(&mut conn, batch, &mut keys)
                    .await
                    .with_context(|| format!("reading db {db}"))?;
            }
            dbs.insert(db, DbSnapshot { size, keys });
        }
        Ok(Snapshot { dbs })
    }

    /// Copies every key of every logical database to `target` with DUMP and RESTORE (absolute
    /// expiry times, replacing same-named keys): same-version servers only.
    pub async fn copy_to(&self, target: &RedisEndpoint) -> Result<()> {
        for db in self.key_counts().await?.into_keys() {
            let mut from = self.connect(db).await?;
            let mut to = target.connect(db).await?;
            for batch in scan_batches(&mut from).await? {
                let mut p = pipe();
                for key in &batch {
                    p.cmd("DUMP").arg(key).cmd("PEXPIRETIME").arg(key);
                }
                let replies: Vec<Value> = p.query_async(&mut from).await?;
                let mut p = pipe();
                for (key, pair) in batch.iter().zip(replies.chunks(2)) {
                    let (Value::BulkString(payload), Value::Int(expiry)) = (&pair[0], &pair[1])
                    else {
                        continue; // gone meanwhile
                    };
                    p.cmd("RESTORE")
                        .arg(key)
                        .arg((*expiry).max(0))
                        .arg(payload)
                        .arg("REPLACE")
                        .arg("ABSTTL")
                        .ignore();
                }
                p.query_async::<()>(&mut to).await?;
            }
        }
        Ok(())
    }
}

/// All keys of one logical database, SCAN batch by batch (a key may come twice: callers
/// de-duplicate).
async fn scan_batches(conn: &mut MultiplexedConnection) -> Result<Vec<Vec<Vec<u8>>>> {
    let mut batches = Vec::new();
    let mut cursor = 0u64;
    loop {
        let (next, keys): (u64, Vec<Vec<u8>>) = cmd("SCAN")
            .arg(cursor)
            .arg("COUNT")
            .arg(BATCH)
            .query_async(conn)
            .await?;
        if !keys.is_empty() {
            batches.push(keys);
        }
        if next == 0 {
            return Ok(batches);
        }
        cursor = next;
    }
}

/// A server's data, per logical database.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub dbs: BTreeMap<u32, DbSnapshot>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DbSnapshot {
    /// DBSIZE, as INFO keyspace reports it.
    pub size: u64,
    pub keys: BTreeMap<Vec<u8>, KeyState>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct KeyState {
    /// TYPE: string, list, hash, set, zset, stream.
    pub kind: String,
    pub value: Canonical,
    /// PEXPIRETIME (Unix ms), when the key has one.
    pub expires_at_ms: Option<i64>,
}

/// A value in canonical form: the same on every server version for the same data.
#[derive(Clone, PartialEq)]
pub enum Canonical {
    Inline(Vec<u8>),
    Digest { len: usize, sha256: Vec<u8> },
}

impl Canonical {
    fn new(bytes: Vec<u8>) -> Canonical {
        if bytes.len() <= INLINE_MAX {
            Canonical::Inline(bytes)
        } else {
            Canonical::Digest {
                len: bytes.len(),
                sha256: Sha256::digest(&bytes).to_vec(),
            }
        }
    }
}

impl std::fmt::Debug for Canonical {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Canonical::Inline(b) => write!(f, "{}", show(b)),
            Canonical::Digest { len, sha256 } => {
                let hex: String = sha256[..6].iter().map(|b| format!("{b:02x}")).collect();
                write!(f, "<{len} bytes, sha256 {hex}…>")
            }
        }
    }
}

/// Bytes as text, with anything not printable ASCII escaped.
pub fn show(bytes: &[u8]) -> String {
    bytes.escape_ascii().to_string()
}

impl Snapshot {
    /// The number of keys per logical database (non-empty ones only).
    pub fn key_counts(&self) -> BTreeMap<u32, u64> {
        self.dbs.iter().map(|(db, d)| (*db, d.size)).collect()
    }

    /// The number of keys in all databases.
    pub fn total_keys(&self) -> u64 {
        self.dbs.values().map(|d| d.size).sum()
    }

    /// Every difference between `self` (expected) and `actual`: databases, key counts, missing
    /// and extra keys, types, values, expiry times (within [`EXPIRY_TOLERANCE_MS`]).
    pub fn diff(&self, actual: &Snapshot) -> Vec<String> {
        let mut out = Vec::new();
        let empty = DbSnapshot {
            size: 0,
            keys: BTreeMap::new(),
        };
        let dbs: std::collections::BTreeSet<u32> =
            self.dbs.keys().chain(actual.dbs.keys()).copied().collect();
        for db in dbs {
            let want = self.dbs.get(&db).unwrap_or(&empty);
            let got = actual.dbs.get(&db).unwrap_or(&empty);
            if want.size != got.size {
                out.push(format!(
                    "db {db}: {} keys expected, {} found",
                    want.size, got.size
                ));
            }
            for (key, w) in &want.keys {
                let name = show(key);
                let Some(g) = got.keys.get(key) else {
                    out.push(format!("db {db}: key {name} is missing"));
                    continue;
                };
                if w.kind != g.kind {
                    out.push(format!(
                        "db {db}: key {name} is a {} instead of a {}",
                        g.kind, w.kind
                    ));
                } else if w.value != g.value {
                    out.push(format!(
                        "db {db}: {} {name} differs: expected {:?}, found {:?}",
                        w.kind, w.value, g.value
                    ));
                }
                let expiry_ok = match (w.expires_at_ms, g.expires_at_ms) {
                    (None, None) => true,
                    (Some(a), Some(b)) => (a - b).abs() <= EXPIRY_TOLERANCE_MS,
                    _ => false,
                };
                if !expiry_ok {
                    out.push(format!(
                        "db {db}: key {name} expires at {:?} ms instead of {:?}",
                        g.expires_at_ms, w.expires_at_ms
                    ));
                }
            }
            for key in got.keys.keys().filter(|k| !want.keys.contains_key(*k)) {
                out.push(format!("db {db}: key {} is unexpected", show(key)));
            }
        }
        out
    }

    /// Panics listing the first differences unless `actual` holds the same data.
    pub fn assert_same(&self, actual: &Snapshot, what: &str) {
        let diff = self.diff(actual);
        if diff.is_empty() {
            return;
        }
        let mut msg = format!("{what}: {} differences", diff.len());
        for line in diff.iter().take(25) {
            let _ = write!(msg, "\n  {line}");
        }
        panic!("{msg}");
    }
}

/// Reads the type, value and expiry of `keys` (pipelined) into `into`.
async fn read_batch(
    conn: &mut MultiplexedConnection,
    keys: Vec<Vec<u8>>,
    into: &mut BTreeMap<Vec<u8>, KeyState>,
) -> Result<()> {
    let mut p = pipe();
    for key in &keys {
        p.cmd("TYPE").arg(key).cmd("PEXPIRETIME").arg(key);
    }
    let meta: Vec<Value> = p.query_async(conn).await?;
    let mut present = Vec::new();
    let mut p = pipe();
    let mut streams = Vec::new();
    for (key, pair) in keys.into_iter().zip(meta.chunks(2)) {
        let kind = text(&pair[0])?;
        let expires_at_ms = match &pair[1] {
            Value::Int(ms) if *ms >= 0 => Some(*ms),
            _ => None,
        };
        match kind.as_str() {
            "none" => continue, // gone meanwhile
            "string" => p.cmd("GET").arg(&key),
            "list" => p.cmd("LRANGE").arg(&key).arg(0).arg(-1),
            "hash" => p.cmd("HGETALL").arg(&key),
            "set" => p.cmd("SMEMBERS").arg(&key),
            "zset" => p.cmd("ZRANGE").arg(&key).arg(0).arg(-1).arg("WITHSCORES"),
            "stream" => {
                streams.push((key, expires_at_ms));
                continue;
            }
            other => bail!("key {} has the unsupported type {other}", show(&key)),
        };
        present.push((key, kind, expires_at_ms));
    }
    let values: Vec<Value> = if present.is_empty() {
        Vec::new()
    } else {
        p.query_async(conn).await?
    };
    for ((key, kind, expires_at_ms), value) in present.into_iter().zip(values) {
        let canonical = canonical(&kind, value).with_context(|| format!("key {}", show(&key)))?;
        into.insert(
            key,
            KeyState {
                kind,
                value: Canonical::new(canonical),
                expires_at_ms,
            },
        );
    }
    for (key, expires_at_ms) in streams {
        let canonical = stream(conn, &key)
            .await
            .with_context(|| format!("stream {}", show(&key)))?;
        into.insert(
            key,
            KeyState {
                kind: "stream".into(),
                value: Canonical::new(canonical),
                expires_at_ms,
            },
        );
    }
    Ok(())
}

/// A reply's items, each as bytes.
fn items(v: Value) -> Result<Vec<Vec<u8>>> {
    match v {
        Value::Array(items) | Value::Set(items) => items.into_iter().map(bytes).collect(),
        Value::Map(pairs) => {
            let mut out = Vec::new();
            for (k, v) in pairs {
                out.push(bytes(k)?);
                out.push(bytes(v)?);
            }
            Ok(out)
        }
        other => bail!("expected an array, got {other:?}"),
    }
}

fn bytes(v: Value) -> Result<Vec<u8>> {
    Ok(match v {
        Value::BulkString(b) => b,
        Value::SimpleString(s) => s.into_bytes(),
        Value::Int(i) => i.to_string().into_bytes(),
        Value::Double(d) => d.to_string().into_bytes(),
        Value::Okay => b"OK".to_vec(),
        Value::Nil => b"(nil)".to_vec(),
        other => bail!("expected a string, got {other:?}"),
    })
}

fn text(v: &Value) -> Result<String> {
    Ok(String::from_utf8_lossy(&bytes(v.clone())?).into_owned())
}

/// Length-prefixed, so that item boundaries are part of the canonical form.
fn put(buf: &mut Vec<u8>, item: &[u8]) {
    buf.extend_from_slice(&(item.len() as u64).to_le_bytes());
    buf.extend_from_slice(item);
}

/// The canonical form of a string, list, hash, set or sorted set reply. Hashes and sets are
/// sorted; sorted-set scores are compared as numbers (servers format doubles differently: 7.0
/// writes 0.1 as "0.10000000000000001", 7.2 and later as "0.1").
fn canonical(kind: &str, value: Value) -> Result<Vec<u8>> {
    let mut buf = Vec::new();
    match kind {
        "string" => return bytes(value),
        "list" => items(value)?.iter().for_each(|i| put(&mut buf, i)),
        "set" => {
            let mut members = items(value)?;
            members.sort();
            members.iter().for_each(|m| put(&mut buf, m));
        }
        "hash" => {
            let flat = items(value)?;
            let mut pairs: Vec<&[Vec<u8>]> = flat.chunks(2).collect();
            pairs.sort();
            for pair in pairs {
                pair.iter().for_each(|x| put(&mut buf, x));
            }
        }
        "zset" => {
            for pair in items(value)?.chunks(2) {
                put(&mut buf, &pair[0]);
                let score = String::from_utf8_lossy(&pair[1]);
                let score: f64 = score.parse().with_context(|| format!("score {score:?}"))?;
                put(&mut buf, &score.to_bits().to_le_bytes());
            }
        }
        other => bail!("no canonical form for {other}"),
    }
    Ok(buf)
}

/// Field → value of an XINFO reply (RESP2 flat array or RESP3 map).
fn fields(v: Value) -> Result<BTreeMap<String, Value>> {
    let pairs: Vec<(Value, Value)> = match v {
        Value::Map(pairs) => pairs,
        Value::Array(flat) => {
            let mut it = flat.into_iter();
            let mut pairs = Vec::new();
            while let (Some(k), Some(v)) = (it.next(), it.next()) {
                pairs.push((k, v));
            }
            pairs
        }
        other => bail!("expected XINFO fields, got {other:?}"),
    };
    pairs.into_iter().map(|(k, v)| Ok((text(&k)?, v))).collect()
}

/// Selected XINFO fields, in a fixed order (absent ones as "-").
fn put_fields(buf: &mut Vec<u8>, info: &BTreeMap<String, Value>, names: &[&str]) -> Result<()> {
    for name in names {
        put(buf, name.as_bytes());
        match info.get(*name) {
            Some(v) => put(buf, &bytes(v.clone())?),
            None => put(buf, b"-"),
        }
    }
    Ok(())
}

/// A stream's canonical form: its entries; its length, last id, entries added and largest
/// deleted id; per consumer group (by name) its last-delivered id, entries read and pending
/// count, every pending entry (id, consumer, delivery count), and its consumers with their
/// pending counts. Idle times are left out: they move.
async fn stream(conn: &mut MultiplexedConnection, key: &[u8]) -> Result<Vec<u8>> {
    let mut buf = Vec::new();
    let entries: Value = cmd("XRANGE")
        .arg(key)
        .arg("-")
        .arg("+")
        .query_async(conn)
        .await?;
    let Value::Array(entries) = entries else {
        bail!("XRANGE replied {entries:?}");
    };
    put(&mut buf, &(entries.len() as u64).to_le_bytes());
    for entry in entries {
        let Value::Array(mut parts) = entry else {
            bail!("XRANGE entry {entry:?}");
        };
        let fv = parts.pop().context("XRANGE entry without fields")?;
        put(&mut buf, &bytes(parts.pop().context("XRANGE entry id")?)?);
        items(fv)?.iter().for_each(|x| put(&mut buf, x));
    }
    let info = fields(
        cmd("XINFO")
            .arg("STREAM")
            .arg(key)
            .query_async(conn)
            .await?,
    )?;
    put_fields(
        &mut buf,
        &info,
        &[
            "length",
            "last-generated-id",
            "max-deleted-entry-id",
            "entries-added",
        ],
    )?;
    let groups: Value = cmd("XINFO")
        .arg("GROUPS")
        .arg(key)
        .query_async(conn)
        .await?;
    let Value::Array(groups) = groups else {
        bail!("XINFO GROUPS replied {groups:?}");
    };
    let mut groups = groups.into_iter().map(fields).collect::<Result<Vec<_>>>()?;
    groups.sort_by_key(|g| g.get("name").and_then(|n| text(n).ok()));
    for group in groups {
        let name = bytes(group.get("name").context("group without name")?.clone())?;
        put_fields(
            &mut buf,
            &group,
            &[
                "name",
                "pending",
                "last-delivered-id",
                "entries-read",
                "consumers",
            ],
        )?;
        let pending: Value = cmd("XPENDING")
            .arg(key)
            .arg(&name)
            .arg("-")
            .arg("+")
            .arg(i64::MAX)
            .query_async(conn)
            .await?;
        for p in items_raw(pending)? {
            // [id, consumer, idle ms, delivery count]
            let mut p = items_raw(p)?.into_iter();
            let (Some(id), Some(consumer), Some(_idle), Some(count)) =
                (p.next(), p.next(), p.next(), p.next())
            else {
                bail!("short XPENDING entry");
            };
            for v in [id, consumer, count] {
                put(&mut buf, &bytes(v)?);
            }
        }
        let consumers: Value = cmd("XINFO")
            .arg("CONSUMERS")
            .arg(key)
            .arg(&name)
            .query_async(conn)
            .await?;
        let mut consumers = items_raw(consumers)?
            .into_iter()
            .map(fields)
            .collect::<Result<Vec<_>>>()?;
        consumers.sort_by_key(|c| c.get("name").and_then(|n| text(n).ok()));
        for c in consumers {
            put_fields(&mut buf, &c, &["name", "pending"])?;
        }
    }
    Ok(buf)
}

fn items_raw(v: Value) -> Result<Vec<Value>> {
    match v {
        Value::Array(items) => Ok(items),
        other => bail!("expected an array, got {other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(value: &[u8], expires_at_ms: Option<i64>) -> KeyState {
        KeyState {
            kind: "string".into(),
            value: Canonical::new(value.to_vec()),
            expires_at_ms,
        }
    }

    fn snapshot(keys: &[(&[u8], KeyState)]) -> Snapshot {
        Snapshot {
            dbs: [(
                3,
                DbSnapshot {
                    size: keys.len() as u64,
                    keys: keys.iter().map(|(k, s)| (k.to_vec(), s.clone())).collect(),
                },
            )]
            .into(),
        }
    }

    #[test]
    fn differences_are_named_and_expiry_has_a_tolerance() {
        let a = snapshot(&[
            (b"a", state(b"1", None)),
            (b"b\0\xff", state(&[7; 1000], Some(10_000))),
        ]);
        assert!(a.diff(&a.clone()).is_empty());
        let near = snapshot(&[
            (b"a", state(b"1", None)),
            (b"b\0\xff", state(&[7; 1000], Some(11_500))),
        ]);
        assert!(a.diff(&near).is_empty());
        let changed = snapshot(&[
            (b"a", state(b"2", None)),
            (b"b\0\xff", state(&[8; 1000], Some(20_000))),
        ]);
        let diff = changed.diff(&a);
        assert_eq!(diff.len(), 3, "{diff:?}");
        assert!(diff[0].contains("string a differs"), "{diff:?}");
        assert!(diff[1].contains(r"b\x00\xff differs"), "{diff:?}");
        assert!(diff[2].contains("expires at Some(10000)"), "{diff:?}");
        let fewer = snapshot(&[(b"a", state(b"1", None))]);
        let diff = a.diff(&fewer);
        assert!(diff.iter().any(|d| d.contains("1 found")), "{diff:?}");
        assert!(diff.iter().any(|d| d.contains("is missing")), "{diff:?}");
        assert!(fewer.diff(&a).iter().any(|d| d.contains("is unexpected")));
    }

    #[test]
    fn scores_compare_as_numbers() {
        let old = Value::Array(vec![
            Value::BulkString(b"m".to_vec()),
            Value::BulkString(b"0.10000000000000001".to_vec()),
        ]);
        let new = Value::Array(vec![
            Value::BulkString(b"m".to_vec()),
            Value::BulkString(b"0.1".to_vec()),
        ]);
        assert_eq!(
            canonical("zset", old).unwrap(),
            canonical("zset", new).unwrap()
        );
    }
}
