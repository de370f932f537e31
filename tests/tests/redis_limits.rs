//! Limits of the Redis/Valkey engine, through the real runner images against real servers:
//! a value larger than the target's `proto-max-bulk-len` (refused before the target is
//! touched), a Redis Cluster node (refused), hash fields with their own TTLs on Valkey 9 (the
//! default mode falls back to the logical one), and many large values (dumped a few at a time,
//! memory bounded). MODULE_AUX records are covered by the engine's unit tests (no server here
//! writes them).
//!
//! Cells: the Redis/Valkey cells of `HARNESS_CELLS`; the field-TTL case needs `valkey-9.1`.
//! About a minute for one Redis cell and valkey-9.1.

use std::time::Instant;

use harness::containers::{ready_or_skip, shared_dir, unique, Job, JobOutput, RedisContainer};
use harness::matrix::{Cell, Matrix};
use harness::redis_client::{RedisEndpoint, EXPIRY_TOLERANCE_MS};
use harness::redis_sample::{seed, SampleSize};

/// The selected Redis/Valkey cells, once Docker, their servers and their runner images are there.
async fn ready(test: &str) -> Option<Vec<Cell>> {
    let matrix = Matrix::load().unwrap();
    let cells = matrix.cells_from_env(Some("redis")).unwrap();
    let mut images = Vec::new();
    for cell in &cells {
        images.push(cell.server.clone());
        images.push(cell.image());
    }
    ready_or_skip(test, &images).await.then_some(cells)
}

fn password() -> String {
    unique("pw").replace('-', "")
}

/// A job of `cell`'s image against `server`, keeping backups in `dir` (mounted as /backups).
fn job(cell: &Cell, server: &RedisContainer, dir: &std::path::Path, key: &str) -> Job {
    Job::new(&cell.image(), server.network())
        .mount(dir, "/backups")
        .env("BACKUP_PATH", key)
        .env("DB_ENGINE", cell.product())
        .env("DB_HOST", server.alias())
        .env("DB_PORT", "6379")
        .env("DB_PASSWORD", server.password.clone())
        .env("LOG_FORMAT", "json")
}

fn manifest(dir: &std::path::Path, key: &str) -> serde_json::Value {
    let bytes = std::fs::read(dir.join(format!("{key}.manifest.json"))).unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

/// Bytes that do not compress (xorshift), so a value's DUMP payload is as large as the value.
fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
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

async fn set(server: &RedisEndpoint, key: &str, value: &[u8]) {
    let mut conn = server.connect(0).await.unwrap();
    redis::cmd("SET")
        .arg(key)
        .arg(value)
        .query_async::<()>(&mut conn)
        .await
        .unwrap();
}

async fn config_set(server: &RedisEndpoint, name: &str, value: &str) {
    let mut conn = server.connect(0).await.unwrap();
    redis::cmd("CONFIG")
        .arg("SET")
        .arg(name)
        .arg(value)
        .query_async::<()>(&mut conn)
        .await
        .unwrap();
}

/// The runner's log lines (JSON), and the messages of those lines.
fn messages(out: &JobOutput) -> Vec<String> {
    out.stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["message"].as_str().map(str::to_string))
        .collect()
}

/// 14. A 2 MiB value backs up (its size is in the manifest, in both modes), and a restore into
/// a server whose `proto-max-bulk-len` is 1 MiB is refused with exit 5 before the target is
/// flushed or written (the message names the key, the limit and the fix); once the limit is
/// raised, the same restore succeeds. The first cell backs up in rdb mode, the others in
/// logical mode.
#[tokio::test(flavor = "multi_thread")]
async fn a_value_over_the_targets_bulk_limit_is_refused_before_anything_is_written() {
    let Some(cells) = ready("a_value_over_the_targets_bulk_limit_is_refused").await else {
        return;
    };
    for (i, cell) in cells.iter().enumerate() {
        let started = Instant::now();
        let mode = if i == 0 { "rdb" } else { "logical" };
        let what = format!("{} {mode}", cell.name);
        let network = unique("net");
        let dir = shared_dir().unwrap();
        let source = RedisContainer::start(&cell.server, &network, &password())
            .await
            .unwrap();
        seed(&source.endpoint(), SampleSize::small()).await.unwrap();
        set(&source.endpoint(), "big:2mib", &random_bytes(2 << 20, 7)).await;
        let expected = source.endpoint().snapshot().await.unwrap();

        let key = format!("{}-{mode}.zst", cell.name);
        let backup = job(cell, &source, dir.path(), &key)
            .env("REDIS_BACKUP_MODE", mode)
            .run()
            .await
            .unwrap();
        backup.assert_ok(&format!("{what} backup"));
        let details = &manifest(dir.path(), &key)["engine_details"];
        assert_eq!(details["mode"], mode, "{details}");
        let largest = details["max_payload_bytes"].as_u64().unwrap();
        assert!(
            largest > 2 << 20 && largest < (2 << 20) + 64,
            "{what}: {details}"
        );
        assert_eq!(
            details["max_payload_of"], r#"key "big:2mib" in db 0"#,
            "{details}"
        );
        assert_eq!(details["keys"], expected.total_keys(), "{details}");

        let target = RedisContainer::start_with(
            &cell.server,
            &network,
            &password(),
            &["--proto-max-bulk-len", "1mb"],
        )
        .await
        .unwrap();
        set(&target.endpoint(), "keep:me", b"1").await;
        let before = target.endpoint().snapshot().await.unwrap();
        let restore = || {
            job(cell, &target, dir.path(), &key)
                .env("OPERATION_TYPE", "restore")
                .env("RESTORE_FLUSH", "true")
                .run()
        };
        let refused = restore().await.unwrap();
        refused.assert_code(5, &format!("{what} restore into a 1 MiB bulk limit"));
        for part in [
            r#"key \"big:2mib\" in db 0"#,
            "proto-max-bulk-len of 1048576 bytes",
            "CONFIG SET proto-max-bulk-len 3145728",
            "nothing was written",
        ] {
            assert!(refused.stderr.contains(part), "{part}: {}", refused.stderr);
        }
        before.assert_same(
            &target.endpoint().snapshot().await.unwrap(),
            &format!("{what}: the refused target"),
        );

        config_set(&target.endpoint(), "proto-max-bulk-len", "3145728").await;
        restore()
            .await
            .unwrap()
            .assert_ok(&format!("{what} restore with the limit raised"));
        expected.assert_same(
            &target.endpoint().snapshot().await.unwrap(),
            &format!("{what} restore"),
        );
        eprintln!(
            "{what}: largest payload {largest} bytes recorded; refused (5) under a 1 MiB limit, restored under 3 MiB, in {:.1?}",
            started.elapsed()
        );
    }
}

/// 15. A server in cluster mode is refused with exit 5, for a backup (one node holds one shard)
/// and for a restore, and nothing is stored.
#[tokio::test(flavor = "multi_thread")]
async fn a_cluster_node_is_refused() {
    let Some(cells) = ready("a_cluster_node_is_refused").await else {
        return;
    };
    let cell = &cells[0];
    let network = unique("net");
    let dir = shared_dir().unwrap();
    let node = RedisContainer::start_with(
        &cell.server,
        &network,
        &password(),
        &["--cluster-enabled", "yes"],
    )
    .await
    .unwrap();
    let backup = job(cell, &node, dir.path(), "cluster.zst")
        .run()
        .await
        .unwrap();
    backup.assert_code(5, &format!("{} backup of a cluster node", cell.name));
    assert!(
        backup.stderr.contains("cluster_enabled:1") && backup.stderr.contains("one shard"),
        "{}",
        backup.stderr
    );
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    let restore = job(cell, &node, dir.path(), "cluster.zst")
        .env("OPERATION_TYPE", "restore")
        .run()
        .await
        .unwrap();
    restore.assert_code(5, &format!("{} restore into a cluster node", cell.name));
    assert!(
        restore.stderr.contains("cluster mode"),
        "{}",
        restore.stderr
    );
    eprintln!(
        "{}: cluster node refused (5) for backup and restore",
        cell.name
    );
}

/// Hashes with fields that have TTLs of their own (HSETEX, HEXPIRE), and one without.
const FIELD_TTL_HASHES: [(&str, &[&str]); 3] = [
    ("hfe:setex", &["f1", "f2", "f3", "plain"]),
    ("hfe:expire", &["a", "b", "c"]),
    ("hfe:none", &["x"]),
];

/// Every field's absolute expiry (HPEXPIRETIME; -1 for none), per hash.
async fn field_expiries(server: &RedisEndpoint) -> Vec<Vec<i64>> {
    let mut conn = server.connect(0).await.unwrap();
    let mut all = Vec::new();
    for (key, fields) in FIELD_TTL_HASHES {
        let times: Vec<i64> = redis::cmd("HPEXPIRETIME")
            .arg(key)
            .arg("FIELDS")
            .arg(fields.len())
            .arg(fields)
            .query_async(&mut conn)
            .await
            .unwrap();
        all.push(times);
    }
    all
}

/// 18. On Valkey 9.1, hash fields with their own TTLs make the server refuse the replication
/// snapshot: the default mode (auto) backs up in the logical mode instead, says so in the
/// manifest and the log, and the restore brings back every field with its TTL.
#[tokio::test(flavor = "multi_thread")]
async fn field_ttls_make_the_default_mode_back_up_logically() {
    let Some(cells) = ready("field_ttls_make_the_default_mode_back_up_logically").await else {
        return;
    };
    let Some(cell) = cells.iter().find(|c| c.name == "valkey-9.1") else {
        eprintln!("field_ttls_make_the_default_mode_back_up_logically: needs the cell valkey-9.1");
        return;
    };
    let network = unique("net");
    let dir = shared_dir().unwrap();
    let source = RedisContainer::start(&cell.server, &network, &password())
        .await
        .unwrap();
    seed(&source.endpoint(), SampleSize::small()).await.unwrap();
    let mut conn = source.endpoint().connect(0).await.unwrap();
    redis::pipe()
        .cmd("HSETEX")
        .arg("hfe:setex")
        .arg("EX")
        .arg(7200)
        .arg("FIELDS")
        .arg(3)
        .arg(&["f1", "v1", "f2", "v2", "f3", "v3"])
        .cmd("HSET")
        .arg("hfe:setex")
        .arg("plain")
        .arg("no ttl")
        .cmd("HSET")
        .arg("hfe:expire")
        .arg(&["a", "1", "b", "2", "c", "3"])
        .cmd("HEXPIRE")
        .arg("hfe:expire")
        .arg(3600)
        .arg("FIELDS")
        .arg(2)
        .arg(&["a", "c"])
        .cmd("HSET")
        .arg("hfe:none")
        .arg("x")
        .arg("y")
        .query_async::<()>(&mut conn)
        .await
        .unwrap();
    let expected = source.endpoint().snapshot().await.unwrap();
    let expected_ttls = field_expiries(&source.endpoint()).await;
    assert!(expected_ttls[0][0] > 0 && expected_ttls[0][3] == -1);

    let backup = job(cell, &source, dir.path(), "auto.zst")
        .run()
        .await
        .unwrap();
    backup.assert_ok("valkey-9.1 backup in the default mode with field TTLs");
    let manifest = manifest(dir.path(), "auto.zst");
    assert_eq!(manifest["format"], "redis-logical", "{manifest}");
    let details = &manifest["engine_details"];
    assert_eq!(details["mode"], "logical", "{details}");
    let reason = details["mode_reason"].as_str().unwrap();
    assert!(
        reason.contains("REDIS_BACKUP_MODE=auto") && reason.contains("TTLs of their own"),
        "{reason}"
    );
    assert!(
        messages(&backup)
            .iter()
            .any(|m| m.starts_with("backup mode: REDIS_BACKUP_MODE=auto")
                && m.contains("TTLs of their own")),
        "{}",
        backup.stderr
    );

    let target = RedisContainer::start(&cell.server, &network, &password())
        .await
        .unwrap();
    job(cell, &target, dir.path(), "auto.zst")
        .env("OPERATION_TYPE", "restore")
        .run()
        .await
        .unwrap()
        .assert_ok("valkey-9.1 restore of the logical backup");
    expected.assert_same(
        &target.endpoint().snapshot().await.unwrap(),
        "valkey-9.1 field-TTL round trip",
    );
    let actual_ttls = field_expiries(&target.endpoint()).await;
    for ((key, fields), (want, got)) in FIELD_TTL_HASHES
        .iter()
        .zip(expected_ttls.iter().zip(&actual_ttls))
    {
        for ((field, w), g) in fields.iter().zip(want).zip(got) {
            let same = match (*w, *g) {
                (w, g) if w < 0 || g < 0 => w == g,
                (w, g) => (w - g).abs() <= EXPIRY_TOLERANCE_MS,
            };
            assert!(same, "{key} field {field}: expires at {g} instead of {w}");
        }
    }
    eprintln!(
        "valkey-9.1: field TTLs backed up in the logical mode (auto) and restored: {actual_ttls:?}"
    );
}

/// The logical dump's own peak RSS, from its summary line in the runner's log.
fn dump_peak_rss(out: &JobOutput) -> Option<u64> {
    messages(out).iter().find_map(|m| {
        let rest = m.split("peak RSS ").nth(1)?;
        rest.split(' ').next()?.parse().ok()
    })
}

/// The runner's own peak RSS, from its final log line.
fn runner_peak_rss(out: &JobOutput) -> Option<u64> {
    out.stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find_map(|v| v["peak_rss_bytes"].as_u64())
}

/// 16. Many ~5 MiB values: the logical dump fetches them a few at a time (its memory stays
/// bounded, not the sum of a SCAN batch's values), and the runner itself, which reads the
/// stream back as it passes in both modes, keeps no values either.
#[tokio::test(flavor = "multi_thread")]
async fn many_large_values_are_dumped_in_bounded_memory() {
    const VALUES: usize = 24;
    const VALUE_BYTES: usize = 5 << 20;
    const LIMIT: u64 = 64 << 20;
    let Some(cells) = ready("many_large_values_are_dumped_in_bounded_memory").await else {
        return;
    };
    let cell = &cells[0];
    let network = unique("net");
    let dir = shared_dir().unwrap();
    let source = RedisContainer::start(&cell.server, &network, &password())
        .await
        .unwrap();
    let endpoint = source.endpoint();
    for i in 0..VALUES {
        set(
            &endpoint,
            &format!("large:{i:02}"),
            &random_bytes(VALUE_BYTES, i as u64 + 11),
        )
        .await;
    }
    for mode in ["logical", "rdb"] {
        let key = format!("large-{mode}.zst");
        let t = Instant::now();
        let backup = job(cell, &source, dir.path(), &key)
            .env("REDIS_BACKUP_MODE", mode)
            .env("COMPRESSION_LEVEL", "1")
            .run()
            .await
            .unwrap();
        backup.assert_ok(&format!("{} {mode} backup of large values", cell.name));
        let runner = runner_peak_rss(&backup).expect("the runner's peak RSS");
        let details = &manifest(dir.path(), &key)["engine_details"];
        assert_eq!(details["keys"], VALUES, "{details}");
        assert!(runner < LIMIT, "{mode}: runner peak RSS {runner}");
        let dump = if mode == "logical" {
            let dump = dump_peak_rss(&backup).expect("the logical dump's peak RSS");
            assert!(
                dump < LIMIT,
                "logical dump peak RSS {dump}: {}",
                backup.stderr
            );
            format!(", logical dump {} MiB", dump >> 20)
        } else {
            String::new()
        };
        eprintln!(
            "{}: {mode}: {VALUES} values of {} MiB backed up in {:.1?}: peak RSS runner {} MiB{dump}",
            cell.name,
            VALUE_BYTES >> 20,
            t.elapsed(),
            runner >> 20
        );
        std::fs::remove_file(dir.path().join(&key)).unwrap();
    }
}
