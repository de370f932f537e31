//! Whole-server backups (`DB_NAME=*`) through the real runner images, on the newest cell of
//! each product (postgres-18, mariadb-11.8, mysql-9.7; valkey-9.1 for the refusal), narrowed by
//! `HARNESS_CELLS` like the scenario suite's full list. Backups go to a local directory mounted at
//! `/backups`, which the tests read directly.
//!
//! - PostgreSQL: a server with roles, memberships, database settings and grants at every level
//!   (`harness::server_set`) is backed up as a set and restored onto a fresh server of the same
//!   version, which must then compare identical class by class (roles with their passwords,
//!   memberships, role and database settings, owners, database ACLs, and per database its
//!   definitions, data, owners, ACLs and default privileges, plus `pg_sample`'s fingerprint);
//!   the comparer is shown to catch a changed grant, role and setting. One database of the set
//!   restored alone (`RESTORE_DATABASES`, `BACKUP_PATH=latest`) onto another fresh server,
//!   where a role of the same name already exists: only that database appears, identical, and
//!   the existing role keeps its password. `list` shows the set as one backup, `verify` checks
//!   every object and finds a damaged one.
//! - PostgreSQL failures: a database dropped while its dump waits (the job fails naming it, no
//!   set manifest, no object left), and a non-superuser source (the set succeeds, and names the
//!   role passwords and the database it cannot connect to).
//! - MariaDB and MySQL: two databases (part of the hard-case dataset, views and routines whose
//!   DEFINER is not root), accounts with grants at every level and a default role; restored onto
//!   a fresh server as root: every account identical (`SHOW CREATE USER`, `SHOW GRANTS`), every
//!   database identical by `mysql_hard`'s fingerprint, definers intact and working.
//! - Valkey: `DB_NAME=*` is refused (exit 2).
//!
//! `HARNESS_REQUIRE_DOCKER=1 cargo test --release -p harness --test server_sets`

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use harness::containers::{
    ready_or_skip, shared_dir, unique, DbContainer, Job, JobOutput, MysqlContainer, HOST_ALIAS,
};
use harness::matrix::{Cell, Matrix};
use harness::mysql_hard::{self as hard, Flavor, SERVER_ARGS};
use harness::scenario::suite::full_list_cells;
use harness::server_set::{
    classes, diff, mysql_accounts, mysql_databases, mysql_seed, pg_databases, pg_seed, pg_snapshot,
    report, Difference, Snapshot, MYSQL_DATABASES, MYSQL_READER_PASSWORD, PG_DATABASES, PG_ROLES,
};
use harness::CallbackReceiver;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// The newest selected cell of `product` (the full-list cell), when Docker and its images are
/// there.
async fn cell(test: &str, product: &str) -> Option<Cell> {
    let matrix = Matrix::load().unwrap();
    let full = full_list_cells(&matrix);
    let cell = matrix
        .cells_from_env(None)
        .unwrap()
        .into_iter()
        .find(|c| c.product() == product && full.contains(&c.name));
    let Some(cell) = cell else {
        eprintln!("{test}: no {product} cell selected (HARNESS_CELLS); nothing to run");
        return None;
    };
    ready_or_skip(test, &[cell.image(), cell.server.clone()])
        .await
        .then_some(cell)
}

/// Every file under `root`, relative to it, sorted; the catalog's index left out.
fn files_under(root: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, found: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(root, &path, found);
            } else {
                found.push(path.strip_prefix(root).unwrap().display().to_string());
            }
        }
    }
    let mut found = Vec::new();
    walk(root, root, &mut found);
    found.retain(|f| !f.starts_with(".backup-runner") && !f.contains("/.backup-runner/"));
    found.sort();
    found
}

/// A JSON array of strings from a callback's metadata (shown whole when it is not one).
fn strings(v: &Value, meta: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("metadata: {meta:#}"))
        .iter()
        .map(|x| x.as_str().unwrap().to_string())
        .collect()
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// `zstd -dc` of a stored object (the reference tool, as users would).
fn unzstd(path: &Path) -> String {
    let out = std::process::Command::new("zstd")
        .args(["-d", "-q", "-c"])
        .arg(path)
        .output()
        .expect("running zstd (Debian package zstd)");
    assert!(out.status.success(), "zstd -d {}: {out:?}", path.display());
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The set in `dir` written by job `job_id`: the globals object's key, and the manifest.
fn the_set(dir: &Path, job_id: &str) -> (String, Value) {
    let files = files_under(dir);
    let manifests: Vec<&String> = files
        .iter()
        .filter(|f| f.contains("/_server/") && f.ends_with(".manifest.json"))
        .filter(|f| f.contains(&format!("-{job_id}/")))
        .collect();
    assert_eq!(
        manifests.len(),
        1,
        "one set manifest of {job_id}: {files:?}"
    );
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(dir.join(manifests[0])).unwrap()).unwrap();
    let key = manifests[0].trim_end_matches(".manifest.json").to_string();
    (key, manifest)
}

/// Checks what every set manifest must say, against the stored bytes; returns the members'
/// databases in the manifest's order.
fn check_set_manifest(
    dir: &Path,
    key: &str,
    m: &Value,
    engine: &str,
    format: &str,
    extension: &str,
) -> Vec<String> {
    assert_eq!(m["manifest_version"], 3, "{m:#}");
    assert_eq!(m["database"], "*", "{m:#}");
    assert_eq!(m["engine"], engine, "{m:#}");
    assert_eq!(m["format"], format, "{m:#}");
    assert_eq!(m["object_key"], key, "{m:#}");
    // <prefix>/<engine>/_server/<UTC yyyymmddThhmmssZ>-<job id>/globals.sql.zst
    let folder = key.rsplit_once('/').unwrap().0;
    let stamp = folder.rsplit('/').next().unwrap();
    assert!(
        folder.contains(&format!("{engine}/_server/"))
            && stamp.len() > 17
            && stamp.as_bytes()[8] == b'T'
            && stamp.as_bytes()[15] == b'Z',
        "{key}"
    );
    assert!(key.ends_with("/globals.sql.zst"), "{key}");
    let globals = std::fs::read(dir.join(key)).unwrap();
    assert_eq!(m["bytes"], globals.len() as u64, "{m:#}");
    assert_eq!(m["sha256"], sha256_hex(&globals), "{m:#}");
    let set = &m["set"];
    let members = set["members"].as_array().expect("set.members");
    let mut names = Vec::new();
    for member in members {
        let db = member["database"].as_str().unwrap().to_string();
        let object = member["object_key"].as_str().unwrap();
        assert_eq!(
            object,
            format!("{folder}/{db}.{extension}.zst"),
            "member {db}: {member:#}"
        );
        let bytes = std::fs::read(dir.join(object))
            .unwrap_or_else(|e| panic!("member {db}'s object {object}: {e}"));
        assert_eq!(member["bytes"], bytes.len() as u64, "{db}");
        assert_eq!(member["sha256"], sha256_hex(&bytes), "{db}");
        assert!(member["raw_bytes"].as_u64().unwrap() > 0, "{db}");
        assert_eq!(member["engine_details"]["set_member"], true, "{member:#}");
        assert!(member["format"].is_string(), "{member:#}");
        assert!(member["warnings"].is_array(), "{member:#}");
        let (started, finished) = (
            member["started_at"].as_str().unwrap(),
            member["finished_at"].as_str().unwrap(),
        );
        assert!(started <= finished, "{db}: {started} > {finished}");
        names.push(db);
    }
    assert!(set["skipped"].is_array(), "{set:#}");
    assert!(set["parallelism"].as_u64().unwrap() >= 1, "{set:#}");
    // Nothing else in the folder: the globals, their manifest, one object per member.
    let mut expected: Vec<String> = names
        .iter()
        .map(|db| format!("{folder}/{db}.{extension}.zst"))
        .collect();
    expected.push(key.to_string());
    expected.push(format!("{key}.manifest.json"));
    expected.sort();
    let stored: Vec<String> = files_under(dir)
        .into_iter()
        .filter(|f| f.starts_with(&format!("{folder}/")))
        .collect();
    assert_eq!(stored, expected);
    names
}

/// The stored object of member `db`.
fn member_path(dir: &Path, m: &Value, db: &str) -> PathBuf {
    let member = m["set"]["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["database"] == db)
        .unwrap_or_else(|| panic!("no member {db}"));
    dir.join(member["object_key"].as_str().unwrap())
}

fn skipped(m: &Value) -> Vec<String> {
    m["set"]["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

// ------------------------------------------------------------------------------------------
// PostgreSQL.

fn pg_env(db: &DbContainer, user: &str, password: &str) -> Vec<(String, String)> {
    [
        ("DB_HOST", db.name.as_str()),
        ("DB_PORT", "5432"),
        ("DB_NAME", "*"),
        ("DB_USERNAME", user),
        ("DB_PASSWORD", password),
        ("STORAGE_PREFIX", "sets"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

fn pg_job(cell: &Cell, network: &str, db: &DbContainer, dir: &Path) -> Job {
    Job::new(&cell.image(), network)
        .envs(&pg_env(db, "postgres", &db.password))
        .mount(dir, "/backups")
}

/// The comparison that must hold after a full restore: everything, but the bootstrap
/// superuser's password (each container sets its own).
async fn pg_compare(expected: &Snapshot, server: &DbContainer) -> Vec<Difference> {
    let actual = pg_snapshot(server, &["postgres"]).await.unwrap();
    diff(expected, &actual)
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_set_restores_roles_grants_and_databases_exactly() {
    let test = "postgres_set_restores_roles_grants_and_databases_exactly";
    let Some(cell) = cell(test, "postgres").await else {
        return;
    };
    let started = Instant::now();
    let network = unique("net");
    let (source, full, one) = tokio::join!(
        DbContainer::postgres(&cell.server, &network),
        DbContainer::postgres(&cell.server, &network),
        DbContainer::postgres(&cell.server, &network)
    );
    let (source, full, one) = (source.unwrap(), full.unwrap(), one.unwrap());
    pg_seed(&source).await.unwrap();
    // On the target of the single-database restore, a role of the set already exists, with
    // the same attributes and another password: it must be kept as it is.
    one.psql(
        "postgres",
        "CREATE ROLE inv_owner LOGIN PASSWORD 'target-own-Pw' CONNECTION LIMIT 5 \
         VALID UNTIL '2031-01-01 00:00:00+00';",
    )
    .await
    .unwrap();
    let before = pg_snapshot(&source, &["postgres"]).await.unwrap();
    // What the comparison covers, so that "identical" means something.
    let mut databases: Vec<&str> = PG_DATABASES.to_vec();
    databases.push("postgres");
    databases.sort();
    assert_eq!(before.databases(), databases);
    for (role, password) in PG_ROLES {
        let value = before
            .get("role_passwords", &format!("role {role}"))
            .unwrap();
        assert_eq!(
            value.starts_with("SCRAM-SHA-256 "),
            password.is_some(),
            "{role}: {value}"
        );
    }
    for (class, at_least) in [
        ("roles", 9),
        ("memberships", 5),
        ("role_settings", 3),
        ("database_settings", 3),
        ("database_acl", 4),
        ("definitions", 60),
        ("data", 6),
        ("owners", 20),
        ("acl", 25),
        ("default_acl", 3),
        ("pg_sample", 1),
    ] {
        let n = before.objects(class).len();
        assert!(n >= at_least, "{class}: {n} objects, expected ≥ {at_least}");
    }
    assert_eq!(
        before.get("database_acl", "[shop]"),
        Some("{app_owner=CTc/app_owner,app_reader=Tc/app_owner,staff=c/app_owner}")
    );
    assert_eq!(
        before
            .get("memberships", "role app_reader in staff")
            .map(|v| v.contains("\"set_option\": false")),
        Some(true)
    );
    eprintln!(
        "{}: servers started and seeded in {:.1}s: {} objects compared",
        cell.name,
        started.elapsed().as_secs_f64(),
        before.len()
    );

    // The backup: one set, one object per database, and the set's manifest.
    let dir = shared_dir().unwrap();
    let cb = CallbackReceiver::start_on("0.0.0.0").await.unwrap();
    let t = Instant::now();
    let backup = pg_job(&cell, &network, &source, dir.path())
        .env("JOB_ID", "pg-set")
        .env("CALLBACK_URL", cb.url_via(HOST_ALIAS))
        .run()
        .await
        .unwrap();
    backup.assert_ok("backup of the whole server");
    let backup_s = t.elapsed().as_secs_f64();
    let (key, m) = the_set(dir.path(), "pg-set");
    assert!(key.starts_with("sets/postgres/_server/"), "{key}");
    let members = check_set_manifest(
        dir.path(),
        &key,
        &m,
        "postgres",
        "pg_dumpall-globals",
        "pgdump",
    );
    assert_eq!(members, databases, "{m:#}");
    assert_eq!(m["set"]["parallelism"], 1);
    assert!(
        !skipped(&m).iter().any(|s| s.contains("role passwords")),
        "a superuser reads role passwords: {:?}",
        skipped(&m)
    );
    let globals = unzstd(&dir.path().join(&key));
    for role in ["alice", "app_owner", "staff", "ops"] {
        assert!(
            globals.contains(&format!("CREATE ROLE {role};")),
            "{globals}"
        );
    }
    assert!(
        globals.contains("SCRAM-SHA-256$"),
        "passwords in the globals"
    );
    assert!(
        backup.stderr.contains(&key),
        "the log names the set:\n{}",
        backup.stderr
    );
    // The callbacks: the set's totals and its databases.
    let calls = cb.wait_for(3, Duration::from_secs(10)).await.unwrap();
    let kinds: Vec<String> = calls.iter().map(|c| c.kind()).collect();
    assert_eq!(kinds, ["running", "metadata", "success"]);
    let meta = &calls[1].body["metadata"];
    assert_eq!(meta["object_key"], key, "{meta:#}");
    let total: u64 = m["bytes"].as_u64().unwrap()
        + m["set"]["members"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x["bytes"].as_u64().unwrap())
            .sum::<u64>();
    let total_raw: u64 = m["raw_bytes"].as_u64().unwrap()
        + m["set"]["members"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x["raw_bytes"].as_u64().unwrap())
            .sum::<u64>();
    // `bytes` and `raw_bytes` are the set's totals (README, Callbacks), not the globals
    // object's alone.
    assert_eq!(
        (&meta["bytes"], &meta["raw_bytes"]),
        (&Value::from(total), &Value::from(total_raw)),
        "metadata.bytes and raw_bytes: {meta:#}"
    );
    let reported: Vec<&str> = meta["set"]["databases"]
        .as_array()
        .unwrap_or_else(|| panic!("metadata.set.databases: {meta:#}"))
        .iter()
        .map(|d| d["database"].as_str().unwrap())
        .collect();
    assert_eq!(reported, members);
    assert!(meta["peak_rss_bytes"].as_u64().unwrap() > 0);

    // Restored onto a fresh server: identical, class by class.
    let t = Instant::now();
    let restore = pg_job(&cell, &network, &full, dir.path())
        .env("OPERATION_TYPE", "restore")
        .env("BACKUP_PATH", &key)
        .run()
        .await
        .unwrap();
    restore.assert_ok("restore of the whole server onto a fresh one");
    let restore_s = t.elapsed().as_secs_f64();
    let differences = pg_compare(&before, &full).await;
    assert!(
        differences.is_empty(),
        "{}: the restored server differs:\n{}\nrestore log:\n{}",
        cell.name,
        report(&differences),
        restore.stderr
    );
    // The passwords are the roles' own: they log in, and reach what they were granted.
    let customers = full
        .psql_as(
            "alice",
            "alice-Pw-3",
            "shop",
            "SELECT count(*) FROM customers;",
        )
        .await
        .unwrap();
    assert_eq!(customers, "2000");
    let denied = full
        .psql_as("inv_owner", "inv-Pw-2", "audit", "SELECT 1;")
        .await
        .unwrap_err();
    assert!(
        format!("{denied:#}").contains("permission denied for database"),
        "CONNECT on audit was revoked from PUBLIC: {denied:#}"
    );

    // The comparer catches a changed grant, role attribute and database setting, and names
    // each one's class.
    full.psql("shop", "GRANT INSERT ON customers TO bob;")
        .await
        .unwrap();
    full.psql(
        "postgres",
        "ALTER ROLE bob INHERIT; ALTER DATABASE audit SET work_mem = '16MB';",
    )
    .await
    .unwrap();
    let caught = pg_compare(&before, &full).await;
    assert_eq!(
        classes(&caught),
        ["acl", "database_settings", "roles"],
        "{}",
        report(&caught)
    );
    let objects: Vec<&str> = caught.iter().map(|d| d.object.as_str()).collect();
    assert_eq!(
        objects,
        ["[shop] relation public.customers", "[audit]", "role bob"]
    );

    // One database alone, from `latest`, onto a server where one of the set's roles exists.
    let t = Instant::now();
    let cb = CallbackReceiver::start_on("0.0.0.0").await.unwrap();
    let alone = pg_job(&cell, &network, &one, dir.path())
        .env("OPERATION_TYPE", "restore")
        .env("BACKUP_PATH", "latest")
        .env("RESTORE_DATABASES", "inventory")
        .env("CALLBACK_URL", cb.url_via(HOST_ALIAS))
        .run()
        .await
        .unwrap();
    alone.assert_ok("restore of one database of the set");
    let alone_s = t.elapsed().as_secs_f64();
    assert_eq!(pg_databases(&one).await.unwrap(), ["inventory", "postgres"]);
    let after_one = pg_snapshot(&one, &["postgres"]).await.unwrap();
    let differences = diff(
        &before.only_databases(&["inventory", "postgres"]),
        &after_one,
    );
    let named: Vec<(&str, &str)> = differences
        .iter()
        .map(|d| (d.class.as_str(), d.object.as_str()))
        .collect();
    assert_eq!(
        named,
        [("role_passwords", "role inv_owner")],
        "only the existing role's own password may differ:\n{}",
        report(&differences)
    );
    let items = one
        .psql_as(
            "inv_owner",
            "target-own-Pw",
            "inventory",
            "SELECT count(*) FROM app.items;",
        )
        .await
        .unwrap();
    assert_eq!(
        items, "500",
        "the existing role keeps its password and owns inventory"
    );
    assert!(
        alone.stderr.contains("kept") && alone.stderr.contains("inv_owner"),
        "the restore says which roles it kept:\n{}",
        alone.stderr
    );
    let calls = cb.wait_for(3, Duration::from_secs(10)).await.unwrap();
    let meta = &calls[1].body["metadata"];
    let names = |v: &Value| strings(v, meta);
    assert_eq!(names(&meta["databases"]), ["inventory"], "{meta:#}");
    let (created, kept) = (names(&meta["created"]), names(&meta["kept"]));
    assert!(kept.iter().any(|r| r.contains("inv_owner")), "{meta:#}");
    assert!(!created.iter().any(|r| r.contains("inv_owner")), "{meta:#}");
    assert_eq!(created.len(), PG_ROLES.len() - 1, "{meta:#}");

    // `list` shows the set as one backup; `verify` checks every object.
    let list = pg_job(&cell, &network, &source, dir.path())
        .env("OPERATION_TYPE", "list")
        .run()
        .await
        .unwrap();
    list.assert_ok("list");
    let listed: Vec<Value> = list
        .stdout
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let backups: Vec<&Value> = listed.iter().filter(|v| v.get("kind").is_none()).collect();
    assert_eq!(backups.len(), 1, "{}", list.stdout);
    assert_eq!(backups[0]["database"], "*");
    assert_eq!(backups[0]["object_key"], key);
    let dbs: Vec<&str> = backups[0]["databases"]
        .as_array()
        .unwrap_or_else(|| panic!("list: databases: {}", list.stdout))
        .iter()
        .map(|d| d["database"].as_str().unwrap())
        .collect();
    assert_eq!(dbs, members);
    assert_eq!(
        backups[0]["total_bytes"], total,
        "list: total_bytes: {}",
        list.stdout
    );
    let verify = |dir: &Path| {
        pg_job(&cell, &network, &source, dir)
            .env("OPERATION_TYPE", "verify")
            .env("BACKUP_PATH", &key)
    };
    verify(dir.path())
        .run()
        .await
        .unwrap()
        .assert_ok("verify of the set");
    let damaged = member_path(dir.path(), &m, "inventory");
    let mut bytes = std::fs::read(&damaged).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    std::fs::write(&damaged, bytes).unwrap();
    let bad = verify(dir.path()).run().await.unwrap();
    bad.assert_code(8, "verify of a set with a damaged member");
    assert!(bad.stderr.contains("inventory"), "{}", bad.stderr);
    eprintln!(
        "{}: backup {backup_s:.1}s, full restore {restore_s:.1}s, one database {alone_s:.1}s; \
         {:.1}s in all",
        cell.name,
        started.elapsed().as_secs_f64()
    );
}

/// Three small databases, each with a table `t`.
async fn pg_three_databases(server: &DbContainer) {
    for db in ["a_first", "b_second", "c_third"] {
        server
            .psql("postgres", &format!("CREATE DATABASE {db};"))
            .await
            .unwrap();
        server
            .psql(
                db,
                "CREATE TABLE t (id int PRIMARY KEY, v text); \
                 INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 5000) g;",
            )
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_set_failures_leave_nothing_and_what_is_left_out_is_named() {
    let test = "postgres_set_failures_leave_nothing_and_what_is_left_out_is_named";
    let Some(cell) = cell(test, "postgres").await else {
        return;
    };
    let started = Instant::now();
    let network = unique("net");
    let server = DbContainer::postgres(&cell.server, &network).await.unwrap();
    pg_three_databases(&server).await;

    // A non-superuser that may read the tables of a_first and b_second, but not connect to
    // c_third, nor read pg_authid. (Not pg_read_all_data: that role reads pg_authid too, and
    // with it a set does hold the passwords.)
    server
        .psql(
            "postgres",
            "CREATE ROLE backup_op LOGIN PASSWORD 'bk-Pw-5'; \
             CREATE ROLE secret_keeper LOGIN PASSWORD 'keeper-Pw-6'; \
             REVOKE CONNECT ON DATABASE c_third FROM PUBLIC;",
        )
        .await
        .unwrap();
    for db in ["a_first", "b_second"] {
        server
            .psql(db, "GRANT SELECT ON t TO backup_op;")
            .await
            .unwrap();
    }
    let dir = shared_dir().unwrap();
    let limited = Job::new(&cell.image(), &network)
        .envs(&pg_env(&server, "backup_op", "bk-Pw-5"))
        .env("JOB_ID", "limited")
        .mount(dir.path(), "/backups")
        .run()
        .await
        .unwrap();
    limited.assert_ok("a set backed up by a non-superuser");
    let (key, m) = the_set(dir.path(), "limited");
    let members = check_set_manifest(
        dir.path(),
        &key,
        &m,
        "postgres",
        "pg_dumpall-globals",
        "pgdump",
    );
    assert_eq!(members, ["a_first", "b_second", "postgres"], "{m:#}");
    let why = skipped(&m);
    let about = |needle: &str| why.iter().find(|s| s.contains(needle)).cloned();
    let passwords = about("role passwords")
        .unwrap_or_else(|| panic!("set.skipped names the role passwords: {why:?}"));
    let c_third = about("c_third").unwrap_or_else(|| panic!("set.skipped names c_third: {why:?}"));
    let warnings = m["warnings"].to_string();
    for sentence in [&passwords, &c_third] {
        assert!(
            limited.stderr.contains(sentence.as_str()),
            "the log says {sentence:?} too:\n{}",
            limited.stderr
        );
        assert!(
            warnings.contains(&serde_json::to_string(sentence).unwrap()),
            "the manifest's warnings say {sentence:?} too: {warnings}"
        );
    }
    let globals = unzstd(&dir.path().join(&key));
    assert!(globals.contains("CREATE ROLE secret_keeper;"), "{globals}");
    assert!(
        !globals.contains("PASSWORD '"),
        "no password in a set taken without pg_authid:\n{globals}"
    );
    // What pg_read_all_data let it read is in the dump (custom format, uncompressed inside):
    // the last row of b_second's table, 5000 and md5('5000').
    let dump = unzstd(&member_path(dir.path(), &m, "b_second"));
    assert!(dump.starts_with("PGDMP") && dump.contains("5000\ta35fe7f7fe8217b4369a0af4244d1fca"));

    // A database dropped while its dump waits for a lock: the job fails naming it, and nothing
    // of the set is left, not even the databases already stored.
    let failing = shared_dir().unwrap();
    let holder = server.psql(
        "b_second",
        "BEGIN; LOCK TABLE t IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(90); COMMIT;",
    );
    let job = Job::new(&cell.image(), &network)
        .envs(&pg_env(&server, "postgres", &server.password))
        .env("JOB_ID", "dropped")
        .env("SERVER_PARALLELISM", "1")
        .env("DB_EXCLUDE", "postgres")
        .mount(failing.path(), "/backups")
        .run();
    let dropper = async {
        // The lock first, then the job's session waiting on it in b_second.
        let deadline = Instant::now() + Duration::from_secs(60);
        let waiting = "SELECT count(*) FROM pg_stat_activity \
                       WHERE datname = 'b_second' AND wait_event_type = 'Lock';";
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if server.psql("postgres", waiting).await.unwrap_or_default() != "0" {
                break;
            }
            if Instant::now() > deadline {
                // Let the job end, so that its log shows where it was.
                let _ = server
                    .psql(
                        "postgres",
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                         WHERE datname = 'b_second' AND query LIKE '%pg_sleep%';",
                    )
                    .await;
                return Err("no session of the job waited for the lock on b_second within 60s");
            }
        }
        server
            .psql("postgres", "DROP DATABASE b_second WITH (FORCE);")
            .await
            .unwrap();
        Ok(())
    };
    let holder = async {
        // Ends when the database is dropped (its session is terminated).
        let _ = holder.await;
    };
    let (out, dropped, ()) = tokio::join!(job, dropper, holder);
    let out: JobOutput = out.unwrap();
    if let Err(e) = dropped {
        panic!("{e}; the job exited {}:\n{}", out.code, out.stderr);
    }
    assert_ne!(
        out.code, 0,
        "a set with a dropped database:\n{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("b_second"),
        "the failure names the database:\n{}",
        out.stderr
    );
    // a_first was stored before b_second's dump started; it was deleted again.
    assert!(
        out.stderr.contains("database \"a_first\" stored")
            && out
                .stderr
                .contains("deleted a database already stored for the failed set"),
        "a_first was stored, then deleted:\n{}",
        out.stderr
    );
    assert_eq!(
        files_under(failing.path()),
        Vec::<String>::new(),
        "nothing of the failed set is left:\n{}",
        out.stderr
    );
    eprintln!(
        "{}: non-superuser set, and a dropped database: exit {}: {}; {:.1}s in all",
        cell.name,
        out.code,
        out.stderr.lines().last().unwrap_or_default(),
        started.elapsed().as_secs_f64()
    );
}

// ------------------------------------------------------------------------------------------
// MySQL and MariaDB.

fn mysql_env(server: &MysqlContainer) -> Vec<(String, String)> {
    [
        ("DB_ENGINE", "mysql"),
        ("DB_HOST", server.name.as_str()),
        ("DB_PORT", "3306"),
        ("DB_NAME", "*"),
        ("DB_USERNAME", "root"),
        ("DB_PASSWORD", server.root_password.as_str()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// The DEFINER of every view and routine of the set's databases, as `db.name definer`.
async fn definers(server: &MysqlContainer) -> Vec<String> {
    let out = server
        .root(
            "",
            "SELECT CONCAT(table_schema, '.', table_name, ' ', definer) FROM information_schema.views \
               WHERE table_schema IN ('app_db', 'shop') \
             UNION ALL SELECT CONCAT(routine_schema, '.', routine_name, ' ', definer) \
               FROM information_schema.routines WHERE routine_schema IN ('app_db', 'shop') \
             ORDER BY 1",
        )
        .await
        .unwrap();
    out.lines().map(str::to_string).collect()
}

async fn mysql_family_set(test: &str, product: &str) {
    let Some(cell) = cell(test, product).await else {
        return;
    };
    let flavor = Flavor::of(&cell);
    let started = Instant::now();
    let network = unique("net");
    let (source, target) = tokio::join!(
        MysqlContainer::start_with(&cell.server, &network, &SERVER_ARGS),
        MysqlContainer::start_with(&cell.server, &network, &SERVER_ARGS)
    );
    let (source, target) = (source.unwrap(), target.unwrap());
    mysql_seed(&source, flavor)
        .await
        .unwrap_or_else(|e| panic!("{}: seeding: {e:#}", cell.name));
    // A fresh target: without the database and the user its image's entrypoint made.
    target
        .root(
            "",
            &format!(
                "DROP DATABASE {}; DROP USER '{}'@'%';",
                MysqlContainer::APP_DB,
                MysqlContainer::APP_USER
            ),
        )
        .await
        .unwrap();
    assert_eq!(
        mysql_accounts(&target, flavor).await.unwrap(),
        Snapshot::default(),
        "the target has no account of its own"
    );
    let accounts = mysql_accounts(&source, flavor).await.unwrap();
    // A role: `analyst`@`%` on MySQL, `analyst` (no host) on MariaDB.
    let analyst = match flavor {
        Flavor::Mariadb => "analyst",
        Flavor::Mysql => "analyst@%",
    };
    assert_eq!(
        accounts.objects("grants"),
        [
            analyst,
            "app_user@%",
            "reader@%",
            "report_owner@%",
            "writer@10.0.0.%"
        ],
        "{accounts:#?}"
    );
    let mut before = Vec::new();
    for db in MYSQL_DATABASES {
        before.push(hard::fingerprint(&source, flavor, db).await.unwrap());
    }
    let definers_before = definers(&source).await;
    assert!(
        definers_before
            .iter()
            .any(|d| d == "app_db.report_v report_owner@%")
            && definers_before
                .iter()
                .any(|d| d == "shop.restock writer@10.0.0.%"),
        "{definers_before:?}"
    );
    eprintln!(
        "{}: servers started and seeded in {:.1}s",
        cell.name,
        started.elapsed().as_secs_f64()
    );

    let dir = shared_dir().unwrap();
    let t = Instant::now();
    let backup = Job::new(&cell.image(), &network)
        .envs(&mysql_env(&source))
        .env("JOB_ID", "my-set")
        .env("SERVER_PARALLELISM", "2")
        .mount(dir.path(), "/backups")
        .run()
        .await
        .unwrap();
    backup.assert_ok("backup of the whole server");
    let backup_s = t.elapsed().as_secs_f64();
    let (key, m) = the_set(dir.path(), "my-set");
    assert!(key.starts_with("mysql/_server/"), "{key}");
    let members = check_set_manifest(dir.path(), &key, &m, "mysql", "mysql-accounts", "sql");
    assert_eq!(members, MYSQL_DATABASES, "{m:#}");
    assert_eq!(m["set"]["parallelism"], 2);
    let globals = unzstd(&dir.path().join(&key));
    for account in ["reader", "writer", "analyst", "report_owner", "app_user"] {
        assert!(
            globals.contains(account),
            "{account} in the globals:\n{globals}"
        );
    }
    assert!(
        backup.stderr.contains(&key),
        "the log names the set:\n{}",
        backup.stderr
    );

    let t = Instant::now();
    let restore = Job::new(&cell.image(), &network)
        .envs(&mysql_env(&target))
        .env("OPERATION_TYPE", "restore")
        .env("BACKUP_PATH", &key)
        .mount(dir.path(), "/backups")
        .run()
        .await
        .unwrap();
    restore.assert_ok("restore of the whole server onto a fresh one");
    let restore_s = t.elapsed().as_secs_f64();
    // Accounts first, so that the definers and grants resolve.
    let log = &restore.stderr;
    let created = log.find("created:");
    let first_db = log.find("database \"app_db\" restored");
    assert!(
        matches!((created, first_db), (Some(c), Some(d)) if c < d),
        "accounts are created before the databases are restored:\n{log}"
    );
    let after = mysql_accounts(&target, flavor).await.unwrap();
    let differences = diff(&accounts, &after);
    assert!(
        differences.is_empty(),
        "{}: the accounts differ:\n{}\nrestore log:\n{log}",
        cell.name,
        report(&differences)
    );
    assert_eq!(mysql_databases(&target).await.unwrap(), MYSQL_DATABASES);
    for (db, expected) in MYSQL_DATABASES.iter().zip(&before) {
        let actual = hard::fingerprint(&target, flavor, db).await.unwrap();
        let differences = hard::diff(expected, &actual);
        assert!(
            differences.is_empty(),
            "{}: database {db} differs:\n{}",
            cell.name,
            hard::report(&differences)
        );
    }
    assert_eq!(definers(&target).await, definers_before);
    // The definers work: reader reads the view and calls the procedure as `writer`, and the
    // function of `app_user` runs.
    let stock = target
        .sql(
            "reader",
            MYSQL_READER_PASSWORD,
            "shop",
            "SELECT name FROM stock ORDER BY name",
        )
        .await
        .unwrap();
    assert_eq!(stock, "apple\nplum");
    target
        .sql(
            "reader",
            MYSQL_READER_PASSWORD,
            "shop",
            "CALL restock(2, 3)",
        )
        .await
        .unwrap();
    let pear = target
        .root("shop", "SELECT qty FROM items WHERE id = 2")
        .await
        .unwrap();
    assert_eq!(pear, "3");
    let logged = target
        .root(MysqlContainer::APP_DB, "SELECT log_count()")
        .await
        .unwrap();
    assert_eq!(logged, "3");

    // The comparer catches a changed grant, naming the account.
    target
        .root("", "GRANT INSERT ON shop.orders TO 'reader'@'%'")
        .await
        .unwrap();
    let caught = diff(&accounts, &mysql_accounts(&target, flavor).await.unwrap());
    let named: Vec<(&str, &str)> = caught
        .iter()
        .map(|d| (d.class.as_str(), d.object.as_str()))
        .collect();
    assert_eq!(named, [("grants", "reader@%")], "{}", report(&caught));

    // The set again, one database, onto the same server: every account is there now, so every
    // one is kept as it is (the changed grant too), and reported so.
    let cb = CallbackReceiver::start_on("0.0.0.0").await.unwrap();
    let again = Job::new(&cell.image(), &network)
        .envs(&mysql_env(&target))
        .env("OPERATION_TYPE", "restore")
        .env("BACKUP_PATH", &key)
        .env("RESTORE_DATABASES", "shop")
        .env("RESTORE_CLEAN", "true")
        .env("CALLBACK_URL", cb.url_via(HOST_ALIAS))
        .mount(dir.path(), "/backups")
        .run()
        .await
        .unwrap();
    again.assert_ok("a second restore of one database of the set");
    let calls = cb.wait_for(3, Duration::from_secs(10)).await.unwrap();
    let meta = &calls[1].body["metadata"];
    let names = |v: &Value| strings(v, meta);
    assert_eq!(names(&meta["databases"]), ["shop"], "{meta:#}");
    assert_eq!(names(&meta["created"]), Vec::<String>::new(), "{meta:#}");
    assert_eq!(names(&meta["kept"]).len(), 5, "{meta:#}");
    let kept = diff(&accounts, &mysql_accounts(&target, flavor).await.unwrap());
    assert_eq!(kept, caught, "the accounts are kept as they were");
    let shop = hard::fingerprint(&target, flavor, "shop").await.unwrap();
    let differences = hard::diff(&before[1], &shop);
    assert!(differences.is_empty(), "{}", hard::report(&differences));
    eprintln!(
        "{}: backup {backup_s:.1}s, restore {restore_s:.1}s; {:.1}s in all",
        cell.name,
        started.elapsed().as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn mariadb_set_restores_accounts_definers_and_databases_exactly() {
    mysql_family_set(
        "mariadb_set_restores_accounts_definers_and_databases_exactly",
        "mariadb",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn mysql_set_restores_accounts_definers_and_databases_exactly() {
    mysql_family_set(
        "mysql_set_restores_accounts_definers_and_databases_exactly",
        "mysql",
    )
    .await;
}

// ------------------------------------------------------------------------------------------
// Redis and Valkey.

#[tokio::test(flavor = "multi_thread")]
async fn valkey_refuses_a_whole_server_set() {
    let test = "valkey_refuses_a_whole_server_set";
    let Some(cell) = cell(test, "valkey").await else {
        return;
    };
    let out = Job::new(&cell.image(), &unique("net"))
        .env("DB_HOST", "nowhere.invalid")
        .env("DB_NAME", "*")
        .env("STORAGE_LOCAL_ALLOW_EPHEMERAL", "true")
        .run()
        .await
        .unwrap();
    out.assert_code(2, "DB_NAME=* with the Valkey image");
    assert!(out.stderr.contains("DB_NAME"), "{}", out.stderr);
}
