//! End-to-end: the real binary against a real PostgreSQL server, a real S3-compatible server
//! (moto) and an HTTP callback receiver, all started by the test.

use std::time::Duration;

use harness::pg_sample::{FINGERPRINT, SEED};
use harness::{CallbackReceiver, PgServer, Recorded, S3Server};
use sha2::{Digest, Sha256};

const BIN: &str = env!("CARGO_BIN_EXE_backup-runner-postgres");
const BUCKET: &str = "backups";
const STORAGE_SECRET: &str = "storage-secret-value-1234";
const CALLBACK_SECRET: &str = "callback-secret-value-5678";

struct Run {
    code: i32,
    stderr: String,
}

/// Runs the binary with exactly these variables (plus PATH).
async fn run(vars: &[(&str, String)]) -> Run {
    let mut cmd = tokio::process::Command::new(BIN);
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("PROGRESS_INTERVAL_SECS", "1");
    for (k, v) in vars {
        cmd.env(k, v);
    }
    let out = tokio::time::timeout(Duration::from_secs(300), cmd.output())
        .await
        .expect("runner timed out")
        .expect("runner starts");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    Run {
        code: out.status.code().unwrap_or(-1),
        stderr,
    }
}

fn db_vars(pg: &PgServer, db: &str) -> Vec<(&'static str, String)> {
    vec![
        ("DB_ENGINE", "postgresql".into()),
        ("DB_HOST", pg.host().into()),
        ("DB_PORT", pg.port().to_string()),
        ("DB_NAME", db.into()),
        ("DB_USERNAME", pg.superuser().into()),
        ("DB_PASSWORD", pg.password().into()),
    ]
}

fn s3_vars(s3: &S3Server) -> Vec<(&'static str, String)> {
    vec![
        ("STORAGE_TYPE", "minio".into()),
        ("STORAGE_ENDPOINT", s3.endpoint()),
        ("STORAGE_BUCKET", BUCKET.into()),
        ("STORAGE_REGION", "us-east-1".into()),
        ("STORAGE_ACCESS_KEY_ID", s3.access_key().into()),
        // moto accepts any secret; a distinctive one lets the test look for leaks.
        ("STORAGE_SECRET_ACCESS_KEY", STORAGE_SECRET.into()),
    ]
}

fn callback_vars(cb: &CallbackReceiver, job: &str) -> Vec<(&'static str, String)> {
    vec![
        ("JOB_ID", job.into()),
        ("CALLBACK_URL", cb.url()),
        ("CALLBACK_SECRET", CALLBACK_SECRET.into()),
    ]
}

fn join(parts: &[Vec<(&'static str, String)>]) -> Vec<(&'static str, String)> {
    parts.concat()
}

async fn seeded(pg: &PgServer, db: &str) -> String {
    pg.psql("postgres", &format!("CREATE DATABASE {db};"))
        .await
        .unwrap();
    pg.psql(db, SEED).await.unwrap();
    fingerprint(pg, db).await
}

async fn fingerprint(pg: &PgServer, db: &str) -> String {
    let fp = pg.psql(db, FINGERPRINT).await.unwrap();
    assert!(fp.contains("customers 2000 "), "{fp}");
    assert!(fp.contains("seq invoice_seq 54321"), "{fp}");
    fp
}

fn statuses(requests: &[Recorded]) -> Vec<String> {
    requests.iter().map(Recorded::kind).collect()
}

fn assert_no_secrets(texts: &[&str], secrets: &[&str]) {
    for text in texts {
        for secret in secrets {
            assert!(
                !text.contains(secret),
                "secret {secret:?} leaked in:\n{text}"
            );
        }
    }
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

#[tokio::test(flavor = "multi_thread")]
async fn s3_backup_restore_round_trip_with_callbacks() {
    let (pg, s3, cb) = (
        PgServer::start().await.unwrap(),
        S3Server::start().await.unwrap(),
        CallbackReceiver::start().await.unwrap(),
    );
    s3.create_bucket(BUCKET).await.unwrap();
    let before = seeded(&pg, "shop").await;

    let backup = run(&join(&[
        db_vars(&pg, "shop"),
        s3_vars(&s3),
        callback_vars(&cb, "job-backup-1"),
        vec![
            ("OPERATION_TYPE", "backup".into()),
            ("RETENTION_DAYS", "7".into()),
        ],
    ]))
    .await;
    assert_eq!(backup.code, 0, "backup failed:\n{}", backup.stderr);

    // Callbacks: running, metadata, success; Plan B's shape and auth header.
    let calls = cb.requests();
    assert_eq!(statuses(&calls), ["running", "metadata", "success"]);
    let mut events = std::collections::BTreeSet::new();
    for c in &calls {
        assert_eq!(
            c.authorization.as_deref(),
            Some(format!("Bearer {CALLBACK_SECRET}").as_str())
        );
        assert!(c.signature_valid(CALLBACK_SECRET), "bad signature: {c:?}");
        assert!(!c.signature_valid("another-secret"));
        let event = c.body["event_id"].as_str().unwrap().to_string();
        assert_eq!(c.header("x-backup-runner-event-id"), Some(event.as_str()));
        assert!(events.insert(event), "event ids must be unique");
        assert_eq!(c.body["job_id"], "job-backup-1");
        assert!(c.body["timestamp"].as_str().unwrap().ends_with('Z'));
    }
    let meta = &calls[1].body["metadata"];
    let key = meta["object_key"].as_str().unwrap().to_string();
    assert!(
        key.starts_with("postgres/shop/") && key.ends_with("-job-backup-1.pgdump.zst"),
        "{key}"
    );

    // The object, its manifest, and the catalog index the retention pass after the backup
    // (RETENTION_DAYS) wrote; no multipart upload left behind.
    let mut keys = s3.list_keys(BUCKET).await.unwrap();
    keys.sort();
    assert_eq!(
        keys,
        [
            ".backup-runner/catalog.json".to_string(),
            key.clone(),
            format!("{key}.manifest.json")
        ]
    );
    assert!(
        calls[1].body["metadata"]["prune"]["kept"][0]["reasons"]
            .to_string()
            .contains("within"),
        "{}",
        calls[1].body["metadata"]
    );
    assert!(s3.list_multipart_uploads(BUCKET).await.unwrap().is_empty());
    let object = s3.get(BUCKET, &key).await.unwrap();
    let manifest: serde_json::Value = serde_json::from_slice(
        &s3.get(BUCKET, &format!("{key}.manifest.json"))
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(meta["bytes"], object.len() as u64);
    assert_eq!(manifest["bytes"], object.len() as u64);
    assert_eq!(manifest["sha256"], sha256_hex(&object));
    assert_eq!(meta["sha256"], manifest["sha256"]);
    assert_eq!(manifest["engine"], "postgres");
    assert_eq!(manifest["format"], "pg_dump-custom");
    assert_eq!(manifest["compression"]["algorithm"], "zstd");
    assert_eq!(manifest["retention_days"], 7);
    assert_eq!(manifest["job_id"], "job-backup-1");
    assert!(manifest["raw_bytes"].as_u64().unwrap() > object.len() as u64);
    assert!(manifest["server_version"]
        .as_str()
        .unwrap()
        .starts_with(&pg.major().to_string()));
    assert_eq!(&object[..4], &[0x28, 0xb5, 0x2f, 0xfd], "a zstd frame");

    // Destroy the data, restore into the same name (created because it is missing).
    pg.psql("postgres", "DROP DATABASE shop;").await.unwrap();
    let cb2 = CallbackReceiver::start().await.unwrap();
    let restore = run(&join(&[
        db_vars(&pg, "shop"),
        s3_vars(&s3),
        callback_vars(&cb2, "job-restore-1"),
        vec![
            ("OPERATION_TYPE", "restore".into()),
            ("BACKUP_PATH", key.clone()),
        ],
    ]))
    .await;
    assert_eq!(restore.code, 0, "restore failed:\n{}", restore.stderr);
    assert_eq!(fingerprint(&pg, "shop").await, before);
    let calls2 = cb2.requests();
    assert_eq!(statuses(&calls2), ["running", "success"]);

    let bodies: Vec<String> = calls
        .iter()
        .chain(calls2.iter())
        .map(|c| c.body.to_string())
        .collect();
    let mut texts: Vec<&str> = bodies.iter().map(String::as_str).collect();
    let manifest_text = manifest.to_string();
    texts.extend([
        backup.stderr.as_str(),
        restore.stderr.as_str(),
        &manifest_text,
    ]);
    assert_no_secrets(&texts, &[pg.password(), STORAGE_SECRET, CALLBACK_SECRET]);
}

#[tokio::test(flavor = "multi_thread")]
async fn large_dump_goes_up_in_equal_parts_and_comes_back() {
    let (pg, s3) = (
        PgServer::start().await.unwrap(),
        S3Server::start().await.unwrap(),
    );
    s3.create_bucket(BUCKET).await.unwrap();
    pg.psql("postgres", "CREATE DATABASE big;").await.unwrap();
    // ~40 MB of hex text: gzip halves it, so the object spans several 5 MiB parts.
    pg.psql(
        "big",
        "CREATE TABLE blobs AS SELECT g AS id, \
           md5(g::text) || md5((g * 3)::text) || md5((g * 7)::text) || md5((g * 11)::text) AS body \
         FROM generate_series(1, 300000) g;",
    )
    .await
    .unwrap();
    let sum = "SELECT count(*) || ' ' || md5(string_agg(body, '' ORDER BY id)) FROM blobs";
    let before = pg.psql("big", sum).await.unwrap();

    let backup = run(&join(&[
        db_vars(&pg, "big"),
        s3_vars(&s3),
        vec![
            ("COMPRESSION", "gzip".into()),
            ("COMPRESSION_LEVEL", "1".into()),
            ("STORAGE_PART_SIZE_MB", "5".into()),
            ("STORAGE_PREFIX", "/team-a/nightly/".into()),
            ("LOG_FORMAT", "json".into()),
        ],
    ]))
    .await;
    assert_eq!(backup.code, 0, "backup failed:\n{}", backup.stderr);
    let keys = s3.list_keys(BUCKET).await.unwrap();
    let key = keys
        .iter()
        .find(|k| k.ends_with(".pgdump.gz"))
        .expect("object")
        .clone();
    assert!(key.starts_with("team-a/nightly/postgres/big/"), "{key}");
    let manifest: serde_json::Value = serde_json::from_slice(
        &s3.get(BUCKET, &format!("{key}.manifest.json"))
            .await
            .unwrap(),
    )
    .unwrap();
    let object = s3.get(BUCKET, &key).await.unwrap();
    assert_eq!(manifest["part_size"], 5 << 20);
    let parts = manifest["parts"].as_u64().unwrap();
    assert!(parts >= 3, "expected a multipart upload, got {parts} parts");
    assert_eq!(parts, (object.len() as u64).div_ceil(5 << 20));
    assert_eq!(manifest["sha256"], sha256_hex(&object));
    assert_eq!(&object[..2], &[0x1f, 0x8b], "a gzip stream");
    assert!(s3.list_multipart_uploads(BUCKET).await.unwrap().is_empty());
    // JSON logs carry indexable fields.
    let done = backup
        .stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["phase"] == "done")
        .expect("a JSON log line for the finished job");
    assert_eq!(done["bytes"], object.len() as u64);
    assert_eq!(done["engine"], "postgres");
    assert_eq!(done["severity"], "INFO");
    assert!(done["job_id"].as_str().unwrap().starts_with("local-"));

    let restore = run(&join(&[
        db_vars(&pg, "big_copy"),
        s3_vars(&s3),
        vec![("OPERATION_TYPE", "restore".into()), ("BACKUP_PATH", key)],
    ]))
    .await;
    assert_eq!(restore.code, 0, "restore failed:\n{}", restore.stderr);
    assert_eq!(pg.psql("big_copy", sum).await.unwrap(), before);
}

#[tokio::test(flavor = "multi_thread")]
async fn local_directory_round_trip_restored_by_another_user() {
    let pg = PgServer::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    pg.psql(
        "postgres",
        "CREATE ROLE app_owner LOGIN PASSWORD 'owner-pw-123'; \
         CREATE ROLE restorer LOGIN CREATEDB PASSWORD 'restorer-pw-456'; \
         CREATE DATABASE shop OWNER app_owner;",
    )
    .await
    .unwrap();
    pg.psql_as("app_owner", "owner-pw-123", "shop", SEED)
        .await
        .unwrap();
    let before = fingerprint(&pg, "shop").await;
    let local = vec![("STORAGE_LOCAL_DIR", dir.path().display().to_string())];

    // Backed up by its owner, over DATABASE_URL, into the default (local) storage.
    let url = format!(
        "postgresql://app_owner:owner-pw-123@{}:{}/shop?sslmode=disable",
        pg.host(),
        pg.port()
    );
    let backup = run(&join(&[
        vec![
            ("DATABASE_URL", url),
            ("BACKUP_PATH", "manual/shop.pgdump.zst".into()),
        ],
        local.clone(),
    ]))
    .await;
    assert_eq!(backup.code, 0, "backup failed:\n{}", backup.stderr);
    assert!(dir
        .path()
        .join("manual/shop.pgdump.zst.manifest.json")
        .is_file());
    assert_no_secrets(&[&backup.stderr], &["owner-pw-123"]);

    let as_restorer = |db: &str| {
        vec![
            ("DB_HOST", pg.host().to_string()),
            ("DB_PORT", pg.port().to_string()),
            ("DB_NAME", db.to_string()),
            ("DB_USERNAME", "restorer".to_string()),
            ("DB_PASSWORD", "restorer-pw-456".to_string()),
            ("OPERATION_TYPE", "restore".to_string()),
            ("BACKUP_PATH", "manual/shop.pgdump.zst".to_string()),
        ]
    };
    // Without the option, the owner's ALTER OWNER fails and the error says what to set.
    let refused = run(&join(&[as_restorer("copy1"), local.clone()])).await;
    assert_eq!(refused.code, 7, "{}", refused.stderr);
    assert!(
        refused.stderr.contains("RESTORE_NO_OWNER=true"),
        "{}",
        refused.stderr
    );
    assert_eq!(
        pg.psql(
            "copy1",
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
        )
        .await
        .unwrap(),
        "0",
        "single transaction: nothing half-restored"
    );

    let restore = run(&join(&[
        as_restorer("copy2"),
        local,
        vec![("RESTORE_NO_OWNER", "true".into())],
    ]))
    .await;
    assert_eq!(restore.code, 0, "restore failed:\n{}", restore.stderr);
    assert_eq!(fingerprint(&pg, "copy2").await, before);
    assert_eq!(
        pg.psql(
            "copy2",
            "SELECT tableowner FROM pg_tables WHERE tablename = 'orders'"
        )
        .await
        .unwrap(),
        "restorer"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_password_fails_with_callback_and_leaves_nothing() {
    let (pg, s3, cb) = (
        PgServer::start().await.unwrap(),
        S3Server::start().await.unwrap(),
        CallbackReceiver::start().await.unwrap(),
    );
    s3.create_bucket(BUCKET).await.unwrap();
    pg.psql("postgres", "CREATE DATABASE shop;").await.unwrap();
    let mut vars = join(&[
        db_vars(&pg, "shop"),
        s3_vars(&s3),
        callback_vars(&cb, "job-bad-pw"),
    ]);
    vars.retain(|(k, _)| *k != "DB_PASSWORD");
    vars.push(("DB_PASSWORD", "wrong-password-999".into()));
    let r = run(&vars).await;
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(
        r.stderr.contains("password authentication failed"),
        "{}",
        r.stderr
    );

    let calls = cb.requests();
    assert_eq!(statuses(&calls), ["running", "failed"]);
    let message = calls[1].body["message"].as_str().unwrap();
    assert!(message.contains("authentication failed"), "{message}");
    assert!(s3.list_keys(BUCKET).await.unwrap().is_empty());
    assert!(s3.list_multipart_uploads(BUCKET).await.unwrap().is_empty());
    let bodies = format!("{:?}", calls.iter().map(|c| &c.body).collect::<Vec<_>>());
    assert_no_secrets(
        &[&r.stderr, &bodies],
        &["wrong-password-999", STORAGE_SECRET, CALLBACK_SECRET],
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn every_config_error_is_reported_at_once_before_connecting() {
    let cb = CallbackReceiver::start().await.unwrap();
    // A listener standing in for the database: nothing may connect to it.
    let db = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    db.set_nonblocking(true).unwrap();
    let r = run(&[
        ("OPERATION_TYPE", "snapshot".into()),
        ("DB_ENGINE", "mysql".into()),
        ("DB_HOST", "127.0.0.1".into()),
        ("DB_PORT", db.local_addr().unwrap().port().to_string()),
        ("DB_PASSWORD", "config-test-pw".into()),
        ("STORAGE_TYPE", "s3".into()),
        ("COMPRESSION", "lzma".into()),
        ("RETENTION_DAYS", "forever".into()),
        ("JOB_ID", "job-cfg".into()),
        ("CALLBACK_URL", cb.url()),
    ])
    .await;
    assert_eq!(r.code, 2, "{}", r.stderr);
    for var in [
        "OPERATION_TYPE",
        "DB_ENGINE",
        "DB_NAME",
        "STORAGE_BUCKET",
        "COMPRESSION",
        "RETENTION_DAYS",
    ] {
        assert!(
            r.stderr.contains(&format!("- {var}: ")),
            "{var} not reported:\n{}",
            r.stderr
        );
    }
    assert!(
        r.stderr.contains("invalid configuration (6 problems)"),
        "{}",
        r.stderr
    );
    assert!(
        db.accept().is_err(),
        "the runner connected despite a bad config"
    );
    let calls = cb.requests();
    assert_eq!(statuses(&calls), ["failed"]);
    assert_eq!(calls[0].body["job_id"], "job-cfg");
    assert!(calls[0].body["message"]
        .as_str()
        .unwrap()
        .contains("DB_ENGINE"));
    assert_no_secrets(&[&r.stderr], &["config-test-pw"]);

    // A bare run (the image with no env) is a short config error too, not a crash.
    let bare = run(&[]).await;
    assert_eq!(bare.code, 2);
    assert!(
        bare.stderr.contains("DB_HOST: is required"),
        "{}",
        bare.stderr
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn damaged_or_incomplete_backups_are_refused() {
    let pg = PgServer::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    seeded(&pg, "shop").await;
    let local = vec![("STORAGE_LOCAL_DIR", dir.path().display().to_string())];
    let key = "shop.pgdump.zst";
    let backup = run(&join(&[
        db_vars(&pg, "shop"),
        local.clone(),
        vec![("BACKUP_PATH", key.into())],
    ]))
    .await;
    assert_eq!(backup.code, 0, "{}", backup.stderr);
    let object = dir.path().join(key);
    let good = std::fs::read(&object).unwrap();

    let restore_into = |db: &str, path: &str| {
        join(&[
            db_vars(&pg, db),
            local.clone(),
            vec![
                ("OPERATION_TYPE", "restore".into()),
                ("BACKUP_PATH", path.into()),
            ],
        ])
    };
    let tables = |db: &'static str| {
        let pg = &pg;
        async move {
            pg.psql(
                db,
                "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'",
            )
            .await
            .unwrap_or_else(|_| "no database".into())
        }
    };

    // One flipped byte: detected while streaming, the restore is stopped before committing.
    let mut flipped = good.clone();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0x40;
    std::fs::write(&object, &flipped).unwrap();
    let r = run(&restore_into("flipped", key)).await;
    assert_eq!(r.code, 8, "{}", r.stderr);
    assert!(
        r.stderr.contains("does not match its manifest") || r.stderr.contains("corrupt"),
        "{}",
        r.stderr
    );
    assert_eq!(tables("flipped").await, "0");

    // Truncated: caught by size before anything is applied.
    std::fs::write(&object, &good[..good.len() - 100]).unwrap();
    let r = run(&restore_into("truncated", key)).await;
    assert_eq!(r.code, 8, "{}", r.stderr);
    assert!(r.stderr.contains("truncated"), "{}", r.stderr);
    // Refused before the target was prepared: not even created.
    assert_eq!(tables("truncated").await, "no database");

    // No manifest: not a backup.
    std::fs::write(&object, &good).unwrap();
    std::fs::remove_file(dir.path().join(format!("{key}.manifest.json"))).unwrap();
    let r = run(&restore_into("unmanifested", key)).await;
    assert_eq!(r.code, 8, "{}", r.stderr);
    assert!(r.stderr.contains("has no manifest"), "{}", r.stderr);

    // Wrong key: says so.
    let r = run(&restore_into("nothing", "nope.pgdump.zst")).await;
    assert_eq!(r.code, 8, "{}", r.stderr);
    assert!(r.stderr.contains("no backup at"), "{}", r.stderr);
}

#[tokio::test(flavor = "multi_thread")]
async fn restore_into_a_non_empty_database_needs_restore_clean() {
    let pg = PgServer::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let before = seeded(&pg, "shop").await;
    let local = vec![
        ("STORAGE_LOCAL_DIR", dir.path().display().to_string()),
        ("BACKUP_PATH", "s.pgdump".to_string()),
        ("COMPRESSION", "none".to_string()),
    ];
    let backup = run(&join(&[db_vars(&pg, "shop"), local.clone()])).await;
    assert_eq!(backup.code, 0, "{}", backup.stderr);
    // Change the data after the backup.
    pg.psql(
        "shop",
        "DELETE FROM orders WHERE id % 2 = 0; UPDATE customers SET name = 'changed';",
    )
    .await
    .unwrap();

    let restore = join(&[
        db_vars(&pg, "shop"),
        local,
        vec![("OPERATION_TYPE", "restore".into())],
    ]);
    let refused = run(&restore).await;
    assert_eq!(refused.code, 2, "{}", refused.stderr);
    assert!(
        refused.stderr.contains("RESTORE_CLEAN=true"),
        "{}",
        refused.stderr
    );
    assert_ne!(pg.psql("shop", FINGERPRINT).await.unwrap(), before);

    let mut with_clean = restore.clone();
    with_clean.push(("RESTORE_CLEAN", "true".into()));
    let r = run(&with_clean).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(fingerprint(&pg, "shop").await, before);
}

#[test]
fn version_flag_names_the_engine() {
    let out = std::process::Command::new(BIN)
        .arg("--version")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("backup-runner-postgres "), "{text}");
    assert!(text.contains("PostgreSQL"), "{text}");
    let bad = std::process::Command::new(BIN)
        .arg("--frobnicate")
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
}

#[tokio::test(flavor = "multi_thread")]
async fn callback_failures_are_retried_and_never_fail_the_backup() {
    let pg = PgServer::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    pg.psql("postgres", "CREATE DATABASE shop;").await.unwrap();
    pg.psql("shop", "CREATE TABLE t AS SELECT 1 AS x;")
        .await
        .unwrap();
    let local = vec![("STORAGE_LOCAL_DIR", dir.path().display().to_string())];

    // Two 500s, then 200: the running callback is delivered on its third attempt.
    let cb = CallbackReceiver::start().await.unwrap();
    cb.fail_next(2, 500);
    let r = run(&join(&[
        db_vars(&pg, "shop"),
        local.clone(),
        callback_vars(&cb, "job-retry"),
    ]))
    .await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    let seen: Vec<(String, u16)> = cb.requests().iter().map(|c| (c.kind(), c.status)).collect();
    // The retries of one callback carry its event id, so the receiver can drop duplicates.
    let events: Vec<String> = cb
        .requests()
        .iter()
        .map(|c| c.body["event_id"].as_str().unwrap().to_string())
        .collect();
    assert!(
        events[0] == events[1] && events[1] == events[2],
        "{events:?}"
    );
    assert!(
        events[2] != events[3] && events[3] != events[4],
        "{events:?}"
    );
    assert_eq!(
        seen,
        [
            ("running".to_string(), 500),
            ("running".to_string(), 500),
            ("running".to_string(), 200),
            ("metadata".to_string(), 200),
            ("success".to_string(), 200)
        ]
    );

    // A 4xx is not retried; a receiver that is down does not fail the backup either.
    let cb = CallbackReceiver::start().await.unwrap();
    cb.fail_next(1, 401);
    let r = run(&join(&[
        db_vars(&pg, "shop"),
        local.clone(),
        callback_vars(&cb, "job-401"),
    ]))
    .await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(statuses(&cb.requests()), ["running", "metadata", "success"]);

    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/cb", closed.local_addr().unwrap());
    drop(closed);
    let r = run(&join(&[
        db_vars(&pg, "shop"),
        local,
        vec![("CALLBACK_URL", url), ("CALLBACK_MAX_ATTEMPTS", "2".into())],
    ]))
    .await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.contains("callback not delivered"), "{}", r.stderr);
    assert_eq!(
        std::fs::read_dir(dir.path().join("postgres/shop"))
            .unwrap()
            .count(),
        6
    );
}
