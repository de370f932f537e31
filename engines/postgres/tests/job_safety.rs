//! What a job must never do to the backups it writes, through the real binary against a real
//! PostgreSQL server and a real S3 server (moto), with a TCP proxy between the runner and the
//! store for faults on the wire: report success for a part the store received damaged, replace
//! or strip a good backup at a reused key, let two jobs writing one key both succeed, overrun the
//! grace period when stopped with a frozen store, or hang on a dump that stopped sending.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::{Duration, Instant};

use harness::proxy::TcpProxy;
use harness::{CallbackReceiver, PgServer, S3Server};
use tokio::io::AsyncReadExt;

const BIN: &str = env!("CARGO_BIN_EXE_backup-runner-postgres");
const BUCKET: &str = "backups";

/// A running job; its stderr is collected as it comes.
struct Job {
    child: tokio::process::Child,
    stderr: tokio::task::JoinHandle<String>,
}

struct Done {
    code: i32,
    stderr: String,
}

impl Job {
    fn start(vars: &[(&str, String)]) -> Job {
        let mut cmd = tokio::process::Command::new(BIN);
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for (k, v) in vars {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("runner starts");
        let mut pipe = child.stderr.take().unwrap();
        let stderr = tokio::spawn(async move {
            let mut out = Vec::new();
            let _ = pipe.read_to_end(&mut out).await;
            String::from_utf8_lossy(&out).into_owned()
        });
        Job { child, stderr }
    }

    fn terminate(&self) {
        let pid = self.child.id().expect("still running") as i32;
        // SAFETY: sending a signal to a child process this test started.
        unsafe { libc::kill(pid, libc::SIGTERM) };
    }

    async fn wait(mut self, limit: Duration) -> Done {
        let status = tokio::time::timeout(limit, self.child.wait())
            .await
            .expect("the runner did not finish in time")
            .unwrap();
        Done {
            code: status.code().unwrap_or(-1),
            stderr: self.stderr.await.unwrap(),
        }
    }
}

async fn run(vars: &[(&str, String)]) -> Done {
    Job::start(vars).wait(Duration::from_secs(300)).await
}

fn db_vars(pg: &PgServer, db: &str) -> Vec<(&'static str, String)> {
    vec![
        ("DB_HOST", pg.host().into()),
        ("DB_PORT", pg.port().to_string()),
        ("DB_NAME", db.into()),
        ("DB_USERNAME", pg.superuser().into()),
        ("DB_PASSWORD", pg.password().into()),
    ]
}

fn s3_vars(endpoint: String, s3: &S3Server) -> Vec<(&'static str, String)> {
    vec![
        ("STORAGE_TYPE", "minio".into()),
        ("STORAGE_ENDPOINT", endpoint),
        ("STORAGE_BUCKET", BUCKET.into()),
        ("STORAGE_REGION", "us-east-1".into()),
        ("STORAGE_ACCESS_KEY_ID", s3.access_key().into()),
        ("STORAGE_SECRET_ACCESS_KEY", s3.secret_key().into()),
    ]
}

fn vars(parts: &[Vec<(&'static str, String)>]) -> Vec<(&'static str, String)> {
    parts.concat()
}

/// A PostgreSQL server with database `shop` holding about 28 MB of hex text (with
/// `COMPRESSION=none`, four 8 MiB parts), and an S3 server with the bucket.
async fn servers() -> (PgServer, S3Server) {
    let (pg, s3) = (
        PgServer::start().await.unwrap(),
        S3Server::start().await.unwrap(),
    );
    s3.create_bucket(BUCKET).await.unwrap();
    pg.psql("postgres", "CREATE DATABASE shop;").await.unwrap();
    pg.psql(
        "shop",
        "CREATE TABLE big AS SELECT g AS id, md5(g::text) || md5((g * 7)::text) AS v \
         FROM generate_series(1, 400000) g;",
    )
    .await
    .unwrap();
    (pg, s3)
}

async fn proxy_to(s3: &S3Server) -> TcpProxy {
    let upstream: SocketAddr = format!("127.0.0.1:{}", s3.port()).parse().unwrap();
    TcpProxy::start("127.0.0.1", upstream).await.unwrap()
}

async fn assert_bucket_empty(s3: &S3Server, what: &str) {
    assert_eq!(
        s3.list_keys(BUCKET).await.unwrap(),
        Vec::<String>::new(),
        "{what}: objects left"
    );
    assert_eq!(
        s3.list_multipart_uploads(BUCKET).await.unwrap(),
        Vec::<(String, String)>::new(),
        "{what}: multipart uploads left"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_part_damaged_on_the_way_to_the_store_fails_the_backup_and_is_not_kept() {
    let (pg, s3) = servers().await;
    let proxy = proxy_to(&s3).await;
    // 12 MiB into what the runner sends: inside the second part's body.
    proxy.flip_byte_at(12 << 20);
    let out = run(&vars(&[
        db_vars(&pg, "shop"),
        s3_vars(proxy.endpoint(), &s3),
        vec![("COMPRESSION", "none".into())],
    ]))
    .await;
    assert!(proxy.flipped(), "the proxy never flipped a byte");
    assert_eq!(
        out.code, 6,
        "a damaged part must fail the backup:\n{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("corrupted on the way")
            || out.stderr.contains("BadDigest")
            || out.stderr.contains("InvalidDigest"),
        "{}",
        out.stderr
    );
    assert_bucket_empty(&s3, "after a damaged part").await;

    // The same backup through an honest link succeeds, checked the same way.
    let out = run(&vars(&[
        db_vars(&pg, "shop"),
        s3_vars(s3.endpoint(), &s3),
        vec![("COMPRESSION", "none".into())],
    ]))
    .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reused_backup_path_never_loses_the_good_backup() {
    let (pg, s3) = servers().await;
    let key = "nightly/shop.pgdump.zst";
    let manifest = format!("{key}.manifest.json");
    let base = vars(&[
        db_vars(&pg, "shop"),
        s3_vars(s3.endpoint(), &s3),
        vec![
            ("BACKUP_PATH", key.into()),
            ("STORAGE_TIMEOUT_SECS", "3".into()),
        ],
    ]);
    let first = run(&base).await;
    assert_eq!(first.code, 0, "{}", first.stderr);
    let (object, described) = (
        s3.get(BUCKET, key).await.unwrap(),
        s3.get(BUCKET, &manifest).await.unwrap(),
    );

    // Without BACKUP_OVERWRITE the backup there is kept, and the job says how to proceed.
    let again = run(&base).await;
    assert_eq!(again.code, 9, "{}", again.stderr);
    assert!(
        again.stderr.contains("BACKUP_OVERWRITE=true"),
        "{}",
        again.stderr
    );
    assert_eq!(s3.get(BUCKET, key).await.unwrap(), object);
    assert_eq!(s3.get(BUCKET, &manifest).await.unwrap(), described);

    // Allowed to overwrite, but the store never answers the completion: the old backup keeps
    // its object and its manifest, and still verifies.
    let proxy = proxy_to(&s3).await;
    proxy.hold_requests("POST ", "uploadId=");
    let mut overwrite = vars(&[
        db_vars(&pg, "shop"),
        s3_vars(proxy.endpoint(), &s3),
        vec![
            ("BACKUP_PATH", key.into()),
            ("STORAGE_TIMEOUT_SECS", "3".into()),
            ("COMPRESSION", "none".into()),
            ("BACKUP_OVERWRITE", "true".into()),
        ],
    ]);
    let failed = run(&overwrite).await;
    assert!(proxy.held() > 0, "the completion was never held");
    assert_eq!(failed.code, 6, "{}", failed.stderr);
    assert_eq!(s3.get(BUCKET, key).await.unwrap(), object);
    assert_eq!(s3.get(BUCKET, &manifest).await.unwrap(), described);
    let verify = run(&vars(&[
        db_vars(&pg, "shop"),
        s3_vars(s3.endpoint(), &s3),
        vec![
            ("OPERATION_TYPE", "verify".into()),
            ("BACKUP_PATH", key.into()),
        ],
    ]))
    .await;
    assert_eq!(verify.code, 0, "{}", verify.stderr);

    // Through an honest link the overwrite replaces object and manifest together.
    overwrite.retain(|(k, _)| *k != "STORAGE_ENDPOINT");
    overwrite.push(("STORAGE_ENDPOINT", s3.endpoint()));
    let replaced = run(&overwrite).await;
    assert_eq!(replaced.code, 0, "{}", replaced.stderr);
    assert_ne!(s3.get(BUCKET, key).await.unwrap(), object);
    let verify = run(&vars(&[
        db_vars(&pg, "shop"),
        s3_vars(s3.endpoint(), &s3),
        vec![
            ("OPERATION_TYPE", "verify".into()),
            ("BACKUP_PATH", key.into()),
        ],
    ]))
    .await;
    assert_eq!(verify.code, 0, "{}", verify.stderr);
}

#[tokio::test(flavor = "multi_thread")]
async fn two_jobs_writing_one_key_never_both_succeed() {
    let (pg, s3) = servers().await;
    let local = tempfile::tempdir().unwrap();
    let stores: Vec<(&str, Vec<(&'static str, String)>)> = vec![
        ("s3", s3_vars(s3.endpoint(), &s3)),
        (
            "local",
            vec![
                ("STORAGE_LOCAL_DIR", local.path().display().to_string()),
                ("STORAGE_LOCAL_ALLOW_EPHEMERAL", "true".into()),
            ],
        ),
    ];
    for (store, storage) in stores {
        let key = format!("{store}/same.pgdump");
        let job = vars(&[
            db_vars(&pg, "shop"),
            storage.clone(),
            vec![("BACKUP_PATH", key.clone()), ("COMPRESSION", "none".into())],
        ]);
        let (a, b) = (Job::start(&job), Job::start(&job));
        let (a, b) = tokio::join!(
            a.wait(Duration::from_secs(300)),
            b.wait(Duration::from_secs(300))
        );
        let mut codes = [a.code, b.code];
        codes.sort();
        assert_eq!(
            codes,
            [0, 9],
            "{store}: exactly one job may succeed\n--- a:\n{}\n--- b:\n{}",
            a.stderr,
            b.stderr
        );
        // What is stored is one consistent backup: it verifies.
        let verify = run(&vars(&[
            db_vars(&pg, "shop"),
            storage,
            vec![("OPERATION_TYPE", "verify".into()), ("BACKUP_PATH", key)],
        ]))
        .await;
        assert_eq!(verify.code, 0, "{store}: {}", verify.stderr);
    }
    // No temporary file of either job is left in the local directory.
    let left: Vec<_> = std::fs::read_dir(local.path().join("local"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left.len(), 2, "object and manifest only: {left:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn stopped_with_a_frozen_store_the_job_reports_and_exits_within_10_s() {
    let (pg, s3) = servers().await;
    let cb = CallbackReceiver::start().await.unwrap();
    let proxy = proxy_to(&s3).await;
    let job = Job::start(&vars(&[
        db_vars(&pg, "shop"),
        s3_vars(proxy.endpoint(), &s3),
        vec![
            ("COMPRESSION", "none".into()),
            ("CALLBACK_URL", cb.url()),
            ("JOB_ID", "frozen-store".into()),
            ("STORAGE_TIMEOUT_SECS", "60".into()),
        ],
    ]));
    // Let the multipart upload start, then freeze the store and stop the job.
    let deadline = Instant::now() + Duration::from_secs(60);
    while s3.list_multipart_uploads(BUCKET).await.unwrap().is_empty() {
        assert!(Instant::now() < deadline, "no multipart upload started");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    proxy.freeze();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stopped = Instant::now();
    job.terminate();
    let out = job.wait(Duration::from_secs(30)).await;
    let took = stopped.elapsed();
    assert_eq!(out.code, 143, "{}", out.stderr);
    assert!(
        took < Duration::from_secs(10),
        "took {took:?} to stop:\n{}",
        out.stderr
    );
    assert_eq!(
        cb.statuses().last().map(String::as_str),
        Some("failed"),
        "{:?}",
        cb.statuses()
    );
    // The upload it could not abort is named, so it can be aborted by hand.
    let (_, upload_id) = s3.list_multipart_uploads(BUCKET).await.unwrap()[0].clone();
    assert!(
        out.stderr.contains(&upload_id) && out.stderr.contains("could not abort"),
        "{}",
        out.stderr
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dump_that_stops_sending_fails_after_the_stall_timeout() {
    let (pg, s3) = servers().await;
    // Another session holds an exclusive lock on the table the dump must read.
    let mut locker = tokio::process::Command::new(pg.bin_dir().join("psql"))
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", &pg.url("shop")])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdin = locker.stdin.take().unwrap();
    tokio::io::AsyncWriteExt::write_all(
        &mut stdin,
        b"BEGIN; LOCK TABLE big IN ACCESS EXCLUSIVE MODE;\n",
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;

    let started = Instant::now();
    let out = Job::start(&vars(&[
        db_vars(&pg, "shop"),
        s3_vars(s3.endpoint(), &s3),
        vec![("DUMP_STALL_TIMEOUT_SECS", "3".into())],
    ]))
    .wait(Duration::from_secs(120))
    .await;
    assert_eq!(out.code, 7, "{}", out.stderr);
    // Whichever fires first: the runner's stall watch, or pg_dump's own lock wait (set to the
    // same timeout).
    assert!(
        out.stderr.contains("DUMP_STALL_TIMEOUT_SECS")
            || out.stderr.contains("could not obtain lock"),
        "{}",
        out.stderr
    );
    assert!(started.elapsed() < Duration::from_secs(60));
    assert_bucket_empty(&s3, "after a stalled dump").await;
    drop(stdin);
    let _ = locker.kill().await;
}
