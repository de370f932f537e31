//! The RDB reader against real snapshots.
//!
//! `fixtures/redis-7.0.rdb` was taken with `redis-cli --rdb` from Debian bookworm's
//! redis-server 7.0.15 after seeding every type (see `redis_7_0_fixture`);
//! `fixtures/valkey-9.1.rdb` from Debian sid's valkey-server 9.1.2 (see `valkey_9_1_fixture`).
//!
//! `live_server_dump_matches` (ignored by default) checks the reader against a running server:
//! for every key of a fresh `redis-cli --rdb` snapshot, the payload built from the RDB must equal
//! the server's own `DUMP` byte for byte, and `RESTORE` of it must succeed. Run it with
//! `RDB_LIVE_REDIS_PORT=6390 cargo test --release -p backup-runner-redis --test rdb_fixtures --
//! --ignored` against a scratch server (it writes and deletes `__rdbcheck__:*` keys).
//! `RDB_LIVE_CLI` names the CLI used to take the snapshot (default `redis-cli`), or
//! `RDB_LIVE_FILE` names a snapshot already taken from that server.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;

use backup_runner_redis::rdb::{
    dump_payload, payload_version, type_name, RdbError, RdbItem, RdbKey, RdbReader,
};

fn read_file(path: &Path) -> (u16, Vec<RdbItem>) {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut reader = RdbReader::new(file).unwrap();
    let mut items = Vec::new();
    while let Some(item) = reader.next_item().unwrap() {
        items.push(item);
    }
    (reader.version(), items)
}

fn fixture(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// Every key, by (db, name).
fn keys_by_db(items: &[RdbItem]) -> BTreeMap<(u64, String), &RdbKey> {
    items
        .iter()
        .filter_map(|i| match i {
            RdbItem::Key(k) => Some(((k.db, String::from_utf8_lossy(&k.key).into_owned()), k)),
            _ => None,
        })
        .collect()
}

/// The AUX fields (`redis-ver`, `valkey-ver`, …) as text.
fn aux_fields(items: &[RdbItem]) -> BTreeMap<String, String> {
    items
        .iter()
        .filter_map(|i| match i {
            RdbItem::Aux { key, value } => Some((
                String::from_utf8_lossy(key).into_owned(),
                String::from_utf8_lossy(value).into_owned(),
            )),
            _ => None,
        })
        .collect()
}

#[test]
fn redis_7_0_fixture() {
    let (version, items) = read_file(&fixture("redis-7.0.rdb"));
    assert_eq!(version, 10);

    let aux = aux_fields(&items);
    assert_eq!(aux.get("redis-ver").map(String::as_str), Some("7.0.15"));

    let dbs: Vec<u64> = items
        .iter()
        .filter_map(|i| match i {
            RdbItem::SelectDb(db) => Some(*db),
            _ => None,
        })
        .collect();
    assert_eq!(dbs, [0, 1, 5]);

    let functions: Vec<&Vec<u8>> = items
        .iter()
        .filter_map(|i| match i {
            RdbItem::Function(code) => Some(code),
            _ => None,
        })
        .collect();
    assert_eq!(functions.len(), 1);
    assert!(functions[0].starts_with(b"#!lua name=mylib"));

    let keys = keys_by_db(&items);
    assert_eq!(keys.len(), 30);
    assert_eq!(keys.keys().filter(|(db, _)| *db == 0).count(), 26);
    assert_eq!(keys.keys().filter(|(db, _)| *db == 1).count(), 2);
    assert_eq!(keys.keys().filter(|(db, _)| *db == 5).count(), 2);

    let get = |db: u64, name: &str| {
        *keys
            .get(&(db, name.to_string()))
            .unwrap_or_else(|| panic!("key {name} in db {db}"))
    };
    // Expected (db, key, RDB type).
    let expected: &[(u64, &str, u8)] = &[
        (0, "str:plain", 0),
        (0, "str:int", 0),
        (0, "str:neg", 0),
        (0, "str:bigint", 0),
        (0, "str:large", 0),
        (0, "str:random", 0),
        (0, "empty", 0),
        (0, "hll", 0),
        (0, "bitmap", 0),
        (
            0,
            "a-very-long-key-name-that-repeats-repeats-repeats-repeats-repeats",
            0,
        ),
        (0, "list:small", 18),
        (0, "list:large", 18),
        (0, "list:plain", 18),
        (0, "set:int", 11),
        (0, "set:small", 2),
        (0, "set:large", 2),
        (0, "zset:small", 17),
        (0, "zset:large", 5),
        (0, "hash:small", 16),
        (0, "hash:large", 4),
        (0, "hash:bigval", 4),
        (0, "stream:1", 19),
        (0, "stream:empty", 19),
        (0, "stream:big", 19),
        (1, "db1:key", 0),
        (1, "db1:list", 18),
        (5, "db5:hash", 16),
        (5, "db5:ttl", 0),
    ];
    for &(db, name, t) in expected {
        let k = get(db, name);
        assert_eq!(k.value_type, t, "type of {name} ({})", type_name(t));
        assert_eq!(k.db, db);
    }
    // The value of a plain string is its RDB string, e.g. a 6-bit length then the bytes.
    assert_eq!(get(0, "str:plain").value, b"\x0bhello world");
    assert_eq!(get(0, "str:int").value, [0xc1, 0x39, 0x30]);

    // TTLs.
    let with_ttl: Vec<&str> = keys
        .values()
        .filter(|k| k.expire_at_ms.is_some())
        .map(|k| std::str::from_utf8(&k.key).unwrap())
        .collect();
    assert_eq!(with_ttl.len(), 4, "{with_ttl:?}");
    assert_eq!(get(5, "db5:ttl").expire_at_ms, Some(4_102_444_800_000));
    let t1 = get(0, "str:ttl").expire_at_ms.unwrap();
    let t2 = get(0, "str:ttl2").expire_at_ms.unwrap();
    assert!(t1 > 1_600_000_000_000 && t1 - t2 > 80_000_000, "{t1} {t2}");
    assert!(get(1, "db1:list").expire_at_ms.is_some());
    assert_eq!(get(0, "str:plain").expire_at_ms, None);

    // Payloads carry the version footer asked for.
    let p = get(0, "hash:large").dump_payload(version);
    assert_eq!(payload_version(&p), Some(10));
}

/// Valkey 9.1.2 (Debian sid), same seed plus a set listpack and hashes with field TTLs, taken
/// with a replica handshake that sends `REPLCONF version 9.1.2` (without it Valkey 9 sends
/// RDB 11, and fails the sync when a hash has field TTLs).
#[test]
fn valkey_9_1_fixture() {
    let (version, items) = read_file(&fixture("valkey-9.1.rdb"));
    assert_eq!(version, 80);
    let aux = aux_fields(&items);
    assert_eq!(aux.get("valkey-ver").map(String::as_str), Some("9.1.2"));
    let keys = keys_by_db(&items);
    assert_eq!(keys.len(), 33);
    assert_eq!(
        items
            .iter()
            .filter(|i| matches!(i, RdbItem::Function(_)))
            .count(),
        1
    );
    let get = |db: u64, name: &str| *keys.get(&(db, name.to_string())).unwrap();
    for (name, t) in [
        ("hfe:small", 22),
        ("hfe:large", 22),
        ("set:small", 20),
        ("set:lp", 20),
        ("stream:1", 21),
        ("list:large", 18),
        ("hash:small", 16),
        ("zset:small", 17),
    ] {
        assert_eq!(get(0, name).value_type, t, "{name}");
    }
    assert_eq!(
        keys.values().filter(|k| k.expire_at_ms.is_some()).count(),
        4
    );
    assert_eq!(get(5, "db5:ttl").expire_at_ms, Some(4_102_444_800_000));
    // HASH_2: n, then (field, value, 8-byte expiry or -1) per field.
    let v = &get(0, "hfe:small").value;
    assert_eq!(v[0], 3);
    assert_eq!(
        payload_version(&get(0, "hfe:small").dump_payload(version)),
        Some(80)
    );
}

/// Module values (type 7) from RediSearch 1.2.2 (Debian's redis-redisearch) on Redis 7.0.15:
/// an index with two documents.
#[test]
fn redis_7_0_redisearch_fixture() {
    let (_, items) = read_file(&fixture("redis-7.0-redisearch.rdb"));
    let mut names = BTreeMap::new();
    for item in &items {
        if let RdbItem::Key(k) = item {
            if k.value_type == 7 {
                let name = backup_runner_redis::rdb::module_name(&k.value).unwrap();
                *names.entry(name).or_insert(0) += 1;
            }
        }
    }
    let expected: BTreeMap<String, i32> = [("ft_index0", 1), ("ft_invidx", 10), ("numericdx", 1)]
        .into_iter()
        .map(|(n, c)| (n.to_string(), c))
        .collect();
    assert_eq!(names, expected);
}

#[test]
fn redis_7_0_fixture_truncated_and_corrupted() {
    let bytes = std::fs::read(fixture("redis-7.0.rdb")).unwrap();
    let drain = |data: &[u8]| -> Result<usize, RdbError> {
        let mut r = RdbReader::new(data)?;
        let mut n = 0;
        while r.next_item()?.is_some() {
            n += 1;
        }
        Ok(n)
    };
    assert!(drain(&bytes).is_ok());
    for cut in [
        10,
        bytes.len() / 3,
        bytes.len() / 2,
        bytes.len() - 9,
        bytes.len() - 1,
    ] {
        let err = drain(&bytes[..cut]).unwrap_err();
        assert!(
            matches!(err, RdbError::Truncated { .. }),
            "cut {cut}: {err}"
        );
    }
    // Flip a byte inside a large value: only the checksum can notice.
    let pos = bytes
        .windows(11)
        .position(|w| w == b"hello world")
        .expect("str:plain payload");
    let mut bad = bytes.clone();
    bad[pos] = b'j';
    let err = drain(&bad).unwrap_err();
    assert!(matches!(err, RdbError::Checksum { .. }), "{err}");
}

// ---- live check ---------------------------------------------------------------------------

/// A minimal RESP2 client, enough for SELECT / DUMP / RESTORE / DEL.
struct Conn {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

#[derive(Debug, PartialEq)]
enum Reply {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
}

impl Conn {
    fn connect(port: u16) -> Conn {
        let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        Conn {
            reader: BufReader::new(s.try_clone().unwrap()),
            writer: s,
        }
    }

    fn cmd(&mut self, args: &[&[u8]]) -> Reply {
        let mut out = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            out.extend_from_slice(a);
            out.extend_from_slice(b"\r\n");
        }
        self.writer.write_all(&out).unwrap();
        let mut line = String::new();
        self.reader.read_line(&mut line).unwrap();
        let line = line.trim_end();
        let (kind, rest) = line.split_at(1);
        match kind {
            "+" => Reply::Simple(rest.to_string()),
            "-" => Reply::Error(rest.to_string()),
            ":" => Reply::Int(rest.parse().unwrap()),
            "$" => {
                let n: i64 = rest.parse().unwrap();
                if n < 0 {
                    return Reply::Bulk(None);
                }
                let mut buf = vec![0u8; n as usize + 2];
                self.reader.read_exact(&mut buf).unwrap();
                buf.truncate(n as usize);
                Reply::Bulk(Some(buf))
            }
            other => panic!("unexpected reply type {other:?}"),
        }
    }
}

#[test]
#[ignore = "needs a scratch Redis/Valkey server: set RDB_LIVE_REDIS_PORT and run with --ignored"]
fn live_server_dump_matches() {
    let port: u16 = std::env::var("RDB_LIVE_REDIS_PORT")
        .expect("RDB_LIVE_REDIS_PORT")
        .parse()
        .unwrap();
    let (version, items) = if let Ok(file) = std::env::var("RDB_LIVE_FILE") {
        // A snapshot already taken from that server (e.g. by a replica handshake that
        // announces `REPLCONF version`, which Valkey 9 needs to send RDB 80).
        read_file(Path::new(&file))
    } else {
        let cli = std::env::var("RDB_LIVE_CLI").unwrap_or_else(|_| "redis-cli".to_string());
        let dir = std::env::temp_dir().join(format!("rdb-live-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("live.rdb");
        let status = std::process::Command::new(&cli)
            .args(["-p", &port.to_string(), "--rdb"])
            .arg(&path)
            .status()
            .unwrap();
        assert!(status.success());
        let read = read_file(&path);
        std::fs::remove_dir_all(&dir).ok();
        read
    };

    let mut conn = Conn::connect(port);
    let mut checked = 0;
    let mut by_type: BTreeMap<u8, usize> = BTreeMap::new();
    for item in &items {
        let RdbItem::Key(k) = item else { continue };
        assert_eq!(
            conn.cmd(&[b"SELECT", k.db.to_string().as_bytes()]),
            Reply::Simple("OK".into())
        );
        let ours = k.dump_payload(version);
        let theirs = match conn.cmd(&[b"DUMP", &k.key]) {
            Reply::Bulk(Some(p)) => p,
            other => panic!("DUMP {:?}: {other:?}", String::from_utf8_lossy(&k.key)),
        };
        assert_eq!(
            ours,
            theirs,
            "payload of {:?} (type {}) differs from DUMP",
            String::from_utf8_lossy(&k.key),
            k.value_type
        );
        assert_eq!(dump_payload(k.value_type, &k.value, version), theirs);
        let mut scratch = b"__rdbcheck__:".to_vec();
        scratch.extend_from_slice(&k.key);
        assert_eq!(
            conn.cmd(&[b"RESTORE", &scratch, b"0", &ours, b"REPLACE"]),
            Reply::Simple("OK".into()),
            "RESTORE of {:?}",
            String::from_utf8_lossy(&k.key)
        );
        assert_eq!(conn.cmd(&[b"DEL", &scratch]), Reply::Int(1));
        *by_type.entry(k.value_type).or_default() += 1;
        checked += 1;
    }
    assert!(checked > 0, "the server has no keys");
    eprintln!("checked {checked} keys (RDB version {version}), by RDB type: {by_type:?}");
}

/// Parses the file named by `RDB_PARSE_FILE` and prints the throughput.
#[test]
#[ignore = "set RDB_PARSE_FILE to an RDB file and run with --ignored"]
fn parse_file_from_env() {
    let path = std::env::var("RDB_PARSE_FILE").expect("RDB_PARSE_FILE");
    let size = std::fs::metadata(&path).unwrap().len();
    let start = std::time::Instant::now();
    let (version, items) = read_file(Path::new(&path));
    let elapsed = start.elapsed();
    let keys = items
        .iter()
        .filter(|i| matches!(i, RdbItem::Key(_)))
        .count();
    eprintln!(
        "RDB version {version}: {keys} keys, {size} bytes in {elapsed:?} ({:.0} MB/s)",
        size as f64 / 1e6 / elapsed.as_secs_f64()
    );
}

/// Measuring a real snapshot (as a backup does while it streams) gives every value's exact
/// serialized length without keeping it, and the largest `RESTORE` payload.
#[test]
fn measured_lengths_match_the_values() {
    for name in [
        "redis-7.0.rdb",
        "valkey-9.1.rdb",
        "redis-7.0-redisearch.rdb",
    ] {
        let (_, items) = read_file(&fixture(name));
        let kept: Vec<(Vec<u8>, u64)> = items
            .iter()
            .filter_map(|i| match i {
                RdbItem::Key(k) => Some((k.key.clone(), k.value.len() as u64)),
                _ => None,
            })
            .collect();
        let file = std::fs::File::open(fixture(name)).unwrap();
        let mut reader = RdbReader::new(file).unwrap();
        let mut measured = Vec::new();
        while let Some((item, len)) = reader.next_measured().unwrap() {
            if let RdbItem::Key(k) = item {
                measured.push((k.key, len));
            }
        }
        assert_eq!(measured, kept, "{name}");
        let largest = kept.iter().map(|(_, len)| len + 11).max().unwrap();
        let bytes = std::fs::read(fixture(name)).unwrap();
        let summary =
            backup_runner_redis::stream::summarize(backup_runner_redis::RDB.name, &bytes[..])
                .unwrap();
        assert_eq!(summary.keys, kept.len() as u64, "{name}");
        let functions = items.iter().filter_map(|i| match i {
            RdbItem::Function(code) => Some(code.len() as u64),
            _ => None,
        });
        assert_eq!(
            summary.largest.unwrap().bytes,
            functions.fold(largest, u64::max),
            "{name}"
        );
        assert!(summary.module_aux.is_empty(), "{name}");
    }
}
