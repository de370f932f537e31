//! What only the Redis and Valkey cells have, through the runner images against real servers
//! (each cell against its own server image): the semantic comparison itself (it catches each
//! kind of change, and holds across versions), the logical backup mode (key by key, as a user
//! without SYNC) next to the default snapshot mode the scenarios cover, restores across
//! versions, the RESTORE_REPLACE and RESTORE_FLUSH flags, and a 100 MiB value in both modes.
//! Round trips in the default mode, refusals every engine shares and faults are in
//! scenarios.rs.
//!
//! Sizes: the logical round trip seeds the full sample (200,000 small keys, a 50 MiB string, a
//! 100,000-field hash; `REDIS_SAMPLE_SMALL_KEYS` and `REDIS_SAMPLE_BIG_STRING_MIB` shrink it) on
//! the newest selected cell and the medium one (20,000 keys, every type and encoding) on the
//! others. Everything else uses the small sample.

use std::time::Instant;

use harness::containers::{
    ready_or_skip, shared_dir, unique, Job, JobOutput, RedisContainer, S3Container, HOST_ALIAS,
};
use harness::matrix::{Cell, Matrix};
use harness::redis_client::Snapshot;
use harness::redis_sample::{seed, SampleSize, BIG_STRING, DATABASES};
use harness::CallbackReceiver;

const BUCKET: &str = "backups";

/// The selected Redis/Valkey cells, once Docker and the images (`runner`: also the runner
/// images, not only the servers) are there.
async fn ready(test: &str, runner: bool) -> Option<Vec<Cell>> {
    let matrix = Matrix::load().unwrap();
    let cells = matrix.cells_from_env(Some("redis")).unwrap();
    let mut images = vec![matrix.s3_image().to_string()];
    for cell in &cells {
        images.push(cell.server.clone());
        if runner {
            images.push(cell.image());
        }
    }
    ready_or_skip(test, &images).await.then_some(cells)
}

fn password() -> String {
    unique("pw").replace('-', "")
}

/// How a job logs in to the server.
#[derive(Clone, Copy, Debug)]
enum Login {
    /// The `default` user: DB_PASSWORD only.
    Default,
    /// The ACL user in DATABASE_URL (`redis://backup:…@host:6379`).
    Url,
}

fn db_env(cell: &Cell, server: &RedisContainer, login: Login) -> Vec<(String, String)> {
    let mut env = vec![("DB_ENGINE", cell.product().to_string())];
    let user = RedisContainer::BACKUP_USER;
    match login {
        Login::Default => env.extend([
            ("DB_HOST", server.alias().to_string()),
            ("DB_PORT", "6379".into()),
            ("DB_PASSWORD", server.password.clone()),
        ]),
        Login::Url => env.push((
            "DATABASE_URL",
            format!(
                "redis://{user}:{}@{}:6379",
                server.backup_password,
                server.alias()
            ),
        )),
    }
    env.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

fn assert_no_secrets(out: &JobOutput, server: &RedisContainer) {
    for secret in [&server.password, &server.backup_password] {
        assert!(!out.stderr.contains(secret.as_str()), "{}", out.stderr);
        assert!(!out.stdout.contains(secret.as_str()), "{}", out.stdout);
    }
}

/// Makes the server start a snapshot at once instead of after its default 5 s wait for more
/// replicas to join it.
async fn no_sync_delay(server: &RedisContainer) {
    let mut conn = server.connect(0).await.unwrap();
    redis::cmd("CONFIG")
        .arg("SET")
        .arg("repl-diskless-sync-delay")
        .arg(0)
        .query_async::<()>(&mut conn)
        .await
        .unwrap();
}

/// A server (which snapshots without delay) with the sample of `size`, and its snapshot.
async fn seeded(image: &str, network: &str, size: SampleSize) -> (RedisContainer, Snapshot) {
    let server = RedisContainer::start(image, network, &password())
        .await
        .unwrap();
    no_sync_delay(&server).await;
    seed(&server.endpoint(), size).await.unwrap();
    let snapshot = server.endpoint().snapshot().await.unwrap();
    let dbs: Vec<u32> = snapshot.key_counts().into_keys().collect();
    assert_eq!(dbs, DATABASES, "{image}");
    (server, snapshot)
}

/// The sample and the comparison themselves, against the server images only (no runner image):
/// a DUMP/RESTORE copy compares equal, and a changed value, a missing key, a changed expiry and
/// an acknowledged stream entry are each reported. The first cell gets the full sample.
#[tokio::test(flavor = "multi_thread")]
async fn the_sample_copies_and_the_comparison_catches_changes() {
    let Some(cells) = ready(
        "the_sample_copies_and_the_comparison_catches_changes",
        false,
    )
    .await
    else {
        return;
    };
    for (i, cell) in cells.iter().enumerate() {
        let started = Instant::now();
        let size = if i == 0 {
            SampleSize::full()
        } else {
            SampleSize::medium()
        };
        let network = unique("net");
        let (source, expected) = seeded(&cell.server, &network, size).await;
        let seeded_in = started.elapsed();
        assert!(expected.dbs[&0].size > size.small_keys as u64);
        let target = RedisContainer::start(&cell.server, &network, &password())
            .await
            .unwrap();
        let (from, to) = (source.endpoint(), target.endpoint());
        from.copy_to(&to).await.unwrap();
        let t = Instant::now();
        let copy = to.snapshot().await.unwrap();
        let snapshot_in = t.elapsed();
        expected.assert_same(&copy, &format!("{} DUMP/RESTORE copy", cell.name));
        let big = &copy.dbs[&0].keys[BIG_STRING];
        assert_eq!(big.kind, "string");

        let mut db0 = to.connect(0).await.unwrap();
        let mut db3 = to.connect(3).await.unwrap();
        redis::pipe()
            .cmd("SET")
            .arg("k:00000043")
            .arg("changed")
            .cmd("DEL")
            .arg("k:00000044")
            .cmd("PEXPIRE")
            .arg("ttl:string")
            .arg(9 * 3_600_000)
            .query_async::<()>(&mut db0)
            .await
            .unwrap();
        // Acknowledge g1's oldest pending entry: [id, consumer, idle ms, deliveries].
        let pending: Vec<(String, String, i64, i64)> = redis::cmd("XPENDING")
            .arg("stream:events")
            .arg("g1")
            .arg("-")
            .arg("+")
            .arg(1)
            .query_async(&mut db3)
            .await
            .unwrap();
        redis::cmd("XACK")
            .arg("stream:events")
            .arg("g1")
            .arg(&pending[0].0)
            .query_async::<()>(&mut db3)
            .await
            .unwrap();
        let diff = expected.diff(&to.snapshot().await.unwrap());
        let expect = [
            "db 0: ",
            "db 0: string k:00000043 differs",
            "db 0: key k:00000044 is missing",
            "db 0: key ttl:string expires at",
            "db 3: stream stream:events differs",
        ];
        assert_eq!(diff.len(), expect.len(), "{diff:#?}");
        assert!(diff[0].contains("keys expected"), "{diff:#?}");
        for (line, want) in diff.iter().zip(expect) {
            assert!(line.starts_with(want), "{want:?}: {diff:#?}");
        }
        eprintln!(
            "{}: {} keys seeded in {:.1?}, snapshot in {:.1?}, total {:.1?}",
            cell.name,
            expected.total_keys(),
            seeded_in,
            snapshot_in,
            started.elapsed()
        );
    }
}

/// The comparison is semantic, not byte for byte: a Redis 7.0 data set copied into Valkey 8.1
/// (DUMP payloads of RDB version 10 load there) compares equal, though the servers format
/// scores and encode small collections differently.
#[tokio::test(flavor = "multi_thread")]
async fn the_comparison_holds_across_versions() {
    let Some(cells) = ready("the_comparison_holds_across_versions", false).await else {
        return;
    };
    let server = |name: &str| cells.iter().find(|c| c.name == name).map(|c| &c.server);
    let (Some(redis70), Some(valkey81)) = (server("redis-7.0"), server("valkey-8.1")) else {
        eprintln!("the_comparison_holds_across_versions: needs cells redis-7.0 and valkey-8.1");
        return;
    };
    let network = unique("net");
    let (source, expected) = seeded(redis70, &network, SampleSize::medium()).await;
    let target = RedisContainer::start(valkey81, &network, &password())
        .await
        .unwrap();
    source.endpoint().copy_to(&target.endpoint()).await.unwrap();
    let actual = target.endpoint().snapshot().await.unwrap();
    expected.assert_same(&actual, "redis 7.0 copied into valkey 8.1");
}

/// Where jobs keep backups: S3 when `s3` is given, else the directory mounted as /backups.
struct Storage<'a> {
    s3: Option<&'a S3Container>,
    dir: Option<&'a std::path::Path>,
}

impl Storage<'_> {
    fn local(dir: &std::path::Path) -> Storage<'_> {
        Storage {
            s3: None,
            dir: Some(dir),
        }
    }

    /// A backup of `server` to `key` through `cell`'s image.
    fn backup(&self, cell: &Cell, server: &RedisContainer, login: Login, key: &str) -> Job {
        self.job(&cell.image(), server.network(), key)
            .envs(&db_env(cell, server, login))
    }

    /// A restore of `key` into `target` (as its `default` user) through `cell`'s image.
    fn restore(&self, cell: &Cell, target: &RedisContainer, key: &str) -> Job {
        self.job(&cell.image(), target.network(), key)
            .envs(&db_env(cell, target, Login::Default))
            .env("OPERATION_TYPE", "restore")
    }

    fn job(&self, image: &str, network: &str, key: &str) -> Job {
        let mut job = Job::new(image, network).env("BACKUP_PATH", key);
        if let Some(s3) = self.s3 {
            job = job.envs(&s3.job_env(BUCKET));
        }
        if let Some(dir) = self.dir {
            job = job.mount(dir, "/backups");
        }
        job
    }

    async fn manifest(&self, key: &str) -> serde_json::Value {
        let name = format!("{key}.manifest.json");
        let bytes = match (self.s3, self.dir) {
            (Some(s3), _) => s3.get(BUCKET, &name).await.unwrap(),
            (None, Some(dir)) => std::fs::read(dir.join(&name)).unwrap(),
            (None, None) => unreachable!("a storage"),
        };
        serde_json::from_slice(&bytes).unwrap()
    }
}

/// Per cell, the sample (the full one on the newest selected cell, the medium one, every type
/// and encoding, on the others) backed up through the image into S3 in the logical mode, logging in
/// with DATABASE_URL as the ACL user `backup` (`DB_NAME` is only recorded: every logical
/// database is backed up), restored into a fresh server of the same image (the source stays the
/// reference) and compared key by key and per database. The default mode (a snapshot over
/// SYNC) is the scenarios' round trip.
#[tokio::test(flavor = "multi_thread")]
async fn logical_mode_round_trips_through_s3() {
    let Some(cells) = ready("logical_mode_round_trips_through_s3", true).await else {
        return;
    };
    let s3_image = Matrix::load().unwrap().s3_image().to_string();
    let newest = cells.len().saturating_sub(1);
    for (i, cell) in cells.into_iter().enumerate() {
        let started = Instant::now();
        let network = unique("net");
        let size = if i == newest {
            SampleSize::full()
        } else {
            SampleSize::medium()
        };
        let (seeded, s3) = tokio::join!(
            seeded(&cell.server, &network, size),
            S3Container::start(&s3_image, &network)
        );
        let ((source, expected), s3) = (seeded, s3.unwrap());
        s3.create_bucket(BUCKET).await.unwrap();
        let storage = Storage {
            s3: Some(&s3),
            dir: None,
        };
        eprintln!(
            "{}: {} keys seeded in {:.1?}",
            cell.name,
            expected.total_keys(),
            started.elapsed()
        );
        let (mode, login) = ("logical", Login::Url);
        let key = format!("{}/{mode}.redis.zst", cell.name);
        let cb = CallbackReceiver::start_on("0.0.0.0").await.unwrap();
        let t = Instant::now();
        let backup = storage
            .backup(&cell, &source, login, &key)
            .env("REDIS_BACKUP_MODE", mode)
            // Ignored: every logical database is backed up (the comparison shows it).
            .env("DB_NAME", "3")
            .env("CALLBACK_URL", cb.url_via(HOST_ALIAS))
            .run()
            .await
            .unwrap();
        let backup_in = t.elapsed();
        backup.assert_ok(&format!("{} {mode} backup as {login:?}", cell.name));
        assert_no_secrets(&backup, &source);
        let statuses = cb.statuses();
        assert_eq!(statuses, ["running", "metadata", "success"]);
        let manifest = storage.manifest(&key).await;
        assert_eq!(manifest["format"], format!("redis-{mode}"), "{manifest}");
        assert_eq!(manifest["engine_version"], cell.version.as_str());

        let target = RedisContainer::start(&cell.server, &network, &password())
            .await
            .unwrap();
        let t = Instant::now();
        let restore = storage.restore(&cell, &target, &key).run().await.unwrap();
        let restore_in = t.elapsed();
        restore.assert_ok(&format!("{} {mode} restore", cell.name));
        assert_no_secrets(&restore, &target);
        let actual = target.endpoint().snapshot().await.unwrap();
        assert_eq!(actual.key_counts(), expected.key_counts(), "{}", cell.name);
        expected.assert_same(&actual, &format!("{} {mode} round trip", cell.name));
        eprintln!(
            "{}: {mode}: backup {backup_in:.1?} ({} bytes stored), restore {restore_in:.1?}, verified",
            cell.name, manifest["bytes"]
        );
    }
}

/// Restores across versions, each case when its cells are selected. A backup restores into
/// another version when that server can load its data, compared key by key: Redis 7.0 into Valkey
/// 8.1 in both modes, and Valkey 9.1 into Valkey 8.1 in rdb mode (Valkey 9 sends replicas RDB
/// version 11 as long as no key needs its own format 80). Otherwise it is refused with exit 5 and
/// the target stays empty: Redis 8.0 (RDB 12) into Redis 7.0 in both modes, and Valkey 9.1's
/// logical backups (DUMP payloads of format 80) into Valkey 8.1. (An image against a server newer
/// than itself is a scenario.)
#[tokio::test(flavor = "multi_thread")]
async fn cross_version_restores_and_refusals() {
    let Some(cells) = ready("cross_version_restores_and_refusals", true).await else {
        return;
    };
    let cell = |name: &str| cells.iter().find(|c| c.name == name);
    let dir = shared_dir().unwrap();
    let storage = Storage::local(dir.path());
    let cases = [
        ("redis-7.0", "valkey-8.1", "rdb", true),
        ("redis-7.0", "valkey-8.1", "logical", true),
        ("valkey-9.1", "valkey-8.1", "rdb", true),
        ("valkey-9.1", "valkey-8.1", "logical", false),
        ("redis-8.0", "redis-7.0", "rdb", false),
        ("redis-8.0", "redis-7.0", "logical", false),
    ];
    for (from, into, mode, loads) in cases {
        let (Some(from), Some(into)) = (cell(from), cell(into)) else {
            continue;
        };
        let what = format!("{} {mode} backup into {}", from.name, into.server);
        let network = unique("net");
        let (source, expected) = seeded(&from.server, &network, SampleSize::small()).await;
        let key = format!("{}-to-{}-{mode}.zst", from.name, into.name);
        storage
            .backup(from, &source, Login::Default, &key)
            .env("REDIS_BACKUP_MODE", mode)
            .run()
            .await
            .unwrap()
            .assert_ok(&format!("{} {mode} backup", from.name));
        let target = RedisContainer::start(&into.server, &network, &password())
            .await
            .unwrap();
        let restore = storage.restore(into, &target, &key).run().await.unwrap();
        if loads {
            restore.assert_ok(&what);
            let actual = target.endpoint().snapshot().await.unwrap();
            expected.assert_same(&actual, &what);
            eprintln!("{what}: verified");
        } else {
            restore.assert_code(5, &what);
            assert!(target.endpoint().is_empty().await.unwrap(), "{what}");
            eprintln!("{what}: refused (5)");
        }
    }
}

/// Per cell: a restore into a server holding keys with RESTORE_REPLACE=true overwrites the
/// same-named keys and keeps the others; with RESTORE_FLUSH=true nothing else is left. (Without
/// either flag it is refused: a scenario.)
#[tokio::test(flavor = "multi_thread")]
async fn restore_flags_replace_or_flush_a_non_empty_target() {
    let Some(cells) = ready("restore_flags_replace_or_flush_a_non_empty_target", true).await else {
        return;
    };
    for cell in &cells {
        let network = unique("net");
        let dir = shared_dir().unwrap();
        let storage = Storage::local(dir.path());
        let (source, expected) = seeded(&cell.server, &network, SampleSize::small()).await;

        storage
            .backup(cell, &source, Login::Default, "small.zst")
            .run()
            .await
            .unwrap()
            .assert_ok(&format!("{} backup", cell.name));

        let target = RedisContainer::start(&cell.server, &network, &password())
            .await
            .unwrap();
        let to = target.endpoint();
        let mut db0 = to.connect(0).await.unwrap();
        let occupy = || {
            let mut p = redis::pipe();
            p.cmd("SET").arg("str:hello").arg("stale");
            p.cmd("SET").arg("keep:me").arg("1");
            p
        };
        occupy().query_async::<()>(&mut db0).await.unwrap();
        let restore = |flag: &str| {
            storage
                .restore(cell, &target, "small.zst")
                .env(flag, "true")
                .run()
        };

        restore("RESTORE_REPLACE")
            .await
            .unwrap()
            .assert_ok(&format!("{} restore with RESTORE_REPLACE", cell.name));
        let kept: Option<String> = redis::cmd("GET")
            .arg("keep:me")
            .query_async(&mut db0)
            .await
            .unwrap();
        assert_eq!(
            kept.as_deref(),
            Some("1"),
            "RESTORE_REPLACE keeps other keys"
        );
        redis::cmd("DEL")
            .arg("keep:me")
            .query_async::<()>(&mut db0)
            .await
            .unwrap();
        expected.assert_same(&to.snapshot().await.unwrap(), "after RESTORE_REPLACE");

        occupy().query_async::<()>(&mut db0).await.unwrap();
        restore("RESTORE_FLUSH")
            .await
            .unwrap()
            .assert_ok(&format!("{} restore with RESTORE_FLUSH", cell.name));
        expected.assert_same(&to.snapshot().await.unwrap(), "after RESTORE_FLUSH");
        eprintln!("{}: RESTORE_REPLACE and RESTORE_FLUSH verified", cell.name);
    }
}

/// A 100 MiB string round trips byte for byte in both modes, on the newest selected cell.
#[tokio::test(flavor = "multi_thread")]
async fn a_value_of_100_mib_round_trips_in_both_modes() {
    let Some(cells) = ready("a_value_of_100_mib_round_trips_in_both_modes", true).await else {
        return;
    };
    let Some(cell) = cells.last() else {
        return;
    };
    let network = unique("net");
    let dir = shared_dir().unwrap();
    let storage = Storage::local(dir.path());
    let (a, b) = (password(), password());
    let (source, target) = tokio::join!(
        RedisContainer::start(&cell.server, &network, &a),
        RedisContainer::start(&cell.server, &network, &b)
    );
    let (source, target) = (source.unwrap(), target.unwrap());
    no_sync_delay(&source).await;
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
        storage
            .backup(cell, &source, Login::Default, mode)
            .env("REDIS_BACKUP_MODE", mode)
            .run()
            .await
            .unwrap()
            .assert_ok(mode);
        storage
            .restore(cell, &target, mode)
            .env("RESTORE_FLUSH", "true")
            .run()
            .await
            .unwrap()
            .assert_ok(mode);
        let restored: Vec<u8> = redis::cmd("GET")
            .arg("huge")
            .query_async(&mut tconn)
            .await
            .unwrap();
        assert!(
            restored == value,
            "{}: {mode}: the 100 MiB value differs",
            cell.name
        );
    }
}
