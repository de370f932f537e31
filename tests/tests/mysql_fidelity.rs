//! Fidelity of the MySQL and MariaDB cells: the hard-case database (`harness::mysql_hard`)
//! backed up by the real image as the application user and restored as root into a fresh
//! server must read back identical, class by class; plus the refusals and warnings around it
//! (another database name, a missing definer account, a small max_allowed_packet on the
//! target, a clean restore that fails midway, FLOAT columns without a key).
//!
//! Every server runs with `--default-time-zone=Europe/Berlin --max-allowed-packet=64M` unless a
//! scenario says otherwise. Backups go to a local directory mounted at `/backups`.

use std::path::Path;

use harness::containers::{ready_or_skip, shared_dir, unique, Job, JobOutput, MysqlContainer};
use harness::matrix::{Cell, Matrix};
use harness::mysql_hard::{
    self as hard, classes, diff, fingerprint, report, Class, Fingerprint, Flavor, Part, SERVER_ARGS,
};

const APP_DB: &str = MysqlContainer::APP_DB;

/// The selected MySQL-family cells, when Docker and their images are there.
async fn ready(test: &str) -> Option<Vec<Cell>> {
    let matrix = Matrix::load().unwrap();
    let cells = matrix.cells_from_env(Some("mysql")).unwrap();
    let images: Vec<String> = cells
        .iter()
        .flat_map(|c| [c.image(), c.server.clone()])
        .collect();
    ready_or_skip(test, &images).await.then_some(cells)
}

/// The connection variables of a job against `server` as `user`, into or from `db`.
fn db_env(server: &MysqlContainer, user: &str, password: &str, db: &str) -> Vec<(String, String)> {
    [
        ("DB_ENGINE", "mysql"),
        ("DB_HOST", server.name.as_str()),
        ("DB_PORT", "3306"),
        ("DB_NAME", db),
        ("DB_USERNAME", user),
        ("DB_PASSWORD", password),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

fn app_env(server: &MysqlContainer) -> Vec<(String, String)> {
    db_env(
        server,
        MysqlContainer::APP_USER,
        &server.app_password,
        APP_DB,
    )
}

fn root_env(server: &MysqlContainer, db: &str) -> Vec<(String, String)> {
    db_env(server, "root", &server.root_password, db)
}

/// Backs up `app_db` on `server` as the application user into `dir` under `key`.
async fn backup(
    cell: &Cell,
    network: &str,
    server: &MysqlContainer,
    dir: &Path,
    key: &str,
    extra: &[(&str, &str)],
) -> JobOutput {
    let mut job = Job::new(&cell.image(), network)
        .envs(&app_env(server))
        .env("BACKUP_PATH", key)
        .mount(dir, "/backups");
    for (k, v) in extra {
        job = job.env(k, *v);
    }
    job.run().await.unwrap()
}

/// Restores `key` from `dir` into `db` on `server` with the connection variables `env`.
async fn restore(
    cell: &Cell,
    network: &str,
    env: &[(String, String)],
    dir: &Path,
    key: &str,
    extra: &[(&str, &str)],
) -> JobOutput {
    let mut job = Job::new(&cell.image(), network)
        .envs(env)
        .env("OPERATION_TYPE", "restore")
        .env("BACKUP_PATH", key)
        .mount(dir, "/backups");
    for (k, v) in extra {
        job = job.env(k, *v);
    }
    job.run().await.unwrap()
}

fn manifest(dir: &Path, key: &str) -> Option<serde_json::Value> {
    let bytes = std::fs::read(dir.join(format!("{key}.manifest.json"))).ok()?;
    Some(serde_json::from_slice(&bytes).expect("the manifest is JSON"))
}

/// A server for the scenarios, seeded with `parts` (as root) when any are given.
async fn source(cell: &Cell, network: &str, parts: &[Part]) -> MysqlContainer {
    let server = MysqlContainer::start_with(&cell.server, network, &SERVER_ARGS)
        .await
        .unwrap();
    let started = std::time::Instant::now();
    hard::seed(&server, Flavor::of(cell), APP_DB, parts)
        .await
        .unwrap_or_else(|e| panic!("{}: seeding: {e:#}", cell.name));
    eprintln!(
        "{}: seeded {} parts in {:.1} s",
        cell.name,
        parts.len(),
        started.elapsed().as_secs_f64()
    );
    server
}

/// A fresh server without the database (the restore creates it); with the definers' accounts
/// when `accounts` is set.
async fn target(cell: &Cell, network: &str, args: &[&str], accounts: bool) -> MysqlContainer {
    let server = MysqlContainer::start_with(&cell.server, network, args)
        .await
        .unwrap();
    if accounts {
        server
            .root("", &hard::accounts_sql(Flavor::of(cell)))
            .await
            .unwrap();
    }
    server
        .root("", &format!("DROP DATABASE {APP_DB}"))
        .await
        .unwrap();
    server
}

async fn database_exists(server: &MysqlContainer, db: &str) -> bool {
    let n = server
        .root(
            "",
            &format!(
                "SELECT COUNT(*) FROM information_schema.schemata WHERE schema_name = {}",
                hard::literal(db)
            ),
        )
        .await
        .unwrap();
    n == "1"
}

async fn table_count(server: &MysqlContainer, db: &str) -> u64 {
    server
        .root(
            "",
            &format!(
                "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = {}",
                hard::literal(db)
            ),
        )
        .await
        .unwrap()
        .parse()
        .unwrap()
}

/// What the seeding must have stored for the comparison to mean anything.
fn check_seeded(cell: &Cell, fp: &Fingerprint, parts: &[Part]) {
    let maria = Flavor::of(cell) == Flavor::Mariadb;
    let defaults = fp.text_of(Class::Database, "defaults").unwrap();
    assert_eq!(
        defaults,
        format!("{}\t{}", hard::DB_CHARSET, hard::DB_COLLATION),
        "{}",
        cell.name
    );
    if parts.contains(&Part::Bulk) {
        assert_eq!(
            fp.rows_of("bulk").unwrap().count as u64,
            hard::BULK_ROWS,
            "{}",
            cell.name
        );
    }
    if parts.contains(&Part::History) && maria {
        let history = match fp.get(Class::History, "versioned") {
            Some(hard::Value::Rows(r)) => r.count,
            other => panic!("{}: no history read: {other:?}", cell.name),
        };
        assert_eq!(history, 5, "{}: rows FOR SYSTEM_TIME ALL", cell.name);
    }
    if parts.contains(&Part::Sequences) && maria {
        let seq = fp.text_of(Class::Sequences, "sequence seq_cycle").unwrap();
        assert!(seq.ends_with(" 1 2"), "{}: cycled twice: {seq}", cell.name);
    }
    if parts.contains(&Part::Views) {
        let view = fp.text_of(Class::Definitions, "view report_v").unwrap();
        assert!(
            view.contains("DEFINER=`report_owner`@`%`"),
            "{}: {view}",
            cell.name
        );
    }
}

/// Reads `db` from `server`, naming the cell in any error.
async fn read(cell: &Cell, server: &MysqlContainer, db: &str) -> Fingerprint {
    let started = std::time::Instant::now();
    let fp = fingerprint(server, Flavor::of(cell), db)
        .await
        .unwrap_or_else(|e| panic!("{}: reading {db}: {e:#}", cell.name));
    eprintln!(
        "{}: read {db} in {:.1} s",
        cell.name,
        started.elapsed().as_secs_f64()
    );
    fp
}

/// Logs the differences by class and returns them as one problem, or none.
fn compare(
    cell: &Cell,
    what: &str,
    expected: &Fingerprint,
    actual: &Fingerprint,
) -> Option<String> {
    let d = diff(expected, actual);
    if d.is_empty() {
        eprintln!("{}: {what}: identical", cell.name);
        return None;
    }
    let names: Vec<String> = classes(&d).iter().map(|c| c.to_string()).collect();
    eprintln!(
        "{}: {what}: {} differences in classes {}:\n{}",
        cell.name,
        d.len(),
        names.join(", "),
        report(&d)
    );
    Some(format!(
        "{what}: differs in {} ({} differences):\n{}",
        names.join(", "),
        d.len(),
        report(&d)
    ))
}

fn finish(test: &str, problems: Vec<String>) {
    assert!(problems.is_empty(), "{test}:\n{}", problems.join("\n\n"));
}

#[tokio::test(flavor = "multi_thread")]
async fn hard_cases_restore_identically_into_a_fresh_server() {
    let test = "hard_cases_restore_identically_into_a_fresh_server";
    let Some(cells) = ready(test).await else {
        return;
    };
    let mut problems = Vec::new();
    for cell in &cells {
        let network = unique("net");
        let (src, tgt) = tokio::join!(
            source(cell, &network, &Part::ALL),
            target(cell, &network, &SERVER_ARGS, true)
        );
        let before = read(cell, &src, APP_DB).await;
        check_seeded(cell, &before, &Part::ALL);

        let dir = shared_dir().unwrap();
        let key = format!("{}/hard.sql.zst", cell.name);
        let out = backup(cell, &network, &src, dir.path(), &key, &[]).await;
        if out.code != 0 {
            problems.push(format!(
                "{}: backup exited {}:\n{}",
                cell.name, out.code, out.stderr
            ));
            continue;
        }
        let m = manifest(dir.path(), &key).expect("a successful backup has a manifest");
        problems.extend(
            check_manifest(&m)
                .into_iter()
                .map(|p| format!("{}: manifest: {p}", cell.name)),
        );

        let out = restore(
            cell,
            &network,
            &root_env(&tgt, APP_DB),
            dir.path(),
            &key,
            &[],
        )
        .await;
        if out.code != 0 {
            problems.push(format!(
                "{}: restore exited {}:\n{}",
                cell.name, out.code, out.stderr
            ));
            continue;
        }
        let after = read(cell, &tgt, APP_DB).await;
        if let Some(p) = compare(cell, "restore into a fresh server", &before, &after) {
            problems.push(format!("{}: {p}", cell.name));
        }
    }
    finish(test, problems);
}

/// The manifest's `engine_details` for the hard-case database.
fn check_manifest(m: &serde_json::Value) -> Vec<String> {
    let mut problems = Vec::new();
    let details = &m["engine_details"];
    if details.is_null() {
        return vec![format!("no engine_details: {m}")];
    }
    if details["default_character_set"] != hard::DB_CHARSET {
        problems.push(format!("default_character_set: {details}"));
    }
    if details["default_collation"] != hard::DB_COLLATION {
        problems.push(format!("default_collation: {details}"));
    }
    let definers: Vec<&str> = details["definers"]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
        .unwrap_or_default();
    for account in ["'report_owner'@'%'", "'app_user'@'%'"] {
        if !definers.contains(&account) {
            problems.push(format!("definers lack {account}: {details}"));
        }
    }
    match details["max_statement_bytes"].as_u64() {
        Some(n) if n >= hard::BIG_ROW_BYTES => {}
        _ => problems.push(format!(
            "max_statement_bytes is not a number ≥ {}: {details}",
            hard::BIG_ROW_BYTES
        )),
    }
    let warnings = m["warnings"].to_string();
    if warnings.contains("floats.") {
        problems.push(format!(
            "a FLOAT with a primary key needs no warning: {warnings}"
        ));
    }
    problems
}

/// Everything but the big row and the 200,000 rows, which have nothing to do with names.
fn without_volume() -> Vec<Part> {
    Part::ALL
        .into_iter()
        .filter(|p| !matches!(p, Part::BigRow | Part::Bulk))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn restore_under_another_name_is_identical_but_for_the_name() {
    let test = "restore_under_another_name_is_identical_but_for_the_name";
    let Some(cells) = ready(test).await else {
        return;
    };
    let parts = without_volume();
    let mut problems = Vec::new();
    for cell in &cells {
        let network = unique("net");
        let src = source(cell, &network, &parts).await;
        let before = read(cell, &src, APP_DB).await;
        check_seeded(cell, &before, &parts);
        let dir = shared_dir().unwrap();
        let key = format!("{}/renamed.sql.zst", cell.name);
        let out = backup(cell, &network, &src, dir.path(), &key, &[]).await;
        if out.code != 0 {
            problems.push(format!(
                "{}: backup exited {}:\n{}",
                cell.name, out.code, out.stderr
            ));
            continue;
        }
        let copy = "app_copy";
        let out = restore(cell, &network, &root_env(&src, copy), dir.path(), &key, &[]).await;
        if out.code != 0 {
            let lower = out.stderr.to_lowercase();
            if Flavor::of(cell) == Flavor::Mariadb
                && (lower.contains("nextval") || lower.contains("sequence"))
            {
                eprintln!(
                    "{}: restore as {copy} refused (exit {}), naming the sequence default:\n{}",
                    cell.name, out.code, out.stderr
                );
            } else {
                problems.push(format!(
                    "{}: restore as {copy} exited {}:\n{}",
                    cell.name, out.code, out.stderr
                ));
            }
            continue;
        }
        let after = read(cell, &src, copy).await;
        if Flavor::of(cell) == Flavor::Mariadb {
            let create = after
                .text_of(Class::Definitions, "table uses_seq")
                .unwrap_or_default()
                .to_string();
            if create.contains(&format!("`{APP_DB}`")) {
                problems.push(format!(
                    "{}: {copy}.uses_seq still takes its default from {APP_DB}'s sequence:\n{create}",
                    cell.name
                ));
            } else {
                eprintln!(
                    "{}: restore as {copy}: the NEXTVAL default names {copy}'s own sequence",
                    cell.name
                );
            }
        }
        // The copy's views read the copy's tables, not the source's.
        let views = src
            .root(
                "",
                &format!(
                    "SELECT table_name, view_definition FROM information_schema.views \
                     WHERE table_schema = '{copy}' AND view_definition LIKE '%`{APP_DB}`%'"
                ),
            )
            .await
            .unwrap();
        if !views.is_empty() {
            problems.push(format!(
                "{}: views in {copy} still read {APP_DB}:\n{views}",
                cell.name
            ));
        }
        let (expected, actual) = (before.unqualified(APP_DB), after.unqualified(copy));
        if let Some(p) = compare(cell, &format!("restore as {copy}"), &expected, &actual) {
            problems.push(format!("{}: {p}", cell.name));
        }
        // The source is untouched.
        let again = read(cell, &src, APP_DB).await;
        if let Some(p) = compare(cell, "the source after the restore", &before, &again) {
            problems.push(format!("{}: {p}", cell.name));
        }
    }
    finish(test, problems);
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_definer_account_is_refused_then_rewritten_on_request() {
    let test = "missing_definer_account_is_refused_then_rewritten_on_request";
    let Some(cells) = ready(test).await else {
        return;
    };
    let parts = [Part::Text, Part::Routines, Part::Views];
    let mut problems = Vec::new();
    for cell in &cells {
        let network = unique("net");
        let (src, tgt) = tokio::join!(
            source(cell, &network, &parts),
            target(cell, &network, &SERVER_ARGS, false)
        );
        let before = read(cell, &src, APP_DB).await;
        let dir = shared_dir().unwrap();
        let key = format!("{}/definers.sql.zst", cell.name);
        let out = backup(cell, &network, &src, dir.path(), &key, &[]).await;
        out.assert_ok(&format!("{} backup", cell.name));

        // Disaster recovery onto a server without report_owner: refused before any write.
        let env = root_env(&tgt, APP_DB);
        let out = restore(cell, &network, &env, dir.path(), &key, &[]).await;
        let exists = database_exists(&tgt, APP_DB).await;
        let tables = table_count(&tgt, APP_DB).await;
        if out.code != 5 || !out.stderr.contains(hard::REPORT_OWNER) || tables != 0 {
            problems.push(format!(
                "{}: a restore naming a missing definer: expected exit 5 naming {} and nothing \
                 written; got exit {}, database exists: {exists}, {tables} tables:\n{}",
                cell.name,
                hard::REPORT_OWNER,
                out.code,
                out.stderr
            ));
        } else {
            eprintln!(
                "{}: missing definer refused (exit 5, database exists: {exists})",
                cell.name
            );
        }
        if exists {
            tgt.root("", &format!("DROP DATABASE {APP_DB}"))
                .await
                .unwrap();
        }

        // With RESTORE_DEFINER=current_user, the restoring account owns everything.
        let out = restore(
            cell,
            &network,
            &env,
            dir.path(),
            &key,
            &[("RESTORE_DEFINER", "current_user")],
        )
        .await;
        if out.code != 0 {
            problems.push(format!(
                "{}: restore with RESTORE_DEFINER=current_user exited {}:\n{}",
                cell.name, out.code, out.stderr
            ));
            continue;
        }
        let definer = tgt
            .root(
                "",
                &format!(
                    "SELECT definer FROM information_schema.views \
                     WHERE table_schema = '{APP_DB}' AND table_name = 'report_v'"
                ),
            )
            .await
            .unwrap();
        if definer != "root@%" {
            problems.push(format!(
                "{}: the view's definer after RESTORE_DEFINER=current_user is {definer:?}, not root@%",
                cell.name
            ));
        }
        // The data is the same; only the definers changed.
        let after = read(cell, &tgt, APP_DB).await;
        let d: Vec<_> = diff(&before, &after)
            .into_iter()
            .filter(|d| d.class != Class::Definitions)
            .collect();
        if !d.is_empty() {
            problems.push(format!(
                "{}: after RESTORE_DEFINER=current_user, beyond the definitions:\n{}",
                cell.name,
                report(&d)
            ));
        }
    }
    finish(test, problems);
}

#[tokio::test(flavor = "multi_thread")]
async fn small_max_allowed_packet_on_the_target_is_refused_before_writing() {
    let test = "small_max_allowed_packet_on_the_target_is_refused_before_writing";
    let Some(cells) = ready(test).await else {
        return;
    };
    let mut problems = Vec::new();
    for cell in &cells {
        let network = unique("net");
        let small = [
            "--default-time-zone=Europe/Berlin",
            "--max-allowed-packet=4M",
        ];
        let (src, tgt) = tokio::join!(
            source(cell, &network, &[Part::BigRow]),
            target(cell, &network, &small, true)
        );
        let dir = shared_dir().unwrap();
        let key = format!("{}/big-row.sql.zst", cell.name);
        let out = backup(cell, &network, &src, dir.path(), &key, &[]).await;
        if out.code != 0 {
            problems.push(format!(
                "{}: backup of a {} byte row exited {}:\n{}",
                cell.name,
                hard::BIG_ROW_BYTES,
                out.code,
                out.stderr
            ));
            continue;
        }
        let out = restore(
            cell,
            &network,
            &root_env(&tgt, APP_DB),
            dir.path(),
            &key,
            &[],
        )
        .await;
        let exists = database_exists(&tgt, APP_DB).await;
        let names_size = out
            .stderr
            .split(|c: char| !c.is_ascii_digit())
            .any(|digits| digits.len() >= 7)
            || out.stderr.contains("MiB")
            || out.stderr.contains("MB");
        if out.code != 5 || !out.stderr.contains("max_allowed_packet") || !names_size || exists {
            problems.push(format!(
                "{}: into a server with max_allowed_packet=4M: expected exit 5 naming \
                 max_allowed_packet and a size, and no database; got exit {}, database exists: \
                 {exists}:\n{}",
                cell.name, out.code, out.stderr
            ));
        } else {
            eprintln!(
                "{}: small max_allowed_packet refused before writing",
                cell.name
            );
        }
    }
    finish(test, problems);
}

#[tokio::test(flavor = "multi_thread")]
async fn clean_restore_that_fails_after_the_drop_says_the_target_is_partial() {
    let test = "clean_restore_that_fails_after_the_drop_says_the_target_is_partial";
    let Some(cells) = ready(test).await else {
        return;
    };
    let parts = [
        Part::Text,
        Part::Bytes,
        Part::Numbers,
        Part::Floats,
        Part::Temporal,
        Part::Choices,
        Part::Json,
        Part::Generated,
        Part::ForeignKeys,
        Part::Counters,
    ];
    let mut problems = Vec::new();
    for cell in &cells {
        let network = unique("net");
        let (src, tgt) = tokio::join!(
            source(cell, &network, &parts),
            MysqlContainer::start_with(&cell.server, &network, &SERVER_ARGS)
        );
        let tgt = tgt.unwrap();
        let dir = shared_dir().unwrap();
        let key = format!("{}/partial.sql.zst", cell.name);
        let out = backup(cell, &network, &src, dir.path(), &key, &[]).await;
        out.assert_ok(&format!("{} backup", cell.name));

        // A non-empty target, and an account that may do anything but only a few writes an
        // hour: the restore checks pass, the drop and the first tables go through, then the
        // server refuses the next statement.
        let password = "restorer-Pw-31";
        tgt.root(
            APP_DB,
            &format!(
                "CREATE TABLE old_stuff (id INT PRIMARY KEY); INSERT INTO old_stuff VALUES (1);
                 CREATE USER 'restorer'@'%' IDENTIFIED BY '{password}' WITH MAX_UPDATES_PER_HOUR 12;
                 GRANT ALL ON *.* TO 'restorer'@'%' WITH GRANT OPTION;"
            ),
        )
        .await
        .unwrap();
        let env = db_env(&tgt, "restorer", password, APP_DB);
        let out = restore(
            cell,
            &network,
            &env,
            dir.path(),
            &key,
            &[("RESTORE_CLEAN", "true")],
        )
        .await;
        let old_gone = tgt
            .root(
                "",
                &format!(
                    "SELECT COUNT(*) FROM information_schema.tables \
                     WHERE table_schema = '{APP_DB}' AND table_name = 'old_stuff'"
                ),
            )
            .await
            .unwrap()
            == "0";
        let tables = table_count(&tgt, APP_DB).await;
        eprintln!(
            "{}: clean restore with a write limit: exit {}, old table dropped: {old_gone}, \
             {tables} tables now",
            cell.name, out.code
        );
        if !old_gone {
            problems.push(format!(
                "{}: the restore failed before the drop (exit {}), so this scenario tests nothing:\n{}",
                cell.name, out.code, out.stderr
            ));
        } else if out.code == 0 || !out.stderr.contains("partial") {
            problems.push(format!(
                "{}: a clean restore that failed after the drop: expected a non-zero exit and \
                 \"partial\" in the log; got exit {}:\n{}",
                cell.name, out.code, out.stderr
            ));
        }
    }
    finish(test, problems);
}

#[tokio::test(flavor = "multi_thread")]
async fn float_columns_without_a_key_are_named_and_strict_fidelity_fails() {
    let test = "float_columns_without_a_key_are_named_and_strict_fidelity_fails";
    let Some(cells) = ready(test).await else {
        return;
    };
    let mut problems = Vec::new();
    for cell in &cells {
        let network = unique("net");
        let src = MysqlContainer::start_with(&cell.server, &network, &SERVER_ARGS)
            .await
            .unwrap();
        src.root(
            APP_DB,
            "CREATE TABLE readings (label VARCHAR(10), reading FLOAT, exact DOUBLE);
             INSERT INTO readings VALUES ('a', 1.0000001, 0.1), ('b', 16777216, 1);
             CREATE TABLE keyed (id INT PRIMARY KEY, f FLOAT);
             INSERT INTO keyed VALUES (1, 1.0000001);",
        )
        .await
        .unwrap();
        if cell.product() == "mariadb" {
            src.root(
                APP_DB,
                "CREATE TABLE spots (id INT PRIMARY KEY, pt POINT REF_SYSTEM_ID=4326);",
            )
            .await
            .unwrap();
        }
        let dir = shared_dir().unwrap();
        let key = format!("{}/no-key.sql.zst", cell.name);
        let out = backup(cell, &network, &src, dir.path(), &key, &[]).await;
        out.assert_ok(&format!("{} backup", cell.name));
        let m = manifest(dir.path(), &key).unwrap();
        let warnings: Vec<String> = m["warnings"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|w| w.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        if !warnings.iter().any(|w| w.contains("readings.reading")) {
            problems.push(format!(
                "{}: no warning names readings.reading: {warnings:?}\n{}",
                cell.name, out.stderr
            ));
        }
        if cell.product() == "mariadb"
            && !warnings
                .iter()
                .any(|w| w.contains("spots.pt (REF_SYSTEM_ID=4326)"))
        {
            problems.push(format!(
                "{}: no warning names the SRID of spots.pt: {warnings:?}",
                cell.name
            ));
        }
        if warnings.iter().any(|w| w.contains("keyed.f")) {
            problems.push(format!(
                "{}: keyed.f has a primary key, yet: {warnings:?}",
                cell.name
            ));
        }

        let strict_key = format!("{}/no-key-strict.sql.zst", cell.name);
        let out = backup(
            cell,
            &network,
            &src,
            dir.path(),
            &strict_key,
            &[("STRICT_FIDELITY", "true")],
        )
        .await;
        let has_manifest = manifest(dir.path(), &strict_key).is_some();
        if out.code != 7 || has_manifest {
            problems.push(format!(
                "{}: STRICT_FIDELITY=true with a lossy FLOAT: expected exit 7 and no manifest; \
                 got exit {}, manifest written: {has_manifest}:\n{}",
                cell.name, out.code, out.stderr
            ));
        } else {
            eprintln!(
                "{}: STRICT_FIDELITY refused the lossy FLOAT (exit 7)",
                cell.name
            );
        }
    }
    finish(test, problems);
}

/// One change the comparer must see, in exactly one class.
struct Mutation {
    what: &'static str,
    class: Class,
    object: &'static str,
    sql: &'static str,
    mariadb_only: bool,
}

const MUTATIONS: &[Mutation] = &[
    Mutation {
        what: "a FLOAT one ulp up",
        class: Class::Rows,
        object: "floats",
        sql: "UPDATE floats SET f = 1.0000002384185791 WHERE id = 3",
        mariadb_only: false,
    },
    Mutation {
        what: "a DOUBLE one ulp from the lowest",
        class: Class::Rows,
        object: "floats",
        sql: "UPDATE floats SET d = -1.7976931348623155e308 WHERE id = 2",
        mariadb_only: false,
    },
    Mutation {
        what: "the sign of a zero FLOAT",
        class: Class::Rows,
        object: "floats",
        sql: "UPDATE floats SET f = 0 WHERE id = 7",
        mariadb_only: false,
    },
    Mutation {
        what: "a dropped history row",
        class: Class::History,
        object: "versioned",
        sql: "SET @cut = (SELECT MIN(row_end) FROM versioned FOR SYSTEM_TIME ALL);
              DELETE HISTORY FROM versioned BEFORE SYSTEM_TIME @cut + INTERVAL 1 MICROSECOND",
        mariadb_only: true,
    },
    Mutation {
        what: "a sequence's round",
        class: Class::Sequences,
        object: "sequence seq_cycle",
        sql: "SELECT SETVAL(seq_cycle, 2, 0, 3)",
        mariadb_only: true,
    },
    Mutation {
        what: "the database's collation",
        class: Class::Database,
        object: "defaults",
        sql: "ALTER DATABASE app_db COLLATE utf8mb4_bin",
        mariadb_only: false,
    },
    Mutation {
        what: "the order of two triggers",
        class: Class::Definitions,
        object: "trigger trig_second",
        sql: "DROP TRIGGER trig_second;
              CREATE TRIGGER trig_second BEFORE INSERT ON trig_target FOR EACH ROW
                  PRECEDES trig_zero SET NEW.log = CONCAT(NEW.log, 'second;')",
        mariadb_only: false,
    },
    Mutation {
        what: "an AUTO_INCREMENT counter",
        class: Class::Counters,
        object: "auto_increment moved",
        sql: "ALTER TABLE moved AUTO_INCREMENT = 2000",
        mariadb_only: false,
    },
    Mutation {
        what: "a view's definition",
        class: Class::Definitions,
        object: "view report_summary",
        sql: "CREATE OR REPLACE SQL SECURITY INVOKER VIEW report_summary AS
                  SELECT COUNT(*) + 0 AS regions, MAX(total) AS top FROM report_v",
        mariadb_only: false,
    },
    Mutation {
        what: "one byte of the 22 MB row",
        class: Class::Rows,
        object: "big",
        sql: "UPDATE big SET payload = INSERT(payload, 1000001, 1, X'01') WHERE id = 1",
        mariadb_only: false,
    },
    Mutation {
        what: "a TIMESTAMP by one second",
        class: Class::Rows,
        object: "temporal",
        sql:
            "SET time_zone = '+00:00'; UPDATE temporal SET ts = ts + INTERVAL 1 SECOND WHERE id = 8",
        mariadb_only: false,
    },
];

/// The comparer itself: one change per class, each reported in exactly that class. Runs on
/// mariadb-11.8 and mysql-9.7 when they are selected.
#[tokio::test(flavor = "multi_thread")]
async fn the_comparer_names_the_class_of_each_change() {
    let test = "the_comparer_names_the_class_of_each_change";
    let Some(cells) = ready(test).await else {
        return;
    };
    let cells: Vec<&Cell> = cells
        .iter()
        .filter(|c| c.name == "mariadb-11.8" || c.name == "mysql-9.7")
        .collect();
    if cells.is_empty() {
        eprintln!("{test}: runs on mariadb-11.8 and mysql-9.7; neither is selected");
        return;
    }
    for cell in cells {
        let flavor = Flavor::of(cell);
        let network = unique("net");
        let server = source(cell, &network, &Part::ALL).await;
        let mut before = read(cell, &server, APP_DB).await;
        check_seeded(cell, &before, &Part::ALL);
        assert!(
            diff(&before, &read(cell, &server, APP_DB).await).is_empty(),
            "{}: two reads of an unchanged database differ",
            cell.name
        );
        for m in MUTATIONS {
            if m.mariadb_only && flavor != Flavor::Mariadb {
                continue;
            }
            server
                .root(APP_DB, m.sql)
                .await
                .unwrap_or_else(|e| panic!("{}: {}: {e:#}", cell.name, m.what));
            let after = read(cell, &server, APP_DB).await;
            let d = diff(&before, &after);
            assert_eq!(
                classes(&d),
                [m.class],
                "{}: {}: expected exactly the {} class:\n{}",
                cell.name,
                m.what,
                m.class,
                report(&d)
            );
            assert!(
                d.iter().any(|x| x.object == m.object),
                "{}: {}: {} not named:\n{}",
                cell.name,
                m.what,
                m.object,
                report(&d)
            );
            eprintln!("{}: {} → {}", cell.name, m.what, report(&d));
            before = after;
        }
    }
}
