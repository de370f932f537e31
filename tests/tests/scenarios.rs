//! The scenario suite: one list of scenarios, each a generic async function over
//! [`EngineUnderTest`], run through the real runner images against every selected cell of
//! every engine — PostgreSQL, MySQL and MariaDB, Redis and Valkey — with real servers and a
//! real S3 server. The engines' parts, the engine-independent assertions and the cell selection
//! are in `tests/src/scenario/`; the plan (which scenario on which cells) is printed first.
//! What only one engine has is in postgres_images.rs, mysql_images.rs, mysql_fidelity.rs and
//! redis_images.rs.
//!
//! `HARNESS_CELLS=postgres-18,valkey-9.1 HARNESS_REQUIRE_DOCKER=1 cargo test --release -p harness
//! --test scenarios [-- <scenario or cell>…]`

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use harness::containers::{
    docker_cli, inspect_image, shared_dir, Job, JobOutput, RunningJob, HOST_ALIAS,
};
use harness::proxy::TcpProxy;
use harness::pushgateway::Pushgateway;
use harness::scenario::suite::version;
use harness::scenario::{
    check, exit, wait_for_log, with_callbacks, Cells, Ctx, Data, EngineUnderTest, Mysql, Paused,
    Postgres, Redis, Scenario, Store, Suite, CALLBACK_SECRET, STORAGE_SECRET, UPLOAD_STARTED,
};
use harness::CallbackReceiver;
use serde_json::Value;
use sha2::{Digest, Sha256};
use testcontainers::core::IntoContainerPort;

macro_rules! scenario {
    ($f:ident, $cells:expr) => {
        Scenario {
            name: stringify!($f),
            cells: $cells,
            run: |t| Box::pin($f(t)),
        }
    };
}

/// The scenarios, in the order each cell runs them: [`Cells::Every`] runs on every selected cell
/// (the smoke subset: the image itself, the S3 round trip, a wrong password, and the next older
/// image against the cell's server, which costs one job), [`Cells::Full`] on the newest cell of
/// each product. A new scenario is one line here and its function below.
fn scenarios<E: EngineUnderTest>() -> Vec<Scenario<E>> {
    use Cells::{Every, Full};
    vec![
        scenario!(
            image_is_non_root_labelled_and_explains_a_missing_config,
            Every
        ),
        scenario!(round_trip_through_s3_with_signed_callbacks, Every),
        scenario!(wrong_password_fails_and_stores_nothing, Every),
        scenario!(server_newer_than_the_image_is_refused, Every),
        scenario!(round_trip_through_a_local_directory_on_a_volume, Full),
        scenario!(
            storage_that_cannot_take_the_backup_fails_before_the_database,
            Full
        ),
        scenario!(non_empty_target_is_refused_and_left_untouched, Full),
        scenario!(
            damaged_backups_are_refused_and_the_target_left_untouched,
            Full
        ),
        scenario!(encrypted_backups_open_only_with_their_keys, Full),
        scenario!(sigterm_mid_upload_stops_cleanly, Full),
        scenario!(store_frozen_mid_upload_fails_and_leaves_nothing, Full),
        scenario!(no_secret_in_argv_logs_callbacks_or_manifests, Full),
        scenario!(memory_stays_bounded_on_a_large_dump, Full),
        scenario!(database_killed_mid_dump_fails_and_leaves_nothing, Full),
        scenario!(catalog_lists_restores_latest_prunes_and_checks, Full),
        scenario!(metrics_pings_and_json_logs_report_success_and_failure, Full),
    ]
}

fn main() -> std::process::ExitCode {
    Suite::from_args()
        .engine::<Postgres>(scenarios())
        .engine::<Mysql>(scenarios())
        .engine::<Redis>(scenarios())
        .run()
}

/// The image runs as uid 10001 with its labels, and run without any variable it exits 2 with a
/// short configuration error.
async fn image_is_non_root_labelled_and_explains_a_missing_config<E: EngineUnderTest>(
    t: &Ctx<E>,
) -> Result<()> {
    let cell = t.cell();
    let info = inspect_image(&cell.image()).await?;
    let config = &info["Config"];
    assert_eq!(config["User"], "10001:10001");
    assert_eq!(config["Entrypoint"][0], "/usr/local/bin/backup-runner");
    let labels = &config["Labels"];
    assert_eq!(labels["io.backup-runner.engine"], cell.product());
    assert_eq!(
        labels["io.backup-runner.engine-version"],
        cell.version.as_str()
    );
    for label in ["source", "revision", "version", "created"] {
        let v = labels[format!("org.opencontainers.image.{label}")]
            .as_str()
            .unwrap_or("");
        assert!(!v.is_empty() && v != "unknown", "label {label} is {v:?}");
    }
    let bare = t.job().run().await?;
    bare.assert_code(exit::CONFIG, "a job without configuration");
    for expected in ["invalid configuration", "DB_HOST: is required"] {
        assert!(bare.stderr.contains(expected), "{}", bare.stderr);
    }
    assert!(!bare.stderr.contains("panicked"), "{}", bare.stderr);
    assert!(bare.stderr.lines().count() < 10, "short: {}", bare.stderr);
    t.log(format!(
        "{} MB, user 10001, labelled",
        info["Size"].as_u64().unwrap_or(0) / 1_000_000
    ));
    Ok(())
}

/// The sample backed up through S3 with signed callbacks (`running`, `metadata`, `success`),
/// the manifest's fields checked against the stored object, then restored into an empty
/// database with callbacks and compared with the source; one changed value in the copy is then
/// found by the same comparison.
async fn round_trip_through_s3_with_signed_callbacks<E: EngineUnderTest>(t: &Ctx<E>) -> Result<()> {
    let source = t.sample().await?;
    let store = t.s3_store().await?;
    let cb = t.callbacks().await?;
    let key = format!("{}/sample.zst", t.cell().name);
    let job_id = format!("backup-{}", t.cell().name);
    let started = Instant::now();
    let (backup, target) = tokio::join!(
        with_callbacks(t.backup(&source.db, &store, &key), &cb, &job_id).run(),
        t.fresh(&source.db)
    );
    let (backup, target) = (backup?, target?);
    backup.assert_ok("backup");
    let manifest = store.manifest(&key).await?;
    let object = store.get(&key).await?;
    check::manifest(t.cell(), &manifest, &key, &object, &job_id, "backup");
    check::backup_callbacks(&cb, &job_id, &manifest, "backup");
    store.assert_holds(&[&key], "after the backup").await?;
    check::no_secret(
        &[backup.stderr.clone(), backup.stdout.clone()],
        &E::secrets(&source.db),
        "backup log",
    );

    let cb = t.callbacks().await?;
    let restore = with_callbacks(t.restore(&target, &store, &key), &cb, "restore")
        .run()
        .await?;
    restore.assert_ok("restore");
    assert_eq!(cb.statuses(), ["running", "success"], "restore callbacks");
    check::signed(&cb, "restore");
    t.assert_same(source, &target, "restored into an empty database")
        .await?;

    E::tamper(&target).await?;
    let tampered = E::fingerprint(&target, Data::Sample).await?;
    let differences = E::differences(&source.fingerprint, &tampered);
    assert!(
        !differences.is_empty(),
        "the comparison missed a changed value"
    );
    t.log(format!(
        "{} bytes stored ({} dumped), restored identical in {:.1}s; one changed value found: {}",
        manifest["bytes"],
        manifest["raw_bytes"],
        started.elapsed().as_secs_f64(),
        differences[0]
    ));
    Ok(())
}

/// A wrong password: exit 3, a `failed` callback saying why, nothing stored, the password in no
/// output.
async fn wrong_password_fails_and_stores_nothing<E: EngineUnderTest>(t: &Ctx<E>) -> Result<()> {
    let source = t.sample().await?;
    let store = t.s3_store().await?;
    let cb = t.callbacks().await?;
    let wrong = "not-the-password-777";
    let out = with_callbacks(
        store
            .attach(t.job())
            .envs(&E::wrong_password(t.cell(), &source.db, wrong))
            .env("BACKUP_PATH", "denied.zst"),
        &cb,
        "denied",
    )
    .run()
    .await?;
    check::failed(&out, exit::DB_REFUSED, &cb, E::DENIED, "wrong password");
    assert!(out.stderr.contains(E::DENIED), "{}", out.stderr);
    let mut texts = vec![out.stderr, out.stdout];
    texts.extend(
        cb.requests()
            .iter()
            .map(|r| String::from_utf8_lossy(&r.raw_body).into_owned()),
    );
    check::no_secret(&texts, &[wrong.to_string()], "wrong password");
    store.assert_empty("wrong password").await
}

/// The sample backed up into a host directory mounted as a volume (object and manifest, no
/// partial file left), then restored from it into an empty database and compared.
async fn round_trip_through_a_local_directory_on_a_volume<E: EngineUnderTest>(
    t: &Ctx<E>,
) -> Result<()> {
    let source = t.sample().await?;
    let store = t.local_store()?;
    let key = format!("nightly/{}.zst", t.cell().name);
    let (backup, target) = tokio::join!(
        t.backup(&source.db, &store, &key)
            .env("JOB_ID", "local")
            .run(),
        t.fresh(&source.db)
    );
    let (backup, target) = (backup?, target?);
    backup.assert_ok("local backup");
    store.assert_holds(&[&key], "the directory").await?;
    let object = store.get(&key).await?;
    check::manifest(
        t.cell(),
        &store.manifest(&key).await?,
        &key,
        &object,
        "local",
        "local backup",
    );
    t.restore(&target, &store, &key)
        .run()
        .await?
        .assert_ok("local restore");
    t.assert_same(source, &target, "restored from the directory")
        .await
}

/// Panics unless the job stopped before it contacted the database.
fn assert_database_not_contacted(out: &JobOutput, what: &str) {
    assert!(
        !out.stderr
            .contains("server and client tools are compatible"),
        "{what}: the job went on to the database:\n{}",
        out.stderr
    );
    assert_nothing_dumped(out, what);
}

/// Panics unless the job stopped before the dump started (the pipeline's start, after every
/// preflight check).
fn assert_nothing_dumped(out: &JobOutput, what: &str) {
    assert!(
        !out.stderr.contains("starting the dump"),
        "{what}: the dump started:\n{}",
        out.stderr
    );
}

/// Storage that cannot take the backup fails the job with exit 6 and a `failed` callback before
/// the dump: an unreachable endpoint and a missing bucket before the database is even
/// contacted, a volume the runner may not write after the database's preflight. Nothing is
/// stored or created.
async fn storage_that_cannot_take_the_backup_fails_before_the_database<E: EngineUnderTest>(
    t: &Ctx<E>,
) -> Result<()> {
    let source = t.sample().await?;
    let env = E::env(t.cell(), &source.db);
    let store = t.s3_store().await?;
    let cases = [
        (
            "unreachable endpoint",
            ("STORAGE_ENDPOINT", "http://nowhere.invalid:9000"),
            "cannot reach bucket",
        ),
        (
            "missing bucket",
            ("STORAGE_BUCKET", "no-such-bucket"),
            "does not exist",
        ),
    ];
    for (what, (var, value), reason) in cases {
        let cb = t.callbacks().await?;
        let out = with_callbacks(
            store
                .attach(t.job())
                .envs(&env)
                .env(var, value)
                .env("BACKUP_PATH", "refused.zst"),
            &cb,
            what,
        )
        .run()
        .await?;
        check::failed(&out, exit::STORAGE, &cb, "storage error", what);
        assert!(out.stderr.contains(reason), "{what}: {}", out.stderr);
        assert_database_not_contacted(&out, what);
    }
    store.assert_empty("after the refused backups").await?;
    let buckets = t.s3().await?.list_buckets().await?;
    assert!(
        !buckets.iter().any(|b| b == "no-such-bucket"),
        "{buckets:?}"
    );

    // A read-only volume, for a runner running as another user.
    let local = t.local_store()?;
    let dir = local.dir().expect("a local store");
    let mode = |m| std::os::unix::fs::PermissionsExt::from_mode(m);
    std::fs::set_permissions(dir, mode(0o555))?;
    let cb = t.callbacks().await?;
    let out = with_callbacks(
        local
            .attach(t.job())
            .envs(&env)
            .user("4242:4242")
            .env("BACKUP_PATH", "refused.zst"),
        &cb,
        "read-only",
    )
    .run()
    .await;
    std::fs::set_permissions(dir, mode(0o755))?;
    let out = out?;
    check::failed(&out, exit::STORAGE, &cb, "not writable", "read-only volume");
    assert_nothing_dumped(&out, "read-only volume");
    local.assert_empty("read-only volume").await
}

/// The image of the next older selected cell of the same product, against this cell's server:
/// exit 5 before anything is dumped, naming this cell's image; nothing stored.
async fn server_newer_than_the_image_is_refused<E: EngineUnderTest>(t: &Ctx<E>) -> Result<()> {
    let cell = t.cell();
    let older = t
        .selected()
        .iter()
        .filter(|c| c.product() == cell.product() && version(&c.version) < version(&cell.version))
        .max_by_key(|c| version(&c.version));
    let Some(older) = older else {
        return t.skip(format!(
            "no older {} cell is selected to run against {}",
            cell.product(),
            cell.server
        ));
    };
    let source = t.sample().await?;
    let store = t.s3_store().await?;
    let cb = t.callbacks().await?;
    let out = with_callbacks(
        store
            .attach(Job::new(&older.image(), t.network()))
            .envs(&E::env(older, &source.db))
            .env("BACKUP_PATH", "refused.zst"),
        &cb,
        "newer",
    )
    .run()
    .await?;
    let what = format!("{} against {}", older.image(), cell.server);
    check::failed(
        &out,
        exit::INCOMPATIBLE,
        &cb,
        &format!("use the image {}", cell.image()),
        &what,
    );
    store.assert_empty(&what).await?;
    t.log(format!("{what}: refused, naming {}", cell.image()));
    Ok(())
}

/// A restore into a database that holds data, without the engine's clean flag: exit 2 naming
/// the flag; the target unchanged.
async fn non_empty_target_is_refused_and_left_untouched<E: EngineUnderTest>(
    t: &Ctx<E>,
) -> Result<()> {
    let source = t.sample().await?;
    let store = t.s3_store().await?;
    t.backup(&source.db, &store, "sample.zst")
        .run()
        .await?
        .assert_ok("backup");
    let out = t.restore(&source.db, &store, "sample.zst").run().await?;
    out.assert_code(exit::CONFIG, "restore into a non-empty target");
    let flag = format!("{}=true", E::CLEAN_FLAG);
    assert!(out.stderr.contains(&flag), "{}", out.stderr);
    t.assert_same(source, &source.db, "the refused target")
        .await
}

/// A truncated object and one with a flipped byte, each with the good manifest, restored with
/// the clean flag into a database holding data: exit 8 with a `failed` callback, and the target
/// untouched (checked first where restores are not atomic, rolled back where they are).
/// `verify` reports the flipped byte too; the good backup verifies, and with `VERIFY_RESTORE`
/// loads into a scratch database identical to the source.
async fn damaged_backups_are_refused_and_the_target_left_untouched<E: EngineUnderTest>(
    t: &Ctx<E>,
) -> Result<()> {
    let source = t.sample().await?;
    let store = t.s3_store().await?;
    let (backup, scratch) = tokio::join!(
        t.backup(&source.db, &store, "good").run(),
        t.fresh(&source.db)
    );
    let (backup, scratch) = (backup?, scratch?);
    backup.assert_ok("backup");
    let good = store.get("good").await?;
    let manifest = store.get("good.manifest.json").await?;
    let mut flipped = good.clone();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0x01;
    let truncated = good[..good.len() - 100].to_vec();
    for (what, bytes) in [("truncated", truncated), ("flipped", flipped)] {
        store.put(what, bytes).await?;
        store
            .put(&format!("{what}.manifest.json"), manifest.clone())
            .await?;
        let cb = t.callbacks().await?;
        let out = with_callbacks(
            t.restore(&source.db, &store, what)
                .env(E::CLEAN_FLAG, "true"),
            &cb,
            what,
        )
        .run()
        .await?;
        check::failed(&out, exit::INTEGRITY, &cb, "integrity", what);
        t.assert_same(
            source,
            &source.db,
            &format!("the target of the {what} restore"),
        )
        .await?;
    }

    let verify = |key: &str| {
        store
            .attach(t.job())
            .env("OPERATION_TYPE", "verify")
            .env("BACKUP_PATH", key)
    };
    verify("flipped")
        .run()
        .await?
        .assert_code(exit::INTEGRITY, "verify of a flipped byte");
    let cb = t.callbacks().await?;
    with_callbacks(verify("good"), &cb, "verify")
        .run()
        .await?
        .assert_ok("verify");
    let calls = cb.requests();
    let meta = calls
        .iter()
        .find(|r| r.path.ends_with("/metadata"))
        .expect("a metadata callback");
    assert_eq!(meta.body["metadata"]["verified"], true);
    assert_eq!(cb.statuses().last().map(String::as_str), Some("success"));
    t.restore(&scratch, &store, "good")
        .env("OPERATION_TYPE", "verify")
        .env("VERIFY_RESTORE", "true")
        .run()
        .await?
        .assert_ok("verify with a scratch restore");
    t.assert_same(source, &scratch, "the verify's scratch restore")
        .await
}

/// An age X25519 identity made by the real `age-keygen`: its file (in a directory jobs mount
/// at [`KEYS`]), its public key and its secret key.
struct AgeKey {
    file: String,
    host_file: PathBuf,
    public: String,
    secret: String,
}

/// Where jobs see the encryption scenario's key directory.
const KEYS: &str = "/keys";

/// `age-keygen -o <dir>/<name>`, the file made readable by the image's user.
fn age_keygen(dir: &Path, name: &str) -> Result<AgeKey> {
    let host_file = dir.join(name);
    let out = std::process::Command::new("age-keygen")
        .arg("-o")
        .arg(&host_file)
        .output()
        .context("running age-keygen (Debian package `age`, see .ci/install-test-deps.sh)")?;
    ensure!(
        out.status.success(),
        "age-keygen: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&host_file)?;
    let secret = text
        .lines()
        .find(|l| l.starts_with("AGE-SECRET-KEY-1"))
        .with_context(|| format!("no AGE-SECRET-KEY-1 line in {}", host_file.display()))?
        .to_string();
    let out = std::process::Command::new("age-keygen")
        .arg("-y")
        .arg(&host_file)
        .output()?;
    ensure!(out.status.success(), "age-keygen -y failed");
    let public = String::from_utf8(out.stdout)?.trim().to_string();
    ensure!(
        public.starts_with("age1"),
        "age-keygen -y printed {public:?}"
    );
    std::fs::set_permissions(&host_file, std::fs::Permissions::from_mode(0o644))?;
    Ok(AgeKey {
        file: format!("{KEYS}/{name}"),
        host_file,
        public,
        secret,
    })
}

/// Writes a file into the key directory, readable by the image's user.
fn key_file(dir: &Path, name: &str, text: &str) -> Result<String> {
    let path = dir.join(name);
    std::fs::write(&path, text)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))?;
    Ok(format!("{KEYS}/{name}"))
}

/// What a job left for the secret scan: its output and its callbacks' bodies and headers.
fn scan_texts(texts: &mut Vec<String>, out: &JobOutput, cb: Option<&CallbackReceiver>) {
    texts.extend([out.stderr.clone(), out.stdout.clone()]);
    for r in cb.map(|cb| cb.requests()).unwrap_or_default() {
        texts.push(String::from_utf8_lossy(&r.raw_body).into_owned());
        texts.push(format!("{:?}", r.headers));
    }
}

/// Panics unless `plain` starts the way the dump tool's output of `format` does.
fn assert_dump_format(cell_product: &str, format: &str, plain: &[u8], what: &str) {
    let head = String::from_utf8_lossy(&plain[..plain.len().min(512)]);
    match format {
        "pg_dump-custom" => assert!(plain.starts_with(b"PGDMP"), "{what}: {head:?}"),
        "mysql-sql" => {
            let product = if cell_product == "mariadb" {
                "MariaDB"
            } else {
                "MySQL"
            };
            // mariadb-dump 11 starts with its sandbox-mode comment, then its header.
            assert!(
                (head.starts_with("-- ") || head.starts_with("/*M!999999"))
                    && head.contains(&format!("-- {product} dump")),
                "{what}: not a {product} dump: {head:?}"
            );
        }
        "redis-rdb" => assert!(plain.starts_with(b"REDIS0"), "{what}: {head:?}"),
        "redis-logical" => assert!(plain.starts_with(b"BRREDIS1"), "{what}: {head:?}"),
        other => panic!("{what}: a format this scenario does not know: {other}"),
    }
}

/// `age -d -i <identity> <object> | zstd -d`, the README's way back without the runner.
fn age_cli_decrypt(identity: &Path, object: &Path) -> Result<std::process::Output> {
    std::process::Command::new("bash")
        .args([
            "-c",
            "set -o pipefail; age -d -i \"$0\" \"$1\" | zstd -d -q -c",
        ])
        .arg(identity)
        .arg(object)
        .output()
        .context("running age and zstd")
}

/// Encryption with age, end to end through the image. The sample backed up to two X25519
/// recipients made by `age-keygen`: the manifest (version 2) records the scheme, the kind and
/// both recipients; the stored object is an age file with two recipient stanzas and not one
/// byte of a string the dump holds. Each identity alone restores it identical. A third,
/// unrelated key is refused with exit 8 ("the key does not match") by restore and verify, the
/// target (holding the sample, with the clean flag set) left as it was; no key at all is a
/// configuration error (exit 2) naming both recipients before the database is contacted.
/// `verify` without a key checks the stored bytes only and says so; with a file holding the
/// unrelated key and identity 2 (a key rotation) it decrypts and decompresses. The reference
/// tools (`age -d -i | zstd -d`) give back exactly the dump tool's output: the manifest's
/// `raw_bytes`, the format's header, and the string the stored bytes lack. A passphrase
/// backup (from a mounted file, uncompressed, so only the encryption hides the data) restores
/// with the passphrase given directly. No identity or passphrase appears in any job's output,
/// callback (body or headers), manifest, or in the argv of the processes seen in three of the
/// jobs.
async fn encrypted_backups_open_only_with_their_keys<E: EngineUnderTest>(t: &Ctx<E>) -> Result<()> {
    let begun = Instant::now();
    let source = t.sample().await?;
    let store = t.s3_store().await?;
    let dir = shared_dir()?;
    let (k1, k2, other) = (
        age_keygen(dir.path(), "one.txt")?,
        age_keygen(dir.path(), "two.txt")?,
        age_keygen(dir.path(), "other.txt")?,
    );
    ensure!(
        k1.public != k2.public && k2.public != other.public && k1.public != other.public,
        "age-keygen made the same key twice"
    );
    let rotation = key_file(
        dir.path(),
        "rotation.txt",
        &format!(
            "# an unrelated key first, then identity 2\n{}\n{}\n",
            other.secret, k2.secret
        ),
    )?;
    let passphrase = format!("scenario passphrase {}", harness::containers::unique("pp"));
    let passphrase_file = key_file(dir.path(), "passphrase.txt", &format!("{passphrase}\n"))?;
    let keyed = |job: Job| job.mount(dir.path(), KEYS);
    let text = E::SAMPLE_TEXT;
    let product = t.cell().product().to_string();
    let mut texts: Vec<String> = Vec::new();
    let mut argv: Vec<String> = Vec::new();

    // The backup to two recipients, comma-and-space separated as a user would write them.
    let key = format!("{}/sample.enc", t.cell().name);
    let recipients = [k1.public.as_str(), k2.public.as_str()];
    let cb = t.callbacks().await?;
    let (backup, target) = tokio::join!(
        with_callbacks(
            t.backup(&source.db, &store, &key)
                .env("ENCRYPTION_RECIPIENTS", recipients.join(", ")),
            &cb,
            "encrypted-backup",
        )
        .run(),
        t.fresh(&source.db)
    );
    let (backup, target) = (backup?, target?);
    backup.assert_ok("encrypted backup");
    scan_texts(&mut texts, &backup, Some(&cb));
    let manifest = store.manifest(&key).await?;
    let object = store.get(&key).await?;
    check::encrypted_manifest(
        t.cell(),
        &manifest,
        &key,
        &object,
        "encrypted-backup",
        "zstd",
        "x25519",
        &recipients,
        "encrypted backup",
    );
    check::backup_callbacks(&cb, "encrypted-backup", &manifest, "encrypted backup");
    check::age_object(&object, "X25519", 2, text, "encrypted backup");
    store
        .assert_holds(&[&key], "after the encrypted backup")
        .await?;

    // Identity 1 restores it; argv scanned.
    let (restore, seen) =
        scanned(keyed(t.restore(&target, &store, &key)).env("ENCRYPTION_IDENTITY_FILE", &k1.file))
            .await?;
    restore.assert_ok("restore with identity 1");
    scan_texts(&mut texts, &restore, None);
    argv.extend(seen);
    t.assert_same(source, &target, "restored with identity 1")
        .await?;

    // The unrelated key, into that (now full) target with the clean flag: refused untouched.
    let cb = t.callbacks().await?;
    let out = with_callbacks(
        keyed(t.restore(&target, &store, &key))
            .env(E::CLEAN_FLAG, "true")
            .env("ENCRYPTION_IDENTITY_FILE", &other.file),
        &cb,
        "wrong-key",
    )
    .run()
    .await?;
    check::failed(
        &out,
        exit::INTEGRITY,
        &cb,
        "the key does not match",
        "restore with an unrelated key",
    );
    for public in [&k1.public, &k2.public, &other.public] {
        assert!(
            out.stderr.contains(public.as_str()),
            "restore with an unrelated key: the error should name {public}:\n{}",
            out.stderr
        );
    }
    scan_texts(&mut texts, &out, Some(&cb));
    t.assert_same(source, &target, "the target of the wrong-key restore")
        .await?;

    // No key: a configuration error naming the recipients, before the database.
    let cb = t.callbacks().await?;
    let out = with_callbacks(
        t.restore(&target, &store, &key).env(E::CLEAN_FLAG, "true"),
        &cb,
        "no-key",
    )
    .run()
    .await?;
    check::failed(
        &out,
        exit::CONFIG,
        &cb,
        "ENCRYPTION_IDENTITY_FILE",
        "restore without a key",
    );
    let message = last_message(&cb);
    for public in recipients {
        assert!(
            message.contains(public) && out.stderr.contains(public),
            "restore without a key: the error should name {public}: {message}\n{}",
            out.stderr
        );
    }
    assert_database_not_contacted(&out, "restore without a key");
    scan_texts(&mut texts, &out, Some(&cb));

    // Identity 2 alone restores it too.
    let target = t.fresh(&source.db).await?;
    let out = keyed(t.restore(&target, &store, &key))
        .env("ENCRYPTION_IDENTITY_FILE", &k2.file)
        .run()
        .await?;
    out.assert_ok("restore with identity 2");
    scan_texts(&mut texts, &out, None);
    t.assert_same(source, &target, "restored with identity 2")
        .await?;

    // verify: without a key the stored bytes only; with a key, all the way; a wrong key fails.
    let verify = |identity: Option<&str>| {
        let job = keyed(store.attach(t.job()))
            .env("OPERATION_TYPE", "verify")
            .env("BACKUP_PATH", &key);
        match identity {
            Some(file) => job.env("ENCRYPTION_IDENTITY_FILE", file),
            None => job,
        }
    };
    for (identity, decrypted, says) in [
        (
            None,
            false,
            "the stored bytes were checked but not decrypted",
        ),
        (
            Some(rotation.as_str()),
            true,
            "it decrypts and decompresses to the recorded size",
        ),
    ] {
        let what = format!("verify with {}", identity.unwrap_or("no key"));
        let cb = t.callbacks().await?;
        let out = with_callbacks(verify(identity), &cb, "verify")
            .run()
            .await?;
        out.assert_ok(&what);
        let meta = last_metadata(&cb, &what);
        assert_eq!(meta["verified"], true, "{what}: {meta}");
        assert_eq!(meta["encrypted"], true, "{what}: {meta}");
        assert_eq!(meta["decrypted"], decrypted, "{what}: {meta}");
        assert_eq!(meta["sha256"], manifest["sha256"], "{what}: {meta}");
        assert!(
            last_message(&cb).contains(says) && out.stderr.contains(says),
            "{what}: should say {says:?}: {}",
            last_message(&cb)
        );
        scan_texts(&mut texts, &out, Some(&cb));
    }
    let cb = t.callbacks().await?;
    let out = with_callbacks(verify(Some(other.file.as_str())), &cb, "verify-wrong-key")
        .run()
        .await?;
    check::failed(
        &out,
        exit::INTEGRITY,
        &cb,
        "the key does not match",
        "verify with an unrelated key",
    );
    scan_texts(&mut texts, &out, Some(&cb));

    // The reference tools: exactly the dump tool's output.
    let work = tempfile::tempdir()?;
    let stored = work.path().join("object.age");
    std::fs::write(&stored, &object)?;
    let cli = age_cli_decrypt(&k1.host_file, &stored)?;
    ensure!(
        cli.status.success(),
        "age -d | zstd -d: {}",
        String::from_utf8_lossy(&cli.stderr)
    );
    let plain = cli.stdout;
    assert_eq!(
        plain.len() as u64,
        manifest["raw_bytes"].as_u64().unwrap_or(0),
        "age -d | zstd -d: the plaintext's size and the manifest's raw_bytes"
    );
    let format = manifest["format"].as_str().unwrap_or_default();
    assert_dump_format(&product, format, &plain, "age -d | zstd -d");
    assert!(
        harness::scenario::find(&plain, text.as_bytes()).is_some(),
        "the dump should hold {text:?}, which the stored bytes must not"
    );
    let refused = age_cli_decrypt(&other.host_file, &stored)?;
    assert!(
        !refused.status.success() && refused.stdout.is_empty(),
        "age -d with the unrelated key should fail"
    );

    // A passphrase from a mounted file, uncompressed: only the encryption hides the data.
    let pass_key = format!("{}/sample-passphrase.enc", t.cell().name);
    let cb = t.callbacks().await?;
    let ((backup, seen), target) = {
        let (scan, target) = tokio::join!(
            scanned(with_callbacks(
                keyed(t.backup(&source.db, &store, &pass_key))
                    .env("ENCRYPTION_PASSPHRASE_FILE", &passphrase_file)
                    .env("COMPRESSION", "none"),
                &cb,
                "passphrase-backup",
            )),
            t.fresh(&source.db)
        );
        (scan?, target?)
    };
    backup.assert_ok("passphrase backup");
    scan_texts(&mut texts, &backup, Some(&cb));
    argv.extend(seen);
    let pass_manifest = store.manifest(&pass_key).await?;
    let pass_object = store.get(&pass_key).await?;
    check::encrypted_manifest(
        t.cell(),
        &pass_manifest,
        &pass_key,
        &pass_object,
        "passphrase-backup",
        "none",
        "scrypt",
        &[],
        "passphrase backup",
    );
    check::backup_callbacks(
        &cb,
        "passphrase-backup",
        &pass_manifest,
        "passphrase backup",
    );
    check::age_object(&pass_object, "scrypt", 1, text, "passphrase backup");
    let (bytes, raw) = (
        pass_manifest["bytes"].as_u64().unwrap_or(0),
        pass_manifest["raw_bytes"].as_u64().unwrap_or(0),
    );
    assert!(
        bytes > raw,
        "passphrase backup: uncompressed, the object ({bytes}) is the dump ({raw}) and age's overhead"
    );
    let (restore, seen) = scanned(
        t.restore(&target, &store, &pass_key)
            .env("ENCRYPTION_PASSPHRASE", &passphrase),
    )
    .await?;
    restore.assert_ok("restore with the passphrase");
    scan_texts(&mut texts, &restore, None);
    argv.extend(seen);
    t.assert_same(source, &target, "restored with the passphrase")
        .await?;

    // The secret scan.
    for manifest_key in store
        .keys()
        .await?
        .iter()
        .filter(|k| k.ends_with(".manifest.json"))
    {
        texts.push(String::from_utf8(store.get(manifest_key).await?)?);
    }
    assert!(
        argv.iter().any(|l| l.contains("backup-runner")),
        "the argv scans never saw the runner: {argv:?}"
    );
    let mut secrets = vec![passphrase.clone()];
    for k in [&k1, &k2, &other] {
        secrets.push(k.secret.clone());
        // Bech32 is case-insensitive: a lower-cased key is the same key.
        secrets.push(k.secret.to_lowercase());
        // The part after the prefix, for a key quoted in pieces.
        let rest = &k.secret["AGE-SECRET-KEY-1".len()..];
        secrets.extend([rest.to_string(), rest.to_lowercase()]);
    }
    let (text_count, argv_count) = (texts.len(), argv.len());
    texts.extend(argv);
    check::no_secret(&texts, &secrets, "encryption secret scan");
    store.clear().await?;
    t.log(format!(
        "{} stored for 2 recipients ({} dump, {format}); identities 1 and 2 and a passphrase \
         restore it, an unrelated key exits 8, no key exits 2; age | zstd gives the dump; no \
         secret in {text_count} texts and {argv_count} argv lines; {:.1}s",
        manifest["bytes"],
        manifest["raw_bytes"],
        begun.elapsed().as_secs_f64()
    ));
    Ok(())
}

/// A backup of the large data uncompressed in 5 MiB parts, one in flight, so the upload is
/// long.
fn slow_backup<E: EngineUnderTest>(t: &Ctx<E>, db: &E::Db, store: &Store, key: &str) -> Job {
    t.backup(db, store, key)
        .env("COMPRESSION", "none")
        .env("STORAGE_PART_SIZE_MB", "5")
        .env("STORAGE_UPLOAD_CONCURRENCY", "1")
}

/// SIGTERM to the runner mid-upload: exit 143 well inside a 10 s grace period, the upload
/// aborted, a `failed` callback saying SIGTERM, nothing stored.
async fn sigterm_mid_upload_stops_cleanly<E: EngineUnderTest>(t: &Ctx<E>) -> Result<()> {
    let large = t.large().await?;
    let store = t.s3_store().await?;
    let cb = t.callbacks().await?;
    let job = with_callbacks(slow_backup(t, &large.db, &store, "sigterm"), &cb, "sigterm")
        .start(UPLOAD_STARTED)
        .await?;
    let sent = Instant::now();
    job.signal("TERM")?;
    let out = job.wait().await?;
    let took = sent.elapsed();
    check::failed(&out, exit::SIGTERM, &cb, "SIGTERM", "SIGTERM mid-upload");
    assert!(
        took < Duration::from_secs(10),
        "the runner took {took:?} to stop after SIGTERM"
    );
    assert!(
        out.stderr.contains("aborted the incomplete upload"),
        "{}",
        out.stderr
    );
    store.assert_empty("SIGTERM").await?;
    t.log(format!("stopped {:.1}s after SIGTERM", took.as_secs_f64()));
    Ok(())
}

/// The S3 server frozen mid-upload (`docker pause`: connections accepted, never answered): the
/// part upload times out (3 s per attempt here), the job gives up and aborts, retrying the abort
/// until the store answers again; exit 6, a `failed` callback, and no upload left.
async fn store_frozen_mid_upload_fails_and_leaves_nothing<E: EngineUnderTest>(
    t: &Ctx<E>,
) -> Result<()> {
    let large = t.large().await?;
    let store = t.s3_store().await?;
    let cb = t.callbacks().await?;
    let job = with_callbacks(
        slow_backup(t, &large.db, &store, "frozen").env("STORAGE_TIMEOUT_SECS", "3"),
        &cb,
        "frozen",
    )
    .start(UPLOAD_STARTED)
    .await?;
    let s3 = t.s3().await?;
    let frozen = Instant::now();
    let gave_up = {
        let _paused = Paused::pause(s3.container().id())?;
        wait_for_log(
            job.id(),
            "aborting the incomplete upload failed",
            Duration::from_secs(90),
        )
        .await?;
        frozen.elapsed()
    };
    let back = Instant::now();
    let out = job.wait().await?;
    let ended = back.elapsed();
    check::failed(
        &out,
        exit::STORAGE,
        &cb,
        "storage error",
        "S3 frozen mid-upload",
    );
    store.assert_empty("S3 frozen mid-upload").await?;
    t.log(format!(
        "gave up on the upload {:.1}s after the store froze; exit {} {:.1}s after it was back",
        gave_up.as_secs_f64(),
        out.code,
        ended.as_secs_f64()
    ));
    Ok(())
}

/// Every process's argv inside the job's container, read every 20 ms by a shell loop in the
/// container until the container stops; returns the distinct lines seen.
async fn scan_argv(job: &RunningJob) -> Vec<String> {
    let out = job
        .sh(
            "while :; do for f in /proc/[0-9]*/cmdline; do tr '\\0' ' ' < $f 2>/dev/null; echo; \
             done; sleep 0.02; done",
        )
        .await
        .unwrap_or_default();
    let mut seen: Vec<String> = out
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect();
    seen.sort();
    seen.dedup();
    seen
}

/// A job run with its processes' argv scanned; returns its output and the argv seen.
async fn scanned(job: Job) -> Result<(JobOutput, Vec<String>)> {
    let job = job.start("running ").await?;
    let argv = scan_argv(&job).await;
    Ok((job.wait().await?, argv))
}

/// Backups (in each of the engine's ways) and restores of the large data, with every process's
/// argv in the runner's container read every 20 ms (the scan must see the dump and restore
/// tools, so it could have seen a password): the database passwords and the storage secret key
/// appear in no argv, log, callback (body or headers) or manifest; the callback secret only in
/// the `Authorization` header.
async fn no_secret_in_argv_logs_callbacks_or_manifests<E: EngineUnderTest>(
    t: &Ctx<E>,
) -> Result<()> {
    let large = t.large().await?;
    let store = t.s3_store().await?;
    let cb = t.callbacks().await?;
    let mut secrets = E::secrets(&large.db);
    secrets.push(STORAGE_SECRET.to_string());
    let mut texts = Vec::new();
    let mut argv = Vec::new();
    for variant in E::variants(t.cell()) {
        let key = format!("scan/{}", variant.name);
        let (scan, target) = tokio::join!(
            scanned(with_callbacks(
                t.backup(&large.db, &store, &key).envs(&variant.env),
                &cb,
                &format!("scan-{}-backup", variant.name),
            )),
            t.fresh(&large.db)
        );
        let ((backup, seen), target) = (scan?, target?);
        secrets.extend(E::secrets(&target));
        backup.assert_ok(&format!("{} backup", variant.name));
        assert!(
            seen.iter().any(|l| l.contains(variant.dump_tool)),
            "{}: the argv scan never saw {}: {seen:?}",
            variant.name,
            variant.dump_tool
        );
        texts.extend([backup.stderr, backup.stdout]);
        argv.extend(seen);

        let (restore, seen) = scanned(with_callbacks(
            t.restore(&target, &store, &key),
            &cb,
            &format!("scan-{}-restore", variant.name),
        ))
        .await?;
        restore.assert_ok(&format!("{} restore", variant.name));
        assert!(
            seen.iter().any(|l| l.contains(variant.restore_tool)),
            "{}: the argv scan never saw {}: {seen:?}",
            variant.name,
            variant.restore_tool
        );
        texts.extend([restore.stderr, restore.stdout]);
        argv.extend(seen);
    }
    let keys = store.keys().await?;
    for key in keys.iter().filter(|k| k.ends_with(".manifest.json")) {
        texts.push(String::from_utf8(store.get(key).await?)?);
    }
    ensure!(!keys.is_empty(), "the scan's backups stored nothing");
    let calls = cb.requests();
    for r in &calls {
        texts.push(String::from_utf8_lossy(&r.raw_body).into_owned());
        texts.push(format!("{:?}", r.headers));
    }
    let argv_count = argv.len();
    texts.extend(argv);
    check::no_secret(&texts, &secrets, "scan");
    let bodies: Vec<String> = calls
        .iter()
        .map(|r| String::from_utf8_lossy(&r.raw_body).into_owned())
        .collect();
    check::no_secret(&bodies, &[CALLBACK_SECRET.to_string()], "callback bodies");
    check::signed(&cb, "scan");
    store.clear().await?;
    t.log(format!(
        "{argv_count} distinct argv lines, {} texts, {} callbacks: no secret",
        texts.len(),
        calls.len()
    ));
    Ok(())
}

/// A generous bound on the runner's own peak RSS: the target is 64 MiB (BENCHMARKS.md has the
/// figures); a runner that held the dump would need the dump's ~250 MiB.
const PEAK_RSS_BOUND: u64 = 96 << 20;

/// The large data backed up compressed (the defaults: zstd with its workers, 8 MiB parts, 3 in
/// flight) and uncompressed (every byte of the dump through the parts), then restored: the
/// runner's peak RSS (the `peak_rss_bytes` of its last log line, also in the metadata callback)
/// stays under the bound every time, and the restored data matches.
async fn memory_stays_bounded_on_a_large_dump<E: EngineUnderTest>(t: &Ctx<E>) -> Result<()> {
    let large = t.large().await?;
    let store = t.s3_store().await?;
    let cb = t.callbacks().await?;
    let backups = async {
        let mut peaks = Vec::new();
        for (key, compression) in [("zstd", "zstd"), ("plain", "none")] {
            let out = with_callbacks(
                t.backup(&large.db, &store, key)
                    .env("COMPRESSION", compression),
                &cb,
                key,
            )
            .run()
            .await?;
            out.assert_ok(key);
            let peak = check::peak_rss(&out, key);
            let meta = cb
                .requests()
                .into_iter()
                .rev()
                .find(|r| r.path.ends_with("/metadata"))
                .expect("a metadata callback");
            assert_eq!(meta.body["metadata"]["peak_rss_bytes"], peak, "{key}");
            let raw = meta.body["metadata"]["raw_bytes"].as_u64().unwrap_or(0);
            assert!(raw > 200 << 20, "{key}: the dump is only {raw} bytes");
            assert!(
                peak < PEAK_RSS_BOUND,
                "{key}: the runner peaked at {} MiB backing up a {} MiB dump",
                peak >> 20,
                raw >> 20
            );
            peaks.push(format!(
                "{key} backup {:.1} MiB for {} MiB",
                peak as f64 / 1048576.0,
                raw >> 20
            ));
        }
        anyhow::Ok(peaks)
    };
    let (peaks, target) = tokio::join!(backups, t.fresh(&large.db));
    let (mut peaks, target) = (peaks?, target?);
    let out = t.restore(&target, &store, "plain").run().await?;
    out.assert_ok("restore");
    let peak = check::peak_rss(&out, "restore");
    assert!(
        peak < PEAK_RSS_BOUND,
        "restore: the runner peaked at {} MiB",
        peak >> 20
    );
    peaks.push(format!("restore {:.1} MiB", peak as f64 / 1048576.0));
    t.assert_same(&large, &target, "the restored large data")
        .await?;
    store.clear().await?;
    t.log(format!("peak RSS: {}", peaks.join(", ")));
    Ok(())
}

/// The database server killed mid-dump: the dump tool's failure is the job's (exit 7, a
/// `failed` callback naming the failed tool), never a short backup reported good; nothing
/// stored.
async fn database_killed_mid_dump_fails_and_leaves_nothing<E: EngineUnderTest>(
    t: &Ctx<E>,
) -> Result<()> {
    let large = t.own_large().await?;
    let store = t.s3_store().await?;
    let cb = t.callbacks().await?;
    let job = with_callbacks(slow_backup(t, &large.db, &store, "killed"), &cb, "killed")
        .start(UPLOAD_STARTED)
        .await?;
    docker_cli(&["kill", E::container_name(&large.db)])?;
    let out = job.wait().await?;
    check::failed(
        &out,
        exit::TOOL,
        &cb,
        " failed (",
        "database killed mid-dump",
    );
    store.assert_empty("database killed mid-dump").await?;
    let calls = cb.requests();
    let message = calls.last().map(|r| r.body["message"].clone());
    t.log(format!(
        "exit {}: {}",
        out.code,
        message.unwrap_or_default()
    ));
    Ok(())
}

/// Where the catalog scenario's jobs keep their backups: keys derived under this prefix.
const CATALOG_PREFIX: &str = "fleet/nightly";

/// A catalog operation (`list`, `prune`, `check`) on `store` under [`CATALOG_PREFIX`], over the
/// backups of `database`. It needs no database variables.
fn catalog_job<E: EngineUnderTest>(t: &Ctx<E>, store: &Store, op: &str, database: &str) -> Job {
    store
        .attach(t.job())
        .env("OPERATION_TYPE", op)
        .env("STORAGE_PREFIX", CATALOG_PREFIX)
        .env("SOURCE_DB_NAME", database)
}

/// The `metadata` of the last `/metadata` callback.
fn last_metadata(cb: &CallbackReceiver, what: &str) -> Value {
    cb.requests()
        .into_iter()
        .rev()
        .find(|r| r.path.ends_with("/metadata"))
        .unwrap_or_else(|| panic!("{what}: no metadata callback"))
        .body["metadata"]
        .clone()
}

/// The message of the last status callback.
fn last_message(cb: &CallbackReceiver) -> String {
    cb.requests()
        .into_iter()
        .rev()
        .find(|r| !r.path.ends_with("/metadata"))
        .and_then(|r| r.body["message"].as_str().map(str::to_string))
        .unwrap_or_default()
}

/// One backup of the catalog scenario: its derived key, its manifest, the marker it holds and
/// when its job ran.
struct Marked {
    key: String,
    manifest: Value,
    marker: String,
    started: Instant,
    ended: Instant,
}

/// Sets the marker of `db` to `v<n>`, then backs it up with a derived key under
/// [`CATALOG_PREFIX`] (no `BACKUP_PATH`) as job `catalog-<n>`; the manifest is checked against
/// the stored object and the callbacks.
async fn backup_marked<E: EngineUnderTest>(
    t: &Ctx<E>,
    db: &E::Db,
    store: &Store,
    n: u32,
) -> Result<Marked> {
    let marker = format!("v{n}");
    E::set_marker(db, &marker).await?;
    let job_id = format!("catalog-{n}");
    let cb = t.callbacks().await?;
    let started = Instant::now();
    let out = with_callbacks(
        store
            .attach(t.job())
            .envs(&E::env(t.cell(), db))
            .env("STORAGE_PREFIX", CATALOG_PREFIX),
        &cb,
        &job_id,
    )
    .run()
    .await?;
    let ended = Instant::now();
    out.assert_ok(&job_id);
    let key = last_metadata(&cb, &job_id)["object_key"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        key.starts_with(&format!("{CATALOG_PREFIX}/")) && key.contains(&job_id),
        "{job_id}: the derived key {key:?} should be under {CATALOG_PREFIX}/ and name the job"
    );
    let manifest = store.manifest(&key).await?;
    let object = store.get(&key).await?;
    check::manifest(t.cell(), &manifest, &key, &object, &job_id, &job_id);
    check::backup_callbacks(&cb, &job_id, &manifest, &job_id);
    Ok(Marked {
        key,
        manifest,
        marker,
        started,
        ended,
    })
}

/// What `list` printed on stdout: the complete backups, then what is not a backup.
struct Listing {
    backups: Vec<Value>,
    not_backups: Vec<Value>,
}

impl Listing {
    fn keys(&self) -> Vec<String> {
        self.backups
            .iter()
            .map(|b| b["object_key"].as_str().unwrap_or_default().to_string())
            .collect()
    }

    /// (key, reason) of each not-a-backup line.
    fn flaws(&self) -> Vec<(String, String)> {
        self.not_backups
            .iter()
            .map(|n| {
                (
                    n["key"].as_str().unwrap_or_default().to_string(),
                    n["reason"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect()
    }
}

/// Runs `list` for `database`: exit 0, one JSON object per stdout line, the backups before
/// anything that is not a backup, and the same two lists in the signed `/metadata` callback.
async fn list<E: EngineUnderTest>(
    t: &Ctx<E>,
    store: &Store,
    database: &str,
    what: &str,
) -> Result<Listing> {
    let cb = t.callbacks().await?;
    let out = with_callbacks(catalog_job(t, store, "list", database), &cb, "list")
        .run()
        .await?;
    out.assert_ok(what);
    assert_eq!(
        cb.statuses(),
        ["running", "metadata", "success"],
        "{what}: callbacks"
    );
    check::signed(&cb, what);
    let mut listing = Listing {
        backups: Vec::new(),
        not_backups: Vec::new(),
    };
    for line in out.stdout.lines().filter(|l| !l.trim().is_empty()) {
        let v: Value = serde_json::from_str(line)
            .with_context(|| format!("{what}: a line of the list is not JSON: {line}"))?;
        if v["kind"] == "not_a_backup" {
            listing.not_backups.push(v);
        } else {
            assert!(
                listing.not_backups.is_empty(),
                "{what}: a backup listed after what is not a backup:\n{}",
                out.stdout
            );
            listing.backups.push(v);
        }
    }
    let meta = last_metadata(&cb, what);
    assert_eq!(
        meta["backups"],
        Value::Array(listing.backups.clone()),
        "{what}: the callback's backups and stdout's"
    );
    assert_eq!(
        meta["not_backups"],
        Value::Array(listing.not_backups.clone()),
        "{what}: the callback's not-backups and stdout's"
    );
    Ok(listing)
}

/// Restores `BACKUP_PATH=latest` of `database` into a new empty target: exit 0, the log names
/// `expected`'s key as the choice, and the target holds `expected`'s marker.
async fn restore_latest<E: EngineUnderTest>(
    t: &Ctx<E>,
    near: &E::Db,
    store: &Store,
    database: &str,
    expected: &Marked,
    what: &str,
) -> Result<()> {
    let target = t.fresh(near).await?;
    let out = store
        .attach(t.job())
        .envs(&E::env(t.cell(), &target))
        .env("OPERATION_TYPE", "restore")
        .env("BACKUP_PATH", "latest")
        .env("STORAGE_PREFIX", CATALOG_PREFIX)
        .env("SOURCE_DB_NAME", database)
        .run()
        .await?;
    out.assert_ok(what);
    let chose = format!("BACKUP_PATH=latest chose {}", expected.key);
    assert!(
        out.stderr.contains(&chose),
        "{what}: the log should say {chose:?}:\n{}",
        out.stderr
    );
    assert_eq!(
        E::marker(&target).await?,
        expected.marker,
        "{what}: the marker restored"
    );
    Ok(())
}

/// A `prune` keeping the last `keep_last` backups of `database`, with `extra` variables.
async fn prune<E: EngineUnderTest>(
    t: &Ctx<E>,
    store: &Store,
    database: &str,
    keep_last: u32,
    extra: &[(&str, String)],
    what: &str,
) -> Result<(JobOutput, CallbackReceiver)> {
    let cb = t.callbacks().await?;
    let mut job = catalog_job(t, store, "prune", database).env("KEEP_LAST", keep_last.to_string());
    for (k, v) in extra {
        job = job.env(k, v.clone());
    }
    let out = with_callbacks(job, &cb, what).run().await?;
    Ok((out, cb))
}

/// The `object_key`s (or `key`s) of a list in a prune report.
fn report_keys(report: &Value, list: &str) -> Vec<String> {
    report[list]
        .as_array()
        .unwrap_or_else(|| panic!("the prune report has no {list}: {report}"))
        .iter()
        .map(|e| {
            e.get("object_key")
                .or_else(|| e.get("key"))
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        })
        .collect()
}

/// Panics unless a prune report of `KEEP_LAST=2` over `[k3, k2, k1]` with `k4` (an object
/// without a manifest, younger than the grace period) keeps k3 and k2 by the rule, deletes k1,
/// and leaves k4 for the grace period.
fn assert_keep_two(report: &Value, keys: &[String], dry_run: bool, what: &str) {
    let [k1, k2, k3, k4] = [0, 1, 2, 3].map(|i| keys[i].as_str());
    assert_eq!(report["dry_run"], dry_run, "{what}: {report}");
    assert_eq!(report_keys(report, "kept"), [k3, k2], "{what}: kept");
    for kept in report["kept"].as_array().into_iter().flatten() {
        let reasons = kept["reasons"].as_array().cloned().unwrap_or_default();
        assert!(
            reasons.iter().any(|r| r == "last"),
            "{what}: {} should be kept by KEEP_LAST: {reasons:?}",
            kept["object_key"]
        );
    }
    assert_eq!(report_keys(report, "deleted"), [k1], "{what}: deleted");
    assert_eq!(
        report_keys(report, "cleaned"),
        Vec::<String>::new(),
        "{what}"
    );
    assert_eq!(report_keys(report, "left"), [k4], "{what}: left");
    let left = &report["left"][0];
    assert_eq!(left["reason"], "no_manifest", "{what}: {left}");
    assert!(
        left["why"]
            .as_str()
            .unwrap_or_default()
            .contains("PRUNE_GRACE_PERIOD"),
        "{what}: {left}"
    );
    assert_eq!(report["failures"], serde_json::json!([]), "{what}");
}

/// What `<n>s`, `<n>m`, `<n>h` or `<n>d` old (the runner's rounding down) allows, in seconds.
fn age_range(text: &str) -> Option<(f64, f64)> {
    let (number, unit) = text.split_at(text.len().checked_sub(1)?);
    let n: f64 = number.parse().ok()?;
    let (scale, step) = match unit {
        "s" => (1.0, 1.0),
        "m" => (60.0, 60.0),
        "h" => (3600.0, 360.0),
        "d" => (86400.0, 8640.0),
        _ => return None,
    };
    Some((n * scale, n * scale + step))
}

/// The catalog over real backups. Four backups of a database with a marker changed between
/// them, keys derived under a prefix: `list` shows them newest first with the manifests'
/// fields; `BACKUP_PATH=latest` restores the newest marker. With the newest backup's manifest
/// removed, `list` reports that object as not a backup and `latest` restores the one before.
/// `KEEP_LAST=2` as a dry run changes nothing and reports the plan; for real it keeps the two
/// newest complete backups (the manifest-less object counts for nothing and is left, being
/// younger than the grace period) and deletes the third. A prune whose object deletions the
/// store refuses (a proxy answers them 500) exits 6 having deleted only the manifest: no
/// manifest is left pointing at nothing, every listed backup's object matches its checksum, and
/// `latest` still restores. `check` passes within `CHECK_MAX_AGE=1h`, and fails with exit 10
/// and the backup's age at `1s`, and for a database without backups.
async fn catalog_lists_restores_latest_prunes_and_checks<E: EngineUnderTest>(
    t: &Ctx<E>,
) -> Result<()> {
    let begun = Instant::now();
    let sample = t.sample().await?;
    let (source, store) = tokio::join!(t.fresh(&sample.db), t.s3_store());
    let (source, store) = (source?, store?);

    let mut taken = Vec::new();
    for n in 1..=4 {
        if n > 1 {
            // Derived keys and taken_at have one-second resolution.
            tokio::time::sleep(Duration::from_millis(1100)).await;
        }
        taken.push(backup_marked(t, &source, &store, n).await?);
    }
    let database = taken[0].manifest["database"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    ensure!(!database.is_empty(), "the manifest names no database");
    for pair in taken.windows(2) {
        let second = |m: &Marked| {
            m.manifest["started_at"]
                .as_str()
                .unwrap_or_default()
                .chars()
                .take(19)
                .collect::<String>()
        };
        assert!(
            second(&pair[0]) < second(&pair[1]),
            "taken in the same second: {} and {}",
            pair[0].key,
            pair[1].key
        );
        assert_eq!(pair[1].manifest["database"], database.as_str());
    }
    let keys: Vec<String> = taken.iter().map(|m| m.key.clone()).collect();
    let (k1, k2, k3, k4) = (
        keys[0].as_str(),
        keys[1].as_str(),
        keys[2].as_str(),
        keys[3].as_str(),
    );
    let manifest_of = |k: &str| format!("{k}.manifest.json");
    let index = format!("{CATALOG_PREFIX}/.backup-runner/catalog.json");

    // The four, newest first, each line what its manifest says.
    let listing = list(t, &store, &database, "list of four").await?;
    assert_eq!(listing.keys(), [k4, k3, k2, k1], "list order");
    for (line, m) in listing.backups.iter().zip(taken.iter().rev()) {
        let manifest = &m.manifest;
        assert_eq!(line["manifest_key"], manifest_of(&m.key), "{line}");
        for field in [
            "bytes",
            "raw_bytes",
            "sha256",
            "engine",
            "database",
            "server_version",
            "job_id",
            "expires_at",
        ] {
            assert_eq!(line[field], manifest[field], "list: {field} of {}", m.key);
        }
        assert_eq!(
            line["taken_at"], manifest["started_at"],
            "taken_at of {}",
            m.key
        );
    }
    assert!(
        listing.not_backups.is_empty(),
        "nothing else is under the prefix: {:?}",
        listing.not_backups
    );
    restore_latest(t, &source, &store, &database, &taken[3], "latest of four").await?;

    // The newest backup damaged: its manifest gone.
    store.delete(&manifest_of(k4)).await?;
    let listing = list(t, &store, &database, "list without the newest manifest").await?;
    assert_eq!(
        listing.keys(),
        [k3, k2, k1],
        "list without the newest manifest"
    );
    assert_eq!(
        listing.flaws(),
        [(k4.to_string(), "no_manifest".to_string())],
        "the manifest-less newest object"
    );
    restore_latest(
        t,
        &source,
        &store,
        &database,
        &taken[2],
        "latest without the newest manifest",
    )
    .await?;

    // KEEP_LAST=2, first as a dry run.
    let before = store.keys().await?;
    let (out, cb) = prune(
        t,
        &store,
        &database,
        2,
        &[("PRUNE_DRY_RUN", "true".into())],
        "dry-run prune",
    )
    .await?;
    out.assert_ok("dry-run prune");
    assert_eq!(cb.statuses(), ["running", "metadata", "success"], "dry run");
    assert_keep_two(
        &last_metadata(&cb, "dry run")["prune"],
        &keys,
        true,
        "dry run",
    );
    assert!(
        last_message(&cb).contains("would delete 1 backups"),
        "dry run: {}",
        last_message(&cb)
    );
    assert_eq!(store.keys().await?, before, "a dry run must delete nothing");

    let (out, cb) = prune(t, &store, &database, 2, &[], "prune").await?;
    out.assert_ok("prune");
    assert_keep_two(&last_metadata(&cb, "prune")["prune"], &keys, false, "prune");
    let mut expected = vec![
        index.clone(),
        k2.to_string(),
        manifest_of(k2),
        k3.to_string(),
        manifest_of(k3),
        k4.to_string(),
    ];
    expected.sort();
    assert_eq!(store.keys().await?, expected, "after KEEP_LAST=2");
    let listing = list(t, &store, &database, "list after the prune").await?;
    assert_eq!(listing.keys(), [k3, k2], "list after the prune");
    assert_eq!(
        listing.flaws(),
        [(k4.to_string(), "no_manifest".to_string())]
    );

    // A prune stopped between a manifest and its object: the store refuses object deletions.
    let s3 = t.s3().await?;
    let port = s3.container().get_host_port_ipv4(5000.tcp()).await?;
    let upstream: SocketAddr = format!("127.0.0.1:{port}").parse()?;
    let proxy = TcpProxy::start("0.0.0.0", upstream).await?;
    // Multi-object deletes (`POST /<bucket>?delete`) are refused too, so the runner falls back
    // to one DELETE per key, which the store then refuses for objects.
    proxy.fail_requests(
        "POST",
        |path| path.trim_matches('/').split('/').count() == 1,
        501,
    );
    proxy.fail_requests("DELETE", |path| !path.ends_with(".manifest.json"), 500);
    let (out, cb) = prune(
        t,
        &store,
        &database,
        1,
        &[(
            "STORAGE_ENDPOINT",
            format!("http://{HOST_ALIAS}:{}", proxy.port()),
        )],
        "interrupted prune",
    )
    .await?;
    assert!(proxy.failed() > 0, "the proxy refused no deletion");
    check::failed(
        &out,
        exit::STORAGE,
        &cb,
        &format!("deleted the manifest of {k2} but not the object"),
        "interrupted prune",
    );
    let mut expected = vec![
        index,
        k2.to_string(),
        k3.to_string(),
        manifest_of(k3),
        k4.to_string(),
    ];
    expected.sort();
    assert_eq!(
        store.keys().await?,
        expected,
        "after the interrupted prune: the manifest goes first"
    );
    let listing = list(t, &store, &database, "list after the interrupted prune").await?;
    assert_eq!(listing.keys(), [k3], "list after the interrupted prune");
    assert_eq!(
        listing.flaws(),
        [
            (k2.to_string(), "no_manifest".to_string()),
            (k4.to_string(), "no_manifest".to_string())
        ],
        "no manifest may be left without its object"
    );
    for line in &listing.backups {
        let key = line["object_key"].as_str().unwrap_or_default();
        let object = store.get(key).await?;
        assert_eq!(line["bytes"], object.len() as u64, "{key}");
        assert_eq!(
            line["sha256"],
            hex::encode(Sha256::digest(&object)),
            "{key}: a listed backup must be good"
        );
    }
    restore_latest(
        t,
        &source,
        &store,
        &database,
        &taken[2],
        "latest after the interrupted prune",
    )
    .await?;

    // check: fresh within an hour, stale after a second, stale without any backup.
    let cb = t.callbacks().await?;
    let check_started = Instant::now();
    let out = with_callbacks(
        catalog_job(t, &store, "check", &database).env("CHECK_MAX_AGE", "1h"),
        &cb,
        "check-fresh",
    )
    .run()
    .await?;
    out.assert_ok("check within 1h");
    let report = &last_metadata(&cb, "check within 1h")["check"];
    assert_eq!(report["fresh"], true, "{report}");
    assert_eq!(report["max_age_seconds"], 3600, "{report}");
    assert_eq!(report["newest"]["object_key"], k3, "{report}");
    assert!(
        last_message(&cb).starts_with("fresh: "),
        "{}",
        last_message(&cb)
    );
    let age = report["age_seconds"].as_f64().unwrap_or(-1.0);
    let (low, high) = (
        check_started.duration_since(taken[2].ended).as_secs_f64() - 1.0,
        taken[2].started.elapsed().as_secs_f64() + 1.0,
    );
    assert!(
        (low..=high).contains(&age),
        "check within 1h: age {age}s, expected {low:.1}..{high:.1}"
    );

    tokio::time::sleep(Duration::from_secs(2)).await;
    let cb = t.callbacks().await?;
    let check_started = Instant::now();
    let out = with_callbacks(
        catalog_job(t, &store, "check", &database).env("CHECK_MAX_AGE", "1s"),
        &cb,
        "check-stale",
    )
    .run()
    .await?;
    check::failed(&out, exit::STALE, &cb, "backups are stale", "check at 1s");
    let message = last_message(&cb);
    assert!(
        message.contains(k3) && message.contains("CHECK_MAX_AGE=1s"),
        "check at 1s: {message}"
    );
    let age_text = message
        .split(" old (")
        .next()
        .and_then(|m| m.rsplit(' ').next())
        .unwrap_or_default();
    let (age_low, age_high) = age_range(age_text)
        .unwrap_or_else(|| panic!("check at 1s: no age in the message: {message}"));
    let (low, high) = (
        check_started.duration_since(taken[2].ended).as_secs_f64() - 1.0,
        taken[2].started.elapsed().as_secs_f64() + 1.0,
    );
    assert!(
        age_low <= high && age_high >= low && age_low >= 2.0,
        "check at 1s: the message says {age_text} old, expected {low:.1}..{high:.1}s: {message}"
    );
    assert!(
        out.stderr.contains(&format!("is {age_text} old")),
        "check at 1s: the log should give the age:\n{}",
        out.stderr
    );

    let cb = t.callbacks().await?;
    let out = with_callbacks(
        catalog_job(t, &store, "check", "no_such_database").env("CHECK_MAX_AGE", "1h"),
        &cb,
        "check-missing",
    )
    .run()
    .await?;
    check::failed(
        &out,
        exit::STALE,
        &cb,
        "no complete backup",
        "check without backups",
    );

    t.log(format!(
        "4 backups of {database:?}; list, latest, dry run, KEEP_LAST=2, a prune refused {} \
         deletions (exit 6, manifest first), check fresh/stale ({age_text} old) in {:.1}s",
        proxy.failed(),
        begun.elapsed().as_secs_f64()
    ));
    Ok(())
}

/// The value of `name` in the Pushgateway group of `labels`, failing when it is not there.
async fn pushed(pgw: &Pushgateway, name: &str, labels: &[(&str, &str)]) -> Result<f64> {
    pgw.value(name, labels)
        .await?
        .with_context(|| format!("{name} {labels:?} was not pushed"))
}

/// Every stderr line of a `LOG_FORMAT=json` job is one JSON object with the fields log platforms
/// map (`timestamp`, `severity`, `message`, `phase`), and the job's lines carry `job_id`,
/// `engine` and `operation`. Returns the phases seen, in order.
fn json_log_phases(out: &JobOutput, job_id: &str, engine: &str, what: &str) -> Vec<String> {
    let mut phases: Vec<String> = Vec::new();
    for line in out.stderr.lines().filter(|l| !l.trim().is_empty()) {
        let v: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("{what}: a log line that is not JSON ({e}): {line}"));
        let ts = v["timestamp"].as_str().unwrap_or_default();
        assert!(
            chrono::DateTime::parse_from_rfc3339(ts).is_ok(),
            "{what}: timestamp {ts:?} in {line}"
        );
        assert!(
            ["DEBUG", "INFO", "WARNING", "ERROR"].contains(&v["severity"].as_str().unwrap_or("")),
            "{what}: severity in {line}"
        );
        assert!(v["message"].is_string(), "{what}: message in {line}");
        let phase = v["phase"].as_str().unwrap_or_default().to_string();
        assert!(!phase.is_empty(), "{what}: phase in {line}");
        if phase != "config" {
            assert_eq!(v["job_id"], job_id, "{what}: {line}");
            assert_eq!(v["engine"], engine, "{what}: {line}");
            assert_eq!(v["operation"], "backup", "{what}: {line}");
        }
        if phases.last() != Some(&phase) {
            phases.push(phase);
        }
    }
    phases
}

/// Metrics in a real Pushgateway, healthchecks.io-style pings and JSON logs, for a success and
/// for a failure (a wrong password): the success's metrics match its manifest and the ping pair
/// shares a run id; the failure pushes its exit code into the same group while the last success
/// stays, and pings `/fail` with the exit code and the reason but not the password. A
/// Pushgateway that is down and a ping receiver answering 500 change nothing in the outcome.
async fn metrics_pings_and_json_logs_report_success_and_failure<E: EngineUnderTest>(
    t: &Ctx<E>,
) -> Result<()> {
    let source = t.sample().await?;
    let store = t.s3_store().await?;
    let pgw = Pushgateway::start().await?;
    let pings = t.callbacks().await?;
    let cell = t.cell();
    let job_name = format!("nightly-{}", cell.name);
    let pgw_url = pgw.url_via(HOST_ALIAS);
    let observed = |job: Job, job_id: &str| {
        job.env("JOB_ID", job_id)
            .env("LOG_FORMAT", "json")
            .env("METRICS_PUSHGATEWAY_URL", pgw_url.as_str())
            .env("METRICS_JOB_NAME", &job_name)
            .env(
                "HEALTHCHECK_URL",
                format!("http://{HOST_ALIAS}:{}/ping/0b5e-check", pings.port()),
            )
    };
    let before = chrono::Utc::now().timestamp() as f64;
    let ok = observed(t.backup(&source.db, &store, "observed.zst"), "observed-ok")
        .run()
        .await?;
    ok.assert_ok("observed backup");
    let manifest = store.manifest("observed.zst").await?;
    let database = manifest["database"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let labels = [
        ("job", job_name.as_str()),
        ("engine", E::ENGINE),
        ("database", database.as_str()),
        ("operation", "backup"),
    ];
    let after = chrono::Utc::now().timestamp() as f64 + 1.0;
    let success_at = pushed(
        &pgw,
        "backup_runner_last_success_timestamp_seconds",
        &labels,
    )
    .await?;
    assert!((before..=after).contains(&success_at), "{success_at}");
    for (name, expected) in [
        ("backup_runner_last_exit_code", 0.0),
        ("backup_runner_job_running", 0.0),
        (
            "backup_runner_last_bytes",
            manifest["bytes"].as_f64().unwrap(),
        ),
        (
            "backup_runner_last_raw_bytes",
            manifest["raw_bytes"].as_f64().unwrap(),
        ),
    ] {
        assert_eq!(pushed(&pgw, name, &labels).await?, expected, "{name}");
    }
    let started_at = pushed(&pgw, "backup_runner_last_start_timestamp_seconds", &labels).await?;
    assert!(before <= started_at && started_at <= success_at);
    assert!(pushed(&pgw, "backup_runner_last_duration_seconds", &labels).await? > 0.0);
    assert!(pushed(&pgw, "backup_runner_last_peak_rss_bytes", &labels).await? > 1e6);
    let got = pings.wait_for(2, Duration::from_secs(10)).await?;
    assert_eq!(got[0].path, "/ping/0b5e-check/start", "{got:?}");
    assert_eq!(got[1].path, "/ping/0b5e-check", "{got:?}");
    let rid = got[0].query.clone().unwrap_or_default();
    assert!(rid.starts_with("rid=") && rid.len() == 40, "{rid}");
    assert_eq!(got[1].query.as_deref(), Some(rid.as_str()));
    let body = String::from_utf8_lossy(&got[1].raw_body).into_owned();
    assert!(body.contains("backup completed"), "{body}");
    let phases = json_log_phases(&ok, "observed-ok", E::ENGINE, "observed backup");
    for phase in ["start", "preflight", "done"] {
        assert!(phases.iter().any(|p| p == phase), "{phases:?}");
    }

    let wrong = "not-the-password-4242";
    let denied = observed(
        store
            .attach(t.job())
            .envs(&E::wrong_password(cell, &source.db, wrong))
            .env("BACKUP_PATH", "observed-denied.zst"),
        "observed-denied",
    )
    .run()
    .await?;
    denied.assert_code(exit::DB_REFUSED, "wrong password");
    assert_eq!(
        pushed(&pgw, "backup_runner_last_exit_code", &labels).await?,
        exit::DB_REFUSED as f64
    );
    assert_eq!(
        pushed(
            &pgw,
            "backup_runner_last_success_timestamp_seconds",
            &labels
        )
        .await?,
        success_at,
        "a failure keeps the last success"
    );
    assert!(pushed(&pgw, "backup_runner_last_run_timestamp_seconds", &labels).await? >= success_at);
    assert_eq!(
        pgw.series("backup_runner_last_exit_code")
            .await?
            .iter()
            .filter(|s| s.labels.get("job") == Some(&job_name))
            .count(),
        1,
        "the failure replaced the group's series instead of adding one"
    );
    let got = pings.wait_for(4, Duration::from_secs(10)).await?;
    assert_eq!(got[2].path, "/ping/0b5e-check/start");
    assert_eq!(got[3].path, "/ping/0b5e-check/fail");
    assert_ne!(got[2].query, got[0].query, "each run has its own rid");
    let body = String::from_utf8_lossy(&got[3].raw_body).into_owned();
    assert!(body.starts_with("exit code 3: "), "{body}");
    assert!(body.contains(E::DENIED), "{body}");
    assert!(!body.contains(wrong), "{body}");
    check::no_secret(
        std::slice::from_ref(&denied.stderr),
        &[wrong.to_string()],
        "denied",
    );
    let phases = json_log_phases(&denied, "observed-denied", E::ENGINE, "denied backup");
    assert_eq!(
        phases.last().map(String::as_str),
        Some("failed"),
        "{phases:?}"
    );

    // A job that cannot even start (a bad setting) is a failure the observers hear of.
    let misconfigured = observed(t.backup(&source.db, &store, "never.zst"), "observed-config")
        .env("COMPRESSION", "brotli")
        .run()
        .await?;
    misconfigured.assert_code(exit::CONFIG, "a bad setting");
    assert_eq!(
        pushed(&pgw, "backup_runner_last_exit_code", &labels).await?,
        exit::CONFIG as f64
    );
    let got = pings.wait_for(5, Duration::from_secs(10)).await?;
    assert_eq!(got[4].path, "/ping/0b5e-check/fail");
    let body = String::from_utf8_lossy(&got[4].raw_body).into_owned();
    assert!(
        body.starts_with("exit code 2: ") && body.contains("COMPRESSION"),
        "{body}"
    );

    // Nobody listening: the Pushgateway is stopped, the ping receiver answers 500.
    drop(pgw);
    pings.fail_next(100, 500);
    let unheard = observed(t.backup(&source.db, &store, "unheard.zst"), "unheard")
        .run()
        .await?;
    unheard.assert_ok("a backup nobody hears of");
    for expected in ["metrics not pushed", "health ping"] {
        assert!(unheard.stderr.contains(expected), "{}", unheard.stderr);
    }
    t.log(format!(
        "pushed and read back: success at {success_at}, then exit 3 with the success kept; pings start/success and start/fail; JSON phases {phases:?}"
    ));
    Ok(())
}
