//! `cargo xtask demo <cell>` (the harness's [`harness::demo`]) for one cell of each engine family:
//! postgres-18, mariadb-11.8 and valkey-9.1. Each seeds its engine's sample, backs it up with the
//! cell's image into an S3 server, empties the database, restores it with the image, and must
//! hand back the seeded data: the tests check what was compared (the sample's tables, counters
//! and keys are there, before and after) and what was stored (one object and its manifest,
//! made by the cell's version).
//!
//! Needs the Docker engine, the cells' runner images and the server images; skipped loudly
//! without them, failed with `HARNESS_REQUIRE_DOCKER=1`.

use harness::containers::ready_or_skip;
use harness::demo::{run_engine, Demo, DemoEngine, PREFIX};
use harness::matrix::Matrix;
use harness::redis_sample::DATABASES;
use harness::scenario::{EngineUnderTest, Mysql, Postgres, Redis};

/// Runs the demo for `cell` once Docker and the images are there; checks what every engine's
/// demo stores.
async fn demo<E: DemoEngine>(test: &str, cell: &str) -> Option<Demo<E::Fingerprint>> {
    let matrix = Matrix::load().unwrap();
    let cell = matrix.cell(cell).expect("in images/matrix.toml").clone();
    let s3 = matrix.s3_image().to_string();
    let images = [cell.image(), cell.server.clone(), s3.clone()];
    if !ready_or_skip(test, &images).await {
        return None;
    }
    let demo = run_engine::<E>(cell.clone(), s3)
        .await
        .unwrap_or_else(|e| panic!("{test}: {e:#}"));
    println!("{test}: {:.1}s", demo.took.as_secs_f64());

    let manifest_key = format!("{}.manifest.json", demo.key);
    assert_eq!(demo.stored, [demo.key.clone(), manifest_key], "the bucket");
    assert!(
        demo.key.starts_with(&format!("{PREFIX}/")),
        "the key is derived under the prefix: {}",
        demo.key
    );
    let m = &demo.manifest;
    assert_eq!(m["object_key"], demo.key.as_str(), "{m}");
    assert_eq!(m["engine_version"], cell.version.as_str(), "{m}");
    for field in ["server_version", "client_version"] {
        let v = m[field].as_str().unwrap_or_default();
        assert!(v.contains(&cell.version), "{field} {v:?}: {m}");
    }
    assert!(m["raw_bytes"].as_u64().unwrap_or(0) > 0, "{m}");
    Some(demo)
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_18_demo_restores_the_dropped_database() {
    let Some(demo) = demo::<Postgres>("postgres_18_demo", "postgres-18").await else {
        return;
    };
    assert!(demo.key.ends_with(".pgdump.zst"), "{}", demo.key);
    assert!(
        demo.emptied.contains("dropped database shop"),
        "{}",
        demo.emptied
    );
    // The whole fingerprint: schema objects, sequences, per-table checksums of every row.
    assert_eq!(demo.after, demo.before);
    let lines: Vec<&str> = demo.after.lines().collect();
    for fact in [
        "customers 2000 ",
        "orders 20000 ",
        "seq invoice_seq 54321",
        "enum mood sad,ok,happy",
        "fn order_count ",
        "idx CREATE INDEX orders_customer_idx ",
        "comment orders, with a comment",
    ] {
        assert!(
            lines.iter().any(|l| l.starts_with(fact)),
            "the restored data has no {fact:?}:\n{}",
            demo.after
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn mariadb_11_8_demo_restores_the_dropped_database() {
    let Some(demo) = demo::<Mysql>("mariadb_11_8_demo", "mariadb-11.8").await else {
        return;
    };
    assert!(demo.key.ends_with(".sql.zst"), "{}", demo.key);
    assert!(
        demo.emptied.contains("dropped database app_db"),
        "{}",
        demo.emptied
    );
    // Definitions, AUTO_INCREMENT counters, table checksums, row counts and sums.
    assert_eq!(demo.after, demo.before);
    for fact in [
        "AUTO_INCREMENT=5000",
        "app_db.customers\t",
        "app_db.orders\t",
        "app_db.audit\t",
        "orders_audit\tAFTER\tINSERT",
        "nightly_cleanup",
        "order_count",
        "big_spenders",
    ] {
        assert!(
            demo.after.contains(fact),
            "the restored data has no {fact:?}:\n{}",
            demo.after
        );
    }
    assert!(
        demo.after.lines().any(|l| l.starts_with("900\t")),
        "900 customers:\n{}",
        demo.after
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn valkey_9_1_demo_restores_the_flushed_server() {
    let Some(demo) = demo::<Redis>("valkey_9_1_demo", "valkey-9.1").await else {
        return;
    };
    assert!(demo.key.ends_with(".rdb.zst"), "{}", demo.key);
    assert!(demo.emptied.contains("0 keys left"), "{}", demo.emptied);
    // Key by key: type, value (large ones by digest) and expiry.
    let differences = Redis::differences(&demo.before, &demo.after);
    assert!(differences.is_empty(), "{differences:?}");
    assert_eq!(demo.after.key_counts(), demo.before.key_counts());
    assert_eq!(
        demo.after.key_counts().keys().copied().collect::<Vec<_>>(),
        DATABASES,
        "the sample's logical databases"
    );
    assert!(
        demo.after.total_keys() > 200_000,
        "{} keys",
        demo.after.total_keys()
    );
}
