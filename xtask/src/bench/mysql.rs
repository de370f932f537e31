//! `cargo xtask bench mysql [--sizes 1024] [--float-rows 1000000]`: the MySQL/MariaDB runner
//! against its own dump tool and client, on the same data in the same run, with a throwaway
//! MariaDB server on this machine. For each database size (MiB):
//!
//! 1. the limit: `mariadb-dump` with the runner's options into /dev/null, and piped into the
//!    `zstd` CLI at the runner's level and threads (the dump plus the same compression);
//! 2. the runner's backup with its defaults, into a local directory and into the S3 server;
//! 3. restore: the client reading a dump file (`mariadb db < dump.sql`) into a fresh database,
//!    against the runner's restore into another one, from the local directory and from S3 (the
//!    runner verifies the object's checksum first, then loads it).
//!
//! Then the cost of the exactness repairs, on a database holding only a table of random FLOAT
//! values (and an INT primary key): the dump tool prints FLOATs with 6 significant digits, so
//! the runner appends a keyed `UPDATE` for every value that does not read back exactly. The
//! dump tool alone against the runner's backup (the difference is the repair query), and the
//! client restoring the plain dump against the runner's restore (the difference is the
//! `UPDATE`s), with the number of repair statements and the rows each restore got wrong.
//!
//! Results go to `benchmarks/mysql.{md,json}`; see `measure` for what is measured.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use harness::{free_port, S3Server};
use serde_json::{json, Value};

use super::measure::{Bench, Run, BUCKET};
use super::report::{self, mib, Style};
use crate::root;

const DEFAULT_SIZES: &[u64] = &[1024];
const DEFAULT_FLOAT_ROWS: u64 = 1_000_000;

/// `mariadb-dump`'s options as the runner passes them to MariaDB 10.11 and later, and the packet
/// limit from its option file.
const DUMP_OPTIONS: &str = "--single-transaction --quick --routines --triggers --events \
    --hex-blob --default-character-set=utf8mb4 --no-tablespaces --skip-add-locks \
    --skip-dump-date --dump-history --max-allowed-packet=1G";

/// The server's settings beyond its defaults.
const SERVER_OPTIONS: &[&str] = &[
    "--max-allowed-packet=1G",
    "--innodb-buffer-pool-size=1G",
    "--skip-log-bin",
];

/// The account the runner and the tools use, over TCP with a password.
const USER: &str = "bench";

const DUMP_NULL: &str = "mariadb-dump to /dev/null";
const DUMP_FILE: &str = "mariadb-dump to a local file";
const BACKUP_LOCAL: &str = "runner backup to a local directory";
const BACKUP_S3: &str = "runner backup to S3";
const CLIENT_RESTORE: &str = "mariadb client from a local file";
const RESTORE_LOCAL: &str = "runner restore from a local directory";
const RESTORE_S3: &str = "runner restore from S3";

const STYLE: Style = Style {
    server: "MariaDB",
    server_cpu_key: "mariadb_cpu_s",
    ratios: &[
        (
            "runner backup (local directory) / mariadb-dump alone",
            BACKUP_LOCAL,
            DUMP_NULL,
        ),
        (
            "runner backup (local directory) / mariadb-dump piped into the same zstd",
            BACKUP_LOCAL,
            "mariadb-dump | zstd",
        ),
        (
            "runner backup to S3 / mariadb-dump alone",
            BACKUP_S3,
            DUMP_NULL,
        ),
        (
            "runner restore (local directory) / the client from a local file",
            RESTORE_LOCAL,
            CLIENT_RESTORE,
        ),
        (
            "runner restore from S3 / the client from a local file",
            RESTORE_S3,
            CLIENT_RESTORE,
        ),
    ],
};

pub fn run(args: &[String]) -> Result<()> {
    let mut sizes = DEFAULT_SIZES.to_vec();
    let mut float_rows = DEFAULT_FLOAT_ROWS;
    let mut iter = args.iter();
    while let Some(a) = iter.next() {
        match a.as_str() {
            "--sizes" => sizes = super::parse_sizes(iter.next())?,
            "--float-rows" => {
                float_rows = iter
                    .next()
                    .context("--float-rows needs a number (0: skip the FLOAT table)")?
                    .replace('_', "")
                    .parse()
                    .context("--float-rows is a number of rows")?;
            }
            other => bail!("bench mysql: unknown argument {other:?}"),
        }
    }
    super::prepare("mysql", "backup-runner-mysql")?;
    let (_copy, runner) = super::runner_copy("backup-runner-mysql")?;
    tokio::runtime::Runtime::new()?.block_on(bench(runner, &sizes, float_rows))
}

async fn bench(runner: PathBuf, sizes: &[u64], float_rows: u64) -> Result<()> {
    let load_start = load_average();
    let s3 = S3Server::start().await?;
    s3.create_bucket(BUCKET).await?;
    let server = MariaDb::start()?;
    let bench = Bench::new(
        bench_env(&server, &s3),
        runner,
        s3.endpoint(),
        s3.pid(),
        server.pid(),
    )?;
    let cnf = bench.path("client.cnf");
    std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(&cnf)?
        .write_all(
            format!(
                "[client]\nhost=127.0.0.1\nport={}\nuser={USER}\npassword={}\n",
                server.port, server.password
            )
            .as_bytes(),
        )?;
    let machine = format!(
        "{}; MariaDB {}, moto {} and the tools on the same machine; zstd CLI {}",
        super::hardware(),
        server.sql(None, "SELECT VERSION();")?.trim(),
        super::moto_version(),
        super::zstd_version()
    );
    println!("bench: {machine}");
    let ctx = Ctx {
        bench: &bench,
        server: &server,
        cnf: cnf.display().to_string(),
    };
    let mut cases = Vec::new();
    for &size in sizes {
        let case = ctx.size_case(size)?;
        case.print();
        cases.push(case);
    }
    if float_rows > 0 {
        let case = ctx.float_case(float_rows)?;
        case.print();
        cases.push(case);
    }
    write(&machine, &load_start, &load_average(), &cases)
}

fn bench_env(server: &MariaDb, s3: &S3Server) -> Vec<(String, String)> {
    [
        ("DB_ENGINE", "mysql".into()),
        ("DB_HOST", "127.0.0.1".into()),
        ("DB_PORT", server.port.to_string()),
        ("DB_USERNAME", USER.into()),
        ("DB_PASSWORD", server.password.clone()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .chain(super::storage_env(s3))
    .collect()
}

/// "0.52 0.58 0.59" (1, 5 and 15 minutes).
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// One database measured: its runs and what was found beside them.
struct Case {
    heading: String,
    db_bytes: u64,
    runs: Vec<Run>,
    /// The runner's own peak RSS (VmHWM, from its last log line), by method.
    runner_rss: BTreeMap<String, u64>,
    /// Sentences under the table.
    notes: Vec<String>,
    /// Figures for the JSON beside the runs.
    details: serde_json::Map<String, Value>,
}

impl Case {
    fn last(&mut self) -> &mut Run {
        self.runs.last_mut().expect("a run was pushed")
    }

    fn wall(&self, method: &str) -> f64 {
        report::find(&self.runs, method).map_or(0.0, |r| r.wall_s)
    }

    fn rss_line(&self) -> Option<String> {
        let parts: Vec<String> = self
            .runs
            .iter()
            .filter_map(|r| {
                let b = self.runner_rss.get(&r.method)?;
                Some(format!("{} {:.1} MiB", r.method, mib(*b)))
            })
            .collect();
        (!parts.is_empty()).then(|| {
            format!(
                "The runner's own peak RSS (VmHWM, from its last log line; the table shows the \
                 largest of the runner and the tools it starts): {}",
                parts.join(", ")
            )
        })
    }

    fn print(&self) {
        report::print_runs(&STYLE, &self.heading, self.db_bytes, &self.runs);
        for line in self.rss_line().iter().chain(&self.notes) {
            println!("- {line}");
        }
    }
}

/// What the methods share: the measuring, the server and the tools' option file.
struct Ctx<'a> {
    bench: &'a Bench,
    server: &'a MariaDb,
    /// `[client]` host, port, user and password, for the bench's own tool runs.
    cnf: String,
}

impl Ctx<'_> {
    fn dump(&self, db: &str) -> String {
        format!(
            "mariadb-dump --defaults-extra-file={} {DUMP_OPTIONS} {db}",
            self.cnf
        )
    }

    /// Runs the runner with `vars` and records its own peak RSS; returns its log.
    fn runner(&self, case: &mut Case, method: &str, vars: &str) -> Result<String> {
        let result = self.bench.pipeline(
            method,
            &[(
                "backup-runner",
                format!(
                    "env {vars} {} > runner.log 2>&1",
                    self.bench.runner.display()
                ),
            )],
        );
        let log = std::fs::read_to_string(self.bench.path("runner.log")).unwrap_or_default();
        let run = result.with_context(|| {
            let tail = log.len().saturating_sub(4000);
            format!(
                "the runner's log:\n{}",
                log.get(tail..).unwrap_or(log.as_str())
            )
        })?;
        if let Some(rss) = super::log_field(&log, "peak_rss_bytes") {
            case.runner_rss.insert(method.to_string(), rss as u64);
        }
        case.runs.push(run);
        Ok(log)
    }

    /// `mariadb-dump … | zstd` at the runner's level and threads (from its log).
    fn dump_zstd(&self, case: &mut Case, db: &str, runner_log: &str) -> Result<()> {
        let (level, threads) = super::runner_compression(runner_log).with_context(|| {
            format!("no compression settings in the runner's log:\n{runner_log}")
        })?;
        case.runs.push(self.bench.pipeline(
            &format!("mariadb-dump | zstd -{level} -T{threads} to /dev/null"),
            &[
                ("mariadb-dump", self.dump(db)),
                ("zstd", format!("zstd -q -{level} -T{threads} > /dev/null")),
            ],
        )?);
        Ok(())
    }

    /// The client from a dump file into `restore_client`, against the runner's restore of `key`
    /// into `restore_runner` (and `restore_runner_s3`): fresh databases, which the runner
    /// creates itself.
    fn restores(&self, case: &mut Case, db: &str, key: &str, from_s3: bool) -> Result<()> {
        self.drop_restores()?;
        case.runs.push(self.bench.pipeline(
            DUMP_FILE,
            &[("mariadb-dump", format!("{} > dump.sql", self.dump(db)))],
        )?);
        case.last().output_bytes = self.bench.file_size("dump.sql");
        self.server.sql(
            None,
            "CREATE DATABASE restore_client CHARACTER SET utf8mb4;",
        )?;
        case.runs.push(self.bench.pipeline(
            CLIENT_RESTORE,
            &[(
                "mariadb",
                format!(
                    "mariadb --defaults-extra-file={} --max-allowed-packet=1G restore_client < dump.sql",
                    self.cnf
                ),
            )],
        )?);
        let _ = std::fs::remove_file(self.bench.path("dump.sql"));
        self.runner(
            case,
            RESTORE_LOCAL,
            &format!(
                "OPERATION_TYPE=restore STORAGE_TYPE=local STORAGE_LOCAL_DIR=local \
                 DB_NAME=restore_runner BACKUP_PATH={key}"
            ),
        )?;
        if from_s3 {
            self.runner(
                case,
                RESTORE_S3,
                &format!("OPERATION_TYPE=restore DB_NAME=restore_runner_s3 BACKUP_PATH={key}"),
            )?;
        }
        Ok(())
    }

    fn drop_restores(&self) -> Result<()> {
        self.server
            .sql(
                None,
                "DROP DATABASE IF EXISTS restore_client; DROP DATABASE IF EXISTS restore_runner; \
                 DROP DATABASE IF EXISTS restore_runner_s3;",
            )
            .map(drop)
    }

    fn cleanup(&self, db: &str) -> Result<()> {
        self.drop_restores()?;
        self.server
            .sql(None, &format!("DROP DATABASE IF EXISTS {db};"))?;
        let _ = std::fs::remove_dir_all(self.bench.path("local"));
        self.bench.remove("")
    }

    fn size_case(&self, size: u64) -> Result<Case> {
        let db = format!("bench_{size}");
        println!("bench: seeding {db} (~{size} MiB)");
        let started = Instant::now();
        let db_bytes = seed(self.server, &db, size)?;
        println!(
            "bench: seeded {db}: {:.0} MiB in {:.0} s",
            mib(db_bytes),
            started.elapsed().as_secs_f64()
        );
        let mut case = Case {
            heading: format!("~{size} MiB target (database {:.0} MiB)", mib(db_bytes)),
            db_bytes,
            runs: Vec::new(),
            runner_rss: BTreeMap::new(),
            notes: Vec::new(),
            details: serde_json::Map::new(),
        };
        case.details.insert("size_mib".into(), json!(size));
        let key = format!("runner/{size}");
        case.runs.push(self.bench.pipeline(
            DUMP_NULL,
            &[("mariadb-dump", format!("{} > /dev/null", self.dump(&db)))],
        )?);
        let log = self.runner(
            &mut case,
            BACKUP_LOCAL,
            &format!("STORAGE_TYPE=local STORAGE_LOCAL_DIR=local DB_NAME={db} BACKUP_PATH={key}"),
        )?;
        case.last().output_bytes = self.bench.file_size(&format!("local/{key}"));
        case.notes.push(dump_options_note(&log));
        self.dump_zstd(&mut case, &db, &log)?;
        self.runner(
            &mut case,
            BACKUP_S3,
            &format!("DB_NAME={db} BACKUP_PATH={key}"),
        )?;
        case.last().output_bytes = self.bench.object_size(&key)?;
        self.restores(&mut case, &db, &key, true)?;

        let source = self.checksums(&db)?;
        let mut differ = Vec::new();
        for target in ["restore_client", "restore_runner", "restore_runner_s3"] {
            if self.checksums(target)? != source {
                differ.push(target);
            }
        }
        case.notes.push(if differ.is_empty() {
            "Every restored database matches the source (`CHECKSUM TABLE` of both tables).".into()
        } else {
            format!(
                "**Restored databases that differ from the source** (`CHECKSUM TABLE`): {}.",
                differ.join(", ")
            )
        });
        case.details
            .insert("restores_differing".into(), json!(differ));
        self.cleanup(&db)?;
        Ok(case)
    }

    fn checksums(&self, db: &str) -> Result<Vec<String>> {
        let out = self.server.sql(
            None,
            &format!("CHECKSUM TABLE {db}.accounts, {db}.documents;"),
        )?;
        Ok(out
            .lines()
            .filter_map(|l| l.split('\t').nth(1).map(str::to_string))
            .collect())
    }

    fn float_case(&self, rows: u64) -> Result<Case> {
        let db = "bench_float";
        println!("bench: seeding {db} ({rows} random FLOAT values)");
        let db_bytes = seed_floats(self.server, db, rows)?;
        let mut case = Case {
            heading: format!(
                "Exactness repairs: {} random FLOAT values (database {:.0} MiB)",
                thousands(rows),
                mib(db_bytes)
            ),
            db_bytes,
            runs: Vec::new(),
            runner_rss: BTreeMap::new(),
            notes: Vec::new(),
            details: serde_json::Map::new(),
        };
        case.details.insert("float_rows".into(), json!(rows));
        let key = "runner/float";
        case.runs.push(self.bench.pipeline(
            DUMP_NULL,
            &[("mariadb-dump", format!("{} > /dev/null", self.dump(db)))],
        )?);
        let log = self.runner(
            &mut case,
            BACKUP_LOCAL,
            &format!("STORAGE_TYPE=local STORAGE_LOCAL_DIR=local DB_NAME={db} BACKUP_PATH={key}"),
        )?;
        let object = format!("local/{key}");
        case.last().output_bytes = self.bench.file_size(&object);
        let repairs = self.count_updates(&object)?;
        self.dump_zstd(&mut case, db, &log)?;
        self.restores(&mut case, db, key, false)?;

        let mut wrong = serde_json::Map::new();
        for target in ["restore_client", "restore_runner"] {
            let out = self.server.sql(
                None,
                &format!(
                    "SELECT (SELECT COUNT(*) FROM {db}.floats) - (SELECT COUNT(*) FROM {target}.floats), \
                       COUNT(*) FROM {db}.floats s JOIN {target}.floats r USING (id) \
                     WHERE NOT (s.f <=> r.f);"
                ),
            )?;
            let f: Vec<u64> = out
                .split_whitespace()
                .map(|x| x.parse().unwrap_or(u64::MAX))
                .collect();
            if f.len() != 2 || f[0] != 0 {
                bail!("{target}: rows missing against {db} ({out:?})");
            }
            wrong.insert(target.into(), json!(f[1]));
        }
        let backup_extra = case.wall(BACKUP_LOCAL) - case.wall(DUMP_NULL);
        let restore_extra = case.wall(RESTORE_LOCAL) - case.wall(CLIENT_RESTORE);
        case.notes.push(format!(
            "Repair statements in the runner's backup (lines starting with `UPDATE` in `zstd -dc` \
             of the object): **{}** for {} rows.",
            thousands(repairs),
            thousands(rows)
        ));
        case.notes.push(format!(
            "Rows whose FLOAT differs from the source after the restore: the client from the plain \
             dump **{}**, the runner **{}**.",
            thousands(wrong["restore_client"].as_u64().unwrap_or(0)),
            thousands(wrong["restore_runner"].as_u64().unwrap_or(0))
        ));
        case.notes.push(format!(
            "What the repairs cost: the backup takes {backup_extra:+.2} s against the dump tool \
             alone (the repair query, the separate trigger dump and the compression), the restore \
             {restore_extra:+.2} s against the client loading the plain dump (the `UPDATE`s, \
             and the verification read of the object)."
        ));
        case.details
            .insert("repair_statements".into(), json!(repairs));
        case.details
            .insert("rows_differing_after_restore".into(), Value::Object(wrong));
        case.details
            .insert("backup_extra_s".into(), json!(backup_extra));
        case.details
            .insert("restore_extra_s".into(), json!(restore_extra));
        self.cleanup(db)?;
        Ok(case)
    }

    /// Lines starting with `UPDATE` in the decompressed object.
    fn count_updates(&self, object: &str) -> Result<u64> {
        let out = Command::new("bash")
            .arg("-c")
            .arg(format!("zstd -dc {object} | grep -c '^UPDATE' || true"))
            .current_dir(self.bench.work.path())
            .output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        text.trim()
            .parse()
            .with_context(|| format!("counting the repair statements: {text:?}"))
    }
}

/// Whether the runner's `mariadb-dump` ran with the options of the dump-alone rows, from its
/// "running mariadb-dump …" log line.
fn dump_options_note(log: &str) -> String {
    let mut ours: Vec<&str> = DUMP_OPTIONS
        .split_whitespace()
        .filter(|o| !o.starts_with("--max-allowed-packet"))
        .collect();
    let Some(line) = log.lines().find(|l| l.contains("running mariadb-dump")) else {
        return "The runner's log does not show its `mariadb-dump` command.".into();
    };
    let mut theirs: Vec<&str> = line
        .split("running mariadb-dump")
        .nth(1)
        .unwrap_or("")
        .split_whitespace()
        .take_while(|w| w.starts_with("--"))
        .filter(|w| !w.starts_with("--defaults-extra-file"))
        .collect();
    ours.sort_unstable();
    theirs.sort_unstable();
    if ours == theirs {
        format!(
            "`mariadb-dump` runs with the runner's options, as its log shows: `{DUMP_OPTIONS}` \
             (the packet limit is in the runner's option file)."
        )
    } else {
        format!(
            "**The runner ran `mariadb-dump` with other options** ({}) than the dump-tool rows \
             (`{DUMP_OPTIONS}`).",
            theirs.join(" ")
        )
    }
}

/// 1000000 → "1,000,000"
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Data in the spirit of the PostgreSQL bench, per target MiB: 3,000 rows of a pgbench-like
/// `accounts` table and 780 `documents` (a timestamp, an amount, 80–120 random words from a
/// 100-word vocabulary and 128–144 random bytes), in InnoDB. Returns the database's size.
fn seed(server: &MariaDb, db: &str, size: u64) -> Result<u64> {
    server.sql(
        None,
        &format!("DROP DATABASE IF EXISTS {db}; CREATE DATABASE {db} CHARACTER SET utf8mb4;"),
    )?;
    let accounts = size * 3_000;
    let documents = size * 780;
    let words: Vec<String> = super::WORDS
        .split_whitespace()
        .map(|w| format!("'{w}'"))
        .collect();
    let word = format!(
        "ELT(1 + FLOOR(RAND() * {}), {})",
        words.len(),
        words.join(",")
    );
    // `seq_1_to_N` is MariaDB's Sequence engine: the numbers without a table.
    server.sql(
        Some(db),
        &format!(
            "CREATE TABLE accounts (aid INT PRIMARY KEY, bid INT, abalance INT, filler CHAR(84))
               ENGINE=InnoDB;
             INSERT INTO accounts SELECT seq, seq % 100, 0, '' FROM seq_1_to_{accounts};
             CREATE TABLE documents (id BIGINT PRIMARY KEY, created DATETIME,
                 amount DECIMAL(12,2), body TEXT, payload VARBINARY(160)) ENGINE=InnoDB;
             INSERT INTO documents SELECT seq, '2026-01-01' + INTERVAL seq MINUTE,
                 (seq * 7919) % 100000 / 100,
                 SUBSTRING_INDEX(CONCAT_WS(' ', {}), ' ', 80 + seq % 40),
                 RANDOM_BYTES(128 + 16 * (seq % 2))
               FROM seq_1_to_{documents};
             ANALYZE TABLE accounts, documents;",
            vec![word; 120].join(", ")
        ),
    )?;
    database_size(server, db)
}

/// One table of random FLOATs over twelve orders of magnitude, keyed by an INT.
fn seed_floats(server: &MariaDb, db: &str, rows: u64) -> Result<u64> {
    server.sql(
        None,
        &format!("DROP DATABASE IF EXISTS {db}; CREATE DATABASE {db} CHARACTER SET utf8mb4;"),
    )?;
    server.sql(
        Some(db),
        &format!(
            "CREATE TABLE floats (id INT PRIMARY KEY, f FLOAT) ENGINE=InnoDB;
             INSERT INTO floats SELECT seq, (RAND() - 0.5) * POW(10, FLOOR(RAND() * 12) - 6)
               FROM seq_1_to_{rows};
             ANALYZE TABLE floats;"
        ),
    )?;
    database_size(server, db)
}

fn database_size(server: &MariaDb, db: &str) -> Result<u64> {
    let out = server.sql(
        None,
        &format!(
            "SELECT SUM(data_length + index_length) FROM information_schema.tables \
             WHERE table_schema = '{db}';"
        ),
    )?;
    out.trim()
        .parse()
        .with_context(|| format!("size of {db}: {out:?}"))
}

fn write(machine: &str, load_start: &str, load_end: &str, cases: &[Case]) -> Result<()> {
    let dir = root().join("benchmarks");
    std::fs::create_dir_all(&dir)?;
    let mut md = format!(
        "Machine: {machine}\n\nServer: `mariadbd {}`, otherwise its defaults (InnoDB). Load \
         average (1, 5, 15 min) at the start: {load_start}; at the end: {load_end}.\n\n",
        SERVER_OPTIONS.join(" ")
    );
    let mut json_cases = Vec::new();
    for case in cases {
        md.push_str(&format!(
            "### {}\n\n{}\n",
            case.heading,
            report::table(&STYLE, case.db_bytes, &case.runs)
        ));
        for (what, r) in report::ratios(&STYLE, &case.runs) {
            md.push_str(&format!("- {what}: **{r:.2}×**\n"));
        }
        for line in case.rss_line().iter().chain(&case.notes) {
            md.push_str(&format!("- {line}\n"));
        }
        md.push('\n');
        let runs: Vec<Value> = case
            .runs
            .iter()
            .map(|r| {
                let mut row = report::run_json(&STYLE, r);
                if let Some(b) = case.runner_rss.get(&r.method) {
                    row.insert("runner_peak_rss_bytes".into(), json!(b));
                }
                Value::Object(row)
            })
            .collect();
        let mut c = case.details.clone();
        c.insert("case".into(), json!(case.heading));
        c.insert("db_bytes".into(), json!(case.db_bytes));
        c.insert("runs".into(), json!(runs));
        json_cases.push(Value::Object(c));
    }
    std::fs::write(dir.join("mysql.md"), &md)?;
    std::fs::write(
        dir.join("mysql.json"),
        serde_json::to_string_pretty(&json!({
            "machine": machine,
            "server_options": SERVER_OPTIONS,
            "dump_options": DUMP_OPTIONS,
            "load_average": { "start": load_start, "end": load_end },
            "cases": json_cases,
        }))? + "\n",
    )?;
    println!("bench: wrote benchmarks/mysql.md and benchmarks/mysql.json");
    Ok(())
}

/// A throwaway MariaDB server: its own data directory, socket and TCP port on 127.0.0.1; root
/// without a password over the socket (for seeding), and an account with a password for the
/// runner and the tools over TCP. Killed on drop.
struct MariaDb {
    child: Child,
    port: u16,
    password: String,
    // Declared last: removed only after `Drop::drop` has killed the server.
    dir: tempfile::TempDir,
}

const START_ATTEMPTS: usize = 5;
const START_TIMEOUT: Duration = Duration::from_secs(120);

impl MariaDb {
    fn start() -> Result<MariaDb> {
        let dir = tempfile::Builder::new()
            .prefix("bench-mariadb-")
            .tempdir()?;
        let data = dir.path().join("data");
        let as_root = is_root();
        let mut install = Command::new("mariadb-install-db");
        install
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .args(["--auth-root-authentication-method=normal", "--skip-test-db"]);
        if as_root {
            install.arg("--user=root");
        }
        let out = install
            .output()
            .context("running mariadb-install-db (.ci/install-bench-deps.sh mysql installs it)")?;
        if !out.status.success() {
            bail!(
                "mariadb-install-db failed ({}): {}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let socket = dir.path().join("sock");
        let log = dir.path().join("error.log");
        for _ in 0..START_ATTEMPTS {
            let port = free_port();
            let _ = std::fs::remove_file(&log);
            let mut cmd = Command::new(mariadbd());
            cmd.arg("--no-defaults")
                .arg(format!("--datadir={}", data.display()))
                .arg(format!("--socket={}", socket.display()))
                .arg(format!("--port={port}"))
                .arg("--bind-address=127.0.0.1")
                .arg(format!("--log-error={}", log.display()))
                .arg(format!(
                    "--pid-file={}",
                    dir.path().join("mariadbd.pid").display()
                ))
                .args(SERVER_OPTIONS);
            if as_root {
                cmd.arg("--user=root");
            }
            let mut child = cmd
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context("starting mariadbd")?;
            match wait_ready(&mut child, &socket, &log) {
                Ok(()) => {
                    let server = MariaDb {
                        child,
                        port,
                        password: random_hex(12)?,
                        dir,
                    };
                    server.sql(
                        None,
                        &format!(
                            "DELETE FROM mysql.global_priv WHERE user = '';
                             FLUSH PRIVILEGES;
                             CREATE USER '{USER}'@'%' IDENTIFIED BY '{}';
                             GRANT ALL ON *.* TO '{USER}'@'%';",
                            server.password
                        ),
                    )?;
                    return Ok(server);
                }
                Err(e) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    let text = std::fs::read_to_string(&log).unwrap_or_default();
                    if !text.contains("already in use") {
                        return Err(e);
                    }
                }
            }
        }
        bail!("mariadbd found no free port in {START_ATTEMPTS} attempts")
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("sock")
    }

    /// Runs `sql` as root over the socket; the rows, tab-separated.
    fn sql(&self, db: Option<&str>, sql: &str) -> Result<String> {
        client_as_root(&self.socket(), db, sql)
    }
}

impl Drop for MariaDb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn client_as_root(socket: &Path, db: Option<&str>, sql: &str) -> Result<String> {
    let mut cmd = Command::new("mariadb");
    cmd.arg("--no-defaults")
        .arg(format!("--socket={}", socket.display()))
        .args(["--user=root", "--batch", "--skip-column-names"]);
    if let Some(db) = db {
        cmd.arg(format!("--database={db}"));
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running mariadb")?;
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(sql.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        let head: String = sql.chars().take(300).collect();
        bail!(
            "mariadb: {} (SQL: {head}…)",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Waits until the server answers on its socket.
fn wait_ready(child: &mut Child, socket: &Path, log: &Path) -> Result<()> {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait()? {
            bail!(
                "mariadbd exited ({status}): {}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        if socket.exists() && client_as_root(socket, None, "SELECT 1;").is_ok() {
            return Ok(());
        }
        if started.elapsed() > START_TIMEOUT {
            bail!(
                "mariadbd did not answer within {START_TIMEOUT:?}: {}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `mariadbd` from PATH, else where Debian puts it.
fn mariadbd() -> PathBuf {
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join("mariadbd"))
                .find(|p| p.is_file())
        })
        .unwrap_or_else(|| PathBuf::from("/usr/sbin/mariadbd"))
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .map(|l| l.split_whitespace().next() == Some("0"))
        })
        .unwrap_or(false)
}

fn random_hex(bytes: usize) -> Result<String> {
    let mut buf = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut buf)?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_runners_dump_options_are_compared() {
        let same = "INFO running mariadb-dump --defaults-extra-file=/tmp/x/client.cnf \
                    --single-transaction --quick --routines --triggers --events --hex-blob \
                    --default-character-set=utf8mb4 --no-tablespaces --skip-add-locks \
                    --skip-dump-date --dump-history bench_1024 phase=\"dump\"";
        assert!(dump_options_note(same).starts_with("`mariadb-dump` runs with"));
        let other = same.replace(" --dump-history", "");
        assert!(dump_options_note(&other).contains("other options"));
        assert!(dump_options_note("nothing").contains("does not show"));
    }

    #[test]
    fn thousands_are_separated() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_000), "1,000");
        assert_eq!(thousands(1_000_000), "1,000,000");
    }
}
