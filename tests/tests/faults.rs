//! The fault matrix, through the runner images: faults injected while a job runs (database
//! killed, storage cut off, SIGTERM), damaged backups, storage refused before the dump, a very
//! large value, the runner's memory on a big dump, and a scan of every process's argv, the
//! logs, callbacks and manifests for secrets. Each case asserts the exit code, the callbacks, what storage holds (no object, no
//! manifest, no multipart upload left) and the data.
//!
//! One cell per engine: the newest buildable PostgreSQL and Redis cells (or those selected by
//! `HARNESS_CELLS`). The rest of the matrix (wrong password, server newer than the client,
//! non-empty targets, callback failures, config errors) is in images.rs, mysql_images.rs,
//! redis_images.rs and engines/postgres/tests/e2e.rs; RELIABILITY.md lists where each lives.

use std::time::{Duration, Instant};

use harness::containers::{
    docker_cli, ready_or_skip, shared_dir, unique, DbContainer, Job, JobOutput, RedisContainer,
    RunningJob, S3Container, HOST_ALIAS,
};
use harness::matrix::{Cell, Matrix};
use harness::CallbackReceiver;

const BUCKET: &str = "backups";
const STORAGE_SECRET: &str = "fault-storage-secret-5150";
const CALLBACK_SECRET: &str = "fault-callback-secret-2112";
/// Rows of ~640 bytes: a ~250 MiB table, so a dump runs long enough to be interrupted.
const BIG_ROWS: u32 = 400_000;

async fn cell(engine: &str, test: &str) -> Option<Cell> {
    let matrix = Matrix::load().unwrap();
    let cell = matrix.cells_from_env(Some(engine)).unwrap().pop()?;
    let images = vec![
        matrix.s3_image().to_string(),
        cell.image(),
        cell.server.clone(),
    ];
    ready_or_skip(test, &images).await.then_some(cell)
}

async fn s3(network: &str) -> S3Container {
    let s3 = S3Container::start(Matrix::load().unwrap().s3_image(), network)
        .await
        .unwrap();
    s3.create_bucket(BUCKET).await.unwrap();
    s3
}

fn storage_env(s3: &S3Container) -> Vec<(String, String)> {
    let mut env = s3.job_env(BUCKET);
    for (k, v) in &mut env {
        if k == "STORAGE_SECRET_ACCESS_KEY" {
            *v = STORAGE_SECRET.into();
        }
    }
    env
}

fn pg_env(db: &DbContainer, name: &str) -> Vec<(String, String)> {
    [
        ("DB_HOST", db.name.as_str()),
        ("DB_NAME", name),
        ("DB_USERNAME", "postgres"),
        ("DB_PASSWORD", db.password.as_str()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

fn redis_env(server: &RedisContainer) -> Vec<(String, String)> {
    [
        ("DB_ENGINE", "redis"),
        ("DB_HOST", server.alias()),
        ("DB_PASSWORD", server.password.as_str()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

fn with_callback(job: Job, cb: &CallbackReceiver, id: &str) -> Job {
    job.env("JOB_ID", id)
        .env("CALLBACK_URL", cb.url_via(HOST_ALIAS))
        .env("CALLBACK_SECRET", CALLBACK_SECRET)
}

/// The last status callback's status and message.
fn last_status(cb: &CallbackReceiver) -> (String, String) {
    let calls = cb.requests();
    let last = calls
        .iter()
        .rev()
        .find(|r| !r.path.ends_with("/metadata"))
        .expect("a status callback");
    (
        last.body["status"].as_str().unwrap_or("").to_string(),
        last.body["message"].as_str().unwrap_or("").to_string(),
    )
}

/// A failed job left nothing behind: no object, no manifest, no multipart upload.
async fn assert_nothing_stored(s3: &S3Container, what: &str) {
    let keys = s3.list_keys(BUCKET).await.unwrap();
    assert!(keys.is_empty(), "{what}: objects left behind: {keys:?}");
    let uploads = s3.list_multipart_uploads(BUCKET).await.unwrap();
    assert!(
        uploads.is_empty(),
        "{what}: incomplete uploads left: {uploads:?}"
    );
}

fn assert_failed(out: &JobOutput, code: i64, cb: &CallbackReceiver, reason: &str, what: &str) {
    out.assert_code(code, what);
    let (status, message) = last_status(cb);
    assert_eq!(status, "failed", "{what}");
    assert!(
        message.contains(reason),
        "{what}: the failed callback should say {reason:?}: {message}"
    );
}

async fn seed_big(db: &DbContainer, name: &str) {
    db.psql("postgres", &format!("CREATE DATABASE {name};"))
        .await
        .unwrap();
    db.psql(
        name,
        &format!(
            "CREATE TABLE big AS SELECT g AS id, repeat(md5(g::text), 20) AS t \
             FROM generate_series(1, {BIG_ROWS}) g;"
        ),
    )
    .await
    .unwrap();
}

/// A backup of the big table, uncompressed in 5 MiB parts so the upload is long.
fn big_backup(cell: &Cell, network: &str, db: &DbContainer, s3: &S3Container) -> Job {
    Job::new(&cell.image(), network)
        .envs(&pg_env(db, "big"))
        .envs(&storage_env(s3))
        .env("COMPRESSION", "none")
        .env("STORAGE_PART_SIZE_MB", "5")
        .env("STORAGE_UPLOAD_CONCURRENCY", "1")
}

const UPLOAD_STARTED: &str = "multipart upload started";

#[tokio::test(flavor = "multi_thread")]
async fn faults_during_a_backup_leave_nothing_behind() {
    let Some(cell) = cell("postgres", "faults_during_a_backup_leave_nothing_behind").await else {
        return;
    };
    let network = unique("net");
    let (db, s3) = tokio::join!(DbContainer::postgres(&cell.server, &network), s3(&network));
    let db = db.unwrap();
    seed_big(&db, "big").await;

    // 3. SIGTERM mid-upload: child stopped, upload aborted, `failed` sent, exit 143, quickly.
    let cb = CallbackReceiver::start_on("0.0.0.0").await.unwrap();
    let job = with_callback(big_backup(&cell, &network, &db, &s3), &cb, "sigterm")
        .start(UPLOAD_STARTED)
        .await
        .unwrap();
    let sent = Instant::now();
    job.signal("TERM").unwrap();
    let out = job.wait().await.unwrap();
    let took = sent.elapsed();
    assert_failed(&out, 143, &cb, "SIGTERM", "SIGTERM mid-upload");
    assert!(
        took < Duration::from_secs(10),
        "the runner took {took:?} to stop after SIGTERM"
    );
    assert!(
        out.stderr.contains("aborted the incomplete upload"),
        "{}",
        out.stderr
    );
    assert_nothing_stored(&s3, "SIGTERM").await;

    // 2. The S3 server frozen mid-upload for 25 s: the part upload times out (3 s per attempt
    // here, three attempts), the job fails with exit 6 well before the store is back, and the
    // abort, retried, removes the upload once it is.
    let cb = CallbackReceiver::start_on("0.0.0.0").await.unwrap();
    let job = with_callback(big_backup(&cell, &network, &db, &s3), &cb, "s3-down")
        .env("STORAGE_TIMEOUT_SECS", "3")
        .start(UPLOAD_STARTED)
        .await
        .unwrap();
    // Frozen: connections are accepted and never answered, as with a store that hangs.
    s3.container().pause().await.unwrap();
    tokio::time::sleep(Duration::from_secs(25)).await;
    s3.container().unpause().await.unwrap();
    let out = job.wait().await.unwrap();
    assert_failed(&out, 6, &cb, "storage error", "S3 down mid-upload");
    assert_nothing_stored(&s3, "S3 down").await;

    // 1. The database killed mid-dump: the dump tool's failure is the job's (exit 7), never a
    // short backup reported good.
    let cb = CallbackReceiver::start_on("0.0.0.0").await.unwrap();
    let job = with_callback(big_backup(&cell, &network, &db, &s3), &cb, "db-killed")
        .start(UPLOAD_STARTED)
        .await
        .unwrap();
    docker_cli(&["kill", db.container().id()]).unwrap();
    let out = job.wait().await.unwrap();
    assert_failed(&out, 7, &cb, "pg_dump", "database killed mid-dump");
    assert_nothing_stored(&s3, "database killed").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn storage_that_will_refuse_the_backup_is_caught_before_the_dump() {
    let Some(cell) = cell(
        "postgres",
        "storage_that_will_refuse_the_backup_is_caught_before_the_dump",
    )
    .await
    else {
        return;
    };
    let network = unique("net");
    let (db, s3) = tokio::join!(DbContainer::postgres(&cell.server, &network), s3(&network));
    let db = db.unwrap();
    db.psql("postgres", "CREATE DATABASE shop;").await.unwrap();

    // 8a. A missing bucket.
    let cb = CallbackReceiver::start_on("0.0.0.0").await.unwrap();
    let out = with_callback(Job::new(&cell.image(), &network), &cb, "no-bucket")
        .envs(&pg_env(&db, "shop"))
        .envs(&storage_env(&s3))
        .env("STORAGE_BUCKET", "no-such-bucket")
        .run()
        .await
        .unwrap();
    assert_failed(&out, 6, &cb, "does not exist", "missing bucket");
    assert!(
        !out.stderr.contains("running pg_dump"),
        "dumped anyway:\n{}",
        out.stderr
    );

    // 8b. A directory the runner may not write (a read-only volume): refused before the dump.
    let dir = shared_dir().unwrap();
    let mode = |m| std::os::unix::fs::PermissionsExt::from_mode(m);
    std::fs::set_permissions(dir.path(), mode(0o555)).unwrap();
    let cb = CallbackReceiver::start_on("0.0.0.0").await.unwrap();
    let out = with_callback(Job::new(&cell.image(), &network), &cb, "read-only")
        .envs(&pg_env(&db, "shop"))
        .mount(dir.path(), "/backups")
        .env("STORAGE_TYPE", "local")
        .user("4242:4242")
        .run()
        .await
        .unwrap();
    std::fs::set_permissions(dir.path(), mode(0o755)).unwrap();
    assert_failed(&out, 6, &cb, "not writable", "read-only storage");
    assert!(
        !out.stderr.contains("running pg_dump"),
        "dumped anyway:\n{}",
        out.stderr
    );
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

/// Every process's argv inside the job's container, polled until it exits.
async fn poll_argv(job: &RunningJob) -> Vec<String> {
    let mut seen = Vec::new();
    while job.is_running().await.unwrap_or(false) {
        if let Ok(out) = job
            .sh("for f in /proc/[0-9]*/cmdline; do tr '\\0' ' ' < $f 2>/dev/null; echo; done")
            .await
        {
            seen.extend(
                out.lines()
                    .filter(|l| !l.trim().is_empty())
                    .map(str::to_string),
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    seen.sort();
    seen.dedup();
    seen
}

fn assert_no_secret(texts: &[&str], secrets: &[&str], what: &str) {
    for text in texts {
        for secret in secrets {
            assert!(
                !text.contains(secret),
                "{what}: a secret leaked into:\n{text}"
            );
        }
    }
}

/// A job run in the background with its argv scanned; returns the output and the argv seen.
async fn scanned(job: Job) -> (JobOutput, Vec<String>) {
    let job = job.start("running ").await.unwrap();
    let argv = poll_argv(&job).await;
    (job.wait().await.unwrap(), argv)
}

#[tokio::test(flavor = "multi_thread")]
async fn no_secret_on_argv_in_logs_callbacks_or_manifests() {
    let Some(pg) = cell(
        "postgres",
        "no_secret_on_argv_in_logs_callbacks_or_manifests",
    )
    .await
    else {
        return;
    };
    let Some(redis) = cell("redis", "no_secret_on_argv_in_logs_callbacks_or_manifests").await
    else {
        return;
    };
    let network = unique("net");
    let (db, s3) = tokio::join!(DbContainer::postgres(&pg.server, &network), s3(&network));
    let db = db.unwrap();
    seed_big(&db, "big").await;
    let password = unique("redis-pw");
    let server = RedisContainer::start(&redis.server, &network, &password)
        .await
        .unwrap();
    // Enough keys that each job runs for a second or more, long enough to be scanned.
    let mut conn = server.connect(0).await.unwrap();
    for batch in 0..30 {
        let mut pipe = redis::pipe();
        for i in 0..10_000 {
            pipe.cmd("SET")
                .arg(format!("key:{batch}:{i}"))
                .arg(format!("value {i}"))
                .ignore();
        }
        pipe.query_async::<()>(&mut conn).await.unwrap();
    }

    let cb = CallbackReceiver::start_on("0.0.0.0").await.unwrap();
    let mut texts: Vec<String> = Vec::new();
    let mut argv: Vec<String> = Vec::new();
    let mut runs = vec![
        (
            "pg backup",
            with_callback(Job::new(&pg.image(), &network), &cb, "scan-pg-backup")
                .envs(&pg_env(&db, "big"))
                .envs(&storage_env(&s3))
                .env("BACKUP_PATH", "scan/pg"),
            "pg_dump",
        ),
        (
            "pg restore",
            with_callback(Job::new(&pg.image(), &network), &cb, "scan-pg-restore")
                .envs(&pg_env(&db, "restored"))
                .envs(&storage_env(&s3))
                .env("OPERATION_TYPE", "restore")
                .env("BACKUP_PATH", "scan/pg"),
            "pg_restore",
        ),
    ];
    for mode in ["rdb", "logical"] {
        runs.push((
            "redis backup",
            with_callback(Job::new(&redis.image(), &network), &cb, "scan-redis-backup")
                .envs(&redis_env(&server))
                .envs(&storage_env(&s3))
                .env("REDIS_BACKUP_MODE", mode)
                .env("BACKUP_PATH", format!("scan/redis-{mode}")),
            if mode == "rdb" {
                "--rdb"
            } else {
                "redis-logical-dump"
            },
        ));
        runs.push((
            "redis restore",
            with_callback(
                Job::new(&redis.image(), &network),
                &cb,
                "scan-redis-restore",
            )
            .envs(&redis_env(&server))
            .envs(&storage_env(&s3))
            .env("OPERATION_TYPE", "restore")
            .env("RESTORE_FLUSH", "true")
            .env("BACKUP_PATH", format!("scan/redis-{mode}")),
            "redis-load",
        ));
    }
    for (what, job, tool) in runs {
        let (out, seen) = scanned(job).await;
        out.assert_ok(what);
        // The scan saw the tool, so it could have seen a password on its argv.
        assert!(
            seen.iter().any(|l| l.contains(tool)),
            "{what}: the argv scan never saw {tool}: {seen:?}"
        );
        texts.push(out.stderr);
        texts.push(out.stdout);
        argv.extend(seen);
    }
    for key in s3.list_keys(BUCKET).await.unwrap() {
        if key.ends_with(".manifest.json") {
            texts.push(String::from_utf8(s3.get(BUCKET, &key).await.unwrap()).unwrap());
        }
    }
    for r in cb.requests() {
        texts.push(String::from_utf8_lossy(&r.raw_body).into_owned());
        texts.push(format!("{:?}", r.headers));
    }
    texts.extend(argv.iter().cloned());
    let secrets = [
        db.password.as_str(),
        server.password.as_str(),
        STORAGE_SECRET,
    ];
    let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
    assert_no_secret(&texts, &secrets, "scan");
    // The callback secret travels only in the Authorization header, never in a body.
    let bodies: Vec<String> = cb
        .requests()
        .iter()
        .map(|r| String::from_utf8_lossy(&r.raw_body).into_owned())
        .collect();
    let bodies: Vec<&str> = bodies.iter().map(String::as_str).collect();
    assert_no_secret(&bodies, &[CALLBACK_SECRET], "callback bodies");
}

/// A source and a target server of the cell's version.
async fn two_redis(cell: &Cell, network: &str) -> (RedisContainer, RedisContainer) {
    let (a, b) = (unique("pw"), unique("pw"));
    let (source, target) = tokio::join!(
        RedisContainer::start(&cell.server, network, &a),
        RedisContainer::start(&cell.server, network, &b)
    );
    (source.unwrap(), target.unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn damaged_backups_leave_a_non_atomic_target_untouched() {
    let Some(cell) = cell(
        "redis",
        "damaged_backups_leave_a_non_atomic_target_untouched",
    )
    .await
    else {
        return;
    };
    let network = unique("net");
    let s3 = s3(&network).await;
    let (source, target) = two_redis(&cell, &network).await;
    let mut conn = source.connect(0).await.unwrap();
    for i in 0..5000 {
        redis::cmd("SET")
            .arg(format!("key:{i}"))
            .arg(format!("value {i}"))
            .query_async::<()>(&mut conn)
            .await
            .unwrap();
    }
    let mut tconn = target.connect(0).await.unwrap();
    redis::cmd("SET")
        .arg("keep")
        .arg("me")
        .query_async::<()>(&mut tconn)
        .await
        .unwrap();
    Job::new(&cell.image(), &network)
        .envs(&redis_env(&source))
        .envs(&storage_env(&s3))
        .env("BACKUP_PATH", "good")
        .run()
        .await
        .unwrap()
        .assert_ok("backup");
    let good = s3.get(BUCKET, "good").await.unwrap();
    let manifest = s3.get(BUCKET, "good.manifest.json").await.unwrap();

    // 4. truncated, 5. one flipped byte: exit 8, and RESTORE_FLUSH never ran.
    let mut flipped = good.clone();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0x01;
    let truncated = good[..good.len() - 100].to_vec();
    for (what, bytes) in [("truncated", truncated), ("flipped", flipped)] {
        s3.put(BUCKET, what, bytes).await.unwrap();
        s3.put(BUCKET, &format!("{what}.manifest.json"), manifest.clone())
            .await
            .unwrap();
        let cb = CallbackReceiver::start_on("0.0.0.0").await.unwrap();
        let out = with_callback(Job::new(&cell.image(), &network), &cb, what)
            .envs(&redis_env(&target))
            .envs(&storage_env(&s3))
            .env("OPERATION_TYPE", "restore")
            .env("RESTORE_FLUSH", "true")
            .env("BACKUP_PATH", what)
            .run()
            .await
            .unwrap();
        assert_failed(&out, 8, &cb, "integrity", what);
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg("*")
            .query_async(&mut tconn)
            .await
            .unwrap();
        assert_eq!(keys, ["keep"], "{what}: the target was touched");
    }

    // `verify` reports the same without a database.
    let out = Job::new(&cell.image(), &network)
        .envs(&storage_env(&s3))
        .env("OPERATION_TYPE", "verify")
        .env("BACKUP_PATH", "flipped")
        .run()
        .await
        .unwrap();
    out.assert_code(8, "verify of a flipped byte");
    let cb = CallbackReceiver::start_on("0.0.0.0").await.unwrap();
    let out = with_callback(Job::new(&cell.image(), &network), &cb, "verify-good")
        .envs(&storage_env(&s3))
        .env("OPERATION_TYPE", "verify")
        .env("BACKUP_PATH", "good")
        .run()
        .await
        .unwrap();
    out.assert_ok("verify");
    let calls = cb.requests();
    let meta = calls
        .iter()
        .find(|r| r.path.ends_with("/metadata"))
        .expect("a metadata callback");
    assert_eq!(meta.body["metadata"]["verified"], true);
    assert_eq!(last_status(&cb).0, "success");

    // VERIFY_RESTORE also loads it into a scratch server: all 5000 keys arrive.
    let scratch = RedisContainer::start(&cell.server, &network, &unique("pw"))
        .await
        .unwrap();
    Job::new(&cell.image(), &network)
        .envs(&redis_env(&scratch))
        .envs(&storage_env(&s3))
        .env("OPERATION_TYPE", "verify")
        .env("VERIFY_RESTORE", "true")
        .env("BACKUP_PATH", "good")
        .run()
        .await
        .unwrap()
        .assert_ok("verify with a scratch restore");
    let mut sconn = scratch.connect(0).await.unwrap();
    let size: u64 = redis::cmd("DBSIZE").query_async(&mut sconn).await.unwrap();
    assert_eq!(size, 5000);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_value_of_100_mib_round_trips() {
    let Some(cell) = cell("redis", "a_value_of_100_mib_round_trips").await else {
        return;
    };
    let network = unique("net");
    let s3 = s3(&network).await;
    let (source, target) = two_redis(&cell, &network).await;
    let value: Vec<u8> = (0..100u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let mut conn = source.connect(0).await.unwrap();
    redis::cmd("SET")
        .arg("huge")
        .arg(&value)
        .query_async::<()>(&mut conn)
        .await
        .unwrap();
    let mut tconn = target.connect(0).await.unwrap();
    for mode in ["rdb", "logical"] {
        Job::new(&cell.image(), &network)
            .envs(&redis_env(&source))
            .envs(&storage_env(&s3))
            .env("REDIS_BACKUP_MODE", mode)
            .env("BACKUP_PATH", mode)
            .run()
            .await
            .unwrap()
            .assert_ok(mode);
        Job::new(&cell.image(), &network)
            .envs(&redis_env(&target))
            .envs(&storage_env(&s3))
            .env("OPERATION_TYPE", "restore")
            .env("RESTORE_FLUSH", "true")
            .env("BACKUP_PATH", mode)
            .run()
            .await
            .unwrap()
            .assert_ok(mode);
        let restored: Vec<u8> = redis::cmd("GET")
            .arg("huge")
            .query_async(&mut tconn)
            .await
            .unwrap();
        assert!(restored == value, "{mode}: the 100 MiB value differs");
    }
}

/// A generous bound on the runner's own peak RSS: the target is 64 MiB (BENCHMARKS.md has the
/// figures); a runner that held the dump would need the dump's ~250 MiB.
const PEAK_RSS_BOUND: u64 = 96 << 20;

/// The runner's peak RSS, from the `peak_rss_bytes` field of its last log line.
fn peak_rss(out: &JobOutput, what: &str) -> u64 {
    let at = out
        .stderr
        .rfind("peak_rss_bytes=")
        .unwrap_or_else(|| panic!("{what}: no peak_rss_bytes in the log:\n{}", out.stderr));
    out.stderr[at + "peak_rss_bytes=".len()..]
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{what}: unreadable peak_rss_bytes"))
}

const BIG_FINGERPRINT: &str =
    "SELECT count(*) || ' ' || sum(length(t)) || ' ' || sum(hashtext(t)::bigint) FROM big;";

#[tokio::test(flavor = "multi_thread")]
async fn memory_stays_bounded_on_a_big_dump() {
    let Some(cell) = cell("postgres", "memory_stays_bounded_on_a_big_dump").await else {
        return;
    };
    let network = unique("net");
    let (db, s3) = tokio::join!(DbContainer::postgres(&cell.server, &network), s3(&network));
    let db = db.unwrap();
    seed_big(&db, "big").await;
    let before = db.psql("big", BIG_FINGERPRINT).await.unwrap();
    let cb = CallbackReceiver::start_on("0.0.0.0").await.unwrap();

    // The defaults (zstd with its workers, 8 MiB parts, 3 in flight), and no compression, where
    // every byte of the dump goes through the parts.
    for (path, compression) in [("zstd", "zstd"), ("plain", "none")] {
        let out = with_callback(
            Job::new(&cell.image(), &network)
                .envs(&pg_env(&db, "big"))
                .envs(&storage_env(&s3))
                .env("COMPRESSION", compression)
                .env("BACKUP_PATH", path),
            &cb,
            path,
        )
        .run()
        .await
        .unwrap();
        out.assert_ok(path);
        let peak = peak_rss(&out, path);
        let meta = cb
            .requests()
            .into_iter()
            .rev()
            .find(|r| r.path.ends_with("/metadata"))
            .expect("a metadata callback");
        assert_eq!(meta.body["metadata"]["peak_rss_bytes"], peak, "{path}");
        let raw = meta.body["metadata"]["raw_bytes"].as_u64().unwrap();
        assert!(raw > 200 << 20, "{path}: the dump is only {raw} bytes");
        println!(
            "{path}: the runner peaked at {:.1} MiB for a {} MiB dump",
            peak as f64 / 1048576.0,
            raw >> 20
        );
        assert!(
            peak < PEAK_RSS_BOUND,
            "{path}: the runner peaked at {} MiB backing up a {} MiB dump",
            peak >> 20,
            raw >> 20
        );
    }

    db.psql("postgres", "CREATE DATABASE copy;").await.unwrap();
    let out = Job::new(&cell.image(), &network)
        .envs(&pg_env(&db, "copy"))
        .envs(&storage_env(&s3))
        .env("OPERATION_TYPE", "restore")
        .env("BACKUP_PATH", "plain")
        .run()
        .await
        .unwrap();
    out.assert_ok("restore");
    let peak = peak_rss(&out, "restore");
    println!(
        "restore: the runner peaked at {:.1} MiB",
        peak as f64 / 1048576.0
    );
    assert!(
        peak < PEAK_RSS_BOUND,
        "restore: the runner peaked at {} MiB",
        peak >> 20
    );
    assert_eq!(db.psql("copy", BIG_FINGERPRINT).await.unwrap(), before);
}
