//! Whole-server sets through `job::run` with an engine whose "databases" are shell commands
//! writing known bytes, over a real local directory: the set's layout and manifest, a failing
//! database leaving nothing behind, and a restore that replays the globals first and then the
//! chosen databases. The real engines are tested through their images (tests/tests/server_sets.rs).

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use runner_core::config::Operation;
use runner_core::engine::{DatabaseList, Dump, DumpFormat, Globals, GlobalsRestored};
use runner_core::{
    DbConfig, Engine, EngineInfo, EnvReader, Error, ExitCode, Manifest, ServerInfo, ToolCommand,
};

static INFO: EngineInfo = EngineInfo {
    name: "fake",
    display_name: "Fake",
    aliases: &["fake"],
    url_schemes: &["fake"],
    tls_url_schemes: &[],
    default_port: 1,
    default_user: "user",
    default_database: None,
    file_extension: "txt",
    format: "fake-text",
    built_for: None,
    server_scope: true,
};

/// Databases and what happens to them come from the test through these.
static DATABASES: Mutex<Vec<String>> = Mutex::new(Vec::new());
static RESTORED_INTO: Mutex<Option<PathBuf>> = Mutex::new(None);
static EVENTS: Mutex<Vec<String>> = Mutex::new(Vec::new());

fn event(e: String) {
    EVENTS.lock().unwrap().push(e);
}

struct Fake;

impl Engine for Fake {
    fn info() -> &'static EngineInfo {
        &INFO
    }

    fn from_env(_: &mut EnvReader<'_>) -> Self {
        Fake
    }

    async fn preflight(&self, _: &DbConfig, _: Operation) -> Result<ServerInfo, Error> {
        Ok(ServerInfo {
            server_version: "1.0".into(),
            client_version: "1.0".into(),
            ..ServerInfo::default()
        })
    }

    fn backup_command(&self, db: &DbConfig, _: &ServerInfo) -> Result<ToolCommand, Error> {
        let mut cmd = ToolCommand::new("sh");
        if db.name == "broken" {
            // Some bytes, then a failure, slowly enough that other dumps are under way.
            cmd.args([
                "-c",
                "echo partial; sleep 0.3; echo 'database \"broken\" does not exist' >&2; exit 3",
            ]);
        } else {
            cmd.args(["-c", "sleep 0.1; printf 'rows of %s\\n' \"$0\"", &db.name]);
        }
        Ok(cmd)
    }

    async fn prepare_restore(
        &self,
        db: &DbConfig,
        _: &ServerInfo,
        m: &Manifest,
    ) -> Result<(), Error> {
        assert!(m.is_set_member());
        event(format!("prepare {}", db.name));
        Ok(())
    }

    fn restore_command(&self, db: &DbConfig, _: &Manifest) -> Result<ToolCommand, Error> {
        let dir = RESTORED_INTO.lock().unwrap().clone().unwrap();
        let mut cmd = ToolCommand::new("sh");
        cmd.args(["-c", "cat > \"$0\""])
            .arg(dir.join(format!("{}.restored", db.name)));
        Ok(cmd)
    }

    async fn list_databases(&self, _: &DbConfig) -> Result<DatabaseList, Error> {
        Ok(DatabaseList {
            databases: DATABASES.lock().unwrap().clone(),
            skipped: vec!["database \"secret\": no CONNECT privilege".into()],
        })
    }

    async fn dump_globals(&self, _: &DbConfig, _: &ServerInfo) -> Result<Globals, Error> {
        let mut cmd = ToolCommand::new("sh");
        cmd.args(["-c", "echo 'CREATE ROLE app;'"]);
        Ok(Globals {
            dump: Dump::of_command(cmd)?,
            format: DumpFormat {
                name: "fake-globals",
                extension: "sql",
            },
            skipped: vec!["role passwords: not readable".into()],
        })
    }

    async fn check_restore_target(&self, db: &DbConfig, _: &Manifest) -> Result<(), Error> {
        event(format!("check {}", db.name));
        Ok(())
    }

    async fn restore_globals(
        &self,
        _: &DbConfig,
        _: &ServerInfo,
        _: &Manifest,
        script: Vec<u8>,
    ) -> Result<GlobalsRestored, Error> {
        event(format!(
            "globals {}",
            String::from_utf8_lossy(&script).trim()
        ));
        Ok(GlobalsRestored {
            created: vec!["app".into()],
            kept: vec!["postgres".into()],
            warnings: vec![],
        })
    }
}

/// Every file under `root`, relative to it, sorted.
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
    found.sort();
    found
}

async fn run(dir: &Path, extra: &[(&str, &str)]) -> ExitCode {
    let mut vars: Vec<(String, String)> = vec![
        ("DB_HOST".into(), "localhost".into()),
        ("DB_NAME".into(), "*".into()),
        ("JOB_ID".into(), "nightly".into()),
        ("STORAGE_LOCAL_DIR".into(), dir.display().to_string()),
        ("STORAGE_LOCAL_ALLOW_EPHEMERAL".into(), "true".into()),
    ];
    vars.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let lookup = move |name: &str| {
        vars.iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    runner_core::job::run::<Fake>(&lookup).await
}

/// One test, in steps: the statics are shared.
#[tokio::test(flavor = "multi_thread")]
async fn a_set_is_stored_whole_or_not_at_all_and_restores_globals_first() {
    let dir = tempfile::tempdir().unwrap();
    *DATABASES.lock().unwrap() = ["app", "shop", "tmp_1"].map(String::from).to_vec();

    // A set: the globals and the chosen databases, each its own object; the manifest last.
    let code = run(
        dir.path(),
        &[("DB_EXCLUDE", "tmp_*"), ("SERVER_PARALLELISM", "2")],
    )
    .await;
    assert_eq!(code, ExitCode::Success);
    let files = files_under(dir.path());
    let set_dir = files
        .iter()
        .find(|f| f.ends_with("globals.sql.zst"))
        .expect("globals object")
        .trim_end_matches("globals.sql.zst")
        .to_string();
    assert!(
        set_dir.starts_with("fake/_server/") && set_dir.ends_with("-nightly/"),
        "{set_dir}"
    );
    let stored: Vec<&str> = files
        .iter()
        .filter(|f| !f.starts_with(".backup-runner"))
        .map(|f| f.trim_start_matches(&set_dir))
        .collect();
    assert_eq!(
        stored,
        [
            "app.txt.zst",
            "globals.sql.zst",
            "globals.sql.zst.manifest.json",
            "shop.txt.zst"
        ]
    );
    let manifest_path = dir
        .path()
        .join(&set_dir)
        .join("globals.sql.zst.manifest.json");
    let m = Manifest::from_json(&std::fs::read(&manifest_path).unwrap()).unwrap();
    assert_eq!((m.manifest_version, m.database.as_str()), (3, "*"));
    let set = m.set.as_ref().unwrap();
    let names: Vec<&str> = set.members.iter().map(|x| x.database.as_str()).collect();
    assert_eq!(names, ["app", "shop"]);
    assert_eq!(set.parallelism, 2);
    for member in &set.members {
        let bytes = std::fs::read(dir.path().join(&member.object_key)).unwrap();
        assert_eq!(bytes.len() as u64, member.bytes);
        use sha2::Digest;
        assert_eq!(hex::encode(sha2::Sha256::digest(&bytes)), member.sha256);
        let text = zstd::decode_all(&bytes[..]).unwrap();
        assert_eq!(text, format!("rows of {}\n", member.database).as_bytes());
        assert!(member.is_set_member());
        assert!(member.started_at >= m.started_at && member.finished_at <= m.finished_at);
    }
    for skipped in [
        "no CONNECT privilege",
        "role passwords",
        "\"tmp_1\": excluded by DB_EXCLUDE (tmp_*)",
    ] {
        assert!(
            set.skipped.iter().any(|s| s.contains(skipped)),
            "{skipped}: {:?}",
            set.skipped
        );
    }

    // A database that fails: the job fails naming it, and nothing of the set is left.
    let failing = tempfile::tempdir().unwrap();
    *DATABASES.lock().unwrap() = ["app", "broken", "shop"].map(String::from).to_vec();
    for parallelism in ["1", "3"] {
        let code = run(failing.path(), &[("SERVER_PARALLELISM", parallelism)]).await;
        assert_eq!(code, ExitCode::ToolFailed, "parallelism {parallelism}");
        let left: Vec<String> = files_under(failing.path())
            .into_iter()
            .filter(|f| !f.starts_with(".backup-runner"))
            .collect();
        assert_eq!(left, Vec::<String>::new(), "parallelism {parallelism}");
    }

    // A restore of some of the databases: every target checked, then the globals, then each.
    let restored = tempfile::tempdir().unwrap();
    *RESTORED_INTO.lock().unwrap() = Some(restored.path().to_path_buf());
    EVENTS.lock().unwrap().clear();
    let key = format!("{set_dir}globals.sql.zst");
    let code = run(
        dir.path(),
        &[
            ("OPERATION_TYPE", "restore"),
            ("BACKUP_PATH", &key),
            ("RESTORE_DATABASES", "shop"),
        ],
    )
    .await;
    assert_eq!(code, ExitCode::Success);
    assert_eq!(
        *EVENTS.lock().unwrap(),
        ["check shop", "globals CREATE ROLE app;", "prepare shop"]
    );
    assert_eq!(files_under(restored.path()), ["shop.restored"]);
    assert_eq!(
        std::fs::read_to_string(restored.path().join("shop.restored")).unwrap(),
        "rows of shop\n"
    );

    // `latest` finds the set; a database the set does not hold, and a set restored as one
    // database, are refused before anything is written.
    EVENTS.lock().unwrap().clear();
    let code = run(
        dir.path(),
        &[
            ("OPERATION_TYPE", "restore"),
            ("BACKUP_PATH", "latest"),
            ("RESTORE_DATABASES", "nope"),
        ],
    )
    .await;
    assert_eq!(code, ExitCode::Config);
    let code = run(
        dir.path(),
        &[
            ("OPERATION_TYPE", "restore"),
            ("BACKUP_PATH", &key),
            ("DB_NAME", "app"),
        ],
    )
    .await;
    assert_eq!(code, ExitCode::Config);
    assert_eq!(*EVENTS.lock().unwrap(), Vec::<String>::new());

    // Verify checks every object: a damaged database fails it.
    let code = run(
        dir.path(),
        &[("OPERATION_TYPE", "verify"), ("BACKUP_PATH", &key)],
    )
    .await;
    assert_eq!(code, ExitCode::Success);
    let shop = set.members.iter().find(|x| x.database == "shop").unwrap();
    let path = dir.path().join(&shop.object_key);
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&path, bytes).unwrap();
    let code = run(
        dir.path(),
        &[("OPERATION_TYPE", "verify"), ("BACKUP_PATH", &key)],
    )
    .await;
    assert_eq!(code, ExitCode::Integrity);
}
