//! Smoke tests of the harness fixtures themselves.

use harness::{free_port, workspace_root, CallbackReceiver, PgServer, S3Server};

#[tokio::test]
async fn postgres_fixture() -> anyhow::Result<()> {
    let pg = PgServer::start().await?;
    assert_eq!(pg.host(), "127.0.0.1");
    assert!(pg.major() >= 12, "major {}", pg.major());
    assert!(pg.bin_dir().join("pg_dump").exists());
    assert_eq!(pg.psql("postgres", "SELECT 1").await?, "1");

    let version = pg.psql("postgres", "SHOW server_version_num").await?;
    assert_eq!(version.parse::<u32>()? / 10000, pg.major());

    // Host connections need the password.
    let err = pg
        .psql_as("postgres", "wrong", "postgres", "SELECT 1")
        .await
        .unwrap_err();
    assert!(
        format!("{err:#}").contains("password authentication failed"),
        "{err:#}"
    );

    // Errors carry psql's stderr.
    let err = pg.psql("postgres", "SELECT nope").await.unwrap_err();
    assert!(format!("{err:#}").contains("nope"), "{err:#}");

    pg.psql(
        "postgres",
        "CREATE ROLE app LOGIN PASSWORD 's3cret'; CREATE DATABASE appdb OWNER app;",
    )
    .await?;
    let out = pg
        .psql_as(
            "app",
            "s3cret",
            "appdb",
            "CREATE TABLE t(x int); INSERT INTO t VALUES (1),(2); SELECT sum(x) FROM t;",
        )
        .await?;
    assert_eq!(out, "3");
    assert!(pg.url("appdb").ends_with(&format!(":{}/appdb", pg.port())));

    let data_dir = pg.data_dir();
    drop(pg);
    assert!(!data_dir.exists(), "tempdir left behind");
    Ok(())
}

#[tokio::test]
async fn two_postgres_servers_side_by_side() -> anyhow::Result<()> {
    let (a, b) = tokio::try_join!(PgServer::start(), PgServer::start())?;
    assert_ne!(a.port(), b.port());
    a.psql("postgres", "CREATE DATABASE only_in_a").await?;
    let count = "SELECT count(*) FROM pg_database WHERE datname = 'only_in_a'";
    assert_eq!(a.psql("postgres", count).await?, "1");
    assert_eq!(b.psql("postgres", count).await?, "0");
    Ok(())
}

#[tokio::test]
async fn s3_fixture() -> anyhow::Result<()> {
    let s3 = S3Server::start().await?;
    assert!(s3.endpoint().starts_with("http://127.0.0.1:"));
    assert_eq!((s3.access_key(), s3.secret_key()), ("test", "test"));
    s3.create_bucket("backups").await?;
    assert!(s3.list_keys("backups").await?.is_empty());

    s3.put("backups", "a/one.txt", b"hello".to_vec()).await?;
    s3.put("backups", "a/two.txt", "world").await?;
    assert_eq!(s3.get("backups", "a/one.txt").await?, b"hello");
    assert_eq!(s3.list_keys("backups").await?, ["a/one.txt", "a/two.txt"]);
    assert!(s3.get("backups", "missing").await.is_err());

    let up = s3
        .client()
        .create_multipart_upload()
        .bucket("backups")
        .key("big.dump")
        .send()
        .await?;
    let id = up.upload_id().expect("upload id").to_owned();
    assert_eq!(
        s3.list_multipart_uploads("backups").await?,
        [("big.dump".to_owned(), id.clone())]
    );
    s3.client()
        .abort_multipart_upload()
        .bucket("backups")
        .key("big.dump")
        .upload_id(id)
        .send()
        .await?;
    assert!(s3.list_multipart_uploads("backups").await?.is_empty());

    // Each server has its own state.
    let other = S3Server::start().await?;
    assert!(other.list_keys("backups").await.is_err());
    Ok(())
}

#[tokio::test]
async fn callback_fixture() -> anyhow::Result<()> {
    let cb = CallbackReceiver::start().await?;
    let http = reqwest::Client::new();
    cb.fail_next(1, 500);

    let body = serde_json::json!({"status": "ok", "size": 42});
    let r1 = http
        .post(cb.url())
        .bearer_auth("tok")
        .json(&body)
        .send()
        .await?;
    assert_eq!(r1.status().as_u16(), 500);
    let r2 = http
        .post(format!("{}/metadata", cb.url()))
        .bearer_auth("tok")
        .header("X-Extra", "1")
        .json(&body)
        .send()
        .await?;
    assert_eq!(r2.status().as_u16(), 200);
    let r3 = http.get(cb.url()).send().await?;
    assert_eq!(r3.status().as_u16(), 405);

    let got = cb.requests();
    assert_eq!(got.len(), 3);
    assert_eq!(got[0].path, "/cb");
    assert_eq!(got[0].status, 500);
    assert_eq!(got[0].authorization.as_deref(), Some("Bearer tok"));
    assert_eq!(got[0].body, body);
    assert_eq!(got[1].path, "/cb/metadata");
    assert_eq!(got[1].status, 200);
    assert_eq!(got[1].header("x-extra"), Some("1"));
    assert_eq!(got[1].header("Content-Type"), Some("application/json"));
    assert_eq!(got[2].method, "GET");
    assert_eq!(
        cb.wait_for(3, std::time::Duration::from_secs(1))
            .await?
            .len(),
        3
    );
    Ok(())
}

/// The receiver must answer while the test's own thread is blocked.
#[test]
fn callback_answers_while_caller_blocks() -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let cb = rt.block_on(CallbackReceiver::start())?;
    let url = cb.url();
    let handle = std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async { reqwest::Client::new().post(url).json(&1).send().await })
            .map(|r| r.status().as_u16())
    });
    // Block this thread (not driving `rt`) until the request is answered.
    assert_eq!(handle.join().unwrap()?, 200);
    assert_eq!(cb.requests()[0].body, serde_json::json!(1));
    Ok(())
}

#[test]
fn helpers() {
    let root = workspace_root();
    assert!(root.join("Cargo.toml").is_file());
    assert!(root.join("tests").join("Cargo.toml").is_file());
    assert_ne!(free_port(), 0);
}
